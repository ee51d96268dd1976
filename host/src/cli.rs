//! The `kvstash` command line.
//!
//! Which store it opens, first match wins:
//! 1. `--config JSON` (or `--config FILE` holding JSON);
//! 2. the `KVSTASH_STORE` environment variable (JSON);
//! 3. the file backend in `--data DIR` / `KVSTASH_DATA`;
//! 4. the file backend in `$XDG_DATA_HOME/kvstash`, else `~/.local/share/kvstash`.
//!
//! Errors print one line, `kvstash: error: …`, and exit with status 1
//! (usage errors: 2).

use std::io::{BufRead, Write as _};
use std::path::PathBuf;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::api::{Bucket, Item, ListOptions, Store, Value};

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
    Get { key: String },
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
    },
    /// Delete KEY (deleting a missing key is not an error).
    Delete { key: String },
    /// Print the bucket's items as JSON Lines: {"key","value"|"bytes","version"}.
    List {
        #[arg(long)]
        prefix: Option<String>,
        /// Print at most this many items.
        #[arg(long)]
        limit: Option<usize>,
        /// Print keys only, one per line.
        #[arg(long)]
        keys: bool,
    },
    /// Write every bucket (or only --bucket, with --only-bucket) as JSON Lines:
    /// {"bucket","key","value"} or {"bucket","key","bytes":base64}.
    Export {
        /// Export only the bucket given by --bucket.
        #[arg(long)]
        only_bucket: bool,
        /// Write here instead of standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Read JSON Lines as `export` writes them (from FILE or standard input).
    /// Every line is checked before anything is written.
    Import { file: Option<PathBuf> },
}

/// Runs the command line; returns the process exit status.
pub fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&anyhow::anyhow!("starting the async runtime: {e}")),
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => std::process::ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = resolve_config(cli.config.as_deref(), cli.data)?;
    let store = Store::open(&config).await?;
    let bucket = store.bucket(&cli.bucket);
    let mut out = std::io::stdout().lock();
    match cli.command {
        Command::Get { key } => {
            let entry = bucket
                .get(&key)
                .await?
                .with_context(|| format!("key `{key}` not found in bucket `{}`", cli.bucket))?;
            match entry.value {
                Value::Json(text) => writeln!(out, "{text}")?,
                Value::Bytes(bytes) => out.write_all(&bytes)?,
            }
        }
        Command::Set {
            key,
            value,
            string,
            bytes,
        } => {
            let value = if value == "-" {
                let mut buf = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf)
                    .context("reading the value from standard input")?;
                // Like `$(…)` in a shell: the final newline is the pipe's,
                // not the value's (JSON ignores surrounding whitespace anyway).
                if bytes {
                    buf
                } else if string {
                    buf.strip_suffix('\n').unwrap_or(&buf).to_string()
                } else {
                    buf.trim().to_string()
                }
            } else {
                value
            };
            if bytes {
                bucket.set_bytes(&key, value.as_bytes()).await?;
            } else if string {
                bucket.set_json(&key, &value).await?;
            } else {
                bucket.set_json_text(&key, &value).await?;
            }
        }
        Command::Delete { key } => {
            bucket.delete(&key).await?;
        }
        Command::List {
            prefix,
            limit,
            keys,
        } => {
            let mut left = limit.unwrap_or(usize::MAX);
            for_each_item(&bucket, prefix, &mut left, |item| {
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
            output,
        } => {
            let names = if only_bucket {
                vec![cli.bucket.clone()]
            } else {
                store.buckets().await?
            };
            let mut sink: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("creating {}", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(out)),
            };
            let mut count = 0usize;
            for name in names {
                let mut left = usize::MAX;
                for_each_item(&store.bucket(&name), None, &mut left, |item| {
                    let mut line = item_json(&item);
                    line["bucket"] = json!(name);
                    writeln!(sink, "{line}")?;
                    count += 1;
                    Ok(())
                })
                .await?;
            }
            sink.flush()?;
            eprintln!("exported {count} records");
        }
        Command::Import { file } => {
            let records = match &file {
                Some(path) => read_records(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("opening {}", path.display()))?,
                )),
                None => read_records(std::io::stdin().lock()),
            }?;
            let count = records.len();
            for record in records {
                let bucket = store.bucket(&record.bucket);
                match record.value {
                    Value::Json(text) => bucket.set_json_text(&record.key, &text).await,
                    Value::Bytes(bytes) => bucket.set_bytes(&record.key, &bytes).await,
                }
                .with_context(|| {
                    format!("importing `{}` into bucket `{}`", record.key, record.bucket)
                })?;
            }
            eprintln!("imported {count} records");
        }
    }
    out_flush()
}

