//! One conformance suite, run against every backend: the rules of
//! `wit/storage.wit` that the guest's correctness rests on.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use kvstash::backend::{
    Backend, BackendError, Change, Check, FileBackend, FileConfig, MAX_KEY_BYTES, MAX_SCAN,
    MAX_VALUE_BYTES, MemoryBackend, Scan, Write,
};

fn put(key: &[u8], value: &[u8]) -> Write {
    Write {
        key: key.to_vec(),
        value: Some(value.to_vec()),
    }
}

fn del(key: &[u8]) -> Write {
    Write {
        key: key.to_vec(),
        value: None,
    }
}

fn scan(start: &[u8], end: Option<&[u8]>, limit: u32, reverse: bool) -> Scan {
    Scan {
        start: start.to_vec(),
        end: end.map(<[u8]>::to_vec),
        limit,
        reverse,
    }
}

async fn keys(b: &dyn Backend, s: Scan) -> Vec<Vec<u8>> {
    b.scan(&s)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.key)
        .collect()
}

/// Every rule, in order, on one empty backend.
async fn all(b: Arc<dyn Backend>) {
    let b = b.as_ref();
    missing_keys(b).await;
    overwrite_and_versions(b).await;
    delete_is_idempotent(b).await;
    ordered_scan(b).await;
    empty_and_large_values(b).await;
    odd_keys(b).await;
    conditional_commits(b).await;
    get_many(b).await;
    invalid_requests(b).await;
    change_feed(b).await;
    commit_notifications(b).await;
}

async fn missing_keys(b: &dyn Backend) {
    assert_eq!(b.get(b"missing").await.unwrap(), None);
    assert_eq!(
        b.current_version().await.unwrap(),
        0,
        "a new backend is at version 0"
    );
    assert!(
        b.scan(&scan(b"", None, 10, false))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(b.changes(0, 10).await.unwrap().is_empty());
}

async fn overwrite_and_versions(b: &dyn Backend) {
    let v1 = b.commit(vec![], vec![put(b"ow", b"one")]).await.unwrap();
    let v2 = b.commit(vec![], vec![put(b"ow", b"two")]).await.unwrap();
    assert!(v2 > v1, "versions strictly increase");
    let e = b.get(b"ow").await.unwrap().unwrap();
    assert_eq!((e.value.as_slice(), e.version), (&b"two"[..], v2));
    assert_eq!(b.current_version().await.unwrap(), v2);
    // One commit, one version for every write in it.
    let v3 = b
        .commit(vec![], vec![put(b"ow-a", b"a"), put(b"ow-b", b"b")])
        .await
        .unwrap();
    assert_eq!(b.get(b"ow-a").await.unwrap().unwrap().version, v3);
    assert_eq!(b.get(b"ow-b").await.unwrap().unwrap().version, v3);
    // Two writes of one key in one commit: the last wins.
    b.commit(vec![], vec![put(b"ow", b"x"), put(b"ow", b"y")])
        .await
        .unwrap();
    assert_eq!(b.get(b"ow").await.unwrap().unwrap().value, b"y");
    b.commit(vec![], vec![del(b"ow"), del(b"ow-a"), del(b"ow-b")])
        .await
        .unwrap();
}

async fn delete_is_idempotent(b: &dyn Backend) {
    b.commit(vec![], vec![put(b"gone", b"1")]).await.unwrap();
    b.commit(vec![], vec![del(b"gone")]).await.unwrap();
    assert_eq!(b.get(b"gone").await.unwrap(), None);
    b.commit(vec![], vec![del(b"gone")])
        .await
        .expect("deleting a missing key is not an error");
    b.commit(vec![], vec![del(b"never-was")]).await.unwrap();
}

async fn ordered_scan(b: &dyn Backend) {
    let names: [&[u8]; 6] = [b"s/b", b"s/a", b"s/c", b"s/aa", b"s/", b"t/"];
    for name in names {
        b.commit(vec![], vec![put(name, name)]).await.unwrap();
    }
    let want: Vec<Vec<u8>> = [&b"s/"[..], b"s/a", b"s/aa", b"s/b", b"s/c"]
        .iter()
        .map(|k| k.to_vec())
        .collect();
    assert_eq!(keys(b, scan(b"s/", Some(b"s0"), 100, false)).await, want);
    let mut reversed = want.clone();
    reversed.reverse();
    assert_eq!(keys(b, scan(b"s/", Some(b"s0"), 100, true)).await, reversed);
    assert_eq!(
        keys(b, scan(b"s/", Some(b"s0"), 2, false)).await,
        want[..2].to_vec()
    );
    assert_eq!(
        keys(b, scan(b"s/", Some(b"s0"), 2, true)).await,
        reversed[..2].to_vec()
    );
    // Start is inclusive, end exclusive.
    assert_eq!(
        keys(b, scan(b"s/a", Some(b"s/b"), 100, false)).await,
        vec![b"s/a".to_vec(), b"s/aa".to_vec()]
    );
    // No end: to the last key.
    assert_eq!(
        keys(b, scan(b"s/c", None, 100, false)).await,
        vec![b"s/c".to_vec(), b"t/".to_vec()]
    );
    // Empty and inverted ranges are empty, not errors.
    assert!(
        keys(b, scan(b"s/b", Some(b"s/b"), 100, false))
            .await
            .is_empty()
    );
    assert!(
        keys(b, scan(b"s/c", Some(b"s/a"), 100, false))
            .await
            .is_empty()
    );
    assert!(keys(b, scan(b"s/", Some(b"s0"), 0, false)).await.is_empty());
    // Entries carry their values and versions.
    let entries = b
        .scan(&scan(b"s/aa", Some(b"s/b"), 10, false))
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].value, b"s/aa");
    assert_eq!(
        Some(entries[0].version),
        b.get(b"s/aa").await.unwrap().map(|e| e.version)
    );
    let all: Vec<Write> = names.iter().map(|n| del(n)).collect();
    b.commit(vec![], all).await.unwrap();
}

