//! The `server` backend: a store that another host serves (`kvstash
//! serve`), reached over HTTP(S) through its `/v1/storage` routes. The
//! component runs here, on that store's records: the same `Store` and
//! `Bucket` API as an embedded store, with the server's backend (and its
//! durability and atomicity) underneath.
//!
//! ```json
//! {"type": "server", "url": "https://kv.example:7700", "token_env": "KVSTASH_TOKEN",
//!  "ca_file": "/etc/kvstash/ca.pem", "timeout_ms": 5000}
//! ```
//!
//! The token (one with `--storage write`, or `read` for a store opened
//! read-only) is read from the environment variable `token_env` names, so
//! it is never part of a configuration. HTTPS trusts `ca_file`, else the
//! system's roots (`SSL_CERT_FILE`, else Debian's bundle).

use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::wire::{
    B64, Bounded, ChangesAnswer, CommitRequest, EntriesAnswer, ErrorBody, GetRequest,
    MAX_STORAGE_BODY, ScanRequest, VersionAnswer, WireEntry,
};
use super::{
    Backend, BackendError, Change, Check, Entry, Scan, Write, validate_commit, validate_get_many,
    validate_key, validate_scan,
};

/// The environment variable a token is read from, unless configured.
pub const DEFAULT_TOKEN_ENV: &str = "KVSTASH_TOKEN";

/// Where Debian (and its derivatives) keep the system's CA bundle.
const SYSTEM_ROOTS: &str = "/etc/ssl/certs/ca-certificates.crt";

/// An idle connection older than this is not reused: the server may be
/// closing it (its header timeout is 10 s by default).
const IDLE_REUSE: Duration = Duration::from_secs(4);

/// How long a commit-notification poll waits on the server.
const FOLLOW_WAIT_MS: u64 = 25_000;

/// The largest answer read (a scan of 10,000 large records).
const MAX_ANSWER: usize = 256 << 20;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerConfig {
    #[serde(rename = "type")]
    _type: String,
    url: String,
    #[serde(default = "default_token_env")]
    token_env: String,
    #[serde(default)]
    ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
}

fn default_token_env() -> String {
    DEFAULT_TOKEN_ENV.into()
}

fn default_timeout_ms() -> u64 {
    5_000
}

fn invalid(what: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("server backend configuration: {what}"))
}

/// Where the server is and how to reach it.
struct Endpoint {
    /// `http://host:port`, as errors name it.
    url: String,
    /// The `Host` header.
    authority: String,
    host: String,
    port: u16,
    /// A path the API is under (behind a proxy), without a trailing `/`.
    base: String,
    tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    token: Option<String>,
    /// Where the token was looked for.
    token_env: String,
    timeout: Duration,
}

struct Idle {
    send: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// What the backend and its commit follower share.
struct Inner {
    endpoint: Endpoint,
    idle: Mutex<Vec<Idle>>,
    /// The newest version seen, for watchers.
    commits: tokio::sync::watch::Sender<u64>,
    /// Whether a follower task is polling the server for commits.
    following: Mutex<bool>,
}

pub struct ServerBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ServerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBackend")
            .field("url", &self.inner.endpoint.url)
            .finish_non_exhaustive()
    }
}

impl ServerBackend {
    /// Opens the store `config` names and checks that the server serves
    /// its storage to this token (so a wrong URL or token fails here).
    /// Checks a configuration without connecting (the URL, the token's
    /// variable and the CA file are read).
    pub fn check(config: serde_json::Value) -> Result<(), BackendError> {
        Self::parse(config).map(drop)
    }

    fn parse(config: serde_json::Value) -> Result<Endpoint, BackendError> {
        let config: ServerConfig = serde_json::from_value(config).map_err(invalid)?;
        if config.timeout_ms == 0 || config.timeout_ms > 3_600_000 {
            return Err(invalid("`timeout_ms` must be 1..=3600000"));
        }
        endpoint(&config)
    }

    pub async fn open(config: serde_json::Value) -> Result<Arc<dyn Backend>, BackendError> {
        Ok(Arc::new(Self::connect(config).await?))
    }

    /// Like [`open`](Self::open), as this type: a replica follows its
    /// primary with it.
    pub async fn connect(config: serde_json::Value) -> Result<Self, BackendError> {
        let endpoint = Self::parse(config)?;
        let backend = ServerBackend {
            inner: Arc::new(Inner {
                endpoint,
                idle: Mutex::new(Vec::new()),
                commits: tokio::sync::watch::Sender::new(0),
                following: Mutex::new(false),
            }),
        };
        let version = backend.current_version().await?;
        backend.inner.commits.send_replace(version);
        Ok(backend)
    }

