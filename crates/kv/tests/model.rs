//! Model-based property test: random sequences of commands and reads run
//! against the store and against a naive reference model of etcd's
//! semantics, and every answer, error, event and read must agree.
//!
//! The model keeps a flat log of every write ever made, `(revision, key,
//! value or delete, lease)` in order, and answers everything by replaying
//! it: no index, no compaction of its own (it only remembers the compact
//! revision to refuse reads below it). Transactions, leases with leader
//! time, compaction, watch replay, exactly-once retries and snapshot/restore
//! are all in the mix.

use std::collections::BTreeMap;

use kv::*;
use proptest::prelude::*;

// ---- the reference model ---------------------------------------------------

#[derive(Clone, Debug)]
struct Entry {
    rev: i64,
    key: Vec<u8>,
    value: Option<Vec<u8>>,
    lease: i64,
}

type State = BTreeMap<Vec<u8>, KeyValue>;

#[derive(Clone, Debug)]
struct Model {
    log: Vec<Entry>,
    rev: i64,
    compact: i64,
    /// id -> (ttl seconds, deadline ms)
    leases: BTreeMap<i64, (i64, u64)>,
    next_lease: i64,
    clock: u64,
}

const MIN_TTL: i64 = 2;
const MAX_OPS: usize = 128;

fn in_range(key: &[u8], start: &[u8], end: &[u8]) -> bool {
    match end {
        [] => key == start,
        [0] => key >= start,
        end => key >= start && key < end,
    }
}

fn replay<'a>(entries: impl Iterator<Item = &'a Entry>) -> State {
    let mut state = State::new();
    for e in entries {
        match &e.value {
            Some(v) => {
                let (create, version) = match state.get(&e.key) {
                    Some(kv) => (kv.create_revision, kv.version + 1),
                    None => (e.rev, 1),
                };
                state.insert(
                    e.key.clone(),
                    KeyValue {
                        key: e.key.clone(),
                        create_revision: create,
                        mod_revision: e.rev,
                        version,
                        value: v.clone(),
                        lease: e.lease,
                    },
                );
            }
            None => {
                state.remove(&e.key);
            }
        }
    }
    state
}

/// Path-wise duplicate rule: on some combination of nested branches, a key
/// is put twice or put and deleted. etcd's own check refuses a subset of
/// these (it lets two corners through), never anything else.
fn path_conflict(ops: &[RequestOp]) -> bool {
    /// Per path: keys put, and (key, range_end) deleted.
    type PathEffects = (Vec<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);
    fn paths(ops: &[RequestOp]) -> Vec<PathEffects> {
        let mut acc = vec![(Vec::new(), Vec::new())];
        for op in ops {
            match op {
                RequestOp::Put(p) => acc.iter_mut().for_each(|a| a.0.push(p.key.clone())),
                RequestOp::DeleteRange(d) => acc
                    .iter_mut()
                    .for_each(|a| a.1.push((d.key.clone(), d.range_end.clone()))),
                RequestOp::Range(_) => {}
                RequestOp::Txn(t) => {
                    let mut alts = paths(&t.success);
                    alts.extend(paths(&t.failure));
                    let mut next = Vec::new();
                    for a in &acc {
                        for b in &alts {
                            let mut c = a.clone();
                            c.0.extend(b.0.iter().cloned());
                            c.1.extend(b.1.iter().cloned());
                            next.push(c);
                        }
                    }
                    acc = next;
                }
            }
        }
        acc
    }
    paths(ops).iter().any(|(puts, dels)| {
        puts.iter()
            .enumerate()
            .any(|(i, k)| puts[i + 1..].contains(k) || dels.iter().any(|(s, e)| in_range(k, s, e)))
    })
}

fn static_check(t: &TxnRequest, max: usize) -> Result<(), KvError> {
    let opc = t.compare.len().max(t.success.len()).max(t.failure.len());
    if opc > max {
        return Err(KvError::TooManyOps { max_txn_ops: max });
    }
    if t.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in t.success.iter().chain(&t.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(KvError::EmptyKey),
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(KvError::EmptyKey),
            RequestOp::Put(p) => check_put(p)?,
            RequestOp::Txn(n) => static_check(n, max - opc)?,
            _ => {}
        }
    }
    Ok(())
}

