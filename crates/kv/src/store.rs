//! The multi-version index: every key's history, the store revision, the
//! change log watchers replay from, and the write path every command uses.
//!
//! Layout, chosen for resident memory (see docs/BENCHMARKS.md):
//! - `index`: a `BTreeMap` from the key to its latest `Record` (a
//!   tombstone if the key is deleted but its history is still needed). The
//!   key bytes live once, in an `Arc<[u8]>` shared with the change log and
//!   the lease key sets.
//! - `history`: every older record of every key, in one vector of shared
//!   chunks (`history.rs`: a snapshot's frozen copy shares them); each record
//!   links to the key's version before it (`prev`), so a key's versions are
//!   a chain from its latest record backwards in revision order.
//!   Compaction cuts chains and marks the records behind the cut dead; when
//!   more than half of history is dead it is rebuilt, so its memory comes
//!   back.
//! - Values live in the `Values` arena (`values.rs`), records hold a 12-byte reference.
//! - `changes`: one small entry per change in revision order (revision,
//!   sub-revision, key). Watchers replay from it, and compaction visits only
//!   the keys it names instead of the whole index.
//!
//! A record is one version: revisions and version as `i64`s (etcd's types),
//! the sub-revision (position inside its transaction) as a `u32`. A delete
//! is a record with version 0, a tombstone, as in etcd.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::cluster::{ClusterMember, SetMembersResponse};
use crate::command::{Applied, ApplyContext, Command, Response};
use crate::error::KvError;
use crate::history::History;
use crate::lease::Lessor;
use crate::limits::Limits;
use crate::range::KeyRange;
use crate::session::SessionTable;
use crate::types::{
    CompactionRequest, CompactionResponse, Event, EventType, KeyValue, LeaseId, NO_LEASE,
    ResponseHeader, Revision,
};
use crate::values::{ValueRef, Values};

/// A key as stored: shared by the index, the change log and lease key sets.
pub(crate) type Key = Arc<[u8]>;

/// "No older version" in a record's `prev` link.
pub(crate) const NONE: u64 = u64::MAX;

/// One version of one key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Record {
    /// The revision that wrote this version; 0 marks a dead history slot.
    pub(crate) mod_revision: Revision,
    /// The revision that created the key (0 for a tombstone).
    pub(crate) create_revision: Revision,
    /// Versions since creation; 0 marks a tombstone.
    pub(crate) version: i64,
    /// Attached lease or [`NO_LEASE`].
    pub(crate) lease: LeaseId,
    /// Position of the change inside its revision.
    pub(crate) sub: u32,
    /// The value's bytes in the arena (empty for a tombstone).
    pub(crate) value: ValueRef,
    /// Index in `history` of the key's previous version, or [`NONE`].
    pub(crate) prev: u64,
}

impl Record {
    /// A delete marker.
    pub(crate) fn is_tombstone(&self) -> bool {
        self.version == 0
    }

    fn is_dead(&self) -> bool {
        self.mod_revision == 0
    }
}

/// One entry of the change log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Change {
    /// Revision of the change.
    pub(crate) main: Revision,
    /// Position inside the revision.
    pub(crate) sub: u32,
    /// The key changed.
    pub(crate) key: Key,
}

/// The replicated key-value state machine.
///
/// Deterministic: the same commands with the same contexts give the same
/// state, responses, events, snapshot bytes and [`Store::state_hash`] on
/// every replica. No IO, clock, randomness or threads inside.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) limits: Limits,
    pub(crate) index: BTreeMap<Key, Record>,
    pub(crate) history: History,
    /// Dead slots in `history`.
    pub(crate) history_dead: usize,
    pub(crate) values: Values,
    pub(crate) changes: VecDeque<Change>,
    pub(crate) revision: Revision,
    pub(crate) compact_revision: Revision,
    /// Latest leader time stamp applied, in milliseconds.
    pub(crate) clock_ms: u64,
    pub(crate) lessor: Lessor,
    pub(crate) sessions: SessionTable,
    /// The member table, in id order (see [`crate::cluster`]).
    pub(crate) members: Vec<ClusterMember>,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Limits::default())
    }
}

