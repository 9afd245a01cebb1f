//! Dueling proposers, measured: a tiny deterministic simulation of two
//! proposers and three acceptors running the Synod protocol
//! ([`paxos::synod`]), with and without randomized exponential backoff.
//!
//! Two proposers that retry at once whenever their round fails can pre-empt
//! each other forever: each new `Prepare` lands before the other's `Accept`.
//! Paxos stays safe but makes no progress (FLP says no deterministic protocol
//! can promise both). Randomized backoff breaks the symmetry: the loser waits
//! a random, growing time, and the winner's `Accept` gets through.
//!
//! The world: virtual time in microseconds; events ordered by (time, sequence
//! number) so that a seed fixes the whole run; message delays drawn from a
//! `ChaCha8Rng` seeded by the seed. By default (`colocated`) the proposers
//! live on the hosts of acceptors 1 and 2, as in a replica that plays every
//! role: messages between a proposer and its own acceptor take
//! `local_delay_us`, and when that acceptor promises a higher ballot the
//! proposer hears of it at once (a local `Nack`) and stops early. That fast
//! path is what lets a retrying proposer's `Prepare` (two hops after the
//! rival's) overtake the rival's `Accept` (three hops after its `Prepare`), so
//! without backoff the duel livelocks in the common case. With every role on
//! its own host (`colocated: false`) both race at three hops and a duel is a
//! coin toss that ends after a few rounds even without backoff.
//!
//! A learner taps every `Accepted` as it leaves an acceptor, so the time to
//! choose is the instant a quorum accepted one ballot. After that the run goes
//! on for `settle_us`, and every further quorum must carry the same value.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::ops::Range;

use paxos::synod::{Acceptor, Learner, Message, Phase, Prepare, Proposer};
use paxos::{Ballot, NodeId};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Number of acceptors; a quorum is two.
const ACCEPTORS: usize = 3;
/// Number of dueling proposers.
const PROPOSERS: usize = 2;

/// The knobs of a duel. `Default` is the tuned setting the figures are quoted
/// for; only `backoff` differs between the two arms of the comparison.
///
/// The default delays (2 ms ± 25%) are the "symmetric timing" that makes the
/// duel livelock without backoff: two network hops nearly always beat three.
/// With wider jitter (say 1–3 ms) three hops beat two often enough that a
/// duel without backoff ends after a few dozen milliseconds instead.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuelConfig {
    /// Retry after a randomized exponential backoff rather than at once.
    pub backoff: bool,
    /// Give up (not converged) when virtual time passes this.
    pub max_time_us: u64,
    /// Give up (not converged) after this many events.
    pub max_events: u64,
    /// Shortest network delay of one message.
    pub delay_min_us: u64,
    /// Longest network delay of one message (inclusive).
    pub delay_max_us: u64,
    /// Proposers share hosts with acceptors 1 and 2 and hear at once when
    /// their own acceptor promises a higher ballot.
    pub colocated: bool,
    /// Delay of a message between a proposer and its own acceptor.
    pub local_delay_us: u64,
    /// A round without a decision for this long is abandoned and retried.
    pub round_timeout_us: u64,
    /// Without backoff: the fixed wait before a retry.
    pub retry_delay_us: u64,
    /// With backoff: retry `n` (from 0) waits uniform in
    /// `[0, min(base * 2^n, cap))`.
    pub backoff_base_us: u64,
    /// With backoff: the upper bound on the backoff window.
    pub backoff_cap_us: u64,
    /// How long the run goes on after the value is chosen, to check that
    /// later quorums agree.
    pub settle_us: u64,
}

impl Default for DuelConfig {
    fn default() -> Self {
        DuelConfig {
            backoff: true,
            max_time_us: 2_000_000,
            max_events: 100_000,
            delay_min_us: 1_500,
            delay_max_us: 2_500,
            colocated: true,
            local_delay_us: 0,
            round_timeout_us: 10_000,
            retry_delay_us: 0,
            backoff_base_us: 2_000,
            backoff_cap_us: 128_000,
            settle_us: 20_000,
        }
    }
}