    /// The server's URL (`http://host:port`).
    pub fn url(&self) -> &str {
        &self.inner.endpoint.url
    }

    /// The change feed after `since` (at most about `limit` changes,
    /// whole commits), waiting up to `wait` (at most 30 s) for a commit
    /// when there is none; and the server's newest version when it read
    /// them.
    pub async fn changes_waiting(
        &self,
        since: u64,
        limit: u32,
        wait: Duration,
    ) -> Result<(Vec<Change>, u64), BackendError> {
        let limit = limit.clamp(1, super::MAX_SCAN);
        let wait_ms = u64::try_from(wait.as_millis())
            .unwrap_or(u64::MAX)
            .min(30_000);
        let path = format!("/v1/storage/changes?since={since}&limit={limit}&wait_ms={wait_ms}");
        let call = Call {
            wait: Duration::from_millis(wait_ms),
            ..read(&path)
        };
        let answer: ChangesAnswer = self.inner.ask(call).await?;
        self.inner.saw(answer.version);
        let changes = answer.changes.into_iter().map(Change::from).collect();
        Ok((changes, answer.version))
    }
}

fn endpoint(config: &ServerConfig) -> Result<Endpoint, BackendError> {
    let uri: hyper::Uri = config
        .url
        .parse()
        .map_err(|e| invalid(format!("`url` {:?}: {e}", config.url)))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(invalid("`url` must start with http:// or https://")),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| invalid("`url` names no host"))?
        .clone();
    if uri.query().is_some() || authority.as_str().contains('@') {
        return Err(invalid(
            "`url` must not hold a user, a password or a query (the token comes from `token_env`)",
        ));
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
    let tls = match https {
        false => None,
        true => Some(tls_connector(config.ca_file.as_deref(), &host)?),
    };
    let token = std::env::var(&config.token_env)
        .ok()
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    Ok(Endpoint {
        url: format!("{}://{authority}", if https { "https" } else { "http" }),
        authority: authority.to_string(),
        host,
        port,
        base: uri.path().trim_end_matches('/').to_string(),
        tls,
        token,
        token_env: config.token_env.clone(),
        timeout: Duration::from_millis(config.timeout_ms),
    })
}

fn tls_connector(
    ca_file: Option<&std::path::Path>,
    host: &str,
) -> Result<
    (
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    ),
    BackendError,
> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let bundle = match ca_file {
        Some(path) => path.to_path_buf(),
        None => std::env::var_os("SSL_CERT_FILE")
            .map_or_else(|| SYSTEM_ROOTS.into(), std::path::PathBuf::from),
    };
    let certs = CertificateDer::pem_file_iter(&bundle)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| {
            invalid(format!(
                "reading the CA certificates in {}: {e}",
                bundle.display()
            ))
        })?;
    let mut roots = rustls::RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err(invalid(format!(
            "{} holds no CA certificate",
            bundle.display()
        )));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(invalid)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| invalid(format!("`{host}` is not a TLS server name: {e}")))?;
    Ok((tokio_rustls::TlsConnector::from(Arc::new(config)), name))
}

/// A request, as sent again if a reused connection turns out closed.
struct Call<'a> {
    method: Method,
    path: &'a str,
    body: Option<Bytes>,
    /// Whether sending it twice is harmless (every call but a commit).
    idempotent: bool,
    /// How long the server may wait before answering (a long poll).
    wait: Duration,
}

