//! `kvstash:store/store`: the rich API, one call per engine operation.

use super::{Component, engine};
use crate::bindings::exports::kvstash::store::store as api;
use crate::bindings::exports::kvstash::store::types;
use crate::engine::{
    Condition, EventKind, Holder, Lease, ListOptions, Mutation, Op, StoreError, TxnCheck, Value,
    Versioned, WriteOptions, validate_bucket,
};

impl From<StoreError> for types::Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::InvalidKey(why) => types::Error::InvalidKey(why),
            StoreError::InvalidBucket(why) => types::Error::InvalidBucket(why),
            StoreError::InvalidValue(why) => types::Error::InvalidValue(why),
            StoreError::InvalidCursor => types::Error::InvalidCursor,
            StoreError::InvalidConfig(why) => types::Error::InvalidConfig(why),
            StoreError::InvalidArgument(why) => types::Error::InvalidArgument(why),
            StoreError::Conflict { current } => types::Error::Conflict(current),
            StoreError::CheckFailed { index, current } => {
                types::Error::CheckFailed(types::CheckFailure { index, current })
            }
            StoreError::NotFound(why) => types::Error::NotFound(why),
            StoreError::InvalidPath(why) => types::Error::InvalidPath(why),
            StoreError::PathNotFound(why) => types::Error::PathNotFound(why),
            StoreError::PathTypeMismatch(why) => types::Error::PathTypeMismatch(why),
            StoreError::NotJson => types::Error::NotJson,
            StoreError::SchemaViolation(why) => types::Error::SchemaViolation(why),
            StoreError::ReadOnly => types::Error::ReadOnly,
            StoreError::Contention => types::Error::Contention,
            StoreError::Compacted { oldest } => types::Error::Compacted(oldest),
            StoreError::Locked(h) => types::Error::Locked(holder_out(h)),
            StoreError::LeaseLost(why) => types::Error::LeaseLost(why),
            // The host's error says "storage failed: " itself.
            StoreError::Storage(why) => types::Error::Storage(why),
            e @ StoreError::Corrupt(_) => types::Error::Corrupt(e.to_string()),
        }
    }
}

fn value_out(value: Value) -> types::Value {
    match value {
        Value::Json(text) => types::Value::Json(text),
        Value::Bytes(bytes) => types::Value::Bytes(bytes),
    }
}

fn value_in(value: types::Value) -> Result<Value, StoreError> {
    match value {
        types::Value::Json(text) => Value::json(text),
        types::Value::Bytes(bytes) => Value::bytes(bytes),
    }
}

fn entry_out(v: Versioned) -> types::Entry {
    types::Entry {
        value: value_out(v.value),
        version: v.version,
        expires_at: v.expires_at_ms,
    }
}

fn holder_out(h: Holder) -> types::LockHolder {
    types::LockHolder {
        token: h.token,
        expires_at: h.expires_at_ms,
        owner: h.owner,
    }
}

fn lease_out(l: Lease) -> types::Lease {
    types::Lease {
        name: l.name,
        token: l.token,
        expires_at: l.expires_at_ms,
    }
}

fn check_in(c: types::Check) -> Result<TxnCheck, StoreError> {
    let c = match c {
        types::Check::Key(c) => c,
        types::Check::Lease(l) => {
            return Ok(TxnCheck::Lease {
                name: l.name,
                token: l.token,
            });
        }
    };
    let condition = match c.condition {
        types::Condition::VersionIs(version) => Condition::VersionIs(version),
        types::Condition::Absent => Condition::Absent,
        types::Condition::Exists => Condition::Exists,
        types::Condition::ValueEquals(value) => Condition::ValueEquals(value_in(value)?),
    };
    Ok(TxnCheck::Key {
        bucket: c.bucket,
        key: c.key,
        condition,
    })
}

fn mutation_in(m: types::Mutation) -> Result<Mutation, StoreError> {
    let op = match m.op {
        types::Op::Set(value) => Op::Set(value_in(value)?),
        types::Op::Delete => Op::Delete,
        types::Op::Increment(delta) => Op::Increment(delta),
        types::Op::SetPath(p) => Op::SetPath {
            path: p.path,
            value: p.value,
        },
        types::Op::DeletePath(path) => Op::DeletePath { path },
        types::Op::AppendPath(p) => Op::AppendPath {
            path: p.path,
            value: p.value,
        },
    };
    Ok(Mutation {
        bucket: m.bucket,
        key: m.key,
        op,
        ttl_ms: m.ttl_ms,
    })
}

pub struct Bucket {
    name: String,
}

