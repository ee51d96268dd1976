//! The async embedding API: [`Store`] and [`Bucket`].

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::kvstash::store::types as wit;
use crate::runtime::{Pool, StoreOptions};

/// Every error the API returns. Input errors leave stored data untouched.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, longer than 4096 bytes, or a batch has too many keys.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The bucket name is empty, longer than 256 bytes, or has a control character.
    #[error("invalid bucket name: {0}")]
    InvalidBucket(String),
    /// The value is not JSON, or larger than 8 MiB.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The list cursor did not come from `list` on this bucket and prefix.
    #[error("invalid list cursor")]
    InvalidCursor,
    /// The store configuration is invalid; the message names the field.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// The value is raw bytes, and the call needs JSON.
    #[error("the stored value is raw bytes, not JSON")]
    NotJson,
    #[error("the store is read-only")]
    ReadOnly,
    /// A write lost a race with other writers too often; retry it.
    #[error("too many concurrent writers; retry")]
    Contention,
    /// The backend failed; nothing is known to have been written.
    #[error("storage failed: {0}")]
    Storage(String),
    /// A value did not (de)serialize as the requested Rust type.
    #[error("value does not match the requested type: {0}")]
    Serde(String),
    /// The component trapped. The call had no effect beyond what its backend
    /// commit (if it got that far) made durable; the instance was discarded
    /// and the store keeps working.
    #[error("the store component trapped: {0}")]
    Trap(String),
    /// The component could not be loaded or instantiated.
    #[error("kvstash runtime: {0}")]
    Runtime(String),
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidKey(why) => Error::InvalidKey(why),
            wit::Error::InvalidBucket(why) => Error::InvalidBucket(why),
            wit::Error::InvalidValue(why) => Error::InvalidValue(why),
            wit::Error::InvalidCursor => Error::InvalidCursor,
            wit::Error::InvalidConfig(why) => Error::InvalidConfig(why),
            wit::Error::NotJson => Error::NotJson,
            wit::Error::ReadOnly => Error::ReadOnly,
            wit::Error::Contention => Error::Contention,
            wit::Error::Storage(why) => Error::Storage(why),
        }
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// JSON text (valid: checked when written).
    Json(String),
    /// Raw bytes, written with `set_bytes` or through `wasi:keyvalue`.
    Bytes(Vec<u8>),
}

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Json(text) => text.as_bytes(),
            Value::Bytes(bytes) => bytes,
        }
    }

    /// Parses a JSON value as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match self {
            Value::Json(text) => {
                serde_json::from_str(text).map_err(|e| Error::Serde(e.to_string()))
            }
            Value::Bytes(_) => Err(Error::NotJson),
        }
    }

    fn from_wit(v: wit::Value) -> Self {
        match v {
            wit::Value::Json(text) => Value::Json(text),
            wit::Value::Bytes(bytes) => Value::Bytes(bytes),
        }
    }
}

/// A value with the version of the commit that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    pub version: u64,
}

/// One item of a [`ListPage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Value,
    pub version: u64,
}

/// What [`Bucket::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// At most this many items (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Continue after the page that returned this cursor.
    pub cursor: Option<String>,
}

/// One page of a listing, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Item>,
    /// `Some` when more items follow: pass it in [`ListOptions::cursor`].
    pub cursor: Option<String>,
}

/// An open store. Cheap to clone; clones share instances and backends.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Arc<Pool>,
}

/// One guest call on a pooled instance: `$body` runs with `$inst` bound to
/// the instance; a trap discards the instance, a WIT error is mapped.
macro_rules! call {
    ($store:expr, |$inst:ident| $body:expr) => {{
        let mut lease = $store.pool.acquire().await?;
        let outcome = {
            let $inst = lease.instance()?;
            $body
        };
        lease.finish(outcome)?.map_err(Error::from)
    }};
}

