//! `synod torture` end to end: a short run under every fault is
//! linearizable, the unsafe local-read configuration is caught by the
//! checker, and a power loss (every member SIGKILLed at once) loses no
//! acknowledged write. Every process is killed at the end, even when an
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
