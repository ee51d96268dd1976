//! `kvstash-bench-remote`: kvstash on its remote backends against the raw
//! client on the same server, in the same run (`just bench` runs it after
//! the main benchmark; `just bench-remote` alone).
//!
//! Starts its own servers on loopback (etcd, Redis with `appendfsync
//! always`, PostgreSQL with its defaults: every one durable per commit),
//! then for each backend measures, interleaved over rounds:
//!
//! - `get`, `put` and a 4-key transaction, through kvstash's component and
//!   with the raw client (`GET`/`SET`/`MULTI…EXEC`; etcd `Range`/`Put`/`Txn`;
//!   SQL `SELECT`/upsert/a 4-upsert transaction), and the ratio (target
//!   ≥ 0.7×);
//! - contended increments per second: 16 tasks incrementing one key (also
//!   on memory and file), and how many failed with `contention` (must be 0);
//! - etcd's reverse scan cost: a page of 10 forward and reverse over ranges
//!   of 1,000 and 10,000 keys;
//! - gets through the caching layer (`{"type":"caching","main":…}`, its
//!   default policy: a 1 s staleness bound) against the same store without
//!   it, and the cache's hit ratio.
//!
//! Writes `bench/results/remote.md`.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvstash::Store;
use kvstash::backend::{Backend, Scan, Write};
use kvstash_test_servers::{Etcd, Postgres, Redis};

const ROUNDS: usize = 3;
const GETS: usize = 2_000;
const PUTS: usize = 300;
const TXNS: usize = 200;
const PRELOAD: usize = 1_000;
const WRITERS: usize = 16;
const INCREMENTS: usize = 25;

fn key(i: usize) -> String {
    kvstash::bench::key(i)
}

fn value(i: usize) -> String {
    kvstash::bench::value(i)
}

/// The raw client of one backend: the same operations without kvstash.
#[async_trait::async_trait]
trait Raw: Send + Sync {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>>;
    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()>;
    async fn txn4(&self, pairs: &[(String, String)]) -> anyhow::Result<()>;
}

struct RawRedis(redis::aio::ConnectionManager);

#[async_trait::async_trait]
impl Raw for RawRedis {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut con = self.0.clone();
        Ok(redis::cmd("GET")
            .arg(format!("raw:{key}"))
            .query_async(&mut con)
            .await?)
    }

    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let mut con = self.0.clone();
        redis::cmd("SET")
            .arg(format!("raw:{key}"))
            .arg(value)
            .query_async::<()>(&mut con)
            .await?;
        Ok(())
    }

    async fn txn4(&self, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let mut con = self.0.clone();
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (k, v) in pairs {
            pipe.set(format!("raw:{k}"), v).ignore();
        }
        // `Option`: an aborted EXEC is nil, not success.
        let done: Option<()> = pipe.query_async(&mut con).await?;
        done.context("EXEC aborted")
    }
}

struct RawEtcd(etcd_client::Client);

#[async_trait::async_trait]
impl Raw for RawEtcd {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let mut kv = self.0.kv_client();
        let response = kv.get(format!("raw/{key}"), None).await?;
        Ok(response.kvs().first().map(|kv| kv.value().to_vec()))
    }

    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let mut kv = self.0.kv_client();
        kv.put(format!("raw/{key}"), value, None).await?;
        Ok(())
    }

    async fn txn4(&self, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let mut kv = self.0.kv_client();
        // etcd refuses a key twice in one Txn: the last write wins.
        let last: std::collections::BTreeMap<&str, &str> = pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let ops: Vec<etcd_client::TxnOp> = last
            .into_iter()
            .map(|(k, v)| etcd_client::TxnOp::put(format!("raw/{k}"), v, None))
            .collect();
        kv.txn(etcd_client::Txn::new().and_then(ops)).await?;
        Ok(())
    }
}

struct RawPostgres {
    client: tokio::sync::Mutex<tokio_postgres::Client>,
    get: tokio_postgres::Statement,
    put: tokio_postgres::Statement,
}

#[async_trait::async_trait]
impl Raw for RawPostgres {
    async fn get(&self, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let client = self.client.lock().await;
        let rows = client.query(&self.get, &[&key.as_bytes()]).await?;
        Ok(rows.first().map(|r| r.get(0)))
    }

