//! Other people's Wasm apps, with kvstash behind their key/value imports.
//!
//! An app is a component (or a WASI preview1 module, adapted as Spin adapts
//! it) that imports any of the interfaces the kvstash component exports:
//! `wasi:keyvalue` at `0.2.0-draft` or `0.2.0-draft2`, Spin's
//! `fermyon:spin/key-value`, or the rich `kvstash:store/store`. [`App::load`]
//! plugs kvstash into it (see `compose`) and links what is left: WASI 0.2
//! (stdio, clocks, random always; a filesystem and the network only when
//! [`AppOptions`] grants them), `wasi:http` types, and kvstash's storage,
//! served by this crate's backends over the configured store.
//!
//! # Layout
//! - `compose` — app bytes to one component: preview1 adapted, kvstash plugged in
//! - `command` — [`App::run_command`]: a `wasi:cli/run` command, its exit code
//! - `http` — [`App::serve`]: a `wasi:http/incoming-handler`, one instance per request

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime_wasi::{FsPerms, WasiCtx};

use crate::runtime::{self, KvCtx, Shared};
use crate::{Registry, StoreOptions};

mod command;
mod compose;
mod http;

pub use compose::{compose, kvstash_with_storage};

/// Why an app could not be loaded or run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AppError {
    /// The bytes are neither a Wasm component nor a core module.
    #[error("not a WebAssembly component or module")]
    NotWasm,
    /// A preview1 module could not be made a component.
    #[error("adapting the WASI preview1 module into a component: {0}")]
    Adapt(String),
    /// The app and kvstash (or the storage adapter) could not be composed.
    #[error("composing the app with kvstash: {0}")]
    Compose(String),
    /// `compose` was asked to plug kvstash into an app that imports none of
    /// its interfaces.
    #[error(
        "the app imports none of the interfaces kvstash exports (wasi:keyvalue/* at \
         0.2.0-draft or 0.2.0-draft2, fermyon:spin/key-value, kvstash:store/store)"
    )]
    NothingToPlug,
    /// An import nothing here provides; the app did not start.
    #[error(
        "the app imports `{name}`, which kvstash does not provide \
         (it provides WASI 0.2, wasi:http, wasi:keyvalue 0.2.0-draft and -draft2, \
         fermyon:spin/key-value and kvstash:store/store)"
    )]
    MissingImport { name: String, detail: String },
    /// The app imports an interface that only kvstash may use.
    #[error(
        "the app imports `{0}`, the storage interface kvstash itself runs on; apps use \
         kvstash through its exported interfaces. (A `kvstash compose` output imports it \
         for the kvstash inside: run that with --trust-storage)"
    )]
    Forbidden(String),
    /// The component exports neither `wasi:cli/run` nor `wasi:http/incoming-handler`.
    #[error("the app exports neither wasi:cli/run (a command) nor wasi:http/incoming-handler")]
    NoEntryPoint,
    /// The app trapped (a bug in the app, or a limit it hit).
    #[error("the app trapped: {0}")]
    Trap(String),
    /// The configuration, a directory, a socket, or the runtime failed.
    #[error("{0}")]
    Host(String),
}

/// What an app may use, and where its store is.
#[derive(Clone, Debug)]
pub struct AppOptions {
    /// The store configuration (JSON), as [`crate::Store::open`] takes it.
    pub config: String,
    /// Store names (`wasi:keyvalue` identifiers, Spin labels) and the bucket
    /// each opens; added to the configuration's `stores` map.
    pub stores: Vec<(String, String)>,
    /// The app's arguments, after its name.
    pub args: Vec<String>,
    /// Environment variables the app sees (nothing else is passed through).
    pub env: Vec<(String, String)>,
    /// Host directories the app may use, each at a guest path.
    pub dirs: Vec<(PathBuf, String)>,
    /// Let the app open sockets and resolve names (denied by default).
    pub network: bool,
    /// Where an HTTP app listens.
    pub listen: SocketAddr,
    /// Largest linear memory of one instance, in bytes.
    pub memory_limit: usize,
    /// The backends `type` can name.
    pub registry: Registry,
    /// Where compiled components are cached.
    pub cache_dir: Option<PathBuf>,
    /// Most HTTP requests handled at once.
    pub max_instances: usize,
    /// Run an app that imports kvstash's storage interface itself (a
    /// `kvstash compose` output does, for the kvstash inside it). It can then
    /// read and write the configured store directly, around kvstash's
    /// `read_only`, `prefix` and `stores` rules (never another store).
    pub trust_storage: bool,
    /// Longest an HTTP request may run (its handler is then stopped and the
    /// client gets 503).
    pub request_timeout: Duration,
}

