//! Fuzz targets (issue 16): each takes arbitrary bytes, feeds them to one
//! reader of untrusted input, and fails (panics) only if the reader
//! panics or breaks a promise: an error of the wrong kind, a value
//! accepted that cannot be read back, damage served as data, a server
//! error for a bad request, or an engine that disagrees with a model.
//!
//! `tests/targets.rs` runs each under `cargo test` on random inputs for a
//! bounded time (`just fuzz-ci` runs them longer) and replays the inputs
//! in `regressions/TARGET/`; `cargo bolero test` runs them coverage-guided.

// A fuzz target reports a broken promise by panicking.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
#[cfg(feature = "host")]
use std::sync::OnceLock;

use kvstash_guest::engine::{
    Engine, ListOptions, ManualClock, MemStorage, Mutation, Op, Record, Schema, StoreError, Value,
    WriteOptions,
};

/// The text in `data`, if it is UTF-8.
fn text(data: &[u8]) -> Option<&str> {
    std::str::from_utf8(data).ok()
}

/// `data` as `n` inputs: its first `n - 1` bytes say where the rest is cut.
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let (cuts, mut rest) = data.split_at(data.len().min(n - 1));
    let mut out = Vec::with_capacity(n);
    for cut in cuts {
        let (part, after) = rest.split_at(usize::from(*cut).min(rest.len()));
        out.push(part);
        rest = after;
    }
    out.resize(n - 1, &[]);
    out.push(rest);
    out
}

/// JSON's tokens and the words kvstash's configurations and schemas use.
const JSON_TOKENS: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "\"",
    " ",
    "0",
    "1",
    "-1",
    "1.5",
    "1e400",
    "127",
    "1000",
    "true",
    "false",
    "null",
    "\\",
    "\\u0000",
    "\\ud800",
    "a",
    "é",
    "\n",
    "\"type\"",
    "\"memory\"",
    "\"file\"",
    "\"caching\"",
    "\"migrating\"",
    "\"main\"",
    "\"from\"",
    "\"to\"",
    "\"prefix\"",
    "\"read_only\"",
    "\"limits\"",
    "\"depth\"",
    "\"key_bytes\"",
    "\"value_bytes\"",
    "\"batch\"",
    "\"stores\"",
    "\"policy\"",
    "\"buckets\"",
    "\"retry_deadline_ms\"",
    "\"path\"",
    "\"object\"",
    "\"array\"",
    "\"string\"",
    "\"integer\"",
    "\"number\"",
    "\"boolean\"",
    "\"properties\"",
    "\"required\"",
    "\"items\"",
    "\"minimum\"",
    "\"maximum\"",
    "\"enum\"",
    "\"minLength\"",
    "\"maxLength\"",
    "\"pattern\"",
    "\"additionalProperties\"",
    "\"ttl_ms\"",
    "\"ttl\"",
];

/// A text of JSON-ish tokens, one per byte of `data`: random bytes make
/// inputs near enough to JSON to get past the first character.
fn jsonish(data: &[u8]) -> String {
    data.iter()
        .map(|b| JSON_TOKENS[usize::from(*b) % JSON_TOKENS.len()])
        .collect()
}

/// A text of JSON Pointer tokens, one per byte of `data`.
fn pointerish(data: &[u8]) -> String {
    const TOKENS: &[&str] = &[
        "/", "a", "0", "1", "-", "~0", "~1", "~", "b", "00", "é", " ",
    ];
    data.iter()
        .map(|b| TOKENS[usize::from(*b) % TOKENS.len()])
        .collect()
}

/// A store configuration is parsed, or refused as `invalid-config`.
pub fn config(data: &[u8]) {
    let texts = [text(data).map(str::to_string), Some(jsonish(data))];
    for text in texts.into_iter().flatten() {
        match kvstash_guest::config::parse(&text) {
            Ok(_) | Err(StoreError::InvalidConfig(_)) => {}
            Err(other) => panic!("a configuration refused as {other:?}: {text:?}"),
        }
    }
}

