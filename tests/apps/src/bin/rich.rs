//! A command using kvstash's rich API, `kvstash:store/store`: JSON
//! documents, a versioned conditional update, a transaction. Prints
//! `name=…` read back from the document.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world rich {
            import kvstash:store/store@0.1.0;
        }
    ",
    path: "../../wit",
    world: "test:apps/rich",
    generate_all,
});

use kvstash::store::store::{Bucket, transact};
use kvstash::store::types::{Check, Condition, Error, KeyCheck, Mutation, Op, Value, WriteOptions};
use kvstash_test_apps::check;

fn main() {
    let devices = Bucket::open("devices").expect("open");
    let v1 = devices
        .set("sensor-1", r#"{"alias":[1,5,42],"name":"shed"}"#)
        .expect("set a document");
    let v2 = devices
        .set_path("sensor-1", "/name", r#""backyard shed""#)
        .expect("set-path");
    check(v2 > v1, "versions increase");
    // A conditional write at a stale version fails and changes nothing.
    let stale = devices.set_with(
        "sensor-1",
        &Value::Json(r#"{"name":"lost"}"#.into()),
        WriteOptions {
            if_version: Some(v1),
            if_absent: false,
            ttl_ms: None,
        },
    );
    check(
        matches!(stale, Err(Error::Conflict(Some(v))) if v == v2),
        "stale write conflicts",
    );
    // A transaction: check the version, write two keys.
    transact(
        &[Check::Key(KeyCheck {
            bucket: "devices".into(),
            key: "sensor-1".into(),
            condition: Condition::VersionIs(v2),
        })],
        &[
            Mutation {
                bucket: "devices".into(),
                key: "count".into(),
                op: Op::Increment(1),
                ttl_ms: None,
            },
            Mutation {
                bucket: "aliases".into(),
                key: "1.5.42".into(),
                op: Op::Set(Value::Json(r#""sensor-1""#.into())),
                ttl_ms: None,
            },
        ],
    )
    .expect("transaction");
    let name = devices
        .get_path("sensor-1", "/name")
        .expect("get-path")
        .map(|found| found.json)
        .unwrap_or_default();
    check(
        name == r#""backyard shed""#,
        "get-path reads the edited field",
    );
    println!("name={name}");
}
