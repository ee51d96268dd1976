//! The store API through the real component, on every backend.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use kvstash::{Error, ListOptions, Store, StoreOptions, Value};
use serde::{Deserialize, Serialize};
use serde_json::json;

#[macro_use]
mod common;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Sensor {
    alias: Vec<u32>,
    name: String,
}

on_every_backend!(crud_and_typed_json, |store| {
    let b = store.bucket("devices");
    assert_eq!(b.get("s1").await.unwrap(), None);
    assert!(!b.exists("s1").await.unwrap());
    let sensor = Sensor {
        alias: vec![1, 5, 42],
        name: "backyard shed sensor".into(),
    };
    let v1 = b.set_json("s1", &sensor).await.unwrap();
    assert_eq!(b.get_json::<Sensor>("s1").await.unwrap(), Some(sensor));
    assert!(b.exists("s1").await.unwrap());
    let v2 = b
        .set_json_text("s1", r#"{"alias":[2],"name":"x"}"#)
        .await
        .unwrap();
    assert!(v2 > v1);
    let entry = b.get("s1").await.unwrap().unwrap();
    assert_eq!(entry.version, v2);
    assert_eq!(
        entry.value,
        Value::Json(r#"{"alias":[2],"name":"x"}"#.into())
    );
    assert!(b.delete("s1").await.unwrap());
    assert!(!b.delete("s1").await.unwrap());
    assert_eq!(b.get("s1").await.unwrap(), None);
});

on_every_backend!(bytes_values, |store| {
    let b = store.bucket("raw");
    b.set_bytes("blob", &[0, 159, 146, 150]).await.unwrap();
    let entry = b.get("blob").await.unwrap().unwrap();
    assert_eq!(entry.value, Value::Bytes(vec![0, 159, 146, 150]));
    assert_eq!(
        b.get_json::<serde_json::Value>("blob").await,
        Err(Error::NotJson)
    );
    let big = vec![7u8; 1024 * 1024];
    b.set_bytes("big", &big).await.unwrap();
    assert_eq!(
        b.get("big").await.unwrap().unwrap().value.as_bytes(),
        &big[..]
    );
});

on_every_backend!(listing_pages_in_order, |store| {
    let b = store.bucket("sensors");
    let pairs: Vec<(String, String)> = (0..250)
        .map(|i| (format!("sensor_{i:06}"), json!({"n": i}).to_string()))
        .collect();
    b.set_many(&pairs[..125]).await.unwrap();
    b.set_many(&pairs[125..]).await.unwrap();
    b.set_json("zz-other", &1).await.unwrap();
    store
        .bucket("sensors2")
        .set_json("sensor_x", &1)
        .await
        .unwrap();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let options = ListOptions {
            prefix: Some("sensor_".into()),
            limit: Some(100),
            cursor,
            ..Default::default()
        };
        let page = b.list(&options).await.unwrap();
        pages += 1;
        seen.extend(page.items.into_iter().map(|i| i.key));
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        seen,
        pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    let everything = b
        .list(&ListOptions {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(everything.items.len(), 251);
    let bad = ListOptions {
        cursor: Some("forged".into()),
        ..Default::default()
    };
    assert_eq!(b.list(&bad).await, Err(Error::InvalidCursor));
    assert_eq!(store.buckets().await.unwrap(), vec!["sensors", "sensors2"]);
});

on_every_backend!(batches, |store| {
    let b = store.bucket("batch");
    let v = b
        .set_many(&[("a".into(), "1".into()), ("b".into(), "2".into())])
        .await
        .unwrap();
    let got = b
        .get_many(&["b".into(), "nope".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!(
        got[0].as_ref().map(|e| (&e.value, e.version)),
        Some((&Value::Json("2".into()), v))
    );
    assert_eq!(got[1], None);
    assert_eq!(
        b.delete_many(&["a".into(), "nope".into()]).await.unwrap(),
        1
    );
    // One invalid value rejects the whole batch.
    let err = b
        .set_many(&[("c".into(), "3".into()), ("d".into(), "{".into())])
        .await;
    assert!(matches!(err, Err(Error::InvalidValue(_))), "{err:?}");
    assert_eq!(b.get("c").await.unwrap(), None);
});

on_every_backend!(bad_input_is_typed_and_harmless, |store| {
    let b = store.bucket("b");
    b.set_json("keep", &"me").await.unwrap();
    assert!(matches!(
        b.set_json_text("k", "{not json").await,
        Err(Error::InvalidValue(_))
    ));
    assert!(matches!(
        b.set_json_text("", "1").await,
        Err(Error::InvalidKey(_))
    ));
    assert!(matches!(
        b.get(&"k".repeat(5000)).await,
        Err(Error::InvalidKey(_))
    ));
    let huge = "1".repeat(8 * 1024 * 1024 + 1);
    assert!(matches!(
        b.set_json_text("k", &huge).await,
        Err(Error::InvalidValue(_))
    ));
    assert!(matches!(
        store.bucket("").get("k").await,
        Err(Error::InvalidBucket(_))
    ));
    assert!(matches!(
        store.bucket("a\u{7}b").set_json("k", &1).await,
        Err(Error::InvalidBucket(_))
    ));
    let too_many: Vec<String> = (0..1001).map(|i| i.to_string()).collect();
    assert!(matches!(
        b.get_many(&too_many).await,
        Err(Error::InvalidKey(_))
    ));
    // None of that touched the stored data.
    assert_eq!(store.buckets().await.unwrap(), vec!["b"]);
    assert_eq!(
        b.get_json::<String>("keep").await.unwrap().as_deref(),
        Some("me")
    );
    assert_eq!(
        b.list(&ListOptions::default()).await.unwrap().items.len(),
        1
    );
});

on_every_backend!(concurrent_callers, |store| {
    // More callers than instances: the pool serves them all, and every
    // write lands exactly once.
    let mut tasks = Vec::new();
    for t in 0..24 {
        let b = store.bucket("conc");
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                b.set_json(&format!("t{t:02}-{i:02}"), &(t * 100 + i))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let b = store.bucket("conc");
    let page = b
        .list(&ListOptions {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 24 * 20);
    let versions: std::collections::BTreeSet<u64> = page.items.iter().map(|i| i.version).collect();
    assert_eq!(versions.len(), 24 * 20, "every commit got its own version");
});

on_every_backend!(contended_increments_never_fail, |store| {
    // 64 writers, one key: every lost race is retried (backoff, jitter, a
    // deadline), so no caller sees `contention`.
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let b = store.bucket("hot");
        tasks.push(tokio::spawn(async move {
            for _ in 0..8 {
                b.increment("n", 1).await?;
            }
            Ok::<(), kvstash::Error>(())
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let n: i64 = store.bucket("hot").get_json("n").await.unwrap().unwrap();
    assert_eq!(n, 64 * 8);
});

#[tokio::test]
async fn without_a_retry_deadline_contended_writers_see_contention() {
    // What the retries above prevent: with no time to retry, writers that
    // lose a race give up at once.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let config = json!({"type": "file", "path": path, "retry_deadline_ms": 0});
    let store = Store::open(&config.to_string()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let b = store.bucket("hot");
        tasks.push(tokio::spawn(async move {
            let mut lost = 0;
            for _ in 0..8 {
                match b.increment("n", 1).await {
                    Ok(_) => {}
                    Err(kvstash::Error::Contention) => lost += 1,
                    Err(e) => panic!("{e}"),
                }
            }
            lost
        }));
    }
    let mut lost = 0;
    for task in tasks {
        lost += task.await.unwrap();
    }
    assert!(lost > 0, "64 writers on one key lose races");
    let n: i64 = store.bucket("hot").get_json("n").await.unwrap().unwrap();
    assert_eq!(n, 64 * 8 - lost, "a lost race writes nothing");
}

#[tokio::test]
async fn model_based_through_the_component() {
    // Random operations through the component on the file backend, checked
    // against a BTreeMap: the guest engine's model test, end to end.
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("m.redb")}).to_string();
    let store = Store::open(&config).await.unwrap();
    let b = store.bucket("m");
    let mut model: BTreeMap<String, i64> = BTreeMap::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    for step in 0..400 {
        let key = format!("k{}", next(12));
        match next(4) {
            0 | 1 => {
                let value = next(1000) as i64;
                b.set_json(&key, &value).await.unwrap();
                model.insert(key, value);
            }
            2 => assert_eq!(
                b.delete(&key).await.unwrap(),
                model.remove(&key).is_some(),
                "step {step}"
            ),
            _ => assert_eq!(
                b.get_json::<i64>(&key).await.unwrap(),
                model.get(&key).copied(),
                "step {step}"
            ),
        }
    }
    let listed: BTreeMap<String, i64> = b
        .list(&ListOptions {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| (i.key, i.value.unwrap().parse().unwrap()))
        .collect();
    assert_eq!(listed, model);
}

#[tokio::test]
async fn two_handles_on_one_file_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let a = Store::open(&config).await.unwrap();
    let b = Store::open(&config).await.unwrap();
    a.bucket("x").set_json("k", &1).await.unwrap();
    assert_eq!(b.bucket("x").get_json::<i32>("k").await.unwrap(), Some(1));
    drop(a);
    b.bucket("x").set_json("k", &2).await.unwrap();
    drop(b);
    let c = Store::open(&config).await.unwrap();
    assert_eq!(c.bucket("x").get_json::<i32>("k").await.unwrap(), Some(2));
}

#[tokio::test]
async fn layer_options_prefix_and_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let tenant = |prefix: &str| json!({"type": "file", "path": path, "prefix": prefix}).to_string();
    let a = Store::open(&tenant("tenant-a/")).await.unwrap();
    let b = Store::open(&tenant("tenant-b/")).await.unwrap();
    a.bucket("cfg").set_json("k", &"a").await.unwrap();
    b.bucket("cfg").set_json("k", &"b").await.unwrap();
    assert_eq!(
        a.bucket("cfg")
            .get_json::<String>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        b.bucket("cfg")
            .get_json::<String>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("b")
    );

    let ro = json!({"type": "file", "path": path, "prefix": "tenant-a/", "read_only": true});
    let ro = Store::open(&ro.to_string()).await.unwrap();
    assert_eq!(
        ro.bucket("cfg")
            .get_json::<String>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
    assert_eq!(
        ro.bucket("cfg").set_json("k", &"x").await,
        Err(Error::ReadOnly)
    );
    assert_eq!(ro.bucket("cfg").delete("k").await, Err(Error::ReadOnly));
    assert_eq!(
        a.bucket("cfg")
            .get_json::<String>("k")
            .await
            .unwrap()
            .as_deref(),
        Some("a")
    );
}

#[tokio::test]
async fn configuration_errors_surface_at_open() {
    for (config, needle) in [
        ("not json", "JSON"),
        (r#"{"type":"nope"}"#, "unknown backend type"),
        (r#"{"type":"file"}"#, "path"),
        (r#"{"type":"memory","read_only":"yes"}"#, "read_only"),
        (
            r#"{"type":"caching","main":{"type":"nope"}}"#,
            "`$.main`: unknown backend type `nope`",
        ),
        (
            r#"{"type":"caching","main":{"type":"memory"},"policy":{"max_bytes":"1k"}}"#,
            "`$.policy.max_bytes` must be a whole number",
        ),
        (
            r#"{"type":"migrating","from":{"type":"memory"}}"#,
            "`$` has no `to`",
        ),
        (
            r#"{"type":"migrating","from":{"type":"caching","main":{"type":"memory"}},"to":{"type":"memory"}}"#,
            "`$.from` is a caching layer inside a migrating layer, which is refused",
        ),
    ] {
        match Store::open(config).await {
            Err(Error::InvalidConfig(why)) => assert!(why.contains(needle), "{config}: {why}"),
            other => panic!("{config}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_trap_costs_one_call_not_the_store() {
    // Memory small enough that a big value makes the guest run out and trap.
    let options = StoreOptions {
        memory_limit: 4 * 1024 * 1024,
        max_instances: 1,
        ..Default::default()
    };
    let store = Store::open_with(r#"{"type":"memory"}"#, options)
        .await
        .unwrap();
    let b = store.bucket("t");
    b.set_json("before", &1).await.unwrap();
    // Under half its memory (the host refuses more before it reaches an
    // instance), more than it can hold with its working copies.
    let big = vec![1u8; 2 * 1024 * 1024 - 64];
    let err = b.set_bytes("big", &big).await.unwrap_err();
    assert!(matches!(err, Error::Trap(_)), "{err:?}");
    // The instance was replaced; the store and its data are intact.
    assert_eq!(b.get_json::<i32>("before").await.unwrap(), Some(1));
    assert_eq!(b.get("big").await.unwrap(), None);
    b.set_json("after", &2).await.unwrap();
    assert_eq!(b.get_json::<i32>("after").await.unwrap(), Some(2));
}

/// A backend whose every call fails, as a disk or a network can.
#[derive(Debug)]
struct Broken;

#[async_trait::async_trait]
impl kvstash::Backend for Broken {
    fn summary(&self) -> String {
        "broken".into()
    }
    async fn get(
        &self,
        _: &[u8],
    ) -> Result<Option<kvstash::backend::Entry>, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
    async fn get_many(
        &self,
        _: &[Vec<u8>],
    ) -> Result<Vec<Option<kvstash::backend::Entry>>, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
    async fn scan(
        &self,
        _: &kvstash::backend::Scan,
    ) -> Result<Vec<kvstash::backend::Entry>, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
    async fn commit(
        &self,
        _: Vec<kvstash::backend::Check>,
        _: Vec<kvstash::backend::Write>,
    ) -> Result<u64, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
    async fn current_version(&self) -> Result<u64, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
    async fn changes(
        &self,
        _: u64,
        _: u32,
    ) -> Result<Vec<kvstash::backend::Change>, kvstash::BackendError> {
        Err(kvstash::BackendError::Unavailable(
            "I/O error: the disk is gone".into(),
        ))
    }
}

#[tokio::test]
async fn backend_failures_are_typed_errors_and_the_store_lives_on() {
    let mut registry = kvstash::Registry::default();
    registry.register("broken", |_config: serde_json::Value| {
        Ok(std::sync::Arc::new(Broken) as std::sync::Arc<dyn kvstash::Backend>)
    });
    let options = StoreOptions {
        registry,
        ..Default::default()
    };
    let store = Store::open_with(r#"{"type":"broken"}"#, options)
        .await
        .unwrap();
    let b = store.bucket("b");
    let storage_error = |r: Result<(), Error>| match r {
        Err(Error::Storage(why)) => assert!(why.contains("the disk is gone"), "{why}"),
        other => panic!("{other:?}"),
    };
    storage_error(b.get("k").await.map(drop));
    storage_error(b.set_json("k", &1).await.map(drop));
    storage_error(b.list(&ListOptions::default()).await.map(drop));
    storage_error(
        store
            .transaction()
            .delete("b", "k")
            .commit()
            .await
            .map(drop),
    );
    storage_error(b.watch(kvstash::WatchOptions::default()).await.map(drop));
    assert_eq!(store.describe(), vec!["broken".to_string()]);
}

#[tokio::test]
async fn a_cancelled_call_costs_its_instance_not_the_store() {
    // One instance only: if a cancelled call left it half-way and it were
    // reused, the next call would fail or hang.
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let options = StoreOptions {
        max_instances: 1,
        ..Default::default()
    };
    let store = Store::open_with(&config, options).await.unwrap();
    let b = store.bucket("b");
    let mut cancelled = 0;
    for i in 0..20 {
        // A durable write waits for an fsync: polled once and then dropped,
        // it is cancelled mid-way. (A timer was flaky: a fast disk's fsync
        // can finish before the timer's 1 ms tick.)
        let key = format!("k{i}");
        if futures::FutureExt::now_or_never(b.set_json(&key, &i)).is_none() {
            cancelled += 1;
        }
        b.set_json("after", &i).await.unwrap();
        assert_eq!(b.get_json::<i32>("after").await.unwrap(), Some(i));
    }
    assert!(cancelled > 0, "no call was cancelled mid-way");
}

#[test]
fn blocking_api() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let store = kvstash::BlockingStore::open(&config).unwrap();
    let b = store.bucket("aliases");
    b.set_json("environment_sensor_1", &[1, 5, 42]).unwrap();
    assert_eq!(
        b.get_json::<Vec<u32>>("environment_sensor_1").unwrap(),
        Some(vec![1, 5, 42])
    );
    assert!(b.exists("environment_sensor_1").unwrap());
    assert_eq!(b.list(&ListOptions::default()).unwrap().items.len(), 1);
    assert!(b.delete("environment_sensor_1").unwrap());
    assert_eq!(store.buckets().unwrap(), Vec::<String>::new());
    // The features beyond get and set, without an async runtime.
    let mut events = b.watch(kvstash::WatchOptions::default()).unwrap();
    b.set_history(10).unwrap();
    b.set_json("k", &1).unwrap();
    b.undo().unwrap();
    assert_eq!(b.get("k").unwrap(), None);
    let first = events.next().unwrap().unwrap();
    assert_eq!(
        (first.key.as_str(), first.kind),
        ("k", kvstash::EventKind::Set)
    );
    assert_eq!(
        events.next().unwrap().unwrap().kind,
        kvstash::EventKind::Delete
    );
    assert_eq!(
        b.set_schema(Some(&json!({"type": "integer"})), false)
            .unwrap(),
        1
    );
    assert!(matches!(
        b.set_json("k", &"text"),
        Err(Error::SchemaViolation(_))
    ));
    let lease = store
        .acquire("l", std::time::Duration::from_secs(5), None)
        .unwrap();
    assert!(matches!(
        store.acquire("l", std::time::Duration::from_secs(5), None),
        Err(Error::Locked { .. })
    ));
    assert_eq!(
        store.lock_status("l").unwrap().map(|h| h.token),
        Some(lease.token)
    );
    assert!(store.release(&lease).unwrap());
}
