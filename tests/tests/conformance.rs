//! The conformance cases (`tests/conformance/cases.json`) through the Rust
//! API, on a fresh memory store and a fresh file store per case. The Python
//! and JavaScript packages run the same cases through theirs, so the three
//! cannot drift apart.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use kvstash::{
    Check, Error, EventKind, ListOptions, Store, Transaction, Value, WatchOptions, WriteOptions,
};
use serde_json::{Value as Json, json};

#[allow(unused_macros)] // on_every_backend!: the cases run on their own list of stores
mod common;

struct Runner {
    store: Store,
    config: Json,
    vars: HashMap<String, Json>,
}

impl Runner {
    /// `"$name"` as the value saved under `name`; anything else as itself.
    fn resolve(&self, v: &Json) -> Json {
        match v.as_str().and_then(|s| s.strip_prefix('$')) {
            Some(name) => self
                .vars
                .get(name)
                .unwrap_or_else(|| panic!("${name} was not saved"))
                .clone(),
            None => v.clone(),
        }
    }

    fn str(&self, step: &Json, field: &str) -> String {
        let v = &step[field];
        if let Some(s) = v["repeat"].as_str() {
            return s.repeat(usize::try_from(v["times"].as_u64().unwrap()).unwrap());
        }
        self.resolve(v)
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {step}"))
            .to_string()
    }

    fn opt_str(&self, step: &Json, field: &str) -> Option<String> {
        (!step[field].is_null()).then(|| self.str(step, field))
    }

    fn u64(&self, v: &Json) -> u64 {
        self.resolve(v).as_u64().unwrap_or_else(|| panic!("{v}"))
    }

    /// A value in a transaction's arrays: `{"$bytes": [..]}` or JSON.
    fn value(&self, v: &Json) -> Value {
        match v.get("$bytes") {
            Some(bytes) => Value::Bytes(byte_list(bytes)),
            None => Value::Json(self.resolve(v).to_string()),
        }
    }

    fn step_value(&self, step: &Json) -> Value {
        match step.get("bytes") {
            Some(bytes) => Value::Bytes(byte_list(bytes)),
            None => Value::Json(step["value"].to_string()),
        }
    }

