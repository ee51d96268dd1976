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
//!
//! **Group commit.** Commits go to one committer thread per database, which
//! applies the commits waiting for it in order inside one redb write
//! transaction (each commit's checks see the earlier ones' writes; each
//! successful commit gets its own version) and makes them durable with one
//! fsync. Nothing is acknowledged before that fsync returns. So concurrent
//! writers share fsyncs, and an fsync never stalls the async executor.

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
    /// Most memory redb's page cache may use, in MiB (default: redb's
    /// 1024, filled only as pages are read). A small device caps it.
    #[serde(default)]
    pub cache_mb: Option<u32>,
    /// Open the file for reading only (not from JSON: the CLI's read
    /// commands ask for it). Nothing is written, not even on open and
    /// close, and other read-only openers may share the file.
    #[serde(skip)]
    pub read_only: bool,
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
            cache_mb: None,
            read_only: false,
        }
    }

    pub fn from_json(config: serde_json::Value) -> Result<Self, BackendError> {
        if let Some(mb) = config.get("cache_mb").filter(|mb| !mb.is_null())
            && !mb
                .as_u64()
                .is_some_and(|mb| (1..=u64::from(u32::MAX)).contains(&mb))
        {
            return Err(BackendError::Invalid(format!(
                "file backend configuration: `cache_mb` must be a whole number of MiB, at least 1 (got {mb})"
            )));
        }
        serde_json::from_value(config)
            .map_err(|e| BackendError::Invalid(format!("file backend configuration: {e}")))
    }

    fn builder(&self) -> redb::Builder {
        let mut builder = Database::builder();
        if let Some(mb) = self.cache_mb {
            builder.set_cache_size(
                usize::try_from(mb)
                    .unwrap_or(usize::MAX)
                    .saturating_mul(1 << 20),
            );
        }
        builder
    }
}

pub struct FileBackend {
    /// The database, for reading (writes go through the committer).
    db: Arc<dyn ReadableDatabase + Send + Sync>,
    read_only: bool,
    path: PathBuf,
    /// The newest committed version, for watchers. Every handle on this
    /// file in this process shares this backend, so it sees every commit.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where commits queue for the committer; `None` once dropping.
    queue: Option<std::sync::mpsc::Sender<Request>>,
    committer: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
    /// The read snapshot reads share until the next commit.
    snapshot: Arc<Snapshot>,
}

/// The data table as of some commit.
type DataTable = redb::ReadOnlyTable<&'static [u8], (u64, &'static [u8])>;

/// One read transaction shared by reads until a commit lands, instead of one
/// per read (a read transaction and its table cost about as much as the get).
/// Reads stay immediately consistent: the committer bumps `generation` after
/// each durable commit and before acknowledging it, and a reader reuses the
/// cached table only if it was opened at the current generation.
#[derive(Default)]
struct Snapshot {
    generation: std::sync::atomic::AtomicU64,
    cached: Mutex<Option<(u64, Arc<DataTable>)>>,
}

impl Snapshot {
    fn table(&self, db: &dyn ReadableDatabase) -> Result<Arc<DataTable>, BackendError> {
        let generation = self.generation.load(std::sync::atomic::Ordering::Acquire);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, table)) = cached.as_ref()
            && *at == generation
        {
            return Ok(table.clone());
        }
        // Opened after reading `generation`: sees at least that commit.
        let txn = db.begin_read().map_err(unavailable)?;
        let table = Arc::new(txn.open_table(DATA).map_err(unavailable)?);
        *cached = Some((generation, table.clone()));
        Ok(table)
    }

    /// After a commit, before acknowledging it: later reads open a new
    /// snapshot, and the old one stops pinning pages redb could reuse.
    fn committed(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
        let old = self.cached.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(old);
    }
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for FileBackend {
    /// Closes the queue and waits for the committer to finish what it has,
    /// so the file is free to reopen as soon as this returns.
    fn drop(&mut self) {
        // A cached read snapshot keeps the file open: let it go first.
        self.snapshot.committed();
        self.queue.take();
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
    }
}

/// One commit waiting for the committer.
struct Request {
    checks: Vec<Check>,
    writes: Vec<Write>,
    reply: tokio::sync::oneshot::Sender<Result<u64, BackendError>>,
}

