//! Guest limits (issue 16): a call that runs away is stopped at its time
//! limit, a call that needs more memory than its instance may have traps;
//! either way the caller gets an error, the instance is replaced, nothing
//! acknowledged is lost, and the calls beside it keep being served.
//!
//! The runaway is the real guest built with its test-only `runaway`
//! feature (`kvstash_test_artifacts::RUNAWAY_GUEST`): a `get` of
//! `kvstash-test-runaway` never returns.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstash::{Error, Store, StoreOptions};
use kvstash_test_artifacts as artifacts;
use serde_json::json;

const RUNAWAY: &str = "kvstash-test-runaway";

fn runaway_options(limit: Duration, instances: usize) -> StoreOptions {
    StoreOptions {
        guest: Some(Arc::from(std::fs::read(artifacts::RUNAWAY_GUEST).unwrap())),
        call_time_limit: Some(limit),
        max_instances: instances,
        ..StoreOptions::default()
    }
}

/// A hang here is the failure this file tests for; fail instead of hanging.
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(120), future)
        .await
        .unwrap_or_else(|_| panic!("{what} did not return"))
}

fn assert_stopped(outcome: Result<Option<kvstash::Entry>, Error>) {
    match outcome {
        Err(Error::Trap(why)) => assert!(
            why.contains("its limit") && why.contains("call_time_limit"),
            "the error should name the time limit: {why}"
        ),
        other => panic!("a runaway call should be stopped with a trap, got {other:?}"),
    }
}

// One thread: the runaway must yield to the calls beside it, not only be
// stopped in the end.
#[tokio::test(flavor = "current_thread")]
async fn a_runaway_call_is_stopped_and_the_calls_beside_it_are_served() {
    let store = Store::open_with(
        r#"{"type":"memory"}"#,
        runaway_options(Duration::from_millis(300), 2),
    )
    .await
    .unwrap();
    let bucket = store.bucket("b");
    bucket.set_json("kept", &json!({"n": 1})).await.unwrap();

    let runaway = {
        let bucket = store.bucket("b");
        async move {
            let outcome = bucket.get(RUNAWAY).await;
            (outcome, Instant::now())
        }
    };
    let beside = {
        let bucket = store.bucket("b");
        async move {
            // Give the runaway its start, then work while it runs.
            tokio::time::sleep(Duration::from_millis(20)).await;
            for i in 0..20 {
                bucket.set_json(&format!("k{i}"), &i).await.unwrap();
            }
            Instant::now()
        }
    };
    let ((outcome, stopped_at), served_at) =
        within("the runaway", async { tokio::join!(runaway, beside) }).await;
    assert_stopped(outcome);
    assert!(
        served_at < stopped_at,
        "the other calls should be served while the runaway runs"
    );

    // The instance was replaced: the store serves on, and nothing
    // acknowledged was lost.
    assert_eq!(
        bucket.get_json::<serde_json::Value>("kept").await.unwrap(),
        Some(json!({"n": 1}))
    );
    for i in 0..20 {
        assert_eq!(
            bucket.get_json::<i64>(&format!("k{i}")).await.unwrap(),
            Some(i)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaways_on_every_instance_are_each_stopped_and_the_file_store_keeps_its_writes() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "file", "path": dir.path().join("s")}).to_string();
    let store = Store::open_with(&config, runaway_options(Duration::from_millis(200), 2))
        .await
        .unwrap();
    let bucket = store.bucket("b");
    for i in 0..10 {
        bucket.set_json(&format!("k{i}"), &i).await.unwrap();
    }
    // More runaways than instances, at once: each is stopped, and so each
    // frees its instance for the next.
    let runaways: Vec<_> = (0..4)
        .map(|_| {
            let bucket = store.bucket("b");
            tokio::spawn(async move { bucket.get(RUNAWAY).await })
        })
        .collect();
    for runaway in runaways {
        assert_stopped(within("a runaway", runaway).await.unwrap());
    }
    bucket.set_json("after", &true).await.unwrap();
    drop(bucket);
    drop(store);

    let store = Store::open(&config).await.unwrap();
    let bucket = store.bucket("b");
    for i in 0..10 {
        assert_eq!(
            bucket.get_json::<i64>(&format!("k{i}")).await.unwrap(),
            Some(i)
        );
    }
    assert_eq!(bucket.get_json::<bool>("after").await.unwrap(), Some(true));
}

