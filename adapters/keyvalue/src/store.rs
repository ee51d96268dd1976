//! [`KvStorage`]: kvstash's storage semantics over a [`Kv`].
//!
//! The commit point is one compare-and-swap of the head record, from
//! `(v, no intent)` to `(v + 1, intent)`. From then on the commit is decided:
//! whoever finds the intent in the head (the committer, or any later reader
//! or writer) applies its writes, each by a CAS that only replaces an older
//! version, writes its log record, and clears the intent with a CAS. A
//! committer stopped at any point leaves either no trace but garbage that is
//! never read (before the head CAS), or a decided commit that the next
//! caller finishes (after it).

use std::collections::HashSet;

use crate::codec::{self, Head, Intent, Record};
use crate::kv::{Kv, KvError};
pub use crate::storage::{Change, Check, Entry, MAX_SCAN, Storage, StorageError, Write};

/// Most keys one `get-many` may ask for.
pub const MAX_GET_MANY: usize = 10_000;
/// Most writes one commit may carry.
pub const MAX_WRITES: usize = 10_000;
/// What the adapter accepts and keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Commits whose log records are kept for the change feed.
    pub retention: u64,
    /// Largest encoded commit: it travels in one value of the host's store
    /// (the head), so it must fit there, and be readable back.
    pub max_commit_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            retention: 10_000,
            max_commit_bytes: 16 * 1024 * 1024,
        }
    }
}
/// Attempts of a commit or a consistent read before giving up as too busy.
const MAX_ATTEMPTS: usize = 100;
/// Extra reads of the head when the one after a commit's swap fails.
const OUTCOME_READS: usize = 3;

/// A number no other commit's is (64 random bits from std's per-process
/// random keys, which come from `wasi:random` on wasm).
fn nonce() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

impl From<KvError> for StorageError {
    fn from(e: KvError) -> Self {
        StorageError::Unavailable(format!("the key/value store failed: {}", e.0))
    }
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("damaged {what} in the key/value store"))
}

fn busy() -> StorageError {
    StorageError::Unavailable(format!(
        "the key/value store changed under {MAX_ATTEMPTS} attempts in a row; try again"
    ))
}

/// kvstash's storage over a plain key/value store `K`.
#[derive(Debug)]
pub struct KvStorage<K> {
    kv: K,
    limits: Limits,
    /// Commits tried through this adapter (`commits-here`: one adapter
    /// serves one instance of the component, so its own count is all a
    /// cache there needs).
    tried: std::cell::Cell<u64>,
}

/// What reading the head back says about a commit we tried to decide.
enum Outcome<Cas> {
    /// Ours is in the head (not yet applied), with the head's CAS handle.
    Pending(Cas),
    /// Ours is applied (its log record is there).
    Applied,
    /// Another commit took the version, or none did: not ours.
    NotOurs,
}

impl<K: Kv> KvStorage<K> {
    pub fn new(kv: K) -> Self {
        Self::with_limits(kv, Limits::default())
    }

    pub fn with_limits(kv: K, limits: Limits) -> Self {
        Self {
            kv,
            limits: Limits {
                retention: limits.retention.max(1),
                max_commit_bytes: limits.max_commit_bytes.max(1),
            },
            tried: std::cell::Cell::new(0),
        }
    }

    pub fn kv(&self) -> &K {
        &self.kv
    }

    /// The head with its CAS handle. A store's first use creates it.
    fn read_head(&self) -> Result<(K::Cas, Head), StorageError> {
        let mut created = false;
        for _ in 0..MAX_ATTEMPTS {
            let (cas, bytes) = self.kv.read(codec::HEAD)?;
            if let Some(bytes) = bytes {
                let head = codec::decode_head(&bytes).ok_or_else(|| corrupt("head record"))?;
                return Ok((cas, head));
            }
            if !created {
                self.create_head()?;
                created = true;
            }
        }
        Err(StorageError::Unavailable(format!(
            "the store's head record `{}` is missing although `{}` says it was created: \
             a first use stopped half-way, or is still running. If nothing was ever \
             committed, delete `{}` and retry",
            codec::HEAD,
            codec::INIT,
            codec::INIT
        )))
    }

