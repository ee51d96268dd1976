//! The `kvstash` command line, one process per command, as a user runs it.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "support/terminal.rs"]
mod terminal;

fn kvstash(data: &Path, args: &[&str]) -> Output {
    kvstash_with(data, args, None)
}

fn kvstash_with(data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    kvstash_bytes(data, args, stdin.unwrap_or_default().as_bytes())
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).unwrap()
}

#[track_caller]
fn ok(o: Output) -> Output {
    assert!(
        o.status.success(),
        "status {:?}, stderr: {}",
        o.status,
        stderr(&o)
    );
    o
}

#[test]
fn set_in_one_process_get_in_another() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(
        dir.path(),
        &["set", "greeting", r#"{"hello":"world"}"#],
    ));
    let got = ok(kvstash(dir.path(), &["get", "greeting"]));
    assert_eq!(stdout(&got), "{\"hello\":\"world\"}\n");
    assert!(
        dir.path().join("kvstash.redb").is_file(),
        "the file backend is the default"
    );
}

#[test]
fn errors_are_one_line_and_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "k", "1"]));
    for (args, needle) in [
        (&["get", "missing"][..], "not found"),
        (&["set", "k", "{broken"][..], "not valid JSON"),
        (&["set", "", "1"][..], "key is empty"),
        (&["--bucket", "", "get", "k"][..], "bucket name is empty"),
        (
            &["--config", r#"{"type":"nope"}"#, "get", "k"][..],
            "unknown backend type",
        ),
        (
            &["--config", "/no/such/file.json", "get", "k"][..],
            "/no/such/file.json",
        ),
    ] {
        let o = kvstash(dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("kvstash: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
        assert!(stdout(&o).is_empty());
    }
    // The failed writes left the stored value alone.
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "k"]))), "1\n");
    let usage = kvstash(dir.path(), &["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn configured_limits_refuse_oversize_input_and_keep_what_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({
        "type": "file",
        "path": dir.path().join("limited.redb"),
        "limits": {"key_bytes": 8, "value_bytes": 64, "depth": 3, "batch": 2}
    })
    .to_string();
    let with = |args: &[&str], stdin: Option<&str>| {
        let mut all = vec!["--config", config.as_str()];
        all.extend_from_slice(args);
        kvstash_with(dir.path(), &all, stdin)
    };
    ok(with(&["set", "k", "[1]"], None));
    let big = format!("\"{}\"", "x".repeat(100));
    let txn = r#"{"mutations":[{"key":"a","set":1},{"key":"b","set":1},{"key":"c","set":1}]}"#;
    for (args, stdin, needle) in [
        (&["set", "123456789", "1"][..], None, "limits.key_bytes"),
        (&["set", "k", &big][..], None, "limits.value_bytes"),
        (
            &["set", "k", "-"][..],
            Some(big.as_str()),
            "limits.value_bytes",
        ),
        (
            &["set", "k", "[[[[1]]]]"][..],
            None,
            "nesting deeper than 3 levels",
        ),
        (&["txn", "-"][..], Some(txn), "limits.batch"),
    ] {
        let o = with(args, stdin);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.starts_with("kvstash: error: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    assert_eq!(stdout(&ok(with(&["get", "k"], None))), "[1]\n");
    assert_eq!(stdout(&ok(with(&["list", "--keys"], None))), "k\n");
    let refused = kvstash(
        dir.path(),
        &[
            "--config",
            r#"{"type":"memory","limits":{"depth":500}}"#,
            "get",
            "k",
        ],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("`$.limits.depth` must be a whole number from 1 to 127"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn odd_bytes_and_odd_keys_from_the_command_line() {
    use std::os::unix::ffi::OsStrExt as _;
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "k", "1"]));
    // A key that is not UTF-8: a usage error, nothing run.
    let o = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(dir.path())
        .args([
            "set".as_ref(),
            std::ffi::OsStr::from_bytes(b"\xff\xfe"),
            "2".as_ref(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("invalid UTF-8"), "{}", stderr(&o));
    // A value on standard input that is not UTF-8: refused as JSON or a
    // string, taken whole as bytes.
    let raw = [0xff, 0xfe, 0x00, b'\n'];
    for form in [&[][..], &["--string"][..]] {
        let mut args = vec!["set", "k", "-"];
        args.extend_from_slice(form);
        let o = kvstash_bytes(dir.path(), &args, &raw);
        assert_eq!(o.status.code(), Some(1), "{form:?}");
        assert!(stderr(&o).contains("not UTF-8 (byte 0)"), "{}", stderr(&o));
    }
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "k"]))), "1\n");
    ok(kvstash_bytes(
        dir.path(),
        &["set", "raw", "-", "--bytes"],
        &raw,
    ));
    assert_eq!(ok(kvstash(dir.path(), &["get", "raw"])).stdout, raw);
    // A key that looks like a path is a key, not a path.
    ok(kvstash(dir.path(), &["set", "../../etc/passwd", "\"x\""]));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "../../etc/passwd"]))),
        "\"x\"\n"
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["kvstash.redb", "kvstash.redb-wal"]);
}

/// `kvstash --data DATA ARGS` with `stdin` as its standard input (and no
/// store or bucket from the environment).
fn kvstash_bytes(data: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(data)
        .args(args)
        .env_remove("KVSTASH_STORE")
        .env_remove("KVSTASH_BUCKET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn value_forms_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(
        dir.path(),
        &["set", "name", "backyard shed sensor", "--string"],
    ));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "name"]))),
        "\"backyard shed sensor\"\n"
    );
    ok(kvstash(
        dir.path(),
        &["set", "raw", "plain bytes", "--bytes"],
    ));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "raw"]))),
        "plain bytes"
    );
    ok(kvstash_with(
        dir.path(),
        &["set", "piped", "-"],
        Some("[1, 5, 42]\n"),
    ));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "piped"]))),
        "[1, 5, 42]\n"
    );
    ok(kvstash(dir.path(), &["delete", "name"]));
    ok(kvstash(dir.path(), &["delete", "name"]));
    assert_eq!(kvstash(dir.path(), &["get", "name"]).status.code(), Some(1));
}

#[test]
fn list_prints_json_lines_in_key_order() {
    let dir = tempfile::tempdir().unwrap();
    for (k, v) in [("b", "2"), ("a", "1"), ("c", "{\"x\":true}")] {
        ok(kvstash(dir.path(), &["set", k, v]));
    }
    ok(kvstash(dir.path(), &["--bucket", "other", "set", "z", "0"]));
    let lines: Vec<serde_json::Value> = stdout(&ok(kvstash(dir.path(), &["list"])))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: Vec<&str> = lines.iter().map(|l| l["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["a", "b", "c"]);
    assert_eq!(lines[2]["value"], serde_json::json!({"x": true}));
    assert!(lines[0]["version"].as_u64().unwrap() >= 1);
    assert_eq!(
        stdout(&ok(kvstash(
            dir.path(),
            &["list", "--keys", "--limit", "2"]
        ))),
        "a\nb\n"
    );
    assert_eq!(
        stdout(&ok(kvstash(
            dir.path(),
            &["list", "--keys", "--prefix", "c"]
        ))),
        "c\n"
    );
}

#[test]
fn export_then_import_reproduces_the_store() {
    let src = tempfile::tempdir().unwrap();
    ok(kvstash(src.path(), &["set", "k1", r#"{"alias":[1,5,42]}"#]));
    ok(kvstash(
        src.path(),
        &["--bucket", "names", "set", "k1", "backyard", "--string"],
    ));
    ok(kvstash(
        src.path(),
        &["--bucket", "blobs", "set", "b", "\u{1}\u{2}", "--bytes"],
    ));
    let export = stdout(&ok(kvstash(src.path(), &["export"])));
    assert_eq!(export.lines().count(), 3);
    let dst = tempfile::tempdir().unwrap();
    let imported = ok(kvstash_with(dst.path(), &["import"], Some(&export)));
    assert!(stderr(&imported).contains("imported 3 records"));
    assert_eq!(stdout(&ok(kvstash(dst.path(), &["export"]))), export);
    // An export to a file, and of a single bucket.
    let file = dst.path().join("names.jsonl");
    let file_arg = file.to_str().unwrap();
    ok(kvstash(
        src.path(),
        &[
            "--bucket",
            "names",
            "export",
            "--only-bucket",
            "-o",
            file_arg,
        ],
    ));
    let names = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        names,
        "{\"bucket\":\"names\",\"key\":\"k1\",\"value\":\"backyard\"}\n"
    );
}

#[test]
fn a_bad_import_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let input =
        "{\"bucket\":\"b\",\"key\":\"ok\",\"value\":1}\n{\"bucket\":\"b\",\"key\":\"bad\"}\n";
    let o = kvstash_with(dir.path(), &["import"], Some(input));
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("line 2"), "{}", stderr(&o));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["export"]))), "");
}