    async fn run(&mut self, step: &Json) -> Result<Json, Error> {
        let op = step["op"].as_str().unwrap();
        if op == "sleep" {
            tokio::time::sleep(Duration::from_millis(step["ms"].as_u64().unwrap())).await;
            return Ok(Json::Null);
        }
        if op == "transaction" {
            return self.transaction(step).await.map(|v| json!(v));
        }
        if op == "reopen" {
            if self.config["type"] != "memory" {
                self.store = Store::open(&self.config.to_string()).await?;
            }
            return Ok(Json::Null);
        }
        let bucket = self.store.bucket(&self.str(step, "bucket"));
        let key = || self.str(step, "key");
        let path = || self.str(step, "path");
        Ok(match op {
            "get" => entry(bucket.get(&key()).await?),
            "set" => {
                let options = WriteOptions {
                    if_version: (!step["if_version"].is_null())
                        .then(|| self.u64(&step["if_version"])),
                    if_absent: step["if_absent"].as_bool().unwrap_or(false),
                    ttl: step["ttl_ms"].as_u64().map(Duration::from_millis),
                };
                json!(
                    bucket
                        .set_with(&key(), self.step_value(step), &options)
                        .await?
                )
            }
            "delete" => json!(bucket.delete(&key()).await?),
            "exists" => json!(bucket.exists(&key()).await?),
            "increment" => json!(
                bucket
                    .increment(&key(), step["delta"].as_i64().unwrap())
                    .await?
            ),
            "get_path" => match bucket.get_path_json::<Json>(&key(), &path()).await? {
                None => Json::Null,
                Some((value, version)) => json!({"value": value, "version": version}),
            },
            "set_path" => json!(
                bucket
                    .set_path_json(&key(), &path(), &step["value"])
                    .await?
            ),
            "append_path" => json!(
                bucket
                    .append_path_json(&key(), &path(), &step["value"])
                    .await?
            ),
            "delete_path" => json!(bucket.delete_path(&key(), &path()).await?),
            "set_schema" => {
                let schema = &step["schema"];
                json!(
                    bucket
                        .set_schema((!schema.is_null()).then_some(schema), false)
                        .await?
                )
            }
            "list" => {
                let options = ListOptions {
                    prefix: self.opt_str(step, "prefix"),
                    start: self.opt_str(step, "start"),
                    end: self.opt_str(step, "end"),
                    limit: step["limit"].as_u64().map(|n| u32::try_from(n).unwrap()),
                    cursor: self.opt_str(step, "cursor"),
                    reverse: step["reverse"].as_bool().unwrap_or(false),
                    keys_only: false,
                };
                let page = bucket.list(&options).await?;
                let values: Vec<Json> = page
                    .items
                    .iter()
                    .map(|i| value_json(i.value.as_ref().unwrap()))
                    .collect();
                let keys: Vec<&str> = page.items.iter().map(|i| i.key.as_str()).collect();
                json!({"keys": keys, "values": values, "cursor": page.cursor})
            }
            "watch" => {
                let options = WatchOptions {
                    prefix: self.opt_str(step, "prefix"),
                    since: Some(self.u64(&step["since"])),
                    ..WatchOptions::default()
                };
                let mut stream = Box::pin(bucket.watch(options).await?);
                let mut events = Vec::new();
                for _ in 0..step["count"].as_u64().unwrap() {
                    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
                    let Ok(Some(event)) = next else { break };
                    let event = event?;
                    let kind = match event.kind {
                        EventKind::Set => "set",
                        EventKind::Delete => "delete",
                        EventKind::Expire => "expire",
                    };
                    let value = event.value.as_ref().map_or(Json::Null, value_json);
                    events.push(json!([kind, event.key, value]));
                }
                json!({"events": events})
            }
            other => panic!("unknown op {other}"),
        })
    }

