//! kvstash: a key/value and JSON-document store that ships as a WebAssembly
//! component. The store logic runs inside the component; this crate supplies
//! its storage (memory, or a crash-safe redb file) and the Rust API.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kvstash::Error> {
//! let store = kvstash::Store::open(r#"{"type":"file","path":"data/kvstash.redb"}"#).await?;
//! let aliases = store.bucket("aliases");
//! aliases.set_json("environment_sensor_1", &[1, 5, 42]).await?;
//! let id: Option<Vec<u32>> = aliases.get_json("environment_sensor_1").await?;
//! assert_eq!(id, Some(vec![1, 5, 42]));
//! # Ok(()) }
//! ```
//!
//! # Layout
//! - `api` — [`Store`], [`Bucket`] and their types: the async embedding API
//! - `blocking` — [`BlockingStore`]: the same API for non-async callers
//! - `backend` — the [`Backend`] trait, the `memory` and `file` backends, the [`Registry`]
//! - `runtime` — wasmtime engine, precompiled-component cache, instance pool
//! - `bindings` — generated host bindings (private)
//! - `run` — [`run::App`]: other people's Wasm apps with kvstash as their store; `compose`
//! - `serve` — `kvstash serve`: the store over HTTP/JSON (`docs/http.md`)
//! - `bench` — the benchmark workload (`kvstash bench`, `kvstash-bench`)
//! - `cli` — the `kvstash` command line

mod api;
pub mod backend;
pub mod bench;
mod bindings;
mod blocking;
pub mod cli;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
#[cfg(feature = "apps")]
pub mod run;
mod runtime;
#[cfg(feature = "serve")]
pub mod serve;

pub use api::{
    Bucket, BucketSummary, CacheStats, Check, Entry, Error, Event, EventKind, Item, Lease,
    ListOptions, ListPage, LockHolder, MigratePage, Store, StoreStats, Transaction, Value,
    VerifyPage, WatchOptions, WriteOptions,
};
pub use backend::{Backend, BackendError, Registry};
pub use blocking::{BlockingBucket, BlockingStore, BlockingWatch};
#[cfg(feature = "compiler")]
pub use runtime::GUEST_WASM;
#[cfg(feature = "apps")]
pub use runtime::{KEYVALUE_ADAPTER_WASM, MEMORY_ADAPTER_WASM};
pub use runtime::{Loaded, StoreOptions, component_interfaces, component_source};

#[doc = include_str!("../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
