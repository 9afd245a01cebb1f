//! Reads: etcd's key ranges, and `Range` with its limit, revision, sort and
//! filter options, as etcd's `applierV3backend.Range` does them.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::KvError;
use crate::limits;
use crate::store::{Key, Record, Store};
use crate::types::{
    KeyValue, RangeRequest, RangeResponse, ResponseHeader, Revision, SortOrder, SortTarget,
};

/// The keys a request names: `range_end` empty is the single `key`,
/// `range_end == [0]` is every key from `key` on, otherwise `[key, range_end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KeyRange<'a> {
    start: &'a [u8],
    end: End<'a>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End<'a> {
    Single,
    Unbounded,
    Before(&'a [u8]),
}

impl<'a> KeyRange<'a> {
    /// Interprets a `key`/`range_end` pair as etcd does.
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> KeyRange<'a> {
        let end = match range_end {
            [] => End::Single,
            [0] => End::Unbounded,
            end => End::Before(end),
        };
        KeyRange { start: key, end }
    }

    /// Whether `key` is in the range.
    pub(crate) fn contains(&self, key: &[u8]) -> bool {
        match self.end {
            End::Single => key == self.start,
            End::Unbounded => key >= self.start,
            End::Before(end) => key >= self.start && key < end,
        }
    }

    /// The entries of `map` in the range, in key order.
    pub(crate) fn iter<'m, V>(
        &self,
        map: &'m BTreeMap<Key, V>,
    ) -> std::collections::btree_map::Range<'m, Key, V> {
        let start = Bound::Included(self.start);
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match self.end {
            End::Single => (start, Bound::Included(self.start)),
            End::Unbounded => (start, Bound::Unbounded),
            End::Before(end) if end > self.start => (start, Bound::Excluded(end)),
            // An empty or inverted range matches nothing (and BTreeMap::range
            // would panic on an inverted one).
            End::Before(_) => (start, Bound::Excluded(self.start)),
        };
        map.range::<[u8], _>(bounds)
    }
}

/// Orders two pairs by a sort target.
fn by_target(target: SortTarget, a: &KeyValue, b: &KeyValue) -> Ordering {
    match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    }
}

impl Store {
    /// A linearizable read when served at the leader's applied point (reads
    /// are not commands). Errors: empty key, a compacted or future revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, KvError> {
        limits::check_range(req)?;
        let rev = self.read_revision(req.revision, self.revision)?;
        Ok(self.range_at(req, rev, self.revision))
    }

    /// The range at an already checked revision `rev`; `header_revision` is
    /// what the response reports.
    pub(crate) fn range_at(
        &self,
        req: &RangeRequest,
        rev: Revision,
        header_revision: Revision,
    ) -> RangeResponse {
        debug_assert!(rev >= self.compact_revision && rev > 0);
        let range = KeyRange::new(&req.key, &req.range_end);
        let versions = range
            .iter(&self.index)
            .filter_map(|(k, latest)| self.visible_at(latest, rev).map(|r| (k, r)));
        let header = ResponseHeader {
            revision: header_revision,
        };
        if req.count_only {
            return RangeResponse {
                header,
                kvs: Vec::new(),
                more: false,
                count: count_i64(versions.count()),
            };
        }
        let limit = usize::try_from(req.limit).ok().filter(|&l| l > 0);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // etcd sorts key-ascending by default for other targets, and skips
        // the sort for key-ascending.
        let order = match (req.sort_target, req.sort_order) {
            (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
            (SortTarget::Key, order) => order,
            (_, SortOrder::None) => SortOrder::Ascend,
            (_, order) => order,
        };
        let as_kv = |k: &Key, r: &Record| {
            let mut kv = self.to_kv(k, r);
            if req.keys_only {
                kv.value = Vec::new();
            }
            kv
        };
        let mut count = 0usize;
        let mut kvs = Vec::new();
        if !filtered && order == SortOrder::None {
            // Fast path: key order, materialize only what the limit lets
            // through, count the rest.
            for (k, r) in versions {
                count += 1;
                if limit.is_none_or(|l| kvs.len() < l) {
                    kvs.push(as_kv(k, r));
                }
            }
            let more = limit.is_some_and(|l| count > l);
            return RangeResponse {
                header,
                kvs,
                more,
                count: count_i64(count),
            };
        }
        let keep = |r: &Record| {
            (req.max_mod_revision == 0 || r.mod_revision <= req.max_mod_revision)
                && (req.min_mod_revision == 0 || r.mod_revision >= req.min_mod_revision)
                && (req.max_create_revision == 0 || r.create_revision <= req.max_create_revision)
                && (req.min_create_revision == 0 || r.create_revision >= req.min_create_revision)
        };
        for (k, r) in versions {
            count += 1;
            if keep(r) {
                // Values stay until after the sort: keys_only may sort by value.
                kvs.push(self.to_kv(k, r));
            }
        }
        // Stable sorts: ties keep key order in both directions (etcd leaves
        // the order of ties unspecified).
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by(|a, b| by_target(req.sort_target, a, b)),
            SortOrder::Descend => kvs.sort_by(|a, b| by_target(req.sort_target, b, a)),
        }
        let mut more = false;
        if let Some(l) = limit
            && kvs.len() > l
        {
            kvs.truncate(l);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value = Vec::new());
        }
        RangeResponse {
            header,
            kvs,
            more,
            count: count_i64(count),
        }
    }
}

fn count_i64(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
