//! Crash tests of the file backend at every point of its commit cycle
//! (append to the log, fsync, apply to the overlay, checkpoint into redb,
//! reset the log, close, reopen), the way redb tests itself: the backend
//! runs on a simulated disk ([`Sim`]) that stops at its Nth write, length
//! change or sync (every later one fails, as if the machine stopped there),
//! for every N the workload reaches. Two disks are then made from what the
//! stopped one held:
//!
//! - a power cut: each file as of its last sync, and only the files whose
//!   name a directory sync made durable;
//! - a process crash: everything written, synced or not.
//!
//! Each must open, and hold exactly the acknowledged commits (plus, at
//! most, the one commit that failed, whole or not at all): every key's
//! value, the version, and the change feed's entries for every version it
//! still has. Then it must take a new commit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs::TryLockError;
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{Builder, Database, DatabaseError, StorageBackend};

use super::disk::{Disk, LogFile};
use super::{FileBackend, FileConfig};
use crate::backend::{Backend, BackendError, Change, Check, Scan, Write};

/// A file's bytes (an inode: renaming keeps it).
#[derive(Clone, Debug, Default)]
struct SimFile {
    live: Vec<u8>,
    /// As of the last sync.
    durable: Vec<u8>,
}

type Inode = Arc<Mutex<SimFile>>;

/// The names of files: as they are, and as the last directory sync made
/// them durable (one directory: the store's).
#[derive(Debug, Default)]
struct Names {
    live: BTreeMap<PathBuf, Inode>,
    durable: BTreeMap<PathBuf, Inode>,
}

/// The simulated disk: files in memory, and a budget of writes, length
/// changes, renames and syncs, after which every one fails.
#[derive(Debug, Default)]
struct Sim {
    names: Mutex<Names>,
    /// Operations left before the crash; `None`: no crash.
    budget: Mutex<Option<u64>>,
    /// Operations done.
    done: Mutex<u64>,
}

/// Files by name, with their contents.
type Image = BTreeMap<PathBuf, Vec<u8>>;

impl Sim {
    fn with_files(files: Image) -> Arc<Self> {
        let sim = Arc::new(Self::default());
        {
            let mut names = sim.names.lock().unwrap();
            for (path, bytes) in files {
                let inode = Arc::new(Mutex::new(SimFile {
                    live: bytes.clone(),
                    durable: bytes,
                }));
                names.live.insert(path.clone(), inode.clone());
                names.durable.insert(path, inode);
            }
        }
        sim
    }

    /// One write, length change, rename or sync: refused once the budget
    /// is spent.
    fn spend(&self) -> io::Result<()> {
        let mut budget = self.budget.lock().unwrap();
        match &mut *budget {
            Some(0) => return Err(io::Error::other("simulated crash")),
            Some(left) => *left -= 1,
            None => {}
        }
        *self.done.lock().unwrap() += 1;
        Ok(())
    }

    fn stopped(&self) -> bool {
        *self.budget.lock().unwrap() == Some(0)
    }

    /// A power cut: the names the last directory sync made durable, each
    /// file as of its last sync.
    fn power_cut(&self) -> Image {
        let names = self.names.lock().unwrap();
        let durable = names.durable.iter();
        durable
            .map(|(p, f)| (p.clone(), f.lock().unwrap().durable.clone()))
            .collect()
    }

    /// A process crash: everything written, synced or not.
    fn process_crash(&self) -> Image {
        let names = self.names.lock().unwrap();
        let live = names.live.iter();
        live.map(|(p, f)| (p.clone(), f.lock().unwrap().live.clone()))
            .collect()
    }
}

/// An open file of the [`Sim`].
#[derive(Debug)]
struct SimHandle {
    sim: Arc<Sim>,
    file: Inode,
}

impl SimHandle {
    fn read_into(&self, offset: u64, out: &mut [u8]) -> usize {
        let file = self.file.lock().unwrap();
        let at = usize::try_from(offset).unwrap().min(file.live.len());
        let n = out.len().min(file.live.len() - at);
        out[..n].copy_from_slice(&file.live[at..at + n]);
        n
    }

    fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.sim.spend()?;
        let mut file = self.file.lock().unwrap();
        let at = usize::try_from(offset).unwrap();
        if file.live.len() < at + data.len() {
            file.live.resize(at + data.len(), 0);
        }
        file.live[at..at + data.len()].copy_from_slice(data);
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        self.sim.spend()?;
        let mut file = self.file.lock().unwrap();
        file.durable = file.live.clone();
        Ok(())
    }

    fn length(&self) -> u64 {
        self.file.lock().unwrap().live.len() as u64
    }
}

impl LogFile for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.length())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        Ok(self.read_into(offset, buf))
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_at(offset, buf)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        StorageBackend::set_len(self, len)
    }

    fn try_lock(&self) -> Result<(), TryLockError> {
        Ok(())
    }
}

type LockResult<T> = Result<T, redb::BackendError>;

impl StorageBackend for SimHandle {
    fn len(&self) -> io::Result<u64> {
        Ok(self.length())
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        if self.read_into(offset, out) < out.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.sim.spend()?;
        let mut file = self.file.lock().unwrap();
        file.live.resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.write_at(offset, data)
    }

    // One process: every lock is granted.
    fn try_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<bool> {
        Ok(true)
    }

    fn try_lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<bool> {
        Ok(true)
    }

    fn lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<()> {
        Ok(())
    }

    fn lock_shared_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<()> {
        Ok(())
    }

    fn unlock_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<()> {
        Ok(())
    }

    fn query_lock_range(&self, _: Bound<u64>, _: Bound<u64>) -> LockResult<bool> {
        Ok(false)
    }
}

#[derive(Debug)]
struct SimDisk(Arc<Sim>);

impl SimDisk {
    /// The file at `path`, made (empty, its name not yet durable) if missing.
    fn handle(&self, path: &Path) -> SimHandle {
        let mut names = self.0.names.lock().unwrap();
        let file = names.live.entry(path.to_path_buf()).or_default().clone();
        SimHandle {
            sim: self.0.clone(),
            file,
        }
    }
}

impl Disk for SimDisk {
    fn file_len(&self, path: &Path) -> Option<u64> {
        let names = self.0.names.lock().unwrap();
        let file = names.live.get(path)?;
        Some(file.lock().unwrap().live.len() as u64)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        Ok(Box::new(self.handle(path)))
    }

    fn sync_dir(&self, _dir: &Path) -> io::Result<()> {
        self.0.spend()?;
        let mut names = self.0.names.lock().unwrap();
        names.durable = names.live.clone();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.0.names.lock().unwrap().live.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.spend()?;
        let mut names = self.0.names.lock().unwrap();
        let file = names
            .live
            .remove(from)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        names.live.insert(to.to_path_buf(), file);
        Ok(())
    }

    fn create_db(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        builder.create_with_backend(self.handle(path))
    }

    fn open_db_read_only(
        &self,
        builder: &Builder,
        path: &Path,
    ) -> Result<redb::ReadOnlyDatabase, DatabaseError> {
        builder.open_read_only_with_backend(self.handle(path))
    }
}

const PATH: &str = "/sim/store.redb";

fn config() -> FileConfig {
    let mut config = FileConfig::new(PATH);
    // A checkpoint every few commits, and a feed short enough to trim.
    config.checkpoint_kb = Some(1);
    config.retention = 6;
    config
}

fn open(sim: &Arc<Sim>) -> Result<FileBackend, BackendError> {
    FileBackend::open(
        Arc::new(SimDisk(sim.clone())),
        Path::new(PATH),
        &config(),
        false,
    )
}

