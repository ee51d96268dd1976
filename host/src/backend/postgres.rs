//! The PostgreSQL backend: one store in three tables, named after its
//! namespace `ns`:
//!
//! - `ns_data (key bytea primary key, value bytea, version bigint)`;
//!   `bytea` sorts bytewise, as scans need (`text` would sort by collation)
//! - `ns_head`, one row: the store's version and the oldest version the
//!   change feed still holds
//! - `ns_log (version, seq, key, value)`: the change feed, trimmed to the
//!   newest `retention` commits by every commit
//!
//! **Commits** are one call of the function `ns_commit`, so one statement
//! and one transaction. It first locks the head row (`FOR UPDATE`): commits
//! are serialized on it, and every check after the lock sees every commit
//! before it (read committed takes a new snapshot per statement). Then the
//! checks, and only if all hold: the version is bumped, the writes and
//! their log rows are written, the log is trimmed, and `pg_notify` tells
//! other hosts. Versions come from the head row, not a sequence: sequences
//! leave gaps and hand out numbers in an order commits need not finish in.
//!
//! **Connections.** A few connections (`connections`, default 4) used in
//! turn, each reconnected when it breaks, plus one that `LISTEN`s for
//! commits. Every call has a deadline; past it the call fails with
//! `unavailable` naming the server.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio_postgres::{Client, NoTls, Statement};

use super::remote::{Deadline, advance, last_write_wins, maybe_applied, with_causes, within};
use super::{
    Backend, BackendError, Change, Check, DEFAULT_RETENTION, Entry, MAX_SCAN, Scan, Write,
    take_changes, validate_commit, validate_get_many, validate_key, validate_scan,
};

/// The `postgres` backend's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostgresConfig {
    #[allow(dead_code)] // checked by the registry; named here so it is not "unknown"
    r#type: String,
    /// `postgres://user[:password]@host:port/database` (or key=value form).
    url: String,
    /// Names this store's tables (`<namespace>_data`, …): lower-case
    /// letters, digits and `_`, starting with a letter.
    #[serde(default = "default_namespace")]
    namespace: String,
    /// Commits whose changes the change feed keeps.
    #[serde(default = "default_retention")]
    retention: u64,
    /// Connections used in turn.
    #[serde(default = "default_connections")]
    connections: usize,
    #[serde(flatten)]
    deadline: Deadline,
}

fn default_namespace() -> String {
    "kvstash".into()
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION
}

fn default_connections() -> usize {
    4
}

fn invalid(why: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("postgres backend configuration: {why}"))
}

/// The schema and the commit function; `__NS__` is the namespace.
const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS __NS___data (
  key bytea PRIMARY KEY, value bytea NOT NULL, version bigint NOT NULL);
CREATE TABLE IF NOT EXISTS __NS___head (
  id int PRIMARY KEY CHECK (id = 1), version bigint NOT NULL, oldest bigint NOT NULL);
INSERT INTO __NS___head VALUES (1, 0, 1) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS __NS___log (
  version bigint NOT NULL, seq int NOT NULL, key bytea NOT NULL, value bytea,
  PRIMARY KEY (version, seq));
CREATE OR REPLACE FUNCTION __NS___commit(
  ck bytea[], cv bigint[], wk bytea[], wv bytea[], retention bigint,
  OUT ok boolean, OUT idx int, OUT cur bigint, OUT ver bigint) AS $$
DECLARE
  v bigint;
BEGIN
    SELECT h.version INTO v FROM __NS___head h WHERE h.id = 1 FOR UPDATE;
  -- Every check in one statement: the first that fails, if any.
  IF ck IS NOT NULL AND array_length(ck, 1) > 0 THEN
    SELECT u.i - 1, d.version INTO idx, cur
      FROM unnest(ck, cv) WITH ORDINALITY AS u(k, e, i)
      LEFT JOIN __NS___data d ON d.key = u.k
      WHERE d.version IS DISTINCT FROM u.e
      ORDER BY u.i LIMIT 1;
    IF FOUND THEN
      ok := false;
      RETURN;
    END IF;
  END IF;
  v := v + 1;
  UPDATE __NS___head SET version = v, oldest = greatest(oldest, v - retention + 1) WHERE id = 1;
  -- Every write, and its log row, in one statement.
  WITH w AS (SELECT * FROM unnest(wk, wv) WITH ORDINALITY AS w(k, val, o)),
    up AS (INSERT INTO __NS___data (key, value, version)
      SELECT w.k, w.val, v FROM w WHERE w.val IS NOT NULL
      ON CONFLICT (key) DO UPDATE SET value = excluded.value, version = excluded.version),
    gone AS (DELETE FROM __NS___data d USING w WHERE w.val IS NULL AND d.key = w.k)
  INSERT INTO __NS___log (version, seq, key, value)
    SELECT v, (w.o - 1)::int, w.k, w.val FROM w;
    -- Exactly the commit that falls out of the window: `version <= …` would
  -- walk every dead index entry of earlier trims until a vacuum, and
  -- commits slowed down from 6k/s to 1k/s within 30k commits. (Lowering
  -- `retention` later leaves the rows in between; they are never read.)
  DELETE FROM __NS___log WHERE version = v - retention;
  PERFORM pg_notify('__NS___commits', v::text);
  ok := true;
  ver := v;
