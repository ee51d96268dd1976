//! History: undo and redo, bounded, written as new versions, exact across
//! instances; and a model-based test of random changes, undos and redos.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::{Rng, T0, json};
use crate::engine::*;

fn engine() -> Engine<Rc<MemStorage>, Rc<ManualClock>> {
    Engine::new(Rc::new(MemStorage::default()), Rc::new(ManualClock::at(T0)))
}

fn doc<S: Storage, C: Clock>(e: &Engine<S, C>, key: &str) -> Option<serde_json::Value> {
    e.get("db", key).unwrap().map(|v| match v.value {
        Value::Json(text) => serde_json::from_str(&text).unwrap(),
        Value::Bytes(_) => panic!("bytes"),
    })
}

#[test]
fn the_pyzdb_session() {
    let e = engine();
    e.set_history("db", 100).unwrap();
    e.set("db", "x", json("3")).unwrap();
    e.set("db", "l", json("[0,1,2,3,4,5,6,7,8,9]")).unwrap();
    e.update(
        "db",
        "l",
        Op::SetPath {
            path: "/4".into(),
            value: r#"["a","b","c"]"#.into(),
        },
        None,
    )
    .unwrap();
    let before_undo = e.storage().current_version().unwrap();
    let v = e.undo("db").unwrap();
    assert!(v > before_undo, "an undo is a new version, not a rewrite");
    assert_eq!(
        doc(&e, "l"),
        Some(serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    );
    e.undo("db").unwrap();
    assert_eq!(doc(&e, "l"), None);
    assert_eq!(e.history("db").unwrap(), (1, 2));
    e.redo("db").unwrap();
    e.redo("db").unwrap();
    assert_eq!(
        doc(&e, "l"),
        Some(serde_json::json!([
            0,
            1,
            2,
            3,
            ["a", "b", "c"],
            5,
            6,
            7,
            8,
            9
        ]))
    );
    assert_eq!(doc(&e, "x"), Some(serde_json::json!(3)));
    assert!(matches!(e.redo("db"), Err(StoreError::NotFound(_))));
}

#[test]
fn a_new_change_drops_what_could_be_redone() {
    let e = engine();
    e.set_history("db", 10).unwrap();
    e.set("db", "k", json("1")).unwrap();
    e.set("db", "k", json("2")).unwrap();
    e.undo("db").unwrap();
    e.set("db", "k", json("3")).unwrap();
    assert!(matches!(e.redo("db"), Err(StoreError::NotFound(_))));
    e.undo("db").unwrap();
    assert_eq!(doc(&e, "k"), Some(serde_json::json!(1)));
}

#[test]
fn history_is_bounded_and_a_transaction_is_one_change() {
    let e = engine();
    e.set_history("db", 2).unwrap();
    for i in 0..5 {
        e.set("db", "k", json(&i.to_string())).unwrap();
    }
    assert_eq!(e.history("db").unwrap(), (2, 0));
    e.undo("db").unwrap();
    e.undo("db").unwrap();
    assert!(matches!(e.undo("db"), Err(StoreError::NotFound(_))));
    assert_eq!(doc(&e, "k"), Some(serde_json::json!(2)));
    let set = |key: &str, v: &str| Mutation {
        bucket: "db".into(),
        key: key.into(),
        op: Op::Set(json(v)),
        ttl_ms: None,
    };
    e.transact(
        &[],
        &[
            set("a", "1"),
            set("b", "2"),
            Mutation {
                bucket: "other".into(),
                ..set("c", "3")
            },
        ],
    )
    .unwrap();
    e.undo("db").unwrap();
    assert_eq!(
        (doc(&e, "a"), doc(&e, "b")),
        (None, None),
        "both keys of the commit, at once"
    );
    assert!(
        e.exists("other", "c").unwrap(),
        "buckets without history are untouched"
    );
}

#[test]
fn undo_refuses_when_a_key_changed_outside_history() {
    let clock = Rc::new(ManualClock::at(T0));
    let e = Engine::new(Rc::new(MemStorage::default()), clock.clone());
    e.set_history("db", 10).unwrap();
    e.set("db", "k", json("1")).unwrap();
    e.set_with(
        "db",
        "k",
        json("2"),
        &WriteOptions {
            ttl_ms: Some(10),
            ..Default::default()
        },
    )
    .unwrap();
    clock.advance(10);
    assert_eq!(
        e.sweep(10).unwrap(),
        1,
        "the expiry is not recorded as a change"
    );
    assert_eq!(e.undo("db"), Err(StoreError::Conflict { current: None }));
    assert_eq!(
        e.history("db").unwrap(),
        (2, 0),
        "a refused undo moves nothing"
    );
}

#[test]
fn history_is_shared_by_every_instance_and_can_be_turned_off() {
    let storage = Rc::new(MemStorage::default());
    let a = Engine::new(storage.clone(), ManualClock::at(T0));
    let b = Engine::new(storage.clone(), ManualClock::at(T0));
    a.set("db", "k", json("1")).unwrap(); // a caches "no history"
    b.set_history("db", 10).unwrap();
    a.set("db", "k", json("2")).unwrap(); // a's guard fails, it reloads the rules
    b.undo("db").unwrap();
    assert_eq!(doc(&a, "k"), Some(serde_json::json!(1)));
    assert!(matches!(
        b.set_history("db", MAX_HISTORY + 1),
        Err(StoreError::InvalidArgument(_))
    ));
    b.set_history("db", 0).unwrap();
    assert_eq!(b.history("db").unwrap(), (0, 0));
    let engine_keys = storage.scan(b"h", Some(b"i"), 100, false).unwrap().len()
        + storage.scan(b"H", Some(b"I"), 100, false).unwrap().len();
    assert_eq!(engine_keys, 0, "turning history off drops what it kept");
    assert!(matches!(b.undo("db"), Err(StoreError::NotFound(_))));
}

#[test]
fn undone_values_must_fit_the_current_schema() {
    let e = engine();
    e.set_history("db", 10).unwrap();
    e.set("db", "k", json("\"text\"")).unwrap();
    e.set("db", "k", json("1")).unwrap();
    e.set_schema("db", Some(r#"{"type":"integer"}"#), true)
        .unwrap();
    assert!(matches!(e.undo("db"), Err(StoreError::SchemaViolation(_))));
    assert_eq!(doc(&e, "k"), Some(serde_json::json!(1)));
}

#[test]
fn an_undone_value_keeps_its_expiry() {
    let clock = Rc::new(ManualClock::at(T0));
    let e = Engine::new(Rc::new(MemStorage::default()), clock.clone());
    e.set_history("db", 10).unwrap();
    e.set_with(
        "db",
        "k",
        json("1"),
        &WriteOptions {
            ttl_ms: Some(100),
            ..Default::default()
        },
    )
    .unwrap();
    e.set("db", "k", json("2")).unwrap();
    e.undo("db").unwrap();
    assert_eq!(
        e.get("db", "k").unwrap().unwrap().expires_at_ms,
        Some(T0 + 100)
    );
    e.redo("db").unwrap();
    clock.advance(100);
    e.undo("db").unwrap();
    assert_eq!(
        e.get("db", "k").unwrap(),
        None,
        "restored already expired: invisible at once"
    );
}

type State = BTreeMap<String, i64>;
/// One recorded change: per key, the value before and after.
type Change = Vec<(String, Option<i64>, Option<i64>)>;

#[test]
fn model_based_undo_and_redo() {
    for seed in 1..=40u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let e = engine();
        let keep = 1 + rng.below(6) as usize;
        e.set_history("db", keep as u32).unwrap();
        let mut state = State::new();
        let mut undo: Vec<Change> = Vec::new();
        let mut redo: Vec<Change> = Vec::new();
        let keys = ["a", "b", "c", "d"];
        for step in 0..200 {
            let ctx = format!("seed {seed} step {step}");
            let mut changed: Change = Vec::new();
            match rng.below(6) {
                0 | 1 => {
                    let key = keys[rng.below(4) as usize];
                    let value = rng.below(50) as i64;
                    e.set("db", key, json(&value.to_string())).unwrap();
                    changed.push((key.into(), state.get(key).copied(), Some(value)));
                }
                2 => {
                    let key = keys[rng.below(4) as usize];
                    let existed = e.delete("db", key).unwrap();
                    assert_eq!(existed, state.contains_key(key), "{ctx}");
                    if existed {
                        changed.push((key.into(), state.get(key).copied(), None));
                    }
                }
                3 => {
                    let (k1, k2) = (keys[rng.below(4) as usize], keys[rng.below(4) as usize]);
                    let d = rng.below(5) as i64 + 1;
                    let ops = [
                        Mutation {
                            bucket: "db".into(),
                            key: k1.into(),
                            op: Op::Increment(d),
                            ttl_ms: None,
                        },
                        Mutation {
                            bucket: "db".into(),
                            key: k2.into(),
                            op: Op::Increment(d),
                            ttl_ms: None,
                        },
                    ];
                    e.transact(&[], &ops).unwrap();
                    let mut after = state.clone();
                    *after.entry(k1.into()).or_insert(0) += d;
                    *after.entry(k2.into()).or_insert(0) += d;
                    for k in if k1 == k2 { vec![k1] } else { vec![k1, k2] } {
                        changed.push((k.into(), state.get(k).copied(), after.get(k).copied()));
                    }
                }
                4 => match undo.pop() {
                    Some(change) => {
                        e.undo("db").unwrap_or_else(|err| panic!("{ctx}: {err:?}"));
                        for (k, before, _) in &change {
                            apply(&mut state, k, *before);
                        }
                        redo.push(change);
                    }
                    None => assert!(
                        matches!(e.undo("db"), Err(StoreError::NotFound(_))),
                        "{ctx}"
                    ),
                },
                _ => match redo.pop() {
                    Some(change) => {
                        e.redo("db").unwrap_or_else(|err| panic!("{ctx}: {err:?}"));
                        for (k, _, after) in &change {
                            apply(&mut state, k, *after);
                        }
                        undo.push(change);
                    }
                    None => assert!(
                        matches!(e.redo("db"), Err(StoreError::NotFound(_))),
                        "{ctx}"
                    ),
                },
            }
            if !changed.is_empty() {
                for (k, _, after) in &changed {
                    apply(&mut state, k, *after);
                }
                undo.push(changed);
                redo.clear();
                if undo.len() > keep {
                    undo.remove(0);
                }
            }
            let stored: State = keys
                .iter()
                .filter_map(|k| doc(&e, k).map(|v| (k.to_string(), v.as_i64().unwrap())))
                .collect();
            assert_eq!(stored, state, "{ctx}");
            assert_eq!(
                e.history("db").unwrap(),
                (undo.len() as u64, redo.len() as u64),
                "{ctx}"
            );
        }
    }
}

fn apply(state: &mut State, key: &str, value: Option<i64>) {
    match value {
        Some(v) => {
            state.insert(key.into(), v);
        }
        None => {
            state.remove(key);
        }
    }
}
