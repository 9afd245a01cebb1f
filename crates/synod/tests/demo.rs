//! `synod demo`, a newcomer's first minute: the banner comes once the
//! cluster serves, and it is all there is on the screen.

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the cluster has to come up and print its banner.
const BANNER_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn the_banner_is_the_last_thing_on_the_screen_once_the_cluster_serves() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("demo-banner");
    let _ = std::fs::remove_dir_all(&dir);
    let mut child = Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(["demo", "--data-dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run synod demo");
    let stdout = child.stdout.take().expect("stdout");
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut banner = Vec::new();
    while let Ok(line) = lines.recv_timeout(BANNER_WITHIN) {
        let last = line.starts_with("Ctrl-C stops the cluster");
        banner.push(line);
        if last {
            break;
        }
    }
    // Once the banner is out, the cluster serves: a put goes through.
    let put = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints=127.0.0.1:2379", "put", "greeting", "hello"])
        .output();
    let _ = child.kill();
    let _ = child.wait();
    let mut errors = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut errors);
    }
    assert!(
        banner.last().is_some_and(|l| l.starts_with("Ctrl-C stops")),
        "no banner within {BANNER_WITHIN:?}: {banner:?}\n{errors}"
    );
    assert!(banner[0].starts_with("synod demo: 3 members"), "{banner:?}");
    assert!(errors.is_empty(), "the members logged:\n{errors}");
    let put = put.expect("etcdctl (scripts/test.sh installs it)");
    assert!(
        put.status.success() && String::from_utf8_lossy(&put.stdout).contains("OK"),
        "{put:?}"
    );
}
