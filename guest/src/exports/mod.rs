//! The exported interfaces, all thin shims over one [`Engine`]. Each
//! exported error type is produced from [`StoreError`] in exactly one place.
//!
//! # Layout
//! - `rich` — `kvstash:store/store`, the full API
//! - `keyvalue` — `wasi:keyvalue/{store,atomics,batch}` at `0.2.0-draft` and `0.2.0-draft2`
//! - `spin` — `fermyon:spin/key-value` at `2.0.0` and unversioned (Spin 1.x)
//!
//! The standard and Spin interfaces open *stores by name*; the configuration's
//! [`StoreNames`] turns a name into a bucket (`""` and `"default"` open the
//! bucket `default`).

use std::cell::RefCell;
use std::rc::Rc;

use crate::bindings::kvstash::store::storage;
use crate::config::{self, Node, NodeKind, StoreNames};
use crate::engine::{
    CacheStats, Caching, Clock, Engine, Migrating, Prefixed, ReadOnly, Storage, StoreError,
};
use crate::wit_storage::WitStorage;

mod keyvalue;
mod rich;
mod spin;

pub struct Component;

/// The host's wall clock (`wasi:clocks/wall-clock`).
pub struct WasiClock;

impl Clock for WasiClock {
    fn now_ms(&self) -> u64 {
        let now = wasi::clocks::wall_clock::now();
        now.seconds
            .saturating_mul(1000)
            .saturating_add(u64::from(now.nanoseconds / 1_000_000))
    }

    fn monotonic_us(&self) -> u64 {
        wasi::clocks::monotonic_clock::now() / 1000
    }

    /// Blocks this instance only: the host awaits the timer.
    fn sleep_us(&self, us: u64) {
        wasi::clocks::monotonic_clock::subscribe_duration(us.saturating_mul(1000)).block();
    }
}

type StoreEngine = Engine<Box<dyn Storage>, WasiClock>;

/// A caching layer of the tree, shared with the engine's storage stack.
type CacheLayer = Caching<Box<dyn Storage>, WasiClock>;
/// A migrating layer of the tree, likewise.
type MigrationLayer = Migrating<Box<dyn Storage>, Box<dyn Storage>>;

/// The layers of the tree the API reaches directly, by their path.
#[derive(Default)]
struct Layers {
    caches: Vec<(String, Rc<CacheLayer>)>,
    migrations: Vec<(String, Rc<MigrationLayer>)>,
}

/// What an instance builds from the host's configuration on first use.
struct Opened {
    engine: Rc<StoreEngine>,
    stores: StoreNames,
    layers: Layers,
    /// The root's `read_only`: a migration writes, so it is refused too.
    read_only: bool,
}

thread_local! {
    /// Built on first use, then kept for the life of the instance. A failed
    /// build is not cached: the next call retries (the host may have been
    /// unreachable).
    static OPENED: RefCell<Option<Rc<Opened>>> = const { RefCell::new(None) };
}

fn opened() -> Result<Rc<Opened>, StoreError> {
    if let Some(opened) = OPENED.with(|cell| cell.borrow().clone()) {
        return Ok(opened);
    }
    // The whole tree is parsed (and refused, naming the field) before
    // anything opens.
    let config = config::parse(&storage::config())?;
    crate::engine::set_limits(config.limits);
    let mut layers = Layers::default();
    let storage = build(&config.root, &[], &mut layers)?;
    let opened = Rc::new(Opened {
        engine: Rc::new(
            Engine::new(storage, WasiClock)
                .read_only(config.root.read_only)
                .retry_deadline_ms(config.retry_deadline_ms),
        ),
        stores: config.stores,
        layers,
        read_only: config.root.read_only,
    });
    OPENED.with(|cell| *cell.borrow_mut() = Some(opened.clone()));
    Ok(opened)
}

