//! Loading and running the guest component.
//!
//! - One wasmtime [`Engine`] and one pre-linked component per process
//!   ([`Runtime`]). A device build embeds the component precompiled for its
//!   target (`just cross`, `cfg(kvstash_precompiled)`) and never compiles.
//!   Otherwise the compiled component is cached on disk keyed by the
//!   component's hash and the engine's compatibility hash, so only the first
//!   start on a machine compiles (~35 ms release, seconds in a debug build).
//! - A wasmtime `Store` runs one call at a time, so each [`Pool`] keeps idle
//!   instances and makes new ones (~15 µs) up to a limit. That is sound
//!   because instances share no state but the backend, and every write goes
//!   through the backend's conditional commit.
//! - An instance whose call trapped, or whose call was cancelled mid-way, is
//!   discarded; the caller gets [`Error::Trap`] and the next call gets a fresh
//!   instance.

use std::collections::HashMap;
#[cfg(feature = "compiler")]
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(feature = "compiler")]
use sha2::{Digest, Sha256};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::component::{Component, Linker, Resource, ResourceAny, ResourceTable};
use wasmtime::{Engine, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
#[cfg(feature = "apps")]
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::api::Error;
use crate::backend::{self, Backend, BackendError, Registry};
use crate::bindings::exports::kvstash::store::types;
use crate::bindings::kvstash::store::storage;
use crate::bindings::{Kvstash, KvstashPre};

/// The guest component this build embeds (built by `build.rs`).
#[cfg(feature = "compiler")]
pub const GUEST_WASM: &[u8] = include_bytes!(env!("KVSTASH_GUEST_WASM"));

/// [`GUEST_WASM`]'s SHA-256 (hex), computed at build time.
#[cfg(feature = "compiler")]
const GUEST_SHA256: &str = env!("KVSTASH_GUEST_SHA256");

/// The guest compiled for this build's target at build time (`just cross`),
/// run where it lies ([`deserialize_embedded`]). Page-aligned, like the
/// sections inside it; native code goes in the binary's `.text`, which the
/// loader maps executable, so loading it copies nothing and maps nothing:
/// the pages a call touches fault in from the page cache.
#[cfg(kvstash_precompiled)]
// A named section is `unsafe` because two items in one section with
// clashing flags would break the link; this one is kvstash's alone.
#[allow(unsafe_code)]
#[cfg_attr(
    any(target_arch = "x86_64", target_arch = "aarch64"),
    unsafe(link_section = ".text.kvstash_precompiled")
)]
static PRECOMPILED: PageAligned<[u8; PRECOMPILED_LEN]> =
    PageAligned(*include_bytes!(env!("KVSTASH_PRECOMPILED_CWASM")));

#[cfg(kvstash_precompiled)]
const PRECOMPILED_LEN: usize = include_bytes!(env!("KVSTASH_PRECOMPILED_CWASM")).len();

/// 4 KiB, the alignment of the sections inside a compiled component.
#[cfg(kvstash_precompiled)]
#[repr(C, align(4096))]
struct PageAligned<T>(T);

/// The storage adapter this build embeds (`adapters/keyvalue`): exports
/// `kvstash:store/storage` over an imported `wasi:keyvalue@0.2.0-draft2`.
#[cfg(feature = "apps")]
pub const KEYVALUE_ADAPTER_WASM: &[u8] = include_bytes!(env!("KVSTASH_ADAPTER_WASM"));

/// The in-memory storage adapter this build embeds (`adapters/memory`):
/// exports `kvstash:store/storage`, imports nothing, keeps nothing.
#[cfg(feature = "apps")]
pub const MEMORY_ADAPTER_WASM: &[u8] = include_bytes!(env!("KVSTASH_MEMORY_ADAPTER_WASM"));

/// How a [`crate::Store`] runs its component.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Most instances serving calls at once; further callers wait.
    pub max_instances: usize,
    /// Most linear memory one instance may grow to, in bytes. A call that
    /// needs more traps and gets [`Error::Trap`]; the store lives on.
    pub memory_limit: usize,
    /// Where the compiled component is cached; `None` compiles every start.
    pub cache_dir: Option<PathBuf>,
    /// The backends `type` can name.
    pub registry: Registry,
    /// How often a background task removes expired keys (`None`: never;
    /// expired keys are invisible either way, the sweep reclaims space).
    pub sweep_interval: Option<std::time::Duration>,
    /// Most time one call may spend running guest code (`None`: no limit).
    /// Waits for the backend do not count. It is counted in ticks of
    /// [`TICK`] (10 ms), so a call stops within a tick past it; the call then
    /// gets [`Error::Trap`], its instance is discarded and the store keeps
    /// serving. Long enough for any legitimate call: the heaviest (a
    /// transaction of the largest batch) takes milliseconds.
    pub call_time_limit: Option<std::time::Duration>,
    /// A kvstash guest component to run instead of the one this build
    /// embeds: one built with other features (the tests' looping guest), or
    /// a newer build. It must have the same world; it is compiled once per
    /// process (and cached like the embedded one).
    #[cfg(feature = "compiler")]
    pub guest: Option<Arc<[u8]>>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_instances: 16,
            memory_limit: 256 * 1024 * 1024,
            cache_dir: default_cache_dir(),
            registry: Registry::default(),
            sweep_interval: Some(std::time::Duration::from_secs(60)),
            call_time_limit: Some(std::time::Duration::from_secs(10)),
            #[cfg(feature = "compiler")]
            guest: None,
        }
    }
}

/// `$KVSTASH_CACHE_DIR`, else `$XDG_CACHE_HOME/kvstash`, else `~/.cache/kvstash`.
fn default_cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("KVSTASH_CACHE_DIR")
        .or_else(|| var("XDG_CACHE_HOME").map(|d| d.join("kvstash")))
        .or_else(|| var("HOME").map(|d| d.join(".cache").join("kvstash")))
}

/// The per-process engine and pre-linked component.
pub(crate) struct Runtime {
    pub(crate) engine: Engine,
    component: Component,
    pre: KvstashPre<KvCtx>,
    loaded: Loaded,
}

/// Where the process's compiled guest came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Loaded {
    /// Precompiled at build time and embedded in the binary.
    Embedded,
    /// From the on-disk cache of an earlier start.
    Cache,
    /// Compiled by this process.
    Compiled,
}

impl Loaded {
    pub fn as_str(self) -> &'static str {
        match self {
            Loaded::Embedded => "embedded",
            Loaded::Cache => "cache",
            Loaded::Compiled => "compiled",
        }
    }
}