fn out_flush() -> anyhow::Result<()> {
    std::io::stdout().flush()?;
    Ok(())
}

/// Walks the bucket's items page by page, at most `left` of them.
async fn for_each_item(
    bucket: &Bucket,
    prefix: Option<String>,
    left: &mut usize,
    mut visit: impl FnMut(Item) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut cursor = None;
    while *left > 0 {
        let page = bucket
            .list(&ListOptions {
                prefix: prefix.clone(),
                limit: Some(u32::try_from((*left).min(1000)).unwrap_or(1000)),
                cursor,
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

/// `{"key":…, "value":…}` or `{"key":…, "bytes":"base64"}`.
fn item_json(item: &Item) -> serde_json::Value {
    match &item.value {
        Value::Json(text) => {
            let value = serde_json::from_str::<serde_json::Value>(text)
                .unwrap_or_else(|_| serde_json::Value::String(text.clone()));
            json!({"key": item.key, "value": value})
        }
        Value::Bytes(bytes) => json!({
            "key": item.key,
            "bytes": base64::engine::general_purpose::STANDARD.encode(bytes),
        }),
    }
}

/// One line of an export.
#[derive(Debug)]
struct Record {
    bucket: String,
    key: String,
    value: Value,
}

/// Parses every line before anything is written, so a bad file writes nothing.
fn read_records(input: impl BufRead) -> anyhow::Result<Vec<Record>> {
    let mut records = Vec::new();
    for (index, line) in input.lines().enumerate() {
        let number = index + 1;
        let line = line.with_context(|| format!("reading line {number}"))?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(&line).with_context(|| format!("line {number}"))?;
        records.push(record);
    }
    Ok(records)
}

fn parse_record(line: &str) -> anyhow::Result<Record> {
    let mut object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(line).context("not a JSON object")?;
    let mut text = |field: &str| match object.remove(field) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s),
        Some(_) => bail!("`{field}` must be a non-empty string"),
        None => bail!("missing `{field}`"),
    };
    let bucket = text("bucket")?;
    let key = text("key")?;
    let value = match (object.remove("value"), object.remove("bytes")) {
        (Some(value), None) => Value::Json(value.to_string()),
        (None, Some(serde_json::Value::String(encoded))) => Value::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(encoded)
                .context("`bytes` is not valid base64")?,
        ),
        (None, Some(_)) => bail!("`bytes` must be a base64 string"),
        (Some(_), Some(_)) => bail!("has both `value` and `bytes`"),
        (None, None) => bail!("missing `value` (or `bytes`)"),
    };
    if let Some(extra) = object.keys().next() {
        bail!("unknown field `{extra}`");
    }
    Ok(Record { bucket, key, value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_export_lines_and_names_what_is_wrong() {
        let r = parse_record(r#"{"bucket":"b","key":"k","value":{"a":[1]}}"#).unwrap();
        assert_eq!((r.bucket.as_str(), r.key.as_str()), ("b", "k"));
        assert_eq!(r.value, Value::Json("{\"a\":[1]}".into()));
        let r = parse_record(r#"{"bucket":"b","key":"k","bytes":"AP8="}"#).unwrap();
        assert_eq!(r.value, Value::Bytes(vec![0, 255]));
        for (line, needle) in [
            ("[]", "JSON object"),
            (r#"{"key":"k","value":1}"#, "bucket"),
            (r#"{"bucket":"b","key":"","value":1}"#, "key"),
            (r#"{"bucket":"b","key":"k"}"#, "value"),
            (r#"{"bucket":"b","key":"k","bytes":"!!"}"#, "base64"),
            (r#"{"bucket":"b","key":"k","value":1,"bytes":""}"#, "both"),
            (
                r#"{"bucket":"b","key":"k","value":1,"x":2}"#,
                "unknown field",
            ),
        ] {
            let e = parse_record(line).unwrap_err();
            assert!(format!("{e:#}").contains(needle), "{line}: {e:#}");
        }
    }

    #[test]
    fn a_bad_line_is_reported_by_number() {
        let input = "{\"bucket\":\"b\",\"key\":\"k\",\"value\":1}\n\nnot json\n";
        let e = read_records(input.as_bytes()).unwrap_err();
        assert!(format!("{e:#}").starts_with("line 3"), "{e:#}");
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