/// A JSON value the store accepts, serde_json (every read) reads back.
pub fn json(data: &[u8]) {
    let texts = [text(data).map(str::to_string), Some(jsonish(data))];
    for text in texts.into_iter().flatten() {
        match Value::json(text.clone()) {
            Ok(_) => {
                if let Err(e) = serde_json::from_str::<serde_json::Value>(&text) {
                    panic!("accepted but unreadable: {e}: {text:?}");
                }
            }
            Err(StoreError::InvalidValue(_)) => {}
            Err(other) => panic!("a value refused as {other:?}"),
        }
    }
}

fn engine() -> Engine<MemStorage, ManualClock> {
    Engine::new(MemStorage::default(), ManualClock::at(1_700_000_000_000))
}

/// Errors a document-path operation may give; anything else is a bug.
fn path_error(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::InvalidPath(_)
            | StoreError::PathNotFound(_)
            | StoreError::PathTypeMismatch(_)
            | StoreError::InvalidValue(_)
            | StoreError::NotJson
            | StoreError::NotFound(_)
    )
}

/// JSON Pointer paths on a document: `document, pointer, value` ([`parts`]).
/// Every path read and write gives a value or a typed error, and what a
/// path write leaves is a document every read takes.
pub fn pointer(data: &[u8]) {
    let parts = parts(data, 3);
    let [doc, pointer, value] = parts.as_slice() else {
        return;
    };
    let (pointer, value) = (pointerish(pointer), jsonish(value));
    let (pointer, value) = (pointer.as_str(), value.as_str());
    let e = engine();
    // A document that is JSON, most of the time.
    let doc = match Value::json(jsonish(doc)) {
        Ok(doc) => doc,
        Err(_) => Value::json(r#"{"a":[1,{"b":null}],"c":"x"}"#.into()).unwrap(),
    };
    e.set("b", "d", doc)
        .unwrap_or_else(|err| panic!("set: {err:?}"));
    if let Err(err) = e.get_path("b", "d", pointer) {
        assert!(path_error(&err), "get_path: {err:?}");
    }
    let ops = [
        Op::SetPath {
            path: pointer.to_string(),
            value: value.to_string(),
        },
        Op::AppendPath {
            path: pointer.to_string(),
            value: value.to_string(),
        },
        Op::DeletePath {
            path: pointer.to_string(),
        },
    ];
    for op in ops {
        let mutation = Mutation {
            bucket: "b".into(),
            key: "d".into(),
            op,
            ttl_ms: None,
        };
        match e.transact(&[], &[mutation]) {
            Ok(_) => {
                let whole = e
                    .get_path("b", "d", "")
                    .unwrap_or_else(|err| panic!("{err:?}"));
                let (text, _) = whole.unwrap_or_else(|| panic!("the document is gone"));
                assert!(
                    serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                    "a path write left {text:?}"
                );
            }
            Err(err) => assert!(path_error(&err), "{err:?}"),
        }
    }
}

/// Schemas: `schema, document` ([`parts`]). A schema is taken or refused as a bad
/// value; a document is then stored, or refused as a schema violation or a
/// bad value.
pub fn schema(data: &[u8]) {
    let parts = parts(data, 2);
    let [schema, doc] = parts.as_slice() else {
        return;
    };
    let (schema, doc) = (jsonish(schema), jsonish(doc));
    let (schema, doc) = (schema.as_str(), doc.as_str());
    if let Ok(parsed) = Schema::parse(schema)
        && let Ok(json) = serde_json::from_str::<serde_json::Value>(doc)
    {
        let _ = parsed.validate(&json);
    }
    let e = engine();
    match e.set_schema("b", Some(schema), false) {
        Ok(_) => {}
        Err(StoreError::InvalidValue(_) | StoreError::InvalidArgument(_)) => return,
        Err(other) => panic!("a schema refused as {other:?}"),
    }
    let Ok(value) = Value::json(doc.to_string()) else {
        return;
    };
    match e.set("b", "k", value) {
        Ok(_) | Err(StoreError::SchemaViolation(_)) => {}
        Err(other) => panic!("a document refused as {other:?}"),
    }
}

/// The record decoder: a record, or `corrupt`; what it decodes encodes to
/// a record that decodes the same.
pub fn record(data: &[u8]) {
    match Record::decode(data.to_vec()) {
        Ok(record) => {
            let again = Record::decode(record.encode())
                .unwrap_or_else(|e| panic!("re-encoded record refused: {e:?}"));
            assert_eq!(again, record);
        }
        Err(StoreError::Corrupt(_)) => {}
        Err(other) => panic!("a record refused as {other:?}"),
    }
}

#[cfg(feature = "host")]
/// The commits of the sound log [`log`] damages.
fn commits() -> Vec<Vec<kvstash::backend::Write>> {
    (0..6u8)
        .map(|i| {
            (0..=i % 3)
                .map(|j| kvstash::backend::Write {
                    key: vec![b'k', i, j],
                    value: (j != 2).then(|| vec![i; usize::from(i) * 7 + 1]),
                })
                .collect()
        })
        .collect()
}

#[cfg(feature = "host")]
/// The commit log's reader on a sound, sealed log damaged as `data` says
/// (pairs of a 16-bit offset and a byte to XOR there; a first byte with
/// its top bit set also cuts the log short): either exactly the commits
/// written, or refused as `corrupt`; never other commits, never fewer.
pub fn log(data: &[u8]) {
    static SOUND: OnceLock<Vec<u8>> = OnceLock::new();
    let sound = SOUND
        .get_or_init(|| kvstash::fuzzing::sound_log(&commits()).unwrap_or_else(|e| panic!("{e}")));
    let mut bytes = sound.clone();
    let (cut, damage) = match data.split_first() {
        Some((first, rest)) if first & 0x80 != 0 => (Some(usize::from(*first & 0x7f)), rest),
        _ => (None, data),
    };
    for pair in damage.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([pair[0], pair[1]])) % bytes.len();
        bytes[at] ^= pair[2];
    }
    if let Some(cut) = cut {
        let keep = bytes.len().saturating_sub(cut * 8);
        bytes.truncate(keep);
    }
    if bytes == *sound {
        return;
    }
    match kvstash::fuzzing::read_log(&bytes) {
        Ok(read) => {
            let written: Vec<(u64, Vec<kvstash::backend::Write>)> =
                (1u64..).zip(commits()).collect();
            assert_eq!(read, written, "a damaged log read as other commits");
        }
        Err(kvstash::BackendError::Corrupt(_)) => {}
        Err(other) => panic!("a damaged log refused as {other:?}"),
    }
}

