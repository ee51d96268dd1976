//! The read-modify-write core, and every operation built on it.
//!
//! An operation reads the keys it depends on in one `get-many`, decides on
//! that snapshot, and commits its writes guarded by a storage check per key
//! read (`version-is` the version it saw, or `absent`). If another writer got
//! there first the backend refuses the commit and the operation starts over
//! from a fresh read, after a backoff, until its deadline (then
//! `contention`; see `retry.rs`). So
//! every decision is made on state that is still current when it commits:
//! transactions are serializable, whatever the number of instances or
//! processes sharing the backend.
//!
//! Conditions see the *logical* state (an expired key is absent); guards
//! check the *physical* one (an expired record still has a version).

use std::collections::BTreeMap;

use serde_json::Value as Json;

use super::{
    Clock, Counter, Engine, Now, Record, Storage, StoreError, Value, Versioned, check_size, doc,
    expiry, keys,
};
use crate::engine::storage::{Check, Write};

/// Options of a single conditional write.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WriteOptions {
    /// Write only if the key is live at exactly this version.
    pub if_version: Option<u64>,
    /// Write only if the key is absent (or expired).
    pub if_absent: bool,
    /// The key expires this many milliseconds after the write.
    pub ttl_ms: Option<u64>,
}

/// What a transaction check requires of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Condition {
    /// Live at exactly this version.
    VersionIs(u64),
    /// Absent or expired.
    Absent,
    /// Live, at any version.
    Exists,
    /// Live with this value: JSON compared as JSON (so `{"a":1,"b":2}`
    /// equals `{"b":2, "a":1}`), bytes compared as bytes.
    ValueEquals(Value),
}

/// A precondition of a transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TxnCheck {
    /// A key of a bucket meets a condition.
    Key {
        bucket: String,
        key: String,
        condition: Condition,
    },
    /// The lock `name` is held with this fencing token.
    Lease { name: String, token: u64 },
}

impl TxnCheck {
    pub fn key(bucket: &str, key: &str, condition: Condition) -> Self {
        TxnCheck::Key {
            bucket: bucket.into(),
            key: key.into(),
            condition,
        }
    }
}

/// A check resolved to the storage key it reads and what it requires.
enum Requirement<'c> {
    Key(&'c Condition),
    Lease(u64),
}

/// What a mutation does to its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    Set(Value),
    Delete,
    /// Adds to the integer at the key (a missing key counts as 0).
    Increment(i64),
    /// Sets the value at a JSON Pointer inside the document.
    SetPath {
        path: String,
        value: String,
    },
    /// Removes the value at a JSON Pointer.
    DeletePath {
        path: String,
    },
    /// Appends to the array at a JSON Pointer.
    AppendPath {
        path: String,
        value: String,
    },
}

/// One mutation of a transaction. `ttl_ms`: for `Set`, the key's TTL (none:
/// no expiry); for the other ops, a new TTL (none: the key keeps its expiry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mutation {
    pub bucket: String,
    pub key: String,
    pub op: Op,
    pub ttl_ms: Option<u64>,
}

/// What a compare-and-swap found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Written at this version.
    Done(u64),
    /// The key was no longer at the expected version; nothing was written.
    Conflict,
}

/// A record as stored, with its version.
pub(super) struct Stored {
    pub(super) version: u64,
    pub(super) record: Record,
}

/// The keys an operation read, as they were.
pub(super) struct Snapshot {
    stored: BTreeMap<Vec<u8>, Option<Stored>>,
}

impl Snapshot {
    fn read<S: Storage>(storage: &S, keys: &[Vec<u8>]) -> Result<Self, StoreError> {
        let found = if keys.is_empty() {
            Vec::new()
        } else {
            storage.get_many(keys)?
        };
        let mut stored = BTreeMap::new();
        for (key, entry) in keys.iter().zip(found) {
            let value = match entry {
                Some(entry) => Some(Stored {
                    version: entry.version,
                    record: Record::decode(entry.value)?,
                }),
                None => None,
            };
            stored.insert(key.clone(), value);
        }
        Ok(Self { stored })
    }

