//! `kvstash serve`: the store over HTTP/JSON (the API is `docs/http.md`;
//! `openapi.json` beside this file describes it and is served).
//!
//! Every route is one handler over the [`Store`] API. Every failure is an
//! [`ApiError`]: a status and `{"error":{"code","message",…}}`, where
//! `code` is [`Error::code`]; extractor rejections (a bad path, query or
//! body) are turned into the same shape, so a client meets one error format.

mod auth;
mod metrics;
mod replica;
mod storage;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, Extension, FromRequestParts as _, MatchedPath, Path, Query, RawPathParams,
    Request, State,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use crate::api::{Error, Event, EventKind, Lease, ListOptions, Store, Value, WriteOptions};
use crate::cli::rfc3339;

pub use auth::{Access, Scopes, StorageScope, Tokens, TokensFile};
pub use metrics::Metrics;
pub use replica::ReplicaOf;

/// The OpenAPI 3.0 document of this API, served at `/openapi.json`.
pub const OPENAPI: &str = include_str!("openapi.json");

/// The largest request body at the default limits: a largest value (8 MiB)
/// with room for a transaction document's framing. A store configured for
/// larger values (`limits.value_bytes`) takes bodies of that plus 64 KiB.
pub const MAX_BODY: usize = 8 * 1024 * 1024 + BODY_FRAMING;

/// What a body may have beyond its largest value.
const BODY_FRAMING: usize = 64 * 1024;

/// The largest TTL the store takes (100 years), as the API documents it.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 60 * 60 * 1000;

// The largest version or token a request may name (as a transaction
// document may): 2^53 - 1, what every JSON client holds exactly.
use crate::cli::MAX_SAFE_INTEGER;

/// Most items of one list page.
const MAX_LIST_LIMIT: u32 = 1000;

/// How a server runs: who it lets in, over what, and its limits.
pub struct ServeOptions {
    /// Bearer tokens every request but `/healthz` and `/openapi.json` must
    /// carry; `None`: no authentication (loopback addresses only).
    pub tokens: Option<Tokens>,
    /// TLS (required on any address but loopback).
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Most watch streams open at once; more are 429.
    pub max_watches: usize,
    /// How long a connection may take to send its request head (and
    /// finish a TLS handshake) before it is closed.
    pub header_timeout: Duration,
    /// Serve a read-only replica of this primary: the store (a memory or
    /// file store) follows its records, and write requests are refused.
    pub replica_of: Option<ReplicaOf>,
    /// A replica's resume file (`DB.replica` beside a file store).
    pub resume_file: Option<std::path::PathBuf>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            tokens: None,
            tls: None,
            max_watches: 256,
            header_timeout: Duration::from_secs(10),
            replica_of: None,
            resume_file: None,
        }
    }
}

/// Whether a server may listen on `addr`, with or without tokens and TLS:
/// anywhere but loopback, only with both (a token sent in the clear is a
/// token given away).
pub fn check_listen(addr: &SocketAddr, tokens: bool, tls: bool) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    match (tokens, tls) {
        (true, true) => Ok(()),
        (false, _) => Err(format!(
            "refusing to listen on {addr}: off loopback (127.0.0.1, ::1) the server needs --tokens (authentication) and --tls-cert/--tls-key"
        )),
        (true, false) => Err(format!(
            "refusing to listen on {addr}: off loopback the server needs TLS (--tls-cert, --tls-key), or its tokens cross the network in the clear"
        )),
    }
}

