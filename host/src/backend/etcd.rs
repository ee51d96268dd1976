//! The etcd backend, on the v3 API: the store is the keys under
//! `<namespace>/`.
//!
//! - `<ns>/d/<key>` — a record; its version is the key's `mod_revision`
//! - `<ns>/h` — the head key, written by every commit
//!
//! **Versions are etcd revisions.** A commit is one `Txn`: "has version v"
//! compares `mod_revision == v`, "absent" compares `create_revision == 0`
//! (a value compare on a missing key is always false), and the commit's
//! version is the Txn's header revision. Two traps, both closed by the head
//! key, which every commit puts: a Txn that changes nothing (only checks,
//! or deletes of missing keys) would not advance the revision, so the
//! commit would get an old version; and the revision counts every write in
//! the cluster, so the store's current version is the head key's
//! `mod_revision`, not the cluster's revision. Versions of one store are
//! strictly increasing but not consecutive.
//!
//! **Limits.** A Txn takes at most `--max-txn-ops` operations (128 by
//! default; the head key takes one) and `--max-request-bytes` (1.5 MiB).
//! A commit over them is refused whole with `invalid`, never split: etcd
//! cannot apply two Txns atomically. Set `max_txn_ops` and
//! `max_request_bytes` to the server's flags when they are raised.
//!
//! **Scans.** A forward scan is a `Range` with a limit. A reverse scan asks
//! etcd to sort, and etcd then reads the whole range before it applies the
//! limit: a reverse page costs time in the size of the range, not the page.
//!
//! **Change feed.** `Watch` over the namespace from `since + 1`, read up to
//! the head; each revision's events arrive together. etcd 3.4.23 (Debian
//! 12) can send an event twice, so events are deduplicated by revision.
//! Versions up to and including the compaction revision are answered
//! `compacted` (3.4.23 can drop a delete at exactly that revision). etcd keeps history until
//! someone compacts: run etcd with `--auto-compaction-retention`.

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    KvClient, SortOrder, SortTarget, TlsOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::Deserialize;

use super::remote::{
    Deadline, advance, last_write_wins, maybe_applied, prefix_end, with_causes, within,
};
use super::{
    Backend, BackendError, Change, Check, Entry, MAX_SCAN, Scan, Write, take_changes,
    validate_commit, validate_get_many, validate_key, validate_scan,
};

/// etcd's default `--max-txn-ops`.
const DEFAULT_MAX_TXN_OPS: usize = 128;
/// etcd's default `--max-request-bytes`.
const DEFAULT_MAX_REQUEST_BYTES: usize = 1536 * 1024;
/// Largest answer the client accepts (a catch-up watch answer can hold up
/// to 1,000 revisions; tonic's default is 4 MiB).
const MAX_DECODING: usize = 256 * 1024 * 1024;

/// The `etcd` backend's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EtcdConfig {
    #[allow(dead_code)] // checked by the registry; named here so it is not "unknown"
    r#type: String,
    /// `host:port` (or `http://…`, `https://…`) of one or more members.
    endpoints: Vec<String>,
    /// The store's keys live under `<namespace>/`.
    #[serde(default = "default_namespace")]
    namespace: String,
    user: Option<String>,
    password: Option<String>,
    tls: Option<TlsConfig>,
    /// The server's `--max-txn-ops`.
    #[serde(default = "default_max_txn_ops")]
    max_txn_ops: usize,
    /// The server's `--max-request-bytes`.
    #[serde(default = "default_max_request_bytes")]
    max_request_bytes: usize,
    #[serde(flatten)]
    deadline: Deadline,
}

/// TLS to the members: a CA to trust, and a client certificate if the
/// members ask for one.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsConfig {
    /// PEM file of the CA that signed the members' certificates.
    ca: Option<std::path::PathBuf>,
    /// PEM files of a client certificate and its key.
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    /// The name the members' certificates carry, if not the endpoint's host.
    domain: Option<String>,
}

