//! The memory backend: an ordered map behind a mutex. Nothing survives the
//! process; every handle of one `Store` shares it.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::Deserialize;

use super::{
    Backend, BackendError, Change, Check, DEFAULT_RETENTION, Entry, Scan, Write, take_changes,
    validate_commit, validate_get_many, validate_key, validate_scan,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MemoryConfig {
    #[allow(dead_code)] // checked by the registry; named here so it is not "unknown"
    r#type: String,
    /// Commits whose changes the change feed keeps.
    #[serde(default = "default_retention")]
    retention: u64,
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION
}

#[derive(Debug)]
pub struct MemoryBackend {
    inner: Mutex<Inner>,
    retention: u64,
    commits: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Inner {
    records: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    version: u64,
    log: VecDeque<Change>,
    /// The feed has nothing at or before this version (a replica's restore).
    floor: u64,
    /// A replica's: commits of its own are refused.
    replica: bool,
}

impl Inner {
    /// `writes` at `version`, into the records and the feed.
    fn apply(&mut self, version: u64, writes: Vec<Write>, retention: u64) {
        self.version = version;
        for write in writes {
            match &write.value {
                Some(value) => {
                    self.records
                        .insert(write.key.clone(), (version, value.clone()));
                }
                None => {
                    self.records.remove(&write.key);
                }
            }
            self.log.push_back(Change {
                version,
                key: write.key,
                value: write.value,
            });
        }
        let cut = version.saturating_sub(retention);
        while self.log.front().is_some_and(|c| c.version <= cut) {
            self.log.pop_front();
        }
    }
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl MemoryBackend {
    pub fn new(retention: u64) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            retention,
            commits: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn from_config(config: serde_json::Value) -> Result<Self, BackendError> {
        let config: MemoryConfig = serde_json::from_value(config)
            .map_err(|e| BackendError::Invalid(format!("memory backend configuration: {e}")))?;
        Ok(Self::new(config.retention))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Inner>, BackendError> {
        // A panic while holding the lock leaves the map consistent (every
        // mutation below is a single insert/remove), so poison is survivable.
        Ok(self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn entry(key: &[u8], (version, value): &(u64, Vec<u8>)) -> Entry {
        Entry {
            key: key.to_vec(),
            value: value.clone(),
            version: *version,
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn summary(&self) -> String {
        "memory".into()
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        Ok(self.lock()?.records.get(key).map(|r| Self::entry(key, r)))
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        let inner = self.lock()?;
        Ok(keys
            .iter()
            .map(|k| inner.records.get(k).map(|r| Self::entry(k, r)))
            .collect())
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        if scan.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.lock()?;
        let upper = scan
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let range = inner
            .records
            .range::<[u8], _>((Bound::Included(scan.start.as_slice()), upper));
        let limit = scan.clamped_limit();
        let to_entry = |(k, r): (&Vec<u8>, &(u64, Vec<u8>))| Self::entry(k, r);
        Ok(if scan.reverse {
            range.rev().take(limit).map(to_entry).collect()
        } else {
            range.take(limit).map(to_entry).collect()
        })
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let mut inner = self.lock()?;
        if inner.replica {
            return Err(BackendError::ReadOnly);
        }
        for (index, check) in checks.iter().enumerate() {
            let current = inner.records.get(check.key()).map(|(v, _)| *v);
            if current != check.expected() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                return Err(BackendError::Conflict { index, current });
            }
        }
        let version = inner.version + 1;
        inner.apply(version, writes, self.retention);
        drop(inner);
        self.commits.send_replace(version);
        Ok(version)
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        Ok(self.lock()?.version)
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let inner = self.lock()?;
        let oldest = inner
            .version
            .saturating_sub(self.retention)
            .max(inner.floor)
            .saturating_add(1);
        if since.saturating_add(1) < oldest {
            return Err(BackendError::Compacted { oldest });
        }
        Ok(take_changes(
            inner.log.iter().filter(|c| c.version > since).cloned(),
            limit,
        ))
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }

    fn make_replica(&self) -> Result<(), BackendError> {
        self.lock()?.replica = true;
        Ok(())
    }

    async fn replicate(&self, version: u64, writes: Vec<Write>) -> Result<(), BackendError> {
        validate_commit(&[], &writes)?;
        let mut inner = self.lock()?;
        if version <= inner.version {
            return Err(not_after(version, inner.version));
        }
        inner.apply(version, writes, self.retention);
        drop(inner);
        self.commits.send_replace(version);
        Ok(())
    }

    async fn restore(&self, version: u64, entries: Vec<Entry>) -> Result<(), BackendError> {
        let mut inner = self.lock()?;
        inner.records = entries
            .into_iter()
            .map(|e| (e.key, (e.version, e.value)))
            .collect();
        inner.version = version;
        inner.log.clear();
        inner.floor = version;
        drop(inner);
        self.commits.send_replace(version);
        Ok(())
    }
}

/// Why a replicated commit is refused: it is not newer than the store.
pub(super) fn not_after(version: u64, current: u64) -> BackendError {
    BackendError::Invalid(format!(
        "a replicated commit at version {version} is not after the store's version {current}"
    ))
}