/// The engine settings every kvstash engine uses, here and in
/// `kvstash precompile`: an artifact is valid only for the same settings.
pub(crate) fn engine_config() -> wasmtime::Config {
    let mut config = wasmtime::Config::new();
    // `.eh_frame` for the compiled guest only helps native profilers and
    // debuggers walk through Wasm frames (wasmtime's own backtraces and trap
    // handling do not use it); without it the artifact is 53 KiB smaller and
    // loads ~8% faster (no unwind-table registration).
    config.native_unwind_info(false);
    // Instantiating copies the guest's 44 KiB of data segments instead of
    // writing them to a memfd and mapping that copy-on-write: as fast for
    // one instance (a one-shot CLI makes one) and four syscalls fewer.
    config.memory_init_cow(false);
    // Every call's guest time is bounded (`StoreOptions::call_time_limit`):
    // compiled code checks the epoch at function entries and loop heads.
    config.epoch_interruption(true);
    config
}

/// How often the store engine's epoch advances while a call runs: the unit
/// of [`StoreOptions::call_time_limit`], and how often a long call yields
/// to the executor.
pub const TICK: std::time::Duration = std::time::Duration::from_millis(10);

/// Calls running on the store engine. The ticker thread advances the
/// epoch only while there is one, and sleeps (no wakeups) otherwise.
static RUNNING: AtomicUsize = AtomicUsize::new(0);

/// The ticker thread, unparked when a call starts on an idle process.
static TICKER: OnceLock<std::thread::Thread> = OnceLock::new();

/// A call in progress, for the ticker; see [`RUNNING`].
struct Running;

impl Running {
    fn start() -> Self {
        if RUNNING.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(ticker) = TICKER.get()
        {
            ticker.unpark();
        }
        Running
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The process's store engine (every guest component runs on it), with
/// its ticker thread.
fn store_engine() -> Result<Engine, Error> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    ENGINE
        .get_or_init(|| {
            #[allow(unused_mut, reason = "changed only where the component runs in place")]
            let mut config = engine_config();
            #[cfg(all(kvstash_precompiled, not(feature = "compiler")))]
            config.with_custom_code_memory(Some(Arc::new(InPlace)));
            let engine = Engine::new(&config).map_err(|e| format!("{e:#}"))?;
            let ticking = engine.clone();
            let ticker = std::thread::Builder::new()
                .name("kvstash-ticker".into())
                .spawn(move || {
                    loop {
                        // A start after this load unparks; one before it
                        // is seen by it: no tick is missed.
                        while RUNNING.load(Ordering::Acquire) == 0 {
                            std::thread::park();
                        }
                        std::thread::sleep(TICK);
                        ticking.increment_epoch();
                    }
                })
                .map_err(|e| format!("starting the ticker thread: {e}"))?;
            let _ = TICKER.set(ticker.thread().clone());
            Ok(engine)
        })
        .clone()
        .map_err(Error::Runtime)
}

static RUNTIME: OnceLock<Result<Arc<Runtime>, String>> = OnceLock::new();

impl Runtime {
    /// The process's runtime, loaded on first use. The first caller's cache
    /// directory is the one used.
    pub(crate) fn get(cache_dir: Option<&Path>) -> Result<Arc<Runtime>, Error> {
        RUNTIME
            .get_or_init(|| {
                let engine = store_engine().map_err(|e| e.to_string())?;
                load_component(&engine, cache_dir)
                    .and_then(|(component, loaded)| Runtime::link(engine, component, loaded))
                    .map(Arc::new)
                    .map_err(|e| format!("{e:#}"))
            })
            .clone()
            .map_err(Error::Runtime)
    }

    /// The runtime of another guest component ([`StoreOptions::guest`]),
    /// compiled (or taken from the cache) on first use in this process.
    #[cfg(feature = "compiler")]
    pub(crate) fn for_guest(guest: &[u8], cache_dir: Option<&Path>) -> Result<Arc<Runtime>, Error> {
        static OTHERS: Mutex<Vec<(String, Arc<Runtime>)>> = Mutex::new(Vec::new());
        let digest: String = Sha256::digest(guest)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if digest == GUEST_SHA256 {
            return Runtime::get(cache_dir);
        }
        let mut others = OTHERS.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, runtime)) = others.iter().find(|(d, _)| *d == digest) {
            return Ok(runtime.clone());
        }
        let engine = store_engine()?;
        let runtime =
            load_cached_keyed(&engine, &[digest.as_bytes()], "kvstash", cache_dir, || {
                Ok(guest.to_vec())
            })
            .and_then(|(component, loaded)| Runtime::link(engine, component, loaded))
            .map(Arc::new)
            .map_err(|e| Error::Runtime(format!("loading the guest component: {e:#}")))?;
        others.push((digest, runtime.clone()));
        Ok(runtime)
    }

    fn link(engine: Engine, component: Component, loaded: Loaded) -> wasmtime::Result<Runtime> {
        let mut linker = Linker::<KvCtx>::new(&engine);
        add_guest_wasi_to_linker(&mut linker)?;
        Kvstash::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |ctx| ctx)?;
        let pre = KvstashPre::new(linker.instantiate_pre(&component)?)?;
        Ok(Runtime {
            engine,
            component,
            pre,
            loaded,
        })
    }
}

/// The WASI interfaces the guest imports, as `wasm32-wasip2`'s std needs
/// them: clocks (TTL), stdio and its streams, environment and exit. The
/// guest has no filesystem, sockets or randomness, so they are not linked:
/// a one-shot CLI pays for every function a linker defines (about 0.1 ms
/// for the rest of WASI), and the guest is held to what it declares (a
/// guest that imported more would fail to link, loudly, in every test).
fn add_guest_wasi_to_linker(linker: &mut Linker<KvCtx>) -> wasmtime::Result<()> {
    use wasmtime_wasi::cli::{WasiCli, WasiCliView};
    use wasmtime_wasi::clocks::{WasiClocks, WasiClocksView};
    use wasmtime_wasi::p2::bindings::{cli, clocks, io};

    /// The streams and pollables live in the store's resource table.
    struct Io;
    impl wasmtime::component::HasData for Io {
        type Data<'a> = &'a mut ResourceTable;
    }
    let l = linker;
    io::error::add_to_linker::<_, Io>(l, |ctx| &mut ctx.table)?;
    io::poll::add_to_linker::<_, Io>(l, |ctx| &mut ctx.table)?;
    io::streams::add_to_linker::<_, Io>(l, |ctx| &mut ctx.table)?;
    clocks::wall_clock::add_to_linker::<_, WasiClocks>(l, KvCtx::clocks)?;
    clocks::monotonic_clock::add_to_linker::<_, WasiClocks>(l, KvCtx::clocks)?;
    cli::exit::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::environment::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::stdin::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::stdout::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::stderr::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::terminal_input::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::terminal_output::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::terminal_stdin::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::terminal_stdout::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    cli::terminal_stderr::add_to_linker::<_, WasiCli>(l, KvCtx::cli)?;
    Ok(())
}