fn check_put(p: &PutRequest) -> Result<(), KvError> {
    if p.key.is_empty() {
        return Err(KvError::EmptyKey);
    }
    if p.ignore_value && !p.value.is_empty() {
        return Err(KvError::ValueProvided);
    }
    if p.ignore_lease && p.lease != 0 {
        return Err(KvError::LeaseProvided);
    }
    Ok(())
}

fn compare_holds(state: &State, c: &Compare) -> bool {
    let kvs: Vec<&KeyValue> = state
        .values()
        .filter(|kv| in_range(&kv.key, &c.key, &c.range_end))
        .collect();
    let rel = |ord: std::cmp::Ordering| match c.result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
        CompareResult::NotEqual => ord.is_ne(),
    };
    let test = |kv: &KeyValue| {
        rel(match &c.target {
            CompareTarget::Version(v) => kv.version.cmp(v),
            CompareTarget::CreateRevision(v) => kv.create_revision.cmp(v),
            CompareTarget::ModRevision(v) => kv.mod_revision.cmp(v),
            CompareTarget::Value(v) => kv.value.cmp(v),
            CompareTarget::Lease(v) => kv.lease.cmp(v),
        })
    };
    if kvs.is_empty() {
        return !matches!(c.target, CompareTarget::Value(_)) && test(&KeyValue::default());
    }
    kvs.into_iter().all(test)
}

struct MPath {
    ok: bool,
    nested: Vec<MPath>,
}

fn path(state: &State, t: &TxnRequest) -> MPath {
    let ok = t.compare.iter().all(|c| compare_holds(state, c));
    let branch = if ok { &t.success } else { &t.failure };
    MPath {
        ok,
        nested: branch
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(n) => Some(path(state, n)),
                _ => None,
            })
            .collect(),
    }
}

fn sort_kvs(kvs: &mut [KeyValue], target: SortTarget, descend: bool) {
    let key = |kv: &KeyValue| -> (i64, Vec<u8>) {
        match target {
            SortTarget::Key => (0, kv.key.clone()),
            SortTarget::Version => (kv.version, Vec::new()),
            SortTarget::Create => (kv.create_revision, Vec::new()),
            SortTarget::Mod => (kv.mod_revision, Vec::new()),
            SortTarget::Value => (0, kv.value.clone()),
        }
    };
    if descend {
        kvs.sort_by_key(|kv| std::cmp::Reverse(key(kv)));
    } else {
        kvs.sort_by_key(key);
    }
}

impl Model {
    fn new() -> Model {
        Model {
            log: Vec::new(),
            rev: 1,
            compact: 0,
            leases: BTreeMap::new(),
            next_lease: 0,
            clock: 0,
        }
    }

    fn state_at(&self, rev: i64) -> State {
        replay(self.log.iter().take_while(|e| e.rev <= rev))
    }

    fn latest(&self) -> State {
        replay(self.log.iter())
    }

    fn read_rev(&self, requested: i64, current: i64) -> Result<i64, KvError> {
        if requested > current {
            return Err(KvError::FutureRevision {
                current_revision: current,
            });
        }
        let rev = if requested <= 0 { current } else { requested };
        if rev < self.compact {
            return Err(KvError::Compacted {
                compact_revision: self.compact,
            });
        }
        Ok(rev)
    }

