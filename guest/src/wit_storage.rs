//! [`Storage`] over the imported `kvstash:store/storage` interface.

use crate::bindings::kvstash::store::storage as wit;
use crate::engine::{Change, Check, Entry, Storage, StorageError, Write};

/// A leaf backend opened through the host.
pub struct WitStorage {
    backend: wit::Backend,
}

impl WitStorage {
    pub fn open(config: &str) -> Result<Self, StorageError> {
        Ok(Self {
            backend: wit::Backend::open(config).map_err(from_wit)?,
        })
    }
}

fn from_wit(e: wit::StorageError) -> StorageError {
    match e {
        wit::StorageError::Conflict(c) => StorageError::Conflict {
            index: c.index,
            current: c.current,
        },
        wit::StorageError::Compacted(oldest) => StorageError::Compacted { oldest },
        wit::StorageError::ReadOnly => StorageError::ReadOnly,
        wit::StorageError::Invalid(why) => StorageError::Invalid(why),
        wit::StorageError::Unavailable(why) => StorageError::Unavailable(why),
        wit::StorageError::Corrupt(why) => StorageError::Corrupt(why),
    }
}

fn entry(e: wit::Entry) -> Entry {
    Entry {
        key: e.key,
        value: e.value,
        version: e.version,
    }
}

impl Storage for WitStorage {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        Ok(self.backend.get(key).map_err(from_wit)?.map(entry))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        Ok(self
            .backend
            .get_many(keys)
            .map_err(from_wit)?
            .into_iter()
            .map(|e| e.map(entry))
            .collect())
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        Ok(self
            .backend
            .scan(start, end, limit, reverse)
            .map_err(from_wit)?
            .into_iter()
            .map(entry)
            .collect())
    }

    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        // Moves, not copies (same layouts: the collects reuse the buffers).
        let checks: Vec<wit::Check> = checks
            .into_iter()
            .map(|c| match c {
                Check::VersionIs(key, version) => wit::Check::VersionIs((key, version)),
                Check::Absent(key) => wit::Check::Absent(key),
            })
            .collect();
        let writes: Vec<wit::Write> = writes
            .into_iter()
            .map(|w| wit::Write {
                key: w.key,
                value: w.value,
            })
            .collect();
        self.backend.commit(&checks, &writes).map_err(from_wit)
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        self.backend.current_version().map_err(from_wit)
    }

    fn commits_here(&self) -> u64 {
        self.backend.commits_here()
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        Ok(self
            .backend
            .changes(since, limit)
            .map_err(from_wit)?
            .into_iter()
            .map(|c| Change {
                version: c.version,
                key: c.key,
                value: c.value,
            })
            .collect())
    }
}