impl Inner {
    fn unavailable(&self, what: impl std::fmt::Display) -> BackendError {
        BackendError::Unavailable(format!("server {}: {what}", self.endpoint.url))
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, BackendError> {
        let e = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((e.host.as_str(), e.port))
            .await
            .map_err(|err| self.unavailable(format!("cannot connect: {err}")))?;
        let _ = tcp.set_nodelay(true);
        match &e.tls {
            None => self.handshake(tcp).await,
            Some((connector, name)) => {
                let tls = connector
                    .connect(name.clone(), tcp)
                    .await
                    .map_err(|err| self.unavailable(format!("TLS: {err}")))?;
                self.handshake(tls).await
            }
        }
    }

    async fn handshake<S>(&self, stream: S) -> Result<SendRequest<Full<Bytes>>, BackendError>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|err| self.unavailable(format!("HTTP: {err}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(send)
    }

    /// A pooled connection that is ready, if there is one.
    fn reuse(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if conn.since.elapsed() < IDLE_REUSE && conn.send.is_ready() {
                return Some(conn.send);
            }
        }
        None
    }

    fn request(&self, call: &Call<'_>) -> Result<hyper::Request<Full<Bytes>>, BackendError> {
        let e = &self.endpoint;
        let mut request = hyper::Request::builder()
            .method(call.method.clone())
            .uri(format!("{}{}", e.base, call.path))
            .header(hyper::header::HOST, &e.authority)
            .header(hyper::header::ACCEPT, "application/json");
        if let Some(token) = &e.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        if call.body.is_some() {
            request = request.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        request
            .body(Full::new(call.body.clone().unwrap_or_default()))
            .map_err(|err| BackendError::Invalid(format!("a request to {}: {err}", e.url)))
    }

    /// Sends `call` (on a pooled connection when one is ready) and reads
    /// the whole answer.
    async fn send(&self, call: &Call<'_>) -> Result<(StatusCode, Bytes), BackendError> {
        let deadline = self.endpoint.timeout + call.wait;
        match tokio::time::timeout(deadline, self.send_now(call)).await {
            Ok(answer) => answer,
            Err(_) if call.idempotent => Err(self.unavailable(format!(
                "no answer within {} ms",
                deadline.as_millis()
            ))),
            Err(_) => Err(self.unavailable(format!(
                "no answer within {} ms; the commit may or may not have been made: read back to find out",
                deadline.as_millis()
            ))),
        }
    }

    async fn send_now(&self, call: &Call<'_>) -> Result<(StatusCode, Bytes), BackendError> {
        // A reused connection the server closed meanwhile: at most twice
        // more, the last time on a new one.
        for attempt in 0..3 {
            let (mut send, reused) = match self.reuse() {
                Some(send) if attempt < 2 => (send, true),
                _ => (self.connect().await?, false),
            };
            let response = match send.try_send_request(self.request(call)?).await {
                Ok(response) => response,
                Err(mut err) => {
                    let unsent = err.take_message().is_some();
                    if reused && (unsent || call.idempotent) {
                        continue;
                    }
                    let err = err.into_error();
                    return Err(if unsent || call.idempotent {
                        self.unavailable(err)
                    } else {
                        self.unavailable(format!(
                            "{err}; the commit may or may not have been made: read back to find out"
                        ))
                    });
                }
            };
            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_ANSWER)
                .collect()
                .await
                .map_err(|err| self.unavailable(format!("reading the answer: {err}")))?
                .to_bytes();
            if !send.is_closed() {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                idle.push(Idle {
                    send,
                    since: Instant::now(),
                });
            }
            return Ok((status, body));
        }
        Err(self.unavailable("the connection kept closing"))
    }

    /// `call`'s answer as `T`, or the error the server answered.
    async fn ask<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, BackendError> {
        let (status, body) = self.send(&call).await?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|err| {
                self.unavailable(format!("an answer that is not the API's: {err}"))
            });
        }
        let refused: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        if let Some(e) = refused.as_ref().and_then(|r| r.error.to_backend()) {
            return Err(e);
        }
        let mut message = refused.map_or_else(
            || String::from_utf8_lossy(&body).chars().take(200).collect(),
            |r| format!("{} ({})", r.error.message, r.error.code),
        );
        if status == StatusCode::UNAUTHORIZED && self.endpoint.token.is_none() {
            message.push_str(&format!(
                "; no token was sent: ${} is not set",
                self.endpoint.token_env
            ));
        }
        Err(match status {
            // Refusals no retry mends: a missing or weak token, a server
            // that does not serve its storage, a request too large.
            StatusCode::UNAUTHORIZED
            | StatusCode::FORBIDDEN
            | StatusCode::NOT_FOUND
            | StatusCode::NOT_IMPLEMENTED
            | StatusCode::PAYLOAD_TOO_LARGE
            | StatusCode::BAD_REQUEST => BackendError::Invalid(format!(
                "server {} refused {} {}: {status}: {message}",
                self.endpoint.url, call.method, call.path
            )),
            _ => self.unavailable(format!("{status}: {message}")),
        })
    }

    fn saw(&self, version: u64) {
        self.commits.send_if_modified(|seen| {
            let newer = version > *seen;
            if newer {
                *seen = version;
            }
            newer
        });
    }
}

fn json_body<T: serde::Serialize>(body: &T) -> Result<Option<Bytes>, BackendError> {
    serde_json::to_vec(body)
        .map(|b| Some(Bytes::from(b)))
        .map_err(|e| BackendError::Invalid(format!("encoding a request: {e}")))
}

fn read(path: &str) -> Call<'_> {
    Call {
        method: Method::GET,
        path,
        body: None,
        idempotent: true,
        wait: Duration::ZERO,
    }
}

fn post(path: &str, body: Option<Bytes>) -> Call<'_> {
    Call {
        method: Method::POST,
        path,
        body,
        idempotent: true,
        wait: Duration::ZERO,
    }
}

