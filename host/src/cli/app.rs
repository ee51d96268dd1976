//! `kvstash run` and `kvstash compose`: other people's Wasm apps.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;

use crate::run::{App, AppError, AppKind, AppOptions};

/// Exit status of a command app that trapped: that of an aborted process
/// (128 + SIGABRT), as `wasmtime run` reports a trap.
const TRAP_EXIT: u8 = 134;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The app: a component (.wasm) or a WASI preview1 module.
    app: PathBuf,
    /// Arguments passed to the app.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
    /// An environment variable for the app (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE", value_parser = name_value)]
    env: Vec<(String, String)>,
    /// Let the app use a host directory, at GUEST inside it (repeatable;
    /// `--dir PATH` uses the same path in both).
    #[arg(long = "dir", value_name = "HOST::GUEST", value_parser = host_guest)]
    dirs: Vec<(PathBuf, String)>,
    /// Store NAME (a wasi:keyvalue identifier or Spin label) opens BUCKET
    /// (repeatable). Once one is given, names not listed are no-such-store.
    #[arg(long = "store", value_name = "NAME=BUCKET", value_parser = name_value)]
    stores: Vec<(String, String)>,
    /// Let the app open sockets and resolve host names.
    #[arg(long)]
    net: bool,
    /// Address an HTTP app listens on.
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Run an app that imports kvstash's storage interface itself, such as a
    /// `kvstash compose` output: it may then read and write the configured
    /// store directly, around kvstash's read_only, prefix and stores rules.
    #[arg(long)]
    trust_storage: bool,
    /// Longest an HTTP request may run before it is stopped (503): 500ms,
    /// 30s, 5m.
    #[arg(long, default_value = "60s", value_parser = super::parse_duration)]
    request_timeout: std::time::Duration,
}

#[derive(Debug, clap::Args)]
pub struct ComposeArgs {
    /// The app: a component (.wasm) or a WASI preview1 module.
    app: PathBuf,
    /// Where to write the composed component.
    #[arg(long, short)]
    output: PathBuf,
    /// Plug a storage adapter into kvstash too: `wasi-keyvalue` (the
    /// built-in adapter over wasi:keyvalue 0.2.0-draft2, for Spin and other
    /// plain key/value hosts), `memory` (nothing imported, nothing kept: runs
    /// on any component host, e.g. `wasmtime run`), or a component file
    /// exporting kvstash:store/storage.
    #[arg(long, value_name = "wasi-keyvalue|memory|ADAPTER.wasm")]
    storage: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct ComponentArgs {
    /// Where to write the component.
    #[arg(long, short)]
    output: PathBuf,
    /// Plug a storage adapter in (see `compose --storage`); without one the
    /// component imports kvstash:store/storage.
    #[arg(long, value_name = "wasi-keyvalue|memory|ADAPTER.wasm")]
    storage: Option<String>,
}

/// The bytes of a `--storage` adapter.
fn storage_adapter(name: &str) -> anyhow::Result<Vec<u8>> {
    match name {
        "wasi-keyvalue" => return Ok(crate::KEYVALUE_ADAPTER_WASM.to_vec()),
        "memory" => return Ok(crate::MEMORY_ADAPTER_WASM.to_vec()),
        _ => {}
    }
    read_app(Path::new(name))
}

fn name_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        Some(_) | None => Err(format!("expected NAME=VALUE, got `{text}`")),
    }
}

fn host_guest(text: &str) -> Result<(PathBuf, String), String> {
    match text.split_once("::") {
        Some((host, guest)) if !host.is_empty() && !guest.is_empty() => {
            Ok((PathBuf::from(host), guest.to_string()))
        }
        Some(_) => Err(format!("expected HOST::GUEST, got `{text}`")),
        None => Ok((PathBuf::from(text), text.to_string())),
    }
}

fn read_app(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

/// `kvstash run`: the app's exit code, or until interrupted for HTTP apps.
pub async fn run(
    args: RunArgs,
    config: Option<String>,
    data: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let config = super::resolve_config(config.as_deref(), data)?;
    let wasm = read_app(&args.app)?;
    let name = args
        .app
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".into());
    let mut options = AppOptions::new(config);
    options.stores = args.stores;
    options.args = args.args;
    options.env = args.env;
    options.dirs = args.dirs;
    options.network = args.net;
    options.listen = args.listen;
    options.request_timeout = args.request_timeout;
    options.trust_storage = args.trust_storage;
    let shown = args.app.display().to_string();
    let app = App::load(&name, &wasm, options)
        .await
        .with_context(|| format!("{shown} cannot run"))?;
    match app.kind() {
        AppKind::Command => match app.run_command().await {
            Ok(code) => Ok(exit_code(code)),
            Err(trap @ AppError::Trap(_)) => {
                eprintln!("kvstash: error: {shown}: {trap}");
                Ok(ExitCode::from(TRAP_EXIT))
            }
            Err(e) => Err(anyhow::Error::new(e).context(shown)),
        },
        AppKind::Http => {
            let listener = tokio::net::TcpListener::bind(args.listen)
                .await
                .with_context(|| format!("listening on {}", args.listen))?;
            let addr = listener.local_addr()?;
            eprintln!("kvstash: serving {shown} on http://{addr}/ (Ctrl-C stops)");
            let interrupted = async {
                // If signals cannot be watched, serve until killed.
                if tokio::signal::ctrl_c().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            Arc::new(app).serve(listener, interrupted).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A process exit status from the app's: 0-255 as they are, others as 1.
fn exit_code(code: i32) -> ExitCode {
    u8::try_from(code).map_or(ExitCode::FAILURE, ExitCode::from)
}

/// `kvstash compose`.
pub fn compose(args: &ComposeArgs) -> anyhow::Result<()> {
    let wasm = read_app(&args.app)?;
    let storage = args.storage.as_deref().map(storage_adapter).transpose()?;
    let composed = crate::run::compose(&wasm, storage.as_deref())
        .with_context(|| format!("composing {}", args.app.display()))?;
    std::fs::write(&args.output, composed)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}

/// `kvstash component`: the kvstash component itself, for other hosts.
pub fn component(args: &ComponentArgs) -> anyhow::Result<()> {
    let wasm = match args.storage.as_deref() {
        None => crate::GUEST_WASM.to_vec(),
        Some(name) => crate::run::kvstash_with_storage(&storage_adapter(name)?)
            .context("plugging in the storage adapter")?,
    };
    std::fs::write(&args.output, wasm)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(())
}
