//! `kvstash-bench`: kvstash through its component against native baselines,
//! on this machine, in one run; prints a Markdown table with ratios and
//! writes it to `bench/results/latest.md`.
//!
//! Run with `just bench` (a release build). Speed targets are checked here,
//! as ratios to baselines measured in the same run, never in tests. Every
//! measurement runs three times, interleaved with the others, and the table
//! shows medians.
//!
//! Workload (from the device-connector seed): keys `sensor_000123`, values
//! ~100-byte JSON objects.
//!
//! Measured now: sequential put and random get for a HashMap, redb used
//! directly (one durable transaction per put), the bare boundary floor
//! (`bench/floor`: a component that only forwards to the same memory
//! backend), kvstash on the memory and the file backend; durable puts with
//! 1, 8 and 64 concurrent writers (group commit); the machine's raw fsync
//! latency; opening an existing store.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use kvstash::{Store, StoreOptions};

mod floor;
use redb::ReadableDatabase as _;

fn key(i: usize) -> String {
    format!("sensor_{i:06}")
}

fn value(i: usize) -> String {
    format!(
        r#"{{"alias":[1,5,{}],"name":"backyard shed sensor","n":{i}}}"#,
        i % 256
    )
}

/// A deterministic permutation-ish order for "random" gets.
fn shuffled(n: usize) -> Vec<usize> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let j = usize::try_from(state % (i as u64 + 1)).unwrap_or(0);
        order.swap(i, j);
    }
    order
}

/// Runs of every measurement; the table shows medians.
const ROUNDS: usize = 3;

/// The median of some measurements.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Operations per second of `ops` operations that took `elapsed`.
fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

struct Row {
    system: String,
    n: usize,
    put: f64,
    get: f64,
}

fn native_hashmap(n: usize) -> Row {
    let mut map = HashMap::new();
    let start = Instant::now();
    for i in 0..n {
        map.insert(key(i), value(i));
    }
    let put = rate(n, start.elapsed());
    let order = shuffled(n);
    let start = Instant::now();
    let mut bytes = 0usize;
    for &i in &order {
        // Read the value, as every other system here returns it.
        bytes += map.get(&key(i)).map_or(0, String::len);
    }
    std::hint::black_box(bytes);
    Row {
        system: "HashMap (native, not durable)".into(),
        n,
        put,
        get: rate(n, start.elapsed()),
    }
}

const TABLE: redb::TableDefinition<'_, &str, &str> = redb::TableDefinition::new("bench");

fn native_redb(n: usize, dir: &std::path::Path) -> anyhow::Result<Row> {
    let db = redb::Database::create(dir.join("native.redb"))?;
    let start = Instant::now();
    for i in 0..n {
        let txn = db.begin_write()?;
        {
            let mut table = txn.open_table(TABLE)?;
            table.insert(key(i).as_str(), value(i).as_str())?;
        }
        txn.commit()?; // durable: one fsync per put
    }
    let put = rate(n, start.elapsed());
    let order = shuffled(n);
    let start = Instant::now();
    let txn = db.begin_read()?;
    let table = txn.open_table(TABLE)?;
    for &i in &order {
        table.get(key(i).as_str())?.context("missing")?;
    }
    Ok(Row {
        system: "redb (native, durable)".into(),
        n,
        put,
        get: rate(n, start.elapsed()),
    })
}

async fn boundary_floor(n: usize) -> anyhow::Result<Row> {
    let mut floor = floor::Floor::new().await?;
    let start = Instant::now();
    for i in 0..n {
        floor.set(&key(i), &value(i)).await?;
    }
    let put = rate(n, start.elapsed());
    let order = shuffled(n);
    let start = Instant::now();
    for &i in &order {
        floor.get(&key(i)).await?.context("missing")?;
    }
    Ok(Row {
        system: "bare boundary floor (component, memory)".into(),
        n,
        put,
        get: rate(n, start.elapsed()),
    })
}

async fn kvstash_store(name: &str, config: &str, n: usize) -> anyhow::Result<Row> {
    let store = Store::open(config).await?;
    let bucket = store.bucket("sensors");
    let start = Instant::now();
    for i in 0..n {
        bucket.set_json_text(&key(i), &value(i)).await?;
    }
    let put = rate(n, start.elapsed());
    let order = shuffled(n);
    let start = Instant::now();
    for &i in &order {
        bucket.get(&key(i)).await?.context("missing")?;
    }
    Ok(Row {
        system: name.into(),
        n,
        put,
        get: rate(n, start.elapsed()),
    })
}