#[test]
fn store_from_environment_and_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("via-env.redb");
    let config = serde_json::json!({"type": "file", "path": path}).to_string();
    let run = |args: &[&str]| {
        let o = Command::new(env!("CARGO_BIN_EXE_kvstash"))
            .args(args)
            .env("KVSTASH_STORE", &config)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        o
    };
    run(&["set", "k", "7"]);
    assert!(path.is_file());
    assert_eq!(stdout(&run(&["get", "k"])), "7\n");
    // The same store named by a configuration file.
    let file = dir.path().join("store.json");
    std::fs::write(&file, &config).unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let got = ok(kvstash(
        elsewhere.path(),
        &["--config", file.to_str().unwrap(), "get", "k"],
    ));
    assert_eq!(stdout(&got), "7\n");
}

#[test]
fn conditional_writes_exit_3_when_they_lose() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "k", "1", "--if-absent"]));
    let lost = kvstash(dir.path(), &["set", "k", "2", "--if-absent"]);
    assert_eq!(lost.status.code(), Some(3));
    assert!(stderr(&lost).contains("conflict"), "{}", stderr(&lost));
    let meta: serde_json::Value =
        serde_json::from_str(&stdout(&ok(kvstash(dir.path(), &["get", "k", "--meta"])))).unwrap();
    assert_eq!(meta["value"], 1);
    assert_eq!(meta["expires_at"], serde_json::Value::Null);
    let version = meta["version"].as_u64().unwrap().to_string();
    assert_eq!(
        kvstash(dir.path(), &["set", "k", "3", "--if-version", "999"])
            .status
            .code(),
        Some(3)
    );
    ok(kvstash(
        dir.path(),
        &["set", "k", "3", "--if-version", &version],
    ));
    assert_eq!(
        kvstash(dir.path(), &["delete", "k", "--if-version", &version])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "k"]))), "3\n");
}

#[test]
fn ttl_increment_and_paths() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(
        dir.path(),
        &["set", "session", "\"x\"", "--ttl", "1h"],
    ));
    let meta: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["get", "session", "--meta"],
    ))))
    .unwrap();
    assert!(
        meta["expires_at"].as_str().unwrap().ends_with('Z'),
        "{meta}"
    );
    let bad_ttl = kvstash(dir.path(), &["set", "s", "1", "--ttl", "10"]);
    assert_eq!(bad_ttl.status.code(), Some(2), "a TTL needs a unit");
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["incr", "n"]))), "1\n");
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["incr", "n", "-5"]))),
        "-4\n"
    );
    ok(kvstash(dir.path(), &["set", "doc", r#"{"x":3}"#]));
    ok(kvstash(
        dir.path(),
        &["path", "set", "doc", "/l", "[0,1,2,3,4]"],
    ));
    ok(kvstash(
        dir.path(),
        &["path", "set", "doc", "/l/4", r#"["a","b","c"]"#],
    ));
    ok(kvstash(
        dir.path(),
        &["path", "append", "doc", "/l/4", r#""d""#],
    ));
    ok(kvstash(dir.path(), &["path", "delete", "doc", "/x"]));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["path", "get", "doc", "/l/4"]))),
        "[\"a\",\"b\",\"c\",\"d\"]\n"
    );
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "doc", "--path", "/l/0"]))),
        "0\n"
    );
    let missing = kvstash(dir.path(), &["path", "get", "doc", "/nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("path not found"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn transactions_from_json() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "limit", "10"]));
    let txn = r#"{
        "checks": [{"key": "limit", "equals": 10}, {"bucket": "locks", "key": "deploy", "absent": true}],
        "mutations": [
            {"key": "limit", "set": 20},
            {"bucket": "stats", "key": "changes", "increment": 1},
            {"bucket": "locks", "key": "deploy", "set": "me", "ttl": "30s"}
        ]
    }"#;
    let version: u64 = stdout(&ok(kvstash_with(dir.path(), &["txn"], Some(txn))))
        .trim()
        .parse()
        .unwrap();
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "limit"]))), "20\n");
    let meta: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["--bucket", "locks", "get", "deploy", "--meta"],
    ))))
    .unwrap();
    assert_eq!(meta["version"], version);
    assert!(meta["expires_at"].is_string());
    // `-` is standard input, as for `set KEY -` and `import -`.
    let dashed = r#"{"mutations": [{"key": "dashed", "set": true}]}"#;
    ok(kvstash_with(dir.path(), &["txn", "-"], Some(dashed)));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "dashed"]))),
        "true\n"
    );
    let records = "{\"bucket\":\"default\",\"key\":\"imported\",\"value\":1}\n";
    ok(kvstash_with(dir.path(), &["import", "-"], Some(records)));
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "imported"]))),
        "1\n"
    );
    // The same transaction again: its checks fail now.
    let lost = kvstash_with(dir.path(), &["txn"], Some(txn));
    assert_eq!(lost.status.code(), Some(3));
    assert!(
        stderr(&lost).contains("check 0 failed"),
        "{}",
        stderr(&lost)
    );
    assert_eq!(
        stdout(&ok(kvstash(
            dir.path(),
            &["--bucket", "stats", "get", "changes"]
        ))),
        "1\n"
    );
    for (bad, needle) in [
        ("[]", "JSON object"),
        (r#"{"checks":[{"key":"k"}]}"#, "needs one of"),
        (
            r#"{"mutations":[{"key":"k","set":1,"delete":true}]}"#,
            "second operation",
        ),
        (r#"{"mutations":[{"key":"k","set":1,"ttl":5}]}"#, "duration"),
        (r#"{"mutation":[]}"#, "unknown field"),
    ] {
        let o = kvstash_with(dir.path(), &["txn"], Some(bad));
        assert_eq!(o.status.code(), Some(1), "{bad}");
        assert!(stderr(&o).contains(needle), "{bad}: {}", stderr(&o));
    }
}

#[test]
fn list_ranges_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    for k in ["a", "b", "c", "d"] {
        ok(kvstash(dir.path(), &["set", k, "1"]));
    }
    assert_eq!(
        stdout(&ok(kvstash(
            dir.path(),
            &["list", "--keys", "--start", "b", "--end", "d"]
        ))),
        "b\nc\n"
    );
    assert_eq!(
        stdout(&ok(kvstash(
            dir.path(),
            &["list", "--keys", "--reverse", "--limit", "3"]
        ))),
        "d\nc\nb\n"
    );
    ok(kvstash(dir.path(), &["set", "brief", "1", "--ttl", "1ms"]));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let swept = ok(kvstash(dir.path(), &["sweep"]));
    assert!(
        stderr(&swept).contains("removed 1 expired keys"),
        "{}",
        stderr(&swept)
    );
}

#[test]
fn watch_replays_from_a_version_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "sensor/1", r#"{"n":1}"#]));
    ok(kvstash(dir.path(), &["set", "other", "0"]));
    ok(kvstash(dir.path(), &["delete", "sensor/1"]));
    let out = stdout(&ok(kvstash(
        dir.path(),
        &["watch", "sensor/", "--since", "0", "--count", "2"],
    )));
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{out}");
    assert_eq!(
        (
            events[0]["event"].as_str(),
            events[0]["value"]["n"].as_i64()
        ),
        (Some("set"), Some(1))
    );
    assert_eq!(events[1]["event"], "delete");
    // Resume after the last event seen: only what came later.
    ok(kvstash(dir.path(), &["set", "sensor/2", "2"]));
    let last = events[1]["version"].as_u64().unwrap().to_string();
    let out = stdout(&ok(kvstash(
        dir.path(),
        &["watch", "--since", &last, "--count", "1"],
    )));
    let event: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        (event["key"].as_str(), event["event"].as_str()),
        (Some("sensor/2"), Some("set"))
    );
}

