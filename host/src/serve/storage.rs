//! `/v1/storage`: the store's backend records, read and written directly
//! (the storage interface of `wit/storage.wit` over HTTP; the wire format
//! is `crate::backend::wire`). What the `server` backend of another host
//! speaks, so that its own kvstash component runs on this store, and what
//! a replica follows. A token needs the `storage` scope: these records
//! are every bucket's, locks and schemas included.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;

use super::{ApiError, Reply, Served, body_json, check_safe_integer};
use crate::backend::wire::{
    ChangesAnswer, CommitRequest, EntriesAnswer, ErrorBody, GetRequest, ScanRequest, VersionAnswer,
    WireChange, WireEntry, WireError,
};
use crate::backend::{
    Backend, BackendError, Change, MAX_SCAN, validate_commit, validate_get_many, validate_scan,
};

pub use crate::backend::wire::MAX_STORAGE_BODY;

/// The largest body of a scan: its two keys.
pub const MAX_SCAN_BODY: usize = 256 << 10;

/// The longest a `wait_ms` may ask a read to wait for a newer commit.
const MAX_WAIT_MS: u64 = 30_000;

/// About the most bytes of keys and values one changes answer carries
/// (whole commits: the commit that crosses it is the last).
const CHANGES_BYTES: usize = 16 << 20;

/// About the most bytes of keys and values one scan answer carries; a
/// longer one is cut after the record that crosses it, with `more`.
const SCAN_BYTES: usize = 32 << 20;

impl From<BackendError> for ApiError {
    fn from(e: BackendError) -> Self {
        let status = match e {
            BackendError::Conflict { .. } => StatusCode::CONFLICT,
            BackendError::Compacted { .. } => StatusCode::GONE,
            BackendError::ReadOnly => StatusCode::FORBIDDEN,
            BackendError::Invalid(_) => StatusCode::BAD_REQUEST,
            BackendError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            // Not the server's fault to retry, nor the request's to fix.
            BackendError::Corrupt(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let body = ErrorBody {
            error: WireError::from(&e),
        };
        Self {
            status,
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }
}

/// The backend the store's component runs on.
async fn backend(s: &Served) -> Result<Arc<dyn Backend>, ApiError> {
    let backend = s
        .storage
        .get_or_try_init(|| s.store.leaf_backend())
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "invalid-config",
                format!("this server does not serve its storage: {e}"),
            )
        })?;
    Ok(backend.clone())
}

fn answer<T: serde::Serialize>(body: &T) -> Reply {
    Ok(axum::Json(body).into_response())
}

pub(super) async fn get(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let request: GetRequest = body_json(&headers, body)?;
    let keys: Vec<Vec<u8>> = request.keys.0.into_iter().map(|k| k.0).collect();
    validate_get_many(&keys)?;
    for key in &keys {
        crate::backend::validate_key(key)?;
    }
    let backend = backend(&s).await?;
    let entries = match keys.as_slice() {
        [key] => vec![backend.get(key).await?],
        _ => backend.get_many(&keys).await?,
    };
    answer(&EntriesAnswer {
        entries: entries
            .into_iter()
            .map(|e| e.map(WireEntry::from))
            .collect::<Vec<_>>(),
        more: false,
    })
}

pub(super) async fn scan(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let request: ScanRequest = body_json(&headers, body)?;
    let scan = request.into();
    validate_scan(&scan)?;
    let backend = backend(&s).await?;
    let mut entries = backend.scan(&scan).await?;
    let mut total = 0;
    let cut = entries.iter().position(|e| {
        total += e.key.len() + e.value.len();
        total > SCAN_BYTES
    });
    let more = cut.is_some_and(|at| at + 1 < entries.len());
    if let Some(at) = cut {
        entries.truncate(at + 1);
    }
    answer(&EntriesAnswer {
        entries: entries.into_iter().map(WireEntry::from).collect::<Vec<_>>(),
        more,
    })
}