impl Store {
    /// An empty store at revision 1, as a fresh etcd is (so the first write
    /// is revision 2). Every replica must use the same `limits`.
    pub fn new(limits: Limits) -> Store {
        Store {
            limits,
            index: BTreeMap::new(),
            history: History::default(),
            history_dead: 0,
            values: Values::default(),
            changes: VecDeque::new(),
            revision: 1,
            compact_revision: 0,
            clock_ms: 0,
            lessor: Lessor::default(),
            sessions: SessionTable::default(),
            members: Vec::new(),
        }
    }

    /// The member table as applied: etcd's `MemberList`, and what the
    /// protocol core's configuration is derived from. Empty until the
    /// first start seeds it ([`Store::seed_members`]).
    pub fn members(&self) -> &[ClusterMember] {
        &self.members
    }

    /// The table a cluster starts with, from its initial configuration
    /// (every member computes the same one from the same flags). Only
    /// before anything was applied: later the log and snapshots carry it.
    pub fn seed_members(&mut self, mut members: Vec<ClusterMember>) {
        debug_assert!(self.members.is_empty(), "the table is seeded once");
        members.sort_by_key(|m| m.id);
        self.members = members;
    }

    /// The limits this store runs with.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The current store revision.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The revision history was last compacted at (0: never).
    pub fn compact_revision(&self) -> Revision {
        self.compact_revision
    }

    /// The latest leader time stamp applied, in milliseconds.
    pub fn clock_ms(&self) -> u64 {
        self.clock_ms
    }

    /// Number of keys that exist at the current revision.
    pub fn key_count(&self) -> usize {
        self.index.values().filter(|r| !r.is_tombstone()).count()
    }

    /// Number of versions held, live and historical (tombstones included):
    /// what compaction shrinks.
    pub fn record_count(&self) -> usize {
        self.index.len() + self.history.len() - self.history_dead
    }

    /// Bytes reserved for value storage (arena segments), for statistics.
    pub fn value_bytes_held(&self) -> usize {
        self.values.held_bytes()
    }

    /// Applies one command from the log. A refused command (`Err`) changes
    /// nothing; an applied one raises the revision by one if it changed any
    /// key (a lease expiry that revokes several leases: by one per lease).
    pub fn apply(&mut self, cmd: &Command, ctx: ApplyContext) -> Result<Applied, KvError> {
        self.limits.check_request(cmd)?;
        let now_ms = self.clock_ms.max(ctx.now_ms);
        let applied = match cmd {
            Command::Put(req) => self.apply_put(req)?,
            Command::DeleteRange(req) => self.apply_delete_range(req)?,
            Command::Txn(req) => self.apply_txn(req)?,
            Command::Compact(req) => Applied {
                response: Response::Compact(self.compact(req)?),
                events: Vec::new(),
            },
            Command::LeaseGrant(req) => self.apply_lease_grant(req, now_ms)?,
            Command::LeaseRevoke(req) => self.apply_lease_revoke(req)?,
            Command::LeaseKeepAlive(req) => self.apply_lease_keep_alive(req, now_ms)?,
            Command::LeaseExpire(req) => self.apply_lease_expire(req, now_ms),
            Command::LeaseRenewAll => self.apply_lease_renew_all(now_ms),
            Command::SetMembers(req) => {
                let mut members = req.members.clone();
                members.sort_by_key(|m| m.id);
                self.members = members;
                Applied {
                    response: Response::SetMembers(SetMembersResponse {
                        header: ResponseHeader {
                            revision: self.revision,
                        },
                        members: self.members.clone(),
                    }),
                    events: Vec::new(),
                }
            }
        };
        self.clock_ms = now_ms;
        debug_assert!(self.compact_revision <= self.revision);
        debug_assert!(
            applied
                .events
                .iter()
                .all(|e| e.kv.mod_revision <= self.revision),
            "events never come from the future"
        );
        Ok(applied)
    }

    // ---- reading versions ----

    /// The bytes of a record's value.
    pub(crate) fn value(&self, r: &Record) -> &[u8] {
        self.values.get(r.value)
    }

