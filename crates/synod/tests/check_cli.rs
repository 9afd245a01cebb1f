//! `synod check` on histories written by the simulator: exit 0 for a
//! correct run, 1 for a broken protocol's run, 2 for a malformed file.

use std::process::Command;

fn synod(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_synod"))
        .args(args)
        .output()
        .expect("run synod")
}

#[test]
fn check_exit_codes_follow_the_verdict() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("check-cli");
    std::fs::create_dir_all(&dir).expect("dir");
    let good = dir.join("good.jsonl");
    let bad = dir.join("bad.jsonl");
    let garbage = dir.join("garbage.jsonl");
    let good_s = good.to_str().expect("path");
    let bad_s = bad.to_str().expect("path");
    assert!(
        synod(&["sim", "--seed", "7", "--history", good_s])
            .status
            .success()
    );
    std::fs::write(&garbage, "{\"process\": 1, \"type\": \"invoke\"}\n").expect("write");

    let out = synod(&["check", good_s]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("linearizable"));

    // A leader that serves reads without confirming its leadership: in
    // some seeds a deposed one has clients read what no order explains.
    // The simulator names such a seed; `check` must call its history so
    // from the file alone.
    let sweep = synod(&["sim", "--seeds", "1..600", "--bug", "leader-local-read"]);
    let text = String::from_utf8_lossy(&sweep.stdout);
    let seed = text
        .lines()
        .filter(|l| l.contains("not linearizable"))
        .find_map(|l| {
            l.strip_prefix("seed ")?
                .split(':')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("no seed of 600 with a non-linearizable history:\n{text}"));
    let broken = synod(&[
        "sim",
        "--seed",
        &seed.to_string(),
        "--bug",
        "leader-local-read",
        "--history",
        bad_s,
    ]);
    assert!(
        !broken.status.success(),
        "seed {seed} fails in the simulator"
    );
    let out = synod(&["check", bad_s]);
    assert_eq!(out.status.code(), Some(1), "seed {seed}: {out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT linearizable"));
    let out = synod(&["check", garbage.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
