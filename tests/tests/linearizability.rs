//! Linearizability (issue 16): concurrent histories of gets, puts,
//! conditional writes, deletes and transactions on three keys, recorded
//! by tasks and by processes, on the memory, file, Redis and etcd
//! backends, some under faults (processes killed with SIGKILL, the Redis
//! server killed and restarted, the etcd leader killed), checked by
//! `kvstash_tests::history::check`; and that checker on known-good and
//! known-bad histories.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kvstash::Store;
use kvstash_test_servers::{Etcd, Redis, unique};
use kvstash_tests::history::{Event, Op, Ret, Workload, check, run};
use serde_json::json;

const KEYS: usize = 3;
const HAMMER: &str = env!("CARGO_BIN_EXE_hammer");

fn done(client: u32, op: Op, call: u64, ret: u64, result: Ret) -> Event {
    Event {
        client,
        op,
        call,
        ret: Some(ret),
        result,
    }
}

fn open(client: u32, op: Op, call: u64) -> Event {
    Event {
        client,
        op,
        call,
        ret: None,
        result: Ret::Unknown,
    }
}

const GET: Op = Op::Get { key: 0 };

fn put(value: i64) -> Op {
    Op::Put { key: 0, value }
}

fn saw(value: i64, version: u64) -> Ret {
    Ret::Entry(Some((value, version)))
}

#[test]
fn the_checker_takes_overlapping_operations_in_either_order() {
    // A read overlapping a write may see it or not.
    for read in [saw(1, 1), saw(2, 2)] {
        let history = [
            done(0, put(1), 0, 1, Ret::Version(1)),
            done(0, put(2), 2, 6, Ret::Version(2)),
            done(1, GET, 3, 5, read),
        ];
        check(&history, KEYS).unwrap();
    }
}

#[test]
fn the_checker_refuses_a_stale_read() {
    let history = [
        done(0, put(1), 0, 1, Ret::Version(1)),
        done(0, put(2), 2, 3, Ret::Version(2)),
        done(1, GET, 4, 5, saw(1, 1)),
    ];
    assert!(check(&history, KEYS).is_err());
}

#[test]
fn the_checker_refuses_two_conditional_writes_from_one_version() {
    let cas = |value| Op::Cas {
        key: 0,
        expected: Some(1),
        value,
    };
    let history = [
        done(0, put(1), 0, 1, Ret::Version(1)),
        done(1, cas(2), 2, 5, Ret::Version(2)),
        done(2, cas(3), 3, 6, Ret::Version(3)),
    ];
    assert!(check(&history, KEYS).is_err());
    // One of them refused, naming the version the other made: fine.
    let history = [
        done(0, put(1), 0, 1, Ret::Version(1)),
        done(1, cas(2), 2, 5, Ret::Version(2)),
        done(2, cas(3), 3, 6, Ret::Conflict(Some(2))),
    ];
    check(&history, KEYS).unwrap();
}

#[test]
fn the_checker_refuses_versions_that_go_back() {
    let history = [
        done(0, put(1), 0, 1, Ret::Version(5)),
        done(0, Op::Put { key: 1, value: 2 }, 2, 3, Ret::Version(3)),
    ];
    assert!(check(&history, KEYS).is_err());
}

#[test]
fn the_checker_refuses_half_a_transaction() {
    let txn = Op::Txn {
        check: 0,
        expected: None,
        writes: [1, 2],
        value: 7,
    };
    let history = [
        done(0, txn.clone(), 0, 1, Ret::Version(1)),
        done(1, Op::Get { key: 1 }, 2, 3, saw(7, 1)),
        done(1, Op::Get { key: 2 }, 4, 5, Ret::Entry(None)),
    ];
    assert!(check(&history, KEYS).is_err());
    let history = [
        done(0, txn, 0, 1, Ret::Version(1)),
        done(1, Op::Get { key: 1 }, 2, 3, saw(7, 1)),
        done(1, Op::Get { key: 2 }, 4, 5, saw(7, 1)),
    ];
    check(&history, KEYS).unwrap();
}

