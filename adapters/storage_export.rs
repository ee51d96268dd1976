// The export of `kvstash:store/storage` over the engine's `Storage` trait,
// shared by the storage adapters: `include!`d inside each adapter's
// `component` module, after its bindings (`wit_bindgen::generate!`). The
// including module supplies:
// - `CONFIG`: the configuration `config()` answers (what kvstash opens);
// - `open_backend(config)`: the storage that configuration names.
// Everything the storage interface carries is mapped here, once.

use exports::kvstash::store::storage as wit;

use crate::storage::{self as core, Storage, StorageError};

struct Adapter;

/// An opened backend.
struct Backend(std::rc::Rc<dyn Storage>);

fn to_wit(e: StorageError) -> wit::StorageError {
    match e {
        StorageError::Conflict { index, current } => {
            wit::StorageError::Conflict(wit::Conflict { index, current })
        }
        StorageError::Compacted { oldest } => wit::StorageError::Compacted(oldest),
        StorageError::ReadOnly => wit::StorageError::ReadOnly,
        StorageError::Invalid(why) => wit::StorageError::Invalid(why),
        StorageError::Unavailable(why) => wit::StorageError::Unavailable(why),
        StorageError::Corrupt(why) => wit::StorageError::Corrupt(why),
    }
}

fn entry(e: core::Entry) -> wit::Entry {
    wit::Entry {
        key: e.key,
        value: e.value,
        version: e.version,
    }
}

impl wit::Guest for Adapter {
    type Backend = Backend;

    fn config() -> String {
        CONFIG.to_string()
    }
}

impl wit::GuestBackend for Backend {
    fn open(config: String) -> Result<wit::Backend, wit::StorageError> {
        Ok(wit::Backend::new(Backend(
            open_backend(&config).map_err(to_wit)?,
        )))
    }

    fn get(&self, key: Vec<u8>) -> Result<Option<wit::Entry>, wit::StorageError> {
        Ok(self.0.get(&key).map_err(to_wit)?.map(entry))
    }

    fn get_many(&self, keys: Vec<Vec<u8>>) -> Result<Vec<Option<wit::Entry>>, wit::StorageError> {
        Ok(self
            .0
            .get_many(&keys)
            .map_err(to_wit)?
            .into_iter()
            .map(|e| e.map(entry))
            .collect())
    }

    fn scan(
        &self,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<wit::Entry>, wit::StorageError> {
        Ok(self
            .0
            .scan(&start, end.as_deref(), limit, reverse)
            .map_err(to_wit)?
            .into_iter()
            .map(entry)
            .collect())
    }

    fn commit(
        &self,
        checks: Vec<wit::Check>,
        writes: Vec<wit::Write>,
    ) -> Result<u64, wit::StorageError> {
        let checks = checks
            .into_iter()
            .map(|c| match c {
                wit::Check::VersionIs((key, version)) => core::Check::VersionIs(key, version),
                wit::Check::Absent(key) => core::Check::Absent(key),
            })
            .collect();
        let writes = writes
            .into_iter()
            .map(|w| core::Write {
                key: w.key,
                value: w.value,
            })
            .collect();
        self.0.commit(checks, writes).map_err(to_wit)
    }

    fn current_version(&self) -> Result<u64, wit::StorageError> {
        self.0.current_version().map_err(to_wit)
    }

    fn commits_here(&self) -> u64 {
        self.0.commits_here()
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<wit::Change>, wit::StorageError> {
        Ok(self
            .0
            .changes(since, limit)
            .map_err(to_wit)?
            .into_iter()
            .map(|c| wit::Change {
                version: c.version,
                key: c.key,
                value: c.value,
            })
            .collect())
    }
}

export!(Adapter);
