//! `/metrics`: Prometheus' text exposition format (0.0.4).
//!
//! Requests are counted by route template (`/v1/buckets/{bucket}/keys/{key}`),
//! never by raw path, so label values stay few whatever keys clients use.
//! The store's own counters (storage calls and failures, commits and the
//! appends that carried them) are read when scraped.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

use crate::api::Store;

/// Upper bounds of the latency histogram, in seconds.
const LATENCY_BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Latency {
    /// Per bound, not cumulative; the last slot is above every bound.
    buckets: [u64; LATENCY_BOUNDS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Counts {
    /// (route, method, status) → requests.
    requests: BTreeMap<(String, String, u16), u64>,
    /// (route, method) → latency.
    latency: BTreeMap<(String, String), Latency>,
    /// Error code → answers with it.
    errors: BTreeMap<String, u64>,
}

/// The server's counters, and the store whose counters it reports.
pub struct Metrics {
    store: Store,
    counts: Mutex<Counts>,
}

impl Metrics {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            counts: Mutex::new(Counts::default()),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one answered request.
    pub fn request(
        &self,
        route: &str,
        method: &str,
        status: u16,
        error: Option<&str>,
        took: Duration,
    ) {
        let seconds = took.as_secs_f64();
        let mut counts = self.counts();
        *counts
            .requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default() += 1;
        let latency = counts
            .latency
            .entry((route.to_string(), method.to_string()))
            .or_default();
        let slot = LATENCY_BOUNDS
            .iter()
            .position(|&bound| seconds <= bound)
            .unwrap_or(LATENCY_BOUNDS.len());
        latency.buckets[slot] += 1;
        latency.sum += seconds;
        latency.count += 1;
        if let Some(code) = error {
            *counts.errors.entry(code.to_string()).or_default() += 1;
        }
    }

    /// Every metric, in the text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            let counts = self.counts();
            family(
                &mut out,
                "kvstash_http_requests_total",
                "counter",
                "HTTP requests answered, by route template, method and status.",
            );
            for ((route, method, status), n) in &counts.requests {
                let labels = labels(&[
                    ("route", route),
                    ("method", method),
                    ("status", &status.to_string()),
                ]);
                let _ = writeln!(out, "kvstash_http_requests_total{labels} {n}");
            }
            family(
                &mut out,
                "kvstash_http_request_duration_seconds",
                "histogram",
                "Time to answer a request (a watch: until its headers), by route template and method.",
            );
            for ((route, method), latency) in &counts.latency {
                let base = [("route", route.as_str()), ("method", method.as_str())];
                let mut cumulative = 0;
                for (i, n) in latency.buckets.iter().enumerate() {
                    cumulative += n;
                    let le = LATENCY_BOUNDS
                        .get(i)
                        .map_or_else(|| "+Inf".to_string(), |b| b.to_string());
                    let labels = labels(&[base[0], base[1], ("le", &le)]);
                    let _ = writeln!(
                        out,
                        "kvstash_http_request_duration_seconds_bucket{labels} {cumulative}"
                    );
                }
                let labels = labels(&base);
                let _ = writeln!(
                    out,
                    "kvstash_http_request_duration_seconds_sum{labels} {}",
                    latency.sum
                );
                let _ = writeln!(
                    out,
                    "kvstash_http_request_duration_seconds_count{labels} {}",
                    latency.count
                );
            }
            family(
                &mut out,
                "kvstash_errors_total",
                "counter",
                "Requests answered with an error, by its code (conflict, not-found, storage, ...).",
            );
            for (code, n) in &counts.errors {
                let _ = writeln!(out, "kvstash_errors_total{} {n}", labels(&[("code", code)]));
            }
        }
        let stats = self.store.stats();
        family(
            &mut out,
            "kvstash_storage_calls_total",
            "counter",
            "Calls of the store's storage backend, by operation.",
        );
        for (op, calls, _) in &stats.storage {
            let _ = writeln!(
                out,
                "kvstash_storage_calls_total{} {calls}",
                labels(&[("op", op)])
            );
        }
        family(
            &mut out,
            "kvstash_backend_errors_total",
            "counter",
            "Storage calls the backend failed (unavailable, or refusing the call), by operation.",
        );
        for (op, _, failures) in &stats.storage {
            let _ = writeln!(
                out,
                "kvstash_backend_errors_total{} {failures}",
                labels(&[("op", op)])
            );
        }
        family(
            &mut out,
            "kvstash_commit_batch_size",
            "histogram",
            "Commits per durable append (one fsync) of the file backend's log: group commit.",
        );
        for (backend, sync) in &stats.commits {
            let mut cumulative = 0;
            for (slot, n) in sync.groups.iter().enumerate() {
                cumulative += n;
                let le = if slot + 1 == sync.groups.len() {
                    "+Inf".to_string()
                } else {
                    (1u64 << slot).to_string()
                };
                let labels = labels(&[("backend", backend), ("le", &le)]);
                let _ = writeln!(out, "kvstash_commit_batch_size_bucket{labels} {cumulative}");
            }
            let labels = labels(&[("backend", backend)]);
            let _ = writeln!(
                out,
                "kvstash_commit_batch_size_sum{labels} {}",
                sync.acknowledged
            );
            // The slots' total, not `syncs`: the two are counted apart, and
            // a scrape between them must not show more appends than slots.
            let _ = writeln!(out, "kvstash_commit_batch_size_count{labels} {cumulative}");
        }
        family(
            &mut out,
            "kvstash_checkpoints_total",
            "counter",
            "Checkpoints that moved the file backend's log into its database.",
        );
        for (backend, sync) in &stats.commits {
            let _ = writeln!(
                out,
                "kvstash_checkpoints_total{} {}",
                labels(&[("backend", backend)]),
                sync.checkpoints
            );
        }
        out
    }
}

