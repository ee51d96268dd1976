//! The file backend: a commit log in front of one redb database file.
//!
//! **Commits** are appended to the log (`PATH-wal`, [`wal`]) and made
//! durable with one `fdatasync` there; only then are they acknowledged. The
//! log is sequential and reused in place, so that fsync writes little: a
//! one-shot `kvstash set` costs one, where redb's own read-write open,
//! commit and close cost seven. Concurrent commits queue for one committer
//! thread per database, which plans the waiting ones in order (each
//! commit's checks see the earlier ones' writes; each gets its own version)
//! and logs them with one fsync, so writers share fsyncs, and an fsync
//! never stalls the async executor.
//!
//! **Reads** see every acknowledged commit at once: a commit goes into an
//! in-memory overlay (the newest value of each key the log holds, and its
//! changes) before it is acknowledged, and reads look there first, then in
//! redb.
//!
//! **Checkpoints** move the overlay into redb in one durable transaction
//! and start the log again: once the log holds [`CHECKPOINT_BYTES`], and on
//! close once it holds [`CLOSE_CHECKPOINT_BYTES`]. redb is opened read-only
//! until the first checkpoint needs it writable. Opening replays the log
//! after redb's version; a crash at any point leaves redb at its last
//! checkpoint and the log holding every acknowledged commit after it.
//! redb's tables (`stored.rs`, `docs/format.md`):
//!
//! - `records`: storage key → crc32, version, value
//! - `feed`: (version, write index) → crc32, key, and the value, a delete,
//!   or a reference to the key's current record: the change feed
//! - `meta`: `format` (3; 2 and 1 are migrated), `version` (newest
//!   checkpointed commit), `trimmed` (newest version whose changes were
//!   dropped from `feed`), `feed_bytes`
//!
//! **Damage** is refused, never served: records and changes carry their own
//! checksums, checked on every read; a small file is verified in full at
//! open (`verify.rs`), and so is a larger one unless its mark says it is
//! as it was when last known sound (`mark.rs`); a clean close seals the log (`wal.rs`); `kvstash
//! check` verifies everything (`check.rs`).
//!
//! One process opens each file once: every handle on the same path in one
//! process shares one [`FileBackend`] (`open_shared`). Another process is
//! kept out by the log's lock (exclusive for a writer, shared for readers).

mod check;
#[cfg(test)]
mod crash;
mod disk;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod line;
mod mark;
mod salvage;
mod share;
mod stored;
mod verify;
mod wal;

pub use check::{Report as CheckReport, check};
pub use salvage::{Salvaged, salvage};
pub use share::Client;

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, RwLock, Weak};

use async_trait::async_trait;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Deserialize;

use super::{
    Backend, BackendError, Change, Check, DEFAULT_RETENTION, Entry, Scan, Write, take_changes,
    validate_commit, validate_get_many, validate_key, validate_scan,
};

/// Formats 1 and 2's tables, read only to migrate them.
const DATA_2: TableDefinition<'_, &[u8], (u64, &[u8])> = TableDefinition::new("data");
/// A change-feed entry: the key and its new value (`None`: deleted).
type LogValue<'a> = (&'a [u8], Option<&'a [u8]>);
const LOG_2: TableDefinition<'_, (u64, u32), LogValue<'_>> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");

/// The file format: 3 checksums every record and change ([`stored`]); 2
/// had the commit log beside it, 1 had no log. A format-1 or 2 file is
/// migrated to 3 by its first open.
const FORMAT: u64 = 3;
const FORMAT_WITH_LOG: u64 = 2;
const FORMAT_WITHOUT_LOG: u64 = 1;

use disk::Disk;
use stored::{FEED, RECORDS};
use wal::{Record, Wal};

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
    /// Changes (one per key a commit wrote) the feed keeps at most, so a
    /// bulk load of large commits does not keep a second copy of the store.
    #[serde(default = "default_retention_entries")]
    pub retention_entries: u64,
    /// Bytes of keys and values the feed keeps at most. A key's newest
    /// value is not copied into the feed, so it does not count.
    #[serde(default = "default_retention_bytes")]
    pub retention_bytes: u64,
    /// Memory the backend may cache in, in MiB (default: unbounded but for
    /// redb's own 1 GiB page cache, filled only as pages are read). A small
    /// device caps it. Half of it is redb's page cache, whose pages cost
    /// about 1.6 times their size in memory, and unless `checkpoint_kb`
    /// says otherwise the log checkpoints at an eighth of it (the commits
    /// it holds are in memory too, at about twice the log's bytes).
    #[serde(default)]
    pub cache_mb: Option<u32>,
    /// A checkpoint moves the commit log into the database once the log
    /// holds this many KiB (default 4096, or `cache_mb` × 128 if that is
    /// less). The commits since the last checkpoint are also held in
    /// memory, so this bounds that too.
    #[serde(default)]
    pub checkpoint_kb: Option<u32>,
    /// A redb file of at most this many MiB is verified in full (redb's
    /// checksum of every page) at every open, so damage anywhere in it is
    /// refused before anything is read (default 1; 0: never). A larger
    /// file is verified at open unless it is exactly as a verification or
    /// its writer's close left it (`mark.rs`). `kvstash check` verifies any
    /// file; records carry their own checksums on every read.
    #[serde(default)]
    pub verify_mb: Option<u32>,
    /// Open the file for reading only (not from JSON: the CLI's read
    /// commands ask for it). Nothing is written, not even on open and
    /// close, and other read-only openers may share the file.
    #[serde(skip)]
    pub read_only: bool,
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION
}

/// The feed's default limits besides commits: 100,000 changes, 8 MiB. The
/// newest commit is always kept, whatever its size. Trimming happens at
/// checkpoints, so the feed may hold up to `checkpoint_kb` more meanwhile.
pub const DEFAULT_RETENTION_ENTRIES: u64 = 100_000;
pub const DEFAULT_RETENTION_BYTES: u64 = 8 << 20;

/// The default `verify_mb`. Verifying costs about 1 ms per MiB at open
/// here (measured with one-shot `kvstash get`: +0.5 ms at 1,000 records and
/// 276 KiB, +2.1 ms at 10,000 and 2.1 MiB, +13 ms at 100,000 and 17 MiB):
/// a device's store of names and settings (a few thousand records) is
/// verified at every open for about a millisecond.
pub const DEFAULT_VERIFY_MB: u32 = 1;

fn default_retention_entries() -> u64 {
    DEFAULT_RETENTION_ENTRIES
}

fn default_retention_bytes() -> u64 {
    DEFAULT_RETENTION_BYTES
}

impl FileConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            r#type: None,
            path: path.into(),
            retention: DEFAULT_RETENTION,
            retention_entries: DEFAULT_RETENTION_ENTRIES,
            retention_bytes: DEFAULT_RETENTION_BYTES,
            cache_mb: None,
            checkpoint_kb: None,
            verify_mb: None,
            read_only: false,
        }
    }

    pub fn from_json(config: serde_json::Value) -> Result<Self, BackendError> {
        let fields = [
            ("cache_mb", "MiB", u64::from(u32::MAX)),
            ("checkpoint_kb", "KiB", u64::from(u32::MAX)),
            ("retention", "commits", u64::MAX),
            ("retention_entries", "changes", u64::MAX),
            ("retention_bytes", "bytes", u64::MAX),
        ];
        for (field, unit, most) in fields {
            if let Some(n) = config.get(field).filter(|n| !n.is_null())
                && !n.as_u64().is_some_and(|n| (1..=most).contains(&n))
            {
                return Err(BackendError::Invalid(format!(
                    "file backend configuration: `{field}` must be a whole number of {unit}, at least 1 (got {n})"
                )));
            }
        }
        if let Some(n) = config.get("verify_mb").filter(|n| !n.is_null())
            && n.as_u64().is_none_or(|n| n > u64::from(u32::MAX))
        {
            return Err(BackendError::Invalid(format!(
                "file backend configuration: `verify_mb` must be a whole number of MiB, 0 to verify no file at open (got {n})"
            )));
        }
        serde_json::from_value(config)
            .map_err(|e| BackendError::Invalid(format!("file backend configuration: {e}")))
    }

    /// The largest redb file an open verifies in full.
    fn verify_bytes(&self) -> u64 {
        u64::from(self.verify_mb.unwrap_or(DEFAULT_VERIFY_MB)) << 20
    }

    /// Log bytes that make a checkpoint run.
    fn checkpoint_bytes(&self) -> u64 {
        match (self.checkpoint_kb, self.cache_mb) {
            (Some(kb), _) => u64::from(kb) << 10,
            (None, Some(mb)) => CHECKPOINT_BYTES.min((u64::from(mb) << 20) / 8),
            (None, None) => CHECKPOINT_BYTES,
        }
    }

    /// redb's page cache: half of `cache_mb` (measured at 1M keys, a
    /// process's resident memory grows by ~1.6 MiB per MiB of redb's
    /// cache: its page copies, maps and allocator slack).
    fn redb_cache_bytes(&self) -> Option<usize> {
        let mb = usize::try_from(self.cache_mb?).unwrap_or(usize::MAX);
        Some(mb.saturating_mul(1 << 20) / 2)
    }

    fn builder(&self) -> redb::Builder {
        let mut builder = Database::builder();
        if let Some(bytes) = self.redb_cache_bytes() {
            builder.set_cache_size(bytes);
        }
        builder
    }
}

pub struct FileBackend {
    /// What reads see: redb and the commits not yet checkpointed into it.
    state: Arc<RwLock<State>>,
    read_only: bool,
    path: PathBuf,
    /// The newest committed version, for watchers. Every handle on this
    /// file in this process shares this backend, so it sees every commit.
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Where commits meet the committer; `None` for a reader.
    line: Option<Arc<line::Line>>,
    /// The committer thread: checkpoints, and commits while others do.
    committer: Option<std::thread::JoinHandle<()>>,
    counters: Arc<Counters>,
    /// A reader's shared lock on the store, held while it is open.
    read_lock: Option<wal::ReadLock>,
    /// Told when this backend has let go of the file.
    closing: Arc<Closing>,
    /// The socket other processes use this store through (a writer's).
    server: Option<share::Server>,
}

/// Whether a backend that is being dropped has let go of its file yet: an
/// open of the same path in this process waits for it rather than finding
/// the file in use.
#[derive(Debug, Default)]
struct Closing {
    done: Mutex<bool>,
    told: std::sync::Condvar,
}

impl Closing {
    fn finish(&self) {
        *self.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.told.notify_all();
    }

