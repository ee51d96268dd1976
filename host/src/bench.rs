//! The benchmark workload, shared by `kvstash bench` (the built-in part) and
//! `kvstash-bench` (which adds redb, SQLite, the bare boundary floor and the
//! Python peers).
//!
//! Workload (from the device-connector seed): keys `sensor_000123`, values
//! ~100-byte JSON objects. A [`Subject`] is first loaded with N keys in
//! batches (timed as `load`, but not one of the measured operations), then
//! measured on that store of N keys:
//!
//! - `put`: sequential puts of new keys after the N loaded ones;
//! - `get`: random gets of loaded keys;
//! - `overwrite`: puts over random loaded keys;
//! - `list`: pages of 100 keys in key order from random starts (ops = pages);
//! - `txn`: atomic transactions writing 4 random loaded keys;
//! - `open`: closing and opening the existing store (persistent subjects);
//! - disk size and, per process, peak RSS.
//!
//! Durable subjects (one fsync per acknowledged write) run fewer operations
//! per measurement than in-memory ones; rates are ops per second either way.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::{Bucket, Store, StoreOptions, Value};

/// Errors of a benchmark subject (each system has its own error type).
pub type BenchError = Box<dyn std::error::Error + Send + Sync>;

/// The `i`-th key: `sensor_000123`.
pub fn key(i: usize) -> String {
    format!("sensor_{i:06}")
}

/// The `i`-th value: a ~60–100-byte JSON object like the seed's aliases.
pub fn value(i: usize) -> String {
    format!(
        r#"{{"alias":[1,5,{}],"name":"backyard shed sensor","n":{i}}}"#,
        i % 256
    )
}

/// A fixed pseudo-random sequence of indices below `n` (xorshift; the same
/// every run, so every system gets the same keys).
pub fn random_indices(n: usize, count: usize, seed: u64) -> Vec<usize> {
    let mut state = seed | 1;
    let n = n.max(1) as u64;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            usize::try_from(state % n).unwrap_or(0)
        })
        .collect()
}

/// The median of some measurements (NaN for none).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Operations per second of `ops` operations that took `elapsed`.
pub fn rate(ops: usize, elapsed: Duration) -> f64 {
    ops as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// A system under measurement. Every method is one operation as a user of
/// that system would write it.
#[async_trait::async_trait]
pub trait Subject: Send {
    /// Whether each acknowledged write is on disk (fsynced).
    fn durable(&self) -> bool;
    /// Writes `items` in as few batches as the system allows (unmeasured).
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError>;
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError>;
    /// Whether `key` was found (its value read).
    async fn get(&mut self, key: &str) -> Result<bool, BenchError>;
    /// The number of items of the page of at most `limit` keys `>= start`;
    /// `None` if the system cannot list.
    async fn list(&mut self, start: &str, limit: usize) -> Result<Option<usize>, BenchError>;
    /// Writes all `items` atomically; `Ok(false)` if the system has no
    /// transactions.
    async fn txn(&mut self, items: &[(String, String)]) -> Result<bool, BenchError>;
    /// Closes and opens the store again; its duration, or `None` if the
    /// system keeps nothing to reopen.
    async fn reopen(&mut self) -> Result<Option<Duration>, BenchError>;
    /// Bytes the store takes on disk, if it is on disk.
    fn disk_bytes(&self) -> Option<u64>;
}

/// How many operations each measurement runs.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// Puts, overwrites and transactions on a durable subject.
    pub durable_writes: usize,
    /// Puts, overwrites and transactions on an in-memory subject, and gets.
    pub ops: usize,
    /// Pages listed.
    pub pages: usize,
}

impl Default for Sample {
    fn default() -> Self {
        Self {
            durable_writes: 500,
            ops: 20_000,
            pages: 200,
        }
    }
}

/// What one run of the workload measured (rates in ops/s; `None`: the system
/// cannot do it).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Measured {
    pub load_s: f64,
    pub put: Option<f64>,
    pub get: Option<f64>,
    pub overwrite: Option<f64>,
    pub list: Option<f64>,
    pub txn: Option<f64>,
    pub open_ms: Option<f64>,
    pub disk_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// What the table should say about these figures (failures, caveats).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// Reads one rate out of a [`Measured`] (tables and plots list these).
pub type Figure = fn(&Measured) -> Option<f64>;

