//! The store logic, generic over [`Storage`] so it runs natively in tests and
//! on the imported `storage` interface in the component.
//!
//! # Layout
//! - `keys` — storage-key layout, limits, list cursors
//! - `record` — the versioned on-storage record format
//! - `storage` — the [`Storage`] trait and the in-memory reference [`MemStorage`]
//! - `prefixed` — the `prefix` layer: a store inside another store's key space

mod keys;
mod prefixed;
mod record;
mod storage;

pub use keys::{MAX_BUCKET_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};
pub use prefixed::Prefixed;
pub use record::{Encoding, Record};
pub use storage::{Change, Check, Entry, MAX_SCAN, MemStorage, Storage, StorageError, Write};

/// Most keys one batch call (`get-many`, `set-many`, `delete-many`) takes.
pub const MAX_BATCH: usize = 1000;
/// Default and largest page of `list`.
pub const DEFAULT_LIST_LIMIT: u32 = 100;
pub const MAX_LIST_LIMIT: u32 = 1000;
/// How often a read-modify-write retries after losing a race before giving up.
const MAX_ATTEMPTS: usize = 64;

/// Every way an engine operation can fail. Mapped once to each exported error
/// type at the export boundary (`crate::exports`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreError {
    InvalidKey(String),
    InvalidBucket(String),
    InvalidValue(String),
    InvalidCursor,
    InvalidConfig(String),
    /// The call needs JSON and the stored value is raw bytes.
    NotJson,
    ReadOnly,
    /// A read-modify-write lost the race `MAX_ATTEMPTS` times in a row.
    Contention,
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
            StoreError::NotJson => write!(f, "the stored value is raw bytes, not JSON"),
            StoreError::ReadOnly => write!(f, "the store is read-only"),
            StoreError::Contention => write!(f, "too many concurrent writers; retry"),
            StoreError::Storage(why) => write!(f, "storage failed: {why}"),
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
            // Conflicts and compaction are handled where they can happen; one
            // that escapes is a storage failure as far as the caller can tell.
            StorageError::Conflict { index, current } => StoreError::Storage(format!(
                "unexpected conflict on check {index} (current version {current:?})"
            )),
            StorageError::Compacted { oldest } => {
                StoreError::Storage(format!("change feed compacted up to version {oldest}"))
            }
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
        serde_json::from_str::<serde::de::IgnoredAny>(&text)
            .map_err(|e| StoreError::InvalidValue(format!("not valid JSON: {e}")))?;
        Ok(Value::Json(text))
    }

    /// Bytes from `wasi:keyvalue`: kept as JSON when they are JSON, so the
    /// rich API reads them as such, else as raw bytes.
    pub fn sniff(bytes: Vec<u8>) -> Result<Self, StoreError> {
        check_size(bytes.len())?;
        Ok(match String::from_utf8(bytes) {
            Ok(text) if serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok() => {
                Value::Json(text)
            }
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

    fn into_record(self) -> Record {
        match self {
            Value::Json(text) => Record::json(text),
            Value::Bytes(bytes) => Record::bytes(bytes),
        }
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
    if len > MAX_VALUE_LEN {
        return Err(StoreError::InvalidValue(format!(
            "value is {len} bytes, at most {MAX_VALUE_LEN} are allowed"
        )));
    }
    Ok(())
}

/// A value with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Versioned {
    pub value: Value,
    pub version: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    pub value: Value,
    pub version: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    pub prefix: Option<String>,
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Item>,
    pub cursor: Option<String>,
}

/// What a compare-and-swap found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Written at this version.
    Done(u64),
    /// The key was no longer at the expected version; nothing was written.
    Conflict,
}

/// The store logic over one storage.
#[derive(Debug)]
pub struct Engine<S> {
    storage: S,
    read_only: bool,
}

impl<S: Storage> Engine<S> {
    pub fn new(storage: S) -> Self {
        Self {
            storage,
            read_only: false,
        }
    }

    /// Rejects every write with [`StoreError::ReadOnly`].
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    fn writable(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly);
        }
        Ok(())
    }

    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Versioned>, StoreError> {
        keys::validate_bucket(bucket)?;
        keys::validate_key(key)?;
        self.storage
            .get(&keys::data_key(bucket, key))?
            .map(decode_entry)
            .transpose()
    }

    pub fn exists(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.get(bucket, key)?.is_some())
    }

    pub fn set(&self, bucket: &str, key: &str, value: Value) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        keys::validate_key(key)?;
        self.writable()?;
        let write = Write {
            key: keys::data_key(bucket, key),
            value: Some(value.into_record().encode()),
        };
        Ok(self.storage.commit(&[], &[write])?)
    }

    /// Deletes `key`; `Ok(true)` if it existed. A missing key writes nothing.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.delete_many(bucket, &[key.to_string()])? == 1)
    }

    pub fn get_many(
        &self,
        bucket: &str,
        user_keys: &[String],
    ) -> Result<Vec<Option<Versioned>>, StoreError> {
        let storage_keys = batch_keys(bucket, user_keys)?;
        self.storage
            .get_many(&storage_keys)?
            .into_iter()
            .map(|entry| entry.map(decode_entry).transpose())
            .collect()
    }

    /// Writes every pair in one atomic commit.
    pub fn set_many(&self, bucket: &str, pairs: Vec<(String, Value)>) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        check_batch_len(pairs.len())?;
        let writes = pairs
            .into_iter()
            .map(|(key, value)| {
                keys::validate_key(&key)?;
                Ok(Write {
                    key: keys::data_key(bucket, &key),
                    value: Some(value.into_record().encode()),
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        self.writable()?;
        if writes.is_empty() {
            return Ok(self.storage.current_version()?);
        }
        Ok(self.storage.commit(&[], &writes)?)
    }

    /// Deletes every key in one atomic commit; returns how many existed.
    ///
    /// The commit checks that each key it deletes is still at the version it
    /// read, so the count is exact even with concurrent writers.
    pub fn delete_many(&self, bucket: &str, user_keys: &[String]) -> Result<u32, StoreError> {
        let storage_keys = batch_keys(bucket, user_keys)?;
        self.writable()?;
        for _ in 0..MAX_ATTEMPTS {
            let found = self.storage.get_many(&storage_keys)?;
            let mut checks = Vec::new();
            let mut writes = Vec::new();
            for (key, entry) in storage_keys.iter().zip(found) {
                if let Some(entry) = entry {
                    if writes.iter().any(|w: &Write| w.key == *key) {
                        continue; // the same key given twice counts once
                    }
                    checks.push(Check::VersionIs(key.clone(), entry.version));
                    writes.push(Write {
                        key: key.clone(),
                        value: None,
                    });
                }
            }
            if writes.is_empty() {
                return Ok(0);
            }
            match self.storage.commit(&checks, &writes) {
                Ok(_) => return Ok(u32::try_from(writes.len()).unwrap_or(u32::MAX)),
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Contention)
    }

    /// One page of `bucket` in key order.
    pub fn list(&self, bucket: &str, options: &ListOptions) -> Result<ListPage, StoreError> {
        keys::validate_bucket(bucket)?;
        let limit = options
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let bucket_prefix = keys::bucket_prefix(bucket);
        let mut range_start = bucket_prefix.clone();
        if let Some(prefix) = &options.prefix {
            if prefix.len() > MAX_KEY_LEN {
                return Err(StoreError::InvalidKey("prefix is longer than a key".into()));
            }
            range_start.extend_from_slice(prefix.as_bytes());
        }
        let end = keys::prefix_end(&range_start);
        let start = match &options.cursor {
            None => range_start.clone(),
            Some(cursor) => {
                let last = keys::decode_cursor(cursor)?;
                let mut start = keys::data_key(bucket, &last);
                if !start.starts_with(&range_start) {
                    return Err(StoreError::InvalidCursor);
                }
                start.push(0); // the smallest key after `last`
                start
            }
        };
        let mut entries =
            self.storage
                .scan(&start, end.as_deref(), limit.saturating_add(1), false)?;
        let more = entries.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        entries.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let items = entries
            .into_iter()
            .map(|entry| {
                let key = keys::user_key(&bucket_prefix, &entry.key)?.to_string();
                let Versioned { value, version } = decode_entry(entry)?;
                Ok(Item {
                    key,
                    value,
                    version,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let cursor = if more {
            items.last().map(|item| keys::encode_cursor(&item.key))
        } else {
            None
        };
        Ok(ListPage { items, cursor })
    }

    /// Up to `limit` keys of `bucket` after skipping the first `offset`: the
    /// paging `wasi:keyvalue@0.2.0-draft` asks for with its `u64` cursor. Each
    /// call re-scans the skipped keys, so a full listing costs O(n²/limit).
    pub fn list_keys_at(
        &self,
        bucket: &str,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<String>, bool), StoreError> {
        keys::validate_bucket(bucket)?;
        let prefix = keys::bucket_prefix(bucket);
        let end = keys::prefix_end(&prefix);
        let mut start = prefix.clone();
        let mut to_skip = offset;
        let mut out = Vec::new();
        loop {
            let page = self.storage.scan(&start, end.as_deref(), MAX_SCAN, false)?;
            let full = page.len() >= usize::try_from(MAX_SCAN).unwrap_or(usize::MAX);
            let mut last_key = None;
            for entry in page {
                if to_skip > 0 {
                    to_skip -= 1;
                } else if out.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
                    out.push(keys::user_key(&prefix, &entry.key)?.to_string());
                } else {
                    return Ok((out, true));
                }
                last_key = Some(entry.key);
            }
            match (full, last_key) {
                (true, Some(mut key)) => {
                    key.push(0);
                    start = key;
                }
                _ => return Ok((out, false)),
            }
        }
    }

    /// Names of the buckets that hold at least one key.
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
            names.push(name);
        }
        Ok(names)
    }

    /// The stored bytes and version of `key`, for compare-and-swap.
    pub fn read_for_swap(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        Ok(self
            .get(bucket, key)?
            .map(|v| (v.value.into_bytes(), v.version)))
    }

    /// Writes `value` only if `key` is still at `expected` (`None`: absent).
    pub fn swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: Value,
    ) -> Result<Swap, StoreError> {
        keys::validate_bucket(bucket)?;
        keys::validate_key(key)?;
        self.writable()?;
        let storage_key = keys::data_key(bucket, key);
        let write = Write {
            key: storage_key.clone(),
            value: Some(value.into_record().encode()),
        };
        match self
            .storage
            .commit(&[Check::unchanged(storage_key, expected)], &[write])
        {
            Ok(version) => Ok(Swap::Done(version)),
            Err(StorageError::Conflict { .. }) => Ok(Swap::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Adds `delta` to the integer stored at `key` (a missing key counts as
    /// zero) atomically, and returns the new value. The result is stored as
    /// JSON, so the rich API reads a number.
    pub fn increment<N: Counter>(
        &self,
        bucket: &str,
        key: &str,
        delta: N,
    ) -> Result<N, StoreError> {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.read_for_swap(bucket, key)?;
            let (now, expected) = match &current {
                None => (N::ZERO, None),
                Some((bytes, version)) => (N::parse(bytes)?, Some(*version)),
            };
            let next = now.checked_add(delta).ok_or_else(|| {
                StoreError::InvalidValue(format!("incrementing {now} by {delta} overflows"))
            })?;
            match self.swap(bucket, key, expected, Value::Json(next.to_string()))? {
                Swap::Done(_) => return Ok(next),
                Swap::Conflict => continue,
            }
        }
        Err(StoreError::Contention)
    }
}

/// An integer type `increment` works on (`wasi:keyvalue` has `s64` and `u64`).
pub trait Counter: Copy + std::fmt::Display {
    const ZERO: Self;
    fn checked_add(self, other: Self) -> Option<Self>;
    fn parse(bytes: &[u8]) -> Result<Self, StoreError>;
}

macro_rules! counter {
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
        }
    };
}
counter!(i64);
counter!(u64);

fn decode_entry(entry: Entry) -> Result<Versioned, StoreError> {
    let record = Record::decode(&entry.value)?;
    Ok(Versioned {
        value: Value::from_record(record)?,
        version: entry.version,
    })
}

fn check_batch_len(len: usize) -> Result<(), StoreError> {
    if len > MAX_BATCH {
        return Err(StoreError::InvalidKey(format!(
            "{len} keys in one call, at most {MAX_BATCH} are allowed"
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

#[cfg(test)]
mod tests;