    fn is_done(&self) -> bool {
        *self.done.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn wait(&self) {
        let mut done = self.done.lock().unwrap_or_else(|p| p.into_inner());
        while !*done {
            done = self.told.wait(done).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// The data table as of some checkpoint.
type DataTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
/// One record of a range of it.
type StoredItem<'a> = (
    redb::AccessGuard<'a, &'static [u8]>,
    redb::AccessGuard<'a, &'static [u8]>,
);

/// The version and record redb stores under `key`, or the error that says
/// it is damaged.
fn decode(key: &[u8], stored: &[u8]) -> Result<(u64, Vec<u8>), BackendError> {
    stored::decode_record(key, stored)
        .map(|(version, record)| (version, record.to_vec()))
        .map_err(|damage| corrupt(&format!("the record of key {}", key.escape_ascii()), damage))
}

/// The error for damage found in redb's file.
fn corrupt(what: &str, damage: stored::Damage) -> BackendError {
    BackendError::Corrupt(format!(
        "corrupt data in the file backend: {what} {damage}; nothing was changed"
    ))
}

/// The redb database: opened read-only while nothing needs writing to it
/// (opening and closing it read-write costs four fsyncs), read-write from
/// the first checkpoint on.
enum Db {
    Reading(redb::ReadOnlyDatabase),
    Writing(Database),
    /// A checkpoint could open neither.
    Closed(String),
}

impl Db {
    fn readable(&self) -> Result<&dyn ReadableDatabase, BackendError> {
        match self {
            Db::Reading(db) => Ok(db),
            Db::Writing(db) => Ok(db),
            Db::Closed(why) => Err(BackendError::Unavailable(why.clone())),
        }
    }
}

/// A stored value in the overlay: `None` is a delete.
type Slot = Option<(u64, Vec<u8>)>;

/// Everything a read looks at, under one lock, so that a read never mixes
/// redb from after a checkpoint with an overlay from before it.
struct State {
    db: Db,
    /// One read transaction's data table, shared by reads until the next
    /// checkpoint changes redb (a read transaction and its table cost about
    /// as much as the get); `None` if it could not be opened, when each
    /// read opens its own.
    table: Option<DataTable>,
    /// The commits in the log that redb does not have yet: the newest
    /// value of each key they wrote. Reads look here first.
    overlay: BTreeMap<Vec<u8>, Slot>,
    /// Their changes in order, for the change feed (all after `base`).
    changes: Vec<Change>,
    /// The version redb holds (of the last checkpoint).
    base: u64,
    /// The newest committed version.
    version: u64,
    /// The newest version whose changes were dropped from redb's feed.
    trimmed: u64,
    /// Commits the feed keeps: it answers as if it had trimmed to them
    /// after every commit, though redb's is trimmed at checkpoints.
    retention: u64,
    /// A replica's copy (`make_replica`): commits of its own are refused.
    replica: bool,
}

/// What `meta` holds.
#[derive(Clone, Copy, Debug)]
struct Meta {
    format: u64,
    version: u64,
    trimmed: u64,
    /// A replica's file (written by its first restore): its versions are
    /// its primary's, and may skip.
    replica: bool,
    /// Records an older format's file had, rewritten by this open's
    /// migration (their old pages are free: the close compacts them).
    migrated: u64,
}

impl State {
    /// The state after replaying `records` (the log) over redb at `meta`.
    fn new(
        db: Db,
        meta: Meta,
        records: Vec<Record>,
        config: &FileConfig,
        path: &Path,
    ) -> Result<Self, BackendError> {
        let table = data_table(&db);
        let mut state = State {
            db,
            table,
            overlay: BTreeMap::new(),
            changes: Vec::new(),
            base: meta.version,
            version: meta.version,
            trimmed: meta.trimmed,
            retention: config.retention,
            replica: false,
        };
        for record in records {
            // Records up to redb's version were checkpointed already (a
            // crash between the checkpoint and the log's reset).
            if record.version <= state.version {
                continue;
            }
            // A replica's versions are its primary's, which may skip.
            if record.version != state.version + 1 && !meta.replica {
                return Err(BackendError::Unavailable(format!(
                    "the commit log {} is damaged: after version {} it holds version {}; nothing was changed",
                    wal::path_of(path).display(),
                    state.version,
                    record.version
                )));
            }
            state.apply(record.version, record.writes);
        }
        Ok(state)
    }

    fn apply(&mut self, version: u64, writes: Vec<Write>) {
        for write in writes {
            let slot = write.value.as_ref().map(|value| (version, value.clone()));
            self.overlay.insert(write.key.clone(), slot);
            self.changes.push(Change {
                version,
                key: write.key,
                value: write.value,
            });
        }
        self.version = version;
    }

    fn table(&self) -> Result<TableRef<'_>, BackendError> {
        if let Some(table) = &self.table {
            return Ok(TableRef::Shared(table));
        }
        let txn = self.db.readable()?.begin_read().map_err(unavailable)?;
        Ok(TableRef::Own(txn.open_table(RECORDS).map_err(unavailable)?))
    }

    fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        if let Some(slot) = self.overlay.get(key) {
            return Ok(slot.as_ref().map(|(version, value)| Entry {
                key: key.to_vec(),
                value: value.clone(),
                version: *version,
            }));
        }
        let table = self.table()?;
        let Some(found) = table.get(key).map_err(unavailable)? else {
            return Ok(None);
        };
        let (version, value) = decode(key, found.value())?;
        Ok(Some(Entry {
            key: key.to_vec(),
            value,
            version,
        }))
    }

    /// The version of `key`, `None` if absent.
    fn version_of(&self, key: &[u8]) -> Result<Option<u64>, BackendError> {
        if let Some(slot) = self.overlay.get(key) {
            return Ok(slot.as_ref().map(|(version, _)| *version));
        }
        let table = self.table()?;
        let Some(found) = table.get(key).map_err(unavailable)? else {
            return Ok(None);
        };
        let version = stored::decode_record(key, found.value())
            .map_err(|damage| {
                corrupt(&format!("the record of key {}", key.escape_ascii()), damage)
            })?
            .0;
        Ok(Some(version))
    }

    fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        let table = self.table()?;
        let upper = scan
            .end
            .as_deref()
            .map_or(Bound::Unbounded, Bound::Excluded);
        let range = (Bound::Included(scan.start.as_slice()), upper);
        let stored = table.range::<&[u8]>(range).map_err(unavailable)?;
        let to_entry = |item: Result<_, redb::StorageError>| {
            let (k, v): StoredItem<'_> = item.map_err(unavailable)?;
            let key = k.value();
            let (version, value) = decode(key, v.value())?;
            Ok(Entry {
                key: key.to_vec(),
                value,
                version,
            })
        };
        let newer = self.overlay.range::<[u8], _>(range);
        let limit = scan.clamped_limit();
        if scan.reverse {
            merge(stored.rev().map(to_entry), newer.rev(), true, limit)
        } else {
            merge(stored.map(to_entry), newer, false, limit)
        }
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let trimmed = self
            .trimmed
            .max(self.version.saturating_sub(self.retention));
        if since < trimmed {
            return Err(BackendError::Compacted {
                oldest: trimmed + 1,
            });
        }
        let newer = || {
            let from = self.changes.partition_point(|c| c.version <= since);
            self.changes[from..].iter().cloned()
        };
        if since >= self.base {
            return Ok(take_changes(newer(), limit));
        }
        let txn = self.db.readable()?.begin_read().map_err(unavailable)?;
        // A checkpoint commits redb (trimming its feed by changes and
        // bytes, maybe past `self.trimmed`) before it updates this state:
        // this snapshot's own `trimmed` says what it still has.
        let meta = txn.open_table(META).map_err(unavailable)?;
        let stored_trimmed = meta
            .get("trimmed")
            .map_err(unavailable)?
            .map_or(0, |g| g.value());
        if since < stored_trimmed {
            return Err(BackendError::Compacted {
                oldest: stored_trimmed + 1,
            });
        }
        let log = txn.open_table(FEED).map_err(unavailable)?;
        let records = txn.open_table(RECORDS).map_err(unavailable)?;
        let start = since.saturating_add(1);
        let mut failure = None;
        // Only up to `base`: a checkpoint commits redb before it empties
        // the overlay (under a read lock), and the overlay has the rest.
        let stored = log
            .range((start, 0)..=(self.base, u32::MAX))
            .map_err(unavailable)?
            .map_while(|item| {
                let change = item
                    .map_err(unavailable)
                    .and_then(|(k, v)| stored_change(&records, k.value(), v.value()));
                change.map_err(|e| failure = Some(e)).ok()
            });
        let changes = take_changes(stored.chain(newer()), limit);
        match failure {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }
}

/// The feed's change at `at`, stored as `value`, with its value from
/// `records` if the feed does not hold it.
fn stored_change(
    records: &impl ReadableTable<&'static [u8], &'static [u8]>,
    at: (u64, u32),
    value: &[u8],
) -> Result<Change, BackendError> {
    let what = || format!("the change feed's entry {}.{}", at.0, at.1);
    let (key, change) = stored::decode_change(at, value).map_err(|d| corrupt(&what(), d))?;
    let value = match change {
        stored::Change::Deleted => None,
        stored::Change::Value(record) => Some(record.to_vec()),
        stored::Change::Current => {
            let current = records.get(key).map_err(unavailable)?;
            match current.map(|g| decode(key, g.value())).transpose()? {
                Some((version, record)) if version == at.0 => Some(record),
                _ => {
                    return Err(BackendError::Corrupt(format!(
                        "corrupt data in the file backend: {} refers to version {} of key {}, which the store does not hold; nothing was changed",
                        what(),
                        at.0,
                        key.escape_ascii()
                    )));
                }
            }
        }
    };
    Ok(Change {
        version: at.0,
        key: key.to_vec(),
        value,
    })
}

/// A read transaction's data table: redb as of its last checkpoint.
fn data_table(db: &Db) -> Option<DataTable> {
    let txn = db.readable().ok()?.begin_read().ok()?;
    txn.open_table(RECORDS).ok()
}

/// The shared data table, or a read's own when there is none.
enum TableRef<'a> {
    Shared(&'a DataTable),
    Own(DataTable),
}

impl std::ops::Deref for TableRef<'_> {
    type Target = DataTable;

    fn deref(&self) -> &DataTable {
        match self {
            TableRef::Shared(table) => table,
            TableRef::Own(table) => table,
        }
    }
}

/// Up to `limit` entries of redb's range overlaid with the overlay's (both
/// in scan order): an overlay entry replaces the stored one, a delete hides it.
fn merge<'a>(
    mut stored: impl Iterator<Item = Result<Entry, BackendError>>,
    mut newer: impl Iterator<Item = (&'a Vec<u8>, &'a Slot)>,
    reverse: bool,
    limit: usize,
) -> Result<Vec<Entry>, BackendError> {
    let mut out = Vec::new();
    let mut next_stored = stored.next().transpose()?;
    let mut next_newer = newer.next();
    while out.len() < limit {
        let from_newer = match (&next_stored, next_newer) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(entry), Some((key, _))) => {
                let order = key.as_slice().cmp(entry.key.as_slice());
                match if reverse { order.reverse() } else { order } {
                    std::cmp::Ordering::Less => true,
                    std::cmp::Ordering::Equal => {
                        next_stored = stored.next().transpose()?;
                        true
                    }
                    std::cmp::Ordering::Greater => false,
                }
            }
        };
        if from_newer {
            if let Some((key, Some((version, value)))) = next_newer {
                out.push(Entry {
                    key: key.clone(),
                    value: value.clone(),
                    version: *version,
                });
            }
            next_newer = newer.next();
        } else if let Some(entry) = next_stored.take() {
            out.push(entry);
            next_stored = stored.next().transpose()?;
        }
    }
    Ok(out)
}

impl std::fmt::Debug for FileBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileBackend")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Drop for FileBackend {
    /// Closes the line and waits for the committer to finish what it has,
    /// then closes redb and the log, so the file is free to reopen as soon
    /// as this returns (and an open waiting for it goes on).
    fn drop(&mut self) {
        // The server first: it commits through the line.
        self.server.take();
        if let Some(line) = self.line.take() {
            line.close();
        }
        if let Some(committer) = self.committer.take() {
            let _ = committer.join();
        }
        {
            let mut state = write(&self.state);
            state.table = None;
            state.db = Db::Closed(format!("{} is closed", self.path.display()));
        }
        self.read_lock.take();
        self.closing.finish();
    }
}

/// One commit waiting for the committer.
struct Request {
    op: Op,
    writes: Vec<Write>,
    reply: tokio::sync::oneshot::Sender<Result<u64, BackendError>>,
}

/// What a [`Request`] asks of the committer.
enum Op {
    /// A commit of this store: if its checks hold, its writes at the next
    /// version.
    Commit(Vec<Check>),
    /// A replica's copy of its primary's commit at this version.
    Replicated(u64),
    /// A replica's resynchronization: these records, and nothing else, at
    /// this version (`writes` is empty).
    Restore(u64, Vec<Entry>),
}

impl Request {
    fn checks(&self) -> &[Check] {
        match &self.op {
            Op::Commit(checks) => checks,
            Op::Replicated(_) | Op::Restore(..) => &[],
        }
    }
}

/// Most checks and writes one group commit gathers ...
const MAX_GROUP_OPS: usize = 50_000;
/// ... and most bytes of records (its first commit may be larger, up to
/// [`wal::MAX_RECORD`]): one append's buffer.
const MAX_GROUP_BYTES: usize = 16 << 20;
/// A checkpoint runs once the log holds this many bytes of records (unless
/// configured: `checkpoint_kb`). With checkpoints failing, commits are
/// refused once it holds four times as much, so memory stays bounded.
const CHECKPOINT_BYTES: u64 = 4 << 20;
/// ... and on close, once it holds this many, so that the next open (a
/// one-shot CLI call, say) has little to replay. Below it, closing leaves
/// the log as it is: a process that wrote one value exits after one fsync.
const CLOSE_CHECKPOINT_BYTES: u64 = 64 << 10;

impl Counters {
    /// `result`, noted if it is damage (see [`Counters::damaged`]).
    fn note<T>(&self, result: Result<T, BackendError>) -> Result<T, BackendError> {
        if let Err(e) = &result {
            self.note_error(e);
        }
        result
    }

    /// Notes `e` if it is damage.
    fn note_error(&self, e: &BackendError) {
        if matches!(e, BackendError::Corrupt(_)) {
            self.damaged
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

#[derive(Debug, Default)]
struct Counters {
    /// An operation met damage (a `corrupt` error): the close does not
    /// mark the file sound, and removes its mark.
    damaged: std::sync::atomic::AtomicBool,
    acknowledged: std::sync::atomic::AtomicU64,
    syncs: std::sync::atomic::AtomicU64,
    checkpoints: std::sync::atomic::AtomicU64,
    groups: [std::sync::atomic::AtomicU64; GROUP_SLOTS],
}

/// The slots of [`SyncStats::groups`]: appends of 1, 2, 3–4, 5–8, …,
/// 129–256 commits, and more.
pub const GROUP_SLOTS: usize = 10;

/// The [`SyncStats::groups`] slot of an append of `commits` commits.
fn group_slot(commits: usize) -> usize {
    let slot = commits.max(1).next_power_of_two().trailing_zeros() as usize;
    slot.min(GROUP_SLOTS - 1)
}

/// How many commits a file backend acknowledged, how many durable appends
/// (fsyncs of its log) they took (with concurrent writers, fewer), and how
/// many checkpoints moved the log into the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SyncStats {
    pub acknowledged: u64,
    pub syncs: u64,
    pub checkpoints: u64,
    /// Appends by how many commits each carried: slot `i` counts appends
    /// of more than `2^(i-1)` and at most `2^i` commits; the last slot,
    /// every larger one.
    pub groups: [u64; GROUP_SLOTS],
}

fn unavailable(e: impl Into<redb::Error>) -> BackendError {
    BackendError::Unavailable(format!("file backend: {}", e.into()))
}

/// Open databases by canonical path, so one process opens each file once.
static OPEN: LazyLock<Mutex<HashMap<PathBuf, Opened>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

struct Opened {
    backend: Weak<FileBackend>,
    closing: Arc<Closing>,
}

impl FileBackend {
    /// Opens (creating if needed) the database at `config.path`, or returns
    /// the handle this process already has on it.
    ///
    /// A read-only open of a file that is missing, was not closed cleanly
    /// (redb must repair it, which writes) or has an older format (which
    /// is migrated), opens it for writing.
    pub fn open_shared(config: &FileConfig) -> Result<Arc<Self>, BackendError> {
        let path = canonical(&config.path)?;
        let mut open = loop {
            let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
            open.retain(|_, o| o.backend.strong_count() > 0 || !o.closing.is_done());
            let Some(opened) = open.get(&path) else {
                break open;
            };
            let Some(backend) = opened.backend.upgrade() else {
                // Being dropped on another thread: wait until it let go.
                let closing = opened.closing.clone();
                drop(open);
                closing.wait();
                continue;
            };
            if backend.read_only && !config.read_only {
                return Err(BackendError::Unavailable(format!(
                    "{} is open read-only in this process",
                    path.display()
                )));
            }
            return Ok(backend);
        };
        let backend = match config.read_only {
            // A panic inside redb opening a damaged file is an error.
            true => guarded(&path, || Self::open_read_only(&path, config))?,
            false => Err(None),
        };
        let backend = match backend {
            Ok(backend) => Arc::new(backend),
            Err(verified) => Arc::new(Self::open_after(
                Arc::new(disk::Real),
                &path,
                config,
                true,
                verified,
            )?),
        };
        let opened = Opened {
            backend: Arc::downgrade(&backend),
            closing: backend.closing.clone(),
        };
        open.insert(path, opened);
        Ok(backend)
    }

    /// `Err` when the file must be opened for writing first, with what its
    /// verification found, if it ran (the writer's open need not run it
    /// again on the same file).
    fn open_read_only(
        path: &Path,
        config: &FileConfig,
    ) -> Result<Result<Self, Option<Verified>>, BackendError> {
        // Missing, or made by a crash before redb wrote anything.
        if std::fs::metadata(path).map_or(true, |m| !m.is_file() || m.len() == 0) {
            return Ok(Err(None));
        }
        let (lock, records) = match wal::ReadLock::open(path)? {
            Some((lock, records)) => (Some(lock), records),
            None => (None, Vec::new()),
        };
        let verified = verify_at_open(&disk::Real, path, config, None)?;
        let db = match config.builder().open_read_only(path) {
            Ok(db) => db,
            Err(redb::DatabaseError::RepairAborted) => return Ok(Err(Some(verified))),
            Err(e) => return Err(open_error(path, e)),
        };
        // An older format is migrated, which writes.
        let meta = {
            let txn = db.begin_read().map_err(unavailable)?;
            match read_meta(&txn, path)? {
                Some(meta) if meta.format == FORMAT => meta,
                _ => return Ok(Err(Some(verified))),
            }
        };
        verified.agrees(path, Some(&meta))?;
        let state = State::new(Db::Reading(db), meta, records, config, path)?;
        Ok(Ok(Self {
            commits: Arc::new(tokio::sync::watch::Sender::new(state.version)),
            state: Arc::new(RwLock::new(state)),
            read_only: true,
            path: path.to_path_buf(),
            line: None,
            committer: None,
            counters: Arc::new(Counters::default()),
            read_lock: lock,
            closing: Arc::default(),
            server: None,
        }))
    }

    /// The writer's open, its files on `disk`; `serve`: share the store
    /// with other processes through a socket beside the file.
    #[cfg(test)]
    fn open(
        disk: Arc<dyn Disk>,
        path: &Path,
        config: &FileConfig,
        serve: bool,
    ) -> Result<Self, BackendError> {
        Self::open_after(disk, path, config, serve, None)
    }

    /// [`open`](Self::open) after a reader's open found it must write
    /// first, with what that open's verification found (`prior`).
    fn open_after(
        disk: Arc<dyn Disk>,
        path: &Path,
        config: &FileConfig,
        serve: bool,
        prior: Option<Verified>,
    ) -> Result<Self, BackendError> {
        // The log first: it holds the store's lock.
        let (wal, records) = Wal::open(disk.clone(), path)?;
        let (db, meta, sound) = match open_db_guarded(&*disk, path, config, prior) {
            Ok(opened) => opened,
            Err(e) => {
                wal.discard_if_new();
                return Err(e);
            }
        };
        let state = State::new(db, meta, records, config, path)?;
        let mark_past = (sound && config.verify_mb != Some(0) && disk.fingerprint(path).is_some())
            .then(|| config.verify_bytes());
        let commits = Arc::new(tokio::sync::watch::Sender::new(state.version));
        let counters = Arc::new(Counters::default());
        let state = Arc::new(RwLock::new(state));
        let committer = Committer {
            state: state.clone(),
            wal,
            disk,
            path: path.to_path_buf(),
            config: config.clone(),
            commits: commits.clone(),
            counters: counters.clone(),
            checkpoint_failed: None,
            rewritten: meta.migrated,
            mark_past,
        };
        let line = Arc::new(line::Line::new(committer));
        let committer = std::thread::Builder::new()
            .name("kvstash-commit".into())
            .spawn({
                let line = line.clone();
                move || line.run()
            })
            .map_err(|e| BackendError::Unavailable(format!("cannot start the committer: {e}")))?;
        // Without a socket (a directory this process may not write, say)
        // the store is not shared: other processes find it in use.
        let holder = share::Holder {
            state: state.clone(),
            line: line.clone(),
            commits: commits.subscribe(),
            counters: counters.clone(),
            path: path.to_path_buf(),
        };
        let server = serve
            .then(|| share::Server::start(path, holder).ok())
            .flatten();
        Ok(Self {
            state,
            read_only: false,
            path: path.to_path_buf(),
            commits,
            line: Some(line),
            committer: Some(committer),
            counters,
            read_lock: None,
            closing: Arc::default(),
            server,
        })
    }

    /// Whether this handle only reads (see [`FileConfig::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    fn state(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    /// `read` on the state, a panic inside redb turned into the error for
    /// corrupt data: redb verifies no checksum when it reads, and a
    /// damaged page of a file too large to verify at open may make it
    /// panic. The process, and every other store in it, goes on.
    fn read<T>(
        &self,
        read: impl FnOnce(&State) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let state = self.state();
        let result = guarded(&self.path, || read(&state));
        self.note(result)
    }

    /// `result`, noted if it is damage (see [`Counters::damaged`]).
    fn note<T>(&self, result: Result<T, BackendError>) -> Result<T, BackendError> {
        self.counters.note(result)
    }
}

thread_local! {
    /// Whether this thread is inside [`guarded`], and where the panic it
    /// caught was raised.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static RAISED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// `f`, with a panic inside it turned into the error for corrupt data at
/// `path`: redb verifies no checksum when it reads, and a damaged page of a
/// file it did not verify may make it panic. The process, and every other
/// store in it, goes on. The panic is not printed (it is reported, with
/// where it was raised, as the error): the panic hook installed here once
/// stays silent for panics inside `guarded` and passes every other one to
/// the hook that was installed before it.
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, BackendError>) -> Result<T, BackendError> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let before = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.get() {
                // A dependency's path from its crate on (`redb-4.6.0/src/…`).
                let at = info.location().map(|l| {
                    let file = l.file();
                    let file = file
                        .split_once("/registry/src/")
                        .and_then(|(_, index)| index.split_once('/'))
                        .map_or(file, |(_, from_crate)| from_crate);
                    format!("{file}:{}", l.line())
                });
                RAISED.set(at);
            } else {
                before(info);
            }
        }));
    });
    let outer = GUARDED.replace(true);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.set(outer);
    result.unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let at = RAISED.take().map(|at| format!(" at {at}")).unwrap_or_default();
        Err(BackendError::Corrupt(format!(
            "corrupt data in the file backend: redb failed reading {} ({why}{at}), which a damaged page does; nothing was changed (`kvstash check` names the damage)",
            path.display()
        )))
    })
}

