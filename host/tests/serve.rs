//! `kvstash serve`, driven over real TCP on loopback as its clients use it:
//! the routes of docs/http.md, their errors, watch as Server-Sent Events,
//! /metrics, the CLI and curl on the store the server holds, and
//! schemathesis against the served OpenAPI document.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

#[cfg(feature = "shell")]
#[path = "support/terminal.rs"]
mod terminal;

/// A `kvstash serve` process on a free loopback port; killed when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    /// Serves the default file store in `dir`.
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// With global options `extra` (`--config …`).
    fn start_with(dir: &Path, extra: &[&str]) -> Self {
        Self::serving(dir, extra, &[]).unwrap()
    }

    /// `kvstash [global] serve --listen 127.0.0.1:0 [serve]` (unless
    /// `serve` has a `--listen` of its own); its error output if it does
    /// not start.
    fn serving(dir: &Path, global: &[&str], serve: &[&str]) -> Result<Self, String> {
        Self::serving_with(dir, global, serve, &[])
    }

    /// Like [`serving`](Self::serving), with environment variables `env`.
    fn serving_with(
        dir: &Path,
        global: &[&str],
        serve: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Self, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_kvstash"))
            .arg("--data")
            .arg(dir)
            .args(global)
            .arg("serve")
            .args(
                (!serve.contains(&"--listen"))
                    .then_some(["--listen", "127.0.0.1:0"])
                    .into_iter()
                    .flatten(),
            )
            .args(serve)
            .env_remove("KVSTASH_STORE")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // "kvstash: serving … on http(s)://127.0.0.1:PORT/ (…)"
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
        let Some(addr) = line
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
        else {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            let _ = child.wait();
            return Err(line + &rest);
        };
        let addr = addr.parse().unwrap();
        Ok(Self { child, addr })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Reply {
        self.send(method, path, &[], body.map(str::as_bytes))
    }

    fn get(&self, path: &str) -> Reply {
        self.request("GET", path, None)
    }

    fn put(&self, path: &str, body: &str) -> Reply {
        self.send(
            "PUT",
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    fn post(&self, path: &str, body: &str) -> Reply {
        self.send(
            "POST",
            path,
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
    }

    /// One HTTP/1.1 request on its own connection.
    fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Reply {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body = body.unwrap_or_default();
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        stream.write_all(head.as_bytes()).unwrap();
        // A server that refuses a body it finds too large answers before
        // reading it and closes: the rest of the write may then fail, and
        // the close may come as a reset after the answer.
        let wrote = stream.write_all(body);
        let mut raw = Vec::new();
        let read = stream.read_to_end(&mut raw);
        if raw.is_empty() {
            wrote.unwrap();
            read.unwrap();
        }
        Reply::parse(&raw)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A whole response.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a response head");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(n, v)| n == "transfer-encoding" && v.contains("chunked"))
        {
            body = unchunk(&body);
        }
        Self {
            status: status.parse().unwrap(),
            headers,
            body,
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: {:?} ({})",
                String::from_utf8_lossy(&self.body),
                self.status
            )
        })
    }

    /// The body, after checking the status.
    fn expect(self, status: u16) -> Value {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self.json()
    }

    /// The error code of an error reply, after checking the status.
    fn error(self, status: u16) -> Value {
        let body = self.expect(status);
        assert!(body["error"]["message"].is_string(), "{body}");
        body["error"].clone()
    }
}

fn unchunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = body.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..line_end]).unwrap(), 16).unwrap();
        if size == 0 {
            return out;
        }
        let start = line_end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[start + size + 2..];
    }
}

const KEY: &str = "/v1/buckets/aliases/keys/environment_sensor_1";