/// Durable puts per second with `writers` concurrent writers.
async fn concurrent_puts(
    dir: &std::path::Path,
    writers: usize,
    per_writer: usize,
) -> anyhow::Result<f64> {
    let config = serde_json::json!({"type": "file", "path": dir.join(format!("w{writers}.redb"))})
        .to_string();
    let options = StoreOptions {
        max_instances: writers.max(1),
        ..Default::default()
    };
    let store = Store::open_with(&config, options).await?;
    let start = Instant::now();
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let bucket = store.bucket("sensors");
            tokio::spawn(async move {
                for i in 0..per_writer {
                    let n = w * per_writer + i;
                    bucket.set_json_text(&key(n), &value(n)).await?;
                }
                Ok::<_, kvstash::Error>(())
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(rate(writers * per_writer, start.elapsed()))
}

/// The machine's floor for durable writes: 100-byte write + fsync.
fn raw_fsync_latency(dir: &std::path::Path, rounds: usize) -> anyhow::Result<Duration> {
    let mut file = std::fs::File::create(dir.join("fsync.bin"))?;
    let start = Instant::now();
    for _ in 0..rounds {
        file.write_all(&[7u8; 100])?;
        file.sync_data()?;
    }
    Ok(start.elapsed() / u32::try_from(rounds).unwrap_or(1))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let sizes: Vec<usize> = std::env::args()
        .nth(1)
        .map_or_else(
            || Ok(vec![1_000, 10_000]),
            |s| s.split(',').map(str::parse).collect(),
        )
        .context("usage: kvstash-bench [N,N,...]")?;
    let dir = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for &n in &sizes {
        eprintln!("N = {n}");
        // Each system runs ROUNDS times, interleaved, on fresh stores; the
        // table shows the median rate (this 2-core VM is noisy run to run).
        let mut runs: Vec<Vec<Row>> = Vec::new();
        for round in 0..ROUNDS {
            let native_dir = tempfile::tempdir_in(dir.path())?;
            let file = serde_json::json!({"type": "file", "path": dir.path().join(format!("k{n}-{round}.redb"))});
            runs.push(vec![
                native_hashmap(n),
                native_redb(n, native_dir.path())?,
                boundary_floor(n).await?,
                kvstash_store("kvstash memory (component)", r#"{"type":"memory"}"#, n).await?,
                kvstash_store("kvstash file (component, durable)", &file.to_string(), n).await?,
            ]);
        }
        for system in 0..runs[0].len() {
            let pick = |f: fn(&Row) -> f64| median(runs.iter().map(|r| f(&r[system])).collect());
            rows.push(Row {
                system: runs[0][system].system.clone(),
                n,
                put: pick(|r| r.put),
                get: pick(|r| r.get),
            });
        }
    }
    let mut fsyncs = Vec::new();
    let (mut singles, mut eights, mut sixty_fours) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let round_dir = tempfile::tempdir_in(dir.path())?;
        fsyncs.push(raw_fsync_latency(round_dir.path(), 200)?.as_secs_f64());
        singles.push(concurrent_puts(round_dir.path(), 1, 400).await?);
        eights.push(concurrent_puts(round_dir.path(), 8, 100).await?);
        sixty_fours.push(concurrent_puts(round_dir.path(), 64, 25).await?);
        eprintln!("durable writes, round {round} done");
    }
    let fsync = Duration::from_secs_f64(median(fsyncs));
    let fsync_rate = 1.0 / fsync.as_secs_f64();
    let (single, eight, sixty_four) = (median(singles), median(eights), median(sixty_fours));
    // Opening an existing store (the component is precompiled and cached).
    let reopen = dir.path().join(format!("k{}-0.redb", sizes[0]));
    let config = serde_json::json!({"type": "file", "path": reopen}).to_string();
    let start = Instant::now();
    let store = Store::open(&config).await?;
    let open_time = start.elapsed();
    drop(store);

    let mut out = String::new();
    writeln!(out, "# kvstash benchmark\n")?;
    writeln!(
        out,
        "Medians of {ROUNDS} interleaved runs on this machine, in one process.\n"
    )?;
    writeln!(
        out,
        "| system | N | put/s | get/s | put vs redb | get vs redb |"
    )?;
    writeln!(out, "|---|---:|---:|---:|---:|---:|")?;
    for row in &rows {
        let base = rows
            .iter()
            .find(|r| r.n == row.n && r.system.starts_with("redb"))
            .context("no redb row")?;
        writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2}× | {:.2}× |",
            row.system,
            row.n,
            row.put,
            row.get,
            row.put / base.put,
            row.get / base.get
        )?;
    }
    writeln!(
        out,
        "\n## The cost of kvstash's logic over the bare boundary\n"
    )?;
    writeln!(out, "| N | get vs floor | set vs floor |")?;
    writeln!(out, "|---:|---:|---:|")?;
    for &n in &sizes {
        let find = |prefix: &str| {
            rows.iter()
                .find(|r| r.n == n && r.system.starts_with(prefix))
        };
        if let (Some(kv), Some(floor)) = (find("kvstash memory"), find("bare boundary")) {
            writeln!(
                out,
                "| {n} | {:.2}× (target ≥ 0.8×) | {:.2}× (target ≥ 0.7×) |",
                kv.get / floor.get,
                kv.put / floor.put
            )?;
        }
    }
    writeln!(out, "\n## Durable writes (file backend, group commit)\n")?;
    writeln!(out, "| measure | value | ratio |")?;
    writeln!(out, "|---|---:|---:|")?;
    writeln!(
        out,
        "| raw fsync latency (100-byte write + fsync) | {:.3} ms | 1 / latency = {fsync_rate:.0}/s |",
        fsync.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "| 1 writer | {single:.0} puts/s | {:.2}× fsync rate (target ≥ 0.8×) |",
        single / fsync_rate
    )?;
    writeln!(
        out,
        "| 8 writers | {eight:.0} puts/s | {:.1}× 1 writer |",
        eight / single
    )?;
    writeln!(
        out,
        "| 64 writers | {sixty_four:.0} puts/s | {:.1}× 1 writer (target ≥ 20×) |",
        sixty_four / single
    )?;
    writeln!(
        out,
        "| open an existing store | {:.2} ms | target ≤ 5 ms |",
        open_time.as_secs_f64() * 1e3
    )?;
    writeln!(
        out,
        "| guest component size | {} KiB | target ≤ 1024 KiB |",
        kvstash::GUEST_WASM.len() / 1024
    )?;
    print!("{out}");
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("latest.md"), &out)?;
    eprintln!("written to {}", results.join("latest.md").display());
    Ok(())
}
