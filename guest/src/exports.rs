//! The exported interfaces: `kvstash:store/store` and `wasi:keyvalue` in both
//! versions, all thin shims over one [`Engine`]. Each exported error type is
//! produced from [`StoreError`] in exactly one place.

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::exports::kvstash::store::store as api;
use crate::bindings::exports::wasi::keyvalue0_2_0_draft as kv1;
use crate::bindings::exports::wasi::keyvalue0_2_0_draft2 as kv2;
use crate::bindings::kvstash::store::storage;
use crate::bindings::kvstash::store::types;
use crate::config;
use crate::engine::{
    Clock, Condition, Engine, EventKind, Holder, Lease, ListOptions, MAX_BATCH, MAX_LIST_LIMIT,
    Mutation, Op, Prefixed, Storage, StoreError, Swap, TxnCheck, Value, Versioned, WriteOptions,
    validate_bucket,
};
use crate::wit_storage::WitStorage;

pub struct Component;

/// The host's wall clock (`wasi:clocks/wall-clock`).
pub struct WasiClock;

impl Clock for WasiClock {
    fn now_ms(&self) -> u64 {
        let now = wasi::clocks::wall_clock::now();
        now.seconds
            .saturating_mul(1000)
            .saturating_add(u64::from(now.nanoseconds / 1_000_000))
    }
}

type StoreEngine = Engine<Box<dyn Storage>, WasiClock>;

thread_local! {
    /// Built on first use from the host's configuration, then kept for the
    /// life of the instance. A failed build is not cached: the next call
    /// retries (the host may have been unreachable).
    static ENGINE: RefCell<Option<Rc<StoreEngine>>> = const { RefCell::new(None) };
}

fn engine() -> Result<Rc<StoreEngine>, StoreError> {
    if let Some(engine) = ENGINE.with(|cell| cell.borrow().clone()) {
        return Ok(engine);
    }
    let config = config::parse(&storage::config())?;
    let leaf = WitStorage::open(&config.leaf)?;
    let storage: Box<dyn Storage> = match config.prefix {
        Some(prefix) => Box::new(Prefixed::new(leaf, prefix)),
        None => Box::new(leaf),
    };
    let engine = Rc::new(Engine::new(storage, WasiClock).read_only(config.read_only));
    ENGINE.with(|cell| *cell.borrow_mut() = Some(engine.clone()));
    Ok(engine)
}

// ---- kvstash:store/store -------------------------------------------------

impl From<StoreError> for types::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidKey(why) => types::Error::InvalidKey(why),
            StoreError::InvalidBucket(why) => types::Error::InvalidBucket(why),
            StoreError::InvalidValue(why) => types::Error::InvalidValue(why),
            StoreError::InvalidCursor => types::Error::InvalidCursor,
            StoreError::InvalidConfig(why) => types::Error::InvalidConfig(why),
            StoreError::InvalidArgument(why) => types::Error::InvalidArgument(why),
            StoreError::Conflict { current } => types::Error::Conflict(current),
            StoreError::CheckFailed { index, current } => {
                types::Error::CheckFailed(types::CheckFailure { index, current })
            }
            StoreError::NotFound(why) => types::Error::NotFound(why),
            StoreError::InvalidPath(why) => types::Error::InvalidPath(why),
            StoreError::PathNotFound(why) => types::Error::PathNotFound(why),
            StoreError::PathTypeMismatch(why) => types::Error::PathTypeMismatch(why),
            StoreError::NotJson => types::Error::NotJson,
            StoreError::SchemaViolation(why) => types::Error::SchemaViolation(why),
            StoreError::ReadOnly => types::Error::ReadOnly,
            StoreError::Contention => types::Error::Contention,
            StoreError::Compacted { oldest } => types::Error::Compacted(oldest),
            StoreError::Locked(h) => types::Error::Locked(holder_out(h)),
            StoreError::LeaseLost(why) => types::Error::LeaseLost(why),
            e @ (StoreError::Storage(_) | StoreError::Corrupt(_)) => {
                types::Error::Storage(e.to_string())
            }
        }
    }
}

