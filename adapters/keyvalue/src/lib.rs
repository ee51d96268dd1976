//! kvstash's storage over a plain `wasi:keyvalue@0.2.0-draft2` store, so
//! kvstash's semantics run on a host's plain key/value store (Spin's SQLite
//! default; what holds on which host: `docs/backends.md`).
//!
//! A plain key/value store has single-key operations and a single-key
//! compare-and-swap; kvstash needs ordered scans, versions, a change feed and
//! an atomic multi-key conditional commit. [`KvStorage`] builds them (the
//! design and what holds on which host: `docs/design.md`, "Storage over
//! wasi:keyvalue"):
//!
//! - **One head record** holds the store's version and, while a commit is
//!   being applied, that commit's *intent*. A commit is decided by one CAS
//!   on the head; everything else is rolled forward, by the committer or by
//!   any reader or writer that finds the intent there.
//! - **Records** are `(version, value | tombstone)`, each written by a
//!   version-guarded CAS, so a late helper never overwrites a newer value.
//! - **The change feed** is one log record per commit, at a key named by its
//!   version; the oldest are deleted past the retention.
//!
//! # Layout
//! - `kv` — the [`Kv`] trait: what the adapter needs of a key/value store
//! - `store` — [`KvStorage`]: the storage semantics over a [`Kv`]
//! - `storage` — the engine's storage types and trait (`guest/src/engine/storage.rs`)
//! - `codec` — the byte layout of head, records, intents and keys
//! - `component` — the Wasm component: exports `kvstash:store/storage`,
//!   imports `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2` (wasm32 only)

mod codec;
// The engine's storage types and trait, from the one source file, so this
// adapter speaks exactly what the engine and the other backends speak.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // generated glue only
mod component;
mod kv;
#[path = "../../../guest/src/engine/storage.rs"]
#[allow(dead_code)] // MemStorage and helpers this adapter does not use
mod storage;
mod store;

pub use kv::{Kv, KvError};
pub use store::{Change, Check, Entry, KvStorage, Limits, MAX_SCAN, StorageError, Write};

#[cfg(test)]
mod tests;
