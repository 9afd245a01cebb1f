//! Watch events: what each apply produces, replay from history, and the
//! watch hub's routing, filters and compaction answer.

mod common;

use common::*;
use kv::{
    Command, CompactionRequest, EventType, KvError, Store, WatchCreateRequest, WatchFilter,
    WatchHub,
};

fn compact(s: &mut Store, revision: i64) {
    s.apply(
        &Command::Compact(CompactionRequest {
            revision,
            physical: false,
        }),
        CTX,
    )
    .expect("compact");
}

fn watch(key: &str, range_end: &str, start_revision: i64) -> WatchCreateRequest {
    WatchCreateRequest {
        key: k(key),
        range_end: k(range_end),
        start_revision,
        ..WatchCreateRequest::default()
    }
}

#[test]
fn every_change_produces_an_event_with_prev_kv() {
    let mut s = Store::default();
    let first = s
        .apply(&Command::Put(put_req(b"a", b"1")), CTX)
        .expect("put");
    assert_eq!(first.events.len(), 1);
    assert_eq!(first.events[0].r#type, EventType::Put);
    assert_eq!(
        first.events[0].prev_kv, None,
        "a create event has no prev_kv"
    );
    let second = s
        .apply(&Command::Put(put_req(b"a", b"2")), CTX)
        .expect("put");
    let e = &second.events[0];
    assert_eq!(
        (e.kv.value.clone(), e.kv.version, e.kv.mod_revision),
        (k("2"), 2, 3)
    );
    assert_eq!(e.prev_kv.as_ref().map(|p| p.value.clone()), Some(k("1")));
    let del = delete(&mut s, b"a", b"").expect("delete");
    let e = &del.events[0];
    assert_eq!(e.r#type, EventType::Delete);
    assert_eq!(
        (
            e.kv.key.clone(),
            e.kv.mod_revision,
            e.kv.version,
            e.kv.create_revision
        ),
        (k("a"), 4, 0, 0)
    );
    assert_eq!(e.prev_kv.as_ref().map(|p| p.value.clone()), Some(k("2")));
}

#[test]
fn events_since_replays_a_key_a_range_and_a_prefix() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1"); // 2
    put(&mut s, b"b1", b"1"); // 3
    put(&mut s, b"b2", b"1"); // 4
    put(&mut s, b"a", b"2"); // 5
    delete(&mut s, b"b1", b"").expect("delete"); // 6
    let revs = |start, key: &str, end: &str| -> Vec<(i64, Vec<u8>)> {
        s.events_since(start, key.as_bytes(), end.as_bytes())
            .expect("events")
            .iter()
            .map(|e| (e.kv.mod_revision, e.kv.key.clone()))
            .collect()
    };
    assert_eq!(revs(1, "a", ""), vec![(2, k("a")), (5, k("a"))]);
    assert_eq!(revs(3, "a", ""), vec![(5, k("a"))]);
    assert_eq!(
        revs(1, "b", "c"),
        vec![(3, k("b1")), (4, k("b2")), (6, k("b1"))]
    );
    assert_eq!(revs(4, "\0", "\0").len(), 3);
    assert!(revs(7, "\0", "\0").is_empty());
    // Replay gives the same events the applies gave.
    let replayed = s.events_since(6, b"b1", b"").expect("events");
    assert_eq!(
        replayed[0].prev_kv.as_ref().map(|p| p.key.clone()),
        Some(k("b1"))
    );
}

#[test]
fn events_since_a_compacted_revision_gets_the_compact_revision() {
    let mut s = Store::default();
    for v in 0..5 {
        put(&mut s, b"a", format!("{v}").as_bytes());
    }
    compact(&mut s, 4);
    let err = s.events_since(3, b"a", b"").expect_err("compacted");
    assert_eq!(
        err,
        KvError::Compacted {
            compact_revision: 4
        }
    );
    assert_eq!(
        err.to_string(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    let events = s
        .events_since(4, b"a", b"")
        .expect("at the compact revision");
    assert_eq!(
        events.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    // The version before the compact revision is gone: no prev_kv for the
    // event at the compact revision, but the one after still has its own.
    assert_eq!(events[0].prev_kv, None);
    assert_eq!(events[1].prev_kv.as_ref().map(|p| p.mod_revision), Some(4));
}

#[test]
fn hub_replays_history_then_delivers_live_events_without_gap_or_repeat() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    put(&mut s, b"a", b"2");
    let mut hub = WatchHub::new();
    let out = hub.create(&s, &watch("a", "", 2));
    assert!(out[0].created);
    let replay: Vec<_> = out[1].events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(replay, vec![2, 3]);
    let applied = s
        .apply(&kv::Command::Put(put_req(b"a", b"3")), CTX)
        .expect("put");
    let live = hub.publish(s.revision(), &applied.events);
    assert_eq!(live.len(), 1);
    assert_eq!(live[0].watch_id, out[0].watch_id);
    assert_eq!(live[0].events[0].kv.mod_revision, 4);
    assert_eq!(live[0].header.revision, 4);
    // Events for other keys go nowhere.
    let other = s
        .apply(&kv::Command::Put(put_req(b"b", b"1")), CTX)
        .expect("put");
    assert!(hub.publish(s.revision(), &other.events).is_empty());
}

#[test]
fn hub_watch_from_now_sees_only_new_changes() {
    let mut s = Store::default();
    put(&mut s, b"p/1", b"old");
    let mut hub = WatchHub::new();
    let out = hub.create(&s, &watch("p/", "p0", 0));
    assert_eq!(out.len(), 1, "only the created response");
    let applied = s
        .apply(&kv::Command::Put(put_req(b"p/2", b"new")), CTX)
        .expect("put");
    let live = hub.publish(s.revision(), &applied.events);
    assert_eq!(live[0].events[0].kv.key, k("p/2"));
}

#[test]
fn hub_from_a_compacted_revision_cancels_with_the_compact_revision() {
    let mut s = Store::default();
    for v in 0..4 {
        put(&mut s, b"a", format!("{v}").as_bytes());
    }
    compact(&mut s, 3);
    let mut hub = WatchHub::new();
    let out = hub.create(&s, &watch("a", "", 2));
    assert_eq!(out.len(), 2);
    assert!(out[0].created);
    assert!(out[1].canceled);
    assert_eq!(out[1].compact_revision, 3);
    assert!(hub.is_empty());
}

/// A negative start revision is below every revision: created, then
/// canceled as compacted (with etcd's -1 before any compaction), no events,
/// nothing kept. Only 0 means "from now".
#[test]
fn hub_from_a_negative_revision_cancels_as_compacted() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    let mut hub = WatchHub::new();
    let out = hub.create(&s, &watch("a", "", -5));
    assert_eq!(out.len(), 2);
    assert!(out[0].created && !out[0].canceled);
    assert!(out[1].canceled && out[1].events.is_empty());
    assert_eq!(out[1].compact_revision, -1);
    assert!(hub.is_empty());
    put(&mut s, b"a", b"2");
    compact(&mut s, 2);
    let out = hub.create(&s, &watch("a", "", -1));
    assert_eq!(out[1].compact_revision, 2);
    assert!(hub.is_empty());
    // 0 is "from now": kept, no cancel.
    let out = hub.create(&s, &watch("a", "", 0));
    assert_eq!(out.len(), 1);
    assert!(!hub.is_empty());
}

#[test]
fn hub_filters_and_prev_kv_as_asked() {
    let mut s = Store::default();
    put(&mut s, b"a", b"1");
    let mut hub = WatchHub::new();
    let no_put = hub.create(
        &s,
        &WatchCreateRequest {
            filters: vec![WatchFilter::NoPut],
            prev_kv: true,
            ..watch("a", "", 0)
        },
    )[0]
    .watch_id;
    let no_delete = hub.create(
        &s,
        &WatchCreateRequest {
            filters: vec![WatchFilter::NoDelete],
            ..watch("a", "", 0)
        },
    )[0]
    .watch_id;
    let put_events = s
        .apply(&kv::Command::Put(put_req(b"a", b"2")), CTX)
        .expect("put")
        .events;
    let out = hub.publish(s.revision(), &put_events);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].watch_id, no_delete);
    assert_eq!(out[0].events[0].prev_kv, None, "prev_kv only when asked");
    let del_events = delete(&mut s, b"a", b"").expect("delete").events;
    let out = hub.publish(s.revision(), &del_events);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].watch_id, no_put);
    assert_eq!(
        out[0].events[0].prev_kv.as_ref().map(|p| p.value.clone()),
        Some(k("2"))
    );
}

