//! The async embedding API: [`Store`] and [`Bucket`].

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::exports::kvstash::store::types as wit;
use crate::runtime::{Pool, StoreOptions};

/// Every error the API returns. Input errors leave stored data untouched.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The key is empty, longer than 4096 bytes, or a batch has too many keys.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The bucket name is empty, longer than 256 bytes, or has a control character.
    #[error("invalid bucket name: {0}")]
    InvalidBucket(String),
    /// The value is not JSON, or larger than 8 MiB.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The list cursor did not come from `list` on this bucket and prefix.
    #[error("invalid list cursor")]
    InvalidCursor,
    /// The store configuration is invalid; the message names the field.
    #[error("invalid store configuration: {0}")]
    InvalidConfig(String),
    /// Another argument is out of range or contradicts one (a zero TTL,
    /// `if_version` with `if_absent`, too many transaction operations).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A conditional write found the key at another version (`None`:
    /// absent). Nothing was written.
    #[error("conflict: the key is {}", describe_version(*current))]
    Conflict { current: Option<u64> },
    /// Check `index` of a transaction did not hold; `current` is that key's
    /// version (`None`: absent). Nothing was written.
    #[error("transaction check {index} failed: the key is {}", describe_version(*current))]
    CheckFailed { index: u32, current: Option<u64> },
    /// The operation needs a key that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A JSON Pointer is malformed (RFC 6901).
    #[error("invalid path: {0}")]
    InvalidPath(String),
    /// A JSON Pointer names a member or element that does not exist.
    #[error("path not found: {0}")]
    PathNotFound(String),
    /// A JSON Pointer steps through a value of the wrong type.
    #[error("path type mismatch: {0}")]
    PathTypeMismatch(String),
    /// A write into a typed bucket does not satisfy its schema (or a schema
    /// cannot be set over a value that does not); names the key and path.
    #[error("schema violation: {0}")]
    SchemaViolation(String),
    /// The value is raw bytes, and the call needs JSON.
    #[error("the stored value is raw bytes, not JSON")]
    NotJson,
    #[error("the store is read-only")]
    ReadOnly,
    /// A write lost a race with other writers too often; retry it.
    #[error("too many concurrent writers; retry")]
    Contention,
    /// The lock is held by another lease (with this fencing token, until
    /// `expires_at`).
    #[error("locked: held with token {token}{} until {}", owner.as_ref().map(|o| format!(" by `{o}`")).unwrap_or_default(), rfc3339(*expires_at))]
    Locked {
        token: u64,
        expires_at: SystemTime,
        owner: Option<String>,
    },
    /// The lease is no longer held: it expired, was released, or the lock
    /// was taken since. Stop acting as the holder.
    #[error("lease lost: {0}")]
    LeaseLost(String),
    /// A watch asked for versions older than the backend retains; resume
    /// from `oldest` (some changes were missed: re-read what you track).
    #[error("changes before version {oldest} are no longer retained")]
    Compacted { oldest: u64 },
    /// The backend failed. A read wrote nothing; a write may or may not
    /// have been made (a failed sync, a lost reply): read back to find out.
    #[error("storage failed: {0}")]
    Storage(String),
    /// What the store's backend holds is damaged; the message names what.
    /// Nothing was served and nothing written: the data is not lost to
    /// a retry, but `kvstash check` (file stores) says what to recover.
    #[error("{0}")]
    Corrupt(String),
    /// A value did not (de)serialize as the requested Rust type.
    #[error("value does not match the requested type: {0}")]
    Serde(String),
    /// The component trapped. The call had no effect beyond what its backend
    /// commit (if it got that far) made durable; the instance was discarded
    /// and the store keeps working.
    #[error("the store component trapped: {0}")]
    Trap(String),
    /// The component could not be loaded or instantiated.
    #[error("kvstash runtime: {0}")]
    Runtime(String),
}

impl Error {
    /// The error's kind as the WIT `error` variant names its case
    /// (`"invalid-key"`, `"conflict"`, `"check-failed"`, `"storage"`, …);
    /// the host's own kinds are `"invalid-value"` for [`Error::Serde`],
    /// `"trap"` and `"runtime"`. The Python and JS packages expose it as
    /// `code`, and the conformance cases name errors by it.
    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidKey(_) => "invalid-key",
            Error::InvalidBucket(_) => "invalid-bucket",
            Error::InvalidValue(_) | Error::Serde(_) => "invalid-value",
            Error::InvalidCursor => "invalid-cursor",
            Error::InvalidConfig(_) => "invalid-config",
            Error::InvalidArgument(_) => "invalid-argument",
            Error::Conflict { .. } => "conflict",
            Error::CheckFailed { .. } => "check-failed",
            Error::NotFound(_) => "not-found",
            Error::InvalidPath(_) => "invalid-path",
            Error::PathNotFound(_) => "path-not-found",
            Error::PathTypeMismatch(_) => "path-type-mismatch",
            Error::SchemaViolation(_) => "schema-violation",
            Error::NotJson => "not-json",
            Error::ReadOnly => "read-only",
            Error::Contention => "contention",
            Error::Locked { .. } => "locked",
            Error::LeaseLost(_) => "lease-lost",
            Error::Compacted { .. } => "compacted",
            Error::Storage(_) => "storage",
            Error::Corrupt(_) => "corrupt",
            Error::Trap(_) => "trap",
            Error::Runtime(_) => "runtime",
        }
    }
}