    /// A record as etcd's `KeyValue` (a tombstone gives the delete event's
    /// form: key and mod revision only).
    pub(crate) fn to_kv(&self, key: &[u8], r: &Record) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
            value: self.value(r).to_vec(),
            lease: r.lease,
        }
    }

    /// A key's versions from `latest` back, newest first.
    pub(crate) fn chain<'a>(&'a self, latest: &'a Record) -> impl Iterator<Item = &'a Record> {
        std::iter::successors(Some(latest), move |r| {
            let prev = usize::try_from(r.prev).ok()?;
            let older = self.history.get(prev);
            debug_assert!(
                older.is_none_or(
                    |o| !o.is_dead() && (o.mod_revision, o.sub) < (r.mod_revision, r.sub)
                ),
                "a chain runs back through live records in revision order"
            );
            older
        })
    }

    /// The version of a key visible at `rev`: the newest record at or below
    /// it, unless that is a tombstone.
    pub(crate) fn visible_at<'a>(
        &'a self,
        latest: &'a Record,
        rev: Revision,
    ) -> Option<&'a Record> {
        self.chain(latest)
            .find(|r| r.mod_revision <= rev)
            .filter(|r| !r.is_tombstone())
    }

    /// The latest live version of a key.
    pub(crate) fn latest(&self, key: &[u8]) -> Option<&Record> {
        self.index.get(key).filter(|r| !r.is_tombstone())
    }

    /// Checks a read revision the way etcd's mvcc does and resolves 0 (or
    /// negative) to `current`.
    pub(crate) fn read_revision(
        &self,
        requested: Revision,
        current: Revision,
    ) -> Result<Revision, KvError> {
        if requested > current {
            return Err(KvError::FutureRevision {
                current_revision: current,
            });
        }
        let rev = if requested <= 0 { current } else { requested };
        if rev < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        Ok(rev)
    }

    // ---- compaction ----

    /// etcd's compaction: afterwards reads below `revision` fail, and every
    /// version not visible at or after `revision` is freed. Does not raise
    /// the revision.
    pub(crate) fn compact(
        &mut self,
        req: &CompactionRequest,
    ) -> Result<CompactionResponse, KvError> {
        let at = req.revision;
        if at <= self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        if at > self.revision {
            return Err(KvError::FutureRevision {
                current_revision: self.revision,
            });
        }
        // Only keys changed since the last compaction can hold versions to
        // free, and the change log names them; when it names more changes
        // than there are keys, one pass over the index is cheaper.
        let upto = self.changes.partition_point(|c| c.main <= at);
        let mut doomed: Vec<Key> = Vec::new();
        let mut history = Compactor {
            records: &mut self.history,
            dead: &mut self.history_dead,
            values: &mut self.values,
        };
        if upto > self.index.len() {
            for (key, latest) in self.index.iter_mut() {
                if history.compact_chain(latest, at) {
                    doomed.push(Arc::clone(key));
                }
            }
        } else {
            for change in self.changes.range(..upto) {
                if let Some(latest) = self.index.get_mut(&change.key[..])
                    && history.compact_chain(latest, at)
                {
                    doomed.push(Arc::clone(&change.key));
                }
            }
        }
        for key in doomed {
            self.index.remove(&key[..]);
        }
        // Keep changes at `at` and above: a watch may start at `at`.
        let keep_from = self.changes.partition_point(|c| c.main < at);
        self.changes.drain(..keep_from);
        if self.changes.capacity() > 2 * self.changes.len() + 1024 {
            self.changes.shrink_to_fit();
        }
        self.compact_revision = at;
        self.reclaim();
        Ok(CompactionResponse {
            header: ResponseHeader {
                revision: self.revision,
            },
        })
    }

    /// Gives memory back after a compaction: drops empty value segments,
    /// evacuates mostly-dead ones, and rebuilds `history` when more than
    /// half of it is dead. Each step costs a pass over the live records at
    /// most, and runs only when at least as much garbage is freed.
    fn reclaim(&mut self) {
        if let Some(mask) = self.values.reclaim() {
            let evacuated = |r: &Record| mask.get(r.value.segment()).copied().unwrap_or(false);
            for r in self.index.values_mut().chain(self.history.iter_mut()) {
                if r.value.len() > 0 && !r.is_dead() && evacuated(r) {
                    r.value = self.values.relocate(r.value);
                }
            }
            self.values.drop_segments(&mask);
        }
        if self.history_dead * 2 <= self.history.len() {
            return;
        }
        if self.history_dead == self.history.len() {
            debug_assert!(self.index.values().all(|r| r.prev == NONE));
            self.history = self.history.emptied();
            self.history_dead = 0;
            return;
        }
        let mut remap = vec![NONE; self.history.len()];
        let mut rebuilt = self.history.emptied();
        for (i, r) in self.history.iter().enumerate() {
            if !r.is_dead() {
                remap[i] = rebuilt.push(*r) as u64;
            }
        }
        let moved = |prev: u64| -> u64 {
            usize::try_from(prev)
                .ok()
                .and_then(|i| remap.get(i).copied())
                .unwrap_or(NONE)
        };
        for r in rebuilt.iter_mut().chain(self.index.values_mut()) {
            r.prev = moved(r.prev);
        }
        self.history = rebuilt;
        self.history_dead = 0;
    }
}

