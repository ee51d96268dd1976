//! `kvstash-bench-bindings`: the Python and JavaScript packages against the
//! Rust API they wrap, and against the Python stores the seeds use, in one
//! run (`just bench-bindings`; `just bench` runs it too).
//!
//! Each round runs the same workload (N keys loaded, then random gets, each
//! checked, then durable overwrites one commit each) on:
//! - the Rust API (`kvstash::Store`, file backend): the baseline, at the
//!   start and at the end of each round; and `kvstash::BlockingStore`, the
//!   API the Python package wraps;
//! - `bench/bindings/python_bench.py` with `--python` (kvstash sync and
//!   asyncio, TinyDB with aiotinydb, TinyDB, sqlite3);
//! - `bench/bindings/js_bench.mjs` with `--node` (the JS package, memory and
//!   file storage).
//!
//! Prints medians and ratios, checks the targets (Python ≥ 50k
//! gets/s; Python durable puts ≥ 0.8× the Rust API's) and writes
//! `bench/results/bindings.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use kvstash::Store;
use kvstash::bench::{key, median, random_indices, rate, value};

const GET_SEED: u64 = 0x9E37_79B9_7F4A_7C15;
const PUT_SEED: u64 = 0x2545_F491_4F6C_DD1D;

struct Args {
    python: PathBuf,
    node: PathBuf,
    n: usize,
    gets: usize,
    puts: usize,
    rounds: usize,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        python: "python3".into(),
        node: "node".into(),
        n: 10_000,
        gets: 50_000,
        puts: 2_000,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut next = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--python" => args.python = next()?.into(),
            "--node" => args.node = next()?.into(),
            "--n" => args.n = next()?.parse()?,
            "--gets" => args.gets = next()?.parse()?,
            "--puts" => args.puts = next()?.parse()?,
            "--rounds" => args.rounds = next()?.parse()?,
            other => bail!(
                "unknown argument {other}; usage: kvstash-bench-bindings [--python PY] [--node NODE] [--n N] [--gets G] [--puts P] [--rounds R]"
            ),
        }
    }
    Ok(args)
}

/// One subject's figures in one round.
#[derive(Clone, Debug, serde::Deserialize)]
struct Figures {
    subject: String,
    get_per_s: Option<f64>,
    put_per_s: Option<f64>,
    durable: bool,
    note: String,
}

/// That a get of key `i` found the value loaded there.
fn check(i: usize, entry: Option<kvstash::Entry>) -> anyhow::Result<()> {
    let doc: serde_json::Value = entry.context("a loaded key is missing")?.value.parse()?;
    if doc["n"] != i {
        bail!("get {} returned {doc}", key(i));
    }
    Ok(())
}

/// The Rust API on the file backend: the same workload as the scripts.
async fn rust_api(dir: &Path, args: &Args) -> anyhow::Result<Figures> {
    let path = dir.join("rust-api.redb");
    let _ = std::fs::remove_file(&path);
    let config = serde_json::json!({"type": "file", "path": path}).to_string();
    let store = Store::open(&config).await?;
    let bucket = store.bucket("bench");
    for chunk in (0..args.n).collect::<Vec<_>>().chunks(1000) {
        let pairs: Vec<(String, String)> = chunk.iter().map(|&i| (key(i), value(i))).collect();
        bucket.set_many(&pairs).await?;
    }
    let picks = random_indices(args.n, args.gets, GET_SEED);
    let started = Instant::now();
    for &i in &picks {
        check(i, bucket.get(&key(i)).await?)?;
    }
    let get_per_s = rate(picks.len(), started.elapsed());
    let puts = random_indices(args.n, args.puts, PUT_SEED);
    let started = Instant::now();
    for (j, &i) in puts.iter().enumerate() {
        bucket
            .set_json_text(&key(i), &value(i + args.n + j))
            .await?;
    }
    let put_per_s = rate(puts.len(), started.elapsed());
    Ok(Figures {
        subject: "rust-api-file".into(),
        get_per_s: Some(get_per_s),
        put_per_s: Some(put_per_s),
        durable: true,
        note: "kvstash::Store (async), the baseline".into(),
    })
}

