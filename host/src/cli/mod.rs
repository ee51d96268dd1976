//! The `kvstash` command line.
//!
//! Which store it opens, first match wins:
//! 0. `--server URL` / `KVSTASH_SERVER`: the store a `kvstash serve` there
//!    serves (token from `KVSTASH_TOKEN`);
//! 1. `--config JSON` (or `--config FILE` holding JSON);
//! 2. the `KVSTASH_STORE` environment variable (JSON);
//! 3. the file backend in `--data DIR` / `KVSTASH_DATA`;
//! 4. the file backend in `$XDG_DATA_HOME/kvstash`, else `~/.local/share/kvstash`.
//!
//! Errors print one line, `kvstash: error: …`, and exit with status 1;
//! usage errors exit with 2; a conditional write or transaction whose
//! condition did not hold exits with 3 (nothing was written: re-read, retry).
//!
//! # Layout
//! - this file: the options, `main`, and the commands on an open store
//! - `app` — `run`, `compose`, `component`: other people's Wasm apps
//!   (feature `apps`)
//! - `txn` — a transaction read as JSON
//! - `transfer` — export and import records (JSON Lines)
//! - `bench` — `kvstash bench`

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::api::{Bucket, Error, Item, ListOptions, Store, Value, WriteOptions};

#[cfg(feature = "apps")]
mod app;
mod bench;
mod migrate;
#[cfg(feature = "shell")]
mod shell;
pub(crate) mod transfer;
mod txn;

use bench::bench;
use transfer::read_records;
#[cfg(feature = "serve")]
pub(crate) use txn::MAX_SAFE_INTEGER;
pub(crate) use txn::parse_transaction;

/// File name of the default store inside the data directory.
pub const DEFAULT_FILE: &str = "kvstash.redb";