    async fn transaction(&self, step: &Json) -> Result<u64, Error> {
        let mut tx: Transaction = self.store.transaction();
        let s = |v: &Json| self.resolve(v).as_str().unwrap().to_string();
        for check in step["checks"].as_array().into_iter().flatten() {
            let (kind, args) = check.as_object().unwrap().iter().next().unwrap();
            let (b, k) = (s(&args[0]), s(&args[1]));
            tx = tx.check(match kind.as_str() {
                "version" => Check::version(&b, &k, self.u64(&args[2])),
                "absent" => Check::absent(&b, &k),
                "exists" => Check::exists(&b, &k),
                "equals" => Check::equals(&b, &k, self.value(&args[2])),
                other => panic!("unknown check {other}"),
            });
        }
        for write in step["writes"].as_array().into_iter().flatten() {
            let (kind, args) = write
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, _)| *k != "ttl_ms")
                .unwrap();
            let (b, k) = (s(&args[0]), s(&args[1]));
            tx = match kind.as_str() {
                "set" => tx.set(&b, &k, self.value(&args[2])),
                "delete" => tx.delete(&b, &k),
                "increment" => tx.increment(&b, &k, args[2].as_i64().unwrap()),
                "set_path" => tx.set_path_json(&b, &k, &s(&args[2]), &args[3])?,
                "delete_path" => tx.delete_path(&b, &k, &s(&args[2])),
                "append_path" => tx.append_path_json(&b, &k, &s(&args[2]), &args[3])?,
                other => panic!("unknown write {other}"),
            };
            if let Some(ms) = write["ttl_ms"].as_u64() {
                tx = tx.ttl(Duration::from_millis(ms));
            }
        }
        tx.commit().await
    }

    /// Checks `outcome` against the step's `expect`, then saves what `save` names.
    fn check(&mut self, step: &Json, outcome: Result<Json, Error>, at: &str) {
        let expect = &step["expect"];
        let result = match (outcome, expect.get("error")) {
            (Err(e), Some(want)) => {
                assert_eq!(e.code(), want.as_str().unwrap(), "{at}: {e}");
                if let Some(current) = expect.get("current") {
                    let (Error::Conflict { current: got }
                    | Error::CheckFailed { current: got, .. }) = &e
                    else {
                        panic!("{at}: {e} has no current version")
                    };
                    assert_eq!(json!(got), self.resolve(current), "{at}: current");
                }
                if let Some(index) = expect.get("index") {
                    let Error::CheckFailed { index: got, .. } = e else {
                        panic!("{at}: {e} has no index")
                    };
                    assert_eq!(json!(got), *index, "{at}: index");
                }
                return;
            }
            (Err(e), None) => panic!("{at}: unexpected error {e} ({})", e.code()),
            (Ok(r), Some(want)) => panic!("{at}: expected error {want}, got {r}"),
            (Ok(r), None) => r,
        };
        for (field, want) in expect.as_object().into_iter().flatten() {
            let want = self.resolve(want);
            match field.as_str() {
                "result" => assert_eq!(result, want, "{at}"),
                "absent" => assert_eq!(result.is_null(), want.as_bool().unwrap(), "{at}: {result}"),
                "newer_than" => assert!(
                    result.as_u64().unwrap() > want.as_u64().unwrap(),
                    "{at}: {result} is not newer than {want}"
                ),
                "more" => assert_eq!(!result["cursor"].is_null(), want.as_bool().unwrap(), "{at}"),
                "value" | "bytes" | "version" | "expires" | "keys" | "values" | "events" => {
                    assert_eq!(result[field.as_str()], want, "{at}: {field} of {result}");
                }
                other => panic!("{at}: unknown expectation {other}"),
            }
        }
        if let Some(name) = step["save"].as_str() {
            let saved = if result.get("cursor").is_some() {
                result["cursor"].clone()
            } else if let Some(version) = result.get("version") {
                version.clone()
            } else {
                result
            };
            self.vars.insert(name.to_string(), saved);
        }
    }
}

fn byte_list(v: &Json) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| u8::try_from(b.as_u64().unwrap()).unwrap())
        .collect()
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Json(text) => serde_json::from_str(text).unwrap(),
        Value::Bytes(bytes) => json!(bytes),
    }
}

fn entry(e: Option<kvstash::Entry>) -> Json {
    let Some(e) = e else { return Json::Null };
    let field = if matches!(e.value, Value::Bytes(_)) {
        "bytes"
    } else {
        "value"
    };
    json!({field: value_json(&e.value), "version": e.version, "expires": e.expires_at.is_some()})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_holds_on_memory_file_and_served_storage() {
    let cases: Json = serde_json::from_str(include_str!("../conformance/cases.json")).unwrap();
    let cases = cases["cases"].as_array().unwrap();
    assert!(cases.len() >= 9);
    let dir = tempfile::tempdir().unwrap();
    for (n, case) in cases.iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let path = dir.path().join(format!("case-{n}.redb"));
        // Another host's store: a `kvstash serve` here on a file store of
        // its own, reached through its `/v1/storage` routes.
        let served = json!({"type": "file", "path": dir.path().join(format!("served-{n}.redb"))});
        let url = common::served(served).await;
        for config in [
            json!({"type": "memory"}),
            json!({"type": "file", "path": path}),
            json!({"type": "server", "url": url}),
        ] {
            let mut runner = Runner {
                store: Store::open(&config.to_string()).await.unwrap(),
                config: config.clone(),
                vars: HashMap::new(),
            };
            for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
                let at = format!("{name} (step {i}, {}) on {}", step["op"], config["type"]);
                let outcome = runner.run(step).await;
                runner.check(step, outcome, &at);
            }
        }
    }
}