/// The same workload through `kvstash::BlockingStore`, the API the Python
/// package wraps (a runtime of its own; each call blocks on it), so the
/// table shows which part of the Python figures is Python's.
fn rust_blocking(dir: &Path, args: &Args) -> anyhow::Result<Figures> {
    let path = dir.join("rust-blocking.redb");
    let _ = std::fs::remove_file(&path);
    let config = serde_json::json!({"type": "file", "path": path}).to_string();
    let store = kvstash::BlockingStore::open(&config)?;
    let bucket = store.bucket("bench");
    for i in 0..args.n {
        bucket.set_json_text(&key(i), &value(i))?;
    }
    let picks = random_indices(args.n, args.gets, GET_SEED);
    let started = Instant::now();
    for &i in &picks {
        check(i, bucket.get(&key(i))?)?;
    }
    let get_per_s = rate(picks.len(), started.elapsed());
    let puts = random_indices(args.n, args.puts, PUT_SEED);
    let started = Instant::now();
    for (j, &i) in puts.iter().enumerate() {
        bucket.set_json_text(&key(i), &value(i + args.n + j))?;
    }
    let put_per_s = rate(puts.len(), started.elapsed());
    Ok(Figures {
        subject: "rust-blocking-file".into(),
        get_per_s: Some(get_per_s),
        put_per_s: Some(put_per_s),
        durable: true,
        note: "kvstash::BlockingStore, what the Python package wraps".into(),
    })
}

/// Runs a benchmark script; the JSON lines it printed.
fn script(mut command: Command) -> anyhow::Result<Vec<Figures>> {
    let shown = format!("{command:?}");
    let out = command
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| shown.clone())?;
    let figures = String::from_utf8(out.stdout)?
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<Vec<Figures>, _>>()?;
    if !out.status.success() {
        bail!("{shown} failed ({}); it printed {figures:?}", out.status);
    }
    Ok(figures)
}

