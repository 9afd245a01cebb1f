//! `synod torture` end to end: a short run under every fault is
//! linearizable, stale local reads recorded as linearizable are caught by
//! the checker, a power loss (every member SIGKILLed at once) loses no
//! acknowledged write, wall-clock steps change no lease, and the lease
//! oracle can fail. Every process is killed at the end, even when an
//! assertion fails: the guard kills the torture process and then every
//! member pid it recorded in DIR/pids.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The runs are heavy (5 members each): one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

struct Run {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(pids) = std::fs::read_to_string(self.dir.join("pids")) {
            let pids: Vec<&str> = pids.lines().filter(|l| !l.trim().is_empty()).collect();
            if !pids.is_empty() {
                for sig in ["-CONT", "-KILL"] {
                    let _ = Command::new("kill")
                        .arg(sig)
                        .args(&pids)
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}

/// Runs `synod torture ARGS --dir <fresh dir>`; returns its exit code and
/// stdout. Fails the test if it takes longer than `limit`.
fn torture(name: &str, args: &[&str], limit: Duration) -> (i32, String) {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("test dir");
    let out_path = dir.join("stdout.txt");
    let out = std::fs::File::create(&out_path).expect("stdout file");
    let child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .arg("torture")
        .args(args)
        .arg("--dir")
        .arg(&dir)
        .stdout(out)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start synod torture");
    let mut run = Run {
        child: Some(child),
        dir,
    };
    let deadline = Instant::now() + limit;
    let status = loop {
        let child = run.child.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("wait") {
            run.child = None;
            break status;
        }
        if Instant::now() > deadline {
            let text = std::fs::read_to_string(&out_path).unwrap_or_default();
            panic!("synod torture {args:?} took longer than {limit:?}; output so far:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("synod torture {args:?}:\n{text}");
    (status.code().unwrap_or(-1), text)
}

#[test]
fn short_run_under_faults_is_linearizable() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, out) = torture(
        "torture-safe",
        &[
            "--seed",
            "1",
            "--duration-secs",
            "20",
            "--nodes",
            "5",
            "--clients",
            "10",
        ],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "expected a linearizable history:\n{out}");
    assert!(out.contains("linearizable: yes"), "{out}");
    let ops: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("operations: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("operation count");
    assert!(ops > 500, "too few operations to mean anything: {ops}");
}

#[test]
fn unsafe_local_reads_are_caught() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut outputs = String::new();
    for seed in ["1", "2", "3"] {
        let (code, out) = torture(
            &format!("torture-unsafe-{seed}"),
            &[
                "--seed",
                seed,
                "--duration-secs",
                "8",
                "--unsafe-local-reads",
                "--faults",
                "partition",
            ],
            Duration::from_secs(60),
        );
        assert_ne!(code, 2, "the run itself failed:\n{out}");
        if code == 1 {
            assert!(out.contains("NOT linearizable"), "{out}");
            return;
        }
        outputs.push_str(&out);
    }
    panic!("the checker never rejected the unsafe configuration:\n{outputs}");
}

#[test]
fn power_loss_keeps_every_acknowledged_write() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, out) = torture(
        "torture-power-loss",
        &["--power-loss", "--seed", "1"],
        Duration::from_secs(90),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("power loss: PASS"), "{out}");
}

/// Wall-clock steps of two hours either way on running members (libfaketime,
/// installed by scripts/test.sh; the test fails without it) change no
/// lease: no key goes early or late, and the history stays linearizable.
#[test]
fn wall_clock_steps_change_no_lease() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, out) = torture(
        "torture-clock",
        &[
            "--seed",
            "1",
            "--nodes",
            "3",
            "--clients",
            "3",
            "--duration-secs",
            "15",
            "--faults",
            "clock",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("wall clock +2h") || out.contains("wall clock -2h"),
        "{out}"
    );
    assert!(out.contains("none early, none late"), "{out}");
    let held: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("leases: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .expect("lease count");
    assert!(held >= 2, "too few leases to mean anything: {held}\n{out}");
}

/// The lease oracle can fail: told to expect twice the TTL it granted, it
/// sees keys go early and the run fails.
#[test]
fn the_lease_oracle_rejects_keys_that_go_before_their_ttl() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (code, out) = torture(
        "torture-lease-oracle",
        &[
            "--seed",
            "2",
            "--nodes",
            "3",
            "--clients",
            "2",
            "--duration-secs",
            "12",
            "--faults",
            "none",
            "--unsafe-double-lease-ttl",
        ],
        Duration::from_secs(120),
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("NOT as granted"), "{out}");
    assert!(out.contains("linearizable: yes"), "{out}");
}