#[derive(Debug, Parser)]
#[command(
    name = "kvstash",
    version,
    about = "A key/value and JSON-document store in a WebAssembly component"
)]
pub struct Cli {
    /// Store configuration: JSON text, or a file holding it.
    #[arg(long, global = true, env = "KVSTASH_STORE", value_name = "JSON|FILE")]
    config: Option<String>,
    /// Directory of the default file store.
    #[arg(long, global = true, env = "KVSTASH_DATA", value_name = "DIR")]
    data: Option<PathBuf>,
    /// Work on the store that `kvstash serve` serves at URL (over
    /// --config): http://127.0.0.1:7700, https://…. Its token, one made
    /// with `kvstash token add --storage write` (`read` for reading
    /// commands), is read from KVSTASH_TOKEN.
    #[cfg(feature = "client")]
    #[arg(long, global = true, env = "KVSTASH_SERVER", value_name = "URL")]
    server: Option<String>,
    /// Bucket to work in.
    #[arg(
        long,
        short,
        global = true,
        env = "KVSTASH_BUCKET",
        default_value = "default"
    )]
    bucket: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the value of KEY (JSON, or the raw bytes).
    Get {
        key: String,
        /// Print {"value","version","expires_at"} instead of the value.
        #[arg(long, conflicts_with = "path")]
        meta: bool,
        /// Print only the JSON at this RFC 6901 pointer inside the value.
        #[arg(long)]
        path: Option<String>,
    },
    /// Store VALUE (JSON text; `-` reads standard input) under KEY.
    Set {
        key: String,
        value: String,
        /// Store VALUE as a JSON string instead of parsing it.
        #[arg(long, conflicts_with = "bytes")]
        string: bool,
        /// Store VALUE as raw bytes.
        #[arg(long)]
        bytes: bool,
        /// Expire the key after this long: 500ms, 30s, 5m, 2h, 7d.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<std::time::Duration>,
        /// Write only if KEY is at this version (else exit 3).
        #[arg(long, conflicts_with = "if_absent")]
        if_version: Option<u64>,
        /// Write only if KEY does not exist (else exit 3).
        #[arg(long)]
        if_absent: bool,
    },
    /// Delete KEY (deleting a missing key is not an error).
    Delete {
        key: String,
        /// Delete only if KEY is at this version (else exit 3).
        #[arg(long)]
        if_version: Option<u64>,
    },
    /// Add DELTA (default 1) to the integer at KEY and print the result.
    Incr {
        key: String,
        #[arg(default_value_t = 1, allow_negative_numbers = true)]
        delta: i64,
    },
    /// Read or change the JSON at a path inside a document.
    Path {
        #[command(subcommand)]
        op: PathCommand,
    },
    /// Apply a transaction read as JSON from FILE (none or `-`: standard
    /// input): {"checks":[…],"mutations":[…]}; prints its version. See
    /// docs/semantics.md.
    Txn { file: Option<PathBuf> },
    /// Print the bucket's items as JSON Lines: {"key","value"|"bytes","version"}.
    List {
        #[arg(long)]
        prefix: Option<String>,
        /// Only keys >= START.
        #[arg(long)]
        start: Option<String>,
        /// Only keys < END.
        #[arg(long)]
        end: Option<String>,
        /// Descending key order.
        #[arg(long)]
        reverse: bool,
        /// Print at most this many items.
        #[arg(long)]
        limit: Option<usize>,
        /// Print keys only, one per line.
        #[arg(long)]
        keys: bool,
    },
    /// Print changes to the bucket as JSON Lines
    /// {"version","key","event":"set"|"delete"|"expire","value"|"bytes"}, as
    /// they happen (or from --since VERSION on), until interrupted.
    Watch {
        /// Only keys starting with this.
        prefix: Option<String>,
        /// Start after this version (resume where a previous watch stopped).
        #[arg(long)]
        since: Option<u64>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<usize>,
    },
    /// The bucket's schema: every write into a typed bucket is validated.
    Schema {
        #[command(subcommand)]
        op: SchemaCommand,
    },
    /// Undo the bucket's last change (needs `history --keep N`); prints the
    /// new version.
    Undo,
    /// Redo the last undone change; prints the new version.
    Redo,
    /// Show {"undoable","redoable"}, after changing how many changes the
    /// bucket keeps for undo.
    History {
        /// Keep this many changes (1..=10000).
        #[arg(long, conflicts_with = "off")]
        keep: Option<u32>,
        /// Stop keeping history, dropping what was kept.
        #[arg(long)]
        off: bool,
    },
    /// Named locks with a TTL and a fencing token.
    Lock {
        #[command(subcommand)]
        op: LockCommand,
    },
    /// Remove expired keys now (a running store also does this every minute).
    Sweep,
    /// Verify the whole store without changing it (file stores): redb's
    /// checksum of every page, every record's and change's own checksum,
    /// their versions, and the commit log. Prints what it checked, or each
    /// thing that is wrong and exits 1. See docs/reliability.md.
    Check,
    /// Salvage what is intact of a damaged file store into a new store at
    /// INTO, which must not exist; the damaged store is not changed. Every
    /// record that passes its checksum is kept with its version, and the
    /// commit log's sound commits on top. Prints what was lost. See
    /// docs/reliability.md.
    Repair {
        /// The new store's file.
        into: PathBuf,
    },
    /// Copy a migrating store's `from` into its `to` while it is in use,
    /// then verify them (records and a checksum per bucket): the store's
    /// configuration must be {"type":"migrating","from":…,"to":…}, as the
    /// services using it run. Shows a progress bar on a terminal; resumes
    /// an interrupted run from its checkpoint. See docs/configuration.md.
    Migrate(migrate::MigrateArgs),
    /// Print this process's counters as JSON: each caching layer's hits,
    /// misses, evictions, invalidations, feed syncs, entries and bytes,
    /// and the storage calls made (useful in `kvstash shell`, whose
    /// counters grow with its session).
    Stats,
    /// Write every bucket (or only --bucket, with --only-bucket) as JSON Lines:
    /// {"bucket","key","value"} or {"bucket","key","bytes":base64}; or, with
    /// `--format tinydb`, as a TinyDB JSON file (each bucket the table of
    /// the same name; keys must be document ids, values JSON objects). With
    /// -o the file is replaced only once the export is complete.
    Export {
        /// Export only the bucket given by --bucket.
        #[arg(long)]
        only_bucket: bool,
        #[arg(long, value_enum, default_value_t = ExportFormat::Jsonl)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read records (from FILE; none or `-`: standard input): JSON Lines as `export`
    /// writes them; a TinyDB JSON file (`--from tinydb`: each table becomes
    /// the bucket of the same name, TinyDB's default table `_default`, each
    /// document a key named by its id); or a jk_keyvaluestore directory
    /// (`--from jk-dir DIR`:
    /// each key's newest value, into --bucket). Every record is checked
    /// (syntax, keys, values, the buckets' schemas) before anything is
    /// written.
    Import {
        file: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = ImportFormat::Jsonl)]
        from: ImportFormat,
    },
    /// Measure kvstash on this machine (memory and file backends, against a
    /// HashMap, the disk's fsync rate and concurrent writers) in a scratch
    /// directory, and print a Markdown table. Your store is not touched.
    /// `just bench` adds redb, SQLite and the Python peers.
    Bench {
        /// Store sizes (keys), comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
        sizes: Vec<usize>,
        /// Runs of each measurement; the table shows medians.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Operations per in-memory measurement (durable ones run 1/40 of
        /// this, at least 10).
        #[arg(long, default_value_t = 20_000)]
        ops: usize,
        /// Scratch directory (default: a new one under the system's temp dir).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Internal: measure one subject at the first size in this process
        /// and print the result as JSON.
        #[arg(long, hide = true)]
        one: Option<String>,
    },
    /// Serve the store over HTTP/JSON until interrupted (SIGINT or
    /// SIGTERM): keys, lists, transactions, document paths, TTL, locks,
    /// history, watch as Server-Sent Events; /healthz, /metrics
    /// (Prometheus) and /openapi.json. See docs/http.md.
    #[cfg(feature = "serve")]
    Serve(ServeArgs),
    /// An interactive prompt on the store: the commands of this CLI, with
    /// history and completion of commands, buckets and keys; JSON is
    /// pretty-printed. `use BUCKET` changes the bucket, `exit` (or Ctrl-D)
    /// leaves.
    #[cfg(feature = "shell")]
    Shell,
    /// Bearer tokens for `kvstash serve`: each may read some buckets,
    /// write others, take some locks. Secrets are printed once and stored
    /// only as hashes; a revoked token is refused at its next request.
    #[cfg(feature = "serve")]
    Token {
        /// The tokens file (default: tokens.json in the data directory).
        #[arg(long, global = true)]
        tokens: Option<PathBuf>,
        #[command(subcommand)]
        op: TokenCommand,
    },
    /// Print what this build is as JSON: version, target, features, the
    /// backends it has, and where its compiled component comes from
    /// ("embedded": precompiled into the binary, "cache", "compiled").
    Info,
    /// Compile the kvstash component ahead of time for TARGET, as a device
    /// build embeds it (see `just cross`): writes FILE and FILE.stamp (the
    /// guest, target and version it was made for).
    #[cfg(feature = "compiler")]
    Precompile {
        /// A Rust target triple (aarch64-unknown-linux-gnu,
        /// armv7-unknown-linux-gnueabihf, …) or pulley32 / pulley64.
        #[arg(long)]
        target: String,
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Run a Wasm app with kvstash as the store behind its key/value imports
    /// (wasi:keyvalue 0.2.0-draft and -draft2, fermyon:spin/key-value,
    /// kvstash:store/store). A command (wasi:cli/run) runs once and exits
    /// with its exit code; an HTTP app (wasi:http/incoming-handler) is served
    /// on --listen until interrupted. A WASI preview1 module (Spin's
    /// wasm32-wasip1 builds) is adapted first. The app sees its arguments,
    /// --env variables, stdio, clocks and randomness; no files or network
    /// unless --dir / --net grant them.
    #[cfg(feature = "apps")]
    Run(app::RunArgs),
    /// Write APP with kvstash plugged into its key/value imports: the result
    /// imports only kvstash:store/storage and WASI (or, with --storage, what
    /// the storage adapter imports), and runs on any host that provides them.
    #[cfg(feature = "apps")]
    Compose(app::ComposeArgs),
    /// Write the kvstash component, for hosts other than this one (jco,
    /// wasmtime, a Spin component dependency). `--storage wasi-keyvalue`
    /// plugs in the adapter that stores through wasi:keyvalue 0.2.0-draft2:
    /// what a Spin app lists under [component.NAME.dependencies].
    #[cfg(feature = "apps")]
    Component(app::ComponentArgs),
}

