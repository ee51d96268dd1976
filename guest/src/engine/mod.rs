//! The store logic, generic over [`Storage`] (where bytes live) and
//! [`Clock`] (what time it is), so it runs natively in tests and on the
//! component's imports.
//!
//! # Layout
//! - `keys` — storage-key layout (data, expiry index), limits, list cursors
//! - `record` — the versioned on-storage record format
//! - `storage` — the [`Storage`] trait and the in-memory reference [`MemStorage`]
//! - `clock` — [`Clock`], and [`Now`]: one clock read per operation at most
//! - `txn` — the read-modify-write core: transactions, conditional writes,
//!   increments, document paths, compare-and-swap, deletes, the TTL sweep
//! - `list` — ordered listing: prefix, range, reverse, cursors, keys only
//! - `doc` — RFC 6901 JSON Pointers into documents
//! - `prefixed` — the `prefix` layer: a store inside another store's key space
//! - `read_only` — a store below the root that refuses commits
//! - `caching` — the `caching` layer: a store's records in memory in front of it
//! - `migrating` — the `migrating` layer: reads from one store, writes to both, and the copy

mod caching;
mod clock;
mod doc;
mod history;
mod json;
mod keys;
mod lease;
mod limits;
mod list;
mod meta;
mod migrating;
mod prefixed;
mod read_only;
mod record;
mod retry;
mod schema;
mod storage;
mod txn;
mod watch;

pub use caching::{CachePolicy, CacheStats, Caching};
pub use clock::{Clock, ManualClock, Now};
pub use doc::Pointer;
pub use history::MAX_HISTORY;
pub use keys::{MAX_BUCKET_LEN, validate_bucket};
pub use lease::{Holder, Lease};
pub use limits::{Limits, limits, set_limits};
pub use list::{Item, ListOptions, ListPage};
pub use meta::BucketMeta;
pub use migrating::{CopyPage, Migrating, Summary, VerifyPage};
pub use prefixed::Prefixed;
pub use read_only::ReadOnly;
pub use record::{Encoding, Record};
pub use retry::DEFAULT_DEADLINE_MS as DEFAULT_RETRY_DEADLINE_MS;
pub use schema::Schema;
pub use storage::{Change, Check, Entry, MAX_SCAN, MemStorage, Storage, StorageError, Write};
pub use txn::{Condition, Mutation, Op, Swap, TxnCheck, WriteOptions};
pub use watch::{Event, EventKind, WatchPage};

/// Default and largest page of `list`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// Longest time-to-live: 100 years, in milliseconds.
pub const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

