//! SIGKILL a real writer process at random moments, restart it, and check after every kill
//! that each record it acknowledged (printed after its sync returned) is recovered intact and
//! that no record was invented or altered (contents are a function of the LSN).
//!
//! The schedule comes from one seed (`SIGKILL_SEED`, default below); a failure prints it.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use storage::testing::{record_for_lsn, splitmix64};
use storage::{Lsn, StdFs, Wal, WalOptions};

use common::TempDir;

/// Kills to perform (the issue asks for at least 50).
const KILLS: u32 = 60;
/// Longest a writer runs before it is killed.
const RUN_MS_MAX: u64 = 100;
/// Shortest; short runs often kill the writer during its own recovery.
const RUN_MS_MIN: u64 = 2;
/// Segment size the writer uses: small, so that kills also land during segment rolls.
const SEGMENT_BYTES: u64 = 256 << 10;
/// Must match the writer's `EXTRA_PAYLOAD_BYTES_MAX`.
const EXTRA_PAYLOAD_BYTES_MAX: usize = 300;
const DEFAULT_SEED: u64 = 0x5EED_0FC4;

#[test]
fn sigkill_loop_loses_no_acknowledged_record() {
    let seed = std::env::var("SIGKILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let mut rng = seed;
    let dir = TempDir::new("sigkill");
    let started = Instant::now();
    let options = WalOptions {
        segment_bytes_max: SEGMENT_BYTES,
        write_buffer_bytes_max: 64 << 10,
        record_payload_bytes_max: 4096,
    };
    let mut acknowledged_lsn = 0u64;
    let mut recovered_records = 0usize;
    let mut torn_tails = 0u32;
    let mut unacknowledged_kept = 0u64;
    for kill in 0..KILLS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_wal-writer"))
            .arg(dir.path())
            .arg(splitmix64(&mut rng).to_string())
            .arg(SEGMENT_BYTES.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wal-writer");
        let stdout = child.stdout.take().expect("piped stdout");
        let reader = std::thread::spawn(move || {
            let mut acked = 0u64;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(lsn) = line.strip_prefix("ack ") {
                    acked = acked.max(lsn.parse().expect("ack line"));
                }
            }
            acked
        });
        let run_ms = RUN_MS_MIN + splitmix64(&mut rng) % (RUN_MS_MAX - RUN_MS_MIN + 1);
        std::thread::sleep(Duration::from_millis(run_ms));
        child.kill().expect("SIGKILL");
        let output = child.wait_with_output().expect("wait");
        assert_eq!(
            output.status.signal(),
            Some(9),
            "seed {seed}, kill {kill}: writer did not die by SIGKILL: {:?} {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let acked = reader.join().expect("reader thread");
        acknowledged_lsn = acknowledged_lsn.max(acked);

        // Recover in this process and check the promise.
        let (wal, recovered) = Wal::open(StdFs, dir.path(), options)
            .unwrap_or_else(|e| panic!("seed {seed}, kill {kill}: recovery refused: {e}"));
        torn_tails += u32::from(recovered.torn_tail.is_some());
        for (i, record) in recovered.records.iter().enumerate() {
            let lsn = i as u64 + 1;
            assert_eq!(record.lsn, Lsn(lsn), "seed {seed}, kill {kill}: LSN gap");
            let (record_type, payload) = record_for_lsn(lsn, EXTRA_PAYLOAD_BYTES_MAX);
            assert!(
                record.record_type == record_type && record.payload == payload,
                "seed {seed}, kill {kill}: record {lsn} altered or invented"
            );
        }
        let recovered_lsn = recovered.records.len() as u64;
        assert!(
            recovered_lsn >= acknowledged_lsn,
            "seed {seed}, kill {kill}: acknowledged up to LSN {acknowledged_lsn}, recovered only {recovered_lsn}"
        );
        unacknowledged_kept = recovered_lsn - acknowledged_lsn;
        recovered_records = recovered.records.len();
        drop(wal);
    }
    let lost = acknowledged_lsn.saturating_sub(recovered_records as u64);
    println!(
        "sigkill: seed={seed} kills={KILLS} acknowledged={acknowledged_lsn} recovered={recovered_records} \
         lost={lost} altered=0 (unacknowledged but kept at the end: {unacknowledged_kept}, torn tails wiped: {torn_tails}) in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lost, 0);
}
