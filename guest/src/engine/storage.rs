//! The seam between the engine and whatever stores its bytes.
//!
//! [`Storage`] mirrors the imported `kvstash:store/storage` interface one to one
//! so the engine can be tested natively against [`MemStorage`]; on wasm the
//! implementation is `crate::wit_storage::WitStorage`.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

/// Most records one `scan` returns; larger limits are clamped to it.
pub const MAX_SCAN: u32 = 10_000;

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Version of the commit that last wrote the record.
    pub version: u64,
}

/// A precondition of a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The key exists and was last written at exactly this version.
    VersionIs(Vec<u8>, u64),
    /// The key does not exist.
    Absent(Vec<u8>),
}

impl Check {
    /// The check for "the key is still as I read it": `current` is the version read, if any.
    pub fn unchanged(key: Vec<u8>, current: Option<u64>) -> Self {
        match current {
            Some(version) => Check::VersionIs(key, version),
            None => Check::Absent(key),
        }
    }
}

/// One write of a commit; `value: None` deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub version: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// What a backend can answer instead of a result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StorageError {
    /// Check number `index` failed; `current` is that key's version now.
    Conflict {
        index: u32,
        current: Option<u64>,
    },
    /// Versions after the requested one are no longer retained.
    Compacted {
        oldest: u64,
    },
    ReadOnly,
    Invalid(String),
    Unavailable(String),
    /// What the backend stores is damaged; nothing was served or written.
    Corrupt(String),
}

/// The byte-shaped storage the engine runs on. Every method may be called
/// with hostile sizes; implementations clamp, never panic.
pub trait Storage {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError>;
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError>;
    /// Records with `start <= key < end`, ascending (descending if `reverse`), at most `limit`.
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError>;
    /// All writes if all checks hold, else nothing; returns the commit's version.
    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError>;
    fn current_version(&self) -> Result<u64, StorageError>;
    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError>;
    /// A number that changes at least whenever this host commits to the
    /// storage through any instance (`commits-here` of wit/storage.wit);
    /// no I/O.
    fn commits_here(&self) -> u64;
}

/// Shared or boxed storages are storages (layers hold `Box<dyn Storage>`,
/// tests share one `MemStorage` through an `Rc`).
macro_rules! forward_storage {
    ($wrapper:ident) => {
        impl<S: Storage + ?Sized> Storage for $wrapper<S> {
            fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
                (**self).get(key)
            }
            fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
                (**self).get_many(keys)
            }
            fn scan(
                &self,
                start: &[u8],
                end: Option<&[u8]>,
                limit: u32,
                reverse: bool,
            ) -> Result<Vec<Entry>, StorageError> {
                (**self).scan(start, end, limit, reverse)
            }
            fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
                (**self).commit(checks, writes)
            }
            fn current_version(&self) -> Result<u64, StorageError> {
                (**self).current_version()
            }
            fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
                (**self).changes(since, limit)
            }
            fn commits_here(&self) -> u64 {
                (**self).commits_here()
            }
        }
    };
}
use std::rc::Rc;
forward_storage!(Box);
forward_storage!(Rc);

/// An in-memory [`Storage`]: the reference the engine's tests run on. Its
/// semantics are the ones every host backend must match (the host's
/// conformance suite checks the same rules).
#[derive(Debug)]
pub struct MemStorage {
    inner: RefCell<MemInner>,
    retention: usize,
}

#[derive(Debug, Default)]
struct MemInner {
    records: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    version: u64,
    log: VecDeque<Change>,
}

impl Default for MemStorage {
    fn default() -> Self {
        Self::with_retention(10_000)
    }
}

impl MemStorage {
    /// A store that keeps the changes of the last `retention` commits.
    pub fn with_retention(retention: usize) -> Self {
        Self {
            inner: RefCell::new(MemInner::default()),
            retention,
        }
    }
}

impl Storage for MemStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        let inner = self.inner.borrow();
        Ok(inner.records.get(key).map(|(version, value)| Entry {
            key: key.to_vec(),
            value: value.clone(),
            version: *version,
        }))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        keys.iter().map(|k| self.get(k)).collect()
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.borrow();
        let limit = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(0);
        if end.is_some_and(|end| end <= start) {
            return Ok(Vec::new());
        }
        let upper = end.map_or(Bound::Unbounded, Bound::Excluded);
        let range = inner
            .records
            .range::<[u8], _>((Bound::Included(start), upper));
        let to_entry = |(k, (v, val)): (&Vec<u8>, &(u64, Vec<u8>))| Entry {
            key: k.clone(),
            value: val.clone(),
            version: *v,
        };
        Ok(if reverse {
            range.rev().take(limit).map(to_entry).collect()
        } else {
            range.take(limit).map(to_entry).collect()
        })
    }

    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        if checks.is_empty() && writes.is_empty() {
            return Err(StorageError::Invalid("empty commit".into()));
        }
        let mut inner = self.inner.borrow_mut();
        for (index, check) in checks.iter().enumerate() {
            let (key, expected) = match check {
                Check::VersionIs(key, v) => (key, Some(*v)),
                Check::Absent(key) => (key, None),
            };
            let current = inner.records.get(key).map(|(v, _)| *v);
            if current != expected {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                return Err(StorageError::Conflict { index, current });
            }
        }
        inner.version += 1;
        let version = inner.version;
        for write in writes {
            match &write.value {
                Some(value) => {
                    inner
                        .records
                        .insert(write.key.clone(), (version, value.clone()));
                }
                None => {
                    inner.records.remove(&write.key);
                }
            }
            inner.log.push_back(Change {
                version,
                key: write.key,
                value: write.value,
            });
        }
        let oldest_kept = version.saturating_sub(self.retention as u64);
        while inner.log.front().is_some_and(|c| c.version <= oldest_kept) {
            inner.log.pop_front();
        }
        Ok(version)
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        Ok(self.inner.borrow().version)
    }

    /// Every commit is this process's: the version.
    fn commits_here(&self) -> u64 {
        self.inner.borrow().version
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        let inner = self.inner.borrow();
        let oldest_retained = inner
            .version
            .saturating_sub(self.retention as u64)
            .saturating_add(1);
        if since.saturating_add(1) < oldest_retained {
            return Err(StorageError::Compacted {
                oldest: oldest_retained,
            });
        }
        let limit = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(0);
        let mut out: Vec<Change> = Vec::new();
        for change in inner.log.iter().filter(|c| c.version > since) {
            // Whole commits only: stop at a commit boundary.
            let starts_commit = out.last().is_none_or(|last| last.version != change.version);
            if out.len() >= limit && starts_commit {
                break;
            }
            out.push(change.clone());
        }
        Ok(out)
    }
}
