//! `fermyon:spin/key-value` (2.0.0 and unversioned), called as Spin calls it.

use super::{Pool, StoreOptions};
use crate::bindings::exports::fermyon::spin::key_value as v1;
use crate::bindings::exports::fermyon::spin2_0_0::key_value as v2;

fn pool(config: &str) -> Pool {
    Pool::new(config.to_string(), &StoreOptions::default()).unwrap()
}

#[tokio::test]
async fn v2_store_round_trips_bytes_and_lists_every_key() {
    let pool = pool(r#"{"type":"memory"}"#);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let store = kv.fermyon_spin2_0_0_key_value().store();
    let default = store.call_open(&mut *s, "default").await.unwrap().unwrap();
    assert_eq!(
        store.call_get(&mut *s, default, "k").await.unwrap(),
        Ok(None)
    );
    store
        .call_set(&mut *s, default, "k", b"\x00\x01bytes")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.call_get(&mut *s, default, "k").await.unwrap(),
        Ok(Some(b"\x00\x01bytes".to_vec()))
    );
    assert_eq!(
        store.call_exists(&mut *s, default, "k").await.unwrap(),
        Ok(true)
    );
    // More keys than one list page: get-keys has no paging, so all come back.
    for i in 0..1200 {
        store
            .call_set(&mut *s, default, &format!("n{i:04}"), b"1")
            .await
            .unwrap()
            .unwrap();
    }
    let keys = store
        .call_get_keys(&mut *s, default)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(keys.len(), 1201);
    assert_eq!(keys.first().map(String::as_str), Some("k"));
    store
        .call_delete(&mut *s, default, "k")
        .await
        .unwrap()
        .unwrap();
    store
        .call_delete(&mut *s, default, "k")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store.call_exists(&mut *s, default, "k").await.unwrap(),
        Ok(false)
    );
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn v2_errors_are_spins() {
    let mapped = pool(r#"{"type":"memory","stores":{"default":"main"}}"#);
    let mut lease = mapped.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let store = kv.fermyon_spin2_0_0_key_value().store();
    assert!(matches!(
        store.call_open(&mut *s, "unconfigured").await.unwrap(),
        Err(v2::Error::NoSuchStore)
    ));
    let default = store.call_open(&mut *s, "default").await.unwrap().unwrap();
    let bad_key = store.call_set(&mut *s, default, "", b"v").await.unwrap();
    assert!(matches!(bad_key, Err(v2::Error::Other(ref why)) if why.contains("key")));
    lease.finish(Ok(())).unwrap();

    let read_only = pool(r#"{"type":"memory","read_only":true}"#);
    let mut lease = read_only.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let store = kv.fermyon_spin2_0_0_key_value().store();
    let default = store.call_open(&mut *s, "default").await.unwrap().unwrap();
    assert!(matches!(
        store.call_set(&mut *s, default, "k", b"v").await.unwrap(),
        Err(v2::Error::AccessDenied)
    ));
    lease.finish(Ok(())).unwrap();
}

#[tokio::test]
async fn v1_handles_open_close_and_report_missing_keys() {
    let pool = pool(r#"{"type":"memory"}"#);
    let mut lease = pool.acquire().await.unwrap();
    let inst = lease.instance().unwrap();
    let (kv, s) = (&inst.kv, &mut inst.store);
    let api = kv.fermyon_spin_key_value();
    let h = api.call_open(&mut *s, "default").await.unwrap().unwrap();
    assert_eq!(
        api.call_get(&mut *s, h, "k").await.unwrap(),
        Err(v1::Error::NoSuchKey)
    );
    api.call_set(&mut *s, h, "k", b"v").await.unwrap().unwrap();
    assert_eq!(
        api.call_get(&mut *s, h, "k").await.unwrap(),
        Ok(b"v".to_vec())
    );
    assert_eq!(
        api.call_get_keys(&mut *s, h).await.unwrap(),
        Ok(vec!["k".to_string()])
    );
    // A second handle on the same label sees the same data.
    let other = api.call_open(&mut *s, "").await.unwrap().unwrap();
    assert_ne!(other, h);
    assert_eq!(
        api.call_exists(&mut *s, other, "k").await.unwrap(),
        Ok(true)
    );
    api.call_close(&mut *s, h).await.unwrap();
    assert_eq!(
        api.call_get(&mut *s, h, "k").await.unwrap(),
        Err(v1::Error::InvalidStore)
    );
    assert_eq!(
        api.call_get(&mut *s, 0, "k").await.unwrap(),
        Err(v1::Error::InvalidStore)
    );
    // Closing twice, or an unknown handle, does nothing.
    api.call_close(&mut *s, h).await.unwrap();
    api.call_close(&mut *s, 999).await.unwrap();
    // Handles are bounded.
    let mut last = Ok(0);
    for _ in 0..300 {
        last = api.call_open(&mut *s, "default").await.unwrap();
        if last.is_err() {
            break;
        }
    }
    assert_eq!(last, Err(v1::Error::StoreTableFull));
    lease.finish(Ok(())).unwrap();
}