fn describe_version(current: Option<u64>) -> String {
    match current {
        Some(version) => format!("at version {version}"),
        None => "absent".into(),
    }
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Self {
        match e {
            wit::Error::InvalidKey(why) => Error::InvalidKey(why),
            wit::Error::InvalidBucket(why) => Error::InvalidBucket(why),
            wit::Error::InvalidValue(why) => Error::InvalidValue(why),
            wit::Error::InvalidCursor => Error::InvalidCursor,
            wit::Error::InvalidConfig(why) => Error::InvalidConfig(why),
            wit::Error::InvalidArgument(why) => Error::InvalidArgument(why),
            wit::Error::Conflict(current) => Error::Conflict { current },
            wit::Error::CheckFailed(f) => Error::CheckFailed {
                index: f.index,
                current: f.current,
            },
            wit::Error::NotFound(why) => Error::NotFound(why),
            wit::Error::InvalidPath(why) => Error::InvalidPath(why),
            wit::Error::PathNotFound(why) => Error::PathNotFound(why),
            wit::Error::PathTypeMismatch(why) => Error::PathTypeMismatch(why),
            wit::Error::NotJson => Error::NotJson,
            wit::Error::SchemaViolation(why) => Error::SchemaViolation(why),
            wit::Error::ReadOnly => Error::ReadOnly,
            wit::Error::Contention => Error::Contention,
            wit::Error::Compacted(oldest) => Error::Compacted { oldest },
            wit::Error::Locked(h) => Error::Locked {
                token: h.token,
                expires_at: UNIX_EPOCH + Duration::from_millis(h.expires_at),
                owner: h.owner,
            },
            wit::Error::LeaseLost(why) => Error::LeaseLost(why),
            wit::Error::Storage(why) => Error::Storage(why),
            wit::Error::Corrupt(why) => Error::Corrupt(why),
        }
    }
}

/// A stored value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// JSON text (valid: checked when written).
    Json(String),
    /// Raw bytes, written with `set_bytes` or through `wasi:keyvalue`.
    Bytes(Vec<u8>),
}

impl Value {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Value::Json(text) => text.as_bytes(),
            Value::Bytes(bytes) => bytes,
        }
    }

    /// Parses a JSON value as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match self {
            Value::Json(text) => {
                serde_json::from_str(text).map_err(|e| Error::Serde(e.to_string()))
            }
            Value::Bytes(_) => Err(Error::NotJson),
        }
    }

    fn from_wit(v: wit::Value) -> Self {
        match v {
            wit::Value::Json(text) => Value::Json(text),
            wit::Value::Bytes(bytes) => Value::Bytes(bytes),
        }
    }

    fn into_wit(self) -> wit::Value {
        match self {
            Value::Json(text) => wit::Value::Json(text),
            Value::Bytes(bytes) => wit::Value::Bytes(bytes),
        }
    }

    /// `value` serialized as JSON.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        serde_json::to_string(value)
            .map(Value::Json)
            .map_err(|e| Error::Serde(e.to_string()))
    }
}

fn time_from_ms(ms: Option<u64>) -> Option<SystemTime> {
    ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms))
}

/// A TTL as the component takes it: whole milliseconds, at least 1.
fn ttl_ms(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A live value with the version of the commit that last wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub value: Value,
    pub version: u64,
    /// When the key expires, if it has a TTL.
    pub expires_at: Option<SystemTime>,
}

impl Entry {
    fn from_wit(e: wit::Entry) -> Self {
        Self {
            value: Value::from_wit(e.value),
            version: e.version,
            expires_at: time_from_ms(e.expires_at),
        }
    }
}

/// One item of a [`ListPage`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    /// `None` when listing with [`ListOptions::keys_only`].
    pub value: Option<Value>,
    pub version: u64,
    pub expires_at: Option<SystemTime>,
}

/// Which items [`Bucket::list`] returns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Only keys `>= start`.
    pub start: Option<String>,
    /// Only keys `< end`.
    pub end: Option<String>,
    /// At most this many items (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Continue after the page that returned this cursor (same options).
    pub cursor: Option<String>,
    /// Descending key order.
    pub reverse: bool,
    /// Leave values out.
    pub keys_only: bool,
}

/// A held lease on a named lock: see [`Store::acquire`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    /// The fencing token: larger than the token of every earlier acquisition
    /// of any lock in the store. Pass it to [`Check::lease`] so a write
    /// lands only while this lease holds the lock.
    pub token: u64,
    /// When the lease runs out unless renewed.
    pub expires_at: SystemTime,
}

impl Lease {
    fn from_wit(l: wit::Lease) -> Self {
        Self {
            name: l.name,
            token: l.token,
            expires_at: UNIX_EPOCH + Duration::from_millis(l.expires_at),
        }
    }
}

/// Who holds a lock: see [`Store::lock_status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockHolder {
    pub token: u64,
    pub expires_at: SystemTime,
    pub owner: Option<String>,
}

/// What happened to a watched key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Set,
    Delete,
    /// Removed because its TTL passed; reported when the key is reclaimed
    /// (by the sweep or a read), not at the instant it expired.
    Expire,
}

/// One change seen by [`Bucket::watch`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The version of the commit that made the change: pass it as
    /// [`WatchOptions::since`] to resume after this event.
    pub version: u64,
    pub key: String,
    pub kind: EventKind,
    /// The new value, for [`EventKind::Set`].
    pub value: Option<Value>,
    pub expires_at: Option<SystemTime>,
}

/// Where a watch starts and what it sees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchOptions {
    /// Only keys starting with this.
    pub prefix: Option<String>,
    /// Start after this version (events of later commits); `None`: from now.
    pub since: Option<u64>,
    /// How long to wait before asking again when the backend cannot
    /// announce commits (the built-in backends do, so watchers wake at once).
    pub poll_interval: Duration,
}

impl Default for WatchOptions {
    fn default() -> Self {
        Self {
            prefix: None,
            since: None,
            poll_interval: Duration::from_millis(500),
        }
    }
}