/// Runs the workload on `subject` holding `n` keys.
pub async fn measure(
    subject: &mut dyn Subject,
    n: usize,
    sample: Sample,
) -> Result<Measured, BenchError> {
    let mut out = Measured::default();
    let start = Instant::now();
    // In chunks, so the harness holds 1000 items at a time, not N.
    for first in (0..n).step_by(1000) {
        let items: Vec<(String, String)> = (first..n.min(first + 1000))
            .map(|i| (key(i), value(i)))
            .collect();
        subject.load(&items).await?;
    }
    out.load_s = start.elapsed().as_secs_f64();

    let writes = if subject.durable() {
        sample.durable_writes
    } else {
        sample.ops
    };
    let start = Instant::now();
    for i in n..n + writes {
        subject.put(&key(i), &value(i)).await?;
    }
    out.put = Some(rate(writes, start.elapsed()));

    let picks = random_indices(n, sample.ops, 0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    for &i in &picks {
        if !subject.get(&key(i)).await? {
            return Err(format!("get: {} is missing", key(i)).into());
        }
    }
    out.get = Some(rate(picks.len(), start.elapsed()));

    let picks = random_indices(n, writes, 0x2545_F491_4F6C_DD1D);
    // Every write stores a value the key never had (SQLite skips writing
    // a row rewritten with identical bytes, so no fsync).
    let start = Instant::now();
    for (j, &i) in picks.iter().enumerate() {
        subject.put(&key(i), &value(i + n + j)).await?;
    }
    out.overwrite = Some(rate(picks.len(), start.elapsed()));

    let picks = random_indices(n, sample.pages, 0x5851_F42D_4C95_7F2D);
    let start = Instant::now();
    let mut listed = true;
    for &i in &picks {
        match subject.list(&key(i), 100).await? {
            Some(0) => return Err(format!("list from {} found nothing", key(i)).into()),
            Some(_) => {}
            None => {
                listed = false;
                break;
            }
        }
    }
    out.list = listed.then(|| rate(picks.len(), start.elapsed()));

    let picks = random_indices(n, writes * 4, 0x1405_7B7E_F767_814F);
    let start = Instant::now();
    let mut supported = true;
    for (g, group) in picks.chunks_exact(4).enumerate() {
        let items: Vec<(String, String)> = group
            .iter()
            .map(|&i| (key(i), value(i + 2 * n + g)))
            .collect();
        supported = subject.txn(&items).await?;
        if !supported {
            break;
        }
    }
    out.txn = supported.then(|| rate(picks.len() / 4, start.elapsed()));

    out.open_ms = subject
        .reopen()
        .await?
        .map(|elapsed| elapsed.as_secs_f64() * 1e3);
    if out.open_ms.is_some() && !subject.get(&key(0)).await? {
        return Err("after reopening, a loaded key is missing".into());
    }
    out.disk_bytes = subject.disk_bytes();
    out.peak_rss_bytes = peak_rss_bytes();
    Ok(out)
}

/// This process's peak resident set (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The total size of the files under `path` (a file or a directory).
pub fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::metadata(path) else {
        return 0;
    };
    if meta.is_dir() {
        std::fs::read_dir(path)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| disk_usage(&entry.path()))
            .sum()
    } else {
        meta.len()
    }
}

/// A `HashMap`: the in-process ceiling (nothing durable, nothing ordered:
/// a list page sorts the keys it needs).
#[derive(Default)]
pub struct HashMapSubject {
    map: HashMap<String, String>,
}

#[async_trait::async_trait]
impl Subject for HashMapSubject {
    fn durable(&self) -> bool {
        false
    }
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        self.map.extend(items.iter().cloned());
        Ok(())
    }
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError> {
        self.map.insert(key.to_string(), value.to_string());
        Ok(())
    }
    async fn get(&mut self, key: &str) -> Result<bool, BenchError> {
        Ok(std::hint::black_box(self.map.get(key)).is_some())
    }
    async fn list(&mut self, start: &str, limit: usize) -> Result<Option<usize>, BenchError> {
        // What a user of a HashMap does for an ordered page: scan and sort.
        let mut page: Vec<&String> = self.map.keys().filter(|k| k.as_str() >= start).collect();
        if page.len() > limit {
            page.select_nth_unstable(limit);
            page.truncate(limit);
        }
        page.sort_unstable();
        Ok(Some(std::hint::black_box(page).len()))
    }
    async fn txn(&mut self, items: &[(String, String)]) -> Result<bool, BenchError> {
        self.map.extend(items.iter().cloned());
        Ok(true)
    }
    async fn reopen(&mut self) -> Result<Option<Duration>, BenchError> {
        Ok(None)
    }
    fn disk_bytes(&self) -> Option<u64> {
        None
    }
}

