//! `kvstash migrate`: copies a migrating configuration's `from` into its
//! `to` while the store is in use, then verifies them.
//!
//! 1. **Count**: one pass over both sides (what there is to do, for the
//!    progress bar's ETA).
//! 2. **Copy**, page by page (`--batch` records, at most `--rate` per
//!    second): each page is made equal in `to` by the component's copy,
//!    which never lets an older value overwrite a newer one.
//! 3. **Catch up** from `from`'s change feed, from the version before the
//!    copy started: what was written meanwhile and did not reach `to`.
//! 4. **Verify**: per bucket, the records and a checksum on each side. A
//!    difference (a write that landed between the sides while they were
//!    read) is caught up and verified again, up to three times.
//!
//! The checkpoint file (`--checkpoint`, default `DATA/migrate.json`)
//! holds the phase, the copy's position and the feed's version after
//! every page, so an interrupted run resumes where it was; it is removed
//! once verified. A feed compacted under the copy (`--retention` too short
//! for the copy's length) starts the copy again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::api::{BucketSummary, Error, Store};

/// `kvstash migrate`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct MigrateArgs {
    /// Records per page (1-10000).
    #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch: u32,
    /// Most records copied per second (throttling); 0: as fast as it goes.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Where progress is kept, to resume an interrupted run (default:
    /// DATA/migrate.json).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// Ignore a checkpoint and copy from the start.
    #[arg(long)]
    pub restart: bool,
    /// Only catch up from `from`'s feed (from now) and verify; copy
    /// nothing else.
    #[arg(long)]
    pub verify_only: bool,
}

/// What the checkpoint file holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Checkpoint {
    /// The SHA-256 of the store configuration it is for.
    config: String,
    /// `from`'s version before the copy started: the catch-up reads the
    /// feed from there.
    since: u64,
    /// "copy", "catch-up" or "verify".
    phase: String,
    /// The copy's position: the last storage key copied (base64).
    after: Option<String>,
    records: u64,
    bytes: u64,
}

impl Checkpoint {
    fn load(path: &Path, config: &str) -> anyhow::Result<Option<Self>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let checkpoint: Self = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a migration checkpoint", path.display()))?;
        if checkpoint.config != config {
            anyhow::bail!(
                "{} is the checkpoint of another configuration's migration: remove it, or give --restart or --checkpoint",
                path.display()
            );
        }
        Ok(Some(checkpoint))
    }

    /// Written beside, then renamed: a crash leaves the old one or the new.
    fn save(&self, path: &Path) -> anyhow::Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut aside = path.as_os_str().to_owned();
        aside.push(".new");
        std::fs::write(&aside, serde_json::to_vec(self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::rename(&aside, path).with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }

    fn after(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.after
            .as_deref()
            .map(|a| base64::engine::general_purpose::STANDARD.decode(a))
            .transpose()
            .context("the checkpoint's position is not base64")
    }
}

/// Per-bucket totals of one side.
type Totals = BTreeMap<String, (u64, u64)>;

fn add(totals: &mut Totals, summaries: &[BucketSummary]) {
    for s in summaries {
        let t = totals.entry(s.bucket.clone()).or_default();
        t.0 += s.records;
        t.1 = t.1.wrapping_add(s.checksum);
    }
}

/// Both sides, compared page by page: (from, to, differing keys).
async fn compare(store: &Store, batch: u32) -> Result<(Totals, Totals, Vec<Vec<u8>>), Error> {
    let (mut from, mut to, mut differing) = (Totals::new(), Totals::new(), Vec::new());
    let mut after: Option<Vec<u8>> = None;
    loop {
        let page = store.migrate_verify(after.as_deref(), batch).await?;
        add(&mut from, &page.from);
        add(&mut to, &page.to);
        differing.extend(page.differing);
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok((from, to, differing)),
        }
    }
}

fn bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {prefix} [{bar:30}] {pos}/{len} records, {msg} ({per_sec}, ETA {eta})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Runs the migration; its summary goes to standard output as JSON.
pub async fn run(
    store: &Store,
    config: &str,
    args: MigrateArgs,
    default_checkpoint: PathBuf,
) -> anyhow::Result<std::process::ExitCode> {
    run_from(store, config, args, default_checkpoint, 0).await
}

/// How often a copy starts again because `from`'s feed was compacted
/// under it, before the migration gives up.
const MAX_RESTARTS: u32 = 3;