#[test]
fn locks_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let lease: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["lock", "acquire", "deploy", "--ttl", "1h", "--owner", "ci"],
    ))))
    .unwrap();
    let token = lease["token"].as_u64().unwrap().to_string();
    let held = kvstash(dir.path(), &["lock", "acquire", "deploy", "--ttl", "1h"]);
    assert_eq!(held.status.code(), Some(3));
    assert!(stderr(&held).contains("locked"), "{}", stderr(&held));
    // The holder's expiry as the lease printed it (RFC 3339), not Rust's
    // `SystemTime { tv_sec: … }`.
    let until = lease["expires_at"].as_str().unwrap();
    assert!(
        stderr(&held).contains(&format!("by `ci` until {until}")),
        "{}",
        stderr(&held)
    );
    let status: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["lock", "status", "deploy"],
    ))))
    .unwrap();
    assert_eq!(
        (status["token"].as_u64(), status["owner"].as_str()),
        (lease["token"].as_u64(), Some("ci"))
    );
    // A write fenced by the lease.
    let fenced = format!(
        r#"{{"checks":[{{"lock":"deploy","token":{token}}}],"mutations":[{{"key":"k","set":1}}]}}"#
    );
    ok(kvstash_with(dir.path(), &["txn"], Some(&fenced)));
    ok(kvstash(
        dir.path(),
        &["lock", "renew", "deploy", &token, "--ttl", "2h"],
    ));
    ok(kvstash(dir.path(), &["lock", "release", "deploy", &token]));
    assert_eq!(
        kvstash(dir.path(), &["lock", "release", "deploy", &token])
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        kvstash_with(dir.path(), &["txn"], Some(&fenced))
            .status
            .code(),
        Some(3)
    );
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["lock", "status", "deploy"]))),
        "null\n"
    );
}

#[test]
fn typed_buckets_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let schema =
        r#"{"type":"object","required":["alias"],"properties":{"alias":{"type":"array"}}}"#;
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["-b", "dev", "schema", "get"]))),
        "null\n"
    );
    ok(kvstash(dir.path(), &["-b", "dev", "schema", "set", schema]));
    let got: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["-b", "dev", "schema", "get"],
    ))))
    .unwrap();
    assert_eq!(got["version"], 1);
    ok(kvstash(
        dir.path(),
        &["-b", "dev", "set", "s1", r#"{"alias":[1,5,42]}"#],
    ));
    let bad = kvstash(dir.path(), &["-b", "dev", "set", "s2", r#"{"name":"x"}"#]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("missing required member `alias`"),
        "{}",
        stderr(&bad)
    );
    ok(kvstash(dir.path(), &["-b", "dev", "schema", "remove"]));
    ok(kvstash(
        dir.path(),
        &["-b", "dev", "set", "s2", r#"{"name":"x"}"#],
    ));
    let refused = kvstash(dir.path(), &["-b", "dev", "schema", "set", schema]);
    assert!(
        stderr(&refused).contains("existing value `s2`"),
        "{}",
        stderr(&refused)
    );
    ok(kvstash(
        dir.path(),
        &["-b", "dev", "schema", "set", schema, "--force"],
    ));
}

#[test]
fn undo_and_redo_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["history", "--keep", "10"]))),
        "{\"redoable\":0,\"undoable\":0}\n"
    );
    ok(kvstash(dir.path(), &["set", "k", "1"]));
    ok(kvstash(dir.path(), &["set", "k", "2"]));
    ok(kvstash(dir.path(), &["undo"]));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "k"]))), "1\n");
    ok(kvstash(dir.path(), &["redo"]));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "k"]))), "2\n");
    ok(kvstash(dir.path(), &["history", "--off"]));
    let nothing = kvstash(dir.path(), &["undo"]);
    assert_eq!(nothing.status.code(), Some(1));
    assert!(
        stderr(&nothing).contains("no change to undo"),
        "{}",
        stderr(&nothing)
    );
}

#[test]
fn an_import_a_schema_refuses_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(
        dir.path(),
        &[
            "-b",
            "dev",
            "schema",
            "set",
            r#"{"type":"object","required":["alias"]}"#,
        ],
    ));
    let input = concat!(
        "{\"bucket\":\"other\",\"key\":\"a\",\"value\":1}\n",
        "{\"bucket\":\"dev\",\"key\":\"ok\",\"value\":{\"alias\":[1]}}\n",
        "{\"bucket\":\"dev\",\"key\":\"bad\",\"value\":{\"name\":\"x\"}}\n",
    );
    let o = kvstash_with(dir.path(), &["import"], Some(input));
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("`bad`") && stderr(&o).contains("alias"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["export"]))),
        "",
        "nothing was written"
    );
}

#[test]
fn bench_measures_every_built_in_subject_and_leaves_the_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let scratch_arg = scratch.path().to_str().unwrap();
    let out = ok(kvstash(
        dir.path(),
        &[
            "bench",
            "--sizes",
            "300",
            "--rounds",
            "1",
            "--ops",
            "400",
            "--dir",
            scratch_arg,
        ],
    ));
    let table = stdout(&out);
    for subject in ["hashmap", "kvstash-memory", "kvstash-file"] {
        let row = table
            .lines()
            .find(|l| l.starts_with(&format!("| {subject} | 300 |")))
            .unwrap_or_else(|| panic!("no row for {subject}:\n{table}"));
        assert!(!row.contains("failed") && !row.contains("skipped"), "{row}");
    }
    assert!(table.contains("64 concurrent writers:"), "{table}");
    assert!(table.contains("us CPU per put: "), "{table}");
    assert!(
        !dir.path().join("kvstash.redb").exists(),
        "bench must not create or touch the user's store"
    );
    let unknown = kvstash(
        dir.path(),
        &[
            "bench",
            "--one",
            "nope",
            "--sizes",
            "10",
            "--dir",
            scratch_arg,
        ],
    );
    assert!(!unknown.status.success());
    assert!(stderr(&unknown).contains("unknown subject `nope`"));
    let zero = kvstash(dir.path(), &["bench", "--sizes", "0,10"]);
    assert!(!zero.status.success());
    assert!(stderr(&zero).contains("--sizes: give key counts of at least 1"));
}

#[test]
fn read_commands_leave_the_file_byte_for_byte_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "alias", "[1,5,42]"]));
    ok(kvstash(
        dir.path(),
        &["--bucket", "names", "set", "alias", "\"shed\""],
    ));
    let file = dir.path().join("kvstash.redb");
    let before = std::fs::read(&file).unwrap();
    for args in [
        &["get", "alias"][..],
        &["get", "alias", "--meta"],
        &["get", "alias", "--path", "/1"],
        &["path", "get", "alias", "/2"],
        &["list"],
        &["export"],
        &["schema", "get"],
        &["lock", "status", "deploy"],
    ] {
        ok(kvstash(dir.path(), args));
        assert!(
            std::fs::read(&file).unwrap() == before,
            "`kvstash {}` changed the file",
            args.join(" ")
        );
    }
    assert_eq!(
        stdout(&ok(kvstash(dir.path(), &["get", "alias"]))),
        "[1,5,42]\n"
    );
    // A write after the reads still works, and a missing store reads as empty.
    ok(kvstash(dir.path(), &["set", "alias", "[2]"]));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "alias"]))), "[2]\n");
    let empty = tempfile::tempdir().unwrap();
    let missing = kvstash(empty.path(), &["get", "alias"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("not found"),
        "{}",
        stderr(&missing)
    );
    assert_eq!(stdout(&ok(kvstash(empty.path(), &["list"]))), "");
}

#[test]
fn info_names_the_build_and_where_its_component_came_from() {
    let dir = tempfile::tempdir().unwrap();
    let info: serde_json::Value =
        serde_json::from_str(&stdout(&ok(kvstash(dir.path(), &["info"])))).unwrap();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let backends = info["backends"].as_array().unwrap();
    assert!(backends.contains(&"file".into()) && backends.contains(&"memory".into()));
    // This (default) build compiles, or reuses the cache of an earlier start.
    let component = info["component"].as_str().unwrap();
    assert!(["compiled", "cache"].contains(&component), "{info}");
    assert!(
        info["features"]
            .as_array()
            .unwrap()
            .contains(&"compiler".into())
    );
}

#[test]
fn precompile_writes_an_artifact_and_what_it_was_made_for() {
    let dir = tempfile::tempdir().unwrap();
    for target in ["aarch64-unknown-linux-gnu", "armv7-unknown-linux-gnueabihf"] {
        let out = dir.path().join(format!("{target}.cwasm"));
        ok(kvstash(
            dir.path(),
            &[
                "precompile",
                "--target",
                target,
                "-o",
                out.to_str().unwrap(),
            ],
        ));
        let cwasm = std::fs::read(&out).unwrap();
        assert_eq!(&cwasm[..4], b"\x7fELF", "{target}: not a wasmtime artifact");
        let stamp =
            std::fs::read_to_string(dir.path().join(format!("{target}.cwasm.stamp"))).unwrap();
        assert!(stamp.contains(&format!("\ntarget={target}\n")), "{stamp}");
        let guest = stamp.lines().next().unwrap();
        assert!(guest.starts_with("guest=") && guest.len() == 70, "{stamp}");
    }
    let bad = kvstash(
        dir.path(),
        &[
            "precompile",
            "--target",
            "mips-unknown-linux-gnu",
            "-o",
            "x.cwasm",
        ],
    );
    assert!(!bad.status.success());
    assert!(
        stderr(&bad).contains("cannot precompile for `mips-unknown-linux-gnu`"),
        "{}",
        stderr(&bad)
    );
}