#[cfg(feature = "host")]
/// The import readers (`kvstash import`, JSON Lines and TinyDB): records
/// or an error, and every JSON value they give is readable.
pub fn import(data: &[u8]) {
    let readable = |records: Vec<(String, String, kvstash::Value)>| {
        for (_, _, value) in records {
            if let kvstash::Value::Json(text) = value {
                assert!(
                    serde_json::from_str::<serde_json::Value>(&text).is_ok(),
                    "imported {text:?}"
                );
            }
        }
    };
    if let Ok(records) = kvstash::fuzzing::import_jsonl(data) {
        readable(records);
    }
    if let Some(text) = text(data)
        && let Ok(records) = kvstash::fuzzing::import_tinydb(text)
    {
        readable(records);
    }
}

#[cfg(feature = "host")]
/// The HTTP API (`kvstash serve`) on a memory store: `method, path, body`
/// ([`parts`]; the path and body of route-ish and JSON-ish tokens). Every
/// request gets an answer, and none is a server error (5xx): bad input is
/// the client's error.
pub fn http(data: &[u8]) {
    use tower::ServiceExt as _;
    const PATH: &[&str] = &[
        "/",
        "buckets",
        "b",
        "keys",
        "k",
        "%2F",
        "%ff",
        "%00",
        "?",
        "&",
        "=",
        "if_version",
        "if_absent",
        "ttl_ms",
        "1",
        "0",
        "-1",
        "true",
        "watch",
        "txn",
        "locks",
        "schema",
        "history",
        "undo",
        "redo",
        "renew",
        "increment",
        "path",
        "prefix",
        "limit",
        "cursor",
        "since",
        "storage",
        "get",
        "scan",
        "commit",
        "x",
        "..",
        "%",
        "é",
        "~1",
        "1000000",
    ];
    static SERVER: OnceLock<(tokio::runtime::Runtime, axum::Router)> = OnceLock::new();
    let (runtime, router) = SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("{e}"));
        let store = runtime
            .block_on(kvstash::Store::open(r#"{"type":"memory"}"#))
            .unwrap_or_else(|e| panic!("{e}"));
        (runtime, kvstash::serve::router(store))
    });
    let parts = parts(data, 3);
    let [method, path, body] = parts.as_slice() else {
        return;
    };
    let method = ["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD"]
        [usize::from(method.first().copied().unwrap_or(0)) % 6];
    let path: String = path
        .iter()
        .map(|b| PATH[usize::from(*b) % PATH.len()])
        .collect();
    let uri = format!("/v1/{path}");
    let Ok(request) = http::Request::builder()
        .method(method)
        .uri(&uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(jsonish(body)))
    else {
        return;
    };
    let response = runtime
        .block_on(router.clone().oneshot(request))
        .unwrap_or_else(|e| match e {});
    assert!(
        !response.status().is_server_error(),
        "{method} {uri}: {}",
        response.status()
    );
}