/// The certificate chain and private key (PEM files) of a TLS server.
pub fn tls_config(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    use anyhow::Context as _;
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the certificates in {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("{} holds no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("reading the private key in {}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key do not make a TLS server")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// What a server shares between requests.
struct Served {
    store: Store,
    metrics: Metrics,
    tokens: Option<Tokens>,
    /// The OpenAPI document as served: with the bearer scheme when tokens
    /// are checked.
    openapi: String,
    watches: Arc<tokio::sync::Semaphore>,
    /// Set when the server stops: watch streams end then.
    stopping: tokio::sync::watch::Sender<bool>,
    /// The store's backend, for `/v1/storage`, once asked for.
    storage: tokio::sync::OnceCell<Arc<dyn crate::backend::Backend>>,
    /// Set on a replica.
    replica: std::sync::OnceLock<Arc<replica::Replica>>,
}

impl Served {
    fn new(store: Store, tokens: Option<Tokens>, max_watches: usize) -> Arc<Self> {
        let openapi = match tokens {
            None => OPENAPI.to_string(),
            Some(_) => with_bearer_scheme(OPENAPI),
        };
        Arc::new(Self {
            metrics: Metrics::new(store.clone()),
            store,
            tokens,
            openapi,
            watches: Arc::new(tokio::sync::Semaphore::new(max_watches)),
            stopping: tokio::sync::watch::Sender::new(false),
            storage: tokio::sync::OnceCell::new(),
            replica: std::sync::OnceLock::new(),
        })
    }
}

/// `document` saying every operation but the public ones needs a bearer
/// token (and may answer 401 and 403).
fn with_bearer_scheme(document: &str) -> String {
    let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(document) else {
        return document.to_string();
    };
    doc["components"]["securitySchemes"] = json!({"bearer": {"type": "http", "scheme": "bearer"}});
    doc["security"] = json!([{"bearer": []}]);
    let denied = |what: &str| json!({"description": what, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}});
    if let Some(paths) = doc["paths"].as_object_mut() {
        for (path, operations) in paths.iter_mut() {
            let public = PUBLIC_ROUTES.contains(&path.as_str());
            for operation in operations
                .as_object_mut()
                .into_iter()
                .flat_map(|o| o.values_mut())
            {
                if public {
                    operation["security"] = json!([]);
                    continue;
                }
                operation["responses"]["401"] =
                    denied("No token, or one that is not (or no longer) valid (`unauthorized`).");
                operation["responses"]["403"] = denied("The token may not do this (`forbidden`).");
            }
        }
    }
    doc.to_string()
}

/// Routes anyone may call, with or without a token.
const PUBLIC_ROUTES: [&str; 2] = ["/healthz", "/openapi.json"];

/// The API's router over `store`, without authentication: every route of
/// `docs/http.md`.
pub fn router(store: Store) -> Router {
    routes(Served::new(
        store,
        None,
        ServeOptions::default().max_watches,
    ))
}

fn routes(served: Arc<Served>) -> Router {
    let keys = "/v1/buckets/{bucket}/keys/{key}";
    let body_limit = MAX_BODY.max(served.store.pool.value_bytes() + BODY_FRAMING);
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
        .route("/v1/buckets", get(buckets))
        .route("/v1/buckets/{bucket}/keys", get(list))
        .route(keys, get(get_key).put(put_key).delete(delete_key))
        .route(&format!("{keys}/increment"), post(increment))
        .route(
            &format!("{keys}/path"),
            get(get_path)
                .put(set_path)
                .delete(delete_path)
                .post(append_path),
        )
        .route("/v1/buckets/{bucket}/watch", get(watch))
        .route(
            "/v1/buckets/{bucket}/history",
            get(history).put(set_history),
        )
        .route("/v1/buckets/{bucket}/undo", post(undo))
        .route("/v1/buckets/{bucket}/redo", post(redo))
        .route(
            "/v1/buckets/{bucket}/schema",
            get(schema).put(set_schema).delete(remove_schema),
        )
        .route("/v1/txn", post(transaction))
        .route("/v1/locks/{name}", get(lock_status).post(acquire))
        .route("/v1/locks/{name}/renew", post(renew))
        .route("/v1/locks/{name}/release", post(release))
        .route(
            "/v1/storage/get",
            post(storage::get).layer(DefaultBodyLimit::max(storage::MAX_STORAGE_BODY)),
        )
        .route(
            "/v1/storage/scan",
            post(storage::scan).layer(DefaultBodyLimit::max(storage::MAX_SCAN_BODY)),
        )
        .route(
            "/v1/storage/commit",
            post(storage::commit).layer(DefaultBodyLimit::max(storage::MAX_STORAGE_BODY)),
        )
        .route("/v1/storage/version", get(storage::version))
        .route("/v1/storage/changes", get(storage::changes))
        .route("/v1/replication", get(replication))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            served.clone(),
            as_replica,
        ))
        .layer(axum::middleware::from_fn_with_state(
            served.clone(),
            authorize,
        ))
        .layer(axum::middleware::from_fn_with_state(
            served.clone(),
            measure,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(served)
}

/// Serves `store` on `listener` until `shutdown` completes; then waits
/// for the requests in flight (watch streams end at once). Check the
/// address with [`check_listen`] first.
pub async fn serve(
    store: Store,
    listener: tokio::net::TcpListener,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let ServeOptions {
        tokens,
        tls,
        max_watches,
        header_timeout,
        replica_of,
        resume_file,
    } = options;
    let served = Served::new(store, tokens, max_watches);
    if let Some(of) = &replica_of {
        let local = served
            .store
            .leaf_backend()
            .await
            .map_err(|e| std::io::Error::other(format!("a replica's store: {e}")))?;
        let replica = replica::start(of, local, resume_file, served.stopping.subscribe())
            .await
            .map_err(|e| std::io::Error::other(format!("following {}: {e}", of.url)))?;
        let _ = served.replica.set(replica);
    }
    let app = routes(served.clone());
    let tls = tls.map(tokio_rustls::TlsAcceptor::from);
    let connections = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, say: the open connections go on.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let watcher = connections.watcher();
        let tls = tls.clone();
        tokio::spawn(async move {
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            match tls {
                None => {
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
                Some(acceptor) => {
                    // A handshake that does not finish in time is dropped.
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                    else {
                        return;
                    };
                    let _ = watcher
                        .watch(http.serve_connection(TokioIo::new(stream), service))
                        .await;
                }
            }
        });
    }
    served.stopping.send_replace(true);
    // Requests in flight finish; a client that never does is not waited
    // for past a while.
    let _ = tokio::time::timeout(Duration::from_secs(30), connections.shutdown()).await;
    Ok(())
}

// ---------------------------------------------------------------- errors

/// A failed request: its status and `{"error":{…}}` body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: serde_json::Value,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let message: String = message.into();
        Self {
            status,
            body: json!({"error": {"code": code, "message": message}}),
        }
    }

    fn bad_request(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not-found", message)
    }

    fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }
}