/// A Python with TinyDB and jk_keyvaluestore (the stores the seeds moved
/// off), installed on first use into `target/migrate-venv`.
fn python_with_peers() -> std::path::PathBuf {
    kvstash_test_servers::python_venv(
        "migrate-venv",
        &["tinydb==4.9.0", "jk_keyvaluestore==0.2019.9.17.1"],
    )
}

fn python(py: &Path, script: &str, args: &[&Path]) -> String {
    let out = Command::new(py)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", stderr(&out));
    stdout(&out)
}

/// Every table of a TinyDB file as TinyDB itself reads it: {table: {id: doc}}.
const TINYDB_DUMP: &str = r#"
import json, sys
from tinydb import TinyDB
db = TinyDB(sys.argv[1])
print(json.dumps({t: {str(d.doc_id): dict(d) for d in db.table(t).all()} for t in sorted(db.tables())}, sort_keys=True))
"#;

#[test]
fn a_tinydb_file_moves_into_kvstash_and_back() {
    let py = python_with_peers();
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("connector.json");
    // The seed's device connector: aliases and display names, written by
    // TinyDB itself (with a removed document, so ids have a gap).
    python(
        &py,
        r#"
import sys
from tinydb import TinyDB, Query
db = TinyDB(sys.argv[1])
db.insert({"alias": "environment_sensor_1", "id": [1, 5, 42]})
db.insert({"alias": "old", "id": [9]})
db.insert({"alias": "door", "id": [2, 7]})
db.remove(Query().alias == "old")
names = db.table("names")
names.insert({"alias": "environment_sensor_1", "name": "backyard shed sensor"})
names.insert({"alias": "door", "name": "Front door \u00e9"})
db.close()
"#,
        &[&original],
    );
    let data = dir.path().join("store");
    let imported = ok(kvstash(
        &data,
        &["import", "--from", "tinydb", original.to_str().unwrap()],
    ));
    assert!(
        stderr(&imported).contains("imported 4 records"),
        "{}",
        stderr(&imported)
    );
    // Each table is the bucket of the same name; documents keep their text.
    assert_eq!(
        stdout(&ok(kvstash(&data, &["--bucket", "_default", "get", "1"]))),
        "{\"alias\": \"environment_sensor_1\", \"id\": [1, 5, 42]}\n"
    );
    assert_eq!(
        stdout(&ok(kvstash(
            &data,
            &["--bucket", "names", "get", "1", "--path", "/name"]
        ))),
        "\"backyard shed sensor\"\n"
    );
    assert!(
        !kvstash(&data, &["get", "2"]).status.success(),
        "removed documents stay removed"
    );
    // And back: TinyDB reads the export as it read the original.
    let back = dir.path().join("back.json");
    ok(kvstash(
        &data,
        &["export", "--format", "tinydb", "-o", back.to_str().unwrap()],
    ));
    let want = python(&py, TINYDB_DUMP, &[&original]);
    assert_eq!(python(&py, TINYDB_DUMP, &[&back]), want);
    // Byte for byte, even: TinyDB wrote these tables in name order.
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        std::fs::read_to_string(&original).unwrap()
    );
    // A failed export leaves the file it would have replaced alone.
    ok(kvstash(&data, &["--bucket", "names", "set", "alias", "{}"]));
    let refused = kvstash(
        &data,
        &["export", "--format", "tinydb", "-o", back.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        std::fs::read_to_string(&original).unwrap()
    );
    let leftovers = std::fs::read_dir(dir.path()).unwrap().filter(|e| {
        e.as_ref()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .ends_with(".tmp")
    });
    assert_eq!(leftovers.count(), 0);
    assert!(want.contains("backyard shed sensor"), "{want}");
    // TinyDB keeps inserting after the largest id it finds.
    let next = python(
        &py,
        "import sys\nfrom tinydb import TinyDB\nprint(TinyDB(sys.argv[1]).insert({'alias': 'new'}))",
        &[&back],
    );
    assert_eq!(next.trim(), "4");
}

#[test]
fn what_tinydb_cannot_hold_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("store");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"_default":{"1":{"a":1},"x":{"b":2}}}"#).unwrap();
    let refused = kvstash(
        &data,
        &["import", "--from", "tinydb", bad.to_str().unwrap()],
    );
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("`x` is not a TinyDB document id"),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        stdout(&ok(kvstash(&data, &["list"]))),
        "",
        "nothing was written"
    );
    ok(kvstash(&data, &["set", "greeting", "{\"hello\":1}"]));
    let out = dir.path().join("out.json");
    let refused = kvstash(
        &data,
        &["export", "--format", "tinydb", "-o", out.to_str().unwrap()],
    );
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("key `greeting` in bucket `default` is not a TinyDB document id"),
        "{}",
        stderr(&refused)
    );
}

#[test]
fn a_jk_keyvaluestore_directory_moves_into_a_bucket() {
    let py = python_with_peers();
    let dir = tempfile::tempdir().unwrap();
    let jk = dir.path().join("jk");
    std::fs::create_dir(&jk).unwrap();
    // Two writer instances on one directory, as the library intends.
    python(
        &py,
        r#"
import sys, time
from jk_keyvaluestore import DirBasedKeyValueStore as S
a = S(sys.argv[1], "a")
b = S(sys.argv[1], "b")
a.put("environment_sensor_1", [1, 5, 42])
a.put("display", {"environment_sensor_1": "backyard shed sensor"})
a.put("gone", "soon")
time.sleep(0.01)
b.synchronize()
b.put("display", {"environment_sensor_1": "garden shed"})
b.remove("gone")
b.put("count", 3)
"#,
        &[&jk],
    );
    let data = dir.path().join("store");
    ok(kvstash(
        &data,
        &[
            "--bucket",
            "devices",
            "import",
            "--from",
            "jk-dir",
            jk.to_str().unwrap(),
        ],
    ));
    let listed = stdout(&ok(kvstash(&data, &["--bucket", "devices", "list"])));
    let got: std::collections::BTreeMap<String, serde_json::Value> = listed
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["key"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect();
    // What the library itself reads from the directory.
    let want = python(
        &py,
        "import sys, json\nfrom jk_keyvaluestore import DirBasedKeyValueStore as S\ns = S(sys.argv[1])\nprint(json.dumps({k: s.get(k) for k in s.keys()}))",
        &[&jk],
    );
    let want: std::collections::BTreeMap<String, serde_json::Value> =
        serde_json::from_str(&want).unwrap();
    assert_eq!(got, want);
    assert_eq!(want["display"]["environment_sensor_1"], "garden shed");
    assert!(!want.contains_key("gone"));
}

/// Starts `kvstash --data DIR ARGS…` in the background, its output piped.
fn spawn_kvstash(dir: &Path, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(dir)
        .args(args)
        .env_remove("KVSTASH_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until a holder serves the store in `dir`; returns its socket.
fn wait_until_served(dir: &Path) -> std::path::PathBuf {
    let socket = dir.join("kvstash.redb.sock");
    let started = std::time::Instant::now();
    while !socket.exists() {
        assert!(started.elapsed().as_secs() < 30, "the holder never served");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    socket
}

/// The keys a `kvstash watch` that has exited printed events for.
fn watched_keys(watch: std::process::Child) -> Vec<String> {
    let out = watch.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let event: serde_json::Value = serde_json::from_str(l).unwrap();
            event["key"].as_str().unwrap().to_string()
        })
        .collect()
}

/// While one process holds a file store (here a `watch`), others use it
/// through the holder's socket: writes, conditional writes and reads, and
/// the holder's watcher sees their commits.
#[test]
fn other_processes_use_a_store_that_one_holds() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    assert!(
        !dir.path().join("kvstash.redb.sock").exists(),
        "a process that exited leaves no socket"
    );
    let watch = spawn_kvstash(dir.path(), &["watch", "--since", "1", "--count", "2"]);
    let socket = wait_until_served(dir.path());
    ok(kvstash(dir.path(), &["set", "b", "2"]));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "a"]))).trim(), "1");
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "b"]))).trim(), "2");
    // A conditional write through the holder keeps its meaning.
    let o = kvstash(dir.path(), &["set", "a", "5", "--if-absent"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    ok(kvstash(dir.path(), &["set", "c", "3"]));
    assert_eq!(watched_keys(watch), ["b", "c"]);
    assert!(!socket.exists(), "the holder removed its socket");
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "c"]))).trim(), "3");
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "a"]))).trim(), "1");
}

