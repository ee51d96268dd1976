//! Conditional writes, transactions, increments and document paths.

use serde_json::json;

use super::{T0, engine, json};
use crate::engine::*;

fn check(bucket: &str, key: &str, condition: Condition) -> TxnCheck {
    TxnCheck::key(bucket, key, condition)
}

fn mutation(bucket: &str, key: &str, op: Op) -> Mutation {
    Mutation {
        bucket: bucket.into(),
        key: key.into(),
        op,
        ttl_ms: None,
    }
}

fn doc(e: &Engine<MemStorage, ManualClock>, bucket: &str, key: &str) -> serde_json::Value {
    match e.get(bucket, key).unwrap().unwrap().value {
        Value::Json(text) => serde_json::from_str(&text).unwrap(),
        Value::Bytes(_) => panic!("bytes"),
    }
}

#[test]
fn set_if_absent_and_if_version() {
    let e = engine();
    let absent = WriteOptions {
        if_absent: true,
        ..Default::default()
    };
    let v1 = e.set_with("b", "k", json("1"), &absent).unwrap();
    assert_eq!(
        e.set_with("b", "k", json("2"), &absent),
        Err(StoreError::Conflict { current: Some(v1) })
    );
    let at_v1 = WriteOptions {
        if_version: Some(v1),
        ..Default::default()
    };
    let v2 = e.set_with("b", "k", json("3"), &at_v1).unwrap();
    assert_eq!(
        e.set_with("b", "k", json("4"), &at_v1),
        Err(StoreError::Conflict { current: Some(v2) })
    );
    let on_missing = WriteOptions {
        if_version: Some(v2),
        ..Default::default()
    };
    assert_eq!(
        e.set_with("b", "nope", json("1"), &on_missing),
        Err(StoreError::Conflict { current: None })
    );
    assert_eq!(e.get("b", "k").unwrap().unwrap().value, json("3"));
    let both = WriteOptions {
        if_version: Some(1),
        if_absent: true,
        ..Default::default()
    };
    assert!(matches!(
        e.set_with("b", "k", json("5"), &both),
        Err(StoreError::InvalidArgument(_))
    ));
}

#[test]
fn delete_if_version() {
    let e = engine();
    let v1 = e.set("b", "k", json("1")).unwrap();
    let v2 = e.set("b", "k", json("2")).unwrap();
    assert_eq!(
        e.delete_if_version("b", "k", v1),
        Err(StoreError::Conflict { current: Some(v2) })
    );
    assert!(e.exists("b", "k").unwrap());
    let v3 = e.delete_if_version("b", "k", v2).unwrap();
    assert!(v3 > v2);
    assert!(!e.exists("b", "k").unwrap());
    assert_eq!(
        e.delete_if_version("b", "k", v2),
        Err(StoreError::Conflict { current: None })
    );
}

#[test]
fn transactions_are_all_or_nothing_across_buckets() {
    let e = engine();
    let v0 = e.set("cfg", "limit", json("10")).unwrap();
    let v = e
        .transact(
            &[
                check("cfg", "limit", Condition::VersionIs(v0)),
                check("locks", "deploy", Condition::Absent),
            ],
            &[
                mutation("cfg", "limit", Op::Set(json("20"))),
                mutation("audit", "last", Op::Set(json("\"raised limit\""))),
                mutation("stats", "changes", Op::Increment(1)),
            ],
        )
        .unwrap();
    for (bucket, key, want) in [
        ("cfg", "limit", "20"),
        ("audit", "last", "\"raised limit\""),
        ("stats", "changes", "1"),
    ] {
        let got = e.get(bucket, key).unwrap().unwrap();
        assert_eq!((got.value, got.version), (json(want), v), "{bucket}/{key}");
    }
    // The same transaction again: its first check now fails, by index,
    // with the current version, and nothing is written.
    let before = e.storage().current_version().unwrap();
    let failed = e.transact(
        &[
            check("locks", "deploy", Condition::Absent),
            check("cfg", "limit", Condition::VersionIs(v0)),
        ],
        &[
            mutation("cfg", "limit", Op::Set(json("30"))),
            mutation("stats", "changes", Op::Increment(1)),
        ],
    );
    assert_eq!(
        failed,
        Err(StoreError::CheckFailed {
            index: 1,
            current: Some(v)
        })
    );
    assert_eq!(e.storage().current_version().unwrap(), before);
    assert_eq!(e.get("stats", "changes").unwrap().unwrap().value, json("1"));
}