/// [`open_db`] with a panic inside redb, opening a damaged file it did not
/// verify, turned into an error.
fn open_db_guarded(
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
    prior: Option<Verified>,
) -> Result<OpenedDb, BackendError> {
    guarded(path, || open_db(disk, path, config, prior))
}

/// redb at `path` for a writer: read-only when it is a kvstash file of the
/// current format that was closed cleanly, else read-write (creating it,
/// making its tables, or raising its format).
fn open_db(
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
    prior: Option<Verified>,
) -> Result<OpenedDb, BackendError> {
    // An empty file was made by a crash before redb wrote anything: new.
    let existed = disk.file_len(path).is_some_and(|len| len > 0);
    if existed {
        let mut verified = verify_at_open(disk, path, config, prior)?;
        match disk.open_db_read_only(&config.builder(), path) {
            Ok(db) => {
                let meta = {
                    let txn = db.begin_read().map_err(unavailable)?;
                    read_meta(&txn, path)?
                };
                verified.agrees(path, meta.as_ref())?;
                if let Some(meta) = meta.filter(|m| m.format == FORMAT) {
                    verified.mark(path, config);
                    return Ok((Db::Reading(db), meta, verified.sound()));
                }
            }
            // A file its mark vouches for was closed cleanly: one that
            // needs redb's repair contradicts its mark, and is verified.
            Err(redb::DatabaseError::RepairAborted) => {
                if matches!(verified, Verified::Vouched) {
                    verified = verify(disk, path, config, None)?;
                }
            }
            Err(e) => return Err(open_error(path, e)),
        }
        unmark(disk, path)?;
        let db = disk
            .create_db(&config.builder(), path)
            .map_err(|e| open_error(path, e))?;
        let meta = {
            let txn = db.begin_read().map_err(unavailable)?;
            read_meta(&txn, path)?
        };
        verified.agrees(path, meta.as_ref())?;
        let meta = init_tables(&db, path)?;
        return Ok((Db::Writing(db), meta, verified.sound()));
    }
    // A new file is made whole under another name, then renamed: a crash
    // while redb writes its first pages leaves no half-made store behind
    // (it would not open), only `PATH.kvstash-new`, which the next open
    // replaces, unless it is a store itself (it has a commit log).
    let new = {
        let mut name = path.as_os_str().to_owned();
        name.push(".kvstash-new");
        PathBuf::from(name)
    };
    let io = |what: &str, e: std::io::Error| {
        BackendError::Unavailable(format!("cannot {what} {}: {e}", new.display()))
    };
    if disk.file_len(&new).is_some() {
        if disk.file_len(&wal::path_of(&new)).is_some() {
            return Err(BackendError::Unavailable(format!(
                "cannot make {}: {} is in the way and is a store of its own (it has a commit log); move one of them",
                path.display(),
                new.display()
            )));
        }
        disk.remove(&new).map_err(|e| io("remove", e))?;
    }
    let db = disk
        .create_db(&config.builder(), &new)
        .map_err(|e| open_error(&new, e))?;
    let meta = init_tables(&db, path)?;
    unmark(disk, path)?;
    disk.rename(&new, path).map_err(|e| io("rename", e))?;
    // redb does not sync the directory: without this, a power cut could
    // lose the file's name after a checkpoint reset the log.
    wal::sync_parent(disk, path)?;
    Ok((Db::Writing(db), meta, true))
}

/// What [`open_db`] opened, and whether the file was known sound then
/// (verified, vouched for by its mark, or new).
type OpenedDb = (Db, Meta, bool);

/// What [`verify_at_open`] found.
enum Verified {
    /// Not verified: `verify_mb` is 0 (or the file is not on a real disk).
    No,
    /// Not verified: the file is as it was last known sound ([`mark`]).
    Vouched,
    /// Verified: the `meta` version of the newest commit (`None`: a file
    /// without kvstash's tables yet), and the file as it was just before.
    At(Option<u64>, Option<Before>),
}

impl Verified {
    /// Whether the file was sound at open, so that the writer may mark it
    /// sound when it closes it.
    fn sound(&self) -> bool {
        !matches!(self, Self::No)
    }

    /// An error unless the open reads the commit that was verified: redb
    /// falls back to the commit before when the newest fails its checksums
    /// and was not committed in two phases (kvstash's commits are, from
    /// format 3 on, so this catches files an older build wrote last).
    fn agrees(&self, path: &Path, meta: Option<&Meta>) -> Result<(), BackendError> {
        let Self::At(verified, _) = self else {
            return Ok(());
        };
        let read = meta.map(|m| m.version);
        if *verified == read {
            return Ok(());
        }
        Err(BackendError::Corrupt(format!(
            "corrupt data in the file backend: the newest commit of {} fails redb's integrity check (it reads as version {}, the last intact commit is at {}); nothing was changed",
            path.display(),
            read.map_or_else(|| "none".to_string(), |v| v.to_string()),
            verified.map_or_else(|| "none".to_string(), |v| v.to_string()),
        )))
    }

    /// Marks the file sound as it was verified, if the writer's open left
    /// it as it was (redb opened read-only) and it is too large to verify
    /// at every open: the next open need not verify it again.
    fn mark(&self, path: &Path, config: &FileConfig) {
        if let Self::At(_, Some(before)) = self
            && before.settled
            && before.file.len() > config.verify_bytes()
        {
            mark::mark(path, &before.file);
        }
    }
}

/// The file as it was just before its verification.
struct Before {
    file: mark::Fingerprint,
    /// Its times were older than the clock's tick then: it was not being
    /// written, and may be marked as verified.
    settled: bool,
}

/// redb's integrity check of the file at `path` (every page's checksum,
/// without writing the file: `verify.rs`): always for a file of at most
/// `verify_mb`, and for a larger one unless its mark vouches for it
/// (`mark.rs`); an error that says what is damaged if it fails. `prior`:
/// what an earlier open's verification found, taken if the file has not
/// changed since.
fn verify_at_open(
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
    prior: Option<Verified>,
) -> Result<Verified, BackendError> {
    let len = disk.file_len(path).unwrap_or(0);
    if len == 0 || config.verify_mb == Some(0) {
        return Ok(Verified::No);
    }
    let now = disk.fingerprint(path);
    if len > config.verify_bytes() && now.as_ref().is_some_and(|f| mark::vouches(path, f)) {
        return Ok(Verified::Vouched);
    }
    verify(disk, path, config, prior)
}

/// [`verify_at_open`] whatever the file's size and mark.
fn verify(
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
    prior: Option<Verified>,
) -> Result<Verified, BackendError> {
    let before = disk.fingerprint(path);
    if let Some(prior) = prior
        && let Verified::At(_, Some(then)) = &prior
        && then.settled
        && then.file.fine()
        && before.as_ref() == Some(&then.file)
    {
        return Ok(prior);
    }
    let Some(db) = disk.open_db_verified(config.builder(), path) else {
        return Ok(Verified::No);
    };
    let db = db.map_err(|e| damaged_db(path, e))?;
    let txn = db.begin_read().map_err(unavailable)?;
    let version = read_meta(&txn, path)?.map(|m| m.version);
    let before = before.map(|file| Before {
        settled: file.settled(),
        file,
    });
    Ok(Verified::At(version, before))
}

/// Removes the mark of redb's file at `path` before a writer writes to it
/// (`mark.rs`).
fn unmark(disk: &dyn Disk, path: &Path) -> Result<(), BackendError> {
    disk.unmark(path).map_err(|e| {
        BackendError::Unavailable(format!(
            "cannot remove {} before writing {}: {e}",
            mark::path_of(path).display(),
            path.display()
        ))
    })
}

/// The error for a redb file that fails its integrity check.
fn damaged_db(path: &Path, e: redb::DatabaseError) -> BackendError {
    if let redb::DatabaseError::Storage(redb::StorageError::Corrupted(why)) = &e {
        let what = if why.starts_with("Primary is corrupted") {
            "a page of its newest commit fails its checksum"
        } else {
            "its pages do not hold together"
        };
        return BackendError::Corrupt(format!(
            "corrupt data in the file backend: {} fails redb's integrity check: {what} (redb: {why}); nothing was changed",
            path.display()
        ));
    }
    open_error(path, e)
}

/// A write transaction committed in two phases: redb then refuses a file
/// whose newest commit is damaged instead of falling back, unnoticed, to the
/// commit before it (which the log no longer holds the difference to).
fn begin_write(db: &Database) -> Result<redb::WriteTransaction, BackendError> {
    let mut txn = db.begin_write().map_err(unavailable)?;
    txn.set_two_phase_commit(true);
    Ok(txn)
}

fn open_error(path: &Path, e: redb::DatabaseError) -> BackendError {
    if matches!(e, redb::DatabaseError::DatabaseAlreadyOpen) {
        BackendError::Unavailable(format!("{} is in use by another process", path.display()))
    } else {
        BackendError::Unavailable(format!("cannot open {}: {e}", path.display()))
    }
}

/// The `meta` of a file whose tables kvstash made, `None` for a file
/// without them (new); an error for a format this build does not read.
fn read_meta(txn: &redb::ReadTransaction, path: &Path) -> Result<Option<Meta>, BackendError> {
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
    let field = |name: &str| -> Result<Option<u64>, BackendError> {
        Ok(meta.get(name).map_err(unavailable)?.map(|g| g.value()))
    };
    let format = match field("format")? {
        None => return Ok(None),
        Some(format @ (FORMAT_WITHOUT_LOG | FORMAT_WITH_LOG | FORMAT)) => format,
        Some(other) => return Err(wrong_format(path, other)),
    };
    let exist = if format == FORMAT {
        [
            txn.open_table(RECORDS).map(drop),
            txn.open_table(FEED).map(drop),
        ]
    } else {
        [
            txn.open_table(DATA_2).map(drop),
            txn.open_table(LOG_2).map(drop),
        ]
    };
    for exists in exist {
        if let Err(e) = exists {
            return table(e);
        }
    }
    Ok(Some(Meta {
        format,
        version: field("version")?.unwrap_or(0),
        trimmed: field("trimmed")?.unwrap_or(0),
        replica: field("replica")? == Some(1),
        migrated: 0,
    }))
}

fn wrong_format(path: &Path, format: u64) -> BackendError {
    BackendError::Invalid(format!(
        "{} has kvstash file format {format}; this build reads formats {FORMAT_WITHOUT_LOG} to {FORMAT}",
        path.display()
    ))
}

