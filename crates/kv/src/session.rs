//! Exactly-once: the replicated session table (DESIGN.md rule 4).
//!
//! Every client command carries `(client_id, seq)`. A client (a member, for
//! the requests that enter through it) numbers its commands 1, 2, 3, ...
//! and may have many in flight at once, so they can reach the log out of
//! order. The table remembers, per client, the results of the commands
//! applied within [`SESSION_WINDOW`] of its highest sequence number, so a
//! retry of any of them is answered from the table instead of being applied
//! twice, and a command below the window is refused as stale. A client
//! keeps every command it has in flight within the window of its newest
//! (the member starts a new session when one lags that far behind).
//!
//! It is replicated state: it changes only when commands are applied, goes
//! into snapshots and the state hash, and forgets clients only by rules
//! every replica evaluates alike: a client silent for longer than
//! [`crate::Limits::session_ttl_ms`] of leader-stamped time, or the least
//! recently active clients while the table holds more than
//! [`crate::Limits::max_session_answers`] answers.
//!
//! A retry that arrives after its client was forgotten is applied again:
//! keep the session TTL well above any client's retry window.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::command::{Applied, ApplyContext, Command, Response};
use crate::error::KvError;
use crate::store::Store;
use crate::types::{PutResponse, ResponseHeader, Revision};

/// A client's identity in the exactly-once table (as `paxos::ClientId`).
pub type ClientId = u64;

/// How far below a client's highest applied sequence number the table
/// still knows which commands were applied: a command up to this many
/// numbers older is applied or answered from the table, one older still
/// is stale.
pub const SESSION_WINDOW: u64 = 1024;

/// What the table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Session {
    /// The lowest sequence number the table still knows about: every one
    /// below it is stale (its answer, if it was applied, is forgotten).
    pub(crate) low: u64,
    /// Leader time of the client's last applied command, in milliseconds.
    pub(crate) last_ms: u64,
    /// The answers of the commands applied from `low` up, by sequence
    /// number; never empty, all within [`SESSION_WINDOW`] numbers ending at
    /// the highest.
    pub(crate) answers: BTreeMap<u64, Remembered>,
}

/// The lowest sequence number of the window that ends at `latest`.
pub(crate) fn window_low(latest: u64) -> u64 {
    latest.saturating_add(1).saturating_sub(SESSION_WINDOW)
}

impl Session {
    /// The highest sequence number applied.
    pub(crate) fn latest(&self) -> u64 {
        self.answers
            .last_key_value()
            .map_or(self.low, |(&seq, _)| seq)
    }

    /// Remembers `seq`'s answer and forgets those that fall out of the
    /// window; returns how many answers it holds now.
    fn remember(&mut self, seq: u64, answer: Remembered) -> usize {
        debug_assert!(seq >= self.low && !self.answers.contains_key(&seq));
        self.answers.insert(seq, answer);
        let low = window_low(self.latest());
        if low > self.low {
            self.low = low;
            while self
                .answers
                .first_key_value()
                .is_some_and(|(&s, _)| s < low)
            {
                self.answers.pop_first();
            }
        }
        self.answers.len()
    }
}

/// A command's result as the table keeps it. A busy member's session
/// holds up to a window of answers, and most are a put's answer: its
/// revision and nothing else. Those are kept as the revision, in the entry; any other
/// result in an allocation shared with frozen copies of the table, so that
/// copying the table (for a snapshot) copies a pointer per client. The
/// shared form cost 112 bytes per put (measured: 88-byte result, 16 of
/// reference counts, the allocator's 8), about 7 MiB of a full table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Remembered {
    /// `Ok(Response::Put)` at this revision, without a previous pair.
    Put(Revision),
    /// Any other result.
    Shared(Arc<Result<Response, KvError>>),
}

impl Remembered {
    /// The form to keep `result` in; the same result always gets the same
    /// form, so tables compare equal when their answers do.
    pub(crate) fn new(result: Result<Response, KvError>) -> Remembered {
        match result {
            Ok(Response::Put(PutResponse {
                header,
                prev_kv: None,
            })) => Remembered::Put(header.revision),
            other => Remembered::Shared(Arc::new(other)),
        }
    }

    /// The result, as the command returned it.
    pub(crate) fn result(&self) -> Result<Response, KvError> {
        match self {
            Remembered::Put(revision) => Ok(Response::Put(PutResponse {
                header: ResponseHeader {
                    revision: *revision,
                },
                prev_kv: None,
            })),
            Remembered::Shared(result) => result.as_ref().clone(),
        }
    }
}

/// The table, with an index by last activity for deterministic forgetting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct SessionTable {
    pub(crate) clients: Clients,
    by_activity: BTreeSet<(u64, ClientId)>,
    /// Answers held over all clients.
    answers: usize,
}

/// Top bits of a client id that pick its shard.
const SHARD_BITS: u32 = 6;

/// The clients, split by the top bits of their id into shards held by
/// reference. A frozen copy of the table (for a snapshot) copies one
/// pointer per shard instead of every entry, and the live table copies a
/// shard only when it next changes it while the copy lives: the cost of
/// the copy is spread over the applies that follow instead of stalling
/// the one that freezes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Clients {
    shards: Vec<Arc<BTreeMap<ClientId, Session>>>,
    len: usize,
}

impl Default for Clients {
    fn default() -> Self {
        Clients {
            shards: (0..1 << SHARD_BITS).map(|_| Arc::default()).collect(),
            len: 0,
        }
    }
}

impl Clients {
    fn shard(client: ClientId) -> usize {
        (client >> (u64::BITS - SHARD_BITS)) as usize
    }

    pub(crate) fn get(&self, client: &ClientId) -> Option<&Session> {
        self.shards[Self::shard(*client)].get(client)
    }