    /// Creates the head once. A swap from an absent key is not a real CAS on
    /// every host (Spin's SQLite store makes it an upsert), so two first
    /// commits could both "win" it; instead the first to increment `INIT`
    /// creates the head, and everyone else waits for it.
    fn create_head(&self) -> Result<(), StorageError> {
        if self.kv.increment(codec::INIT, 1)? == 1 {
            self.kv
                .set(codec::HEAD, &codec::encode_head(&Head::default()))?;
        }
        Ok(())
    }

    /// The store's version, once every decided commit is applied.
    fn settled_version(&self) -> Result<u64, StorageError> {
        for _ in 0..MAX_ATTEMPTS {
            let (cas, head) = self.read_head()?;
            match head.pending {
                None => return Ok(head.version),
                Some(intent) => self.finish(cas, head.version, &intent)?,
            }
        }
        Err(busy())
    }

    /// Applies a decided commit and clears it from the head (unless someone
    /// else already moved the head on).
    fn finish(&self, cas: K::Cas, version: u64, intent: &Intent) -> Result<(), StorageError> {
        self.apply(intent)?;
        let settled = Head {
            version,
            pending: None,
        };
        self.kv.swap(cas, &codec::encode_head(&settled))?;
        Ok(())
    }

    /// Writes a decided commit's records and log record. Idempotent, and
    /// harmless when late: a record is only replaced if it is older.
    fn apply(&self, intent: &Intent) -> Result<(), StorageError> {
        let mut seen = HashSet::new();
        // The last write of a key is the one that stands.
        for write in intent.writes.iter().rev() {
            if !seen.insert(write.key.as_slice()) {
                continue;
            }
            let key = codec::record_key(&write.key);
            let record = codec::encode_record(&Record {
                version: intent.version,
                value: write.value.clone(),
            });
            let mut applied = false;
            for _ in 0..MAX_ATTEMPTS {
                let (cas, current) = self.kv.read(&key)?;
                let current_version = match current {
                    None => 0,
                    Some(bytes) => {
                        codec::decode_record(&bytes)
                            .ok_or_else(|| corrupt("record"))?
                            .version
                    }
                };
                if current_version >= intent.version {
                    applied = true;
                    break;
                }
                // Creating a key is a plain upsert on some hosts: create it
                // only while the commit is still pending (else it is
                // finished, and a newer commit may own the key by now).
                if current_version == 0 && !self.still_pending(intent)? {
                    return Ok(());
                }
                if self.kv.swap(cas, &record)? {
                    applied = true;
                    break;
                }
            }
            if !applied {
                return Err(busy());
            }
        }
        self.kv.set(
            &codec::log_key(intent.version),
            &codec::encode_intent(intent),
        )?;
        if let Some(old) = intent.version.checked_sub(self.limits.retention)
            && old > 0
        {
            self.kv.delete(&codec::log_key(old))?;
        }
        Ok(())
    }

    fn still_pending(&self, intent: &Intent) -> Result<bool, StorageError> {
        let (_, head) = self.read_head()?;
        Ok(head.pending.as_ref() == Some(intent))
    }

    /// Reads the head back after trying to decide `intent`: the host's
    /// answer to the swap is not trusted (a reply can be lost after the
    /// write, and some hosts misreport).
    fn outcome(&self, intent: &Intent) -> Result<Outcome<K::Cas>, StorageError> {
        let (cas, head) = self.read_head()?;
        if head.pending.as_ref() == Some(intent) {
            return Ok(Outcome::Pending(cas));
        }
        if head.version < intent.version {
            return Ok(Outcome::NotOurs);
        }
        match self.kv.get(&codec::log_key(intent.version))? {
            Some(bytes) if codec::decode_intent(&bytes).as_ref() == Some(intent) => {
                Ok(Outcome::Applied)
            }
            Some(_) => Ok(Outcome::NotOurs),
            None if head.version.saturating_sub(intent.version) < self.limits.retention => {
                Ok(Outcome::NotOurs)
            }
            None => Err(StorageError::Unavailable(
                "the outcome of this commit is unknown: its log record is already trimmed".into(),
            )),
        }
    }

