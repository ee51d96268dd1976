//! Typed buckets: every write validated, schema changes checked against
//! existing values, versioned, safe against concurrent writers.

use std::cell::RefCell;
use std::rc::Rc;

use super::{T0, json};
use crate::engine::*;

const DEVICE: &str = r#"{
    "type": "object",
    "required": ["alias"],
    "additionalProperties": false,
    "properties": {
        "alias": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "name": {"type": "string", "maxLength": 32}
    }
}"#;

fn engine() -> Engine<MemStorage, ManualClock> {
    Engine::new(MemStorage::default(), ManualClock::at(T0))
}

fn violation(r: Result<u64, StoreError>) -> String {
    match r {
        Err(StoreError::SchemaViolation(why)) => why,
        other => panic!("expected a schema violation, got {other:?}"),
    }
}

#[test]
fn every_kind_of_write_is_validated() {
    let e = engine();
    assert_eq!(e.set_schema("dev", Some(DEVICE), false), Ok(1));
    e.set("dev", "s1", json(r#"{"alias":[1,5,42],"name":"shed"}"#))
        .unwrap();
    let why = violation(e.set("dev", "s2", json(r#"{"alias":[1,"5"]}"#)));
    assert_eq!(
        why,
        "`s2` in bucket `dev`: `/alias/1`: expected integer, got string"
    );
    violation(e.set("dev", "s2", Value::bytes(b"raw".to_vec()).unwrap()));
    violation(e.set_many(
        "dev",
        vec![
            ("ok".into(), json(r#"{"alias":[]}"#)),
            ("bad".into(), json("{}")),
        ],
    ));
    assert_eq!(
        e.get("dev", "ok").unwrap(),
        None,
        "one bad value spoils the batch"
    );
    let ttl = WriteOptions {
        ttl_ms: Some(1000),
        ..Default::default()
    };
    violation(e.set_with("dev", "s3", json(r#"{"alias":[-1]}"#), &ttl));
    violation(e.update(
        "dev",
        "s1",
        Op::SetPath {
            path: "/name".into(),
            value: "7".into(),
        },
        None,
    ));
    violation(e.update(
        "dev",
        "s1",
        Op::AppendPath {
            path: "/alias".into(),
            value: "-5".into(),
        },
        None,
    ));
    e.update(
        "dev",
        "s1",
        Op::AppendPath {
            path: "/alias".into(),
            value: "5".into(),
        },
        None,
    )
    .unwrap();
    let txn = e.transact(
        &[],
        &[Mutation {
            bucket: "dev".into(),
            key: "s9".into(),
            op: Op::Set(json(r#"{"alias":[],"x":1}"#)),
            ttl_ms: None,
        }],
    );
    assert_eq!(
        violation(txn),
        "`s9` in bucket `dev`: `/x`: member `x` is not allowed"
    );
    // Deletes need no validation; other buckets are untouched by the schema.
    assert!(e.delete("dev", "s1").unwrap());
    e.set("other", "x", json("\"anything\"")).unwrap();
}

#[test]
fn a_schema_must_fit_the_data_unless_forced() {
    let e = engine();
    e.set("dev", "good", json(r#"{"alias":[1]}"#)).unwrap();
    e.set("dev", "bad", json(r#"{"alias":"one"}"#)).unwrap();
    let before = e.storage().current_version().unwrap();
    let why = violation(e.set_schema("dev", Some(DEVICE), false));
    assert_eq!(
        why,
        "existing value `bad` in bucket `dev`: `/alias`: expected array, got string"
    );
    assert_eq!(e.schema("dev").unwrap(), None, "nothing changed");
    e.set("dev", "bad2", json("3")).unwrap(); // and no pending schema lingers
    assert!(e.storage().current_version().unwrap() > before);
    assert_eq!(e.set_schema("dev", Some(DEVICE), true), Ok(1), "forced");
    let (text, version) = e.schema("dev").unwrap().unwrap();
    assert_eq!(version, 1);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&text).unwrap(),
        serde_json::from_str::<serde_json::Value>(DEVICE).unwrap()
    );
    // Versioned: each change counts; removing it lifts the rules.
    e.delete_many("dev", &["bad".into(), "bad2".into()])
        .unwrap();
    assert_eq!(
        e.set_schema("dev", Some(r#"{"type":"object"}"#), false),
        Ok(2)
    );
    assert_eq!(e.set_schema("dev", None, false), Ok(3));
    assert_eq!(e.schema("dev").unwrap(), None);
    e.set("dev", "free", json("[]")).unwrap();
}

#[test]
fn bad_schemas_and_read_only_stores_are_refused() {
    let e = engine();
    assert!(matches!(
        e.set_schema("dev", Some(r#"{"pattern":"x"}"#), false),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        e.set_schema("dev", Some("{"), false),
        Err(StoreError::InvalidArgument(_))
    ));
    assert!(matches!(
        e.set_schema("", Some("{}"), false),
        Err(StoreError::InvalidBucket(_))
    ));
    let ro = engine().read_only(true);
    assert_eq!(
        ro.set_schema("dev", Some("{}"), false),
        Err(StoreError::ReadOnly)
    );
}

#[test]
fn another_instance_sees_a_new_schema_on_its_next_write() {
    let shared = Rc::new(MemStorage::default());
    let a = Engine::new(shared.clone(), ManualClock::at(T0));
    let b = Engine::new(shared, ManualClock::at(T0));
    a.set("dev", "x", json(r#"{"alias":[]}"#)).unwrap(); // a caches "no schema"
    b.set_schema("dev", Some(DEVICE), false).unwrap();
    // a's cached rules are stale; its commit guard fails, it reloads them.
    violation(a.set("dev", "y", json(r#"{"alias":"no"}"#)));
    a.set("dev", "y", json(r#"{"alias":[2]}"#)).unwrap();
}

#[test]
fn a_write_racing_a_schema_change_cannot_sneak_in() {
    let shared = Rc::new(MemStorage::default());
    let writer = Rc::new(Engine::new(shared.clone(), ManualClock::at(T0)));
    writer.set("dev", "ok", json(r#"{"alias":[]}"#)).unwrap(); // cached: no schema
    let outcome = Rc::new(RefCell::new(None));
    let (w, o) = (writer.clone(), outcome.clone());
    // While the new schema is checked against existing values, another
    // writer tries (once) to store a value the new schema rejects.
    let mut once = Some(move || {
        *o.borrow_mut() = Some(w.set("dev", "sneaky", json(r#"{"alias":"no"}"#)));
    });
    let hook = super::Hooked::new(shared).before_scan(move || {
        if let Some(write) = once.take() {
            write();
        }
    });
    let admin = Engine::new(hook, ManualClock::at(T0));
    assert_eq!(admin.set_schema("dev", Some(DEVICE), false), Ok(1));
    let sneaky = outcome.borrow_mut().take().expect("the hook ran");
    violation(sneaky);
    assert_eq!(
        writer.get("dev", "sneaky").unwrap(),
        None,
        "the bucket holds only valid values"
    );
}
