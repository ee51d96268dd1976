//! `kvstash-bench-instructions` (`just bench-instructions`): instructions
//! per get and per put, counted by valgrind's callgrind, for kvstash on the
//! memory backend and for the bare boundary floor (`bench/floor`): the
//! same wasmtime setup and memory backend without kvstash's own work. Wall
//! time on this shared 2-core VM drifts by tens of percent; instruction
//! counts do not, so this is the stable measure of the hot path.
//!
//! Each subject and operation runs twice under callgrind, in a child
//! process (this program with `--child`): load 1,000 keys, then `FEW` or
//! `MANY` operations. The difference of the two totals over the difference
//! of the counts is the cost of one operation: start-up, instantiation
//! and the load cancel out. The ratio floor ÷ kvstash is kvstash's share of
//! the floor's rate (1.0: kvstash adds nothing). Writes
//! `bench/results/instructions.md` and `instructions.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, bail};
use kvstash::bench::{Subject, key, random_indices, value};

#[path = "../floor.rs"]
mod floor;

const KEYS: usize = 1000;
const FEW: usize = 500;
const MANY: usize = 2500;
/// The targets: kvstash's rate as a share of the floor's.
const GET_TARGET: f64 = 0.8;
const PUT_TARGET: f64 = 0.7;

async fn subject(name: &str) -> anyhow::Result<Box<dyn Subject>> {
    Ok(match name {
        "kvstash-memory" => Box::new(
            kvstash::bench::KvstashSubject::memory()
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
        ),
        "floor" => Box::new(floor::Floor::new().await?),
        other => bail!("unknown subject {other}"),
    })
}

/// The child: load, then `ops` gets or puts.
async fn child(name: &str, op: &str, ops: usize) -> anyhow::Result<()> {
    let mut s = subject(name).await?;
    let items: Vec<(String, String)> = (0..KEYS).map(|i| (key(i), value(i))).collect();
    s.load(&items).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let picks = random_indices(KEYS, ops, 0x5EED);
    for (j, &i) in picks.iter().enumerate() {
        match op {
            "get" => {
                let found = s.get(&key(i)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                anyhow::ensure!(found, "{name}: {} is missing", key(i));
            }
            "put" => s
                .put(&key(i), &value(KEYS + j))
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            other => bail!("unknown operation {other}"),
        }
    }
    Ok(())
}

/// Instructions the child executes, counted by callgrind.
fn count(exe: &Path, out: &Path, name: &str, op: &str, ops: usize) -> anyhow::Result<u64> {
    let file = out.join(format!("{name}-{op}-{ops}.callgrind"));
    let status = Command::new("valgrind")
        .args(["--tool=callgrind", "--quiet"])
        .arg(format!("--callgrind-out-file={}", file.display()))
        .arg(exe)
        .args(["--child", name, op, &ops.to_string()])
        .status()
        .context("valgrind is needed (Debian: apt-get install valgrind)")?;
    if !status.success() {
        bail!("{name} {op} x{ops} under callgrind: {status}");
    }
    let text = std::fs::read_to_string(&file)?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: "))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no summary line in {}", file.display()))
}

#[derive(serde::Serialize)]
struct Row {
    subject: String,
    op: String,
    instructions_per_op: f64,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, name, op, ops] = args.as_slice()
        && flag == "--child"
    {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(child(name, op, ops.parse().context("--child: count")?));
    }
    if !args.is_empty() {
        bail!("usage: kvstash-bench-instructions (no arguments)");
    }
    let exe = std::env::current_exe()?;
    // Once under valgrind, uncounted: the component's compilation cache is
    // warm for every counted run alike (its key names the CPU's features,
    // which differ under valgrind).
    for name in ["kvstash-memory", "floor"] {
        let status = Command::new("valgrind")
            .args(["--tool=none", "--quiet"])
            .arg(&exe)
            .args(["--child", name, "get", "1"])
            .status()
            .context("valgrind is needed (Debian: apt-get install valgrind)")?;
        anyhow::ensure!(status.success(), "{name}: {status}");
    }
    let scratch = tempfile::tempdir()?;
    let mut rows = Vec::new();
    for name in ["kvstash-memory", "floor"] {
        for op in ["get", "put"] {
            eprintln!("kvstash-bench-instructions: {name} {op} under callgrind");
            let few = count(&exe, scratch.path(), name, op, FEW)?;
            let many = count(&exe, scratch.path(), name, op, MANY)?;
            // A run that compiled the component while the other did not
            // would show here: the longer run must cost more.
            anyhow::ensure!(
                many > few,
                "{name} {op}: {MANY} operations took {many} instructions, {FEW} took {few}"
            );
            let per_op = (many - few) as f64 / (MANY - FEW) as f64;
            rows.push(Row {
                subject: name.to_string(),
                op: op.to_string(),
                instructions_per_op: per_op,
            });
        }
    }
    let per = |subject: &str, op: &str| {
        rows.iter()
            .find(|r| r.subject == subject && r.op == op)
            .map_or(f64::NAN, |r| r.instructions_per_op)
    };
    let mut md = String::new();
    writeln!(md, "# Instructions per operation (callgrind)\n")?;
    writeln!(
        md,
        "kvstash on the memory backend against the bare boundary floor (the same wasmtime setup and memory backend, no kvstash logic), {KEYS} keys loaded; each figure is (instructions of {MANY} operations - of {FEW}) / {}, so start-up and the load cancel out. The ratio is floor / kvstash: kvstash's rate as a share of the floor's, on a machine that does nothing else.\n",
        MANY - FEW
    )?;
    writeln!(
        md,
        "| operation | kvstash-memory | floor | ratio | target | met |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---|")?;
    for (op, target) in [("get", GET_TARGET), ("put", PUT_TARGET)] {
        let (kv, fl) = (per("kvstash-memory", op), per("floor", op));
        let ratio = fl / kv;
        let met = if ratio >= target {
            "yes".to_string()
        } else {
            format!("**no**: {:.0}% short", (1.0 - ratio / target) * 100.0)
        };
        writeln!(
            md,
            "| {op} | {kv:.0} | {fl:.0} | {ratio:.2}× | ≥ {target}× | {met} |"
        )?;
    }
    print!("{md}");
    let results = Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::create_dir_all(&results)?;
    std::fs::write(results.join("instructions.md"), &md)?;
    std::fs::write(
        results.join("instructions.json"),
        serde_json::to_string_pretty(&rows)?,
    )?;
    eprintln!("written: {}/instructions.md", results.display());
    Ok(())
}
