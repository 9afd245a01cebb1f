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
    let c = Cluster::start("membership");
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
    let list = c.ok(&["member", "list"]);
    assert_eq!(list.lines().count(), 3, "{list}");

    // Removing a voter that is not the leader: two voters go on.
    let leader = c.leader().expect("a leader");
    let victim = (0..3).find(|i| *i != leader).unwrap_or(0);
    let victim_url = format!("http://127.0.0.1:{}", c.members[victim].peer_port);
    let victim_id = id_of(&list, &victim_url);
    let removed = c.ok(&["member", "remove", &victim_id]);
    assert!(removed.contains("removed from cluster"), "{removed}");
    let list = c.ok(&["member", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains(&victim_url), "{list}");
    assert_eq!(c.ok(&["put", "after", "3"]), "OK\n");
    assert_eq!(c.ok(&["get", "before", "--print-value-only"]), "1\n");
}