/// Options of a single write: a condition and a time-to-live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write only if the key is live at exactly this version; otherwise
    /// [`Error::Conflict`].
    pub if_version: Option<u64>,
    /// Write only if the key is absent (or expired); otherwise [`Error::Conflict`].
    pub if_absent: bool,
    /// The key expires this long after the write (1 ms to 100 years).
    pub ttl: Option<Duration>,
}

impl WriteOptions {
    pub fn if_version(version: u64) -> Self {
        Self {
            if_version: Some(version),
            ..Self::default()
        }
    }

    pub fn if_absent() -> Self {
        Self {
            if_absent: true,
            ..Self::default()
        }
    }

    pub fn ttl(ttl: Duration) -> Self {
        Self {
            ttl: Some(ttl),
            ..Self::default()
        }
    }

    /// The same options with a time-to-live.
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}

/// One page of a listing, in key order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Item>,
    /// `Some` when more items follow: pass it in [`ListOptions::cursor`].
    pub cursor: Option<String>,
}

/// What a store has asked of its storage: see [`Store::stats`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Per storage operation (`"get"`, `"scan"`, `"commit"`, …): how often
    /// the component called it, and how many calls the backend failed
    /// (unavailable, or refusing the call; a conflict is an answer).
    pub storage: Vec<(&'static str, u64, u64)>,
    /// Per opened backend that counts its commits (the file backend, in
    /// the process that holds the store): its summary and counters.
    pub commits: Vec<(String, crate::backend::SyncStats)>,
}

/// The counters of one caching layer of a store's configuration, summed
/// over the store's instances that are idle (each instance of the
/// component keeps a cache of its own; every instance, when no call is
/// running).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Where the layer is in the configuration: `$`, `$.main`, …
    pub layer: String,
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads of cached buckets that went to the store.
    pub misses: u64,
    /// Entries dropped to stay within the policy's limits.
    pub evictions: u64,
    /// Entries dropped because the store changed them.
    pub invalidations: u64,
    /// Reads of the store's change feed that renewed the entries.
    pub syncs: u64,
    /// Entries and bytes held now.
    pub entries: u64,
    pub bytes: u64,
}

/// One page of [`Store::migrate_copy`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MigratePage {
    /// Where the next page starts (after this storage key); `None`: done.
    pub next: Option<Vec<u8>>,
    /// Records of `from` looked at, and the bytes of their values.
    pub records: u32,
    pub bytes: u64,
    /// Records `to` did not hold yet (written or deleted there).
    pub written: u32,
}

/// One bucket's records on one side of a migration ([`Store::migrate_verify`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketSummary {
    /// The bucket, `""` for the store's own records (rules, locks, history).
    pub bucket: String,
    pub records: u64,
    /// The sum (mod 2^64) of a hash of each key and value: pages add up.
    pub checksum: u64,
}

/// One page of [`Store::migrate_verify`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyPage {
    pub next: Option<Vec<u8>>,
    pub from: Vec<BucketSummary>,
    pub to: Vec<BucketSummary>,
    /// Storage keys whose record differs, or is on one side only.
    pub differing: Vec<Vec<u8>>,
}

/// An open store. Cheap to clone; clones share instances and backends.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Arc<Pool>,
}

/// One guest call on a pooled instance: `$body` runs with `$inst` bound to
/// the instance; a trap discards the instance, a WIT error is mapped.
macro_rules! call {
    ($store:expr, |$inst:ident| $body:expr) => {{
        let mut lease = $store.pool.acquire().await?;
        let outcome = {
            let $inst = lease.instance()?;
            $body
        };
        lease.finish(outcome)?.map_err(Error::from)
    }};
}

/// Like [`call!`], for a method of a bucket resource.
macro_rules! bucket_call {
    ($bucket:expr, |$api:ident, $store:ident, $handle:ident| $body:expr) => {{
        let name = &$bucket.name;
        call!($bucket.store, |inst| async {
            let $handle = match inst.bucket(name).await? {
                Ok(handle) => handle,
                Err(e) => return Ok(Err(e)),
            };
            let $api = inst.kv.kvstash_store_store().bucket();
            let $store = &mut inst.store;
            $body.await
        }
        .await)
    }};
}

impl Store {
    /// Opens the store a JSON configuration describes, e.g.
    /// `{"type":"file","path":"data/kvstash.redb"}` or `{"type":"memory"}`.
    /// Configuration errors (bad JSON, unknown `type`, an unusable path) are
    /// reported here, not at first use.
    pub async fn open(config: &str) -> Result<Store, Error> {
        Self::open_with(config, StoreOptions::default()).await
    }

    pub async fn open_with(config: &str, options: StoreOptions) -> Result<Store, Error> {
        let store = Store {
            pool: Arc::new(Pool::new(config.to_string(), &options)?),
        };
        // Every leaf's fields are checked before anything opens; then
        // opening a bucket makes the guest parse the configuration and open
        // its backends, so their errors surface now.
        store.pool.check_leaves()?;
        store.bucket("default").exists_probe().await?;
        if let Some(interval) = options.sweep_interval {
            spawn_sweeper(&store.pool, interval);
        }
        Ok(store)
    }

    /// A handle on bucket `name` (created by its first write). The name is
    /// checked at first use.
    pub fn bucket(&self, name: &str) -> Bucket {
        Bucket {
            store: self.clone(),
            name: name.into(),
        }
    }

