//! The commit log's reader, for the fuzz targets (`fuzz/`, feature
//! `fuzzing`): a sound log to damage, and the reader a store's open uses.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use super::disk::Real;
use super::wal::{ReadLock, Wal, path_of};
use crate::backend::{BackendError, Write};

/// A database path of this process's own, in the temporary directory.
fn scratch() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("kvstash-fuzz-{}-{n}.redb", std::process::id()))
}

/// The bytes of a sealed log holding `commits` (versions 1, 2, …), as a
/// clean close leaves it.
pub fn sound_log(commits: &[Vec<Write>]) -> Result<Vec<u8>, BackendError> {
    let db = scratch();
    let log = path_of(&db);
    let written = (|| {
        let (mut wal, _) = Wal::open(std::sync::Arc::new(Real), &db)?;
        for (version, writes) in (1u64..).zip(commits) {
            wal.append(&[(version, writes.as_slice())])?;
        }
        wal.seal();
        drop(wal);
        std::fs::read(&log).map_err(|e| BackendError::Unavailable(format!("reading the log: {e}")))
    })();
    let _ = std::fs::remove_file(&log);
    written
}

/// The commits a log of these bytes holds, as a store's open reads them
/// (versions and writes), or why it refuses them.
pub fn read_log(bytes: &[u8]) -> Result<Vec<(u64, Vec<Write>)>, BackendError> {
    let db = scratch();
    let log = path_of(&db);
    std::fs::write(&log, bytes)
        .map_err(|e| BackendError::Unavailable(format!("writing the log: {e}")))?;
    let read = ReadLock::open(&db).map(|opened| {
        opened
            .map(|(_, records)| records.into_iter().map(|r| (r.version, r.writes)).collect())
            .unwrap_or_default()
    });
    let _ = std::fs::remove_file(&log);
    read
}