END
$$ LANGUAGE plpgsql;
"#;

/// The statements one connection prepares.
struct Prepared {
    get: Statement,
    get_many: Statement,
    /// Forward and reverse, to the end and bounded.
    scan: [Statement; 4],
    commit: Statement,
    version: Statement,
    changes: Statement,
}

struct Connection {
    client: Client,
    prepared: Prepared,
}

pub struct PostgresBackend {
    config: tokio_postgres::Config,
    namespace: String,
    endpoint: String,
    retention: i64,
    deadline: Duration,
    pool: Vec<Mutex<Option<Arc<Connection>>>>,
    next: AtomicUsize,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("endpoint", &self.endpoint)
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

fn version_of(v: i64) -> Result<u64, BackendError> {
    u64::try_from(v).map_err(|_| BackendError::Unavailable(format!("postgres: bad version {v}")))
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

async fn connect(
    config: &tokio_postgres::Config,
    ns: &str,
) -> Result<(Client, Prepared), tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    // The commit function relies on read committed (a new snapshot per
    // statement after the head row's lock), whatever the server's default.
    client
        .batch_execute("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED")
        .await?;
    let scan = |order: &str, bounded: bool| {
        format!(
            "SELECT key, value, version FROM {ns}_data WHERE key >= $1 {} ORDER BY key {order} LIMIT $3",
            if bounded {
                "AND key < $2"
            } else {
                "AND $2::bytea IS NULL"
            }
        )
    };
    let prepared = Prepared {
        get: client
            .prepare(&format!(
                "SELECT value, version FROM {ns}_data WHERE key = $1"
            ))
            .await?,
        get_many: client
            .prepare(&format!(
                "SELECT key, value, version FROM {ns}_data WHERE key = ANY($1)"
            ))
            .await?,
        scan: [
            client.prepare(&scan("ASC", false)).await?,
            client.prepare(&scan("ASC", true)).await?,
            client.prepare(&scan("DESC", false)).await?,
            client.prepare(&scan("DESC", true)).await?,
        ],
        commit: client
            .prepare(&format!(
                "SELECT ok, idx, cur, ver FROM {ns}_commit($1, $2, $3, $4, $5)"
            ))
            .await?,
        version: client
            .prepare(&format!("SELECT version FROM {ns}_head WHERE id = 1"))
            .await?,
        // One statement, one snapshot: the oldest retained version and
        // whole commits covering the first $2 log rows after $1.
        changes: client
            .prepare(&format!(
                "WITH upto AS (SELECT max(version) AS v FROM (SELECT version FROM {ns}_log \
                 WHERE version > $1 ORDER BY version, seq LIMIT $2) x) \
                 SELECT h.oldest, l.version, l.key, l.value FROM {ns}_head h \
                 LEFT JOIN {ns}_log l ON l.version > $1 AND l.version <= (SELECT v FROM upto) \
                 WHERE h.id = 1 ORDER BY l.version, l.seq"
            ))
            .await?,
    };
    Ok((client, prepared))
}

impl PostgresBackend {
    /// Checks a configuration without connecting.
    pub fn check(config: serde_json::Value) -> Result<(), BackendError> {
        Self::parse(config).map(drop)
    }

    fn parse(
        config: serde_json::Value,
    ) -> Result<(PostgresConfig, tokio_postgres::Config), BackendError> {
        let config: PostgresConfig = serde_json::from_value(config).map_err(invalid)?;
        config.deadline.validate("postgres")?;
        let ns = &config.namespace;
        let valid_ns = ns.len() <= 40
            && ns.starts_with(|c: char| c.is_ascii_lowercase())
            && ns
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid_ns {
            return Err(invalid(
                "`namespace` must be 1-40 lower-case letters, digits or `_`, starting with a letter",
            ));
        }
        if config.retention == 0 || config.retention > i64::MAX as u64 {
            return Err(invalid("`retention` must be at least 1"));
        }
        if !(1..=64).contains(&config.connections) {
            return Err(invalid("`connections` must be 1..=64"));
        }
        let pg: tokio_postgres::Config = config.url.parse().map_err(invalid)?;
        Ok((config, pg))
    }

