//! `wasi:keyvalue/{store,atomics,batch}` at `0.2.0-draft` and `0.2.0-draft2`.
//!
//! The two drafts differ in cursor and counter types, in draft2's CAS
//! resource, and in how a counter is stored: decimal text for `0.2.0-draft`
//! (as wasmtime's host stores it), 8 little-endian bytes for `0.2.0-draft2`
//! (as Spin's built-in store does). Everything else goes through the helpers
//! below.

use super::{Component, KvError, engine, open_store};
use crate::bindings::exports::wasi::keyvalue0_2_0_draft as kv1;
use crate::bindings::exports::wasi::keyvalue0_2_0_draft2 as kv2;
use crate::engine::{
    ListOptions, LittleEndianI64, MAX_LIST_LIMIT, StoreError, Swap, Value, limits,
};
macro_rules! kv_error {
    ($module:ident) => {
        impl From<StoreError> for $module::store::Error {
            fn from(e: StoreError) -> Self {
                match KvError::from(e) {
                    KvError::NoSuchStore => $module::store::Error::NoSuchStore,
                    KvError::AccessDenied => $module::store::Error::AccessDenied,
                    KvError::Other(why) => $module::store::Error::Other(why),
                }
            }
        }
    };
}
kv_error!(kv1);
kv_error!(kv2);

fn kv_open(identifier: &str) -> Result<String, StoreError> {
    open_store(identifier)
}

fn kv_get(bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(engine()?.get(bucket, key)?.map(|v| v.value.into_bytes()))
}

fn kv_set(bucket: &str, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
    engine()?.set(bucket, key, Value::sniff(value)?)?;
    Ok(())
}

/// A `wasi:keyvalue` key with its value.
type KeyValue = (String, Vec<u8>);

fn kv_get_many(bucket: &str, keys: Vec<String>) -> Result<Vec<Option<KeyValue>>, StoreError> {
    let engine = engine()?;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(limits().batch) {
        let values = engine.get_many(bucket, chunk)?;
        out.extend(
            chunk
                .iter()
                .zip(values)
                .map(|(key, v)| v.map(|v| (key.clone(), v.value.into_bytes()))),
        );
    }
    Ok(out)
}