/// The engine against a model (a map of keys to values and versions):
/// each 3 bytes are an operation (kind, key, value) on 4 keys; every
/// result agrees with the model.
pub fn model(data: &[u8]) {
    let e = engine();
    let mut model: BTreeMap<String, (i64, u64)> = BTreeMap::new();
    for op in data.chunks_exact(3) {
        let key = format!("k{}", op[1] % 4);
        let value = i64::from(op[2]);
        let json = || Value::json(value.to_string()).unwrap_or_else(|e| panic!("{e:?}"));
        match op[0] % 6 {
            0 => {
                let got = e.get("b", &key).unwrap_or_else(|e| panic!("{e:?}"));
                let got = got.map(|v| (v.value, v.version));
                let want = model.get(&key).map(|(v, version)| (json_of(*v), *version));
                assert_eq!(got, want, "get {key}");
            }
            1 => {
                let version = e.set("b", &key, json()).unwrap_or_else(|e| panic!("{e:?}"));
                assert!(
                    model.values().all(|(_, v)| *v < version),
                    "versions increase"
                );
                model.insert(key, (value, version));
            }
            2 => {
                let live = e.delete("b", &key).unwrap_or_else(|e| panic!("{e:?}"));
                assert_eq!(live, model.remove(&key).is_some(), "delete {key}");
            }
            3 => {
                // A conditional write, on the version the model has (or a
                // wrong one, for odd values).
                let current = model.get(&key).map(|(_, v)| *v);
                let expected = if value % 2 == 1 {
                    current.map(|v| v + 1)
                } else {
                    current
                };
                let options = WriteOptions {
                    if_version: expected,
                    if_absent: expected.is_none(),
                    ttl_ms: None,
                };
                match e.set_with("b", &key, json(), &options) {
                    Ok(version) => {
                        assert_eq!(expected, current, "a write on a stale version");
                        model.insert(key, (value, version));
                    }
                    Err(StoreError::Conflict { current: c }) => {
                        assert_ne!(expected, current, "refused on the current version");
                        assert_eq!(c, current);
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            4 => {
                let old = model.get(&key).map_or(0, |(v, _)| *v);
                match e.increment("b", &key, value) {
                    Ok(new) => {
                        assert_eq!(new, old + value);
                        let version = e
                            .get("b", &key)
                            .unwrap_or_else(|e| panic!("{e:?}"))
                            .map(|v| v.version)
                            .unwrap_or_else(|| panic!("the incremented key is gone"));
                        model.insert(key, (new, version));
                    }
                    Err(other) => panic!("{other:?}"),
                }
            }
            _ => {
                let page = e
                    .list("b", &ListOptions::default())
                    .unwrap_or_else(|e| panic!("{e:?}"));
                let keys: Vec<&str> = page.items.iter().map(|i| i.key.as_str()).collect();
                let want: Vec<&str> = model.keys().map(String::as_str).collect();
                assert_eq!(keys, want, "list");
            }
        }
    }
}

fn json_of(value: i64) -> Value {
    Value::Json(value.to_string())
}
