//! Versions, conditional writes, transactions, TTL, listing and documents
//! through the real component, on every backend.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use kvstash::{Check, Error, ListOptions, Store, StoreOptions, WriteOptions};
use serde_json::json;

#[macro_use]
mod common;

on_every_backend!(versions_increase_across_the_store, |store| {
    let a = store.bucket("a");
    let b = store.bucket("b");
    let mut last = 0;
    for i in 0..20 {
        let bucket = if i % 2 == 0 { &a } else { &b };
        let v = bucket.set_json(&format!("k{i}"), &i).await.unwrap();
        assert!(v > last, "strictly increasing across buckets");
        last = v;
    }
    let v = a
        .set_many(&[("x".into(), "1".into()), ("y".into(), "2".into())])
        .await
        .unwrap();
    assert_eq!(a.get("x").await.unwrap().unwrap().version, v);
    assert_eq!(
        a.get("y").await.unwrap().unwrap().version,
        v,
        "one commit, one version"
    );
});

on_every_backend!(conditional_writes, |store| {
    let b = store.bucket("cfg");
    let v1 = b
        .set_json_with("limit", &10, &WriteOptions::if_absent())
        .await
        .unwrap();
    assert_eq!(
        b.set_json_with("limit", &11, &WriteOptions::if_absent())
            .await,
        Err(Error::Conflict { current: Some(v1) })
    );
    let v2 = b
        .set_json_with("limit", &12, &WriteOptions::if_version(v1))
        .await
        .unwrap();
    assert_eq!(
        b.set_json_with("limit", &13, &WriteOptions::if_version(v1))
            .await,
        Err(Error::Conflict { current: Some(v2) })
    );
    assert_eq!(
        b.delete_if_version("limit", v1).await,
        Err(Error::Conflict { current: Some(v2) })
    );
    assert_eq!(b.get_json::<i32>("limit").await.unwrap(), Some(12));
    b.delete_if_version("limit", v2).await.unwrap();
    assert_eq!(
        b.delete_if_version("limit", v2).await,
        Err(Error::Conflict { current: None })
    );
    let both = WriteOptions {
        if_version: Some(1),
        if_absent: true,
        ..Default::default()
    };
    assert!(matches!(
        b.set_json_with("k", &1, &both).await,
        Err(Error::InvalidArgument(_))
    ));
});

