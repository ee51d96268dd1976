//! Bucket metadata: the rules every write into a bucket must follow (today:
//! its schema), stored at `"m" bucket` and cached per engine.
//!
//! A cache is never trusted on its own: every commit that writes into a
//! bucket is guarded on the version of the metadata it was checked against.
//! If another instance or process changed the rules since, the commit
//! conflicts, the cache is dropped, and the write is checked again.

use std::rc::Rc;

use serde_json::{Value as Json, json};

use super::txn::Decision;
use super::{Clock, Engine, Record, Schema, Storage, StorageError, StoreError, keys};
use crate::engine::storage::{Check, Write};

const META_TAG: u8 = b'm';

/// The rules of one bucket.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BucketMeta {
    pub schema: Option<Schema>,
    /// Starts at 0 (no schema ever set); each schema change adds one.
    pub schema_version: u64,
    /// A schema being introduced: writes must satisfy it too until it is
    /// activated or dropped (see [`Engine::set_schema`]).
    pub pending: Option<Schema>,
    /// How many changes the bucket's history keeps; 0: no history.
    pub history: u32,
}

impl BucketMeta {
    fn encode(&self) -> Record {
        let text = json!({
            "schema": self.schema.as_ref().map(Schema::as_json),
            "schema_version": self.schema_version,
            "pending": self.pending.as_ref().map(Schema::as_json),
            "history": self.history,
        });
        Record::json(text.to_string())
    }

    fn decode(record: &Record) -> Result<Self, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(format!("bucket metadata: {why}"));
        let value: Json =
            serde_json::from_slice(&record.payload).map_err(|_| corrupt("not JSON"))?;
        let schema = |field: &str| -> Result<Option<Schema>, StoreError> {
            match value.get(field) {
                None | Some(Json::Null) => Ok(None),
                Some(s) => Schema::parse(&s.to_string())
                    .map(Some)
                    .map_err(|_| corrupt("bad schema")),
            }
        };
        Ok(Self {
            schema: schema("schema")?,
            schema_version: value
                .get("schema_version")
                .and_then(Json::as_u64)
                .unwrap_or(0),
            pending: schema("pending")?,
            history: value
                .get("history")
                .and_then(Json::as_u64)
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        })
    }

    /// Checks a record about to be written into the bucket.
    fn admit(&self, bucket: &str, key: &str, record: &Record) -> Result<(), StoreError> {
        let rules: Vec<&Schema> = self.schema.iter().chain(self.pending.iter()).collect();
        if rules.is_empty() {
            return Ok(());
        }
        let violation = |why: String| {
            StoreError::SchemaViolation(format!("`{key}` in bucket `{bucket}`: {why}"))
        };
        if record.encoding != super::Encoding::Json {
            return Err(violation(
                "the bucket has a schema and the value is raw bytes".into(),
            ));
        }
        let value: Json = serde_json::from_slice(&record.payload)
            .map_err(|e| StoreError::Corrupt(format!("JSON record does not parse: {e}")))?;
        for schema in rules {
            schema.validate(&value).map_err(violation)?;
        }
        Ok(())
    }
}

pub(super) fn meta_key(bucket: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + bucket.len());
    key.push(META_TAG);
    key.extend_from_slice(bucket.as_bytes());
    key
}

/// What a commit attempt came to.
pub(super) enum Committed {
    At(u64),
    /// A guard failed: re-read and try again.
    Conflict,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// The bucket's rules and the version of their record (`None`: none set).
    pub(super) fn bucket_meta(
        &self,
        bucket: &str,
    ) -> Result<(Option<u64>, Rc<BucketMeta>), StoreError> {
        if let Some(cached) = self.meta_cache.borrow().get(bucket) {
            return Ok(cached.clone());
        }
        let loaded = match self.storage.get(&meta_key(bucket))? {
            Some(entry) => (
                Some(entry.version),
                Rc::new(BucketMeta::decode(&Record::decode(entry.value)?)?),
            ),
            None => (None, Rc::new(BucketMeta::default())),
        };
        self.meta_cache
            .borrow_mut()
            .insert(bucket.to_string(), loaded.clone());
        Ok(loaded)
    }

    pub(super) fn forget_meta(&self) {
        self.meta_cache.borrow_mut().clear();
    }

