//! The adapter over an in-memory key/value store that can fail or stop at
//! any call, or let another writer in between any two calls.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use super::*;

type Map = Rc<RefCell<BTreeMap<String, Vec<u8>>>>;

/// A `Kv` over a shared map. Calls are counted; from call `stop_at` on,
/// every call fails (the process stopped there); call `lose_reply_at` takes
/// effect but answers an error (a lost reply); before call `hook_at`,
/// `hook` runs (another writer gets in). With `absent_swap_upserts`, a swap
/// from a key read as absent writes whatever is there now, as Spin's SQLite
/// store does.
struct MemKv {
    map: Map,
    calls: Cell<usize>,
    stop_at: Option<usize>,
    lose_reply_at: Option<usize>,
    absent_swap_upserts: bool,
    hook_at: Option<usize>,
    hook: RefCell<Option<Box<dyn FnOnce()>>>,
}

impl MemKv {
    fn new(map: &Map) -> Self {
        Self {
            map: map.clone(),
            calls: Cell::new(0),
            stop_at: None,
            lose_reply_at: None,
            absent_swap_upserts: false,
            hook_at: None,
            hook: RefCell::new(None),
        }
    }

    fn spin_like(map: &Map) -> Self {
        Self {
            absent_swap_upserts: true,
            ..Self::new(map)
        }
    }

    /// The answer of a call whose effect is done.
    fn reply<T>(&self, value: T) -> Result<T, KvError> {
        let n = self.calls.get() - 1;
        if self.lose_reply_at == Some(n) {
            return Err(KvError(format!("reply of call {n} lost")));
        }
        Ok(value)
    }

    fn call(&self) -> Result<(), KvError> {
        let n = self.calls.get();
        self.calls.set(n + 1);
        let hook = if self.hook_at == Some(n) {
            self.hook.borrow_mut().take()
        } else {
            None
        };
        if let Some(hook) = hook {
            hook();
        }
        if self.stop_at.is_some_and(|stop| n >= stop) {
            return Err(KvError(format!("stopped at call {n}")));
        }
        Ok(())
    }
}

impl Kv for MemKv {
    /// The value read: a swap succeeds only if it is still the value
    /// (every value the adapter writes is unique, so no ABA).
    type Cas = (String, Option<Vec<u8>>);

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.call()?;
        let value = self.map.borrow().get(key).cloned();
        self.reply(value)
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.call()?;
        self.map
            .borrow_mut()
            .insert(key.to_string(), value.to_vec());
        self.reply(())
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.call()?;
        self.map.borrow_mut().remove(key);
        self.reply(())
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        self.call()?;
        // No order promised: hand them back reversed.
        let keys = self
            .map
            .borrow()
            .keys()
            .rev()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect();
        self.reply(keys)
    }

    fn read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        self.call()?;
        let current = self.map.borrow().get(key).cloned();
        self.reply(((key.to_string(), current.clone()), current))
    }

    fn swap(&self, (key, seen): Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        self.call()?;
        let mut map = self.map.borrow_mut();
        let upsert = seen.is_none() && self.absent_swap_upserts;
        if !upsert && map.get(&key) != seen.as_ref() {
            drop(map);
            return self.reply(false);
        }
        map.insert(key, value.to_vec());
        drop(map);
        self.reply(true)
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        self.call()?;
        let mut map = self.map.borrow_mut();
        let current = map
            .get(key)
            .map_or(0, |v| i64::from_le_bytes(v.as_slice().try_into().unwrap()));
        map.insert(key.to_string(), (current + delta).to_le_bytes().to_vec());
        drop(map);
        self.reply(current + delta)
    }
}

fn storage(map: &Map) -> KvStorage<MemKv> {
    KvStorage::new(MemKv::new(map))
}

fn spin_like(map: &Map) -> KvStorage<MemKv> {
    KvStorage::new(MemKv::spin_like(map))
}

fn put(key: &str, value: &str) -> Write {
    Write {
        key: key.as_bytes().to_vec(),
        value: Some(value.as_bytes().to_vec()),
    }
}

fn del(key: &str) -> Write {
    Write {
        key: key.as_bytes().to_vec(),
        value: None,
    }
}

/// Every live key with its value and version, by a healthy instance.
fn state(map: &Map) -> Vec<(String, String, u64)> {
    storage(map)
        .scan(b"", None, MAX_SCAN, false)
        .unwrap()
        .into_iter()
        .map(|e| {
            (
                String::from_utf8(e.key).unwrap(),
                String::from_utf8(e.value).unwrap(),
                e.version,
            )
        })
        .collect()
}