/// What the workload was told.
#[derive(Debug, Default)]
struct Outcomes {
    /// Acknowledged commits, in order: version and writes.
    acked: Vec<(u64, Vec<Write>)>,
    /// The first commit that failed with an I/O error: it may or may not
    /// have been kept. (Every later one found the log failed, or the disk
    /// stopped, before it wrote anything.)
    doubt: Option<Vec<Write>>,
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const KEYS: u64 = 10;

/// Two sessions of commits (1 to 3 keys, some deletes, some conditional on
/// the version the model expects, some made to fail their check; the very
/// last one large), with a close and a reopen between them and at the end.
async fn workload(sim: &Arc<Sim>, seed: u64, commits: usize) -> Outcomes {
    let mut rng = Rng(seed);
    let mut out = Outcomes::default();
    // What the store holds if every commit so far was kept: key → version.
    let mut versions: BTreeMap<Vec<u8>, u64> = BTreeMap::new();
    for session in 0..2 {
        let Ok(backend) = open(sim) else {
            assert!(sim.stopped(), "only a stopped disk fails an open");
            return out;
        };
        for i in 0..commits {
            let mut keys: Vec<u64> = (0..1 + rng.below(3)).map(|_| rng.below(KEYS)).collect();
            keys.sort_unstable();
            keys.dedup();
            let writes: Vec<Write> = keys
                .iter()
                .map(|k| Write {
                    key: format!("k{k}").into_bytes(),
                    value: (rng.below(5) != 0).then(|| {
                        let mut len = 20 + rng.below(200) as usize;
                        if session == 1 && i + 1 == commits {
                            // The last commit grows the log past one step,
                            // so the close cuts it back (`Wal::shrink`).
                            len = 300_000;
                        }
                        format!("s{session} c{i} ").repeat(len / 8).into_bytes()
                    }),
                })
                .collect();
            let first = &writes[0].key;
            let (checks, fails) = match rng.below(4) {
                0 => {
                    let check = match versions.get(first) {
                        Some(v) => Check::VersionIs(first.clone(), *v),
                        None => Check::Absent(first.clone()),
                    };
                    (vec![check], false)
                }
                1 => (vec![Check::VersionIs(first.clone(), u64::MAX)], true),
                _ => (vec![], false),
            };
            match backend.commit(checks, writes.clone()).await {
                Ok(version) => {
                    assert!(
                        out.doubt.is_none(),
                        "a commit acknowledged after a failed one"
                    );
                    assert!(!fails, "a check that cannot hold held");
                    let expected = out.acked.last().map_or(1, |(v, _)| v + 1);
                    assert_eq!(version, expected, "versions follow each other");
                    for w in &writes {
                        match &w.value {
                            Some(_) => versions.insert(w.key.clone(), version),
                            None => versions.remove(&w.key),
                        };
                    }
                    out.acked.push((version, writes));
                }
                // Refused by its check (after a failure, any check may
                // be refused: the model no longer knows).
                Err(BackendError::Conflict { .. }) if fails || out.doubt.is_some() => {}
                Err(BackendError::Unavailable(_)) => {
                    if out.doubt.is_none() {
                        // A commit refused by its check is never written.
                        out.doubt = Some(if fails { Vec::new() } else { writes });
                    }
                }
                Err(e) => panic!("commit {i}: {e}"),
            }
        }
        drop(backend);
    }
    out
}

/// The store's records as key → value.
type Records = BTreeMap<Vec<u8>, Vec<u8>>;

fn apply(records: &mut Records, writes: &[Write]) {
    for w in writes {
        match &w.value {
            Some(v) => records.insert(w.key.clone(), v.clone()),
            None => records.remove(&w.key),
        };
    }
}

/// Opens `files` and checks them against `out`; `what` names the case.
async fn check_recovered(files: Image, out: &Outcomes, what: &str) {
    let sim = Sim::with_files(files);
    let backend = open(&sim).unwrap_or_else(|e| panic!("{what}: the store does not open: {e}"));
    let mut got = Records::new();
    for entry in backend
        .scan(&Scan {
            start: Vec::new(),
            end: None,
            limit: 1000,
            reverse: false,
        })
        .await
        .unwrap()
    {
        got.insert(entry.key, entry.value);
    }
    let version = backend.current_version().await.unwrap();
    let mut expected = Records::new();
    let mut commits: Vec<&[Write]> = Vec::new();
    for (_, writes) in &out.acked {
        apply(&mut expected, writes);
        commits.push(writes);
    }
    let acked = out.acked.len() as u64;
    if got != expected {
        let doubt = out
            .doubt
            .as_ref()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| panic!("{what}: records differ from the acknowledged ones"));
        apply(&mut expected, doubt);
        assert_eq!(
            got, expected,
            "{what}: neither with nor without the failed commit"
        );
        assert_eq!(version, acked + 1, "{what}: the failed commit's version");
        commits.push(doubt);
    } else if version == acked + 1 {
        // The failed commit was kept and changed nothing visible (a delete
        // of a missing key, say): the feed below checks its writes.
        commits.push(out.doubt.as_deref().expect("a kept failed commit"));
    } else {
        assert_eq!(version, acked, "{what}: version");
    }
    // The feed: each version it still has holds exactly that commit's
    // writes, up to the newest.
    let since = match backend.changes(0, 10_000).await {
        Err(BackendError::Compacted { oldest }) => oldest - 1,
        Ok(_) => 0,
        Err(e) => panic!("{what}: changes: {e}"),
    };
    let feed = backend.changes(since, 10_000).await.unwrap();
    let mut by_version: BTreeMap<u64, Vec<Change>> = BTreeMap::new();
    for change in feed {
        by_version.entry(change.version).or_default().push(change);
    }
    for v in since + 1..=version {
        let writes = commits[usize::try_from(v - 1).unwrap()];
        let changes = by_version.remove(&v).unwrap_or_default();
        let as_writes: Vec<Write> = changes
            .into_iter()
            .map(|c| Write {
                key: c.key,
                value: c.value,
            })
            .collect();
        assert_eq!(as_writes, writes, "{what}: the feed at version {v}");
    }
    assert!(
        by_version.is_empty(),
        "{what}: the feed has more: {by_version:?}"
    );
    // And it goes on.
    let next = backend
        .commit(
            vec![],
            vec![Write {
                key: b"after".to_vec(),
                value: Some(b"1".to_vec()),
            }],
        )
        .await
        .unwrap_or_else(|e| panic!("{what}: a commit after recovery: {e}"));
    assert_eq!(next, version + 1, "{what}");
}