/// Makes kvstash's tables in a new file, or migrates a format-1 or 2 file
/// to the current format (so a build that does not know it refuses the
/// file instead of misreading it); returns its `meta`.
fn init_tables(db: &Database, path: &Path) -> Result<Meta, BackendError> {
    let txn = begin_write(db)?;
    let meta = {
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        let format = meta.get("format").map_err(unavailable)?.map(|g| g.value());
        let migrated = match format {
            None => 0,
            Some(FORMAT_WITHOUT_LOG | FORMAT_WITH_LOG) => migrate(&txn, &mut meta)?,
            Some(FORMAT) => 0,
            Some(other) => return Err(wrong_format(path, other)),
        };
        meta.insert("format", FORMAT).map_err(unavailable)?;
        txn.open_table(RECORDS).map_err(unavailable)?;
        txn.open_table(FEED).map_err(unavailable)?;
        let field = |name: &str| -> Result<u64, BackendError> {
            Ok(meta
                .get(name)
                .map_err(unavailable)?
                .map_or(0, |g| g.value()))
        };
        Meta {
            format: FORMAT,
            version: field("version")?,
            trimmed: field("trimmed")?,
            replica: field("replica")? == 1,
            migrated,
        }
    };
    txn.commit().map_err(unavailable)?;
    Ok(meta)
}

/// Rewrites a format-1 or 2 file's records and change feed as format 3's
/// in `txn` (one transaction: a crash leaves the old file) and drops the
/// old tables; how many records it rewrote.
fn migrate(
    txn: &redb::WriteTransaction,
    meta: &mut redb::Table<'_, &str, u64>,
) -> Result<u64, BackendError> {
    let mut buf = Vec::new();
    let mut count = 0;
    let mut bytes = 0;
    {
        let old = txn.open_table(DATA_2).map_err(unavailable)?;
        let mut records = txn.open_table(RECORDS).map_err(unavailable)?;
        for item in old.iter().map_err(unavailable)? {
            let (key, value) = item.map_err(unavailable)?;
            let (version, record) = value.value();
            stored::encode_record(key.value(), version, record, &mut buf);
            records
                .insert(key.value(), buf.as_slice())
                .map_err(unavailable)?;
            count += 1;
        }
        let log = txn.open_table(LOG_2).map_err(unavailable)?;
        let mut feed = txn.open_table(FEED).map_err(unavailable)?;
        for item in log.iter().map_err(unavailable)? {
            let (at, value) = item.map_err(unavailable)?;
            let (at, (key, value)) = (at.value(), value.value());
            let change = match value {
                None => stored::Change::Deleted,
                Some(value) => match old.get(key).map_err(unavailable)? {
                    Some(current) if current.value() == (at.0, value) => stored::Change::Current,
                    _ => stored::Change::Value(value),
                },
            };
            stored::encode_change(at, key, change, &mut buf);
            feed.insert(at, buf.as_slice()).map_err(unavailable)?;
            bytes += stored::change_bytes(key, change);
        }
    }
    txn.delete_table(DATA_2).map_err(unavailable)?;
    txn.delete_table(LOG_2).map_err(unavailable)?;
    meta.insert("feed_bytes", bytes).map_err(unavailable)?;
    Ok(count)
}

impl FileBackend {
    /// Commits acknowledged, log fsyncs and checkpoints taken so far.
    pub fn sync_stats(&self) -> SyncStats {
        use std::sync::atomic::Ordering::Relaxed;
        SyncStats {
            acknowledged: self.counters.acknowledged.load(Relaxed),
            syncs: self.counters.syncs.load(Relaxed),
            checkpoints: self.counters.checkpoints.load(Relaxed),
            groups: std::array::from_fn(|i| self.counters.groups[i].load(Relaxed)),
        }
    }
}

/// The committer thread: owns the log.
struct Committer {
    state: Arc<RwLock<State>>,
    wal: Wal,
    disk: Arc<dyn Disk>,
    path: PathBuf,
    config: FileConfig,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
    counters: Arc<Counters>,
    /// Why the last checkpoint failed (it is retried after each group).
    checkpoint_failed: Option<BackendError>,
    /// Stored keys this backend's checkpoints replaced or removed: what
    /// leaves redb's file sparse ([`compact_if_sparse`]).
    rewritten: u64,
    /// The close marks redb's file sound (`mark.rs`) if it is then larger
    /// than this (`verify_mb`) and nothing went wrong meanwhile; `None`:
    /// no mark (the file was not known sound at open, `verify_mb` is 0, or
    /// the disk is not real).
    mark_past: Option<u64>,
}

impl Committer {
    fn commit_group(&mut self, batch: Vec<Request>) {
        use std::sync::atomic::Ordering::Relaxed;
        let mut results = match &self.checkpoint_failed {
            Some(e) if self.wal.used() >= 4 * self.config.checkpoint_bytes() => {
                let e = BackendError::Unavailable(format!(
                    "the file backend cannot move its log into {} ({e}); commits are refused until it can",
                    self.path.display()
                ));
                Err(e)
            }
            // A version check reading a damaged page: the group's error,
            // before anything of it is logged.
            _ => guarded(&self.path, || plan(&read(&self.state), &batch)),
        };
        match &results {
            Err(e) => self.counters.note_error(e),
            Ok(each) => each
                .iter()
                .filter_map(|r| r.as_ref().err())
                .for_each(|e| self.counters.note_error(e)),
        }
        if let Ok(planned) = &mut results {
            let records: Vec<(u64, &[Write])> = batch
                .iter()
                .zip(planned.iter())
                .filter_map(|(request, result)| {
                    result
                        .as_ref()
                        .ok()
                        .map(|version| (*version, request.writes.as_slice()))
                })
                .collect();
            if !records.is_empty() {
                match self.wal.append(&records) {
                    Ok(()) => {
                        self.counters.syncs.fetch_add(1, Relaxed);
                        self.counters.groups[group_slot(records.len())].fetch_add(1, Relaxed);
                    }
                    Err(e) => results = Err(e),
                }
            }
        }
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                for request in batch {
                    let _ = request.reply.send(Err(e.clone()));
                }
                return;
            }
        };
        // Durable: into the overlay, so reads see them before anyone is told.
        let mut replies = Vec::with_capacity(batch.len());
        let mut newest = None;
        {
            let mut state = write(&self.state);
            for (request, result) in batch.into_iter().zip(results) {
                if let Ok(version) = result {
                    state.apply(version, request.writes);
                    newest = Some(version);
                    self.counters.acknowledged.fetch_add(1, Relaxed);
                }
                replies.push((request.reply, result));
            }
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
        if let Some(newest) = newest {
            self.commits.send_if_modified(|seen| {
                let newer = newest > *seen;
                if newer {
                    *seen = newest;
                }
                newer
            });
        }
    }

    /// A replica's restore: the log into redb first (so nothing of it
    /// replays over the copy), then, in one durable transaction, redb's
    /// records replaced by the copy's, its feed emptied, its version the
    /// copy's, and the file marked a replica's.
    fn restore(&mut self, request: Request) {
        let Op::Restore(version, entries) = request.op else {
            return;
        };
        let result = self.replace_with(version, &entries);
        if result.is_ok() {
            self.commits.send_replace(version);
        }
        let _ = request.reply.send(result.map(|()| version));
    }

    fn replace_with(&mut self, version: u64, entries: &[Entry]) -> Result<(), BackendError> {
        let disk = &*self.disk;
        self.rewritten += checkpoint(&self.state, disk, &self.path, &self.config)?;
        self.wal.reset()?;
        if !matches!(read(&self.state).db, Db::Writing(_)) {
            unmark(disk, &self.path)?;
            reopen_for_writing(&mut write(&self.state), disk, &self.path, &self.config)?;
        }
        {
            let state = read(&self.state);
            let Db::Writing(db) = &state.db else {
                return Err(BackendError::Unavailable("redb is not writable".into()));
            };
            let txn = begin_write(db)?;
            {
                let mut data = txn.open_table(RECORDS).map_err(unavailable)?;
                data.retain(|_, _| false).map_err(unavailable)?;
                let mut buf = Vec::new();
                for entry in entries {
                    stored::encode_record(&entry.key, entry.version, &entry.value, &mut buf);
                    data.insert(entry.key.as_slice(), buf.as_slice())
                        .map_err(unavailable)?;
                }
                let mut log = txn.open_table(FEED).map_err(unavailable)?;
                log.retain(|_, _| false).map_err(unavailable)?;
                let mut meta = txn.open_table(META).map_err(unavailable)?;
                meta.insert("version", version).map_err(unavailable)?;
                meta.insert("trimmed", version).map_err(unavailable)?;
                meta.insert("feed_bytes", 0).map_err(unavailable)?;
                meta.insert("replica", 1).map_err(unavailable)?;
            }
            txn.commit().map_err(unavailable)?;
        }
        let mut state = write(&self.state);
        let state = &mut *state;
        state.table = None;
        state.table = data_table(&state.db);
        state.overlay.clear();
        state.changes.clear();
        state.base = version;
        state.version = version;
        state.trimmed = version;
        Ok(())
    }

    /// Closes redb, then marks its file sound (`mark.rs`) if it was sound
    /// at open and nothing went wrong since (no damage met, no checkpoint
    /// failing), or else removes its mark. The writer's close runs this
    /// while it still holds the store's lock, so no other writer is
    /// writing the file meanwhile.
    fn close_redb(&mut self) {
        {
            let mut state = write(&self.state);
            state.table = None;
            state.db = Db::Closed(format!("{} is closed", self.path.display()));
        }
        let damaged = self
            .counters
            .damaged
            .load(std::sync::atomic::Ordering::Relaxed);
        if damaged || self.checkpoint_failed.is_some() {
            let _ = self.disk.unmark(&self.path);
        } else if let Some(past) = self.mark_past
            && let Some(closed) = self.disk.fingerprint(&self.path)
            && closed.len() > past
        {
            mark::mark(&self.path, &closed);
        }
    }

    /// Moves the log into redb (one durable transaction), then starts the
    /// log again. A failure leaves both as they were; it is retried later.
    fn checkpoint(&mut self) {
        let result = checkpoint(&self.state, &*self.disk, &self.path, &self.config)
            .and_then(|rewritten| self.wal.reset().map(|()| rewritten));
        match result {
            Ok(rewritten) => {
                self.rewritten += rewritten;
                self.checkpoint_failed = None;
                self.counters
                    .checkpoints
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(e) => {
                self.counters.note_error(&e);
                self.checkpoint_failed = Some(e);
            }
        }
    }
}

impl Drop for Committer {
    /// redb closed before the log, and with it the store's lock, is let
    /// go: on a line that failed (or a close that never ran) too, so that
    /// no other writer opens the store while redb still writes its close.
    /// Such a close removes the mark: the writer did not finish cleanly.
    fn drop(&mut self) {
        let mut state = write(&self.state);
        if !matches!(state.db, Db::Closed(_)) {
            state.table = None;
            state.db = Db::Closed(format!("{} is closed", self.path.display()));
            drop(state);
            let _ = self.disk.unmark(&self.path);
        }
    }
}

fn read(state: &RwLock<State>) -> std::sync::RwLockReadGuard<'_, State> {
    state.read().unwrap_or_else(|p| p.into_inner())
}

fn write(state: &RwLock<State>) -> std::sync::RwLockWriteGuard<'_, State> {
    state.write().unwrap_or_else(|p| p.into_inner())
}

/// Each commit's outcome, in order: its version, or why it is refused. Each
/// commit's checks see the writes of those before it in the group.
fn plan(state: &State, batch: &[Request]) -> Result<Vec<Result<u64, BackendError>>, BackendError> {
    let mut written: HashMap<&[u8], Option<u64>> = HashMap::new();
    let mut version = state.version;
    let mut results = Vec::with_capacity(batch.len());
    'commits: for request in batch {
        if wal::record_len(&request.writes) > wal::MAX_RECORD {
            results.push(Err(BackendError::Invalid(format!(
                "a commit's writes may hold at most {} MiB",
                wal::MAX_RECORD >> 20
            ))));
            continue;
        }
        match &request.op {
            Op::Commit(_) if state.replica => {
                results.push(Err(BackendError::ReadOnly));
                continue 'commits;
            }
            Op::Commit(checks) => {
                for (index, check) in checks.iter().enumerate() {
                    let current = match written.get(check.key()) {
                        Some(current) => *current,
                        None => state.version_of(check.key())?,
                    };
                    if current != check.expected() {
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        results.push(Err(BackendError::Conflict { index, current }));
                        continue 'commits;
                    }
                }
                version += 1;
            }
            Op::Replicated(at) if *at <= version => {
                results.push(Err(super::memory::not_after(*at, version)));
                continue 'commits;
            }
            Op::Replicated(at) => version = *at,
            Op::Restore(..) => {
                results.push(Err(BackendError::Invalid("a restore in a group".into())));
                continue 'commits;
            }
        }
        for write in &request.writes {
            written.insert(&write.key, write.value.as_ref().map(|_| version));
        }
        results.push(Ok(version));
    }
    Ok(results)
}

/// Writes the overlay into redb in one durable transaction (opening redb
/// read-write if it is not yet), trims the change feed to the retention
/// `config` sets, and empties the overlay; how many stored keys it replaced
/// or removed. Runs on the committer thread, so the
/// overlay cannot change meanwhile: reads go on under a read lock while
/// redb commits, and wait only while the overlay is emptied.
fn checkpoint(
    lock: &RwLock<State>,
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
) -> Result<u64, BackendError> {
    let writing = {
        let state = read(lock);
        if state.version == state.base {
            return Ok(0);
        }
        matches!(state.db, Db::Writing(_))
    };
    if !writing {
        unmark(disk, path)?;
        reopen_for_writing(&mut write(lock), disk, path, config)?;
    }
    let (trimmed, rewritten) = {
        let state = read(lock);
        let Db::Writing(db) = &state.db else {
            return Err(BackendError::Unavailable("redb is not writable".into()));
        };
        let txn = begin_write(db)?;
        let written = write_overlay(&txn, &state, config)?;
        txn.commit().map_err(unavailable)?;
        written
    };
    let mut state = write(lock);
    let state = &mut *state;
    state.table = None;
    state.table = data_table(&state.db);
    state.overlay.clear();
    state.changes.clear();
    state.base = state.version;
    state.trimmed = trimmed;
    Ok(rewritten)
}

/// Free space in redb's file that makes a close compact it: an eighth of
/// the file, and at least this much.
const COMPACT_FREE_BYTES: u64 = 1 << 20;

/// Stored keys a backend's checkpoints must have replaced or removed before
/// its close looks for free space.
const COMPACT_REWRITTEN: u64 = 1000;