fn default_namespace() -> String {
    "kvstash".into()
}

fn default_max_txn_ops() -> usize {
    DEFAULT_MAX_TXN_OPS
}

fn default_max_request_bytes() -> usize {
    DEFAULT_MAX_REQUEST_BYTES
}

fn invalid(why: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("etcd backend configuration: {why}"))
}

pub struct EtcdBackend {
    client: Client,
    endpoint: String,
    /// `<ns>/`: everything of this store.
    root: Vec<u8>,
    /// `<ns>/d/`: the records.
    data: Vec<u8>,
    /// `<ns>/h`: the head key.
    head: Vec<u8>,
    max_txn_ops: usize,
    max_request_bytes: usize,
    deadline: Duration,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for EtcdBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdBackend")
            .field("endpoint", &self.endpoint)
            .field("root", &String::from_utf8_lossy(&self.root))
            .finish_non_exhaustive()
    }
}

/// How reading a watch ended.
enum Feed {
    Done(Vec<Change>),
    /// The cluster compacted at this revision, past where the watch began.
    Compacted(u64),
}

/// What a request may do: a read may be sent twice; a commit only if the
/// first never reached a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    Read,
    Commit,
}

/// Whether a request that failed with `e` may be sent again. Any read may.
/// A commit may when it certainly was not applied: the connection was
/// refused (the request never left), or the member had no leader (it
/// refuses before proposing). Anything else (a timeout, a lost
/// connection, "leader changed") may have applied it.
fn may_retry(e: &etcd_client::Error, kind: Request) -> bool {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return kind == Request::Read && matches!(e, etcd_client::Error::TransportError(_));
    };
    match status.code() {
        tonic::Code::Unavailable => {
            let message = status.message();
            kind == Request::Read
                || message.contains("connect error")
                || message.contains("no leader")
        }
        tonic::Code::DeadlineExceeded | tonic::Code::Aborted | tonic::Code::Unknown => {
            kind == Request::Read
        }
        tonic::Code::Ok
        | tonic::Code::Cancelled
        | tonic::Code::InvalidArgument
        | tonic::Code::NotFound
        | tonic::Code::AlreadyExists
        | tonic::Code::PermissionDenied
        | tonic::Code::ResourceExhausted
        | tonic::Code::FailedPrecondition
        | tonic::Code::OutOfRange
        | tonic::Code::Unimplemented
        | tonic::Code::Internal
        | tonic::Code::DataLoss
        | tonic::Code::Unauthenticated => false,
    }
}

/// A request etcd refused for what it is, not because it was down: bad
/// credentials, no permission, a request over its limits. Fix the
/// configuration; retrying will not help.
fn refusal(endpoint: &str, e: &etcd_client::Error) -> Option<BackendError> {
    let etcd_client::Error::GRpcStatus(status) = e else {
        return None;
    };
    matches!(
        status.code(),
        // Not `Unauthenticated` ("invalid auth token"): an expired token,
        // which the client renews.
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied
    )
    .then(|| {
        BackendError::Invalid(format!(
            "{endpoint} refused the request: {}",
            status.message()
        ))
    })
}