async fn empty_and_large_values(b: &dyn Backend) {
    b.commit(vec![], vec![put(b"empty", b"")]).await.unwrap();
    let e = b
        .get(b"empty")
        .await
        .unwrap()
        .expect("an empty value is a value");
    assert!(e.value.is_empty());
    let big: Vec<u8> = (0..1024 * 1024).map(|i: u32| (i % 251) as u8).collect();
    b.commit(vec![], vec![put(b"big", &big)]).await.unwrap();
    assert_eq!(b.get(b"big").await.unwrap().unwrap().value, big);
    b.commit(vec![], vec![del(b"empty"), del(b"big")])
        .await
        .unwrap();
}

async fn odd_keys(b: &dyn Backend) {
    let long = vec![b'k'; 4096 + 16];
    let odd: Vec<Vec<u8>> = vec![
        vec![0],
        vec![0, 0, 1],
        vec![0xff],
        vec![0xff, 0xff, 0xff],
        b"with space/and\nnewline".to_vec(),
        "ünïcødé ✓".as_bytes().to_vec(),
        b"../../etc/passwd".to_vec(),
        long,
    ];
    for (i, key) in odd.iter().enumerate() {
        b.commit(vec![], vec![put(key, &[i as u8])]).await.unwrap();
    }
    for (i, key) in odd.iter().enumerate() {
        assert_eq!(
            b.get(key).await.unwrap().unwrap().value,
            vec![i as u8],
            "{key:?}"
        );
    }
    let mut sorted = odd.clone();
    sorted.sort();
    assert_eq!(
        keys(b, scan(b"", None, 100, false)).await,
        sorted,
        "byte order, 0x00 and 0xff included"
    );
    b.commit(vec![], odd.iter().map(|k| del(k)).collect())
        .await
        .unwrap();
}

async fn conditional_commits(b: &dyn Backend) {
    // absent: holds for a missing key, fails for a present one.
    let v1 = b
        .commit(vec![Check::Absent(b"c".to_vec())], vec![put(b"c", b"1")])
        .await
        .unwrap();
    let before = b.current_version().await.unwrap();
    let err = b
        .commit(
            vec![Check::Absent(b"c".to_vec())],
            vec![put(b"c", b"2"), put(b"other", b"x")],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::Conflict {
            index: 0,
            current: Some(v1)
        }
    );
    assert_eq!(
        b.get(b"c").await.unwrap().unwrap().value,
        b"1",
        "nothing written on conflict"
    );
    assert_eq!(
        b.get(b"other").await.unwrap(),
        None,
        "not even the other writes"
    );
    assert_eq!(
        b.current_version().await.unwrap(),
        before,
        "a failed commit takes no version"
    );
    // version-is: holds at the current version only.
    let v2 = b
        .commit(
            vec![Check::VersionIs(b"c".to_vec(), v1)],
            vec![put(b"c", b"2")],
        )
        .await
        .unwrap();
    let err = b
        .commit(
            vec![Check::VersionIs(b"c".to_vec(), v1)],
            vec![put(b"c", b"3")],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::Conflict {
            index: 0,
            current: Some(v2)
        }
    );
    // The first failing check is named; a missing key's current is none.
    let err = b
        .commit(
            vec![
                Check::VersionIs(b"c".to_vec(), v2),
                Check::VersionIs(b"nope".to_vec(), 1),
                Check::Absent(b"c".to_vec()),
            ],
            vec![put(b"c", b"4")],
        )
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BackendError::Conflict {
            index: 1,
            current: None
        }
    );
    // Checks alone (a read validation) commit without writes.
    b.commit(vec![Check::VersionIs(b"c".to_vec(), v2)], vec![])
        .await
        .unwrap();
    // Deleting under a check; then the key is absent again.
    b.commit(vec![Check::VersionIs(b"c".to_vec(), v2)], vec![del(b"c")])
        .await
        .unwrap();
    b.commit(vec![Check::Absent(b"c".to_vec())], vec![])
        .await
        .unwrap();
}

