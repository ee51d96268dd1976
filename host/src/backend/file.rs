//! The file backend: one redb database file.
//!
//! redb gives crash safety (copy-on-write B-trees, a checksummed commit slot,
//! fsync on commit), so a commit that returned is on disk and a crash at any
//! point leaves the last committed state. Tables:
//!
//! - `data`: storage key → (version, value)
//! - `log`: (version, write index) → (key, value or none): the change feed
//! - `meta`: `format` (1), `version` (newest commit), `trimmed` (newest version
//!   whose changes were dropped from `log`)
//!
//! redb allows one open `Database` per file per process, so every handle on
//! the same path in one process shares one [`FileBackend`] (`open_shared`).
//! Commits run on tokio's blocking pool: an fsync must not stall the executor.

use std::collections::HashMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Deserialize;

use super::{
    Backend, BackendError, Change, Check, DEFAULT_RETENTION, Entry, Scan, Write, take_changes,
    validate_commit, validate_get_many, validate_key, validate_scan,
};

const DATA: TableDefinition<'_, &[u8], (u64, &[u8])> = TableDefinition::new("data");
/// A change-feed entry: the key and its new value (`None`: deleted).
type LogValue<'a> = (&'a [u8], Option<&'a [u8]>);
const LOG: TableDefinition<'_, (u64, u32), LogValue<'_>> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

const FORMAT: u64 = 1;

/// The `file` backend's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default, skip_serializing)]
    #[allow(dead_code)] // checked by the registry; named here so it is not "unknown"
    r#type: Option<String>,
    /// The database file; its directory is created if missing.
    pub path: PathBuf,
    /// Commits whose changes the change feed keeps.
    #[serde(default = "default_retention")]
    pub retention: u64,
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION
}

impl FileConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            r#type: None,
            path: path.into(),
            retention: DEFAULT_RETENTION,
        }
    }

    pub fn from_json(config: serde_json::Value) -> Result<Self, BackendError> {
        serde_json::from_value(config)
            .map_err(|e| BackendError::Invalid(format!("file backend configuration: {e}")))
    }
}

#[derive(Debug)]
pub struct FileBackend {
    db: Arc<Database>,
    path: PathBuf,
    retention: u64,
    /// The newest committed version, for watchers. Every handle on this
    /// file in this process shares this backend, so it sees every commit.
    commits: tokio::sync::watch::Sender<u64>,
}

fn unavailable(e: impl Into<redb::Error>) -> BackendError {
    BackendError::Unavailable(format!("file backend: {}", e.into()))
}

/// Open databases by canonical path, so one process opens each file once.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Weak<FileBackend>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

impl FileBackend {
    /// Opens (creating if needed) the database at `config.path`, or returns
    /// the handle this process already has on it.
    pub fn open_shared(config: &FileConfig) -> Result<Arc<Self>, BackendError> {
        let path = canonical(&config.path)?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, weak| weak.strong_count() > 0);
        if let Some(backend) = open.get(&path).and_then(Weak::upgrade) {
            return Ok(backend);
        }
        let backend = Arc::new(Self::open(&path, config.retention)?);
        open.insert(path, Arc::downgrade(&backend));
        Ok(backend)
    }

    fn open(path: &Path, retention: u64) -> Result<Self, BackendError> {
        let db = Database::create(path).map_err(|e| {
            if matches!(e, redb::DatabaseError::DatabaseAlreadyOpen) {
                BackendError::Unavailable(format!(
                    "{} is in use by another process",
                    path.display()
                ))
            } else {
                BackendError::Unavailable(format!("cannot open {}: {e}", path.display()))
            }
        })?;
        let txn = db.begin_write().map_err(unavailable)?;
        {
            let mut meta = txn.open_table(META).map_err(unavailable)?;
            let format = meta.get("format").map_err(unavailable)?.map(|g| g.value());
            match format {
                None => {
                    meta.insert("format", FORMAT).map_err(unavailable)?;
                }
                Some(FORMAT) => {}
                Some(other) => {
                    return Err(BackendError::Invalid(format!(
                        "{} has kvstash file format {other}; this build reads format {FORMAT}",
                        path.display()
                    )));
                }
            }
            txn.open_table(DATA).map_err(unavailable)?;
            txn.open_table(LOG).map_err(unavailable)?;
        }
        let version = {
            let meta = txn.open_table(META).map_err(unavailable)?;
            meta.get("version")
                .map_err(unavailable)?
                .map_or(0, |g| g.value())
        };
        txn.commit().map_err(unavailable)?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_path_buf(),
            retention,
            commits: tokio::sync::watch::Sender::new(version),
        })
    }
}

/// The absolute path of `path`, creating its directory.
fn canonical(path: &Path) -> Result<PathBuf, BackendError> {
    let io = |what: &str, e: std::io::Error| {
        BackendError::Unavailable(format!("{what} {}: {e}", path.display()))
    };
    let name = path
        .file_name()
        .ok_or_else(|| BackendError::Invalid(format!("`{}` is not a file path", path.display())))?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(|e| io("cannot create the directory of", e))?;
    let parent = parent
        .canonicalize()
        .map_err(|e| io("cannot resolve the directory of", e))?;
    Ok(parent.join(name))
}

