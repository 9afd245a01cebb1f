//! The simulator end to end: reproducible from a seed, green on the real
//! protocol under every fault, and red on each deliberately broken variant.

use paxos::multi::Bug;
use sim::{Nemesis, SimConfig};

fn config(nodes: usize, bug: Option<Bug>) -> SimConfig {
    SimConfig {
        nodes,
        nemesis: Nemesis::all(),
        bug,
        ..SimConfig::default()
    }
}

#[test]
fn one_seed_reproduces_a_run_bit_for_bit() {
    let c = SimConfig {
        trace: true,
        ..config(3, None)
    };
    let a = sim::run(7, &c);
    let b = sim::run(7, &c);
    assert_eq!(a.history, b.history);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.events, b.events);
    let other = sim::run(8, &c);
    assert_ne!(
        a.history, other.history,
        "a different seed is a different run"
    );
}

#[test]
fn the_protocol_survives_every_fault_with_three_and_five_replicas() {
    let mut refused = 0;
    let mut crashes = 0;
    let mut member_changes = 0;
    for nodes in [3, 5] {
        for seed in 1..=40 {
            let report = sim::run(seed, &config(nodes, None));
            assert!(
                report.passed(),
                "seed {seed}, {nodes} nodes: {:?}",
                report.violations
            );
            assert!(report.ok > 0, "seed {seed}: nothing completed");
            refused += report.refused_starts;
            crashes += report.crashes;
            member_changes += report.member_changes;
        }
    }
    // Configuration changes happened under all of it.
    assert!(
        member_changes > 40,
        "{member_changes} configuration changes"
    );
    // The faults really happened: nodes crashed, and some refused to start
    // on a bit flipped at rest rather than trust it.
    assert!(crashes > 100, "{crashes} crashes");
    assert!(refused > 0, "no corrupted disk was ever refused");
}

#[test]
fn commands_queued_then_filled_as_the_server_does_stay_safe_and_share_slots() {
    let batched = |bug| SimConfig {
        clients: 10,
        think_us_max: 2_000,
        batch_us: Some(2_000),
        ..config(3, bug)
    };
    let mut largest = 0;
    for seed in 1..=30 {
        let report = sim::run(seed, &batched(None));
        assert!(report.passed(), "seed {seed}: {:?}", report.violations);
        assert!(report.ok > 0, "seed {seed}: nothing completed");
        largest = largest.max(report.largest_batch);
    }
    assert!(largest > 1, "commands never shared a slot");
    // The checkers still see a broken protocol through the batching.
    let caught = (1..=200).any(|seed| !sim::run(seed, &batched(Some(Bug::SkipAdoption))).passed());
    assert!(caught, "skip-adoption not caught with batching");
}

/// Runs seeds until the checkers catch `bug`; returns the first failing seed.
fn first_caught(bug: Bug) -> Option<(u64, String)> {
    first_caught_by(bug, |_| true)
}

/// The first seed of 1..=1000 where `bug` breaks a check whose report
/// `by` recognises, with that report.
fn first_caught_by(bug: Bug, by: impl Fn(&str) -> bool) -> Option<(u64, String)> {
    let c = config(3, Some(bug));
    (1..=1000).find_map(|seed| {
        sim::run(seed, &c)
            .violations
            .into_iter()
            .find(|v| by(&v.what))
            .map(|v| (seed, v.what))
    })
}

#[test]
fn an_acceptor_that_forgets_its_promise_is_caught() {
    let (seed, what) = first_caught(Bug::ForgetPromise).expect("caught within 1000 seeds");
    eprintln!("forget-promise caught at seed {seed}: {what}");
}

#[test]
fn a_leader_that_skips_adoption_is_caught() {
    let (seed, what) = first_caught(Bug::SkipAdoption).expect("caught within 1000 seeds");
    eprintln!("skip-adoption caught at seed {seed}: {what}");
}

#[test]
fn a_replica_that_applies_out_of_order_is_caught() {
    let (seed, what) = first_caught(Bug::ApplyOutOfOrder).expect("caught within 1000 seeds");
    eprintln!("apply-out-of-order caught at seed {seed}: {what}");
}

#[test]
fn a_leader_that_reads_without_confirming_its_leadership_is_caught() {
    let (seed, what) = first_caught(Bug::LeaderLocalRead).expect("caught within 1000 seeds");
    eprintln!("leader-local-read caught at seed {seed}: {what}");
}

#[test]
fn a_follower_that_reads_before_its_store_applied_the_index_is_caught() {
    let (seed, what) =
        first_caught(Bug::FollowerReadAtCoreApplied).expect("caught within 1000 seeds");
    eprintln!("follower-read-at-core-applied caught at seed {seed}: {what}");
}

#[test]
fn a_reforward_under_a_fresh_session_is_caught() {
    let (seed, what) = first_caught(Bug::ReforwardTwice).expect("caught within 1000 seeds");
    eprintln!("reforward-twice caught at seed {seed}: {what}");
}

/// The clients without a session of their own (etcd's kind) write through
/// the member's session; a write the member re-forwards under a fresh
/// session is applied twice, which only the exactly-once check of the
/// committed history sees: no oracle knows the member's sessions.
#[test]
fn a_write_applied_twice_through_a_members_session_is_caught() {
    let (seed, what) = first_caught_by(Bug::ReforwardTwice, |v| v.contains("applied twice"))
        .expect("a double apply seen within 1000 seeds");
    eprintln!("reforward-twice applied a write twice at seed {seed}: {what}");
}

/// A follower that has leases revoked by its own view of time ends some
/// lease before its TTL ran out from the last acknowledged keep-alive: the
/// lease oracle sees the key gone early. (The only-proposed oracle also
/// flags the revocation, which no client asked for; this test asks for the
/// lease oracle's own verdict.)
#[test]
fn a_lease_expired_by_a_followers_clock_is_caught_by_the_lease_oracle() {
    let (seed, what) = first_caught_by(Bug::LeaseExpiryByFollowerClock, |v| {
        v.starts_with("lease ") && v.contains("before its")
    })
    .expect("an early expiry seen within 1000 seeds");
    eprintln!("lease-expiry-by-follower-clock caught at seed {seed}: {what}");
}

#[test]
fn a_watch_that_misses_the_last_event_of_a_batch_is_caught() {
    let (seed, what) = first_caught(Bug::WatchDropsBatchTail).expect("caught within 1000 seeds");
    eprintln!("watch-drops-batch-tail caught at seed {seed}: {what}");
}

#[test]
fn a_learner_whose_vote_counts_is_caught() {
    let (seed, what) = first_caught_by(Bug::LearnerVotes, |v| v.contains("quorum of its voters"))
        .expect("caught within 1000 seeds");
    eprintln!("learner-votes caught at seed {seed}: {what}");
}

#[test]
fn a_configuration_used_for_slots_already_in_flight_is_caught() {
    let (seed, what) = first_caught(Bug::ConfigAppliesAtDecide).expect("caught within 1000 seeds");
    eprintln!("config-applies-at-decide caught at seed {seed}: {what}");
}

#[test]
fn a_phase_1_without_the_old_configuration_is_caught() {
    let (seed, what) = first_caught(Bug::SkipOldConfigPhase1).expect("caught within 1000 seeds");
    eprintln!("skip-old-config-phase1 caught at seed {seed}: {what}");
}