    /// Names of the buckets that hold at least one key.
    pub async fn buckets(&self) -> Result<Vec<String>, Error> {
        call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_buckets(&mut inst.store)
            .await)
    }

    /// One line per backend this store has opened ("file /data/kvstash.redb").
    pub fn describe(&self) -> Vec<String> {
        self.pool.summaries()
    }

    #[cfg(feature = "serve")]
    /// The backend this store's component runs on, for what reads and
    /// writes its records directly (`kvstash serve`'s `/v1/storage`, a
    /// replica); an error for a configuration whose layers change keys.
    pub(crate) async fn leaf_backend(&self) -> Result<Arc<dyn crate::backend::Backend>, Error> {
        self.pool
            .leaf_backend()
            .await
            .map_err(|e| Error::InvalidConfig(e.to_string()))
    }

    #[cfg(feature = "serve")]
    /// Whether the configuration opens this store read-only.
    pub(crate) fn is_read_only(&self) -> bool {
        self.pool.read_only()
    }

    /// Counters of this store's use of its storage, since it was opened.
    pub fn stats(&self) -> StoreStats {
        self.pool.stats()
    }

    /// Takes the lock `name` for `ttl` if nobody holds it; otherwise
    /// [`Error::Locked`] at once. Renew before `ttl` runs out, or the lock
    /// frees itself. See [`lock`](Self::lock) to wait instead.
    pub async fn acquire(
        &self,
        name: &str,
        ttl: Duration,
        owner: Option<&str>,
    ) -> Result<Lease, Error> {
        let ttl = ttl_ms(Some(ttl)).unwrap_or(0);
        let lease = call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_acquire(&mut inst.store, name, ttl, owner)
            .await)?;
        Ok(Lease::from_wit(lease))
    }

    /// Like [`acquire`](Self::acquire), but waits up to `wait` for the lock
    /// to be released or to expire (waking on commits, else every 50 ms).
    pub async fn lock(
        &self,
        name: &str,
        ttl: Duration,
        owner: Option<&str>,
        wait: Duration,
    ) -> Result<Lease, Error> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut notifications = self.pool.commit_notifications();
        loop {
            for rx in &mut notifications {
                rx.borrow_and_update();
            }
            match self.acquire(name, ttl, owner).await {
                Err(Error::Locked { expires_at, .. }) if tokio::time::Instant::now() < deadline => {
                    // Until a commit (a release), the holder's expiry, or 50 ms.
                    let until_expiry = expires_at
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    let nap = until_expiry
                        .min(Duration::from_millis(50))
                        .max(Duration::from_millis(1));
                    let until = deadline.min(tokio::time::Instant::now() + nap);
                    wait_for_commit(&mut notifications, until).await;
                }
                other => return other,
            }
        }
    }

    /// Extends a lease to `ttl` from now, keeping its token; otherwise
    /// [`Error::LeaseLost`].
    pub async fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        let ttl = ttl_ms(Some(ttl)).unwrap_or(0);
        let (name, token) = (lease.name.as_str(), lease.token);
        let lease = call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_renew(&mut inst.store, name, token, ttl)
            .await)?;
        Ok(Lease::from_wit(lease))
    }

    /// Frees the lock if the lease still holds it; returns whether it did.
    pub async fn release(&self, lease: &Lease) -> Result<bool, Error> {
        let (name, token) = (lease.name.as_str(), lease.token);
        call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_release(&mut inst.store, name, token)
            .await)
    }

    /// Who holds the lock `name`, if anyone.
    pub async fn lock_status(&self, name: &str) -> Result<Option<LockHolder>, Error> {
        let holder = call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_lock_status(&mut inst.store, name)
            .await)?;
        Ok(holder.map(|h| LockHolder {
            token: h.token,
            expires_at: UNIX_EPOCH + Duration::from_millis(h.expires_at),
            owner: h.owner,
        }))
    }

    /// A transaction: checks and mutations across keys and buckets,
    /// committed all or nothing by [`Transaction::commit`].
    pub fn transaction(&self) -> Transaction {
        Transaction {
            store: self.clone(),
            checks: Vec::new(),
            mutations: Vec::new(),
        }
    }

    /// Removes up to `limit` keys whose TTL has passed; returns how many.
    /// Expired keys are invisible whether swept or not; the sweep reclaims
    /// their space. [`StoreOptions::sweep_interval`] runs it in the background.
    pub async fn sweep(&self, limit: u32) -> Result<u32, Error> {
        call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_sweep(&mut inst.store, limit)
            .await)
    }

    /// The store's newest version (of `from`, in a migrating store).
    pub async fn current_version(&self) -> Result<u64, Error> {
        self.transaction().commit().await
    }

    /// A migrating store's copy (`kvstash migrate`): the records after
    /// `after` (from the first with `None`), at most `limit` of `from`'s
    /// and every one of `to`'s in the same range, made equal in `to`.
    /// Nothing older overwrites a newer copy (docs/configuration.md).
    pub async fn migrate_copy(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<MigratePage, Error> {
        let page = call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_migrate_copy(&mut inst.store, after, limit)
            .await)?;
        Ok(MigratePage {
            next: page.next,
            records: page.records,
            bytes: page.bytes,
            written: page.written,
        })
    }

    /// Copies the keys `from`'s change feed names after `since`: the
    /// version it got to (`since`: nothing newer) and the keys copied;
    /// [`Error::Compacted`] if the feed no longer reaches back.
    pub async fn migrate_catch_up(&self, since: u64, limit: u32) -> Result<(u64, u32), Error> {
        call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_migrate_catch_up(&mut inst.store, since, limit)
            .await)
    }

    /// Compares `from` and `to` after `after`, page by page.
    pub async fn migrate_verify(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<VerifyPage, Error> {
        let page = call!(self, |inst| inst
            .kv
            .kvstash_store_store()
            .call_migrate_verify(&mut inst.store, after, limit)
            .await)?;
        let summaries = |list: Vec<wit::BucketSummary>| {
            list.into_iter()
                .map(|s| BucketSummary {
                    bucket: s.bucket,
                    records: s.records,
                    checksum: s.checksum,
                })
                .collect()
        };
        Ok(VerifyPage {
            next: page.next,
            from: summaries(page.from),
            to: summaries(page.to),
            differing: page.differing,
        })
    }

    /// The counters of every caching layer of the configuration (none
    /// without one), summed over the idle instances; see [`CacheStats`].
    pub async fn cache_stats(&self) -> Result<Vec<CacheStats>, Error> {
        if !self.pool.has_layer("caching") {
            return Ok(Vec::new());
        }
        let mut instances = self.pool.take_idle();
        if instances.is_empty() {
            // Every instance is busy, or none was made yet: ask one.
            let one = call!(self, |inst| inst
                .kv
                .kvstash_store_store()
                .call_cache_stats(&mut inst.store)
                .await)?;
            return Ok(one.into_iter().map(CacheStats::from).collect());
        }
        let mut total: Vec<CacheStats> = Vec::new();
        let mut failed = None;
        let mut kept = Vec::with_capacity(instances.len());
        for (mut instance, permit) in instances.drain(..) {
            let answer = instance
                .kv
                .kvstash_store_store()
                .call_cache_stats(&mut instance.store)
                .await;
            match answer {
                Ok(Ok(layers)) => {
                    for layer in layers.into_iter().map(CacheStats::from) {
                        match total.iter_mut().find(|t| t.layer == layer.layer) {
                            Some(t) => t.add(&layer),
                            None => total.push(layer),
                        }
                    }
                    kept.push((instance, permit));
                }
                Ok(Err(e)) => {
                    failed.get_or_insert(Error::from(e));
                    kept.push((instance, permit));
                }
                // A trapped instance is not given back.
                Err(trap) => {
                    failed.get_or_insert(Error::Trap(format!("{trap:#}")));
                }
            }
        }
        self.pool.give_back(kept);
        match failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}

impl CacheStats {
    fn add(&mut self, other: &CacheStats) {
        self.hits += other.hits;
        self.misses += other.misses;
        self.evictions += other.evictions;
        self.invalidations += other.invalidations;
        self.syncs += other.syncs;
        self.entries += other.entries;
        self.bytes += other.bytes;
    }
}

impl From<wit::CacheCounters> for CacheStats {
    fn from(s: wit::CacheCounters) -> Self {
        Self {
            layer: s.layer,
            hits: s.hits,
            misses: s.misses,
            evictions: s.evictions,
            invalidations: s.invalidations,
            syncs: s.syncs,
            entries: s.entries,
            bytes: s.bytes,
        }
    }
}

/// Sweeps expired keys every `interval` until the store is dropped.
fn spawn_sweeper(pool: &Arc<Pool>, interval: Duration) {
    let pool = Arc::downgrade(pool);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(interval).await;
            let Some(pool) = pool.upgrade() else { return };
            let store = Store { pool };
            // Drain what has expired, a bounded batch at a time. Errors
            // (a read-only store, a backend hiccup) wait for the next round.
            while let Ok(SWEEP_BATCH) = store.sweep(SWEEP_BATCH).await {}
        }
    });
}

