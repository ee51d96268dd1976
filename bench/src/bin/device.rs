//! `kvstash-bench-device` (`just bench-device`): the device builds that
//! `just cross` makes, on this x86_64 machine and under qemu-user for
//! aarch64 and 32-bit ARMv7 (figures labelled as emulated), in one run:
//!
//! - binary size of each device build;
//! - first open (`kvstash info`, which loads the component): the embedded
//!   precompiled component against a build that compiles it (fresh cache)
//!   and against that build's on-disk cache;
//! - whole-process `kvstash get` and durable `kvstash set` against the
//!   `sqlite3` CLI on the same lookup (x86_64, median of alternating runs):
//!   the target is 1.3x;
//! - get and durable put rates (`kvstash bench --one`, memory and file);
//! - a store of 100k keys: load time, file size, peak RSS of the process
//!   that loaded and exercised it, and of a one-shot `list --keys` over it
//!   with and without `cache_mb`.
//!
//! Expects `target/cross/TARGET/kvstash` (device build) and
//! `target/cross/TARGET/kvstash-compiler` (`--features compiler`, no
//! embedded component), which the just recipe builds. Writes
//! `bench/results/device.md` and `device.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, bail};
use serde_json::{Value, json};

struct Target {
    triple: &'static str,
    label: &'static str,
    /// qemu-user and the sysroot it loads the target's libc from.
    emulator: Option<(&'static str, &'static str)>,
}

const TARGETS: [Target; 3] = [
    Target {
        triple: "x86_64-unknown-linux-gnu",
        label: "x86_64 (native)",
        emulator: None,
    },
    Target {
        triple: "aarch64-unknown-linux-gnu",
        label: "aarch64 (qemu-aarch64, emulated)",
        emulator: Some(("qemu-aarch64", "/usr/aarch64-linux-gnu")),
    },
    Target {
        triple: "armv7-unknown-linux-gnueabihf",
        label: "armv7 (qemu-arm, emulated, Pulley)",
        emulator: Some(("qemu-arm", "/usr/arm-linux-gnueabihf")),
    },
];

struct Args {
    rounds: usize,
    cli_rounds: usize,
    rss_keys: usize,
    /// Re-measure only the one-shot CLI against sqlite3 (x86_64), keeping
    /// the rest of `bench/results/device.json` (`just bench-one-shot`).
    one_shot_only: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut args = Args {
        rounds: 3,
        cli_rounds: 40,
        rss_keys: 100_000,
        one_shot_only: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut next = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--rounds" => args.rounds = next()?.parse()?,
            "--cli-rounds" => args.cli_rounds = next()?.parse()?,
            "--rss-keys" => args.rss_keys = next()?.parse()?,
            "--one-shot-only" => args.one_shot_only = true,
            other => bail!(
                "unknown option {other} (--rounds, --cli-rounds, --rss-keys, --one-shot-only)"
            ),
        }
    }
    Ok(args)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

impl Target {
    fn binary(&self, name: &str) -> PathBuf {
        root().join("target/cross").join(self.triple).join(name)
    }