    /// The entry to change in place; copies its shard first if a frozen
    /// table shares it.
    fn get_mut(&mut self, client: &ClientId) -> Option<&mut Session> {
        let shard = &mut self.shards[Self::shard(*client)];
        if !shard.contains_key(client) {
            return None;
        }
        Arc::make_mut(shard).get_mut(client)
    }

    fn insert(&mut self, client: ClientId, session: Session) -> Option<Session> {
        let old = Arc::make_mut(&mut self.shards[Self::shard(client)]).insert(client, session);
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    fn remove(&mut self, client: &ClientId) -> Option<Session> {
        let shard = &mut self.shards[Self::shard(*client)];
        if !shard.contains_key(client) {
            return None;
        }
        let old = Arc::make_mut(shard).remove(client);
        self.len -= 1;
        old
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every client in id order (shards are ranges of ids, in order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ClientId, &Session)> {
        self.shards.iter().flat_map(|shard| shard.iter())
    }

    /// The highest client id, if any.
    pub(crate) fn last(&self) -> Option<ClientId> {
        self.shards
            .iter()
            .rev()
            .find_map(|shard| shard.last_key_value().map(|(&client, _)| client))
    }
}

impl SessionTable {
    /// Inserts or replaces a client's entry.
    pub(crate) fn record(&mut self, client: ClientId, session: Session) {
        self.answers += session.answers.len();
        if let Some(old) = self.clients.insert(client, session) {
            self.by_activity.remove(&(old.last_ms, client));
            self.answers -= old.answers.len();
        }
        if let Some(session) = self.clients.get(&client) {
            self.by_activity.insert((session.last_ms, client));
        }
        debug_assert_eq!(self.clients.len(), self.by_activity.len());
    }

    /// Remembers `client`'s answer for `seq` at leader time `now_ms`.
    fn remember(&mut self, client: ClientId, seq: u64, now_ms: u64, answer: Remembered) {
        let Some(session) = self.clients.get_mut(&client) else {
            let mut answers = BTreeMap::new();
            answers.insert(seq, answer);
            self.record(
                client,
                Session {
                    low: window_low(seq),
                    last_ms: now_ms,
                    answers,
                },
            );
            return;
        };
        let before = session.answers.len();
        let after = session.remember(seq, answer);
        let last_ms = std::mem::replace(&mut session.last_ms, now_ms);
        self.answers = self.answers + after - before;
        self.by_activity.remove(&(last_ms, client));
        self.by_activity.insert((now_ms, client));
    }

    fn forget(&mut self, client: ClientId) {
        if let Some(old) = self.clients.remove(&client) {
            self.answers -= old.answers.len();
        }
    }

    /// Forgets clients silent since before `now_ms - ttl_ms`.
    fn expire(&mut self, now_ms: u64, ttl_ms: u64) {
        let cutoff = now_ms.saturating_sub(ttl_ms);
        while let Some(&(last_ms, client)) = self.by_activity.first() {
            if last_ms >= cutoff {
                break;
            }
            self.by_activity.pop_first();
            self.forget(client);
        }
    }

    /// Forgets the least recently active clients while the table holds
    /// more than `max` answers.
    fn bound(&mut self, max: usize) {
        while self.answers > max {
            let Some((_, client)) = self.by_activity.pop_first() else {
                break;
            };
            self.forget(client);
        }
    }

    /// A copy for encoding a snapshot: the clients, shared; not the
    /// activity order, which a snapshot does not hold (restore rebuilds
    /// it). The copy must not be applied to.
    pub(crate) fn frozen(&self) -> SessionTable {
        SessionTable {
            clients: self.clients.clone(),
            by_activity: BTreeSet::new(),
            answers: self.answers,
        }
    }

    /// Number of clients remembered.
    pub(crate) fn len(&self) -> usize {
        self.clients.len()
    }
}

/// What [`Store::apply_session`] did with a client command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionOutcome {
    /// First time this `(client, seq)` was seen: the command was applied
    /// (or refused) and the result remembered.
    Applied(Result<Applied, KvError>),
    /// A retry of a command applied before: not applied again; here is the
    /// remembered result (its events went out the first time).
    Duplicate(Result<Response, KvError>),
    /// More than [`SESSION_WINDOW`] below the client's newest command, whose
    /// answer the table no longer keeps: not applied. The client has
    /// already moved on; drop it.
    Stale {
        /// The client's highest applied sequence number.
        latest_seq: u64,
    },
}

impl Store {
    /// Applies a client command exactly once (DESIGN.md rule 4).
    pub fn apply_session(
        &mut self,
        client: ClientId,
        seq: u64,
        cmd: &Command,
        ctx: ApplyContext,
    ) -> SessionOutcome {
        let now_ms = self.clock_ms.max(ctx.now_ms);
        self.sessions.expire(now_ms, self.limits.session_ttl_ms);
        if let Some(session) = self.sessions.clients.get(&client) {
            if let Some(answer) = session.answers.get(&seq) {
                return SessionOutcome::Duplicate(answer.result());
            }
            if seq < session.low {
                return SessionOutcome::Stale {
                    latest_seq: session.latest(),
                };
            }
        }
        let result = self.apply(cmd, ctx);
        self.sessions.remember(
            client,
            seq,
            now_ms,
            Remembered::new(
                result
                    .as_ref()
                    .map(|a| a.response.clone())
                    .map_err(Clone::clone),
            ),
        );
        self.sessions.bound(self.limits.max_session_answers);
        SessionOutcome::Applied(result)
    }

    /// Number of clients the exactly-once table remembers.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Number of answers the exactly-once table holds, over all clients.
    pub fn session_answers(&self) -> usize {
        self.sessions.answers
    }
}