    fn range_in(&self, state: &State, req: &RangeRequest, header: i64) -> RangeResponse {
        let mut kvs: Vec<KeyValue> = state
            .values()
            .filter(|kv| in_range(&kv.key, &req.key, &req.range_end))
            .cloned()
            .collect();
        let count = kvs.len() as i64;
        let header = ResponseHeader { revision: header };
        if req.count_only {
            return RangeResponse {
                header,
                kvs: Vec::new(),
                more: false,
                count,
            };
        }
        kvs.retain(|kv| {
            (req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
                && (req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
                && (req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
                && (req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
        });
        match (req.sort_target, req.sort_order) {
            (_, SortOrder::Descend) => sort_kvs(&mut kvs, req.sort_target, true),
            (SortTarget::Key, _) => {}
            (t, _) => sort_kvs(&mut kvs, t, false),
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() > req.limit as usize {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        RangeResponse {
            header,
            kvs,
            more,
            count,
        }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        if req.key.is_empty() {
            return Err(KvError::EmptyKey);
        }
        let rev = self.read_rev(req.revision, self.rev)?;
        Ok(self.range_in(&self.state_at(rev), req, self.rev))
    }

    /// Event for log entry `i`, as replay or apply gives it.
    fn event(&self, i: usize) -> Event {
        let e = &self.log[i];
        let prev = if e.rev <= self.compact {
            None
        } else {
            self.state_at(e.rev - 1).remove(&e.key)
        };
        match &e.value {
            Some(_) => {
                let kv = replay(self.log[..=i].iter())
                    .remove(&e.key)
                    .expect("just put");
                let prev_kv = if kv.version == 1 { None } else { prev };
                Event {
                    r#type: EventType::Put,
                    kv,
                    prev_kv,
                }
            }
            None => Event {
                r#type: EventType::Delete,
                kv: KeyValue {
                    key: e.key.clone(),
                    mod_revision: e.rev,
                    ..KeyValue::default()
                },
                prev_kv: prev,
            },
        }
    }

    fn events_since(&self, start: i64, key: &[u8], end: &[u8]) -> Result<Vec<Event>, KvError> {
        if start < self.compact {
            return Err(KvError::Compacted {
                compact_revision: self.compact,
            });
        }
        let mut out = Vec::new();
        for (i, e) in self.log.iter().enumerate() {
            if e.rev < start || !in_range(&e.key, key, end) {
                continue;
            }
            // Compaction keeps one version per key at the compact revision.
            let superseded_at_compact = e.rev == self.compact
                && self.log[i + 1..]
                    .iter()
                    .any(|l| l.rev == e.rev && l.key == e.key);
            if !superseded_at_compact {
                out.push(self.event(i));
            }
        }
        Ok(out)
    }

    fn write(&mut self, key: &[u8], value: Option<Vec<u8>>, lease: i64, events: &mut Vec<Event>) {
        self.log.push(Entry {
            rev: self.rev + 1,
            key: key.to_vec(),
            value,
            lease,
        });
        let ev = self.event(self.log.len() - 1);
        events.push(ev);
    }

    fn exec_put(&mut self, p: &PutRequest, events: &mut Vec<Event>) -> PutResponse {
        let cur = self.latest().remove(&p.key);
        let value = match (&cur, p.ignore_value) {
            (Some(kv), true) => kv.value.clone(),
            _ => p.value.clone(),
        };
        let lease = match (&cur, p.ignore_lease) {
            (Some(kv), true) => kv.lease,
            _ => p.lease,
        };
        self.write(&p.key, Some(value), lease, events);
        PutResponse {
            header: ResponseHeader::default(),
            prev_kv: if p.prev_kv { cur } else { None },
        }
    }

    fn exec_delete(
        &mut self,
        d: &DeleteRangeRequest,
        events: &mut Vec<Event>,
    ) -> DeleteRangeResponse {
        let victims: Vec<KeyValue> = self
            .latest()
            .into_values()
            .filter(|kv| in_range(&kv.key, &d.key, &d.range_end))
            .collect();
        for kv in &victims {
            self.write(&kv.key, None, 0, events);
        }
        DeleteRangeResponse {
            header: ResponseHeader::default(),
            deleted: victims.len() as i64,
            prev_kvs: if d.prev_kv { victims } else { Vec::new() },
        }
    }

    fn precheck(
        &self,
        state: &State,
        t: &TxnRequest,
        p: &MPath,
        puts: bool,
    ) -> Result<(), KvError> {
        let branch = if p.ok { &t.success } else { &t.failure };
        let mut nested = p.nested.iter();
        for op in branch {
            match op {
                RequestOp::Txn(n) => self.precheck(state, n, nested.next().expect("path"), puts)?,
                RequestOp::Put(x) if puts => {
                    if x.lease != 0 && !self.leases.contains_key(&x.lease) {
                        return Err(KvError::LeaseNotFound { id: x.lease });
                    }
                    if (x.ignore_value || x.ignore_lease) && !state.contains_key(&x.key) {
                        return Err(KvError::KeyNotFound);
                    }
                }
                RequestOp::Range(r) if !puts && r.revision > 0 => {
                    self.read_rev(r.revision, self.rev)?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn exec_txn(&mut self, t: &TxnRequest, p: &MPath, events: &mut Vec<Event>) -> TxnResponse {
        let branch = if p.ok { &t.success } else { &t.failure };
        let mut nested = p.nested.iter();
        let mut responses = Vec::new();
        for op in branch {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let read = if r.revision > 0 {
                        self.state_at(r.revision)
                    } else {
                        self.latest()
                    };
                    ResponseOp::Range(self.range_in(&read, r, 0))
                }
                RequestOp::Put(x) => ResponseOp::Put(self.exec_put(x, events)),
                RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(self.exec_delete(d, events)),
                RequestOp::Txn(n) => {
                    ResponseOp::Txn(self.exec_txn(n, nested.next().expect("path"), events))
                }
            });
        }
        TxnResponse {
            header: ResponseHeader::default(),
            succeeded: p.ok,
            responses,
        }
    }

    fn revoke(&mut self, id: i64, events: &mut Vec<Event>) {
        let keys: Vec<Vec<u8>> = self
            .latest()
            .into_values()
            .filter(|kv| kv.lease == id)
            .map(|kv| kv.key)
            .collect();
        for key in keys {
            self.write(&key, None, 0, events);
        }
        self.leases.remove(&id);
    }

    fn finish(&mut self, events: &[Event]) {
        if !events.is_empty() {
            self.rev += 1;
        }
    }

    fn header(&self) -> ResponseHeader {
        ResponseHeader { revision: self.rev }
    }

    fn expired(&self, now: u64) -> Vec<i64> {
        let mut v: Vec<(u64, i64)> = self
            .leases
            .iter()
            .filter(|(_, (_, exp))| *exp <= now)
            .map(|(&id, &(_, exp))| (exp, id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    /// `impl_said_duplicate`: the store's verdict on etcd's duplicate rule,
    /// which the model only bounds (see `path_conflict`).
    fn apply(
        &mut self,
        cmd: &Command,
        now: u64,
        impl_said_duplicate: bool,
    ) -> Result<Applied, KvError> {
        let now = now.max(self.clock);
        let mut events = Vec::new();
        let response = match cmd {
            Command::Put(p) => {
                check_put(p)?;
                if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                    return Err(KvError::LeaseNotFound { id: p.lease });
                }
                if (p.ignore_value || p.ignore_lease) && !self.latest().contains_key(&p.key) {
                    return Err(KvError::KeyNotFound);
                }
                let mut r = self.exec_put(p, &mut events);
                self.finish(&events);
                r.header = self.header();
                Response::Put(r)
            }
            Command::DeleteRange(d) => {
                if d.key.is_empty() {
                    return Err(KvError::EmptyKey);
                }
                let mut r = self.exec_delete(d, &mut events);
                self.finish(&events);
                r.header = self.header();
                Response::DeleteRange(r)
            }
            Command::Txn(t) => {
                static_check(t, MAX_OPS)?;
                let conflict = path_conflict(&t.success) || path_conflict(&t.failure);
                assert!(
                    !impl_said_duplicate || conflict,
                    "store refused a txn with no duplicate on any path: {t:?}"
                );
                if impl_said_duplicate {
                    return Err(KvError::DuplicateKey);
                }
                let state = self.latest();
                let p = path(&state, t);
                self.precheck(&state, t, &p, true)?;
                self.precheck(&state, t, &p, false)?;
                let mut r = self.exec_txn(t, &p, &mut events);
                self.finish(&events);
                stamp(&mut r, self.rev);
                Response::Txn(r)
            }
            Command::Compact(c) => {
                if c.revision <= self.compact {
                    return Err(KvError::Compacted {
                        compact_revision: self.compact,
                    });
                }
                if c.revision > self.rev {
                    return Err(KvError::FutureRevision {
                        current_revision: self.rev,
                    });
                }
                self.compact = c.revision;
                Response::Compact(CompactionResponse {
                    header: self.header(),
                })
            }
            Command::LeaseGrant(g) => {
                if g.ttl > 9_000_000_000 {
                    return Err(KvError::LeaseTtlTooLarge { ttl: g.ttl });
                }
                if g.id != 0 && self.leases.contains_key(&g.id) {
                    return Err(KvError::LeaseExists { id: g.id });
                }
                let id = if g.id != 0 {
                    g.id
                } else {
                    loop {
                        let id = self.next_lease.max(1);
                        self.next_lease = id + 1;
                        if !self.leases.contains_key(&id) {
                            break id;
                        }
                    }
                };
                let ttl = g.ttl.max(MIN_TTL);
                self.leases.insert(id, (ttl, now + ttl as u64 * 1000));
                Response::LeaseGrant(LeaseGrantResponse {
                    header: self.header(),
                    id,
                    ttl,
                    error: String::new(),
                })
            }
            Command::LeaseRevoke(r) => {
                if !self.leases.contains_key(&r.id) {
                    return Err(KvError::LeaseNotFound { id: r.id });
                }
                self.revoke(r.id, &mut events);
                self.finish(&events);
                Response::LeaseRevoke(LeaseRevokeResponse {
                    header: self.header(),
                })
            }
            Command::LeaseKeepAlive(k) => {
                let (ttl, exp) = *self
                    .leases
                    .get(&k.id)
                    .ok_or(KvError::LeaseNotFound { id: k.id })?;
                if exp <= now {
                    return Err(KvError::LeaseNotFound { id: k.id });
                }
                self.leases.insert(k.id, (ttl, now + ttl as u64 * 1000));
                Response::LeaseKeepAlive(LeaseKeepAliveResponse {
                    header: self.header(),
                    id: k.id,
                    ttl,
                })
            }
            Command::LeaseExpire(x) => {
                let mut revoked = Vec::new();
                for &id in &x.ids {
                    if self.leases.get(&id).is_some_and(|&(_, exp)| exp <= now) {
                        let mut evs = Vec::new();
                        self.revoke(id, &mut evs);
                        self.finish(&evs);
                        events.extend(evs);
                        revoked.push(id);
                    }
                }
                Response::LeaseExpire(LeaseExpireResponse {
                    header: self.header(),
                    revoked,
                })
            }
            Command::LeaseRenewAll => {
                for (ttl, exp) in self.leases.values_mut() {
                    *exp = now + *ttl as u64 * 1000;
                }
                Response::LeaseRenewAll(LeaseRenewAllResponse {
                    header: self.header(),
                    renewed: self.leases.len() as u64,
                })
            }
            Command::SetMembers(m) => {
                let mut members = m.members.clone();
                members.sort_by_key(|m| m.id);
                Response::SetMembers(kv::SetMembersResponse {
                    header: self.header(),
                    members,
                })
            }
        };
        self.clock = now;
        Ok(Applied { response, events })
    }

    fn time_to_live(&self, id: i64, now: u64) -> LeaseTimeToLiveResponse {
        let now = now.max(self.clock);
        match self.leases.get(&id) {
            None => LeaseTimeToLiveResponse {
                header: self.header(),
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
            Some(&(ttl, exp)) => LeaseTimeToLiveResponse {
                header: self.header(),
                id,
                ttl: (exp.saturating_sub(now) / 1000) as i64,
                granted_ttl: ttl,
                keys: self
                    .latest()
                    .into_values()
                    .filter(|kv| kv.lease == id)
                    .map(|kv| kv.key)
                    .collect(),
            },
        }
    }
}

fn stamp(r: &mut TxnResponse, rev: i64) {
    r.header.revision = rev;
    for op in &mut r.responses {
        match op {
            ResponseOp::Range(x) => x.header.revision = rev,
            ResponseOp::Put(x) => x.header.revision = rev,
            ResponseOp::DeleteRange(x) => x.header.revision = rev,
            ResponseOp::Txn(x) => stamp(x, rev),
        }
    }
}

// ---- generators ------------------------------------------------------------

/// A small key space with NUL and 0xff bytes, and (rarely) the empty key.
const KEYS: &[&[u8]] = &[
    b"a",
    b"ab",
    b"b",
    b"b\0",
    b"c",
    b"d",
    b"e",
    b"f",
    b"g",
    b"\xff\x00",
];

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        60 => (0..KEYS.len()).prop_map(|i| KEYS[i].to_vec()),
        1 => Just(Vec::new()),
    ]
}

fn range_end() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(Vec::new()),
        2 => Just(vec![0]),
        3 => (0..KEYS.len()).prop_map(|i| KEYS[i].to_vec()),
    ]
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(1), Just(0xff)], 0..3)
}

/// A revision chosen when the step runs: `sel % (current + 2)`, so 0 (the
/// current revision), old ones (maybe compacted), and one in the future.
#[derive(Clone, Copy, Debug)]
struct RevSel(u8);

impl RevSel {
    fn at(self, current: i64) -> i64 {
        i64::from(self.0) % (current + 2)
    }
}

#[derive(Clone, Debug)]
enum GenOp {
    Range(RangeRequest, RevSel),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
}

fn lease_ref() -> impl Strategy<Value = i64> {
    prop_oneof![12 => Just(0i64), 6 => 1..=3i64, 1 => Just(99i64)]
}

fn put_request() -> impl Strategy<Value = PutRequest> {
    (key(), value(), lease_ref(), any::<bool>(), 0..24u8).prop_map(
        |(key, value, lease, prev_kv, f)| {
            let ignore_value = f == 0;
            let ignore_lease = f == 1;
            PutRequest {
                key,
                // Mostly well-formed ignore_* requests, sometimes not.
                value: if ignore_value && f % 2 == 0 {
                    Vec::new()
                } else {
                    value
                },
                lease: if ignore_lease { 0 } else { lease },
                prev_kv,
                ignore_value,
                ignore_lease,
            }
        },
    )
}

fn delete_request() -> impl Strategy<Value = DeleteRangeRequest> {
    (key(), range_end(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn range_request() -> impl Strategy<Value = (RangeRequest, RevSel)> {
    (
        (key(), range_end(), -1..4i64, any::<u8>(), 0..3u8, 0..5u8),
        (
            0..6u8,
            prop::array::uniform4(prop_oneof![4 => Just(0i64), 1 => 1..8i64]),
        ),
    )
        .prop_map(
            |((key, range_end, limit, rev, order, target), (flags, f))| {
                (
                    RangeRequest {
                        key,
                        range_end,
                        limit,
                        revision: 0,
                        sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend]
                            [order as usize],
                        sort_target: [
                            SortTarget::Key,
                            SortTarget::Version,
                            SortTarget::Create,
                            SortTarget::Mod,
                            SortTarget::Value,
                        ][target as usize],
                        serializable: false,
                        keys_only: flags == 1,
                        count_only: flags == 2,
                        min_mod_revision: f[0],
                        max_mod_revision: f[1],
                        min_create_revision: f[2],
                        max_create_revision: f[3],
                    },
                    RevSel(rev),
                )
            },
        )
}

fn compare() -> impl Strategy<Value = Compare> {
    let target = prop_oneof![
        (-1..4i64).prop_map(CompareTarget::Version),
        (0..8i64).prop_map(CompareTarget::CreateRevision),
        (0..8i64).prop_map(CompareTarget::ModRevision),
        value().prop_map(CompareTarget::Value),
        (0..4i64).prop_map(CompareTarget::Lease),
    ];
    let result = prop_oneof![
        Just(CompareResult::Equal),
        Just(CompareResult::Greater),
        Just(CompareResult::Less),
        Just(CompareResult::NotEqual),
    ];
    (
        result,
        target,
        key(),
        prop_oneof![3 => Just(Vec::new()), 1 => range_end()],
    )
        .prop_map(|(result, target, key, range_end)| Compare {
            result,
            target,
            key,
            range_end,
        })
}

fn txn_request() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        2 => range_request().prop_map(|(mut r, sel)| {
            // Inside a txn a fixed small revision: sometimes old, sometimes
            // compacted, sometimes future.
            r.revision = if sel.0 % 4 == 0 { i64::from(sel.0 % 12) } else { 0 };
            RequestOp::Range(r)
        }),
        3 => put_request().prop_map(RequestOp::Put),
        2 => delete_request().prop_map(RequestOp::DeleteRange),
    ];
    let op = leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::collection::vec(compare(), 0..2),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| {
                RequestOp::Txn(TxnRequest {
                    compare,
                    success,
                    failure,
                })
            })
    });
    (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest {
            compare,
            success,
            failure,
        })
}

#[derive(Clone, Debug)]
enum Step {
    Op(GenOp),
    Compact(RevSel),
    Grant {
        id: i64,
        ttl: i64,
    },
    Revoke(i64),
    KeepAlive(i64),
    /// The leader's expiry round: what `expired_leases` says, proposed.
    ExpireRound,
    ExpireIds(Vec<i64>),
    RenewAll,
    /// Leader time moves on (or, for a new leader, back).
    Tick(i64),
    Watch {
        start: RevSel,
        key: Vec<u8>,
        range_end: Vec<u8>,
    },
    TimeToLive(i64),
    /// The client retries its last command.
    Retry,
    /// Replace the store by one restored from its snapshot.
    Restore,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => put_request().prop_map(|p| Step::Op(GenOp::Put(p))),
        2 => delete_request().prop_map(|d| Step::Op(GenOp::Delete(d))),
        4 => txn_request().prop_map(|t| Step::Op(GenOp::Txn(t))),
        4 => range_request().prop_map(|(r, s)| Step::Op(GenOp::Range(r, s))),
        1 => any::<u8>().prop_map(|s| Step::Compact(RevSel(s))),
        2 => (0..4i64, -1..12i64).prop_map(|(id, ttl)| Step::Grant { id, ttl }),
        1 => (1..4i64).prop_map(Step::Revoke),
        1 => (1..5i64).prop_map(Step::KeepAlive),
        1 => Just(Step::ExpireRound),
        1 => prop::collection::vec(0..5i64, 0..3).prop_map(Step::ExpireIds),
        1 => Just(Step::RenewAll),
        2 => prop_oneof![4 => 0..6_000i64, 1 => -3_000..0i64].prop_map(Step::Tick),
        2 => (any::<u8>(), key(), range_end())
            .prop_map(|(s, key, range_end)| Step::Watch { start: RevSel(s), key, range_end }),
        1 => (0..5i64).prop_map(Step::TimeToLive),
        1 => Just(Step::Retry),
        1 => Just(Step::Restore),
    ]
}

