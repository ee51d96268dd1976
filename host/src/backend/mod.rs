//! Storage backends: what the guest's imported `storage` interface runs on.
//!
//! One object-safe async [`Backend`] trait, one implementation of the
//! generated storage host traits dispatching over `Arc<dyn Backend>`
//! (`crate::runtime`), and a [`Registry`] of factories keyed by the
//! configuration's `type`.
//!
//! # Layout
//! - `memory` — a mutex'd ordered map; for tests, caches and scratch stores
//! - `file` — redb; crash-safe, every acknowledged commit is on disk
//! - `etcd`, `redis`, `postgres` — remote engines (`remote` holds what
//!   they share)
//! - `server` — a store another host serves (`kvstash serve`), over HTTP;
//!   `wire` is the format both sides speak

#[cfg(feature = "etcd")]
mod etcd;
mod file;
#[cfg(feature = "fuzzing")]
pub use file::fuzzing as file_fuzzing;
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(any(feature = "etcd", feature = "redis", feature = "postgres"))]
pub mod remote;
#[cfg(feature = "client")]
mod server;
#[cfg(feature = "client")]
pub mod wire;

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;

#[cfg(feature = "etcd")]
pub use etcd::EtcdBackend;
pub use file::{
    CheckReport as FileCheck, Client as FileClient, FileBackend, FileConfig, GROUP_SLOTS,
    Salvaged as FileSalvage, SyncStats, check as check_file, open as open_file,
    salvage as salvage_file,
};
pub use memory::MemoryBackend;
#[cfg(feature = "postgres")]
pub use postgres::PostgresBackend;
#[cfg(feature = "redis")]
pub use redis::RedisBackend;
#[cfg(feature = "client")]
pub use server::{DEFAULT_TOKEN_ENV, ServerBackend};

/// Most records a `scan` or `changes` call returns; larger limits are clamped.
pub const MAX_SCAN: u32 = 10_000;
/// Most keys one `get_many` call may ask for.
pub const MAX_GET_MANY: usize = 10_000;
/// Most checks plus writes in one commit.
pub const MAX_COMMIT_OPS: usize = 20_000;
/// Longest storage key a backend accepts. The guest's own keys are far
/// shorter (bucket ≤ 256 + key ≤ 4096 bytes + a prefix); this bounds a
/// hostile or buggy guest.
pub const MAX_KEY_BYTES: usize = 64 * 1024;
/// Largest stored value a backend accepts (the guest's limit is 8 MiB plus
/// its record header).
pub const MAX_VALUE_BYTES: usize = 16 * 1024 * 1024;
/// Commits whose changes the change feed keeps, unless configured otherwise.
pub const DEFAULT_RETENTION: u64 = 10_000;

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Version of the commit that last wrote the record.
    pub version: u64,
}

/// A precondition of a commit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Check {
    /// The key exists and was last written by the commit with this version.
    VersionIs(Vec<u8>, u64),
    /// The key does not exist.
    Absent(Vec<u8>),
}

impl Check {
    pub fn key(&self) -> &[u8] {
        match self {
            Check::VersionIs(key, _) | Check::Absent(key) => key,
        }
    }

    /// The version the check expects the key to have (`None`: absent).
    pub fn expected(&self) -> Option<u64> {
        match self {
            Check::VersionIs(_, version) => Some(*version),
            Check::Absent(_) => None,
        }
    }
}

/// One write of a commit; `value: None` deletes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Write {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Change {
    pub version: u64,
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

/// A key range for [`Backend::scan`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Scan {
    pub start: Vec<u8>,
    /// Exclusive; `None` scans to the last key.
    pub end: Option<Vec<u8>>,
    pub limit: u32,
    pub reverse: bool,
}

impl Scan {
    /// The number of records to return, clamped to [`MAX_SCAN`].
    pub fn clamped_limit(&self) -> usize {
        usize::try_from(self.limit.min(MAX_SCAN)).unwrap_or(0)
    }

    /// Whether the range is empty by construction (`end <= start`).
    pub fn is_empty(&self) -> bool {
        self.end.as_ref().is_some_and(|end| *end <= self.start)
    }
}

