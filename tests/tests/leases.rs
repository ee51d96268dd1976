//! Leases and locks through the component.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kvstash::{Check, Error, Store};
use serde_json::json;

#[macro_use]
mod common;

async fn file_store(dir: &tempfile::TempDir) -> Store {
    let config = json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    Store::open(&config).await.unwrap()
}

#[tokio::test]
async fn a_lock_has_one_holder_until_released_or_expired() {
    let dir = tempfile::tempdir().unwrap();
    let a = file_store(&dir).await;
    let b = file_store(&dir).await; // a second handle on the same file
    let lease = a
        .acquire("deploy", Duration::from_secs(30), Some("ci-1"))
        .await
        .unwrap();
    match b
        .acquire("deploy", Duration::from_secs(30), Some("ci-2"))
        .await
    {
        Err(Error::Locked { token, owner, .. }) => {
            assert_eq!((token, owner.as_deref()), (lease.token, Some("ci-1")));
        }
        other => panic!("{other:?}"),
    }
    let status = b.lock_status("deploy").await.unwrap().unwrap();
    assert_eq!(status.token, lease.token);
    assert!(a.release(&lease).await.unwrap());
    assert!(!a.release(&lease).await.unwrap());
    let next = b
        .acquire("deploy", Duration::from_millis(100), None)
        .await
        .unwrap();
    assert!(next.token > lease.token, "fencing tokens increase");
    assert!(matches!(
        a.renew(&lease, Duration::from_secs(1)).await,
        Err(Error::LeaseLost(_))
    ));
    let renewed = b.renew(&next, Duration::from_secs(5)).await.unwrap();
    assert_eq!(renewed.token, next.token);
    assert!(renewed.expires_at > next.expires_at);
}

// On every backend: a waiter wakes at the release (the backend's commit
// announcement), and gives up at its deadline.
on_every_backend!(a_waiter_wakes_at_the_release, |store| {
    let held = store
        .acquire("l", Duration::from_secs(60), Some("first"))
        .await
        .unwrap();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let lease = store
                .lock(
                    "l",
                    Duration::from_secs(60),
                    Some("second"),
                    Duration::from_secs(30),
                )
                .await;
            (lease, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(store.release(&held).await.unwrap());
    let (lease, waited) = waiter.await.unwrap();
    assert!(lease.unwrap().token > held.token);
    assert!(
        waited < Duration::from_secs(10),
        "woke on the release, not at the deadline: {waited:?}"
    );
    // And gives up at the deadline with the holder's details.
    let timed_out = store
        .lock(
            "l",
            Duration::from_secs(60),
            None,
            Duration::from_millis(100),
        )
        .await;
    assert!(
        matches!(timed_out, Err(Error::Locked { .. })),
        "{timed_out:?}"
    );
});

// On every backend: an expired lease frees its lock, and a write fenced by
// its token is refused once another holder has the lock.
on_every_backend!(an_expired_lease_is_fenced_out, |store| {
    // Long enough for an acquire and a commit on a slow remote store.
    let stale = store
        .acquire("leader", Duration::from_secs(1), Some("node-1"))
        .await
        .unwrap();
    let write = |token: u64, who: &'static str| {
        store
            .transaction()
            .check(Check::lease("leader", token))
            .set_json("cfg", "primary", &who)
            .unwrap()
            .commit()
    };
    write(stale.token, "node-1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let fresh = store
        .acquire("leader", Duration::from_secs(30), Some("node-2"))
        .await
        .unwrap();
    write(fresh.token, "node-2").await.unwrap();
    assert_eq!(
        write(stale.token, "node-1").await,
        Err(Error::CheckFailed {
            index: 0,
            current: Some(fresh.token)
        })
    );
    assert_eq!(
        store
            .bucket("cfg")
            .get_json::<String>("primary")
            .await
            .unwrap()
            .as_deref(),
        Some("node-2")
    );
});