/// The parts of the store compaction frees versions from.
struct Compactor<'a> {
    records: &'a mut History,
    dead: &'a mut usize,
    values: &'a mut Values,
}

impl Compactor<'_> {
    /// Frees one key's versions that compaction at `at` makes unreachable:
    /// every version before the one visible at `at`, and that one too if it
    /// is a tombstone older than `at` (a tombstone at exactly `at` stays, so
    /// a watch from `at` still sees the delete). Returns whether the key
    /// itself goes (its latest version is such a tombstone).
    fn compact_chain(&mut self, latest: &mut Record, at: Revision) -> bool {
        if latest.mod_revision <= at {
            self.kill(latest.prev);
            latest.prev = NONE;
            return latest.is_tombstone() && latest.mod_revision < at;
        }
        // Walk back to the version visible at `at`; `newer` is the slot
        // holding the link to the record being looked at.
        let mut newer: Option<usize> = None;
        let mut next = latest.prev;
        while let Ok(i) = usize::try_from(next) {
            let Some(&r) = self.records.get(i) else { break };
            if r.mod_revision <= at {
                if r.is_tombstone() && r.mod_revision < at {
                    self.kill(next);
                    match newer {
                        None => latest.prev = NONE,
                        Some(j) => {
                            if let Some(newer) = self.records.get_mut(j) {
                                newer.prev = NONE;
                            }
                        }
                    }
                } else {
                    if let Some(visible) = self.records.get_mut(i) {
                        visible.prev = NONE;
                    }
                    self.kill(r.prev);
                }
                break;
            }
            newer = Some(i);
            next = r.prev;
        }
        false
    }

    /// Marks a chain of history records dead and releases their values.
    fn kill(&mut self, mut next: u64) {
        while let Ok(i) = usize::try_from(next) {
            let Some(r) = self.records.get_mut(i) else {
                break;
            };
            debug_assert!(!r.is_dead(), "a record dies once");
            next = r.prev;
            self.values.release(r.value);
            *r = Record {
                mod_revision: 0,
                create_revision: 0,
                version: 0,
                lease: NO_LEASE,
                sub: 0,
                value: ValueRef::default(),
                prev: NONE,
            };
            *self.dead += 1;
        }
    }
}

/// One write transaction: every change gets revision `begin + 1` and the
/// next sub-revision; the store's revision moves once, in
/// [`WriteTxn::finish`], and only if something changed.
pub(crate) struct WriteTxn<'s> {
    pub(crate) store: &'s mut Store,
    begin: Revision,
    events: Vec<Event>,
}