    async fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let client = self.client.lock().await;
        client
            .execute(&self.put, &[&key.as_bytes(), &value.as_bytes()])
            .await?;
        Ok(())
    }

    async fn txn4(&self, pairs: &[(String, String)]) -> anyhow::Result<()> {
        let mut client = self.client.lock().await;
        let txn = client.transaction().await?;
        for (k, v) in pairs {
            txn.execute(&self.put, &[&k.as_bytes(), &v.as_bytes()])
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}

/// Ops per second of `count` sequential calls of `op`.
async fn rate<F, Fut>(count: usize, mut op: F) -> anyhow::Result<f64>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let started = Instant::now();
    for i in 0..count {
        op(i).await?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    kvstash::bench::median(std::mem::take(&mut values))
}

struct Row {
    backend: &'static str,
    op: &'static str,
    kvstash: f64,
    /// kvstash's `Backend` alone (no component): where the time goes.
    alone: f64,
    raw: f64,
}

/// get / put / txn4 through kvstash and raw, interleaved over rounds.
async fn overhead(
    backend: &'static str,
    config: &str,
    store: &Store,
    raw: &dyn Raw,
) -> anyhow::Result<Vec<Row>> {
    // The same backend without the component, on its own keys.
    let alone: Arc<dyn Backend> = kvstash::Registry::default().open(config).await?;
    let alone = alone.as_ref();
    let put = |k: String, v: String| Write {
        key: [b"alone/", k.as_bytes()].concat(),
        value: Some(v.into_bytes()),
    };
    let b = store.bucket("bench");
    for start in (0..PRELOAD).step_by(100) {
        let pairs: Vec<(String, String)> =
            (start..start + 100).map(|i| (key(i), value(i))).collect();
        b.set_many(&pairs).await?;
        for (k, v) in &pairs {
            raw.put(k, v).await?;
        }
    }
    let gets = kvstash::bench::random_indices(PRELOAD, GETS, 7);
    for start in (0..PRELOAD).step_by(100) {
        let writes = (start..start + 100)
            .map(|i| put(key(i), value(i)))
            .collect();
        alone.commit(Vec::new(), writes).await?;
    }
    let mut results: [(Vec<f64>, Vec<f64>, Vec<f64>); 3] = Default::default();
    let mut next = PRELOAD;
    for round in 0..ROUNDS {
        results[0].0.push(
            rate(GETS, |i| {
                let b = &b;
                let k = key(gets[i]);
                async move { b.get(&k).await.map(drop).map_err(Into::into) }
            })
            .await?,
        );
        results[0].1.push(
            rate(GETS, |i| {
                let k = key(gets[i]);
                async move { raw.get(&k).await.map(drop) }
            })
            .await?,
        );
        results[0].2.push(
            rate(GETS, |i| {
                let k = [b"alone/", key(gets[i]).as_bytes()].concat();
                async move { alone.get(&k).await.map(drop).map_err(Into::into) }
            })
            .await?,
        );
        let base = next;
        results[1].0.push(
            rate(PUTS, |i| {
                let b = &b;
                let (k, v) = (key(base + i), value(base + i));
                async move { b.set_json_text(&k, &v).await.map(drop).map_err(Into::into) }
            })
            .await?,
        );
        results[1].1.push(
            rate(PUTS, |i| {
                let (k, v) = (key(base + i), value(base + i));
                async move { raw.put(&k, &v).await }
            })
            .await?,
        );
        results[1].2.push(
            rate(PUTS, |i| {
                let w = put(key(base + i), value(base + i));
                async move {
                    alone
                        .commit(Vec::new(), vec![w])
                        .await
                        .map(drop)
                        .map_err(Into::into)
                }
            })
            .await?,
        );
        next += PUTS;
        let picks = kvstash::bench::random_indices(PRELOAD, TXNS * 4, 11 + round as u64);
        results[2].0.push(
            rate(TXNS, |i| {
                let store = &store;
                let picks = &picks;
                async move {
                    let mut txn = store.transaction();
                    for j in 0..4 {
                        let n = picks[i * 4 + j];
                        txn = txn.set_json("bench", &key(n), &n)?;
                    }
                    txn.commit().await.map(drop).map_err(Into::into)
                }
            })
            .await?,
        );
        results[2].1.push(
            rate(TXNS, |i| {
                let pairs: Vec<(String, String)> = (0..4)
                    .map(|j| {
                        let n = picks[i * 4 + j];
                        (key(n), n.to_string())
                    })
                    .collect();
                async move { raw.txn4(&pairs).await }
            })
            .await?,
        );
        results[2].2.push(
            rate(TXNS, |i| {
                let writes: Vec<Write> = (0..4)
                    .map(|j| {
                        let n = picks[i * 4 + j];
                        put(key(n), n.to_string())
                    })
                    .collect();
                async move {
                    alone
                        .commit(Vec::new(), writes)
                        .await
                        .map(drop)
                        .map_err(Into::into)
                }
            })
            .await?,
        );
    }
    let ops = ["get", "put", "4-key txn"];
    Ok(results
        .into_iter()
        .zip(ops)
        .map(|((k, r, a), op)| Row {
            backend,
            op,
            kvstash: median(k),
            alone: median(a),
            raw: median(r),
        })
        .collect())
}

/// Random gets of the preloaded keys without and with a caching layer in
/// front of the store `leaf` (its own namespace), interleaved over rounds:
/// (without per second, with per second, hits, misses).
async fn cached_gets(leaf: serde_json::Value) -> anyhow::Result<(f64, f64, u64, u64)> {
    let plain = Store::open(&leaf.to_string()).await?;
    let cached =
        Store::open(&serde_json::json!({"type": "caching", "main": leaf}).to_string()).await?;
    let b = plain.bucket("bench");
    for start in (0..PRELOAD).step_by(100) {
        let pairs: Vec<(String, String)> =
            (start..start + 100).map(|i| (key(i), value(i))).collect();
        b.set_many(&pairs).await?;
    }
    let gets = kvstash::bench::random_indices(PRELOAD, GETS, 13);
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        for (store, rates) in [(&plain, &mut without), (&cached, &mut with)] {
            let b = store.bucket("bench");
            rates.push(
                rate(GETS, |i| {
                    let b = &b;
                    let k = key(gets[i]);
                    async move { b.get(&k).await.map(drop).map_err(Into::into) }
                })
                .await?,
            );
        }
    }
    let stats = cached.cache_stats().await?;
    let (hits, misses) = stats
        .iter()
        .fold((0, 0), |(h, m), s| (h + s.hits, m + s.misses));
    Ok((median(without), median(with), hits, misses))
}