/// What wasmtime runs a Rust target as: native code where this build's
/// Cranelift has the backend (x86_64, little-endian aarch64), Pulley where
/// wasmtime itself picks it (its build script: targets without a Cranelift
/// backend). `None` for targets this build cannot serve: other native
/// backends (riscv64, s390x) and big-endian ARM.
#[cfg(feature = "compiler")]
fn wasmtime_target(target: &str) -> Option<&str> {
    let arch = target.split('-').next().unwrap_or_default();
    if target.starts_with("pulley") || arch == "x86_64" || arch == "aarch64" {
        return Some(target);
    }
    let little_endian_32 = (arch.starts_with("arm") && !arch.starts_with("armeb"))
        || (arch.starts_with("thumb") && !arch.starts_with("thumbeb"))
        || ["i586", "i686"].contains(&arch);
    little_endian_32.then_some("pulley32")
}

/// The guest compiled for `target` (a Rust target triple, or `pulley32` /
/// `pulley64`), as a build for that target would run it; and the guest's
/// SHA-256. Targets without a Cranelift backend in wasmtime (32-bit ARM,
/// i686, …) run the component on Pulley, wasmtime's interpreter.
#[cfg(feature = "compiler")]
pub(crate) fn precompile(target: &str) -> Result<(Vec<u8>, &'static str), Error> {
    let triple = wasmtime_target(target).ok_or_else(|| {
        Error::Runtime(format!(
            "cannot precompile for `{target}`: this build compiles native code for x86_64 and \
             aarch64 only, and Pulley bytecode for 32-bit ARM and x86 (i686); give one of \
             those, or pulley32 / pulley64"
        ))
    })?;
    let mut config = engine_config();
    config
        .target(triple)
        .map_err(|e| Error::Runtime(format!("target `{target}`: {e:#}")))?;
    let engine =
        Engine::new(&config).map_err(|e| Error::Runtime(format!("target `{target}`: {e:#}")))?;
    let cwasm = engine
        .precompile_component(GUEST_WASM)
        .map_err(|e| Error::Runtime(format!("compiling for `{target}`: {e:#}")))?;
    Ok((cwasm, GUEST_SHA256))
}

/// What the engine runs the component as: `native` code, or `pulley`
/// bytecode (wasmtime's interpreter, on targets without a Cranelift backend).
pub(crate) fn engine_target() -> Result<&'static str, Error> {
    let runtime = Runtime::get(default_cache_dir().as_deref())?;
    Ok(if runtime.engine.is_pulley() {
        "pulley"
    } else {
        "native"
    })
}

/// How this process got its compiled guest (loading it if not yet loaded).
pub fn component_source() -> Result<Loaded, Error> {
    Ok(Runtime::get(default_cache_dir().as_deref())?.loaded)
}

/// The interfaces the embedded component imports and exports, by name
/// (`kvstash:store/storage@0.1.0`, `wasi:keyvalue/store@0.2.0-draft2`, …).
pub fn component_interfaces() -> Result<(Vec<String>, Vec<String>), Error> {
    let runtime = Runtime::get(default_cache_dir().as_deref())?;
    let ty = runtime.component.component_type();
    let imports = ty
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports = ty
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    Ok((imports, exports))
}

/// The guest: embedded precompiled, else from the cache, else compiled.
#[allow(unused_variables, reason = "cache_dir is for builds with a compiler")]
fn load_component(
    engine: &Engine,
    cache_dir: Option<&Path>,
) -> wasmtime::Result<(Component, Loaded)> {
    #[cfg(kvstash_precompiled)]
    match deserialize_embedded(engine) {
        Ok(component) => return Ok((component, Loaded::Embedded)),
        #[cfg(not(feature = "compiler"))]
        Err(e) => {
            return Err(
                e.context("the component precompiled into this build does not suit this machine")
            );
        }
        // A build that can compile falls back to compiling.
        #[cfg(feature = "compiler")]
        Err(_) => {}
    }
    #[cfg(feature = "compiler")]
    {
        load_cached_keyed(
            engine,
            &[GUEST_SHA256.as_bytes()],
            "kvstash",
            cache_dir,
            || Ok(GUEST_WASM.to_vec()),
        )
    }
    #[cfg(not(any(feature = "compiler", kvstash_precompiled)))]
    Err(wasmtime::format_err!(
        "this build has no compiler and no precompiled component; build it with \
         `just cross` (which sets KVSTASH_PRECOMPILED) or with the `compiler` feature"
    ))
}

/// A build without a compiler runs the embedded component in place
/// ([`InPlace`]); one with a compiler copies it, since its engine must also
/// publish code it compiles.
#[cfg(kvstash_precompiled)]
#[allow(unsafe_code)]
fn deserialize_embedded(engine: &Engine) -> wasmtime::Result<Component> {
    // SAFETY (both): the bytes are what `kvstash precompile`
    // (Component::serialize) wrote for this build's guest; build.rs checked
    // the guest's SHA-256 beside it, and wasmtime checks the header and the
    // engine's settings. In place, the memory is an immutable static: it
    // lives as long as the process and nothing writes to it.
    #[cfg(not(feature = "compiler"))]
    unsafe {
        Component::deserialize_raw(engine, std::ptr::NonNull::from(&PRECOMPILED.0[..]))
    }
    #[cfg(feature = "compiler")]
    unsafe {
        Component::deserialize(engine, PRECOMPILED.0)
    }
}

/// wasmtime's code publisher for the embedded component: its code already
/// lies in the binary's executable `.text` (see [`PRECOMPILED`]), so
/// publishing checks that and changes nothing. On Pulley the code is
/// bytecode and never published. Nothing else can be published: a build
/// without a compiler runs no other code.
#[cfg(all(kvstash_precompiled, not(feature = "compiler")))]
struct InPlace;