#[test]
fn commits_reads_scans_and_the_change_feed() {
    let map = Map::default();
    let s = storage(&map);
    assert_eq!(s.current_version().unwrap(), 0);
    assert_eq!(s.get(b"a").unwrap(), None);
    let v1 = s
        .commit(&[], vec![put("a", "1"), put("b", "2"), put("c", "3")])
        .unwrap();
    assert_eq!(v1, 1);
    let v2 = s
        .commit(
            &[Check::VersionIs(b"a".to_vec(), v1)],
            vec![put("a", "10"), del("b")],
        )
        .unwrap();
    assert_eq!(v2, 2);
    assert_eq!(s.get(b"a").unwrap().unwrap().value, b"10");
    assert_eq!(s.get(b"b").unwrap(), None);
    // A stale check fails, names the check and the key's version, writes nothing.
    assert_eq!(
        s.commit(
            &[
                Check::Absent(b"c".to_vec()),
                Check::VersionIs(b"a".to_vec(), v1)
            ],
            vec![put("x", "no")]
        ),
        Err(StorageError::Conflict {
            index: 0,
            current: Some(v1)
        })
    );
    assert_eq!(
        s.commit(&[Check::VersionIs(b"a".to_vec(), v1)], vec![put("x", "no")]),
        Err(StorageError::Conflict {
            index: 0,
            current: Some(v2)
        })
    );
    // A deleted key is absent to checks.
    s.commit(&[Check::Absent(b"b".to_vec())], vec![put("b", "back")])
        .unwrap();
    assert_eq!(s.current_version().unwrap(), 3);
    let keys = |entries: Vec<Entry>| -> Vec<String> {
        entries
            .into_iter()
            .map(|e| String::from_utf8(e.key).unwrap())
            .collect()
    };
    assert_eq!(keys(s.scan(b"", None, 10, false).unwrap()), ["a", "b", "c"]);
    assert_eq!(keys(s.scan(b"b", Some(b"c"), 10, false).unwrap()), ["b"]);
    assert_eq!(keys(s.scan(b"", None, 2, true).unwrap()), ["c", "b"]);
    let many = s.get_many(&[b"c".to_vec(), b"zz".to_vec()]).unwrap();
    assert_eq!(many[0].as_ref().unwrap().version, v1);
    assert_eq!(many[1], None);
    let feed = s.changes(0, 100).unwrap();
    assert_eq!(feed.len(), 6);
    assert_eq!(feed[3].version, 2);
    assert_eq!(feed[4].value, None);
    // Whole commits: a limit of 1 still returns all of commit 1.
    assert_eq!(s.changes(0, 1).unwrap().len(), 3);
    assert_eq!(s.changes(3, 10).unwrap(), vec![]);
    assert!(matches!(
        s.commit(&[], vec![]),
        Err(StorageError::Invalid(_))
    ));
}

#[test]
fn the_feed_keeps_only_the_retention() {
    let map = Map::default();
    let limits = Limits {
        retention: 3,
        ..Limits::default()
    };
    let s = KvStorage::with_limits(MemKv::new(&map), limits);
    for i in 0..10 {
        s.commit(&[], vec![put("k", &i.to_string())]).unwrap();
    }
    assert_eq!(s.changes(7, 10).unwrap().len(), 3);
    assert_eq!(s.changes(5, 10), Err(StorageError::Compacted { oldest: 8 }));
    let logs = map
        .borrow()
        .keys()
        .filter(|k| k.starts_with("kvstash/log/"))
        .count();
    assert_eq!(logs, 3, "trimmed as it goes");
}

/// Runs `scenario` on an instance that stops at call `stop`, then checks
/// with a healthy one that it took effect entirely or not at all.
#[test]
fn a_commit_stopped_between_any_two_calls_is_all_or_nothing() {
    let before = vec![
        ("a".to_string(), "1".to_string(), 1),
        ("d".to_string(), "4".to_string(), 1),
    ];
    let after = vec![
        ("a".to_string(), "10".to_string(), 2),
        ("b".to_string(), "20".to_string(), 2),
        ("c".to_string(), "30".to_string(), 2),
    ];
    let mut stop = 0;
    loop {
        let map = Map::default();
        storage(&map)
            .commit(&[], vec![put("a", "1"), put("d", "4")])
            .unwrap();
        let mut kv = MemKv::new(&map);
        kv.stop_at = Some(stop);
        let faulty = KvStorage::new(kv);
        let outcome = faulty.commit(
            &[Check::VersionIs(b"a".to_vec(), 1)],
            vec![put("a", "10"), put("b", "20"), put("c", "30"), del("d")],
        );
        let calls = faulty.kv().calls.get();
        let seen = state(&map);
        match outcome {
            Ok(version) => {
                assert_eq!(version, 2);
                assert_eq!(seen, after, "stopped at {stop}");
            }
            Err(StorageError::Unavailable(_)) => {
                assert!(
                    seen == before || seen == after,
                    "stopped at {stop}: {seen:?}"
                );
            }
            Err(e) => panic!("stopped at {stop}: {e:?}"),
        }
        // Whatever happened, the store goes on: versions increase, the feed
        // has each commit once.
        let healthy = storage(&map);
        let next = healthy.commit(&[], vec![put("z", "z")]).unwrap();
        let feed = healthy.changes(0, 100).unwrap();
        let versions: Vec<u64> = feed.iter().map(|c| c.version).collect();
        assert_eq!(*versions.last().unwrap(), next);
        assert!(versions.windows(2).all(|w| w[0] <= w[1]), "{versions:?}");
        assert_eq!(feed.iter().filter(|c| c.key == b"z").count(), 1);
        if seen == after {
            assert_eq!(feed.iter().filter(|c| c.version == 2).count(), 4);
        }
        if calls <= stop {
            break; // the commit finished before reaching the stop
        }
        stop += 1;
    }
    assert!(stop > 10, "the scenario makes more than 10 calls ({stop})");
}

