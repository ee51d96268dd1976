//! The standard `wasi:keyvalue` exports, both drafts, called as a
//! third-party component host would call them.

use wasmtime::component::ResourceAny;

use super::{Instance, Pool, StoreOptions};
use crate::bindings::exports::wasi::keyvalue0_2_0_draft as kv1;
use crate::bindings::exports::wasi::keyvalue0_2_0_draft2 as kv2;

fn pool(config: &str) -> Pool {
    Pool::new(config.to_string(), &StoreOptions::default()).unwrap()
}

const MEMORY: &str = r#"{"type":"memory"}"#;

async fn open2(inst: &mut Instance, name: &str) -> Result<ResourceAny, kv2::store::Error> {
    inst.kv
        .wasi_keyvalue0_2_0_draft2_store()
        .call_open(&mut inst.store, name)
        .await
        .unwrap()
}

async fn open1(inst: &mut Instance, name: &str) -> Result<ResourceAny, kv1::store::Error> {
    inst.kv
        .wasi_keyvalue0_2_0_draft_store()
        .call_open(&mut inst.store, name)
        .await
        .unwrap()
}

#[tokio::test]
async fn draft2_store_crud_and_paging() {
    let pool = pool(MEMORY);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let b = open2(inst, "spin").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let store = kv.wasi_keyvalue0_2_0_draft2_store();
    let api = store.bucket();
    assert_eq!(api.call_get(&mut *s, b, "k").await.unwrap(), Ok(None));
    api.call_set(&mut *s, b, "k", b"\x00binary")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        api.call_get(&mut *s, b, "k").await.unwrap(),
        Ok(Some(b"\x00binary".to_vec()))
    );
    assert_eq!(api.call_exists(&mut *s, b, "k").await.unwrap(), Ok(true));
    api.call_delete(&mut *s, b, "k").await.unwrap().unwrap();
    api.call_delete(&mut *s, b, "k").await.unwrap().unwrap();
    assert_eq!(api.call_exists(&mut *s, b, "k").await.unwrap(), Ok(false));

    let pairs: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("key{i:05}"), i.to_string().into_bytes()))
        .collect();
    let batch = kv.wasi_keyvalue0_2_0_draft2_batch();
    batch
        .call_set_many(&mut *s, b, &pairs)
        .await
        .unwrap()
        .unwrap();
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = api
            .call_list_keys(&mut *s, b, cursor.as_deref())
            .await
            .unwrap()
            .unwrap();
        pages += 1;
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(
        keys,
        pairs.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>()
    );
    let bad = api
        .call_list_keys(&mut *s, b, Some("garbage"))
        .await
        .unwrap();
    assert!(matches!(bad, Err(kv2::store::Error::Other(_))), "{bad:?}");

    let got = batch
        .call_get_many(&mut *s, b, &["key00007".to_string(), "absent".to_string()])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        got,
        vec![Some(("key00007".to_string(), b"7".to_vec())), None]
    );
    let all: Vec<String> = pairs.iter().map(|(k, _)| k.clone()).collect();
    batch
        .call_delete_many(&mut *s, b, &all)
        .await
        .unwrap()
        .unwrap();
    let page = api.call_list_keys(&mut *s, b, None).await.unwrap().unwrap();
    assert!(page.keys.is_empty() && page.cursor.is_none());
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn draft2_increment_and_cas() {
    let pool = pool(MEMORY);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let b = open2(inst, "counters").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let atomics = kv.wasi_keyvalue0_2_0_draft2_atomics();
    let api = kv.wasi_keyvalue0_2_0_draft2_store().bucket();
    assert_eq!(
        atomics.call_increment(&mut *s, b, "n", 5).await.unwrap(),
        Ok(5)
    );
    assert_eq!(
        atomics.call_increment(&mut *s, b, "n", -8).await.unwrap(),
        Ok(-3)
    );
    // Spin's encoding: the counter's 8 little-endian bytes.
    assert_eq!(
        api.call_get(&mut *s, b, "n").await.unwrap(),
        Ok(Some((-3i64).to_le_bytes().to_vec()))
    );
    api.call_set(&mut *s, b, "text", b"hello")
        .await
        .unwrap()
        .unwrap();
    let err = atomics.call_increment(&mut *s, b, "text", 1).await.unwrap();
    assert!(matches!(err, Err(kv2::store::Error::Other(_))), "{err:?}");

    // A swap on an unchanged key succeeds.
    let cas = atomics
        .cas()
        .call_new(&mut *s, b, "doc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        atomics.cas().call_current(&mut *s, cas).await.unwrap(),
        Ok(None)
    );
    atomics
        .call_swap(&mut *s, cas, b"v1")
        .await
        .unwrap()
        .unwrap();
    // A swap after someone else wrote fails, and hands back a fresh handle.
    let stale = atomics
        .cas()
        .call_new(&mut *s, b, "doc")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        atomics.cas().call_current(&mut *s, stale).await.unwrap(),
        Ok(Some(b"v1".to_vec()))
    );
    api.call_set(&mut *s, b, "doc", b"v2-by-someone-else")
        .await
        .unwrap()
        .unwrap();
    let fresh = match atomics.call_swap(&mut *s, stale, b"v2-mine").await.unwrap() {
        Err(kv2::atomics::CasError::CasFailed(fresh)) => fresh,
        other => panic!("expected cas-failed, got {other:?}"),
    };
    assert_eq!(
        api.call_get(&mut *s, b, "doc").await.unwrap(),
        Ok(Some(b"v2-by-someone-else".to_vec()))
    );
    assert_eq!(
        atomics.cas().call_current(&mut *s, fresh).await.unwrap(),
        Ok(Some(b"v2-by-someone-else".to_vec()))
    );
    atomics
        .call_swap(&mut *s, fresh, b"v3")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        api.call_get(&mut *s, b, "doc").await.unwrap(),
        Ok(Some(b"v3".to_vec()))
    );
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn draft_store_u64_cursor_increment_and_batch() {
    let pool = pool(MEMORY);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let b = open1(inst, "wasmcloud").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let api = kv.wasi_keyvalue0_2_0_draft_store().bucket();
    let batch = kv.wasi_keyvalue0_2_0_draft_batch();
    let atomics = kv.wasi_keyvalue0_2_0_draft_atomics();
    api.call_set(&mut *s, b, "k", b"v").await.unwrap().unwrap();
    assert_eq!(
        api.call_get(&mut *s, b, "k").await.unwrap(),
        Ok(Some(b"v".to_vec()))
    );
    let pairs: Vec<(String, Vec<u8>)> = (0..1500).map(|i| (format!("p{i:04}"), vec![1])).collect();
    batch
        .call_set_many(&mut *s, b, &pairs)
        .await
        .unwrap()
        .unwrap();
    let mut keys = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let page = api
            .call_list_keys(&mut *s, b, cursor)
            .await
            .unwrap()
            .unwrap();
        keys.extend(page.keys);
        cursor = page.cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(keys.len(), 1501);
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "no key twice, none skipped"
    );
    assert_eq!(
        atomics.call_increment(&mut *s, b, "hits", 2).await.unwrap(),
        Ok(2)
    );
    assert_eq!(
        atomics.call_increment(&mut *s, b, "hits", 3).await.unwrap(),
        Ok(5)
    );
    api.call_delete(&mut *s, b, "k").await.unwrap().unwrap();
    assert_eq!(api.call_get(&mut *s, b, "k").await.unwrap(), Ok(None));
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn standard_errors() {
    let pool = pool(MEMORY);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    assert!(matches!(
        open1(inst, "bad\nname").await,
        Err(kv1::store::Error::NoSuchStore)
    ));
    let b = open2(inst, "b").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let api = kv.wasi_keyvalue0_2_0_draft2_store().bucket();
    let empty_key = api.call_set(&mut *s, b, "", b"v").await.unwrap();
    assert!(matches!(empty_key, Err(kv2::store::Error::Other(ref why)) if why.contains("key")));
    lease.finish(Ok(())).unwrap();

    let read_only = pool_read_only();
    let mut lease = read_only.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let b = open2(inst, "b").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let denied = kv
        .wasi_keyvalue0_2_0_draft2_store()
        .bucket()
        .call_set(&mut *s, b, "k", b"v")
        .await
        .unwrap();
    assert!(
        matches!(denied, Err(kv2::store::Error::AccessDenied)),
        "{denied:?}"
    );
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn empty_and_default_store_names_open_the_default_bucket() {
    let pool = pool(MEMORY);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let empty = open1(inst, "").await.unwrap();
    let default = open2(inst, "default").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    kv.wasi_keyvalue0_2_0_draft_store()
        .bucket()
        .call_set(&mut *s, empty, "k", b"from-draft")
        .await
        .unwrap()
        .unwrap();
    let got = kv
        .wasi_keyvalue0_2_0_draft2_store()
        .bucket()
        .call_get(&mut *s, default, "k")
        .await
        .unwrap();
    assert_eq!(got, Ok(Some(b"from-draft".to_vec())));
    let rich = inst.bucket("default").await.unwrap().unwrap();
    let entry = inst
        .kv
        .kvstash_store_store()
        .bucket()
        .call_get(&mut inst.store, rich, "k")
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.value,
        crate::bindings::exports::kvstash::store::types::Value::Bytes(b"from-draft".to_vec())
    );
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn a_stores_map_limits_the_names_apps_may_open() {
    let pool = pool(r#"{"type":"memory","stores":{"default":"main","cache":"tmp"}}"#);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    assert!(open2(inst, "cache").await.is_ok());
    assert!(open1(inst, "").await.is_ok());
    assert!(matches!(
        open2(inst, "main").await,
        Err(kv2::store::Error::NoSuchStore)
    ));
    let default = open2(inst, "default").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    kv.wasi_keyvalue0_2_0_draft2_store()
        .bucket()
        .call_set(&mut *s, default, "k", b"v")
        .await
        .unwrap()
        .unwrap();
    let main = inst.bucket("main").await.unwrap().unwrap();
    let found = inst
        .kv
        .kvstash_store_store()
        .bucket()
        .call_exists(&mut inst.store, main, "k")
        .await
        .unwrap();
    assert_eq!(found, Ok(true));
    lease.finish(Ok(())).unwrap();
}

fn pool_read_only() -> Pool {
    pool(r#"{"type":"memory","read_only":true}"#)
}

#[tokio::test]
async fn standard_and_rich_api_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"type": "file", "path": dir.path().join("s.redb")}).to_string();
    let store = crate::Store::open(&config).await.unwrap();
    {
        let mut lease = store.pool.acquire().await.unwrap();
        let inst = lease.instance().unwrap();
        let b = open2(inst, "shared").await.unwrap();
        let (kv, s) = (&inst.kv, &mut inst.store);
        let api = kv.wasi_keyvalue0_2_0_draft2_store().bucket();
        api.call_set(&mut *s, b, "json", br#"{"a":1}"#)
            .await
            .unwrap()
            .unwrap();
        api.call_set(&mut *s, b, "raw", &[0xff, 0xfe])
            .await
            .unwrap()
            .unwrap();
        lease.finish(Ok(())).unwrap();
    }
    let bucket = store.bucket("shared");
    assert_eq!(
        bucket.get_json::<serde_json::Value>("json").await.unwrap(),
        Some(serde_json::json!({"a":1}))
    );
    assert_eq!(
        bucket.get("raw").await.unwrap().unwrap().value,
        crate::Value::Bytes(vec![0xff, 0xfe])
    );
    bucket.set_json("from-rich", &[1, 2]).await.unwrap();
    let mut lease = store.pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let b = open1(inst, "shared").await.unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let got = kv
        .wasi_keyvalue0_2_0_draft_store()
        .bucket()
        .call_get(&mut *s, b, "from-rich")
        .await
        .unwrap();
    assert_eq!(got, Ok(Some(b"[1,2]".to_vec())));
    lease.finish(Ok(())).unwrap();
}