#[test]
fn hub_cancel_future_start_and_duplicate_ids() {
    let mut s = Store::default();
    let mut hub = WatchHub::new();
    let id = hub.create(
        &s,
        &WatchCreateRequest {
            watch_id: 7,
            ..watch("a", "", 4)
        },
    )[0]
    .watch_id;
    assert_eq!(id, 7);
    let dup = hub.create(
        &s,
        &WatchCreateRequest {
            watch_id: 7,
            ..watch("b", "", 0)
        },
    );
    assert!(dup[0].canceled);
    assert_eq!(dup[0].cancel_reason, kv::watch::DUPLICATE_WATCH_ID);
    // A future start revision waits for it.
    let e2 = s
        .apply(&kv::Command::Put(put_req(b"a", b"1")), CTX)
        .expect("put")
        .events;
    assert!(hub.publish(s.revision(), &e2).is_empty());
    put(&mut s, b"x", b"");
    let e4 = s
        .apply(&kv::Command::Put(put_req(b"a", b"2")), CTX)
        .expect("put")
        .events;
    assert_eq!(
        hub.publish(s.revision(), &e4)[0].events[0].kv.mod_revision,
        4
    );
    let canceled = hub.cancel(7, s.revision()).expect("cancel");
    assert!(canceled.canceled);
    assert!(hub.cancel(7, s.revision()).is_none());
    assert!(hub.is_empty());
}