/// Polls the server for commits while anyone watches, so that watchers
/// here wake when another host commits.
async fn follow(inner: Weak<Inner>) {
    /// Clears `following` if the task ends otherwise than by seeing no
    /// watchers (its runtime shutting down drops it), so a later watcher
    /// starts another.
    struct Stopped(Weak<Inner>, bool);
    impl Drop for Stopped {
        fn drop(&mut self) {
            if self.1
                && let Some(inner) = self.0.upgrade()
            {
                *inner.following.lock().unwrap_or_else(|p| p.into_inner()) = false;
            }
        }
    }
    let mut stopped = Stopped(inner.clone(), true);
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        {
            // Under the lock `commits()` takes: a watcher that subscribes
            // after this finds `following` false and starts a follower.
            let mut following = strong.following.lock().unwrap_or_else(|p| p.into_inner());
            if strong.commits.receiver_count() == 0 {
                *following = false;
                stopped.1 = false;
                return;
            }
        }
        let seen = *strong.commits.borrow();
        let path = format!("/v1/storage/version?after={seen}&wait_ms={FOLLOW_WAIT_MS}");
        let call = Call {
            wait: Duration::from_millis(FOLLOW_WAIT_MS),
            ..read(&path)
        };
        let asked = Instant::now();
        let newer = match strong.ask::<VersionAnswer>(call).await {
            Ok(answer) => {
                strong.saw(answer.version);
                answer.version > seen
            }
            // Down, or busy (429), say: watchers poll meanwhile.
            Err(_) => false,
        };
        drop(strong);
        // An answer with nothing new well before the wait was over (a
        // server stopping, or without room for long polls): not at once.
        if !newer && asked.elapsed() < Duration::from_secs(1) {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[async_trait]
impl Backend for ServerBackend {
    fn summary(&self) -> String {
        format!("server {}", self.inner.endpoint.url)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let mut entries = self.get_many(&[key.to_vec()]).await?;
        Ok(entries.pop().flatten())
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        let body = json_body(&GetRequest {
            keys: Bounded(keys.iter().cloned().map(B64).collect()),
        })?;
        let answer: EntriesAnswer<Option<WireEntry>> =
            self.inner.ask(post("/v1/storage/get", body)).await?;
        if answer.entries.len() != keys.len() {
            return Err(self
                .inner
                .unavailable("a get answered with a slot per key missing"));
        }
        Ok(answer
            .entries
            .into_iter()
            .map(|e| e.map(Entry::from))
            .collect())
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        let limit = scan.clamped_limit();
        let mut entries: Vec<Entry> = Vec::new();
        let mut next = scan.clone();
        // A server cuts an answer past its size budget (`more`): the rest
        // of the range is asked for after the last key it gave.
        loop {
            next.limit = u32::try_from(limit - entries.len()).unwrap_or(u32::MAX);
            let body = json_body(&ScanRequest::from(&next))?;
            let answer: EntriesAnswer<WireEntry> =
                self.inner.ask(post("/v1/storage/scan", body)).await?;
            entries.extend(answer.entries.into_iter().map(Entry::from));
            let Some(last) = entries.last() else {
                return Ok(entries);
            };
            if !answer.more || entries.len() >= limit {
                return Ok(entries);
            }
            if next.reverse {
                next.end = Some(last.key.clone());
            } else {
                next.start.clone_from(&last.key);
                next.start.push(0);
            }
        }
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let body = json_body(&CommitRequest::new(checks, writes))?;
        let size = body.as_ref().map_or(0, Bytes::len);
        if size > MAX_STORAGE_BODY {
            return Err(BackendError::Invalid(format!(
                "this commit is {} MiB as sent; a server takes at most {} MiB per commit",
                size >> 20,
                MAX_STORAGE_BODY >> 20
            )));
        }
        let call = Call {
            idempotent: false,
            ..post("/v1/storage/commit", body)
        };
        let answer: VersionAnswer = self.inner.ask(call).await?;
        self.inner.saw(answer.version);
        Ok(answer.version)
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        let answer: VersionAnswer = self.inner.ask(read("/v1/storage/version")).await?;
        self.inner.saw(answer.version);
        Ok(answer.version)
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let limit = limit.clamp(1, super::MAX_SCAN);
        let path = format!("/v1/storage/changes?since={since}&limit={limit}");
        let answer: ChangesAnswer = self.inner.ask(read(&path)).await?;
        self.inner.saw(answer.version);
        Ok(answer.changes.into_iter().map(Change::from).collect())
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let receiver = self.inner.commits.subscribe();
        let mut following = self
            .inner
            .following
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !*following {
            *following = true;
            runtime.spawn(follow(Arc::downgrade(&self.inner)));
        }
        Some(receiver)
    }
}