impl AppOptions {
    /// Defaults for a store configuration: no arguments, no environment, no
    /// directories, no network, `127.0.0.1:3000` (as Spin).
    pub fn new(config: impl Into<String>) -> Self {
        let store = StoreOptions::default();
        Self {
            config: config.into(),
            stores: Vec::new(),
            args: Vec::new(),
            env: Vec::new(),
            dirs: Vec::new(),
            network: false,
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            memory_limit: store.memory_limit,
            registry: store.registry,
            cache_dir: store.cache_dir,
            max_instances: 64,
            trust_storage: false,
            request_timeout: Duration::from_secs(60),
        }
    }
}

/// What an app is, by what it exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppKind {
    /// Exports `wasi:cli/run`.
    Command,
    /// Exports `wasi:http/incoming-handler`.
    Http,
}

/// An app composed with kvstash, linked and ready to instantiate.
pub struct App {
    name: String,
    kind: AppKind,
    pre: wasmtime::component::InstancePre<KvCtx>,
    shared: Arc<Shared>,
    options: AppOptions,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl App {
    /// Composes `wasm` with kvstash, compiles it (cached) and links every
    /// import. Nothing of the app runs yet; a missing import is reported here.
    pub async fn load(name: &str, wasm: &[u8], options: AppOptions) -> Result<App, AppError> {
        let host = |e: String| AppError::Host(e);
        let config = with_store_names(&options.config, &options.stores)?;
        for (dir, _) in &options.dirs {
            if !dir.is_dir() {
                return Err(host(format!("--dir {}: not a directory", dir.display())));
            }
        }
        let shared = Arc::new(Shared::new(config, options.registry.clone()));
        check_store(&shared).await?;
        let engine = &app_engine().map_err(|e| host(format!("starting wasmtime: {e:#}")))?;
        // Checked on every load, cached or not.
        let app = compose::to_component(wasm)?;
        if !options.trust_storage {
            compose::check_app_imports(&app)?;
        }
        // Composing costs more than loading the compiled result: a cached
        // app (keyed by its bytes and kvstash's) skips both.
        let mut composing = None;
        let component = runtime::load_cached_from(
            engine,
            &[wasm, crate::GUEST_WASM],
            "app",
            options.cache_dir.as_deref(),
            || match compose::plug(&app, crate::GUEST_WASM, "kvstash:store") {
                Ok(composed) => Ok(composed.unwrap_or_else(|| app.clone())),
                Err(e) => {
                    composing = Some(e);
                    Err(wasmtime::Error::msg("composing failed"))
                }
            },
        );
        if let Some(e) = composing {
            return Err(e);
        }
        let component = component.map_err(|e| host(format!("compiling the app: {e:#}")))?;
        let kind = kind_of(engine, &component)?;
        let linker = linker(engine).map_err(|e| host(format!("{e:#}")))?;
        let pre = linker.instantiate_pre(&component).map_err(missing_import)?;
        Ok(App {
            name: name.to_string(),
            kind,
            pre,
            shared,
            options,
        })
    }

    /// Whether this is a command or an HTTP app.
    pub fn kind(&self) -> AppKind {
        self.kind
    }

    /// A store for one instance: WASI as the options grant it, and yielding
    /// to the executor every epoch (so a looping app holds no thread and can
    /// be stopped).
    fn store(&self) -> Result<wasmtime::Store<KvCtx>, AppError> {
        let mut store = self.context()?.into_store(self.pre.engine());
        store.epoch_deadline_async_yield_and_update(1);
        Ok(store)
    }

    /// Host state for one instance: WASI as the options grant it.
    fn context(&self) -> Result<KvCtx, AppError> {
        let mut wasi = WasiCtx::builder();
        wasi.inherit_stdio()
            .arg(&self.name)
            .args(&self.options.args)
            .envs(&self.options.env);
        for (host, guest) in &self.options.dirs {
            wasi.preopened_dir(host, guest, FsPerms::ReadWrite)
                .map_err(|e| {
                    AppError::Host(format!("opening directory {}: {e:#}", host.display()))
                })?;
        }
        if self.options.network {
            wasi.inherit_network()
                .allow_tcp(true)
                .allow_udp(true)
                .allow_ip_name_lookup(true);
        }
        Ok(KvCtx::new(
            wasi.build(),
            self.shared.clone(),
            self.options.memory_limit,
        ))
    }
}

/// How often a running app yields to the executor.
const EPOCH: Duration = Duration::from_millis(10);

/// The engine apps run on: like the store's, plus epoch interruption (its
/// own engine, so the embedded store's hot path pays nothing for it). A
/// thread advances the epoch every [`EPOCH`].
fn app_engine() -> wasmtime::Result<wasmtime::Engine> {
    static ENGINE: OnceLock<Result<wasmtime::Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            let mut config = wasmtime::Config::new();
            config.epoch_interruption(true);
            let engine = wasmtime::Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let weak = engine.weak();
            std::thread::Builder::new()
                .name("kvstash-epoch".into())
                .spawn(move || {
                    while let Some(engine) = weak.upgrade() {
                        engine.increment_epoch();
                        drop(engine);
                        std::thread::sleep(EPOCH);
                    }
                })
                .map_err(|e| format!("starting the epoch thread: {e}"))?;
            Ok(engine)
        })
        .clone()
        .map_err(wasmtime::Error::msg)
}

