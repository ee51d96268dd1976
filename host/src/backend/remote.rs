//! What the remote backends (etcd, Redis, PostgreSQL) share: a deadline on
//! every call, errors that name the endpoint, and commits reduced to what a
//! server-side transaction can take.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use serde::Deserialize;

use super::{BackendError, Write};

/// How long a call to a remote backend may take, unless configured.
pub const DEFAULT_TIMEOUT_MS: u64 = 5_000;

/// Options every remote backend takes.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Deadline {
    /// Most milliseconds one call (connecting included) may take before it
    /// fails with `unavailable`.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}

impl Default for Deadline {
    fn default() -> Self {
        Self {
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }
}

impl Deadline {
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.timeout_ms)
    }

    pub fn validate(&self, backend: &str) -> Result<(), BackendError> {
        if self.timeout_ms == 0 || self.timeout_ms > 3_600_000 {
            return Err(BackendError::Invalid(format!(
                "{backend} backend configuration: `timeout_ms` must be 1..=3600000"
            )));
        }
        Ok(())
    }
}

/// Runs `call` against `endpoint`, failing with `unavailable` (naming the
/// endpoint) if it takes longer than `deadline` or fails to reach it.
pub async fn within<T, E: std::error::Error>(
    endpoint: &str,
    deadline: Duration,
    call: impl Future<Output = Result<T, E>>,
) -> Result<T, BackendError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(BackendError::Unavailable(format!(
            "{endpoint} is unavailable: {}",
            with_causes(&e)
        ))),
        Err(_) => Err(BackendError::Unavailable(format!(
            "{endpoint} is unavailable: no answer within {} ms",
            deadline.as_millis()
        ))),
    }
}

/// Tells watchers of `commits` about `version`, if it is newer than the
/// one they know (commits of this process and of other hosts arrive in
/// any order; versions only grow).
pub fn advance(commits: &tokio::sync::watch::Sender<u64>, version: u64) {
    commits.send_if_modified(|seen| {
        let newer = version > *seen;
        if newer {
            *seen = version;
        }
        newer
    });
}

/// A commit that failed with `unavailable` may still have reached the
/// server and applied; the error says so.
pub fn maybe_applied(e: BackendError) -> BackendError {
    if let BackendError::Unavailable(why) = e {
        return BackendError::Unavailable(format!(
            "{why} (if the commit reached the server, it may have applied)"
        ));
    }
    e
}

/// An error and its causes, `: `-separated (client errors often say only
/// "db error" or "transport error" at the top).
pub fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let more = c.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = c.source();
    }
    text
}

/// The writes of a commit with one write per key: the last write of a key
/// wins, in the position of that last write (what applying them in order
/// leaves). Servers refuse a key twice in one transaction (etcd) or one
/// statement (PostgreSQL).
pub fn last_write_wins(writes: Vec<Write>) -> Vec<Write> {
    let mut last: HashMap<&[u8], usize> = HashMap::with_capacity(writes.len());
    for (i, write) in writes.iter().enumerate() {
        last.insert(&write.key, i);
    }
    if last.len() == writes.len() {
        return writes;
    }
    let keep: Vec<bool> = (0..writes.len())
        .map(|i| last.get(writes[i].key.as_slice()) == Some(&i))
        .collect();
    writes
        .into_iter()
        .zip(keep)
        .filter_map(|(write, keep)| keep.then_some(write))
        .collect()
}

/// The first key after every key that starts with `prefix` (etcd's
/// `range_end` for a prefix); `None` if there is none (all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn w(key: &str, value: Option<&str>) -> Write {
        Write {
            key: key.as_bytes().to_vec(),
            value: value.map(|v| v.as_bytes().to_vec()),
        }
    }

    #[test]
    fn the_last_write_of_a_key_wins_in_its_place() {
        let writes = vec![
            w("a", Some("1")),
            w("b", None),
            w("a", Some("2")),
            w("c", Some("3")),
        ];
        assert_eq!(
            last_write_wins(writes),
            vec![w("b", None), w("a", Some("2")), w("c", Some("3"))]
        );
        let unique = vec![w("x", Some("1")), w("y", None)];
        assert_eq!(last_write_wins(unique.clone()), unique);
    }

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
        assert_eq!(prefix_end(b""), None);
    }
}
