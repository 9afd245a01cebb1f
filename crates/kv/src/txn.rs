//! Writes: `Put`, `DeleteRange` and `Txn`, each one write transaction.
//!
//! A transaction runs in etcd's order:
//! 1. request checks that need no state (operation count, empty keys, the
//!    duplicate-key rule), `check_txn_request` and `check_intervals`;
//! 2. every compare, nested ones included, against the state before any
//!    write (a `Path`);
//! 3. state checks of the operations on the chosen path (leases exist, keys
//!    exist for `ignore_*`, range revisions are readable);
//! 4. the operations, in order, in one revision.
//!
//! After step 3 nothing can fail, so a refused transaction changes nothing
//! and an accepted one never stops half-way.

use std::collections::BTreeSet;

use crate::command::Applied;
use crate::command::Response;
use crate::error::KvError;
use crate::limits;
use crate::range::KeyRange;
use crate::store::{Store, WriteTxn};
use crate::types::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, KeyValue,
    NO_LEASE, PutRequest, PutResponse, RangeRequest, RequestOp, ResponseHeader, ResponseOp,
    Revision, TxnRequest, TxnResponse,
};

/// etcd's `checkTxnRequest`: at most `max_ops` compares and at most
/// `max_ops` operations per branch; a nested transaction gets what its
/// parent left (`max_ops` minus the parent's count), so the total along any
/// nesting path is bounded, and so is the nesting depth.
pub(crate) fn check_txn_request(req: &TxnRequest, max_ops: usize) -> Result<(), KvError> {
    let opc = req
        .compare
        .len()
        .max(req.success.len())
        .max(req.failure.len());
    if opc > max_ops {
        return Err(KvError::TooManyOps {
            max_txn_ops: max_ops,
        });
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(KvError::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) => limits::check_range(r)?,
            RequestOp::Put(p) => limits::check_put(p)?,
            RequestOp::DeleteRange(d) => limits::check_delete(d)?,
            RequestOp::Txn(t) => check_txn_request(t, max_ops - opc)?,
        }
    }
    Ok(())
}

/// A delete's interval as etcd's duplicate check sees it: a point, or
/// `[key, range_end)` compared as plain strings (so a `range_end` of `[0]`
/// is an empty interval here, exactly as in etcd's check).
#[derive(Clone, Copy, Debug)]
pub(crate) enum DelInterval<'a> {
    Point(&'a [u8]),
    Span(&'a [u8], &'a [u8]),
}

impl DelInterval<'_> {
    fn contains(&self, key: &[u8]) -> bool {
        match *self {
            DelInterval::Point(k) => k == key,
            DelInterval::Span(start, end) => start <= key && key < end,
        }
    }
}

fn deletes(dels: &[DelInterval<'_>], key: &[u8]) -> bool {
    dels.iter().any(|d| d.contains(key))
}

/// Keys put and intervals deleted by a list of operations, for the parent's
/// check.
type Intervals<'a> = (BTreeSet<&'a [u8]>, Vec<DelInterval<'a>>);

/// etcd's `checkIntervals`: within the operations of one branch (nested
/// transactions included) no key may be put twice, and no key put may lie
/// in a deleted range. The two branches of one nested transaction may put
/// the same key, since only one runs. Mirrors etcd's algorithm, including
/// what it lets through: a put in an earlier nested transaction followed by
/// a delete of that key in a later one, and deletes with `range_end` `[0]`.
pub(crate) fn check_intervals(ops: &[RequestOp]) -> Result<Intervals<'_>, KvError> {
    let mut dels: Vec<DelInterval<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) if d.range_end.is_empty() => Some(DelInterval::Point(&d.key)),
            RequestOp::DeleteRange(d) => Some(DelInterval::Span(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || deletes(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || deletes(&dels, k) {
                return Err(KvError::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        if puts.contains(&p.key[..]) || deletes(&dels, &p.key) {
            return Err(KvError::DuplicateKey);
        }
        puts.insert(&p.key);
    }
    Ok((puts, dels))
}

/// The branch each transaction took, nested transactions of the chosen
/// branch in order: decided before anything is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl Path {
    fn branch<'t>(&self, req: &'t TxnRequest) -> &'t [RequestOp] {
        if self.succeeded {
            &req.success
        } else {
            &req.failure
        }
    }
}