#[cfg(feature = "serve")]
#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// Address to listen on (port 0: any free port; the address is
    /// printed). Anything but loopback (127.0.0.1, ::1) needs --tokens
    /// and TLS.
    #[arg(long, default_value = "127.0.0.1:7700")]
    listen: std::net::SocketAddr,
    /// Check bearer tokens from this file (`kvstash token add`). Default:
    /// tokens.json in the data directory, if it exists; otherwise no
    /// authentication, and loopback only.
    #[arg(long)]
    tokens: Option<PathBuf>,
    /// The server's certificate chain (PEM): serve HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Most watch streams open at once; more are refused with 429.
    #[arg(long, default_value_t = 256)]
    max_watches: usize,
    /// How long a connection may take to send a request's head (and
    /// finish its TLS handshake) before it is closed: 500ms, 10s, …
    #[arg(long, value_parser = parse_duration, default_value = "10s")]
    header_timeout: std::time::Duration,
    /// Serve a read-only replica of the kvstash server at URL: this
    /// store (file or memory) follows its records and versions; write
    /// requests are refused with the primary's URL; /v1/replication
    /// reports the lag. Its token (`kvstash token add NAME --storage
    /// read` on the primary) is read from --primary-token-env.
    #[arg(long, value_name = "URL")]
    replica_of: Option<String>,
    /// The environment variable holding the primary's token.
    #[arg(long, value_name = "VAR", default_value = "KVSTASH_PRIMARY_TOKEN")]
    primary_token_env: String,
    /// CA certificates (PEM) to check the primary's TLS certificate
    /// against (default: the system's).
    #[arg(long, value_name = "FILE", requires = "replica_of")]
    primary_ca: Option<PathBuf>,
}

#[cfg(feature = "serve")]
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Make a token named NAME; prints its secret (shown only now).
    Add {
        name: String,
        /// Buckets it may read (`*`: all); repeat or separate with commas.
        #[arg(long, value_delimiter = ',')]
        read: Vec<String>,
        /// Buckets it may write and read (`*`: all).
        #[arg(long, value_delimiter = ',')]
        write: Vec<String>,
        /// Locks it may take, renew, release and look at (`*`: all).
        #[arg(long, value_delimiter = ',')]
        locks: Vec<String>,
        /// The store's records themselves (`/v1/storage`), for another
        /// host's `--server` or `"type":"server"` store (`write`) and for
        /// replicas (`read`): every bucket, lock and schema.
        #[arg(long, value_enum)]
        storage: Option<StorageArg>,
    },
    /// Print each token's name and scopes, as JSON Lines.
    List,
    /// Remove the token named NAME: refused from its next request on.
    Revoke { name: String },
}

#[cfg(feature = "serve")]
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum StorageArg {
    Read,
    Write,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ExportFormat {
    /// JSON Lines, one record per line.
    Jsonl,
    /// A TinyDB JSON file.
    Tinydb,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ImportFormat {
    /// JSON Lines as `export` writes them.
    Jsonl,
    /// A TinyDB JSON file.
    Tinydb,
    /// A jk_keyvaluestore directory.
    JkDir,
}

#[derive(Debug, Subcommand)]
enum PathCommand {
    /// Print the JSON at PATH.
    Get { key: String, path: String },
    /// Set the JSON VALUE at PATH (its parent must exist; `/l/-` appends).
    Set {
        key: String,
        path: String,
        value: String,
    },
    /// Remove the value at PATH.
    Delete { key: String, path: String },
    /// Append the JSON VALUE to the array at PATH.
    Append {
        key: String,
        path: String,
        value: String,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Print {"schema","version"}, or null if the bucket is untyped.
    Get,
    /// Set the schema (JSON text, or a file holding it). Existing values
    /// must satisfy it unless --force.
    Set {
        schema: String,
        #[arg(long)]
        force: bool,
    },
    /// Make the bucket untyped again.
    Remove,
}

#[derive(Debug, Subcommand)]
enum LockCommand {
    /// Take NAME for --ttl; prints {"name","token","expires_at"}. Exits 3 if
    /// it is held (after --wait, if given).
    Acquire {
        name: String,
        #[arg(long, value_parser = parse_duration)]
        ttl: std::time::Duration,
        #[arg(long)]
        owner: Option<String>,
        /// Wait this long for the lock to free up.
        #[arg(long, value_parser = parse_duration)]
        wait: Option<std::time::Duration>,
    },
    /// Extend the lease TOKEN on NAME to --ttl from now. Exits 3 if lost.
    Renew {
        name: String,
        token: u64,
        #[arg(long, value_parser = parse_duration)]
        ttl: std::time::Duration,
    },
    /// Free NAME if the lease TOKEN still holds it. Exits 3 if it did not.
    Release { name: String, token: u64 },
    /// Print who holds NAME: {"token","expires_at","owner"}, or null.
    Status { name: String },
}

fn lease_json(lease: &crate::api::Lease) -> serde_json::Value {
    json!({"name": lease.name, "token": lease.token, "expires_at": rfc3339(lease.expires_at)})
}

/// `500ms`, `30s`, `5m`, `2h`, `7d`.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit (ms, s, m, h, d)"))?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    let ms_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => return Err(format!("unknown unit `{other}` (ms, s, m, h, d)")),
    };
    number
        .checked_mul(ms_per_unit)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

/// Runs the command line; returns the process exit status.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // A command on a store is one caller: it runs on this thread, as the
    // one-shot CLI that scripts call once per value should (worker threads
    // cost their start and make every later mmap/munmap a cross-CPU TLB
    // flush). Serving apps and benchmarking use worker threads.
    let mut builder = if serves_or_measures(&cli.command) {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(2);
        builder
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("starting the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) if is_lost_race(&e) => {
            eprintln!("kvstash: {e:#}");
            std::process::ExitCode::from(3)
        }
        Err(e) => fail(&e),
    }
}

/// Commands that run concurrent work: `run` (an app, perhaps serving HTTP)
/// and `bench` (concurrent writers).
fn serves_or_measures(command: &Command) -> bool {
    #[cfg(feature = "serve")]
    if matches!(command, Command::Serve(_)) {
        return true;
    }
    // The shell's line editor runs on a thread of its own and asks the
    // runtime for completions meanwhile.
    #[cfg(feature = "shell")]
    if matches!(command, Command::Shell) {
        return true;
    }
    #[cfg(feature = "apps")]
    if matches!(command, Command::Run(_)) {
        return true;
    }
    matches!(command, Command::Bench { .. })
}

/// The tokens file `kvstash token` and `kvstash serve` use by default,
/// in the data directory.
#[cfg(feature = "serve")]
const TOKENS_FILE: &str = "tokens.json";

/// `kvstash serve`.
#[cfg(feature = "serve")]
async fn serve(
    args: &ServeArgs,
    config: Option<&str>,
    data: Option<PathBuf>,
) -> anyhow::Result<std::process::ExitCode> {
    let tokens_path = match &args.tokens {
        Some(path) => Some(path.clone()),
        None => {
            Some(data_dir_or_default(data.as_deref())?.join(TOKENS_FILE)).filter(|p| p.exists())
        }
    };
    let options = crate::serve::ServeOptions {
        tokens: tokens_path
            .as_deref()
            .map(crate::serve::Tokens::open)
            .transpose()?,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(crate::serve::tls_config(cert, key)?),
            _ => None,
        },
        max_watches: args.max_watches,
        header_timeout: args.header_timeout,
        replica_of: args.replica_of.as_ref().map(|url| crate::serve::ReplicaOf {
            url: url.clone(),
            token_env: args.primary_token_env.clone(),
            ca_file: args.primary_ca.clone(),
        }),
        resume_file: None,
    };
    crate::serve::check_listen(
        &args.listen,
        options.tokens.is_some(),
        options.tls.is_some(),
    )
    .map_err(anyhow::Error::msg)?;
    let config = resolve_config(config, data)?;
    let store = Store::open(&config).await?;
    let mut options = options;
    if options.replica_of.is_some() {
        // Beside a file store: where its copy of the primary is.
        let tree: serde_json::Value = serde_json::from_str(&config)?;
        if tree["type"] == "file"
            && let Some(path) = tree["path"].as_str()
        {
            options.resume_file = Some(PathBuf::from(format!("{path}.replica")));
        }
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr()?;
    let scheme = if options.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut auth = match &tokens_path {
        Some(path) => format!("tokens from {}", path.display()),
        None => "no authentication".into(),
    };
    if let Some(of) = &options.replica_of {
        auth = format!("a read-only replica of {}; {auth}", of.url);
    }
    eprintln!(
        "kvstash: serving {} on {scheme}://{addr}/ ({auth}; Ctrl-C stops)",
        store.describe().join(", ")
    );
    crate::serve::serve(store, listener, options, stop_signal()).await?;
    Ok(std::process::ExitCode::SUCCESS)
}

/// `kvstash token`.
#[cfg(feature = "serve")]
fn token(path: &std::path::Path, op: &TokenCommand) -> anyhow::Result<()> {
    let mut file = crate::serve::TokensFile::read(path)?;
    match op {
        TokenCommand::Add {
            name,
            read,
            write,
            locks,
            storage,
        } => {
            let scopes = crate::serve::Scopes {
                read: read.clone(),
                write: write.clone(),
                locks: locks.clone(),
                storage: storage.map(|s| match s {
                    StorageArg::Read => crate::serve::StorageScope::Read,
                    StorageArg::Write => crate::serve::StorageScope::Write,
                }),
            };
            let secret = file.add(name, scopes)?;
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            file.write(path)?;
            println!("{secret}");
        }
        TokenCommand::List => {
            for t in &file.tokens {
                println!(
                    "{}",
                    json!({"name": t.name, "read": t.scopes.read, "write": t.scopes.write, "locks": t.scopes.locks, "storage": t.scopes.storage})
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if !file.revoke(name) {
                bail!("no token named `{name}` in {}", path.display());
            }
            file.write(path)?;
        }
    }
    Ok(())
}

/// SIGINT or SIGTERM (if signals cannot be watched: never).
#[cfg(feature = "serve")]
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut terminate) = signal(SignalKind::terminate()) else {
        std::future::pending::<()>().await;
        return;
    };
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => if interrupted.is_err() {
            terminate.recv().await;
        },
        _ = terminate.recv() => {}
    }
}