/// kvstash through its component, on the memory or the file backend.
pub struct KvstashSubject {
    config: String,
    path: Option<PathBuf>,
    /// The open store and its `sensors` bucket (`None` while reopening).
    open: Option<(Store, Bucket)>,
    /// The process holding the file, for a store used through it.
    holder: Option<std::process::Child>,
}

impl Drop for KvstashSubject {
    fn drop(&mut self) {
        if let Some(mut holder) = self.holder.take() {
            let _ = holder.kill();
            let _ = holder.wait();
        }
    }
}

impl KvstashSubject {
    /// A store on the memory backend.
    pub async fn memory() -> Result<Self, BenchError> {
        Self::open(r#"{"type":"memory"}"#.to_string(), None).await
    }

    /// A store in the redb file `path` (durable: one fsync per commit,
    /// shared by concurrent commits).
    pub async fn file(path: &Path) -> Result<Self, BenchError> {
        let config = serde_json::json!({"type": "file", "path": path}).to_string();
        Self::open(config, Some(path.to_path_buf())).await
    }

    /// A store in the redb file `path` whose page cache is capped at
    /// `cache_mb` MiB (`"cache_mb"`): what a small device configures.
    pub async fn file_capped(path: &Path, cache_mb: u32) -> Result<Self, BenchError> {
        let config =
            serde_json::json!({"type": "file", "path": path, "cache_mb": cache_mb}).to_string();
        Self::open(config, Some(path.to_path_buf())).await
    }

    /// The same file store, held by another process (`kvstash watch`, this
    /// program) and used through its socket: what a second process pays.
    pub async fn file_through_holder(path: &Path) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|e| format!("finding this program: {e}"))?;
        let holder = std::process::Command::new(exe)
            .arg("--config")
            .arg(serde_json::json!({"type": "file", "path": path}).to_string())
            .args(["watch", "--since", "18446744073709551615"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("starting the holder: {e}"))?;
        let mut subject = Self {
            config: String::new(),
            path: None,
            open: None,
            holder: Some(holder),
        };
        let socket = {
            let mut name = path.as_os_str().to_owned();
            name.push(".sock");
            PathBuf::from(name)
        };
        let start = Instant::now();
        while !socket.exists() {
            if start.elapsed() > Duration::from_secs(30) {
                return Err("the holder did not serve the store within 30 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let config = serde_json::json!({"type": "file", "path": path}).to_string();
        let store = Store::open_with(&config, bench_options()).await?;
        let bucket = store.bucket("sensors");
        subject.config = config;
        subject.path = Some(path.to_path_buf());
        subject.open = Some((store, bucket));
        Ok(subject)
    }

    async fn open(config: String, path: Option<PathBuf>) -> Result<Self, BenchError> {
        let store = Store::open_with(&config, bench_options()).await?;
        let bucket = store.bucket("sensors");
        Ok(Self {
            config,
            path,
            open: Some((store, bucket)),
            holder: None,
        })
    }

    fn bucket(&self) -> Result<&Bucket, BenchError> {
        Ok(&self.open.as_ref().ok_or("the store is closed")?.1)
    }
}

/// Store options for measuring: no background sweeper competing.
fn bench_options() -> StoreOptions {
    StoreOptions {
        sweep_interval: None,
        ..StoreOptions::default()
    }
}

#[async_trait::async_trait]
impl Subject for KvstashSubject {
    fn durable(&self) -> bool {
        self.path.is_some()
    }
    async fn load(&mut self, items: &[(String, String)]) -> Result<(), BenchError> {
        for chunk in items.chunks(500) {
            self.bucket()?.set_many(chunk).await?;
        }
        Ok(())
    }
    async fn put(&mut self, key: &str, value: &str) -> Result<(), BenchError> {
        self.bucket()?.set_json_text(key, value).await?;
        Ok(())
    }
    async fn get(&mut self, key: &str) -> Result<bool, BenchError> {
        Ok(self.bucket()?.get(key).await?.is_some())
    }
    async fn list(&mut self, start: &str, limit: usize) -> Result<Option<usize>, BenchError> {
        let options = crate::ListOptions {
            start: Some(start.to_string()),
            limit: u32::try_from(limit).ok(),
            ..crate::ListOptions::default()
        };
        Ok(Some(self.bucket()?.list(&options).await?.items.len()))
    }
    async fn txn(&mut self, items: &[(String, String)]) -> Result<bool, BenchError> {
        let (store, _) = self.open.as_ref().ok_or("the store is closed")?;
        let mut txn = store.transaction();
        for (key, value) in items {
            txn = txn.set("sensors", key, Value::Json(value.clone()));
        }
        txn.commit().await?;
        Ok(true)
    }
    async fn reopen(&mut self) -> Result<Option<Duration>, BenchError> {
        if self.path.is_none() {
            return Ok(None);
        }
        // Dropping the last handles closes the file (redb allows one opener).
        drop(self.open.take());
        let start = Instant::now();
        let store = Store::open_with(&self.config, bench_options()).await?;
        let elapsed = start.elapsed();
        let bucket = store.bucket("sensors");
        self.open = Some((store, bucket));
        Ok(Some(elapsed))
    }
    fn disk_bytes(&self) -> Option<u64> {
        // The redb file and its commit log beside it: together the store.
        let path = self.path.as_deref()?;
        let mut log = path.as_os_str().to_owned();
        log.push("-wal");
        Some(disk_usage(path) + disk_usage(Path::new(&log)))
    }
}

/// The machine's floor for durable writes: the mean latency of a 100-byte
/// write into zero-filled space of a file + `fdatasync`, over `rounds`.
pub fn raw_fsync_latency(dir: &Path, rounds: usize) -> Result<Duration, BenchError> {
    use std::os::unix::fs::FileExt as _;
    let file = std::fs::File::create(dir.join("fsync.bin"))?;
    // Zero-filled and synced first, so the writes below change no metadata:
    // the cheapest sync there is, the floor of any durable commit.
    file.write_all_at(&vec![0u8; rounds.max(1) * 100], 0)?;
    file.sync_all()?;
    let start = Instant::now();
    for i in 0..rounds {
        file.write_all_at(&[7u8; 100], i as u64 * 100)?;
        file.sync_data()?;
    }
    Ok(start.elapsed() / u32::try_from(rounds.max(1)).unwrap_or(1))
}

/// Durable puts into a new file store with `writers` concurrent writers,
/// each awaiting its own acknowledgement.
pub async fn concurrent_puts(
    dir: &Path,
    writers: usize,
    per_writer: usize,
) -> Result<Puts, BenchError> {
    let path = dir.join(format!("writers-{writers}.redb"));
    let config = serde_json::json!({"type": "file", "path": path}).to_string();
    puts_into(&config, writers, per_writer).await
}

/// What a run of [`concurrent_puts`] came to.
#[derive(Clone, Copy, Debug)]
pub struct Puts {
    pub per_second: f64,
    /// The whole process's CPU time (every thread: the writers', the
    /// committer's, the checkpoints') per put; `None` where unknown.
    pub cpu_us_per_put: Option<f64>,
}

/// Puts into a new store of `config` with `writers` concurrent writers.
async fn puts_into(config: &str, writers: usize, per_writer: usize) -> Result<Puts, BenchError> {
    let options = StoreOptions {
        max_instances: writers.max(1),
        ..bench_options()
    };
    let store = Store::open_with(config, options).await?;
    let puts = |from: usize, count: usize| {
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let bucket = store.bucket("sensors");
                tokio::spawn(async move {
                    for i in 0..count {
                        let n = from + w * count + i;
                        bucket.set_json_text(&key(n), &value(n)).await?;
                    }
                    Ok::<_, crate::Error>(())
                })
            })
            .collect::<Vec<_>>();
        async move {
            for task in tasks {
                task.await??;
            }
            Ok::<_, BenchError>(())
        }
    };
    // Unmeasured: the store makes a guest instance per concurrent writer
    // on first use, which is not what this measures.
    puts(0, WARM_UP).await?;
    let cpu = process_cpu_seconds();
    let start = Instant::now();
    puts(writers * WARM_UP, per_writer).await?;
    let elapsed = start.elapsed();
    let total = writers * per_writer;
    let cpu_us_per_put = cpu
        .zip(process_cpu_seconds())
        .map(|(before, after)| (after - before) * 1e6 / total as f64);
    Ok(Puts {
        per_second: rate(total, elapsed),
        cpu_us_per_put,
    })
}

/// CPU time this process has used, all its threads (Linux
/// `/proc/self/stat`, in the kernel's 10 ms ticks); `None` elsewhere.
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name, which is in parentheses and may
    // hold spaces: state is the first, utime and stime the 12th and 13th.
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
    // USER_HZ is 100 on every Linux ABI.
    Some((ticks(11)? + ticks(12)?) as f64 / 100.0)
}