/// Most checks and writes one group commit gathers.
const MAX_GROUP_OPS: usize = 50_000;

#[derive(Debug, Default)]
struct Counters {
    acknowledged: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
}

/// How many commits a file backend acknowledged, and how many durable
/// transactions (fsyncs) it took: with concurrent writers, fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStats {
    pub acknowledged: u64,
    pub syncs: u64,
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
    ///
    /// A read-only open of a file that is missing, or was not closed
    /// cleanly (redb must repair it, which writes), opens it for writing.
    pub fn open_shared(config: &FileConfig) -> Result<Arc<Self>, BackendError> {
        let path = canonical(&config.path)?;
        let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|_, weak| weak.strong_count() > 0);
        if let Some(backend) = open.get(&path).and_then(Weak::upgrade) {
            if backend.read_only && !config.read_only {
                return Err(BackendError::Unavailable(format!(
                    "{} is open read-only in this process",
                    path.display()
                )));
            }
            return Ok(backend);
        }
        let backend = match config.read_only {
            true => Self::open_read_only(&path, config)?,
            false => None,
        };
        let backend = match backend {
            Some(backend) => Arc::new(backend),
            None => Arc::new(Self::open(&path, config)?),
        };
        open.insert(path, Arc::downgrade(&backend));
        Ok(backend)
    }

    /// `None` when the file must be opened for writing first.
    fn open_read_only(path: &Path, config: &FileConfig) -> Result<Option<Self>, BackendError> {
        if !path.is_file() {
            return Ok(None);
        }
        let db = match config.builder().open_read_only(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::RepairAborted) => return Ok(None),
            Err(e) => return Err(open_error(path, e)),
        };
        let version = {
            let txn = db.begin_read().map_err(unavailable)?;
            match read_format(&txn, path)? {
                Some(version) => version,
                None => return Ok(None),
            }
        };
        Ok(Some(Self {
            db: Arc::new(db),
            read_only: true,
            path: path.to_path_buf(),
            commits: Arc::new(tokio::sync::watch::Sender::new(version)),
            queue: None,
            committer: None,
            counters: Arc::new(Counters::default()),
            snapshot: Arc::new(Snapshot::default()),
        }))
    }

    fn open(path: &Path, config: &FileConfig) -> Result<Self, BackendError> {
        let retention = config.retention;
        let db = config
            .builder()
            .create(path)
            .map_err(|e| open_error(path, e))?;
        // A file kvstash made already has its tables: opening it writes
        // nothing more than redb itself does.
        let ready = {
            let txn = db.begin_read().map_err(unavailable)?;
            read_format(&txn, path)?
        };
        let version = match ready {
            Some(version) => version,
            None => init_tables(&db, path)?,
        };
        let db = Arc::new(db);
        let commits = Arc::new(tokio::sync::watch::Sender::new(version));
        let counters = Arc::new(Counters::default());
        let snapshot = Arc::new(Snapshot::default());
        let (queue, requests) = std::sync::mpsc::channel();
        let committer = {
            let (db, commits, counters) = (db.clone(), commits.clone(), counters.clone());
            let snapshot = snapshot.clone();
            std::thread::Builder::new()
                .name("kvstash-commit".into())
                .spawn(move || {
                    run_committer(&db, retention, &requests, &commits, &counters, &snapshot);
                })
                .map_err(|e| {
                    BackendError::Unavailable(format!("cannot start the committer: {e}"))
                })?
        };
        Ok(Self {
            db,
            read_only: false,
            path: path.to_path_buf(),
            commits,
            queue: Some(queue),
            committer: Some(committer),
            counters,
            snapshot,
        })
    }

    /// Whether this handle only reads (see [`FileConfig::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }
}

fn open_error(path: &Path, e: redb::DatabaseError) -> BackendError {
    if matches!(e, redb::DatabaseError::DatabaseAlreadyOpen) {
        BackendError::Unavailable(format!("{} is in use by another process", path.display()))
    } else {
        BackendError::Unavailable(format!("cannot open {}: {e}", path.display()))
    }
}