/// A condition that did not hold: not a failure of the tool.
fn is_lost_race(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<Error>(),
        Some(
            Error::Conflict { .. }
                | Error::CheckFailed { .. }
                | Error::Locked { .. }
                | Error::LeaseLost(_)
        )
    )
}

fn fail(e: &anyhow::Error) -> std::process::ExitCode {
    eprintln!("kvstash: error: {e:#}");
    std::process::ExitCode::FAILURE
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The store configuration the options select (see the module docs).
pub fn resolve_config(config: Option<&str>, data: Option<PathBuf>) -> anyhow::Result<String> {
    if let Some(config) = config {
        let text = if config.trim_start().starts_with('{') {
            config.to_string()
        } else {
            std::fs::read_to_string(config)
                .with_context(|| format!("reading the store configuration {config}"))?
        };
        return Ok(text);
    }
    let dir = match data {
        Some(dir) => dir,
        None => default_data_dir()?,
    };
    Ok(json!({"type": "file", "path": dir.join(DEFAULT_FILE)}).to_string())
}

/// `$XDG_DATA_HOME/kvstash`, else `~/.local/share/kvstash`.
pub fn default_data_dir() -> anyhow::Result<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(dir) = var("XDG_DATA_HOME") {
        return Ok(dir.join("kvstash"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".local").join("share").join("kvstash")),
        None => bail!("no data directory: pass --data DIR or set KVSTASH_DATA or HOME"),
    }
}

/// Commands that only read: they open a file store read-only, so they
/// write nothing (redb writes on a read-write open and close) and run
/// beside other readers.
fn reads_only(command: &Command) -> bool {
    matches!(
        command,
        Command::Get { .. }
            | Command::List { .. }
            | Command::Export { .. }
            | Command::Path {
                op: PathCommand::Get { .. }
            }
            | Command::Schema {
                op: SchemaCommand::Get
            }
            | Command::Lock {
                op: LockCommand::Status { .. }
            }
    )
}

/// The store `command` works on: read-only for [`reads_only`] commands
/// (the guest refuses writes, the file backend opens the file read-only).
async fn open_store(config: &str, command: &Command) -> anyhow::Result<Store> {
    if !reads_only(command) {
        return Ok(Store::open(config).await?);
    }
    let mut tree: serde_json::Value =
        serde_json::from_str(config).context("the store configuration is not valid JSON")?;
    if let Some(fields) = tree.as_object_mut() {
        fields.insert("read_only".into(), json!(true));
    }
    let mut registry = crate::Registry::default();
    registry.register("file", |config| {
        let mut config = crate::backend::FileConfig::from_json(config)?;
        config.read_only = true;
        crate::backend::open_file(&config)
    });
    let options = crate::StoreOptions {
        registry,
        sweep_interval: None,
        ..crate::StoreOptions::default()
    };
    Ok(Store::open_with(&tree.to_string(), options).await?)
}