#[test]
fn every_condition() {
    let e = engine();
    let v = e
        .set("b", "doc", json(r#"{"a":1,"b":[true,null]}"#))
        .unwrap();
    e.set("b", "raw", Value::bytes(vec![1, 2]).unwrap())
        .unwrap();
    let holds = |c: Condition, key: &str| e.transact(&[check("b", key, c)], &[]).is_ok();
    assert!(holds(Condition::VersionIs(v), "doc"));
    assert!(!holds(Condition::VersionIs(v + 100), "doc"));
    assert!(holds(Condition::Exists, "doc"));
    assert!(!holds(Condition::Exists, "nope"));
    assert!(holds(Condition::Absent, "nope"));
    assert!(!holds(Condition::Absent, "doc"));
    // JSON equality is semantic: member order and spacing do not matter.
    assert!(holds(
        Condition::ValueEquals(json(r#"{ "b": [true, null], "a": 1 }"#)),
        "doc"
    ));
    assert!(!holds(
        Condition::ValueEquals(json(r#"{"a":2,"b":[true,null]}"#)),
        "doc"
    ));
    assert!(!holds(Condition::ValueEquals(json("1")), "nope"));
    assert!(holds(
        Condition::ValueEquals(Value::bytes(vec![1, 2]).unwrap()),
        "raw"
    ));
    assert!(!holds(
        Condition::ValueEquals(Value::bytes(vec![1]).unwrap()),
        "raw"
    ));
}

#[test]
fn a_checks_only_transaction_writes_nothing() {
    let e = engine();
    let v = e.set("b", "k", json("1")).unwrap();
    assert_eq!(
        e.transact(&[check("b", "k", Condition::Exists)], &[]),
        Ok(v)
    );
    assert_eq!(e.storage().current_version().unwrap(), v);
}

#[test]
fn mutations_of_one_key_compose_in_order() {
    let e = engine();
    e.transact(
        &[],
        &[
            mutation("b", "n", Op::Set(json("5"))),
            mutation("b", "n", Op::Increment(2)),
            mutation("b", "d", Op::Set(json(r#"{"l":[]}"#))),
            mutation(
                "b",
                "d",
                Op::AppendPath {
                    path: "/l".into(),
                    value: "1".into(),
                },
            ),
            mutation(
                "b",
                "d",
                Op::SetPath {
                    path: "/x".into(),
                    value: "true".into(),
                },
            ),
            mutation("b", "gone", Op::Set(json("1"))),
            mutation("b", "gone", Op::Delete),
        ],
    )
    .unwrap();
    assert_eq!(e.get("b", "n").unwrap().unwrap().value, json("7"));
    assert_eq!(doc(&e, "b", "d"), json!({"l": [1], "x": true}));
    assert_eq!(e.get("b", "gone").unwrap(), None);
}

#[test]
fn a_failing_mutation_fails_the_transaction() {
    let e = engine();
    e.set("b", "text", json("\"x\"")).unwrap();
    let before = e.storage().current_version().unwrap();
    let r = e.transact(
        &[],
        &[
            mutation("b", "new", Op::Set(json("1"))),
            mutation("b", "text", Op::Increment(1)),
        ],
    );
    assert!(matches!(r, Err(StoreError::InvalidValue(_))), "{r:?}");
    assert_eq!(e.get("b", "new").unwrap(), None);
    assert_eq!(e.storage().current_version().unwrap(), before);
}

#[test]
fn transaction_limits_and_bad_input() {
    let e = engine();
    let many: Vec<Mutation> = (0..=Limits::DEFAULT.batch)
        .map(|i| mutation("b", &i.to_string(), Op::Delete))
        .collect();
    assert!(matches!(
        e.transact(&[], &many),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        e.transact(&[check("", "k", Condition::Exists)], &[]),
        Err(StoreError::InvalidBucket(_))
    ));
    assert!(matches!(
        e.transact(
            &[],
            &[mutation(
                "b",
                "k",
                Op::SetPath {
                    path: "nope".into(),
                    value: "1".into()
                }
            )]
        ),
        Err(StoreError::InvalidPath(_))
    ));
    assert!(matches!(
        e.transact(
            &[],
            &[mutation(
                "b",
                "k",
                Op::AppendPath {
                    path: "/l".into(),
                    value: "{".into()
                }
            )]
        ),
        Err(StoreError::InvalidValue(_))
    ));
    let with_ttl = Mutation {
        ttl_ms: Some(5),
        ..mutation("b", "k", Op::Delete)
    };
    assert!(matches!(
        e.transact(&[], &[with_ttl]),
        Err(StoreError::InvalidArgument(_))
    ));
    let zero_ttl = Mutation {
        ttl_ms: Some(0),
        ..mutation("b", "k", Op::Set(json("1")))
    };
    assert!(matches!(
        e.transact(&[], &[zero_ttl]),
        Err(StoreError::InvalidArgument(_))
    ));
    let read_only = Engine::new(MemStorage::default(), ManualClock::at(T0)).read_only(true);
    assert_eq!(
        read_only.transact(&[], &[mutation("b", "k", Op::Delete)]),
        Err(StoreError::ReadOnly)
    );
    assert_eq!(
        read_only.transact(&[check("b", "k", Condition::Absent)], &[]),
        Ok(0)
    );
}

#[test]
fn document_paths() {
    let e = engine();
    e.set("db", "doc", json(r#"{"x":3}"#)).unwrap();
    let set = |path: &str, value: &str| Op::SetPath {
        path: path.into(),
        value: value.into(),
    };
    e.update("db", "doc", set("/l", "[0,1,2,3,4,5,6,7,8,9]"), None)
        .unwrap();
    e.update("db", "doc", set("/l/4", r#"["a","b","c"]"#), None)
        .unwrap();
    let v = e
        .update(
            "db",
            "doc",
            Op::AppendPath {
                path: "/l/4".into(),
                value: "\"d\"".into(),
            },
            None,
        )
        .unwrap();
    assert_eq!(
        doc(&e, "db", "doc"),
        json!({"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c", "d"], 5, 6, 7, 8, 9]})
    );
    assert_eq!(
        e.get_path("db", "doc", "/l/4/3").unwrap(),
        Some(("\"d\"".into(), v))
    );
    e.update("db", "doc", Op::DeletePath { path: "/x".into() }, None)
        .unwrap();
    assert_eq!(
        e.get_path("db", "doc", "/x"),
        Err(StoreError::PathNotFound("`/x` does not exist".into()))
    );
    assert_eq!(e.get_path("db", "missing", "/x"), Ok(None));
    assert!(matches!(
        e.update("db", "missing", set("/a", "1"), None),
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        e.update("db", "doc", set("/l/0/deep", "1"), None),
        Err(StoreError::PathTypeMismatch(_))
    ));
    e.set("db", "raw", Value::bytes(vec![1]).unwrap()).unwrap();
    assert_eq!(
        e.update("db", "raw", set("/a", "1"), None),
        Err(StoreError::NotJson)
    );
    assert_eq!(e.get_path("db", "raw", ""), Err(StoreError::NotJson));
    // Failed path writes leave the document as it was.
    assert_eq!(
        doc(&e, "db", "doc"),
        json!({"l": [0, 1, 2, 3, ["a", "b", "c", "d"], 5, 6, 7, 8, 9]})
    );
}

#[test]
fn increments_are_exact_under_interleaving() {
    // Two engines on one storage, interleaved: the read-modify-write retry
    // makes every increment count.
    let shared = std::rc::Rc::new(MemStorage::default());
    let a = Engine::new(shared.clone(), ManualClock::at(T0));
    let b = Engine::new(shared, ManualClock::at(T0));
    for i in 0..50 {
        let e = if i % 2 == 0 { &a } else { &b };
        e.update("s", "n", Op::Increment(1), None).unwrap();
        e.increment("s", "m", 2i64).unwrap();
    }
    assert_eq!(a.get("s", "n").unwrap().unwrap().value, json("50"));
    assert_eq!(b.get("s", "m").unwrap().unwrap().value, json("100"));
}

#[test]
fn a_lost_race_is_retried_on_fresh_state() {
    // Another writer gets in before our first commit attempt.
    let mut raced = false;
    let storage = super::Hooked::new(std::rc::Rc::new(MemStorage::default())).before_commit(
        move |inner, _| {
            if !std::mem::replace(&mut raced, true) {
                let intruder = Write {
                    key: crate::engine::keys::data_key("b", "n"),
                    value: Some(Record::json("100".into()).encode()),
                };
                inner.commit(vec![], vec![intruder]).ok()?;
            }
            None
        },
    );
    let e = Engine::new(storage, ManualClock::at(T0));
    // The intruder writes 100 between our read (absent → 0) and our commit;
    // the retry sees 100 and adds to it.
    assert_eq!(e.increment("b", "n", 1i64), Ok(101));
}
