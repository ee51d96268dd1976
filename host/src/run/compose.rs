//! Turning an app's bytes into one component with kvstash inside.
//!
//! 1. A WASI preview1 core module (what Spin's templates build for
//!    `wasm32-wasip1`) becomes a component with wasmtime 48's own preview1
//!    adapter, as Spin does at load time: the command adapter if the module
//!    exports `_start`, else the reactor adapter.
//! 2. kvstash is *plugged* into the app (wac-graph, as Spin composes its
//!    component dependencies): every app import that kvstash exports, by name
//!    or a semver-compatible name (`-draft` and `-draft2` never match each
//!    other), is wired to one kvstash instance, so the app's `wasi:keyvalue`,
//!    Spin and rich-API handles all reach the same engine.
//! 3. Optionally a storage adapter is plugged into the result, filling
//!    kvstash's `kvstash:store/storage` import.
//!
//! Whatever is not filled stays an import of the result: WASI for both, and
//! `kvstash:store/storage` when no adapter is given.

use wac_graph::types::{Package, Types};
use wac_graph::{CompositionGraph, EncodeOptions, PlugError};

use super::AppError;

const CORE_MAGIC: [u8; 8] = *b"\0asm\x01\0\0\0";
const COMPONENT_MAGIC: [u8; 8] = *b"\0asm\x0d\0\x01\0";

/// The app as a component: as it is, or adapted from a preview1 module.
pub fn to_component(app: &[u8]) -> Result<Vec<u8>, AppError> {
    match app.get(..8) {
        Some(head) if head == COMPONENT_MAGIC => Ok(app.to_vec()),
        Some(head) if head == CORE_MAGIC => adapt_preview1(app),
        _ => Err(AppError::NotWasm),
    }
}

fn adapt_preview1(module: &[u8]) -> Result<Vec<u8>, AppError> {
    use wasi_preview1_component_adapter_provider as adapters;
    let adapter: &[u8] = if exports_start(module)? {
        adapters::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER
    } else {
        adapters::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER
    };
    let adapt = |e: anyhow::Error| AppError::Adapt(format!("{e:#}"));
    wit_component::ComponentEncoder::default()
        .module(module)
        .map_err(adapt)?
        .adapter("wasi_snapshot_preview1", adapter)
        .map_err(adapt)?
        .validate(true)
        .encode()
        .map_err(adapt)
}

fn exports_start(module: &[u8]) -> Result<bool, AppError> {
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| AppError::Adapt(format!("reading the module: {e}")))?;
        if let wasmparser::Payload::ExportSection(exports) = payload {
            for export in exports {
                let export =
                    export.map_err(|e| AppError::Adapt(format!("reading the module: {e}")))?;
                if export.name == "_start" {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// Interfaces that are the host's to kvstash, never an app's: an app that
/// imports the storage interface itself would reach every backend the host
/// can open (any file path), around kvstash and its `read_only`, `prefix`
/// and `stores` rules.
const HOST_ONLY: &[&str] = &["kvstash:store/storage"];

/// Refuses an app (a component) that imports a host-only interface.
pub fn check_app_imports(app: &[u8]) -> Result<(), AppError> {
    let mut types = Types::new();
    let package = Package::from_bytes("app:app", None, app.to_vec(), &mut types)
        .map_err(|e| AppError::Compose(format!("{e:#}")))?;
    for name in types[package.ty()].imports.keys() {
        let interface = name.split('@').next().unwrap_or(name);
        if HOST_ONLY.contains(&interface) {
            return Err(AppError::Forbidden(name.clone()));
        }
    }
    Ok(())
}

/// Plugs `plug`'s exports into `socket`'s imports. `Ok(None)`: `socket`
/// imports nothing `plug` exports.
pub fn plug(socket: &[u8], plug: &[u8], plug_name: &str) -> Result<Option<Vec<u8>>, AppError> {
    let compose = |e: anyhow::Error| AppError::Compose(format!("{e:#}"));
    let mut graph = CompositionGraph::new();
    let socket = Package::from_bytes("app:app", None, socket.to_vec(), graph.types_mut())
        .map_err(compose)?;
    let socket = graph
        .register_package(socket)
        .map_err(|e| compose(e.into()))?;
    let plug =
        Package::from_bytes(plug_name, None, plug.to_vec(), graph.types_mut()).map_err(compose)?;
    let plug = graph
        .register_package(plug)
        .map_err(|e| compose(e.into()))?;
    match wac_graph::plug(&mut graph, vec![plug], socket) {
        Ok(()) => {}
        Err(PlugError::NoPlugHappened) => return Ok(None),
        Err(e) => return Err(compose(e.into())),
    }
    graph
        .encode(EncodeOptions::default())
        .map(Some)
        .map_err(|e| compose(e.into()))
}

/// The kvstash component with `storage` (an adapter exporting
/// `kvstash:store/storage`) plugged into its storage import: one component
/// that imports what the adapter imports (for Spin: `wasi:keyvalue` draft2).
pub fn kvstash_with_storage(storage: &[u8]) -> Result<Vec<u8>, AppError> {
    plug(crate::GUEST_WASM, storage, "kvstash:storage-adapter")?.ok_or_else(|| {
        AppError::Compose("the storage adapter exports no `kvstash:store/storage@0.1.0`".into())
    })
}

/// The app with kvstash plugged in, and `storage` (an adapter exporting
/// `kvstash:store/storage`) plugged into that if given.
///
/// An app that imports none of kvstash's interfaces is `NothingToPlug`.
pub fn compose(app: &[u8], storage: Option<&[u8]>) -> Result<Vec<u8>, AppError> {
    let app = to_component(app)?;
    check_app_imports(&app)?;
    let with_kvstash =
        plug(&app, crate::GUEST_WASM, "kvstash:store")?.ok_or(AppError::NothingToPlug)?;
    match storage {
        None => Ok(with_kvstash),
        Some(adapter) => {
            plug(&with_kvstash, adapter, "kvstash:storage-adapter")?.ok_or_else(|| {
                AppError::Compose(
                    "the storage adapter exports no `kvstash:store/storage@0.1.0`".into(),
                )
            })
        }
    }
}
