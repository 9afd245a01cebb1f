//! Crash-test writer for `tests/sigkill.rs`: appends deterministic records to a WAL in
//! batches, syncs each batch, and prints `ack <lsn>` (flushed) only after the sync returned,
//! so every LSN it prints is one the log promised to keep. The test SIGKILLs it at random
//! moments and checks the promise.
//!
//! Usage: `wal-writer <dir> <seed> <segment_bytes>`. Prints `recovered <records> <next_lsn>`
//! after opening, then `ack <lsn>` per batch; stops by itself after `BATCHES_MAX` batches.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use storage::testing::{record_for_lsn, splitmix64};
use storage::{StdFs, Wal, WalOptions};

/// Upper bound on batches per run; the test kills the writer long before.
const BATCHES_MAX: u64 = 1_000_000;
/// Upper bound on records per batch.
const BATCH_RECORDS_MAX: u64 = 64;
/// Payload bytes beyond the 8-byte LSN, at most.
const EXTRA_PAYLOAD_BYTES_MAX: usize = 300;

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let [_, dir, seed, segment_bytes] = args.as_slice() else {
        return Err("usage: wal-writer <dir> <seed> <segment_bytes>".to_owned());
    };
    let dir = PathBuf::from(dir);
    let mut rng: u64 = seed.parse().map_err(|e| format!("bad seed {seed}: {e}"))?;
    let options = WalOptions {
        segment_bytes_max: segment_bytes
            .parse()
            .map_err(|e| format!("bad segment_bytes {segment_bytes}: {e}"))?,
        write_buffer_bytes_max: 64 << 10,
        record_payload_bytes_max: 4096,
    };
    let (mut wal, recovered) = Wal::open(StdFs, &dir, options).map_err(|e| e.to_string())?;
    let mut out = std::io::stdout().lock();
    let print = |out: &mut std::io::StdoutLock<'_>, line: String| -> Result<(), String> {
        writeln!(out, "{line}")
            .and_then(|()| out.flush())
            .map_err(|e| format!("stdout: {e}"))
    };
    print(
        &mut out,
        format!("recovered {} {}", recovered.records.len(), wal.next_lsn()),
    )?;
    for _ in 0..BATCHES_MAX {
        let batch_records = 1 + splitmix64(&mut rng) % BATCH_RECORDS_MAX;
        for _ in 0..batch_records {
            let (record_type, payload) = record_for_lsn(wal.next_lsn().0, EXTRA_PAYLOAD_BYTES_MAX);
            wal.append(record_type, &payload)
                .map_err(|e| e.to_string())?;
        }
        let durable = wal.sync().map_err(|e| e.to_string())?;
        print(&mut out, format!("ack {durable}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("wal-writer: {message}");
            ExitCode::FAILURE
        }
    }
}
