//! The Redis backend: one store in five Redis keys, written only by Lua
//! scripts.
//!
//! Keys, all with the hash tag `{namespace}` so they share a cluster slot:
//! - `{ns}:h` — the store's version, a counter (`INCR`)
//! - `{ns}:d` — a hash: storage key → `"<version>:"` followed by the value
//! - `{ns}:i` — a sorted set of the keys, every score 0, for ordered scans
//!   (`ZRANGE … BYLEX`; versions are never scores: those are doubles)
//! - `{ns}:c` — a stream, the change feed: a commit `v` is the entries
//!   `v-0`, `v-1`, … (1,000 writes each), fields `key` → `p<value>` or `d`
//! - `{ns}:t` — the oldest version the feed still holds, once trimmed
//!
//! **Commits.** Redis runs a script atomically but has no rollback: a
//! script that fails after its first write keeps its writes. So the commit
//! script evaluates every check, then does nothing that can fail but the
//! writes: `INCR` of the version, the writes, the feed entries, the trim,
//! and a `PUBLISH` of the version (how other hosts learn of the commit).
//! Redis's `EXEC` is never used: an aborted `EXEC` reads as an empty
//! answer, which clients easily mistake for success.
//!
//! **Durability** is Redis's: with `appendonly yes` and `appendfsync
//! always` an acknowledged commit is on the node's disk; replication is
//! asynchronous, so a failover can lose acknowledged commits. Redis must
//! not evict kvstash's keys (`maxmemory-policy noeviction`, the default);
//! a commit script refuses to run if the version counter fell behind the
//! feed.
//!
//! **Connections.** One `ConnectionManager` (multiplexed, reconnecting in
//! the background) for commands, and one pub/sub connection, re-established
//! in a loop, that feeds [`Backend::commits`]. A call that does not finish
//! within the deadline fails with `unavailable`; a commit whose answer was
//! lost may have applied (the error says so).

use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use redis::Value;
use redis::aio::ConnectionManager;
use serde::Deserialize;

use super::remote::{Deadline, advance, last_write_wins, maybe_applied, within};
use super::{
    Backend, BackendError, Change, Check, DEFAULT_RETENTION, Entry, Scan, Write, take_changes,
    validate_commit, validate_get_many, validate_key, validate_scan,
};

/// The `redis` backend's configuration.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RedisConfig {
    #[allow(dead_code)] // checked by the registry; named here so it is not "unknown"
    r#type: String,
    /// `redis://[user:password@]host:port[/db]`.
    url: String,
    /// Names this store's keys (`{namespace}:…`); stores with different
    /// namespaces share a server without meeting.
    #[serde(default = "default_namespace")]
    namespace: String,
    /// Commits whose changes the change feed keeps.
    #[serde(default = "default_retention")]
    retention: u64,
    #[serde(flatten)]
    deadline: Deadline,
}

fn default_namespace() -> String {
    "kvstash".into()
}

fn default_retention() -> u64 {
    DEFAULT_RETENTION
}

/// Writes per feed entry: the commit script unpacks one entry's fields at
/// once, and Lua's `unpack` fails above about 8,000 values.
const WRITES_PER_ENTRY: usize = 1_000;

/// Checks every check, then writes. KEYS: h d i c t. ARGV: retention,
/// channel, writes per feed entry, number of checks, (key, expected
/// version or "" for absent)…, number of writes, (key, "p" or "d", value)…
const COMMIT: &str = r#"
local a = 5
for i = 1, tonumber(ARGV[4]) do
  local cur = redis.call('HGET', KEYS[2], ARGV[a])
  local ver = ''
  if cur then ver = string.sub(cur, 1, string.find(cur, ':', 1, true) - 1) end
  if ver ~= ARGV[a + 1] then return {0, i - 1, ver} end
  a = a + 2
