//! The API for callers without an async runtime: each call blocks on a
//! runtime the [`BlockingStore`] owns.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::{
    Bucket, Entry, Error, Event, Lease, ListOptions, ListPage, LockHolder, Store, Transaction,
    Value, WatchOptions, WriteOptions,
};
use crate::runtime::StoreOptions;

/// A [`Store`] for synchronous code. Do not use it from inside an async
/// runtime (blocking there panics in tokio); use [`Store`] instead.
#[derive(Clone, Debug)]
pub struct BlockingStore {
    runtime: Arc<tokio::runtime::Runtime>,
    store: Store,
}

#[derive(Clone, Debug)]
pub struct BlockingBucket {
    runtime: Arc<tokio::runtime::Runtime>,
    bucket: Bucket,
}

impl BlockingStore {
    pub fn open(config: &str) -> Result<Self, Error> {
        Self::open_with(config, StoreOptions::default())
    }

    pub fn open_with(config: &str, options: StoreOptions) -> Result<Self, Error> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("starting the async runtime: {e}")))?;
        let store = runtime.block_on(Store::open_with(config, options))?;
        Ok(Self {
            runtime: Arc::new(runtime),
            store,
        })
    }

    pub fn bucket(&self, name: &str) -> BlockingBucket {
        BlockingBucket {
            runtime: self.runtime.clone(),
            bucket: self.store.bucket(name),
        }
    }

    pub fn buckets(&self) -> Result<Vec<String>, Error> {
        self.runtime.block_on(self.store.buckets())
    }

    /// Commits a transaction built with `as_async().transaction()`.
    pub fn commit(&self, transaction: Transaction) -> Result<u64, Error> {
        self.runtime.block_on(transaction.commit())
    }

    pub fn sweep(&self, limit: u32) -> Result<u32, Error> {
        self.runtime.block_on(self.store.sweep(limit))
    }

    pub fn acquire(&self, name: &str, ttl: Duration, owner: Option<&str>) -> Result<Lease, Error> {
        self.runtime.block_on(self.store.acquire(name, ttl, owner))
    }

    pub fn lock(
        &self,
        name: &str,
        ttl: Duration,
        owner: Option<&str>,
        wait: Duration,
    ) -> Result<Lease, Error> {
        self.runtime
            .block_on(self.store.lock(name, ttl, owner, wait))
    }

    pub fn renew(&self, lease: &Lease, ttl: Duration) -> Result<Lease, Error> {
        self.runtime.block_on(self.store.renew(lease, ttl))
    }

    pub fn release(&self, lease: &Lease) -> Result<bool, Error> {
        self.runtime.block_on(self.store.release(lease))
    }

    pub fn lock_status(&self, name: &str) -> Result<Option<LockHolder>, Error> {
        self.runtime.block_on(self.store.lock_status(name))
    }

    /// The async store underneath.
    pub fn as_async(&self) -> &Store {
        &self.store
    }
}

impl BlockingBucket {
    pub fn get(&self, key: &str) -> Result<Option<Entry>, Error> {
        self.runtime.block_on(self.bucket.get(key))
    }
    pub fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.runtime.block_on(self.bucket.get_json(key))
    }
    pub fn set_json<T: Serialize + ?Sized>(&self, key: &str, value: &T) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.set_json(key, value))
    }
    pub fn set_json_text(&self, key: &str, json: &str) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.set_json_text(key, json))
    }
    pub fn set_bytes(&self, key: &str, value: &[u8]) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.set_bytes(key, value))
    }
    pub fn delete(&self, key: &str) -> Result<bool, Error> {
        self.runtime.block_on(self.bucket.delete(key))
    }
    pub fn exists(&self, key: &str) -> Result<bool, Error> {
        self.runtime.block_on(self.bucket.exists(key))
    }
    pub fn list(&self, options: &ListOptions) -> Result<ListPage, Error> {
        self.runtime.block_on(self.bucket.list(options))
    }
    pub fn set_with(&self, key: &str, value: Value, options: &WriteOptions) -> Result<u64, Error> {
        self.runtime
            .block_on(self.bucket.set_with(key, value, options))
    }
    pub fn delete_if_version(&self, key: &str, version: u64) -> Result<u64, Error> {
        self.runtime
            .block_on(self.bucket.delete_if_version(key, version))
    }
    pub fn increment(&self, key: &str, delta: i64) -> Result<i64, Error> {
        self.runtime.block_on(self.bucket.increment(key, delta))
    }
    pub fn get_path_json<T: DeserializeOwned>(
        &self,
        key: &str,
        path: &str,
    ) -> Result<Option<(T, u64)>, Error> {
        self.runtime.block_on(self.bucket.get_path_json(key, path))
    }
    pub fn set_path_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64, Error> {
        self.runtime
            .block_on(self.bucket.set_path_json(key, path, value))
    }
    pub fn delete_path(&self, key: &str, path: &str) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.delete_path(key, path))
    }
    pub fn append_path_json<T: Serialize + ?Sized>(
        &self,
        key: &str,
        path: &str,
        value: &T,
    ) -> Result<u64, Error> {
        self.runtime
            .block_on(self.bucket.append_path_json(key, path, value))
    }
    pub fn set_schema(
        &self,
        schema: Option<&serde_json::Value>,
        force: bool,
    ) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.set_schema(schema, force))
    }
    pub fn schema(&self) -> Result<Option<(serde_json::Value, u64)>, Error> {
        self.runtime.block_on(self.bucket.schema())
    }
    pub fn set_history(&self, keep: u32) -> Result<(), Error> {
        self.runtime.block_on(self.bucket.set_history(keep))
    }
    pub fn undo(&self) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.undo())
    }
    pub fn redo(&self) -> Result<u64, Error> {
        self.runtime.block_on(self.bucket.redo())
    }
    /// How many changes can be undone and redone.
    pub fn history(&self) -> Result<(u64, u64), Error> {
        self.runtime.block_on(self.bucket.history())
    }
    /// The bucket's changes as a blocking iterator (see [`Bucket::watch`]).
    pub fn watch(&self, options: WatchOptions) -> Result<BlockingWatch, Error> {
        let stream = self.runtime.block_on(self.bucket.watch(options))?;
        Ok(BlockingWatch {
            runtime: self.runtime.clone(),
            stream: Box::pin(stream),
        })
    }
}

/// Watch events as a blocking iterator: each `next` waits for the next event.
pub struct BlockingWatch {
    runtime: Arc<tokio::runtime::Runtime>,
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Event, Error>> + Send>>,
}

impl std::fmt::Debug for BlockingWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingWatch").finish_non_exhaustive()
    }
}

impl BlockingWatch {
    /// The next event, waiting at most `timeout`: `None` if none came in
    /// time (nothing is lost: the event comes with a later call).
    pub fn next_within(
        &mut self,
        timeout: std::time::Duration,
    ) -> Option<Option<Result<Event, Error>>> {
        use futures::StreamExt as _;
        self.runtime
            .block_on(async { tokio::time::timeout(timeout, self.stream.next()).await })
            .ok()
    }
}

impl Iterator for BlockingWatch {
    type Item = Result<Event, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        use futures::StreamExt as _;
        self.runtime.block_on(self.stream.next())
    }
}