    /// The record as stored, expired or not.
    pub(super) fn physical(&self, key: &[u8]) -> Option<&Stored> {
        self.stored.get(key).and_then(Option::as_ref)
    }

    /// The record if it is live at `now`.
    pub(super) fn live(&self, key: &[u8], now: &Now<'_>) -> Option<&Stored> {
        self.physical(key)
            .filter(|s| !now.expired(s.record.expires_at_ms))
    }

    /// A storage check per key read: still exactly as read.
    fn guards(&self) -> Vec<Check> {
        self.stored
            .iter()
            .map(|(key, stored)| Check::unchanged(key.clone(), stored.as_ref().map(|s| s.version)))
            .collect()
    }
}

/// What an operation decided on its snapshot.
pub(super) enum Decision<T> {
    /// Commit these writes (`None` deletes), then answer `T`.
    Write(Vec<(Vec<u8>, Option<Record>)>, T),
    /// Nothing to write: answer `T` now.
    Done(T),
}

/// Storage writes for record writes, with the expiry-index entry of every
/// record that has an expiry.
pub(super) fn encode_writes(writes: &[(Vec<u8>, Option<Record>)]) -> Vec<Write> {
    let mut out = Vec::with_capacity(writes.len());
    for (key, record) in writes {
        match record {
            Some(record) => {
                if let Some(at) = record.expires_at_ms {
                    out.push(Write {
                        key: keys::expiry_key(at, key),
                        value: Some(Vec::new()),
                    });
                }
                out.push(Write {
                    key: key.clone(),
                    value: Some(record.encode()),
                });
            }
            None => out.push(Write {
                key: key.clone(),
                value: None,
            }),
        }
    }
    out
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Reads `keys`, lets `decide` choose, commits guarded by the read;
    /// starts over when another writer got there first. Returns the answer
    /// and the commit's version (`None` if nothing was written).
    pub(super) fn read_modify_write<T>(
        &self,
        keys: &[Vec<u8>],
        decide: impl FnMut(&Snapshot) -> Result<Decision<T>, StoreError>,
    ) -> Result<(T, Option<u64>), StoreError> {
        self.read_modify_write_with(keys, true, decide)
    }

    /// [`read_modify_write`](Self::read_modify_write), choosing whether the
    /// writes are recorded in bucket history (expirations are not).
    pub(super) fn read_modify_write_with<T>(
        &self,
        keys: &[Vec<u8>],
        record_history: bool,
        mut decide: impl FnMut(&Snapshot) -> Result<Decision<T>, StoreError>,
    ) -> Result<(T, Option<u64>), StoreError> {
        let mut retry = self.retry();
        loop {
            let snapshot = Snapshot::read(&self.storage, keys)?;
            let (writes, answer) = match decide(&snapshot)? {
                Decision::Done(answer) => return Ok((answer, None)),
                Decision::Write(writes, answer) => (writes, answer),
            };
            self.writable()?;
            // One write with nothing read (a plain set) has nothing to
            // deduplicate and no replaced expiry to unindex.
            let changes = if keys.is_empty() && writes.len() == 1 {
                writes
            } else {
                let mut changes: BTreeMap<Vec<u8>, Option<Record>> = writes.into_iter().collect();
                // Drop the index entries of expiries this write replaces.
                let stale: Vec<Vec<u8>> = changes
                    .iter()
                    .filter_map(|(key, new)| {
                        let old_at = snapshot.physical(key)?.record.expires_at_ms?;
                        let new_at = new.as_ref().and_then(|r| r.expires_at_ms);
                        (new_at != Some(old_at)).then(|| keys::expiry_key(old_at, key))
                    })
                    .collect();
                for key in stale {
                    changes.entry(key).or_insert(None);
                }
                changes.into_iter().collect()
            };
            match self.commit_changes(snapshot.guards(), &changes, Vec::new(), record_history)? {
                super::meta::Committed::At(version) => return Ok((answer, Some(version))),
                super::meta::Committed::Conflict if retry.again() => continue,
                super::meta::Committed::Conflict => return Err(StoreError::Contention),
            }
        }
    }

    /// Applies every mutation if every check holds, atomically, across keys
    /// and buckets; returns the transaction's version (with no mutations:
    /// the store's current version, and nothing is written). A failing check
    /// is reported as [`StoreError::CheckFailed`] with its index.
    pub fn transact(&self, checks: &[TxnCheck], mutations: &[Mutation]) -> Result<u64, StoreError> {
        let most = super::limits().batch;
        if checks.len() + mutations.len() > most {
            return Err(StoreError::InvalidArgument(format!(
                "a transaction has at most {most} checks and mutations (limits.batch)"
            )));
        }
        let now = self.now();
        let checks = checks
            .iter()
            .map(|c| match c {
                TxnCheck::Key {
                    bucket,
                    key,
                    condition,
                } => Ok((storage_key(bucket, key)?, Requirement::Key(condition))),
                TxnCheck::Lease { name, token } => {
                    Ok((super::lease::lock_key(name)?, Requirement::Lease(*token)))
                }
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mutations = mutations
            .iter()
            .map(|m| Prepared::new(m, &now))
            .collect::<Result<Vec<_>, StoreError>>()?;
        if !mutations.is_empty() {
            self.writable()?;
        }
        let mut read: Vec<Vec<u8>> = checks.iter().map(|(key, _)| key.clone()).collect();
        read.extend(
            mutations
                .iter()
                .filter(|m| m.op.reads())
                .map(|m| m.key.clone()),
        );
        read.sort();
        read.dedup();
        let ((), version) = self.read_modify_write(&read, |snapshot| {
            for (index, (key, requirement)) in checks.iter().enumerate() {
                let live = snapshot.live(key, &now);
                let ok = match requirement {
                    Requirement::Key(condition) => holds(condition, live)?,
                    Requirement::Lease(token) => {
                        live.is_some_and(|held| super::lease::holder(held).token == *token)
                    }
                };
                if !ok {
                    return Err(StoreError::CheckFailed {
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        current: live.map(|s| s.version),
                    });
                }
            }
            let mut working: BTreeMap<Vec<u8>, Option<Record>> = BTreeMap::new();
            for m in &mutations {
                let base = match working.get(&m.key) {
                    Some(pending) => pending.clone(),
                    None => snapshot.live(&m.key, &now).map(|s| s.record.clone()),
                };
                let next = m.apply(base)?;
                working.insert(m.key.clone(), next);
            }
            if working.is_empty() {
                return Ok(Decision::Done(()));
            }
            Ok(Decision::Write(working.into_iter().collect(), ()))
        })?;
        match version {
            Some(version) => Ok(version),
            None => Ok(self.storage.current_version()?),
        }
    }

    /// Stores `value` if the options' condition holds; returns the new
    /// version, or [`StoreError::Conflict`] with the key's current version.
    pub fn set_with(
        &self,
        bucket: &str,
        key: &str,
        value: Value,
        options: &WriteOptions,
    ) -> Result<u64, StoreError> {
        let condition = match (options.if_version, options.if_absent) {
            (Some(_), true) => {
                return Err(StoreError::InvalidArgument(
                    "`if_version` and `if_absent` exclude each other".into(),
                ));
            }
            (Some(version), false) => Some(Condition::VersionIs(version)),
            (None, true) => Some(Condition::Absent),
            (None, false) => None,
        };
        if condition.is_none() && options.ttl_ms.is_none() {
            return self.set(bucket, key, value);
        }
        let mutation = Mutation {
            bucket: bucket.into(),
            key: key.into(),
            op: Op::Set(value),
            ttl_ms: options.ttl_ms,
        };
        self.single(bucket, key, condition, mutation)
    }

    /// Deletes `key` if it is live at `version`; returns the commit's
    /// version, or [`StoreError::Conflict`] with the key's current version.
    pub fn delete_if_version(
        &self,
        bucket: &str,
        key: &str,
        version: u64,
    ) -> Result<u64, StoreError> {
        let mutation = Mutation {
            bucket: bucket.into(),
            key: key.into(),
            op: Op::Delete,
            ttl_ms: None,
        };
        self.single(bucket, key, Some(Condition::VersionIs(version)), mutation)
    }

    /// One mutation under at most one condition on its own key; a failed
    /// condition is a [`StoreError::Conflict`].
    fn single(
        &self,
        bucket: &str,
        key: &str,
        condition: Option<Condition>,
        mutation: Mutation,
    ) -> Result<u64, StoreError> {
        let checks: Vec<TxnCheck> = condition
            .into_iter()
            .map(|condition| TxnCheck::key(bucket, key, condition))
            .collect();
        self.transact(&checks, std::slice::from_ref(&mutation))
            .map_err(|e| {
                // The one check is the caller's condition: report it as such.
                if let StoreError::CheckFailed { current, .. } = e {
                    StoreError::Conflict { current }
                } else {
                    e
                }
            })
    }

    /// Applies one document-path or increment op to one key; returns the
    /// new version.
    pub fn update(
        &self,
        bucket: &str,
        key: &str,
        op: Op,
        ttl_ms: Option<u64>,
    ) -> Result<u64, StoreError> {
        let mutation = Mutation {
            bucket: bucket.into(),
            key: key.into(),
            op,
            ttl_ms,
        };
        self.transact(&[], std::slice::from_ref(&mutation))
    }

    /// Deletes `key`; `Ok(true)` if it was live. A missing key writes nothing.
    pub fn delete(&self, bucket: &str, key: &str) -> Result<bool, StoreError> {
        Ok(self.delete_many(bucket, &[key.to_string()])? == 1)
    }

    /// Deletes every key in one atomic commit; returns how many were live.
    /// Expired records among them are removed too, and not counted.
    pub fn delete_many(&self, bucket: &str, user_keys: &[String]) -> Result<u32, StoreError> {
        let mut storage_keys = super::batch_keys(bucket, user_keys)?;
        self.writable()?;
        storage_keys.sort();
        storage_keys.dedup();
        let now = self.now();
        let (count, _) = self.read_modify_write(&storage_keys, |snapshot| {
            let mut live = 0u32;
            let mut writes = Vec::new();
            for key in &storage_keys {
                if snapshot.physical(key).is_some() {
                    live += u32::from(snapshot.live(key, &now).is_some());
                    writes.push((key.clone(), None));
                }
            }
            Ok(if writes.is_empty() {
                Decision::Done(0)
            } else {
                Decision::Write(writes, live)
            })
        })?;
        Ok(count)
    }

    /// Adds `delta` to the integer stored at `key` (a missing key counts as
    /// zero) atomically, and returns the new value, stored as `N` stores it
    /// ([`Counter::to_record`]: decimal text, or 8 LE bytes). The key keeps its expiry.
    pub fn increment<N: Counter>(
        &self,
        bucket: &str,
        key: &str,
        delta: N,
    ) -> Result<N, StoreError> {
        let storage_key = storage_key(bucket, key)?;
        self.writable()?;
        let now = self.now();
        let (next, _) = self.read_modify_write(std::slice::from_ref(&storage_key), |snapshot| {
            let base = snapshot.live(&storage_key, &now).map(|s| &s.record);
            let (record, next) = add(base, delta, None)?;
            Ok(Decision::Write(
                vec![(storage_key.clone(), Some(record))],
                next,
            ))
        })?;
        Ok(next)
    }

    /// The stored bytes and version of `key`, for compare-and-swap.
    pub fn read_for_swap(
        &self,
        bucket: &str,
        key: &str,
    ) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        Ok(self
            .get(bucket, key)?
            .map(|v| (v.value.into_bytes(), v.version)))
    }

    /// Writes `value` only if `key` is still live at `expected` (`None`:
    /// absent).
    pub fn swap(
        &self,
        bucket: &str,
        key: &str,
        expected: Option<u64>,
        value: Value,
    ) -> Result<Swap, StoreError> {
        let storage_key = storage_key(bucket, key)?;
        self.writable()?;
        let now = self.now();
        let (swapped, version) =
            self.read_modify_write(std::slice::from_ref(&storage_key), |snapshot| {
                let current = snapshot.live(&storage_key, &now).map(|s| s.version);
                if current != expected {
                    return Ok(Decision::Done(false));
                }
                let record = value.clone().into_record(None);
                Ok(Decision::Write(
                    vec![(storage_key.clone(), Some(record))],
                    true,
                ))
            })?;
        Ok(match (swapped, version) {
            (true, Some(version)) => Swap::Done(version),
            _ => Swap::Conflict,
        })
    }

    /// The JSON at `path` inside the document at `key`, with the document's
    /// version; `None` if the key is absent.
    pub fn get_path(
        &self,
        bucket: &str,
        key: &str,
        path: &str,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let pointer = doc::Pointer::parse(path)?;
        let Some(found) = self.get(bucket, key)? else {
            return Ok(None);
        };
        let Value::Json(text) = found.value else {
            return Err(StoreError::NotJson);
        };
        let document: Json = serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("stored JSON does not parse: {e}")))?;
        let at = doc::get(&document, &pointer)?;
        Ok(Some((at.to_string(), found.version)))
    }

    /// Removes records whose TTL has passed, at most `limit` of them per
    /// call (clamped to 1..=10000), with their expiry-index entries; returns
    /// how many were removed. Index entries of keys rewritten since are
    /// dropped too.
    pub fn sweep(&self, limit: u32) -> Result<u32, StoreError> {
        self.writable()?;
        let now = self.now();
        let (start, end) = keys::expired_range(now.ms());
        let index =
            self.storage
                .scan(&start, Some(&end), limit.clamp(1, super::MAX_SCAN), false)?;
        if index.is_empty() {
            return Ok(0);
        }
        let targets = index
            .iter()
            .map(|e| {
                keys::parse_expiry_key(&e.key)
                    .map(|(at, data_key)| (e.key.clone(), at, data_key.to_vec()))
                    .ok_or_else(|| StoreError::Corrupt("malformed expiry-index key".into()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut data_keys: Vec<Vec<u8>> = targets.iter().map(|(_, _, k)| k.clone()).collect();
        data_keys.sort();
        data_keys.dedup();
        let (removed, _) = self.read_modify_write_with(&data_keys, false, |snapshot| {
            let mut removed = 0u32;
            let mut writes = Vec::with_capacity(2 * targets.len() + 1);
            writes.push((keys::EXPIRY_MARKER.to_vec(), None));
            for (index_key, at, data_key) in &targets {
                writes.push((index_key.clone(), None));
                let expired_here = snapshot
                    .physical(data_key)
                    .is_some_and(|s| s.record.expires_at_ms == Some(*at));
                if expired_here {
                    writes.push((data_key.clone(), None));
                    removed += 1;
                }
            }
            Ok(Decision::Write(writes, removed))
        })?;
        Ok(removed)
    }
}

/// A mutation checked and parsed before any read.
struct Prepared {
    key: Vec<u8>,
    display: String,
    op: PreparedOp,
    expires_at_ms: Option<u64>,
}

enum PreparedOp {
    Set(Value),
    Delete,
    Increment(i64),
    SetPath(doc::Pointer, Json),
    DeletePath(doc::Pointer),
    AppendPath(doc::Pointer, Json),
}

impl PreparedOp {
    fn reads(&self) -> bool {
        !matches!(self, PreparedOp::Set(_) | PreparedOp::Delete)
    }
}

fn parse_json(text: &str) -> Result<Json, StoreError> {
    check_size(text.len())?;
    serde_json::from_str(text).map_err(|e| StoreError::InvalidValue(format!("not valid JSON: {e}")))
}

impl Prepared {
    fn new(m: &Mutation, now: &Now<'_>) -> Result<Self, StoreError> {
        let key = storage_key(&m.bucket, &m.key)?;
        let op = match &m.op {
            Op::Set(value) => PreparedOp::Set(value.clone()),
            Op::Delete => PreparedOp::Delete,
            Op::Increment(delta) => PreparedOp::Increment(*delta),
            Op::SetPath { path, value } => {
                PreparedOp::SetPath(doc::Pointer::parse(path)?, parse_json(value)?)
            }
            Op::DeletePath { path } => PreparedOp::DeletePath(doc::Pointer::parse(path)?),
            Op::AppendPath { path, value } => {
                PreparedOp::AppendPath(doc::Pointer::parse(path)?, parse_json(value)?)
            }
        };
        if matches!(op, PreparedOp::Delete) && m.ttl_ms.is_some() {
            return Err(StoreError::InvalidArgument("a delete takes no TTL".into()));
        }
        Ok(Self {
            key,
            display: format!("`{}` in bucket `{}`", m.key, m.bucket),
            op,
            expires_at_ms: expiry(now, m.ttl_ms)?,
        })
    }

    /// The key's next record, from its current one.
    fn apply(&self, base: Option<Record>) -> Result<Option<Record>, StoreError> {
        let keep_or_new = |base: &Record| self.expires_at_ms.or(base.expires_at_ms);
        match &self.op {
            PreparedOp::Set(value) => Ok(Some(value.clone().into_record(self.expires_at_ms))),
            PreparedOp::Delete => Ok(None),
            PreparedOp::Increment(delta) => {
                Ok(Some(add(base.as_ref(), *delta, self.expires_at_ms)?.0))
            }
            PreparedOp::SetPath(..) | PreparedOp::DeletePath(_) | PreparedOp::AppendPath(..) => {
                let base = base.ok_or_else(|| {
                    StoreError::NotFound(format!("{} does not exist", self.display))
                })?;
                if base.encoding != super::Encoding::Json {
                    return Err(StoreError::NotJson);
                }
                let mut document: Json = serde_json::from_slice(&base.payload)
                    .map_err(|e| StoreError::Corrupt(format!("stored JSON does not parse: {e}")))?;
                match &self.op {
                    PreparedOp::SetPath(ptr, value) => doc::set(&mut document, ptr, value.clone())?,
                    PreparedOp::DeletePath(ptr) => doc::delete(&mut document, ptr)?,
                    PreparedOp::AppendPath(ptr, value) => {
                        doc::append(&mut document, ptr, value.clone())?
                    }
                    PreparedOp::Set(_) | PreparedOp::Delete | PreparedOp::Increment(_) => {}
                }
                let text = document.to_string();
                check_size(text.len())?;
                // A document the write made too deep could not be read back.
                super::json::check(&text).map_err(|e| {
                    StoreError::InvalidValue(format!("the document would be refused: {e}"))
                })?;
                let mut record = Record::json(text);
                record.expires_at_ms = keep_or_new(&base);
                Ok(Some(record))
            }
        }
    }
}

/// The record an increment leaves: `base` (absent: 0) plus `delta`, encoded
/// as `N` encodes it, keeping `base`'s expiry unless `expires_at_ms` replaces it.
fn add<N: Counter>(
    base: Option<&Record>,
    delta: N,
    expires_at_ms: Option<u64>,
) -> Result<(Record, N), StoreError> {
    let current = match base {
        Some(record) => N::parse(&record.payload)?,
        None => N::ZERO,
    };
    let next = current.checked_add(delta).ok_or_else(|| {
        StoreError::InvalidValue(format!("incrementing {current} by {delta} overflows"))
    })?;
    let mut record = next.to_record();
    record.expires_at_ms = expires_at_ms.or_else(|| base.and_then(|b| b.expires_at_ms));
    Ok((record, next))
}

fn storage_key(bucket: &str, key: &str) -> Result<Vec<u8>, StoreError> {
    keys::validate_bucket(bucket)?;
    keys::validate_key(key)?;
    Ok(keys::data_key(bucket, key))
}

/// Whether `condition` holds for a key whose live record is `live`.
fn holds(condition: &Condition, live: Option<&Stored>) -> Result<bool, StoreError> {
    Ok(match (condition, live) {
        (Condition::VersionIs(v), Some(stored)) => stored.version == *v,
        (Condition::VersionIs(_), None) => false,
        (Condition::Absent, found) => found.is_none(),
        (Condition::Exists, found) => found.is_some(),
        (Condition::ValueEquals(_), None) => false,
        (Condition::ValueEquals(want), Some(stored)) => {
            let have = Versioned::from_record(stored.record.clone(), stored.version)?.value;
            match (want, &have) {
                (Value::Json(a), Value::Json(b)) => {
                    let parse = |t: &str| serde_json::from_str::<Json>(t).ok();
                    parse(a).is_some() && parse(a) == parse(b)
                }
                (want, have) => want.clone().into_bytes() == have.clone().into_bytes(),
            }
        }
    })
}