on_every_backend!(transactions, |store| {
    let v0 = store.bucket("cfg").set_json("limit", &10).await.unwrap();
    let v = store
        .transaction()
        .check(Check::version("cfg", "limit", v0))
        .check(Check::absent("locks", "deploy"))
        .set_json("cfg", "limit", &20)
        .unwrap()
        .set_json("audit", "last", &"raised")
        .unwrap()
        .increment("stats", "changes", 1)
        .commit()
        .await
        .unwrap();
    for (bucket, key) in [("cfg", "limit"), ("audit", "last"), ("stats", "changes")] {
        assert_eq!(
            store
                .bucket(bucket)
                .get(key)
                .await
                .unwrap()
                .unwrap()
                .version,
            v
        );
    }
    // Replayed, its first check fails; nothing of it is written.
    let replay = store
        .transaction()
        .check(Check::exists("cfg", "limit"))
        .check(Check::version("cfg", "limit", v0))
        .increment("stats", "changes", 1)
        .commit()
        .await;
    assert_eq!(
        replay,
        Err(Error::CheckFailed {
            index: 1,
            current: Some(v)
        })
    );
    assert_eq!(
        store
            .bucket("stats")
            .get_json::<i64>("changes")
            .await
            .unwrap(),
        Some(1)
    );
    // Value checks compare JSON as JSON.
    store
        .bucket("cfg")
        .set_json_text("mode", r#"{"a":1,"b":2}"#)
        .await
        .unwrap();
    store
        .transaction()
        .check(Check::equals_json("cfg", "mode", &json!({"b": 2, "a": 1})).unwrap())
        .delete("cfg", "mode")
        .commit()
        .await
        .unwrap();
    assert!(!store.bucket("cfg").exists("mode").await.unwrap());
    // A failing mutation fails the transaction.
    let bad = store
        .transaction()
        .set_json("cfg", "new", &1)
        .unwrap()
        .set_path_json("cfg", "missing-doc", "/a", &1)
        .unwrap()
        .commit()
        .await;
    assert!(matches!(bad, Err(Error::NotFound(_))), "{bad:?}");
    assert!(!store.bucket("cfg").exists("new").await.unwrap());
});

on_every_backend!(ttl_expires_and_is_swept, |store| {
    let b = store.bucket("sessions");
    let short = WriteOptions::ttl(Duration::from_millis(150));
    b.set_json_with("s1", &"alice", &short).await.unwrap();
    b.set_json("forever", &1).await.unwrap();
    let entry = b.get("s1").await.unwrap().unwrap();
    let left = entry
        .expires_at
        .unwrap()
        .duration_since(std::time::SystemTime::now())
        .unwrap();
    assert!(
        left <= Duration::from_millis(150) && left > Duration::from_millis(50),
        "{left:?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(b.get("s1").await.unwrap(), None);
    assert!(!b.exists("s1").await.unwrap());
    let keys: Vec<String> = b
        .list(&ListOptions::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|i| i.key)
        .collect();
    assert_eq!(keys, ["forever"]);
    for i in 0..5 {
        b.set_json_with(
            &format!("t{i}"),
            &i,
            &WriteOptions::ttl(Duration::from_millis(50)),
        )
        .await
        .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.sweep(1000).await.unwrap(), 5);
    assert_eq!(store.sweep(1000).await.unwrap(), 0);
    assert!(matches!(
        b.set_json_with("k", &1, &WriteOptions::ttl(Duration::ZERO))
            .await,
        Err(Error::InvalidArgument(_))
    ));
});

on_every_backend!(listing_options, |store| {
    let b = store.bucket("l");
    for k in ["a", "b", "ba", "bb", "c"] {
        b.set_json(k, &k).await.unwrap();
    }
    let keys = |page: kvstash::ListPage| page.items.into_iter().map(|i| i.key).collect::<Vec<_>>();
    let range = ListOptions {
        start: Some("b".into()),
        end: Some("c".into()),
        ..Default::default()
    };
    assert_eq!(keys(b.list(&range).await.unwrap()), ["b", "ba", "bb"]);
    let reverse = ListOptions {
        reverse: true,
        limit: Some(2),
        ..Default::default()
    };
    let first = b.list(&reverse).await.unwrap();
    assert_eq!(
        first
            .items
            .iter()
            .map(|i| i.key.as_str())
            .collect::<Vec<_>>(),
        ["c", "bb"]
    );
    let next = ListOptions {
        cursor: first.cursor,
        ..reverse
    };
    assert_eq!(keys(b.list(&next).await.unwrap()), ["ba", "b"]);
    let keys_only = b
        .list(&ListOptions {
            keys_only: true,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(keys_only.items.iter().all(|i| i.value.is_none()));
});

on_every_backend!(documents, |store| {
    let db = store.bucket("db");
    db.set_json("doc", &json!({"x": 3})).await.unwrap();
    db.set_path_json("doc", "/l", &(0..10).collect::<Vec<i32>>())
        .await
        .unwrap();
    db.set_path_json("doc", "/l/4", &["a", "b", "c"])
        .await
        .unwrap();
    let v = db.append_path_json("doc", "/l/4", &"d").await.unwrap();
    assert_eq!(
        db.get_json::<serde_json::Value>("doc")
            .await
            .unwrap()
            .unwrap(),
        json!({"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c", "d"], 5, 6, 7, 8, 9]})
    );
    assert_eq!(
        db.get_path_json::<String>("doc", "/l/4/3").await.unwrap(),
        Some(("d".to_string(), v))
    );
    db.delete_path("doc", "/x").await.unwrap();
    assert!(matches!(
        db.get_path_json::<i32>("doc", "/x").await,
        Err(Error::PathNotFound(_))
    ));
    assert!(matches!(
        db.set_path_json("doc", "/l/0/deep", &1).await,
        Err(Error::PathTypeMismatch(_))
    ));
    assert!(matches!(
        db.set_path_json("doc", "no-slash", &1).await,
        Err(Error::InvalidPath(_))
    ));
    assert!(matches!(
        db.set_path_json("nope", "/a", &1).await,
        Err(Error::NotFound(_))
    ));
    db.set_bytes("raw", b"\x01").await.unwrap();
    assert_eq!(
        db.append_path_json("raw", "", &1).await,
        Err(Error::NotJson)
    );
    assert_eq!(db.increment("n", 5).await.unwrap(), 5);
    assert_eq!(db.increment("n", -7).await.unwrap(), -2);
    assert!(matches!(
        db.increment("doc", 1).await,
        Err(Error::InvalidValue(_))
    ));
});

#[tokio::test]
async fn the_background_sweeper_reclaims_expired_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let config = json!({"type": "file", "path": path}).to_string();
    let options = StoreOptions {
        sweep_interval: Some(Duration::from_millis(50)),
        ..Default::default()
    };
    let store = Store::open_with(&config, options).await.unwrap();
    let b = store.bucket("b");
    for i in 0..10 {
        b.set_json_with(
            &format!("k{i}"),
            &i,
            &WriteOptions::ttl(Duration::from_millis(20)),
        )
        .await
        .unwrap();
    }
    // Look at the backend underneath: the records are physically gone.
    let backend =
        kvstash::backend::FileBackend::open_shared(&kvstash::backend::FileConfig::new(&path))
            .unwrap();
    let all = kvstash::backend::Scan {
        start: vec![],
        end: None,
        limit: 100,
        reverse: false,
    };
    let mut left = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        left = kvstash::Backend::scan(backend.as_ref(), &all)
            .await
            .unwrap()
            .len();
        if left == 0 {
            break;
        }
    }
    assert_eq!(left, 0, "records and index entries remain after 2 s");
}

