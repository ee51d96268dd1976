//! `kvstash serve --replica-of URL`: a read-only copy of another server's
//! store, following its change feed.
//!
//! The replica copies the primary's records, not its API calls: it reads
//! `/v1/storage/changes` (a long poll) and applies each commit to its own
//! backend at the primary's version ([`Backend::replicate`]), so a read
//! here answers the value and version the primary had, and a client may
//! read here and write there with `if_version`. It starts, and starts
//! again whenever the feed no longer reaches back to what it has (the
//! primary compacted it), from a copy of every record
//! ([`Backend::restore`]), then catches up from the feed; until it has, it
//! answers reads with 503. Its own backend refuses every other commit, and
//! the server refuses every write request with a pointer to the primary.
//!
//! Where it resumes after a restart is in `DB.replica` beside a file
//! store: the primary's URL and the version applied. A restart resumes
//! from there if the store is still at that version, else copies again.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::backend::{Backend, BackendError, Change, Entry, MAX_SCAN, Scan, ServerBackend, Write};

/// How long one poll of the primary's feed waits for a commit.
const POLL_WAIT: Duration = Duration::from_secs(25);
/// Changes asked for per poll.
const POLL_LIMIT: u32 = 1000;
/// The longest pause between attempts to reach a primary that is down.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Which primary a replica follows.
#[derive(Clone, Debug)]
pub struct ReplicaOf {
    /// The primary's URL (`http://host:port`, `https://…`).
    pub url: String,
    /// The environment variable holding a token of the primary with
    /// `--storage read`.
    pub token_env: String,
    /// The CA certificates (PEM) the primary's TLS certificate is checked
    /// against, if not the system's.
    pub ca_file: Option<PathBuf>,
}

/// Where a replica is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Copying the primary's records, or catching up after a copy: reads
    /// are refused (503).
    Syncing,
    /// Applying the primary's commits as they come.
    Following,
    /// The primary cannot be reached: reads are served, at `applied`.
    Disconnected,
}

struct Status {
    phase: Phase,
    /// The primary's newest version the replica has applied.
    applied: u64,
    /// The primary's newest version when last heard from.
    primary_version: Option<u64>,
    /// When the replica last had everything the primary had.
    caught_up_at: Option<Instant>,
    /// Copies of the whole store taken (the first sync included).
    snapshots: u64,
    last_error: Option<String>,
}

/// A replica's state, shared by its follower and the server.
pub struct Replica {
    primary: String,
    status: Mutex<Status>,
}

impl Replica {
    fn new(primary: String) -> Self {
        Self {
            primary,
            status: Mutex::new(Status {
                phase: Phase::Syncing,
                applied: 0,
                primary_version: None,
                caught_up_at: None,
                snapshots: 0,
                last_error: None,
            }),
        }
    }

    fn status(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The primary's URL.
    pub fn primary(&self) -> &str {
        &self.primary
    }

    /// Whether reads are served (not while a copy is being taken).
    pub fn serves_reads(&self) -> bool {
        self.status().phase != Phase::Syncing
    }

    /// `(versions, seconds)` behind the primary.
    fn lag(status: &Status) -> (u64, f64) {
        let versions = status
            .primary_version
            .map_or(0, |p| p.saturating_sub(status.applied));
        let seconds = match (versions, status.phase, status.caught_up_at) {
            (0, Phase::Following, _) => 0.0,
            (_, _, Some(at)) => at.elapsed().as_secs_f64(),
            (_, _, None) => f64::INFINITY,
        };
        (versions, seconds)
    }

    /// `GET /v1/replication`.
    pub fn report(&self) -> serde_json::Value {
        let status = self.status();
        let (versions, seconds) = Self::lag(&status);
        json!({
            "primary": self.primary,
            "state": status.phase,
            "applied": status.applied,
            "primary_version": status.primary_version,
            "lag_versions": versions,
            // null: never caught up yet.
            "lag_ms": seconds.is_finite().then(|| (seconds * 1000.0).round() as u64),
            "snapshots": status.snapshots,
            "last_error": status.last_error,
        })
    }

    /// Its lines of `/metrics`.
    pub fn metrics(&self) -> String {
        let status = self.status();
        let (versions, seconds) = Self::lag(&status);
        let phase = |p: Phase| u8::from(status.phase == p);
        format!(
            "# HELP kvstash_replica_applied_version The primary's newest version this replica has applied.\n\
             # TYPE kvstash_replica_applied_version gauge\n\
             kvstash_replica_applied_version {}\n\
             # HELP kvstash_replica_lag_versions How many versions the primary is ahead, when last heard from.\n\
             # TYPE kvstash_replica_lag_versions gauge\n\
             kvstash_replica_lag_versions {versions}\n\
             # HELP kvstash_replica_lag_seconds How long since this replica last had all the primary had (0: it has).\n\
             # TYPE kvstash_replica_lag_seconds gauge\n\
             kvstash_replica_lag_seconds {}\n\
             # HELP kvstash_replica_snapshots_total Copies of the primary's whole store taken (the first sync included).\n\
             # TYPE kvstash_replica_snapshots_total counter\n\
             kvstash_replica_snapshots_total {}\n\
             # HELP kvstash_replica_state 1 for the state the replica is in.\n\
             # TYPE kvstash_replica_state gauge\n\
             kvstash_replica_state{{state=\"syncing\"}} {}\n\
             kvstash_replica_state{{state=\"following\"}} {}\n\
             kvstash_replica_state{{state=\"disconnected\"}} {}\n",
            status.applied,
            if seconds.is_finite() {
                format!("{seconds:.3}")
            } else {
                "+Inf".into()
            },
            status.snapshots,
            phase(Phase::Syncing),
            phase(Phase::Following),
            phase(Phase::Disconnected),
        )
    }

    fn failed(&self, e: &BackendError) {
        let mut status = self.status();
        if status.phase == Phase::Following {
            status.phase = Phase::Disconnected;
        }
        status.last_error = Some(e.to_string());
    }
}

/// What `DB.replica` holds.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Resume {
    primary: String,
    version: u64,
}

