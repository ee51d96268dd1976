//! A store below the root that refuses commits (`"read_only": true` on a
//! node of the configuration other than the root, whose refusal is the
//! engine's own).

use super::storage::{Change, Check, Entry, Storage, StorageError, Write};

#[derive(Debug)]
pub struct ReadOnly<S> {
    inner: S,
}

impl<S: Storage> ReadOnly<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: Storage> Storage for ReadOnly<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.inner.get(key)
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        self.inner.get_many(keys)
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan(start, end, limit, reverse)
    }

    fn commit(&self, _checks: Vec<Check>, _writes: Vec<Write>) -> Result<u64, StorageError> {
        Err(StorageError::ReadOnly)
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        self.inner.current_version()
    }

    fn commits_here(&self) -> u64 {
        self.inner.commits_here()
    }

    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        self.inner.changes(since, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::MemStorage;

    #[test]
    fn reads_pass_and_commits_are_refused() {
        let store = std::rc::Rc::new(MemStorage::default());
        store
            .commit(
                vec![],
                vec![Write {
                    key: b"k".to_vec(),
                    value: Some(b"v".to_vec()),
                }],
            )
            .unwrap();
        let read_only = ReadOnly::new(store.clone());
        assert_eq!(read_only.get(b"k").unwrap().unwrap().value, b"v");
        let refused = read_only.commit(
            vec![],
            vec![Write {
                key: b"k".to_vec(),
                value: None,
            }],
        );
        assert_eq!(refused, Err(StorageError::ReadOnly));
        assert!(store.get(b"k").unwrap().is_some(), "nothing was written");
    }
}