/// Runs the workload once to count its operations, then once per crash
/// point; each stopped disk is recovered twice. Returns the crash points.
async fn crash_everywhere(seed: u64, commits: usize) -> u64 {
    let clean = Arc::new(Sim::default());
    let out = workload(&clean, seed, commits).await;
    assert!(out.doubt.is_none(), "a commit failed without a crash");
    check_recovered(clean.power_cut(), &out, "no crash").await;
    let points = *clean.done.lock().unwrap();
    for n in 0..points {
        let sim = Arc::new(Sim::default());
        *sim.budget.lock().unwrap() = Some(n);
        let out = workload(&sim, seed, commits).await;
        check_recovered(sim.power_cut(), &out, &format!("power cut at op {n}")).await;
        check_recovered(sim.process_crash(), &out, &format!("crash at op {n}")).await;
    }
    points
}

#[tokio::test]
async fn every_crash_point_keeps_every_acknowledged_commit() {
    let mut points = 0;
    for seed in [
        0x9E37_79B9_7F4A_7C15,
        0xD1B5_4A32_D192_ED03,
        0x8CB9_2BA7_2F3D_8DD7,
        0x2545_F491_4F6C_DD1D,
    ] {
        points += crash_everywhere(seed, 40).await;
    }
    // Over a thousand crash points, each recovered twice; the count moves
    // with redb's and the log's writes per commit, so only a floor is
    // asserted.
    assert!(points >= 1000, "only {points} crash points");
    eprintln!("{points} crash points, {} recoveries", 2 * points);
}