fn value_out(value: Value) -> types::Value {
    match value {
        Value::Json(text) => types::Value::Json(text),
        Value::Bytes(bytes) => types::Value::Bytes(bytes),
    }
}

fn value_in(value: types::Value) -> Result<Value, StoreError> {
    match value {
        types::Value::Json(text) => Value::json(text),
        types::Value::Bytes(bytes) => Value::bytes(bytes),
    }
}

fn entry_out(v: Versioned) -> types::Entry {
    types::Entry {
        value: value_out(v.value),
        version: v.version,
        expires_at: v.expires_at_ms,
    }
}

fn holder_out(h: Holder) -> types::LockHolder {
    types::LockHolder {
        token: h.token,
        expires_at: h.expires_at_ms,
        owner: h.owner,
    }
}

fn lease_out(l: Lease) -> types::Lease {
    types::Lease {
        name: l.name,
        token: l.token,
        expires_at: l.expires_at_ms,
    }
}

fn check_in(c: types::Check) -> Result<TxnCheck, StoreError> {
    let c = match c {
        types::Check::Key(c) => c,
        types::Check::Lease(l) => {
            return Ok(TxnCheck::Lease {
                name: l.name,
                token: l.token,
            });
        }
    };
    let condition = match c.condition {
        types::Condition::VersionIs(version) => Condition::VersionIs(version),
        types::Condition::Absent => Condition::Absent,
        types::Condition::Exists => Condition::Exists,
        types::Condition::ValueEquals(value) => Condition::ValueEquals(value_in(value)?),
    };
    Ok(TxnCheck::Key {
        bucket: c.bucket,
        key: c.key,
        condition,
    })
}

fn mutation_in(m: types::Mutation) -> Result<Mutation, StoreError> {
    let op = match m.op {
        types::Op::Set(value) => Op::Set(value_in(value)?),
        types::Op::Delete => Op::Delete,
        types::Op::Increment(delta) => Op::Increment(delta),
        types::Op::SetPath(p) => Op::SetPath {
            path: p.path,
            value: p.value,
        },
        types::Op::DeletePath(path) => Op::DeletePath { path },
        types::Op::AppendPath(p) => Op::AppendPath {
            path: p.path,
            value: p.value,
        },
    };
    Ok(Mutation {
        bucket: m.bucket,
        key: m.key,
        op,
        ttl_ms: m.ttl_ms,
    })
}

pub struct Bucket {
    name: String,
}

impl api::Guest for Component {
    type Bucket = Bucket;

    fn buckets() -> Result<Vec<String>, types::Error> {
        Ok(engine()?.buckets()?)
    }

    fn transact(
        checks: Vec<types::Check>,
        mutations: Vec<types::Mutation>,
    ) -> Result<u64, types::Error> {
        let checks = checks
            .into_iter()
            .map(check_in)
            .collect::<Result<Vec<_>, _>>()?;
        let mutations = mutations
            .into_iter()
            .map(mutation_in)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(engine()?.transact(&checks, &mutations)?)
    }

    fn sweep(limit: u32) -> Result<u32, types::Error> {
        Ok(engine()?.sweep(limit)?)
    }

    fn acquire(
        name: String,
        ttl_ms: u64,
        owner: Option<String>,
    ) -> Result<types::Lease, types::Error> {
        Ok(lease_out(engine()?.acquire(
            &name,
            ttl_ms,
            owner.as_deref(),
        )?))
    }

    fn renew(name: String, token: u64, ttl_ms: u64) -> Result<types::Lease, types::Error> {
        Ok(lease_out(engine()?.renew(&name, token, ttl_ms)?))
    }

    fn release(name: String, token: u64) -> Result<bool, types::Error> {
        Ok(engine()?.release(&name, token)?)
    }

    fn lock_status(name: String) -> Result<Option<types::LockHolder>, types::Error> {
        Ok(engine()?.lock_holder(&name)?.map(holder_out))
    }
}