/// A process using a held store is told of commits as the holder's own
/// watchers are: a watcher that would otherwise ask again only after an
/// hour sees another process's write at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_is_told_of_commits() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    let mut holder = spawn_kvstash(dir.path(), &["watch", "--since", "1"]);
    wait_until_served(dir.path());
    let config = serde_json::json!({"type": "file", "path": dir.path().join("kvstash.redb")});
    let store = kvstash::Store::open(&config.to_string()).await.unwrap();
    let options = kvstash::WatchOptions {
        poll_interval: std::time::Duration::from_secs(3600),
        ..Default::default()
    };
    let mut events = Box::pin(store.bucket("default").watch(options).await.unwrap());
    for (key, value) in [("b", "2"), ("c", "3")] {
        // The write lands while the watcher waits (had it landed first, the
        // watcher would find it without being told).
        let write = async {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            let dir = dir.path().to_path_buf();
            let args = ["set", key, value];
            tokio::task::spawn_blocking(move || ok(kvstash(&dir, &args)))
                .await
                .unwrap();
        };
        let next = tokio::time::timeout(std::time::Duration::from_secs(60), events.next());
        let (event, ()) = tokio::join!(next, write);
        let event = event
            .expect("the commit is announced, not found an hour later")
            .unwrap()
            .unwrap();
        assert_eq!(event.key, key);
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
}

/// A store whose socket path is longer than a socket address holds (108
/// bytes) is shared all the same.
#[test]
fn a_store_with_a_long_path_is_shared() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("a".repeat(60)).join("b".repeat(60));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(dir.join("kvstash.redb.sock").as_os_str().len() > 108);
    ok(kvstash(&dir, &["set", "a", "1"]));
    let watch = spawn_kvstash(&dir, &["watch", "--since", "1", "--count", "1"]);
    let socket = wait_until_served(&dir);
    ok(kvstash(&dir, &["set", "b", "2"]));
    assert_eq!(stdout(&ok(kvstash(&dir, &["get", "a"]))).trim(), "1");
    assert_eq!(watched_keys(watch), ["b"]);
    assert!(!socket.exists(), "the holder removed its socket");
}

/// A holder killed with SIGKILL leaves its socket file behind but not its
/// lock: the next process opens the store itself and serves it again.
#[test]
fn a_killed_holder_leaves_the_store_openable() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    let mut holder = spawn_kvstash(dir.path(), &["watch", "--since", "1"]);
    let socket = wait_until_served(dir.path());
    ok(kvstash(dir.path(), &["set", "b", "2"]));
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(socket.exists(), "SIGKILL leaves the socket file");
    ok(kvstash(dir.path(), &["set", "c", "3"]));
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "b"]))).trim(), "2");
    assert_eq!(stdout(&ok(kvstash(dir.path(), &["get", "c"]))).trim(), "3");
    assert!(
        !socket.exists(),
        "the next holder removed it when it closed"
    );
}

/// A process using the store through a holder that dies goes on: its next
/// call reaches the new holder, or takes the store over itself.
#[test]
fn a_client_outlives_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    let mut holder = spawn_kvstash(dir.path(), &["watch", "--since", "1"]);
    wait_until_served(dir.path());
    // A second watcher: a client of the holder.
    let client = spawn_kvstash(dir.path(), &["watch", "--since", "1", "--count", "2"]);
    ok(kvstash(dir.path(), &["set", "k1", "1"]));
    std::thread::sleep(std::time::Duration::from_millis(300));
    holder.kill().unwrap();
    holder.wait().unwrap();
    ok(kvstash(dir.path(), &["set", "k2", "2"]));
    assert_eq!(watched_keys(client), ["k1", "k2"]);
}

/// Sockets a process has open.
fn open_sockets(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .is_ok_and(|to| to.to_string_lossy().starts_with("socket:"))
                })
                .count()
        })
        .unwrap_or(0)
}