impl Store {
    /// etcd's `applyCompare`: every key of the compare's range must satisfy
    /// it; with no key, a value compare is false and the others compare
    /// against zeros.
    fn compare_holds(&self, c: &Compare) -> bool {
        let range = KeyRange::new(&c.key, &c.range_end);
        let mut any = false;
        for (_, r) in range.iter(&self.index) {
            if r.is_tombstone() {
                continue;
            }
            any = true;
            let ord = match &c.target {
                CompareTarget::Version(v) => r.version.cmp(v),
                CompareTarget::CreateRevision(v) => r.create_revision.cmp(v),
                CompareTarget::ModRevision(v) => r.mod_revision.cmp(v),
                CompareTarget::Value(v) => self.value(r).cmp(&v[..]),
                CompareTarget::Lease(v) => r.lease.cmp(v),
            };
            if !relation_holds(c.result, ord) {
                return false;
            }
        }
        if any {
            return true;
        }
        let ord = match &c.target {
            CompareTarget::Value(_) => return false,
            CompareTarget::Version(v)
            | CompareTarget::CreateRevision(v)
            | CompareTarget::ModRevision(v)
            | CompareTarget::Lease(v) => 0.cmp(v),
        };
        relation_holds(c.result, ord)
    }

    fn txn_path(&self, req: &TxnRequest) -> Path {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let branch = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = branch
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(t) => Some(self.txn_path(t)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    /// etcd's `checkRequestPut`: the lease must exist; `ignore_*` needs the key.
    fn precheck_put(&self, req: &PutRequest) -> Result<(), KvError> {
        if req.lease != NO_LEASE && !self.lessor.contains(req.lease) {
            return Err(KvError::LeaseNotFound { id: req.lease });
        }
        if (req.ignore_value || req.ignore_lease) && self.latest(&req.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        Ok(())
    }

    /// etcd's `checkRequestRange` inside a transaction: the revision is
    /// checked against the revision the transaction starts at.
    fn precheck_range(&self, req: &RangeRequest) -> Result<(), KvError> {
        if req.revision > 0 {
            self.read_revision(req.revision, self.revision)?;
        }
        Ok(())
    }

    /// etcd's `checkTxn`: puts on the path first, then ranges.
    fn precheck_path(&self, req: &TxnRequest, path: &Path) -> Result<(), KvError> {
        self.visit_path(req, path, &mut |store, op| match op {
            RequestOp::Put(p) => store.precheck_put(p),
            _ => Ok(()),
        })?;
        self.visit_path(req, path, &mut |store, op| match op {
            RequestOp::Range(r) => store.precheck_range(r),
            _ => Ok(()),
        })
    }

    fn visit_path(
        &self,
        req: &TxnRequest,
        path: &Path,
        f: &mut dyn FnMut(&Store, &RequestOp) -> Result<(), KvError>,
    ) -> Result<(), KvError> {
        let mut nested = path.nested.iter();
        for op in path.branch(req) {
            match op {
                RequestOp::Txn(t) => {
                    let Some(p) = nested.next() else {
                        debug_assert!(false, "a path has one entry per nested txn");
                        return Ok(());
                    };
                    self.visit_path(t, p, f)?;
                }
                other => f(self, other)?,
            }
        }
        Ok(())
    }

    /// Applies a `Put`.
    pub(crate) fn apply_put(&mut self, req: &PutRequest) -> Result<Applied, KvError> {
        self.precheck_put(req)?;
        let mut w = WriteTxn::new(self);
        let mut response = exec_put(&mut w, req);
        let events = w.finish();
        response.header.revision = self.revision;
        Ok(Applied {
            response: Response::Put(response),
            events,
        })
    }

    /// Applies a `DeleteRange`; deleting nothing does not raise the revision.
    pub(crate) fn apply_delete_range(
        &mut self,
        req: &DeleteRangeRequest,
    ) -> Result<Applied, KvError> {
        let mut w = WriteTxn::new(self);
        let mut response = exec_delete_range(&mut w, req);
        let events = w.finish();
        response.header.revision = self.revision;
        Ok(Applied {
            response: Response::DeleteRange(response),
            events,
        })
    }

    /// Applies a `Txn` (see the module doc for the order of steps).
    pub(crate) fn apply_txn(&mut self, req: &TxnRequest) -> Result<Applied, KvError> {
        let path = self.txn_path(req);
        self.precheck_path(req, &path)?;
        let mut w = WriteTxn::new(self);
        let mut response = exec_txn(&mut w, req, &path);
        let events = w.finish();
        stamp_txn(&mut response, self.revision);
        Ok(Applied {
            response: Response::Txn(response),
            events,
        })
    }
}

fn relation_holds(result: CompareResult, ord: std::cmp::Ordering) -> bool {
    use std::cmp::Ordering::{Equal, Greater, Less};
    match result {
        CompareResult::Equal => ord == Equal,
        CompareResult::Greater => ord == Greater,
        CompareResult::Less => ord == Less,
        CompareResult::NotEqual => ord != Equal,
    }
}

/// etcd's `applierV3backend.Put` after its checks passed.
fn exec_put(w: &mut WriteTxn<'_>, req: &PutRequest) -> PutResponse {
    // The state check saw the key, but an earlier delete in the same txn
    // may have removed it: only a delete with `range_end` `[0]`, which
    // etcd's duplicate check lets through (and on which etcd itself panics).
    // Here the put then writes its own (empty) value and no lease.
    let current = w.store.latest(&req.key).copied();
    let prev_kv = match current {
        Some(r) if req.prev_kv => Some(w.store.to_kv(&req.key, &r)),
        _ => None,
    };
    let kept: Option<Vec<u8>> = match current {
        Some(r) if req.ignore_value => Some(w.store.value(&r).to_vec()),
        _ => None,
    };
    let lease = match current {
        Some(r) if req.ignore_lease => r.lease,
        _ => req.lease,
    };
    let revision = w.put(&req.key, kept.as_deref().unwrap_or(&req.value), lease);
    PutResponse {
        header: ResponseHeader { revision },
        prev_kv,
    }
}

/// etcd's `applierV3backend.DeleteRange`.
fn exec_delete_range(w: &mut WriteTxn<'_>, req: &DeleteRangeRequest) -> DeleteRangeResponse {
    let deleted: Vec<KeyValue> = w.delete_range(&KeyRange::new(&req.key, &req.range_end));
    DeleteRangeResponse {
        header: ResponseHeader::default(),
        deleted: i64::try_from(deleted.len()).unwrap_or(i64::MAX),
        prev_kvs: if req.prev_kv { deleted } else { Vec::new() },
    }
}

fn exec_range(w: &WriteTxn<'_>, req: &RangeRequest) -> ResponseOp {
    let rev: Revision = if req.revision > 0 {
        req.revision
    } else {
        w.read_revision()
    };
    debug_assert!(rev <= w.begin_revision() + 1);
    ResponseOp::Range(w.store.range_at(req, rev, w.read_revision()))
}

fn exec_txn(w: &mut WriteTxn<'_>, req: &TxnRequest, path: &Path) -> TxnResponse {
    let branch = path.branch(req);
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(branch.len());
    for op in branch {
        let response = match op {
            RequestOp::Range(r) => exec_range(w, r),
            RequestOp::Put(p) => ResponseOp::Put(exec_put(w, p)),
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(exec_delete_range(w, d)),
            RequestOp::Txn(t) => match nested.next() {
                Some(p) => ResponseOp::Txn(exec_txn(w, t, p)),
                None => {
                    debug_assert!(false, "a path has one entry per nested txn");
                    ResponseOp::Txn(TxnResponse::default())
                }
            },
        };
        responses.push(response);
    }
    TxnResponse {
        header: ResponseHeader::default(),
        succeeded: path.succeeded,
        responses,
    }
}

/// Gives a transaction's response and every nested response the revision
/// the transaction ended at.
fn stamp_txn(resp: &mut TxnResponse, revision: Revision) {
    resp.header.revision = revision;
    for r in &mut resp.responses {
        match r {
            ResponseOp::Range(x) => x.header.revision = revision,
            ResponseOp::Put(x) => x.header.revision = revision,
            ResponseOp::DeleteRange(x) => x.header.revision = revision,
            ResponseOp::Txn(x) => stamp_txn(x, revision),
        }
    }
}