/// What one duel did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuelOutcome {
    /// The chosen value (the id of the proposer whose value won), if any.
    pub chosen: Option<u64>,
    /// Virtual time at which a quorum first accepted one ballot.
    pub time_to_choose_us: Option<u64>,
    /// `Prepare` messages sent (one per acceptor per round) until the value
    /// was chosen, or in the whole run if it never was.
    pub prepares_sent: u64,
    /// Phase-1 rounds started by both proposers, counted like
    /// `prepares_sent`.
    pub rounds: u64,
    /// Every quorum the learner saw, before and after the choice, carried the
    /// same value (Paxos's safety property; false would be a bug).
    pub agreement: bool,
}

/// The figures over many seeds.
#[derive(Clone, Debug, PartialEq)]
pub struct DuelStats {
    /// Duels run.
    pub runs: u64,
    /// Duels in which a value was chosen within the bounds.
    pub converged: u64,
    /// Lower median of the time to choose over converged duels.
    pub median_time_to_choose_us: Option<u64>,
    /// Mean `prepares_sent` over all duels (livelocked ones included).
    pub mean_prepares: f64,
    /// Duels whose `agreement` was false; always 0 unless Paxos is broken.
    pub disagreements: u64,
}

/// Runs the duels for every seed in `seeds` and sums them up.
pub fn duel_stats(seeds: Range<u64>, config: &DuelConfig) -> DuelStats {
    let mut times = Vec::new();
    let mut runs = 0u64;
    let mut prepares = 0u64;
    let mut disagreements = 0u64;
    for seed in seeds {
        let outcome = run_duel(seed, config);
        runs += 1;
        prepares += outcome.prepares_sent;
        if !outcome.agreement {
            disagreements += 1;
        }
        if let Some(t) = outcome.time_to_choose_us {
            times.push(t);
        }
    }
    times.sort_unstable();
    DuelStats {
        runs,
        converged: times.len() as u64,
        median_time_to_choose_us: times.get(times.len().saturating_sub(1) / 2).copied(),
        mean_prepares: if runs == 0 {
            0.0
        } else {
            prepares as f64 / runs as f64
        },
        disagreements,
    }
}

/// Runs one duel; the same seed and config always give the same outcome.
pub fn run_duel(seed: u64, config: &DuelConfig) -> DuelOutcome {
    debug_assert!(config.delay_min_us <= config.delay_max_us);
    let mut world = World::new(seed, config);
    for p in 0..PROPOSERS {
        world.schedule(0, Event::Start { proposer: p });
    }
    world.run();
    world.outcome()
}

/// Something that happens at a point of virtual time.
#[derive(Debug)]
enum Event {
    /// A proposer (re)starts phase 1, unless it is busy or done.
    Start { proposer: usize },
    /// A proposer's round timer for `ballot` expires.
    Timeout { proposer: usize, ballot: Ballot },
    /// A message from proposer `from` arrives at acceptor `to`.
    ToAcceptor {
        to: usize,
        from: NodeId,
        msg: Message<u64>,
    },
    /// A message from acceptor `from` arrives at proposer `to`.
    ToProposer {
        to: usize,
        from: NodeId,
        msg: Message<u64>,
    },
}

/// An event in the queue; the earliest (time, sequence number) pops first.
#[derive(Debug)]
struct Scheduled {
    at: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl Eq for Scheduled {}

impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: BinaryHeap is a max-heap and we want the earliest first.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Acceptor `i` has id `i + 1`; proposer `j` has id `j + 1` and, when
/// colocated, lives on acceptor `j`'s host.
fn acceptor_id(i: usize) -> NodeId {
    i as NodeId + 1
}

fn proposer_id(j: usize) -> NodeId {
    j as NodeId + 1
}

struct World<'c> {
    config: &'c DuelConfig,
    rng: ChaCha8Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    acceptors: Vec<Acceptor<u64>>,
    proposers: Vec<Proposer<u64>>,
    /// Whether a proposer has a `Start` queued.
    start_pending: Vec<bool>,
    /// Failed rounds per proposer: the backoff exponent.
    failures: Vec<u32>,
    learner: Learner<u64>,
    chosen: Option<(u64, u64)>,
    agreement: bool,
    prepares_sent: u64,
    rounds: u64,
    at_choice: Option<(u64, u64)>,
}