end
local n = tonumber(ARGV[a])
a = a + 1
-- XADD refuses an id at or below the stream's last one, and would fail
-- after the writes: a counter behind the feed (lost, evicted) stops here.
local last = redis.call('XREVRANGE', KEYS[4], '+', '-', 'COUNT', 1)
if last[1] then
  local top = tonumber(string.match(last[1][1], '^(%d+)-'))
  if top >= tonumber(redis.call('GET', KEYS[1]) or '0') + 1 then
    return redis.error_reply('the version counter ' .. KEYS[1] .. ' is behind the change feed (was it evicted? kvstash needs maxmemory-policy noeviction)')
  end
end
local version = redis.call('INCR', KEYS[1])
local v = string.format('%d', version)
local head = v .. ':'
local fields = {}
local part = 0
for i = 1, n do
  local key, op = ARGV[a], ARGV[a + 1]
  if op == 'p' then
    redis.call('HSET', KEYS[2], key, head .. ARGV[a + 2])
    redis.call('ZADD', KEYS[3], 0, key)
    fields[#fields + 1] = key
    fields[#fields + 1] = 'p' .. ARGV[a + 2]
  else
    redis.call('HDEL', KEYS[2], key)
    redis.call('ZREM', KEYS[3], key)
    fields[#fields + 1] = key
    fields[#fields + 1] = 'd'
  end
  a = a + 3
  if #fields >= 2 * tonumber(ARGV[3]) then
    redis.call('XADD', KEYS[4], v .. '-' .. part, unpack(fields))
    part = part + 1
    fields = {}
  end
end
if part == 0 and #fields == 0 then fields = {'', 'n'} end
if #fields > 0 then redis.call('XADD', KEYS[4], v .. '-' .. part, unpack(fields)) end
local retention = tonumber(ARGV[1])
if version > retention then
  local oldest = string.format('%d', version - retention + 1)
  redis.call('XTRIM', KEYS[4], 'MINID', oldest .. '-0')
  redis.call('SET', KEYS[5], oldest)
end
redis.call('PUBLISH', ARGV[2], v)
return {1, version}
"#;

/// KEYS: i d. ARGV: min, max, limit, "1" for reverse. Returns keys and
/// their stored values, from one moment.
const SCAN: &str = r#"
local keys
if ARGV[4] == '1' then
  keys = redis.call('ZRANGE', KEYS[1], ARGV[2], ARGV[1], 'BYLEX', 'REV', 'LIMIT', 0, ARGV[3])
else
  keys = redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[2], 'BYLEX', 'LIMIT', 0, ARGV[3])
end
local values = {}
for i = 1, #keys, 1000 do
  local part = redis.call('HMGET', KEYS[2], unpack(keys, i, math.min(i + 999, #keys)))
  for j = 1, #part do values[#values + 1] = part[j] end
end
return {keys, values}
"#;

/// KEYS: t c. ARGV: first stream id (inclusive, or "(" exclusive), count.
/// Returns the oldest retained version with the entries, from one moment.
const FEED: &str = r#"
return {redis.call('GET', KEYS[1]) or '0', redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', ARGV[2])}
"#;

#[derive(Debug)]
struct Keys {
    head: String,
    data: String,
    index: String,
    feed: String,
    trimmed: String,
    channel: String,
}

pub struct RedisBackend {
    con: ConnectionManager,
    endpoint: String,
    keys: Keys,
    retention: u64,
    deadline: Duration,
    commit: redis::Script,
    scan: redis::Script,
    feed: redis::Script,
    commits: Arc<tokio::sync::watch::Sender<u64>>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("endpoint", &self.endpoint)
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

fn invalid(why: impl std::fmt::Display) -> BackendError {
    BackendError::Invalid(format!("redis backend configuration: {why}"))
}

/// A stored record: `"<version>:"` then the value.
fn decode(key: &[u8], stored: &[u8]) -> Result<Entry, BackendError> {
    let corrupt = || {
        BackendError::Unavailable(format!(
            "redis: corrupt record for key {:?}",
            String::from_utf8_lossy(key)
        ))
    };
    let colon = stored.iter().position(|&b| b == b':').ok_or_else(corrupt)?;
    let version = std::str::from_utf8(&stored[..colon])
        .ok()
        .and_then(|v| v.parse().ok())
        .ok_or_else(corrupt)?;
    Ok(Entry {
        key: key.to_vec(),
        value: stored[colon + 1..].to_vec(),
        version,
    })
}

// `Value` has many cases (RESP3) and more may come: only these are data.
#[allow(clippy::wildcard_enum_match_arm)]
fn bytes(value: Value) -> Option<Vec<u8>> {
    match value {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.into_bytes()),
        Value::Int(i) => Some(i.to_string().into_bytes()),
        _ => None,
    }
}

#[allow(clippy::wildcard_enum_match_arm)]
fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

#[allow(clippy::wildcard_enum_match_arm)]
fn array(value: Value) -> Result<Vec<Value>, BackendError> {
    match value {
        Value::Array(items) => Ok(items),
        other => Err(BackendError::Unavailable(format!(
            "redis: unexpected answer {other:?}"
        ))),
    }
}

fn unexpected(what: &str) -> BackendError {
    BackendError::Unavailable(format!("redis: unexpected answer to {what}"))
}

impl RedisBackend {
    /// Checks a configuration without connecting.
    pub fn check(config: serde_json::Value) -> Result<(), BackendError> {
        Self::parse(config).map(drop)
    }

    fn parse(config: serde_json::Value) -> Result<(RedisConfig, redis::Client), BackendError> {
        let config: RedisConfig = serde_json::from_value(config).map_err(invalid)?;
        config.deadline.validate("redis")?;
        if config.namespace.is_empty()
            || config.namespace.len() > 256
            || config.namespace.contains(['{', '}'])
        {
            return Err(invalid(
                "`namespace` must be 1-256 bytes without `{` or `}`",
            ));
        }
        if config.retention == 0 {
            return Err(invalid("`retention` must be at least 1"));
        }
        // Parses the URL; connects nothing.
        let client = redis::Client::open(config.url.as_str()).map_err(invalid)?;
        Ok((config, client))
    }

    pub async fn open(config: serde_json::Value) -> Result<Arc<dyn Backend>, BackendError> {
        let (config, client) = Self::parse(config)?;
        let endpoint = format!("redis {}", client.get_connection_info().addr());
        let deadline = config.deadline.duration();
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(deadline))
            .set_response_timeout(Some(deadline))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_secs(1));
        let con = within(
            &endpoint,
            deadline,
            client.get_connection_manager_with_config(manager),
        )
        .await?;
        let ns = &config.namespace;
        let keys = Keys {
            head: format!("{{{ns}}}:h"),
            data: format!("{{{ns}}}:d"),
            index: format!("{{{ns}}}:i"),
            feed: format!("{{{ns}}}:c"),
            trimmed: format!("{{{ns}}}:t"),
            channel: format!("kvstash:{ns}:commits"),
        };
        let backend = Arc::new(Self {
            con,
            endpoint,
            keys,
            retention: config.retention,
            deadline,
            commit: redis::Script::new(COMMIT),
            scan: redis::Script::new(SCAN),
            feed: redis::Script::new(FEED),
            commits: Arc::new(tokio::sync::watch::Sender::new(0)),
        });
        let current = backend.current_version().await?;
        backend.commits.send_replace(current);
        tokio::spawn(listen(
            client,
            backend.keys.channel.clone(),
            Arc::downgrade(&backend.commits),
        ));
        Ok(backend)
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, BackendError> {
        within(&self.endpoint, self.deadline, call).await
    }

    /// Notes a commit for watchers in this process (versions only grow).
    fn committed(&self, version: u64) {
        advance(&self.commits, version);
    }

    fn entries(keys: Vec<Value>, values: Vec<Value>) -> Result<Vec<Entry>, BackendError> {
        keys.into_iter()
            .zip(values)
            .filter_map(|(key, value)| {
                let key = bytes(key)?;
                // A key indexed but not stored cannot happen (one script
                // writes both); skip rather than invent a record.
                let value = bytes(value)?;
                Some(decode(&key, &value))
            })
            .collect()
    }
}

/// Follows the commit channel, so watchers here wake on other hosts'
/// commits; reconnects until the backend is dropped.
async fn listen(
    client: redis::Client,
    channel: String,
    commits: Weak<tokio::sync::watch::Sender<u64>>,
) {
    loop {
        if let Ok(mut pubsub) = client.get_async_pubsub().await
            && pubsub.subscribe(&channel).await.is_ok()
        {
            let mut messages = pubsub.on_message();
            loop {
                let next = tokio::time::timeout(Duration::from_secs(1), messages.next()).await;
                let Some(sender) = commits.upgrade() else {
                    return;
                };
                match next {
                    Ok(Some(message)) => {
                        let version: Option<u64> = message
                            .get_payload::<String>()
                            .ok()
                            .and_then(|v| v.parse().ok());
                        if let Some(version) = version {
                            advance(&sender, version);
                        }
                    }
                    Ok(None) => break,
                    Err(_) => continue,
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
impl Backend for RedisBackend {
    fn summary(&self) -> String {
        format!("{} (keys {{…}}:{})", self.endpoint, self.keys.head)
    }

    async fn get(&self, key: &[u8]) -> Result<Option<Entry>, BackendError> {
        validate_key(key)?;
        let mut con = self.con.clone();
        let stored: Option<Vec<u8>> = self
            .call(
                redis::cmd("HGET")
                    .arg(&self.keys.data)
                    .arg(key)
                    .query_async(&mut con),
            )
            .await?;
        stored.map(|s| decode(key, &s)).transpose()
    }

    async fn get_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Entry>>, BackendError> {
        validate_get_many(keys)?;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = self.con.clone();
        let stored: Vec<Option<Vec<u8>>> = self
            .call(
                redis::cmd("HMGET")
                    .arg(&self.keys.data)
                    .arg(keys)
                    .query_async(&mut con),
            )
            .await?;
        if stored.len() != keys.len() {
            return Err(unexpected("HMGET"));
        }
        keys.iter()
            .zip(stored)
            .map(|(key, s)| s.map(|s| decode(key, &s)).transpose())
            .collect()
    }

    async fn scan(&self, scan: &Scan) -> Result<Vec<Entry>, BackendError> {
        validate_scan(scan)?;
        let limit = scan.clamped_limit();
        if scan.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut min = b"[".to_vec();
        min.extend_from_slice(&scan.start);
        let max = match &scan.end {
            Some(end) => {
                let mut max = b"(".to_vec();
                max.extend_from_slice(end);
                max
            }
            None => b"+".to_vec(),
        };
        let mut con = self.con.clone();
        let answer: Value = self
            .call(
                self.scan
                    .key(&self.keys.index)
                    .key(&self.keys.data)
                    .arg(min)
                    .arg(max)
                    .arg(limit)
                    .arg(if scan.reverse { "1" } else { "0" })
                    .invoke_async(&mut con),
            )
            .await?;
        let mut parts = array(answer)?.into_iter();
        let (Some(keys), Some(values)) = (parts.next(), parts.next()) else {
            return Err(unexpected("the scan script"));
        };
        Self::entries(array(keys)?, array(values)?)
    }

    async fn commit(&self, checks: Vec<Check>, writes: Vec<Write>) -> Result<u64, BackendError> {
        validate_commit(&checks, &writes)?;
        let writes = last_write_wins(writes);
        let mut con = self.con.clone();
        let mut invocation = self.commit.prepare_invoke();
        invocation
            .key(&self.keys.head)
            .key(&self.keys.data)
            .key(&self.keys.index)
            .key(&self.keys.feed)
            .key(&self.keys.trimmed)
            .arg(self.retention)
            .arg(&self.keys.channel)
            .arg(WRITES_PER_ENTRY)
            .arg(checks.len());
        for check in &checks {
            let expected = check.expected().map(|v| v.to_string()).unwrap_or_default();
            invocation.arg(check.key()).arg(expected);
        }
        invocation.arg(writes.len());
        for write in &writes {
            match &write.value {
                Some(value) => invocation.arg(&write.key).arg("p").arg(value.as_slice()),
                None => invocation.arg(&write.key).arg("d").arg(""),
            };
        }
        let answer: Value = within(
            &self.endpoint,
            self.deadline,
            invocation.invoke_async(&mut con),
        )
        .await
        .map_err(maybe_applied)?;
        let parts = array(answer)?;
        match parts.as_slice() {
            [Value::Int(1), version] => {
                let version = int(version).ok_or_else(|| unexpected("the commit script"))?;
                self.committed(version);
                Ok(version)
            }
            [Value::Int(0), index, current] => {
                let index = int(index)
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| unexpected("the commit script"))?;
                Err(BackendError::Conflict {
                    index,
                    current: int(current),
                })
            }
            _ => Err(unexpected("the commit script")),
        }
    }

    async fn current_version(&self) -> Result<u64, BackendError> {
        let mut con = self.con.clone();
        let version: Option<u64> = self
            .call(redis::cmd("GET").arg(&self.keys.head).query_async(&mut con))
            .await?;
        Ok(version.unwrap_or(0))
    }

    async fn changes(&self, since: u64, limit: u32) -> Result<Vec<Change>, BackendError> {
        let want = usize::try_from(limit.min(super::MAX_SCAN)).unwrap_or(0);
        let mut out: Vec<Change> = Vec::new();
        let mut from = format!("{}-0", since.saturating_add(1));
        loop {
            let mut con = self.con.clone();
            let answer: Value = self
                .call(
                    self.feed
                        .key(&self.keys.trimmed)
                        .key(&self.keys.feed)
                        .arg(&from)
                        .arg(256)
                        .invoke_async(&mut con),
                )
                .await?;
            let mut parts = array(answer)?.into_iter();
            let (Some(oldest), Some(entries)) = (parts.next(), parts.next()) else {
                return Err(unexpected("the feed script"));
            };
            let oldest = int(&oldest).ok_or_else(|| unexpected("the feed script"))?;
            // Every version after `since` must still be there, including the
            // ones the earlier pages of this call read past.
            if since.saturating_add(1) < oldest {
                return Err(BackendError::Compacted { oldest });
            }
            let entries = array(entries)?;
            let fetched = entries.len();
            let mut last_id = None;
            for entry in entries {
                let mut entry = array(entry)?.into_iter();
                let (Some(id), Some(fields)) = (entry.next(), entry.next()) else {
                    return Err(unexpected("XRANGE"));
                };
                let id = bytes(id).ok_or_else(|| unexpected("XRANGE"))?;
                let id = String::from_utf8(id).map_err(|_| unexpected("XRANGE"))?;
                let version: u64 = id
                    .split('-')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| unexpected("XRANGE"))?;
                // A commit boundary past the limit: done.
                if out.len() >= want && out.last().is_some_and(|c| c.version != version) {
                    return Ok(out);
                }
                let fields = if let Value::Map(pairs) = fields {
                    pairs.into_iter().flat_map(|(k, v)| [k, v]).collect()
                } else {
                    array(fields)?
                };
                let mut fields = fields.into_iter();
                while let (Some(key), Some(op)) = (fields.next(), fields.next()) {
                    let key = bytes(key).ok_or_else(|| unexpected("XRANGE"))?;
                    let op = bytes(op).ok_or_else(|| unexpected("XRANGE"))?;
                    let value = match op.split_first() {
                        Some((b'p', value)) => Some(value.to_vec()),
                        Some((b'd', _)) => None,
                        // A commit with checks only: a version, no write.
                        _ => continue,
                    };
                    out.push(Change {
                        version,
                        key,
                        value,
                    });
                }
                last_id = Some(id);
            }
            match last_id {
                Some(id) if fetched == 256 => from = format!("({id}"),
                _ => return Ok(take_changes(out.into_iter(), limit)),
            }
        }
    }

    fn commits(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.commits.subscribe())
    }
}