/// The status an [`Error`] is answered with.
fn status_of(e: &Error) -> StatusCode {
    match e {
        Error::InvalidKey(_)
        | Error::InvalidBucket(_)
        | Error::InvalidValue(_)
        | Error::InvalidCursor
        | Error::InvalidConfig(_)
        | Error::InvalidArgument(_)
        | Error::InvalidPath(_)
        | Error::Serde(_) => StatusCode::BAD_REQUEST,
        Error::NotFound(_) | Error::PathNotFound(_) => StatusCode::NOT_FOUND,
        // What the store holds now refuses the request: a well-formed one
        // may succeed later, or on another key. (A version that does not
        // match is CouchDB's 409 too; 412 is for HTTP's own If-Match.)
        Error::Conflict { .. }
        | Error::CheckFailed { .. }
        | Error::PathTypeMismatch(_)
        | Error::NotJson
        | Error::SchemaViolation(_)
        | Error::Locked { .. }
        | Error::LeaseLost(_)
        | Error::Contention => StatusCode::CONFLICT,
        Error::ReadOnly => StatusCode::FORBIDDEN,
        Error::Compacted { .. } => StatusCode::GONE,
        Error::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Corrupt(_) | Error::Trap(_) | Error::Runtime(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        let mut detail = json!({"code": e.code(), "message": e.to_string()});
        if let Error::Conflict { current } = &e {
            detail["current"] = json!(current);
        }
        if let Error::CheckFailed { index, current } = &e {
            detail["index"] = json!(index);
            detail["current"] = json!(current);
        }
        if let Error::Compacted { oldest } = &e {
            detail["oldest"] = json!(oldest);
        }
        if let Error::Locked {
            token,
            expires_at,
            owner,
        } = &e
        {
            detail["token"] = json!(token);
            detail["expires_at"] = json!(rfc3339(*expires_at));
            detail["owner"] = json!(owner);
        }
        Self {
            status: status_of(&e),
            body: json!({ "error": detail }),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        // A key or bucket that is not UTF-8 once percent-decoded is a bad
        // key or bucket, as the store would call it.
        if let PathRejection::FailedToDeserializePathParams(failed) = &e
            && let axum::extract::path::ErrorKind::InvalidUtf8InPathParam { key } = failed.kind()
        {
            let code = match key.as_str() {
                "bucket" => "invalid-bucket",
                "key" | "name" => "invalid-key",
                _ => "invalid-argument",
            };
            return Self::bad_request(code, format!("the {key} is not UTF-8 once percent-decoded"));
        }
        Self::bad_request("invalid-argument", e.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::bad_request("invalid-argument", e.body_text())
    }
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid-value",
                format!(
                    "the request body is too large: at most the store's largest value \
                     (limits.value_bytes, 8 MiB by default) plus 64 KiB ({} for /v1/storage)",
                    storage::MAX_STORAGE_BODY
                ),
            );
        }
        Self::bad_request("invalid-argument", e.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = ErrorCode(self.code().to_string());
        let mut response = (self.status, Json(self.body)).into_response();
        response.extensions_mut().insert(code);
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

type Reply = Result<Response, ApiError>;

fn ok(body: serde_json::Value) -> Reply {
    Ok(Json(body).into_response())
}

async fn no_route() -> ApiError {
    ApiError::not_found("no such route (the API is described at /openapi.json)")
}

async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not take that method (see the Allow header)",
    )
}

// ---------------------------------------------------------------- bodies

/// A JSON request body of type `T`; any problem is a 400 with the reason.
fn body_json<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let body = body?;
    if !is_json(headers) {
        return Err(unsupported_media());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid-argument", format!("the body: {e}")))
}

/// Like [`body_json`], but an empty body is `T::default()`.
fn body_json_or_default<T: serde::de::DeserializeOwned + Default>(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    match body {
        Ok(bytes) if bytes.is_empty() => Ok(T::default()),
        other => body_json(headers, other),
    }
}

/// The request's media type without parameters, lower-cased.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or("").trim();
    Some(essence.to_ascii_lowercase())
}

/// JSON, or no Content-Type at all (curl's `-d` sends a form type, which is
/// refused rather than guessed at).
fn is_json(headers: &HeaderMap) -> bool {
    match media_type(headers) {
        None => true,
        Some(t) => t == "application/json",
    }
}

fn unsupported_media() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "invalid-argument",
        "send application/json (or application/octet-stream for a raw-bytes value)",
    )
}

/// A stored value as the request body holds it: JSON text, or raw bytes
/// under `application/octet-stream`.
fn body_value(headers: &HeaderMap, body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body?;
    if media_type(headers).as_deref() == Some("application/octet-stream") {
        return Ok(Value::Bytes(body.to_vec()));
    }
    if !is_json(headers) {
        return Err(unsupported_media());
    }
    String::from_utf8(body.to_vec())
        .map(Value::Json)
        .map_err(|_| ApiError::bad_request("invalid-value", "the body is not UTF-8 JSON"))
}

/// A whole body of JSON text as a value to store in a document.
fn body_document(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Box<RawValue>, ApiError> {
    let body = body?;
    if !is_json(headers) {
        return Err(unsupported_media());
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid-value", format!("the body is not JSON: {e}")))
}

/// A version or fencing token from a request, checked against the
/// documented range.
fn check_safe_integer(name: &str, n: u64) -> Result<u64, ApiError> {
    if n > MAX_SAFE_INTEGER {
        return Err(ApiError::bad_request(
            "invalid-argument",
            format!("{name} {n} is over {MAX_SAFE_INTEGER}"),
        ));
    }
    Ok(n)
}

/// A TTL in milliseconds, checked against the documented range.
fn ttl(ms: Option<u64>) -> Result<Option<Duration>, ApiError> {
    match ms {
        None => Ok(None),
        Some(ms @ 1..=MAX_TTL_MS) => Ok(Some(Duration::from_millis(ms))),
        Some(ms) => Err(ApiError::bad_request(
            "invalid-argument",
            format!("ttl_ms {ms} is outside 1..={MAX_TTL_MS}"),
        )),
    }
}

/// `{"value":…}` / `{"bytes":"base64"}` with the version and expiry, as
/// JSON text (stored JSON is copied as it is, not re-parsed).
fn entry_text(
    key: Option<&str>,
    value: Option<&Value>,
    version: u64,
    expires_at: Option<std::time::SystemTime>,
) -> String {
    let mut out = String::from("{");
    if let Some(key) = key {
        out.push_str("\"key\":");
        out.push_str(&json!(key).to_string());
        out.push(',');
    }
    match value {
        Some(Value::Json(text)) => {
            out.push_str("\"value\":");
            out.push_str(text);
            out.push(',');
        }
        Some(Value::Bytes(bytes)) => {
            out.push_str("\"bytes\":\"");
            out.push_str(&base64::engine::general_purpose::STANDARD.encode(bytes));
            out.push_str("\",");
        }
        None => {}
    }
    out.push_str(&format!("\"version\":{version}"));
    if let Some(at) = expires_at {
        out.push_str(&format!(",\"expires_at\":\"{}\"", rfc3339(at)));
    }
    out.push('}');
    out
}

fn json_text_response(text: String) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        text,
    )
        .into_response()
}

