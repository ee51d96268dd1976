//! A device-alias registry: the device-connector scenario as a Spin app.
//!
//! - Devices are JSON documents in kvstash (its rich API, `kvstash:store/store`,
//!   plugged in as a component dependency): every write has a version, sent
//!   as `ETag`, and `If-Match` makes a write conditional on it.
//! - Display labels are plain values in Spin's key/value store
//!   (`spin_sdk::key_value::Store`), which kvstash also serves.
//!
//! Routes:
//! - `PUT /devices/:id` — store a JSON document (`If-Match: "v"` optional)
//! - `GET /devices/:id` — the document, with its version as `ETag`
//! - `PATCH /devices/:id/name` — body a JSON string; `If-Match` required:
//!   one transaction checks the version and edits the `/name` field
//! - `GET /devices` — the device ids, one per line
//! - `PUT /labels/:id`, `GET /labels/:id` — a display label, as bytes

use spin_sdk::http::{IntoResponse, Params, Request, Response, Router};
use spin_sdk::http_component;
use spin_sdk::key_value::Store;

mod kvstash_api {
    wit_bindgen::generate!({
        inline: "
            package example:device-aliases;
            world rich {
                import kvstash:store/store@0.1.0;
            }
        ",
        path: "../../wit",
        world: "example:device-aliases/rich",
        generate_all,
    });
}

use kvstash_api::kvstash::store::store::{Bucket, transact};
use kvstash_api::kvstash::store::types::{
    Check, Condition, Error, KeyCheck, ListOptions, Mutation, Op, PathOp, Value, WriteOptions,
};

const DEVICES: &str = "devices";

#[http_component]
fn handle(request: Request) -> Response {
    let mut router = Router::new();
    router.get("/devices", list_devices);
    router.get("/devices/:id", get_device);
    router.put("/devices/:id", put_device);
    router.patch("/devices/:id/name", rename_device);
    router.get("/labels/:id", get_label);
    router.put("/labels/:id", put_label);
    router.handle(request)
}

fn text(status: u16, body: impl Into<String>) -> Response {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(body.into())
        .build()
}

fn id(params: &Params) -> String {
    params.get("id").unwrap_or_default().to_string()
}

/// The version an `If-Match: "42"` (or `42`) header names.
fn if_match(request: &Request) -> Result<Option<u64>, Response> {
    let Some(value) = request.header("if-match").and_then(|v| v.as_str()) else {
        return Ok(None);
    };
    value
        .trim()
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| text(400, format!("If-Match must be a version, got {value}\n")))
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// A kvstash error as an HTTP answer.
fn failure(e: Error) -> Response {
    match e {
        Error::Conflict(current)
        | Error::CheckFailed(kvstash_api::kvstash::store::types::CheckFailure {
            current, ..
        }) => {
            let current = current.map_or_else(|| "none".to_string(), |v| v.to_string());
            text(
                412,
                format!("version mismatch; current version: {current}\n"),
            )
        }
        Error::InvalidValue(why) | Error::InvalidKey(why) | Error::InvalidPath(why) => {
            text(400, format!("{why}\n"))
        }
        Error::NotFound(why) | Error::PathNotFound(why) => text(404, format!("{why}\n")),
        other => text(500, format!("{other:?}\n")),
    }
}

fn get_device(_request: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let devices = Bucket::open(DEVICES).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    Ok(match devices.get(&id(&params)) {
        Ok(Some(entry)) => {
            let body = match entry.value {
                Value::Json(json) => json,
                Value::Bytes(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            };
            Response::builder()
                .status(200)
                .header("content-type", "application/json")
                .header("etag", etag(entry.version))
                .body(body)
                .build()
        }
        Ok(None) => text(404, "no such device\n"),
        Err(e) => failure(e),
    })
}

fn put_device(request: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let expected = match if_match(&request) {
        Ok(expected) => expected,
        Err(response) => return Ok(response),
    };
    let body = String::from_utf8_lossy(request.body()).into_owned();
    if serde_json::from_str::<serde_json::Value>(&body).is_err() {
        return Ok(text(400, "the body must be a JSON document\n"));
    }
    let devices = Bucket::open(DEVICES).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let options = WriteOptions {
        if_version: expected,
        if_absent: false,
        ttl_ms: None,
    };
    Ok(
        match devices.set_with(&id(&params), &Value::Json(body), options) {
            Ok(version) => Response::builder()
                .status(200)
                .header("etag", etag(version))
                .body(format!("{version}\n"))
                .build(),
            Err(e) => failure(e),
        },
    )
}

fn rename_device(request: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let expected = match if_match(&request) {
        Ok(Some(expected)) => expected,
        Ok(None) => return Ok(text(428, "renaming needs If-Match: \"version\"\n")),
        Err(response) => return Ok(response),
    };
    let name = String::from_utf8_lossy(request.body()).into_owned();
    let id = id(&params);
    let checks = [Check::Key(KeyCheck {
        bucket: DEVICES.into(),
        key: id.clone(),
        condition: Condition::VersionIs(expected),
    })];
    let mutations = [Mutation {
        bucket: DEVICES.into(),
        key: id,
        op: Op::SetPath(PathOp {
            path: "/name".into(),
            value: name,
        }),
        ttl_ms: None,
    }];
    Ok(match transact(&checks, &mutations) {
        Ok(version) => Response::builder()
            .status(200)
            .header("etag", etag(version))
            .body(format!("{version}\n"))
            .build(),
        Err(e) => failure(e),
    })
}

fn list_devices(_request: Request, _params: Params) -> anyhow::Result<impl IntoResponse> {
    let devices = Bucket::open(DEVICES).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut ids = String::new();
    let mut cursor = None;
    loop {
        let page = match devices.list(&ListOptions {
            prefix: None,
            start: None,
            end: None,
            limit: None,
            cursor: cursor.take(),
            reverse: false,
            keys_only: true,
        }) {
            Ok(page) => page,
            Err(e) => return Ok(failure(e)),
        };
        for item in page.items {
            ids.push_str(&item.key);
            ids.push('\n');
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(text(200, ids)),
        }
    }
}

fn get_label(_request: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let store = Store::open_default()?;
    Ok(match store.get(&id(&params))? {
        Some(label) => Response::new(200, label),
        None => text(404, "no such label\n"),
    })
}

fn put_label(request: Request, params: Params) -> anyhow::Result<impl IntoResponse> {
    let store = Store::open_default()?;
    store.set(&id(&params), request.body())?;
    Ok(text(200, "ok\n"))
}