/// The caching layers' counters, by the layer's path (none without one).
/// Gauges, not counters: they are summed over the instances idle at the
/// scrape, so they may go down when one is busy or replaced.
pub fn render_caches(caches: &[crate::api::CacheStats]) -> String {
    let mut out = String::new();
    if caches.is_empty() {
        return out;
    }
    type Field = fn(&crate::api::CacheStats) -> u64;
    let families: [(&str, &str, &str, Field); 7] = [
        (
            "kvstash_cache_hits",
            "gauge",
            "Reads a caching layer answered from memory.",
            |c| c.hits,
        ),
        (
            "kvstash_cache_misses",
            "gauge",
            "Reads of cached buckets that went to the store.",
            |c| c.misses,
        ),
        (
            "kvstash_cache_evictions",
            "gauge",
            "Entries dropped to stay within the policy's limits.",
            |c| c.evictions,
        ),
        (
            "kvstash_cache_invalidations",
            "gauge",
            "Entries dropped because the store changed them.",
            |c| c.invalidations,
        ),
        (
            "kvstash_cache_syncs",
            "gauge",
            "Reads of the store's change feed that renewed the entries.",
            |c| c.syncs,
        ),
        (
            "kvstash_cache_entries",
            "gauge",
            "Entries a caching layer holds.",
            |c| c.entries,
        ),
        (
            "kvstash_cache_bytes",
            "gauge",
            "Bytes of keys and values a caching layer holds.",
            |c| c.bytes,
        ),
    ];
    for (name, kind, help, field) in families {
        family(&mut out, name, kind, help);
        for cache in caches {
            let _ = writeln!(
                out,
                "{name}{} {}",
                labels(&[("layer", &cache.layer)]),
                field(cache)
            );
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// `{a="x",b="y"}` with the values escaped as the format requires.
fn labels(pairs: &[(&str, &str)]) -> String {
    let mut out = String::from("{");
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        for c in value.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '"' => out.push_str("\\\""),
                '\n' => out.push_str("\\n"),
                c => out.push(c),
            }
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(
            labels(&[("a", "x\"y\\z\nw"), ("b", "1")]),
            r#"{a="x\"y\\z\nw",b="1"}"#
        );
    }
}