/// `kvstash check` on the store `config` names.
/// The file store `config` names, for `check` and `repair`.
fn file_config(config: &str, command: &str) -> anyhow::Result<crate::backend::FileConfig> {
    let tree: serde_json::Value =
        serde_json::from_str(config).context("the store configuration is not valid JSON")?;
    let kind = tree.get("type").and_then(|t| t.as_str()).unwrap_or("");
    if kind != "file" {
        bail!(
            "`kvstash {command}` works on file stores; this store's type is {kind:?} (its own server checks what it stores)"
        );
    }
    Ok(crate::backend::FileConfig::from_json(tree)?)
}

/// `kvstash repair INTO`.
fn repair(config: &str, into: &Path) -> anyhow::Result<std::process::ExitCode> {
    let config = file_config(config, "repair")?;
    let salvaged = crate::backend::salvage_file(&config, into)?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: records read: {} ({} damaged); commits from its log: {}",
        salvaged.from.display(),
        salvaged.records,
        salvaged.damaged_records,
        salvaged.log_commits
    )?;
    for lost in &salvaged.lost {
        writeln!(out, "lost: {lost}")?;
    }
    if salvaged.lost.is_empty() {
        writeln!(out, "nothing was lost")?;
    }
    writeln!(
        out,
        "{}: {} records, version {} (the damaged store is unchanged)",
        salvaged.into.display(),
        salvaged.written,
        salvaged.version
    )?;
    // Like `check`: 1 says the new store lacks something the old one had.
    Ok(if salvaged.lost.is_empty() {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    })
}

fn check(config: &str) -> anyhow::Result<std::process::ExitCode> {
    let config = file_config(config, "check")?;
    let report = crate::backend::check_file(&config)?;
    let mut out = std::io::stdout().lock();
    if report.format == 0 {
        // redb's file could not be read at all: there is nothing to count.
        for problem in &report.problems {
            writeln!(out, "damaged: {problem}")?;
        }
        return Ok(std::process::ExitCode::FAILURE);
    }
    writeln!(
        out,
        "{}: format {}, {} records and {} changes as of version {}, {} commits after it in the log (version {})",
        report.path.display(),
        report.format,
        report.records,
        report.changes,
        report.checkpointed,
        report.log_commits,
        report.version
    )?;
    if report.is_sound() {
        writeln!(
            out,
            "sound: redb's integrity check passed, every record and change passes its checksum, the versions agree and the commit log is intact"
        )?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for problem in &report.problems {
        writeln!(out, "damaged: {problem}")?;
    }
    if report.unlisted > 0 {
        writeln!(out, "damaged: and {} more problems", report.unlisted)?;
    }
    Ok(std::process::ExitCode::FAILURE)
}

/// `kvstash info`.
fn info() -> anyhow::Result<serde_json::Value> {
    let features: Vec<&str> = [
        ("compiler", cfg!(feature = "compiler")),
        ("apps", cfg!(feature = "apps")),
        ("etcd", cfg!(feature = "etcd")),
        ("redis", cfg!(feature = "redis")),
        ("postgres", cfg!(feature = "postgres")),
        ("client", cfg!(feature = "client")),
        ("serve", cfg!(feature = "serve")),
        ("shell", cfg!(feature = "shell")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect();
    let mut backends = crate::Registry::default().types();
    backends.sort();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "target": env!("KVSTASH_TARGET"),
        "engine_target": crate::runtime::engine_target()?,
        "features": features,
        "backends": backends,
        "component": crate::component_source()?.as_str(),
    }))
}

/// `--server URL` as the store configuration it stands for; with a
/// configuration as well, which of the two is meant is not guessed.
#[cfg(feature = "client")]
fn with_server(mut cli: Cli) -> anyhow::Result<Cli> {
    if let Some(url) = cli.server.take() {
        if cli.config.is_some() {
            bail!(
                "both --server (or KVSTASH_SERVER) and --config (or KVSTASH_STORE) name a store: give one"
            );
        }
        cli.config = Some(json!({"type": "server", "url": url}).to_string());
    }
    Ok(cli)
}

