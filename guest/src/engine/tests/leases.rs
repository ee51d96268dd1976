//! Leases and locks: exclusion, expiry, renewal, release, fencing tokens.

use std::rc::Rc;

use super::{T0, json};
use crate::engine::*;

fn engine() -> (Engine<MemStorage, Rc<ManualClock>>, Rc<ManualClock>) {
    let clock = Rc::new(ManualClock::at(T0));
    (Engine::new(MemStorage::default(), clock.clone()), clock)
}

#[test]
fn one_holder_at_a_time_until_the_lease_expires() {
    let (e, clock) = engine();
    let first = e.acquire("deploy", 1000, Some("ci-1")).unwrap();
    assert_eq!(first.expires_at_ms, T0 + 1000);
    match e.acquire("deploy", 1000, Some("ci-2")) {
        Err(StoreError::Locked(h)) => {
            assert_eq!(
                (h.token, h.expires_at_ms, h.owner.as_deref()),
                (first.token, T0 + 1000, Some("ci-1"))
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        e.lock_holder("deploy").unwrap().map(|h| h.token),
        Some(first.token)
    );
    clock.advance(1000);
    assert_eq!(
        e.lock_holder("deploy").unwrap(),
        None,
        "an expired lease frees the lock"
    );
    let second = e.acquire("deploy", 1000, Some("ci-2")).unwrap();
    assert!(second.token > first.token);
}

#[test]
fn renew_keeps_the_token_and_release_frees_the_lock() {
    let (e, clock) = engine();
    let lease = e.acquire("l", 100, None).unwrap();
    clock.advance(90);
    let renewed = e.renew("l", lease.token, 100).unwrap();
    assert_eq!(
        (renewed.token, renewed.expires_at_ms),
        (lease.token, T0 + 190)
    );
    clock.advance(50);
    assert_eq!(
        e.lock_holder("l").unwrap().map(|h| h.token),
        Some(lease.token),
        "still held after the first TTL"
    );
    assert!(matches!(
        e.renew("l", lease.token + 1, 100),
        Err(StoreError::LeaseLost(_))
    ));
    assert!(!e.release("l", lease.token + 1).unwrap());
    assert!(e.release("l", lease.token).unwrap());
    assert!(
        !e.release("l", lease.token).unwrap(),
        "releasing twice is harmless"
    );
    assert_eq!(e.lock_holder("l").unwrap(), None);
    clock.advance(1);
    assert!(matches!(
        e.renew("l", lease.token, 100),
        Err(StoreError::LeaseLost(_))
    ));
}

#[test]
fn tokens_keep_increasing_across_locks_sweeps_and_restarts() {
    let storage = Rc::new(MemStorage::default());
    let clock = Rc::new(ManualClock::at(T0));
    let e = Engine::new(storage.clone(), clock.clone());
    let a = e.acquire("a", 10, None).unwrap();
    let b = e.acquire("b", 10, None).unwrap();
    assert!(b.token > a.token);
    clock.advance(10);
    assert_eq!(e.sweep(100).unwrap(), 2, "expired lock records are swept");
    let restarted = Engine::new(storage, clock);
    let again = restarted.acquire("a", 10, None).unwrap();
    assert!(
        again.token > b.token,
        "a swept lock does not restart its tokens"
    );
}

#[test]
fn a_transaction_fenced_by_a_stale_lease_writes_nothing() {
    let (e, clock) = engine();
    let old = e.acquire("leader", 100, Some("node-1")).unwrap();
    let fenced = |token: u64, value: &str| {
        e.transact(
            &[TxnCheck::Lease {
                name: "leader".into(),
                token,
            }],
            &[Mutation {
                bucket: "cfg".into(),
                key: "primary".into(),
                op: Op::Set(json(value)),
                ttl_ms: None,
            }],
        )
    };
    fenced(old.token, "\"node-1\"").unwrap();
    clock.advance(100); // node-1 stalls; its lease runs out
    let new = e.acquire("leader", 100, Some("node-2")).unwrap();
    fenced(new.token, "\"node-2\"").unwrap();
    // node-1 wakes up and tries to write with its old token.
    assert_eq!(
        fenced(old.token, "\"node-1 again\""),
        Err(StoreError::CheckFailed {
            index: 0,
            current: Some(new.token)
        })
    );
    assert_eq!(
        e.get("cfg", "primary").unwrap().unwrap().value,
        json("\"node-2\"")
    );
}

#[test]
fn locks_stay_out_of_buckets_and_bad_input_is_refused() {
    let (e, _) = engine();
    e.acquire("k", 100, None).unwrap();
    assert_eq!(e.buckets().unwrap(), Vec::<String>::new());
    assert_eq!(e.watch("k", None, Some(0), 100).unwrap().events, vec![]);
    assert!(matches!(
        e.acquire("", 100, None),
        Err(StoreError::InvalidKey(_))
    ));
    assert!(matches!(
        e.acquire("x", 0, None),
        Err(StoreError::InvalidArgument(_))
    ));
    let read_only = Engine::new(MemStorage::default(), ManualClock::at(T0)).read_only(true);
    assert_eq!(read_only.acquire("x", 10, None), Err(StoreError::ReadOnly));
}
