//! The `caching` layer: the records of a slow store, kept in the
//! component's memory in front of it.
//!
//! What it promises: a read it answers from the cache returns a value that
//! was the store's at most `timeout_ms` before (per bucket, from its
//! [`CachePolicy`]), whoever changed the store meanwhile, this instance,
//! another instance of this host or another host.
//!
//! How: every cached entry remembers when it was last *known current*: when
//! it was read from the store, or written through this layer (write-through:
//! a commit's writes are cached at its version), or when a **sync** found it
//! unchanged. A sync reads the store's change feed from the version of the
//! last sync on and drops every key it names, so every entry still cached is
//! known current as of the sync's start. A read whose entry is older than
//! its timeout syncs first (at most once per timeout: one feed call renews
//! every entry), and a read of a key not cached goes to the store. Only
//! reads of data records (`get`, `get-many`) are cached; scans, the feed and
//! the engine's own records go straight to the store.
//!
//! Commits go to the store, their checks included, so a stale entry can
//! make a conditional write fail but never succeed wrongly: a conflict
//! drops the keys it checked, so the engine's retry reads them afresh. A
//! feed that no longer reaches back to the last sync (`compacted`), or that
//! has more to say than a few pages, empties the cache instead.
//!
//! Eviction: least recently used first, per policy (buckets with a policy
//! of their own have their own entries and limits), down to
//! `cull_to_percent` of the limits once either is passed.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;

use super::Clock;
use super::keys;
use super::storage::{Change, Check, Entry, MAX_SCAN, Storage, StorageError, Write};

/// What a caching layer keeps, and for how long.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachePolicy {
    /// Whether these keys are cached at all.
    pub cache: bool,
    /// Most entries kept ...
    pub max_entries: u64,
    /// ... and most bytes of keys and values.
    pub max_bytes: u64,
    /// When either is passed, the least recently used entries go until
    /// both are at this percentage of their maximum.
    pub cull_to_percent: u8,
    /// The longest a value is served after it was last known current.
    pub timeout_ms: u64,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self {
            cache: true,
            max_entries: 10_000,
            max_bytes: 32 << 20,
            cull_to_percent: 75,
            timeout_ms: 1_000,
        }
    }
}

/// A caching layer's counters (this instance's).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the store (not cached, or too old).
    pub misses: u64,
    /// Entries dropped to stay within the limits.
    pub evictions: u64,
    /// Entries dropped because the store changed them (the feed, a
    /// conflict, a commit whose outcome is unknown).
    pub invalidations: u64,
    /// Reads of the store's change feed.
    pub syncs: u64,
    /// Entries and bytes held now.
    pub entries: u64,
    pub bytes: u64,
}

/// Most pages of the feed one sync reads before it empties the cache
/// instead.
const SYNC_PAGES: usize = 4;

/// Bytes an entry is charged beyond its key and value.
const ENTRY_OVERHEAD: u64 = 64;

pub struct Caching<S, C> {
    main: S,
    clock: C,
    default: Option<Part>,
    buckets: BTreeMap<String, Option<Part>>,
    sync: Cell<Synced>,
    stats: Cell<CacheStats>,
}

#[derive(Clone, Copy, Debug, Default)]
struct Synced {
    /// The store's version the feed was read to; `None` before the first
    /// entry was cached.
    version: Option<u64>,
    /// When that read started (monotonic µs): every entry still cached was
    /// current then.
    at_us: u64,
    /// The store's `commits_here` then, or after this layer's own commit
    /// if nobody else's came between: when it moves, another instance of
    /// this host wrote, and the next read syncs first.
    here: u64,
}

/// The entries of one policy.
struct Part {
    policy: CachePolicy,
    lru: RefCell<Lru>,
}

/// Ordered maps, not hash maps: no hash a key could be chosen to flood,
/// and no random seed to import from the host.
#[derive(Default)]
struct Lru {
    slots: BTreeMap<Vec<u8>, Slot>,
    /// Use order: tick → key.
    order: BTreeMap<u64, Vec<u8>>,
    tick: u64,
    bytes: u64,
}

struct Slot {
    /// The record, or `None`: the key was absent.
    record: Option<(Vec<u8>, u64)>,
    /// When it was last known current (monotonic µs).
    known_us: u64,
    tick: u64,
    bytes: u64,
}