/// Puts per writer before [`concurrent_puts`] starts its clock.
const WARM_UP: usize = 5;

/// Durable writes: raw fsync latency and group-commit throughput.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct DurableWrites {
    pub fsync_latency_ms: f64,
    /// Writers → puts per second.
    pub writers: BTreeMap<usize, f64>,
    /// Writers → the process's CPU time per put, in µs (every thread).
    #[serde(default)]
    pub cpu_us_per_put: BTreeMap<usize, f64>,
    /// The machine's cores (`available_parallelism`): with
    /// [`Self::cpu_us_per_put`], the most puts per second its CPU allows.
    #[serde(default)]
    pub cores: usize,
    /// The same puts by [`CEILING_WRITERS`] writers into a memory store:
    /// the machine's CPU ceiling for them, with nothing to wait for.
    #[serde(default)]
    pub memory_ceiling: f64,
}

impl DurableWrites {
    /// Puts per second the CPU allows `writers` durable writers at their
    /// measured CPU time per put, if every core were busy.
    pub fn cpu_bound(&self, writers: usize) -> Option<f64> {
        let us = self.cpu_us_per_put.get(&writers)?;
        (*us > 0.0).then(|| self.cores as f64 * 1e6 / us)
    }
}

/// The writers of [`DurableWrites::memory_ceiling`].
pub const CEILING_WRITERS: usize = 64;