#[test]
fn the_checker_refuses_a_value_never_written_but_takes_one_of_unknown_outcome() {
    let history = [
        done(0, put(1), 0, 1, Ret::Version(1)),
        done(1, GET, 2, 3, saw(9, 2)),
    ];
    assert!(check(&history, KEYS).is_err());
    // A write whose client died may land later, with a version above
    // what was committed before it began…
    let history = [
        done(0, put(1), 0, 1, Ret::Version(1)),
        open(2, put(9), 2),
        done(1, GET, 3, 4, saw(1, 1)),
        done(1, GET, 10, 11, saw(9, 4)),
    ];
    check(&history, KEYS).unwrap();
    // … but not with one below it, and not before it began.
    let history = [
        done(0, put(1), 0, 1, Ret::Version(3)),
        open(2, put(9), 2),
        done(1, GET, 10, 11, saw(9, 2)),
    ];
    assert!(check(&history, KEYS).is_err());
    let history = [done(1, GET, 0, 1, saw(9, 4)), open(2, put(9), 2)];
    assert!(check(&history, KEYS).is_err());
    // Or never land at all.
    let history = [open(2, put(9), 0), done(1, GET, 10, 11, Ret::Entry(None))];
    check(&history, KEYS).unwrap();
}

/// `clients` tasks doing operations on `config` while `fault` runs beside
/// them: each `ops`, and on until `fault` is over; the history.
async fn tasks<F: Future<Output = ()> + Send + 'static>(
    config: &serde_json::Value,
    clients: u32,
    ops: usize,
    seed: u64,
    fault: Option<F>,
) -> Vec<Event> {
    let store = Store::open(&config.to_string()).await.unwrap();
    let start = Instant::now();
    let history = Arc::new(Mutex::new(Vec::new()));
    let over = Arc::new(AtomicBool::new(fault.is_none()));
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (store, history, over) = (store.clone(), history.clone(), over.clone());
            tokio::spawn(async move {
                let bucket = store.bucket("lin");
                let mut workload = Workload::new(client, KEYS, seed + u64::from(client));
                for n in 0..20_000 {
                    if n >= ops && over.load(Ordering::Relaxed) {
                        break;
                    }
                    let op = workload.op();
                    let call = start.elapsed().as_nanos() as u64;
                    let ret = run(&store, &bucket, &op).await.unwrap();
                    let returned = start.elapsed().as_nanos() as u64;
                    let Some(result) = ret else { continue };
                    if result == Ret::Unknown {
                        // As a client would: back off before trying again.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    workload.saw(&op, &result);
                    let ret = (result != Ret::Unknown).then_some(returned);
                    history.lock().unwrap().push(Event {
                        client,
                        op,
                        call,
                        ret,
                        result,
                    });
                }
            })
        })
        .collect();
    let fault = tokio::spawn(async move {
        if let Some(fault) = fault {
            fault.await;
        }
        over.store(true, Ordering::Relaxed);
    });
    fault.await.unwrap();
    for worker in workers {
        worker.await.unwrap();
    }
    Arc::try_unwrap(history).unwrap().into_inner().unwrap()
}

fn assert_linearizable(what: &str, history: &[Event]) {
    let unknown = history.iter().filter(|e| e.ret.is_none()).count();
    eprintln!(
        "{what}: {} operations ({unknown} of unknown outcome)",
        history.len()
    );
    let started = Instant::now();
    if let Err(why) = check(history, KEYS) {
        panic!("{what}: {why}");
    }
    eprintln!("{what}: checked in {:?}", started.elapsed());
    // The same history with one read changed to a value nobody wrote is
    // refused: the check above had something to check.
    let mut corrupt = history.to_vec();
    let mut reads: Vec<&mut Event> = corrupt
        .iter_mut()
        .filter(|e| matches!(e.result, Ret::Entry(Some(_))))
        .collect();
    reads.sort_by_key(|e| e.call);
    // One from the middle of the history, where the faults were.
    let middle = reads.len() / 2;
    let read = reads.swap_remove(middle);
    let Ret::Entry(Some((value, _))) = &mut read.result else {
        unreachable!()
    };
    *value = -1;
    let started = Instant::now();
    assert!(
        check(&corrupt, KEYS).is_err(),
        "{what}: a read of -1 passed"
    );
    eprintln!(
        "{what}: its corrupted copy refused in {:?}",
        started.elapsed()
    );
}