impl Lru {
    fn remove(&mut self, key: &[u8]) -> bool {
        match self.slots.remove(key) {
            Some(slot) => {
                self.order.remove(&slot.tick);
                self.bytes -= slot.bytes;
                true
            }
            None => false,
        }
    }

    fn clear(&mut self) -> u64 {
        let n = self.slots.len() as u64;
        self.slots.clear();
        self.order.clear();
        self.bytes = 0;
        n
    }
}

impl<S: Storage, C: Clock> Caching<S, C> {
    pub fn new(
        main: S,
        clock: C,
        policy: CachePolicy,
        buckets: BTreeMap<String, CachePolicy>,
    ) -> Self {
        let part = |policy: CachePolicy| {
            (policy.cache && policy.timeout_ms > 0 && policy.max_entries > 0).then(|| Part {
                policy,
                lru: RefCell::new(Lru::default()),
            })
        };
        Self {
            main,
            clock,
            default: part(policy),
            buckets: buckets.into_iter().map(|(b, p)| (b, part(p))).collect(),
            sync: Cell::new(Synced::default()),
            stats: Cell::new(CacheStats::default()),
        }
    }

    /// This layer's counters.
    pub fn stats(&self) -> CacheStats {
        let mut stats = self.stats.get();
        for part in self.parts() {
            let lru = part.lru.borrow();
            stats.entries += lru.slots.len() as u64;
            stats.bytes += lru.bytes;
        }
        stats
    }

    fn count(&self, f: impl FnOnce(&mut CacheStats)) {
        let mut stats = self.stats.get();
        f(&mut stats);
        self.stats.set(stats);
    }

    fn parts(&self) -> impl Iterator<Item = &Part> {
        self.default
            .iter()
            .chain(self.buckets.values().filter_map(Option::as_ref))
    }

    /// The entries `key` is cached in, if it is cached at all.
    fn part(&self, key: &[u8]) -> Option<&Part> {
        let bucket = keys::bucket_of(key)?;
        match self.buckets.get(bucket) {
            Some(own) => own.as_ref(),
            None => self.default.as_ref(),
        }
    }

    /// The cached answer for `key`, if it is recent enough at `now_us`.
    fn fresh(&self, part: &Part, key: &[u8], now_us: u64) -> Option<Option<Entry>> {
        let synced_us = self.sync.get().at_us;
        let mut lru = part.lru.borrow_mut();
        let lru = &mut *lru;
        let slot = lru.slots.get_mut(key)?;
        let known = slot.known_us.max(synced_us);
        if now_us.saturating_sub(known) >= part.policy.timeout_ms.saturating_mul(1000) {
            return None;
        }
        lru.tick += 1;
        lru.order.remove(&slot.tick);
        slot.tick = lru.tick;
        lru.order.insert(slot.tick, key.to_vec());
        Some(slot.record.as_ref().map(|(value, version)| Entry {
            key: key.to_vec(),
            value: value.clone(),
            version: *version,
        }))
    }

    /// Whether `key` is cached (fresh or not).
    fn holds(&self, part: &Part, key: &[u8]) -> bool {
        part.lru.borrow().slots.contains_key(key)
    }

    /// Caches what the store answered for `key`, known current at `known_us`.
    fn put(&self, key: &[u8], record: Option<(&[u8], u64)>, known_us: u64) {
        let Some(part) = self.part(key) else {
            return;
        };
        let bytes = ENTRY_OVERHEAD + key.len() as u64 + record.map_or(0, |(v, _)| v.len() as u64);
        let mut lru = part.lru.borrow_mut();
        lru.remove(key);
        if bytes > part.policy.max_bytes {
            return;
        }
        lru.tick += 1;
        let tick = lru.tick;
        lru.order.insert(tick, key.to_vec());
        lru.bytes += bytes;
        lru.slots.insert(
            key.to_vec(),
            Slot {
                record: record.map(|(v, version)| (v.to_vec(), version)),
                known_us,
                tick,
                bytes,
            },
        );
        let policy = &part.policy;
        if lru.slots.len() as u64 > policy.max_entries || lru.bytes > policy.max_bytes {
            let percent = u64::from(policy.cull_to_percent);
            let entries = policy.max_entries.saturating_mul(percent) / 100;
            let bytes = policy.max_bytes.saturating_mul(percent) / 100;
            let mut evicted = 0;
            while lru.slots.len() as u64 > entries || lru.bytes > bytes {
                let Some((_, oldest)) = lru.order.pop_first() else {
                    break;
                };
                if let Some(slot) = lru.slots.remove(&oldest) {
                    lru.bytes -= slot.bytes;
                    evicted += 1;
                }
            }
            drop(lru);
            self.count(|s| s.evictions += evicted);
        }
    }