/// Writers and puts per writer of [`durable_writes`]. Sustained: the 64
/// writers' 76,800 puts (~8 MiB of log) pass two checkpoints, as a
/// steady load does; a lone writer checkpoints every ~38,000 puts (~5 s),
/// ~1% of its time, so its shorter run is fair. Each run lasts 0.2 s or
/// more, 20 of the 10 ms ticks its CPU time is counted in.
const WRITER_PLAN: [(usize, usize); 3] = [(1, 2000), (8, 1000), (64, 1200)];

/// Measures [`DurableWrites`] `rounds` times (interleaved) and keeps medians.
pub async fn durable_writes(dir: &Path, rounds: usize) -> Result<DurableWrites, BenchError> {
    let mut fsyncs = Vec::new();
    let mut ceilings = Vec::new();
    let mut rates: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut cpu: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds.max(1) {
        let round_dir = dir.join(format!("durable-{round}"));
        std::fs::create_dir_all(&round_dir)?;
        fsyncs.push(raw_fsync_latency(&round_dir, 200)?.as_secs_f64() * 1e3);
        for (writers, per_writer) in WRITER_PLAN {
            let puts = concurrent_puts(&round_dir, writers, per_writer).await?;
            rates.entry(writers).or_default().push(puts.per_second);
            if let Some(us) = puts.cpu_us_per_put {
                cpu.entry(writers).or_default().push(us);
            }
        }
        let memory = r#"{"type":"memory"}"#;
        ceilings.push(puts_into(memory, CEILING_WRITERS, 200).await?.per_second);
        std::fs::remove_dir_all(&round_dir)?;
    }
    Ok(DurableWrites {
        fsync_latency_ms: median(fsyncs),
        writers: rates.into_iter().map(|(w, r)| (w, median(r))).collect(),
        cpu_us_per_put: cpu.into_iter().map(|(w, c)| (w, median(c))).collect(),
        cores: std::thread::available_parallelism().map_or(1, usize::from),
        memory_ceiling: median(ceilings),
    })
}