/// The history of `hammer history` processes on `config`, `clients` at a
/// time, `rounds` times over; in each round one of them is killed with
/// SIGKILL once it has begun `kill_at` operations, leaving the one in
/// flight of unknown outcome.
fn processes(config: &str, clients: u32, rounds: u32, kill_at: usize, seed: u32) -> Vec<Event> {
    let mut history = Vec::new();
    for round in 0..rounds {
        let children: Vec<_> = (0..clients)
            .map(|c| {
                let client = round * clients + c;
                let child = Command::new(HAMMER)
                    .args([config, "history", "lin", &KEYS.to_string(), "100"])
                    .args([client.to_string(), (seed + client).to_string()])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (client, child)
            })
            .collect();
        for (n, (client, mut child)) in children.into_iter().enumerate() {
            let stdout = child.stdout.take().unwrap();
            let mut begun: Option<(Op, u64)> = None;
            let mut calls = 0;
            let mut killed = false;
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap();
                let mut parts = line.splitn(3, ' ');
                let (kind, body, time) = (parts.next(), parts.next(), parts.next());
                let time = || time.unwrap().parse::<u64>().unwrap();
                match kind {
                    Some("B") => {
                        begun = Some((serde_json::from_str(body.unwrap()).unwrap(), time()));
                        calls += 1;
                        if n == 0 && calls == kill_at {
                            child.kill().unwrap();
                            killed = true;
                        }
                    }
                    Some("E") => {
                        let (op, call) = begun.take().unwrap();
                        let result: Ret = serde_json::from_str(body.unwrap()).unwrap();
                        let ret = (result != Ret::Unknown).then(time);
                        history.push(Event {
                            client,
                            op,
                            call,
                            ret,
                            result,
                        });
                    }
                    Some("X") => begun = None,
                    _ => {}
                }
            }
            let status = child.wait().unwrap();
            if killed {
                assert_eq!(status.code(), None, "client {client} was killed");
            } else {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
                assert!(status.success(), "client {client}: {status}: {err}");
            }
            if let Some((op, call)) = begun {
                // Killed mid-call (or just after it, before saying so).
                history.push(Event {
                    client,
                    op,
                    call,
                    ret: None,
                    result: Ret::Unknown,
                });
            }
        }
    }
    history
}

/// Histories per test: `KVSTASH_LINEARIZABILITY_ROUNDS` (`just
/// linearizability`), 1 in the tests.
fn rounds() -> u32 {
    std::env::var("KVSTASH_LINEARIZABILITY_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_the_memory_and_file_backends() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..rounds() {
        for config in [
            json!({"type": "memory"}),
            json!({"type": "file", "path": dir.path().join(format!("lin-{round}.redb"))}),
            // Checkpoints every KiB: commits go through the log, redb and
            // the checkpoint while others read.
            json!({"type": "file", "path": dir.path().join(format!("small-{round}.redb")),
                "checkpoint_kb": 1}),
        ] {
            let seed = 0x9e37_79b9 + u64::from(round) * 100;
            let history = tasks(&config, 6, 60, seed, None::<std::future::Ready<()>>).await;
            assert_linearizable(&config.to_string(), &history);
        }
    }
}

#[test]
fn processes_sharing_a_file_store_some_killed_mid_call() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..rounds() {
        let path = dir.path().join(format!("shared-{round}.redb"));
        let config = json!({"type": "file", "path": path}).to_string();
        // Four processes at a time: the first to open holds the store, the
        // others reach it through its socket; a killed holder hands it on.
        let history = processes(&config, 4, 3, 30, 0x51ed + round * 100);
        let unknown = history.iter().filter(|e| e.ret.is_none()).count();
        assert!(unknown >= 1, "a killed client's operation is open");
        assert_linearizable("processes on one file store, some killed", &history);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_redis_killed_and_restarted() {
    for round in 0..rounds() {
        let Some(server) = Redis::start() else {
            eprintln!("redis-server is not installed; skipped");
            return;
        };
        let config = json!({"type": "redis", "url": server.url(), "timeout_ms": 500,
            "namespace": unique("lin")});
        let server = Arc::new(Mutex::new(server));
        let fault = {
            let server = server.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                server.lock().unwrap().kill();
                tokio::time::sleep(Duration::from_millis(400)).await;
                server.lock().unwrap().restart();
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        };
        let seed = 0x7f4a_7c15 + u64::from(round) * 100;
        let history = tasks(&config, 6, 80, seed, Some(fault)).await;
        assert_linearizable("redis, killed and restarted", &history);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_on_an_etcd_cluster_losing_its_leader() {
    for round in 0..rounds() {
        let Some(cluster) = Etcd::cluster(3, &[]) else {
            eprintln!("etcd is not installed; skipped");
            return;
        };
        let config = json!({"type": "etcd", "endpoints": cluster.endpoints(),
            "timeout_ms": 2_000, "namespace": unique("lin")});
        let cluster = Arc::new(Mutex::new(cluster));
        let fault = {
            let cluster = cluster.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                {
                    let mut cluster = cluster.lock().unwrap();
                    let leader = cluster.leader().expect("the cluster has a leader");
                    cluster.kill(leader);
                }
                // Until a new leader serves.
                tokio::time::sleep(Duration::from_secs(3)).await;
            }
        };
        let seed = 0x2545_f491 + u64::from(round) * 100;
        let history = tasks(&config, 4, 60, seed, Some(fault)).await;
        assert_linearizable("etcd, its leader killed", &history);
    }
}
