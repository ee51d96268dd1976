//! The `migrating` layer: a store moving from one backend to another with
//! no downtime. Reads come from `from`; every commit goes to `from` (its
//! checks are evaluated there: `from` stays the truth), and then the keys
//! it wrote are copied to `to`. `kvstash migrate` copies everything else
//! ([`Migrating::copy_page`]), catches up from `from`'s change feed
//! ([`Migrating::catch_up`]) and compares the two ([`Migrating::verify_page`]).
//!
//! **Nothing older wins.** Every write into `to`, the layer's and the
//! migration job's alike, is the same step, [`Migrating::copy`]: read the
//! keys' versions in `to`, *then* their values in `from`, then commit them
//! to `to` on condition that their `to` versions did not change. Two
//! copies of one key race only through that condition: the one that read
//! `to` first and commits second fails and reads again, so the value that
//! stays in `to` was read from `from` after every copy that came before
//! it. A write to `from` made after a copy read it is followed by its own
//! copy (or, if that failed, by the job's catch-up from the feed). So once
//! the job has caught up, `to` holds what `from` holds, key by key, whatever
//! was written meanwhile.
//!
//! **A later write takes over.** The layer's copy after a commit at
//! version `v` only has to bring `to` up to a value read from `from` after
//! `v`. When a retry finds a key at a version above `v` in `from`, a later
//! commit wrote it, and that commit's own copy (which reads `from` after
//! it) carries the duty; the key is dropped from this copy. So under many
//! writers on one key every copy ends: either nobody wrote after it, and
//! the contending copies all read the same value, or somebody did.
//!
//! Versions are `from`'s (`to` numbers its own commits); only records are
//! copied, so after the switch the store's versions are `to`'s.

use super::keys;
use super::storage::{Change, Check, Entry, Storage, StorageError, Write};

/// How often one copy retries when `to` keeps changing under it.
const COPY_ATTEMPTS: u32 = 64;

/// Keys one copy commits to `to` at most (values may be 8 MiB each).
const COPY_CHUNK: usize = 100;

pub struct Migrating<F, T> {
    from: F,
    to: T,
}

/// One page of [`Migrating::copy_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyPage {
    /// The last key of the page: the next page starts after it; `None`
    /// when the store has been gone through.
    pub next: Option<Vec<u8>>,
    /// Records of `from` looked at, and the bytes of their values.
    pub records: u32,
    pub bytes: u64,
    /// Keys whose value `to` did not have yet.
    pub written: u32,
}

/// A bucket's summary on one side ([`Migrating::verify_page`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The bucket, or `""` for the engine's own records (bucket rules,
    /// locks, history, the expiry index).
    pub bucket: String,
    pub records: u64,
    /// The sum (mod 2^64) of a 64-bit hash of each key and value: the same
    /// whatever the order or the paging.
    pub checksum: u64,
}

/// One page of [`Migrating::verify_page`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerifyPage {
    pub next: Option<Vec<u8>>,
    pub from: Vec<Summary>,
    pub to: Vec<Summary>,
    /// Keys whose record differs (or is missing) on one side.
    pub differing: Vec<Vec<u8>>,
}

impl<F: Storage, T: Storage> Migrating<F, T> {
    pub fn new(from: F, to: T) -> Self {
        Self { from, to }
    }

    /// Makes `to` hold what `from` holds for `keys` (see the module's
    /// doc); how many it wrote.
    pub fn copy(&self, keys: &[Vec<u8>]) -> Result<u32, StorageError> {
        self.copy_since(keys, None)
    }

