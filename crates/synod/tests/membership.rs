//! etcd's Cluster API on a real 3-member cluster, through etcdctl: a
//! learner added (and the lines a new member starts with printed), its
//! promotion refused while it has not caught up, a second learner refused,
//! a bad id and a taken peer URL refused with etcd's texts, the learner
//! removed, a voter removed and the rest serving writes. The README's test
//! command installs etcdctl; without it this test fails, it does not skip.

use std::process::Output;

mod common;
use common::{Cluster, free_port};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The hex member id etcdctl prints in `member list`'s first column for
/// the member whose peer URL is `peer_url`.
fn id_of(list: &str, peer_url: &str) -> String {
    list.lines()
        .find(|line| line.contains(peer_url))
        .and_then(|line| line.split(',').next())
        .map(|id| id.trim().to_string())
        .unwrap_or_else(|| panic!("{peer_url} in\n{list}"))
}

#[test]
fn etcdctl_adds_promotes_and_removes_members() {
    let mut c = Cluster::start("membership");
    assert_eq!(c.ok(&["put", "before", "1"]), "OK\n");
    let learner_url = format!("http://127.0.0.1:{}", free_port());

    let added = c.ok(&[
        "member",
        "add",
        "n4",
        "--learner",
        "--peer-urls",
        &learner_url,
    ]);
    assert!(added.contains("added to cluster"), "{added}");
    assert!(added.contains("ETCD_NAME=\"n4\""), "{added}");
    assert!(
        added.contains("ETCD_INITIAL_CLUSTER_STATE=\"existing\""),
        "{added}"
    );
    let cluster_line = added
        .lines()
        .find(|l| l.starts_with("ETCD_INITIAL_CLUSTER="))
        .unwrap_or_else(|| panic!("ETCD_INITIAL_CLUSTER in {added}"));
    assert!(
        cluster_line.contains(&format!("n4={learner_url}")),
        "{cluster_line}"
    );
    assert_eq!(cluster_line.matches("http://").count(), 4, "{cluster_line}");

    let list = c.ok(&["member", "list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    let learner = id_of(&list, &learner_url);
    let learner_row = list
        .lines()
        .find(|l| l.contains(&learner_url))
        .unwrap_or_default();
    assert!(learner_row.contains("unstarted"), "{learner_row}");
    assert!(learner_row.trim_end().ends_with("true"), "{learner_row}");
    let table = c.ok(&["member", "list", "-w", "table"]);
    assert!(table.contains("IS LEARNER"), "{table}");

    // A learner is a learner: writes still go through the three voters.
    assert_eq!(c.ok(&["put", "with-learner", "2"]), "OK\n");

    // It never started, so it is not in sync: promotion is refused.
    let promote = c.ctl(&["member", "promote", &learner]);
    assert!(!promote.status.success());
    assert!(
        text(&promote).contains("can only promote a learner member which is in sync with leader"),
        "{}",
        text(&promote)
    );
    // At most one learner by default, as etcd.
    let another = format!("http://127.0.0.1:{}", free_port());
    let second = c.ctl(&["member", "add", "n5", "--learner", "--peer-urls", &another]);
    assert!(!second.status.success());
    assert!(
        text(&second).contains("too many learner members in cluster"),
        "{}",
        text(&second)
    );
    // A peer URL already taken.
    let taken = c.ctl(&[
        "member",
        "add",
        "n6",
        "--learner",
        "--peer-urls",
        &learner_url,
    ]);
    assert!(
        text(&taken).contains("Peer URLs already exists"),
        "{}",
        text(&taken)
    );
    // An id nobody has.
    let missing = c.ctl(&["member", "remove", "1234abcd"]);
    assert!(
        text(&missing).contains("member not found"),
        "{}",
        text(&missing)
    );

    let removed = c.ok(&["member", "remove", &learner]);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let list = list_of(&c, 3);

    // Removing a voter that is not the leader: two voters go on.
    let leader = c.leader().expect("a leader");
    let victim = (0..3).find(|i| *i != leader).unwrap_or(0);
    let victim_url = format!("http://127.0.0.1:{}", c.members[victim].peer_port);
    let victim_id = id_of(&list, &victim_url);
    let removed = c.ok(&["member", "remove", &victim_id]);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let list = list_of(&c, 2);
    assert!(!list.contains(&victim_url), "{list}");
    // It learns it was removed and stops; clients go to the other two.
    assert!(exits(&mut c, victim), "the removed member still runs");
    assert!(
        c.log(victim)
            .contains("permanently removed from the cluster")
    );
    assert_eq!(c.ok(&["put", "after", "3"]), "OK\n");
    assert_eq!(c.ok(&["get", "before", "--print-value-only"]), "1\n");
}

/// The value of `KEY="value"` in etcdctl's `member add` output.
fn env_line(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("{key} in {out}"))
}

/// Whether member `i`'s process ends within ten seconds; once it has, it
/// is no endpoint any more.
fn exits(c: &mut Cluster, i: usize) -> bool {
    for _ in 0..40 {
        let exited = c.members[i]
            .child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(Some(_))));
        if exited {
            c.members[i].child = None;
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    false
}

/// `member list` once it shows `n` members: a member answers it from the
/// table it has applied, which may lag the member that made the change.
fn list_of(c: &Cluster, n: usize) -> String {
    let mut list = String::new();
    for _ in 0..40 {
        list = c.ok(&["member", "list"]);
        if list.lines().count() == n {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert_eq!(list.lines().count(), n, "{list}");
    list
}

/// Retries `args` until etcdctl succeeds, for up to `tries` half seconds.
fn ok_eventually(c: &Cluster, args: &[&str], tries: usize) -> String {
    for _ in 0..tries {
        let out = c.ctl(args);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    c.ok(args)
}

#[test]
fn a_new_member_joins_as_a_learner_catches_up_is_promoted_and_an_old_one_leaves() {
    let mut c = Cluster::start("membership-join");
    // Enough writes for snapshots (every 20 commands): the newcomer catches
    // up from a snapshot and the log after it.
    for i in 0..60 {
        c.ok(&["put", &format!("k{i:02}"), &format!("v{i}")]);
    }
    let (peer, client) = (free_port(), free_port());
    let url = format!("http://127.0.0.1:{peer}");
    let added = c.ok(&["member", "add", "m4", "--learner", "--peer-urls", &url]);
    assert_eq!(env_line(&added, "ETCD_NAME"), "m4");
    assert_eq!(env_line(&added, "ETCD_INITIAL_CLUSTER_STATE"), "existing");
    let initial_cluster = env_line(&added, "ETCD_INITIAL_CLUSTER");
    c.members.push(common::Member {
        name: "m4".into(),
        client_port: client,
        peer_port: peer,
        data_dir: c.logs.join("m4"),
        child: None,
        joins: Some(initial_cluster),
    });
    c.spawn(3);
    c.wait_healthy(3);
    let newcomer = format!("127.0.0.1:{client}");

    // It serves serializable reads once caught up, and refuses writes.
    let pause = std::time::Duration::from_millis(250);
    let caught_up = c.serves_serializably(&newcomer, "k59", "v59", 40, pause);
    assert!(caught_up, "the learner never caught up; log:\n{}", c.log(3));
    let refused = c.ctl_at(&newcomer, &["put", "from-learner", "x"], None);
    assert!(!refused.status.success());
    assert!(
        text(&refused).contains("rpc not supported for learner"),
        "{}",
        text(&refused)
    );

    // Started: it told the others its name.
    let mut list = String::new();
    for _ in 0..40 {
        list = c.ok(&["member", "list"]);
        if list
            .lines()
            .any(|l| l.contains(&url) && l.contains(", started, m4,"))
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let id = id_of(&list, &url);
    let row = list.lines().find(|l| l.contains(&url)).unwrap_or_default();
    assert!(row.contains(", started, m4,"), "{row}");
    let promoted = ok_eventually(&c, &["member", "promote", &id], 20);
    assert!(promoted.contains("promoted"), "{promoted}");
    let list = c.ok(&["member", "list"]);
    let row = list.lines().find(|l| l.contains(&url)).unwrap_or_default();
    assert!(row.trim_end().ends_with("false"), "a voter now: {row}");

    // Restarted, it is still itself: its id from its data directory, its
    // configuration and peers from its snapshot and log, not the flags.
    for i in 0..30 {
        c.ok(&["put", &format!("r{i:02}"), "w"]);
    }
    if let Some(mut child) = c.members[3].child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
    c.ok(&["put", "while-down", "z"]);
    c.spawn(3);
    c.wait_healthy(3);
    let back = c.serves_serializably(&newcomer, "while-down", "z", 40, pause);
    assert!(
        back,
        "the restarted member never caught up; log:\n{}",
        c.log(3)
    );

    // The first member leaves (the leader, perhaps): the other three go on,
    // the new one among them, and it stops.
    let gone_url = format!("http://127.0.0.1:{}", c.members[0].peer_port);
    let gone = id_of(&list, &gone_url);
    c.ok(&["member", "remove", &gone]);
    assert!(exits(&mut c, 0), "the removed member still runs");
    assert!(
        c.log(0).contains("permanently removed from the cluster"),
        "{}",
        c.log(0)
    );
    let rest = format!(
        "127.0.0.1:{},127.0.0.1:{},{newcomer}",
        c.members[1].client_port, c.members[2].client_port
    );
    let mut written = false;
    for _ in 0..40 {
        if c.ctl_at(&rest, &["put", "after-remove", "y"], None)
            .status
            .success()
        {
            written = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    assert!(written, "no write after the removal");
    let read = c.ctl_at(
        &newcomer,
        &["get", "after-remove", "--print-value-only"],
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&read.stdout).trim(),
        "y",
        "{}",
        text(&read)
    );
    list_of(&c, 3);
}
