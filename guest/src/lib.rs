//! The kvstash component: all store logic, over an imported byte-shaped storage.
//!
//! # Layout
//! - `engine` — the store logic, generic over [`engine::Storage`]; natively tested
//! - `config` — the store configuration (JSON) and the layer tree it describes
//! - `wit_storage` — [`engine::Storage`] over the imported `kvstash:store/storage`
//! - `exports` — the exported interfaces and the one error mapping per error type

#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)] // generated glue only; see bindings.rs
mod bindings;
pub mod config;
pub mod engine;
#[cfg(target_arch = "wasm32")]
mod exports;
#[cfg(target_arch = "wasm32")]
mod wit_storage;