/// A read-check-write increment, retried on conflict.
fn increment(s: &KvStorage<MemKv>, key: &[u8]) -> u64 {
    loop {
        let current = s.get(key).unwrap();
        let n: u64 = current
            .as_ref()
            .map_or(0, |e| String::from_utf8_lossy(&e.value).parse().unwrap());
        let check = match &current {
            Some(e) => Check::VersionIs(key.to_vec(), e.version),
            None => Check::Absent(key.to_vec()),
        };
        let write = Write {
            key: key.to_vec(),
            value: Some((n + 1).to_string().into_bytes()),
        };
        match s.commit(&[check], vec![write]) {
            Ok(_) => return n + 1,
            Err(StorageError::Conflict { .. }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
}

#[test]
fn another_writer_between_any_two_calls_loses_no_increment() {
    for spin in [false, true] {
        racing_increments(spin);
    }
}

fn racing_increments(spin: bool) {
    let mut at = 0;
    loop {
        let map = Map::default();
        storage(&map).commit(&[], vec![put("n", "0")]).unwrap();
        let mut kv = MemKv::new(&map);
        kv.absent_swap_upserts = spin;
        kv.hook_at = Some(at);
        let other = map.clone();
        *kv.hook.borrow_mut() = Some(Box::new(move || {
            let other = KvStorage::new(MemKv {
                absent_swap_upserts: spin,
                ..MemKv::new(&other)
            });
            increment(&other, b"n");
        }));
        let s = KvStorage::new(kv);
        increment(&s, b"n");
        let hooked = s.kv().hook.borrow().is_none();
        let n = storage(&map).get(b"n").unwrap().unwrap();
        let expected = if hooked { "2" } else { "1" };
        assert_eq!(
            String::from_utf8(n.value).unwrap(),
            expected,
            "other writer at {at}"
        );
        if !hooked {
            break;
        }
        at += 1;
    }
    assert!(at > 3);
}

#[test]
fn a_commit_left_half_applied_is_finished_by_the_next_reader() {
    let map = Map::default();
    storage(&map)
        .commit(&[], vec![put("a", "1"), put("b", "1")])
        .unwrap();
    // Stop right after the head CAS: decided, nothing applied.
    let mut stop = 0;
    loop {
        let snapshot = map.borrow().clone();
        let mut kv = MemKv::new(&map);
        kv.stop_at = Some(stop);
        let faulty = KvStorage::new(kv);
        let _ = faulty.commit(&[], vec![put("a", "2"), put("b", "2")]);
        let head = map.borrow().get("kvstash/head").cloned().unwrap();
        if codec::decode_head(&head).unwrap().pending.is_some() {
            break;
        }
        *map.borrow_mut() = snapshot;
        stop += 1;
    }
    // A reader of either key sees the decided commit, whole.
    let reader = storage(&map);
    let got = reader.get_many(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
    assert!(got.iter().all(|e| e.as_ref().unwrap().value == b"2"));
    assert_eq!(reader.get(b"a").unwrap().unwrap().version, 2);
}

#[test]
fn codec_round_trips_and_rejects_damage() {
    let intent = codec::Intent {
        version: 7,
        nonce: 42,
        writes: vec![put("k", "v"), del("gone")],
    };
    let head = codec::Head {
        version: 7,
        pending: Some(intent),
    };
    let bytes = codec::encode_head(&head);
    assert_eq!(codec::decode_head(&bytes), Some(head));
    assert_eq!(codec::decode_head(&bytes[..bytes.len() - 1]), None);
    assert_eq!(codec::decode_head(b"short"), None);
    let key = codec::record_key(&[0, 255, b'a']);
    assert_eq!(key, "kvstash/r/00ff61");
    assert_eq!(codec::parse_record_key(&key), Some(vec![0, 255, b'a']));
    assert_eq!(codec::parse_record_key("kvstash/r/0"), None);
    assert_eq!(codec::parse_record_key("kvstash/r/zz"), None);
    assert_eq!(codec::decode_record(&[1, 0, 0, 0, 0, 0, 0, 0, 2]), None);
}

#[test]
fn damaged_records_are_errors_not_panics() {
    let map = Map::default();
    map.borrow_mut()
        .insert("kvstash/head".into(), b"xx".to_vec());
    assert!(matches!(
        storage(&map).get(b"a"),
        Err(StorageError::Corrupt(_))
    ));
    map.borrow_mut().remove("kvstash/head");
    map.borrow_mut()
        .insert(codec::record_key(b"a"), b"bad".to_vec());
    assert!(matches!(
        storage(&map).get(b"a"),
        Err(StorageError::Corrupt(_))
    ));
}

#[test]
fn first_commits_racing_on_a_host_whose_absent_swap_is_an_upsert_both_count() {
    // Spin's SQLite store turns a swap from an absent key into an upsert:
    // two first commits of a fresh store must still get two versions.
    let mut at = 0;
    loop {
        let map = Map::default();
        let mut kv = MemKv::spin_like(&map);
        kv.hook_at = Some(at);
        let other = map.clone();
        let theirs = Rc::new(Cell::new(0));
        let their_version = theirs.clone();
        *kv.hook.borrow_mut() = Some(Box::new(move || {
            // Between our claim of the head and its creation, the other
            // writer can only wait: it gets a retryable error (0 here).
            match spin_like(&other).commit(&[], vec![put("b", "theirs")]) {
                Ok(version) => their_version.set(version),
                Err(StorageError::Unavailable(_)) => their_version.set(0),
                Err(e) => panic!("{e:?}"),
            }
        }));
        let s = KvStorage::new(kv);
        let mine = s.commit(&[], vec![put("a", "mine")]).unwrap();
        let hooked = s.kv().hook.borrow().is_none();
        let seen = state(&map);
        if hooked && theirs.get() == 0 {
            assert_eq!(seen, vec![("a".to_string(), "mine".to_string(), mine)]);
        } else if hooked {
            assert_ne!(mine, theirs.get(), "other writer at {at}");
            let mut want = vec![
                ("a".to_string(), "mine".to_string(), mine),
                ("b".to_string(), "theirs".to_string(), theirs.get()),
            ];
            want.sort();
            assert_eq!(seen, want, "other writer at {at}");
        } else {
            assert_eq!(seen, vec![("a".to_string(), "mine".to_string(), 1)]);
            break;
        }
        at += 1;
    }
    assert!(at > 3);
}

#[test]
fn a_lost_reply_at_any_call_never_misreports_a_commit() {
    // The host applies a call and the answer is lost: `ok` must mean the
    // commit is there, an error that it is not.
    let mut at = 0;
    loop {
        let map = Map::default();
        storage(&map).commit(&[], vec![put("a", "1")]).unwrap();
        let mut kv = MemKv::new(&map);
        kv.lose_reply_at = Some(at);
        let s = KvStorage::new(kv);
        let outcome = s.commit(
            &[Check::VersionIs(b"a".to_vec(), 1)],
            vec![put("a", "2"), put("b", "2")],
        );
        let calls = s.kv().calls.get();
        let seen = state(&map);
        let after = vec![
            ("a".to_string(), "2".to_string(), 2),
            ("b".to_string(), "2".to_string(), 2),
        ];
        match outcome {
            Ok(2) => assert_eq!(seen, after, "reply lost at {at}"),
            Ok(v) => panic!("version {v} at {at}"),
            Err(StorageError::Unavailable(_)) => assert_eq!(
                seen,
                vec![("a".to_string(), "1".to_string(), 1)],
                "reply lost at {at}: an error, yet the commit is there"
            ),
            Err(e) => panic!("{e:?} at {at}"),
        }
        if calls <= at {
            break;
        }
        at += 1;
    }
    assert!(at > 5);
}

#[test]
fn a_commit_larger_than_the_limit_is_refused_before_anything_is_written() {
    let map = Map::default();
    let limits = Limits {
        max_commit_bytes: 100,
        ..Limits::default()
    };
    let s = KvStorage::with_limits(MemKv::new(&map), limits);
    let big = "x".repeat(200);
    assert!(matches!(
        s.commit(&[], vec![put("k", &big)]),
        Err(StorageError::Invalid(why)) if why.contains("max_commit_bytes")
    ));
    assert!(map.borrow().is_empty());
    s.commit(&[], vec![put("k", "small")]).unwrap();
}