impl api::Guest for Component {
    type Bucket = Bucket;

    fn buckets() -> Result<Vec<String>, types::Error> {
        Ok(engine()?.buckets()?)
    }

    fn transact(
        checks: Vec<types::Check>,
        mutations: Vec<types::Mutation>,
    ) -> Result<u64, types::Error> {
        // First: opening the configuration sets the limits checked below.
        let engine = engine()?;
        let checks = checks
            .into_iter()
            .map(check_in)
            .collect::<Result<Vec<_>, _>>()?;
        let mutations = mutations
            .into_iter()
            .map(mutation_in)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(engine.transact(&checks, &mutations)?)
    }

    fn sweep(limit: u32) -> Result<u32, types::Error> {
        Ok(engine()?.sweep(limit)?)
    }

    fn migrate_copy(
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<types::MigratePage, types::Error> {
        let page = super::migration()?
            .copy_page(after.as_deref(), limit)
            .map_err(StoreError::from)?;
        Ok(types::MigratePage {
            next: page.next,
            records: page.records,
            bytes: page.bytes,
            written: page.written,
        })
    }

    fn migrate_catch_up(since: u64, limit: u32) -> Result<(u64, u32), types::Error> {
        Ok(super::migration()?
            .catch_up(since, limit)
            .map_err(StoreError::from)?)
    }

    fn migrate_verify(
        after: Option<Vec<u8>>,
        limit: u32,
    ) -> Result<types::VerifyPage, types::Error> {
        let page = super::migration()?
            .verify_page(after.as_deref(), limit)
            .map_err(StoreError::from)?;
        let out = |summaries: Vec<crate::engine::Summary>| {
            summaries
                .into_iter()
                .map(|s| types::BucketSummary {
                    bucket: s.bucket,
                    records: s.records,
                    checksum: s.checksum,
                })
                .collect()
        };
        Ok(types::VerifyPage {
            next: page.next,
            from: out(page.from),
            to: out(page.to),
            differing: page.differing,
        })
    }

    fn cache_stats() -> Result<Vec<types::CacheCounters>, types::Error> {
        Ok(super::cache_stats()?
            .into_iter()
            .map(|(layer, s)| types::CacheCounters {
                layer,
                hits: s.hits,
                misses: s.misses,
                evictions: s.evictions,
                invalidations: s.invalidations,
                syncs: s.syncs,
                entries: s.entries,
                bytes: s.bytes,
            })
            .collect())
    }

    fn acquire(
        name: String,
        ttl_ms: u64,
        owner: Option<String>,
    ) -> Result<types::Lease, types::Error> {
        Ok(lease_out(engine()?.acquire(
            &name,
            ttl_ms,
            owner.as_deref(),
        )?))
    }

    fn renew(name: String, token: u64, ttl_ms: u64) -> Result<types::Lease, types::Error> {
        Ok(lease_out(engine()?.renew(&name, token, ttl_ms)?))
    }

    fn release(name: String, token: u64) -> Result<bool, types::Error> {
        Ok(engine()?.release(&name, token)?)
    }

    fn lock_status(name: String) -> Result<Option<types::LockHolder>, types::Error> {
        Ok(engine()?.lock_holder(&name)?.map(holder_out))
    }
}

impl api::GuestBucket for Bucket {
    fn open(name: String) -> Result<api::Bucket, types::Error> {
        // Surfaces configuration errors at open time; reads no data.
        engine()?;
        validate_bucket(&name)?;
        Ok(api::Bucket::new(Bucket { name }))
    }

    fn name(&self) -> String {
        self.name.clone()
    }

    fn get(&self, key: String) -> Result<Option<types::Entry>, types::Error> {
        #[cfg(feature = "runaway")]
        if key == "kvstash-test-runaway" {
            runaway();
        }
        Ok(engine()?.get(&self.name, &key)?.map(entry_out))
    }

    fn set(&self, key: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.set(&self.name, &key, Value::json(value)?)?)
    }

    fn set_bytes(&self, key: String, value: Vec<u8>) -> Result<u64, types::Error> {
        Ok(engine()?.set(&self.name, &key, Value::bytes(value)?)?)
    }

    fn set_with(
        &self,
        key: String,
        value: types::Value,
        options: types::WriteOptions,
    ) -> Result<u64, types::Error> {
        let options = WriteOptions {
            if_version: options.if_version,
            if_absent: options.if_absent,
            ttl_ms: options.ttl_ms,
        };
        Ok(engine()?.set_with(&self.name, &key, value_in(value)?, &options)?)
    }