// ---------------------------------------------------------------- service routes

async fn healthz(State(s): State<Arc<Served>>) -> Reply {
    let version = s.store.bucket("default").watch_start(None, None).await?;
    match s.replica.get() {
        None => ok(json!({"status": "ok", "version": version})),
        // Not ready for reads until its copy of the primary is whole.
        Some(replica) if !replica.serves_reads() => Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "syncing", "version": version, "replica": replica.report()})),
        )
            .into_response()),
        Some(replica) => {
            ok(json!({"status": "ok", "version": version, "replica": replica.report()}))
        }
    }
}

/// `GET /v1/replication`: a replica's state and lag; 404 on a primary.
async fn replication(State(s): State<Arc<Served>>) -> Reply {
    match s.replica.get() {
        Some(replica) => ok(replica.report()),
        None => Err(ApiError::not_found(
            "this server is not a replica (`kvstash serve --replica-of URL` makes one)",
        )),
    }
}

/// On a replica: every write request is refused with a pointer to the
/// primary, and reads wait (503) until its copy of the primary is whole.
async fn as_replica(State(s): State<Arc<Served>>, request: Request, next: Next) -> Response {
    let Some(replica) = s.replica.get() else {
        return next.run(request).await;
    };
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let reads = request.method() == axum::http::Method::GET
        || request.method() == axum::http::Method::HEAD
        || matches!(
            route.as_deref(),
            Some("/v1/storage/get" | "/v1/storage/scan")
        );
    if route.is_some() && !reads {
        let mut e = ApiError::new(
            StatusCode::FORBIDDEN,
            "read-only",
            format!(
                "this server is a read-only replica of {}: send writes there",
                replica.primary()
            ),
        );
        e.body["error"]["primary"] = json!(replica.primary());
        return e.into_response();
    }
    let service = matches!(
        route.as_deref(),
        Some("/healthz" | "/metrics" | "/openapi.json" | "/v1/replication")
    );
    if route.is_some() && !service && !replica.serves_reads() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "this replica is copying the store of {}; it serves reads once it has",
                replica.primary()
            ),
        )
        .into_response();
    }
    next.run(request).await
}

async fn metrics_text(State(s): State<Arc<Served>>) -> Response {
    let mut text = s.metrics.render();
    // A store without caching layers has none; one whose instances are
    // all busy answers from one of them.
    if let Ok(caches) = s.store.cache_stats().await {
        text += &metrics::render_caches(&caches);
    }
    if let Some(replica) = s.replica.get() {
        text += &replica.metrics();
    }
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn openapi(State(s): State<Arc<Served>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        s.openapi.clone(),
    )
        .into_response()
}

/// Lets a request in if its token may do what its route does (with no
/// tokens configured, everything), and hands the handler its [`Access`].
/// A bucket's routes need read access for GET and write access otherwise;
/// a lock's routes need that lock. `/v1/buckets` and `/v1/txn` check what
/// they touch themselves.
///
/// Without tokens, only what a local program sends is let in: a web page
/// the user opens must not reach the store through the browser, neither
/// directly (browsers name the page's `Origin`, and the fetch metadata
/// says it is cross-site) nor by pointing a name of its own at 127.0.0.1
/// (DNS rebinding: the `Host` is then not a loopback one). Tokens are
/// never sent by a browser on its own, so with them neither can happen.
async fn authorize(State(s): State<Arc<Served>>, request: Request, next: Next) -> Response {
    if s.tokens.is_none()
        && let Some(why) = from_a_browser(request.headers())
    {
        return forbidden(why);
    }
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let access = match &s.tokens {
        None => Access::Open,
        // Unknown routes answer 404 whoever asks.
        Some(_) if route.is_none() => Access::Open,
        Some(_) if route.as_deref().is_some_and(|r| PUBLIC_ROUTES.contains(&r)) => Access::Open,
        Some(tokens) => {
            let header = request
                .headers()
                .get(header::AUTHORIZATION)
                .and_then(|h| h.to_str().ok());
            match tokens.check(header) {
                Ok(access) => access,
                Err(auth::Refused::Missing) => {
                    return unauthorized("this server needs `Authorization: Bearer TOKEN`");
                }
                Err(auth::Refused::Unknown) => {
                    return unauthorized("the token is not valid (or was revoked)");
                }
                Err(auth::Refused::Unreadable(why)) => {
                    return ApiError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "unavailable",
                        format!("the server cannot read its tokens: {why}"),
                    )
                    .into_response();
                }
            }
        }
    };
    let (mut parts, body) = request.into_parts();
    let reads = parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD;
    if let Some(route) = route.as_deref().filter(|r| r.starts_with("/v1/storage/")) {
        let wanted = match route {
            "/v1/storage/commit" => StorageScope::Write,
            _ => StorageScope::Read,
        };
        if !access.can_use_storage(wanted) {
            return forbidden(&format!(
                "this token may not {} the store's records (`/v1/storage` needs a token made with --storage {})",
                if wanted == StorageScope::Write {
                    "write"
                } else {
                    "read"
                },
                if wanted == StorageScope::Write {
                    "write"
                } else {
                    "read"
                },
            ));
        }
    }
    if access != Access::Open
        && let Ok(params) = RawPathParams::from_request_parts(&mut parts, &()).await
    {
        for (name, value) in &params {
            let allowed = match name {
                "bucket" if reads => access.can_read(value),
                "bucket" => access.can_write(value),
                "name" => access.can_lock(value),
                _ => true,
            };
            if !allowed {
                let what = if name == "name" { "lock" } else { "bucket" };
                return forbidden(&format!(
                    "this token may not {} {what} `{value}`",
                    if name == "name" {
                        "use"
                    } else if reads {
                        "read"
                    } else {
                        "write"
                    }
                ));
            }
        }
    }
    parts.extensions.insert(access);
    next.run(Request::from_parts(parts, body)).await
}

