//! `fermyon:spin/key-value`: what Spin apps import, at `2.0.0` (the `store`
//! resource that `spin_sdk::key_value::Store` wraps) and unversioned (Spin
//! 1.x: `u32` handles, `no-such-key` on a missing `get`).
//!
//! A label opens the bucket the configuration's store names give it (see
//! [`crate::config::StoreNames`]); values are bytes, returned exactly as set.

use std::cell::RefCell;

use super::{Component, KvError, engine, open_store};
use crate::bindings::exports::fermyon::spin::key_value as v1;
use crate::bindings::exports::fermyon::spin2_0_0::key_value as v2;
use crate::engine::{ListOptions, MAX_LIST_LIMIT, StoreError, Value};

fn get(bucket: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
    Ok(engine()?.get(bucket, key)?.map(|v| v.value.into_bytes()))
}

fn set(bucket: &str, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
    engine()?.set(bucket, key, Value::sniff(value)?)?;
    Ok(())
}

fn delete(bucket: &str, key: &str) -> Result<(), StoreError> {
    engine()?.delete(bucket, key)?;
    Ok(())
}

fn exists(bucket: &str, key: &str) -> Result<bool, StoreError> {
    engine()?.exists(bucket, key)
}

/// Every key of the bucket, in key order (Spin's `get-keys` has no paging).
fn keys(bucket: &str) -> Result<Vec<String>, StoreError> {
    let engine = engine()?;
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = engine.list(
            bucket,
            &ListOptions {
                limit: Some(MAX_LIST_LIMIT),
                cursor,
                keys_only: true,
                ..ListOptions::default()
            },
        )?;
        keys.extend(page.items.into_iter().map(|item| item.key));
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(keys),
        }
    }
}

// ---- fermyon:spin/key-value@2.0.0 ----------------------------------------

impl From<StoreError> for v2::Error {
    fn from(e: StoreError) -> Self {
        match KvError::from(e) {
            KvError::NoSuchStore => v2::Error::NoSuchStore,
            KvError::AccessDenied => v2::Error::AccessDenied,
            KvError::Other(why) => v2::Error::Other(why),
        }
    }
}

/// An open Spin store: the bucket its label names.
pub struct SpinStore(String);

impl v2::Guest for Component {
    type Store = SpinStore;
}

impl v2::GuestStore for SpinStore {
    fn open(label: String) -> Result<v2::Store, v2::Error> {
        Ok(v2::Store::new(SpinStore(open_store(&label)?)))
    }

    fn get(&self, key: String) -> Result<Option<Vec<u8>>, v2::Error> {
        Ok(get(&self.0, &key)?)
    }

    fn set(&self, key: String, value: Vec<u8>) -> Result<(), v2::Error> {
        Ok(set(&self.0, &key, value)?)
    }

    fn delete(&self, key: String) -> Result<(), v2::Error> {
        Ok(delete(&self.0, &key)?)
    }

    fn exists(&self, key: String) -> Result<bool, v2::Error> {
        Ok(exists(&self.0, &key)?)
    }

    fn get_keys(&self) -> Result<Vec<String>, v2::Error> {
        Ok(keys(&self.0)?)
    }
}

// ---- fermyon:spin/key-value (unversioned, Spin 1.x) ------------------------

impl From<StoreError> for v1::Error {
    fn from(e: StoreError) -> Self {
        match KvError::from(e) {
            KvError::NoSuchStore => v1::Error::NoSuchStore,
            KvError::AccessDenied => v1::Error::AccessDenied,
            KvError::Other(why) => v1::Error::Io(why),
        }
    }
}

/// Most stores one instance may hold open at once (`store-table-full`).
const MAX_OPEN_STORES: usize = 256;

thread_local! {
    /// Open v1 handles: index + 1 is the handle; `None` is a closed slot.
    static HANDLES: RefCell<Vec<Option<String>>> = const { RefCell::new(Vec::new()) };
}

/// The bucket behind a v1 handle, or `invalid-store`.
fn bucket_of(store: u32) -> Result<String, v1::Error> {
    let index = usize::try_from(store)
        .ok()
        .and_then(|h| h.checked_sub(1))
        .ok_or(v1::Error::InvalidStore)?;
    HANDLES
        .with(|handles| handles.borrow().get(index).cloned().flatten())
        .ok_or(v1::Error::InvalidStore)
}

impl v1::Guest for Component {
    fn open(name: String) -> Result<v1::Store, v1::Error> {
        let bucket = open_store(&name)?;
        HANDLES.with(|handles| {
            let mut handles = handles.borrow_mut();
            let index = match handles.iter().position(Option::is_none) {
                Some(free) => free,
                None if handles.len() < MAX_OPEN_STORES => {
                    handles.push(None);
                    handles.len() - 1
                }
                None => return Err(v1::Error::StoreTableFull),
            };
            handles[index] = Some(bucket);
            u32::try_from(index + 1).map_err(|_| v1::Error::StoreTableFull)
        })
    }

    fn get(store: v1::Store, key: String) -> Result<Vec<u8>, v1::Error> {
        get(&bucket_of(store)?, &key)?.ok_or(v1::Error::NoSuchKey)
    }

    fn set(store: v1::Store, key: String, value: Vec<u8>) -> Result<(), v1::Error> {
        Ok(set(&bucket_of(store)?, &key, value)?)
    }

    fn delete(store: v1::Store, key: String) -> Result<(), v1::Error> {
        Ok(delete(&bucket_of(store)?, &key)?)
    }

    fn exists(store: v1::Store, key: String) -> Result<bool, v1::Error> {
        Ok(exists(&bucket_of(store)?, &key)?)
    }

    fn get_keys(store: v1::Store) -> Result<Vec<String>, v1::Error> {
        Ok(keys(&bucket_of(store)?)?)
    }

    fn close(store: v1::Store) {
        let Some(index) = usize::try_from(store).ok().and_then(|h| h.checked_sub(1)) else {
            return;
        };
        HANDLES.with(|handles| {
            if let Some(slot) = handles.borrow_mut().get_mut(index) {
                *slot = None;
            }
        });
    }
}
