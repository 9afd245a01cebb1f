//! Dueling proposers in the deterministic simulator: randomized exponential
//! backoff turns a livelock into a quick decision.
//!
//! All figures are counts in virtual time, so they are the same on every
//! machine; they are printed so they can be quoted.

use sim::duel::{DuelConfig, DuelStats, duel_stats, run_duel};

const SEEDS: std::ops::Range<u64> = 0..200;

fn with_backoff() -> DuelConfig {
    DuelConfig {
        backoff: true,
        ..DuelConfig::default()
    }
}

fn without_backoff() -> DuelConfig {
    DuelConfig {
        backoff: false,
        ..DuelConfig::default()
    }
}

fn report(label: &str, stats: &DuelStats) {
    let median = stats
        .median_time_to_choose_us
        .map_or_else(|| "-".to_string(), |t| format!("{t} us"));
    eprintln!(
        "{label}: converged {}/{} runs, median time to choose {median}, mean prepares {:.1}, disagreements {}",
        stats.converged, stats.runs, stats.mean_prepares, stats.disagreements
    );
}

/// The headline: with backoff nearly every duel is decided; without it most
/// duels are still pre-empting each other when the 2 s bound runs out.
#[test]
fn backoff_breaks_the_livelock() {
    let with = duel_stats(SEEDS, &with_backoff());
    let without = duel_stats(SEEDS, &without_backoff());
    report("with backoff   ", &with);
    report("without backoff", &without);

    assert_eq!(with.runs, 200);
    assert_eq!(without.runs, 200);
    assert!(
        with.converged * 100 >= with.runs * 95,
        "with backoff only {}/{} converged",
        with.converged,
        with.runs
    );
    assert!(
        without.converged * 2 < with.converged,
        "without backoff {} converged, with {}: no livelock to break",
        without.converged,
        with.converged
    );
    assert!(
        without.converged * 2 < without.runs,
        "most duels without backoff should livelock"
    );
    assert!(without.mean_prepares > 10.0 * with.mean_prepares);
    // Livelock is a liveness failure only: no run ever chose two values.
    assert_eq!(with.disagreements, 0);
    assert_eq!(without.disagreements, 0);
}

/// The same seed replays the same duel, event for event.
#[test]
fn run_duel_is_deterministic() {
    for config in [with_backoff(), without_backoff()] {
        for seed in [0, 1, 7, 42, 199] {
            assert_eq!(
                run_duel(seed, &config),
                run_duel(seed, &config),
                "seed {seed}"
            );
        }
        // And the seed matters: different seeds give different duels.
        let outcomes: Vec<_> = (0..10).map(|seed| run_duel(seed, &config)).collect();
        assert!(outcomes.windows(2).any(|w| w[0] != w[1]));
    }
}

/// Every decided duel chose one of the two proposed values, within the
/// bound, and every later quorum agreed with it.
#[test]
fn decided_duels_are_safe() {
    for config in [with_backoff(), without_backoff()] {
        for seed in 0..50 {
            let outcome = run_duel(seed, &config);
            assert!(outcome.agreement, "seed {seed}: {outcome:?}");
            assert_eq!(
                outcome.chosen.is_some(),
                outcome.time_to_choose_us.is_some()
            );
            if let Some(value) = outcome.chosen {
                assert!(value == 1 || value == 2, "seed {seed}: {outcome:?}");
            }
            if let Some(t) = outcome.time_to_choose_us {
                assert!(t <= config.max_time_us);
            }
            assert_eq!(outcome.prepares_sent, 3 * outcome.rounds);
            assert!(outcome.rounds >= 1);
        }
    }
}

/// Why the default places the proposers on acceptor hosts: with every role on
/// its own host, a retry's Prepare and the rival's Accept both need three hops,
/// each duel round is a coin toss, and duels end quickly even without backoff.
#[test]
fn separate_hosts_do_not_livelock() {
    let separate = DuelConfig {
        colocated: false,
        ..without_backoff()
    };
    let stats = duel_stats(SEEDS, &separate);
    report("without backoff, separate hosts", &stats);
    assert!(stats.converged * 100 >= stats.runs * 95);
    assert_eq!(stats.disagreements, 0);
}

/// Wider jitter (1-3 ms) lets three hops beat two now and then, so even
/// without backoff the duel ends, only later and at a higher cost.
#[test]
fn wide_jitter_weakens_the_livelock() {
    let wide = |backoff| DuelConfig {
        backoff,
        delay_min_us: 1_000,
        delay_max_us: 3_000,
        ..DuelConfig::default()
    };
    let with = duel_stats(SEEDS, &wide(true));
    let without = duel_stats(SEEDS, &wide(false));
    report("with backoff, 1-3 ms   ", &with);
    report("without backoff, 1-3 ms", &without);
    assert!(with.converged * 100 >= with.runs * 95);
    assert!(without.mean_prepares > with.mean_prepares);
}