impl api::GuestBucket for Bucket {
    fn open(name: String) -> Result<api::Bucket, types::Error> {
        // Surfaces configuration errors at open time; reads no data.
        engine()?;
        validate_bucket(&name)?;
        Ok(api::Bucket::new(Bucket { name }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn get(&self, key: String) -> Result<Option<types::Entry>, types::Error> {
        Ok(engine()?.get(&self.name, &key)?.map(entry_out))
    }

    fn set(&self, key: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.set(&self.name, &key, Value::json(value)?)?)
    }

    fn set_bytes(&self, key: String, value: Vec<u8>) -> Result<u64, types::Error> {
        Ok(engine()?.set(&self.name, &key, Value::bytes(value)?)?)
    }

    fn set_with(
        &self,
        key: String,
        value: types::Value,
        options: types::WriteOptions,
    ) -> Result<u64, types::Error> {
        let options = WriteOptions {
            if_version: options.if_version,
            if_absent: options.if_absent,
            ttl_ms: options.ttl_ms,
        };
        Ok(engine()?.set_with(&self.name, &key, value_in(value)?, &options)?)
    }

    fn delete(&self, key: String) -> Result<bool, types::Error> {
        Ok(engine()?.delete(&self.name, &key)?)
    }

    fn delete_if_version(&self, key: String, version: u64) -> Result<u64, types::Error> {
        Ok(engine()?.delete_if_version(&self.name, &key, version)?)
    }

    fn increment(&self, key: String, delta: i64) -> Result<i64, types::Error> {
        Ok(engine()?.increment(&self.name, &key, delta)?)
    }

    fn get_path(
        &self,
        key: String,
        path: String,
    ) -> Result<Option<types::PathValue>, types::Error> {
        Ok(engine()?
            .get_path(&self.name, &key, &path)?
            .map(|(json, version)| types::PathValue { json, version }))
    }

    fn set_path(&self, key: String, path: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::SetPath { path, value }, None)?)
    }