/// Starts following `of` into `local` (the served store's backend), until
/// `stopping` is set. Fails at once if the primary cannot be opened (a
/// bad URL or CA file) or `local` cannot hold a replica.
pub async fn start(
    of: &ReplicaOf,
    local: Arc<dyn Backend>,
    resume_file: Option<PathBuf>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) -> Result<Arc<Replica>, BackendError> {
    local.make_replica()?;
    let mut config = json!({"type": "server", "url": of.url, "token_env": of.token_env});
    if let Some(ca) = &of.ca_file {
        config["ca_file"] = json!(ca);
    }
    let replica = Arc::new(Replica::new(of.url.trim_end_matches('/').to_string()));
    // The first open checks the URL, the CA file and that the token may
    // read the records: a mistake there stops the server. A primary that
    // is down is waited for, while the replica answers 503.
    let first = match ServerBackend::connect(config.clone()).await {
        Ok(primary) => Some(primary),
        Err(e @ BackendError::Invalid(_)) => return Err(e),
        Err(e) => {
            replica.failed(&e);
            None
        }
    };
    let shared = replica.clone();
    tokio::spawn(async move {
        let primary = match first {
            Some(primary) => primary,
            None => loop {
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stopping.changed() => return,
                }
                match ServerBackend::connect(config.clone()).await {
                    Ok(primary) => break primary,
                    Err(e) => shared.failed(&e),
                }
            },
        };
        let follower = Follower {
            replica: shared,
            primary,
            local,
            resume_file,
        };
        follower.run(stopping).await;
    });
    Ok(replica)
}

struct Follower {
    replica: Arc<Replica>,
    primary: ServerBackend,
    local: Arc<dyn Backend>,
    resume_file: Option<PathBuf>,
}

