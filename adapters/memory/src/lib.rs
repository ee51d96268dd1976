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

    use std::rc::Rc;

    use crate::storage::MemStorage;

    thread_local! {
        /// One store per component instance, however often it is opened.
        static STORE: Rc<MemStorage> = Rc::new(MemStorage::with_retention(10_000));
    }

    const CONFIG: &str = r#"{"type":"memory"}"#;

    fn open_backend(config: &str) -> Result<Rc<dyn Storage>, StorageError> {
        if !config.contains(r#""type":"memory""#) {
            return Err(StorageError::Invalid(format!(
                "this adapter opens {{\"type\":\"memory\"}}, not {config}"
            )));
        }
        Ok(STORE.with(|s| s.clone()))
    }

    include!("../../storage_export.rs");
}
