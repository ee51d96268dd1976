//! What the adapter needs of a key/value store: `wasi:keyvalue` draft2's
//! `store` and `atomics.cas`, nothing more.

/// A failure of the underlying store (its message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KvError(pub String);

/// A key/value store with a single-key compare-and-swap.
pub trait Kv {
    /// A read that a later [`Kv::swap`] is conditional on.
    type Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Several keys at once (`wasi:keyvalue/batch`), one slot per key.
    fn get_many(&self, keys: &[String]) -> Result<Vec<Option<Vec<u8>>>, KvError> {
        keys.iter().map(|key| self.get(key)).collect()
    }
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, key: &str) -> Result<(), KvError>;
    /// Every key starting with `prefix`, in no particular order.
    fn keys(&self, prefix: &str) -> Result<Vec<String>, KvError>;
    /// Reads `key` for a compare-and-swap.
    fn read(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError>;
    /// Writes `value` if the key is unchanged since `cas` was read; `false`
    /// if it changed (nothing written). Not every host keeps that promise
    /// (see `docs/backends.md`): the adapter never relies on a swap from an
    /// absent key, and confirms every commit by reading it back.
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<bool, KvError>;
    /// Atomically adds `delta` to the counter at `key` (absent: 0) and
    /// returns the result (`atomics.increment`).
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
}