impl<'s> WriteTxn<'s> {
    /// Starts a write transaction at the store's current revision.
    pub(crate) fn new(store: &'s mut Store) -> WriteTxn<'s> {
        let begin = store.revision;
        WriteTxn {
            store,
            begin,
            events: Vec::new(),
        }
    }

    /// The revision reads inside the transaction see: the transaction's own
    /// writes once there are any, as etcd's `storeTxnWrite.Range`.
    pub(crate) fn read_revision(&self) -> Revision {
        if self.events.is_empty() {
            self.begin
        } else {
            self.begin + 1
        }
    }

    /// The revision the transaction started at.
    pub(crate) fn begin_revision(&self) -> Revision {
        self.begin
    }

    fn next_sub(&self) -> u32 {
        // Changes per transaction are bounded by the request size limit;
        // saturate rather than wrap if a configuration ever allowed more.
        u32::try_from(self.events.len()).unwrap_or(u32::MAX)
    }

    /// Makes `record` the key's latest version, moving the previous latest
    /// into history; logs the change.
    fn push_version(&mut self, key: &Key, mut record: Record) {
        let store = &mut *self.store;
        match store.index.get_mut(&key[..]) {
            Some(latest) => {
                debug_assert!(
                    (latest.mod_revision, latest.sub) < (record.mod_revision, record.sub),
                    "versions are added in revision order"
                );
                record.prev = store.history.len() as u64;
                store.history.push(*latest);
                *latest = record;
            }
            None => {
                record.prev = NONE;
                store.index.insert(Arc::clone(key), record);
            }
        }
        store.changes.push_back(Change {
            main: record.mod_revision,
            sub: record.sub,
            key: Arc::clone(key),
        });
    }

    /// Writes a key (etcd's `storeTxnWrite.put`): keeps the create revision
    /// of a live key, raises its version, moves it to `lease`. Returns the
    /// revision of the write.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], lease: LeaseId) -> Revision {
        let rev = self.begin + 1;
        let sub = self.next_sub();
        let (shared, latest) = match self.store.index.get_key_value(key) {
            Some((k, r)) => (Arc::clone(k), Some(*r)),
            None => (Arc::from(key), None),
        };
        let (create_revision, version, old_lease) = match latest.filter(|r| !r.is_tombstone()) {
            Some(r) => (r.create_revision, r.version + 1, r.lease),
            None => (rev, 1, NO_LEASE),
        };
        // As etcd's watch: no previous pair for a create event.
        let prev_kv = match &latest {
            Some(l) if version > 1 => self
                .store
                .visible_at(l, rev - 1)
                .map(|r| self.store.to_kv(key, r)),
            _ => None,
        };
        let record = Record {
            mod_revision: rev,
            create_revision,
            version,
            lease,
            sub,
            value: self.store.values.store(value),
            prev: NONE,
        };
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision,
            mod_revision: rev,
            version,
            value: value.to_vec(),
            lease,
        };
        self.push_version(&shared, record);
        if old_lease != lease {
            if old_lease != NO_LEASE {
                self.store.lessor.detach(old_lease, &shared);
            }
            if lease != NO_LEASE {
                self.store.lessor.attach(lease, shared);
            }
        }
        self.events.push(Event {
            r#type: EventType::Put,
            kv,
            prev_kv,
        });
        rev
    }

    /// Deletes every live key of `range` (etcd's `storeTxnWrite.deleteRange`)
    /// and returns the pairs deleted, in key order.
    pub(crate) fn delete_range(&mut self, range: &KeyRange<'_>) -> Vec<KeyValue> {
        let victims: Vec<Key> = range
            .iter(&self.store.index)
            .filter(|(_, r)| !r.is_tombstone())
            .map(|(k, _)| Arc::clone(k))
            .collect();
        let mut deleted = Vec::with_capacity(victims.len());
        for key in victims {
            if let Some(kv) = self.delete_key(&key) {
                deleted.push(kv);
            }
        }
        deleted
    }

    /// Writes a tombstone for one live key; returns the pair it deleted.
    pub(crate) fn delete_key(&mut self, key: &Key) -> Option<KeyValue> {
        let rev = self.begin + 1;
        let sub = self.next_sub();
        let latest = *self.store.latest(key)?;
        let deleted = self.store.to_kv(key, &latest);
        let prev_kv = self
            .store
            .visible_at(&latest, rev - 1)
            .map(|r| self.store.to_kv(key, r));
        self.push_version(
            key,
            Record {
                mod_revision: rev,
                create_revision: 0,
                version: 0,
                lease: NO_LEASE,
                sub,
                value: ValueRef::default(),
                prev: NONE,
            },
        );
        if latest.lease != NO_LEASE {
            self.store.lessor.detach(latest.lease, key);
        }
        self.events.push(Event {
            r#type: EventType::Delete,
            kv: KeyValue {
                key: key.to_vec(),
                mod_revision: rev,
                ..KeyValue::default()
            },
            prev_kv,
        });
        Some(deleted)
    }

    /// Ends the transaction: raises the revision if anything changed and
    /// hands back the events.
    pub(crate) fn finish(self) -> Vec<Event> {
        if !self.events.is_empty() {
            self.store.revision = self.begin + 1;
        }
        debug_assert!(self.store.revision >= self.begin);
        self.events
    }
}