#[cfg(all(kvstash_precompiled, not(feature = "compiler")))]
impl wasmtime::CustomCodeMemory for InPlace {
    fn required_alignment(&self) -> usize {
        std::mem::align_of::<PageAligned<()>>()
    }

    fn publish_executable(&self, ptr: *const u8, len: usize) -> wasmtime::Result<()> {
        let embedded = PRECOMPILED.0.as_ptr_range();
        let start = ptr as usize;
        let inside = start >= embedded.start as usize
            && start
                .checked_add(len)
                .is_some_and(|end| end <= embedded.end as usize);
        if inside && cfg!(any(target_arch = "x86_64", target_arch = "aarch64")) {
            Ok(())
        } else {
            Err(wasmtime::format_err!(
                "this build runs only its embedded component (code at {ptr:p} is not in it)"
            ))
        }
    }

    fn unpublish_executable(&self, _ptr: *const u8, _len: usize) -> wasmtime::Result<()> {
        Ok(())
    }
}

/// A compiled component that `make` produces from `inputs` (an app and
/// what is plugged into it): from the cache if a valid entry is there, else
/// made, compiled and (best effort) cached as `NAME-HASH.cwasm`. The cache
/// is keyed by the inputs, so a hit skips `make` as well as compiling.
#[cfg(feature = "apps")]
pub(crate) fn load_cached_from(
    engine: &Engine,
    inputs: &[&[u8]],
    name: &str,
    cache_dir: Option<&Path>,
    make: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
) -> wasmtime::Result<Component> {
    let digests: Vec<[u8; 32]> = inputs.iter().map(|i| Sha256::digest(i).into()).collect();
    let digests: Vec<&[u8]> = digests.iter().map(|d| d.as_slice()).collect();
    load_cached_keyed(engine, &digests, name, cache_dir, make).map(|(c, _)| c)
}

/// [`load_cached_from`] with the inputs' digests already computed.
#[cfg(feature = "compiler")]
fn load_cached_keyed(
    engine: &Engine,
    digests: &[&[u8]],
    name: &str,
    cache_dir: Option<&Path>,
    make: impl FnOnce() -> wasmtime::Result<Vec<u8>>,
) -> wasmtime::Result<(Component, Loaded)> {
    let Some(dir) = cache_dir else {
        return Ok((Component::new(engine, make()?)?, Loaded::Compiled));
    };
    let path = dir.join(format!("{name}-{}.cwasm", cache_key(engine, digests)));
    if path.is_file() {
        if let Ok(component) = deserialize_cached(engine, &path) {
            return Ok((component, Loaded::Cache));
        }
        // Damaged or stale: compile afresh and replace it.
        let _ = std::fs::remove_file(&path);
    }
    let component = Component::new(engine, make()?)?;
    if let Ok(bytes) = component.serialize() {
        // Write-then-rename so a concurrent reader never sees half a file;
        // the temporary name is unique even between threads of one process.
        static TMP: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = TMP.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".{name}-{}-{n}.tmp", std::process::id()));
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((component, Loaded::Compiled))
}

#[cfg(feature = "compiler")]
#[allow(unsafe_code)]
fn deserialize_cached(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: the file is one this function's caller wrote with
    // `Component::serialize` into the user's own cache directory, under a
    // name that includes the engine's compatibility hash and the component's
    // SHA-256; wasmtime additionally checks the header and engine settings.
    unsafe { Component::deserialize_file(engine, path) }
}

#[cfg(feature = "compiler")]
fn cache_key(engine: &Engine, digests: &[&[u8]]) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    let mut sha = Sha256::new();
    for digest in digests {
        sha.update(digest);
    }
    sha.update(engine_hash.finish().to_le_bytes());
    sha.update(env!("CARGO_PKG_VERSION"));
    sha.finalize()
        .iter()
        .take(16)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What every instance of one store shares: the configuration the guest
/// reads, and the backends it opened (one per distinct leaf configuration).
#[derive(Debug)]
pub(crate) struct Shared {
    config: String,
    /// The leaf configurations `backend.open` may name, by their path in
    /// the configuration: its leaves without the options the guest
    /// handles. Whatever calls the storage import (kvstash, or an app
    /// trusted with it) can open the configured stores, and nothing else
    /// the host could open. `None`: the configuration is not a tree (the
    /// guest refuses it).
    leaves: Option<Vec<(String, serde_json::Value)>>,
    registry: Registry,
    opened: Mutex<HashMap<String, Arc<dyn Backend>>>,
    /// Held while a backend opens, so concurrent instances connect once.
    opening: tokio::sync::Mutex<()>,
    /// The guest's storage calls and their failures.
    pub(crate) calls: StorageCalls,
    /// Commits the instances of this store made, to any of its backends,
    /// counted once each has returned: `commits-here`, which a cache in
    /// one instance watches to see the others' writes.
    commits_here: std::sync::atomic::AtomicU64,
}

/// A storage operation the guest calls (an index of [`STORAGE_OPS`]).
#[derive(Clone, Copy)]
enum StorageOp {
    Get,
    GetMany,
    Scan,
    Commit,
    CurrentVersion,
    Changes,
}

/// The names of the [`StorageOp`]s, in their order.
pub(crate) const STORAGE_OPS: [&str; 6] = [
    "get",
    "get_many",
    "scan",
    "commit",
    "current_version",
    "changes",
];

/// How often the guest called each storage operation and how often the
/// backend failed it (unavailable, or refusing what it was sent; a
/// conflict or a compacted feed is an answer, not a failure).
#[derive(Debug, Default)]
pub(crate) struct StorageCalls {
    counts: [[std::sync::atomic::AtomicU64; 2]; STORAGE_OPS.len()],
}

impl StorageCalls {
    /// Counts one call of `op` with its outcome, and passes the outcome
    /// on as the WIT result.
    fn record<T>(
        &self,
        op: StorageOp,
        result: Result<T, BackendError>,
    ) -> Result<T, storage::StorageError> {
        use std::sync::atomic::Ordering::Relaxed;
        let [calls, failures] = &self.counts[op as usize];
        calls.fetch_add(1, Relaxed);
        if matches!(
            result,
            Err(BackendError::Unavailable(_) | BackendError::Invalid(_) | BackendError::Corrupt(_))
        ) {
            failures.fetch_add(1, Relaxed);
        }
        result.map_err(to_wit)
    }

    /// `(operation, calls, failures)` for every operation.
    pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        STORAGE_OPS
            .iter()
            .zip(&self.counts)
            .map(|(op, [calls, failures])| (*op, calls.load(Relaxed), failures.load(Relaxed)))
            .collect()
    }
}