/// Why a request looks sent by a web page (or to a name that is not
/// loopback), if it does.
fn from_a_browser(headers: &HeaderMap) -> Option<&'static str> {
    if headers.contains_key(header::ORIGIN) {
        return Some("requests from web pages (with an Origin) need a server with --tokens");
    }
    let site = headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none");
    if !matches!(site, "none" | "same-origin") {
        return Some("cross-site requests need a server with --tokens");
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // `127.0.0.1:7700`, `[::1]:7700`, `localhost:7700` (or without a port).
    let name = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && !host.ends_with(']') =>
        {
            name
        }
        _ => host,
    };
    let loopback = name.eq_ignore_ascii_case("localhost")
        || name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        return Some(
            "without --tokens, only requests to a loopback Host (127.0.0.1, [::1], localhost) are served",
        );
    }
    None
}

/// 429: every watch stream (and long poll) the server allows is open.
fn too_many_watches() -> Response {
    let mut busy = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "too-many-watches",
        "this server has as many watch streams and long polls open as it allows (--max-watches)",
    )
    .into_response();
    busy.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    busy
}

fn unauthorized(message: &str) -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"kvstash\""),
    );
    response
}

fn forbidden(message: &str) -> Response {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message).into_response()
}

/// Counts and times every request by its route (not its raw path, so
/// keys do not become label values).
async fn measure(State(s): State<Arc<Served>>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("(none)", |m| m.as_str())
        .to_string();
    // Methods as labels only from a fixed set: a client must not be able
    // to make new series by sending made-up ones.
    let method = match *request.method() {
        axum::http::Method::GET => "GET",
        axum::http::Method::HEAD => "HEAD",
        axum::http::Method::PUT => "PUT",
        axum::http::Method::POST => "POST",
        axum::http::Method::DELETE => "DELETE",
        _ => "OTHER",
    };
    let started = Instant::now();
    let response = next.run(request).await;
    let code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|c| c.0.clone());
    s.metrics.request(
        &route,
        method,
        response.status().as_u16(),
        code.as_deref(),
        started.elapsed(),
    );
    response
}

/// The error code of a failed response, for the metrics.
#[derive(Clone)]
struct ErrorCode(String);

// ---------------------------------------------------------------- keys