/// Atomic per chunk of `limits.batch` pairs (the standard asks for no atomicity).
fn kv_set_many(bucket: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
    let engine = engine()?;
    let pairs = pairs
        .into_iter()
        .map(|(key, value)| Ok((key, Value::sniff(value)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut pairs = pairs.into_iter().peekable();
    while pairs.peek().is_some() {
        engine.set_many(bucket, pairs.by_ref().take(limits().batch).collect())?;
    }
    Ok(())
}

fn kv_delete_many(bucket: &str, keys: &[String]) -> Result<(), StoreError> {
    let engine = engine()?;
    for chunk in keys.chunks(limits().batch) {
        engine.delete_many(bucket, chunk)?;
    }
    Ok(())
}

macro_rules! kv_bucket_and_batch {
    ($module:ident, $bucket:ident, $cursor:ty) => {
        pub struct $bucket(String);

        impl $module::store::GuestBucket for $bucket {
            fn get(&self, key: String) -> Result<Option<Vec<u8>>, $module::store::Error> {
                Ok(kv_get(&self.0, &key)?)
            }
            fn set(&self, key: String, value: Vec<u8>) -> Result<(), $module::store::Error> {
                Ok(kv_set(&self.0, &key, value)?)
            }
            fn delete(&self, key: String) -> Result<(), $module::store::Error> {
                engine()?.delete(&self.0, &key)?;
                Ok(())
            }
            fn exists(&self, key: String) -> Result<bool, $module::store::Error> {
                Ok(engine()?.exists(&self.0, &key)?)
            }
            fn list_keys(
                &self,
                cursor: Option<$cursor>,
            ) -> Result<$module::store::KeyResponse, $module::store::Error> {
                Ok(<$cursor as KvCursor>::page(&self.0, cursor)?)
            }
        }

        impl $module::batch::Guest for Component {
            fn get_many(
                bucket: $module::store::BucketBorrow<'_>,
                keys: Vec<String>,
            ) -> Result<Vec<Option<(String, Vec<u8>)>>, $module::store::Error> {
                Ok(kv_get_many(&bucket.get::<$bucket>().0, keys)?)
            }
            fn set_many(
                bucket: $module::store::BucketBorrow<'_>,
                key_values: Vec<(String, Vec<u8>)>,
            ) -> Result<(), $module::store::Error> {
                Ok(kv_set_many(&bucket.get::<$bucket>().0, key_values)?)
            }
            fn delete_many(
                bucket: $module::store::BucketBorrow<'_>,
                keys: Vec<String>,
            ) -> Result<(), $module::store::Error> {
                Ok(kv_delete_many(&bucket.get::<$bucket>().0, &keys)?)
            }
        }
    };
}

kv_bucket_and_batch!(kv1, KvBucket1, u64);
kv_bucket_and_batch!(kv2, KvBucket2, String);

/// Keys per `list-keys` page.
const KV_PAGE: u32 = MAX_LIST_LIMIT;

/// A `list-keys` cursor type and how to page with it.
trait KvCursor: Sized {
    type Response;
    fn page(bucket: &str, cursor: Option<Self>) -> Result<Self::Response, StoreError>;
}

/// Draft: the cursor counts keys already returned.
impl KvCursor for u64 {
    type Response = kv1::store::KeyResponse;
    fn page(bucket: &str, cursor: Option<Self>) -> Result<Self::Response, StoreError> {
        let offset = cursor.unwrap_or(0);
        let (keys, more) = engine()?.list_keys_at(bucket, offset, KV_PAGE)?;
        let next = offset.saturating_add(u64::try_from(keys.len()).unwrap_or(u64::MAX));
        Ok(kv1::store::KeyResponse {
            keys,
            cursor: more.then_some(next),
        })
    }
}

/// Draft2: the cursor is kvstash's own, naming the last key returned.
impl KvCursor for String {
    type Response = kv2::store::KeyResponse;
    fn page(bucket: &str, cursor: Option<Self>) -> Result<Self::Response, StoreError> {
        let page = engine()?.list(
            bucket,
            &ListOptions {
                limit: Some(KV_PAGE),
                cursor,
                keys_only: true,
                ..ListOptions::default()
            },
        )?;
        Ok(kv2::store::KeyResponse {
            keys: page.items.into_iter().map(|item| item.key).collect(),
            cursor: page.cursor,
        })
    }
}

impl kv1::store::Guest for Component {
    type Bucket = KvBucket1;

    fn open(identifier: String) -> Result<kv1::store::Bucket, kv1::store::Error> {
        Ok(kv1::store::Bucket::new(KvBucket1(kv_open(&identifier)?)))
    }
}

impl kv2::store::Guest for Component {
    type Bucket = KvBucket2;

    fn open(identifier: String) -> Result<kv2::store::Bucket, kv2::store::Error> {
        Ok(kv2::store::Bucket::new(KvBucket2(kv_open(&identifier)?)))
    }
}

impl kv1::atomics::Guest for Component {
    fn increment(
        bucket: kv1::store::BucketBorrow<'_>,
        key: String,
        delta: u64,
    ) -> Result<u64, kv1::store::Error> {
        Ok(engine()?.increment(&bucket.get::<KvBucket1>().0, &key, delta)?)
    }
}

/// A draft2 compare-and-swap: what `new` read, to be checked by `swap`.
pub struct Cas {
    bucket: String,
    key: String,
    seen: Option<(Vec<u8>, u64)>,
}

impl Cas {
    fn read(bucket: String, key: String) -> Result<Self, StoreError> {
        let seen = engine()?.read_for_swap(&bucket, &key)?;
        Ok(Cas { bucket, key, seen })
    }
}

impl kv2::atomics::GuestCas for Cas {
    fn new(
        bucket: kv2::store::BucketBorrow<'_>,
        key: String,
    ) -> Result<kv2::atomics::Cas, kv2::store::Error> {
        let bucket = bucket.get::<KvBucket2>().0.clone();
        Ok(kv2::atomics::Cas::new(Cas::read(bucket, key)?))
    }

    fn current(&self) -> Result<Option<Vec<u8>>, kv2::store::Error> {
        Ok(self.seen.as_ref().map(|(value, _)| value.clone()))
    }
}

impl kv2::atomics::Guest for Component {
    type Cas = Cas;

    fn increment(
        bucket: kv2::store::BucketBorrow<'_>,
        key: String,
        delta: i64,
    ) -> Result<i64, kv2::store::Error> {
        let bucket = &bucket.get::<KvBucket2>().0;
        Ok(engine()?.increment(bucket, &key, LittleEndianI64(delta))?.0)
    }

    fn swap(cas: kv2::atomics::Cas, value: Vec<u8>) -> Result<(), kv2::atomics::CasError> {
        let store_error = |e: StoreError| kv2::atomics::CasError::StoreError(e.into());
        let cas: Cas = cas.into_inner();
        // First: opening the configuration sets the limits checked below.
        let engine = engine().map_err(store_error)?;
        let value = Value::sniff(value).map_err(store_error)?;
        let expected = cas.seen.as_ref().map(|(_, version)| *version);
        match engine
            .swap(&cas.bucket, &cas.key, expected, value)
            .map_err(store_error)?
        {
            Swap::Done(_) => Ok(()),
            Swap::Conflict => {
                let fresh = Cas::read(cas.bucket, cas.key).map_err(store_error)?;
                Err(kv2::atomics::CasError::CasFailed(kv2::atomics::Cas::new(
                    fresh,
                )))
            }
        }
    }
}
