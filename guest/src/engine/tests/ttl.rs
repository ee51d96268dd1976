//! Time-to-live: invisible once expired, reclaimed lazily and by the sweep,
//! kept across restarts, one clock read per operation at most.

use std::rc::Rc;

use super::{T0, json};
use crate::engine::*;

fn ttl(ms: u64) -> WriteOptions {
    WriteOptions {
        ttl_ms: Some(ms),
        ..Default::default()
    }
}

fn engine_on(
    storage: Rc<MemStorage>,
) -> (Engine<Rc<MemStorage>, Rc<ManualClock>>, Rc<ManualClock>) {
    let clock = Rc::new(ManualClock::at(T0));
    (Engine::new(storage, clock.clone()), clock)
}

/// Every key the storage holds, engine records included.
fn raw_keys(storage: &MemStorage) -> Vec<Vec<u8>> {
    storage
        .scan(b"", None, 10_000, false)
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

#[test]
fn an_expired_key_is_invisible_everywhere_at_once() {
    let (e, clock) = engine_on(Rc::new(MemStorage::default()));
    let v = e.set_with("b", "session", json("1"), &ttl(1000)).unwrap();
    e.set("b", "forever", json("2")).unwrap();
    let got = e.get("b", "session").unwrap().unwrap();
    assert_eq!((got.version, got.expires_at_ms), (v, Some(T0 + 1000)));
    clock.advance(999);
    assert!(
        e.exists("b", "session").unwrap(),
        "live until the last millisecond"
    );
    clock.advance(1);
    assert_eq!(e.get("b", "session").unwrap(), None);
    assert!(!e.exists("b", "session").unwrap());
    assert_eq!(
        e.get_many("b", &["session".into(), "forever".into()])
            .unwrap()[0],
        None
    );
    let listed: Vec<String> = e
        .list("b", &ListOptions::default())
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(listed, ["forever"]);
    // Conditions see it as absent too.
    assert!(
        e.set_with(
            "b",
            "session",
            json("3"),
            &WriteOptions {
                if_absent: true,
                ..Default::default()
            }
        )
        .is_ok()
    );
}

#[test]
fn reads_reclaim_what_they_find_expired() {
    let storage = Rc::new(MemStorage::default());
    let (e, clock) = engine_on(storage.clone());
    e.set_with("b", "k", json("1"), &ttl(10)).unwrap();
    assert_eq!(
        raw_keys(&storage).len(),
        2,
        "the record and its expiry-index entry"
    );
    clock.advance(10);
    assert_eq!(e.get("b", "k").unwrap(), None);
    assert!(
        raw_keys(&storage).is_empty(),
        "get removed the record and its index entry"
    );
}

#[test]
fn the_sweep_removes_expired_keys_without_reads() {
    let storage = Rc::new(MemStorage::default());
    let (e, clock) = engine_on(storage.clone());
    for i in 0..30 {
        e.set_with("b", &format!("k{i:02}"), json("1"), &ttl(100 + i))
            .unwrap();
    }
    e.set("b", "keep", json("1")).unwrap();
    // Rewritten without a TTL: its old index entry must not delete it.
    e.set_with("b", "k00", json("1"), &ttl(100)).unwrap();
    e.set("b", "k00", json("2")).unwrap();
    clock.advance(110);
    assert_eq!(
        e.sweep(5).unwrap(),
        4,
        "k01..k04 are past; k00's entry is stale, one slot"
    );
    assert_eq!(
        e.sweep(1000).unwrap(),
        6,
        "k05..k10 (expired at +105..+110)"
    );
    assert_eq!(e.sweep(1000).unwrap(), 0);
    clock.advance(1000);
    assert_eq!(e.sweep(1000).unwrap(), 19);
    let mut left = raw_keys(&storage);
    left.sort();
    assert_eq!(
        left.len(),
        2,
        "only k00 and keep remain, with no index entries: {left:?}"
    );
    assert_eq!(e.get("b", "k00").unwrap().unwrap().value, json("2"));
    let read_only = Engine::new(storage, ManualClock::at(T0)).read_only(true);
    assert_eq!(read_only.sweep(10), Err(StoreError::ReadOnly));
}

#[test]
fn rewriting_a_ttl_key_keeps_the_index_tidy() {
    let storage = Rc::new(MemStorage::default());
    let (e, _clock) = engine_on(storage.clone());
    e.set_with("b", "k", json("1"), &ttl(100)).unwrap();
    // A read-modify-write that changes the expiry drops the old index entry.
    let v = e.get("b", "k").unwrap().unwrap().version;
    e.set_with(
        "b",
        "k",
        json("2"),
        &WriteOptions {
            if_version: Some(v),
            ttl_ms: Some(500),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(raw_keys(&storage).len(), 2);
    e.delete("b", "k").unwrap();
    assert!(raw_keys(&storage).is_empty());
}

#[test]
fn ttl_survives_a_restart() {
    let storage = Rc::new(MemStorage::default());
    {
        let (e, _) = engine_on(storage.clone());
        e.set_with("b", "k", json("1"), &ttl(1000)).unwrap();
    }
    let clock = Rc::new(ManualClock::at(T0 + 999));
    let reopened = Engine::new(storage, clock.clone());
    assert_eq!(
        reopened.get("b", "k").unwrap().unwrap().expires_at_ms,
        Some(T0 + 1000)
    );
    clock.advance(1);
    assert_eq!(reopened.get("b", "k").unwrap(), None);
}

#[test]
fn updates_keep_the_expiry_unless_given_a_new_ttl() {
    let (e, _clock) = engine_on(Rc::new(MemStorage::default()));
    e.set_with("b", "n", json("1"), &ttl(1000)).unwrap();
    e.increment("b", "n", 1i64).unwrap();
    assert_eq!(
        e.get("b", "n").unwrap().unwrap().expires_at_ms,
        Some(T0 + 1000)
    );
    e.update("b", "n", Op::Increment(1), Some(5000)).unwrap();
    assert_eq!(
        e.get("b", "n").unwrap().unwrap().expires_at_ms,
        Some(T0 + 5000)
    );
    e.set("b", "n", json("0")).unwrap();
    assert_eq!(
        e.get("b", "n").unwrap().unwrap().expires_at_ms,
        None,
        "a plain set clears it"
    );
}

#[test]
fn one_clock_read_per_operation_at_most() {
    let (e, clock) = engine_on(Rc::new(MemStorage::default()));
    e.set("b", "plain", json("1")).unwrap();
    for i in 0..20 {
        e.set_with("b", &format!("t{i}"), json("1"), &ttl(1000))
            .unwrap();
    }
    let reads = |f: &dyn Fn()| {
        let before = clock.reads();
        f();
        clock.reads() - before
    };
    assert_eq!(
        reads(&|| {
            e.get("b", "plain").unwrap();
        }),
        0,
        "no expiry, no clock"
    );
    assert_eq!(
        reads(&|| {
            e.set("b", "plain", json("2")).unwrap();
        }),
        0
    );
    assert_eq!(
        reads(&|| {
            e.get("b", "t1").unwrap();
        }),
        1
    );
    assert_eq!(
        reads(&|| {
            e.list(
                "b",
                &ListOptions {
                    limit: Some(1000),
                    ..Default::default()
                },
            )
            .unwrap();
        }),
        1
    );
    assert_eq!(
        reads(&|| {
            e.set_with("b", "t1", json("3"), &ttl(10)).unwrap();
        }),
        1
    );
    let keys: Vec<String> = (0..20).map(|i| format!("t{i}")).collect();
    assert_eq!(
        reads(&|| {
            e.get_many("b", &keys).unwrap();
        }),
        1
    );
    assert_eq!(
        reads(&|| {
            e.delete_many("b", &keys).unwrap();
        }),
        1
    );
}

#[test]
fn ttl_limits() {
    let (e, _) = engine_on(Rc::new(MemStorage::default()));
    assert!(matches!(
        e.set_with("b", "k", json("1"), &ttl(0)),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        e.set_with("b", "k", json("1"), &ttl(MAX_TTL_MS + 1)),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(e.set_with("b", "k", json("1"), &ttl(MAX_TTL_MS)).is_ok());
    assert_eq!(
        e.get("b", "k").unwrap().unwrap().expires_at_ms,
        Some(T0 + MAX_TTL_MS)
    );
}
