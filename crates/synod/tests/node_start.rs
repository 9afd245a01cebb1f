//! `synod node` refuses what it cannot do with a clear error and a failing
//! exit code, never a panic.

use std::process::{Command, Stdio};
use std::time::Duration;

/// Polls before giving up on the process (each poll is `POLL`).
const POLLS_MAX: u32 = 500;
const POLL: Duration = Duration::from_millis(20);

#[test]
fn a_taken_peer_port_is_a_clear_error() {
    // Something else holds the peer port for the whole test.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let peer = taken.local_addr().expect("local addr");
    let client = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free client port");
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("node-start-taken-port");
    let _ = std::fs::remove_dir_all(&dir);
    let peer_url = format!("http://{peer}");
    let client_url = format!("http://{client}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["node", "--name", "m1", "--data-dir"])
        .arg(&dir)
        .args(["--listen-client-urls", &client_url])
        .args(["--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url])
        .args(["--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("m1={peer_url}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run synod node");
    let mut status = None;
    for _ in 0..POLLS_MAX {
        status = child.try_wait().expect("wait for synod node");
        if status.is_some() {
            break;
        }
        std::thread::sleep(POLL);
    }
    let Some(status) = status else {
        let _ = child.kill();
        panic!("synod node kept running on a taken peer port");
    };
    let output = child.wait_with_output().expect("stderr");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!status.success(), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("cannot start the peer transport")
            && stderr.contains(&format!("cannot listen on {peer}")),
        "{stderr}"
    );
    drop(taken);
}