/// Why a backend call failed. Maps one to one onto the WIT `storage-error`.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum BackendError {
    /// Check number `index` of a commit failed; nothing was written.
    #[error("commit check {index} failed (current version {current:?})")]
    Conflict { index: u32, current: Option<u64> },
    /// The change feed no longer holds versions after the one asked for.
    #[error("changes before version {oldest} are no longer retained")]
    Compacted { oldest: u64 },
    #[error("the backend is read-only")]
    ReadOnly,
    /// A bad configuration or request: fix the input.
    #[error("{0}")]
    Invalid(String),
    /// The backend failed. A commit that gets this may or may not have been
    /// written (a failed sync, a lost reply): read back to find out. For the
    /// file backend: check the disk, then close and reopen the store.
    #[error("{0}")]
    Unavailable(String),
    /// What the backend stores is damaged (a checksum failed, a page does
    /// not hold together); the message names what. Nothing was served and
    /// nothing written. For the file backend: `kvstash check`.
    #[error("{0}")]
    Corrupt(String),
}

/// What a storage engine must provide. Small, byte-shaped and atomic; see
/// `wit/storage.wit` for the contract every method must keep.
#[async_trait]
pub trait Backend: Debug + Send + Sync + 'static {
    /// One line naming the backend and where it stores ("file /var/lib/kvstash/kvstash.redb").
    fn summary(&self) -> String;

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError>;

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError>;

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError>;

    /// All writes if all checks hold, atomically, else nothing.
    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError>;

    async fn current_version(&self) -> Result<u64, BackendError>;

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError>;

    /// The version of the newest commit, updated as commits land, for
    /// watchers to wake on. `None` if the backend cannot tell (watchers then
    /// poll). A backend that returns one must update it after every commit
    /// it makes, whichever handle made it.
    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }

    /// How this backend's commits reached its disk, if it counts them (the
    /// file backend, in the process that holds the store).
    fn commit_stats(&self) -> Option<SyncStats> {
        None
    }

    /// Makes this backend a replica's copy of another store (`kvstash
    /// serve --replica-of`): from now on, in this process, it refuses
    /// every commit (`read-only`, whichever handle or process sends it)
    /// but [`replicate`](Self::replicate)'s and
    /// [`restore`](Self::restore)'s. Backends that cannot hold a replica
    /// (the remote ones) refuse.
    fn make_replica(&self) -> Result<(), BackendError> {
        Err(BackendError::Invalid(format!(
            "{} cannot hold a replica (the memory and file backends can)",
            self.summary()
        )))
    }

    /// A replica's copy of its primary's commit `version`: `writes`, with
    /// no checks, at that version, which must be after every version this
    /// backend holds (versions may skip: the primary's are kept).
    async fn replicate(&self, version: u64, writes: Vec<Write>) -> Result<(), BackendError> {
        let _ = (version, writes);
        Err(self.make_replica().err().unwrap_or(BackendError::ReadOnly))
    }

    /// A replica's resynchronization: every record replaced by `entries`
    /// (a copy of the primary's), the store now at `version`, its change
    /// feed starting after it (older `since`s are `compacted`).
    async fn restore(&self, version: u64, entries: Vec<Entry>) -> Result<(), BackendError> {
        let _ = (version, entries);
        Err(self.make_replica().err().unwrap_or(BackendError::ReadOnly))
    }
}

/// Rejects a key longer than [`MAX_KEY_BYTES`].
pub fn validate_key(key: &[u8]) -> Result<(), BackendError> {
    if key.len() > MAX_KEY_BYTES {
        return Err(BackendError::Invalid(format!(
            "key is {} bytes, at most {MAX_KEY_BYTES} are allowed",
            key.len()
        )));
    }
    Ok(())
}

/// Rejects a scan whose bounds could not be keys.
pub fn validate_scan(scan: &Scan) -> Result<(), BackendError> {
    validate_key(&scan.start)?;
    scan.end.as_deref().map_or(Ok(()), validate_key)
}