    /// `BINARY ARGS` on this target, with `home` as its HOME and cache.
    fn command(&self, binary: &Path, home: &Path) -> Command {
        let mut cmd = match self.emulator {
            Some((qemu, sysroot)) => {
                let mut cmd = Command::new(qemu);
                cmd.arg("-L").arg(sysroot).arg(binary);
                cmd
            }
            None => Command::new(binary),
        };
        cmd.env("HOME", home)
            .env("KVSTASH_CACHE_DIR", home.join("cache"))
            .env_remove("KVSTASH_STORE")
            .env_remove("XDG_CACHE_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
}

/// Runs `cmd`; its stdout, and how long it took in ms.
fn timed(mut cmd: Command) -> anyhow::Result<(String, f64)> {
    let start = Instant::now();
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    if !out.status.success() {
        bail!(
            "{cmd:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok((String::from_utf8_lossy(&out.stdout).into_owned(), ms))
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Peak RSS (KiB) of `cmd`, by GNU time.
fn peak_rss_kib(cmd: &Command) -> anyhow::Result<u64> {
    let mut time = Command::new("/usr/bin/time");
    time.arg("-f")
        .arg("%M")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => time.env(k, v),
            None => time.env_remove(k),
        };
    }
    let out = time
        .stdout(Stdio::null())
        .output()
        .context("running /usr/bin/time (Debian package `time`)")?;
    if !out.status.success() {
        bail!("{time:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stderr);
    text.lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .with_context(|| format!("no RSS in {text:?}"))
}

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "kvstash-bench-device-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// First open: `kvstash info` with the embedded component, compiling it
/// (empty cache each round), and from the cache the compile left.
fn first_open(t: &Target, rounds: usize) -> anyhow::Result<Value> {
    let device = t.binary("kvstash");
    let compiler = t.binary("kvstash-compiler");
    let (mut embedded, mut compiled, mut cached) = (Vec::new(), Vec::new(), Vec::new());
    // `kvstash info` with `binary`: how long it took, checking where its
    // component came from.
    let open = |binary: &Path, home: &Path, expected: &str| -> anyhow::Result<f64> {
        let mut cmd = t.command(binary, home);
        cmd.arg("info");
        let (info, ms) = timed(cmd)?;
        let info: Value = serde_json::from_str(&info)?;
        if info["component"] != expected {
            bail!(
                "{}: {} loaded its component as {}, expected {expected}: {info}",
                t.triple,
                binary.display(),
                info["component"]
            );
        }
        Ok(ms)
    };
    for round in 0..rounds {
        let home = scratch(&format!("open-{}-{round}", t.triple))?;
        embedded.push(open(&device, &home, "embedded")?);
        compiled.push(open(&compiler, &home, "compiled")?);
        cached.push(open(&compiler, &home, "cache")?);
        let _ = std::fs::remove_dir_all(&home);
    }
    Ok(json!({
        "embedded_ms": median(embedded),
        "compiled_ms": median(compiled),
        "cache_ms": median(cached),
    }))
}

/// `kvstash bench --one SUBJECT` on the target: its measured figures.
fn bench_one(t: &Target, subject: &str, keys: usize, ops: usize) -> anyhow::Result<Value> {
    let home = scratch(&format!("bench-{}-{subject}-{keys}", t.triple))?;
    let mut cmd = t.command(&t.binary("kvstash"), &home);
    cmd.args(["bench", "--one", subject, "--sizes", &keys.to_string()])
        .args(["--ops", &ops.to_string(), "--dir"])
        .arg(home.join("data"));
    let (out, _) = timed(cmd)?;
    let _ = std::fs::remove_dir_all(&home);
    Ok(serde_json::from_str(out.trim())?)
}

/// Rates of get and durable put, medians over rounds.
fn rates(t: &Target, rounds: usize) -> anyhow::Result<Value> {
    // Emulation is 10-50x slower: fewer operations keep a round short.
    let ops = if t.emulator.is_some() { 4_000 } else { 40_000 };
    let mut figures = serde_json::Map::new();
    for subject in ["kvstash-memory", "kvstash-file"] {
        let (mut get, mut put) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            let m = bench_one(t, subject, 1000, ops)?;
            get.push(m["get"].as_f64().unwrap_or(f64::NAN));
            put.push(m["put"].as_f64().unwrap_or(f64::NAN));
        }
        figures.insert(
            subject.into(),
            json!({"get_per_s": median(get), "put_per_s": median(put)}),
        );
    }
    Ok(Value::Object(figures))
}

/// A store of `keys` keys: loading it in one process (`bench --one`), then
/// a one-shot `list --keys` over it with redb's default cache and with
/// `cache_mb: 4`.
fn footprint(t: &Target, keys: usize) -> anyhow::Result<Value> {
    let home = scratch(&format!("rss-{}", t.triple))?;
    let data = home.join("data");
    let mut cmd = t.command(&t.binary("kvstash"), &home);
    cmd.args([
        "bench",
        "--one",
        "kvstash-file",
        "--sizes",
        &keys.to_string(),
    ])
    .args(["--ops", "1000", "--dir"])
    .arg(&data);
    let (out, _) = timed(cmd)?;
    let loaded: Value = serde_json::from_str(out.trim())?;
    let file = data.join("kvstash.redb");
    let mut list_rss = serde_json::Map::new();
    for (name, cache) in [("default_cache", None), ("cache_mb_4", Some(4))] {
        let mut config = json!({"type": "file", "path": file});
        if let Some(mb) = cache {
            config["cache_mb"] = json!(mb);
        }
        let mut cmd = t.command(&t.binary("kvstash"), &home);
        // `bench --one` keeps its keys in bucket `sensors`.
        cmd.args([
            "--config",
            &config.to_string(),
            "--bucket",
            "sensors",
            "list",
            "--keys",
        ]);
        list_rss.insert(name.into(), json!(peak_rss_kib(&cmd)?));
    }
    let _ = std::fs::remove_dir_all(&home);
    Ok(json!({
        "keys": keys,
        "load_s": loaded["load_s"],
        "file_bytes": loaded["disk_bytes"],
        "workload_peak_rss_bytes": loaded["peak_rss_bytes"],
        "list_keys_peak_rss_kib": list_rss,
    }))
}

/// Whole-process `kvstash get` / durable `set` against `sqlite3` on the
/// same lookup in a 10k-key store, alternating, on this machine.
fn one_shot(rounds: usize) -> anyhow::Result<Value> {
    let native = &TARGETS[0];
    let home = scratch("cli")?;
    let data = home.join("data");
    let db = home.join("s.db");
    let n = 10_000;
    let mut import = String::new();
    let mut sql = String::from("create table kv(k text primary key, v text);\nbegin;\n");
    for i in 0..n {
        writeln!(
            import,
            "{{\"bucket\":\"default\",\"key\":\"k{i}\",\"value\":{i}}}"
        )?;
        writeln!(sql, "insert into kv values('k{i}','{i}');")?;
    }
    sql.push_str("commit;\n");
    let loader = |binary: &Path| -> anyhow::Result<()> {
        let mut cmd = native.command(binary, &home);
        cmd.arg("--data")
            .arg(&data)
            .arg("import")
            .stdin(Stdio::piped());
        let mut child = cmd.spawn()?;
        std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, import.as_bytes())?;
        let status = child.wait()?;
        if !status.success() {
            bail!("loading the store: {status}");
        }
        Ok(())
    };
    let device = native.binary("kvstash");
    let full = root().join("target/release/kvstash");
    loader(&device)?;
    let mut sqlite = Command::new("sqlite3");
    sqlite.arg(&db).stdin(Stdio::piped());
    let mut child = sqlite
        .spawn()
        .context("running sqlite3 (Debian package `sqlite3`)")?;
    std::io::Write::write_all(&mut child.stdin.take().context("stdin")?, sql.as_bytes())?;
    if !child.wait()?.success() {
        bail!("loading the SQLite database failed");
    }
    let kv = |binary: &Path, args: &[&str]| {
        let mut cmd = native.command(binary, &home);
        cmd.arg("--data").arg(&data).args(args);
        cmd
    };
    let sq = |statement: &str| {
        let mut cmd = Command::new("sqlite3");
        cmd.arg(&db)
            .arg(statement)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    };
    let mut times: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    // The full build's cache is warm after one start.
    timed(kv(&full, &["get", "k1"]))?;
    for round in 0..rounds {
        let key = format!("k{}", (round * 7919) % n);
        let value = format!("{round}");
        let statement_get = format!("select v from kv where k='{key}'");
        let statement_set = format!("insert or replace into kv values('{key}','{value}')");
        let runs: [(&str, Command); 6] = [
            ("get device", kv(&device, &["get", &key])),
            ("get full", kv(&full, &["get", &key])),
            ("get sqlite3", sq(&statement_get)),
            ("set device", kv(&device, &["set", &key, &value])),
            ("set full", kv(&full, &["set", &key, &value])),
            ("set sqlite3", sq(&statement_set)),
        ];
        for (name, cmd) in runs {
            let (_, ms) = timed(cmd)?;
            times.entry(name).or_default().push(ms);
        }
    }
    let _ = std::fs::remove_dir_all(&home);
    let m: std::collections::BTreeMap<&str, f64> =
        times.into_iter().map(|(k, v)| (k, median(v))).collect();
    Ok(json!({
        "keys": n,
        "rounds": rounds,
        "median_ms": m,
        "get_ratio_device": m["get device"] / m["get sqlite3"],
        "get_ratio_full": m["get full"] / m["get sqlite3"],
        "set_ratio_device": m["set device"] / m["set sqlite3"],
        "set_ratio_full": m["set full"] / m["set sqlite3"],
    }))
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let out = root().join("bench/results");
    let mut results = serde_json::Map::new();
    if args.one_shot_only {
        let text = std::fs::read_to_string(out.join("device.json"))
            .context("--one-shot-only keeps the other figures of bench/results/device.json: run `just bench-device` first")?;
        let Value::Object(previous) = serde_json::from_str(&text)? else {
            bail!("bench/results/device.json is not an object");
        };
        results = previous;
    } else {
        for t in &TARGETS {
            eprintln!("kvstash-bench-device: {}", t.label);
            let size = std::fs::metadata(t.binary("kvstash"))
                .with_context(|| format!("{}: run `just cross {}` first", t.triple, t.triple))?
                .len();
            let open = first_open(t, args.rounds)?;
            let rates = rates(t, args.rounds)?;
            let footprint = footprint(t, args.rss_keys)?;
            results.insert(
                t.triple.into(),
                json!({"label": t.label, "binary_bytes": size, "first_open": open, "rates": rates, "footprint": footprint, "rss_keys": args.rss_keys}),
            );
        }
    }
    eprintln!("kvstash-bench-device: one-shot CLI against sqlite3");
    results.insert("one_shot_cli".into(), one_shot(args.cli_rounds)?);
    let md = render(&results)?;
    print!("{md}");
    std::fs::write(out.join("device.md"), &md)?;
    std::fs::write(
        out.join("device.json"),
        serde_json::to_string_pretty(&Value::Object(results))?,
    )?;
    eprintln!("wrote bench/results/device.md and device.json");
    Ok(())
}

/// `bench/results/device.md` from the figures of `device.json`.
fn render(results: &serde_json::Map<String, Value>) -> anyhow::Result<String> {
    let mut md = String::from(
        "# Device builds (`just bench-device`)\n\n\
         `just cross` builds: memory + file backends, the component precompiled for the target \
         and embedded, no compiler. ARM figures are **emulated** (qemu-user on this x86_64 \
         machine): they show the relative cost of each step, not a device's speed. RSS under \
         qemu is the emulator process's.\n\n",
    );
    let missing = |triple: &str| format!("bench/results/device.json has no figures for {triple}");
    for t in &TARGETS {
        results.get(t.triple).with_context(|| missing(t.triple))?;
    }
    let cli = results.get("one_shot_cli").context("no one-shot figures")?;
    writeln!(md, "## Binary, first open, rates\n")?;
    writeln!(
        md,
        "| target | binary | first open: embedded | compiling | from cache | memory get/s | file get/s | durable put/s |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for t in &TARGETS {
        let r = &results[t.triple];
        let o = &r["first_open"];
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {} | {:.1} MiB | {:.0} ms | {:.0} ms ({:.0}x) | {:.0} ms | {:.0} | {:.0} | {:.0} |",
            t.label,
            f(&r["binary_bytes"]) / 1048576.0,
            f(&o["embedded_ms"]),
            f(&o["compiled_ms"]),
            f(&o["compiled_ms"]) / f(&o["embedded_ms"]),
            f(&o["cache_ms"]),
            f(&r["rates"]["kvstash-memory"]["get_per_s"]),
            f(&r["rates"]["kvstash-file"]["get_per_s"]),
            f(&r["rates"]["kvstash-file"]["put_per_s"]),
        )?;
    }
    writeln!(
        md,
        "\n## A store of {} keys\n\nLoad time and file size of `kvstash bench --one kvstash-file` (load, then gets, overwrites, transactions, a reopen) and that process's peak RSS; then the peak RSS of a one-shot `list --keys` over the store.\n\n| target | load | file | peak RSS, bench process | `list --keys`, default cache | with `cache_mb: 4` |\n|---|---:|---:|---:|---:|---:|",
        results[TARGETS[0].triple]["rss_keys"]
            .as_u64()
            .unwrap_or(100_000)
    )?;
    for t in &TARGETS {
        let p = &results[t.triple]["footprint"];
        let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {} | {:.1} s | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            t.label,
            f(&p["load_s"]),
            f(&p["file_bytes"]) / 1048576.0,
            f(&p["workload_peak_rss_bytes"]) / 1048576.0,
            f(&p["list_keys_peak_rss_kib"]["default_cache"]) / 1024.0,
            f(&p["list_keys_peak_rss_kib"]["cache_mb_4"]) / 1024.0,
        )?;
    }
    let m = &cli["median_ms"];
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    writeln!(
        md,
        "\n## One process per value, against the `sqlite3` CLI (x86_64, {} alternating runs, 10k-key stores)\n\n\
         | | kvstash device build | kvstash default build | sqlite3 | ratio device / full (target <= 1.3x) |\n|---|---:|---:|---:|---:|\n\
         | `get` | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x / {:.2}x |\n\
         | durable `set` | {:.2} ms | {:.2} ms | {:.2} ms | {:.2}x / {:.2}x |",
        cli["rounds"],
        f(&m["get device"]),
        f(&m["get full"]),
        f(&m["get sqlite3"]),
        f(&cli["get_ratio_device"]),
        f(&cli["get_ratio_full"]),
        f(&m["set device"]),
        f(&m["set full"]),
        f(&m["set sqlite3"]),
        f(&cli["set_ratio_device"]),
        f(&cli["set_ratio_full"]),
    )?;
    Ok(md)
}