/// The storage stack of `node`: its leaves opened through the host, its
/// layers over them. A node's `prefix` puts its records under that prefix
/// of what is below it. Prefixes are pushed down to the leaves (`inherited`
/// is the ancestors' prefix, which comes after the node's own), so every
/// layer works on the store's own keys: a caching layer sees buckets, and
/// a migration copies only its store's records, never a neighbour's under
/// another prefix of the same backend. (A caching layer inside a migrating
/// one was refused when the configuration was parsed.) A `read_only` node
/// below the root refuses commits (the root's is the engine's, which
/// refuses before it reads).
fn build(
    node: &Node,
    inherited: &[u8],
    layers: &mut Layers,
) -> Result<Box<dyn Storage>, StoreError> {
    let mut prefix = node.prefix.clone().unwrap_or_default();
    prefix.extend_from_slice(inherited);
    let storage: Box<dyn Storage> = match &node.kind {
        NodeKind::Leaf(leaf) => {
            // A leaf below the root names itself in its errors.
            let opened = WitStorage::open(leaf).map_err(|e| match e {
                crate::engine::StorageError::Invalid(why) if node.path != "$" => {
                    StoreError::InvalidConfig(format!("`{}`: {why}", node.path))
                }
                e @ (crate::engine::StorageError::Invalid(_)
                | crate::engine::StorageError::Conflict { .. }
                | crate::engine::StorageError::Compacted { .. }
                | crate::engine::StorageError::ReadOnly
                | crate::engine::StorageError::Unavailable(_)
                | crate::engine::StorageError::Corrupt(_)) => StoreError::from(e),
            })?;
            if prefix.is_empty() {
                Box::new(opened)
            } else {
                Box::new(Prefixed::new(opened, prefix))
            }
        }
        NodeKind::Caching {
            main,
            policy,
            buckets,
        } => {
            let main = build(main, &prefix, layers)?;
            let layer = Rc::new(Caching::new(
                main,
                WasiClock,
                policy.clone(),
                buckets.clone(),
            ));
            layers.caches.push((node.path.clone(), layer.clone()));
            Box::new(layer)
        }
        NodeKind::Migrating { from, to } => {
            let from = build(from, &prefix, layers)?;
            let to = build(to, &prefix, layers)?;
            let layer = Rc::new(Migrating::new(from, to));
            layers.migrations.push((node.path.clone(), layer.clone()));
            Box::new(layer)
        }
    };
    Ok(if node.read_only && node.path != "$" {
        Box::new(ReadOnly::new(storage))
    } else {
        storage
    })
}

/// The configuration's migrating layer (the first, if it has several);
/// `read-only` if the store is.
fn migration() -> Result<Rc<MigrationLayer>, StoreError> {
    let opened = opened()?;
    if opened.read_only {
        return Err(StoreError::ReadOnly);
    }
    opened
        .layers
        .migrations
        .first()
        .map(|(_, layer)| layer.clone())
        .ok_or_else(|| {
            StoreError::InvalidConfig(
                "the store configuration has no migrating layer ({\"type\":\"migrating\",\"from\":…,\"to\":…})".into(),
            )
        })
}

/// The counters of every caching layer of this instance.
fn cache_stats() -> Result<Vec<(String, CacheStats)>, StoreError> {
    Ok(opened()?
        .layers
        .caches
        .iter()
        .map(|(path, layer)| (path.clone(), layer.stats()))
        .collect())
}

fn engine() -> Result<Rc<StoreEngine>, StoreError> {
    Ok(opened()?.engine.clone())
}

/// The bucket the store named `name` opens (`InvalidBucket` if none).
fn open_store(name: &str) -> Result<String, StoreError> {
    opened()?.stores.resolve(name)
}

/// The errors every store-by-name interface knows (`wasi:keyvalue`'s three;
/// Spin's add only cases kvstash never produces).
enum KvError {
    NoSuchStore,
    AccessDenied,
    Other(String),
}

impl From<StoreError> for KvError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidBucket(_) => KvError::NoSuchStore,
            StoreError::ReadOnly => KvError::AccessDenied,
            e @ (StoreError::InvalidKey(_)
            | StoreError::InvalidValue(_)
            | StoreError::InvalidCursor
            | StoreError::InvalidConfig(_)
            | StoreError::InvalidArgument(_)
            | StoreError::Conflict { .. }
            | StoreError::CheckFailed { .. }
            | StoreError::NotFound(_)
            | StoreError::InvalidPath(_)
            | StoreError::PathNotFound(_)
            | StoreError::PathTypeMismatch(_)
            | StoreError::NotJson
            | StoreError::Contention
            | StoreError::Compacted { .. }
            | StoreError::Locked(_)
            | StoreError::LeaseLost(_)
            | StoreError::SchemaViolation(_)
            | StoreError::Storage(_)
            | StoreError::Corrupt(_)) => KvError::Other(e.to_string()),
        }
    }
}