#[tokio::test]
async fn two_handles_on_one_file_race_without_losing_updates() {
    // The file backend is single-process (redb locks the file), so this is
    // two store handles in one process: two instance pools, sharing nothing
    // but the backend, as two processes on a remote backend would.
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let a = Store::open(&config).await.unwrap();
    let b = Store::open(&config).await.unwrap();
    let mut tasks = Vec::new();
    for (i, store) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let counters = store.bucket("counters");
            for _ in 0..25 {
                counters.increment("hits", 1).await.unwrap();
                // Optimistic concurrency by hand: read, then write if unchanged.
                loop {
                    let current = counters.get("cas").await.unwrap();
                    let (n, options) = match &current {
                        Some(e) => (
                            e.value.parse::<i64>().unwrap(),
                            WriteOptions::if_version(e.version),
                        ),
                        None => (0, WriteOptions::if_absent()),
                    };
                    match counters.set_json_with("cas", &(n + 1), &options).await {
                        Ok(_) => break,
                        Err(Error::Conflict { .. }) => continue,
                        Err(e) => panic!("task {i}: {e}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        a.bucket("counters").get_json::<i64>("hits").await.unwrap(),
        Some(100)
    );
    assert_eq!(
        b.bucket("counters").get_json::<i64>("cas").await.unwrap(),
        Some(100)
    );
}

#[tokio::test]
async fn read_only_stores_refuse_every_new_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let rw = Store::open(&json!({"type": "file", "path": path}).to_string())
        .await
        .unwrap();
    rw.bucket("b")
        .set_json("doc", &json!({"l": []}))
        .await
        .unwrap();
    let ro = Store::open(&json!({"type": "file", "path": path, "read_only": true}).to_string())
        .await
        .unwrap();
    let b = ro.bucket("b");
    assert_eq!(
        b.set_json_with("k", &1, &WriteOptions::if_absent()).await,
        Err(Error::ReadOnly)
    );
    assert_eq!(b.increment("n", 1).await, Err(Error::ReadOnly));
    assert_eq!(
        b.append_path_json("doc", "/l", &1).await,
        Err(Error::ReadOnly)
    );
    assert_eq!(
        ro.transaction().delete("b", "doc").commit().await,
        Err(Error::ReadOnly)
    );
    assert_eq!(ro.sweep(10).await, Err(Error::ReadOnly));
    assert_eq!(
        b.get_path_json::<Vec<i32>>("doc", "/l")
            .await
            .unwrap()
            .map(|(l, _)| l),
        Some(vec![])
    );
}

on_every_backend!(typed_buckets, |store| {
    let dev = store.bucket("dev");
    let schema = json!({
        "type": "object",
        "required": ["alias"],
        "properties": {"alias": {"type": "array", "items": {"type": "integer"}}, "name": {"type": "string"}}
    });
    dev.set_json("old", &json!({"alias": "not an array"}))
        .await
        .unwrap();
    match dev.set_schema(Some(&schema), false).await {
        Err(Error::SchemaViolation(why)) => {
            assert!(why.contains("`old`") && why.contains("/alias"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dev.schema().await.unwrap(), None);
    dev.delete("old").await.unwrap();
    assert_eq!(dev.set_schema(Some(&schema), false).await.unwrap(), 1);
    assert_eq!(dev.schema().await.unwrap(), Some((schema.clone(), 1)));
    dev.set_json("s1", &json!({"alias": [1, 5, 42], "name": "shed"}))
        .await
        .unwrap();
    match dev.set_json("s2", &json!({"alias": [1], "name": 7})).await {
        Err(Error::SchemaViolation(why)) => assert_eq!(
            why,
            "`s2` in bucket `dev`: `/name`: expected string, got integer"
        ),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        dev.set_bytes("s3", b"raw").await,
        Err(Error::SchemaViolation(_))
    ));
    assert!(matches!(
        dev.append_path_json("s1", "/alias", &"x").await,
        Err(Error::SchemaViolation(_))
    ));
    assert!(matches!(
        dev.set_schema(Some(&json!({"pattern": "x"})), false).await,
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(dev.set_schema(None, false).await.unwrap(), 2);
    dev.set_json("s2", &json!({"alias": [1], "name": 7}))
        .await
        .unwrap();
});

on_every_backend!(undo_and_redo, |store| {
    let db = store.bucket("db");
    db.set_history(50).await.unwrap();
    db.set_json("x", &3).await.unwrap();
    db.set_json("l", &(0..10).collect::<Vec<i32>>())
        .await
        .unwrap();
    db.set_path_json("l", "/4", &["a", "b", "c"]).await.unwrap();
    let mut events = Box::pin(db.watch(kvstash::WatchOptions::default()).await.unwrap());
    let v = db.undo().await.unwrap();
    assert_eq!(
        db.get_json::<Vec<i32>>("l").await.unwrap(),
        Some((0..10).collect())
    );
    // The undo is a new version that watchers see like any write.
    let event = futures::StreamExt::next(&mut events)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((event.version, event.key.as_str()), (v, "l"));
    db.undo().await.unwrap();
    assert_eq!(db.get("l").await.unwrap(), None);
    assert_eq!(db.history().await.unwrap(), (1, 2));
    db.redo().await.unwrap();
    db.redo().await.unwrap();
    assert_eq!(
        db.get_json::<serde_json::Value>("l").await.unwrap(),
        Some(json!([0, 1, 2, 3, ["a", "b", "c"], 5, 6, 7, 8, 9]))
    );
    assert!(matches!(db.redo().await, Err(Error::NotFound(_))));
    db.set_history(0).await.unwrap();
    assert!(matches!(db.undo().await, Err(Error::NotFound(_))));
});