/// On close, redb's file compacted (its free pages moved to the end and cut
/// off) when at least an eighth of it, and [`COMPACT_FREE_BYTES`], is free,
/// if this backend's checkpoints replaced or removed `rewritten` ≥
/// [`COMPACT_REWRITTEN`] stored keys.
///
/// Checkpoints write many keys in one transaction, and redb copies each page
/// it changes, so a checkpoint of random keys leaves a page free for every
/// one it rewrote: at a million keys, a fifth of the file. redb reuses
/// them, but never gives them back. Compacting 136 MiB took 0.24 s here. A
/// failure leaves the file as it was (it is only larger).
fn compact_if_sparse(lock: &RwLock<State>, disk: &dyn Disk, path: &Path, rewritten: u64) {
    // Counting redb's free pages reads every page (0.22 s at 136 MiB), so
    // only a backend that rewrote many keys looks.
    if rewritten < COMPACT_REWRITTEN {
        return;
    }
    let mut state = write(lock);
    let state = &mut *state;
    if !matches!(state.db, Db::Writing(_)) {
        return;
    }
    let Some(len) = disk.file_len(path) else {
        return;
    };
    let used = {
        let Db::Writing(db) = &state.db else { return };
        // redb frees the pages a commit replaced only at a later commit
        // (the one before it stays whole, to fall back to): two empty ones
        // free the last checkpoint's.
        for _ in 0..2 {
            let committed = begin_write(db).and_then(|txn| txn.commit().map_err(unavailable));
            if committed.is_err() {
                return;
            }
        }
        let Ok(txn) = db.begin_write() else { return };
        let stats = txn.stats();
        let _ = txn.abort();
        match stats {
            Ok(stats) => stats.allocated_pages() * stats.page_size() as u64,
            Err(_) => return,
        }
    };
    let free = len.saturating_sub(used);
    if free < COMPACT_FREE_BYTES || free < len / 8 {
        return;
    }
    // Compaction needs no read transaction open: the shared table's goes.
    state.table = None;
    if let Db::Writing(db) = &mut state.db {
        let _ = db.compact();
    }
    state.table = data_table(&state.db);
}

/// Replaces the read-only redb with a read-write one (back to read-only,
/// or closed, if that fails).
fn reopen_for_writing(
    state: &mut State,
    disk: &dyn Disk,
    path: &Path,
    config: &FileConfig,
) -> Result<(), BackendError> {
    // Nothing else holds the read-only database: reads hold the state lock
    // while they use it, and its shared table goes first.
    state.table = None;
    state.db = Db::Closed(format!("{} is being reopened", path.display()));
    match disk.create_db(&config.builder(), path) {
        Ok(db) => {
            state.db = Db::Writing(db);
            state.table = data_table(&state.db);
            Ok(())
        }
        Err(e) => {
            let e = open_error(path, e);
            state.db = match disk.open_db_read_only(&config.builder(), path) {
                Ok(db) => Db::Reading(db),
                Err(again) => Db::Closed(format!(
                    "the file backend could not reopen {}: {again}",
                    path.display()
                )),
            };
            state.table = data_table(&state.db);
            Err(e)
        }
    }
}

