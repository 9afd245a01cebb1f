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

    // A leader that serves reads without confirming its leadership: within
    // a few seeds a deposed one has clients read what no order explains,
    // which `check` must call so from the file alone.
    let mut seen = Vec::new();
    let found = (1..=40).find(|seed| {
        let seed = seed.to_string();
        let broken = synod(&[
            "sim",
            "--seed",
            &seed,
            "--bug",
            "leader-local-read",
            "--history",
            bad_s,
        ]);
        let _ = broken;
        let out = synod(&["check", bad_s]);
        seen.push(out.status.code());
        if out.status.code() != Some(1) {
            return false;
        }
        assert!(String::from_utf8_lossy(&out.stdout).contains("NOT linearizable"));
        true
    });
    assert!(
        found.is_some(),
        "no broken run's history was caught in 40 seeds: exit codes {seen:?}"
    );
    // Every verdict was a verdict: linearizable or not, never malformed.
    assert!(
        seen.iter().all(|c| matches!(c, Some(0) | Some(1))),
        "{seen:?}"
    );
    let out = synod(&["check", garbage.to_str().expect("path")]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
