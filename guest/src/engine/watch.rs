//! Watch: the changes of a bucket (or a key prefix of it), in version order,
//! resumable from any version the backend still retains.
//!
//! Pull-based: each call returns the events of the next whole commits after
//! `since`, and the version to pass next time. Built on the storage change
//! feed, so a watcher sees every write made through any handle, instance or
//! process sharing the backend.

use super::{Clock, Engine, MAX_SCAN, Record, Storage, StoreError, Value, Versioned, keys};

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Set,
    Delete,
    /// Removed because its TTL passed (by the sweep or a read that met it;
    /// so the event comes when the key is reclaimed, not the instant it
    /// expired: it was invisible from that instant on).
    Expire,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The version of the commit that made the change.
    pub version: u64,
    pub key: String,
    pub kind: EventKind,
    /// The new value, for `Set`.
    pub value: Option<Value>,
    pub expires_at_ms: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchPage {
    pub events: Vec<Event>,
    /// Pass as `since` to continue. Advances past commits that touched
    /// nothing watched, so it can move without events.
    pub next: u64,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Events of `bucket` (keys starting with `prefix`) from commits after
    /// `since`; `since: None` starts from now (no events, `next` is the
    /// current version). Reads whole commits of at most about `limit`
    /// changes (clamped to 1..=10000). Errors: [`StoreError::Compacted`]
    /// when `since` is older than the backend retains.
    pub fn watch(
        &self,
        bucket: &str,
        prefix: Option<&str>,
        since: Option<u64>,
        limit: u32,
    ) -> Result<WatchPage, StoreError> {
        keys::validate_bucket(bucket)?;
        if prefix.is_some_and(|p| p.len() > super::limits().key_bytes) {
            return Err(StoreError::InvalidKey("prefix is longer than a key".into()));
        }
        let Some(since) = since else {
            return Ok(WatchPage {
                events: Vec::new(),
                next: self.storage.current_version()?,
            });
        };
        let changes = self.storage.changes(since, limit.clamp(1, MAX_SCAN))?;
        let next = changes.last().map_or(since, |c| c.version);
        let mut events = Vec::new();
        let mut start = 0;
        while start < changes.len() {
            // One commit at a time: its marker says whether its deletes
            // are expirations.
            let version = changes[start].version;
            let end = changes[start..]
                .iter()
                .position(|c| c.version != version)
                .map_or(changes.len(), |n| start + n);
            let commit = &changes[start..end];
            let expiring = commit
                .iter()
                .any(|c| c.key == keys::EXPIRY_MARKER && c.value.is_none());
            for change in commit {
                let Some((b, key)) = keys::split_data_key(&change.key) else {
                    continue;
                };
                if b != bucket || prefix.is_some_and(|p| !key.starts_with(p)) {
                    continue;
                }
                let event = match &change.value {
                    Some(raw) => {
                        let stored = Versioned::from_record(Record::decode(raw.clone())?, version)?;
                        Event {
                            version,
                            key: key.to_string(),
                            kind: EventKind::Set,
                            value: Some(stored.value),
                            expires_at_ms: stored.expires_at_ms,
                        }
                    }
                    None => Event {
                        version,
                        key: key.to_string(),
                        kind: if expiring {
                            EventKind::Expire
                        } else {
                            EventKind::Delete
                        },
                        value: None,
                        expires_at_ms: None,
                    },
                };
                events.push(event);
            }
            start = end;
        }
        Ok(WatchPage { events, next })
    }
}