    fn record(&self, key: &[u8]) -> Result<Option<Record>, StorageError> {
        match self.kv.get(&codec::record_key(key))? {
            None => Ok(None),
            Some(bytes) => codec::decode_record(&bytes)
                .map(Some)
                .ok_or_else(|| corrupt("record")),
        }
    }

    /// Runs `read` at a settled version and returns its result if no record
    /// it saw is newer (else a commit interleaved: read again).
    fn consistent<T>(
        &self,
        read: impl Fn(&Self) -> Result<(T, u64), StorageError>,
    ) -> Result<T, StorageError> {
        for _ in 0..MAX_ATTEMPTS {
            let version = self.settled_version()?;
            let (value, newest) = read(self)?;
            if newest <= version {
                return Ok(value);
            }
        }
        Err(busy())
    }

    pub fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.settled_version()?;
        Ok(self.record(key)?.and_then(|r| live(key.to_vec(), r)))
    }

    pub fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        if keys.len() > MAX_GET_MANY {
            return Err(StorageError::Invalid(format!(
                "{} keys in one get-many, at most {MAX_GET_MANY}",
                keys.len()
            )));
        }
        self.consistent(|this| {
            let names: Vec<String> = keys.iter().map(|k| codec::record_key(k)).collect();
            let values = this.kv.get_many(&names)?;
            let mut newest = 0;
            let mut out = Vec::with_capacity(keys.len());
            for (key, value) in keys.iter().zip(values) {
                let record = match value {
                    None => None,
                    Some(bytes) => {
                        Some(codec::decode_record(&bytes).ok_or_else(|| corrupt("record"))?)
                    }
                };
                newest = newest.max(record.as_ref().map_or(0, |r| r.version));
                out.push(record.and_then(|r| live(key.clone(), r)));
            }
            Ok((out, newest))
        })
    }

    /// Every live record in range, in order. A plain key/value store has no
    /// order: this lists every key of the store and sorts (see docs/backends.md).
    pub fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let limit = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(usize::MAX);
        self.consistent(|this| {
            let mut keys: Vec<Vec<u8>> = this
                .kv
                .keys(codec::RECORDS)?
                .iter()
                .filter_map(|name| codec::parse_record_key(name))
                .filter(|k| k.as_slice() >= start && end.is_none_or(|end| k.as_slice() < end))
                .collect();
            keys.sort_unstable();
            if reverse {
                keys.reverse();
            }
            let mut out = Vec::new();
            let mut newest = 0;
            // Tombstones are skipped, so read in chunks until `limit` are live.
            for chunk in keys.chunks(limit.clamp(1, 1000)) {
                if out.len() >= limit {
                    break;
                }
                let names: Vec<String> = chunk.iter().map(|k| codec::record_key(k)).collect();
                for (key, value) in chunk.iter().zip(this.kv.get_many(&names)?) {
                    let Some(bytes) = value else { continue };
                    let record = codec::decode_record(&bytes).ok_or_else(|| corrupt("record"))?;
                    newest = newest.max(record.version);
                    if out.len() < limit {
                        out.extend(live(key.clone(), record));
                    }
                }
            }
            Ok((out, newest))
        })
    }

    /// All writes if every check holds, else nothing; the new version.
    pub fn commit(&self, checks: &[Check], writes: Vec<Write>) -> Result<u64, StorageError> {
        if writes.is_empty() {
            return Err(StorageError::Invalid(
                "a commit needs at least one write".into(),
            ));
        }
        if writes.len() > MAX_WRITES {
            return Err(StorageError::Invalid(format!(
                "{} writes in one commit, at most {MAX_WRITES}",
                writes.len()
            )));
        }
        let mut intent = Intent {
            version: 0,
            nonce: nonce(),
            writes,
        };
        let size = codec::encode_intent(&intent).len();
        if u64::try_from(size).unwrap_or(u64::MAX) > self.limits.max_commit_bytes {
            return Err(StorageError::Invalid(format!(
                "a commit of {size} bytes; this store takes at most {} (`max_commit_bytes`)",
                self.limits.max_commit_bytes
            )));
        }
        for _ in 0..MAX_ATTEMPTS {
            let (cas, head) = self.read_head()?;
            if let Some(pending) = head.pending {
                self.finish(cas, head.version, &pending)?;
                continue;
            }
            for (index, check) in checks.iter().enumerate() {
                let (key, wanted) = match check {
                    Check::VersionIs(key, version) => (key, Some(*version)),
                    Check::Absent(key) => (key, None),
                };
                let current = self
                    .record(key)?
                    .filter(|r| r.value.is_some())
                    .map(|r| r.version);
                if current != wanted {
                    return Err(StorageError::Conflict {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        current,
                    });
                }
            }
            intent.version = head
                .version
                .checked_add(1)
                .ok_or_else(|| StorageError::Unavailable("versions exhausted".into()))?;
            let decided = Head {
                version: intent.version,
                pending: Some(intent.clone()),
            };
            let swapped = self.kv.swap(cas, &codec::encode_head(&decided));
            // Whatever the host answered, the head says what happened; a
            // lost reply to that read is retried before giving up.
            let mut outcome = self.outcome(&intent);
            for _ in 0..OUTCOME_READS {
                if outcome.is_ok() {
                    break;
                }
                outcome = self.outcome(&intent);
            }
            let outcome = match (outcome, swapped) {
                (Ok(outcome), _) => outcome,
                (Err(_), Err(e)) => return Err(e.into()),
                (Err(e), Ok(_)) => return Err(e),
            };
            match outcome {
                Outcome::NotOurs => continue,
                Outcome::Applied => return Ok(intent.version),
                Outcome::Pending(cas) => {
                    // Decided. Finishing now is a courtesy: if it fails, the
                    // next caller finishes it, so the commit stands either way.
                    let _ = self.finish(cas, intent.version, &intent);
                    return Ok(intent.version);
                }
            }
        }
        Err(busy())
    }

    pub fn current_version(&self) -> Result<u64, StorageError> {
        self.settled_version()
    }

    /// Every write of every commit after `since`, whole commits, stopping
    /// at the first commit boundary at or after `limit` changes.
    pub fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        let version = self.settled_version()?;
        if since >= version {
            return Ok(Vec::new());
        }
        let oldest = version
            .saturating_sub(self.limits.retention)
            .saturating_add(1);
        if since.saturating_add(1) < oldest {
            return Err(StorageError::Compacted { oldest });
        }
        let limit = usize::try_from(limit.max(1)).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut next = since.saturating_add(1);
        while next <= version && out.len() < limit {
            let last = version.min(next.saturating_add(99));
            let names: Vec<String> = (next..=last).map(codec::log_key).collect();
            for (v, value) in (next..=last).zip(self.kv.get_many(&names)?) {
                if out.len() >= limit {
                    break;
                }
                // Trimmed while we read: the feed is compacted past it.
                let bytes = value.ok_or(StorageError::Compacted {
                    oldest: v.saturating_add(1),
                })?;
                let intent = codec::decode_intent(&bytes).ok_or_else(|| corrupt("log record"))?;
                out.extend(intent.writes.into_iter().map(|w| Change {
                    version: v,
                    key: w.key,
                    value: w.value,
                }));
            }
            next = last.saturating_add(1);
        }
        Ok(out)
    }
}

/// The entry a record is, unless it is a tombstone.
fn live(key: Vec<u8>, record: Record) -> Option<Entry> {
    record.value.map(|value| Entry {
        key,
        value,
        version: record.version,
    })
}

/// The engine's storage seam, so the shared export (and any caller of the
/// engine's `Storage`) uses this adapter like any other backend.
impl<K: Kv> Storage for KvStorage<K> {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        KvStorage::get(self, key)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        KvStorage::get_many(self, keys)
    }
    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        KvStorage::scan(self, start, end, limit, reverse)
    }
    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        self.tried.set(self.tried.get().wrapping_add(1));
        KvStorage::commit(self, &checks, writes)
    }
    fn current_version(&self) -> Result<u64, StorageError> {
        KvStorage::current_version(self)
    }
    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        KvStorage::changes(self, since, limit)
    }
    fn commits_here(&self) -> u64 {
        self.tried.get()
    }
}