/// The overlay, its changes and the new `meta` into `txn`, the feed trimmed
/// to `config`'s retention; the newest trimmed version after it, and how
/// many stored keys were replaced or removed.
fn write_overlay(
    txn: &redb::WriteTransaction,
    state: &State,
    config: &FileConfig,
) -> Result<(u64, u64), BackendError> {
    let mut data = txn.open_table(RECORDS).map_err(unavailable)?;
    let mut meta = txn.open_table(META).map_err(unavailable)?;
    let mut log = txn.open_table(FEED).map_err(unavailable)?;
    let mut rewritten = 0;
    let mut buf = Vec::new();
    // Replaced records the feed may still refer to (`Change::Current`),
    // by version: their changes get the old value.
    let mut displaced: BTreeMap<u64, HashMap<&[u8], Vec<u8>>> = BTreeMap::new();
    for (key, slot) in &state.overlay {
        let old = match slot {
            Some((version, value)) => {
                stored::encode_record(key, *version, value, &mut buf);
                data.insert(key.as_slice(), buf.as_slice())
                    .map_err(unavailable)?
            }
            None => data.remove(key.as_slice()).map_err(unavailable)?,
        };
        let Some(old) = old else { continue };
        rewritten += 1;
        // A damaged record cannot be rescued: a change that refers to it
        // stays damaged, and is reported when read.
        if let Ok((version, record)) = stored::decode_record(key, old.value())
            && version > state.trimmed
        {
            displaced
                .entry(version)
                .or_default()
                .insert(key.as_slice(), record.to_vec());
        }
    }
    // The feed's bytes are counted in `meta` (a migration counts them).
    let mut bytes = match meta.get("feed_bytes").map_err(unavailable)? {
        Some(bytes) => bytes.value(),
        None => {
            let mut bytes = 0u64;
            for item in log.iter().map_err(unavailable)? {
                let (at, change) = item.map_err(unavailable)?;
                bytes += stored::decode_change(at.value(), change.value())
                    .map_or(0, |(key, change)| stored::change_bytes(key, change));
            }
            bytes
        }
    };
    for (&version, records) in &displaced {
        let mut keep = Vec::new();
        for item in log
            .range((version, 0)..=(version, u32::MAX))
            .map_err(unavailable)?
        {
            let (at, change) = item.map_err(unavailable)?;
            if let Ok((key, stored::Change::Current)) =
                stored::decode_change(at.value(), change.value())
                && let Some((&key, record)) = records.get_key_value(key)
            {
                keep.push((at.value(), key, record));
            }
        }
        for (at, key, record) in keep {
            stored::encode_change(at, key, stored::Change::Value(record), &mut buf);
            log.insert(at, buf.as_slice()).map_err(unavailable)?;
            bytes += record.len() as u64;
        }
    }
    let mut index = 0u32;
    let mut last = 0;
    for change in &state.changes {
        if change.version != last {
            (last, index) = (change.version, 0);
        }
        // The newest change of a key leaves its value to the records table.
        let kept = match (&change.value, state.overlay.get(&change.key)) {
            (Some(value), Some(Some((version, current))))
                if *version == change.version && current == value =>
            {
                stored::Change::Current
            }
            (Some(value), _) => stored::Change::Value(value),
            (None, _) => stored::Change::Deleted,
        };
        stored::encode_change((change.version, index), &change.key, kept, &mut buf);
        log.insert((change.version, index), buf.as_slice())
            .map_err(unavailable)?;
        bytes += stored::change_bytes(&change.key, kept);
        index = index.saturating_add(1);
    }
    meta.insert("version", state.version).map_err(unavailable)?;
    // Whole commits, oldest first, while any limit is passed; never the
    // newest.
    let cut = state.version.saturating_sub(config.retention);
    let mut trimmed = state.trimmed;
    let mut entries = log.len().map_err(unavailable)?;
    loop {
        let oldest = match log.first().map_err(unavailable)? {
            Some((at, _)) => at.value().0,
            None => break,
        };
        let over =
            oldest <= cut || entries > config.retention_entries || bytes > config.retention_bytes;
        if !over || oldest >= state.version {
            break;
        }
        loop {
            let first = log.first().map_err(unavailable)?;
            let size = match &first {
                Some((at, change)) if at.value().0 == oldest => {
                    stored::decode_change(at.value(), change.value())
                        .map_or(0, |(key, change)| stored::change_bytes(key, change))
                }
                _ => break,
            };
            drop(first);
            log.pop_first().map_err(unavailable)?;
            bytes = bytes.saturating_sub(size);
            entries = entries.saturating_sub(1);
        }
        trimmed = oldest;
    }
    // A commit-count cut past the entries the log had (commits with no
    // writes, or a feed emptied by a restore) still counts as trimmed.
    trimmed = trimmed.max(cut.min(state.version));
    meta.insert("feed_bytes", bytes).map_err(unavailable)?;
    if trimmed > state.trimmed {
        meta.insert("trimmed", trimmed).map_err(unavailable)?;
    }
    Ok((trimmed.max(state.trimmed), rewritten))
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

/// A commit through the committer's `line`, on this thread if `inline`
/// and nobody else is committing ([`line::Line::ask`]).
async fn commit(
    line: Option<&Arc<line::Line>>,
    checks: Vec<Check>,
    writes: Vec<Write>,
    inline: bool,
) -> Result<u64, BackendError> {
    validate_commit(&checks, &writes)?;
    ask(line, Op::Commit(checks), writes, inline).await
}

async fn ask(
    line: Option<&Arc<line::Line>>,
    op: Op,
    writes: Vec<Write>,
    inline: bool,
) -> Result<u64, BackendError> {
    let line = line
        .ok_or_else(|| BackendError::Unavailable("the file backend's committer stopped".into()))?;
    line.ask(op, writes, inline).await
}

/// How long [`open`] waits for a store that another process holds without
/// serving it: a read-only one-shot command (shared lock), or a holder
/// that has not bound its socket yet.
const HELD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the file store `config` names: in this process (see
/// [`FileBackend::open_shared`]), or, when another process holds it,
/// through that process's socket ([`Client`]).
pub fn open(config: &FileConfig) -> Result<Arc<dyn Backend>, BackendError> {
    let deadline = std::time::Instant::now() + HELD_WAIT;
    loop {
        let e = match FileBackend::open_shared(config) {
            Ok(backend) => return Ok(backend),
            Err(e) if is_in_use(&e) => e,
            Err(e) => return Err(e),
        };
        let path = canonical(&config.path)?;
        if let Some(client) = Client::connect(&path, config) {
            return Ok(Arc::new(client));
        }
        if std::time::Instant::now() >= deadline {
            return Err(e);
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Whether `e` says another process holds the store (its log's lock, or
/// redb's own).
fn is_in_use(e: &BackendError) -> bool {
    matches!(e, BackendError::Unavailable(why) if why.ends_with("is in use by another process"))
}

#[async_trait]
impl Backend for FileBackend {
    fn summary(&self) -> String {
        format!("file {}", self.path.display())
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        self.read(|state| state.get(key))
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        self.read(|state| keys.iter().map(|key| state.get(key)).collect())
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        if scan.is_empty() {
            return Ok(Vec::new());
        }
        self.read(|state| state.scan(scan))
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        if self.read_only {
            validate_commit(&checks, &writes)?;
            return Err(BackendError::ReadOnly);
        }
        self.note(commit(self.line.as_ref(), checks, writes, true).await)
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        Ok(self.state().version)
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        self.read(|state| state.changes(since, limit))
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }

    fn commit_stats(&self) -> Option<SyncStats> {
        Some(self.sync_stats())
    }

    fn make_replica(&self) -> Result<(), BackendError> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        write(&self.state).replica = true;
        Ok(())
    }

    async fn replicate(&self, version: u64, writes: Vec<Write>) -> Result<(), BackendError> {
        validate_commit(&[], &writes)?;
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        ask(self.line.as_ref(), Op::Replicated(version), writes, true)
            .await
            .map(drop)
    }

    async fn restore(&self, version: u64, entries: Vec<Entry>) -> Result<(), BackendError> {
        if self.read_only {
            return Err(BackendError::ReadOnly);
        }
        ask(
            self.line.as_ref(),
            Op::Restore(version, entries),
            Vec::new(),
            true,
        )
        .await
        .map(drop)
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

    fn delete(key: &str) -> Write {
        Write {
            key: key.as_bytes().to_vec(),
            value: None,
        }
    }

    /// A new store's file is made aside and renamed: a leftover from a
    /// crash there is replaced, but a store of its own under that name is
    /// never touched.
    #[tokio::test]
    async fn a_new_store_replaces_a_leftover_but_not_another_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let aside = dir.path().join("s.redb.kvstash-new");
        std::fs::write(&aside, b"half a redb file").unwrap();
        {
            let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            backend.commit(vec![], vec![write("a", "1")]).await.unwrap();
        }
        assert!(!aside.exists(), "the leftover was used and renamed");
        let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        assert_eq!(backend.get(b"a").await.unwrap().unwrap().value, b"1");
        drop(backend);

        let other = dir.path().join("t.redb");
        let in_the_way = dir.path().join("t.redb.kvstash-new");
        {
            let store = FileBackend::open_shared(&FileConfig::new(&in_the_way)).unwrap();
            store
                .commit(vec![], vec![write("mine", "1")])
                .await
                .unwrap();
        }
        let Err(err) = FileBackend::open_shared(&FileConfig::new(&other)) else {
            panic!("opened beside another store");
        };
        assert!(err.to_string().contains("is a store of its own"), "{err}");
        assert!(!other.exists());
        let store = FileBackend::open_shared(&FileConfig::new(&in_the_way)).unwrap();
        assert_eq!(store.get(b"mine").await.unwrap().unwrap().value, b"1");
    }

    /// The oldest version the feed still has changes after (what a watcher
    /// may resume from).
    async fn feed_floor(backend: &FileBackend) -> u64 {
        match backend.changes(0, 1).await {
            Err(BackendError::Compacted { oldest }) => oldest - 1,
            Ok(_) => 0,
            Err(e) => panic!("{e}"),
        }
    }

    /// A bulk load of 100-key commits: the feed is bounded by changes and
    /// by bytes, not only by commits, so the file does not keep a second
    /// copy of the store; whole commits go, the newest stays.
    #[tokio::test]
    async fn the_feed_is_bounded_by_changes_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let load = |backend: Arc<FileBackend>, from: usize| async move {
            for c in from..from + 50 {
                let writes = (0..100)
                    .map(|k| write(&format!("k{c:03}-{k:03}"), &"v".repeat(90)))
                    .collect();
                backend.commit(vec![], writes).await.unwrap();
            }
            backend
        };
        // A checkpoint (where the feed is trimmed) after every commit.
        let mut config = FileConfig::new(dir.path().join("entries.redb"));
        config.checkpoint_kb = Some(1);
        config.retention_entries = 1000;
        let backend = load(FileBackend::open_shared(&config).unwrap(), 0).await;
        drop(backend);
        let backend = FileBackend::open_shared(&config).unwrap();
        // 10 commits of 100 changes fit; whole commits only.
        let floor = feed_floor(&backend).await;
        assert_eq!(floor, 40, "commits 41-50 kept");
        let kept = backend.changes(floor, 10_000).await.unwrap();
        assert_eq!(kept.len(), 1000);
        assert_eq!(kept[0].version, 41);
        assert_eq!(
            backend
                .scan(&Scan {
                    start: vec![],
                    end: None,
                    limit: 10_000,
                    reverse: false
                })
                .await
                .unwrap()
                .len(),
            5000
        );

        // The bytes the feed holds count: keys, and values no longer
        // current (a current value is the records table's, not copied).
        let mut config = FileConfig::new(dir.path().join("bytes.redb"));
        config.checkpoint_kb = Some(1);
        config.retention_bytes = 50_000;
        let backend = load(FileBackend::open_shared(&config).unwrap(), 0).await;
        assert_eq!(
            feed_floor(&backend).await,
            0,
            "50 commits of 800 bytes of keys"
        );
        // The same keys again: the first load's values are copied into its
        // changes (100 * (8 + 90) bytes a commit), and those go first.
        let backend = load(backend, 0).await;
        drop(backend);
        let backend = FileBackend::open_shared(&config).unwrap();
        assert_eq!(
            feed_floor(&backend).await,
            49,
            "the second load (50 * 800 bytes) and the first load's last commit (9,800) fit"
        );
        let kept = backend.changes(49, 10_000).await.unwrap();
        assert_eq!(kept.len(), 5100);
        assert!(
            kept[..100]
                .iter()
                .all(|c| c.version == 50 && c.value.is_some())
        );
        // A commit larger than the limit on its own is kept (the newest).
        let huge = (0..1000)
            .map(|k| write(&format!("h{k:04}{}", "-".repeat(60)), "v"))
            .collect();
        let v = backend.commit(vec![], huge).await.unwrap();
        drop(backend);
        let backend = FileBackend::open_shared(&config).unwrap();
        assert_eq!(feed_floor(&backend).await, v - 1);
        assert_eq!(backend.changes(v - 1, 10_000).await.unwrap().len(), 1000);

        // With the defaults, a bulk load of 1,000 such commits keeps its
        // 100,000 changes (800 KB of keys); one more commit's 100 push the
        // oldest commit out.
        let path = dir.path().join("defaults.redb");
        let mut backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        for from in (0..1000).step_by(50) {
            backend = load(backend, from).await;
        }
        drop(backend);
        let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        assert_eq!(feed_floor(&backend).await, 0);
        let backend = load(backend, 1000).await;
        drop(backend);
        let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        assert_eq!(
            feed_floor(&backend).await,
            50,
            "{DEFAULT_RETENTION_ENTRIES} changes kept"
        );
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

    /// Everything a reader can see: every record (a scan and a get of each
    /// key the store ever had) and the change feed.
    async fn everything(
        backend: &FileBackend,
        keys: &[&str],
    ) -> Result<(Vec<Entry>, Vec<Option<Entry>>, Vec<Change>), BackendError> {
        let scan = backend.scan(&all()).await?;
        let mut gets = Vec::new();
        for key in keys {
            gets.push(backend.get(key.as_bytes()).await?);
        }
        Ok((scan, gets, backend.changes(0, 10_000).await?))
    }

    /// Issue 16: one byte damaged at every offset of a small store's files
    /// (its redb file, checkpointed, and the commit log that a clean close
    /// sealed after three more commits), one copy per offset. Each open
    /// either reads exactly what the store holds, or is refused with an
    /// error; never fewer or other records, and never a panic.
    #[test]
    fn damage_at_any_offset_is_refused_or_harmless() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let keys: Vec<String> = (0..10).map(|i| format!("key{i}")).collect();
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        let original = runtime.block_on(async {
            // Checkpoints every 1 KiB of log, then three more commits left
            // in the log.
            let small = FileConfig {
                checkpoint_kb: Some(1),
                ..FileConfig::new(&path)
            };
            {
                let backend = FileBackend::open_shared(&small).unwrap();
                for key in &keys[..8] {
                    let value = format!("{{\"name\":\"{key}\",\"pad\":\"{}\"}}", "x".repeat(100));
                    backend
                        .commit(vec![], vec![write(key, &value)])
                        .await
                        .unwrap();
                }
                backend.commit(vec![], vec![delete("key7")]).await.unwrap();
            }
            let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            assert!(
                backend.state().base >= 7,
                "checkpoints moved most of it into redb"
            );
            backend
                .commit(vec![], vec![write("key1", "\"new\""), write("key8", "8")])
                .await
                .unwrap();
            backend.commit(vec![], vec![delete("key2")]).await.unwrap();
            backend
                .commit(vec![], vec![write("key9", "9")])
                .await
                .unwrap();
            let original = everything(&backend, &keys).await.unwrap();
            assert_eq!(original.0.len(), 8);
            original
        });
        let log_path = wal::path_of(&path);
        let db = std::fs::read(&path).unwrap();
        let log = std::fs::read(&log_path).unwrap();
        let sealed = u32::from_le_bytes(log[12..16].try_into().unwrap()) as usize;
        assert!(
            sealed > wal::HEADER_LEN as usize,
            "the close sealed the log"
        );
        // Past the records the log is zero-filled growth, which nothing reads.
        let log_span = (sealed + 512).min(log.len());
        let mut refused = [0usize; 2];
        let mut harmless = [0usize; 2];
        for (which, bytes, span) in [(0, &db, db.len()), (1, &log, log_span)] {
            for at in 0..span {
                let mut damaged = bytes.clone();
                damaged[at] ^= 1 << (at % 8);
                let (db_bytes, log_bytes) = if which == 0 {
                    (&damaged, &log)
                } else {
                    (&db, &damaged)
                };
                std::fs::write(&path, db_bytes).unwrap();
                std::fs::write(&log_path, log_bytes).unwrap();
                let read_only = at % 2 == 1;
                let config = FileConfig {
                    read_only,
                    ..FileConfig::new(&path)
                };
                let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    runtime.block_on(async {
                        let backend = FileBackend::open_shared(&config)?;
                        everything(&backend, &keys).await
                    })
                }));
                let file = ["redb file", "log"][which];
                match seen {
                    Err(_) => panic!("{file}, byte {at} damaged: a panic"),
                    Ok(Ok(seen)) => {
                        assert!(
                            seen == original,
                            "{file}, byte {at} damaged (read-only: {read_only}): read {seen:?}"
                        );
                        harmless[which] += 1;
                    }
                    Ok(Err(_)) => refused[which] += 1,
                }
            }
        }
        eprintln!(
            "redb file: {} bytes, {} refused, {} harmless; log: {} bytes, {} refused, {} harmless",
            db.len(),
            refused[0],
            harmless[0],
            log_span,
            refused[1],
            harmless[1]
        );
        assert!(refused[0] > 0 && refused[1] > 0);
    }

    /// With verification at open turned off, damage at any offset of the
    /// redb file (every third) may go unseen, but never ends the process:
    /// redb's panics on a damaged page are errors.
    #[test]
    fn unverified_damage_is_an_error_not_a_panic() {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = FileConfig {
            checkpoint_kb: Some(1),
            verify_mb: Some(0),
            ..FileConfig::new(&path)
        };
        let keys = ["k0", "k1", "k2", "k3", "k4", "k5"];
        runtime.block_on(async {
            let backend = FileBackend::open_shared(&config).unwrap();
            for key in keys {
                backend
                    .commit(vec![], vec![write(key, &"v".repeat(300))])
                    .await
                    .unwrap();
            }
        });
        let db = std::fs::read(&path).unwrap();
        let log = std::fs::read(wal::path_of(&path)).unwrap();
        let mut errors = 0;
        for at in (0..db.len()).step_by(3) {
            let mut damaged = db.clone();
            damaged[at] ^= 1 << (at % 8);
            std::fs::write(&path, &damaged).unwrap();
            std::fs::write(wal::path_of(&path), &log).unwrap();
            let config = FileConfig {
                read_only: at % 2 == 1,
                ..config.clone()
            };
            let seen = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                runtime.block_on(async {
                    let backend = FileBackend::open_shared(&config)?;
                    everything(&backend, &keys).await
                })
            }));
            match seen {
                Err(_) => panic!("byte {at} damaged: a panic reached the caller"),
                Ok(Err(_)) => errors += 1,
                Ok(Ok(_)) => {}
            }
        }
        assert!(errors > 0);
    }

    fn all() -> Scan {
        Scan {
            start: vec![],
            end: None,
            limit: 10_000,
            reverse: false,
        }
    }

    /// A small model of the store: the newest value per key and every change.
    #[derive(Default)]
    struct Model {
        data: BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
        changes: Vec<Change>,
    }

    async fn agrees(backend: &FileBackend, model: &Model, at: &str) {
        let expected: Vec<Entry> = model
            .data
            .iter()
            .map(|(key, (version, value))| Entry {
                key: key.clone(),
                value: value.clone(),
                version: *version,
            })
            .collect();
        assert_eq!(backend.scan(&all()).await.unwrap(), expected, "{at}: scan");
        for (start, limit, reverse) in [(&b"k1"[..], 3, false), (b"k2", 4, true), (b"", 1, true)] {
            let scan = Scan {
                start: start.to_vec(),
                end: Some(b"k4".to_vec()),
                limit,
                reverse,
            };
            let mut want: Vec<Entry> = expected
                .iter()
                .filter(|e| e.key.as_slice() >= start && e.key.as_slice() < &b"k4"[..])
                .cloned()
                .collect();
            if reverse {
                want.reverse();
            }
            want.truncate(limit as usize);
            assert_eq!(backend.scan(&scan).await.unwrap(), want, "{at}: {scan:?}");
        }
        for key in ["k0", "k17", "k33", "absent"] {
            let want = model
                .data
                .get(key.as_bytes())
                .map(|(version, value)| Entry {
                    key: key.as_bytes().to_vec(),
                    value: value.clone(),
                    version: *version,
                });
            assert_eq!(
                backend.get(key.as_bytes()).await.unwrap(),
                want,
                "{at}: {key}"
            );
        }
        let newest = model.changes.last().map_or(0, |c| c.version);
        assert_eq!(backend.current_version().await.unwrap(), newest, "{at}");
        // The feed from the middle on, across checkpointed and logged commits.
        let since = newest / 2;
        let want: Vec<Change> = model
            .changes
            .iter()
            .filter(|c| c.version > since)
            .take(10_000)
            .cloned()
            .collect();
        let mut got = Vec::new();
        let mut from = since;
        loop {
            let page = backend.changes(from, 37).await.unwrap();
            let Some(last) = page.last() else { break };
            from = last.version;
            got.extend(page);
        }
        assert_eq!(got, want, "{at}: changes since {since}");
    }

    /// Commits through the log, the overlay and many checkpoints (a 1 KiB
    /// threshold), and reopens: every read agrees with a model throughout.
    #[tokio::test]
    async fn the_log_overlay_and_checkpoints_agree_with_a_model() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.redb");
        let mut config = FileConfig::new(&path);
        config.checkpoint_kb = Some(1);
        let mut model = Model::default();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        let mut checkpoints = 0;
        for reopen in 0..4 {
            let backend = FileBackend::open_shared(&config).unwrap();
            agrees(&backend, &model, &format!("reopen {reopen}")).await;
            for step in 0..150 {
                let writes: Vec<Write> = (0..1 + next(3))
                    .map(|_| {
                        let key = format!("k{}", next(40)).into_bytes();
                        let value = (next(4) != 0).then(|| vec![b'v'; next(60) as usize]);
                        Write { key, value }
                    })
                    .collect();
                let version = backend.commit(vec![], writes.clone()).await.unwrap();
                for write in writes {
                    match &write.value {
                        Some(value) => model
                            .data
                            .insert(write.key.clone(), (version, value.clone())),
                        None => model.data.remove(&write.key),
                    };
                    model.changes.push(Change {
                        version,
                        key: write.key,
                        value: write.value,
                    });
                }
                if step % 25 == 0 {
                    agrees(&backend, &model, &format!("reopen {reopen} step {step}")).await;
                }
            }
            agrees(&backend, &model, &format!("reopen {reopen} end")).await;
            checkpoints += backend.sync_stats().checkpoints;
        }
        assert!(checkpoints > 10, "{checkpoints} checkpoints");
        let mut read_only = config.clone();
        read_only.read_only = true;
        let backend = FileBackend::open_shared(&read_only).unwrap();
        assert!(backend.is_read_only());
        agrees(&backend, &model, "read-only").await;
    }

    /// A process that writes one value and exits takes one fsync and
    /// leaves the database file as it was: the commit is in the log.
    #[tokio::test]
    async fn one_commit_touches_only_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        drop(FileBackend::open_shared(&FileConfig::new(&path)).unwrap());
        let before = std::fs::read(&path).unwrap();
        {
            let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            backend.commit(vec![], vec![write("a", "1")]).await.unwrap();
            let stats = backend.sync_stats();
            assert_eq!((stats.syncs, stats.checkpoints), (1, 0));
        }
        assert!(std::fs::read(&path).unwrap() == before, "redb was written");
        let mut config = FileConfig::new(&path);
        config.read_only = true;
        let backend = FileBackend::open_shared(&config).unwrap();
        assert_eq!(backend.get(b"a").await.unwrap().unwrap().value, b"1");
        assert_eq!(backend.changes(0, 10).await.unwrap().len(), 1);
    }

    /// A store of format 1 (before the commit log) or 2 (before checksums)
    /// is migrated by its first open, a read-only one included: the same
    /// records and change feed, in format 3's tables, which older builds
    /// refuse. Changes that referred to a current value keep their value
    /// once a later checkpoint replaces it.
    #[tokio::test]
    async fn older_formats_are_migrated_by_their_first_open() {
        for format in [FORMAT_WITHOUT_LOG, FORMAT_WITH_LOG] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("old.redb");
            {
                let db = Database::create(&path).unwrap();
                let txn = db.begin_write().unwrap();
                {
                    let mut meta = txn.open_table(META).unwrap();
                    meta.insert("format", format).unwrap();
                    meta.insert("version", 7).unwrap();
                    let mut data = txn.open_table(DATA_2).unwrap();
                    data.insert(&b"a"[..], (7, &b"new"[..])).unwrap();
                    data.insert(&b"b"[..], (5, &b"bee"[..])).unwrap();
                    let mut log = txn.open_table(LOG_2).unwrap();
                    log.insert((5, 0), (&b"b"[..], Some(&b"bee"[..]))).unwrap();
                    log.insert((6, 0), (&b"a"[..], Some(&b"old"[..]))).unwrap();
                    log.insert((7, 0), (&b"a"[..], Some(&b"new"[..]))).unwrap();
                    log.insert((7, 1), (&b"c"[..], None)).unwrap();
                }
                txn.commit().unwrap();
            }
            let change = |version, key: &str, value: Option<&str>| Change {
                version,
                key: key.into(),
                value: value.map(Into::into),
            };
            let mut feed = vec![
                change(5, "b", Some("bee")),
                change(6, "a", Some("old")),
                change(7, "a", Some("new")),
                change(7, "c", None),
            ];
            let mut config = FileConfig::new(&path);
            config.read_only = true;
            {
                let backend = FileBackend::open_shared(&config).unwrap();
                let a = backend.get(b"a").await.unwrap().unwrap();
                assert_eq!((a.version, a.value), (7, b"new".to_vec()));
                assert_eq!(backend.scan(&all()).await.unwrap().len(), 2);
                assert_eq!(backend.changes(4, 10).await.unwrap(), feed);
            }
            {
                let db = redb::ReadOnlyDatabase::open(&path).unwrap();
                let txn = db.begin_read().unwrap();
                let meta = read_meta(&txn, &path).unwrap().unwrap();
                assert_eq!((meta.format, meta.version), (FORMAT, 7), "from {format}");
                assert!(txn.open_table(DATA_2).is_err() && txn.open_table(LOG_2).is_err());
                let records = txn.open_table(RECORDS).unwrap();
                let b = records.get(&b"b"[..]).unwrap().unwrap();
                assert_eq!(stored::decode_record(b"b", b.value()), Ok((5, &b"bee"[..])));
                let feed = txn.open_table(FEED).unwrap();
                let kinds: Vec<_> = feed
                    .iter()
                    .unwrap()
                    .map(|item| {
                        let (at, value) = item.unwrap();
                        let (at, value) = (at.value(), value.value().to_vec());
                        stored::decode_change(at, &value).unwrap().1 == stored::Change::Current
                    })
                    .collect();
                assert_eq!(kinds, [true, false, true, false], "from {format}");
            }
            // Replace both current values, through a checkpoint (the close's).
            config.read_only = false;
            config.checkpoint_kb = Some(1);
            {
                let backend = FileBackend::open_shared(&config).unwrap();
                let big = "x".repeat(2000);
                let version = backend
                    .commit(vec![], vec![write("a", &big), delete("b")])
                    .await
                    .unwrap();
                assert_eq!(version, 8);
                feed.push(change(8, "a", Some(&big)));
                feed.push(change(8, "b", None));
                assert_eq!(backend.changes(4, 10).await.unwrap(), feed);
            }
            {
                let db = redb::ReadOnlyDatabase::open(&path).unwrap();
                let txn = db.begin_read().unwrap();
                let meta = read_meta(&txn, &path).unwrap().unwrap();
                assert_eq!(meta.version, 8, "checkpointed");
                let feed = txn.open_table(FEED).unwrap();
                let stored = |at| feed.get(at).unwrap().unwrap().value().to_vec();
                let now = stored((7, 0));
                assert_eq!(
                    stored::decode_change((7, 0), &now),
                    Ok((&b"a"[..], stored::Change::Value(b"new")))
                );
                let now = stored((5, 0));
                assert_eq!(
                    stored::decode_change((5, 0), &now),
                    Ok((&b"b"[..], stored::Change::Value(b"bee")))
                );
            }
            let backend = FileBackend::open_shared(&config).unwrap();
            assert_eq!(backend.changes(4, 10).await.unwrap(), feed, "from {format}");
            assert_eq!(backend.get(b"b").await.unwrap(), None);
        }
    }

    /// A log whose versions skip (damage, or a log from another store) is
    /// refused, and nothing is written.
    #[tokio::test]
    async fn a_log_that_skips_versions_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let other = dir.path().join("other.redb");
        {
            let backend = FileBackend::open_shared(&FileConfig::new(&other)).unwrap();
            for i in 0..3 {
                backend
                    .commit(vec![], vec![write("x", &i.to_string())])
                    .await
                    .unwrap();
            }
        }
        drop(FileBackend::open_shared(&FileConfig::new(&path)).unwrap());
        let mut bytes = std::fs::read(wal::path_of(&other)).unwrap();
        // Keep the header, lose the first record: versions 2 and 3 remain.
        let (mut wal, records) = Wal::open(Arc::new(disk::Real), &other).unwrap();
        assert_eq!(records.len(), 3);
        wal.reset().unwrap();
        wal.append(&[(2, &[write("x", "1")][..]), (3, &[write("x", "2")][..])])
            .unwrap();
        drop(wal);
        bytes.clone_from(&std::fs::read(wal::path_of(&other)).unwrap());
        std::fs::write(wal::path_of(&path), &bytes).unwrap();
        let redb_before = std::fs::read(&path).unwrap();
        let err = FileBackend::open_shared(&FileConfig::new(&path)).unwrap_err();
        assert!(
            format!("{err}").contains("after version 0 it holds version 2"),
            "{err}"
        );
        assert_eq!(std::fs::read(wal::path_of(&path)).unwrap(), bytes);
        assert!(std::fs::read(&path).unwrap() == redb_before);
    }

    fn request(writes: Vec<Write>) -> Request {
        let (reply, _) = tokio::sync::oneshot::channel();
        Request {
            op: Op::Commit(vec![]),
            writes,
            reply,
        }
    }

    /// A group stops before the commit that would take it past
    /// [`MAX_GROUP_BYTES`]; that one starts the next group. A restore is a
    /// group of its own.
    #[test]
    fn a_group_takes_what_fits() {
        let big = || {
            request(vec![Write {
                key: b"k".to_vec(),
                value: Some(vec![0; MAX_GROUP_BYTES / 3]),
            }])
        };
        let sizes = |waiting: &mut std::collections::VecDeque<Request>| {
            std::iter::from_fn(|| line::next_group(waiting, MAX_GROUP_BYTES))
                .map(|group| match group {
                    line::Group::Commits(batch) => batch.len(),
                    line::Group::Restore(_) => 0,
                })
                .collect::<Vec<_>>()
        };
        let mut waiting: std::collections::VecDeque<Request> = (0..5).map(|_| big()).collect();
        waiting.push_back(request(vec![write("a", "1")]));
        assert_eq!(
            sizes(&mut waiting),
            [2, 2, 2],
            "two of a third each, then the rest"
        );
        let huge = request(vec![Write {
            key: b"k".to_vec(),
            value: Some(vec![0; MAX_GROUP_BYTES + 1]),
        }]);
        let (reply, _) = tokio::sync::oneshot::channel();
        let restore = Request {
            op: Op::Restore(1, Vec::new()),
            writes: Vec::new(),
            reply,
        };
        let mut waiting = std::collections::VecDeque::from([
            huge,
            request(vec![write("a", "1")]),
            request(vec![write("b", "1")]),
            restore,
            request(vec![write("c", "1")]),
        ]);
        assert_eq!(
            sizes(&mut waiting),
            [1, 2, 0, 1],
            "a large first one alone; a restore alone"
        );
        // A smaller limit (a turn that blocks its worker directly) stops
        // the group sooner, and caps it at the largest limit.
        let mut waiting: std::collections::VecDeque<Request> = (0..3).map(|_| big()).collect();
        let first = line::next_group(&mut waiting, 1 << 20);
        assert!(matches!(first, Some(line::Group::Commits(batch)) if batch.len() == 1));
        let rest = line::next_group(&mut waiting, usize::MAX);
        assert!(matches!(rest, Some(line::Group::Commits(batch)) if batch.len() == 2));
    }

    /// Dropping the last handle closes the file on that thread (with a
    /// checkpoint of what the log holds): an open of it meanwhile waits and
    /// then opens it, instead of finding it in use.
    #[tokio::test]
    async fn an_open_during_the_last_close_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        for round in 0..5 {
            let backend = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            let value = "v".repeat(4000);
            for i in 0..40 {
                backend
                    .commit(vec![], vec![write(&format!("k{round}-{i}"), &value)])
                    .await
                    .unwrap();
            }
            let start = Arc::new(std::sync::Barrier::new(2));
            let closer = {
                let start = start.clone();
                std::thread::spawn(move || {
                    start.wait();
                    drop(backend);
                })
            };
            start.wait();
            let again = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
            let key = format!("k{round}-39");
            assert!(again.get(key.as_bytes()).await.unwrap().is_some());
            closer.join().unwrap();
        }
    }

    /// A disk whose log syncs panic once `panic` is set, and take 2 ms
    /// more while `slow` is.
    #[derive(Debug, Default)]
    struct FaultyDisk {
        panic: Arc<std::sync::atomic::AtomicBool>,
        slow: Arc<std::sync::atomic::AtomicBool>,
    }

    #[derive(Debug)]
    struct FaultyFile {
        file: Box<dyn disk::LogFile>,
        panic: Arc<std::sync::atomic::AtomicBool>,
        slow: Arc<std::sync::atomic::AtomicBool>,
    }

    impl disk::LogFile for FaultyFile {
        fn len(&self) -> std::io::Result<u64> {
            self.file.len()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
            self.file.read_at(buf, offset)
        }
        fn write_all_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
            self.file.write_all_at(buf, offset)
        }
        fn sync_data(&self) -> std::io::Result<()> {
            assert!(
                !self.panic.load(std::sync::atomic::Ordering::Relaxed),
                "a bug in a sync"
            );
            if self.slow.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            self.file.sync_data()
        }
        fn set_len(&self, len: u64) -> std::io::Result<()> {
            self.file.set_len(len)
        }
        fn try_lock(&self) -> Result<(), std::fs::TryLockError> {
            self.file.try_lock()
        }
    }

    impl Disk for FaultyDisk {
        fn file_len(&self, path: &Path) -> Option<u64> {
            disk::Real.file_len(path)
        }
        fn open(&self, path: &Path) -> std::io::Result<Box<dyn disk::LogFile>> {
            Ok(Box::new(FaultyFile {
                file: disk::Real.open(path)?,
                panic: self.panic.clone(),
                slow: self.slow.clone(),
            }))
        }
        fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
            disk::Real.sync_dir(dir)
        }
        fn remove(&self, path: &Path) -> std::io::Result<()> {
            disk::Real.remove(path)
        }
        fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
            disk::Real.rename(from, to)
        }
        fn create_db(
            &self,
            builder: &redb::Builder,
            path: &Path,
        ) -> Result<Database, redb::DatabaseError> {
            disk::Real.create_db(builder, path)
        }
        fn open_db_read_only(
            &self,
            builder: &redb::Builder,
            path: &Path,
        ) -> Result<redb::ReadOnlyDatabase, redb::DatabaseError> {
            disk::Real.open_db_read_only(builder, path)
        }
    }

    /// A commit that panics while it has the turn, on the committer thread
    /// (a current-thread runtime) or on its caller's (a multi-threaded one),
    /// stops the line: later commits are refused at once instead of
    /// waiting forever, the backend closes, and the next open has every
    /// commit acknowledged before.
    #[test]
    fn a_panicking_commit_stops_the_line_and_loses_nothing_acknowledged() {
        for flavor in ["current", "multi"] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("p.redb");
            let config = FileConfig::new(&path);
            let runtime = match flavor {
                "current" => tokio::runtime::Builder::new_current_thread(),
                _ => tokio::runtime::Builder::new_multi_thread(),
            }
            .enable_all()
            .build()
            .unwrap();
            let disk = Arc::new(FaultyDisk::default());
            let panic = disk.panic.clone();
            let backend = Arc::new(FileBackend::open(disk, &path, &config, false).unwrap());
            runtime.block_on(async {
                backend
                    .commit(vec![], vec![write("kept", "1")])
                    .await
                    .unwrap();
                panic.store(true, std::sync::atomic::Ordering::Relaxed);
                let b = backend.clone();
                // The caller's own task panics when it commits inline; a
                // commit on the thread answers `unavailable`.
                let first =
                    tokio::spawn(async move { b.commit(vec![], vec![write("lost", "2")]).await })
                        .await;
                match flavor {
                    "current" => assert!(
                        matches!(first, Ok(Err(BackendError::Unavailable(_)))),
                        "{flavor}: {first:?}"
                    ),
                    _ => assert!(first.is_err_and(|e| e.is_panic()), "{flavor}"),
                }
                let later = tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    backend.commit(vec![], vec![write("later", "3")]),
                )
                .await
                .expect("a commit after the panic is answered, not left waiting");
                assert!(
                    matches!(later, Err(BackendError::Unavailable(_))),
                    "{flavor}: {later:?}"
                );
            });
            drop(runtime);
            let backend = Arc::into_inner(backend).unwrap();
            let (done, closed) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                drop(backend);
                done.send(()).unwrap();
            });
            closed
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the backend closes after a panic");
            let again = FileBackend::open_shared(&config).unwrap();
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                assert!(again.get(b"kept").await.unwrap().is_some(), "{flavor}");
                assert!(again.get(b"later").await.unwrap().is_none(), "{flavor}");
                again.commit(vec![], vec![write("new", "4")]).await.unwrap();
            });
        }
    }

    /// A caller's commit on a multi-threaded runtime blocks its thread
    /// directly while commits are fast, and goes through `block_in_place`
    /// once they are slow (here 2 ms a sync), until they are fast again.
    #[test]
    fn slow_commits_move_off_the_callers_worker() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let disk = Arc::new(FaultyDisk::default());
        let slow = disk.slow.clone();
        let backend = FileBackend::open(disk, &path, &FileConfig::new(&path), false).unwrap();
        let line = backend.line.clone().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let commit = |i: usize| {
            runtime
                .block_on(backend.commit(vec![], vec![write(&format!("k{i}"), "v")]))
                .unwrap()
        };
        for i in 0..5 {
            commit(i);
        }
        assert!(line.commits_are_fast(), "a tmpfs or disk sync is fast");
        slow.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut i = 5;
        while line.commits_are_fast() {
            commit(i);
            i += 1;
            assert!(i < 20, "2 ms syncs never counted as slow");
        }
        slow.store(false, std::sync::atomic::Ordering::Relaxed);
        while !line.commits_are_fast() {
            commit(i);
            i += 1;
            assert!(i < 200, "fast syncs never counted as fast again");
        }
        drop((runtime, line));
        drop(backend);
        let again = FileBackend::open_shared(&FileConfig::new(&path)).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let newest = format!("k{}", i - 1);
        assert!(
            runtime
                .block_on(again.get(newest.as_bytes()))
                .unwrap()
                .is_some()
        );
    }

    /// A close that finds much of redb's file free compacts it, and
    /// everything is still there after; a close with little free does not.
    #[tokio::test]
    async fn a_close_compacts_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.redb");
        let config = FileConfig::new(&path);
        let value = vec![b'v'; 200];
        let backend = FileBackend::open_shared(&config).unwrap();
        for chunk in 0..20 {
            let writes = (0..1000)
                .map(|i| Write {
                    key: format!("k{:05}", chunk * 1000 + i).into_bytes(),
                    value: Some(value.clone()),
                })
                .collect();
            backend.commit(vec![], writes).await.unwrap();
        }
        drop(backend);
        let loaded = std::fs::metadata(&path).unwrap().len();
        // Every 8th key rewritten in one checkpoint (due after that commit's
        // group, done before the next commit): each page is copied, and the
        // old copies are left free.
        let mut small = config.clone();
        small.checkpoint_kb = Some(256);
        let backend = FileBackend::open_shared(&small).unwrap();
        let writes = (0..20_000)
            .step_by(8)
            .map(|i| Write {
                key: format!("k{i:05}").into_bytes(),
                value: Some(vec![b'w'; 200]),
            })
            .collect();
        backend.commit(vec![], writes).await.unwrap();
        backend
            .commit(vec![], vec![write("after", "x")])
            .await
            .unwrap();
        assert_eq!(backend.sync_stats().checkpoints, 1);
        let sparse = std::fs::metadata(&path).unwrap().len();
        drop(backend);
        let closed = std::fs::metadata(&path).unwrap().len();
        assert!(
            sparse > loaded,
            "the rewrite grew the file: {loaded} -> {sparse}"
        );
        assert!(
            closed < sparse,
            "the close compacted it: {sparse} -> {closed}"
        );
        let backend = FileBackend::open_shared(&config).unwrap();
        for i in [0, 1, 8, 19_999, 19_992] {
            let entry = backend
                .get(format!("k{i:05}").as_bytes())
                .await
                .unwrap()
                .unwrap();
            let byte = if i % 8 == 0 { b'w' } else { b'v' };
            assert_eq!(entry.value, vec![byte; 200], "k{i:05}");
        }
        drop(backend);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            closed,
            "nothing to compact"
        );
    }

    /// A close cuts the log back to what it holds, keeping the records a
    /// small log leaves unchecked for the next open to replay.
    #[tokio::test]
    async fn a_close_cuts_the_log_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.redb");
        let log = wal::path_of(&path);
        let mut config = FileConfig::new(&path);
        config.checkpoint_kb = Some(512);
        let backend = FileBackend::open_shared(&config).unwrap();
        // One commit of ~600 KiB grows the log past it; its checkpoint
        // starts the log again, and the small commits after it stay in the
        // log through the close (under `CLOSE_CHECKPOINT_BYTES`).
        let writes = (0..600)
            .map(|i| Write {
                key: format!("big{i:03}").into_bytes(),
                value: Some(vec![b'b'; 1000]),
            })
            .collect();
        backend.commit(vec![], writes).await.unwrap();
        for i in 0..10 {
            backend
                .commit(vec![], vec![write(&format!("small{i}"), "s")])
                .await
                .unwrap();
        }
        assert_eq!(backend.sync_stats().checkpoints, 1);
        let grown = std::fs::metadata(&log).unwrap().len();
        assert!(grown >= 600_000, "the log grew to {grown}");
        drop(backend);
        assert_eq!(std::fs::metadata(&log).unwrap().len(), 256 << 10);
        let backend = FileBackend::open_shared(&config).unwrap();
        assert_eq!(backend.current_version().await.unwrap(), 11);
        assert_eq!(backend.get(b"small9").await.unwrap().unwrap().version, 11);
        assert_eq!(
            backend.get(b"big599").await.unwrap().unwrap().value,
            vec![b'b'; 1000]
        );
        backend
            .commit(vec![], vec![write("later", "x")])
            .await
            .unwrap();
        drop(backend);
        let backend = FileBackend::open_shared(&config).unwrap();
        assert_eq!(backend.get(b"later").await.unwrap().unwrap().version, 12);
    }

    /// Reads on another thread while checkpoints run after nearly every
    /// commit: the change feed always holds each version exactly once
    /// across the checkpointed part and the overlay, up to the newest, and
    /// reads see every acknowledged commit.
    #[tokio::test]
    async fn reads_during_checkpoints_see_one_consistent_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = FileConfig::new(dir.path().join("s.redb"));
        config.checkpoint_kb = Some(1);
        let backend = FileBackend::open_shared(&config).unwrap();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (backend, done) = (backend.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let state = backend.state();
                    // From a few commits before the last checkpoint: some
                    // from redb's feed, the rest from the overlay.
                    let since = state.base.saturating_sub(5);
                    let changes = state.changes(since, 10_000).unwrap();
                    let versions: Vec<u64> = changes.iter().map(|c| c.version).collect();
                    let expected: Vec<u64> = (since + 1..=state.version).collect();
                    assert_eq!(versions, expected);
                    if state.version > 0 {
                        let key = format!("k{}", state.version);
                        assert!(state.get(key.as_bytes()).unwrap().is_some());
                    }
                    reads += 1;
                }
                reads
            })
        };
        let value = "v".repeat(300);
        for i in 1..=400u64 {
            let version = backend
                .commit(vec![], vec![write(&format!("k{i}"), &value)])
                .await
                .unwrap();
            assert_eq!(version, i);
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().unwrap();
        assert!(backend.sync_stats().checkpoints > 50);
        assert!(reads > 0);
    }

    #[test]
    fn cache_mb_splits_between_redb_and_the_log() {
        let config = |json| FileConfig::from_json(json).unwrap();
        let capped = config(serde_json::json!({"path":"x","cache_mb":32}));
        assert_eq!(capped.redb_cache_bytes(), Some(16 << 20));
        assert_eq!(capped.checkpoint_bytes(), 4 << 20);
        let small = config(serde_json::json!({"path":"x","cache_mb":4}));
        assert_eq!(small.redb_cache_bytes(), Some(2 << 20));
        assert_eq!(small.checkpoint_bytes(), 512 << 10);
        // An explicit checkpoint size wins; no cap leaves redb's default.
        let both = config(serde_json::json!({"path":"x","cache_mb":4,"checkpoint_kb":2048}));
        assert_eq!(both.checkpoint_bytes(), 2 << 20);
        let default = config(serde_json::json!({"path":"x"}));
        assert_eq!(default.redb_cache_bytes(), None);
        assert_eq!(default.checkpoint_bytes(), CHECKPOINT_BYTES);
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
            FileConfig::from_json(serde_json::json!({"path":"x","checkpoint_kb":0})).unwrap_err();
        assert!(format!("{e}").contains("checkpoint_kb"), "{e}");
        let e =
            FileConfig::from_json(serde_json::json!({"path":"x","read_only":true})).unwrap_err();
        assert!(format!("{e}").contains("read_only"), "{e}");
        // `verify_mb` may be 0 (never verify at open).
        let config = |v| FileConfig::from_json(serde_json::json!({"path":"x","verify_mb":v}));
        assert_eq!(config(serde_json::json!(0)).unwrap().verify_bytes(), 0);
        assert_eq!(
            config(serde_json::json!(3)).unwrap().verify_bytes(),
            3 << 20
        );
        assert_eq!(
            FileConfig::new("x").verify_bytes(),
            u64::from(DEFAULT_VERIFY_MB) << 20
        );
        for bad in [
            serde_json::json!(-1),
            serde_json::json!(1.5),
            serde_json::json!("1"),
        ] {
            let e = config(bad).unwrap_err();
            assert!(format!("{e}").contains("verify_mb"), "{e}");
        }
    }

    /// Verifications `open` ran on this thread (a current-thread test
    /// runtime opens on the test's thread).
    fn verifications<T>(open: impl FnOnce() -> T) -> (T, u64) {
        let before = verify::RUNS.get();
        let opened = open();
        (opened, verify::RUNS.get() - before)
    }

    /// 8,000 records of 200 bytes (1.6 MiB, past the default `verify_mb`)
    /// in a store at `path`, closed.
    async fn large_store(config: &FileConfig) {
        let backend = FileBackend::open_shared(config).unwrap();
        let value = "v".repeat(200);
        for chunk in 0..40 {
            let writes = (0..200)
                .map(|i| write(&format!("key{chunk:02}_{i:03}"), &value))
                .collect();
            backend.commit(vec![], writes).await.unwrap();
        }
        drop(backend);
        let len = std::fs::metadata(&config.path).unwrap().len();
        assert!(len > 1 << 20, "past the default verify_mb: {len} bytes");
    }

    fn vouched(path: &Path) -> bool {
        mark::Fingerprint::of(path).is_some_and(|now| mark::vouches(path, &now))
    }

    /// A file larger than `verify_mb` is verified at open unless its mark
    /// vouches for it: the writer's close marks it, so the next opens skip
    /// the verification; a writer removes the mark before it writes the
    /// file; and damage made through the file system after a close
    /// refuses the open. Damage the mark cannot see (below the file
    /// system: simulated by marking the damaged file) is found by `check`;
    /// `verify_mb` 0 verifies nothing at open.
    #[tokio::test]
    async fn files_past_verify_mb_are_verified_unless_marked_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = FileConfig {
            checkpoint_kb: Some(64),
            ..FileConfig::new(&path)
        };
        let reader = FileConfig {
            read_only: true,
            ..config.clone()
        };
        large_store(&config).await;
        assert!(vouched(&path), "the close marked the file");
        let report = check(&config).unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!(report.records, 8000);
        for config in [&config, &reader] {
            let (backend, runs) = verifications(|| FileBackend::open_shared(config).unwrap());
            assert_eq!(runs, 0, "vouched for: not verified");
            assert_eq!(backend.scan(&all()).await.unwrap().len(), 8000);
        }
        // A writer's first write to the file removes the mark; its close
        // marks the file again.
        {
            let backend = FileBackend::open_shared(&config).unwrap();
            for round in 0..3 {
                let writes = (0..200)
                    .map(|i| write(&format!("key2{round}_{i:03}"), &"w".repeat(200)))
                    .collect();
                backend.commit(vec![], writes).await.unwrap();
            }
            assert!(backend.sync_stats().checkpoints > 0);
            assert!(!mark::path_of(&path).exists(), "unmarked while written");
        }
        assert!(vouched(&path));

        // Damage a leaf page's header, which no record checksum covers.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes.windows(9).position(|w| w == b"key30_100").unwrap();
        let page = at - at % 4096;
        for b in &mut bytes[page + 2..page + 6] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, &bytes).unwrap();
        for config in [&config, &reader] {
            let (e, runs) = verifications(|| FileBackend::open_shared(config).unwrap_err());
            assert_eq!(runs, 1);
            assert!(matches!(e, BackendError::Corrupt(_)), "{e:?}");
            assert!(format!("{e}").contains("integrity check"), "{e}");
        }
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was written");
        let report = check(&config).unwrap();
        assert!(!report.is_sound());
        assert!(report.problems[0].contains("integrity check"), "{report:?}");

        // What the mark cannot see: the damaged file as if it were the one
        // marked (damage below the file system). The opens trust the mark;
        // `check` does not.
        mark::mark(&path, &mark::Fingerprint::of(&path).unwrap());
        for config in [&config, &reader] {
            let (_, runs) = verifications(|| FileBackend::open_shared(config).unwrap());
            assert_eq!(runs, 0);
        }
        assert!(!check(&config).unwrap().is_sound());
        // With `verify_mb` 0 nothing is verified at open, marked or not.
        std::fs::remove_file(mark::path_of(&path)).unwrap();
        let (_, runs) = verifications(|| {
            FileBackend::open_shared(&FileConfig {
                verify_mb: Some(0),
                ..reader.clone()
            })
            .unwrap()
        });
        assert_eq!(runs, 0);
        assert!(!mark::path_of(&path).exists());
        assert_eq!(std::fs::read(&path).unwrap(), bytes, "nothing was written");
    }

    /// A reader verifies a large unmarked file at every open and writes no
    /// mark; a writer verifies it and marks it at once (not only at
    /// close), and a reader's verification is not run again by the
    /// writer's open it hands over to. One that did not verify
    /// (`verify_mb` 0) marks nothing, even at close.
    #[tokio::test]
    async fn a_verified_open_marks_the_file_and_an_unverified_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = FileConfig {
            checkpoint_kb: Some(64),
            ..FileConfig::new(&path)
        };
        large_store(&FileConfig {
            verify_mb: Some(0),
            ..config.clone()
        })
        .await;
        assert!(!mark::path_of(&path).exists(), "verify_mb 0 marks nothing");
        let reader = FileConfig {
            read_only: true,
            ..config.clone()
        };
        for _ in 0..2 {
            let (_, runs) = verifications(|| FileBackend::open_shared(&reader).unwrap());
            assert_eq!(runs, 1, "a reader verifies an unmarked file");
            assert!(!mark::path_of(&path).exists(), "and writes nothing");
        }
        // (A file written in the last 20 ms is not marked at open: it may
        // be being written. The close would mark it.)
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (backend, runs) = verifications(|| FileBackend::open_shared(&config).unwrap());
        assert_eq!(runs, 1);
        assert!(vouched(&path), "the writer's open marked it");
        assert_eq!(backend.scan(&all()).await.unwrap().len(), 8000);
        drop(backend);
        let (_, runs) = verifications(|| FileBackend::open_shared(&reader).unwrap());
        assert_eq!(runs, 0);

        // A reader that must hand over to a writer verifies once for both:
        // a copy of the file taken while redb had it open for writing, which
        // redb must repair.
        let unclean = dir.path().join("unclean.redb");
        {
            let db = redb::Database::create(&path).unwrap();
            db.begin_write().unwrap().commit().unwrap();
            std::fs::copy(&path, &unclean).unwrap();
        }
        // (What a verification found is taken again only of a file that
        // was not changing then: its times older than 20 ms.)
        std::thread::sleep(std::time::Duration::from_millis(30));
        let reader = FileConfig {
            read_only: true,
            ..FileConfig::new(&unclean)
        };
        let (backend, runs) = verifications(|| FileBackend::open_shared(&reader).unwrap());
        assert!(!backend.is_read_only(), "redb's repair needed a writer");
        assert_eq!(runs, 1, "verified once, by the reader's open");
        assert_eq!(backend.scan(&all()).await.unwrap().len(), 8000);
    }

    /// A writer that meets damage while it has the file open (here a
    /// record's checksum, of a file whose mark vouched for it) removes the
    /// mark as it closes: the next open verifies the file. So does one
    /// whose holder met it answering another process.
    #[tokio::test]
    async fn damage_met_while_open_removes_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = FileConfig {
            checkpoint_kb: Some(64),
            ..FileConfig::new(&path)
        };
        large_store(&config).await;
        // A value found nowhere else in the file (checkpointed by the
        // close: past 64 KiB), one byte of every copy of it flipped.
        let unique: String = (0..20_000).map(|i| format!("{i:05}")).collect();
        FileBackend::open_shared(&config)
            .unwrap()
            .commit(vec![], vec![write("target", &unique)])
            .await
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let copies: Vec<usize> = bytes
            .windows(20)
            .enumerate()
            .filter(|(_, w)| *w == &unique.as_bytes()[..20])
            .map(|(at, _)| at)
            .collect();
        assert!(!copies.is_empty());
        for at in copies {
            bytes[at + 50_000] ^= 0x01;
        }
        std::fs::write(&path, &bytes).unwrap();
        for through_another_process in [false, true] {
            mark::mark(&path, &mark::Fingerprint::of(&path).unwrap());
            assert!(vouched(&path));
            let backend = FileBackend::open_shared(&config).unwrap();
            let e = if through_another_process {
                let client = share::Client::connect(&canonical(&path).unwrap(), &config)
                    .expect("the writer serves its store");
                client.get(b"target").await.unwrap_err()
            } else {
                backend.get(b"target").await.unwrap_err()
            };
            assert!(matches!(e, BackendError::Corrupt(_)), "{e:?}");
            assert!(vouched(&path), "still marked while open");
            drop(backend);
            assert!(
                !mark::path_of(&path).exists(),
                "the close removed the mark (through another process: {through_another_process})"
            );
        }
    }

    /// `check` of a sound store with commits in the log, and of one whose
    /// log is damaged before its seal.
    #[tokio::test]
    async fn check_counts_a_sound_store_and_names_a_damaged_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let config = FileConfig::new(&path);
        {
            let backend = FileBackend::open_shared(&config).unwrap();
            backend
                .commit(vec![], vec![write("a", "1"), write("b", "2")])
                .await
                .unwrap();
            backend.commit(vec![], vec![delete("a")]).await.unwrap();
        }
        let report = check(&config).unwrap();
        assert!(report.is_sound(), "{report:?}");
        assert_eq!((report.log_commits, report.version), (2, 2));
        let log = wal::path_of(&path);
        let mut bytes = std::fs::read(&log).unwrap();
        bytes[wal::HEADER_LEN as usize + 10] ^= 1;
        std::fs::write(&log, &bytes).unwrap();
        let report = check(&config).unwrap();
        assert!(
            report.problems.iter().any(|p| p.contains("damaged")),
            "{report:?}"
        );
        let missing = check(&FileConfig::new(dir.path().join("none.redb"))).unwrap_err();
        assert!(format!("{missing}").contains("no store"), "{missing}");
        // A store a writer holds is not checked under it.
        std::fs::write(&log, {
            bytes[wal::HEADER_LEN as usize + 10] ^= 1;
            &bytes
        })
        .unwrap();
        let _writer = FileBackend::open_shared(&config).unwrap();
        let held = check(&config).unwrap_err();
        assert!(is_in_use(&held), "{held}");
    }
}