fn revision(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, BackendError> {
    std::fs::read(path).map_err(|e| invalid(format!("{}: {e}", path.display())))
}

impl EtcdBackend {
    /// Checks a configuration without connecting.
    pub fn check(config: serde_json::Value) -> Result<(), BackendError> {
        Self::parse(config).map(drop)
    }

    fn parse(config: serde_json::Value) -> Result<EtcdConfig, BackendError> {
        let config: EtcdConfig = serde_json::from_value(config).map_err(invalid)?;
        config.deadline.validate("etcd")?;
        if config.endpoints.is_empty() {
            return Err(invalid("`endpoints` must name at least one member"));
        }
        if config.namespace.is_empty()
            || config.namespace.len() > 256
            || config.namespace.contains('/')
        {
            // `a/d` would live inside the records of namespace `a`.
            return Err(invalid("`namespace` must be 1-256 bytes without `/`"));
        }
        if config.max_txn_ops < 2 {
            return Err(invalid("`max_txn_ops` must be at least 2"));
        }
        if config.user.is_some() != config.password.is_some() {
            return Err(invalid("`user` and `password` go together"));
        }
        Ok(config)
    }

    pub async fn open(config: serde_json::Value) -> Result<Arc<dyn Backend>, BackendError> {
        let config = Self::parse(config)?;
        let deadline = config.deadline.duration();
        let mut options = ConnectOptions::new()
            .with_connect_timeout(deadline)
            .with_timeout(deadline)
            .with_keep_alive(Duration::from_secs(10), deadline)
            .with_require_leader(true);
        match (&config.user, &config.password) {
            // Tokens expire (5 minutes idle by default): log in again.
            (Some(user), Some(password)) => {
                options = options
                    .with_user(user, password)
                    .with_auto_token_refresh(true);
            }
            (None, None) => {}
            _ => return Err(invalid("`user` and `password` go together")),
        }
        if let Some(tls) = &config.tls {
            let mut t = TlsOptions::new();
            if let Some(ca) = &tls.ca {
                t = t.ca_certificate(Certificate::from_pem(read_pem(ca)?));
            }
            match (&tls.cert, &tls.key) {
                (Some(cert), Some(key)) => {
                    t = t.identity(Identity::from_pem(read_pem(cert)?, read_pem(key)?));
                }
                (None, None) => {}
                _ => return Err(invalid("`tls.cert` and `tls.key` go together")),
            }
            if let Some(domain) = &tls.domain {
                t = t.domain_name(domain);
            }
            options = options.with_tls(t);
        }
        let endpoint = format!("etcd {}", config.endpoints.join(","));
        let connect = tokio::time::timeout(
            deadline,
            Client::connect(config.endpoints.clone(), Some(options)),
        )
        .await;
        let client = match connect {
            Ok(Ok(client)) => client,
            Ok(Err(e)) => {
                return Err(refusal(&endpoint, &e).unwrap_or_else(|| {
                    BackendError::Unavailable(format!(
                        "{endpoint} is unavailable: {}",
                        with_causes(&e)
                    ))
                }));
            }
            Err(_) => {
                return Err(BackendError::Unavailable(format!(
                    "{endpoint} is unavailable: no answer within {} ms",
                    deadline.as_millis()
                )));
            }
        };
        let ns = config.namespace.as_bytes();
        let backend = Arc::new(Self {
            client,
            endpoint,
            root: [ns, b"/"].concat(),
            data: [ns, b"/d/"].concat(),
            head: [ns, b"/h"].concat(),
            max_txn_ops: config.max_txn_ops,
            max_request_bytes: config.max_request_bytes,
            deadline,
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
        });
        let current = backend.current_version().await?;
        backend.commits.send_replace(current);
        tokio::spawn(follow(
            backend.client.clone(),
            backend.head.clone(),
            Arc::downgrade(&backend.commits),
        ));
        Ok(backend)
    }

    fn data_key(&self, key: &[u8]) -> Vec<u8> {
        [self.data.as_slice(), key].concat()
    }

    /// Sends a request made by `make`, again after failures that allow it
    /// ([`may_retry`]), until the deadline: with several members, a request
    /// that met a dead one goes to another.
    async fn call<T, F, Fut>(&self, kind: Request, mut make: F) -> Result<T, BackendError>
    where
        F: FnMut(KvClient) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let until = tokio::time::Instant::now() + self.deadline;
        let mut pause = Duration::from_millis(5);
        loop {
            let kv = self
                .client
                .kv_client()
                .max_decoding_message_size(MAX_DECODING);
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, make(kv)).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(e)) => {
                    if let Some(refused) = refusal(&self.endpoint, &e) {
                        return Err(refused);
                    }
                    let again = may_retry(&e, kind) && tokio::time::Instant::now() + pause < until;
                    if !again {
                        return Err(BackendError::Unavailable(format!(
                            "{} is unavailable: {}",
                            self.endpoint,
                            with_causes(&e)
                        )));
                    }
                }
                Err(_) => {
                    return Err(BackendError::Unavailable(format!(
                        "{} is unavailable: no answer within {} ms",
                        self.endpoint,
                        self.deadline.as_millis()
                    )));
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    fn entry(&self, kv: &etcd_client::KeyValue) -> Option<Entry> {
        Some(Entry {
            key: kv.key().strip_prefix(self.data.as_slice())?.to_vec(),
            value: kv.value().to_vec(),
            version: revision(kv.mod_revision()),
        })
    }

    /// Reads a watch from its start up to `head`: the changes after
    /// `since`, whole commits, stopping at the first commit boundary at or
    /// after `want` changes; or where the cluster compacted.
    async fn read_feed(
        &self,
        stream: &mut etcd_client::WatchStream,
        since: u64,
        head: u64,
        want: usize,
    ) -> Result<Feed, etcd_client::Error> {
        let mut out: Vec<Change> = Vec::new();
        // The newest revision read whole: later copies of its events
        // (etcd 3.4's duplicate events) are dropped.
        let mut done = since;
        while let Some(response) = stream.message().await? {
            if response.compact_revision() != 0 {
                return Ok(Feed::Compacted(revision(response.compact_revision())));
            }
            if response.canceled() {
                return Err(etcd_client::Error::WatchError(format!(
                    "watch canceled: {}",
                    response.cancel_reason()
                )));
            }
            let mut newest = done;
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let version = revision(kv.mod_revision());
                if version <= done || version > head {
                    continue;
                }
                // A commit boundary past the limit: done.
                if out.len() >= want && out.last().is_some_and(|c| c.version != version) {
                    return Ok(Feed::Done(out));
                }
                newest = newest.max(version);
                let Some(key) = kv.key().strip_prefix(self.data.as_slice()) else {
                    continue; // the head key: a commit, not a write
                };
                out.push(Change {
                    version,
                    key: key.to_vec(),
                    value: match event.event_type() {
                        EventType::Put => Some(kv.value().to_vec()),
                        EventType::Delete => None,
                    },
                });
            }
            done = newest;
            if done >= head {
                break;
            }
        }
        Ok(Feed::Done(out))
    }

    fn committed(&self, version: u64) {
        advance(&self.commits, version);
    }

    /// Refuses a commit etcd would refuse, before sending it.
    fn within_limits(&self, checks: &[Check], writes: &[Write]) -> Result<(), BackendError> {
        // The head key's put, and on failure one read per check.
        let ops = (writes.len() + 1).max(checks.len());
        if ops > self.max_txn_ops {
            return Err(BackendError::Invalid(format!(
                "a commit of {} checks and {} writes is more than this etcd takes in one \
                 transaction ({} operations, --max-txn-ops, one of them kvstash's own); \
                 nothing was written",
                checks.len(),
                writes.len(),
                self.max_txn_ops
            )));
        }
        let bytes: usize =
            checks
                .iter()
                .map(|c| c.key().len() + self.data.len() + 16)
                .chain(writes.iter().map(|w| {
                    w.key.len() + self.data.len() + w.value.as_ref().map_or(0, Vec::len) + 16
                }))
                .sum::<usize>()
                + self.head.len()
                + 64;
        if bytes > self.max_request_bytes {
            return Err(BackendError::Invalid(format!(
                "a commit of about {bytes} bytes is more than this etcd takes in one request \
                 ({} bytes, --max-request-bytes); nothing was written",
                self.max_request_bytes
            )));
        }
        Ok(())
    }
}