/// Every way an engine operation can fail. Mapped once to each exported error
/// type at the export boundary (`crate::exports`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    InvalidKey(String),
    InvalidBucket(String),
    InvalidValue(String),
    InvalidCursor,
    InvalidConfig(String),
    /// An argument other than key, bucket or value is out of range or
    /// contradicts another (a zero TTL, `if_version` with `if_absent`).
    InvalidArgument(String),
    /// A conditional write found the key at another version (`None`: absent).
    Conflict {
        current: Option<u64>,
    },
    /// Check number `index` of a transaction did not hold; `current` is the
    /// checked key's version (`None`: absent).
    CheckFailed {
        index: u32,
        current: Option<u64>,
    },
    /// The operation needs a key that does not exist.
    NotFound(String),
    /// A JSON Pointer is malformed.
    InvalidPath(String),
    /// A JSON Pointer names a member or element that does not exist.
    PathNotFound(String),
    /// A JSON Pointer goes through a value of the wrong type.
    PathTypeMismatch(String),
    /// The call needs JSON and the stored value is raw bytes.
    NotJson,
    ReadOnly,
    /// A write into a typed bucket does not satisfy its schema (or a schema
    /// cannot be set because an existing value does not); the message names
    /// the key and the failing path.
    SchemaViolation(String),
    /// A read-modify-write lost the race too many times in a row.
    Contention,
    /// The lock is held by another lease.
    Locked(Holder),
    /// The lease is no longer held (expired, released, or taken since).
    LeaseLost(String),
    /// A watch asked for changes older than the backend retains; `oldest`
    /// is the oldest version it can still resume from.
    Compacted {
        oldest: u64,
    },
    /// The backend failed.
    Storage(String),
    /// A stored record or key could not be decoded.
    Corrupt(String),
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::InvalidKey(why) => write!(f, "invalid key: {why}"),
            StoreError::InvalidBucket(why) => write!(f, "invalid bucket: {why}"),
            StoreError::InvalidValue(why) => write!(f, "invalid value: {why}"),
            StoreError::InvalidCursor => write!(f, "invalid cursor"),
            StoreError::InvalidConfig(why) => write!(f, "invalid store configuration: {why}"),
            StoreError::InvalidArgument(why) => write!(f, "invalid argument: {why}"),
            StoreError::Conflict { current } => match current {
                Some(v) => write!(f, "conflict: the key is at version {v}"),
                None => write!(f, "conflict: the key does not exist"),
            },
            StoreError::CheckFailed { index, current } => match current {
                Some(v) => write!(f, "check {index} failed: the key is at version {v}"),
                None => write!(f, "check {index} failed: the key does not exist"),
            },
            StoreError::NotFound(why) => write!(f, "not found: {why}"),
            StoreError::InvalidPath(why) => write!(f, "invalid path: {why}"),
            StoreError::PathNotFound(why) => write!(f, "path not found: {why}"),
            StoreError::PathTypeMismatch(why) => write!(f, "path type mismatch: {why}"),
            StoreError::NotJson => write!(f, "the stored value is raw bytes, not JSON"),
            StoreError::ReadOnly => write!(f, "the store is read-only"),
            StoreError::SchemaViolation(why) => write!(f, "schema violation: {why}"),
            StoreError::Contention => write!(f, "too many concurrent writers; retry"),
            StoreError::Locked(h) => write!(
                f,
                "locked: held with token {} until {} ms since the epoch{}",
                h.token,
                h.expires_at_ms,
                h.owner
                    .as_ref()
                    .map(|o| format!(" by `{o}`"))
                    .unwrap_or_default()
            ),
            StoreError::LeaseLost(why) => write!(f, "lease lost: {why}"),
            StoreError::Compacted { oldest } => write!(
                f,
                "changes before version {oldest} are no longer retained; resume from {oldest} or later"
            ),
            StoreError::Storage(why) => write!(f, "storage failed: {why}"),
            // The backend's own messages say "corrupt data in …" already.
            StoreError::Corrupt(why) if why.starts_with("corrupt data") => f.write_str(why),
            StoreError::Corrupt(why) => write!(f, "corrupt data in storage: {why}"),
        }
    }
}

impl From<StorageError> for StoreError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::ReadOnly => StoreError::ReadOnly,
            StorageError::Invalid(why) => StoreError::InvalidConfig(why),
            StorageError::Unavailable(why) => StoreError::Storage(why),
            StorageError::Corrupt(why) => StoreError::Corrupt(why),
            // Conflicts are handled where they can happen; one that escapes
            // is a storage failure as far as the caller can tell.
            StorageError::Conflict { index, current } => StoreError::Storage(format!(
                "unexpected conflict on check {index} (current version {current:?})"
            )),
            StorageError::Compacted { oldest } => StoreError::Compacted { oldest },
        }
    }
}

/// A value as the API sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// JSON text, valid by construction (checked on write).
    Json(String),
    Bytes(Vec<u8>),
}

impl Value {
    /// JSON text from an API caller: rejected unless it parses.
    pub fn json(text: String) -> Result<Self, StoreError> {
        check_size(text.len())?;
        json::check(&text).map_err(|e| StoreError::InvalidValue(format!("not valid JSON: {e}")))?;
        Ok(Value::Json(text))
    }