#[test]
fn keys_are_read_and_written_with_versions_conditions_and_ttl() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let v1 = server.put(KEY, "[1,5,42]").expect(200)["version"]
        .as_u64()
        .unwrap();
    let got = server.get(KEY);
    assert_eq!(got.header("etag"), Some(format!("\"{v1}\"").as_str()));
    assert_eq!(got.expect(200), json!({"value": [1, 5, 42], "version": v1}));

    // A condition that does not hold writes nothing and says why.
    let stale = server.put(&format!("{KEY}?if_version={}", v1 + 100), "0");
    let error = stale.error(409);
    assert_eq!(error["code"], "conflict");
    assert_eq!(error["current"], v1);
    assert_eq!(
        server.put(&format!("{KEY}?if_version=0"), "0").error(409)["code"],
        "conflict"
    );
    let v2 = server
        .put(&format!("{KEY}?if_version={v1}"), "[1,5,43]")
        .expect(200)["version"]
        .as_u64()
        .unwrap();
    assert!(v2 > v1);

    // TTL, raw bytes, increments.
    let with_ttl = server.put("/v1/buckets/b/keys/session?ttl_ms=60000", "\"s\"");
    with_ttl.expect(200);
    let session = server.get("/v1/buckets/b/keys/session").expect(200);
    assert!(
        session["expires_at"].as_str().unwrap().ends_with('Z'),
        "{session}"
    );
    let bytes = server.send(
        "PUT",
        "/v1/buckets/b/keys/raw",
        &[("Content-Type", "application/octet-stream")],
        Some(&[0, 159, 255]),
    );
    bytes.expect(200);
    assert_eq!(
        server.get("/v1/buckets/b/keys/raw").expect(200)["bytes"],
        "AJ//"
    );
    let incr = "/v1/buckets/b/keys/count/increment";
    assert_eq!(server.post(incr, "").expect(200), json!({"value": 1}));
    assert_eq!(
        server.post(incr, r#"{"delta":-5}"#).expect(200),
        json!({"value": -4})
    );

    // A key with a slash, percent-encoded, is one key.
    server.put("/v1/buckets/b/keys/a%2Fb", "1").expect(200);
    assert_eq!(
        server.get("/v1/buckets/b/keys/a%2Fb").expect(200)["value"],
        1
    );

    // Deletes, conditional and not.
    let deleted = server.request("DELETE", &format!("{KEY}?if_version={v1}"), None);
    assert_eq!(deleted.error(409)["current"], v2);
    let deleted = server.request("DELETE", &format!("{KEY}?if_version={v2}"), None);
    assert_eq!(deleted.expect(200)["deleted"], true);
    assert_eq!(server.get(KEY).error(404)["code"], "not-found");
    let again = server.request("DELETE", KEY, None);
    assert_eq!(again.expect(200), json!({"deleted": false}));

    let buckets = server.get("/v1/buckets").expect(200);
    assert_eq!(buckets, json!({"buckets": ["b"]}));
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.put(KEY, "1").expect(200);
    let before = server.get(KEY).expect(200);

    assert_eq!(
        server.put(KEY, "{not json").error(400)["code"],
        "invalid-value"
    );
    let long_key = format!("/v1/buckets/b/keys/{}", "k".repeat(5000));
    assert_eq!(server.put(&long_key, "1").error(400)["code"], "invalid-key");
    // Not UTF-8 once percent-decoded.
    let not_utf8 = server.put("/v1/buckets/b/keys/%ff%fe", "1").error(400);
    assert_eq!(not_utf8["code"], "invalid-key", "{not_utf8}");
    let not_utf8 = server.put("/v1/buckets/%ff/keys/k", "1").error(400);
    assert_eq!(not_utf8["code"], "invalid-bucket", "{not_utf8}");
    // A key that looks like a path is a key.
    server
        .put("/v1/buckets/b/keys/..%2F..%2Fetc%2Fpasswd", "2")
        .expect(200);
    assert_eq!(
        server
            .get("/v1/buckets/b/keys/..%2F..%2Fetc%2Fpasswd")
            .expect(200)["value"],
        2
    );
    let body_not_utf8 = server.send(
        "PUT",
        KEY,
        &[("Content-Type", "application/json")],
        Some(b"\"\xff\""),
    );
    assert_eq!(body_not_utf8.status, 400);
    let control = "/v1/buckets/a%01b/keys/k";
    assert_eq!(
        server.put(control, "1").error(400)["code"],
        "invalid-bucket"
    );
    assert_eq!(
        server
            .put(&format!("{KEY}?if_version=banana"), "2")
            .error(400)["code"],
        "invalid-argument"
    );
    assert_eq!(
        server.put(&format!("{KEY}?if_verison=1"), "2").error(400)["code"],
        "invalid-argument",
        "a misspelt condition is refused, not ignored"
    );
    assert_eq!(
        server.put(&format!("{KEY}?ttl_ms=0"), "2").error(400)["code"],
        "invalid-argument"
    );
    let form = server.send(
        "PUT",
        KEY,
        &[("Content-Type", "application/x-www-form-urlencoded")],
        Some(b"2"),
    );
    assert_eq!(form.status, 415);
    let huge = format!("\"{}\"", "x".repeat(9 * 1024 * 1024));
    assert_eq!(server.put(KEY, &huge).error(413)["code"], "invalid-value");
    assert_eq!(
        server.get("/v1/buckets/b/keys?limit=0").error(400)["code"],
        "invalid-argument"
    );
    assert_eq!(
        server.get("/v1/buckets/b/keys?cursor=nonsense").error(400)["code"],
        "invalid-cursor"
    );
    assert_eq!(
        server.get("/v1/nothing/here").error(404)["code"],
        "not-found"
    );
    let wrong = server.request("PATCH", KEY, None);
    assert!(
        wrong.header("allow").is_some_and(|a| a.contains("PUT")),
        "{wrong:?}"
    );
    assert_eq!(wrong.error(405)["code"], "method-not-allowed");

    // Without tokens, web pages do not get through the user's browser.
    let from_page = server.send(
        "PUT",
        KEY,
        &[("Origin", "https://example.com")],
        Some(b"666"),
    );
    assert_eq!(from_page.error(403)["code"], "forbidden");
    let cross_site = server.send("GET", KEY, &[("Sec-Fetch-Site", "cross-site")], None);
    assert_eq!(cross_site.status, 403);
    // DNS rebinding: a name of the page's own pointing at 127.0.0.1.
    let mut rebound = TcpStream::connect(server.addr).unwrap();
    rebound
        .write_all(
            format!("GET {KEY} HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    let mut raw = Vec::new();
    rebound.read_to_end(&mut raw).unwrap();
    assert_eq!(Reply::parse(&raw).error(403)["code"], "forbidden");
    let local = server.send("GET", KEY, &[("Sec-Fetch-Site", "none")], None);
    assert_eq!(local.status, 200, "a browser's address bar is the user");

    assert_eq!(server.get(KEY).expect(200), before, "nothing was written");
}

#[test]
fn lists_page_with_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    for i in 0..5 {
        server
            .put(&format!("/v1/buckets/b/keys/k{i}"), &i.to_string())
            .expect(200);
    }
    server.put("/v1/buckets/b/keys/other", "9").expect(200);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = "/v1/buckets/b/keys?prefix=k&limit=2".to_string();
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = server.get(&path).expect(200);
        for item in page["items"].as_array().unwrap() {
            seen.push((
                item["key"].as_str().unwrap().to_string(),
                item["value"].clone(),
            ));
            assert!(item["version"].as_u64().is_some());
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let expected: Vec<(String, Value)> = (0..5).map(|i| (format!("k{i}"), json!(i))).collect();
    assert_eq!(seen, expected);
    let reversed = server
        .get("/v1/buckets/b/keys?reverse=true&keys_only=true&limit=1")
        .expect(200);
    assert_eq!(
        reversed["items"],
        json!([{"key": "other", "version": reversed["items"][0]["version"]}])
    );
}

#[test]
fn transactions_paths_history_schemas_and_locks() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    // One commit for an alias both ways and a display name.
    let txn = json!({"mutations": [
        {"bucket": "aliases", "key": "environment_sensor_1", "set": [1, 5, 42]},
        {"bucket": "aliases", "key": "[1,5,42]", "set": "environment_sensor_1"},
        {"bucket": "names", "key": "environment_sensor_1", "set": {"name": "backyard shed sensor", "tags": []}},
    ]});
    let version = server.post("/v1/txn", &txn.to_string()).expect(200)["version"]
        .as_u64()
        .unwrap();
    let failing = json!({
        "checks": [{"bucket": "aliases", "key": "environment_sensor_1", "version": version}, {"bucket": "aliases", "key": "x", "exists": true}],
        "mutations": [{"bucket": "aliases", "key": "environment_sensor_1", "delete": true}],
    });
    let error = server.post("/v1/txn", &failing.to_string()).error(409);
    assert_eq!(
        (error["code"].clone(), error["index"].clone()),
        (json!("check-failed"), json!(1))
    );
    assert_eq!(
        server
            .post("/v1/txn", r#"{"mutations":[{"key":"k"}]}"#)
            .error(400)["code"],
        "invalid-argument"
    );
    // A batch has at most 1000 checks and mutations together.
    let item = |i: usize| json!({"bucket": "aliases", "key": format!("bulk{i}"), "set": i});
    let checks: Vec<Value> = (0..500)
        .map(|i| json!({"bucket": "aliases", "key": format!("bulk{i}"), "absent": true}))
        .collect();
    let too_many = json!({"checks": checks, "mutations": (0..501).map(item).collect::<Vec<_>>()});
    let error = server.post("/v1/txn", &too_many.to_string()).error(400);
    assert_eq!(error["code"], "invalid-argument");
    assert!(
        error["message"].as_str().unwrap().contains("at most 1000"),
        "{error}"
    );
    assert_eq!(server.get("/v1/buckets/aliases/keys/bulk0").status, 404);
    let most = json!({"checks": checks, "mutations": (0..500).map(item).collect::<Vec<_>>()});
    server.post("/v1/txn", &most.to_string()).expect(200);
    assert_eq!(
        server.get("/v1/buckets/aliases/keys/bulk499").expect(200)["value"],
        499
    );
    assert_eq!(server.get(KEY).expect(200)["value"], json!([1, 5, 42]));

    // Document paths.
    let doc = "/v1/buckets/names/keys/environment_sensor_1/path";
    let name = server.get(&format!("{doc}?pointer=/name")).expect(200);
    assert_eq!(
        name,
        json!({"value": "backyard shed sensor", "version": version})
    );
    server
        .put(&format!("{doc}?pointer=/name"), "\"front porch\"")
        .expect(200);
    server
        .post(&format!("{doc}?pointer=/tags"), "\"outdoor\"")
        .expect(200);
    let tags = server.get(&format!("{doc}?pointer=/tags")).expect(200);
    assert_eq!(tags["value"], json!(["outdoor"]));
    server
        .request("DELETE", &format!("{doc}?pointer=/tags/0"), None)
        .expect(200);
    assert_eq!(
        server.get(&format!("{doc}?pointer=/nope")).error(404)["code"],
        "path-not-found"
    );
    assert_eq!(
        server.get(&format!("{doc}?pointer=nope")).error(400)["code"],
        "invalid-path"
    );
    assert_eq!(server.get(doc).error(400)["code"], "invalid-argument");

    // History: undo and redo.
    let history = "/v1/buckets/h/history";
    server.put(history, r#"{"keep":10}"#).expect(200);
    server.put("/v1/buckets/h/keys/k", "1").expect(200);
    server.put("/v1/buckets/h/keys/k", "2").expect(200);
    assert_eq!(
        server.get(history).expect(200),
        json!({"undoable": 2, "redoable": 0})
    );
    server.post("/v1/buckets/h/undo", "").expect(200);
    assert_eq!(server.get("/v1/buckets/h/keys/k").expect(200)["value"], 1);
    server.post("/v1/buckets/h/redo", "").expect(200);
    assert_eq!(server.get("/v1/buckets/h/keys/k").expect(200)["value"], 2);
    assert_eq!(
        server.post("/v1/buckets/empty/undo", "").error(404)["code"],
        "not-found"
    );

    // Schemas.
    let schema = json!({"schema": {"type": "object", "required": ["name"]}});
    server
        .put("/v1/buckets/typed/schema", &schema.to_string())
        .expect(200);
    assert_eq!(
        server.get("/v1/buckets/typed/schema").expect(200)["schema"],
        schema["schema"]
    );
    assert_eq!(
        server.put("/v1/buckets/typed/keys/k", "{}").error(409)["code"],
        "schema-violation"
    );
    server
        .put("/v1/buckets/typed/keys/k", r#"{"name":"x"}"#)
        .expect(200);
    server
        .request("DELETE", "/v1/buckets/typed/schema", None)
        .expect(200);
    assert_eq!(
        server.get("/v1/buckets/typed/schema").error(404)["code"],
        "not-found"
    );

    // Locks with fencing tokens.
    let lease = server
        .post("/v1/locks/job", r#"{"ttl_ms":60000,"owner":"a"}"#)
        .expect(200);
    let token = lease["token"].as_u64().unwrap();
    let held = server
        .post("/v1/locks/job", r#"{"ttl_ms":1000}"#)
        .error(409);
    assert_eq!(
        (
            held["code"].clone(),
            held["token"].clone(),
            held["owner"].clone()
        ),
        (json!("locked"), json!(token), json!("a"))
    );
    assert_eq!(
        server.get("/v1/locks/job").expect(200)["holder"]["token"],
        token
    );
    let renewed = server.post(
        "/v1/locks/job/renew",
        &json!({"token": token, "ttl_ms": 30000}).to_string(),
    );
    assert_eq!(renewed.expect(200)["token"], token);
    let lost = server.post(
        "/v1/locks/job/renew",
        &json!({"token": token + 1, "ttl_ms": 1000}).to_string(),
    );
    assert_eq!(lost.error(409)["code"], "lease-lost");
    let fenced =
        json!({"checks": [{"lock": "job", "token": token}], "mutations": [{"key": "k", "set": 1}]});
    server.post("/v1/txn", &fenced.to_string()).expect(200);
    let released = server.post(
        "/v1/locks/job/release",
        &json!({"token": token}).to_string(),
    );
    assert_eq!(released.expect(200), json!({"released": true}));
    assert_eq!(
        server.get("/v1/locks/job").expect(200),
        json!({"holder": null})
    );
    assert_eq!(
        server.post("/v1/txn", &fenced.to_string()).error(409)["code"],
        "check-failed"
    );
}

/// Reads Server-Sent Events from one response, as an EventSource would.
struct Events {
    reader: BufReader<TcpStream>,
}

#[derive(Debug, PartialEq)]
struct Sse {
    event: String,
    id: Option<String>,
    data: Value,
}

impl Events {
    fn open(server: &Server, path: &str, last_event_id: Option<&str>) -> Result<Self, Reply> {
        let mut stream = TcpStream::connect(server.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nConnection: close\r\n",
            server.addr
        );
        if let Some(id) = last_event_id {
            head.push_str(&format!("Last-Event-ID: {id}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).unwrap();
        let mut reader = BufReader::new(stream);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut head = Vec::new();
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            head.push(line);
        }
        if status != 200 {
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            let mut raw = status_line.into_bytes();
            raw.extend(head.concat().into_bytes());
            raw.extend(b"\r\n");
            raw.extend(rest);
            return Err(Reply::parse(&raw));
        }
        assert!(
            head.iter().any(|h| h
                .to_ascii_lowercase()
                .starts_with("content-type: text/event-stream")),
            "{head:?}"
        );
        Ok(Self { reader })
    }

    /// The next event (keep-alive comments skipped). The body is chunked:
    /// chunk-size lines are told apart by not being `field: value` lines.
    fn next(&mut self) -> Sse {
        let (mut event, mut id, mut data) = (String::from("message"), None, String::new());
        loop {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).unwrap();
            assert!(n > 0, "the stream ended");
            let line = line.trim_end_matches(['\r', '\n']);
            if line.is_empty() {
                if !data.is_empty() {
                    return Sse {
                        event,
                        id,
                        data: serde_json::from_str(&data).unwrap(),
                    };
                }
                continue;
            }
            if let Some(v) = line.strip_prefix("event: ").or(line.strip_prefix("event:")) {
                event = v.to_string();
            } else if let Some(v) = line.strip_prefix("id: ").or(line.strip_prefix("id:")) {
                id = Some(v.to_string());
            } else if let Some(v) = line.strip_prefix("data: ").or(line.strip_prefix("data:")) {
                data.push_str(v);
            }
        }
    }
}

#[test]
fn configured_limits_are_400s_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "type": "file",
        "path": dir.path().join("l.redb"),
        "limits": {"key_bytes": 8, "value_bytes": 64, "depth": 3, "batch": 2}
    })
    .to_string();
    let server = Server::start_with(dir.path(), &["--config", &config]);
    server.put("/v1/buckets/b/keys/k", "[1]").expect(200);
    let long_key = "/v1/buckets/b/keys/123456789";
    let too_long = server.put(long_key, "1").error(400);
    assert_eq!(too_long["code"], "invalid-key");
    assert!(
        too_long["message"]
            .as_str()
            .unwrap()
            .contains("limits.key_bytes")
    );
    let big = format!("\"{}\"", "x".repeat(100));
    assert_eq!(
        server.put("/v1/buckets/b/keys/k", &big).error(400)["code"],
        "invalid-value"
    );
    let deep = server.put("/v1/buckets/b/keys/k", "[[[[1]]]]").error(400);
    assert!(deep["message"].as_str().unwrap().contains("limits.depth"));
    let txn = json!({"mutations": [
        {"bucket": "b", "key": "a", "set": 1},
        {"bucket": "b", "key": "b", "set": 1},
        {"bucket": "b", "key": "c", "set": 1},
    ]});
    let batch = server.post("/v1/txn", &txn.to_string()).error(400);
    assert!(batch["message"].as_str().unwrap().contains("limits.batch"));
    assert_eq!(
        server.get("/v1/buckets/b/keys/k").expect(200)["value"],
        json!([1])
    );
    assert_eq!(
        server.get("/v1/buckets/b/keys/a").error(404)["code"],
        "not-found"
    );
}

#[test]
fn a_store_configured_for_larger_values_takes_larger_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({
        "type": "file",
        "path": dir.path().join("big.redb"),
        "limits": {"value_bytes": 12 << 20}
    })
    .to_string();
    let server = Server::start_with(dir.path(), &["--config", &config]);
    // 9 MiB: past the default limit's body, within this store's.
    let nine = format!("\"{}\"", "x".repeat(9 << 20));
    server.put("/v1/buckets/b/keys/big", &nine).expect(200);
    let thirteen = format!("\"{}\"", "x".repeat(13 << 20));
    let refused = server.put("/v1/buckets/b/keys/big", &thirteen);
    assert_eq!(refused.status, 413);
    let got = server.get("/v1/buckets/b/keys/big").expect(200);
    assert_eq!(got["value"].as_str().map(str::len), Some(9 << 20));
}

#[test]
fn watch_streams_commits_and_resumes_from_last_event_id() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        json!({"type": "file", "path": dir.path().join("w.redb"), "retention": 5}).to_string();
    let server = Server::start_with(dir.path(), &["--config", &config]);
    let watch = "/v1/buckets/aliases/watch?prefix=env";
    let mut events = Events::open(&server, watch, None).unwrap();
    let ready = events.next();
    assert_eq!(ready.event, "ready");
    let start = ready.data["version"].as_u64().unwrap();
    assert_eq!(ready.id, Some(start.to_string()));

    let txn = json!({"mutations": [
        {"bucket": "aliases", "key": "environment_sensor_1", "set": [1, 5, 42]},
        {"bucket": "aliases", "key": "environment_sensor_2", "set": [1, 5, 43]},
        {"bucket": "aliases", "key": "unwatched", "set": 0},
    ]});
    let first = server.post("/v1/txn", &txn.to_string()).expect(200)["version"].clone();
    let second = server.request("DELETE", KEY, None);
    second.expect(200);
    let commit = events.next();
    assert_eq!(commit.event, "commit");
    assert_eq!(commit.id, Some(first.to_string()));
    let keys: Vec<&str> = commit.data["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["environment_sensor_1", "environment_sensor_2"],
        "one event per commit, watched keys only"
    );
    assert_eq!(commit.data["changes"][0]["event"], "set");
    assert_eq!(commit.data["changes"][0]["value"], json!([1, 5, 42]));
    let delete = events.next();
    assert_eq!(delete.data["changes"][0]["event"], "delete");
    drop(events);

    // A reconnecting client resumes after the last event it saw.
    let mut resumed = Events::open(&server, watch, commit.id.as_deref()).unwrap();
    assert_eq!(
        resumed.next().id,
        Some(first.to_string()),
        "ready: where it resumes"
    );
    assert_eq!(resumed.next(), delete);
    drop(resumed);

    // Past what the feed retains: 410 with where it starts now.
    for i in 0..10 {
        server
            .put("/v1/buckets/aliases/keys/environment_x", &i.to_string())
            .expect(200);
    }
    let gone = Events::open(&server, &format!("{watch}&since={start}"), None)
        .err()
        .unwrap();
    let error = gone.error(410);
    assert_eq!(error["code"], "compacted");
    assert!(error["oldest"].as_u64().unwrap() > start);
    // Past the store's newest commit (a store restored from a copy): 409.
    let ahead = Events::open(&server, &format!("{watch}&since=900000"), None)
        .err()
        .unwrap();
    assert_eq!(ahead.error(409)["code"], "invalid-argument");
    let bad = Events::open(&server, watch, Some("yesterday"))
        .err()
        .unwrap();
    assert_eq!(bad.error(400)["code"], "invalid-argument");
}

#[test]
fn health_metrics_and_the_openapi_document() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let health = server.get("/healthz").expect(200);
    assert_eq!(health["status"], "ok");
    for i in 0..3 {
        server.put(KEY, &i.to_string()).expect(200);
    }
    server.get("/v1/buckets/aliases/keys/missing").error(404);
    let metrics = server.get("/metrics");
    assert_eq!(metrics.status, 200);
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = String::from_utf8(metrics.body).unwrap();
    let sample = |line_start: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{text}"))
            .trim()
            .parse()
            .unwrap()
    };
    let route = r#"route="/v1/buckets/{bucket}/keys/{key}""#;
    assert_eq!(
        sample(&format!(
            r#"kvstash_http_requests_total{{{route},method="PUT",status="200"}}"#
        )),
        3.0
    );
    assert_eq!(
        sample(&format!(
            r#"kvstash_http_requests_total{{{route},method="GET",status="404"}}"#
        )),
        1.0
    );
    assert_eq!(sample(r#"kvstash_errors_total{code="not-found"}"#), 1.0);
    assert_eq!(
        sample(&format!(
            r#"kvstash_http_request_duration_seconds_count{{{route},method="PUT"}}"#
        )),
        3.0
    );
    assert!(sample(r#"kvstash_storage_calls_total{op="commit"}"#) >= 3.0);
    assert_eq!(sample(r#"kvstash_backend_errors_total{op="commit"}"#), 0.0);
    let batches = text
        .lines()
        .find(|l| l.starts_with("kvstash_commit_batch_size_count{"))
        .unwrap_or_else(|| panic!("no commit batch sizes in\n{text}"));
    assert!(
        batches.ends_with(" 3")
            || batches
                .split(' ')
                .next_back()
                .unwrap()
                .parse::<u64>()
                .unwrap()
                >= 3,
        "{batches}"
    );

    let openapi = server.get("/openapi.json").expect(200);
    assert!(openapi["openapi"].as_str().unwrap().starts_with("3."));
    let paths = openapi["paths"].as_object().unwrap();
    for route in [
        "/v1/buckets/{bucket}/keys/{key}",
        "/v1/txn",
        "/v1/buckets/{bucket}/watch",
        "/metrics",
    ] {
        assert!(paths.contains_key(route), "{route} is not documented");
    }
}

/// The CLI in another process, and curl, on the store a server holds.
#[test]
fn the_cli_and_curl_share_the_store_a_server_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    server.put(KEY, "[1,5,42]").expect(200);
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
            .arg("--data")
            .arg(dir.path())
            .args(["--bucket", "aliases"])
            .args(args)
            .env_remove("KVSTASH_STORE")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["get", "environment_sensor_1"]).trim(), "[1,5,42]");
    cli(&["set", "display", "\"backyard shed sensor\""]);
    let curl = |args: &[&str]| {
        let out = Command::new("curl")
            .args(["--silent", "--show-error", "--fail-with-body"])
            .args(args)
            .output()
            .expect("curl (Debian package curl) is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let got = curl(&[&server.url("/v1/buckets/aliases/keys/display")]);
    assert_eq!(got["value"], "backyard shed sensor");
    let put = curl(&[
        "-X",
        "PUT",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        "{\"room\":\"shed\"}",
        &server.url("/v1/buckets/aliases/keys/meta"),
    ]);
    assert!(put["version"].as_u64().is_some());
    assert_eq!(cli(&["get", "meta"]).trim(), "{\"room\":\"shed\"}");
}

#[test]
fn a_non_loopback_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
    assert!(
        !dir.path().join("kvstash.redb").exists(),
        "refused before opening the store"
    );
}

/// The newest CPython here that runs schemathesis' coverage phase:
/// 3.11.7 fails in it with "SystemError: AST constructor recursion depth
/// mismatch" (CPython gh-106905), 3.12 does not. `None` if only an older
/// one is found.
fn python_for_schemathesis() -> Option<std::path::PathBuf> {
    let version = |python: &Path| -> Option<(u32, u32, u32)> {
        let out = Command::new(python)
            .args(["-c", "import sys; print(*sys.version_info[:3])"])
            .output()
            .ok()?;
        let text = String::from_utf8(out.stdout).ok()?;
        let mut parts = text.split_whitespace().map(|p| p.parse().ok());
        Some((parts.next()??, parts.next()??, parts.next()??))
    };
    let mut candidates: Vec<std::path::PathBuf> =
        ["python3.14", "python3.13", "python3.12", "python3"]
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
    if let Some(home) = std::env::var_os("HOME") {
        let versions = Path::new(&home).join(".pyenv/versions");
        if let Ok(entries) = std::fs::read_dir(versions) {
            candidates.extend(entries.flatten().map(|e| e.path().join("bin/python3")));
        }
    }
    candidates
        .into_iter()
        .filter_map(|python| version(&python).map(|v| (v, python)))
        .filter(|(v, _)| *v >= (3, 12, 0) || (v.0 == 3 && v.1 == 11 && v.2 >= 8))
        .max_by_key(|(v, _)| *v)
        .map(|(_, python)| python)
}

/// schemathesis (PyPI) against the server's own OpenAPI document: every
/// check and every phase (examples, coverage, fuzzing, stateful), with the
/// per-operation settings of tests/schemathesis.toml. It finds nothing.
#[test]
fn schemathesis_finds_nothing() {
    let (python, phases) = match python_for_schemathesis() {
        Some(python) => (python, "examples,coverage,fuzzing,stateful"),
        None => {
            eprintln!(
                "no CPython >= 3.11.8 here: schemathesis runs without its coverage phase (gh-106905)"
            );
            ("python3".into(), "examples,fuzzing,stateful")
        }
    };
    let venv = kvstash_test_servers::python_venv_with(
        "schemathesis-venv",
        &python,
        &["schemathesis==4.32.5"],
    );
    let st = venv.with_file_name("st");
    let dir = tempfile::tempdir().unwrap();
    // With tokens, so its checks of authentication run too (requests
    // without the token, or with a wrong one, must get 401).
    let admin = token(
        &dir.path().join("tokens.json"),
        &[
            "add",
            "admin",
            "--write",
            "*",
            "--locks",
            "*",
            "--storage",
            "read",
        ],
    );
    let server = Server::start(dir.path());
    let work = tempfile::tempdir().unwrap();
    let out = Command::new(&st)
        .current_dir(work.path())
        .env(
            "HYPOTHESIS_STORAGE_DIRECTORY",
            work.path().join("hypothesis"),
        )
        .env("NO_COLOR", "1")
        .arg("--config-file")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml"))
        .args(["run", &server.url("/openapi.json")])
        .args(["--header", &format!("Authorization: {}", bearer(&admin))])
        .args(["--phases", phases])
        .args(["--max-examples", "30", "--seed", "1", "--workers", "2"])
        .args(["--request-timeout", "5", "--generation-database", "none"])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found something ({}):\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(report.contains("passed"), "{report}");
    // The server took all of it and still answers.
    assert_eq!(server.get("/healthz").expect(200)["status"], "ok");
}

/// `kvstash token …` on the tokens file `tokens`; its standard output.
fn token(tokens: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("token")
        .arg("--tokens")
        .arg(tokens)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn bearer(secret: &str) -> String {
    format!("Bearer {secret}")
}

impl Server {
    fn as_token(&self, secret: &str, method: &str, path: &str, body: Option<&str>) -> Reply {
        let auth = bearer(secret);
        let mut headers = vec![("Authorization", auth.as_str())];
        if body.is_some() {
            headers.push(("Content-Type", "application/json"));
        }
        self.send(method, path, &headers, body.map(str::as_bytes))
    }
}

#[test]
fn tokens_are_checked_for_every_bucket_and_lock() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let reader = token(&tokens, &["add", "reader", "--read", "config"]);
    let writer = token(
        &tokens,
        &["add", "writer", "--write", "devices", "--locks", "deploy"],
    );
    let admin = token(&tokens, &["add", "admin", "--write", "*", "--locks", "*"]);
    assert!(reader.starts_with("kvst_") && reader != writer);
    let stored = std::fs::read_to_string(&tokens).unwrap();
    for secret in [&reader, &writer, &admin] {
        assert!(
            !stored.contains(&secret[5..]),
            "secrets are stored hashed only"
        );
    }
    let listed: Vec<Value> = token(&tokens, &["list"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        listed[0],
        json!({"name": "reader", "read": ["config"], "write": [], "locks": [], "storage": null})
    );

    // The default tokens file of the data directory is used by itself.
    let server = Server::start(dir.path());
    assert_eq!(server.get("/healthz").expect(200)["status"], "ok");
    let doc = server.get("/openapi.json").expect(200);
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["type"],
        "http"
    );

    let config = "/v1/buckets/config/keys/limit";
    let missing = server.get(config);
    assert_eq!(
        missing.header("www-authenticate"),
        Some("Bearer realm=\"kvstash\"")
    );
    assert_eq!(missing.error(401)["code"], "unauthorized");
    assert_eq!(
        server
            .as_token("kvst_nonsense", "GET", config, None)
            .error(401)["code"],
        "unauthorized"
    );
    assert_eq!(server.get("/metrics").status, 401);

    server
        .as_token(&admin, "PUT", config, Some("20"))
        .expect(200);
    assert_eq!(
        server.as_token(&reader, "GET", config, None).expect(200)["value"],
        20
    );
    assert_eq!(
        server
            .as_token(&reader, "PUT", config, Some("21"))
            .error(403)["code"],
        "forbidden"
    );
    let devices = "/v1/buckets/devices/keys/environment_sensor_1";
    assert_eq!(
        server.as_token(&reader, "GET", devices, None).error(403)["code"],
        "forbidden"
    );
    server
        .as_token(&writer, "PUT", devices, Some("[1,5,42]"))
        .expect(200);
    assert_eq!(
        server.as_token(&writer, "GET", devices, None).expect(200)["value"],
        json!([1, 5, 42])
    );
    assert_eq!(server.as_token(&writer, "GET", config, None).status, 403);
    let buckets = server
        .as_token(&reader, "GET", "/v1/buckets", None)
        .expect(200);
    assert_eq!(
        buckets,
        json!({"buckets": ["config"]}),
        "only what the token may read"
    );
    assert_eq!(
        server.as_token(&reader, "GET", "/metrics", None).status,
        200
    );
    let watch = "/v1/buckets/devices/watch";
    assert_eq!(
        server.as_token(&reader, "GET", watch, None).error(403)["code"],
        "forbidden"
    );

    // Locks by name; transactions by every bucket and lock they touch.
    let lock = r#"{"ttl_ms":10000}"#;
    server
        .as_token(&writer, "POST", "/v1/locks/deploy", Some(lock))
        .expect(200);
    assert_eq!(
        server
            .as_token(&writer, "POST", "/v1/locks/other", Some(lock))
            .status,
        403
    );
    assert_eq!(
        server
            .as_token(&reader, "GET", "/v1/locks/deploy", None)
            .status,
        403
    );
    let own = json!({"mutations": [{"bucket": "devices", "key": "k", "set": 1}]}).to_string();
    server
        .as_token(&writer, "POST", "/v1/txn", Some(&own))
        .expect(200);
    let reaching = json!({"checks": [{"bucket": "config", "key": "limit", "exists": true}], "mutations": [{"bucket": "devices", "key": "k", "set": 2}]}).to_string();
    assert_eq!(
        server
            .as_token(&writer, "POST", "/v1/txn", Some(&reaching))
            .error(403)["code"],
        "forbidden"
    );
    let default_bucket = json!({"mutations": [{"key": "k", "set": 1}]}).to_string();
    assert_eq!(
        server
            .as_token(&writer, "POST", "/v1/txn", Some(&default_bucket))
            .status,
        403
    );
    let k = server.as_token(&writer, "GET", "/v1/buckets/devices/keys/k", None);
    assert_eq!(
        k.expect(200)["value"],
        1,
        "refused transactions wrote nothing"
    );

    // Revoked: refused at the next request, no restart.
    token(&tokens, &["revoke", "reader"]);
    assert_eq!(
        server.as_token(&reader, "GET", config, None).error(401)["code"],
        "unauthorized"
    );
    assert_eq!(
        server.as_token(&admin, "GET", config, None).expect(200)["value"],
        20
    );
}

#[test]
fn off_loopback_a_server_needs_tokens_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let serve = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
            .arg("--data")
            .arg(dir.path())
            .arg("serve")
            .args(args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    // Refused before anything is bound (no test listens off loopback).
    assert!(serve(&["--listen", "0.0.0.0:0"]).contains("needs --tokens"));
    token(&tokens, &["add", "ops", "--read", "*"]);
    assert!(
        serve(&["--listen", "0.0.0.0:0"]).contains("needs TLS"),
        "the tokens file is found"
    );
    // A tokens file anyone may write is refused.
    std::fs::set_permissions(&tokens, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let e = Server::serving(dir.path(), &[], &[])
        .err()
        .expect("refused");
    assert!(e.contains("may be written by other users"), "{e}");
}

/// A self-signed certificate for 127.0.0.1 (openssl's CLI).
fn certificate(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (Debian package openssl) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
}

#[test]
fn tls_carries_the_api_and_its_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path());
    let tokens = dir.path().join("tokens.json");
    let admin = token(&tokens, &["add", "admin", "--write", "*"]);
    let server = Server::serving(
        dir.path(),
        &[],
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    )
    .unwrap();
    let url = format!(
        "https://{}/v1/buckets/names/keys/environment_sensor_1",
        server.addr
    );
    let auth = format!("Authorization: {}", bearer(&admin));
    let curl = |args: &[&str]| {
        Command::new("curl")
            .args([
                "--silent",
                "--show-error",
                "--cacert",
                cert.to_str().unwrap(),
            ])
            .args(args)
            .output()
            .unwrap()
    };
    let put = curl(
        &[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            "Content-Type: application/json",
        ]
        .iter()
        .copied()
        .chain(["--data-binary", "\"backyard shed sensor\"", &url])
        .collect::<Vec<_>>(),
    );
    assert!(
        put.status.success(),
        "{}",
        String::from_utf8_lossy(&put.stderr)
    );
    let got = curl(&["-H", &auth, &url]);
    let got: Value = serde_json::from_slice(&got.stdout).unwrap();
    assert_eq!(got["value"], "backyard shed sensor");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let mut plain = TcpStream::connect(server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// `kvstash --server URL …` with `KVSTASH_TOKEN`; its output, or its
/// error output if it fails.
fn remote_cli(url: &str, token: Option<&str>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_kvstash"));
    command
        .args(["--server", url, "--bucket", "aliases"])
        .args(args)
        .env_remove("KVSTASH_STORE")
        .env_remove("KVSTASH_TOKEN");
    if let Some(token) = token {
        command.env("KVSTASH_TOKEN", token);
    }
    let out = command.output().unwrap();
    match out.status.success() {
        true => Ok(String::from_utf8(out.stdout).unwrap().trim().to_string()),
        false => Err(String::from_utf8(out.stderr).unwrap()),
    }
}

#[test]
fn the_cli_works_on_a_served_store_with_a_storage_token() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let full = token(&tokens, &["add", "host", "--storage", "write"]);
    let replica = token(&tokens, &["add", "replica", "--storage", "read"]);
    let api_only = token(&tokens, &["add", "api", "--write", "*"]);
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);
    server
        .as_token(
            &api_only,
            "PUT",
            "/v1/buckets/aliases/keys/sensor",
            Some("[1,5,42]"),
        )
        .expect(200);

    // A storage token: every command, as on an embedded store.
    let cli = |args: &[&str]| remote_cli(&url, Some(&full), args).unwrap();
    assert_eq!(cli(&["get", "sensor"]), "[1,5,42]");
    cli(&["set", "display", "\"backyard shed sensor\""]);
    assert_eq!(cli(&["incr", "boots", "3"]), "3");
    let listed: Vec<Value> = cli(&["list"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 3, "{listed:?}");
    // What it wrote is the server's store, seen through the API.
    let display = server
        .as_token(&api_only, "GET", "/v1/buckets/aliases/keys/display", None)
        .expect(200);
    assert_eq!(display["value"], "backyard shed sensor");
    let version = display["version"].as_u64().unwrap();
    let meta: Value = serde_json::from_str(&cli(&["get", "display", "--meta"])).unwrap();
    assert_eq!(meta["version"], version, "the same versions on both sides");

    // A watch here wakes on a commit made through the server's API.
    let mut watch = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .args(["--server", &url, "--bucket", "aliases", "watch"])
        .env("KVSTASH_TOKEN", &full)
        .env_remove("KVSTASH_STORE")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Until the watch is up: writes land after it started.
    let mut seen = None;
    for i in 0..100 {
        server
            .as_token(
                &api_only,
                "PUT",
                "/v1/buckets/aliases/keys/ping",
                Some(&i.to_string()),
            )
            .expect(200);
        std::thread::sleep(Duration::from_millis(100));
        if i >= 10 {
            seen = lines.next();
            break;
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    let event: Value = serde_json::from_str(&seen.unwrap().unwrap()).unwrap();
    assert_eq!(event["key"], "ping");

    // A read token reads, and writes are refused, saying why.
    assert_eq!(
        remote_cli(&url, Some(&replica), &["get", "sensor"]).unwrap(),
        "[1,5,42]"
    );
    let refused = remote_cli(&url, Some(&replica), &["set", "x", "1"]).unwrap_err();
    assert!(
        refused.contains("may not write the store's records"),
        "{refused}"
    );
    // A token for the API alone, or none, reaches no records.
    let refused = remote_cli(&url, Some(&api_only), &["get", "sensor"]).unwrap_err();
    assert!(refused.contains("--storage read"), "{refused}");
    let refused = remote_cli(&url, None, &["get", "sensor"]).unwrap_err();
    assert!(refused.contains("Authorization: Bearer"), "{refused}");
    // Nothing was written by what was refused.
    assert_eq!(
        server
            .as_token(&api_only, "GET", "/v1/buckets/aliases/keys/x", None)
            .status,
        404
    );
}

/// `kvstash --server URL shell`, at a terminal: the shell on another
/// host's store, with buckets and keys completed from what it serves.
#[cfg(feature = "shell")]
#[test]
fn the_shell_works_on_a_served_store() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.json");
    let full = token(&tokens, &["add", "host", "--storage", "write"]);
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);
    let seeded = json!({"name": "backyard shed sensor"}).to_string();
    remote_cli(&url, Some(&full), &["set", "environment_sensor_1", &seeded]).unwrap();
    let home = tempfile::tempdir().unwrap();
    let script = r#"
term = Terminal([sys.argv[1], "--server", sys.argv[2], "--data", sys.argv[3], "shell"])
term.until(b"kvstash:default> ")
# "use al<Tab>" completes the served bucket, "get env<Tab>" its key.
term.typed(b"use al\t", b"aliases ")
term.typed(b"\r", b"kvstash:aliases> ")
term.typed(b"get env\t", b"environment_sensor_1 ")
out = term.typed(b"\r", b"kvstash:aliases> ")
assert b'"name": "backyard shed sensor"' in out, out
term.typed(b"set display '\"front porch\"'\r", b"kvstash:aliases> ")
sys.exit(term.exit(b"exit\r"))
"#;
    terminal::run(
        script,
        &[url.as_ref(), home.path().as_os_str()],
        &[("KVSTASH_TOKEN", &full)],
    );
    // The shell wrote the server's store, and kept no store of its own.
    let display = remote_cli(&url, Some(&full), &["get", "display"]);
    assert_eq!(display.unwrap(), "\"front porch\"");
    assert!(!home.path().join("kvstash.redb").exists());
}

#[test]
fn a_served_store_is_reached_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    // A CA and a certificate it signed (webpki, unlike curl, takes no
    // self-signed certificate as a server's).
    let certs = kvstash_test_servers::Certificates::create(dir.path());
    let tokens = dir.path().join("tokens.json");
    let full = token(&tokens, &["add", "host", "--storage", "write"]);
    let server = Server::serving(
        dir.path(),
        &[],
        &[
            "--tls-cert",
            certs.cert.to_str().unwrap(),
            "--tls-key",
            certs.key.to_str().unwrap(),
        ],
    )
    .unwrap();
    let url = format!("https://{}", server.addr);
    let config =
        json!({"type": "server", "url": url, "ca_file": certs.ca, "token_env": "HOST_TOKEN"});
    let with = |config: &Value, args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_kvstash"))
            .arg("--config")
            .arg(config.to_string())
            .args(args)
            .env("HOST_TOKEN", &full)
            .env_remove("SSL_CERT_FILE")
            .output()
            .unwrap()
    };
    let set = with(&config, &["set", "name", "\"shed\""]);
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    let got = with(&config, &["get", "name"]);
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "\"shed\"");
    // A certificate nobody vouches for is refused.
    let mut untrusted = config.clone();
    untrusted.as_object_mut().unwrap().remove("ca_file");
    let refused = with(&untrusted, &["get", "name"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    // The system's roots do not vouch for it (or there are none here).
    assert!(
        stderr.contains("TLS") || stderr.contains("CA certificates"),
        "{stderr}"
    );
}

#[test]
fn watch_streams_and_slow_clients_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::serving(
        dir.path(),
        &[],
        &["--max-watches", "1", "--header-timeout", "300ms"],
    )
    .unwrap();
    let watch = "/v1/buckets/b/watch";
    let mut first = Events::open(&server, watch, None).unwrap();
    assert_eq!(first.next().event, "ready");
    let busy = Events::open(&server, watch, None)
        .err()
        .expect("one watch at a time");
    assert_eq!(busy.header("retry-after"), Some("5"));
    assert_eq!(busy.error(429)["code"], "too-many-watches");
    // A long poll of the records takes a place too; one that does not
    // wait does not.
    for poll in [
        "/v1/storage/version?after=0&wait_ms=1000",
        "/v1/storage/changes?since=0&wait_ms=1000",
    ] {
        let busy = server.get(poll);
        assert_eq!(busy.header("retry-after"), Some("5"), "{poll}");
        assert_eq!(busy.error(429)["code"], "too-many-watches", "{poll}");
    }
    assert_eq!(
        server.get("/v1/storage/version?after=0").expect(200)["version"],
        0
    );
    drop(first);
    // The server lets the stream go once it finds its client gone (at
    // its next event): then a new watch may start.
    let started = Instant::now();
    let mut second = loop {
        server.put("/v1/buckets/b/keys/k", "1").expect(200);
        if let Ok(events) = Events::open(&server, watch, None) {
            break events;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the first watch's place was never freed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(second.next().event, "ready");

    // A connection that sends no request is closed.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(n == 0 || text.starts_with("HTTP/1.1 408"), "{text}");
}

/// SIGTERM stops a server at once, open watch streams and all, and the
/// store it held is left whole for the next process.
#[test]
fn sigterm_stops_the_server_with_watchers_open() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    server.put(KEY, "[1,5,42]").expect(200);
    let mut watch = Events::open(&server, "/v1/buckets/aliases/watch", None).unwrap();
    assert_eq!(watch.next().event, "ready");
    let pid = server.child.id().to_string();
    let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(dir.path())
        .args(["--bucket", "aliases", "get", "environment_sensor_1"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[1,5,42]");
}

/// Polls `/v1/replication` of `replica` until `done` holds of it (30 s at
/// most); the last report.
fn replication_until(replica: &Server, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report = replica.get("/v1/replication").expect(200);
        if done(&report) {
            return report;
        }
        assert!(
            Instant::now() < deadline,
            "the replica did not get there: {report}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A replica whose primary is not up yet answers reads with 503 (and
/// `Retry-After`), says why in `/healthz` and `/v1/replication`, and once
/// the primary is there copies it and serves it.
#[test]
fn a_replica_answers_503_until_it_has_copied_its_primary() {
    let (primary_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tokens = primary_dir.path().join("tokens.json");
    let follower = token(&tokens, &["add", "replica", "--storage", "read"]);
    let admin = token(&tokens, &["add", "admin", "--write", "*"]);
    // The primary's address, kept by a listener that drops every connection
    // until the primary starts there (so no other socket takes the port).
    let keeper = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = keeper.local_addr().unwrap().to_string();
    keeper.set_nonblocking(true).unwrap();
    let kept = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let keeping = {
        let kept = kept.clone();
        std::thread::spawn(move || {
            while kept.load(std::sync::atomic::Ordering::Relaxed) {
                if keeper.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        })
    };
    let primary_url = format!("http://{listen}");
    let replica = Server::serving_with(
        replica_dir.path(),
        &[],
        &["--replica-of", &primary_url],
        &[("KVSTASH_PRIMARY_TOKEN", &follower)],
    )
    .unwrap();
    let report = replication_until(&replica, |r| r["last_error"].is_string());
    assert_eq!(report["state"], "syncing", "{report}");
    let read = replica.get("/v1/buckets/aliases/keys/sensor");
    assert!(read.header("retry-after").is_some(), "{read:?}");
    assert_eq!(read.error(503)["code"], "unavailable");
    let health = replica.get("/healthz");
    assert_eq!(health.status, 503);
    assert_eq!(health.json()["status"], "syncing");

    kept.store(false, std::sync::atomic::Ordering::Relaxed);
    keeping.join().unwrap();
    let primary = Server::serving(primary_dir.path(), &[], &["--listen", &listen]).unwrap();
    let version = primary
        .as_token(
            &admin,
            "PUT",
            "/v1/buckets/aliases/keys/sensor",
            Some("[1,5,42]"),
        )
        .expect(200)["version"]
        .as_u64()
        .unwrap();
    replication_until(&replica, |r| {
        r["state"] == "following" && r["applied"].as_u64() >= Some(version)
    });
    let read = replica.get("/v1/buckets/aliases/keys/sensor").expect(200);
    assert_eq!(read, json!({"value": [1, 5, 42], "version": version}));
    assert_eq!(replica.get("/healthz").status, 200);
}

/// Every item of every bucket of `server` (key, value, version), as read
/// through the HTTP API with `token`.
fn everything(server: &Server, token: &str) -> Vec<Value> {
    let buckets = server
        .as_token(token, "GET", "/v1/buckets", None)
        .expect(200);
    let mut items = Vec::new();
    for bucket in buckets["buckets"].as_array().unwrap() {
        let path = format!("/v1/buckets/{}/keys?limit=1000", bucket.as_str().unwrap());
        let page = server.as_token(token, "GET", &path, None).expect(200);
        for item in page["items"].as_array().unwrap() {
            items.push(json!([bucket, item]));
        }
    }
    items
}

#[test]
fn a_replica_follows_its_primary_with_its_versions_and_refuses_writes() {
    let (primary_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let tokens = primary_dir.path().join("tokens.json");
    let follower = token(&tokens, &["add", "replica", "--storage", "read"]);
    let admin = token(&tokens, &["add", "admin", "--write", "*", "--locks", "*"]);
    let primary = Server::start(primary_dir.path());
    let primary_url = format!("http://{}", primary.addr);
    // What the primary held before the replica started: its first copy.
    primary
        .as_token(
            &admin,
            "PUT",
            "/v1/buckets/aliases/keys/sensor",
            Some("[1,5,42]"),
        )
        .expect(200);
    primary
        .as_token(&admin, "PUT", "/v1/buckets/aliases/keys/old", Some("true"))
        .expect(200);
    let start_replica = || {
        Server::serving_with(
            replica_dir.path(),
            &[],
            &["--replica-of", &primary_url],
            &[("KVSTASH_PRIMARY_TOKEN", &follower)],
        )
        .unwrap()
    };
    let replica = start_replica();
    let report = replication_until(&replica, |r| r["state"] == "following");
    assert_eq!(report["primary"], primary_url.as_str());
    assert_eq!(report["snapshots"], 1);
    // Then every commit, as it comes: values, deletes, TTLs, documents,
    // transactions, schemas, locks.
    primary
        .as_token(
            &admin,
            "PUT",
            "/v1/buckets/aliases/keys/display",
            Some("\"backyard shed\""),
        )
        .expect(200);
    primary
        .as_token(&admin, "DELETE", "/v1/buckets/aliases/keys/old", None)
        .expect(200);
    primary
        .as_token(
            &admin,
            "PUT",
            "/v1/buckets/cfg/keys/limit?ttl_ms=600000",
            Some("{\"n\":1}"),
        )
        .expect(200);
    primary
        .as_token(
            &admin,
            "PUT",
            "/v1/buckets/cfg/keys/limit/path?pointer=/n",
            Some("2"),
        )
        .expect(200);
    primary
        .as_token(
            &admin,
            "POST",
            "/v1/txn",
            Some(r#"{"mutations":[{"bucket":"cfg","key":"a","set":1},{"bucket":"cfg","key":"hits","increment":5}]}"#),
        )
        .expect(200);
    primary
        .as_token(
            &admin,
            "POST",
            "/v1/locks/deploy",
            Some(r#"{"ttl_ms":60000,"owner":"ci"}"#),
        )
        .expect(200);
    let newest = primary
        .as_token(&admin, "GET", "/healthz", None)
        .expect(200)["version"]
        .as_u64()
        .unwrap();
    let report = replication_until(&replica, |r| r["applied"] == newest);
    assert_eq!(report["lag_versions"], 0, "{report}");
    // The same records, with the primary's versions.
    assert_eq!(everything(&replica, &admin), everything(&primary, &admin));
    let on_replica = replica.get("/v1/buckets/cfg/keys/limit").expect(200);
    let on_primary = primary
        .as_token(&admin, "GET", "/v1/buckets/cfg/keys/limit", None)
        .expect(200);
    assert_eq!(on_replica, on_primary);
    assert!(
        on_replica["expires_at"].is_string(),
        "TTLs come along: {on_replica}"
    );
    assert_eq!(
        replica.get("/v1/buckets/aliases/keys/old").error(404)["code"],
        "not-found"
    );
    assert_eq!(
        replica.get("/v1/locks/deploy").expect(200)["holder"]["owner"],
        "ci"
    );
    // A client reads here and writes there, conditionally.
    let version = replica.get("/v1/buckets/aliases/keys/display").expect(200)["version"]
        .as_u64()
        .unwrap();
    primary
        .as_token(
            &admin,
            "PUT",
            &format!("/v1/buckets/aliases/keys/display?if_version={version}"),
            Some("\"front porch\""),
        )
        .expect(200);

    // Writes are refused, with the primary's URL, and write nothing.
    for (method, path, body) in [
        ("PUT", "/v1/buckets/aliases/keys/x", Some("1")),
        ("DELETE", "/v1/buckets/aliases/keys/sensor", None),
        (
            "POST",
            "/v1/txn",
            Some(r#"{"mutations":[{"bucket":"aliases","key":"sensor","delete":true}]}"#),
        ),
        ("POST", "/v1/locks/deploy2", Some(r#"{"ttl_ms":1000}"#)),
        (
            "POST",
            "/v1/storage/commit",
            Some(r#"{"writes":[{"key":"AA==","value":null}]}"#),
        ),
    ] {
        let error = replica.request(method, path, body).error(403);
        assert_eq!(error["code"], "read-only", "{method} {path}");
        assert_eq!(error["primary"], primary_url.as_str());
    }
    // Another process on the replica's store cannot write either.
    let out = Command::new(env!("CARGO_BIN_EXE_kvstash"))
        .arg("--data")
        .arg(replica_dir.path())
        .args(["-b", "aliases", "set", "x", "1"])
        .env_remove("KVSTASH_STORE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("read-only"));
    // Its lag, in /v1/replication, /metrics and /healthz.
    let report = replication_until(&replica, |r| {
        r["lag_versions"] == 0 && r["applied"].as_u64() > Some(newest)
    });
    let metrics = String::from_utf8(replica.get("/metrics").body).unwrap();
    assert!(
        metrics.contains("kvstash_replica_lag_versions 0\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kvstash_replica_state{state=\"following\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(
        replica.get("/healthz").expect(200)["replica"]["state"],
        "following"
    );
    assert_eq!(
        primary.get("/v1/replication").status,
        401,
        "a primary needs a token"
    );
    assert_eq!(
        primary
            .as_token(&admin, "GET", "/v1/replication", None)
            .error(404)["code"],
        "not-found"
    );

    // Stopped and started again, it resumes where it was, without a copy.
    let applied = report["applied"].as_u64().unwrap();
    drop(replica);
    primary
        .as_token(&admin, "PUT", "/v1/buckets/aliases/keys/later", Some("3"))
        .expect(200);
    let replica = start_replica();
    let report = replication_until(&replica, |r| {
        r["state"] == "following" && r["applied"].as_u64() > Some(applied)
    });
    assert_eq!(
        report["snapshots"], 0,
        "resumed from version {applied}: {report}"
    );
    assert_eq!(everything(&replica, &admin), everything(&primary, &admin));
}

#[test]
fn a_replica_behind_a_compacted_feed_copies_the_store_again() {
    let (primary_dir, replica_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // A feed of five commits.
    let config = json!({"type": "file", "path": primary_dir.path().join("p.redb"), "retention": 5});
    let primary = Server::start_with(primary_dir.path(), &["--config", &config.to_string()]);
    let primary_url = format!("http://{}", primary.addr);
    for key in ["a", "b", "c"] {
        primary
            .put(&format!("/v1/buckets/x/keys/{key}"), "1")
            .expect(200);
    }
    let replica =
        Server::serving(replica_dir.path(), &[], &["--replica-of", &primary_url]).unwrap();
    replication_until(&replica, |r| {
        r["state"] == "following" && r["snapshots"] == 1
    });
    // The replica stands still while the primary moves on past its feed.
    let pid = replica.child.id().to_string();
    let signal = |name: &str| {
        assert!(
            Command::new("kill")
                .args([name, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    signal("-STOP");
    for i in 0..20 {
        primary
            .put("/v1/buckets/x/keys/n", &i.to_string())
            .expect(200);
    }
    primary
        .request("DELETE", "/v1/buckets/x/keys/a", None)
        .expect(200);
    signal("-CONT");
    let newest = primary.get("/healthz").expect(200)["version"]
        .as_u64()
        .unwrap();
    let report = replication_until(&replica, |r| {
        r["applied"] == newest && r["state"] == "following"
    });
    // Not the five newest commits over a stale copy: a new copy.
    assert_eq!(report["snapshots"], 2, "{report}");
    assert_eq!(
        replica.get("/v1/buckets/x/keys?limit=100").expect(200),
        primary.get("/v1/buckets/x/keys?limit=100").expect(200)
    );
    assert_eq!(
        replica.get("/v1/buckets/x/keys/a").status,
        404,
        "the delete is there"
    );
    assert_eq!(replica.get("/v1/buckets/x/keys/n").expect(200)["value"], 19);
}

/// The caching layer in front of a served store, with another host (a
/// CLI process) writing to that store behind its back: a read within the
/// timeout may be served from memory, and once the timeout has passed
/// since the value was last known current, the other host's write is what
/// it returns. Its own writes it sees at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_in_front_of_a_served_store_is_stale_at_most_its_timeout() {
    const TIMEOUT: Duration = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = format!("http://{}", server.addr);
    let config = json!({"type": "caching", "main": {"type": "server", "url": url},
        "policy": {"timeout_ms": TIMEOUT.as_millis() as u64}});
    let store = kvstash::Store::open(&config.to_string()).await.unwrap();
    let bucket = store.bucket("aliases");
    let value =
        |entry: Option<kvstash::Entry>| entry.unwrap().value.parse::<i64>().unwrap().to_string();
    bucket.set_json("sensor", &1).await.unwrap();
    let known = Instant::now();
    assert_eq!(value(bucket.get("sensor").await.unwrap()), "1");

    let elsewhere = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || remote_cli(&url, None, &["set", "sensor", "2"]))
    };
    elsewhere.await.unwrap().unwrap();
    let read = value(bucket.get("sensor").await.unwrap());
    if known.elapsed() < TIMEOUT {
        assert_eq!(read, "1", "within the timeout, served from memory");
    }
    tokio::time::sleep(TIMEOUT).await;
    assert_eq!(
        value(bucket.get("sensor").await.unwrap()),
        "2",
        "after it, never stale"
    );

    bucket.set_json("sensor", &3).await.unwrap();
    assert_eq!(
        value(bucket.get("sensor").await.unwrap()),
        "3",
        "its own write"
    );
    let stats = store.cache_stats().await.unwrap();
    assert_eq!(stats.len(), 1, "{stats:?}");
    assert_eq!(stats[0].layer, "$");
    assert!(stats[0].hits >= 1 && stats[0].syncs >= 1, "{stats:?}");
}

/// A server whose store has a caching layer reports its counters.
#[test]
fn a_served_cache_reports_its_counters() {
    let dir = tempfile::tempdir().unwrap();
    let config = json!({"type": "caching",
        "main": {"type": "file", "path": dir.path().join("s.redb")},
        "policy": {"timeout_ms": 60000}});
    let server = Server::start_with(dir.path(), &["--config", &config.to_string()]);
    server.put("/v1/buckets/b/keys/k", "1").expect(200);
    for _ in 0..3 {
        assert_eq!(server.get("/v1/buckets/b/keys/k").expect(200)["value"], 1);
    }
    let metrics = String::from_utf8(server.get("/metrics").body).unwrap();
    let counter = |name: &str| -> u64 {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{layer=\"$\"}} ")))
            .unwrap_or_else(|| panic!("no {name} in {metrics}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let (hits, misses) = (
        counter("kvstash_cache_hits"),
        counter("kvstash_cache_misses"),
    );
    assert!(hits >= 1 && hits + misses >= 3, "{metrics}");
    assert!(counter("kvstash_cache_entries") >= 1, "{metrics}");
    counter("kvstash_cache_evictions");
}