/// Follows the head key, so watchers here wake on other hosts' commits;
/// watches again after an error, until the backend is dropped.
async fn follow(client: Client, head: Vec<u8>, commits: Weak<tokio::sync::watch::Sender<u64>>) {
    loop {
        // From the head as it is now (not from the last version seen, which
        // the cluster may have compacted away since).
        let mut kv = client.kv_client();
        let now = tokio::time::timeout(Duration::from_secs(5), kv.get(head.clone(), None)).await;
        if let Ok(Ok(response)) = now {
            let Some(sender) = commits.upgrade() else {
                return;
            };
            let at = response.header().map_or(0, |h| revision(h.revision()));
            if let Some(kv) = response.kvs().first() {
                advance(&sender, revision(kv.mod_revision()));
            }
            drop(sender);
            let mut watch_client = client.watch_client();
            let options = WatchOptions::new().with_start_revision(to_i64(at + 1));
            if let Ok(mut stream) = watch_client.watch(head.clone(), Some(options)).await {
                loop {
                    let next = tokio::time::timeout(Duration::from_secs(1), stream.message()).await;
                    let Some(sender) = commits.upgrade() else {
                        return;
                    };
                    match next {
                        Ok(Ok(Some(response))) if !response.canceled() => {
                            for event in response.events() {
                                if let Some(kv) = event.kv() {
                                    advance(&sender, revision(kv.mod_revision()));
                                }
                            }
                        }
                        Ok(Ok(_) | Err(_)) => break,
                        Err(_) => continue,
                    }
                }
            }
        }
        if commits.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait]
impl Backend for EtcdBackend {
    fn summary(&self) -> String {
        format!(
            "{} (keys {}*)",
            self.endpoint,
            String::from_utf8_lossy(&self.root)
        )
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let key = self.data_key(key);
        let response = self
            .call(Request::Read, |mut kv| {
                let key = key.clone();
                async move { kv.get(key, None).await }
            })
            .await?;
        Ok(response.kvs().first().and_then(|kv| self.entry(kv)))
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        let mut out = Vec::with_capacity(keys.len());
        // One snapshot: the first Txn's revision pins the rest.
        let mut at = 0i64;
        for chunk in keys.chunks(self.max_txn_ops) {
            let options = (at > 0).then(|| GetOptions::new().with_revision(at));
            let ops: Vec<TxnOp> = chunk
                .iter()
                .map(|k| TxnOp::get(self.data_key(k), options.clone()))
                .collect();
            let txn = Txn::new().and_then(ops);
            let response = self
                .call(Request::Read, |mut kv| {
                    let txn = txn.clone();
                    async move { kv.txn(txn).await }
                })
                .await?;
            if at == 0 {
                at = response.header().map_or(0, |h| h.revision());
            }
            for op in response.op_responses() {
                let TxnOpResponse::Get(get) = op else {
                    return Err(BackendError::Unavailable(format!(
                        "{}: unexpected answer to a read",
                        self.endpoint
                    )));
                };
                out.push(get.kvs().first().and_then(|kv| self.entry(kv)));
            }
        }
        Ok(out)
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        let limit = scan.clamped_limit();
        if scan.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let end = match &scan.end {
            Some(end) => self.data_key(end),
            None => prefix_end(&self.data).unwrap_or_default(),
        };
        let mut options = GetOptions::new()
            .with_range(end)
            .with_limit(i64::try_from(limit).unwrap_or(i64::from(MAX_SCAN)));
        if scan.reverse {
            options = options.with_sort(SortTarget::Key, SortOrder::Descend);
        }
        let start = self.data_key(&scan.start);
        let response = self
            .call(Request::Read, |mut kv| {
                let (start, options) = (start.clone(), options.clone());
                async move { kv.get(start, Some(options)).await }
            })
            .await?;
        Ok(response
            .kvs()
            .iter()
            .filter_map(|kv| self.entry(kv))
            .collect())
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let writes = last_write_wins(writes);
        self.within_limits(&checks, &writes)?;
        let compares: Vec<Compare> = checks
            .iter()
            .map(|check| match check {
                Check::VersionIs(key, version) => {
                    Compare::mod_revision(self.data_key(key), CompareOp::Equal, to_i64(*version))
                }
                Check::Absent(key) => {
                    Compare::create_revision(self.data_key(key), CompareOp::Equal, 0)
                }
            })
            .collect();
        let mut ops: Vec<TxnOp> = writes
            .iter()
            .map(|write| match &write.value {
                Some(value) => TxnOp::put(self.data_key(&write.key), value.clone(), None),
                None => TxnOp::delete(self.data_key(&write.key), None),
            })
            .collect();
        ops.push(TxnOp::put(self.head.clone(), Vec::new(), None));
        // On failure, the checked keys as the compares saw them.
        let reads: Vec<TxnOp> = checks
            .iter()
            .map(|c| TxnOp::get(self.data_key(c.key()), None))
            .collect();
        let txn = Txn::new().when(compares).and_then(ops).or_else(reads);
        let response = self
            .call(Request::Commit, |mut kv| {
                let txn = txn.clone();
                async move { kv.txn(txn).await }
            })
            .await
            .map_err(maybe_applied)?;
        if response.succeeded() {
            let version = revision(response.header().map_or(0, |h| h.revision()));
            self.committed(version);
            return Ok(version);
        }
        for (index, (check, op)) in checks.iter().zip(response.op_responses()).enumerate() {
            let current = match op {
                TxnOpResponse::Get(get) => get.kvs().first().map(|kv| revision(kv.mod_revision())),
                TxnOpResponse::Put(_) | TxnOpResponse::Delete(_) | TxnOpResponse::Txn(_) => None,
            };
            if current != check.expected() {
                let index = u32::try_from(index).unwrap_or(u32::MAX);
                return Err(BackendError::Conflict { index, current });
            }
        }
        Err(BackendError::Unavailable(format!(
            "{}: a commit failed its checks, but every check held when read",
            self.endpoint
        )))
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        let response = self
            .call(Request::Read, |mut kv| {
                let head = self.head.clone();
                async move { kv.get(head, None).await }
            })
            .await?;
        Ok(response
            .kvs()
            .first()
            .map_or(0, |kv| revision(kv.mod_revision())))
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let head = self.current_version().await?;
        if head <= since {
            return Ok(Vec::new());
        }
        let want = usize::try_from(limit.min(MAX_SCAN)).unwrap_or(0);
        let root = self.root.clone();
        let end = prefix_end(&root).unwrap_or_default();
        let read = async {
            // From `since`, not `since + 1`: a watch opened exactly at the
            // compaction revision can miss a delete (etcd #19179, fixed
            // after 3.4.23), so that revision counts as compacted too.
            let mut start = since.max(1);
            loop {
                let mut watch_client = self
                    .client
                    .watch_client()
                    .max_decoding_message_size(MAX_DECODING);
                let options = WatchOptions::new()
                    .with_range(end.clone())
                    .with_start_revision(to_i64(start));
                let mut stream = watch_client.watch(root.clone(), Some(options)).await?;
                match self.read_feed(&mut stream, since, head, want).await? {
                    Feed::Done(out) => return Ok::<_, etcd_client::Error>(Ok(out)),
                    Feed::Compacted(at) => {
                        // The cluster compacted past `since`. Only if this
                        // store committed in between is anything lost: its
                        // head key then changed after `since`.
                        let mut kv = self.client.kv_client();
                        let options = GetOptions::new().with_revision(to_i64(at));
                        let then = kv.get(self.head.clone(), Some(options)).await;
                        let lost = match then {
                            Ok(r) => {
                                r.kvs().first().map_or(0, |kv| revision(kv.mod_revision())) > since
                            }
                            Err(_) => true,
                        };
                        if lost || at < start {
                            return Ok(Err(BackendError::Compacted { oldest: at + 1 }));
                        }
                        start = at + 1;
                    }
                }
            }
        };
        let out = within(&self.endpoint, self.deadline, read).await??;
        Ok(take_changes(out.into_iter(), limit))
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