// ---- the property -----------------------------------------------------------

fn run(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut store = Store::default();
    let mut model = Model::new();
    let mut now: u64 = 1_000;
    let client: ClientId = 7;
    let mut seq = 0u64;
    let mut last: Option<(u64, Command, Result<Response, KvError>)> = None;

    let apply = |store: &mut Store,
                 model: &mut Model,
                 cmd: Command,
                 now: u64,
                 seq: &mut u64,
                 last: &mut Option<(u64, Command, Result<Response, KvError>)>|
     -> Result<(), TestCaseError> {
        *seq += 1;
        let ctx = ApplyContext { now_ms: now };
        let got = match store.apply_session(client, *seq, &cmd, ctx) {
            SessionOutcome::Applied(r) => r,
            other => {
                return Err(TestCaseError::fail(format!(
                    "fresh seq not applied: {other:?}"
                )));
            }
        };
        let said_dup = matches!(got, Err(KvError::DuplicateKey));
        let want = model.apply(&cmd, now, said_dup);
        prop_assert_eq!(&got, &want, "command {:?}", cmd);
        prop_assert_eq!(store.revision(), model.rev);
        *last = Some((*seq, cmd, got.map(|a| a.response)));
        Ok(())
    };

    for step in steps {
        match step {
            Step::Op(GenOp::Range(req, sel)) => {
                let mut req = req.clone();
                req.revision = sel.at(store.revision());
                prop_assert_eq!(store.range(&req), model.range(&req), "range {:?}", req);
            }
            Step::Op(GenOp::Put(p)) => apply(
                &mut store,
                &mut model,
                Command::Put(p.clone()),
                now,
                &mut seq,
                &mut last,
            )?,
            Step::Op(GenOp::Delete(d)) => apply(
                &mut store,
                &mut model,
                Command::DeleteRange(d.clone()),
                now,
                &mut seq,
                &mut last,
            )?,
            Step::Op(GenOp::Txn(t)) => apply(
                &mut store,
                &mut model,
                Command::Txn(t.clone()),
                now,
                &mut seq,
                &mut last,
            )?,
            Step::Compact(sel) => {
                let revision = sel.at(store.revision()).max(1);
                let cmd = Command::Compact(CompactionRequest {
                    revision,
                    physical: false,
                });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::Grant { id, ttl } => {
                let cmd = Command::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::Revoke(id) => {
                let cmd = Command::LeaseRevoke(LeaseRevokeRequest { id: *id });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::KeepAlive(id) => {
                let cmd = Command::LeaseKeepAlive(LeaseKeepAliveRequest { id: *id });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::ExpireRound => {
                let ids = store.expired_leases(now, 100);
                prop_assert_eq!(&ids, &model.expired(now.max(model.clock)));
                let cmd = Command::LeaseExpire(LeaseExpireRequest { ids });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::ExpireIds(ids) => {
                let cmd = Command::LeaseExpire(LeaseExpireRequest { ids: ids.clone() });
                apply(&mut store, &mut model, cmd, now, &mut seq, &mut last)?;
            }
            Step::RenewAll => apply(
                &mut store,
                &mut model,
                Command::LeaseRenewAll,
                now,
                &mut seq,
                &mut last,
            )?,
            Step::Tick(ms) => now = now.saturating_add_signed(*ms),
            Step::Watch {
                start,
                key,
                range_end,
            } => {
                let start = sel_start(*start, store.revision());
                prop_assert_eq!(
                    store.events_since(start, key, range_end),
                    model.events_since(start, key, range_end)
                );
            }
            Step::TimeToLive(id) => {
                let req = LeaseTimeToLiveRequest {
                    id: *id,
                    keys: true,
                };
                prop_assert_eq!(
                    store.lease_time_to_live(&req, now),
                    model.time_to_live(*id, now)
                );
                let ids: Vec<i64> = store.lease_leases().leases.iter().map(|l| l.id).collect();
                prop_assert_eq!(ids, model.leases.keys().copied().collect::<Vec<_>>());
            }
            Step::Retry => {
                if let Some((s, cmd, result)) = &last {
                    let hash = store.state_hash();
                    let got = store.apply_session(client, *s, cmd, ApplyContext { now_ms: now });
                    prop_assert_eq!(got, SessionOutcome::Duplicate(result.clone()));
                    prop_assert_eq!(store.state_hash(), hash);
                }
            }
            Step::Restore => {
                let snap = store.snapshot();
                let restored = Store::restore(&snap, Limits::default())
                    .map_err(|e| TestCaseError::fail(format!("restore: {e}")))?;
                prop_assert_eq!(restored.snapshot(), snap);
                store = restored;
            }
        }
    }
    // Whole-state checks at the end: every key at every readable revision,
    // the full history, and a second replica replaying the same log.
    for rev in model.compact.max(1)..=model.rev {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        prop_assert_eq!(store.range(&req), model.range(&req));
    }
    prop_assert_eq!(
        store.events_since(model.compact, &[0], &[0]),
        model.events_since(model.compact, &[0], &[0])
    );
    Ok(())
}

fn sel_start(sel: RevSel, current: i64) -> i64 {
    sel.at(current)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 2000,
        max_shrink_iters: 4096,
        ..ProptestConfig::default()
    })]

    /// Every answer of the store equals the reference model's.
    #[test]
    fn store_agrees_with_the_reference_model(steps in prop::collection::vec(step(), 1..60)) {
        run(&steps)?;
    }

    /// Two replicas applying the same commands (one restarted from a
    /// snapshot half-way) end with the same bytes and hash.
    #[test]
    fn replicas_agree_byte_for_byte(steps in prop::collection::vec(step(), 1..40), cut in any::<prop::sample::Index>()) {
        let cmds: Vec<Command> = steps.iter().filter_map(|s| match s {
            Step::Op(GenOp::Put(p)) => Some(Command::Put(p.clone())),
            Step::Op(GenOp::Delete(d)) => Some(Command::DeleteRange(d.clone())),
            Step::Op(GenOp::Txn(t)) => Some(Command::Txn(t.clone())),
            Step::Grant { id, ttl } => Some(Command::LeaseGrant(LeaseGrantRequest { ttl: *ttl, id: *id })),
            Step::Revoke(id) => Some(Command::LeaseRevoke(LeaseRevokeRequest { id: *id })),
            Step::Compact(sel) => Some(Command::Compact(CompactionRequest { revision: i64::from(sel.0 % 12), physical: false })),
            Step::RenewAll => Some(Command::LeaseRenewAll),
            _ => None,
        }).collect();
        let cut = cut.index(cmds.len() + 1);
        let mut a = Store::default();
        let mut b = Store::default();
        for (i, cmd) in cmds.iter().enumerate() {
            if i == cut {
                b = Store::restore(&b.snapshot(), Limits::default()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            let ctx = ApplyContext { now_ms: i as u64 * 700 };
            // Through the log's byte form, as replicas receive commands.
            let decoded = Command::decode(&cmd.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(a.apply(cmd, ctx), b.apply(&decoded, ctx));
        }
        prop_assert_eq!(a.state_hash(), b.state_hash());
        prop_assert_eq!(a.snapshot(), b.snapshot());
    }
}
