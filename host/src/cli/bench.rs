//! `kvstash bench`: the benchmark workload, one child process per subject.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};

/// Most time one subject may take at one size before it is skipped.
const BENCH_BUDGET: std::time::Duration = std::time::Duration::from_secs(120);

/// `kvstash bench`: each subject, size and round in a child process (its own
/// peak RSS), then durable writes in this one; prints Markdown.
pub(super) async fn bench(
    sizes: &[usize],
    rounds: usize,
    sample: crate::bench::Sample,
    dir: Option<PathBuf>,
    one: Option<String>,
) -> anyhow::Result<()> {
    use crate::bench;
    if sizes.is_empty() || sizes.contains(&0) {
        bail!("--sizes: give key counts of at least 1, e.g. 1000,10000");
    }
    let (dir, scratch) = match dir {
        Some(dir) => (dir, false),
        None => (
            std::env::temp_dir().join(format!("kvstash-bench-{}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if let Some(name) = one {
        let n = *sizes.first().context("--sizes is empty")?;
        let mut subject = bench::built_in(&name, &dir)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .with_context(|| format!("unknown subject `{name}`"))?;
        let measured = bench::measure(subject.as_mut(), n, sample)
            .await
            .map_err(|e| anyhow::anyhow!("{name} at {n}: {e}"))?;
        println!("{}", serde_json::to_string(&measured)?);
        return Ok(());
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let mut outcomes = Vec::new();
    for &n in sizes {
        for name in bench::BUILT_IN {
            let result = bench::run_rounds(
                rounds,
                BENCH_BUDGET,
                |round, run_dir| {
                    eprintln!("kvstash bench: {name}, N = {n}, run {}", round + 1);
                    let mut child = std::process::Command::new(&exe);
                    child
                        .args(["bench", "--one", name, "--sizes", &n.to_string()])
                        .args(["--ops", &sample.ops.to_string(), "--dir"])
                        .arg(run_dir);
                    child
                },
                |round| dir.join(format!("{name}-{n}-{round}")),
            );
            outcomes.push(bench::Outcome {
                system: name.to_string(),
                n,
                result,
            });
        }
    }
    eprintln!("kvstash bench: durable writes");
    let durable = bench::durable_writes(&dir, rounds)
        .await
        .map_err(|e| anyhow::anyhow!("durable writes: {e}"))?;
    if scratch {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "# kvstash bench\n\nMedians of {rounds} runs; see `kvstash::bench` for the workload.\n"
    )?;
    writeln!(out, "{}", bench::render_table(&outcomes))?;
    let fsync_rate = 1e3 / durable.fsync_latency_ms;
    writeln!(
        out,
        "raw fsync latency: {:.3} ms (1 / latency = {fsync_rate:.0}/s)",
        durable.fsync_latency_ms
    )?;
    let single = durable.writers.get(&1).copied().unwrap_or(f64::NAN);
    for (writers, rate) in &durable.writers {
        write!(
            out,
            "{writers} concurrent writers: {rate:.0} durable puts/s ({:.2}x the fsync rate, {:.1}x 1 writer",
            rate / fsync_rate,
            rate / single
        )?;
        if let (Some(us), Some(bound)) = (
            durable.cpu_us_per_put.get(writers),
            durable.cpu_bound(*writers),
        ) {
            write!(
                out,
                "; {us:.1} us CPU per put: {} cores allow {bound:.0}/s",
                durable.cores
            )?;
        }
        writeln!(out, ")")?;
    }
    writeln!(
        out,
        "{} concurrent writers into memory: {:.0} puts/s (the CPU ceiling for the writers above)",
        bench::CEILING_WRITERS,
        durable.memory_ceiling
    )?;
    #[cfg(feature = "compiler")]
    writeln!(
        out,
        "guest component: {} KiB",
        crate::GUEST_WASM.len() / 1024
    )?;
    Ok(())
}