#[cfg(test)]
mod tests {
    //! The memory machinery (value segments, history rebuilds) under tiny
    //! segments, checked against a store with the default layout: the
    //! layout must never show through reads, events or snapshots.
    use super::*;
    use crate::types::{DeleteRangeRequest, PutRequest, RangeRequest};
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Put(u8, usize),
        Delete(u8, u8),
        Compact(u8),
        /// Freeze a copy for a snapshot, kept to the end of the run.
        Freeze,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..16u8, 0..40usize).prop_map(|(k, n)| Op::Put(k, n)),
            1 => (0..16u8, 0..16u8).prop_map(|(k, e)| Op::Delete(k, e)),
            2 => any::<u8>().prop_map(Op::Compact),
            1 => Just(Op::Freeze),
        ]
    }

    fn key(k: u8) -> Vec<u8> {
        vec![b'k', k]
    }

    proptest! {
        #[test]
        fn layout_never_shows(ops in prop::collection::vec(op(), 1..200), seg in 1..64usize, chunk in 0..4u32) {
            let mut tiny = Store {
                values: Values::with_segment_bytes(seg),
                history: History::with_chunk_shift(chunk),
                ..Store::default()
            };
            let mut plain = Store::default();
            let ctx = ApplyContext::default();
            let mut frozen = Vec::new();
            for (i, op) in ops.iter().enumerate() {
                let cmd = match *op {
                    Op::Freeze => {
                        frozen.push((tiny.snapshot(), tiny.frozen()));
                        continue;
                    }
                    Op::Put(k, n) => Command::Put(PutRequest {
                        key: key(k),
                        value: vec![i as u8; n],
                        ..PutRequest::default()
                    }),
                    Op::Delete(k, e) => Command::DeleteRange(DeleteRangeRequest {
                        key: key(k),
                        range_end: key(e),
                        prev_kv: true,
                    }),
                    Op::Compact(r) => Command::Compact(CompactionRequest {
                        revision: i64::from(r) % (plain.revision() + 1),
                        physical: false,
                    }),
                };
                prop_assert_eq!(tiny.apply(&cmd, ctx), plain.apply(&cmd, ctx));
                prop_assert_eq!(tiny.record_count(), plain.record_count());
            }
            for rev in plain.compact_revision().max(1)..=plain.revision() {
                let req = RangeRequest { key: vec![0], range_end: vec![0], revision: rev, ..RangeRequest::default() };
                prop_assert_eq!(tiny.range(&req), plain.range(&req));
            }
            let since = plain.compact_revision();
            prop_assert_eq!(tiny.events_since(since, &[0], &[0]), plain.events_since(since, &[0], &[0]));
            prop_assert_eq!(tiny.snapshot(), plain.snapshot());
            // A frozen copy shares value segments and history chunks with
            // the store, which went on writing and compacting.
            for (at_freeze, copy) in &frozen {
                prop_assert_eq!(&copy.snapshot(), at_freeze);
            }
            // History is rebuilt whenever more than half of it is dead.
            prop_assert!(tiny.history_dead * 2 <= tiny.history.len().max(1));
        }
    }

    #[test]
    fn overwritten_and_compacted_values_free_their_segments() {
        let mut s = Store {
            values: Values::with_segment_bytes(1024),
            ..Store::default()
        };
        let ctx = ApplyContext::default();
        for round in 0..10u8 {
            for k in 0..64u8 {
                let put = Command::Put(PutRequest {
                    key: key(k),
                    value: vec![round; 100],
                    ..PutRequest::default()
                });
                s.apply(&put, ctx).expect("put");
            }
        }
        assert!(s.values.held_bytes() >= 64 * 100 * 10);
        let revision = s.revision();
        s.apply(
            &Command::Compact(CompactionRequest {
                revision,
                physical: false,
            }),
            ctx,
        )
        .expect("compact");
        assert_eq!(s.record_count(), 64);
        assert!(s.history.is_empty());
        // Only the last round's values stay: about 6400 bytes in 1 KiB
        // segments, plus the active one.
        assert!(
            s.values.held_bytes() <= 64 * 100 + 2 * 1024,
            "{}",
            s.values.held_bytes()
        );
    }
}
