//! Watch: events in version order, expire vs delete, prefixes, resuming,
//! compaction.

use std::rc::Rc;

use super::{T0, json};
use crate::engine::*;

fn kinds(page: &WatchPage) -> Vec<(String, EventKind)> {
    page.events
        .iter()
        .map(|e| (e.key.clone(), e.kind))
        .collect()
}

#[test]
fn events_arrive_in_version_order_with_their_versions() {
    let e = Engine::new(MemStorage::default(), ManualClock::at(T0));
    let start = e.watch("b", None, None, 100).unwrap();
    assert!(start.events.is_empty());
    let v1 = e.set("b", "a", json("1")).unwrap();
    e.set("other", "a", json("1")).unwrap();
    let v2 = e
        .set_many("b", vec![("x".into(), json("2")), ("y".into(), json("3"))])
        .unwrap();
    e.delete("b", "a").unwrap();
    let page = e.watch("b", None, Some(start.next), 100).unwrap();
    assert_eq!(
        kinds(&page),
        [
            ("a".into(), EventKind::Set),
            ("x".into(), EventKind::Set),
            ("y".into(), EventKind::Set),
            ("a".into(), EventKind::Delete)
        ]
    );
    assert_eq!(page.events[0].version, v1);
    assert_eq!(page.events[0].value, Some(json("1")));
    assert_eq!((page.events[1].version, page.events[2].version), (v2, v2));
    assert!(page.events.windows(2).all(|w| w[0].version <= w[1].version));
    // Resuming from the last version seen gives nothing new, then the next.
    let again = e.watch("b", None, Some(page.next), 100).unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.next, page.next);
    e.set("b", "z", json("9")).unwrap();
    assert_eq!(
        kinds(&e.watch("b", None, Some(page.next), 100).unwrap()),
        [("z".into(), EventKind::Set)]
    );
}

#[test]
fn prefixes_filter_and_quiet_commits_still_advance() {
    let e = Engine::new(MemStorage::default(), ManualClock::at(T0));
    e.set("b", "sensor/1", json("1")).unwrap();
    e.set("b", "other", json("1")).unwrap();
    let last = e.set("elsewhere", "sensor/2", json("1")).unwrap();
    let page = e.watch("b", Some("sensor/"), Some(0), 100).unwrap();
    assert_eq!(kinds(&page), [("sensor/1".into(), EventKind::Set)]);
    assert_eq!(
        page.next, last,
        "commits with nothing to report still move the position"
    );
}

#[test]
fn expirations_are_told_apart_from_deletes() {
    let clock = Rc::new(ManualClock::at(T0));
    let e = Engine::new(MemStorage::default(), clock.clone());
    let ttl = WriteOptions {
        ttl_ms: Some(10),
        ..Default::default()
    };
    let since = e.set_with("b", "swept", json("1"), &ttl).unwrap() - 1;
    e.set_with("b", "read", json("1"), &ttl).unwrap();
    e.set("b", "deleted", json("1")).unwrap();
    let page = e.watch("b", None, Some(since), 100).unwrap();
    assert_eq!(page.events[0].expires_at_ms, Some(T0 + 10));
    clock.advance(10);
    e.delete("b", "deleted").unwrap();
    assert_eq!(e.get("b", "read").unwrap(), None); // reclaimed by the read
    assert_eq!(e.sweep(100).unwrap(), 1);
    let page = e.watch("b", None, Some(page.next), 100).unwrap();
    assert_eq!(
        kinds(&page),
        [
            ("deleted".into(), EventKind::Delete),
            ("read".into(), EventKind::Expire),
            ("swept".into(), EventKind::Expire)
        ]
    );
}

#[test]
fn compacted_versions_are_an_explicit_error() {
    let e = Engine::new(MemStorage::with_retention(3), ManualClock::at(T0));
    for i in 0..10 {
        e.set("b", &format!("k{i}"), json("1")).unwrap();
    }
    assert_eq!(
        e.watch("b", None, Some(2), 100),
        Err(StoreError::Compacted { oldest: 8 })
    );
    let page = e.watch("b", None, Some(7), 100).unwrap();
    assert_eq!(page.events.len(), 3);
}

#[test]
fn a_page_holds_whole_commits() {
    let e = Engine::new(MemStorage::default(), ManualClock::at(T0));
    let pairs: Vec<(String, Value)> = (0..10).map(|i| (format!("k{i}"), json("1"))).collect();
    e.set_many("b", pairs).unwrap();
    e.set("b", "after", json("1")).unwrap();
    let page = e.watch("b", None, Some(0), 3).unwrap();
    assert_eq!(page.events.len(), 10, "the 10-write commit is not cut at 3");
    let rest = e.watch("b", None, Some(page.next), 3).unwrap();
    assert_eq!(kinds(&rest), [("after".into(), EventKind::Set)]);
}