/// The newest version of a file whose tables kvstash made, `None` for a
/// file without them (new); an error for another format.
fn read_format(txn: &redb::ReadTransaction, path: &Path) -> Result<Option<u64>, BackendError> {
    let table = |e: redb::TableError| {
        if matches!(e, redb::TableError::TableDoesNotExist(_)) {
            Ok(None)
        } else {
            Err(unavailable(e))
        }
    };
    let meta = match txn.open_table(META) {
        Ok(meta) => meta,
        Err(e) => return table(e),
    };
    match meta.get("format").map_err(unavailable)?.map(|g| g.value()) {
        None => return Ok(None),
        Some(FORMAT) => {}
        Some(other) => return Err(wrong_format(path, other)),
    }
    for exists in [
        txn.open_table(DATA).map(drop),
        txn.open_table(LOG).map(drop),
    ] {
        if let Err(e) = exists {
            return table(e);
        }
    }
    Ok(Some(
        meta.get("version")
            .map_err(unavailable)?
            .map_or(0, |g| g.value()),
    ))
}

fn wrong_format(path: &Path, format: u64) -> BackendError {
    BackendError::Invalid(format!(
        "{} has kvstash file format {format}; this build reads format {FORMAT}",
        path.display()
    ))
}

/// Makes kvstash's tables in a new file; returns its version.
fn init_tables(db: &Database, path: &Path) -> Result<u64, BackendError> {
    let txn = db.begin_write().map_err(unavailable)?;
    {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let format = meta.get("format").map_err(unavailable)?.map(|g| g.value());
        match format {
            None => {
                meta.insert("format", FORMAT).map_err(unavailable)?;
            }
            Some(FORMAT) => {}
            Some(other) => return Err(wrong_format(path, other)),
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
    Ok(version)
}

impl FileBackend {
    /// Commits acknowledged and fsyncs taken so far.
    pub fn sync_stats(&self) -> SyncStats {
        use std::sync::atomic::Ordering::Relaxed;
        SyncStats {
            acknowledged: self.counters.acknowledged.load(Relaxed),
            syncs: self.counters.syncs.load(Relaxed),
        }
    }
}

/// The committer: takes the first waiting commit, gathers the others that
/// are waiting, applies them all in one durable transaction, answers each.
fn run_committer(
    db: &Database,
    retention: u64,
    requests: &std::sync::mpsc::Receiver<Request>,
    commits: &tokio::sync::watch::Sender<u64>,
    counters: &Counters,
    snapshot: &Snapshot,
) {
    use std::sync::atomic::Ordering::Relaxed;
    while let Ok(first) = requests.recv() {
        let mut ops = first.checks.len() + first.writes.len();
        let mut batch = vec![first];
        while ops < MAX_GROUP_OPS {
            match requests.try_recv() {
                Ok(next) => {
                    ops += next.checks.len() + next.writes.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let work: Vec<(&[Check], &[Write])> = batch
            .iter()
            .map(|r| (r.checks.as_slice(), r.writes.as_slice()))
            .collect();
        let outcome = commit_group(db, retention, &work);
        drop(work);
        match outcome {
            Ok((results, synced)) => {
                if synced {
                    snapshot.committed();
                    counters.syncs.fetch_add(1, Relaxed);
                }
                let newest = results
                    .iter()
                    .filter_map(|r| r.as_ref().ok())
                    .max()
                    .copied();
                for (request, result) in batch.into_iter().zip(results) {
                    if result.is_ok() {
                        counters.acknowledged.fetch_add(1, Relaxed);
                    }
                    let _ = request.reply.send(result);
                }
                if let Some(newest) = newest {
                    commits.send_if_modified(|seen| {
                        let newer = newest > *seen;
                        if newer {
                            *seen = newest;
                        }
                        newer
                    });
                }
            }
            Err(e) => {
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
            }
        }
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

/// Applies `group` in order in one write transaction and makes it durable
/// with one commit (one fsync). Each commit's checks see the writes of those
/// before it; a commit whose check fails is skipped with its conflict. Returns
/// each commit's result, and whether anything was written.
fn commit_group(
    db: &Database,
    retention: u64,
    group: &[(&[Check], &[Write])],
) -> Result<(Vec<Result<u64, BackendError>>, bool), BackendError> {
    let txn = db.begin_write().map_err(unavailable)?;
    let results = {
        let mut data = txn.open_table(DATA).map_err(unavailable)?;
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let mut log = txn.open_table(LOG).map_err(unavailable)?;
        let mut version = meta
            .get("version")
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        let mut results = Vec::with_capacity(group.len());
        'commits: for (checks, writes) in group {
            for (index, check) in checks.iter().enumerate() {
                let current = data
                    .get(check.key())
                    .map_err(unavailable)?
                    .map(|g| g.value().0);
                if current != check.expected() {
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    results.push(Err(BackendError::Conflict { index, current }));
                    continue 'commits;
                }
            }
            version += 1;
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
            results.push(Ok(version));
        }
        if results.iter().any(Result::is_ok) {
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
        }
        results
    };
    let wrote = results.iter().any(Result::is_ok);
    if wrote {
        txn.commit().map_err(unavailable)?;
    } else {
        txn.abort().map_err(unavailable)?;
    }
    Ok((results, wrote))
}

#[async_trait]
impl Backend for FileBackend {
    fn summary(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let data = self.snapshot.table(self.db.as_ref())?;
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
        let data = self.snapshot.table(self.db.as_ref())?;
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
        let data = self.snapshot.table(self.db.as_ref())?;
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
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        let stopped = || BackendError::Unavailable("the file backend's committer stopped".into());
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.queue
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request {
                checks,
                writes,
                reply,
            })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn write(key: &str, value: &str) -> Write {
        Write {
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    #[tokio::test]
    async fn a_read_only_open_reads_everything_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            backend
                .commit(vec![], vec![write("a", "1"), write("b", "2")])
                .await
                .unwrap();
        }
        let before = std::fs::read(&path).unwrap();
        let mut config = FileConfig::new(&path);
        config.read_only = true;
        let backend = FileBackend::open_shared(&config).unwrap();
        assert!(backend.is_read_only());
        assert_eq!(backend.get(b"a").await.unwrap().unwrap().value, b"1");
        assert_eq!(backend.current_version().await.unwrap(), 1);
        assert_eq!(backend.changes(0, 10).await.unwrap().len(), 2);
        let scan = Scan {
            start: vec![],
            end: None,
            limit: 10,
            reverse: false,
        };
        assert_eq!(backend.scan(&scan).await.unwrap().len(), 2);
        assert!(matches!(
            backend.commit(vec![], vec![write("a", "3")]).await,
            Err(BackendError::ReadOnly)
        ));
        // A read-write open in the same process is refused, not mixed up.
        assert!(FileBackend::open_shared(&FileConfig::new(&path)).is_err());
        drop(backend);
        assert!(std::fs::read(&path).unwrap() == before, "the file changed");
    }

    #[tokio::test]
    async fn a_read_only_open_of_a_missing_file_makes_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FileConfig::new(dir.path().join("new.redb"));
        config.read_only = true;
        let backend = FileBackend::open_shared(&config).unwrap();
        assert!(!backend.is_read_only());
        assert_eq!(backend.get(b"a").await.unwrap(), None);
    }

    #[tokio::test]
    async fn reopening_writes_nothing_but_redbs_own_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(FileBackend::open_shared(&FileConfig::new(&path)).unwrap());
        let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        // The open made no commit of its own: the next commit is version 1.
        assert_eq!(
            backend.commit(vec![], vec![write("a", "1")]).await.unwrap(),
            1
        );
    }

    #[test]
    fn cache_mb_is_a_positive_whole_number() {
        let ok = FileConfig::from_json(serde_json::json!({"type":"file","path":"x","cache_mb":8}))
            .unwrap();
        assert_eq!(ok.cache_mb, Some(8));
        for bad in [
            serde_json::json!(0),
            serde_json::json!(-1),
            serde_json::json!("8"),
        ] {
            let e =
                FileConfig::from_json(serde_json::json!({"path":"x","cache_mb":bad})).unwrap_err();
            assert!(format!("{e}").contains("cache_mb"), "{e}");
        }
        let e =
            FileConfig::from_json(serde_json::json!({"path":"x","read_only":true})).unwrap_err();
        assert!(format!("{e}").contains("read_only"), "{e}");
    }
}