async fn get_many(b: &dyn Backend) {
    let v = b
        .commit(vec![], vec![put(b"m1", b"1"), put(b"m2", b"2")])
        .await
        .unwrap();
    let got = b
        .get_many(&[
            b"m2".to_vec(),
            b"none".to_vec(),
            b"m1".to_vec(),
            b"m2".to_vec(),
        ])
        .await
        .unwrap();
    let values: Vec<Option<Vec<u8>>> = got
        .iter()
        .map(|e| e.as_ref().map(|e| e.value.clone()))
        .collect();
    assert_eq!(
        values,
        vec![
            Some(b"2".to_vec()),
            None,
            Some(b"1".to_vec()),
            Some(b"2".to_vec())
        ]
    );
    assert!(got.iter().flatten().all(|e| e.version == v));
    assert!(b.get_many(&[]).await.unwrap().is_empty());
    b.commit(vec![], vec![del(b"m1"), del(b"m2")])
        .await
        .unwrap();
}

async fn invalid_requests(b: &dyn Backend) {
    let version = b.current_version().await.unwrap();
    assert!(matches!(
        b.commit(vec![], vec![]).await,
        Err(BackendError::Invalid(_))
    ));
    let too_many: Vec<Write> = (0..20_001u32).map(|i| put(&i.to_be_bytes(), b"")).collect();
    assert!(matches!(
        b.commit(vec![], too_many).await,
        Err(BackendError::Invalid(_))
    ));
    let keys: Vec<Vec<u8>> = (0..10_001u32).map(|i| i.to_be_bytes().to_vec()).collect();
    assert!(matches!(
        b.get_many(&keys).await,
        Err(BackendError::Invalid(_))
    ));
    // Sizes a guest could send but no kvstash guest ever does.
    let long_key = vec![b'k'; MAX_KEY_BYTES + 1];
    let huge_value = vec![0u8; MAX_VALUE_BYTES + 1];
    assert!(matches!(
        b.get(&long_key).await,
        Err(BackendError::Invalid(_))
    ));
    assert!(matches!(
        b.get_many(std::slice::from_ref(&long_key)).await,
        Err(BackendError::Invalid(_))
    ));
    assert!(matches!(
        b.scan(&scan(&long_key, None, 1, false)).await,
        Err(BackendError::Invalid(_))
    ));
    assert!(matches!(
        b.commit(vec![], vec![put(&long_key, b"")]).await,
        Err(BackendError::Invalid(_))
    ));
    assert!(matches!(
        b.commit(vec![Check::Absent(long_key.clone())], vec![put(b"x", b"")])
            .await,
        Err(BackendError::Invalid(_))
    ));
    assert!(matches!(
        b.commit(vec![], vec![put(b"ok", b""), put(b"big", &huge_value)])
            .await,
        Err(BackendError::Invalid(_))
    ));
    assert_eq!(
        b.current_version().await.unwrap(),
        version,
        "rejected requests write nothing"
    );
    // The limits themselves are allowed.
    let at_limit = vec![b'k'; MAX_KEY_BYTES];
    b.commit(vec![], vec![put(&at_limit, b"edge")])
        .await
        .unwrap();
    assert_eq!(b.get(&at_limit).await.unwrap().unwrap().value, b"edge");
    b.commit(vec![], vec![del(&at_limit)]).await.unwrap();
    // Hostile limits are clamped, not honoured.
    let writes: Vec<Write> = (0..(MAX_SCAN + 5))
        .map(|i| put(&[b'z', (i >> 8) as u8, i as u8], b""))
        .collect();
    b.commit(vec![], writes.clone()).await.unwrap();
    let got = b.scan(&scan(b"z", None, u32::MAX, false)).await.unwrap();
    assert_eq!(got.len(), MAX_SCAN as usize);
    b.commit(vec![], writes.iter().map(|w| del(&w.key)).collect())
        .await
        .unwrap();
}