async fn buckets(State(s): State<Arc<Served>>, Extension(access): Extension<Access>) -> Reply {
    let mut buckets = s.store.buckets().await?;
    buckets.retain(|b| access.can_read(b));
    ok(json!({ "buckets": buckets }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    prefix: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<u32>,
    cursor: Option<String>,
    reverse: Option<bool>,
    keys_only: Option<bool>,
}

async fn list(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Reply {
    let Path(bucket) = path?;
    let Query(q) = query?;
    if let Some(limit) = q.limit
        && !(1..=MAX_LIST_LIMIT).contains(&limit)
    {
        return Err(ApiError::bad_request(
            "invalid-argument",
            format!("limit {limit} is outside 1..={MAX_LIST_LIMIT}"),
        ));
    }
    let options = ListOptions {
        prefix: q.prefix,
        start: q.start,
        end: q.end,
        limit: q.limit,
        cursor: q.cursor,
        reverse: q.reverse.unwrap_or(false),
        keys_only: q.keys_only.unwrap_or(false),
    };
    let page = s.store.bucket(&bucket).list(&options).await?;
    let items: Vec<String> = page
        .items
        .iter()
        .map(|i| entry_text(Some(&i.key), i.value.as_ref(), i.version, i.expires_at))
        .collect();
    let cursor = json!(page.cursor);
    Ok(json_text_response(format!(
        "{{\"items\":[{}],\"cursor\":{cursor}}}",
        items.join(",")
    )))
}

async fn get_key(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let entry = s
        .store
        .bucket(&bucket)
        .get(&key)
        .await?
        .ok_or_else(|| missing(&bucket, &key))?;
    let mut response = json_text_response(entry_text(
        None,
        Some(&entry.value),
        entry.version,
        entry.expires_at,
    ));
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", entry.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    Ok(response)
}

fn missing(bucket: &str, key: &str) -> ApiError {
    ApiError::not_found(format!("key `{key}` not found in bucket `{bucket}`"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    /// Write only if the key is at this version; 0: only if it is absent
    /// (versions start at 1), as etcd compares a missing key's version.
    if_version: Option<u64>,
    ttl_ms: Option<u64>,
}

async fn put_key(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PutQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let Query(q) = query?;
    let value = body_value(&headers, body)?;
    let if_version = q
        .if_version
        .map(|v| check_safe_integer("if_version", v))
        .transpose()?;
    let options = WriteOptions {
        if_version: if_version.filter(|&v| v > 0),
        if_absent: if_version == Some(0),
        ttl: ttl(q.ttl_ms)?,
    };
    let version = s
        .store
        .bucket(&bucket)
        .set_with(&key, value, &options)
        .await?;
    ok(json!({ "version": version }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    if_version: Option<u64>,
}

async fn delete_key(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<DeleteQuery>, QueryRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let Query(q) = query?;
    let bucket = s.store.bucket(&bucket);
    match q
        .if_version
        .map(|v| check_safe_integer("if_version", v))
        .transpose()?
    {
        Some(0) => Err(ApiError::bad_request(
            "invalid-argument",
            "if_version=0 (absent) cannot hold for a key being deleted; versions start at 1",
        )),
        Some(version) => {
            let version = bucket.delete_if_version(&key, version).await?;
            ok(json!({"deleted": true, "version": version}))
        }
        None => ok(json!({"deleted": bucket.delete(&key).await?})),
    }
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IncrementBody {
    delta: Option<i64>,
}

async fn increment(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let body: IncrementBody = body_json_or_default(&headers, body)?;
    let value = s
        .store
        .bucket(&bucket)
        .increment(&key, body.delta.unwrap_or(1))
        .await
        .map_err(stored_value)?;
    ok(json!({ "value": value }))
}

// ---------------------------------------------------------------- document paths

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PointerQuery {
    pointer: String,
}

async fn get_path(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointerQuery>, QueryRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let Query(q) = query?;
    let (value, version) = s
        .store
        .bucket(&bucket)
        .get_path_json::<Box<RawValue>>(&key, &q.pointer)
        .await?
        .ok_or_else(|| missing(&bucket, &key))?;
    Ok(json_text_response(format!(
        "{{\"value\":{},\"version\":{version}}}",
        value.get()
    )))
}

/// What a document-path write does with the body.
#[derive(Clone, Copy)]
enum PathWrite {
    Set,
    Append,
}

async fn set_path(
    state: State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointerQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    write_path(state, path, query, headers, body, PathWrite::Set).await
}

async fn append_path(
    state: State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointerQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    write_path(state, path, query, headers, body, PathWrite::Append).await
}

async fn write_path(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointerQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    how: PathWrite,
) -> Reply {
    let Path((bucket, key)) = path?;
    let Query(q) = query?;
    let value = body_document(&headers, body)?;
    let bucket = s.store.bucket(&bucket);
    let version = match how {
        PathWrite::Set => bucket.set_path_json(&key, &q.pointer, &value).await?,
        PathWrite::Append => bucket.append_path_json(&key, &q.pointer, &value).await?,
    };
    ok(json!({ "version": version }))
}

async fn delete_path(
    State(s): State<Arc<Served>>,
    path: Result<Path<(String, String)>, PathRejection>,
    query: Result<Query<PointerQuery>, QueryRejection>,
) -> Reply {
    let Path((bucket, key)) = path?;
    let Query(q) = query?;
    let version = s
        .store
        .bucket(&bucket)
        .delete_path(&key, &q.pointer)
        .await?;
    ok(json!({ "version": version }))
}

// ---------------------------------------------------------------- transactions

async fn transaction(
    State(s): State<Arc<Served>>,
    Extension(access): Extension<Access>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let body = body?;
    if !is_json(&headers) {
        return Err(unsupported_media());
    }
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid-argument", "the body is not UTF-8 JSON"))?;
    let txn = crate::cli::parse_transaction(&s.store, "default", text)
        .map_err(|e| ApiError::bad_request("invalid-argument", format!("{e:#}")))?;
    if let Some(refused) = refused_in_transaction(&access, text) {
        return Ok(forbidden(&refused));
    }
    ok(json!({ "version": txn.commit().await.map_err(stored_value)? }))
}

/// What in a transaction document (already parsed, so well formed)
/// `access` may not do: a check needs read access to its bucket (or the
/// lock), a mutation write access.
fn refused_in_transaction(access: &Access, text: &str) -> Option<String> {
    if *access == Access::Open {
        return None;
    }
    let doc: serde_json::Value = serde_json::from_str(text).ok()?;
    let bucket = |item: &serde_json::Value| {
        item.get("bucket")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("default")
            .to_string()
    };
    let items = |name: &str| {
        doc.get(name)
            .and_then(serde_json::Value::as_array)
            .cloned()
            .unwrap_or_default()
    };
    for check in items("checks") {
        if let Some(lock) = check.get("lock").and_then(serde_json::Value::as_str) {
            if !access.can_lock(lock) {
                return Some(format!("this token may not use lock `{lock}`"));
            }
        } else if !access.can_read(&bucket(&check)) {
            return Some(format!(
                "this token may not read bucket `{}`",
                bucket(&check)
            ));
        }
    }
    for mutation in items("mutations") {
        if !access.can_write(&bucket(&mutation)) {
            return Some(format!(
                "this token may not write bucket `{}`",
                bucket(&mutation)
            ));
        }
    }
    None
}

/// An error of a request the store took apart already: an `invalid-value`
/// then names what is stored (an increment of a value that is not an
/// integer, or that would overflow), so it is a 409, not a bad request.
fn stored_value(e: Error) -> ApiError {
    let conflicting = matches!(e, Error::InvalidValue(_));
    let mut e = ApiError::from(e);
    if conflicting {
        e.status = StatusCode::CONFLICT;
    }
    e
}

// ---------------------------------------------------------------- history and schema

async fn history(State(s): State<Arc<Served>>, path: Result<Path<String>, PathRejection>) -> Reply {
    let Path(bucket) = path?;
    let (undoable, redoable) = s.store.bucket(&bucket).history().await?;
    ok(json!({"undoable": undoable, "redoable": redoable}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryBody {
    keep: u32,
}

async fn set_history(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path(bucket) = path?;
    let body: HistoryBody = body_json(&headers, body)?;
    let bucket = s.store.bucket(&bucket);
    bucket.set_history(body.keep).await?;
    let (undoable, redoable) = bucket.history().await?;
    ok(json!({"undoable": undoable, "redoable": redoable}))
}

async fn undo(State(s): State<Arc<Served>>, path: Result<Path<String>, PathRejection>) -> Reply {
    let Path(bucket) = path?;
    ok(json!({"version": s.store.bucket(&bucket).undo().await?}))
}

async fn redo(State(s): State<Arc<Served>>, path: Result<Path<String>, PathRejection>) -> Reply {
    let Path(bucket) = path?;
    ok(json!({"version": s.store.bucket(&bucket).redo().await?}))
}

async fn schema(State(s): State<Arc<Served>>, path: Result<Path<String>, PathRejection>) -> Reply {
    let Path(bucket) = path?;
    match s.store.bucket(&bucket).schema().await? {
        Some((schema, version)) => ok(json!({"schema": schema, "version": version})),
        None => Err(ApiError::not_found(format!(
            "bucket `{bucket}` has no schema"
        ))),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaBody {
    schema: serde_json::Value,
    #[serde(default)]
    force: bool,
}

async fn set_schema(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path(bucket) = path?;
    let body: SchemaBody = body_json(&headers, body)?;
    if !body.schema.is_object() {
        return Err(ApiError::bad_request(
            "invalid-argument",
            "`schema` must be a JSON Schema object (DELETE removes a schema)",
        ));
    }
    let version = s
        .store
        .bucket(&bucket)
        .set_schema(Some(&body.schema), body.force)
        .await?;
    ok(json!({ "version": version }))
}

async fn remove_schema(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(bucket) = path?;
    let version = s.store.bucket(&bucket).set_schema(None, false).await?;
    ok(json!({ "version": version }))
}

// ---------------------------------------------------------------- locks

fn lease_body(lease: &Lease) -> serde_json::Value {
    json!({"name": lease.name, "token": lease.token, "expires_at": rfc3339(lease.expires_at)})
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AcquireBody {
    ttl_ms: u64,
    owner: Option<String>,
    /// Wait this long for the lock to free up (at most 10 s).
    wait_ms: Option<u64>,
}

/// The longest a request may wait for a lock.
const MAX_LOCK_WAIT_MS: u64 = 10_000;

async fn acquire(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path(name) = path?;
    let body: AcquireBody = body_json(&headers, body)?;
    let ttl = ttl(Some(body.ttl_ms))?.unwrap_or_default();
    let lease = match body.wait_ms {
        None | Some(0) => s.store.acquire(&name, ttl, body.owner.as_deref()).await?,
        Some(ms @ 1..=MAX_LOCK_WAIT_MS) => {
            let wait = Duration::from_millis(ms);
            s.store
                .lock(&name, ttl, body.owner.as_deref(), wait)
                .await?
        }
        Some(ms) => {
            return Err(ApiError::bad_request(
                "invalid-argument",
                format!("wait_ms {ms} is over {MAX_LOCK_WAIT_MS}"),
            ));
        }
    };
    ok(lease_body(&lease))
}

async fn lock_status(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
) -> Reply {
    let Path(name) = path?;
    let holder =
        s.store.lock_status(&name).await?.map(
            |h| json!({"token": h.token, "expires_at": rfc3339(h.expires_at), "owner": h.owner}),
        );
    ok(json!({ "holder": holder }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewBody {
    token: u64,
    ttl_ms: u64,
}

async fn renew(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path(name) = path?;
    let body: RenewBody = body_json(&headers, body)?;
    let ttl = ttl(Some(body.ttl_ms))?.unwrap_or_default();
    let lease = Lease {
        name,
        token: check_safe_integer("token", body.token)?,
        expires_at: std::time::UNIX_EPOCH,
    };
    ok(lease_body(&s.store.renew(&lease, ttl).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    token: u64,
}

async fn release(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let Path(name) = path?;
    let body: ReleaseBody = body_json(&headers, body)?;
    let lease = Lease {
        name,
        token: check_safe_integer("token", body.token)?,
        expires_at: std::time::UNIX_EPOCH,
    };
    ok(json!({"released": s.store.release(&lease).await?}))
}

// ---------------------------------------------------------------- watch

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WatchQuery {
    prefix: Option<String>,
    since: Option<u64>,
}

/// Server-Sent Events: `ready` (its id the version the stream starts
/// after), then one `commit` event per commit that touched a watched key,
/// its id the commit's version. A reconnecting client's `Last-Event-ID`
/// resumes after that version. A version the store no longer retains is
/// 410 before the stream starts, or an `error` event ending it.
async fn watch(
    State(s): State<Arc<Served>>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<WatchQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Reply {
    let Path(bucket) = path?;
    let Query(q) = query?;
    let Ok(permit) = s.watches.clone().try_acquire_owned() else {
        return Ok(too_many_watches());
    };
    let resume = match headers.get("last-event-id") {
        None => None,
        Some(id) => Some(
            id.to_str()
                .ok()
                .and_then(|id| id.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid-argument",
                        "Last-Event-ID must be a version this API sent",
                    )
                })?,
        ),
    };
    let bucket = s.store.bucket(&bucket);
    let prefix = q.prefix;
    // Fix the start (and check it is still retained) before answering.
    let since = q
        .since
        .map(|v| check_safe_integer("since", v))
        .transpose()?;
    let since = resume
        .map(|v| check_safe_integer("Last-Event-ID", v))
        .transpose()?
        .or(since);
    // A start past the store's newest commit depends on the store: 409.
    let start = bucket
        .watch_start(prefix.as_deref(), since)
        .await
        .map_err(|e| {
            let ahead = matches!(e, Error::InvalidArgument(_));
            let mut e = ApiError::from(e);
            if ahead {
                e.status = StatusCode::CONFLICT;
            }
            e
        })?;
    let events = bucket
        .watch(crate::api::WatchOptions {
            prefix,
            since: Some(start),
            ..crate::api::WatchOptions::default()
        })
        .await?;
    let ready = SseEvent::default()
        .event("ready")
        .id(start.to_string())
        .data(json!({ "version": start }).to_string());
    let commits = Commits::new(Box::pin(events)).map(|group| {
        Ok::<_, std::convert::Infallible>(match group {
            Ok(events) => commit_event(&events),
            Err(e) => {
                let e = ApiError::from(e);
                // Not `error`: EventSource reports its own failures under
                // that name.
                SseEvent::default().event("failed").data(e.body.to_string())
            }
        })
    });
    let mut stopping = s.stopping.subscribe();
    let stopped = async move {
        // Without a sender (a router dropped in the meantime), never.
        if stopping.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let stream = futures::stream::once(async move { Ok(ready) })
        .chain(commits)
        .take_until(stopped)
        // The stream holds its place among --max-watches until it ends.
        .map(move |event| {
            let _held = &permit;
            event
        });
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn commit_event(events: &[Event]) -> SseEvent {
    let version = events.first().map_or(0, |e| e.version);
    let changes: Vec<String> = events
        .iter()
        .map(|e| {
            let kind = match e.kind {
                EventKind::Set => "set",
                EventKind::Delete => "delete",
                EventKind::Expire => "expire",
            };
            let text = entry_text(Some(&e.key), e.value.as_ref(), e.version, e.expires_at);
            // `{"key":…,` + `"event":…,` + the rest.
            let rest = text.strip_prefix('{').unwrap_or(&text);
            format!("{{\"event\":\"{kind}\",{rest}")
        })
        .collect();
    SseEvent::default()
        .event("commit")
        .id(version.to_string())
        .data(format!(
            "{{\"version\":{version},\"changes\":[{}]}}",
            changes.join(",")
        ))
}

/// The events of a watch grouped by commit. A page of the feed holds whole
/// commits, so when the source has nothing ready the group is complete.
struct Commits<S> {
    events: S,
    group: Vec<Event>,
    failed: Option<Error>,
    ended: bool,
}

impl<S> Commits<S> {
    fn new(events: S) -> Self {
        Self {
            events,
            group: Vec::new(),
            failed: None,
            ended: false,
        }
    }
}

impl<S: Stream<Item = Result<Event, Error>> + Unpin> Stream for Commits<S> {
    type Item = Result<Vec<Event>, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(e) = this.failed.take() {
            this.ended = true;
            return Poll::Ready(Some(Err(e)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            match this.events.poll_next_unpin(cx) {
                Poll::Ready(Some(Ok(event))) => {
                    if this
                        .group
                        .last()
                        .is_some_and(|e| e.version != event.version)
                    {
                        let done = std::mem::replace(&mut this.group, vec![event]);
                        return Poll::Ready(Some(Ok(done)));
                    }
                    this.group.push(event);
                }
                Poll::Ready(Some(Err(e))) => {
                    if this.group.is_empty() {
                        this.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    this.failed = Some(e);
                    return Poll::Ready(Some(Ok(std::mem::take(&mut this.group))));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    if this.group.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(std::mem::take(&mut this.group))));
                }
                Poll::Pending => {
                    if this.group.is_empty() {
                        return Poll::Pending;
                    }
                    return Poll::Ready(Some(Ok(std::mem::take(&mut this.group))));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(version: u64, key: &str) -> Event {
        Event {
            version,
            key: key.into(),
            kind: EventKind::Set,
            value: Some(Value::Json("1".into())),
            expires_at: None,
        }
    }

    #[tokio::test]
    async fn events_are_grouped_by_commit() {
        let source = futures::stream::iter(vec![
            Ok(event(3, "a")),
            Ok(event(3, "b")),
            Ok(event(5, "c")),
            Err(Error::Compacted { oldest: 9 }),
        ]);
        let groups: Vec<_> = Commits::new(source).collect().await;
        let versions: Vec<_> = groups
            .iter()
            .map(|g| {
                g.as_ref()
                    .map(|es| es.iter().map(|e| e.version).collect::<Vec<_>>())
            })
            .collect();
        assert_eq!(
            versions,
            vec![
                Ok(vec![3, 3]),
                Ok(vec![5]),
                Err(&Error::Compacted { oldest: 9 })
            ]
        );
    }

    #[test]
    fn entries_copy_stored_json_and_encode_bytes() {
        let text = entry_text(
            Some("k\""),
            Some(&Value::Json("{\"a\":[1]}".into())),
            4,
            None,
        );
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"key": "k\"", "value": {"a": [1]}, "version": 4})
        );
        let text = entry_text(None, Some(&Value::Bytes(vec![0, 255])), 2, None);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&text).unwrap(),
            json!({"bytes": "AP8=", "version": 2})
        );
    }

    #[test]
    fn only_loopback_is_served_without_tokens_and_tls() {
        let any: SocketAddr = "0.0.0.0:7700".parse().unwrap();
        let lan: SocketAddr = "[2001:db8::1]:7700".parse().unwrap();
        for loopback in ["127.0.0.1:7700", "[::1]:7700"] {
            let loopback: SocketAddr = loopback.parse().unwrap();
            assert_eq!(check_listen(&loopback, false, false), Ok(()));
        }
        for addr in [any, lan] {
            assert!(
                check_listen(&addr, false, false)
                    .unwrap_err()
                    .contains("--tokens")
            );
            assert!(
                check_listen(&addr, false, true)
                    .unwrap_err()
                    .contains("--tokens")
            );
            assert!(
                check_listen(&addr, true, false)
                    .unwrap_err()
                    .contains("TLS")
            );
            assert_eq!(check_listen(&addr, true, true), Ok(()));
        }
    }

    #[test]
    fn the_served_document_names_the_bearer_scheme() {
        let doc: serde_json::Value = serde_json::from_str(&with_bearer_scheme(OPENAPI)).unwrap();
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["paths"]["/healthz"]["get"]["security"], json!([]));
        let get = &doc["paths"]["/v1/buckets/{bucket}/keys/{key}"]["get"];
        assert!(get["responses"]["401"].is_object() && get["responses"]["403"].is_object());
        assert!(
            get.get("security").is_none(),
            "the document's default applies"
        );
    }

    #[test]
    fn every_error_has_a_status_and_its_code() {
        let conflict = ApiError::from(Error::Conflict { current: Some(7) });
        assert_eq!(conflict.status, StatusCode::CONFLICT);
        assert_eq!(conflict.code(), "conflict");
        assert_eq!(conflict.body["error"]["current"], 7);
        let storage = ApiError::from(Error::Storage("disk".into()));
        assert_eq!(storage.status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