    /// Bytes from `wasi:keyvalue`: kept as JSON when they are JSON, so the
    /// rich API reads them as such, else as raw bytes.
    pub fn sniff(bytes: Vec<u8>) -> Result<Self, StoreError> {
        check_size(bytes.len())?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) if json::check(&text).is_ok() => Value::Json(text),
            Ok(text) => Value::Bytes(text.into_bytes()),
            Err(not_utf8) => Value::Bytes(not_utf8.into_bytes()),
        })
    }

    /// Raw bytes, taken as they are.
    pub fn bytes(bytes: Vec<u8>) -> Result<Self, StoreError> {
        check_size(bytes.len())?;
        Ok(Value::Bytes(bytes))
    }

    /// The value's bytes, whatever its encoding.
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Value::Json(text) => text.into_bytes(),
            Value::Bytes(bytes) => bytes,
        }
    }

    fn into_record(self, expires_at_ms: Option<u64>) -> Record {
        let mut record = match self {
            Value::Json(text) => Record::json(text),
            Value::Bytes(bytes) => Record::bytes(bytes),
        };
        record.expires_at_ms = expires_at_ms;
        record
    }

    fn from_record(record: Record) -> Result<Self, StoreError> {
        match record.encoding {
            Encoding::Json => String::from_utf8(record.payload)
                .map(Value::Json)
                .map_err(|_| StoreError::Corrupt("JSON record is not UTF-8".into())),
            Encoding::Bytes => Ok(Value::Bytes(record.payload)),
        }
    }
}

fn check_size(len: usize) -> Result<(), StoreError> {
    let most = limits().value_bytes;
    if len > most {
        return Err(StoreError::InvalidValue(format!(
            "value is {len} bytes, at most {most} are allowed (limits.value_bytes)"
        )));
    }
    Ok(())
}

/// A live value with its version and expiry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Value,
    pub version: u64,
    /// When the key expires, in ms since the UNIX epoch.
    pub expires_at_ms: Option<u64>,
}

impl Versioned {
    fn from_record(record: Record, version: u64) -> Result<Self, StoreError> {
        let expires_at_ms = record.expires_at_ms;
        Ok(Self {
            value: Value::from_record(record)?,
            version,
            expires_at_ms,
        })
    }
}

/// A bucket's rules and the version of their record (`None`: never set).
type CachedMeta = (Option<u64>, std::rc::Rc<BucketMeta>);

/// The store logic over one storage and one clock.
#[derive(Debug)]
pub struct Engine<S, C> {
    storage: S,
    clock: C,
    read_only: bool,
    /// Bucket rules by bucket, with the version of their record; checked
    /// by a guard on every commit that relies on them (`meta`).
    meta_cache: std::cell::RefCell<std::collections::BTreeMap<String, CachedMeta>>,
    /// How long an operation retries lost races before `contention`.
    retry_deadline_ms: u64,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    pub fn new(storage: S, clock: C) -> Self {
        Self {
            storage,
            clock,
            read_only: false,
            meta_cache: std::cell::RefCell::new(std::collections::BTreeMap::new()),
            retry_deadline_ms: DEFAULT_RETRY_DEADLINE_MS,
        }
    }

    /// How long an operation retries lost races (with backoff) before it
    /// gives up with [`StoreError::Contention`].
    pub fn retry_deadline_ms(mut self, ms: u64) -> Self {
        self.retry_deadline_ms = ms;
        self
    }

