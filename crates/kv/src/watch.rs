//! Watch: replaying changes from history, and a small hub that routes the
//! events of each apply to the watchers that want them.
//!
//! The store keeps every change at or above the compacted revision, so a
//! watch can start at any such revision; one below gets etcd's compacted
//! answer with the compact revision. The [`WatchHub`] is pure: the server
//! calls [`WatchHub::create`] and [`WatchHub::cancel`] for its clients and
//! [`WatchHub::publish`] after each apply, on the thread that applies, so a
//! watcher's catch-up from history and its live events join without a gap
//! or a repeat.

use std::collections::BTreeMap;

use crate::error::KvError;
use crate::range::KeyRange;
use crate::store::{Record, Store};
use crate::types::{
    Event, EventType, KeyValue, ResponseHeader, Revision, WatchCreateRequest, WatchFilter,
    WatchResponse,
};

/// etcd's text when a client picks a watch id already in use.
pub const DUPLICATE_WATCH_ID: &str = "mvcc: duplicate watch ID provided";

impl Store {
    /// Every change with revision `>= start_revision` to a key in
    /// `[key, range_end)` (etcd's range rules), oldest first, each with its
    /// `prev_kv` when that is still in history (create events have none, as
    /// in etcd). Fails with [`KvError::Compacted`] (carrying the compact
    /// revision) below the compacted revision.
    pub fn events_since(
        &self,
        start_revision: Revision,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<Vec<Event>, KvError> {
        if start_revision < self.compact_revision {
            return Err(KvError::Compacted {
                compact_revision: self.compact_revision,
            });
        }
        let range = KeyRange::new(key, range_end);
        let from = self.changes.partition_point(|c| c.main < start_revision);
        let mut events = Vec::new();
        for change in self.changes.range(from..) {
            if !range.contains(&change.key) {
                continue;
            }
            let latest = self.index.get(&change.key);
            debug_assert!(latest.is_some(), "a logged change's key is indexed");
            let Some(latest) = latest else { continue };
            let target = (change.main, change.sub);
            // A change can be missing only in etcd's put-then-delete-in-one-
            // txn corner, when compaction lands exactly on that revision.
            let Some(record) = self
                .chain(latest)
                .find(|r| (r.mod_revision, r.sub) <= target)
                .filter(|r| (r.mod_revision, r.sub) == target)
            else {
                continue;
            };
            events.push(self.event_of(&change.key, record));
        }
        Ok(events)
    }
}

impl Store {
    /// The watch event a record stands for.
    fn event_of(&self, key: &[u8], record: &Record) -> Event {
        let prev_kv = if record.version == 1 {
            None
        } else {
            self.visible_at(record, record.mod_revision - 1)
                .map(|r| self.to_kv(key, r))
        };
        if record.is_tombstone() {
            Event {
                r#type: EventType::Delete,
                kv: KeyValue {
                    key: key.to_vec(),
                    mod_revision: record.mod_revision,
                    ..KeyValue::default()
                },
                prev_kv,
            }
        } else {
            Event {
                r#type: EventType::Put,
                kv: self.to_kv(key, record),
                prev_kv,
            }
        }
    }
}

/// A watch id, as etcd's `int64` watch id.
pub type WatchId = i64;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Watcher {
    key: Vec<u8>,
    range_end: Vec<u8>,
    no_put: bool,
    no_delete: bool,
    prev_kv: bool,
    /// First revision not yet delivered.
    next_revision: Revision,
}

impl Watcher {
    /// What the watcher is owed from `store`'s history, from its next
    /// revision on: a response with the events it wants (none if it wants
    /// none), or, if that history is compacted, the cancel carrying the
    /// compact revision, as etcd answers.
    fn replay(
        &self,
        store: &Store,
        watch_id: WatchId,
    ) -> Result<Option<WatchResponse>, WatchResponse> {
        let header = ResponseHeader {
            revision: store.revision(),
        };
        if self.next_revision > store.revision() {
            return Ok(None);
        }
        match store.events_since(self.next_revision, &self.key, &self.range_end) {
            Ok(events) => {
                let events: Vec<Event> = events.iter().filter_map(|e| self.select(e)).collect();
                Ok((!events.is_empty()).then(|| WatchResponse {
                    header,
                    watch_id,
                    events,
                    ..WatchResponse::default()
                }))
            }
            Err(_) => Err(WatchResponse {
                header,
                watch_id,
                canceled: true,
                compact_revision: store.compact_revision(),
                ..WatchResponse::default()
            }),
        }
    }

    /// The event as this watcher gets it, if it wants it.
    fn select(&self, event: &Event) -> Option<Event> {
        if event.kv.mod_revision < self.next_revision
            || !KeyRange::new(&self.key, &self.range_end).contains(&event.kv.key)
        {
            return None;
        }
        let wanted = match event.r#type {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        };
        wanted.then(|| Event {
            r#type: event.r#type,
            kv: event.kv.clone(),
            prev_kv: if self.prev_kv {
                event.prev_kv.clone()
            } else {
                None
            },
        })
    }
}

/// Registered watchers and the routing of events to them. Deterministic:
/// watchers are served in id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchHub {
    watchers: BTreeMap<WatchId, Watcher>,
    next_id: WatchId,
}