async fn commit_notifications(b: &dyn Backend) {
    // Optional, but if offered it must reach every commit's version.
    let Some(mut rx) = b.commits() else { return };
    rx.borrow_and_update();
    let v = b.commit(vec![], vec![put(b"n", b"1")]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
        .await
        .expect("notified within 5 s")
        .unwrap();
    assert_eq!(*rx.borrow(), v);
    b.commit(vec![], vec![del(b"n")]).await.unwrap();
}

async fn change_feed(b: &dyn Backend) {
    let since = b.current_version().await.unwrap();
    let v1 = b
        .commit(vec![], vec![put(b"f1", b"a"), put(b"f2", b"b")])
        .await
        .unwrap();
    let v2 = b.commit(vec![], vec![del(b"f1")]).await.unwrap();
    let feed = b.changes(since, 100).await.unwrap();
    assert_eq!(
        feed,
        vec![
            Change {
                version: v1,
                key: b"f1".to_vec(),
                value: Some(b"a".to_vec())
            },
            Change {
                version: v1,
                key: b"f2".to_vec(),
                value: Some(b"b".to_vec())
            },
            Change {
                version: v2,
                key: b"f1".to_vec(),
                value: None
            },
        ]
    );
    // Whole commits only: a limit never splits one.
    assert_eq!(b.changes(since, 1).await.unwrap().len(), 2);
    assert_eq!(b.changes(v1, 100).await.unwrap().len(), 1);
    assert!(b.changes(v2, 100).await.unwrap().is_empty());
    // Whole commits only, however small the limit.
    let writes: Vec<Write> = (0..7u8).map(|i| put(&[b'w', i], b"")).collect();
    let big = b.commit(vec![], writes.clone()).await.unwrap();
    let feed = b.changes(v2, 2).await.unwrap();
    assert_eq!(feed.len(), 7);
    assert!(feed.iter().all(|c| c.version == big));
    b.commit(vec![], writes.iter().map(|w| del(&w.key)).collect())
        .await
        .unwrap();
    let v2 = b.current_version().await.unwrap();
    // A failed commit leaves no trace in the feed.
    let _ = b
        .commit(vec![Check::Absent(b"f2".to_vec())], vec![put(b"f3", b"c")])
        .await;
    assert!(b.changes(v2, 100).await.unwrap().is_empty());
}

/// Retention: the feed answers `compacted` for versions it dropped.
async fn compaction(b: Arc<dyn Backend>) {
    for i in 0..10u8 {
        b.commit(vec![], vec![put(&[i], &[i])]).await.unwrap();
    }
    // Retention 3: versions 8, 9, 10 are kept.
    assert_eq!(
        b.changes(0, 100).await,
        Err(BackendError::Compacted { oldest: 8 })
    );
    assert_eq!(
        b.changes(6, 100).await,
        Err(BackendError::Compacted { oldest: 8 })
    );
    let kept: Vec<u64> = b
        .changes(7, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.version)
        .collect();
    assert_eq!(kept, vec![8, 9, 10]);
}

#[tokio::test]
async fn memory_backend_conforms() {
    all(Arc::new(MemoryBackend::default())).await;
    compaction(Arc::new(MemoryBackend::new(3))).await;
}

#[tokio::test]
async fn file_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    all(FileBackend::open_shared(&FileConfig::new(dir.path().join("c.redb"))).unwrap()).await;
    let mut config = FileConfig::new(dir.path().join("compaction.redb"));
    config.retention = 3;
    compaction(FileBackend::open_shared(&config).unwrap()).await;
}

/// Opens a backend the way a store does: through the registry, from JSON.
#[cfg(any(
    feature = "etcd",
    feature = "redis",
    feature = "postgres",
    feature = "client"
))]
async fn open(config: serde_json::Value) -> Arc<dyn Backend> {
    kvstash::Registry::default()
        .open(&config.to_string())
        .await
        .unwrap()
}

/// `kvstash serve` in this process, on a store `config` describes; its URL.
#[cfg(feature = "serve")]
async fn served(config: serde_json::Value) -> String {
    let store = kvstash::Store::open(&config.to_string()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kvstash::serve::serve(
        store,
        listener,
        kvstash::serve::ServeOptions::default(),
        std::future::pending(),
    ));
    url
}

