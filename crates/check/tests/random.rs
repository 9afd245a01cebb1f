//! Randomized tests: histories recorded from a simulated atomic register are
//! linearizable by construction; targeted corruptions must be caught.

use std::collections::HashMap;
use std::time::Instant;

use check::{Limits, Op, Operation, Outcome, Value, Verdict, check};

/// Tiny xorshift64* generator so the tests need no external crates.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Shape of a simulated run.
struct Config {
    keys: u64,
    processes: u64,
    ops: usize,
    /// Percentage of responses lost (operation recorded as Info).
    info: u64,
    /// Percentage of reads/writes answered Fail before taking effect.
    fail: u64,
}

/// Applies `op` to the register atomically, returning what a client sees.
fn apply(store: &mut HashMap<String, Value>, op: &Operation) -> Outcome {
    let current = store.get(&op.key).copied();
    match op.op {
        Op::Read => Outcome::Ok(Some(current)),
        Op::Write(v) => {
            store.insert(op.key.clone(), v);
            Outcome::Ok(None)
        }
        Op::Cas { expected, new } if current == expected => {
            store.insert(op.key.clone(), new);
            Outcome::Ok(None)
        }
        Op::Cas { .. } => Outcome::Fail,
        Op::Delete => {
            store.remove(&op.key);
            Outcome::Ok(None)
        }
    }
}

/// Simulates clients against one atomic register per key. Each operation
/// takes effect at a single instant between its invocation and completion,
/// so the recorded history is linearizable. Timed-out operations may take
/// effect later or never; timestamps may tie.
fn simulate(seed: u64, cfg: &Config) -> Vec<Operation> {
    let mut rng = Rng::new(seed);
    let mut history: Vec<Operation> = Vec::new();
    let mut store: HashMap<String, Value> = HashMap::new();
    let mut written: Vec<Vec<Value>> = vec![Vec::new(); cfg.keys as usize];
    // Per process: (history index, result once applied).
    let mut in_flight: Vec<Option<(usize, Option<Outcome>)>> = vec![None; cfg.processes as usize];
    // Timed-out operations that have not taken effect yet.
    let mut floating: Vec<usize> = Vec::new();
    let (mut t, mut next_value, mut started) = (0u64, 1u64, 0usize);

    while started < cfg.ops || in_flight.iter().any(Option::is_some) {
        t += rng.below(3);
        if !floating.is_empty() && rng.chance(5) {
            let idx = floating.swap_remove(rng.below(floating.len() as u64) as usize);
            if rng.chance(50) {
                apply(&mut store, &history[idx]);
            }
            continue;
        }
        let p = rng.below(cfg.processes) as usize;
        match in_flight[p].take() {
            None if started < cfg.ops => {
                let k = rng.below(cfg.keys) as usize;
                let key = format!("key{k}");
                let op = match rng.below(100) {
                    0..40 => Op::Read,
                    40..75 => {
                        next_value += 1;
                        written[k].push(next_value);
                        Op::Write(next_value)
                    }
                    _ => {
                        let expected = match rng.below(4) {
                            0 => None,
                            1 if !written[k].is_empty() => {
                                Some(written[k][rng.below(written[k].len() as u64) as usize])
                            }
                            _ => store.get(&key).copied(),
                        };
                        next_value += 1;
                        written[k].push(next_value);
                        Op::Cas {
                            expected,
                            new: next_value,
                        }
                    }
                };
                history.push(Operation {
                    process: p as u64,
                    key,
                    op,
                    invoke: t,
                    complete: None,
                    outcome: Outcome::Info,
                });
                in_flight[p] = Some((history.len() - 1, None));
                started += 1;
            }
            None => {}
            Some((idx, None)) => {
                if rng.chance(cfg.info) {
                    // Client times out; the request may still land later.
                    floating.push(idx);
                } else if rng.chance(cfg.fail) && !matches!(history[idx].op, Op::Cas { .. }) {
                    history[idx].complete = Some(t);
                    history[idx].outcome = Outcome::Fail;
                } else {
                    let outcome = apply(&mut store, &history[idx]);
                    in_flight[p] = Some((idx, Some(outcome)));
                }
            }
            // Applied; the response may still be lost (stays Info).
            Some((_, Some(_))) if rng.chance(cfg.info) => {}
            Some((idx, Some(outcome))) => {
                history[idx].complete = Some(t);
                history[idx].outcome = outcome;
            }
        }
    }
    history
}

const SMALL: Config = Config {
    keys: 3,
    processes: 5,
    ops: 80,
    info: 5,
    fail: 5,
};

fn is_ok_read(op: &Operation) -> bool {
    op.op == Op::Read && matches!(op.outcome, Outcome::Ok(Some(_)))
}