impl Follower {
    async fn run(self, mut stopping: tokio::sync::watch::Receiver<bool>) {
        let mut applied = self.resume_point().await;
        // Set after a copy: reads wait until the replica has this version.
        let mut catch_up_to = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if *stopping.borrow_and_update() {
                return;
            }
            let step = async {
                match applied {
                    None => self.copy().await.map(|(at, target)| {
                        applied = Some(at);
                        catch_up_to = Some(target);
                    }),
                    Some(since) => match self.poll(since, catch_up_to).await {
                        Ok(now) => {
                            applied = Some(now);
                            if catch_up_to.is_some_and(|t| now >= t) {
                                catch_up_to = None;
                            }
                            Ok(())
                        }
                        // The feed no longer reaches back to what we have;
                        // or a commit we cannot apply: copy everything again.
                        Err(BackendError::Compacted { .. } | BackendError::Invalid(_))
                            if applied.is_some() =>
                        {
                            applied = None;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    },
                }
            };
            let result = tokio::select! {
                result = step => result,
                _ = stopping.changed() => return,
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(50),
                Err(e) => {
                    self.replica.failed(&e);
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        _ = stopping.changed() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// The version to resume from: the one `DB.replica` names, if the
    /// store is still there and it names this primary.
    async fn resume_point(&self) -> Option<u64> {
        let path = self.resume_file.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        let resume: Resume = serde_json::from_str(&text).ok()?;
        let here = self.local.current_version().await.ok()?;
        (resume.primary == self.replica.primary && resume.version == here).then_some(here)
    }

    fn remember(&self, version: u64) {
        let Some(path) = &self.resume_file else {
            return;
        };
        let resume = Resume {
            primary: self.replica.primary.clone(),
            version,
        };
        let mut aside = path.clone().into_os_string();
        aside.push(".new");
        // Best effort: a resume file that lags makes the next start copy
        // again, never skip.
        if let Ok(text) = serde_json::to_vec(&resume)
            && std::fs::write(&aside, text).is_ok()
        {
            let _ = std::fs::rename(&aside, path);
        }
    }

    /// Copies every record of the primary into the local store; the
    /// version the copy is labelled with (the primary's before the first
    /// page) and the primary's version after the last page. Records the
    /// primary changed meanwhile may be in either state: the feed from
    /// the first version on mends them, so reads wait for the second.
    async fn copy(&self) -> Result<(u64, u64), BackendError> {
        {
            let mut status = self.replica.status();
            status.phase = Phase::Syncing;
        }
        if let Some(path) = &self.resume_file {
            let _ = std::fs::remove_file(path);
        }
        let from = self.primary.current_version().await?;
        let mut entries: Vec<Entry> = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = self
                .primary
                .scan(&Scan {
                    start: start.clone(),
                    end: None,
                    limit: MAX_SCAN,
                    reverse: false,
                })
                .await?;
            let full = page.len() >= MAX_SCAN as usize;
            if let Some(last) = page.last() {
                start.clone_from(&last.key);
                start.push(0);
            }
            entries.extend(page);
            if !full {
                break;
            }
        }
        let to = self.primary.current_version().await?;
        self.local.restore(from, entries).await?;
        let mut status = self.replica.status();
        status.applied = from;
        status.primary_version = Some(to);
        status.snapshots += 1;
        status.last_error = None;
        drop(status);
        self.remember(from);
        Ok((from, to))
    }

    /// One poll of the feed after `since`, applied; the version now held.
    async fn poll(&self, since: u64, catching_up: Option<u64>) -> Result<u64, BackendError> {
        let wait = match catching_up {
            Some(_) => Duration::ZERO,
            None => POLL_WAIT,
        };
        let asked = Instant::now();
        let (changes, primary_version) = self
            .primary
            .changes_waiting(since, POLL_LIMIT, wait)
            .await?;
        let mut applied = since;
        for (version, writes) in commits(changes) {
            if version <= applied {
                continue;
            }
            self.local.replicate(version, writes).await?;
            applied = version;
        }
        {
            let mut status = self.replica.status();
            status.applied = applied;
            status.primary_version = Some(primary_version.max(applied));
            status.last_error = None;
            status.phase = match catching_up {
                Some(target) if applied < target => Phase::Syncing,
                _ => Phase::Following,
            };
            if applied >= primary_version && status.phase == Phase::Following {
                status.caught_up_at = Some(Instant::now());
            }
        }
        if applied != since {
            self.remember(applied);
        } else if !wait.is_zero() && asked.elapsed() < Duration::from_secs(1) {
            // Nothing new, well before the wait was over (a primary that
            // is stopping): not again at once.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(applied)
    }
}

/// The feed's changes as commits: each version with its writes, in order.
fn commits(changes: Vec<Change>) -> Vec<(u64, Vec<Write>)> {
    let mut out: Vec<(u64, Vec<Write>)> = Vec::new();
    for change in changes {
        let write = Write {
            key: change.key,
            value: change.value,
        };
        match out.last_mut() {
            Some((version, writes)) if *version == change.version => writes.push(write),
            _ => out.push((change.version, vec![write])),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_is_applied_commit_by_commit() {
        let change = |version, key: &str| Change {
            version,
            key: key.as_bytes().to_vec(),
            value: None,
        };
        let grouped = commits(vec![change(3, "a"), change(3, "b"), change(7, "c")]);
        assert_eq!(grouped.len(), 2);
        assert_eq!((grouped[0].0, grouped[0].1.len()), (3, 2));
        assert_eq!((grouped[1].0, grouped[1].1.len()), (7, 1));
    }

    #[test]
    fn lag_is_reported_in_versions_and_time() {
        let replica = Replica::new("http://127.0.0.1:1".into());
        assert!(!replica.serves_reads(), "a new replica syncs first");
        {
            let mut status = replica.status();
            status.phase = Phase::Following;
            status.applied = 10;
            status.primary_version = Some(12);
            status.caught_up_at = Some(Instant::now());
        }
        let report = replica.report();
        assert_eq!(report["lag_versions"], 2);
        assert_eq!(report["state"], "following");
        assert!(
            replica
                .metrics()
                .contains("kvstash_replica_lag_versions 2\n")
        );
        replica.status().primary_version = Some(10);
        assert_eq!(replica.report()["lag_ms"], 0);
    }
}