    fn invalidate<'k>(&self, keys: impl IntoIterator<Item = &'k [u8]>) {
        let mut dropped = 0;
        for key in keys {
            if let Some(part) = self.part(key)
                && part.lru.borrow_mut().remove(key)
            {
                dropped += 1;
            }
        }
        self.count(|s| s.invalidations += dropped);
    }

    fn clear(&self) {
        let dropped: u64 = self.parts().map(|p| p.lru.borrow_mut().clear()).sum();
        self.count(|s| s.invalidations += dropped);
    }

    /// Before the first entry is cached: where the feed is now, so a sync
    /// sees every commit after it.
    fn start_syncing(&self, now_us: u64) -> Result<(), StorageError> {
        if self.sync.get().version.is_none() {
            let here = self.main.commits_here();
            let version = self.main.current_version()?;
            self.sync.set(Synced {
                version: Some(version),
                at_us: now_us,
                here,
            });
        }
        Ok(())
    }

    /// Whether the entries may be used: nothing was cached yet, or no
    /// other instance of this host wrote since the last sync, or a sync
    /// (made now) found what they wrote. False if the store could not be
    /// asked: read it instead.
    fn usable(&self, now_us: u64) -> bool {
        let synced = self.sync.get();
        synced.version.is_none() || self.main.commits_here() == synced.here || self.sync(now_us)
    }

    /// Reads the feed since the last sync and drops what it names; false
    /// if the store could not be asked (the caller reads the store). It
    /// reads until an empty page: the storage contract lets a backend
    /// answer a short page before the end (a byte limit).
    fn sync(&self, now_us: u64) -> bool {
        let Synced {
            version: Some(mut since),
            ..
        } = self.sync.get()
        else {
            return false;
        };
        let here = self.main.commits_here();
        self.count(|s| s.syncs += 1);
        for _ in 0..SYNC_PAGES {
            let changes = match self.main.changes(since, MAX_SCAN) {
                Ok(changes) => changes,
                Err(StorageError::Compacted { .. }) => break,
                Err(_) => return false,
            };
            let Some(last) = changes.last() else {
                self.sync.set(Synced {
                    version: Some(since),
                    at_us: now_us,
                    here,
                });
                return true;
            };
            since = last.version;
            self.invalidate(changes.iter().map(|c| c.key.as_slice()));
        }
        // Too far behind to follow (or compacted): start again from now.
        let Ok(version) = self.main.current_version() else {
            return false;
        };
        self.clear();
        self.sync.set(Synced {
            version: Some(version),
            at_us: now_us,
            here,
        });
        true
    }

    /// Whether a sync may help at `now_us` for an entry of `part`: the last
    /// one is older than the entry's timeout.
    fn sync_due(&self, part: &Part, now_us: u64) -> bool {
        let synced = self.sync.get();
        synced.version.is_some()
            && now_us.saturating_sub(synced.at_us) >= part.policy.timeout_ms.saturating_mul(1000)
    }
}

