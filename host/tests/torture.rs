//! The crash loop (issue 16, `just torture`): a child process runs a mixed
//! load on the file backend (sets, 4-key transactions with an increment,
//! sets with a TTL, deletes, increments) and is killed with SIGKILL at a
//! random moment, again and again on the same store. After each kill the
//! store opens cleanly and holds exactly the acknowledged writes, each
//! key at its latest acknowledged value; the one write in flight at the
//! kill is there whole or not at all (a transaction never in part); and
//! `kvstash check` finds the store sound. Every third round checkpoints
//! every 1 KiB of log, so kills land inside checkpoints and log resets too.
//!
//! `KVSTASH_TORTURE_ROUNDS` sets the number of kills (default 20; `just
//! torture` runs 1,000). The child is this test binary, re-run with
//! `CHILD_ENV` set so that only `torture_child` does anything.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use kvstash::{BlockingStore, Value, WriteOptions};
use serde_json::json;

const CHILD_ENV: &str = "KVSTASH_TORTURE_CHILD";
const KEYS: u64 = 40;
const TTL_KEYS: u64 = 8;
const COUNTER: &str = "counter";

fn config(path: &Path, checkpoint_kb: Option<u32>) -> String {
    json!({"type": "file", "path": path, "checkpoint_kb": checkpoint_kb}).to_string()
}

/// xorshift64*: the same load for the same seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// What one write does, as the child announces it before making it:
/// values set, keys deleted, and how much the counter grows.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
struct Effect {
    set: BTreeMap<String, serde_json::Value>,
    delete: Vec<String>,
    incr: i64,
}

/// The store as the test expects it: every key's value, and the counter.
type Model = BTreeMap<String, serde_json::Value>;

fn apply(model: &mut Model, effect: &Effect) {
    for (key, value) in &effect.set {
        model.insert(key.clone(), value.clone());
    }
    for key in &effect.delete {
        model.remove(key);
    }
    if effect.incr != 0 {
        let now = model
            .get(COUNTER)
            .and_then(serde_json::Value::as_i64)
            .unwrap_or(0);
        model.insert(COUNTER.into(), json!(now + effect.incr));
    }
}

/// The writer: does nothing unless started by the test below. Prints
/// `begin EFFECT` before each write and `ack` once it returned.
#[test]
fn torture_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let mut parts = spec.splitn(3, ':');
    let seed: u64 = parts.next().unwrap().parse().unwrap();
    let checkpoint_kb = parts.next().unwrap().parse().ok();
    let path = parts.next().unwrap();
    let store = BlockingStore::open(&config(Path::new(path), checkpoint_kb)).unwrap();
    let bucket = store.bucket("t");
    let mut rng = Rng(seed | 1);
    for i in 0u64.. {
        let key = |rng: &mut Rng| format!("k{:02}", rng.below(KEYS));
        let value = json!({"seed": seed, "i": i, "pad": "x".repeat(rng.below(200) as usize)});
        let mut effect = Effect::default();
        match rng.below(100) {
            0..40 => {
                effect.set.insert(key(&mut rng), value);
            }
            40..55 => effect.delete.push(key(&mut rng)),
            55..75 => {
                while effect.set.len() < 3 {
                    effect.set.insert(key(&mut rng), value.clone());
                }
                effect.incr = 1;
            }
            75..85 => {
                effect
                    .set
                    .insert(format!("t{}", rng.below(TTL_KEYS)), value);
            }
            _ => effect.incr = 1,
        }
        println!("begin {}", serde_json::to_string(&effect).unwrap());
        let ttl_key = effect.set.keys().any(|k| k.starts_with('t'));
        if ttl_key {
            let (key, value) = effect.set.iter().next().unwrap();
            let options = WriteOptions {
                ttl: Some(Duration::from_secs(3600)),
                ..WriteOptions::default()
            };
            bucket
                .set_with(key, Value::Json(value.to_string()), &options)
                .unwrap();
        } else if effect.set.len() > 1 {
            let mut txn = store.as_async().transaction();
            for (key, value) in &effect.set {
                txn = txn.set("t", key, Value::Json(value.to_string()));
            }
            txn = txn.increment("t", COUNTER, effect.incr);
            store.commit(txn).unwrap();
        } else if let Some((key, value)) = effect.set.iter().next() {
            bucket.set_json(key, value).unwrap();
        } else if let Some(key) = effect.delete.first() {
            bucket.delete(key).unwrap();
        } else {
            bucket.increment(COUNTER, effect.incr).unwrap();
        }
        println!("ack");
    }
}