/// Increments of one key by 16 tasks at once: (per second, contention errors).
async fn contended(store: &Store) -> anyhow::Result<(f64, usize)> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..WRITERS {
        let b = store.bucket("hot");
        tasks.push(tokio::spawn(async move {
            let mut lost = 0;
            for _ in 0..INCREMENTS {
                match b.increment("n", 1).await {
                    Ok(_) => {}
                    Err(kvstash::Error::Contention) => lost += 1,
                    Err(e) => return Err(e),
                }
            }
            Ok(lost)
        }));
    }
    let mut lost = 0;
    for task in tasks {
        lost += task.await??;
    }
    let elapsed = started.elapsed();
    Ok((
        (WRITERS * INCREMENTS - lost) as f64 / elapsed.as_secs_f64(),
        lost,
    ))
}

/// Time per page of 10, forward and reverse, over a range of `n` keys.
async fn etcd_scans(
    backend: &dyn Backend,
    n: usize,
    tag: u8,
) -> anyhow::Result<(Duration, Duration)> {
    for start in (0..n).step_by(100) {
        let writes: Vec<Write> = (start..(start + 100).min(n))
            .map(|i| Write {
                key: [&[b's', tag][..], key(i).as_bytes()].concat(),
                value: Some(value(i).into_bytes()),
            })
            .collect();
        backend.commit(Vec::new(), writes).await?;
    }
    let page = |reverse| Scan {
        start: vec![b's', tag],
        end: Some(vec![b's', tag + 1]),
        limit: 10,
        reverse,
    };
    let pages = 50;
    let mut times = [Duration::ZERO; 2];
    for (i, reverse) in [false, true].into_iter().enumerate() {
        let started = Instant::now();
        for _ in 0..pages {
            let got = backend.scan(&page(reverse)).await?;
            anyhow::ensure!(got.len() == 10, "a page of 10");
        }
        times[i] = started.elapsed() / pages;
    }
    Ok((times[0], times[1]))
}