    pub async fn open(config: serde_json::Value) -> Result<Arc<dyn Backend>, BackendError> {
        let (config, mut pg) = Self::parse(config)?;
        let ns = &config.namespace;
        let deadline = config.deadline.duration();
        pg.connect_timeout(deadline);
        // A peer that vanished without a word is noticed in about a minute.
        pg.keepalives_idle(Duration::from_secs(30));
        let host = match pg.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
            None => "localhost".into(),
        };
        let port = pg.get_ports().first().copied().unwrap_or(5432);
        let endpoint = format!("postgres {host}:{port}");
        // The schema, once, under a lock: concurrent `CREATE … IF NOT
        // EXISTS` of one table can fail.
        let (client, _) = within(&endpoint, deadline, async {
            let (client, connection) = pg.connect(NoTls).await?;
            tokio::spawn(connection);
            let schema = SCHEMA.replace("__NS__", ns);
            client
                .batch_execute(&format!(
                    "BEGIN; SELECT pg_advisory_xact_lock(hashtext('kvstash:{ns}')); {schema} COMMIT;"
                ))
                .await?;
            Ok::<_, tokio_postgres::Error>((client, ()))
        })
        .await?;
        drop(client);
        let backend = Arc::new(Self {
            config: pg,
            namespace: ns.clone(),
            endpoint,
            retention: to_i64(config.retention),
            deadline,
            pool: (0..config.connections).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
        });
        let current = backend.current_version().await?;
        backend.commits.send_replace(current);
        tokio::spawn(listen(
            backend.config.clone(),
            format!("{ns}_commits"),
            Arc::downgrade(&backend.commits),
        ));
        Ok(backend)
    }

    /// A live connection, in turn; a broken one is replaced.
    /// A live connection, in turn, with its slot; a broken one is replaced.
    async fn connection(&self) -> Result<(usize, Arc<Connection>), BackendError> {
        let at = self.next.fetch_add(1, Ordering::Relaxed) % self.pool.len();
        let current = self.pool[at]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(connection) = current
            && !connection.client.is_closed()
        {
            return Ok((at, connection));
        }
        let (client, prepared) = within(
            &self.endpoint,
            self.deadline,
            connect(&self.config, &self.namespace),
        )
        .await?;
        let connection = Arc::new(Connection { client, prepared });
        *self.pool[at].lock().unwrap_or_else(|p| p.into_inner()) = Some(connection.clone());
        Ok((at, connection))
    }

    async fn query(
        &self,
        statement: impl Fn(&Prepared) -> &Statement,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, BackendError> {
        let (at, connection) = self.connection().await?;
        let call = connection
            .client
            .query(statement(&connection.prepared), params);
        match tokio::time::timeout(self.deadline, call).await {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(BackendError::Unavailable(format!(
                "{} is unavailable: {}",
                self.endpoint,
                with_causes(&e)
            ))),
            Err(_) => {
                // Whatever holds this connection up (a lost network, a
                // statement stuck on the server) would hold up every later
                // call on it too: the next call gets a new one.
                let mut slot = self.pool[at].lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, &connection)) {
                    *slot = None;
                }
                Err(BackendError::Unavailable(format!(
                    "{} is unavailable: no answer within {} ms",
                    self.endpoint,
                    self.deadline.as_millis()
                )))
            }
        }
    }

    fn committed(&self, version: u64) {
        advance(&self.commits, version);
    }
}

fn entry(row: &tokio_postgres::Row, key: Vec<u8>, at: usize) -> Result<Entry, BackendError> {
    let bad = |e: tokio_postgres::Error| BackendError::Unavailable(format!("postgres: {e}"));
    Ok(Entry {
        key,
        value: row.try_get(at).map_err(bad)?,
        version: version_of(row.try_get(at + 1).map_err(bad)?)?,
    })
}

fn column<'a, T: tokio_postgres::types::FromSql<'a>>(
    row: &'a tokio_postgres::Row,
    at: usize,
) -> Result<T, BackendError> {
    row.try_get(at)
        .map_err(|e| BackendError::Unavailable(format!("postgres: {e}")))
}