/// Everything the test bucket holds.
fn read_all(store: &BlockingStore) -> Model {
    let bucket = store.bucket("t");
    let mut seen = Model::new();
    let keys = (0..KEYS)
        .map(|i| format!("k{i:02}"))
        .chain((0..TTL_KEYS).map(|i| format!("t{i}")))
        .chain([COUNTER.to_string()]);
    for key in keys {
        if let Some(value) = bucket.get_json::<serde_json::Value>(&key).unwrap() {
            seen.insert(key, value);
        }
    }
    // Nothing else is there: a listing finds the same keys.
    let listed = bucket.list(&kvstash::ListOptions::default()).unwrap();
    let listed: Vec<&str> = listed.items.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(listed, seen.keys().map(String::as_str).collect::<Vec<_>>());
    seen
}

#[test]
fn acknowledged_writes_survive_a_crash_loop() {
    let rounds: u64 = std::env::var("KVSTASH_TORTURE_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torture.redb");
    let mut model = Model::new();
    let mut rng = Rng(0x7047_7572_6521);
    let (mut in_flight, mut checkpoints, mut writes) = (0, 0, 0);
    for round in 0..rounds {
        let checkpoint_kb = (round % 3 == 2).then_some(1u32);
        checkpoints += u64::from(checkpoint_kb.is_some());
        let kill_after = 1 + rng.below(300);
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "torture_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                CHILD_ENV,
                format!(
                    "{}:{}:{}",
                    rng.below(u64::MAX),
                    checkpoint_kb.map_or(String::new(), |kb| kb.to_string()),
                    path.display()
                ),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut pending: Option<Effect> = None;
        let mut acked = 0;
        let mut killed = false;
        // Acknowledgements still in the pipe after the kill count too.
        for line in lines.by_ref() {
            let line = line.unwrap();
            // The first line follows libtest's `test torture_child ... `.
            if let Some((_, effect)) = line.split_once("begin ") {
                pending = Some(serde_json::from_str(effect).unwrap());
            } else if line == "ack" {
                apply(&mut model, &pending.take().expect("an ack follows a begin"));
                acked += 1;
                if acked == kill_after && !killed {
                    child.kill().unwrap(); // SIGKILL, mid-stream
                    killed = true;
                }
            }
        }
        child.wait().unwrap();
        assert!(
            killed,
            "round {round}: the child died before {kill_after} writes"
        );
        writes += acked;

        let store = BlockingStore::open(&config(&path, checkpoint_kb))
            .unwrap_or_else(|e| panic!("round {round}: the store does not reopen: {e}"));
        let seen = read_all(&store);
        if seen != model {
            let effect = pending
                .take()
                .unwrap_or_else(|| panic!("round {round}: an acknowledged write is missing or changed:\nexpected {model:?}\nseen {seen:?}"));
            let mut with = model.clone();
            apply(&mut with, &effect);
            assert_eq!(
                seen, with,
                "round {round}: neither without nor with the write in flight ({effect:?})"
            );
            model = with;
            in_flight += 1;
        }
        drop(store);
        let report =
            kvstash::backend::check_file(&kvstash::backend::FileConfig::new(&path)).unwrap();
        assert!(
            report.is_sound(),
            "round {round}: check: {:?}",
            report.problems
        );
    }
    eprintln!(
        "{rounds} kills ({checkpoints} with 1 KiB checkpoints), {writes} acknowledged writes: every one kept; the write in flight landed in {in_flight} rounds; check sound after each"
    );
}