/// The options of every node of a configuration that the guest handles
/// itself (guest/src/config.rs) and so never passes to `backend.open`.
const NODE_OPTIONS: [&str; 2] = ["prefix", "read_only"];
/// ... and those of its root.
const ROOT_OPTIONS: [&str; 3] = ["retry_deadline_ms", "limits", "stores"];

/// The guest's default `limits.value_bytes` (guest/src/engine/limits.rs).
const DEFAULT_VALUE_BYTES: usize = 8 << 20;

/// `limits.value_bytes` of the configuration `config` (its default if
/// absent; one the guest will refuse is left to the guest to name).
fn configured_value_bytes(config: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(config)
        .ok()
        .and_then(|c| c.get("limits")?.get("value_bytes")?.as_u64())
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(DEFAULT_VALUE_BYTES)
}

/// The leaves of the configuration tree `config`, by their path (`$`,
/// `$.main`, `$.main.from`, …), without the options the guest handles:
/// what the guest opens. The structure is the guest's (`caching` has
/// `main`, `migrating` has `from` and `to`); the guest checks the rest.
/// `None` if `config` is not a JSON object.
pub(crate) fn leaves_of(config: &str) -> Option<Vec<(String, serde_json::Value)>> {
    fn walk(
        mut node: serde_json::Map<String, serde_json::Value>,
        path: String,
        out: &mut Vec<(String, serde_json::Value)>,
    ) {
        for option in NODE_OPTIONS {
            node.remove(option);
        }
        let children: &[&str] = match node.get("type").and_then(serde_json::Value::as_str) {
            Some("caching") => &["main"],
            Some("migrating") => &["from", "to"],
            _ => {
                out.push((path, serde_json::Value::Object(node)));
                return;
            }
        };
        for name in children {
            if let Some(serde_json::Value::Object(child)) = node.remove(*name) {
                walk(child, format!("{path}.{name}"), out);
            }
        }
    }
    let serde_json::Value::Object(mut root) = serde_json::from_str(config).ok()? else {
        return None;
    };
    for option in ROOT_OPTIONS {
        root.remove(option);
    }
    let mut leaves = Vec::new();
    walk(root, "$".into(), &mut leaves);
    Some(leaves)
}

/// The error of the leaf at `path` (the root's is not marked).
fn at_path(path: &str, e: BackendError) -> BackendError {
    match e {
        BackendError::Invalid(why) if path != "$" => {
            BackendError::Invalid(format!("`{path}`: {why}"))
        }
        e @ (BackendError::Invalid(_)
        | BackendError::Conflict { .. }
        | BackendError::Compacted { .. }
        | BackendError::ReadOnly
        | BackendError::Unavailable(_)
        | BackendError::Corrupt(_)) => e,
    }
}