/// A child process killed when dropped, so a failed assertion leaves none
/// behind.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Watchers in other processes that go away cost the holder nothing: it
/// closes their notification feeds at once, not at its next commit.
#[test]
fn watchers_that_leave_free_the_holders_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    let holder = Killed(spawn_kvstash(dir.path(), &["watch", "--since", "1"]));
    wait_until_served(dir.path());
    let pid = holder.0.id();
    // The socket file appears once it is bound, which may be before the
    // holder made every socket it keeps (once it failed with 5 against 4
    // "idle"): idle is a count that held still for 200 ms.
    let idle = {
        let mut last = open_sockets(pid);
        loop {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let now = open_sockets(pid);
            if now == last {
                break now;
            }
            last = now;
        }
    };
    let wait_for = |what: &str, done: &dyn Fn(usize) -> bool| {
        let started = std::time::Instant::now();
        loop {
            let now = open_sockets(pid);
            if done(now) {
                return;
            }
            assert!(
                started.elapsed().as_secs() < 30,
                "{what}: the holder has {now} sockets, {idle} when idle"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let watchers: Vec<_> = (0..8)
        .map(|_| Killed(spawn_kvstash(dir.path(), &["watch"])))
        .collect();
    // Each watcher has a connection for its calls and one for its feed.
    wait_for("the watchers connect", &|n| n >= idle + 16);
    drop(watchers);
    wait_for("the watchers left", &|n| n <= idle);
}

/// A read-only client whose holder goes away reads the store itself, but
/// does not keep it: a writer starting then takes the store, and the
/// client sees what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_client_leaves_the_store_to_writers() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash(dir.path(), &["set", "a", "1"]));
    let mut holder = Killed(spawn_kvstash(dir.path(), &["watch", "--since", "1"]));
    wait_until_served(dir.path());
    // Opened read-only, as the CLI's read commands open a store.
    let mut registry = kvstash::Registry::default();
    registry.register("file", |config| {
        let mut config = kvstash::backend::FileConfig::from_json(config)?;
        config.read_only = true;
        kvstash::backend::open_file(&config)
    });
    let options = kvstash::StoreOptions {
        registry,
        sweep_interval: None,
        ..kvstash::StoreOptions::default()
    };
    let config = serde_json::json!({
        "type": "file",
        "path": dir.path().join("kvstash.redb"),
        "read_only": true,
    });
    let store = kvstash::Store::open_with(&config.to_string(), options)
        .await
        .unwrap();
    let watch = kvstash::WatchOptions {
        poll_interval: std::time::Duration::from_millis(100),
        ..Default::default()
    };
    let mut events = Box::pin(store.bucket("default").watch(watch).await.unwrap());
    let reader = tokio::spawn(async move {
        let event = events.next().await.unwrap().unwrap();
        event.key
    });
    holder.0.kill().unwrap();
    holder.0.wait().unwrap();
    // The reader notices at once and goes on polling the store itself.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let dir_path = dir.path().to_path_buf();
    let wrote = tokio::task::spawn_blocking(move || kvstash(&dir_path, &["set", "b", "2"]))
        .await
        .unwrap();
    assert!(
        wrote.status.success(),
        "a writer after the holder: {}",
        String::from_utf8_lossy(&wrote.stderr)
    );
    let key = tokio::time::timeout(std::time::Duration::from_secs(30), reader)
        .await
        .expect("the reader sees the write")
        .unwrap();
    assert_eq!(key, "b");
}

/// `kvstash shell` driven through a pseudo-terminal, as a person types:
/// Tab completes a command and a key, history recalls a line, JSON prints
/// indented, errors do not end the shell, and what it wrote is there for
/// the next process.
#[cfg(feature = "shell")]
#[test]
fn the_shell_completes_commands_and_keys_at_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    ok(kvstash_with(
        dir.path(),
        &["--bucket", "names", "set", "environment_sensor_1", "-"],
        Some(r#"{"name":"backyard shed sensor","alias":[1,5,42]}"#),
    ));
    // A pseudo-terminal (host/tests/support/terminal.py) gives the shell a
    // terminal; the script types one line at a time and waits for the
    // prompt before the next.
    let script = r#"
term = Terminal([sys.argv[1], "--data", sys.argv[2], "shell"])
term.until(b"kvstash:default> ")
term.typed(b"use names\r", b"kvstash:names> ")
# "ge<Tab>" completes to "get ", "env<Tab>" to the key.
term.typed(b"ge\t", b"get ")
term.typed(b"env\t", b"environment_sensor_1 ")
out = term.typed(b"\r", b"kvstash:names> ")
assert b'"name": "backyard shed sensor"' in out, out
assert b'\r\n  "alias": [' in out or b'\n  "alias": [' in out, out
term.typed(b"frobnicate\r", b"kvstash:names> ")
term.typed(b"set display '\"front porch\"'\r", b"kvstash:names> ")
# Up-arrow recalls the last line; edit it into a get of the new key.
term.typed(b"\x1b[A", b"front porch")
term.typed(b"\x15get display\r", b"kvstash:names> ")
sys.exit(term.exit(b"exit\r"))
"#;
    terminal::run(script, &[dir.path().as_os_str()], &[]);
    let got = stdout(&ok(kvstash(
        dir.path(),
        &["--bucket", "names", "get", "display"],
    )));
    assert_eq!(got.trim(), "\"front porch\"");
    let history = std::fs::read_to_string(dir.path().join("shell_history")).unwrap();
    assert!(history.contains("use names"), "{history}");
}

/// The caching layer's counters, as `kvstash stats` prints them in a shell
/// (one store open for the whole session, so they count what it did):
/// write-through, the least recently used culled, a hit, a miss.
#[cfg(feature = "shell")]
#[test]
fn the_shells_stats_count_the_caches_hits_misses_and_evictions() {
    let dir = tempfile::tempdir().unwrap();
    let config = serde_json::json!({"type": "caching",
        "main": {"type": "file", "path": dir.path().join("s.redb")},
        "policy": {"max_entries": 2, "cull_to_percent": 50, "timeout_ms": 600000}})
    .to_string();
    let script = r#"
term = Terminal([sys.argv[1], "--data", sys.argv[2], "--config", sys.argv[3], "shell"])
prompt = b"kvstash:default> "
term.until(prompt)
for line in [b"set a 1", b"set b 2", b"set c 3", b"get c", b"get a"]:
    term.typed(line + b"\r", prompt)
out = term.typed(b"stats\r", prompt)
sys.stdout.write(out.decode(errors="replace"))
sys.exit(term.exit(b"exit\r"))
"#;
    let shown = terminal::run(script, &[dir.path().as_os_str(), config.as_ref()], &[]);
    // The third set went past 2 entries: culled to 1 (c), a and b evicted;
    // `get c` hit, `get a` missed.
    let stats: serde_json::Value = shown
        .lines()
        .find_map(|line| serde_json::from_str(line.trim()).ok())
        .unwrap_or_else(|| panic!("no stats in:\n{shown}"));
    let cache = &stats["caches"][0];
    assert_eq!(
        (
            &cache["hits"],
            &cache["misses"],
            &cache["evictions"],
            &cache["entries"]
        ),
        (
            &serde_json::json!(1),
            &serde_json::json!(1),
            &serde_json::json!(2),
            &serde_json::json!(2)
        ),
        "{stats}"
    );
}

/// A layered configuration is checked whole before anything opens, and
/// its errors name the offending field by its path.
#[test]
fn a_bad_configuration_tree_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let from = dir.path().join("from.redb");
    let to = dir.path().join("to.redb");
    let cases = [
        (
            serde_json::json!({"type": "caching", "main": {"type": "file", "path": from, "cache_mb": 0}}),
            "`$.main`: file backend configuration: `cache_mb` must be a whole number of MiB",
        ),
        (
            serde_json::json!({"type": "caching", "main": {"type": "memory"}, "policy": {"timeout": 5}}),
            "`$.policy.timeout` is not a policy field",
        ),
        (
            serde_json::json!({"type": "caching", "main": {"type": "memory"},
                   "buckets": {"sessions": {"max_entries": -1}}}),
            "`$.buckets.sessions.max_entries` must be a whole number",
        ),
        (
            serde_json::json!({"type": "caching", "main": {"type": "memory", "prefix": ""}}),
            "`$.main.prefix` must be a non-empty string",
        ),
        (
            // The first leaf is fine, the second is not: neither opens.
            serde_json::json!({"type": "migrating", "from": {"type": "file", "path": from},
                   "to": {"type": "file", "path": to, "retention": "all"}}),
            "`$.to`: file backend configuration",
        ),
        (
            serde_json::json!({"type": "migrating", "from": {"type": "file", "path": from},
                   "to": {"type": "etcdd"}}),
            "`$.to`: unknown backend type `etcdd`",
        ),
        (
            serde_json::json!({"type": "migrating", "from": {"type": "file", "path": from},
                   "to": {"type": "caching", "main": {"type": "file", "path": to}}}),
            "`$.to` is a caching layer inside a migrating layer",
        ),
    ];
    for (config, needle) in cases {
        let o = kvstash(dir.path(), &["--config", &config.to_string(), "get", "k"]);
        assert!(!o.status.success(), "{config}");
        let e = stderr(&o);
        assert!(e.contains("invalid store configuration"), "{config}: {e}");
        assert!(e.contains(needle), "{config}: {e}");
        assert_eq!(e.lines().count(), 1, "one line: {e}");
    }
    assert!(!from.exists() && !to.exists(), "nothing was opened");
}

/// `kvstash stats` prints the caching layers' counters.
#[test]
fn stats_prints_the_caching_counters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.redb");
    let config =
        serde_json::json!({"type": "caching", "main": {"type": "file", "path": path}}).to_string();
    ok(kvstash(dir.path(), &["--config", &config, "set", "k", "1"]));
    let stats: serde_json::Value = serde_json::from_str(&stdout(&ok(kvstash(
        dir.path(),
        &["--config", &config, "stats"],
    ))))
    .unwrap();
    let caches = stats["caches"].as_array().unwrap();
    assert_eq!(caches.len(), 1, "{stats}");
    assert_eq!(caches[0]["layer"], "$");
    for counter in [
        "hits",
        "misses",
        "evictions",
        "invalidations",
        "syncs",
        "entries",
        "bytes",
    ] {
        assert!(caches[0][counter].is_u64(), "{counter}: {stats}");
    }
    assert!(stats["storage"]["get"]["calls"].is_u64(), "{stats}");
    // Without a caching layer there are none.
    let plain: serde_json::Value =
        serde_json::from_str(&stdout(&ok(kvstash(dir.path(), &["stats"])))).unwrap();
    assert_eq!(plain["caches"], serde_json::json!([]));
}

/// `kvstash migrate --config {migrating} …`, with `--data dir`.
fn migrate(dir: &Path, config: &str, args: &[&str]) -> Output {
    let mut all = vec!["--config", config, "migrate"];
    all.extend_from_slice(args);
    kvstash(dir, &all)
}

/// Every record of a store, as `kvstash export` prints them, in order.
fn exported(dir: &Path, config: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout(&ok(kvstash(dir, &["--config", config, "export"])))
        .lines()
        .map(String::from)
        .collect();
    lines.sort();
    lines
}

/// Imports `n` records `{key}{i}` = i into `bucket` of the store `config`.
fn preload(dir: &Path, config: &serde_json::Value, bucket: &str, key: &str, n: usize) {
    let lines: String = (0..n)
        .map(|i| format!("{{\"bucket\":\"{bucket}\",\"key\":\"{key}{i}\",\"value\":{i}}}\n"))
        .collect();
    let input = dir.join("in.jsonl");
    std::fs::write(&input, lines).unwrap();
    let input = input.to_str().unwrap();
    ok(kvstash(
        dir,
        &["--config", &config.to_string(), "import", input],
    ));
}

