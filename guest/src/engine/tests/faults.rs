//! Fault injection: a backend that always loses races, one that fails, and
//! damaged records. Every case is a typed error; nothing panics; nothing
//! half-written is left.

use std::rc::Rc;

use super::{Hooked, T0, json};
use crate::engine::*;

#[test]
fn endless_races_end_in_contention() {
    // Every commit that checks anything loses its race.
    let conflicts = Hooked::new(Rc::new(MemStorage::default())).before_commit(|_, checks| {
        (!checks.is_empty()).then_some(StorageError::Conflict {
            index: 0,
            current: Some(1),
        })
    });
    let e = Engine::new(conflicts, ManualClock::at(T0));
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
    // The first commit fails as a dying disk would.
    let mut failures = 1;
    let failing = Hooked::new(Rc::new(MemStorage::default())).before_commit(move |_, _| {
        (failures > 0).then(|| {
            failures -= 1;
            StorageError::Unavailable("disk on fire".into())
        })
    });
    let e = Engine::new(failing, ManualClock::at(T0));
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
                vec![],
                vec![Write {
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