#[test]
fn simulated_histories_are_linearizable() {
    let (mut info, mut fail, mut ok) = (0, 0, 0);
    for seed in 0..200 {
        let history = simulate(seed, &SMALL);
        let report = check(&history, &Limits::default());
        assert_eq!(
            report.verdict,
            Verdict::Linearizable,
            "seed {seed}: {}",
            report.verdict
        );
        assert_eq!(report.ops, history.len());
        info += report.info;
        fail += report.fail;
        ok += report.ok;
    }
    // The generator really exercises every outcome.
    assert!(
        info > 100 && fail > 100 && ok > 1000,
        "info {info} fail {fail} ok {ok}"
    );
}

#[test]
fn never_written_value_is_caught() {
    for seed in 0..200 {
        let mut history = simulate(seed, &SMALL);
        let mut rng = Rng::new(seed ^ 0xdead_beef);
        let reads: Vec<usize> = (0..history.len())
            .filter(|&i| is_ok_read(&history[i]))
            .collect();
        assert!(!reads.is_empty(), "seed {seed} has no reads");
        let victim = reads[rng.below(reads.len() as u64) as usize];
        history[victim].outcome = Outcome::Ok(Some(Some(1_000_000_000 + seed)));
        match check(&history, &Limits::default()).verdict {
            Verdict::NotLinearizable { key, window } => {
                assert_eq!(key, history[victim].key, "seed {seed}");
                assert_eq!(window[0], history[victim], "seed {seed}");
            }
            other => panic!("seed {seed}: expected violation, got {other}"),
        }
    }
}

/// Finds `(read, value)` such that `value` was written by an operation that
/// completed before some successful write that itself completed before the
/// read was invoked: reading `value` there is certainly stale (values are
/// unique, so nothing can restore it).
fn stale_candidate(history: &[Operation]) -> Option<(usize, Value)> {
    let completed_write = |o: &Operation| matches!(o.outcome, Outcome::Ok(_)) && o.op != Op::Read;
    for (r, read) in history.iter().enumerate().filter(|(_, o)| is_ok_read(o)) {
        for w2 in history
            .iter()
            .filter(|o| o.key == read.key && completed_write(o))
        {
            let (Op::Write(_), Some(c2)) = (&w2.op, w2.complete) else {
                continue;
            };
            if c2 >= read.invoke {
                continue;
            }
            for w in history
                .iter()
                .filter(|o| o.key == read.key && completed_write(o))
            {
                let value = match w.op {
                    Op::Write(v) | Op::Cas { new: v, .. } => v,
                    Op::Read | Op::Delete => continue,
                };
                if w.complete.is_some_and(|c1| c1 < w2.invoke)
                    && read.outcome != Outcome::Ok(Some(Some(value)))
                {
                    return Some((r, value));
                }
            }
        }
    }
    None
}

#[test]
fn stale_read_is_caught_by_search() {
    let mut corrupted = 0;
    for seed in 0..200 {
        let mut history = simulate(seed, &SMALL);
        let Some((victim, value)) = stale_candidate(&history) else {
            continue;
        };
        history[victim].outcome = Outcome::Ok(Some(Some(value)));
        let report = check(&history, &Limits::default());
        match report.verdict {
            Verdict::NotLinearizable { key, .. } => assert_eq!(key, history[victim].key),
            other => panic!("seed {seed}: expected violation, got {other}"),
        }
        corrupted += 1;
    }
    assert!(
        corrupted > 100,
        "only {corrupted} seeds had a stale candidate"
    );
}

const LARGE: Config = Config {
    keys: 5,
    processes: 10,
    ops: 15_000,
    info: 1,
    fail: 2,
};

#[test]
fn large_history_checks_quickly() {
    for seed in 0..3 {
        let history = simulate(1000 + seed, &LARGE);
        let start = Instant::now();
        let report = check(&history, &Limits::default());
        let elapsed = start.elapsed();
        eprintln!(
            "seed {seed}: {} ops, {} info, {} steps, {elapsed:?}",
            report.ops, report.info, report.steps
        );
        assert_eq!(report.verdict, Verdict::Linearizable, "{}", report.verdict);
        assert_eq!(report.keys, 5);
    }
}

#[test]
fn large_history_with_stale_read_is_caught() {
    let mut history = simulate(77, &LARGE);
    // Corrupt a read late in the history so most of it must be searched.
    let late = history.len() * 9 / 10;
    let (victim, value) = stale_candidate(&history[late..])
        .map(|(r, v)| (r + late, v))
        .expect("candidate");
    history[victim].outcome = Outcome::Ok(Some(Some(value)));
    let start = Instant::now();
    let report = check(&history, &Limits::default());
    eprintln!("{} steps, {:?}", report.steps, start.elapsed());
    match report.verdict {
        Verdict::NotLinearizable { key, window } => {
            assert_eq!(key, history[victim].key);
            assert!(window.len() <= 12);
            eprintln!("{}", Verdict::NotLinearizable { key, window });
        }
        other => panic!("expected violation, got {other}"),
    }
}