impl WatchHub {
    /// A hub with no watchers.
    pub fn new() -> WatchHub {
        WatchHub::default()
    }

    /// Number of watchers.
    pub fn len(&self) -> usize {
        self.watchers.len()
    }

    /// Whether there are no watchers.
    pub fn is_empty(&self) -> bool {
        self.watchers.is_empty()
    }

    /// Registers a watcher (etcd's `WatchCreateRequest`) and returns what to
    /// send: the `created` response, then either the history since
    /// `start_revision` or, if that is compacted, a cancel carrying the
    /// compact revision (the watcher is then not kept), as etcd does.
    pub fn create(&mut self, store: &Store, req: &WatchCreateRequest) -> Vec<WatchResponse> {
        let header = ResponseHeader {
            revision: store.revision(),
        };
        let watch_id = if req.watch_id != 0 {
            if self.watchers.contains_key(&req.watch_id) {
                return vec![WatchResponse {
                    header,
                    watch_id: req.watch_id,
                    created: true,
                    canceled: true,
                    cancel_reason: DUPLICATE_WATCH_ID.to_owned(),
                    ..WatchResponse::default()
                }];
            }
            req.watch_id
        } else {
            self.next_free_id()
        };
        // etcd: an empty key means the smallest key.
        let key = if req.key.is_empty() {
            vec![0]
        } else {
            req.key.clone()
        };
        let mut out = vec![WatchResponse {
            header,
            watch_id,
            created: true,
            ..WatchResponse::default()
        }];
        if req.start_revision < 0 {
            // etcd: below every revision there is, so below its compact
            // revision (-1 before any compaction): created, then canceled
            // as compacted, which clients report as "required revision has
            // been compacted". Only 0 means "from now".
            let compact = store.compact_revision();
            out.push(WatchResponse {
                header,
                watch_id,
                canceled: true,
                compact_revision: if compact > 0 { compact } else { -1 },
                ..WatchResponse::default()
            });
            return out;
        }
        let start = if req.start_revision > 0 {
            req.start_revision
        } else {
            store.revision() + 1
        };
        let watcher = Watcher {
            key,
            range_end: req.range_end.clone(),
            no_put: req.filters.contains(&WatchFilter::NoPut),
            no_delete: req.filters.contains(&WatchFilter::NoDelete),
            prev_kv: req.prev_kv,
            next_revision: start,
        };
        match watcher.replay(store, watch_id) {
            Ok(history) => out.extend(history),
            Err(cancel) => {
                out.push(cancel);
                return out;
            }
        }
        let mut watcher = watcher;
        watcher.next_revision = watcher.next_revision.max(store.revision() + 1);
        self.watchers.insert(watch_id, watcher);
        out
    }

    fn next_free_id(&mut self) -> WatchId {
        loop {
            let id = self.next_id;
            self.next_id = self.next_id.checked_add(1).unwrap_or(0);
            if !self.watchers.contains_key(&id) {
                return id;
            }
        }
    }

    /// Removes a watcher; returns the `canceled` response to send, or `None`
    /// if there was no such watcher.
    pub fn cancel(&mut self, watch_id: WatchId, revision: Revision) -> Option<WatchResponse> {
        self.watchers.remove(&watch_id)?;
        Some(WatchResponse {
            header: ResponseHeader { revision },
            watch_id,
            canceled: true,
            ..WatchResponse::default()
        })
    }

    /// Brings every watcher up to `store`, which jumped ahead of the
    /// applies the hub saw (a snapshot installed from a peer): each gets
    /// the history it has not been sent, or, if that is compacted, a cancel
    /// carrying the compact revision (and is dropped), as at creation.
    pub fn catch_up(&mut self, store: &Store) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        let mut gone = Vec::new();
        for (&watch_id, watcher) in &mut self.watchers {
            match watcher.replay(store, watch_id) {
                Ok(history) => {
                    out.extend(history);
                    watcher.next_revision = watcher.next_revision.max(store.revision() + 1);
                }
                Err(cancel) => {
                    gone.push(watch_id);
                    out.push(cancel);
                }
            }
        }
        for watch_id in gone {
            self.watchers.remove(&watch_id);
        }
        out
    }

    /// Routes the events of one apply (the store now at `revision`): one
    /// response per watcher that wants any of them, in watch id order.
    pub fn publish(&mut self, revision: Revision, events: &[Event]) -> Vec<WatchResponse> {
        let mut out = Vec::new();
        for (&watch_id, watcher) in &mut self.watchers {
            let selected: Vec<Event> = events.iter().filter_map(|e| watcher.select(e)).collect();
            watcher.next_revision = watcher.next_revision.max(revision + 1);
            if !selected.is_empty() {
                out.push(WatchResponse {
                    header: ResponseHeader { revision },
                    watch_id,
                    events: selected,
                    ..WatchResponse::default()
                });
            }
        }
        out
    }
}