    /// Commits record changes plus `raw` writes (engine records), under the
    /// rules of the buckets the records go into: every value written must
    /// satisfy its bucket's schema, and the commit is guarded on each such
    /// bucket's metadata version. With `record_history`, the changes to a
    /// bucket with history become one history entry, in the same commit.
    pub(super) fn commit_changes(
        &self,
        mut checks: Vec<Check>,
        changes: &[(Vec<u8>, Option<Record>)],
        mut raw: Vec<(Vec<u8>, Option<Vec<u8>>)>,
        record_history: bool,
    ) -> Result<Committed, StoreError> {
        let mut buckets: Vec<(&str, Rc<BucketMeta>)> = Vec::new();
        for (key, record) in changes {
            let Some((bucket, user_key)) = keys::split_data_key(key) else {
                continue;
            };
            let (version, meta) = self.bucket_meta(bucket)?;
            if let Some(record) = record {
                meta.admit(bucket, user_key, record)?;
            }
            if !buckets.iter().any(|(b, _)| *b == bucket) {
                buckets.push((bucket, meta));
                checks.push(Check::unchanged(meta_key(bucket), version));
            }
        }
        if record_history {
            let now = self.now();
            for (bucket, meta) in buckets.iter().filter(|(_, m)| m.history > 0) {
                let mine: Vec<(Vec<u8>, Option<Record>)> = changes
                    .iter()
                    .filter(|(key, _)| keys::split_data_key(key).is_some_and(|(b, _)| b == *bucket))
                    .cloned()
                    .collect();
                let recording = self.history_for(bucket, meta.history, &mine, &now)?;
                checks.extend(recording.checks);
                raw.extend(recording.writes);
            }
        }
        let mut writes: Vec<Write> = super::txn::encode_writes(changes);
        writes.extend(raw.into_iter().map(|(key, value)| Write { key, value }));
        match self.storage.commit(checks, writes) {
            Ok(version) => Ok(Committed::At(version)),
            Err(StorageError::Conflict { .. }) => {
                self.forget_meta();
                Ok(Committed::Conflict)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Rewrites the bucket's rules with `f` (`None`: leave them) in a
    /// guarded read-modify-write; returns what was written.
    pub(super) fn update_meta(
        &self,
        bucket: &str,
        f: &dyn Fn(&BucketMeta) -> Result<Option<BucketMeta>, StoreError>,
    ) -> Result<Option<BucketMeta>, StoreError> {
        let key = meta_key(bucket);
        let (next, _) = self.read_modify_write(std::slice::from_ref(&key), |snapshot| {
            let current = match snapshot.physical(&key) {
                Some(stored) => BucketMeta::decode(&stored.record)?,
                None => BucketMeta::default(),
            };
            Ok(match f(&current)? {
                Some(next) => Decision::Write(vec![(key.clone(), Some(next.encode()))], Some(next)),
                None => Decision::Done(None),
            })
        })?;
        self.forget_meta();
        Ok(next)
    }

    /// The bucket's schema (JSON) and its version; `None` if it has none.
    pub fn schema(&self, bucket: &str) -> Result<Option<(String, u64)>, StoreError> {
        keys::validate_bucket(bucket)?;
        let meta = match self.storage.get(&meta_key(bucket))? {
            Some(entry) => BucketMeta::decode(&Record::decode(entry.value)?)?,
            None => return Ok(None),
        };
        Ok(meta
            .schema
            .map(|s| (s.as_json().to_string(), meta.schema_version)))
    }

    /// Sets (or with `None`, removes) the bucket's schema; returns the new
    /// schema version. Unless `force`, every live value must satisfy the new
    /// schema, or [`StoreError::SchemaViolation`] names the first that does
    /// not and nothing changes.
    ///
    /// Two phases close the race with concurrent writers: the new schema is
    /// first committed as *pending* (from then on every write must satisfy
    /// it as well), then the existing values are checked, then it is
    /// activated, guarded on the pending state being unchanged.
    pub fn set_schema(
        &self,
        bucket: &str,
        schema: Option<&str>,
        force: bool,
    ) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        self.writable()?;
        let new = schema.map(Schema::parse).transpose()?;
        let update = |f: &dyn Fn(&BucketMeta) -> Result<Option<BucketMeta>, StoreError>| {
            self.update_meta(bucket, f)
        };
        let Some(candidate) = new.clone().filter(|_| !force) else {
            // Removing a schema, or forcing one: no existing value to check.
            let next = update(&|m| {
                Ok(Some(BucketMeta {
                    schema: new.clone(),
                    schema_version: m.schema_version + 1,
                    pending: None,
                    history: m.history,
                }))
            })?;
            return Ok(next.map_or(0, |m| m.schema_version));
        };
        update(&|m| {
            Ok(Some(BucketMeta {
                pending: Some(candidate.clone()),
                ..m.clone()
            }))
        })?;
        if let Err(violation) = self.check_existing(bucket, &candidate) {
            update(&|m| {
                Ok(
                    (m.pending.as_ref() == Some(&candidate)).then(|| BucketMeta {
                        pending: None,
                        ..m.clone()
                    }),
                )
            })?;
            return Err(violation);
        }
        let next = update(&|m| {
            if m.pending.as_ref() != Some(&candidate) {
                return Err(StoreError::Contention);
            }
            Ok(Some(BucketMeta {
                schema: Some(candidate.clone()),
                schema_version: m.schema_version + 1,
                pending: None,
                history: m.history,
            }))
        })?;
        Ok(next.map_or(0, |m| m.schema_version))
    }

    /// Every live value of the bucket satisfies `schema`.
    fn check_existing(&self, bucket: &str, schema: &Schema) -> Result<(), StoreError> {
        let mut options = super::ListOptions {
            limit: Some(super::MAX_LIST_LIMIT),
            ..super::ListOptions::default()
        };
        loop {
            let page = self.list(bucket, &options)?;
            for item in &page.items {
                let record = match &item.value {
                    Some(super::Value::Json(text)) => Record::json(text.clone()),
                    Some(super::Value::Bytes(bytes)) => Record::bytes(bytes.clone()),
                    None => continue,
                };
                let probe = BucketMeta {
                    schema: Some(schema.clone()),
                    ..BucketMeta::default()
                };
                probe.admit(bucket, &item.key, &record).map_err(|e| {
                    if let StoreError::SchemaViolation(why) = e {
                        StoreError::SchemaViolation(format!("existing value {why}"))
                    } else {
                        e
                    }
                })?;
            }
            match page.cursor {
                Some(cursor) => options.cursor = Some(cursor),
                None => return Ok(()),
            }
        }
    }
}