async fn run_from(
    store: &Store,
    config: &str,
    args: MigrateArgs,
    default_checkpoint: PathBuf,
    restarts: u32,
) -> anyhow::Result<std::process::ExitCode> {
    use sha2::Digest as _;
    let identity: String = sha2::Sha256::digest(config.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let path = args.checkpoint.clone().unwrap_or(default_checkpoint);
    let resumed = match args.restart {
        true => None,
        false => Checkpoint::load(&path, &identity)?,
    };
    let started = Instant::now();
    let mut checkpoint = match resumed {
        Some(checkpoint) => {
            eprintln!(
                "kvstash: resuming the migration from {} ({}: {} records copied)",
                path.display(),
                checkpoint.phase,
                checkpoint.records
            );
            checkpoint
        }
        None => Checkpoint {
            config: identity,
            since: store.current_version().await?,
            phase: if args.verify_only { "verify" } else { "copy" }.into(),
            after: None,
            records: 0,
            bytes: 0,
        },
    };
    checkpoint.save(&path)?;

    if checkpoint.phase == "copy" {
        // What there is, for the bar (one read of both sides).
        let (from, _, _) = compare(store, args.batch).await?;
        let total: u64 = from.values().map(|t| t.0).sum();
        let bar = bar(total);
        bar.set_prefix("copying");
        bar.set_position(checkpoint.records.min(total));
        let copy_started = Instant::now();
        let copied_before = checkpoint.records;
        loop {
            let after = checkpoint.after()?;
            let page = store.migrate_copy(after.as_deref(), args.batch).await?;
            checkpoint.records += u64::from(page.records);
            checkpoint.bytes += page.bytes;
            checkpoint.after = page
                .next
                .as_ref()
                .map(|k| base64::engine::general_purpose::STANDARD.encode(k));
            if page.next.is_none() {
                checkpoint.phase = "catch-up".into();
            }
            checkpoint.save(&path)?;
            bar.set_length(total.max(checkpoint.records));
            bar.set_position(checkpoint.records);
            bar.set_message(human_bytes(checkpoint.bytes));
            if page.next.is_none() {
                break;
            }
            if args.rate > 0 {
                // Throttle: no faster than --rate records per second.
                let due = Duration::from_secs_f64(
                    (checkpoint.records - copied_before) as f64 / args.rate as f64,
                );
                if let Some(wait) = due.checked_sub(copy_started.elapsed()) {
                    tokio::time::sleep(wait).await;
                }
            }
        }
        bar.finish_and_clear();
        eprintln!(
            "kvstash: copied {} records ({}) in {:.1} s",
            checkpoint.records,
            human_bytes(checkpoint.bytes),
            copy_started.elapsed().as_secs_f64()
        );
    }

    let mut attempts = 0;
    loop {
        // Catch up from the feed, from where the last catch-up got to.
        match catch_up(store, &mut checkpoint, &path).await {
            Ok(()) => {}
            Err(Error::Compacted { oldest }) => {
                if restarts >= MAX_RESTARTS {
                    anyhow::bail!(
                        "`from`'s change feed was compacted under the copy {} times (it keeps too few commits for a copy this long): raise `from`'s `retention`, or give a higher --rate",
                        restarts + 1
                    );
                }
                eprintln!(
                    "kvstash: `from`'s change feed no longer reaches back to version {} (it starts at {oldest}): copying again",
                    checkpoint.since
                );
                checkpoint.phase = "copy".into();
                checkpoint.after = None;
                checkpoint.records = 0;
                checkpoint.bytes = 0;
                checkpoint.since = store.current_version().await?;
                checkpoint.save(&path)?;
                let args = MigrateArgs {
                    restart: false,
                    verify_only: false,
                    ..args
                };
                return Box::pin(run_from(store, config, args, path, restarts + 1)).await;
            }
            Err(e) => return Err(e.into()),
        }
        checkpoint.phase = "verify".into();
        checkpoint.save(&path)?;
        let (from, to, differing) = compare(store, args.batch).await?;
        if differing.is_empty() && from == to {
            let buckets: Vec<serde_json::Value> = from
                .iter()
                .map(|(bucket, (records, checksum))| {
                    json!({"bucket": bucket, "records": records, "checksum": format!("{checksum:016x}")})
                })
                .collect();
            println!(
                "{}",
                json!({
                    "verified": true,
                    "copied": checkpoint.records,
                    "bytes": checkpoint.bytes,
                    "version": checkpoint.since,
                    "seconds": started.elapsed().as_secs_f64(),
                    "buckets": buckets,
                })
            );
            let _ = std::fs::remove_file(&path);
            eprintln!(
                "kvstash: verified: `to` holds what `from` holds. Switch the configuration to `to` alone."
            );
            return Ok(std::process::ExitCode::SUCCESS);
        }
        attempts += 1;
        if attempts >= 3 {
            let show: Vec<String> = differing
                .iter()
                .take(10)
                .map(|k| String::from_utf8_lossy(k).escape_debug().to_string())
                .collect();
            let sides: Vec<serde_json::Value> = from
                .keys()
                .chain(to.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|bucket| {
                    let (f, t) = (
                        from.get(bucket).copied().unwrap_or_default(),
                        to.get(bucket).copied().unwrap_or_default(),
                    );
                    json!({"bucket": bucket, "from": f.0, "to": t.0, "same": f == t})
                })
                .collect();
            println!(
                "{}",
                json!({"verified": false, "differing": differing.len(), "buckets": sides})
            );
            anyhow::bail!(
                "`to` still differs from `from` after {attempts} verifications ({} records, e.g. {}): writes may be reaching `from` without the migrating layer; run `kvstash migrate` again",
                differing.len(),
                show.join(", ")
            );
        }
        // Writes landed between the two sides' reads: catch up and look again.
        checkpoint.phase = "catch-up".into();
    }
}

/// Copies what `from`'s feed names after the checkpoint's version, until
/// nothing is newer.
async fn catch_up(store: &Store, checkpoint: &mut Checkpoint, path: &Path) -> Result<(), Error> {
    loop {
        let (at, _) = store.migrate_catch_up(checkpoint.since, 1000).await?;
        if at == checkpoint.since {
            return Ok(());
        }
        checkpoint.since = at;
        if checkpoint.save(path).is_err() {
            // A checkpoint that lags only costs copying again on a resume.
        }
    }
}