/// The `server` backend keeps every rule of the backend it reaches: the
/// same suite, through HTTP, on a memory and a file store.
#[cfg(feature = "serve")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_backend_conforms() {
    use serde_json::json;
    let url = served(json!({"type": "memory"})).await;
    all(open(json!({"type": "server", "url": url})).await).await;
    let dir = tempfile::tempdir().unwrap();
    let url = served(json!({"type": "file", "path": dir.path().join("s.redb")})).await;
    all(open(json!({"type": "server", "url": url})).await).await;
    let url = served(json!({"type": "memory", "retention": 3})).await;
    compaction(open(json!({"type": "server", "url": url})).await).await;
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_backend_conforms() {
    let Some(server) = kvstash_test_servers::Redis::start() else {
        return;
    };
    let url = server.url();
    all(open(serde_json::json!({"type": "redis", "url": url})).await).await;
    let config = serde_json::json!({"type": "redis", "url": url, "namespace": "c", "retention": 3});
    compaction(open(config).await).await;
    // A version counter that fell behind the feed (deleted here; evicted by
    // a Redis allowed to evict) stops commits before they write anything.
    let config = serde_json::json!({"type": "redis", "url": url, "namespace": "lost"});
    let b = open(config).await;
    b.commit(vec![], vec![put(b"k", b"1")]).await.unwrap();
    let deleted = std::process::Command::new("redis-cli")
        .args(["-p", &server.port().to_string(), "DEL", "{lost}:h"])
        .output()
        .expect("redis-cli runs (Debian package redis-tools)");
    assert!(deleted.status.success());
    match b.commit(vec![], vec![put(b"k", b"2")]).await {
        Err(BackendError::Unavailable(why)) => {
            assert!(why.contains("behind the change feed"), "{why}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.get(b"k").await.unwrap().unwrap().value,
        b"1",
        "nothing written"
    );
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_backend_conforms() {
    let Some(server) = kvstash_test_servers::Postgres::start() else {
        return;
    };
    let url = server.url();
    all(open(serde_json::json!({"type": "postgres", "url": url})).await).await;
    let config =
        serde_json::json!({"type": "postgres", "url": url, "namespace": "c", "retention": 3});
    compaction(open(config).await).await;
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_backend_conforms() {
    // The suite's largest commit (10,005 writes) needs raised limits.
    let Some(server) = kvstash_test_servers::Etcd::cluster(
        1,
        &["--max-txn-ops", "20001", "--max-request-bytes", "33554432"],
    ) else {
        return;
    };
    let config = serde_json::json!({
        "type": "etcd",
        "endpoints": server.endpoints(),
        "max_txn_ops": 20001,
        "max_request_bytes": 33554432,
    });
    all(open(config).await).await;
}

/// etcd's own limits (128 operations per Txn, 1.5 MiB per request) refuse
/// a commit whole; compaction answers `compacted`.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_limits_and_compaction() {
    let Some(server) = kvstash_test_servers::Etcd::start() else {
        return;
    };
    let endpoints = server.endpoints();
    let b = open(serde_json::json!({"type": "etcd", "endpoints": endpoints})).await;
    // 127 writes and kvstash's head key: exactly etcd's 128.
    let most: Vec<Write> = (0..127u8).map(|i| put(&[b'l', i], b"")).collect();
    b.commit(vec![], most).await.unwrap();
    let before = b.current_version().await.unwrap();
    let too_many: Vec<Write> = (0..128u8).map(|i| put(&[b'm', i], b"")).collect();
    match b.commit(vec![], too_many).await {
        Err(BackendError::Invalid(why)) => assert!(why.contains("--max-txn-ops"), "{why}"),
        other => panic!("{other:?}"),
    }
    let too_big = vec![put(b"big", &vec![7u8; 1536 * 1024])];
    match b.commit(vec![], too_big).await {
        Err(BackendError::Invalid(why)) => assert!(why.contains("--max-request-bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        b.current_version().await.unwrap(),
        before,
        "nothing written"
    );
    assert_eq!(b.get(&[b'm', 0]).await.unwrap(), None);
    // Versions are etcd revisions: increasing, shared with other writers
    // of the cluster, so not consecutive.
    let v1 = b.commit(vec![], vec![put(b"c", b"1")]).await.unwrap();
    let v2 = b.commit(vec![], vec![put(b"c", b"2")]).await.unwrap();
    let v3 = b.commit(vec![], vec![put(b"c", b"3")]).await.unwrap();
    assert!(v1 < v2 && v2 < v3);
    let status = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={}", endpoints[0]))
        .args(["compact", &v2.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .expect("etcdctl runs (Debian package etcd-client)");
    assert!(status.success());
    assert_eq!(
        b.changes(v1, 100).await,
        Err(BackendError::Compacted { oldest: v2 + 1 })
    );
    let feed = b.changes(v2, 100).await.unwrap();
    assert_eq!(
        feed,
        vec![Change {
            version: v3,
            key: b"c".to_vec(),
            value: Some(b"3".to_vec())
        }]
    );
    // Compaction for others' sake loses nothing of a store that did not
    // commit in between: a store made after it reads its feed from 0, and
    // a caught-up watcher of a quiet store reads on.
    let compact = |revision: u64| {
        let status = std::process::Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints[0]))
            .args(["compact", &revision.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
    };
    let config = serde_json::json!({"type": "etcd", "endpoints": endpoints, "namespace": "other"});
    let other = open(config).await;
    let o1 = other.commit(vec![], vec![put(b"o", b"1")]).await.unwrap();
    let change = |version, value: &[u8]| Change {
        version,
        key: b"o".to_vec(),
        value: Some(value.to_vec()),
    };
    assert_eq!(other.changes(0, 100).await.unwrap(), vec![change(o1, b"1")]);
    let busy = b.commit(vec![], vec![put(b"c", b"4")]).await.unwrap();
    compact(busy);
    let o2 = other.commit(vec![], vec![put(b"o", b"2")]).await.unwrap();
    assert_eq!(
        other.changes(o1, 100).await.unwrap(),
        vec![change(o2, b"2")]
    );
    // But a store that did commit in between has lost that history.
    assert_eq!(
        b.changes(v3, 100).await,
        Err(BackendError::Compacted { oldest: busy + 1 })
    );
    // A namespace inside another's keys is refused.
    let nested =
        serde_json::json!({"type": "etcd", "endpoints": endpoints, "namespace": "kvstash/d"});
    assert!(matches!(
        kvstash::Registry::default().open(&nested.to_string()).await,
        Err(BackendError::Invalid(_))
    ));
}

/// `user` and `password`: etcd with authentication enabled.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_with_a_password() {
    let Some(server) = kvstash_test_servers::Etcd::start() else {
        return;
    };
    for args in [&["user", "add", "root:secret"][..], &["auth", "enable"]] {
        let status = server.etcdctl(0).args(args).output().unwrap().status;
        assert!(status.success(), "etcdctl {args:?}");
    }
    let endpoints = server.endpoints();
    let config = |password: Option<&str>| {
        let mut config = serde_json::json!({"type": "etcd", "endpoints": endpoints});
        if let Some(password) = password {
            config["user"] = "root".into();
            config["password"] = password.into();
        }
        config.to_string()
    };
    let b = open(serde_json::from_str(&config(Some("secret"))).unwrap()).await;
    let v = b.commit(vec![], vec![put(b"k", b"v")]).await.unwrap();
    assert_eq!(b.get(b"k").await.unwrap().unwrap().version, v);
    // A wrong password, or none, is refused at open, saying why.
    for (password, why) in [
        (Some("wrong"), "authentication failed"),
        (None, "user name is empty"),
    ] {
        match kvstash::Registry::default().open(&config(password)).await {
            Err(BackendError::Invalid(message)) => assert!(message.contains(why), "{message}"),
            other => panic!("{password:?}: {other:?}"),
        }
    }
}

/// `tls`: etcd serving clients over TLS only, with a CA of its own.
#[cfg(feature = "etcd")]
#[tokio::test]
async fn etcd_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let certificates = kvstash_test_servers::Certificates::create(dir.path());
    let Some(server) = kvstash_test_servers::Etcd::start_tls(certificates.clone()) else {
        return;
    };
    let endpoints = server.endpoints();
    let b = open(serde_json::json!({
        "type": "etcd",
        "endpoints": endpoints,
        "tls": {"ca": certificates.ca},
    }))
    .await;
    let v = b.commit(vec![], vec![put(b"k", b"v")]).await.unwrap();
    assert_eq!(b.get(b"k").await.unwrap().unwrap().version, v);
    // Not trusting its CA, or not using TLS: no store.
    for config in [
        serde_json::json!({"type": "etcd", "endpoints": endpoints, "tls": {}, "timeout_ms": 2000}),
        serde_json::json!({"type": "etcd", "endpoints": endpoints, "timeout_ms": 2000}),
    ] {
        let opened = kvstash::Registry::default().open(&config.to_string()).await;
        assert!(
            matches!(opened, Err(BackendError::Unavailable(_))),
            "{config}: {opened:?}"
        );
    }
    // A missing CA file is a configuration error.
    let missing = serde_json::json!({"type": "etcd", "endpoints": endpoints, "tls": {"ca": dir.path().join("nope.pem")}});
    assert!(matches!(
        kvstash::Registry::default()
            .open(&missing.to_string())
            .await,
        Err(BackendError::Invalid(_))
    ));
}

#[tokio::test]
async fn file_backend_keeps_everything_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("dir").join("s.redb");
    let version = {
        let b = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        b.commit(vec![], vec![put(b"a", b"1"), put(b"b", b"2")])
            .await
            .unwrap();
        b.commit(vec![], vec![del(b"a")]).await.unwrap()
    };
    let b = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
    assert_eq!(
        b.current_version().await.unwrap(),
        version,
        "versions continue after reopen"
    );
    assert_eq!(b.get(b"a").await.unwrap(), None);
    assert_eq!(b.get(b"b").await.unwrap().unwrap().value, b"2");
    assert_eq!(
        b.changes(0, 10).await.unwrap().len(),
        3,
        "the change feed survives reopen"
    );
    let next = b.commit(vec![], vec![put(b"c", b"3")]).await.unwrap();
    assert_eq!(next, version + 1);
}

#[tokio::test]
async fn file_handles_on_one_path_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let first = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
    let relative = FileConfig::new(dir.path().join(".").join("s.redb"));
    let second = FileBackend::open_shared(&relative).unwrap();
    first.commit(vec![], vec![put(b"k", b"v")]).await.unwrap();
    assert_eq!(second.get(b"k").await.unwrap().unwrap().value, b"v");
}

#[tokio::test]
async fn file_backend_rejects_bad_configuration() {
    let reg = kvstash::Registry::default();
    for (config, needle) in [
        (r#"{"type":"file"}"#, "path"),
        (
            r#"{"type":"file","path":"/tmp/x.redb","colour":"red"}"#,
            "colour",
        ),
        (r#"{"type":"memory","path":"/tmp"}"#, "path"),
        (r#"{"type":"sqlite"}"#, "unknown backend type"),
        ("{", "configuration"),
    ] {
        match reg.open(config).await {
            Err(BackendError::Invalid(why)) => assert!(why.contains(needle), "{config}: {why}"),
            other => panic!("{config}: {other:?}"),
        }
    }
    let file_in_the_way = tempfile::NamedTempFile::new().unwrap();
    let blocked = file_in_the_way.path().join("sub").join("s.redb");
    let config = serde_json::json!({"type": "file", "path": blocked}).to_string();
    assert!(matches!(
        reg.open(&config).await,
        Err(BackendError::Unavailable(_))
    ));
}

#[tokio::test]
async fn file_backend_refuses_a_foreign_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-db.redb");
    std::fs::write(&path, b"this is not a redb file at all, just some text").unwrap();
    let err = FileBackend::open_shared(&FileConfig::new(&path)).unwrap_err();
    assert!(matches!(err, BackendError::Unavailable(_)), "{err:?}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"this is not a redb file at all, just some text"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_commits_share_fsyncs_under_concurrency() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open_shared(&FileConfig::new(dir.path().join("g.redb"))).unwrap();
    // A lone writer waits for each commit: one fsync each.
    for i in 0..20u8 {
        b.commit(vec![], vec![put(&[b's', i], b"v")]).await.unwrap();
    }
    let mut lone = [0; kvstash::backend::GROUP_SLOTS];
    lone[0] = 20;
    assert_eq!(
        b.sync_stats(),
        kvstash::backend::SyncStats {
            acknowledged: 20,
            syncs: 20,
            checkpoints: 0,
            groups: lone,
        }
    );
    // 64 concurrent writers: commits queue up while an fsync runs, and the
    // next group takes them all with one.
    let tasks: Vec<_> = (0..64u8)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                for i in 0..10u8 {
                    b.commit(vec![], vec![put(&[b'c', t, i], b"v")])
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let stats = b.sync_stats();
    assert_eq!(stats.acknowledged, 20 + 640);
    let concurrent_syncs = stats.syncs - 20;
    // Every append is counted once by its size, and the sizes add up.
    assert_eq!(stats.groups.iter().sum::<u64>(), stats.syncs);
    assert!(
        concurrent_syncs < 640,
        "640 commits took {concurrent_syncs} fsyncs"
    );
    println!("640 concurrent commits, {concurrent_syncs} fsyncs");
    let all = b
        .scan(&scan(b"c", Some(b"d"), 10_000, false))
        .await
        .unwrap();
    assert_eq!(all.len(), 640, "every acknowledged commit is there");
    let versions: std::collections::BTreeSet<u64> = all.iter().map(|e| e.version).collect();
    assert_eq!(
        versions.len(),
        640,
        "each commit of a group has its own version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_within_one_group_see_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open_shared(&FileConfig::new(dir.path().join("g.redb"))).unwrap();
    let tasks: Vec<_> = (0..64u8)
        .map(|t| {
            let b = b.clone();
            tokio::spawn(async move {
                b.commit(vec![Check::Absent(b"x".to_vec())], vec![put(b"x", &[t])])
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(version) => won.push(version),
            Err(BackendError::Conflict {
                index: 0,
                current: Some(_),
            }) => {}
            Err(e) => panic!("{e:?}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one of 64 racers creates the key");
    assert_eq!(b.get(b"x").await.unwrap().unwrap().version, won[0]);
}

/// Reads share one snapshot until a commit lands; every acknowledged commit
/// must still be visible to the next read, from any task (read your writes,
/// and others' acknowledged writes, at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_reads_see_every_acknowledged_commit_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let b = FileBackend::open_shared(&FileConfig::new(dir.path().join("r.redb"))).unwrap();
    for i in 0..200u32 {
        let value = i.to_le_bytes();
        // Warm the snapshot, then commit and read back at once.
        let _ = b.get(b"k").await.unwrap();
        let version = b.commit(vec![], vec![put(b"k", &value)]).await.unwrap();
        let got = b.get(b"k").await.unwrap().unwrap();
        assert_eq!((got.version, got.value.as_slice()), (version, &value[..]));
        let many = b.get_many(&[b"k".to_vec()]).await.unwrap();
        assert_eq!(many[0].as_ref().unwrap().version, version);
        let listed = b.scan(&scan(b"k", None, 10, false)).await.unwrap();
        assert_eq!(listed[0].version, version);
    }
    // A writer task and a reader task: once the writer's commit of n is
    // acknowledged and published, the reader never sees anything older.
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(0u32);
    let writer = {
        let b = b.clone();
        tokio::spawn(async move {
            for n in 1..=300u32 {
                b.commit(vec![], vec![put(b"w", &n.to_le_bytes())])
                    .await
                    .unwrap();
                seen_tx.send(n).unwrap();
            }
        })
    };
    let mut checked = 0;
    while seen_rx.changed().await.is_ok() {
        let acknowledged = *seen_rx.borrow_and_update();
        let got = b.get(b"w").await.unwrap().unwrap();
        let stored = u32::from_le_bytes(got.value.as_slice().try_into().unwrap());
        assert!(
            stored >= acknowledged,
            "read {stored} after {acknowledged} was acknowledged"
        );
        checked += 1;
    }
    writer.await.unwrap();
    assert!(checked > 0);
}

/// What a replica's backend does: takes its primary's commits at their
/// versions (which may skip), a whole copy, and refuses commits of its own.
async fn replica_copies(b: &dyn Backend) {
    b.commit(vec![], vec![put(b"stale", b"x")]).await.unwrap();
    b.make_replica().unwrap();
    assert_eq!(
        b.commit(vec![], vec![put(b"k", b"v")]).await,
        Err(BackendError::ReadOnly)
    );
    let copy = vec![
        kvstash::backend::Entry {
            key: b"a".to_vec(),
            value: b"1".to_vec(),
            version: 7,
        },
        kvstash::backend::Entry {
            key: b"b".to_vec(),
            value: b"2".to_vec(),
            version: 10,
        },
    ];
    b.restore(10, copy).await.unwrap();
    assert_eq!(b.get(b"stale").await.unwrap(), None, "a copy replaces all");
    assert_eq!(b.get(b"a").await.unwrap().unwrap().version, 7);
    assert_eq!(b.current_version().await.unwrap(), 10);
    assert_eq!(
        b.changes(3, 10).await,
        Err(BackendError::Compacted { oldest: 11 }),
        "the feed starts after the copy"
    );
    b.replicate(15, vec![put(b"a", b"3"), del(b"b")])
        .await
        .unwrap();
    b.replicate(20, vec![put(b"c", b"4")]).await.unwrap();
    assert!(matches!(
        b.replicate(20, vec![put(b"c", b"5")]).await,
        Err(BackendError::Invalid(_))
    ));
    assert_eq!(b.get(b"a").await.unwrap().unwrap().version, 15);
    assert_eq!(b.get(b"b").await.unwrap(), None);
    let feed: Vec<u64> = b
        .changes(10, 100)
        .await
        .unwrap()
        .iter()
        .map(|c| c.version)
        .collect();
    assert_eq!(feed, vec![15, 15, 20]);
    assert_eq!(b.current_version().await.unwrap(), 20);
}

#[tokio::test]
async fn memory_and_file_backends_hold_replicas() {
    replica_copies(&MemoryBackend::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("replica.redb");
    {
        let b = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        replica_copies(b.as_ref()).await;
    }
    // Reopened, its log (versions 15 and 20 after the copy's 10) replays.
    let b = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
    assert_eq!(b.current_version().await.unwrap(), 20);
    assert_eq!(b.get(b"c").await.unwrap().unwrap().version, 20);
    assert_eq!(b.changes(10, 100).await.unwrap().len(), 3);
}