const SWEEP_BATCH: u32 = 1000;

/// A check of a [`Transaction`].
#[derive(Clone, Debug, PartialEq)]
pub struct Check(wit::Check);

impl Check {
    /// The key is live at exactly `version`.
    pub fn version(bucket: &str, key: &str, version: u64) -> Self {
        Self::new(bucket, key, wit::Condition::VersionIs(version))
    }

    /// The key is absent (or expired).
    pub fn absent(bucket: &str, key: &str) -> Self {
        Self::new(bucket, key, wit::Condition::Absent)
    }

    /// The key is live.
    pub fn exists(bucket: &str, key: &str) -> Self {
        Self::new(bucket, key, wit::Condition::Exists)
    }

    /// The key is live and holds this value (JSON compared as JSON).
    pub fn equals_json<T: Serialize + ?Sized>(
        bucket: &str,
        key: &str,
        value: &T,
    ) -> Result<Self, Error> {
        Ok(Self::new(
            bucket,
            key,
            wit::Condition::ValueEquals(Value::json(value)?.into_wit()),
        ))
    }

    /// The key is live and holds exactly this value (JSON compared as JSON,
    /// bytes as bytes).
    pub fn equals(bucket: &str, key: &str, value: Value) -> Self {
        Self::new(bucket, key, wit::Condition::ValueEquals(value.into_wit()))
    }

    /// The lock `name` is held with this fencing token: a write fenced by
    /// it fails once the lease has expired or the lock was taken since.
    pub fn lease(name: &str, token: u64) -> Self {
        Self(wit::Check::Lease(wit::LeaseCheck {
            name: name.into(),
            token,
        }))
    }

    fn new(bucket: &str, key: &str, condition: wit::Condition) -> Self {
        Self(wit::Check::Key(wit::KeyCheck {
            bucket: bucket.into(),
            key: key.into(),
            condition,
        }))
    }
}

/// Checks and mutations to commit atomically. Build it with the methods
/// below, then [`commit`](Transaction::commit): either every check holds and
/// every mutation is applied, at one version, or nothing is written.
#[derive(Clone, Debug)]
#[must_use = "a transaction does nothing until committed"]
pub struct Transaction {
    store: Store,
    checks: Vec<Check>,
    mutations: Vec<wit::Mutation>,
}

impl Transaction {
    pub fn check(mut self, check: Check) -> Self {
        self.checks.push(check);
        self
    }

    fn push(mut self, bucket: &str, key: &str, op: wit::Op) -> Self {
        self.mutations.push(wit::Mutation {
            bucket: bucket.into(),
            key: key.into(),
            op,
            ttl_ms: None,
        });
        self
    }

    /// Stores `value` as JSON (no expiry unless [`ttl`](Self::ttl) follows).
    pub fn set_json<T: Serialize + ?Sized>(
        self,
        bucket: &str,
        key: &str,
        value: &T,
    ) -> Result<Self, Error> {
        Ok(self.push(bucket, key, wit::Op::Set(Value::json(value)?.into_wit())))
    }