/// Like [`call!`], for a method of a bucket resource.
macro_rules! bucket_call {
    ($bucket:expr, |$api:ident, $store:ident, $handle:ident| $body:expr) => {{
        let name = &$bucket.name;
        call!($bucket.store, |inst| async {
            let $handle = match inst.bucket(name).await? {
                Ok(handle) => handle,
                Err(e) => return Ok(Err(e)),
            };
            let $api = inst.kv.kvstash_store_store().bucket();
            let $store = &mut inst.store;
            $body.await
        }
        .await)
    }};
}

impl Store {
    /// Opens the store a JSON configuration describes, e.g.
    /// `{"type":"file","path":"data/kvstash.redb"}` or `{"type":"memory"}`.
    /// Configuration errors (bad JSON, unknown `type`, an unusable path) are
    /// reported here, not at first use.
    pub async fn open(config: &str) -> Result<Store, Error> {
        Self::open_with(config, StoreOptions::default()).await
    }

    pub async fn open_with(config: &str, options: StoreOptions) -> Result<Store, Error> {
        let store = Store {
            pool: Arc::new(Pool::new(config.to_string(), &options)?),
        };
        // Opening a bucket makes the guest parse the configuration and open
        // its backends, so their errors surface now.
        store.bucket("default").exists_probe().await?;
        Ok(store)
    }

    /// A handle on bucket `name` (created by its first write). The name is
    /// checked at first use.
    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket {
            store: self.clone(),
            name: name.into(),
        }
    }

    /// Names of the buckets that hold at least one key.
    pub async fn buckets(&self) -> Result<Vec<String>, Error> {
        call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_buckets(&mut inst.store)
            .await)
    }

    /// One line per backend this store has opened ("file /data/kvstash.redb").
    pub fn describe(&self) -> Vec<String> {
        self.pool.summaries()
    }
}

/// A named bucket of a [`Store`].
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Store,
    name: Arc<str>,
}

impl Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn exists_probe(&self) -> Result<(), Error> {
        let name = &self.name;
        call!(self.store, |inst| inst
            .bucket(name)
            .await
            .map(|r| r.map(|_| ())))
    }

    /// The value and version of `key`, `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        let entry = bucket_call!(self, |api, store, handle| api.call_get(store, handle, key))?;
        Ok(entry.map(|e| Entry {
            value: Value::from_wit(e.value),
            version: e.version,
        }))
    }

    /// The value of `key` parsed as `T`, `None` if absent.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get(key).await?.map(|e| e.value.parse()).transpose()
    }

    /// Stores `value` serialized as JSON; returns the new version.
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, Error> {
        let text = serde_json::to_string(value).map_err(|e| Error::Serde(e.to_string()))?;
        self.set_json_text(key, &text).await
    }

    /// Stores JSON text (validated by the store); returns the new version.
    pub async fn set_json_text(&self, key: &str, json: &str) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_set(store, handle, key, json))
    }

    /// Stores raw bytes; returns the new version.
    pub async fn set_bytes(&self, key: &str, value: &[u8]) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_set_bytes(store, handle, key, value))
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete(store, handle, key))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_exists(store, handle, key))
    }

    /// One page of items in key order.
    pub async fn list(&self, options: &ListOptions) -> Result<ListPage, Error> {
        let options = wit::ListOptions {
            prefix: options.prefix.clone(),
            limit: options.limit,
            cursor: options.cursor.clone(),
        };
        let page = bucket_call!(self, |api, store, handle| api
            .call_list(store, handle, &options))?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(|i| Item {
                    key: i.key,
                    value: Value::from_wit(i.value),
                    version: i.version,
                })
                .collect(),
            cursor: page.cursor,
        })
    }

    /// Entries of `keys` (at most 1000), one slot per key.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, Error> {
        let entries = bucket_call!(self, |api, store, handle| api
            .call_get_many(store, handle, keys))?;
        Ok(entries
            .into_iter()
            .map(|e| {
                e.map(|e| Entry {
                    value: Value::from_wit(e.value),
                    version: e.version,
                })
            })
            .collect())
    }

    /// Stores every (key, JSON text) pair atomically; returns the version.
    pub async fn set_many(&self, pairs: &[(String, String)]) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_set_many(store, handle, pairs))
    }

    /// Deletes every key atomically; returns how many existed.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u32, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete_many(store, handle, keys))
    }
}