fn cell(v: Option<f64>) -> String {
    v.map_or_else(|| "—".into(), kvstash::bench::human_rate)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{r:.2}×"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir_in(root.join("target"))?;
    let mut rounds: BTreeMap<String, Vec<Figures>> = BTreeMap::new();
    let mut order = Vec::new();
    let mut put_ratios = Vec::new();
    for round in 1..=args.rounds {
        eprintln!("round {round}/{}", args.rounds);
        // The Python package's durable puts, bracketed by the Rust API's
        // right before and right after: the disk's fsync latency wanders
        // over seconds here, so the target's ratio is taken per round.
        let before = rust_api(dir.path(), &args).await?;
        let python = |only: &str| {
            let mut command = Command::new(&args.python);
            command
                .arg(root.join("bench/bindings/python_bench.py"))
                .arg("--dir")
                .arg(dir.path())
                .args(["--n", &args.n.to_string()])
                .args(["--gets", &args.gets.to_string()])
                .args(["--puts", &args.puts.to_string()])
                .args(["--only", only]);
            script(command)
        };
        let py_file = python("kvstash-file")?;
        let after = rust_api(dir.path(), &args).await?;
        if let (Some(py), Some(a), Some(b)) = (
            py_file.first().and_then(|f| f.put_per_s),
            before.put_per_s,
            after.put_per_s,
        ) {
            put_ratios.push(py / f64::midpoint(a, b));
        }
        let mut all = vec![before, after];
        all.extend(py_file);
        all.extend(python(
            "kvstash-memory,kvstash-aio-file,tinydb-aiotinydb,tinydb,sqlite3",
        )?);
        eprintln!("round {round}/{}: JavaScript", args.rounds);
        let mut node = Command::new(&args.node);
        node.arg(root.join("bench/bindings/js_bench.mjs"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--n", &args.n.to_string()])
            .args(["--gets", &args.gets.to_string()])
            .args(["--puts", &args.puts.to_string()]);
        all.extend(script(node)?);
        // BlockingStore makes its own runtime: off this one's thread.
        all.push(std::thread::scope(|scope| {
            scope
                .spawn(|| rust_blocking(dir.path(), &args))
                .join()
                .map_err(|_| anyhow::anyhow!("the BlockingStore run panicked"))?
        })?);
        for f in all {
            if !rounds.contains_key(&f.subject) {
                order.push(f.subject.clone());
            }
            rounds.entry(f.subject.clone()).or_default().push(f);
        }
    }

    let med = |subject: &str, get: bool| -> Option<f64> {
        let runs = rounds.get(subject)?;
        let values: Vec<f64> = runs
            .iter()
            .filter_map(|f| if get { f.get_per_s } else { f.put_per_s })
            .collect();
        (!values.is_empty()).then(|| median(values))
    };

    let mut md = String::new();
    writeln!(
        md,
        "# Bindings: Python and JavaScript against the Rust API and the seeds' stores\n\n\
         `just bench-bindings` (`kvstash-bench-bindings`): {} keys loaded, then {} random gets \
         (each value checked), then {} overwrites with new values, each its own acknowledged \
         commit; medians of {} rounds, all in one run on this machine (the Rust API twice per round, right before and right after the Python package's file subject). TinyDB rewrites its \
         whole file per write and scans it per read, so its op counts are capped (see notes).\n",
        args.n, args.gets, args.puts, args.rounds
    )?;
    writeln!(md, "| subject | gets/s | puts/s | durable puts | note |")?;
    writeln!(md, "|---|---:|---:|:---:|---|")?;
    for subject in &order {
        let note = &rounds[subject][0];
        writeln!(
            md,
            "| {subject} | {} | {} | {} | {} |",
            cell(med(subject, true)),
            cell(med(subject, false)),
            if note.durable { "yes" } else { "no" },
            note.note
        )?;
    }

    let py_get = med("kvstash-file", true);
    let targets = [
        (
            "Python gets/s (file) vs the 50k/s target",
            py_get.map(|g| g / 50_000.0),
            1.0,
        ),
        (
            "Python durable puts vs the Rust API's (per round, bracketed; median)",
            (!put_ratios.is_empty()).then(|| median(put_ratios.clone())),
            0.8,
        ),
    ];
    writeln!(
        md,
        "\n## Targets\n\n| measure | ratio | target | |\n|---|---:|---:|---|"
    )?;
    let mut missed = 0;
    for (what, r, target) in targets {
        let ok = r.is_some_and(|r| r >= target);
        missed += usize::from(!ok);
        writeln!(
            md,
            "| {what} | {} | ≥ {target}× | {} |",
            times(r),
            if ok { "met" } else { "MISSED" }
        )?;
    }

    let comparisons = [
        ("kvstash-file", "tinydb-aiotinydb"),
        ("kvstash-aio-file", "tinydb-aiotinydb"),
        ("kvstash-file", "tinydb"),
        ("kvstash-file", "sqlite3"),
        ("kvstash-file", "rust-api-file"),
        ("kvstash-file", "rust-blocking-file"),
        ("rust-blocking-file", "rust-api-file"),
        ("kvstash-js-file", "rust-api-file"),
        ("kvstash-js-file", "kvstash-file"),
        ("kvstash-js-memory", "kvstash-memory"),
    ];
    writeln!(
        md,
        "\n## Ratios\n\n| subject | against | gets | puts |\n|---|---|---:|---:|"
    )?;
    for (a, b) in comparisons {
        writeln!(
            md,
            "| {a} | {b} | {} | {} |",
            times(ratio(med(a, true), med(b, true))),
            times(ratio(med(a, false), med(b, false)))
        )?;
    }
    print!("{md}");
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("results/bindings.md");
    std::fs::write(&out, &md)?;
    eprintln!("wrote {}", out.display());
    if missed > 0 {
        eprintln!("{missed} target(s) missed");
    }
    Ok(())
}
