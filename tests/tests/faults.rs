//! Faults on the remote backends: a server that goes away and comes back,
//! and an etcd cluster losing a member and then its leader under a write
//! load. Calls fail within the configured deadline with an error naming the
//! server, the store recovers by itself, and every acknowledged write is
//! there afterwards.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use kvstash::{Error, Store};
use kvstash_test_servers::{Etcd, Postgres, Redis};
use serde_json::json;

/// The deadline the stores below are configured with.
const TIMEOUT_MS: u64 = 1_000;

/// While the server is down: reads and writes fail with a storage error
/// naming the server, in about the deadline (not hanging), and nothing is
/// half-written. `kill` stops the server, `restart` brings it back.
async fn down_then_back(
    config: serde_json::Value,
    endpoint: &str,
    kill: impl FnOnce(),
    restart: impl FnOnce(),
) {
    let store = Store::open(&config.to_string()).await.unwrap();
    let b = store.bucket("b");
    b.set_json("before", &1).await.unwrap();
    kill();
    for attempt in 0..2 {
        let started = Instant::now();
        let error = b.get("before").await.unwrap_err();
        let took = started.elapsed();
        let Error::Storage(why) = &error else {
            panic!("expected a storage error, got {error:?}");
        };
        assert!(why.contains(endpoint), "names the server: {why}");
        assert!(why.contains("unavailable"), "{why}");
        assert!(
            !error.to_string().contains("storage failed: storage failed"),
            "said once: {error}"
        );
        // Generous: the point is that it does not hang.
        assert!(
            took < Duration::from_secs(10),
            "attempt {attempt} took {took:?}"
        );
        let started = Instant::now();
        let error = store
            .transaction()
            .set_json("b", "during", &attempt)
            .unwrap()
            .set_json("b", "during-too", &attempt)
            .unwrap()
            .commit()
            .await
            .unwrap_err();
        assert!(matches!(error, Error::Storage(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    restart();
    // Recovers by itself: the same store, no reopening.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match b.get_json::<i64>("before").await {
            Ok(value) => {
                assert_eq!(value, Some(1));
                break;
            }
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("did not recover within 30 s: {e}"),
        }
    }
    // The failed transactions left nothing; new writes work.
    let during = b.get("during").await.unwrap();
    let during_too = b.get("during-too").await.unwrap();
    assert_eq!(
        during.is_some(),
        during_too.is_some(),
        "a transaction is all or nothing"
    );
    b.set_json("after", &2).await.unwrap();
    assert_eq!(b.get_json::<i64>("after").await.unwrap(), Some(2));
}

#[tokio::test]
async fn redis_down_then_back() {
    let Some(mut server) = Redis::start() else {
        return;
    };
    let config = json!({"type": "redis", "url": server.url(), "timeout_ms": TIMEOUT_MS});
    let endpoint = format!("127.0.0.1:{}", server.port());
    let server = std::cell::RefCell::new(&mut server);
    down_then_back(
        config,
        &endpoint,
        || server.borrow_mut().kill(),
        || server.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test]
async fn postgres_down_then_back() {
    let Some(mut server) = Postgres::start() else {
        return;
    };
    let config = json!({"type": "postgres", "url": server.url(), "timeout_ms": TIMEOUT_MS});
    let endpoint = format!("127.0.0.1:{}", server.port());
    let server = std::cell::RefCell::new(&mut server);
    down_then_back(
        config,
        &endpoint,
        || server.borrow_mut().kill(),
        || server.borrow_mut().restart(),
    )
    .await;
}

#[tokio::test]
async fn etcd_down_then_back() {
    let Some(mut server) = Etcd::start() else {
        return;
    };
    let endpoint = server.endpoints()[0].clone();
    let config = json!({"type": "etcd", "endpoints": [&endpoint], "timeout_ms": TIMEOUT_MS});
    let server = std::cell::RefCell::new(&mut server);
    down_then_back(
        config,
        &endpoint,
        || server.borrow_mut().kill(0),
        || server.borrow_mut().restart(0),
    )
    .await;
}

/// A 3-member etcd cluster loses a member, then its leader, while a writer
/// keeps writing: writes resume, and every acknowledged one is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_cluster_survives_losing_a_member_and_the_leader() {
    let Some(mut cluster) = Etcd::cluster(3, &[]) else {
        return;
    };
    let config = json!({"type": "etcd", "endpoints": cluster.endpoints(), "timeout_ms": 2_000});
    let store = Store::open(&config.to_string()).await.unwrap();
    let acks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let b = store.bucket("load");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stopping, acks) = (stop.clone(), acks.clone());
        let task = tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            let mut failed = 0u32;
            let mut i = 0u64;
            while !stopping.load(std::sync::atomic::Ordering::Relaxed) {
                match b.set_json(&format!("k{i:06}"), &i).await {
                    Ok(_) => {
                        acknowledged.push(i);
                        acks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    Err(e) => {
                        failed += 1;
                        if failed <= 5 {
                            eprintln!("write k{i:06} failed: {e}");
                        }
                    }
                }
                i += 1;
            }
            (acknowledged, failed)
        });
        (stop, task)
    };
    let acknowledged_so_far = |_: &Store| {
        let acks = acks.clone();
        async move { acks.load(std::sync::atomic::Ordering::Relaxed) }
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    // A member that is not the leader, then the leader.
    let leader = cluster.leader().expect("the cluster has a leader");
    let follower = (leader + 1) % 3;
    cluster.kill(follower);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = acknowledged_so_far(&store).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        acknowledged_so_far(&store).await > before,
        "two of three members keep serving"
    );
    cluster.restart(follower);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = cluster.leader().expect("the cluster has a leader");
    cluster.kill(leader);
    // A new leader is elected; writes resume.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = acknowledged_so_far(&store).await;
    while acknowledged_so_far(&store).await <= before + 10 {
        assert!(
            Instant::now() < deadline,
            "writes did not resume after the leader died"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.restart(leader);
    tokio::time::sleep(Duration::from_secs(1)).await;
    writer.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let (acknowledged, failed) = writer.1.await.unwrap();
    eprintln!(
        "{} writes acknowledged, {failed} failed during the faults",
        acknowledged.len()
    );
    let b = store.bucket("load");
    for i in acknowledged {
        assert_eq!(
            b.get_json::<u64>(&format!("k{i:06}")).await.unwrap(),
            Some(i),
            "acknowledged write k{i:06} is there"
        );
    }
}