#[test]
fn hub_catches_up_from_a_store_that_jumped_ahead() {
    // A lagging member's watch, then a snapshot installed from a peer: the
    // store jumps from revision 2 to 4 without the hub seeing the applies.
    let mut behind = Store::default();
    put(&mut behind, b"a", b"1");
    let mut hub = WatchHub::new();
    let created = hub.create(&behind, &watch("a", "b", 0));
    let id = created[0].watch_id;
    let mut ahead =
        Store::restore(&behind.snapshot(), kv::Limits::default()).expect("a store's own image");
    put(&mut ahead, b"a", b"2");
    put(&mut ahead, b"x", b"elsewhere");
    put(&mut ahead, b"a", b"3");
    let out = hub.catch_up(&ahead);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].watch_id, id);
    let revisions: Vec<_> = out[0].events.iter().map(|e| e.kv.mod_revision).collect();
    assert_eq!(
        revisions,
        vec![3, 5],
        "the missed events of its range, in order"
    );
    assert!(hub.catch_up(&ahead).is_empty(), "nothing is sent twice");
    // Live events go on after the image.
    let applied = ahead
        .apply(&Command::Put(put_req(b"a", b"4")), CTX)
        .expect("put");
    let live = hub.publish(ahead.revision(), &applied.events);
    assert_eq!(live[0].events[0].kv.mod_revision, 6);

    // If the image's history is compacted past the watch, it is cancelled
    // with the compact revision, as at creation.
    let mut lagging = WatchHub::new();
    lagging.create(&behind, &watch("a", "b", 0));
    compact(&mut ahead, 5);
    let out = lagging.catch_up(&ahead);
    assert!(out[0].canceled);
    assert_eq!(out[0].compact_revision, 5);
    assert!(lagging.is_empty());
}