impl Shared {
    pub(crate) fn new(config: String, registry: Registry) -> Self {
        Self {
            leaves: leaves_of(&config),
            config,
            registry,
            opened: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            calls: StorageCalls::default(),
            commits_here: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The store configuration the guest reads.
    #[cfg(feature = "apps")]
    pub(crate) fn config(&self) -> &str {
        &self.config
    }

    pub(crate) async fn open_backend(
        &self,
        config: &str,
    ) -> Result<Arc<dyn Backend>, BackendError> {
        let opened = || self.opened.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(backend) = opened().get(config) {
            return Ok(backend.clone());
        }
        let _opening = self.opening.lock().await;
        if let Some(backend) = opened().get(config) {
            return Ok(backend.clone());
        }
        if let Some(leaves) = &self.leaves {
            let asked: Option<serde_json::Value> = serde_json::from_str(config).ok();
            let Some((_, leaf)) = leaves.iter().find(|(_, leaf)| asked.as_ref() == Some(leaf))
            else {
                return Err(BackendError::Invalid(
                    "this store opens only the backends it was configured with".into(),
                ));
            };
            // The one leaf, however its JSON is spelled: the host's own
            // handle on it (`leaf_backend`) is the guest's.
            let key = leaf.to_string();
            if let Some(backend) = opened().get(&key).cloned() {
                opened().insert(config.to_string(), backend.clone());
                return Ok(backend);
            }
            let backend = self.registry.open(&key).await?;
            opened().insert(key, backend.clone());
            opened().insert(config.to_string(), backend.clone());
            return Ok(backend);
        }
        let backend = self.registry.open(config).await?;
        opened().insert(config.to_string(), backend.clone());
        Ok(backend)
    }

    #[cfg(feature = "serve")]
    /// The store's one backend, as the guest sees it (opening it if no
    /// instance has yet), for what reads and writes storage records
    /// directly: the server's `/v1/storage` routes, a replica. Refused for
    /// a configuration with layers that change keys (`prefix`, `stores`):
    /// records of the backend are then not the store's.
    pub(crate) async fn leaf_backend(&self) -> Result<Arc<dyn Backend>, BackendError> {
        let config: serde_json::Value = serde_json::from_str(&self.config)
            .map_err(|e| BackendError::Invalid(format!("store configuration: {e}")))?;
        let layered = ["prefix", "stores"].iter().any(|o| config.get(o).is_some())
            || matches!(
                config.get("type").and_then(serde_json::Value::as_str),
                Some("caching" | "migrating")
            );
        if layered {
            return Err(BackendError::Invalid(
                "this store has layers (`prefix`, `stores`, `caching`, `migrating`): its backend's records are not served directly".into(),
            ));
        }
        let leaf = match self.leaves.as_deref() {
            Some([(_, leaf)]) => leaf,
            _ => {
                return Err(BackendError::Invalid(
                    "the store configuration is not an object".into(),
                ));
            }
        };
        self.open_backend(&leaf.to_string()).await
    }

    /// Checks every leaf of the configuration with the registry, opening
    /// none: a mistake in one opens no other. The error names the leaf's
    /// path.
    pub(crate) fn check_leaves(&self) -> Result<(), BackendError> {
        for (path, leaf) in self.leaves.iter().flatten() {
            self.registry.check(leaf).map_err(|e| at_path(path, e))?;
        }
        Ok(())
    }

    /// Opens every leaf of the configuration (checked first).
    #[cfg(feature = "apps")]
    pub(crate) async fn open_leaves(&self) -> Result<(), BackendError> {
        self.check_leaves()?;
        for (path, leaf) in self.leaves.iter().flatten() {
            self.open_backend(&leaf.to_string())
                .await
                .map_err(|e| at_path(path, e))?;
        }
        Ok(())
    }

    /// Every backend opened, once (one may be there under two spellings of
    /// its configuration).
    fn distinct(&self) -> Vec<Arc<dyn Backend>> {
        let opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let mut distinct: Vec<Arc<dyn Backend>> = Vec::new();
        for backend in opened.values() {
            if !distinct.iter().any(|b| Arc::ptr_eq(b, backend)) {
                distinct.push(backend.clone());
            }
        }
        distinct
    }

    #[cfg(feature = "serve")]
    /// Whether the store's configuration says `"read_only": true`.
    pub(crate) fn read_only(&self) -> bool {
        serde_json::from_str::<serde_json::Value>(&self.config)
            .ok()
            .and_then(|c| c.get("read_only").and_then(serde_json::Value::as_bool))
            .unwrap_or(false)
    }
}

/// The host state of one instance: of the kvstash component, or of an app
/// with kvstash plugged in (which may also use `wasi:http`).
pub struct KvCtx {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    shared: Arc<Shared>,
    /// Ticks the current call has run guest code for (see [`TICK`]).
    ticks: u32,
    #[cfg(feature = "apps")]
    http: WasiHttpCtx,
    #[cfg(feature = "apps")]
    http_hooks: NoOutgoingHttp,
}

impl KvCtx {
    /// State for one instance; `memory_limit` bounds each linear memory.
    pub(crate) fn new(wasi: WasiCtx, shared: Arc<Shared>, memory_limit: usize) -> Self {
        Self {
            wasi,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory_limit).build(),
            shared,
            ticks: 0,
            #[cfg(feature = "apps")]
            http: WasiHttpCtx::new(),
            #[cfg(feature = "apps")]
            http_hooks: NoOutgoingHttp,
        }
    }

    /// A store for this state, with its memory limit in force.
    pub(crate) fn into_store(self, engine: &Engine) -> wasmtime::Store<KvCtx> {
        let mut store = wasmtime::Store::new(engine, self);
        store.limiter(|ctx| &mut ctx.limits);
        store
    }
}

#[cfg(feature = "apps")]
impl WasiHttpView for KvCtx {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Apps may serve HTTP but not send it: outgoing requests are denied, like
/// every other network use `kvstash run` was not asked to allow.
#[cfg(feature = "apps")]
struct NoOutgoingHttp;

#[cfg(feature = "apps")]
impl WasiHttpHooks for NoOutgoingHttp {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

impl WasiView for KvCtx {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// The host side of a guest's `storage.backend` resource.
pub struct BackendHandle {
    backend: Arc<dyn Backend>,
}

fn to_wit(e: BackendError) -> storage::StorageError {
    match e {
        BackendError::Conflict { index, current } => {
            storage::StorageError::Conflict(storage::Conflict { index, current })
        }
        BackendError::Compacted { oldest } => storage::StorageError::Compacted(oldest),
        BackendError::ReadOnly => storage::StorageError::ReadOnly,
        BackendError::Invalid(why) => storage::StorageError::Invalid(why),
        BackendError::Unavailable(why) => storage::StorageError::Unavailable(why),
        BackendError::Corrupt(why) => storage::StorageError::Corrupt(why),
    }
}

fn entry_to_wit(e: backend::Entry) -> storage::Entry {
    storage::Entry {
        key: e.key,
        value: e.value,
        version: e.version,
    }
}

type WitResult<T> = wasmtime::Result<Result<T, storage::StorageError>>;

impl KvCtx {
    fn backend(&self, handle: &Resource<BackendHandle>) -> wasmtime::Result<Arc<dyn Backend>> {
        Ok(self.table.get(handle)?.backend.clone())
    }
}

impl storage::Host for KvCtx {
    async fn config(&mut self) -> wasmtime::Result<String> {
        Ok(self.shared.config.clone())
    }
}

impl storage::HostBackend for KvCtx {
    async fn open(&mut self, config: String) -> WitResult<Resource<BackendHandle>> {
        match self.shared.open_backend(&config).await {
            Ok(backend) => Ok(Ok(self.table.push(BackendHandle { backend })?)),
            Err(e) => Ok(Err(to_wit(e))),
        }
    }

    async fn get(
        &mut self,
        handle: Resource<BackendHandle>,
        key: Vec<u8>,
    ) -> WitResult<Option<storage::Entry>> {
        let backend = self.backend(&handle)?;
        let result = backend.get(&key).await.map(|e| e.map(entry_to_wit));
        Ok(self.shared.calls.record(StorageOp::Get, result))
    }

    async fn get_many(
        &mut self,
        handle: Resource<BackendHandle>,
        keys: Vec<Vec<u8>>,
    ) -> WitResult<Vec<Option<storage::Entry>>> {
        let backend = self.backend(&handle)?;
        let result = backend
            .get_many(&keys)
            .await
            .map(|es| es.into_iter().map(|e| e.map(entry_to_wit)).collect());
        Ok(self.shared.calls.record(StorageOp::GetMany, result))
    }

    async fn scan(
        &mut self,
        handle: Resource<BackendHandle>,
        start: Vec<u8>,
        end: Option<Vec<u8>>,
        limit: u32,
        reverse: bool,
    ) -> WitResult<Vec<storage::Entry>> {
        let backend = self.backend(&handle)?;
        let scan = backend::Scan {
            start,
            end,
            limit,
            reverse,
        };
        let result = backend
            .scan(&scan)
            .await
            .map(|es| es.into_iter().map(entry_to_wit).collect());
        Ok(self.shared.calls.record(StorageOp::Scan, result))
    }

    async fn commit(
        &mut self,
        handle: Resource<BackendHandle>,
        checks: Vec<storage::Check>,
        writes: Vec<storage::Write>,
    ) -> WitResult<u64> {
        let backend = self.backend(&handle)?;
        let checks = checks
            .into_iter()
            .map(|c| match c {
                storage::Check::VersionIs((key, version)) => {
                    backend::Check::VersionIs(key, version)
                }
                storage::Check::Absent(key) => backend::Check::Absent(key),
            })
            .collect();
        let writes = writes
            .into_iter()
            .map(|w| backend::Write {
                key: w.key,
                value: w.value,
            })
            .collect();
        // Counted once it returned, made or not (or was cancelled: the
        // guard counts on drop): an instance that sees the count move
        // finds this commit in the feed.
        struct Counted<'a>(&'a std::sync::atomic::AtomicU64);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_add(1, std::sync::atomic::Ordering::Release);
            }
        }
        let shared = self.shared.clone();
        let counted = Counted(&shared.commits_here);
        let result = backend.commit(checks, writes).await;
        drop(counted);
        Ok(self.shared.calls.record(StorageOp::Commit, result))
    }

