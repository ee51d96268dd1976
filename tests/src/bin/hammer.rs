//! One OS process with its own kvstash host and component, doing one job
//! against a store, for the several-hosts tests (`tests/tests/hosts.rs`).
//!
//! ```text
//! hammer CONFIG increment BUCKET KEY COUNT   # COUNT increments of KEY by 1
//! hammer CONFIG transfer BUCKET ACCOUNTS COUNT SEED
//!                                            # COUNT transactions moving 1..=10
//!                                            # between accounts a0..a{ACCOUNTS-1}
//! hammer CONFIG watch BUCKET KEY COUNT       # prints `version value` of KEY's
//!                                            # events, from version 0, COUNT of them
//! hammer CONFIG history BUCKET KEYS COUNT CLIENT SEED
//!                                            # COUNT random operations of a
//!                                            # linearizability history
//!                                            # (kvstash_tests::history), each
//!                                            # as a `B op time` line before it
//!                                            # and an `E result time` line
//!                                            # after (JSON; ns since the epoch)
//! ```
//!
//! Prints `ok N` or `contention N` counts and exits 0 if every call
//! succeeded; the first other error ends it with status 1.

use std::process::ExitCode;

use futures::StreamExt;
use kvstash::{Error, Store, WatchOptions};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hammer: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `value` as one line of JSON.
fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

fn number(text: Option<&String>) -> Result<u64, String> {
    text.and_then(|t| t.parse().ok())
        .ok_or_else(|| "expected a number".to_string())
}

async fn run(args: &[String]) -> Result<(), String> {
    let [config, job, bucket, rest @ ..] = args else {
        return Err("usage: hammer CONFIG increment|transfer|watch BUCKET …".into());
    };
    let store = Store::open(config).await.map_err(|e| e.to_string())?;
    let bucket = store.bucket(bucket);
    let mut contention = 0u64;
    let mut ok = 0u64;
    let mut tally = |result: Result<(), Error>| match result {
        Ok(()) => {
            ok += 1;
            Ok(())
        }
        Err(Error::Contention) => {
            contention += 1;
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    };
    match job.as_str() {
        "increment" => {
            let key = rest.first().ok_or("increment needs KEY")?;
            for _ in 0..number(rest.get(1))? {
                tally(bucket.increment(key, 1).await.map(drop))?;
            }
        }
        "transfer" => {
            let accounts = number(rest.first())?;
            let count = number(rest.get(1))?;
            let mut seed = number(rest.get(2))?.max(1);
            let mut next = || {
                // xorshift: a different, repeatable sequence per process.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            for _ in 0..count {
                let from = next() % accounts;
                let to = (from + 1 + next() % (accounts - 1)) % accounts;
                let amount = i64::try_from(1 + next() % 10).unwrap_or(1);
                let txn = store
                    .transaction()
                    .increment(bucket.name(), &format!("a{from}"), -amount)
                    .increment(bucket.name(), &format!("a{to}"), amount);
                tally(txn.commit().await.map(drop))?;
            }
        }
        "watch" => {
            let key = rest.first().ok_or("watch needs KEY")?;
            let count = number(rest.get(1))?;
            let options = WatchOptions {
                since: Some(0),
                ..WatchOptions::default()
            };
            let events = bucket.watch(options).await.map_err(|e| e.to_string())?;
            let mut events = std::pin::pin!(events);
            let mut seen = 0;
            while seen < count {
                let event = events
                    .next()
                    .await
                    .ok_or("the watch ended")?
                    .map_err(|e| e.to_string())?;
                if event.key == *key {
                    let value = event
                        .value
                        .map(|v| v.as_bytes().to_vec())
                        .unwrap_or_default();
                    println!("{} {}", event.version, String::from_utf8_lossy(&value));
                    seen += 1;
                }
            }
        }
        "history" => {
            use kvstash_tests::history::{Workload, run};
            use std::io::Write as _;
            let keys = usize::try_from(number(rest.first())?).map_err(|e| e.to_string())?;
            let count = number(rest.get(1))?;
            let client = u32::try_from(number(rest.get(2))?).map_err(|e| e.to_string())?;
            let mut workload = Workload::new(client, keys, number(rest.get(3))?);
            let now = || {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0)
            };
            let mut out = std::io::stdout().lock();
            for _ in 0..count {
                let op = workload.op();
                // Written before the call, so a kill mid-call leaves it open.
                writeln!(out, "B {} {}", json(&op), now()).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                let ret = run(&store, &bucket, &op).await.map_err(|e| e.to_string())?;
                let line = match &ret {
                    Some(ret) => format!("E {} {}", json(ret), now()),
                    // Certainly without effect: left out.
                    None => format!("X null {}", now()),
                };
                writeln!(out, "{line}").map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
                if let Some(ret) = ret {
                    workload.saw(&op, &ret);
                }
                ok += 1;
            }
        }
        other => return Err(format!("unknown job `{other}`")),
    }
    println!("ok {ok}");
    println!("contention {contention}");
    Ok(())
}