#[tokio::test]
async fn without_a_limit_the_same_call_is_not_stopped() {
    let mut options = runaway_options(Duration::from_millis(1), 1);
    options.call_time_limit = None;
    let store = Store::open_with(r#"{"type":"memory"}"#, options)
        .await
        .unwrap();
    let bucket = store.bucket("b");
    let outcome = tokio::time::timeout(Duration::from_millis(500), bucket.get(RUNAWAY)).await;
    assert!(
        outcome.is_err(),
        "with no limit the runaway should still run"
    );
    // The abandoned call's instance was discarded, not returned mid-call.
    bucket.set_json("k", &1).await.unwrap();
    assert_eq!(bucket.get_json::<i64>("k").await.unwrap(), Some(1));
}

/// A write the host lets through (under half the instance's memory) that
/// the guest's working copies take past it: a trap, the instance replaced,
/// the old value kept.
#[tokio::test]
async fn a_value_that_fills_the_instance_memory_traps_and_the_old_value_stays() {
    let options = StoreOptions {
        memory_limit: 4 << 20,
        ..StoreOptions::default()
    };
    let store = Store::open_with(r#"{"type":"memory"}"#, options)
        .await
        .unwrap();
    let bucket = store.bucket("b");
    bucket
        .set_json("doc", &json!({"small": true}))
        .await
        .unwrap();
    // Just under the host's bound (2 MiB): the instance holds it, its
    // record and its own few hundred KiB.
    let value = vec![b'x'; (2 << 20) - 64];
    match bucket.set_bytes("doc", &value).await {
        Err(Error::Trap(_)) => {}
        other => panic!("a value past the instance's memory should trap, got {other:?}"),
    }
    assert_eq!(
        bucket.get_json::<serde_json::Value>("doc").await.unwrap(),
        Some(json!({"small": true}))
    );
}

/// A write larger than half an instance's memory, a value or a batch or a
/// transaction of values each allowed, is refused by the host before it
/// is copied into an instance: `invalid-argument`, not a trap.
#[tokio::test]
async fn a_write_larger_than_half_the_instance_memory_is_refused_before_it_reaches_one() {
    let options = StoreOptions {
        memory_limit: 16 << 20,
        ..StoreOptions::default()
    };
    // Values up to 12 MiB allowed by the configuration.
    let config = r#"{"type":"memory","limits":{"value_bytes":12582912}}"#;
    let store = Store::open_with(config, options).await.unwrap();
    let bucket = store.bucket("b");
    bucket.set_json("a", &1).await.unwrap();
    let big = format!("\"{}\"", "x".repeat(3 << 20));
    let refused = |what: &str, outcome: Result<u64, Error>| match outcome {
        Err(Error::InvalidArgument(why)) => assert!(
            why.contains("at most 8388608") && why.contains("memory_limit"),
            "{what}: {why}"
        ),
        other => panic!("{what} should be refused, got {other:?}"),
    };
    refused(
        "a 10 MiB value",
        bucket.set_bytes("a", &vec![b'x'; 10 << 20]).await,
    );
    let pairs: Vec<(String, String)> = ["a", "b", "c"].map(|k| (k.to_string(), big.clone())).into();
    refused(
        "a batch of three 3 MiB values",
        bucket.set_many(&pairs).await,
    );
    let mut txn = store.transaction();
    for key in ["a", "b", "c"] {
        txn = txn.set("b", key, kvstash::Value::Json(big.clone()));
    }
    refused("a transaction of three 3 MiB values", txn.commit().await);
    assert_eq!(bucket.get_json::<i64>("a").await.unwrap(), Some(1));
    // Two fit.
    bucket.set_many(&pairs[..2]).await.unwrap();
    let b = bucket.get("b").await.unwrap().unwrap();
    assert_eq!(b.value.as_bytes().len(), big.len());
    assert_eq!(bucket.get("c").await.unwrap(), None);
}

#[tokio::test]
async fn configured_limits_are_typed_errors_at_the_rust_api() {
    let config = json!({
        "type": "memory",
        "limits": {"key_bytes": 16, "value_bytes": 1024, "depth": 8, "batch": 4}
    })
    .to_string();
    let store = Store::open(&config).await.unwrap();
    let bucket = store.bucket("b");
    bucket.set_json("k", &1).await.unwrap();
    let cases: Vec<(&str, Result<u64, Error>, &str)> = vec![
        (
            "a long key",
            bucket.set_json(&"k".repeat(17), &1).await,
            "limits.key_bytes",
        ),
        (
            "a large value",
            bucket.set_bytes("k", &[0; 1025]).await,
            "limits.value_bytes",
        ),
        (
            "a deep value",
            bucket.set_json_text("k", "[[[[[[[[[1]]]]]]]]]").await,
            "limits.depth",
        ),
        (
            "a long batch",
            bucket
                .set_many(&["a", "b", "c", "d", "e"].map(|k| (k.to_string(), "1".to_string())))
                .await,
            "limits.batch",
        ),
    ];
    for (what, outcome, names) in cases {
        match outcome {
            Err(e @ (Error::InvalidKey(_) | Error::InvalidValue(_))) => {
                assert!(e.to_string().contains(names), "{what}: {e}")
            }
            other => panic!("{what} should be refused, got {other:?}"),
        }
    }
    assert_eq!(bucket.get_json::<i64>("k").await.unwrap(), Some(1));
    let page = bucket.list(&kvstash::ListOptions::default()).await.unwrap();
    let keys: Vec<&str> = page.items.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["k"]);
}

#[tokio::test]
async fn a_value_past_every_limit_is_refused_before_it_reaches_an_instance() {
    // Larger than an instance's whole memory: refused by the host with the
    // guest's own error, not a trap.
    let store = Store::open(r#"{"type":"memory"}"#).await.unwrap();
    let bucket = store.bucket("b");
    let huge = vec![b'x'; 300 << 20];
    match bucket.set_bytes("k", &huge).await {
        Err(Error::InvalidValue(why)) => assert!(
            why.contains("314572800 bytes, at most 8388608") && why.contains("limits.value_bytes"),
            "{why}"
        ),
        other => panic!("a 300 MiB value should be an invalid value, got {other:?}"),
    }
    assert_eq!(bucket.get("k").await.unwrap(), None);
}