async fn run(cli: Cli) -> anyhow::Result<std::process::ExitCode> {
    #[cfg(feature = "client")]
    let cli = with_server(cli)?;
    #[cfg(feature = "apps")]
    if let Command::Run(args) = cli.command {
        return app::run(args, cli.config, cli.data).await;
    }
    #[cfg(feature = "apps")]
    if let Command::Compose(args) = &cli.command {
        app::compose(args)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    #[cfg(feature = "apps")]
    if let Command::Component(args) = &cli.command {
        app::component(args)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    #[cfg(feature = "serve")]
    if let Command::Serve(args) = &cli.command {
        return serve(args, cli.config.as_deref(), cli.data).await;
    }
    #[cfg(feature = "serve")]
    if let Command::Token { tokens, op } = &cli.command {
        let path = match tokens {
            Some(path) => path.clone(),
            None => data_dir_or_default(cli.data.as_deref())?.join(TOKENS_FILE),
        };
        token(&path, op)?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Check = &cli.command {
        let config = resolve_config(cli.config.as_deref(), cli.data)?;
        return check(&config);
    }
    if let Command::Repair { into } = &cli.command {
        let config = resolve_config(cli.config.as_deref(), cli.data)?;
        return repair(&config, into);
    }
    if let Command::Info = &cli.command {
        println!("{}", info()?);
        return Ok(std::process::ExitCode::SUCCESS);
    }
    #[cfg(feature = "compiler")]
    if let Command::Precompile { target, output } = &cli.command {
        let (cwasm, guest_sha256) = crate::runtime::precompile(target)?;
        // What host/build.rs checks before it embeds the artifact.
        let mut stamp = output.clone().into_os_string();
        stamp.push(".stamp");
        let version = env!("CARGO_PKG_VERSION");
        let stamp_text = format!("guest={guest_sha256}\ntarget={target}\nkvstash={version}\n");
        // Files already holding these bytes are left alone: a build that
        // embeds them then has nothing to redo.
        for (path, bytes) in [
            (output.as_path(), cwasm.as_slice()),
            (std::path::Path::new(&stamp), stamp_text.as_bytes()),
        ] {
            if std::fs::read(path).is_ok_and(|had| had == bytes) {
                continue;
            }
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Command::Bench {
        sizes,
        rounds,
        ops,
        dir,
        one,
    } = cli.command
    {
        let sample = crate::bench::Sample {
            durable_writes: (ops / 40).max(10),
            ops,
            pages: (ops / 100).max(10),
        };
        bench(&sizes, rounds, sample, dir, one).await?;
        return Ok(std::process::ExitCode::SUCCESS);
    }
    #[cfg(feature = "shell")]
    if let Command::Shell = &cli.command {
        let config = resolve_config(cli.config.as_deref(), cli.data.clone())?;
        let store = open_store(&config, &cli.command).await?;
        let history = data_dir_or_default(cli.data.as_deref())?.join("shell_history");
        return shell::run(store, cli.bucket, history).await;
    }
    if let Command::Migrate(args) = &cli.command {
        let config = resolve_config(cli.config.as_deref(), cli.data.clone())?;
        let store = open_store(&config, &cli.command).await?;
        let checkpoint = data_dir_or_default(cli.data.as_deref())?.join("migrate.json");
        return migrate::run(&store, &config, args.clone(), checkpoint).await;
    }
    let config = resolve_config(cli.config.as_deref(), cli.data)?;
    let store = open_store(&config, &cli.command).await?;
    execute(cli.command, &store, &cli.bucket, Output::Plain).await
}

/// How a command prints JSON values: as stored (one line), or indented
/// for a person (`kvstash shell`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Plain,
    Pretty,
}

/// `--data DIR`, else the default data directory.
fn data_dir_or_default(data: Option<&std::path::Path>) -> anyhow::Result<PathBuf> {
    match data {
        Some(dir) => Ok(dir.to_path_buf()),
        None => default_data_dir(),
    }
}

/// Runs one command on an open store: the CLI's, and each line of
/// `kvstash shell`.
async fn execute(
    command: Command,
    store: &Store,
    bucket_name: &str,
    output: Output,
) -> anyhow::Result<std::process::ExitCode> {
    let bucket = store.bucket(bucket_name);
    let mut out = std::io::stdout().lock();
    match command {
        Command::Get { key, meta, path } => {
            if let Some(path) = path {
                let (value, _) = bucket
                    .get_path_json::<serde_json::Value>(&key, &path)
                    .await?
                    .with_context(|| not_found(&key, bucket_name))?;
                match output {
                    Output::Plain => writeln!(out, "{value}")?,
                    Output::Pretty => writeln!(out, "{value:#}")?,
                }
                return out_flush().map(|()| std::process::ExitCode::SUCCESS);
            }
            let entry = bucket
                .get(&key)
                .await?
                .with_context(|| not_found(&key, bucket_name))?;
            if meta {
                let mut line = value_json(&entry.value);
                line["version"] = json!(entry.version);
                line["expires_at"] = json!(entry.expires_at.map(rfc3339));
                writeln!(out, "{line}")?;
                return out_flush().map(|()| std::process::ExitCode::SUCCESS);
            }
            match entry.value {
                Value::Json(text) if output == Output::Pretty => {
                    writeln!(out, "{}", indent_json(&text))?;
                }
                Value::Json(text) => writeln!(out, "{text}")?,
                Value::Bytes(bytes) => out.write_all(&bytes)?,
            }
        }
        Command::Set {
            key,
            value,
            string,
            bytes,
            ttl,
            if_version,
            if_absent,
        } => {
            let value = if value == "-" {
                let mut buf = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                    .context("reading the value from standard input")?;
                if bytes {
                    // Raw bytes are taken whole, whatever they are.
                    Value::Bytes(buf)
                } else {
                    let text = String::from_utf8(buf).map_err(|e| {
                        anyhow::anyhow!(
                            "the value on standard input is not UTF-8 (byte {}); \
                             `--bytes` stores raw bytes",
                            e.utf8_error().valid_up_to()
                        )
                    })?;
                    // Like `$(…)` in a shell: the final newline is the
                    // pipe's, not the value's (JSON ignores surrounding
                    // whitespace anyway).
                    if string {
                        Value::json(text.strip_suffix('\n').unwrap_or(&text))?
                    } else {
                        Value::Json(text.trim().to_string())
                    }
                }
            } else if bytes {
                Value::Bytes(value.into_bytes())
            } else if string {
                Value::json(&value)?
            } else {
                Value::Json(value)
            };
            let options = WriteOptions {
                if_version,
                if_absent,
                ttl,
            };
            bucket.set_with(&key, value, &options).await?;
        }
        Command::Delete { key, if_version } => match if_version {
            Some(version) => {
                bucket.delete_if_version(&key, version).await?;
            }
            None => {
                bucket.delete(&key).await?;
            }
        },
        Command::Incr { key, delta } => {
            writeln!(out, "{}", bucket.increment(&key, delta).await?)?;
        }
        Command::Path { op } => match op {
            PathCommand::Get { key, path } => {
                let (value, _) = bucket
                    .get_path_json::<serde_json::Value>(&key, &path)
                    .await?
                    .with_context(|| not_found(&key, bucket_name))?;
                writeln!(out, "{value}")?;
            }
            PathCommand::Set { key, path, value } => {
                bucket
                    .set_path_json(&key, &path, &parse_value(&value)?)
                    .await?;
            }
            PathCommand::Delete { key, path } => {
                bucket.delete_path(&key, &path).await?;
            }
            PathCommand::Append { key, path, value } => {
                bucket
                    .append_path_json(&key, &path, &parse_value(&value)?)
                    .await?;
            }
        },
        Command::Txn { file } => {
            let text = match &stdin_if_dash(file) {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?,
                None => {
                    let mut buf = String::new();
                    std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                        .context("reading the transaction from standard input")?;
                    buf
                }
            };
            let txn = parse_transaction(store, bucket_name, &text).context("transaction")?;
            writeln!(out, "{}", txn.commit().await?)?;
        }
        Command::Watch {
            prefix,
            since,
            count,
        } => {
            use futures::StreamExt as _;
            let options = crate::api::WatchOptions {
                prefix,
                since,
                ..Default::default()
            };
            let mut events = std::pin::pin!(bucket.watch(options).await?);
            let mut left = count.unwrap_or(usize::MAX);
            while left > 0 {
                let Some(event) = events.next().await else {
                    break;
                };
                let event = event?;
                let mut line = match &event.value {
                    Some(value) => value_json(value),
                    None => json!({}),
                };
                line["version"] = json!(event.version);
                line["key"] = json!(event.key);
                line["event"] = json!(match event.kind {
                    crate::api::EventKind::Set => "set",
                    crate::api::EventKind::Delete => "delete",
                    crate::api::EventKind::Expire => "expire",
                });
                if let Some(at) = event.expires_at {
                    line["expires_at"] = json!(rfc3339(at));
                }
                writeln!(out, "{line}")?;
                out.flush()?;
                left -= 1;
            }
        }
        Command::Undo => writeln!(out, "{}", bucket.undo().await?)?,
        Command::Redo => writeln!(out, "{}", bucket.redo().await?)?,
        Command::History { keep, off } => {
            if off {
                bucket.set_history(0).await?;
            } else if let Some(keep) = keep {
                bucket.set_history(keep).await?;
            }
            let (undoable, redoable) = bucket.history().await?;
            writeln!(
                out,
                "{}",
                json!({"undoable": undoable, "redoable": redoable})
            )?;
        }
        Command::Schema { op } => match op {
            SchemaCommand::Get => {
                let line = match bucket.schema().await? {
                    Some((schema, version)) => json!({"schema": schema, "version": version}),
                    None => serde_json::Value::Null,
                };
                writeln!(out, "{line}")?;
            }
            SchemaCommand::Set { schema, force } => {
                let text = if schema.trim_start().starts_with('{') || schema.trim() == "true" {
                    schema
                } else {
                    std::fs::read_to_string(&schema)
                        .with_context(|| format!("reading the schema {schema}"))?
                };
                let schema = parse_value(&text)?;
                let version = bucket.set_schema(Some(&schema), force).await?;
                eprintln!("schema version {version}");
            }
            SchemaCommand::Remove => {
                bucket.set_schema(None, false).await?;
            }
        },
        Command::Lock { op } => match op {
            LockCommand::Acquire {
                name,
                ttl,
                owner,
                wait,
            } => {
                let lease = match wait {
                    Some(wait) => store.lock(&name, ttl, owner.as_deref(), wait).await?,
                    None => store.acquire(&name, ttl, owner.as_deref()).await?,
                };
                writeln!(out, "{}", lease_json(&lease))?;
            }
            LockCommand::Renew { name, token, ttl } => {
                let lease = crate::api::Lease {
                    name,
                    token,
                    expires_at: std::time::UNIX_EPOCH,
                };
                writeln!(out, "{}", lease_json(&store.renew(&lease, ttl).await?))?;
            }
            LockCommand::Release { name, token } => {
                let lease = crate::api::Lease {
                    name: name.clone(),
                    token,
                    expires_at: std::time::UNIX_EPOCH,
                };
                if !store.release(&lease).await? {
                    return Err(Error::LeaseLost(format!(
                        "lease {token} on `{name}` is no longer held"
                    ))
                    .into());
                }
            }
            LockCommand::Status { name } => {
                let line = match store.lock_status(&name).await? {
                    Some(h) => {
                        json!({"token": h.token, "expires_at": rfc3339(h.expires_at), "owner": h.owner})
                    }
                    None => serde_json::Value::Null,
                };
                writeln!(out, "{line}")?;
            }
        },
        Command::Stats => {
            let caches: Vec<serde_json::Value> = store
                .cache_stats()
                .await?
                .into_iter()
                .map(|c| {
                    json!({
                        "layer": c.layer,
                        "hits": c.hits,
                        "misses": c.misses,
                        "evictions": c.evictions,
                        "invalidations": c.invalidations,
                        "syncs": c.syncs,
                        "entries": c.entries,
                        "bytes": c.bytes,
                    })
                })
                .collect();
            let storage: serde_json::Map<String, serde_json::Value> = store
                .stats()
                .storage
                .into_iter()
                .map(|(op, calls, failures)| {
                    (
                        op.to_string(),
                        json!({"calls": calls, "failures": failures}),
                    )
                })
                .collect();
            writeln!(out, "{}", json!({"caches": caches, "storage": storage}))?;
        }
        Command::Sweep => {
            let mut removed = 0u64;
            loop {
                let n = store.sweep(1000).await?;
                removed += u64::from(n);
                if n < 1000 {
                    break;
                }
            }
            eprintln!("removed {removed} expired keys");
        }
        Command::List {
            prefix,
            start,
            end,
            reverse,
            limit,
            keys,
        } => {
            let mut left = limit.unwrap_or(usize::MAX);
            let options = ListOptions {
                prefix,
                start,
                end,
                reverse,
                keys_only: keys,
                ..ListOptions::default()
            };
            for_each_item(&bucket, options, &mut left, |item| {
                if keys {
                    writeln!(out, "{}", item.key)?;
                } else {
                    let mut line = item_json(&item);
                    line["version"] = json!(item.version);
                    writeln!(out, "{line}")?;
                }
                Ok(())
            })
            .await?;
        }
        Command::Export {
            only_bucket,
            format,
            output,
        } => {
            let names = if only_bucket {
                vec![bucket_name.to_string()]
            } else {
                store.buckets().await?
            };
            // A file output is written aside and renamed into place once
            // complete: a failed export never leaves a truncated file where
            // the old one was (`-o connector.json` may be the app's data).
            let aside = output.as_deref().map(transfer::Aside::create).transpose()?;
            let mut sink: Box<dyn std::io::Write> = match &aside {
                Some(aside) => Box::new(std::io::BufWriter::new(aside.file()?)),
                None => Box::new(std::io::BufWriter::new(out)),
            };
            let mut count = 0usize;
            let mut tinydb = transfer::TinyDbWriter::default();
            for name in names {
                let mut left = usize::MAX;
                for_each_item(
                    &store.bucket(&name),
                    ListOptions::default(),
                    &mut left,
                    |item| {
                        match format {
                            ExportFormat::Jsonl => {
                                let mut line = item_json(&item);
                                line["bucket"] = json!(name);
                                writeln!(sink, "{line}")?;
                            }
                            ExportFormat::Tinydb => {
                                let value = item
                                    .value
                                    .as_ref()
                                    .context("an item came without its value")?;
                                tinydb
                                    .add(&name, &item.key, value)
                                    .context("cannot export as TinyDB")?;
                            }
                        }
                        count += 1;
                        Ok(())
                    },
                )
                .await?;
            }
            if format == ExportFormat::Tinydb {
                sink.write_all(tinydb.finish().as_bytes())?;
            }
            sink.flush()?;
            drop(sink);
            if let Some(aside) = aside {
                aside.commit()?;
            }
            eprintln!("exported {count} records");
        }
        Command::Import { file, from } => {
            let file = match from {
                ImportFormat::JkDir => file,
                ImportFormat::Jsonl | ImportFormat::Tinydb => stdin_if_dash(file),
            };
            let records = match (from, &file) {
                (ImportFormat::Jsonl, Some(path)) => read_records(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )),
                (ImportFormat::Jsonl, None) => read_records(std::io::stdin().lock()),
                (ImportFormat::Tinydb, file) => {
                    let text = match file {
                        Some(path) => std::fs::read_to_string(path)
                            .with_context(|| format!("reading {}", path.display()))?,
                        None => std::io::read_to_string(std::io::stdin())
                            .context("reading standard input")?,
                    };
                    transfer::read_tinydb(&text)
                }
                (ImportFormat::JkDir, Some(dir)) => transfer::read_jk_dir(dir, bucket_name),
                (ImportFormat::JkDir, None) => bail!("`--from jk-dir` needs the directory"),
            }?;
            let count = records.len();
            // A dry run first, through the same engine: a scratch memory
            // store with the target buckets' schemas takes every record, so
            // a key, value or schema the store would refuse is found before
            // anything is written.
            let scratch = Store::open(r#"{"type":"memory"}"#).await?;
            let mut names: Vec<&str> = records.iter().map(|r| r.bucket.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            for name in names {
                if let Some((schema, _)) = store.bucket(name).schema().await? {
                    scratch.bucket(name).set_schema(Some(&schema), true).await?;
                }
            }
            for target in [&scratch, store] {
                for record in &records {
                    let bucket = target.bucket(&record.bucket);
                    match &record.value {
                        Value::Json(text) => bucket.set_json_text(&record.key, text).await,
                        Value::Bytes(bytes) => bucket.set_bytes(&record.key, bytes).await,
                    }
                    .with_context(|| {
                        format!("importing `{}` into bucket `{}`", record.key, record.bucket)
                    })?;
                }
            }
            eprintln!("imported {count} records");
        }
        Command::Bench { .. }
        | Command::Info
        | Command::Check
        | Command::Repair { .. }
        | Command::Migrate(_) => {
            bail!("this command does not run on an open store")
        }
        #[cfg(feature = "shell")]
        Command::Shell => bail!("this is the shell already"),
        #[cfg(feature = "compiler")]
        Command::Precompile { .. } => bail!("this command does not run on a store"),
        #[cfg(feature = "apps")]
        Command::Run(_) | Command::Compose(_) | Command::Component(_) => {
            bail!("apps are not run on an open store")
        }
        #[cfg(feature = "serve")]
        Command::Serve(_) | Command::Token { .. } => bail!("this command does not run on a store"),
    }
    out_flush().map(|()| std::process::ExitCode::SUCCESS)
}

/// Valid JSON text indented two spaces a level, members in the order
/// they were written (a `serde_json::Value` would sort them).
fn indent_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", depth));
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.peek().is_some_and(|c| c.is_whitespace()) {
                    chars.next();
                }
                if chars.peek().is_some_and(|&n| n == '}' || n == ']') {
                    continue;
                }
                depth += 1;
                newline(&mut out, depth);
            }
            '}' | ']' => {
                if !(out.ends_with('{') || out.ends_with('[')) {
                    depth = depth.saturating_sub(1);
                    newline(&mut out, depth);
                }
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

fn out_flush() -> anyhow::Result<()> {
    std::io::stdout().flush()?;
    Ok(())
}

/// Walks the bucket's items page by page, at most `left` of them.
async fn for_each_item(
    bucket: &Bucket,
    options: ListOptions,
    left: &mut usize,
    mut visit: impl FnMut(Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cursor = None;
    while *left > 0 {
        let page = bucket
            .list(&ListOptions {
                limit: Some(u32::try_from((*left).min(1000)).unwrap_or(1000)),
                cursor,
                ..options.clone()
            })
            .await?;
        for item in page.items {
            if *left == 0 {
                break;
            }
            *left -= 1;
            visit(item)?;
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(())
}

/// `{"key":…, "value":…}` or `{"key":…, "bytes":"base64"}` (just the key
/// when the item has no value).
fn item_json(item: &Item) -> serde_json::Value {
    let mut line = match &item.value {
        Some(value) => value_json(value),
        None => json!({}),
    };
    line["key"] = json!(item.key);
    line
}

/// `{"value":…}` or `{"bytes":"base64"}`.
fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Json(text) => {
            let value = serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone()));
            json!({"value": value})
        }
        Value::Bytes(bytes) => {
            json!({"bytes": base64::engine::general_purpose::STANDARD.encode(bytes)})
        }
    }
}

fn not_found(key: &str, bucket: &str) -> String {
    format!("key `{key}` not found in bucket `{bucket}`")
}

/// A command's input file: `None` (standard input) for none or `-`, the
/// one convention of every command that reads a file or standard input
/// (`set KEY -` too).
fn stdin_if_dash(file: Option<PathBuf>) -> Option<PathBuf> {
    file.filter(|path| path.as_os_str() != "-")
}

fn parse_value(text: &str) -> anyhow::Result<serde_json::Value> {
    serde_json::from_str(text).with_context(|| format!("`{text}` is not valid JSON"))
}

pub(crate) use crate::api::rfc3339;

#[cfg(test)]
mod tests {
    #[test]
    fn json_is_indented_in_its_own_order() {
        let text = r#"{"z": [1, {"a":"x,y:[]\"{"}], "a": {}, "e": [ ]}"#;
        let indented = super::indent_json(text);
        assert_eq!(
            indented,
            "{\n  \"z\": [\n    1,\n    {\n      \"a\": \"x,y:[]\\\"{\"\n    }\n  ],\n  \"a\": {},\n  \"e\": []\n}"
        );
        let back: serde_json::Value = serde_json::from_str(&indented).unwrap();
        assert_eq!(
            back,
            serde_json::from_str::<serde_json::Value>(text).unwrap()
        );
    }

    use super::*;

    #[test]
    fn durations_and_times() {
        use std::time::Duration;
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        for bad in ["", "10", "s", "1.5s", "10y", "-1s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        let at = |ms: u64| rfc3339(std::time::UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(at(1_795_467_900_000), "2026-11-23T21:05:00.000Z");
    }

    #[test]
    fn config_resolution_order() {
        let explicit = resolve_config(Some(r#"{"type":"memory"}"#), Some("/x".into())).unwrap();
        assert_eq!(explicit, r#"{"type":"memory"}"#);
        let data = resolve_config(None, Some("/srv/kv".into())).unwrap();
        let data: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(data, json!({"type":"file","path":"/srv/kv/kvstash.redb"}));
        let missing = resolve_config(Some("/no/such/config.json"), None).unwrap_err();
        assert!(format!("{missing:#}").contains("/no/such/config.json"));
    }
}