    async fn commits_here(&mut self, _handle: Resource<BackendHandle>) -> wasmtime::Result<u64> {
        Ok(self
            .shared
            .commits_here
            .load(std::sync::atomic::Ordering::Acquire))
    }

    async fn current_version(&mut self, handle: Resource<BackendHandle>) -> WitResult<u64> {
        let backend = self.backend(&handle)?;
        let result = backend.current_version().await;
        Ok(self.shared.calls.record(StorageOp::CurrentVersion, result))
    }

    async fn changes(
        &mut self,
        handle: Resource<BackendHandle>,
        since: u64,
        limit: u32,
    ) -> WitResult<Vec<storage::Change>> {
        let backend = self.backend(&handle)?;
        let result = backend.changes(since, limit).await.map(|cs| {
            cs.into_iter()
                .map(|c| storage::Change {
                    version: c.version,
                    key: c.key,
                    value: c.value,
                })
                .collect()
        });
        Ok(self.shared.calls.record(StorageOp::Changes, result))
    }

    async fn drop(&mut self, handle: Resource<BackendHandle>) -> wasmtime::Result<()> {
        self.table.delete(handle)?;
        Ok(())
    }
}

/// One guest instance with the buckets it has opened.
pub(crate) struct Instance {
    pub(crate) store: wasmtime::Store<KvCtx>,
    pub(crate) kv: Kvstash,
    buckets: HashMap<String, ResourceAny, foldhash::fast::RandomState>,
}

/// Most bucket handles an instance keeps open.
const MAX_OPEN_BUCKETS: usize = 256;

impl Instance {
    /// The guest's handle on bucket `name`, opened on first use.
    pub(crate) async fn bucket(
        &mut self,
        name: &str,
    ) -> wasmtime::Result<Result<ResourceAny, types::Error>> {
        if let Some(handle) = self.buckets.get(name) {
            return Ok(Ok(*handle));
        }
        let opened = self
            .kv
            .kvstash_store_store()
            .bucket()
            .call_open(&mut self.store, name)
            .await?;
        let handle = match opened {
            Ok(handle) => handle,
            Err(e) => return Ok(Err(e)),
        };
        if self.buckets.len() >= MAX_OPEN_BUCKETS {
            for (_, old) in self.buckets.drain() {
                old.resource_drop_async(&mut self.store).await?;
            }
        }
        self.buckets.insert(name.to_string(), handle);
        Ok(Ok(handle))
    }
}

/// Instances of one store, made on demand up to a limit.
pub(crate) struct Pool {
    runtime: Arc<Runtime>,
    shared: Arc<Shared>,
    /// Boxed: an instance is over a kilobyte (the bindings hold every
    /// export's index), and it changes hands twice per call.
    #[expect(clippy::vec_box, reason = "an instance is moved in and out each call")]
    idle: Mutex<Vec<Box<Instance>>>,
    permits: Arc<Semaphore>,
    memory_limit: usize,
    /// [`StoreOptions::call_time_limit`] in ticks; `None`: no limit.
    tick_limit: Option<u32>,
    /// The configuration's `limits.value_bytes`, checked before a value is
    /// copied into an instance (the guest checks it again).
    value_bytes: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("config", &self.shared.config)
            .field("available", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Pool {
    pub(crate) fn new(config: String, options: &StoreOptions) -> Result<Self, Error> {
        #[cfg(feature = "compiler")]
        let runtime = match &options.guest {
            Some(guest) => Runtime::for_guest(guest, options.cache_dir.as_deref())?,
            None => Runtime::get(options.cache_dir.as_deref())?,
        };
        #[cfg(not(feature = "compiler"))]
        let runtime = Runtime::get(options.cache_dir.as_deref())?;
        // A write that lost a race retries for the configuration's
        // `retry_deadline_ms`, each of its pauses (50 µs to 20 ms) a wait
        // that counts a tick: at the defaults (10 s each) such a write
        // counts well under the limit and ends in `contention`; a longer
        // `retry_deadline_ms` needs a longer limit (docs/reliability.md).
        let tick_limit = options.call_time_limit.map(|limit| {
            let ticks = limit.as_nanos().div_ceil(TICK.as_nanos()).max(1);
            u32::try_from(ticks).unwrap_or(u32::MAX)
        });
        let value_bytes = configured_value_bytes(&config);
        Ok(Self {
            runtime,
            shared: Arc::new(Shared::new(config, options.registry.clone())),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(options.max_instances.max(1))),
            memory_limit: options.memory_limit,
            tick_limit,
            value_bytes,
        })
    }

    /// The configuration's `limits.value_bytes`.
    #[cfg(feature = "serve")]
    pub(crate) fn value_bytes(&self) -> usize {
        self.value_bytes
    }

    /// A value of `len` bytes is refused, as the guest would refuse it,
    /// before it is copied into an instance: a value larger than an
    /// instance's memory would otherwise trap instead of being refused.
    fn check_value_len(&self, len: usize) -> Result<(), Error> {
        if len > self.value_bytes {
            return Err(Error::InvalidValue(format!(
                "value is {len} bytes, at most {} are allowed (limits.value_bytes)",
                self.value_bytes
            )));
        }
        Ok(())
    }

    /// A write carrying `values` (each checked as [`check_value_len`]
    /// does) and `len` bytes in all, keys and values, is refused before it
    /// is copied into an instance when that is more than half an
    /// instance's memory: the instance could not hold it and work on it,
    /// and would trap instead of refusing it.
    ///
    /// [`check_value_len`]: Self::check_value_len
    pub(crate) fn check_write(
        &self,
        values: impl IntoIterator<Item = usize>,
        len: usize,
    ) -> Result<(), Error> {
        for value in values {
            self.check_value_len(value)?;
        }
        self.check_write_len(len)
    }

    fn check_write_len(&self, len: usize) -> Result<(), Error> {
        let most = self.memory_limit / 2;
        if len > most {
            return Err(Error::InvalidArgument(format!(
                "the write carries {len} bytes of keys and values, more than an instance takes at once (at most {most}: half of StoreOptions::memory_limit); split it"
            )));
        }
        Ok(())
    }

    /// Commit notifications of every backend this store has opened that
    /// offers them.
    pub(crate) fn commit_notifications(&self) -> Vec<tokio::sync::watch::Receiver<u64>> {
        self.shared
            .distinct()
            .iter()
            .filter_map(|b| b.commits())
            .collect()
    }

    /// The guest's storage calls and failures, and the commit counters of
    /// every opened backend that keeps them.
    pub(crate) fn stats(&self) -> crate::api::StoreStats {
        crate::api::StoreStats {
            storage: self.shared.calls.snapshot(),
            commits: self
                .shared
                .distinct()
                .iter()
                .filter_map(|b| b.commit_stats().map(|s| (b.summary(), s)))
                .collect(),
        }
    }

    /// See [`Shared::check_leaves`].
    pub(crate) fn check_leaves(&self) -> Result<(), Error> {
        self.shared.check_leaves().map_err(|e| match e {
            BackendError::Invalid(why) => Error::InvalidConfig(why),
            e @ (BackendError::Conflict { .. }
            | BackendError::Compacted { .. }
            | BackendError::ReadOnly
            | BackendError::Unavailable(_)) => Error::Storage(e.to_string()),
            BackendError::Corrupt(why) => Error::Corrupt(why),
        })
    }

    /// The backends this store's instances have opened, by leaf configuration.
    pub(crate) fn summaries(&self) -> Vec<String> {
        self.shared.distinct().iter().map(|b| b.summary()).collect()
    }

    #[cfg(feature = "serve")]
    /// See [`Shared::leaf_backend`].
    pub(crate) async fn leaf_backend(&self) -> Result<Arc<dyn Backend>, BackendError> {
        self.shared.leaf_backend().await
    }

    #[cfg(feature = "serve")]
    /// See [`Shared::read_only`].
    pub(crate) fn read_only(&self) -> bool {
        self.shared.read_only()
    }

    /// The idle instances, taken out for a call on each (the counters of
    /// [`crate::Store::cache_stats`]), each with a permit, as a call holds
    /// one: as many as there are permits free, so callers meanwhile wait
    /// rather than make instances beyond the limit. [`Pool::give_back`]
    /// returns them (dropped, their permits free themselves).
    pub(crate) fn take_idle(&self) -> Vec<(Box<Instance>, OwnedSemaphorePermit)> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        while let Ok(permit) = self.permits.clone().try_acquire_owned() {
            let Some(mut instance) = idle.pop() else {
                break;
            };
            // A call's budget, as `acquire` gives one.
            instance.store.data_mut().ticks = 0;
            instance.store.set_epoch_deadline(1);
            taken.push((instance, permit));
        }
        taken
    }