    /// [`Migrating::copy`] for the keys of a commit at `committed`: a key
    /// `from` holds at a later version is left to that later commit's copy
    /// (see the module's doc).
    fn copy_since(&self, keys: &[Vec<u8>], committed: Option<u64>) -> Result<u32, StorageError> {
        if keys.is_empty() {
            return Ok(0);
        }
        for _ in 0..COPY_ATTEMPTS {
            let there = self.to.get_many(keys)?;
            let here = self.from.get_many(keys)?;
            let mut checks = Vec::new();
            let mut writes = Vec::new();
            for ((key, there), here) in keys.iter().zip(&there).zip(&here) {
                let same = match (there, here) {
                    (Some(t), Some(h)) => t.value == h.value,
                    (None, None) => true,
                    _ => false,
                };
                let taken_over = matches!(
                    (here, committed),
                    (Some(h), Some(v)) if h.version > v
                );
                if same || taken_over {
                    continue;
                }
                checks.push(Check::unchanged(
                    key.clone(),
                    there.as_ref().map(|e| e.version),
                ));
                writes.push(Write {
                    key: key.clone(),
                    value: here.as_ref().map(|e| e.value.clone()),
                });
            }
            if writes.is_empty() {
                return Ok(0);
            }
            let written = u32::try_from(writes.len()).unwrap_or(u32::MAX);
            match self.to.commit(checks, writes) {
                Ok(_) => return Ok(written),
                Err(StorageError::Conflict { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Err(StorageError::Unavailable(
            "`to` kept changing while keys were copied to it; try again".into(),
        ))
    }

    /// Copies the records after `after` (from the first if `None`): at
    /// most `limit` of `from`'s, and every record of `to` in the same key
    /// range (those `from` lacks are deleted).
    pub fn copy_page(&self, after: Option<&[u8]>, limit: u32) -> Result<CopyPage, StorageError> {
        let Page { here, there, full } = self.page(after, limit)?;
        let bytes = here.iter().map(|e| e.value.len() as u64).sum();
        let mut keys: Vec<Vec<u8>> = here
            .iter()
            .map(|e| e.key.clone())
            .chain(there.into_iter().map(|e| e.key))
            .collect();
        keys.sort();
        keys.dedup();
        let mut written = 0;
        for chunk in keys.chunks(COPY_CHUNK) {
            written += self.copy(chunk)?;
        }
        Ok(CopyPage {
            next: if full {
                here.last().map(|e| e.key.clone())
            } else {
                None
            },
            records: u32::try_from(here.len()).unwrap_or(u32::MAX),
            bytes,
            written,
        })
    }

    /// Copies the keys `from`'s feed names after `since`, at most about
    /// `limit` changes; the version it got to (`since` when nothing was
    /// newer) and the keys it copied. `compacted` if the feed no longer
    /// reaches back to `since`: copy everything again.
    pub fn catch_up(&self, since: u64, limit: u32) -> Result<(u64, u32), StorageError> {
        let changes = self.from.changes(since, limit)?;
        let Some(last) = changes.last().map(|c| c.version) else {
            return Ok((since, 0));
        };
        let mut keys: Vec<Vec<u8>> = changes
            .into_iter()
            .map(|c| c.key)
            .filter(|k| k.as_slice() != keys::EXPIRY_MARKER)
            .collect();
        keys.sort();
        keys.dedup();
        let mut copied = 0;
        for chunk in keys.chunks(COPY_CHUNK) {
            self.copy(chunk)?;
            copied += u32::try_from(chunk.len()).unwrap_or(u32::MAX);
        }
        Ok((last, copied))
    }

    /// Compares the records after `after`: at most `limit` of `from`'s and
    /// `to`'s in the same range, summarised per bucket, and the keys that
    /// differ.
    pub fn verify_page(
        &self,
        after: Option<&[u8]>,
        limit: u32,
    ) -> Result<VerifyPage, StorageError> {
        let Page { here, there, full } = self.page(after, limit)?;
        let mut differing = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < here.len() || j < there.len() {
            match (here.get(i), there.get(j)) {
                (Some(h), Some(t)) if h.key == t.key => {
                    if h.value != t.value {
                        differing.push(h.key.clone());
                    }
                    i += 1;
                    j += 1;
                }
                (Some(h), Some(t)) if h.key < t.key => {
                    differing.push(h.key.clone());
                    i += 1;
                }
                (Some(h), None) => {
                    differing.push(h.key.clone());
                    i += 1;
                }
                (_, Some(t)) => {
                    differing.push(t.key.clone());
                    j += 1;
                }
                (None, None) => break,
            }
        }
        Ok(VerifyPage {
            next: if full {
                here.last().map(|e| e.key.clone())
            } else {
                None
            },
            from: summarise(&here),
            to: summarise(&there),
            differing,
        })
    }
}

/// The records of one page on both sides: at most `limit` of `from`'s
/// after `after`, and every one of `to`'s in the same key range, which
/// ends at `from`'s last key if there may be more, else at the end (where
/// `to` may hold keys `from` has not).
struct Page {
    here: Vec<Entry>,
    there: Vec<Entry>,
    /// Whether `from` may have more after this page.
    full: bool,
}

impl<F: Storage, T: Storage> Migrating<F, T> {
    fn page(&self, after: Option<&[u8]>, limit: u32) -> Result<Page, StorageError> {
        let start = after.map(successor).unwrap_or_default();
        let limit = limit.clamp(1, super::storage::MAX_SCAN);
        let here = self.from.scan(&start, None, limit, false)?;
        let full = here.len() >= limit as usize;
        let end = match (full, here.last()) {
            (true, Some(last)) => Some(successor(&last.key)),
            _ => None,
        };
        let mut there = Vec::new();
        let mut there_from = start;
        loop {
            let page =
                self.to
                    .scan(&there_from, end.as_deref(), super::storage::MAX_SCAN, false)?;
            let more = page.len() >= super::storage::MAX_SCAN as usize;
            if let Some(last) = page.last() {
                there_from = successor(&last.key);
            }
            there.extend(page);
            if !more {
                return Ok(Page { here, there, full });
            }
        }
    }
}

/// The smallest key after `key`.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

/// Per-bucket counts and checksums of `entries`, in bucket order.
fn summarise(entries: &[Entry]) -> Vec<Summary> {
    let mut out: std::collections::BTreeMap<&str, Summary> = std::collections::BTreeMap::new();
    for entry in entries {
        let bucket = keys::bucket_of(&entry.key).unwrap_or("");
        let summary = out.entry(bucket).or_insert_with(|| Summary {
            bucket: bucket.to_string(),
            ..Summary::default()
        });
        summary.records += 1;
        summary.checksum = summary
            .checksum
            .wrapping_add(fnv1a(&entry.key, &entry.value));
    }
    out.into_values().collect()
}

/// FNV-1a (64-bit) of `key`, a separator and `value`.
fn fnv1a(key: &[u8], value: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let len = (key.len() as u64).to_le_bytes();
    for byte in len.iter().chain(key).chain(value) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

impl<F: Storage, T: Storage> Storage for Migrating<F, T> {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.from.get(key)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        self.from.get_many(keys)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        self.from.scan(start, end, limit, reverse)
    }

    /// To `from`, then its keys copied to `to`. A copy that fails leaves
    /// the commit made in `from`, and says so: `kvstash migrate` (its
    /// catch-up from the feed) copies it.
    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        let mut keys: Vec<Vec<u8>> = writes
            .iter()
            .map(|w| w.key.clone())
            .filter(|k| k.as_slice() != keys::EXPIRY_MARKER)
            .collect();
        let version = self.from.commit(checks, writes)?;
        keys.sort();
        keys.dedup();
        for chunk in keys.chunks(COPY_CHUNK) {
            if let Err(e) = self.copy_since(chunk, Some(version)) {
                return Err(StorageError::Unavailable(format!(
                    "committed to `from` at version {version}, but not copied to `to` ({}); run `kvstash migrate` again before switching to `to`",
                    describe(&e)
                )));
            }
        }
        Ok(version)
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        self.from.current_version()
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        self.from.changes(since, limit)
    }

    fn commits_here(&self) -> u64 {
        self.from.commits_here()
    }
}

fn describe(e: &StorageError) -> String {
    match e {
        StorageError::Conflict { .. } => "a conflict".into(),
        StorageError::Compacted { oldest } => format!("compacted before {oldest}"),
        StorageError::ReadOnly => "`to` is read-only".into(),
        StorageError::Invalid(why)
        | StorageError::Unavailable(why)
        | StorageError::Corrupt(why) => why.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::{Engine, ManualClock, MemStorage, Value};

    type Mem = Rc<MemStorage>;

    fn layer() -> (Mem, Mem, Migrating<Mem, Mem>) {
        let from = Rc::new(MemStorage::default());
        let to = Rc::new(MemStorage::default());
        (from.clone(), to.clone(), Migrating::new(from, to))
    }

    fn put(s: &dyn Storage, key: &[u8], value: Option<&str>) -> u64 {
        s.commit(
            vec![],
            vec![Write {
                key: key.to_vec(),
                value: value.map(|v| v.as_bytes().to_vec()),
            }],
        )
        .unwrap()
    }

    fn records(s: &dyn Storage) -> Vec<(Vec<u8>, Vec<u8>)> {
        s.scan(b"", None, 10_000, false)
            .unwrap()
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect()
    }

    /// Copies everything page by page; what the job would do.
    fn migrate(
        m: &Migrating<Rc<MemStorage>, Rc<MemStorage>>,
        from: &MemStorage,
        limit: u32,
    ) -> u64 {
        let since = from.current_version().unwrap();
        let mut after = None;
        loop {
            let page = m.copy_page(after.as_deref(), limit).unwrap();
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        let mut at = since;
        loop {
            let (next, _) = m.catch_up(at, 100).unwrap();
            if next == at {
                return at;
            }
            at = next;
        }
    }

    #[test]
    fn reads_come_from_from_and_writes_go_to_both() {
        let (from, to, m) = layer();
        put(&*from, b"old", Some("1"));
        assert_eq!(m.get(b"old").unwrap().unwrap().value, b"1");
        assert_eq!(to.get(b"old").unwrap(), None, "not copied yet");
        let v = put(&m, b"new", Some("2"));
        assert_eq!(
            from.get(b"new").unwrap().unwrap().version,
            v,
            "from's versions"
        );
        assert_eq!(to.get(b"new").unwrap().unwrap().value, b"2");
        put(&m, b"new", None);
        assert_eq!(to.get(b"new").unwrap(), None, "deletes too");
    }

    #[test]
    fn a_migration_makes_to_equal_from_and_verifies_clean() {
        let (from, to, m) = layer();
        for i in 0..250 {
            put(&*from, format!("k{i:03}").as_bytes(), Some(&i.to_string()));
        }
        // `to` has a stale key `from` never had, and an older value.
        put(&*to, b"k007", Some("stale"));
        put(&*to, b"zzz", Some("only in to"));
        migrate(&m, &from, 64);
        assert_eq!(records(&*to), records(&*from));
        let page = m.verify_page(None, 10_000).unwrap();
        assert!(page.differing.is_empty(), "{:?}", page.differing);
        assert_eq!(page.from, page.to);
        assert_eq!(page.from.iter().map(|s| s.records).sum::<u64>(), 250);
    }

    /// The race the protocol is for: a copy that read an old value from
    /// `from` before a newer write was copied must not overwrite it.
    #[test]
    fn an_older_copy_never_overwrites_a_newer_one() {
        let (from, to, m) = layer();
        put(&*from, b"k", Some("1"));
        // The job's copy reads `to`'s version and `from`'s value ...
        let there = to.get_many(&[b"k".to_vec()]).unwrap();
        let here = from.get_many(&[b"k".to_vec()]).unwrap();
        // ... a write through the layer lands (and is copied) meanwhile ...
        put(&m, b"k", Some("2"));
        // ... so its commit, conditioned on what it read of `to`, fails.
        let stale = to.commit(
            vec![Check::unchanged(
                b"k".to_vec(),
                there[0].as_ref().map(|e| e.version),
            )],
            vec![Write {
                key: b"k".to_vec(),
                value: here[0].as_ref().map(|e| e.value.clone()),
            }],
        );
        assert!(
            matches!(stale, Err(StorageError::Conflict { .. })),
            "{stale:?}"
        );
        // Copying again (what `copy` does on a conflict) finds nothing to do.
        assert_eq!(m.copy(&[b"k".to_vec()]).unwrap(), 0);
        assert_eq!(to.get(b"k").unwrap().unwrap().value, b"2");
    }

    /// Many writers on one key: a copy that keeps losing to later writes'
    /// copies leaves the key to them instead of failing the commit, and
    /// `to` ends with the latest value. The migration job's copy, which no
    /// commit follows, retries and says so when it cannot get through.
    #[test]
    fn a_later_write_takes_over_the_copy() {
        let from = Rc::new(MemStorage::default());
        let to = Rc::new(MemStorage::default());
        // `to` as other writers make it look: before each commit the copy
        // tries, a later write to the key lands in `from` and is copied to
        // `to`, so the condition fails, and a still later one lands in
        // `from` (its copy is yet to come), so `to` is behind again.
        let races = Rc::new(std::cell::Cell::new(1_000u32));
        let racing = super::super::tests::Hooked::new(to.clone()).before_commit({
            let (from, races) = (from.clone(), races.clone());
            move |to, _| {
                if races.get() > 0 {
                    races.set(races.get() - 1);
                    let n = races.get().to_string();
                    put(&*from, b"k", Some(&n));
                    put(to, b"k", Some(&n));
                    put(&*from, b"k", Some(&format!("{n}, later")));
                }
                None
            }
        });
        let m = Migrating::new(from.clone(), racing);
        put(&m, b"k", Some("mine"));
        assert_eq!(races.get(), 999, "one lost race, then taken over");
        assert_eq!(to.get(b"k").unwrap().unwrap().value, b"999");

        let job = m.copy(&[b"k".to_vec()]);
        assert!(
            matches!(&job, Err(StorageError::Unavailable(why)) if why.contains("kept changing")),
            "{job:?}"
        );
        assert_eq!(races.get(), 999 - COPY_ATTEMPTS);
        races.set(0);
        assert_eq!(m.copy(&[b"k".to_vec()]).unwrap(), 1);
        assert_eq!(records(&*to), records(&*from));
    }

    /// Writes that landed in `from` without reaching `to` (a failed copy)
    /// are found by the catch-up from the feed.
    #[test]
    fn the_catch_up_copies_what_the_layer_could_not() {
        let (from, to, m) = layer();
        let since = from.current_version().unwrap();
        put(&*from, b"a", Some("1")); // behind the layer's back
        put(&*from, b"b", Some("2"));
        put(&*from, b"a", None);
        let (at, copied) = m.catch_up(since, 100).unwrap();
        assert_eq!(at, from.current_version().unwrap());
        assert_eq!(copied, 2);
        assert_eq!(records(&*to), records(&*from));
        assert_eq!(m.catch_up(at, 100).unwrap(), (at, 0));
    }

    /// Through the engine: writes interleaved with the job's pages, the
    /// store's own records included, end with `to` equal to `from`.
    #[test]
    fn writes_during_the_migration_are_never_lost() {
        let (from, to, m) = layer();
        let m = Rc::new(m);
        let engine = Engine::new(m.clone(), ManualClock::at(1_700_000_000_000));
        for i in 0..300 {
            engine
                .set(
                    "b",
                    &format!("k{i:03}"),
                    Value::json(i.to_string()).unwrap(),
                )
                .unwrap();
        }
        let since = from.current_version().unwrap();
        let mut after: Option<Vec<u8>> = None;
        let mut i = 0;
        loop {
            // A write between pages: some ahead of the job, some behind.
            engine
                .set(
                    "b",
                    &format!("k{:03}", (i * 37) % 300),
                    Value::json(format!("\"w{i}\"")).unwrap(),
                )
                .unwrap();
            engine
                .delete("b", &format!("k{:03}", (i * 53) % 300))
                .unwrap();
            i += 1;
            let page = m.copy_page(after.as_deref(), 25).unwrap();
            after = page.next;
            if after.is_none() {
                break;
            }
        }
        let mut at = since;
        loop {
            let (next, _) = m.catch_up(at, 50).unwrap();
            if next == at {
                break;
            }
            at = next;
        }
        assert_eq!(records(&*to), records(&*from));
        let after_switch = Engine::new(to.clone(), ManualClock::at(1_700_000_000_000));
        for k in 0..300 {
            let key = format!("k{k:03}");
            assert_eq!(
                after_switch.get("b", &key).unwrap().map(|v| v.value),
                engine.get("b", &key).unwrap().map(|v| v.value),
                "{key}"
            );
        }
    }
}