/// Rejects requests no backend should accept, before any backend sees them.
pub fn validate_commit(checks: &[Check], writes: &[Write]) -> Result<(), BackendError> {
    if checks.is_empty() && writes.is_empty() {
        return Err(BackendError::Invalid("empty commit".into()));
    }
    if checks.len() + writes.len() > MAX_COMMIT_OPS {
        return Err(BackendError::Invalid(format!(
            "commit has {} checks and writes, at most {MAX_COMMIT_OPS} are allowed",
            checks.len() + writes.len()
        )));
    }
    for check in checks {
        validate_key(check.key())?;
    }
    for write in writes {
        validate_key(&write.key)?;
        if let Some(value) = &write.value
            && value.len() > MAX_VALUE_BYTES
        {
            return Err(BackendError::Invalid(format!(
                "value is {} bytes, at most {MAX_VALUE_BYTES} are allowed",
                value.len()
            )));
        }
    }
    Ok(())
}

pub fn validate_get_many(keys: &[Vec<u8>]) -> Result<(), BackendError> {
    if keys.len() > MAX_GET_MANY {
        return Err(BackendError::Invalid(format!(
            "get-many of {} keys, at most {MAX_GET_MANY} are allowed",
            keys.len()
        )));
    }
    keys.iter().try_for_each(|key| validate_key(key))
}

/// Changes after `since`: whole commits, stopping at the first commit
/// boundary at or after `limit` entries. `log` must be in version order.
fn take_changes(log: impl Iterator<Item = Change>, limit: u32) -> Vec<Change> {
    let limit = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(0);
    let mut out: Vec<Change> = Vec::new();
    for change in log {
        let starts_commit = out.last().is_none_or(|last| last.version != change.version);
        if out.len() >= limit && starts_commit {
            break;
        }
        out.push(change);
    }
    out
}

/// What opening a backend returns: remote backends connect asynchronously.
pub type OpenFuture = futures::future::BoxFuture<'static, Result<Arc<dyn Backend>, BackendError>>;

/// Opens a backend from its JSON configuration.
pub trait BackendFactory: Send + Sync {
    fn open(&self, config: serde_json::Value) -> OpenFuture;
}

/// A factory that opens without waiting (memory, file, test doubles).
struct Immediate<F>(F);

impl<F> BackendFactory for Immediate<F>
where
    F: Fn(serde_json::Value) -> Result<Arc<dyn Backend>, BackendError> + Send + std::marker::Sync,
{
    fn open(&self, config: serde_json::Value) -> OpenFuture {
        Box::pin(std::future::ready((self.0)(config)))
    }
}

/// A factory that connects (the remote backends).
struct Connecting<F>(F);

impl<F, Fut> BackendFactory for Connecting<F>
where
    F: Fn(serde_json::Value) -> Fut + Send + std::marker::Sync,
    Fut: Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send + 'static,
{
    fn open(&self, config: serde_json::Value) -> OpenFuture {
        Box::pin((self.0)(config))
    }
}

/// Backend factories keyed by the configuration's `type`.
#[derive(Clone)]
pub struct Registry {
    factories: HashMap<String, Arc<dyn BackendFactory>>,
    /// Checks of a type's configuration that open nothing.
    checks: HashMap<String, Arc<ConfigCheck>>,
}

/// A check of one backend type's configuration that opens nothing.
type ConfigCheck = dyn Fn(serde_json::Value) -> Result<(), BackendError> + Send + Sync;

impl Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut types: Vec<&String> = self.factories.keys().collect();
        types.sort();
        f.debug_struct("Registry").field("types", &types).finish()
    }
}