/// The median of each figure over several runs of one subject and size.
pub fn median_of(runs: &[Measured]) -> Measured {
    let pick = |f: fn(&Measured) -> Option<f64>| {
        let values: Vec<f64> = runs.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| median(values))
    };
    let pick_u64 = |f: fn(&Measured) -> Option<u64>| {
        let mut values: Vec<u64> = runs.iter().filter_map(f).collect();
        values.sort_unstable();
        values.get(values.len() / 2).copied()
    };
    Measured {
        load_s: median(runs.iter().map(|m| m.load_s).collect()),
        put: pick(|m| m.put),
        get: pick(|m| m.get),
        overwrite: pick(|m| m.overwrite),
        list: pick(|m| m.list),
        txn: pick(|m| m.txn),
        open_ms: pick(|m| m.open_ms),
        disk_bytes: pick_u64(|m| m.disk_bytes),
        peak_rss_bytes: pick_u64(|m| m.peak_rss_bytes),
        notes: runs
            .iter()
            .flat_map(|m| m.notes.clone())
            .fold(Vec::new(), |mut all, note| {
                if !all.contains(&note) {
                    all.push(note);
                }
                all
            }),
    }
}

/// The subjects `kvstash bench` has built in, by name.
pub const BUILT_IN: [&str; 3] = ["hashmap", "kvstash-memory", "kvstash-file"];

/// A built-in subject by name (files go under `dir`); `None` for an unknown name.
pub async fn built_in(name: &str, dir: &Path) -> Result<Option<Box<dyn Subject>>, BenchError> {
    Ok(match name {
        "hashmap" => Some(Box::new(HashMapSubject::default())),
        "kvstash-memory" => Some(Box::new(KvstashSubject::memory().await?)),
        "kvstash-file" => Some(Box::new(
            KvstashSubject::file(&dir.join("kvstash.redb")).await?,
        )),
        // Not in `BUILT_IN`: `--one` only (kvstash-bench runs it at 1M keys
        // for its peak RSS).
        "kvstash-file-32m" => Some(Box::new(
            KvstashSubject::file_capped(&dir.join("kvstash.redb"), 32).await?,
        )),
        // Not in `BUILT_IN`: `--one` only, for docs/design.md's comparison.
        "kvstash-file-shared" => Some(Box::new(
            KvstashSubject::file_through_holder(&dir.join("kvstash.redb")).await?,
        )),
        _ => None,
    })
}

/// What one subject at one size came to.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub system: String,
    pub n: usize,
    /// The measurements, or why there are none (skipped, failed).
    pub result: Result<Measured, String>,
}

/// Runs `command` (a child process that prints one [`Measured`] as a JSON
/// line and exits), so each measurement has its own peak RSS. A child still
/// running after `budget` is killed and reported as skipped.
pub fn run_child(mut command: std::process::Command, budget: Duration) -> Result<Measured, String> {
    let mut child = command
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > budget => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("skipped: over {} s", budget.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("waiting: {e}")),
        }
    }
    let output = child.wait_with_output().map_err(|e| e.to_string())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    match stdout.lines().rev().find(|l| l.starts_with('{')) {
        Some(line) if output.status.success() => {
            serde_json::from_str(line).map_err(|e| format!("unreadable result: {e}"))
        }
        _ => {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = stderr.lines().rev().find(|l| !l.trim().is_empty());
            Err(format!("failed: {}", why.unwrap_or("no output")))
        }
    }
}

/// Runs `rounds` child processes (see [`run_child`]), the command for round
/// `r` given by `command(r)` with its scratch directory, removed afterwards;
/// the medians, or the first round's failure.
pub fn run_rounds(
    rounds: usize,
    budget: Duration,
    mut command: impl FnMut(usize, &Path) -> std::process::Command,
    scratch: impl Fn(usize) -> PathBuf,
) -> Result<Measured, String> {
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        let dir = scratch(round);
        let result = run_child(command(round, &dir), budget);
        let _ = std::fs::remove_dir_all(&dir);
        runs.push(result?);
    }
    Ok(median_of(&runs))
}