    /// Stores a [`Value`].
    pub fn set(self, bucket: &str, key: &str, value: Value) -> Self {
        self.push(bucket, key, wit::Op::Set(value.into_wit()))
    }

    pub fn delete(self, bucket: &str, key: &str) -> Self {
        self.push(bucket, key, wit::Op::Delete)
    }

    /// Adds `delta` to the integer at the key (missing: 0).
    pub fn increment(self, bucket: &str, key: &str, delta: i64) -> Self {
        self.push(bucket, key, wit::Op::Increment(delta))
    }

    /// Sets the JSON at `path` (an RFC 6901 pointer) inside the document.
    pub fn set_path_json<T: Serialize + ?Sized>(
        self,
        bucket: &str,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<Self, Error> {
        let value = json_text(value)?;
        Ok(self.push(
            bucket,
            key,
            wit::Op::SetPath(wit::PathOp {
                path: path.into(),
                value,
            }),
        ))
    }

    pub fn delete_path(self, bucket: &str, key: &str, path: &str) -> Self {
        self.push(bucket, key, wit::Op::DeletePath(path.into()))
    }

    pub fn append_path_json<T: Serialize + ?Sized>(
        self,
        bucket: &str,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<Self, Error> {
        let value = json_text(value)?;
        Ok(self.push(
            bucket,
            key,
            wit::Op::AppendPath(wit::PathOp {
                path: path.into(),
                value,
            }),
        ))
    }

    /// Gives the mutation added last a time-to-live (for a `set`: its TTL;
    /// for the others: a new one, instead of keeping the key's expiry).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        if let Some(last) = self.mutations.last_mut() {
            last.ttl_ms = ttl_ms(Some(ttl));
        }
        self
    }

    /// Commits; returns the transaction's version. A failed check is
    /// [`Error::CheckFailed`] with its index and the key's current version.
    pub async fn commit(self) -> Result<u64, Error> {
        let checks: Vec<wit::Check> = self.checks.into_iter().map(|c| c.0).collect();
        let mutations = self.mutations;
        let value_len = |m: &wit::Mutation| match &m.op {
            wit::Op::Set(wit::Value::Json(text)) => text.len(),
            wit::Op::Set(wit::Value::Bytes(bytes)) => bytes.len(),
            wit::Op::SetPath(op) | wit::Op::AppendPath(op) => op.value.len(),
            wit::Op::Delete | wit::Op::Increment(_) | wit::Op::DeletePath(_) => 0,
        };
        let path_len = |m: &wit::Mutation| match &m.op {
            wit::Op::SetPath(op) | wit::Op::AppendPath(op) => op.path.len(),
            wit::Op::DeletePath(path) => path.len(),
            wit::Op::Set(_) | wit::Op::Delete | wit::Op::Increment(_) => 0,
        };
        let len = mutations
            .iter()
            .map(|m| m.bucket.len() + m.key.len() + path_len(m) + value_len(m))
            .sum();
        self.store
            .pool
            .check_write(mutations.iter().map(value_len), len)?;
        call!(self.store, |inst| inst
            .kv
            .kvstash_store_store()
            .call_transact(&mut inst.store, &checks, &mutations)
            .await)
    }
}

/// The state of one [`Bucket::watch`] stream.
struct Watching {
    bucket: Bucket,
    since: Option<u64>,
    prefix: Option<String>,
    poll: Duration,
    buffer: VecDeque<Event>,
    notifications: Vec<tokio::sync::watch::Receiver<u64>>,
    failed: bool,
}

/// Waits until one of `notifications` announces a commit not yet marked
/// seen, or until `until`, whichever comes first. With no notifications
/// (a backend that cannot announce commits), just until `until`.
async fn wait_for_commit(
    notifications: &mut [tokio::sync::watch::Receiver<u64>],
    until: tokio::time::Instant,
) {
    let deadline = tokio::time::sleep_until(until);
    if notifications.is_empty() {
        deadline.await;
        return;
    }
    let changed =
        futures::future::select_all(notifications.iter_mut().map(|rx| Box::pin(rx.changed())));
    tokio::select! {
        _ = changed => {}
        () = deadline => {}
    }
}

/// Changes read per guest call.
const WATCH_BATCH: u32 = 1000;

impl Watching {
    /// Reads the next page; `Ok(true)` if the position moved.
    async fn fetch(&mut self) -> Result<bool, Error> {
        // Mark what we have seen before reading, so a commit landing after
        // the read wakes `wait`.
        for rx in &mut self.notifications {
            rx.borrow_and_update();
        }
        let prefix = self.prefix.as_deref();
        let since = self.since;
        let page = bucket_call!(self.bucket, |api, store, handle| api.call_watch(
            store,
            handle,
            prefix,
            since,
            WATCH_BATCH
        ))?;
        let moved = self.since != Some(page.next);
        self.since = Some(page.next);
        self.buffer.extend(page.events.into_iter().map(|e| Event {
            version: e.version,
            key: e.key,
            kind: match e.kind {
                wit::EventKind::Set => EventKind::Set,
                wit::EventKind::Delete => EventKind::Delete,
                wit::EventKind::Expire => EventKind::Expire,
            },
            value: e.value.map(Value::from_wit),
            expires_at: time_from_ms(e.expires_at),
        }));
        Ok(moved && since.is_some())
    }

    /// Until a backend announces a commit, or the poll interval passes.
    async fn wait(&mut self) {
        let until = tokio::time::Instant::now() + self.poll;
        wait_for_commit(&mut self.notifications, until).await;
    }
}

fn json_text<T: Serialize + ?Sized>(value: &T) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Serde(e.to_string()))
}

