//! The `prefix` layer: puts a whole store under one key prefix of another, so
//! several stores (tenants, apps, test runs) can share one backend.

use super::storage::{Change, Check, Entry, Storage, StorageError, Write};

#[derive(Debug)]
pub struct Prefixed<S> {
    inner: S,
    prefix: Vec<u8>,
}

impl<S: Storage> Prefixed<S> {
    pub fn new(inner: S, prefix: Vec<u8>) -> Self {
        Self { inner, prefix }
    }

    fn outer(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + key.len());
        out.extend_from_slice(&self.prefix);
        out.extend_from_slice(key);
        out
    }

    fn strip(&self, mut entry: Entry) -> Option<Entry> {
        entry.key = entry.key.strip_prefix(self.prefix.as_slice())?.to_vec();
        Some(entry)
    }
}

impl<S: Storage> Storage for Prefixed<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        Ok(self
            .inner
            .get(&self.outer(key))?
            .and_then(|e| self.strip(e)))
    }

    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        let outer: Vec<Vec<u8>> = keys.iter().map(|k| self.outer(k)).collect();
        Ok(self
            .inner
            .get_many(&outer)?
            .into_iter()
            .map(|e| e.and_then(|e| self.strip(e)))
            .collect())
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        limit: u32,
        reverse: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        let end = match end {
            Some(end) => Some(self.outer(end)),
            None => super::keys::prefix_end(&self.prefix),
        };
        Ok(self
            .inner
            .scan(&self.outer(start), end.as_deref(), limit, reverse)?
            .into_iter()
            .filter_map(|e| self.strip(e))
            .collect())
    }

    fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, StorageError> {
        let checks = checks
            .into_iter()
            .map(|c| match c {
                Check::VersionIs(k, v) => Check::VersionIs(self.outer(&k), v),
                Check::Absent(k) => Check::Absent(self.outer(&k)),
            })
            .collect();
        let writes = writes
            .into_iter()
            .map(|w| Write {
                key: self.outer(&w.key),
                value: w.value,
            })
            .collect();
        self.inner.commit(checks, writes)
    }

    fn current_version(&self) -> Result<u64, StorageError> {
        self.inner.current_version()
    }

    fn commits_here(&self) -> u64 {
        self.inner.commits_here()
    }

    /// Versions are the backend's: other prefixes' commits leave gaps. A
    /// page of only other prefixes' changes is read past, so an empty
    /// answer means the feed's end, as the storage contract says (a cache's
    /// sync and a migration's catch-up stop at an empty page).
    fn changes(&self, mut since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        loop {
            let page = self.inner.changes(since, limit)?;
            let Some(last) = page.last().map(|c| c.version) else {
                return Ok(Vec::new());
            };
            let ours: Vec<Change> = page
                .into_iter()
                .filter_map(|mut c| {
                    c.key = c.key.strip_prefix(self.prefix.as_slice())?.to_vec();
                    Some(c)
                })
                .collect();
            if !ours.is_empty() {
                return Ok(ours);
            }
            since = last;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::engine::MemStorage;

    /// Another prefix's changes fill whole pages: the feed reads past them
    /// to this prefix's, and answers empty only at the end.
    #[test]
    fn the_feed_reads_past_other_prefixes_pages() {
        let backend = Rc::new(MemStorage::default());
        let ours = Prefixed::new(backend.clone(), b"a/".to_vec());
        let theirs = Prefixed::new(backend.clone(), b"b/".to_vec());
        let write = |s: &dyn Storage, key: &str| {
            s.commit(
                vec![],
                vec![Write {
                    key: key.as_bytes().to_vec(),
                    value: Some(b"v".to_vec()),
                }],
            )
            .unwrap()
        };
        for i in 0..25 {
            write(&theirs, &format!("k{i}"));
        }
        let mine = write(&ours, "mine");
        let changes = ours.changes(0, 10).unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(
            (changes[0].version, changes[0].key.as_slice()),
            (mine, &b"mine"[..])
        );
        assert_eq!(ours.changes(mine, 10).unwrap(), vec![], "the end");
    }
}