/// A live migration, as the seed describes it: services write through
/// the migrating layer (here, other processes, one `set` each) while
/// `kvstash migrate` copies; it ends verified, `to` equal to `from`, and
/// every acknowledged write in `to` with its last value.
fn a_migration_under_writes_from_other_processes(to: serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let from = serde_json::json!({"type": "file", "path": dir.path().join("from.redb")});
    let config = serde_json::json!({"type": "migrating", "from": from, "to": to}).to_string();
    preload(dir.path(), &from, "aliases", "sensor", 1500);

    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writes = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writer = {
        let (dir, config, done) = (dir.path().to_path_buf(), config.clone(), done.clone());
        let writes = writes.clone();
        std::thread::spawn(move || {
            let mut acked = std::collections::BTreeMap::new();
            let mut i = 0u64;
            while !done.load(std::sync::atomic::Ordering::Relaxed) || i < 10 {
                // Spread over the key range: ahead of the copy and behind it.
                let key = format!("sensor{}", (i * 389) % 1700);
                let o = kvstash(
                    &dir,
                    &[
                        "--config",
                        &config,
                        "-b",
                        "aliases",
                        "set",
                        &key,
                        &format!("\"w{i}\""),
                    ],
                );
                assert!(o.status.success(), "{}", stderr(&o));
                acked.insert(key, format!("\"w{i}\""));
                writes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            acked
        })
    };
    let o = migrate(dir.path(), &config, &["--batch", "50", "--rate", "600"]);
    let during = writes.load(std::sync::atomic::Ordering::Relaxed);
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["verified"], true, "{summary}");
    assert!(during >= 5, "writes overlapped the migration: {during}");

    // The writes after the migration ended went through the layer too: the
    // two are equal, and every acknowledged write is in `to`.
    let to = config_of(&config, "to");
    assert_eq!(
        exported(dir.path(), &to),
        exported(dir.path(), &from.to_string())
    );
    for (key, value) in &acked {
        let got = stdout(&ok(kvstash(
            dir.path(),
            &["--config", &to, "-b", "aliases", "get", key],
        )));
        assert_eq!(got.trim(), value, "{key}");
    }
    // A verification alone finds nothing to do.
    let again = ok(migrate(dir.path(), &config, &["--verify-only"]));
    assert!(
        stdout(&again).contains("\"verified\":true"),
        "{}",
        stdout(&again)
    );
}

/// A migration between two file stores in `dir`: `from`, `to`, and the
/// migrating configuration over them (JSON text).
fn file_to_file(dir: &Path) -> (serde_json::Value, serde_json::Value, String) {
    let from = serde_json::json!({"type": "file", "path": dir.join("from.redb")});
    let to = serde_json::json!({"type": "file", "path": dir.join("to.redb")});
    let config = serde_json::json!({"type": "migrating", "from": from, "to": to}).to_string();
    (from, to, config)
}

/// The `to` (or `from`) child of a migrating configuration, as JSON text.
fn config_of(config: &str, side: &str) -> String {
    let tree: serde_json::Value = serde_json::from_str(config).unwrap();
    tree[side].to_string()
}

#[test]
fn a_file_to_file_migration_under_load_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    a_migration_under_writes_from_other_processes(
        serde_json::json!({"type": "file", "path": dir.path().join("to.redb")}),
    );
}

#[test]
fn a_file_to_etcd_migration_under_load_loses_nothing() {
    let Some(etcd) = kvstash_test_servers::Etcd::shared() else {
        return;
    };
    let namespace = kvstash_test_servers::unique("migrate");
    a_migration_under_writes_from_other_processes(
        serde_json::json!({"type": "etcd", "endpoints": etcd.endpoints(), "namespace": namespace}),
    );
}

/// An interrupted migration resumes from its checkpoint, and one for
/// another configuration is refused.
#[test]
fn an_interrupted_migration_resumes_from_its_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to, config) = file_to_file(dir.path());
    preload(dir.path(), &from, "b", "k", 600);
    let mut run = spawn_kvstash(
        dir.path(),
        &[
            "--config", &config, "migrate", "--batch", "20", "--rate", "200",
        ],
    );
    let checkpoint = dir.path().join("migrate.json");
    let started = Instant::now();
    let copied = loop {
        let state: Option<serde_json::Value> = std::fs::read_to_string(&checkpoint)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        if let Some(state) = state
            && state["records"].as_u64().unwrap_or(0) >= 100
        {
            break state["records"].as_u64().unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(20));
    };
    run.kill().unwrap();
    run.wait().unwrap();
    assert!(copied < 600, "interrupted mid-way: {copied}");
    // Another configuration's migration does not take this checkpoint.
    let other = serde_json::json!({"type": "migrating", "from": from,
        "to": {"type": "file", "path": dir.path().join("elsewhere.redb")}});
    let refused = migrate(dir.path(), &other.to_string(), &[]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("another configuration's migration"),
        "{}",
        stderr(&refused)
    );

    let o = ok(migrate(dir.path(), &config, &["--batch", "100"]));
    assert!(
        stderr(&o).contains("resuming the migration"),
        "{}",
        stderr(&o)
    );
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["verified"], true, "{summary}");
    assert_eq!(summary["buckets"][0]["records"], 600);
    assert!(!checkpoint.exists(), "removed once verified");
    assert_eq!(
        exported(dir.path(), &to.to_string()),
        exported(dir.path(), &from.to_string())
    );
}

/// A verification that finds `to` different from `from` (a record changed
/// and one added in `to` behind the layer's back) says so and fails; a new
/// copy makes the two equal again. And `--rate` holds the copy back.
#[test]
fn a_verification_finds_what_differs_and_a_copy_mends_it() {
    let dir = tempfile::tempdir().unwrap();
    let (from, to, config) = file_to_file(dir.path());
    preload(dir.path(), &from, "b", "k", 150);
    let started = Instant::now();
    ok(migrate(
        dir.path(),
        &config,
        &["--batch", "10", "--rate", "100"],
    ));
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "150 records at 100 per second: {:?}",
        started.elapsed()
    );
    let to = to.to_string();
    ok(kvstash(
        dir.path(),
        &["--config", &to, "-b", "b", "set", "k7", "\"changed\""],
    ));
    ok(kvstash(
        dir.path(),
        &["--config", &to, "-b", "other", "set", "extra", "1"],
    ));

    let o = migrate(dir.path(), &config, &["--verify-only"]);
    assert!(!o.status.success(), "{}", stdout(&o));
    assert!(stderr(&o).contains("still differs"), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["verified"], false, "{summary}");
    assert_eq!(summary["differing"], 2, "{summary}");
    assert_eq!(
        summary["buckets"],
        serde_json::json!([
            // The same count, a different checksum; and a bucket only `to` has.
            {"bucket": "b", "from": 150, "to": 150, "same": false},
            {"bucket": "other", "from": 0, "to": 1, "same": false},
        ])
    );

    let o = ok(migrate(dir.path(), &config, &["--restart"]));
    assert!(stdout(&o).contains("\"verified\":true"), "{}", stdout(&o));
    assert_eq!(
        exported(dir.path(), &to),
        exported(dir.path(), &from.to_string())
    );
}

/// A copy longer than `from`'s change feed reaches back (three commits
/// kept, and writers commit more while the copy runs) cannot be caught up
/// from the feed: the copy starts again, and ends verified with every
/// acknowledged write.
#[test]
fn a_feed_compacted_under_the_copy_starts_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let from = serde_json::json!({"type": "file", "path": dir.path().join("from.redb"),
        "retention": 3, "retention_entries": 3, "checkpoint_kb": 1});
    let to = serde_json::json!({"type": "file", "path": dir.path().join("to.redb")});
    let config = serde_json::json!({"type": "migrating", "from": from, "to": to}).to_string();
    preload(dir.path(), &from, "b", "k", 300);
    let run = spawn_kvstash(
        dir.path(),
        &[
            "--config", &config, "migrate", "--batch", "10", "--rate", "100",
        ],
    );
    // Writes through the layer while the copy runs (it takes 3 s).
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..12 {
        ok(kvstash(
            dir.path(),
            &[
                "--config",
                &config,
                "-b",
                "b",
                "set",
                &format!("k{}", i * 23),
                &format!("\"w{i}\""),
            ],
        ));
    }
    let o = run.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("copying again"), "{}", stderr(&o));
    let summary: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(summary["verified"], true, "{summary}");
    let to = to.to_string();
    assert_eq!(
        exported(dir.path(), &to),
        exported(dir.path(), &from.to_string())
    );
    let got = stdout(&ok(kvstash(
        dir.path(),
        &["--config", &to, "-b", "b", "get", "k253"],
    )));
    assert_eq!(got.trim(), "\"w11\"");
}

/// At a terminal, `kvstash migrate` shows its progress: records, bytes,
/// rate and time left.
#[test]
fn a_migration_at_a_terminal_shows_its_progress() {
    let dir = tempfile::tempdir().unwrap();
    let (from, _, config) = file_to_file(dir.path());
    preload(dir.path(), &from, "b", "k", 200);
    let script = r#"
term = Terminal([sys.argv[1], "--data", sys.argv[2], "--config", sys.argv[3],
    "migrate", "--batch", "10", "--rate", "100"])
code = term.wait()
sys.stdout.write(term.seen.decode(errors="replace"))
sys.exit(code)
"#;
    let shown = terminal::run(script, &[dir.path().as_os_str(), config.as_ref()], &[]);
    // "⠁ copy [=====>    ] 60/200 records, 1.2 KiB (99/s, ETA 1s)"
    assert!(
        shows_a_progress_line(&shown),
        "no progress line with records, bytes, rate and ETA:\n{shown}"
    );
    assert!(shown.contains("\"verified\":true"), "{shown}");
}