fn human(rate: f64) -> String {
    kvstash::bench::human_rate(rate)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let redis = Redis::start().context("redis-server is not installed")?;
    let etcd = Etcd::start().context("etcd is not installed")?;
    let pg = Postgres::start().context("PostgreSQL 15 is not installed")?;

    let mut rows = Vec::new();
    let mut contention = Vec::new();

    // Redis.
    let config = serde_json::json!({"type": "redis", "url": redis.url()}).to_string();
    let store = Store::open(&config).await?;
    let manager = redis::Client::open(redis.url())?
        .get_connection_manager()
        .await?;
    rows.extend(overhead("redis", &config, &store, &RawRedis(manager)).await?);
    contention.push(("redis", contended(&store).await?));

    // etcd.
    let config = serde_json::json!({"type": "etcd", "endpoints": etcd.endpoints()}).to_string();
    let store = Store::open(&config).await?;
    let client = etcd_client::Client::connect(etcd.endpoints(), None).await?;
    rows.extend(overhead("etcd", &config, &store, &RawEtcd(client)).await?);
    contention.push(("etcd", contended(&store).await?));

    // PostgreSQL.
    let config = serde_json::json!({"type": "postgres", "url": pg.url()}).to_string();
    let store = Store::open(&config).await?;
    let (client, connection) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE raw (key bytea PRIMARY KEY, value bytea NOT NULL)")
        .await?;
    let get = client
        .prepare("SELECT value FROM raw WHERE key = $1")
        .await?;
    let put = client
        .prepare("INSERT INTO raw VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
        .await?;
    let raw = RawPostgres {
        client: tokio::sync::Mutex::new(client),
        get,
        put,
    };
    rows.extend(overhead("postgres", &config, &store, &raw).await?);
    contention.push(("postgres", contended(&store).await?));

    // The local backends, for the contended rate.
    let store = Store::open(r#"{"type":"memory"}"#).await?;
    contention.push(("memory", contended(&store).await?));
    let dir = tempfile::tempdir()?;
    let config = serde_json::json!({"type": "file", "path": dir.path().join("c.redb")}).to_string();
    let store = Store::open(&config).await?;
    contention.push(("file", contended(&store).await?));

    // etcd reverse scans.
    let registry = kvstash::Registry::default();
    let backend: Arc<dyn Backend> = registry
        .open(&serde_json::json!({"type": "etcd", "endpoints": etcd.endpoints(), "namespace": "scans"}).to_string())
        .await?;
    let mut scans = Vec::new();
    for (n, tag) in [(1_000, b'a'), (10_000, b'b')] {
        scans.push((n, etcd_scans(backend.as_ref(), n, tag).await?));
    }

    // The caching layer in front of each.
    let caching = [
        (
            "redis",
            serde_json::json!({"type": "redis", "url": redis.url(), "namespace": "cached"}),
        ),
        (
            "etcd",
            serde_json::json!({"type": "etcd", "endpoints": etcd.endpoints(), "namespace": "cached"}),
        ),
        (
            "postgres",
            serde_json::json!({"type": "postgres", "url": pg.url(), "namespace": "cached"}),
        ),
    ];
    let mut cached = Vec::new();
    for (backend, leaf) in caching {
        cached.push((backend, cached_gets(leaf).await?));
    }

    let mut md = String::new();
    writeln!(md, "# Remote backends: kvstash against the raw client\n")?;
    writeln!(
        md,
        "Same server, same run, interleaved, median of {ROUNDS} rounds; every write durable \
         (Redis `appendfsync always`, etcd and PostgreSQL defaults). Target: kvstash ≥ 0.7× the raw client.\n"
    )?;
    writeln!(
        md,
        "Where the time goes: *backend alone* is kvstash's `Backend` for that server called \
         directly (the same storage requests, without the component and its engine).\n"
    )?;
    writeln!(
        md,
        "| backend | operation | kvstash | backend alone | raw client | kvstash / raw | target met |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---|")?;
    for row in &rows {
        let ratio = row.kvstash / row.raw;
        writeln!(
            md,
            "| {} | {} | {}/s | {}/s | {}/s | {ratio:.2}× | {} |",
            row.backend,
            row.op,
            human(row.kvstash),
            human(row.alone),
            human(row.raw),
            if ratio >= 0.7 { "yes" } else { "**no**" }
        )?;
    }
    writeln!(
        md,
        "\n## Contended increments ({WRITERS} tasks, one key, {} increments)\n",
        WRITERS * INCREMENTS
    )?;
    writeln!(md, "| backend | increments/s | `contention` errors |")?;
    writeln!(md, "|---|---:|---:|")?;
    for (backend, (rate, lost)) in &contention {
        writeln!(md, "| {backend} | {}/s | {lost} |", human(*rate))?;
    }
    writeln!(md, "\n## etcd: a page of 10 keys, forward and reverse\n")?;
    writeln!(
        md,
        "| keys in range | forward | reverse | reverse / forward |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|")?;
    for (n, (forward, reverse)) in &scans {
        writeln!(
            md,
            "| {n} | {:.2} ms | {:.2} ms | {:.1}× |",
            forward.as_secs_f64() * 1e3,
            reverse.as_secs_f64() * 1e3,
            reverse.as_secs_f64() / forward.as_secs_f64()
        )?;
    }
    writeln!(
        md,
        "\n## Gets through the caching layer\n\n\
         {GETS} random gets of {PRELOAD} preloaded keys per round, median of {ROUNDS} rounds, \
         interleaved: the store alone, and `{{\"type\":\"caching\",\"main\":…}}` in front of it \
         (default policy: 10,000 entries, a 1 s staleness bound, so the cache reads the change feed \
         once a second). The first round fills the cache.\n"
    )?;
    writeln!(
        md,
        "| backend | without cache | through the cache | cached / uncached | hits | misses |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    for (backend, (without, with, hits, misses)) in &cached {
        writeln!(
            md,
            "| {backend} | {}/s | {}/s | {:.1}× | {hits} | {misses} |",
            human(*without),
            human(*with),
            with / without
        )?;
    }
    print!("{md}");
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/remote.md");
    std::fs::write(&out, md)?;
    eprintln!("wrote {}", out.display());
    Ok(())
}