    /// The retry state of one operation.
    fn retry(&self) -> retry::Retry<'_> {
        retry::Retry::new(&self.clock, self.retry_deadline_ms)
    }

    /// Rejects every write with [`StoreError::ReadOnly`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn now(&self) -> Now<'_> {
        Now::new(&self.clock)
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    /// The live value of `key`, `None` if absent or expired.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        keys::validate_bucket(bucket)?;
        keys::validate_key(key)?;
        let now = self.now();
        let storage_key = keys::data_key(bucket, key);
        let Some(entry) = self.storage.get(&storage_key)? else {
            return Ok(None);
        };
        let record = Record::decode(entry.value)?;
        if now.expired(record.expires_at_ms) {
            self.reclaim(vec![(storage_key, entry.version, record.expires_at_ms)]);
            return Ok(None);
        }
        Ok(Some(Versioned::from_record(record, entry.version)?))
    }

    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(bucket, key)?.is_some())
    }

    /// Stores `value` (no condition, no expiry); returns the new version.
    pub fn set(&self, bucket: &str, key: &str, value: Value) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        keys::validate_key(key)?;
        self.writable()?;
        self.commit_blind(vec![(
            keys::data_key(bucket, key),
            Some(value.into_record(None)),
        )])
    }

    /// Commits writes that depend on no read (the last write of a key
    /// wins); retries when the bucket rules changed meanwhile. Nothing is
    /// copied per attempt: the commit encodes from `changes`.
    fn commit_blind(&self, changes: Vec<(Vec<u8>, Option<Record>)>) -> Result<u64, StoreError> {
        self.writable()?;
        let changes = if changes.len() > 1 {
            let deduplicated: std::collections::BTreeMap<Vec<u8>, Option<Record>> =
                changes.into_iter().collect();
            deduplicated.into_iter().collect()
        } else {
            changes
        };
        if changes.is_empty() {
            return Err(StoreError::Storage("a blind write wrote nothing".into()));
        }
        let mut retry = self.retry();
        loop {
            match self.commit_changes(Vec::new(), &changes, Vec::new(), true)? {
                meta::Committed::At(version) => return Ok(version),
                meta::Committed::Conflict if retry.again() => continue,
                meta::Committed::Conflict => return Err(StoreError::Contention),
            }
        }
    }

    /// The live values of `user_keys`, one slot per key.
    pub fn get_many(
        &self,
        bucket: &str,
        user_keys: &[String],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        let storage_keys = batch_keys(bucket, user_keys)?;
        let now = self.now();
        let mut expired = Vec::new();
        let found = self
            .storage
            .get_many(&storage_keys)?
            .into_iter()
            .map(|entry| {
                let Some(entry) = entry else { return Ok(None) };
                let record = Record::decode(entry.value)?;
                if now.expired(record.expires_at_ms) {
                    expired.push((entry.key, entry.version, record.expires_at_ms));
                    return Ok(None);
                }
                Versioned::from_record(record, entry.version).map(Some)
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.reclaim(expired);
        Ok(found)
    }

    /// Writes every pair in one atomic commit (no expiry).
    pub fn set_many(&self, bucket: &str, pairs: Vec<(String, Value)>) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        check_batch_len(pairs.len())?;
        let writes = pairs
            .into_iter()
            .map(|(key, value)| {
                keys::validate_key(&key)?;
                Ok((keys::data_key(bucket, &key), Some(value.into_record(None))))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.writable()?;
        if writes.is_empty() {
            return Ok(self.storage.current_version()?);
        }
        self.commit_blind(writes)
    }

    /// Names of the buckets that hold at least one live key.
    pub fn buckets(&self) -> Result<Vec<String>, StoreError> {
        let end = keys::data_end();
        let mut start = keys::bucket_prefix("");
        start.pop(); // just the data tag
        let mut names = Vec::new();
        while let Some(entry) = self.storage.scan(&start, Some(&end), 1, false)?.pop() {
            let name = keys::bucket_of(&entry.key)
                .ok_or_else(|| StoreError::Corrupt("data key without a bucket".into()))?
                .to_string();
            start = keys::after_bucket(&name);
            let probe = ListOptions {
                limit: Some(1),
                keys_only: true,
                ..ListOptions::default()
            };
            if !self.list(&name, &probe)?.items.is_empty() {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// Deletes expired records met by a read, best effort: a read must not
    /// fail because tidying up did (the sweep will get them).
    fn reclaim(&self, expired: Vec<(Vec<u8>, u64, Option<u64>)>) {
        if self.read_only || expired.is_empty() {
            return;
        }
        let mut checks = Vec::with_capacity(expired.len());
        let mut writes = Vec::with_capacity(2 * expired.len() + 1);
        writes.push(Write {
            key: keys::EXPIRY_MARKER.to_vec(),
            value: None,
        });
        for (key, version, expires_at_ms) in expired {
            if let Some(at) = expires_at_ms {
                writes.push(Write {
                    key: keys::expiry_key(at, &key),
                    value: None,
                });
            }
            checks.push(Check::VersionIs(key.clone(), version));
            writes.push(Write { key, value: None });
        }
        let _ = self.storage.commit(checks, writes);
    }
}

/// An integer type `increment` works on, with the bytes it is stored as.
///
/// `i64` and `u64` are stored as decimal text (a JSON number): what the
/// rich API and wasmtime's `wasi:keyvalue@0.2.0-draft` host store.
/// [`LittleEndianI64`] is Spin's encoding for `0.2.0-draft2` (see
/// `docs/semantics.md`, "Counters").
pub trait Counter: Copy + std::fmt::Display {
    const ZERO: Self;
    fn checked_add(self, other: Self) -> Option<Self>;
    /// The counter a stored value holds.
    fn parse(bytes: &[u8]) -> Result<Self, StoreError>;
    /// The record that stores this counter.
    fn to_record(self) -> Record;
}

macro_rules! decimal_counter {
    ($t:ty) => {
        impl Counter for $t {
            const ZERO: Self = 0;
            fn checked_add(self, other: Self) -> Option<Self> {
                <$t>::checked_add(self, other)
            }
            fn parse(bytes: &[u8]) -> Result<Self, StoreError> {
                std::str::from_utf8(bytes)
                    .ok()
                    .and_then(|text| text.trim().parse::<$t>().ok())
                    .ok_or_else(|| {
                        StoreError::InvalidValue(
                            concat!(
                                "the stored value is not an integer of type ",
                                stringify!($t)
                            )
                            .into(),
                        )
                    })
            }
            fn to_record(self) -> Record {
                Record::json(self.to_string())
            }
        }
    };
}
decimal_counter!(i64);
decimal_counter!(u64);

/// A signed 64-bit counter stored as its 8 little-endian bytes: how Spin's
/// built-in key/value store keeps `wasi:keyvalue@0.2.0-draft2` counters, so
/// an app reading a counter back with `get` sees the bytes it would on Spin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LittleEndianI64(pub i64);

impl std::fmt::Display for LittleEndianI64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl Counter for LittleEndianI64 {
    const ZERO: Self = LittleEndianI64(0);
    fn checked_add(self, other: Self) -> Option<Self> {
        self.0.checked_add(other.0).map(LittleEndianI64)
    }
    fn parse(bytes: &[u8]) -> Result<Self, StoreError> {
        let bytes: [u8; 8] = bytes.try_into().map_err(|_| {
            StoreError::InvalidValue(format!(
                "the stored value is {} bytes, not a counter: draft2 counters are 8 bytes, \
                 a little-endian i64 (Spin's encoding)",
                bytes.len()
            ))
        })?;
        Ok(LittleEndianI64(i64::from_le_bytes(bytes)))
    }
    fn to_record(self) -> Record {
        Record::bytes(self.0.to_le_bytes().to_vec())
    }
}

fn check_batch_len(len: usize) -> Result<(), StoreError> {
    let most = limits().batch;
    if len > most {
        return Err(StoreError::InvalidKey(format!(
            "{len} keys in one call, at most {most} are allowed (limits.batch)"
        )));
    }
    Ok(())
}

fn batch_keys(bucket: &str, user_keys: &[String]) -> Result<Vec<Vec<u8>>, StoreError> {
    keys::validate_bucket(bucket)?;
    check_batch_len(user_keys.len())?;
    user_keys
        .iter()
        .map(|key| {
            keys::validate_key(key)?;
            Ok(keys::data_key(bucket, key))
        })
        .collect()
}

/// Checks a time-to-live and turns it into an expiry.
fn expiry(now: &Now<'_>, ttl_ms: Option<u64>) -> Result<Option<u64>, StoreError> {
    match ttl_ms {
        None => Ok(None),
        Some(0) => Err(StoreError::InvalidArgument(
            "a TTL must be at least 1 ms".into(),
        )),
        Some(ttl) if ttl > MAX_TTL_MS => Err(StoreError::InvalidArgument(format!(
            "a TTL is at most {MAX_TTL_MS} ms (100 years)"
        ))),
        Some(ttl) => Ok(Some(now.ms().saturating_add(ttl))),
    }
}

#[cfg(test)]
mod tests;