/// The absolute figures as a Markdown table, one row per system and size.
pub fn render_table(outcomes: &[Outcome]) -> String {
    let mut out = String::from(
        "| system | N | put/s | get/s | overwrite/s | list pages/s | 4-key txn/s | open | disk | peak RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for o in outcomes {
        let row = match &o.result {
            Ok(m) => {
                let r = |v: Option<f64>| v.map_or_else(|| "n/a".to_string(), human_rate);
                format!(
                    "{} | {} | {} | {} | {} | {}",
                    r(m.put),
                    r(m.get),
                    r(m.overwrite),
                    r(m.list),
                    r(m.txn),
                    m.open_ms
                        .map_or_else(|| "n/a".to_string(), |ms| format!("{ms:.1} ms")),
                ) + &format!(
                    " | {} | {}",
                    m.disk_bytes.map_or_else(|| "n/a".to_string(), human_bytes),
                    m.peak_rss_bytes
                        .map_or_else(|| "n/a".to_string(), human_bytes),
                )
            }
            Err(why) => format!("{why} | | | | | | | "),
        };
        out.push_str(&format!("| {} | {} | {row} |\n", o.system, o.n));
    }
    out
}

/// Formats a rate for a table: `12.3k`, `1.20M`, `850`.
pub fn human_rate(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else if rate >= 1e4 {
        format!("{:.0}k", rate / 1e3)
    } else if rate >= 1e3 {
        format!("{:.1}k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

/// Formats a byte count: `1.2 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    let b = bytes as f64;
    if b >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", b / (1024.0 * 1024.0 * 1024.0))
    } else if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / (1024.0 * 1024.0))
    } else {
        format!("{:.0} KiB", b / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_workload_runs_on_every_built_in_subject() {
        let dir = tempfile::tempdir().unwrap();
        let sample = Sample {
            durable_writes: 5,
            ops: 50,
            pages: 3,
        };
        let mut subjects: Vec<Box<dyn Subject>> = vec![
            Box::new(HashMapSubject::default()),
            Box::new(KvstashSubject::memory().await.unwrap()),
            Box::new(
                KvstashSubject::file(&dir.path().join("b.redb"))
                    .await
                    .unwrap(),
            ),
        ];
        for subject in &mut subjects {
            let m = measure(subject.as_mut(), 1200, sample).await.unwrap();
            for rate in [m.put, m.get, m.overwrite, m.list, m.txn] {
                assert!(rate.is_some_and(|r| r > 0.0), "{m:?}");
            }
            assert_eq!(m.open_ms.is_some(), subject.durable(), "{m:?}");
            assert_eq!(m.disk_bytes.is_some(), subject.durable(), "{m:?}");
        }
    }

    #[tokio::test]
    async fn a_page_is_100_keys_in_order_from_the_start_key() {
        let mut subject = KvstashSubject::memory().await.unwrap();
        let items: Vec<_> = (0..250).map(|i| (key(i), value(i))).collect();
        subject.load(&items).await.unwrap();
        assert_eq!(subject.list(&key(0), 100).await.unwrap(), Some(100));
        assert_eq!(subject.list(&key(200), 100).await.unwrap(), Some(50));
        let mut map = HashMapSubject::default();
        map.load(&items).await.unwrap();
        assert_eq!(map.list(&key(200), 100).await.unwrap(), Some(50));
    }

    #[test]
    fn a_child_over_budget_is_skipped_and_a_failing_one_says_why() {
        let mut slow = std::process::Command::new("sleep");
        slow.arg("5");
        let started = Instant::now();
        let skipped = run_child(slow, Duration::from_millis(200)).unwrap_err();
        assert!(skipped.starts_with("skipped: over"), "{skipped}");
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "the child was killed"
        );
        let mut failing = std::process::Command::new("sh");
        failing.args(["-c", "echo 'no such table' >&2; exit 2"]);
        assert_eq!(
            run_child(failing, Duration::from_secs(5)).unwrap_err(),
            "failed: no such table"
        );
        let mut good = std::process::Command::new("sh");
        good.args(["-c", r#"echo noise; echo '{"load_s":1.5,"get":10.0}'"#]);
        let measured = run_child(good, Duration::from_secs(5)).unwrap();
        assert_eq!(
            (measured.load_s, measured.get, measured.put),
            (1.5, Some(10.0), None)
        );
    }

    #[test]
    fn random_indices_stay_in_range_and_repeat() {
        let a = random_indices(1000, 500, 7);
        assert!(a.iter().all(|&i| i < 1000));
        assert_eq!(a, random_indices(1000, 500, 7));
        assert!(a.iter().collect::<std::collections::BTreeSet<_>>().len() > 300);
    }
}
