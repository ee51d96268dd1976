//! Fault injection: a backend that always loses races, one that fails, and
//! damaged records. Every case is a typed error; nothing panics; nothing
//! half-written is left.

use std::cell::Cell;

use super::{T0, json};
use crate::engine::*;

/// Wraps `MemStorage`; commits fail as configured.
#[derive(Default)]
struct Faulty {
    inner: MemStorage,
    /// Every commit with checks reports a conflict.
    always_conflict: bool,
    /// Fail the next N commits as unavailable.
    fail_commits: Cell<u32>,
}

impl Storage for Faulty {
    fn get(&self, key: &[u8]) -> Result<Option<Entry>, StorageError> {
        self.inner.get(key)
    }
    fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, StorageError> {
        self.inner.get_many(keys)
    }
    fn scan(
        &self,
        s: &[u8],
        e: Option<&[u8]>,
        l: u32,
        r: bool,
    ) -> Result<Vec<Entry>, StorageError> {
        self.inner.scan(s, e, l, r)
    }
    fn commit(&self, checks: &[Check], writes: &[Write]) -> Result<u64, StorageError> {
        if self.fail_commits.get() > 0 {
            self.fail_commits.set(self.fail_commits.get() - 1);
            return Err(StorageError::Unavailable("disk on fire".into()));
        }
        if self.always_conflict && !checks.is_empty() {
            return Err(StorageError::Conflict {
                index: 0,
                current: Some(1),
            });
        }
        self.inner.commit(checks, writes)
    }
    fn current_version(&self) -> Result<u64, StorageError> {
        self.inner.current_version()
    }
    fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, StorageError> {
        self.inner.changes(since, limit)
    }
}

#[test]
fn endless_races_end_in_contention() {
    let e = Engine::new(
        Faulty {
            always_conflict: true,
            ..Faulty::default()
        },
        ManualClock::at(T0),
    );
    assert_eq!(e.increment("b", "n", 1i64), Err(StoreError::Contention));
    assert_eq!(
        e.set("b", "k", json("1")),
        Err(StoreError::Contention),
        "the rules guard conflicts too"
    );
    assert_eq!(
        e.storage().inner.current_version().unwrap(),
        0,
        "nothing was written"
    );
}

#[test]
fn a_failing_backend_is_a_storage_error_and_writes_nothing() {
    let e = Engine::new(
        Faulty {
            fail_commits: Cell::new(1),
            ..Faulty::default()
        },
        ManualClock::at(T0),
    );
    assert_eq!(
        e.set("b", "k", json("1")),
        Err(StoreError::Storage("disk on fire".into()))
    );
    assert_eq!(e.get("b", "k").unwrap(), None);
    assert!(
        e.set("b", "k", json("1")).is_ok(),
        "works again once the backend does"
    );
}

#[test]
fn damaged_records_are_reported_not_panicked_on() {
    let storage = MemStorage::default();
    let garbage = |key: Vec<u8>, value: &[u8]| {
        storage
            .commit(
                &[],
                &[Write {
                    key,
                    value: Some(value.to_vec()),
                }],
            )
            .unwrap();
    };
    garbage(crate::engine::keys::data_key("b", "k"), &[9, 9, 9]);
    garbage(b"mb".to_vec(), b"not json");
    garbage(b"Hb".to_vec(), &[1, 2, 3]);
    let e = Engine::new(storage, ManualClock::at(T0));
    assert!(matches!(e.get("b", "k"), Err(StoreError::Corrupt(_))));
    assert!(matches!(
        e.list("b", &ListOptions::default()),
        Err(StoreError::Corrupt(_))
    ));
    assert!(
        matches!(e.set("b", "other", json("1")), Err(StoreError::Corrupt(_))),
        "damaged bucket rules"
    );
    assert!(
        matches!(e.undo("b"), Err(StoreError::Corrupt(_))),
        "damaged history position"
    );
    assert!(matches!(
        e.watch("b", None, Some(0), 10),
        Err(StoreError::Corrupt(_))
    ));
}
