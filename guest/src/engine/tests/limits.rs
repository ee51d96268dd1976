//! Configured limits (`"limits"` in the configuration): each is enforced
//! where a value is written, names itself in its error, writes nothing, and
//! leaves readable what was stored under a larger limit.

use super::{engine, json};
use crate::engine::*;

fn small() -> Limits {
    Limits {
        key_bytes: 8,
        value_bytes: 64,
        depth: 4,
        batch: 3,
    }
}

fn set_path(bucket: &str, key: &str, path: &str, value: &str) -> Mutation {
    Mutation {
        bucket: bucket.into(),
        key: key.into(),
        op: Op::SetPath {
            path: path.into(),
            value: value.into(),
        },
        ttl_ms: None,
    }
}

fn message(e: StoreError) -> String {
    e.to_string()
}

#[test]
fn each_configured_limit_is_enforced_and_named() {
    let e = engine();
    set_limits(small());
    let before = e.storage().current_version().unwrap();

    let key = message(e.set("b", "123456789", json("1")).unwrap_err());
    assert!(
        key.contains("9 bytes, at most 8") && key.contains("limits.key_bytes"),
        "{key}"
    );
    assert!(e.set("b", "12345678", json("1")).is_ok());

    let value = message(Value::json(format!("\"{}\"", "x".repeat(63))).unwrap_err());
    assert!(
        value.contains("at most 64") && value.contains("limits.value_bytes"),
        "{value}"
    );
    assert!(Value::bytes(vec![0; 65]).is_err() && Value::bytes(vec![0; 64]).is_ok());

    let depth = message(Value::json("[[[[[1]]]]]".into()).unwrap_err());
    assert!(
        depth.contains("nesting deeper than 4 levels (limits.depth)"),
        "{depth}"
    );
    assert!(Value::json("[[[[1]]]]".into()).is_ok());

    let four: Vec<(String, Value)> = (0..4).map(|i| (i.to_string(), json("1"))).collect();
    let batch = message(e.set_many("b", four).unwrap_err());
    assert!(
        batch.contains("at most 3") && batch.contains("limits.batch"),
        "{batch}"
    );
    let keys: Vec<String> = (0..4).map(|i| i.to_string()).collect();
    assert!(e.get_many("b", &keys).is_err());
    let mutations: Vec<Mutation> = (0..4)
        .map(|i| Mutation {
            bucket: "b".into(),
            key: i.to_string(),
            op: Op::Set(json("1")),
            ttl_ms: None,
        })
        .collect();
    let txn = message(e.transact(&[], &mutations).unwrap_err());
    assert!(
        txn.contains("at most 3") && txn.contains("limits.batch"),
        "{txn}"
    );

    let lock = message(e.acquire("123456789", 1000, None).unwrap_err());
    assert!(lock.contains("limits.key_bytes"), "{lock}");

    // Only the one set within the limits was written.
    assert_eq!(e.storage().current_version().unwrap(), before + 1);
    set_limits(Limits::DEFAULT);
}

#[test]
fn a_path_write_that_would_exceed_a_limit_is_refused_and_writes_nothing() {
    let e = engine();
    set_limits(small());
    e.set("b", "d", json(r#"{"a":[[1]]}"#)).unwrap();
    let version = e.storage().current_version().unwrap();
    // {"a":[[[[1]]]]} nests 5 deep.
    let deeper = message(
        e.transact(&[], &[set_path("b", "d", "/a/0/0", "[[1]]")])
            .unwrap_err(),
    );
    assert!(deeper.contains("nesting deeper than 4 levels"), "{deeper}");
    let larger = message(
        e.transact(
            &[],
            &[set_path("b", "d", "/b", &format!("\"{}\"", "x".repeat(50)))],
        )
        .unwrap_err(),
    );
    assert!(larger.contains("limits.value_bytes"), "{larger}");
    assert_eq!(e.storage().current_version().unwrap(), version);
    assert_eq!(
        e.get("b", "d").unwrap().unwrap().value,
        json(r#"{"a":[[1]]}"#)
    );
    set_limits(Limits::DEFAULT);
}

#[test]
fn at_the_default_depth_a_path_write_cannot_make_a_document_unreadable() {
    // The issue's case: a document as deep as allowed, made deeper by a
    // path write, would be stored and then fail every read.
    let e = engine();
    let deepest = format!("{}1{}", "[".repeat(126), "]".repeat(126));
    e.set("b", "d", json(&format!("{{\"a\":{deepest}}}")))
        .unwrap();
    // The innermost `1` sits inside 127 containers; an array there is one
    // level too many.
    let innermost = format!("/a{}", "/0".repeat(126));
    let refused = message(
        e.transact(&[], &[set_path("b", "d", &innermost, "[1]")])
            .unwrap_err(),
    );
    assert!(
        refused.contains("nesting deeper than 127 levels"),
        "{refused}"
    );
    assert_eq!(e.get_path("b", "d", &innermost).unwrap().unwrap().0, "1");
}

#[test]
fn what_was_stored_under_larger_limits_stays_readable() {
    let e = engine();
    let long_key = "k".repeat(100);
    let deep = "[[[[[[1]]]]]]";
    e.set("b", &long_key, json(deep)).unwrap();
    e.set("b", "big", Value::bytes(vec![7; 1000]).unwrap())
        .unwrap();
    set_limits(small());
    // Listed and read whole (a get names the key, which must fit the limit
    // to be asked for; a listing returns every key).
    let page = e.list("b", &ListOptions::default()).unwrap();
    assert_eq!(page.items.len(), 2);
    assert!(page.items.iter().any(|i| i.key == long_key));
    // Paging goes on past a long key (its cursor names it).
    let back = ListOptions {
        limit: Some(1),
        reverse: true,
        ..ListOptions::default()
    };
    let first = e.list("b", &back).unwrap();
    assert_eq!(first.items[0].key, long_key);
    let next = ListOptions {
        cursor: first.cursor.clone(),
        ..back
    };
    assert_eq!(e.list("b", &next).unwrap().items[0].key, "big");
    assert_eq!(
        e.get("b", "big").unwrap().unwrap().value,
        Value::Bytes(vec![7; 1000])
    );
    set_limits(Limits::DEFAULT);
    assert_eq!(e.get("b", &long_key).unwrap().unwrap().value, json(deep));
}
