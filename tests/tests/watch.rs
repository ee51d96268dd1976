//! Watch through the component: live events across handles, resuming from a
//! version after a restart, compaction, expirations.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures::StreamExt;
use kvstash::{Error, Event, EventKind, Store, StoreOptions, WatchOptions, WriteOptions};
use serde_json::json;

async fn next(stream: &mut (impl futures::Stream<Item = Result<Event, Error>> + Unpin)) -> Event {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("an event within 10 s")
        .expect("the stream goes on")
        .expect("no error")
}

#[macro_use]
mod common;

// On every backend: a bucket's events under a prefix, live (woken by the
// backend's commit announcements, not by polling) and replayed from a
// version, each commit once and in version order.
on_every_backend!(a_watch_is_live_and_replays, |store| {
    let b = store.bucket("devices");
    let start = b.set_json("sensor/0", &0).await.unwrap();
    let watching = |since| WatchOptions {
        prefix: Some("sensor/".into()),
        since,
        poll_interval: Duration::from_secs(3600),
    };
    let mut live = Box::pin(b.watch(watching(None)).await.unwrap());
    let v1 = b
        .set_json("sensor/1", &json!({"alias": [1, 5, 42]}))
        .await
        .unwrap();
    b.set_json("other", &1).await.unwrap();
    store
        .bucket("elsewhere")
        .set_json("sensor/1", &1)
        .await
        .unwrap();
    let v2 = b.delete_if_version("sensor/1", v1).await.unwrap();
    let seen = [next(&mut live).await, next(&mut live).await];
    let mut replay = Box::pin(b.watch(watching(Some(start))).await.unwrap());
    let replayed = [next(&mut replay).await, next(&mut replay).await];
    for events in [&seen, &replayed] {
        assert_eq!(
            events
                .iter()
                .map(|e| (e.version, e.key.as_str(), e.kind))
                .collect::<Vec<_>>(),
            [
                (v1, "sensor/1", EventKind::Set),
                (v2, "sensor/1", EventKind::Delete)
            ]
        );
    }
    assert_eq!(
        seen[0]
            .value
            .clone()
            .unwrap()
            .parse::<serde_json::Value>()
            .unwrap(),
        json!({"alias": [1, 5, 42]})
    );
});

#[tokio::test]
async fn a_watcher_sees_writes_from_another_handle_at_once() {
    // The second writer is a second store handle in this process: its own
    // instances, sharing only the backend. (Other processes reach a held
    // file store through its holder: host/tests/cli.rs
    // `a_client_is_told_of_commits`.)
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let watcher = Store::open(&config).await.unwrap();
    let writer = Store::open(&config).await.unwrap();
    let options = WatchOptions {
        prefix: Some("sensor/".into()),
        // Long, so only the commit notification can explain a quick wake.
        poll_interval: Duration::from_secs(3600),
        ..Default::default()
    };
    let mut events = Box::pin(watcher.bucket("devices").watch(options).await.unwrap());
    let b = writer.bucket("devices");
    let v1 = b
        .set_json("sensor/1", &json!({"alias": [1, 5, 42]}))
        .await
        .unwrap();
    b.set_json("other", &1).await.unwrap();
    writer
        .bucket("elsewhere")
        .set_json("sensor/1", &1)
        .await
        .unwrap();
    let v2 = b.delete_if_version("sensor/1", v1).await.unwrap();
    let first = next(&mut events).await;
    assert_eq!(
        (first.version, first.key.as_str(), first.kind),
        (v1, "sensor/1", EventKind::Set)
    );
    assert_eq!(
        first.value.unwrap().parse::<serde_json::Value>().unwrap(),
        json!({"alias": [1, 5, 42]})
    );
    let second = next(&mut events).await;
    assert_eq!((second.version, second.kind), (v2, EventKind::Delete));
}

#[tokio::test]
async fn a_watcher_resumes_after_a_restart_from_its_last_version() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let last_seen = {
        let store = Store::open(&config).await.unwrap();
        let b = store.bucket("cfg");
        let mut events = Box::pin(
            b.watch(WatchOptions {
                since: Some(0),
                ..Default::default()
            })
            .await
            .unwrap(),
        );
        b.set_json("a", &1).await.unwrap();
        next(&mut events).await.version
    };
    // "Restart": everything dropped; writes happen while nobody watches.
    let store = Store::open(&config).await.unwrap();
    let b = store.bucket("cfg");
    b.set_json("b", &2).await.unwrap();
    b.delete("a").await.unwrap();
    let mut events = Box::pin(
        b.watch(WatchOptions {
            since: Some(last_seen),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let missed = [next(&mut events).await, next(&mut events).await];
    assert_eq!(
        missed
            .iter()
            .map(|e| (e.key.as_str(), e.kind))
            .collect::<Vec<_>>(),
        [("b", EventKind::Set), ("a", EventKind::Delete)]
    );
    assert!(missed[0].version > last_seen && missed[1].version > missed[0].version);
}

#[tokio::test]
async fn from_now_means_from_when_watch_returned() {
    let store = Store::open(r#"{"type":"memory"}"#).await.unwrap();
    let b = store.bucket("b");
    b.set_json("before", &1).await.unwrap();
    let mut events = Box::pin(b.watch(WatchOptions::default()).await.unwrap());
    b.set_json("after", &2).await.unwrap();
    assert_eq!(next(&mut events).await.key, "after");
}

#[tokio::test]
async fn a_compacted_version_is_reported_not_skipped() {
    let store = Store::open(r#"{"type":"memory","retention":3}"#)
        .await
        .unwrap();
    let b = store.bucket("b");
    for i in 0..10 {
        b.set_json(&format!("k{i}"), &i).await.unwrap();
    }
    let mut events = Box::pin(
        b.watch(WatchOptions {
            since: Some(1),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    let err = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(err, Err(Error::Compacted { oldest: 8 }));
    assert!(
        events.next().await.is_none(),
        "the stream ends after the error"
    );
    let mut resumed = Box::pin(
        b.watch(WatchOptions {
            since: Some(7),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    assert_eq!(next(&mut resumed).await.version, 8);
}

#[tokio::test]
async fn expirations_arrive_as_expire_events() {
    let options = StoreOptions {
        sweep_interval: Some(Duration::from_millis(20)),
        ..Default::default()
    };
    let store = Store::open_with(r#"{"type":"memory"}"#, options)
        .await
        .unwrap();
    let b = store.bucket("sessions");
    let mut events = Box::pin(
        b.watch(WatchOptions {
            since: Some(0),
            ..Default::default()
        })
        .await
        .unwrap(),
    );
    b.set_json_with("s", &"alice", &WriteOptions::ttl(Duration::from_millis(30)))
        .await
        .unwrap();
    let set = next(&mut events).await;
    assert_eq!(set.kind, EventKind::Set);
    assert!(set.expires_at.is_some());
    let expired = next(&mut events).await;
    assert_eq!(
        (expired.key.as_str(), expired.kind),
        ("s", EventKind::Expire)
    );
}