/// Whether `shown` has a progress line: `N/200 records, SIZE (RATE/s, ETA …)`.
fn shows_a_progress_line(shown: &str) -> bool {
    shown.split(['\r', '\n']).any(|line| {
        line.contains("/200 records, ")
            && (line.contains(" B (") || line.contains("KiB ("))
            && line.contains("/s, ETA ")
    })
}

/// Without a migrating layer there is nothing to migrate.
#[test]
fn migrate_needs_a_migrating_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let o = kvstash(dir.path(), &["migrate"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("no migrating layer"), "{}", stderr(&o));
}

/// Issue 16's report, as a user meets it: a store written with the CLI,
/// then four bytes flipped in the header of one of its redb leaf pages
/// (which redb's reads do not check). Every command refuses the store
/// instead of listing fewer records, nothing is written, and `check` names
/// the damage; the undamaged store checks sound.
#[test]
fn repair_salvages_what_is_intact_into_a_new_store() {
    let dir = tempfile::tempdir().unwrap();
    let records: String = (0..1000)
        .map(|i| {
            format!(
                "{{\"bucket\":\"devices\",\"key\":\"sensor_{i:03}\",\"value\":{{\"alias\":\"sensor {i}\",\"id\":[1,5,{i}]}}}}\n"
            )
        })
        .collect();
    ok(kvstash_with(dir.path(), &["import"], Some(&records)));
    ok(kvstash(
        dir.path(),
        &["lock", "acquire", "deploy", "--ttl", "1h"],
    ));
    let exported = stdout(&ok(kvstash(dir.path(), &["export"])));
    let meta = |data: &Path| {
        stdout(&ok(kvstash(
            data,
            &["--bucket", "devices", "get", "sensor_500", "--meta"],
        )))
    };
    let original_meta = meta(dir.path());

    // A sound store: everything, at the same versions.
    let whole = dir.path().join("whole");
    let repaired = ok(kvstash(
        dir.path(),
        &["repair", whole.join("kvstash.redb").to_str().unwrap()],
    ));
    assert!(
        stdout(&repaired).contains("nothing was lost"),
        "{}",
        stdout(&repaired)
    );
    assert!(stdout(&ok(kvstash(&whole, &["check"]))).contains("sound"));
    assert_eq!(stdout(&ok(kvstash(&whole, &["export"]))), exported);
    assert_eq!(meta(&whole), original_meta);
    let lock = |data: &Path| stdout(&ok(kvstash(data, &["lock", "status", "deploy"])));
    assert!(lock(&whole).contains("token"), "{}", lock(&whole));
    assert_eq!(
        lock(&whole),
        lock(dir.path()),
        "the store's own records (a lock) came along"
    );
    // It will not write over a store.
    let again = kvstash(
        dir.path(),
        &["repair", whole.join("kvstash.redb").to_str().unwrap()],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("writes a new store"),
        "{}",
        stderr(&again)
    );

    // One damaged leaf page: every other record, none changed.
    let file = dir.path().join("kvstash.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.windows(10).position(|w| w == b"sensor_417").unwrap();
    let page = at - at % 4096;
    for b in &mut bytes[page + 2..page + 6] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();
    let salvaged = dir.path().join("salvaged");
    let repaired = kvstash(
        dir.path(),
        &["repair", salvaged.join("kvstash.redb").to_str().unwrap()],
    );
    assert_eq!(repaired.status.code(), Some(1), "something was lost");
    let report = stdout(&repaired);
    assert!(report.contains("lost: the records after key"), "{report}");
    assert_eq!(
        std::fs::read(&file).unwrap(),
        bytes,
        "the damaged store is unchanged"
    );
    assert!(stdout(&ok(kvstash(&salvaged, &["check"]))).contains("sound"));
    let kept = stdout(&ok(kvstash(&salvaged, &["export"])));
    let original: std::collections::HashSet<&str> = exported.lines().collect();
    let kept: Vec<&str> = kept.lines().collect();
    assert!(
        kept.iter().all(|line| original.contains(line)),
        "a salvaged record differs from the original"
    );
    assert!(
        (900..1000).contains(&kept.len()),
        "{} of 1000 records salvaged",
        kept.len()
    );
    assert!(!kept.iter().any(|l| l.contains("\"sensor_417\"")));
    eprintln!("{report}");
}

#[test]
fn a_damaged_file_is_refused_by_every_command_and_named_by_check() {
    damaged_file_is_refused(1000, 0);
}

/// The same past `verify_mb` (1 MiB by default): the close that wrote the
/// file marked it, the damage after it changed it, and every open verifies
/// it again.
#[test]
fn a_damaged_file_past_verify_mb_is_refused_too() {
    damaged_file_is_refused(6000, 200);
}

/// `count` records (each with a note of `note` bytes) imported and the
/// store closed, then a leaf page's header damaged in place, as a user
/// would with a few flipped bytes.
fn damaged_file_is_refused(count: usize, note: usize) {
    let dir = tempfile::tempdir().unwrap();
    let note = "n".repeat(note);
    let records: String = (0..count)
        .map(|i| {
            format!(
                "{{\"bucket\":\"devices\",\"key\":\"sensor_{i:05}\",\"value\":{{\"alias\":\"sensor {i}\",\"id\":[1,5,{i}],\"note\":\"{note}\"}}}}\n"
            )
        })
        .collect();
    ok(kvstash_with(dir.path(), &["import"], Some(&records)));
    let checked = ok(kvstash(dir.path(), &["check"]));
    assert!(stdout(&checked).contains("sound"), "{}", stdout(&checked));
    let listed = ok(kvstash(
        dir.path(),
        &["--bucket", "devices", "list", "--keys"],
    ));
    assert_eq!(stdout(&listed).lines().count(), count);

    let file = dir.path().join("kvstash.redb");
    let mut bytes = std::fs::read(&file).unwrap();
    if count > 1000 {
        assert!(bytes.len() > 1 << 20, "{} bytes", bytes.len());
        // Marked as the import closed it: the opens since skipped
        // verifying it, and the damage below voids the mark.
        assert!(dir.path().join("kvstash.redb-verified").is_file());
    }
    let damaged = format!("sensor_{:05}", count * 417 / 1000);
    let at = bytes
        .windows(damaged.len())
        .position(|w| w == damaged.as_bytes())
        .expect("the record is in redb's file (the close checkpointed)");
    let page = at - at % 4096;
    for b in &mut bytes[page + 2..page + 6] {
        *b ^= 0x5a;
    }
    std::fs::write(&file, &bytes).unwrap();

    for args in [
        &["--bucket", "devices", "list", "--keys"][..],
        &["--bucket", "devices", "get", "sensor_00001"],
        &["--bucket", "devices", "set", "sensor_00001", "1"],
        &["export"],
    ] {
        let o = kvstash(dir.path(), args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stdout(&o));
        assert!(stdout(&o).is_empty(), "{args:?} printed {}", stdout(&o));
        assert!(
            stderr(&o).starts_with("kvstash: error: corrupt data in the file backend")
                && stderr(&o).contains("integrity check"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes, "nothing was written");
    if count > 1000 {
        // Not verified at open, redb panics on the damaged leaf: the panic
        // is the error, not a message and a backtrace on standard error.
        let unverified = serde_json::json!({"type": "file", "path": file, "verify_mb": 0});
        let o = kvstash(
            dir.path(),
            &[
                "--config",
                &unverified.to_string(),
                "--bucket",
                "devices",
                "list",
                "--keys",
            ],
        );
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(
            stderr(&o).starts_with(
                "kvstash: error: corrupt data in the file backend: redb failed reading"
            ) && !stderr(&o).contains("panicked"),
            "{}",
            stderr(&o)
        );
    }
    // A typed error to a program: `corrupt`, not a storage failure.
    let config = serde_json::json!({"type": "file", "path": file}).to_string();
    let e = kvstash::BlockingStore::open(&config).err().unwrap();
    assert_eq!(e.code(), "corrupt", "{e}");
    assert!(matches!(e, kvstash::Error::Corrupt(_)));
    let o = kvstash(dir.path(), &["check"]);
    assert_eq!(o.status.code(), Some(1));
    let memory = kvstash(dir.path(), &["--config", r#"{"type":"memory"}"#, "check"]);
    assert_eq!(memory.status.code(), Some(1));
    assert!(
        stderr(&memory).contains("works on file stores"),
        "{}",
        stderr(&memory)
    );
    assert!(
        stdout(&o).contains("damaged:") && stdout(&o).contains("integrity check"),
        "{}",
        stdout(&o)
    );
}