impl Default for Registry {
    /// The built-in backends: `memory`, `file`, and the remote ones this
    /// build has (features `etcd`, `redis`, `postgres`, `client`).
    fn default() -> Self {
        let mut registry = Self::empty();
        registry.register("memory", |config| {
            MemoryBackend::from_config(config).map(|b| Arc::new(b) as Arc<dyn Backend>)
        });
        registry.register_check("memory", |config| {
            MemoryBackend::from_config(config).map(drop)
        });
        registry.register("file", |config| file::open(&FileConfig::from_json(config)?));
        registry.register_check("file", |config| FileConfig::from_json(config).map(drop));
        #[cfg(feature = "etcd")]
        {
            registry.register_async("etcd", EtcdBackend::open);
            registry.register_check("etcd", EtcdBackend::check);
        }
        #[cfg(feature = "redis")]
        {
            registry.register_async("redis", RedisBackend::open);
            registry.register_check("redis", RedisBackend::check);
        }
        #[cfg(feature = "postgres")]
        {
            registry.register_async("postgres", PostgresBackend::open);
            registry.register_check("postgres", PostgresBackend::check);
        }
        #[cfg(feature = "client")]
        {
            registry.register_async("server", ServerBackend::open);
            registry.register_check("server", ServerBackend::check);
        }
        registry
    }
}

impl Registry {
    pub fn empty() -> Self {
        Self {
            factories: HashMap::new(),
            checks: HashMap::new(),
        }
    }

    /// Adds (or replaces) the check of `kind`'s configuration: what
    /// [`Registry::check`] runs before anything of a store opens, so a
    /// mistake in one leaf of a layered configuration opens none.
    pub fn register_check(
        &mut self,
        kind: &str,
        check: impl Fn(serde_json::Value) -> Result<(), BackendError> + Send + Sync + 'static,
    ) {
        self.checks.insert(kind.to_string(), Arc::new(check));
    }

    /// Checks a backend configuration without opening it: its `type` is
    /// known, and its fields pass the type's check, if it has one.
    pub fn check(&self, config: &serde_json::Value) -> Result<(), BackendError> {
        let kind = self.kind(config)?;
        match self.checks.get(kind) {
            Some(check) => check(config.clone()),
            None => Ok(()),
        }
    }

    /// The `type` of `config`, if this registry opens it.
    fn kind<'c>(&self, config: &'c serde_json::Value) -> Result<&'c str, BackendError> {
        let kind = config
            .get("type")
            .and_then(serde_json::Value::as_str)
            .ok_or_else(|| BackendError::Invalid("backend configuration has no `type`".into()))?;
        if !self.factories.contains_key(kind) {
            let mut known: Vec<&str> = self.factories.keys().map(String::as_str).collect();
            known.sort_unstable();
            return Err(BackendError::Invalid(format!(
                "unknown backend type `{kind}` (known: {})",
                known.join(", ")
            )));
        }
        Ok(kind)
    }

    /// The backend types this registry opens.
    pub fn types(&self) -> Vec<String> {
        self.factories.keys().cloned().collect()
    }

    /// Adds (or replaces) the factory for `kind`: a function that opens
    /// without waiting.
    pub fn register(
        &mut self,
        kind: &str,
        factory: impl Fn(serde_json::Value) -> Result<Arc<dyn Backend>, BackendError>
        + Send
        + std::marker::Sync
        + 'static,
    ) {
        // The type's check stays (a factory replaced for the same fields,
        // as the CLI's read-only file opener is); `register_check` replaces it.
        self.factories
            .insert(kind.to_string(), Arc::new(Immediate(factory)));
    }

    /// Adds (or replaces) the factory for `kind`: an async function, for
    /// backends that connect to a server.
    pub fn register_async<Fut>(
        &mut self,
        kind: &str,
        factory: impl Fn(serde_json::Value) -> Fut + Send + std::marker::Sync + 'static,
    ) where
        Fut: Future<Output = Result<Arc<dyn Backend>, BackendError>> + Send + 'static,
    {
        self.factories
            .insert(kind.to_string(), Arc::new(Connecting(factory)));
    }

    /// Opens the backend a JSON configuration describes.
    pub async fn open(&self, config: &str) -> Result<Arc<dyn Backend>, BackendError> {
        let value: serde_json::Value = serde_json::from_str(config)
            .map_err(|e| BackendError::Invalid(format!("backend configuration: {e}")))?;
        let kind = self.kind(&value)?;
        let factory = self
            .factories
            .get(kind)
            .cloned()
            .ok_or_else(|| BackendError::Invalid(format!("unknown backend type `{kind}`")))?;
        factory.open(value).await
    }
}
