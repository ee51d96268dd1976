//! Leases and locks: a named lock held for a time-to-live, with a fencing
//! token.
//!
//! A lock is a record at `"l" name` with an expiry, so an expired lease
//! frees the lock by itself and the sweep reclaims it. The **fencing token**
//! is the version of the commit that acquired the lock: versions are
//! store-wide and strictly increasing, so every acquisition of any lock gets
//! a larger token than every earlier one, even after a lock record was swept.
//! Renewal rewrites the record (new version, new expiry) and carries the
//! token in the value. A transaction can check `lease(name, token)`; it
//! reads the lock, so its guard fails the moment another holder acquires
//! it, and a stale holder cannot write.

use serde_json::{Value as Json, json};

use super::txn::{Decision, Stored};
use super::{Clock, Engine, Now, Record, Storage, StoreError, expiry};

const LOCK_TAG: u8 = b'l';

/// A held lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    /// The fencing token: larger than the token of every earlier acquisition
    /// of any lock in the store.
    pub token: u64,
    pub expires_at_ms: u64,
}

/// Who holds a lock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    pub token: u64,
    pub expires_at_ms: u64,
    pub owner: Option<String>,
}

pub(super) fn lock_key(name: &str) -> Result<Vec<u8>, StoreError> {
    let most = super::limits().key_bytes;
    if name.is_empty() || name.len() > most {
        return Err(StoreError::InvalidKey(format!(
            "a lock name is 1 to {most} bytes (limits.key_bytes)"
        )));
    }
    let mut key = Vec::with_capacity(1 + name.len());
    key.push(LOCK_TAG);
    key.extend_from_slice(name.as_bytes());
    Ok(key)
}

/// The holder recorded in a live lock record.
pub(super) fn holder(stored: &Stored) -> Holder {
    let value: Json = serde_json::from_slice(&stored.record.payload).unwrap_or(Json::Null);
    Holder {
        // Written at acquisition without a token: the token is that
        // commit's version, which is the record's version until a renewal
        // rewrites it (renewals carry the token in the value).
        token: value
            .get("token")
            .and_then(Json::as_u64)
            .unwrap_or(stored.version),
        expires_at_ms: stored.record.expires_at_ms.unwrap_or(u64::MAX),
        owner: value
            .get("owner")
            .and_then(Json::as_str)
            .map(str::to_string),
    }
}

fn lock_record(token: Option<u64>, owner: Option<&str>, expires_at_ms: u64) -> Record {
    let mut value = json!({});
    if let Some(token) = token {
        value["token"] = json!(token);
    }
    if let Some(owner) = owner {
        value["owner"] = json!(owner);
    }
    let mut record = Record::json(value.to_string());
    record.expires_at_ms = Some(expires_at_ms);
    record
}

fn required_expiry(now: &Now<'_>, ttl_ms: u64) -> Result<u64, StoreError> {
    expiry(now, Some(ttl_ms))?
        .ok_or_else(|| StoreError::InvalidArgument("a lease needs a TTL".into()))
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Takes the lock `name` for `ttl_ms` if nobody holds it; otherwise
    /// [`StoreError::Locked`] with the current holder.
    pub fn acquire(
        &self,
        name: &str,
        ttl_ms: u64,
        owner: Option<&str>,
    ) -> Result<Lease, StoreError> {
        let key = lock_key(name)?;
        let most = super::limits().key_bytes;
        if owner.is_some_and(|o| o.len() > most) {
            return Err(StoreError::InvalidArgument(format!(
                "an owner is at most {most} bytes (limits.key_bytes)"
            )));
        }
        self.writable()?;
        let now = self.now();
        let expires_at_ms = required_expiry(&now, ttl_ms)?;
        let (_, version) = self.read_modify_write(std::slice::from_ref(&key), |snapshot| {
            if let Some(held) = snapshot.live(&key, &now) {
                return Err(StoreError::Locked(holder(held)));
            }
            let record = lock_record(None, owner, expires_at_ms);
            Ok(Decision::Write(vec![(key.clone(), Some(record))], ()))
        })?;
        let token =
            version.ok_or_else(|| StoreError::Storage("acquisition wrote nothing".into()))?;
        Ok(Lease {
            name: name.into(),
            token,
            expires_at_ms,
        })
    }

    /// Extends a lease held with `token` to `ttl_ms` from now; otherwise
    /// [`StoreError::LeaseLost`] (expired, released, or taken since).
    pub fn renew(&self, name: &str, token: u64, ttl_ms: u64) -> Result<Lease, StoreError> {
        let key = lock_key(name)?;
        self.writable()?;
        let now = self.now();
        let expires_at_ms = required_expiry(&now, ttl_ms)?;
        self.read_modify_write(std::slice::from_ref(&key), |snapshot| {
            let held = snapshot.live(&key, &now).map(holder);
            match held {
                Some(h) if h.token == token => {
                    let record = lock_record(Some(token), h.owner.as_deref(), expires_at_ms);
                    Ok(Decision::Write(vec![(key.clone(), Some(record))], ()))
                }
                _ => Err(StoreError::LeaseLost(format!(
                    "lease {token} on `{name}` is no longer held"
                ))),
            }
        })?;
        Ok(Lease {
            name: name.into(),
            token,
            expires_at_ms,
        })
    }

    /// Frees the lock if it is held with `token`; `Ok(false)` if it was not
    /// (expired, released, or taken since), which writes nothing.
    pub fn release(&self, name: &str, token: u64) -> Result<bool, StoreError> {
        let key = lock_key(name)?;
        self.writable()?;
        let now = self.now();
        let (released, _) = self.read_modify_write(std::slice::from_ref(&key), |snapshot| {
            let held = snapshot.live(&key, &now).map(holder);
            Ok(match held {
                Some(h) if h.token == token => Decision::Write(vec![(key.clone(), None)], true),
                _ => Decision::Done(false),
            })
        })?;
        Ok(released)
    }

    /// The current holder of the lock, if it is held.
    pub fn lock_holder(&self, name: &str) -> Result<Option<Holder>, StoreError> {
        let key = lock_key(name)?;
        let now = self.now();
        let Some(entry) = self.storage.get(&key)? else {
            return Ok(None);
        };
        let stored = Stored {
            version: entry.version,
            record: Record::decode(entry.value)?,
        };
        if now.expired(stored.record.expires_at_ms) {
            return Ok(None);
        }
        Ok(Some(holder(&stored)))
    }
}