    pub(crate) fn give_back(&self, instances: Vec<(Box<Instance>, OwnedSemaphorePermit)>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        for (instance, _permit) in instances {
            idle.push(instance);
        }
    }

    /// Whether the configuration has a layer of this `type` anywhere.
    pub(crate) fn has_layer(&self, kind: &str) -> bool {
        fn walk(node: &serde_json::Value, kind: &str) -> bool {
            node.get("type").and_then(serde_json::Value::as_str) == Some(kind)
                || ["main", "from", "to"]
                    .iter()
                    .filter_map(|child| node.get(child))
                    .any(|child| walk(child, kind))
        }
        serde_json::from_str::<serde_json::Value>(&self.shared.config)
            .is_ok_and(|config| walk(&config, kind))
    }

    pub(crate) async fn acquire(&self) -> Result<Lease<'_>, Error> {
        let running = Running::start();
        // A free permit is one atomic operation; waiting takes the
        // semaphore's queue (and its lock).
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => self
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| Error::Runtime("the store is closed".into()))?,
        };
        let idle = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut instance = match idle {
            Some(instance) => instance,
            None => self.instantiate().await?,
        };
        // The call's budget starts now: a deadline one tick away, and no
        // ticks counted yet.
        instance.store.data_mut().ticks = 0;
        instance.store.set_epoch_deadline(1);
        Ok(Lease {
            pool: self,
            instance: Some(instance),
            _permit: permit,
            _running: running,
        })
    }

    async fn instantiate(&self) -> Result<Box<Instance>, Error> {
        let ctx = KvCtx::new(
            WasiCtx::builder().build(),
            self.shared.clone(),
            self.memory_limit,
        );
        let mut store = ctx.into_store(&self.runtime.engine);
        let limit = self.tick_limit;
        store.epoch_deadline_callback(move |mut ctx| {
            let ticks = &mut ctx.data_mut().ticks;
            *ticks = ticks.saturating_add(1);
            match limit {
                Some(limit) if *ticks > limit => Err(wasmtime::format_err!(
                    "the call ran guest code for over {} ms, its limit \
                     (StoreOptions::call_time_limit); it was stopped",
                    u64::from(limit) * TICK.as_millis() as u64
                )),
                // A long call yields to the executor every tick, so it
                // holds no thread from the callers beside it.
                _ => Ok(wasmtime::UpdateDeadline::Yield(1)),
            }
        });
        let kv = self
            .runtime
            .pre
            .instantiate_async(&mut store)
            .await
            .map_err(|e| Error::Runtime(format!("instantiating the component: {e:#}")))?;
        Ok(Box::new(Instance {
            store,
            kv,
            buckets: HashMap::default(),
        }))
    }
}

/// An instance borrowed from a pool. [`Lease::finish`] returns it; dropping
/// a lease without finishing (a cancelled call) discards the instance,
/// whose state is then unknown.
pub(crate) struct Lease<'p> {
    pool: &'p Pool,
    instance: Option<Box<Instance>>,
    _permit: OwnedSemaphorePermit,
    _running: Running,
}

impl Lease<'_> {
    pub(crate) fn instance(&mut self) -> Result<&mut Instance, Error> {
        self.instance
            .as_deref_mut()
            .ok_or_else(|| Error::Runtime("instance already released".into()))
    }

    /// Ends the call: a trap discards the instance, anything else returns it.
    pub(crate) fn finish<T>(mut self, outcome: wasmtime::Result<T>) -> Result<T, Error> {
        match outcome {
            Ok(value) => {
                if let Some(instance) = self.instance.take() {
                    self.pool
                        .idle
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(instance);
                }
                Ok(value)
            }
            Err(trap) => Err(Error::Trap(format!("{trap:#}"))),
        }
    }
}

#[cfg(test)]
mod spin_key_value_tests;
#[cfg(test)]
mod wasi_keyvalue_tests;