/// Follows `LISTEN channel`, so watchers here wake on other hosts'
/// commits; reconnects until the backend is dropped.
async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    commits: Weak<tokio::sync::watch::Sender<u64>>,
) {
    use futures::StreamExt;
    loop {
        if let Ok((client, mut connection)) = config.connect(NoTls).await {
            let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
            // The LISTEN's answer arrives through the connection polled below.
            let listen = format!("LISTEN {channel}");
            let listening = client.batch_execute(&listen);
            tokio::pin!(listening);
            let mut listened = false;
            loop {
                tokio::select! {
                    done = &mut listening, if !listened => {
                        if done.is_err() { break; }
                        listened = true;
                    }
                    message = tokio::time::timeout(Duration::from_secs(1), messages.next()) => {
                        let Some(sender) = commits.upgrade() else { return };
                        match message {
                            Ok(Some(Ok(tokio_postgres::AsyncMessage::Notification(n)))) => {
                                if let Ok(version) = n.payload().parse::<u64>() {
                                    advance(&sender, version);
                                }
                            }
                            Ok(Some(Ok(_))) | Err(_) => {}
                            Ok(Some(Err(_)) | None) => break,
                        }
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
impl Backend for PostgresBackend {
    fn summary(&self) -> String {
        format!("{} (tables {}_*)", self.endpoint, self.namespace)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let rows = self.query(|p| &p.get, &[&key]).await?;
        rows.first()
            .map(|row| entry(row, key.to_vec(), 0))
            .transpose()
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self.query(|p| &p.get_many, &[&keys]).await?;
        let mut found: HashMap<Vec<u8>, Entry> = HashMap::with_capacity(rows.len());
        for row in &rows {
            let key: Vec<u8> = column(row, 0)?;
            found.insert(key.clone(), entry(row, key, 1)?);
        }
        Ok(keys.iter().map(|k| found.get(k).cloned()).collect())
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        let limit = scan.clamped_limit();
        if scan.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let which = usize::from(scan.reverse) * 2 + usize::from(scan.end.is_some());
        let limit = i64::try_from(limit).unwrap_or(i64::from(MAX_SCAN));
        let rows = self
            .query(|p| &p.scan[which], &[&scan.start, &scan.end, &limit])
            .await?;
        rows.iter()
            .map(|row| entry(row, column(row, 0)?, 1))
            .collect()
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let writes = last_write_wins(writes);
        let check_keys: Vec<&[u8]> = checks.iter().map(Check::key).collect();
        let check_versions: Vec<Option<i64>> =
            checks.iter().map(|c| c.expected().map(to_i64)).collect();
        let write_keys: Vec<&[u8]> = writes.iter().map(|w| w.key.as_slice()).collect();
        let write_values: Vec<Option<&[u8]>> = writes.iter().map(|w| w.value.as_deref()).collect();
        let rows = self
            .query(
                |p| &p.commit,
                &[
                    &check_keys,
                    &check_versions,
                    &write_keys,
                    &write_values,
                    &self.retention,
                ],
            )
            .await
            .map_err(maybe_applied)?;
        let row = rows
            .first()
            .ok_or_else(|| BackendError::Unavailable("postgres: commit returned nothing".into()))?;
        if column::<bool>(row, 0)? {
            let version = version_of(column(row, 3)?)?;
            self.committed(version);
            Ok(version)
        } else {
            let index = u32::try_from(column::<i32>(row, 1)?).unwrap_or(u32::MAX);
            let current = column::<Option<i64>>(row, 2)?.map(version_of).transpose()?;
            Err(BackendError::Conflict { index, current })
        }
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        let rows = self.query(|p| &p.version, &[]).await?;
        let row = rows
            .first()
            .ok_or_else(|| BackendError::Unavailable("postgres: the head row is missing".into()))?;
        version_of(column(row, 0)?)
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let rows = self
            .query(
                |p| &p.changes,
                &[&to_i64(since), &i64::from(limit.min(MAX_SCAN))],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Err(BackendError::Unavailable(
                "postgres: the head row is missing".into(),
            ));
        };
        let oldest = version_of(column(first, 0)?)?;
        if since.saturating_add(1) < oldest {
            return Err(BackendError::Compacted { oldest });
        }
        let mut log = Vec::with_capacity(rows.len());
        for row in &rows {
            let Some(version) = column::<Option<i64>>(row, 1)? else {
                continue;
            };
            log.push(Change {
                version: version_of(version)?,
                key: column(row, 2)?,
                value: column(row, 3)?,
            });
        }
        Ok(take_changes(log.into_iter(), limit))
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