    fn delete_path(&self, key: String, path: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::DeletePath { path }, None)?)
    }

    fn append_path(&self, key: String, path: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::AppendPath { path, value }, None)?)
    }

    fn watch(
        &self,
        prefix: Option<String>,
        since: Option<u64>,
        limit: u32,
    ) -> Result<types::WatchPage, types::Error> {
        let page = engine()?.watch(&self.name, prefix.as_deref(), since, limit)?;
        Ok(types::WatchPage {
            events: page
                .events
                .into_iter()
                .map(|e| types::Event {
                    version: e.version,
                    key: e.key,
                    kind: match e.kind {
                        EventKind::Set => types::EventKind::Set,
                        EventKind::Delete => types::EventKind::Delete,
                        EventKind::Expire => types::EventKind::Expire,
                    },
                    value: e.value.map(value_out),
                    expires_at: e.expires_at_ms,
                })
                .collect(),
            next: page.next,
        })
    }

    fn exists(&self, key: String) -> Result<bool, types::Error> {
        Ok(engine()?.exists(&self.name, &key)?)
    }

    fn set_schema(&self, schema: Option<String>, force: bool) -> Result<u64, types::Error> {
        Ok(engine()?.set_schema(&self.name, schema.as_deref(), force)?)
    }

    fn set_history(&self, keep: u32) -> Result<(), types::Error> {
        Ok(engine()?.set_history(&self.name, keep)?)
    }

    fn undo(&self) -> Result<u64, types::Error> {
        Ok(engine()?.undo(&self.name)?)
    }

    fn redo(&self) -> Result<u64, types::Error> {
        Ok(engine()?.redo(&self.name)?)
    }

    fn history(&self) -> Result<types::HistoryInfo, types::Error> {
        let (undoable, redoable) = engine()?.history(&self.name)?;
        Ok(types::HistoryInfo { undoable, redoable })
    }

    fn get_schema(&self) -> Result<Option<types::SchemaInfo>, types::Error> {
        Ok(engine()?
            .schema(&self.name)?
            .map(|(json, version)| types::SchemaInfo { json, version }))
    }

    fn list(&self, options: types::ListOptions) -> Result<types::ListPage, types::Error> {
        let page = engine()?.list(
            &self.name,
            &ListOptions {
                prefix: options.prefix,
                start: options.start,
                end: options.end,
                limit: options.limit,
                cursor: options.cursor,
                reverse: options.reverse,
                keys_only: options.keys_only,
            },
        )?;
        Ok(types::ListPage {
            items: page
                .items
                .into_iter()
                .map(|item| types::Item {
                    key: item.key,
                    value: item.value.map(value_out),
                    version: item.version,
                    expires_at: item.expires_at_ms,
                })
                .collect(),
            cursor: page.cursor,
        })
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<types::Entry>>, types::Error> {
        Ok(engine()?
            .get_many(&self.name, &keys)?
            .into_iter()
            .map(|v| v.map(entry_out))
            .collect())
    }

    fn set_many(&self, entries: Vec<(String, String)>) -> Result<u64, types::Error> {
        let pairs = entries
            .into_iter()
            .map(|(key, value)| Ok((key, Value::json(value)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(engine()?.set_many(&self.name, pairs)?)
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<u32, types::Error> {
        Ok(engine()?.delete_many(&self.name, &keys)?)
    }
}

// ---- wasi:keyvalue, both versions ----------------------------------------
//
// The two drafts differ only in cursor and counter types and in draft2's CAS
// resource; everything else goes through the helpers below.

/// The three errors `wasi:keyvalue` knows, from ours.
enum KvError {
    NoSuchStore,
    AccessDenied,
    Other(String),
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidBucket(_) => KvError::NoSuchStore,
            StoreError::ReadOnly => KvError::AccessDenied,
            e @ (StoreError::InvalidKey(_)
            | StoreError::InvalidValue(_)
            | StoreError::InvalidCursor
            | StoreError::InvalidConfig(_)
            | StoreError::InvalidArgument(_)
            | StoreError::Conflict { .. }
            | StoreError::CheckFailed { .. }
            | StoreError::NotFound(_)
            | StoreError::InvalidPath(_)
            | StoreError::PathNotFound(_)
            | StoreError::PathTypeMismatch(_)
            | StoreError::NotJson
            | StoreError::Contention
            | StoreError::Compacted { .. }
            | StoreError::Locked(_)
            | StoreError::LeaseLost(_)
            | StoreError::SchemaViolation(_)
            | StoreError::Storage(_)
            | StoreError::Corrupt(_)) => KvError::Other(e.to_string()),
        }
    }
}

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
    engine()?;
    validate_bucket(identifier)?;
    Ok(identifier.to_string())
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
    for chunk in keys.chunks(MAX_BATCH) {
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

/// Atomic per chunk of [`MAX_BATCH`] pairs (the standard asks for no atomicity).
fn kv_set_many(bucket: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), StoreError> {
    let engine = engine()?;
    let pairs = pairs
        .into_iter()
        .map(|(key, value)| Ok((key, Value::sniff(value)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut pairs = pairs.into_iter().peekable();
    while pairs.peek().is_some() {
        engine.set_many(bucket, pairs.by_ref().take(MAX_BATCH).collect())?;
    }
    Ok(())
}

fn kv_delete_many(bucket: &str, keys: &[String]) -> Result<(), StoreError> {
    let engine = engine()?;
    for chunk in keys.chunks(MAX_BATCH) {
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
        Ok(engine()?.increment(&bucket.get::<KvBucket2>().0, &key, delta)?)
    }

    fn swap(cas: kv2::atomics::Cas, value: Vec<u8>) -> Result<(), kv2::atomics::CasError> {
        let store_error = |e: StoreError| kv2::atomics::CasError::StoreError(e.into());
        let cas: Cas = cas.into_inner();
        let value = Value::sniff(value).map_err(store_error)?;
        let expected = cas.seen.as_ref().map(|(_, version)| *version);
        let engine = engine().map_err(store_error)?;
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
