//! The component: exports `kvstash:store/storage@0.1.0` over the imported
//! `wasi:keyvalue@0.2.0-draft2` (Spin 3.x and 4.x, wasmCloud).
//!
//! Its configuration is `{"type":"wasi-keyvalue","store":"default",
//! "retention":10000,"max_commit_bytes":16777216}`: the store it opens
//! (Spin's label; `"default"` unless given), how many commits the change
//! feed keeps, and the largest commit it accepts (a commit travels in one
//! value of the host's store). kvstash asks for it
//! with `config()` and opens it with `backend.open`.

wit_bindgen::generate!({
    inline: "
        package kvstash:keyvalue-adapter;
        world adapter {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
            export kvstash:store/storage@0.1.0;
        }
    ",
    path: "../../wit",
    world: "kvstash:keyvalue-adapter/adapter",
    generate_all,
});

use self::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};

use crate::kv::{Kv, KvError};
use crate::store::{self as kv_store, KvStorage};

/// The configuration kvstash gets from `config()`.
const CONFIG: &str = r#"{"type":"wasi-keyvalue","store":"default"}"#;

/// One opened `wasi:keyvalue` store.
struct Bucket(store::Bucket);

fn kv_error(e: store::Error) -> KvError {
    KvError(match e {
        store::Error::NoSuchStore => "no-such-store".into(),
        store::Error::AccessDenied => "access-denied".into(),
        store::Error::Other(why) => why,
    })
}

impl Kv for Bucket {
    type Cas = atomics::Cas;

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.0.get(key).map_err(kv_error)
    }

    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        let found = batch::get_many(&self.0, keys).map_err(kv_error)?;
        // Hosts answer by key; match by key, not by position.
        // (Spin's SQLite store omits missing keys and does not keep order.)
        let by_key: std::collections::HashMap<String, Vec<u8>> =
            found.into_iter().flatten().collect();
        Ok(keys.iter().map(|key| by_key.get(key).cloned()).collect())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.0.set(key, value).map_err(kv_error)
    }

    fn delete(&self, key: &str) -> Result<(), KvError> {
        self.0.delete(key).map_err(kv_error)
    }

    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError> {
        let mut keys = Vec::new();
        let mut cursor = None;
        let mut seen = std::collections::HashSet::new();
        loop {
            let page = self.0.list_keys(cursor.as_deref()).map_err(kv_error)?;
            keys.extend(page.keys.into_iter().filter(|k| k.starts_with(prefix)));
            match page.cursor {
                // Spin returns every key with no cursor; others page.
                Some(next) if seen.insert(next.clone()) => cursor = Some(next),
                // A cursor seen before would loop forever.
                Some(_) => return Err(KvError("list-keys returned a cursor twice".into())),
                None => return Ok(keys),
            }
        }
    }

    fn read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
        let cas = atomics::Cas::new(&self.0, key).map_err(kv_error)?;
        let current = cas.current().map_err(kv_error)?;
        Ok((cas, current))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
        atomics::increment(&self.0, key, delta).map_err(kv_error)
    }

    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError> {
        match atomics::swap(cas, value) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(kv_error(e)),
        }
    }
}

fn parse_config(config: &str) -> Result<(String, kv_store::Limits), StorageError> {
    let invalid = |why: String| StorageError::Invalid(why);
    let value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| invalid(format!("not JSON: {e}")))?;
    match value.get("type").and_then(|t| t.as_str()) {
        Some("wasi-keyvalue") => {}
        other => {
            return Err(invalid(format!(
                "this adapter opens `{{\"type\":\"wasi-keyvalue\"}}`, not {other:?}"
            )));
        }
    }
    let store = match value.get("store") {
        None => "default".to_string(),
        Some(serde_json::Value::String(name)) => name.clone(),
        Some(_) => return Err(invalid("`store` must be a string".into())),
    };
    let positive = |field: &str, default: u64| match value.get(field) {
        None => Ok(default),
        Some(n) => n
            .as_u64()
            .filter(|&n| n > 0)
            .ok_or_else(|| invalid(format!("`{field}` must be a positive integer"))),
    };
    let limits = kv_store::Limits {
        retention: positive("retention", kv_store::Limits::default().retention)?,
        max_commit_bytes: positive(
            "max_commit_bytes",
            kv_store::Limits::default().max_commit_bytes,
        )?,
    };
    Ok((store, limits))
}

fn open_backend(config: &str) -> Result<std::rc::Rc<dyn Storage>, StorageError> {
    let (name, limits) = parse_config(config)?;
    let bucket = store::open(&name).map_err(|e| StorageError::from(kv_error(e)))?;
    Ok(std::rc::Rc::new(KvStorage::with_limits(
        Bucket(bucket),
        limits,
    )))
}

include!("../../storage_export.rs");
