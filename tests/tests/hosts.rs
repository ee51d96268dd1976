//! Several hosts, one store: OS processes (the `hammer` binary), each with
//! its own kvstash host and component, sharing one remote backend started
//! for the test. Atomic increments add up exactly, multi-key transactions
//! keep a total, contended writes never fail with `contention`, and a
//! watch in another process sees every commit in version order.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Child, Command, Stdio};

use kvstash::Store;
use kvstash_test_servers::{Etcd, Postgres, Redis};
use serde_json::json;

const HAMMER: &str = env!("CARGO_BIN_EXE_hammer");
const PROCESSES: u64 = 4;
const INCREMENTS: u64 = 1_000;

fn hammer(config: &str, args: &[&str]) -> Child {
    Command::new(HAMMER)
        .arg(config)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hammer starts")
}

/// The process's output; fails the test if it failed or met contention.
fn finish(child: Child) -> String {
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "hammer failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("\ncontention 0\n"),
        "contended writes must not fail: {stdout}"
    );
    stdout
}

async fn several_hosts(config: serde_json::Value) {
    let config = config.to_string();
    let store = Store::open(&config).await.unwrap();
    let total = PROCESSES * INCREMENTS;
    // A watcher first, in its own process, then the writers.
    let watcher = hammer(&config, &["watch", "hits", "n", &total.to_string()]);
    let count = INCREMENTS.to_string();
    let writers: Vec<Child> = (0..PROCESSES)
        .map(|_| hammer(&config, &["increment", "hits", "n", &count]))
        .collect();
    for writer in writers {
        assert!(finish(writer).contains(&format!("ok {INCREMENTS}\n")));
    }
    let n: i64 = store.bucket("hits").get_json("n").await.unwrap().unwrap();
    assert_eq!(
        n,
        i64::try_from(total).unwrap(),
        "every increment counted once"
    );
    // The watcher saw every commit once, in version order: the values
    // 1, 2, …, 4000 at strictly increasing versions.
    let seen = finish(watcher);
    let events: Vec<(u64, i64)> = seen
        .lines()
        .filter_map(|line| {
            let (version, value) = line.split_once(' ')?;
            Some((version.parse().ok()?, value.parse().ok()?))
        })
        .collect();
    assert_eq!(events.len(), usize::try_from(total).unwrap());
    for (i, window) in events.windows(2).enumerate() {
        assert!(window[0].0 < window[1].0, "version order at event {i}");
    }
    let values: Vec<i64> = events.iter().map(|e| e.1).collect();
    let expected: Vec<i64> = (1..=i64::try_from(total).unwrap()).collect();
    assert!(values == expected, "no gap, no duplicate, in order");

    // Bank transfers: concurrent multi-key transactions keep the total.
    let bank = store.bucket("bank");
    let accounts = 8u64;
    let mut txn = store.transaction();
    for a in 0..accounts {
        txn = txn.set_json("bank", &format!("a{a}"), &100).unwrap();
    }
    txn.commit().await.unwrap();
    let transfers: Vec<Child> = (0..PROCESSES)
        .map(|p| {
            let seed = (p + 1).to_string();
            hammer(&config, &["transfer", "bank", "8", "250", &seed])
        })
        .collect();
    for transfer in transfers {
        assert!(finish(transfer).contains("ok 250\n"));
    }
    let mut sum = 0i64;
    for a in 0..accounts {
        sum += bank
            .get_json::<i64>(&format!("a{a}"))
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(sum, 800, "money is neither made nor lost");
}

#[tokio::test]
async fn redis_several_hosts() {
    let Some(server) = Redis::start() else { return };
    several_hosts(json!({"type": "redis", "url": server.url()})).await;
}

#[tokio::test]
async fn postgres_several_hosts() {
    let Some(server) = Postgres::start() else {
        return;
    };
    several_hosts(json!({"type": "postgres", "url": server.url()})).await;
}

#[tokio::test]
async fn etcd_several_hosts() {
    let Some(server) = Etcd::start() else { return };
    several_hosts(json!({"type": "etcd", "endpoints": server.endpoints()})).await;
}
