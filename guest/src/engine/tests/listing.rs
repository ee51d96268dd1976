//! Listing: ranges, reverse order, keys only, cursors in both directions.

use super::{engine, json};
use crate::engine::*;

fn keys_of(page: &ListPage) -> Vec<&str> {
    page.items.iter().map(|i| i.key.as_str()).collect()
}

fn all_pages(e: &Engine<MemStorage, ManualClock>, options: ListOptions) -> Vec<String> {
    let mut out = Vec::new();
    let mut options = options;
    loop {
        let page = e.list("b", &options).unwrap();
        out.extend(page.items.into_iter().map(|i| i.key));
        match page.cursor {
            Some(c) => options.cursor = Some(c),
            None => return out,
        }
    }
}

#[test]
fn start_end_and_prefix_combine() {
    let e = engine();
    for k in ["a", "b", "ba", "bb", "bc", "c", "d"] {
        e.set("b", k, json("1")).unwrap();
    }
    let list = |start: Option<&str>, end: Option<&str>, prefix: Option<&str>| {
        let options = ListOptions {
            start: start.map(Into::into),
            end: end.map(Into::into),
            prefix: prefix.map(Into::into),
            ..Default::default()
        };
        keys_of(&e.list("b", &options).unwrap())
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(list(Some("b"), Some("c"), None), ["b", "ba", "bb", "bc"]);
    assert_eq!(list(Some("bb"), None, None), ["bb", "bc", "c", "d"]);
    assert_eq!(list(None, Some("b"), None), ["a"]);
    assert_eq!(list(Some("ba"), Some("bc"), Some("b")), ["ba", "bb"]);
    assert_eq!(list(Some("x"), None, Some("b")), Vec::<String>::new());
    assert_eq!(list(Some("c"), Some("a"), None), Vec::<String>::new());
}

#[test]
fn reverse_pages_descend_and_cursors_keep_direction() {
    let e = engine();
    let keys: Vec<String> = (0..25).map(|i| format!("k{i:02}")).collect();
    for k in &keys {
        e.set("b", k, json("1")).unwrap();
    }
    let mut descending = keys.clone();
    descending.reverse();
    let reverse = ListOptions {
        reverse: true,
        limit: Some(7),
        ..Default::default()
    };
    assert_eq!(all_pages(&e, reverse.clone()), descending);
    let ranged = ListOptions {
        start: Some("k05".into()),
        end: Some("k10".into()),
        ..reverse.clone()
    };
    assert_eq!(all_pages(&e, ranged), ["k09", "k08", "k07", "k06", "k05"]);
    // A reverse cursor does not continue a forward listing, nor the reverse.
    let first = e.list("b", &reverse).unwrap();
    let forward = ListOptions {
        cursor: first.cursor.clone(),
        limit: Some(7),
        ..Default::default()
    };
    assert_eq!(e.list("b", &forward), Err(StoreError::InvalidCursor));
    let forward_page = e
        .list(
            "b",
            &ListOptions {
                limit: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    let mixed = ListOptions {
        cursor: forward_page.cursor,
        ..reverse
    };
    assert_eq!(e.list("b", &mixed), Err(StoreError::InvalidCursor));
}

#[test]
fn keys_only_leaves_values_out() {
    let e = engine();
    let v = e.set("b", "k", json("{\"big\":true}")).unwrap();
    let page = e
        .list(
            "b",
            &ListOptions {
                keys_only: true,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        page.items,
        vec![Item {
            key: "k".into(),
            value: None,
            version: v,
            expires_at_ms: None
        }]
    );
}

#[test]
fn pages_are_full_even_when_expired_keys_are_skipped() {
    let clock = std::rc::Rc::new(ManualClock::at(super::T0));
    let e = Engine::new(MemStorage::default(), clock.clone());
    let short = WriteOptions {
        ttl_ms: Some(10),
        ..Default::default()
    };
    for i in 0..40 {
        let key = format!("k{i:02}");
        if i % 4 == 0 {
            e.set("b", &key, json("1")).unwrap();
        } else {
            e.set_with("b", &key, json("1"), &short).unwrap();
        }
    }
    clock.advance(10);
    let page = e
        .list(
            "b",
            &ListOptions {
                limit: Some(4),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(keys_of(&page), ["k00", "k04", "k08", "k12"]);
    let rest = e
        .list(
            "b",
            &ListOptions {
                limit: Some(100),
                cursor: page.cursor,
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(rest.items.len(), 6);
    assert_eq!(rest.cursor, None);
}
