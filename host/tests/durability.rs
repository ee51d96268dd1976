//! Crash safety of the file backend through the whole stack: a child
//! process writes keys and is killed with SIGKILL mid-stream; on reopen,
//! every key whose `set` had returned is there and the store opens cleanly.
//! Some rounds checkpoint every 1-2 KiB of log, so the kills land at every
//! point of the log / checkpoint / log reset cycle.
//!
//! The child is this test binary itself, re-run with `CHILD_ENV` set so that
//! only `durability_child` does anything.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use kvstash::BlockingStore;
use serde_json::json;

const CHILD_ENV: &str = "KVSTASH_DURABILITY_CHILD";

fn config(path: &std::path::Path, checkpoint_kb: Option<u32>) -> String {
    json!({"type": "file", "path": path, "checkpoint_kb": checkpoint_kb}).to_string()
}

fn value(round: u32, i: u64) -> serde_json::Value {
    json!({"round": round, "i": i, "name": "backyard shed sensor", "alias": [1, 5, 42]})
}

/// The writer: does nothing unless started by the test below.
#[test]
fn durability_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let round: u32 = parts.next().unwrap().parse().unwrap();
    let checkpoint_kb = parts.next().unwrap().parse().ok();
    let path = parts.next().unwrap();
    let store = BlockingStore::open(&config(std::path::Path::new(path), checkpoint_kb)).unwrap();
    let bucket = store.bucket("crash");
    for i in 0.. {
        bucket
            .set_json(&format!("r{round}-{i:08}"), &value(round, i))
            .unwrap();
        // Printed only after `set` returned: this line is the acknowledgement.
        println!("ack {i}");
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let mut expected = 0usize;
    let rounds = [
        (0u32, 40u64, None),
        (1, 7, None),
        (2, 150, None),
        (3, 61, Some(1)),
        (4, 200, Some(1)),
        (5, 333, Some(2)),
        (6, 5, Some(1)),
    ];
    for (round, kill_after, checkpoint_kb) in rounds {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "durability_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{round}:{}:{}",
                    checkpoint_kb.map_or(String::new(), |kb: u32| kb.to_string()),
                    path.display()
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut acked: Vec<u64> = Vec::new();
        for line in lines.by_ref() {
            if let Some(i) = line.unwrap().split_once("ack ").map(|(_, i)| i.to_string()) {
                acked.push(i.parse().unwrap());
                if acked.len() as u64 == kill_after {
                    child.kill().unwrap(); // SIGKILL, mid-stream
                    break;
                }
            }
        }
        // Acknowledgements already in the pipe count too.
        for line in lines {
            if let Some(i) = line.unwrap().split_once("ack ").map(|(_, i)| i.to_string()) {
                acked.push(i.parse().unwrap());
            }
        }
        child.wait().unwrap();
        assert!(
            acked.len() as u64 >= kill_after,
            "round {round}: child died early"
        );

        let store =
            BlockingStore::open(&config(&path, checkpoint_kb)).expect("the store reopens cleanly");
        let bucket = store.bucket("crash");
        for &i in &acked {
            let got = bucket
                .get_json::<serde_json::Value>(&format!("r{round}-{i:08}"))
                .unwrap();
            assert_eq!(
                got,
                Some(value(round, i)),
                "round {round}: acknowledged key {i} lost"
            );
        }
        // Nothing else is damaged: every earlier round is intact and the
        // store takes writes again.
        expected += acked.len();
        let mut count = 0;
        let mut cursor = None;
        loop {
            let page = bucket
                .list(&kvstash::ListOptions {
                    limit: Some(1000),
                    cursor,
                    ..Default::default()
                })
                .unwrap();
            count += page.items.len();
            cursor = page.cursor;
            if cursor.is_none() {
                break;
            }
        }
        // A write in flight at the kill may or may not have landed.
        assert!(
            count == expected || count == expected + 1,
            "round {round}: {count} vs {expected}"
        );
        expected = count;
        // One more key, the same in every round: it counts once.
        bucket.set_json("after-crash", &round).unwrap();
        expected += usize::from(round == 0);
    }
}