fn commit_blocking(
    db: &Database,
    retention: u64,
    checks: &[Check],
    writes: &[Write],
) -> Result<u64, BackendError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let version = {
        let mut data = txn.open_table(DATA).map_err(unavailable)?;
        for (index, check) in checks.iter().enumerate() {
            let current = data
                .get(check.key())
                .map_err(unavailable)?
                .map(|g| g.value().0);
            if current != check.expected() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                drop(data);
                txn.abort().map_err(unavailable)?;
                return Err(BackendError::Conflict { index, current });
            }
        }
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let version = meta
            .get("version")
            .map_err(unavailable)?
            .map_or(0, |g| g.value())
            + 1;
        let mut log = txn.open_table(LOG).map_err(unavailable)?;
        for (index, write) in writes.iter().enumerate() {
            match &write.value {
                Some(value) => {
                    data.insert(write.key.as_slice(), (version, value.as_slice()))
                        .map_err(unavailable)?;
                }
                None => {
                    data.remove(write.key.as_slice()).map_err(unavailable)?;
                }
            }
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            log.insert(
                (version, index),
                (write.key.as_slice(), write.value.as_deref()),
            )
            .map_err(unavailable)?;
        }
        meta.insert("version", version).map_err(unavailable)?;
        let cut = version.saturating_sub(retention);
        let trimmed = meta
            .get("trimmed")
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        if cut > trimmed {
            log.retain_in(..(cut + 1, 0), |_, _| false)
                .map_err(unavailable)?;
            meta.insert("trimmed", cut).map_err(unavailable)?;
        }
        version
    };
    txn.commit().map_err(unavailable)?;
    Ok(version)
}

#[async_trait]
impl Backend for FileBackend {
    fn summary(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let txn = self.db.begin_read().map_err(unavailable)?;
        let data = txn.open_table(DATA).map_err(unavailable)?;
        Ok(data.get(key).map_err(unavailable)?.map(|g| {
            let (version, value) = g.value();
            Entry {
                key: key.to_vec(),
                value: value.to_vec(),
                version,
            }
        }))
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        let txn = self.db.begin_read().map_err(unavailable)?;
        let data = txn.open_table(DATA).map_err(unavailable)?;
        keys.iter()
            .map(|key| {
                Ok(data.get(key.as_slice()).map_err(unavailable)?.map(|g| {
                    let (version, value) = g.value();
                    Entry {
                        key: key.clone(),
                        value: value.to_vec(),
                        version,
                    }
                }))
            })
            .collect()
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        if scan.is_empty() {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(unavailable)?;
        let data = txn.open_table(DATA).map_err(unavailable)?;
        let upper = scan
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let range = data
            .range::<&[u8]>((Bound::Included(scan.start.as_slice()), upper))
            .map_err(unavailable)?;
        let to_entry = |item: Result<_, redb::StorageError>| {
            let (k, v): (
                redb::AccessGuard<'_, &[u8]>,
                redb::AccessGuard<'_, (u64, &[u8])>,
            ) = item.map_err(unavailable)?;
            let (version, value) = v.value();
            Ok(Entry {
                key: k.value().to_vec(),
                value: value.to_vec(),
                version,
            })
        };
        let limit = scan.clamped_limit();
        if scan.reverse {
            range.rev().take(limit).map(to_entry).collect()
        } else {
            range.take(limit).map(to_entry).collect()
        }
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let db = self.db.clone();
        let retention = self.retention;
        let version =
            tokio::task::spawn_blocking(move || commit_blocking(&db, retention, &checks, &writes))
                .await
                .map_err(|e| {
                    BackendError::Unavailable(format!("file backend commit task: {e}"))
                })??;
        self.commits.send_if_modified(|newest| {
            let newer = version > *newest;
            if newer {
                *newest = version;
            }
            newer
        });
        Ok(version)
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let meta = txn.open_table(META).map_err(unavailable)?;
        Ok(meta
            .get("version")
            .map_err(unavailable)?
            .map_or(0, |g| g.value()))
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let txn = self.db.begin_read().map_err(unavailable)?;
        let meta = txn.open_table(META).map_err(unavailable)?;
        let trimmed = meta
            .get("trimmed")
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        if since < trimmed {
            return Err(BackendError::Compacted {
                oldest: trimmed + 1,
            });
        }
        let log = txn.open_table(LOG).map_err(unavailable)?;
        let start = since.saturating_add(1);
        let mut failure = None;
        let entries = log
            .range((start, 0)..)
            .map_err(unavailable)?
            .map_while(|item| match item {
                Ok((k, v)) => {
                    let (version, _) = k.value();
                    let (key, value) = v.value();
                    Some(Change {
                        version,
                        key: key.to_vec(),
                        value: value.map(<[u8]>::to_vec),
                    })
                }
                Err(e) => {
                    failure = Some(unavailable(e));
                    None
                }
            });
        let changes = take_changes(entries, limit);
        match failure {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