    fn delete(&self, key: String) -> Result<bool, types::Error> {
        Ok(engine()?.delete(&self.name, &key)?)
    }

    fn delete_if_version(&self, key: String, version: u64) -> Result<u64, types::Error> {
        Ok(engine()?.delete_if_version(&self.name, &key, version)?)
    }

    fn increment(&self, key: String, delta: i64) -> Result<i64, types::Error> {
        Ok(engine()?.increment(&self.name, &key, delta)?)
    }

    fn get_path(
        &self,
        key: String,
        path: String,
    ) -> Result<Option<types::PathValue>, types::Error> {
        Ok(engine()?
            .get_path(&self.name, &key, &path)?
            .map(|(json, version)| types::PathValue { json, version }))
    }

    fn set_path(&self, key: String, path: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::SetPath { path, value }, None)?)
    }

    fn delete_path(&self, key: String, path: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::DeletePath { path }, None)?)
    }

    fn append_path(&self, key: String, path: String, value: String) -> Result<u64, types::Error> {
        Ok(engine()?.update(&self.name, &key, Op::AppendPath { path, value }, None)?)
    }

    fn watch(
        &self,
        prefix: Option<String>,
        since: Option<u64>,
        limit: u32,
    ) -> Result<types::WatchPage, types::Error> {
        let page = engine()?.watch(&self.name, prefix.as_deref(), since, limit)?;
        Ok(types::WatchPage {
            events: page
                .events
                .into_iter()
                .map(|e| types::Event {
                    version: e.version,
                    key: e.key,
                    kind: match e.kind {
                        EventKind::Set => types::EventKind::Set,
                        EventKind::Delete => types::EventKind::Delete,
                        EventKind::Expire => types::EventKind::Expire,
                    },
                    value: e.value.map(value_out),
                    expires_at: e.expires_at_ms,
                })
                .collect(),
            next: page.next,
        })
    }

    fn exists(&self, key: String) -> Result<bool, types::Error> {
        Ok(engine()?.exists(&self.name, &key)?)
    }

    fn set_schema(&self, schema: Option<String>, force: bool) -> Result<u64, types::Error> {
        Ok(engine()?.set_schema(&self.name, schema.as_deref(), force)?)
    }

    fn set_history(&self, keep: u32) -> Result<(), types::Error> {
        Ok(engine()?.set_history(&self.name, keep)?)
    }

    fn undo(&self) -> Result<u64, types::Error> {
        Ok(engine()?.undo(&self.name)?)
    }

    fn redo(&self) -> Result<u64, types::Error> {
        Ok(engine()?.redo(&self.name)?)
    }

    fn history(&self) -> Result<types::HistoryInfo, types::Error> {
        let (undoable, redoable) = engine()?.history(&self.name)?;
        Ok(types::HistoryInfo { undoable, redoable })
    }

    fn get_schema(&self) -> Result<Option<types::SchemaInfo>, types::Error> {
        Ok(engine()?
            .schema(&self.name)?
            .map(|(json, version)| types::SchemaInfo { json, version }))
    }

    fn list(&self, options: types::ListOptions) -> Result<types::ListPage, types::Error> {
        let page = engine()?.list(
            &self.name,
            &ListOptions {
                prefix: options.prefix,
                start: options.start,
                end: options.end,
                limit: options.limit,
                cursor: options.cursor,
                reverse: options.reverse,
                keys_only: options.keys_only,
            },
        )?;
        Ok(types::ListPage {
            items: page
                .items
                .into_iter()
                .map(|item| types::Item {
                    key: item.key,
                    value: item.value.map(value_out),
                    version: item.version,
                    expires_at: item.expires_at_ms,
                })
                .collect(),
            cursor: page.cursor,
        })
    }

    fn get_many(&self, keys: Vec<String>) -> Result<Vec<Option<types::Entry>>, types::Error> {
        Ok(engine()?
            .get_many(&self.name, &keys)?
            .into_iter()
            .map(|v| v.map(entry_out))
            .collect())
    }

    fn set_many(&self, entries: Vec<(String, String)>) -> Result<u64, types::Error> {
        // First: opening the configuration sets the limits checked below.
        let engine = engine()?;
        let pairs = entries
            .into_iter()
            .map(|(key, value)| Ok((key, Value::json(value)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        Ok(engine.set_many(&self.name, pairs)?)
    }

    fn delete_many(&self, keys: Vec<String>) -> Result<u32, types::Error> {
        Ok(engine()?.delete_many(&self.name, &keys)?)
    }
}

/// A call that never returns (the `runaway` feature, for tests only).
#[cfg(feature = "runaway")]
fn runaway() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}
