//! Where a writer's two files live (the commit log and redb's file): the
//! file system ([`Real`]), or in the crash tests a simulated disk that
//! stops at a chosen write and keeps only what was synced (`crash.rs`).
//! Everything the writer does to its files goes through [`Disk`] and
//! [`LogFile`], so the tests crash it at every point; a read-only opener
//! (`wal::ReadLock`) reads the file system directly.

use std::fmt::Debug;
use std::fs::{File, OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use redb::{Builder, Database, DatabaseError};

pub(super) trait Disk: Send + Sync + Debug {
    /// The length of the file at `path`; `None` if there is none.
    fn file_len(&self, path: &Path) -> Option<u64>;
    /// The file at `path` for reading and writing, made if missing.
    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>>;
    /// Makes the names of the files made in `dir` durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    fn remove(&self, path: &Path) -> io::Result<()>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// redb on the file at `path`, made if missing.
    fn create_db(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError>;
    fn open_db_read_only(
        &self,
        builder: &Builder,
        path: &Path,
    ) -> Result<redb::ReadOnlyDatabase, DatabaseError>;
    /// What the verified mark records of the file at `path` (`mark.rs`);
    /// `None` where marks are not kept (the crash tests' disk).
    fn fingerprint(&self, _path: &Path) -> Option<super::mark::Fingerprint> {
        None
    }
    /// Removes the verified mark of the file at `path`, durably (`mark.rs`).
    fn unmark(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
    /// redb on the file at `path` after its integrity check, which writes
    /// nothing to the file (`verify.rs`); `None` where damage is not what
    /// is simulated (the crash tests' disk).
    fn open_db_verified(
        &self,
        _builder: Builder,
        _path: &Path,
    ) -> Option<Result<Database, DatabaseError>> {
        None
    }
}

/// A file of the [`Disk`].
pub(super) trait LogFile: Send + Sync + Debug {
    fn len(&self) -> io::Result<u64>;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn sync_data(&self) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The exclusive lock, for as long as this file is open.
    fn try_lock(&self) -> Result<(), TryLockError>;
}

/// The file system.
#[derive(Debug)]
pub(super) struct Real;

impl Disk for Real {
    fn file_len(&self, path: &Path) -> Option<u64> {
        std::fs::metadata(path)
            .ok()
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn LogFile>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(Box::new(file))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir).and_then(|dir| dir.sync_all())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn create_db(&self, builder: &Builder, path: &Path) -> Result<Database, DatabaseError> {
        builder.create(path)
    }

    fn open_db_read_only(
        &self,
        builder: &Builder,
        path: &Path,
    ) -> Result<redb::ReadOnlyDatabase, DatabaseError> {
        builder.open_read_only(path)
    }

    fn open_db_verified(
        &self,
        builder: Builder,
        path: &Path,
    ) -> Option<Result<Database, DatabaseError>> {
        Some(super::verify::open_verified(builder, path))
    }

    fn fingerprint(&self, path: &Path) -> Option<super::mark::Fingerprint> {
        super::mark::Fingerprint::of(path)
    }

    fn unmark(&self, path: &Path) -> io::Result<()> {
        super::mark::unmark(path)
    }
}

impl LogFile for File {
    fn len(&self) -> io::Result<u64> {
        Ok(self.metadata()?.len())
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileExt::read_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(self, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        File::sync_data(self)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        File::set_len(self, len)
    }

    fn try_lock(&self) -> Result<(), TryLockError> {
        File::try_lock(self)
    }
}