pub(super) async fn commit(
    State(s): State<Arc<Served>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Reply {
    let request: CommitRequest = body_json(&headers, body)?;
    if s.store.is_read_only() {
        return Err(BackendError::ReadOnly.into());
    }
    let (checks, writes) = request.into_parts();
    for check in &checks {
        if let Some(version) = check.expected() {
            check_safe_integer("a check's `version`", version)?;
        }
    }
    validate_commit(&checks, &writes)?;
    let backend = backend(&s).await?;
    let version = backend.commit(checks, writes).await?;
    answer(&VersionAnswer { version })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct VersionQuery {
    /// Wait (up to `wait_ms`) until the version is newer than this.
    after: Option<u64>,
    #[serde(default)]
    wait_ms: u64,
}

pub(super) async fn version(
    State(s): State<Arc<Served>>,
    query: Result<Query<VersionQuery>, QueryRejection>,
) -> Reply {
    let Query(query) = query?;
    if let Some(after) = query.after {
        check_safe_integer("after", after)?;
    }
    check_wait(query.wait_ms)?;
    let backend = backend(&s).await?;
    let mut version = backend.current_version().await?;
    if let Some(after) = query.after
        && version <= after
        && query.wait_ms > 0
    {
        if let Err(busy) = wait_for_commit(&s, backend.as_ref(), after, query.wait_ms).await {
            return Ok(busy);
        }
        version = backend.current_version().await?;
    }
    answer(&VersionAnswer { version })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChangesQuery {
    since: u64,
    #[serde(default = "default_changes_limit")]
    limit: u32,
    /// With nothing newer than `since`, wait this long for a commit.
    #[serde(default)]
    wait_ms: u64,
}

fn default_changes_limit() -> u32 {
    1000
}

pub(super) async fn changes(
    State(s): State<Arc<Served>>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Reply {
    let Query(query) = query?;
    check_safe_integer("since", query.since)?;
    check_wait(query.wait_ms)?;
    if query.limit == 0 || query.limit > MAX_SCAN {
        return Err(ApiError::bad_request(
            "invalid-argument",
            format!("`limit` is 1..={MAX_SCAN}"),
        ));
    }
    let backend = backend(&s).await?;
    // The version first: every change the answer lacks is after it.
    let mut version = backend.current_version().await?;
    let mut changes = backend.changes(query.since, query.limit).await?;
    if changes.is_empty() && query.wait_ms > 0 && version <= query.since {
        if let Err(busy) = wait_for_commit(&s, backend.as_ref(), query.since, query.wait_ms).await {
            return Ok(busy);
        }
        version = backend.current_version().await?;
        changes = backend.changes(query.since, query.limit).await?;
    }
    let changes = whole_commits_within(changes, CHANGES_BYTES);
    if let Some(last) = changes.last() {
        version = version.max(last.version);
    }
    answer(&ChangesAnswer {
        changes: changes.into_iter().map(WireChange::from).collect(),
        version,
    })
}

fn check_wait(wait_ms: u64) -> Result<(), ApiError> {
    if wait_ms > MAX_WAIT_MS {
        return Err(ApiError::bad_request(
            "invalid-argument",
            format!("`wait_ms` is at most {MAX_WAIT_MS}"),
        ));
    }
    Ok(())
}

/// `changes` up to the end of the commit during which their keys and
/// values pass `bytes` (at least one commit, whatever its size).
fn whole_commits_within(mut changes: Vec<Change>, bytes: usize) -> Vec<Change> {
    let mut total = 0;
    for i in 0..changes.len() {
        if total > bytes && changes[i].version != changes[i - 1].version {
            changes.truncate(i);
            break;
        }
        total += changes[i].key.len() + changes[i].value.as_ref().map_or(0, Vec::len);
    }
    changes
}

/// Until `backend` is past version `seen`, `wait_ms` pass, or the server
/// stops. Waiters share the watch streams' limit: with none free, 429.
async fn wait_for_commit(
    s: &Served,
    backend: &dyn Backend,
    seen: u64,
    wait_ms: u64,
) -> Result<(), Response> {
    let Ok(_permit) = s.watches.clone().try_acquire_owned() else {
        return Err(super::too_many_watches());
    };
    let deadline = tokio::time::Instant::now() + Duration::from_millis(wait_ms);
    let mut commits = backend.commits();
    let mut stopping = s.stopping.subscribe();
    loop {
        if let Some(rx) = &mut commits {
            rx.borrow_and_update();
        }
        let now = backend
            .current_version()
            .await
            .map_err(|e| ApiError::from(e).into_response())?;
        if now > seen || *stopping.borrow_and_update() {
            return Ok(());
        }
        // Without notifications, a look every 20 ms.
        let nap = match commits {
            Some(_) => tokio::time::sleep_until(deadline),
            None => tokio::time::sleep_until(
                deadline.min(tokio::time::Instant::now() + Duration::from_millis(20)),
            ),
        };
        tokio::select! {
            changed = async {
                match &mut commits {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            } => if !changed { commits = None },
            () = nap => {}
            _ = stopping.changed() => return Ok(()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changes_answer_holds_whole_commits() {
        let change = |version, len| Change {
            version,
            key: vec![b'k'; len],
            value: None,
        };
        let feed = vec![change(1, 6), change(1, 6), change(2, 6), change(3, 1)];
        let cut = whole_commits_within(feed.clone(), 5);
        assert_eq!(
            cut.len(),
            2,
            "the first commit, though larger than the bound"
        );
        assert_eq!(whole_commits_within(feed.clone(), 12).len(), 3);
        assert_eq!(whole_commits_within(feed, 100).len(), 4);
    }
}