/// Every import an app may have besides what kvstash fills.
fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<KvCtx>> {
    let mut linker = Linker::<KvCtx>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    crate::bindings::Kvstash::add_to_linker::<_, wasmtime::component::HasSelf<_>>(
        &mut linker,
        |ctx| ctx,
    )?;
    Ok(linker)
}

/// wasmtime names the first import it cannot satisfy between backquotes.
fn missing_import(e: wasmtime::Error) -> AppError {
    let detail = format!("{e:#}");
    let name = detail
        .split('`')
        .nth(1)
        .unwrap_or(detail.as_str())
        .to_string();
    AppError::MissingImport { name, detail }
}

fn kind_of(engine: &wasmtime::Engine, component: &Component) -> Result<AppKind, AppError> {
    let ty = component.component_type();
    let mut kind = None;
    for (name, _) in ty.exports(engine) {
        if name.starts_with("wasi:http/incoming-handler@0.2.") {
            kind = Some(AppKind::Http);
        } else if name.starts_with("wasi:cli/run@0.2.") && kind.is_none() {
            kind = Some(AppKind::Command);
        }
    }
    kind.ok_or(AppError::NoEntryPoint)
}

/// Opens the store's backend before the app runs, so a bad configuration
/// is a clear error now rather than an error inside the app later. (The
/// guest validates its layer options itself; here only their shape.)
async fn check_store(shared: &Shared) -> Result<(), AppError> {
    let invalid = |why: String| AppError::Host(format!("the store configuration {why}"));
    let value: serde_json::Value =
        serde_json::from_str(shared.config()).map_err(|e| invalid(format!("is not JSON: {e}")))?;
    let fields = value
        .as_object()
        .ok_or_else(|| invalid("is not a JSON object".into()))?;
    if let Some(stores) = fields.get("stores") {
        let stores = stores
            .as_object()
            .ok_or_else(|| invalid("has a `stores` that is not an object".into()))?;
        for (name, bucket) in stores {
            let bucket = bucket.as_str().unwrap_or_default();
            if bucket.is_empty() || bucket.len() > 256 || bucket.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "maps store `{name}` to `{bucket}`, which is not a bucket name \
                     (1-256 bytes, no control characters)"
                )));
            }
        }
    }
    shared
        .open_leaves()
        .await
        .map_err(|e| invalid(format!("does not open: {e}")))
}

/// `config` with `stores` entries added to its `stores` map.
fn with_store_names(config: &str, stores: &[(String, String)]) -> Result<String, AppError> {
    if stores.is_empty() {
        return Ok(config.to_string());
    }
    let invalid = |why: &str| AppError::Host(format!("the store configuration {why}"));
    let mut value: serde_json::Value =
        serde_json::from_str(config).map_err(|e| invalid(&format!("is not JSON: {e}")))?;
    let fields = value
        .as_object_mut()
        .ok_or_else(|| invalid("is not a JSON object"))?;
    let map = fields
        .entry("stores")
        .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()))
        .as_object_mut()
        .ok_or_else(|| invalid("has a `stores` that is not an object"))?;
    for (name, bucket) in stores {
        map.insert(name.clone(), serde_json::Value::String(bucket.clone()));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_names_are_added_to_the_configuration() {
        let stores = vec![("default".to_string(), "main".to_string())];
        let out = with_store_names(r#"{"type":"memory","stores":{"a":"b"}}"#, &stores).unwrap();
        let out: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"type":"memory","stores":{"a":"b","default":"main"}})
        );
        assert!(with_store_names("[]", &stores).is_err());
        assert_eq!(with_store_names("[]", &[]).unwrap(), "[]");
    }

    #[test]
    fn only_wasm_is_accepted() {
        assert!(matches!(
            compose::to_component(b"hello"),
            Err(AppError::NotWasm)
        ));
        assert!(matches!(compose::to_component(b""), Err(AppError::NotWasm)));
    }
}