impl<S: Storage, C: Clock> Storage for Caching<S, C> {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        let Some(part) = self.part(key) else {
            return self.main.get(key);
        };
        let now = self.clock.monotonic_us();
        // A key not cached is read from the store without a sync: what it
        // answers is current, and the next sync covers what comes after
        // (a sync can cost several calls on a remote store, and a writer
        // that lost a race finds its key dropped).
        if self.holds(part, key) && self.usable(now) {
            if let Some(hit) = self.fresh(part, key, now) {
                self.count(|s| s.hits += 1);
                return Ok(hit);
            }
            if self.sync_due(part, now)
                && self.sync(now)
                && let Some(hit) = self.fresh(part, key, now)
            {
                self.count(|s| s.hits += 1);
                return Ok(hit);
            }
        }
        self.count(|s| s.misses += 1);
        self.start_syncing(now)?;
        let entry = self.main.get(key)?;
        self.put(
            key,
            entry.as_ref().map(|e| (e.value.as_slice(), e.version)),
            now,
        );
        Ok(entry)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        let now = self.clock.monotonic_us();
        let look = |answers: &mut Vec<Option<Option<Entry>>>| {
            for (answer, key) in answers.iter_mut().zip(keys) {
                if answer.is_none()
                    && let Some(part) = self.part(key)
                {
                    *answer = self.fresh(part, key, now);
                }
            }
        };
        let mut answers: Vec<Option<Option<Entry>>> = vec![None; keys.len()];
        let held = keys
            .iter()
            .any(|key| self.part(key).is_some_and(|part| self.holds(part, key)));
        if held && self.usable(now) {
            look(&mut answers);
            let stale = answers.iter().zip(keys).any(|(answer, key)| {
                answer.is_none()
                    && self
                        .part(key)
                        .is_some_and(|part| self.holds(part, key) && self.sync_due(part, now))
            });
            if stale && self.sync(now) {
                look(&mut answers);
            }
        }
        let missing: Vec<Vec<u8>> = answers
            .iter()
            .zip(keys)
            .filter(|(answer, _)| answer.is_none())
            .map(|(_, key)| key.clone())
            .collect();
        let hits = (keys.len() - missing.len()) as u64;
        let cached = missing.iter().filter(|k| self.part(k).is_some()).count() as u64;
        self.count(|s| {
            s.hits += hits;
            s.misses += cached;
        });
        if missing.is_empty() {
            return Ok(answers.into_iter().map(Option::unwrap_or_default).collect());
        }
        if cached > 0 {
            self.start_syncing(now)?;
        }
        let mut fetched = self.main.get_many(&missing)?.into_iter();
        let mut out = Vec::with_capacity(keys.len());
        for (answer, key) in answers.into_iter().zip(keys) {
            match answer {
                Some(hit) => out.push(hit),
                None => {
                    let entry = fetched.next().ok_or_else(|| {
                        StorageError::Unavailable("the store answered fewer keys than asked".into())
                    })?;
                    self.put(
                        key,
                        entry.as_ref().map(|e| (e.value.as_slice(), e.version)),
                        now,
                    );
                    out.push(entry);
                }
            }
        }
        Ok(out)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        self.main.scan(start, end, limit, reverse)
    }

    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        let now = self.clock.monotonic_us();
        let checked: Vec<Vec<u8>> = checks
            .iter()
            .filter_map(|c| {
                let key = match c {
                    Check::VersionIs(key, _) | Check::Absent(key) => key,
                };
                self.part(key).map(|_| key.clone())
            })
            .collect();
        let written: Vec<(Vec<u8>, Option<Vec<u8>>)> = writes
            .iter()
            .filter(|w| self.part(&w.key).is_some())
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect();
        if !written.is_empty() {
            self.start_syncing(now)?;
        }
        let before = self.main.commits_here();
        match self.main.commit(checks, writes) {
            Ok(version) => {
                // Only this commit came between: the entries stay usable
                // without a sync.
                let mut synced = self.sync.get();
                let after = self.main.commits_here();
                if synced.here == before && after == before.wrapping_add(1) {
                    synced.here = after;
                    self.sync.set(synced);
                }
                for (key, value) in &written {
                    self.put(key, value.as_deref().map(|v| (v, version)), now);
                }
                Ok(version)
            }
            Err(e @ StorageError::Conflict { .. }) => {
                self.invalidate(checked.iter().map(Vec::as_slice));
                Err(e)
            }
            Err(e) => {
                // It may or may not have been made.
                self.invalidate(
                    checked
                        .iter()
                        .map(Vec::as_slice)
                        .chain(written.iter().map(|(k, _)| k.as_slice())),
                );
                Err(e)
            }
        }
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        self.main.current_version()
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        self.main.changes(since, limit)
    }

    fn commits_here(&self) -> u64 {
        self.main.commits_here()
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::{ManualClock, MemStorage};

    /// A storage that counts the calls that reach it.
    struct Counted {
        inner: Rc<MemStorage>,
        gets: Rc<Cell<u64>>,
        /// `commits_here`: what the test says this host has committed.
        here: Rc<Cell<u64>>,
    }

    impl Storage for Counted {
        fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
            self.gets.set(self.gets.get() + 1);
            self.inner.get(key)
        }
        fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
            self.gets.set(self.gets.get() + keys.len() as u64);
            self.inner.get_many(keys)
        }
        fn scan(
            &self,
            start: &[u8],
            end: Option<&[u8]>,
            limit: u32,
            reverse: bool,
        ) -> Result<Vec<Entry>, StorageError> {
            self.inner.scan(start, end, limit, reverse)
        }
        fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
            self.inner.commit(checks, writes)
        }
        fn current_version(&self) -> Result<u64, StorageError> {
            self.inner.current_version()
        }
        fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
            self.inner.changes(since, limit)
        }
        fn commits_here(&self) -> u64 {
            self.here.get()
        }
    }

    struct Setup {
        store: Rc<MemStorage>,
        clock: Rc<ManualClock>,
        gets: Rc<Cell<u64>>,
        cache: Caching<Counted, Rc<ManualClock>>,
    }

    fn setup(policy: CachePolicy, buckets: &[(&str, CachePolicy)]) -> Setup {
        let store = Rc::new(MemStorage::with_retention(100));
        let clock = Rc::new(ManualClock::at(1_000_000));
        let gets = Rc::new(Cell::new(0));
        // Commits behind the cache's back are another host's: this one
        // counts none.
        let cache = Caching::new(
            Counted {
                inner: store.clone(),
                gets: gets.clone(),
                here: Rc::new(Cell::new(0)),
            },
            clock.clone(),
            policy,
            buckets
                .iter()
                .map(|(b, p)| ((*b).to_string(), p.clone()))
                .collect(),
        );
        Setup {
            store,
            clock,
            gets,
            cache,
        }
    }

    fn key(bucket: &str, k: &str) -> Vec<u8> {
        keys::data_key(bucket, k)
    }

    fn put(s: &dyn Storage, key: &[u8], value: &str) -> u64 {
        s.commit(
            vec![],
            vec![Write {
                key: key.to_vec(),
                value: Some(value.as_bytes().to_vec()),
            }],
        )
        .unwrap()
    }

    fn value(s: &dyn Storage, key: &[u8]) -> Option<String> {
        s.get(key)
            .unwrap()
            .map(|e| String::from_utf8(e.value).unwrap())
    }

    #[test]
    fn reads_are_served_from_memory_until_their_timeout() {
        let s = setup(CachePolicy::default(), &[]);
        let k = key("b", "k");
        put(&*s.store, &k, "1");
        assert_eq!(value(&s.cache, &k).as_deref(), Some("1"));
        assert_eq!(value(&s.cache, &k).as_deref(), Some("1"));
        assert_eq!(s.gets.get(), 1, "the second read was a hit");
        // Absent keys are cached too.
        let absent = key("b", "none");
        assert_eq!(value(&s.cache, &absent), None);
        assert_eq!(value(&s.cache, &absent), None);
        assert_eq!(s.gets.get(), 2);
        let stats = s.cache.stats();
        assert_eq!((stats.hits, stats.misses, stats.entries), (2, 2, 2));
    }

    /// The staleness bound: a change made behind the cache's back (another
    /// host) is served for less than the timeout, never longer.
    #[test]
    fn a_change_elsewhere_is_seen_within_the_timeout() {
        let s = setup(CachePolicy::default(), &[]);
        let k = key("b", "k");
        put(&*s.store, &k, "1");
        assert_eq!(value(&s.cache, &k).as_deref(), Some("1"));
        put(&*s.store, &k, "2"); // not through the cache
        s.clock.advance(999);
        assert_eq!(value(&s.cache, &k).as_deref(), Some("1"), "within 1 s");
        s.clock.advance(1);
        assert_eq!(
            value(&s.cache, &k).as_deref(),
            Some("2"),
            "at 1 s, never later"
        );
        assert_eq!(s.cache.stats().syncs, 1);
    }

    /// A sync renews every entry the feed does not name: one feed read,
    /// not one read per key.
    #[test]
    fn a_sync_renews_what_did_not_change() {
        let s = setup(CachePolicy::default(), &[]);
        let keys: Vec<Vec<u8>> = (0..10).map(|i| key("b", &i.to_string())).collect();
        for k in &keys {
            put(&*s.store, k, "v");
        }
        s.cache.get_many(&keys).unwrap();
        assert_eq!(s.gets.get(), 10);
        put(&*s.store, &keys[3], "changed");
        s.clock.advance(5_000);
        let got = s.cache.get_many(&keys).unwrap();
        assert_eq!(s.gets.get(), 11, "only the changed key was read again");
        assert_eq!(got[3].as_ref().unwrap().value, b"changed");
        assert_eq!(s.cache.stats().invalidations, 1);
    }

    #[test]
    fn writes_go_through_and_are_cached() {
        let s = setup(CachePolicy::default(), &[]);
        let k = key("b", "k");
        let version = put(&s.cache, &k, "mine");
        assert_eq!(s.store.get(&k).unwrap().unwrap().version, version);
        assert_eq!(value(&s.cache, &k).as_deref(), Some("mine"));
        assert_eq!(s.gets.get(), 0, "the write was cached");
        s.cache
            .commit(
                vec![],
                vec![Write {
                    key: k.clone(),
                    value: None,
                }],
            )
            .unwrap();
        assert_eq!(value(&s.cache, &k), None);
        assert_eq!(s.gets.get(), 0, "so was the delete");
    }

    /// A stale entry can make a conditional write fail, never succeed: the
    /// store checks it; the conflict drops the entry, so a retry reads the
    /// store's value.
    #[test]
    fn a_conflict_drops_what_it_checked() {
        let s = setup(CachePolicy::default(), &[]);
        let k = key("b", "k");
        put(&*s.store, &k, "1");
        let read = s.cache.get(&k).unwrap().unwrap();
        put(&*s.store, &k, "2");
        let e = s
            .cache
            .commit(
                vec![Check::VersionIs(k.clone(), read.version)],
                vec![Write {
                    key: k.clone(),
                    value: Some(b"3".to_vec()),
                }],
            )
            .unwrap_err();
        assert!(matches!(e, StorageError::Conflict { .. }), "{e:?}");
        assert_eq!(value(&s.cache, &k).as_deref(), Some("2"), "read afresh");
    }

    #[test]
    fn the_least_recently_used_go_first_down_to_the_cull_size() {
        let policy = CachePolicy {
            max_entries: 10,
            cull_to_percent: 50,
            ..CachePolicy::default()
        };
        let s = setup(policy, &[]);
        let keys: Vec<Vec<u8>> = (0..11).map(|i| key("b", &i.to_string())).collect();
        for k in &keys[..10] {
            s.cache.get(k).unwrap();
        }
        s.cache.get(&keys[0]).unwrap(); // now the most recently used
        s.cache.get(&keys[10]).unwrap(); // the 11th: cull to 5
        let stats = s.cache.stats();
        assert_eq!((stats.entries, stats.evictions), (5, 6));
        let before = s.gets.get();
        s.cache.get(&keys[0]).unwrap();
        s.cache.get(&keys[10]).unwrap();
        assert_eq!(s.gets.get(), before, "the recently used stayed");
        s.cache.get(&keys[1]).unwrap();
        assert_eq!(s.gets.get(), before + 1, "the oldest went");
    }

    #[test]
    fn bytes_are_bounded_too() {
        let policy = CachePolicy {
            max_bytes: 1000,
            ..CachePolicy::default()
        };
        let s = setup(policy, &[]);
        let big = "x".repeat(300);
        for i in 0..10 {
            let k = key("b", &i.to_string());
            put(&*s.store, &k, &big);
            s.cache.get(&k).unwrap();
            assert!(s.cache.stats().bytes <= 1000);
        }
        // A value larger than the whole cache is not kept at all.
        let huge = key("b", "huge");
        put(&*s.store, &huge, &"x".repeat(2000));
        s.cache.get(&huge).unwrap();
        s.cache.get(&huge).unwrap();
        assert!(s.cache.stats().bytes <= 1000);
    }

    #[test]
    fn buckets_have_policies_of_their_own() {
        let s = setup(
            CachePolicy::default(),
            &[
                (
                    "sessions",
                    CachePolicy {
                        cache: false,
                        ..CachePolicy::default()
                    },
                ),
                (
                    "config",
                    CachePolicy {
                        timeout_ms: 60_000,
                        ..CachePolicy::default()
                    },
                ),
            ],
        );
        let session = key("sessions", "s");
        let config = key("config", "c");
        let other = key("other", "o");
        for k in [&session, &config, &other] {
            put(&*s.store, k, "1");
            s.cache.get(k).unwrap();
            s.cache.get(k).unwrap();
        }
        assert_eq!(s.gets.get(), 4, "sessions were never cached");
        for k in [&session, &config, &other] {
            put(&*s.store, k, "2");
        }
        s.clock.advance(30_000);
        assert_eq!(value(&s.cache, &config).as_deref(), Some("1"), "60 s");
        assert_eq!(value(&s.cache, &other).as_deref(), Some("2"), "1 s");
        s.clock.advance(30_000);
        assert_eq!(value(&s.cache, &config).as_deref(), Some("2"));
    }

    #[test]
    fn a_compacted_feed_empties_the_cache() {
        let s = setup(CachePolicy::default(), &[]);
        let k = key("b", "k");
        put(&*s.store, &k, "1");
        s.cache.get(&k).unwrap();
        for i in 0..150 {
            put(&*s.store, &key("b", &format!("other{i}")), "x"); // past the retention of 100
        }
        put(&*s.store, &k, "2");
        s.clock.advance(1_000);
        assert_eq!(value(&s.cache, &k).as_deref(), Some("2"));
    }

    /// The engine's own records (metadata, locks, the expiry index) are not
    /// cached.
    #[test]
    fn only_data_records_are_cached() {
        let s = setup(CachePolicy::default(), &[]);
        let meta = b"m\0bucket".to_vec();
        s.cache.get(&meta).unwrap();
        s.cache.get(&meta).unwrap();
        assert_eq!(s.gets.get(), 2);
        assert_eq!(s.cache.stats(), CacheStats::default());
    }

    /// Another instance of this host (its own cache over the same store):
    /// a write through one is seen by the other's next read, without
    /// waiting for the timeout (`commits_here` moved).
    type Layer = Caching<Rc<MemStorage>, Rc<ManualClock>>;

    /// Two instances' caching layers on one store (a minute's timeout).
    fn two_instances() -> (Layer, Layer) {
        let store = Rc::new(MemStorage::default());
        let clock = Rc::new(ManualClock::at(1_000_000));
        let layer = || {
            Caching::new(
                store.clone(),
                clock.clone(),
                CachePolicy {
                    timeout_ms: 60_000,
                    ..CachePolicy::default()
                },
                BTreeMap::new(),
            )
        };
        (layer(), layer())
    }

    #[test]
    fn another_instances_writes_are_seen_at_once() {
        let (a, b) = two_instances();
        let k = key("b", "k");
        put(&a, &k, "1");
        assert_eq!(value(&b, &k).as_deref(), Some("1"));
        put(&a, &k, "2");
        assert_eq!(value(&b, &k).as_deref(), Some("2"), "b synced");
        assert_eq!(value(&a, &k).as_deref(), Some("2"));
        let (sa, sb) = (a.stats(), b.stats());
        assert_eq!(sa.syncs, 0, "a saw only its own commits");
        assert_eq!((sb.syncs, sb.invalidations), (1, 1));
        assert_eq!(value(&b, &k).as_deref(), Some("2"));
        assert_eq!(b.stats().hits, 1, "and then served it from memory");
    }

    /// A key the cache does not hold is read from the store without a
    /// sync, even after other instances wrote; the next read of a key it
    /// does hold syncs, and drops what they changed.
    #[test]
    fn a_key_not_cached_is_read_without_a_sync() {
        let (a, b) = two_instances();
        let (held, other) = (key("b", "held"), key("b", "other"));
        put(&a, &held, "1");
        put(&a, &other, "1");
        assert_eq!(value(&b, &held).as_deref(), Some("1"));
        put(&a, &held, "2");
        put(&a, &other, "2");
        assert_eq!(value(&b, &other).as_deref(), Some("2"), "not held: read");
        assert_eq!(b.stats().syncs, 0);
        assert_eq!(value(&b, &held).as_deref(), Some("2"), "held: synced");
        let stats = b.stats();
        assert_eq!((stats.syncs, stats.invalidations), (1, 2), "{stats:?}");
        assert_eq!(value(&b, &other).as_deref(), Some("2"));
    }
}
