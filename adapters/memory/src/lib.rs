//! `kvstash:store/storage` held in the component's own linear memory: the
//! engine's `MemStorage` (the same source file, `guest/src/engine/storage.rs`,
//! which the engine's tests use as the reference storage), exported. Plugged into kvstash
//! (`kvstash compose --storage memory`), it leaves an app importing nothing
//! but WASI, so it runs on any component host (stock `wasmtime run`, jco)
//! with kvstash's full semantics; nothing outlives the instance.
//!
//! Its configuration is `{"type":"memory","retention":10000}`.

#[path = "../../../guest/src/engine/storage.rs"]
#[allow(dead_code)] // the engine's helpers this adapter does not need
mod storage;

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // generated glue only
mod component {
    wit_bindgen::generate!({
        inline: "
            package kvstash:memory-adapter;
            world adapter {
                export kvstash:store/storage@0.1.0;
            }
        ",
        path: "../../wit",
        world: "kvstash:memory-adapter/adapter",
        generate_all,
    });

    use crate::storage::{self as core, MemStorage, Storage, StorageError};
    use exports::kvstash::store::storage as wit;

    struct Adapter;

    /// One store per component instance, however often it is opened.
    struct Backend(std::rc::Rc<MemStorage>);

    thread_local! {
        static STORE: std::rc::Rc<MemStorage> = std::rc::Rc::new(MemStorage::with_retention(10_000));
    }

    fn to_wit(e: StorageError) -> wit::StorageError {
        match e {
            StorageError::Conflict { index, current } => {
                wit::StorageError::Conflict(wit::Conflict { index, current })
            }
            StorageError::Compacted { oldest } => wit::StorageError::Compacted(oldest),
            StorageError::ReadOnly => wit::StorageError::ReadOnly,
            StorageError::Invalid(why) => wit::StorageError::Invalid(why),
            StorageError::Unavailable(why) => wit::StorageError::Unavailable(why),
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
            r#"{"type":"memory"}"#.to_string()
        }
    }

    impl wit::GuestBackend for Backend {
        fn open(config: String) -> Result<wit::Backend, wit::StorageError> {
            if !config.contains(r#""type":"memory""#) {
                return Err(wit::StorageError::Invalid(format!(
                    "this adapter opens {{\"type\":\"memory\"}}, not {config}"
                )));
            }
            Ok(wit::Backend::new(Backend(STORE.with(|s| s.clone()))))
        }

        fn get(&self, key: Vec<u8>) -> Result<Option<wit::Entry>, wit::StorageError> {
            Ok(self.0.get(&key).map_err(to_wit)?.map(entry))
        }

        fn get_many(
            &self,
            keys: Vec<Vec<u8>>,
        ) -> Result<Vec<Option<wit::Entry>>, wit::StorageError> {
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
}