/// A named bucket of a [`Store`].
#[derive(Clone, Debug)]
pub struct Bucket {
    store: Store,
    name: Arc<str>,
}

impl Bucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    async fn exists_probe(&self) -> Result<(), Error> {
        let name = &self.name;
        call!(self.store, |inst| inst
            .bucket(name)
            .await
            .map(|r| r.map(|_| ())))
    }

    /// The value and version of `key`, `None` if absent.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        let entry = bucket_call!(self, |api, store, handle| api.call_get(store, handle, key))?;
        Ok(entry.map(Entry::from_wit))
    }

    /// The value of `key` parsed as `T`, `None` if absent.
    pub async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.get(key).await?.map(|e| e.value.parse()).transpose()
    }

    /// Stores `value` serialized as JSON; returns the new version.
    pub async fn set_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<u64, Error> {
        let text = serde_json::to_string(value).map_err(|e| Error::Serde(e.to_string()))?;
        self.set_json_text(key, &text).await
    }

    /// Stores JSON text (validated by the store); returns the new version.
    pub async fn set_json_text(&self, key: &str, json: &str) -> Result<u64, Error> {
        self.store
            .pool
            .check_write([json.len()], key.len() + json.len())?;
        bucket_call!(self, |api, store, handle| api
            .call_set(store, handle, key, json))
    }

    /// Stores raw bytes; returns the new version.
    pub async fn set_bytes(&self, key: &str, value: &[u8]) -> Result<u64, Error> {
        self.store
            .pool
            .check_write([value.len()], key.len() + value.len())?;
        bucket_call!(self, |api, store, handle| api
            .call_set_bytes(store, handle, key, value))
    }

    /// Stores a [`Value`] under the options' condition and TTL; returns the
    /// new version, or [`Error::Conflict`] with the key's current version.
    pub async fn set_with(
        &self,
        key: &str,
        value: Value,
        options: &WriteOptions,
    ) -> Result<u64, Error> {
        let value = value.into_wit();
        let value_len = match &value {
            wit::Value::Json(text) => text.len(),
            wit::Value::Bytes(bytes) => bytes.len(),
        };
        self.store
            .pool
            .check_write([value_len], key.len() + value_len)?;
        let options = wit::WriteOptions {
            if_version: options.if_version,
            if_absent: options.if_absent,
            ttl_ms: ttl_ms(options.ttl),
        };
        bucket_call!(self, |api, store, handle| api
            .call_set_with(store, handle, key, &value, options))
    }

    /// [`set_with`](Self::set_with) for a value serialized as JSON.
    pub async fn set_json_with<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
        options: &WriteOptions,
    ) -> Result<u64, Error> {
        self.set_with(key, Value::json(value)?, options).await
    }

    /// Deletes `key`; returns whether it was live.
    pub async fn delete(&self, key: &str) -> Result<bool, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete(store, handle, key))
    }

    /// Deletes `key` if it is live at exactly `version`; returns the commit's
    /// version, or [`Error::Conflict`] with the key's current version.
    pub async fn delete_if_version(&self, key: &str, version: u64) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete_if_version(store, handle, key, version))
    }

    /// Adds `delta` to the integer at `key` (missing: 0); returns the new
    /// value. The key keeps its expiry.
    pub async fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_increment(store, handle, key, delta))
    }

    /// The JSON at `path` (an RFC 6901 pointer, `""` for the whole
    /// document) parsed as `T`, with the document's version; `None` if the
    /// key is absent. A missing path is [`Error::PathNotFound`].
    pub async fn get_path_json<T: DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
    ) -> Result<Option<(T, u64)>, Error> {
        let found = bucket_call!(self, |api, store, handle| api
            .call_get_path(store, handle, key, path))?;
        found
            .map(|pv| {
                let value =
                    serde_json::from_str(&pv.json).map_err(|e| Error::Serde(e.to_string()))?;
                Ok((value, pv.version))
            })
            .transpose()
    }

    /// Sets the JSON at `path` inside the document at `key`, atomically;
    /// returns the new version. The parent of `path` must exist; `/l/-`
    /// appends to the array `l`.
    pub async fn set_path_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64, Error> {
        let value = json_text(value)?;
        self.store
            .pool
            .check_write([value.len()], key.len() + path.len() + value.len())?;
        bucket_call!(self, |api, store, handle| api
            .call_set_path(store, handle, key, path, &value))
    }

    /// Removes the value at `path`; returns the new version.
    pub async fn delete_path(&self, key: &str, path: &str) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete_path(store, handle, key, path))
    }

    /// Appends `value` to the array at `path`; returns the new version.
    pub async fn append_path_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64, Error> {
        let value = json_text(value)?;
        self.store
            .pool
            .check_write([value.len()], key.len() + path.len() + value.len())?;
        bucket_call!(self, |api, store, handle| api
            .call_append_path(store, handle, key, path, &value))
    }

    pub async fn exists(&self, key: &str) -> Result<bool, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_exists(store, handle, key))
    }

    /// Where a watch of `prefix` from `since` starts: `since` itself once
    /// checked to be retained ([`Error::Compacted`] if not) and not past
    /// the store's current version ([`Error::InvalidArgument`]), or with
    /// `None`, the store's current version.
    #[cfg(feature = "serve")]
    pub(crate) async fn watch_start(
        &self,
        prefix: Option<&str>,
        since: Option<u64>,
    ) -> Result<u64, Error> {
        let page = bucket_call!(self, |api, store, handle| api
            .call_watch(store, handle, prefix, since, 1))?;
        let Some(since) = since else {
            return Ok(page.next);
        };
        // A position past the store's newest commit (a client resuming on
        // a store restored from an older backup) would skip every commit up
        // to it without a word.
        let now = bucket_call!(self, |api, store, handle| api
            .call_watch(store, handle, prefix, None, 1))?
        .next;
        if since > now {
            return Err(Error::InvalidArgument(format!(
                "version {since} is past the store's newest commit ({now}): re-read what you track, then watch from now"
            )));
        }
        Ok(since)
    }

    /// One page of items in key order.
    pub async fn list(&self, options: &ListOptions) -> Result<ListPage, Error> {
        let options = wit::ListOptions {
            prefix: options.prefix.clone(),
            start: options.start.clone(),
            end: options.end.clone(),
            limit: options.limit,
            cursor: options.cursor.clone(),
            reverse: options.reverse,
            keys_only: options.keys_only,
        };
        let page = bucket_call!(self, |api, store, handle| api
            .call_list(store, handle, &options))?;
        Ok(ListPage {
            items: page
                .items
                .into_iter()
                .map(|i| Item {
                    key: i.key,
                    value: i.value.map(Value::from_wit),
                    version: i.version,
                    expires_at: time_from_ms(i.expires_at),
                })
                .collect(),
            cursor: page.cursor,
        })
    }

    /// Entries of `keys` (at most 1000), one slot per key.
    pub async fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Entry>>, Error> {
        let entries = bucket_call!(self, |api, store, handle| api
            .call_get_many(store, handle, keys))?;
        Ok(entries
            .into_iter()
            .map(|e| e.map(Entry::from_wit))
            .collect())
    }

    /// Stores every (key, JSON text) pair atomically; returns the version.
    pub async fn set_many(&self, pairs: &[(String, String)]) -> Result<u64, Error> {
        let len = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
        self.store
            .pool
            .check_write(pairs.iter().map(|(_, v)| v.len()), len)?;
        bucket_call!(self, |api, store, handle| api
            .call_set_many(store, handle, pairs))
    }

    /// The bucket's changes as a stream of events in version order, after
    /// [`WatchOptions::since`], or after the moment this call returns when
    /// `since` is `None`. Includes writes made through other handles on the
    /// same backend. The stream ends only with an error:
    /// [`Error::Compacted`] when `since` is older than the backend retains,
    /// or a storage failure. Drop it to stop watching.
    pub async fn watch(
        &self,
        options: WatchOptions,
    ) -> Result<impl Stream<Item = Result<Event, Error>> + Send + 'static, Error> {
        let mut state = Watching {
            bucket: self.clone(),
            since: options.since,
            prefix: options.prefix,
            poll: options.poll_interval,
            buffer: VecDeque::new(),
            notifications: self.store.pool.commit_notifications(),
            failed: false,
        };
        if state.since.is_none() {
            // Fix "now" before returning, so nothing written after this call
            // returns can be missed.
            state.fetch().await?;
        }
        Ok(futures::stream::unfold(state, |mut state| async move {
            loop {
                if state.failed {
                    return None;
                }
                if let Some(event) = state.buffer.pop_front() {
                    return Some((Ok(event), state));
                }
                match state.fetch().await {
                    Ok(true) => {}
                    Ok(false) => state.wait().await,
                    Err(e) => {
                        state.failed = true;
                        return Some((Err(e), state));
                    }
                }
            }
        }))
    }

    /// Makes the bucket typed: every later write must satisfy `schema` (the
    /// JSON Schema subset of docs/semantics.md). Unless `force`, every live
    /// value must satisfy it too, or [`Error::SchemaViolation`] names the
    /// first that does not. `None` removes the schema. Returns the new
    /// schema version.
    pub async fn set_schema(
        &self,
        schema: Option<&serde_json::Value>,
        force: bool,
    ) -> Result<u64, Error> {
        let text = schema.map(serde_json::Value::to_string);
        let text = text.as_deref();
        bucket_call!(self, |api, store, handle| api
            .call_set_schema(store, handle, text, force))
    }

    /// Keeps the bucket's last `keep` changes (1..=10000) for
    /// [`undo`](Self::undo) and [`redo`](Self::redo); 0 turns history off
    /// and drops what was kept.
    pub async fn set_history(&self, keep: u32) -> Result<(), Error> {
        bucket_call!(self, |api, store, handle| api
            .call_set_history(store, handle, keep))
    }

    /// Undoes the bucket's last change (one commit) by writing the values
    /// from before it, as a new version, which it returns.
    /// [`Error::NotFound`] if there is nothing to undo.
    pub async fn undo(&self) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api.call_undo(store, handle))
    }

    /// Redoes the last undone change; returns the new version.
    pub async fn redo(&self) -> Result<u64, Error> {
        bucket_call!(self, |api, store, handle| api.call_redo(store, handle))
    }

    /// How many changes can be undone and redone.
    pub async fn history(&self) -> Result<(u64, u64), Error> {
        let info = bucket_call!(self, |api, store, handle| api.call_history(store, handle))?;
        Ok((info.undoable, info.redoable))
    }

    /// The bucket's schema and its version, if it is typed.
    pub async fn schema(&self) -> Result<Option<(serde_json::Value, u64)>, Error> {
        let info = bucket_call!(self, |api, store, handle| api
            .call_get_schema(store, handle))?;
        info.map(|i| {
            let schema = serde_json::from_str(&i.json).map_err(|e| Error::Serde(e.to_string()))?;
            Ok((schema, i.version))
        })
        .transpose()
    }

    /// Deletes every key atomically; returns how many existed.
    pub async fn delete_many(&self, keys: &[String]) -> Result<u32, Error> {
        bucket_call!(self, |api, store, handle| api
            .call_delete_many(store, handle, keys))
    }
}

/// A time as RFC 3339 UTC, to the millisecond: `2026-11-23T21:05:00.123Z`.
pub(crate) fn rfc3339(t: std::time::SystemTime) -> String {
    let ms = t
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}