impl<'c> World<'c> {
    fn new(seed: u64, config: &'c DuelConfig) -> Self {
        World {
            config,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            acceptors: (0..ACCEPTORS).map(|_| Acceptor::new()).collect(),
            proposers: (0..PROPOSERS)
                .map(|j| Proposer::new(proposer_id(j), ACCEPTORS, proposer_id(j)))
                .collect(),
            start_pending: vec![false; PROPOSERS],
            failures: vec![0; PROPOSERS],
            learner: Learner::new(ACCEPTORS),
            chosen: None,
            agreement: true,
            prepares_sent: 0,
            rounds: 0,
            at_choice: None,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        if let Event::Start { proposer } = event {
            self.start_pending[proposer] = true;
        }
        self.seq += 1;
        self.queue.push(Scheduled {
            at,
            seq: self.seq,
            event,
        });
    }

    /// Delay of one message between proposer `p` and acceptor `a`.
    fn delay(&mut self, p: usize, a: usize) -> u64 {
        if self.config.colocated && p == a {
            self.config.local_delay_us
        } else {
            self.rng
                .random_range(self.config.delay_min_us..=self.config.delay_max_us)
        }
    }

    fn send_to_acceptor(&mut self, p: usize, a: usize, msg: Message<u64>) {
        let at = self.now + self.delay(p, a);
        let from = proposer_id(p);
        self.schedule(at, Event::ToAcceptor { to: a, from, msg });
    }

    fn send_to_proposer(&mut self, a: usize, p: usize, msg: Message<u64>) {
        let at = self.now + self.delay(p, a);
        let from = acceptor_id(a);
        self.schedule(at, Event::ToProposer { to: p, from, msg });
    }

    /// When the run stops: the time bound, or the end of the settle period.
    fn deadline(&self) -> u64 {
        match self.chosen {
            Some((_, at)) => at
                .saturating_add(self.config.settle_us)
                .min(self.config.max_time_us),
            None => self.config.max_time_us,
        }
    }

    fn run(&mut self) {
        let mut events = 0u64;
        while let Some(next) = self.queue.pop() {
            if next.at > self.deadline() || events >= self.config.max_events {
                break;
            }
            debug_assert!(next.at >= self.now, "time never runs backwards");
            self.now = next.at;
            events += 1;
            self.handle(next.event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Start { proposer } => {
                self.start_pending[proposer] = false;
                self.start_round(proposer);
            }
            Event::Timeout { proposer, ballot } => {
                if self.proposers[proposer].ballot() == Some(ballot) {
                    self.proposers[proposer].abandon();
                    self.retry(proposer);
                }
            }
            Event::ToAcceptor { to, from, msg } => self.at_acceptor(to, from, msg),
            Event::ToProposer { to, from, msg } => self.at_proposer(to, from, msg),
        }
    }

    fn start_round(&mut self, p: usize) {
        let proposer = &mut self.proposers[p];
        if proposer.phase() != Phase::Idle {
            return;
        }
        let ballot = proposer.prepare();
        self.rounds += 1;
        for a in 0..ACCEPTORS {
            self.prepares_sent += 1;
            self.send_to_acceptor(p, a, Prepare { ballot }.into());
        }
        let at = self.now + self.config.round_timeout_us;
        self.schedule(
            at,
            Event::Timeout {
                proposer: p,
                ballot,
            },
        );
    }

    /// Queues the next round of a proposer whose round just failed.
    fn retry(&mut self, p: usize) {
        if self.start_pending[p] {
            return;
        }
        let wait = if self.config.backoff {
            let shift = self.failures[p].min(32);
            let window = self
                .config
                .backoff_base_us
                .saturating_mul(1u64 << shift)
                .min(self.config.backoff_cap_us)
                .max(1);
            self.rng.random_range(0..window)
        } else {
            self.config.retry_delay_us
        };
        self.failures[p] = self.failures[p].saturating_add(1);
        self.schedule(self.now + wait, Event::Start { proposer: p });
    }

    fn at_acceptor(&mut self, a: usize, from: NodeId, msg: Message<u64>) {
        let Some(p) = (0..PROPOSERS).find(|&j| proposer_id(j) == from) else {
            return;
        };
        let reply = match msg {
            Message::Prepare(m) => self.acceptors[a].on_prepare(m.ballot),
            Message::Accept(m) => self.acceptors[a].on_accept(m.ballot, m.value),
            // Replies are for proposers; an acceptor ignores them.
            Message::Promise(_) | Message::Accepted(_) | Message::Nack(_) => return,
        };
        if let Message::Accepted(acc) = &reply {
            self.learn(a, acc.ballot, acc.value);
        }
        self.send_to_proposer(a, p, reply);
        self.tell_local_proposer(a);
    }

    /// A colocated proposer hears at once that its own acceptor promised a
    /// ballot above its round: the round cannot succeed, so it stops early.
    fn tell_local_proposer(&mut self, a: usize) {
        if !self.config.colocated || a >= PROPOSERS {
            return;
        }
        let promised = self.acceptors[a].promised();
        if let Some(ballot) = self.proposers[a].ballot()
            && promised > ballot
        {
            let nack = paxos::synod::Nack {
                ballot,
                higher: promised,
            };
            self.send_to_proposer(a, a, nack.into());
        }
    }

    fn learn(&mut self, a: usize, ballot: Ballot, value: u64) {
        let Some(&learned) = self.learner.on_accepted(acceptor_id(a), ballot, value) else {
            return;
        };
        match self.chosen {
            None => {
                self.chosen = Some((learned, self.now));
                self.at_choice = Some((self.prepares_sent, self.rounds));
            }
            Some((first, _)) => {
                debug_assert_eq!(first, learned, "agreement violated");
                self.agreement &= first == learned;
            }
        }
    }

    fn at_proposer(&mut self, p: usize, from: NodeId, msg: Message<u64>) {
        match msg {
            Message::Promise(m) => {
                if let Some(accept) = self.proposers[p].on_promise(from, m.ballot, m.accepted) {
                    for a in 0..ACCEPTORS {
                        self.send_to_acceptor(p, a, accept.clone().into());
                    }
                }
            }
            Message::Nack(m) => {
                if self.proposers[p].on_nack(m.ballot, m.higher) {
                    self.retry(p);
                }
            }
            Message::Accepted(m) => {
                // A proposer whose proposal is chosen stops; nothing to do.
                self.proposers[p].on_accepted(from, m.ballot);
            }
            Message::Prepare(_) | Message::Accept(_) => {}
        }
    }

    fn outcome(&self) -> DuelOutcome {
        let (prepares_sent, rounds) = self.at_choice.unwrap_or((self.prepares_sent, self.rounds));
        DuelOutcome {
            chosen: self.chosen.map(|(v, _)| v),
            time_to_choose_us: self.chosen.map(|(_, t)| t),
            prepares_sent,
            rounds,
            agreement: self.agreement,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pop_in_time_then_sequence_order() {
        let mut heap = BinaryHeap::new();
        for (at, seq) in [(5, 1), (3, 2), (5, 0), (3, 3)] {
            heap.push(Scheduled {
                at,
                seq,
                event: Event::Start { proposer: 0 },
            });
        }
        let order: Vec<_> = std::iter::from_fn(|| heap.pop().map(|s| (s.at, s.seq))).collect();
        assert_eq!(order, [(3, 2), (3, 3), (5, 0), (5, 1)]);
    }

    #[test]
    fn a_lone_proposer_chooses_its_value() {
        let config = DuelConfig::default();
        let mut world = World::new(7, &config);
        world.schedule(0, Event::Start { proposer: 1 });
        world.run();
        let outcome = world.outcome();
        assert_eq!(outcome.chosen, Some(2));
        assert_eq!(outcome.rounds, 1);
        assert!(outcome.agreement);
    }
}
