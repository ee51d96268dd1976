//! `kvstash-bench-serve`: `kvstash serve` under load on loopback, against
//! the embedded API on the same store, in the same run (`just bench` runs
//! it; `just bench-serve` alone).
//!
//! One file store of 10,000 keys is served on 127.0.0.1; 1, 16 and 64
//! clients, each on its own keep-alive connection, then run random gets
//! and durable puts, and the same number of tasks do the same through the
//! embedded `Store`; and through a remote `Store` (the `server` backend:
//! the component runs in the client and reaches the server's records over
//! `/v1/storage`). Throughput and p50/p99 latency of each, and the ratios
//! of HTTP and of the remote `Store` to embedded throughput. Writes
//! `bench/results/serve.md` and `serve.json`.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const KEYS: usize = 10_000;
const CLIENTS: [usize; 3] = [1, 16, 64];
/// Operations per measurement, shared among the clients.
const GETS: usize = 20_000;
const PUTS: usize = 1_500;
/// Each figure is the median of this many runs, alternating HTTP and embedded.
const ROUNDS: usize = 3;

/// The run with the median throughput.
fn median(mut runs: Vec<Figures>) -> Figures {
    runs.sort_by(|a, b| a.ops_per_s.total_cmp(&b.ops_per_s));
    runs[runs.len() / 2]
}

/// One keep-alive HTTP/1.1 connection (the server answers with a
/// Content-Length, so no chunked bodies).
struct Connection {
    stream: tokio::net::TcpStream,
    buffer: Vec<u8>,
}

impl Connection {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Self> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(4096),
        })
    }

    /// The status of one request, its body read and dropped.
    async fn request(&mut self, method: &str, path: &str, body: &str) -> anyhow::Result<u16> {
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.stream.write_all(head.as_bytes()).await?;
        self.stream.write_all(body.as_bytes()).await?;
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = std::str::from_utf8(&self.buffer[..end])?.to_ascii_lowercase();
                let status: u16 = head.split(' ').nth(1).context("a status line")?.parse()?;
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .context("a Content-Length")?
                    .trim()
                    .parse()?;
                let total = end + 4 + length;
                while self.buffer.len() < total {
                    self.fill().await?;
                }
                self.buffer.drain(..total);
                return Ok(status);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> anyhow::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk).await?;
        if n == 0 {
            bail!("the server closed the connection");
        }
        self.buffer.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

/// Throughput and latency of one measurement.
#[derive(Clone, Copy, Debug, serde::Serialize)]
struct Figures {
    ops_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn figures(mut latencies: Vec<Duration>, elapsed: Duration) -> Figures {
    latencies.sort();
    let at = |q: f64| {
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };
    Figures {
        ops_per_s: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
    }
}

/// A cheap deterministic spread of key numbers per client.
fn pick(client: usize, i: usize) -> usize {
    (client * 7919 + i * 104_729) % KEYS
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Get,
    Put,
}

async fn over_http(addr: std::net::SocketAddr, clients: usize, op: Op) -> anyhow::Result<Figures> {
    let total = if op == Op::Get { GETS } else { PUTS };
    let per_client = total.div_ceil(clients);
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(Connection::open(addr).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .enumerate()
        .map(|(c, mut conn)| {
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let key = kvstash::bench::key(pick(c, i));
                    let path = format!("/v1/buckets/bench/keys/{key}");
                    let began = Instant::now();
                    let status = match op {
                        Op::Get => conn.request("GET", &path, "").await?,
                        Op::Put => {
                            let value = kvstash::bench::value(i);
                            conn.request("PUT", &path, &value).await?
                        }
                    };
                    if status != 200 {
                        bail!("{path}: {status}");
                    }
                    latencies.push(began.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(figures(all, started.elapsed()))
}

async fn embedded(store: &kvstash::Store, clients: usize, op: Op) -> anyhow::Result<Figures> {
    let total = if op == Op::Get { GETS } else { PUTS };
    let per_client = total.div_ceil(clients);
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let bucket = store.bucket("bench");
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let key = kvstash::bench::key(pick(c, i));
                    let began = Instant::now();
                    match op {
                        Op::Get => {
                            bucket.get(&key).await?.context("a preloaded key")?;
                        }
                        Op::Put => {
                            bucket
                                .set_json_text(&key, &kvstash::bench::value(i))
                                .await?;
                        }
                    }
                    latencies.push(began.elapsed());
                }
                anyhow::Ok(latencies)
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await??);
    }
    Ok(figures(all, started.elapsed()))
}

#[derive(serde::Serialize)]
struct Row {
    clients: usize,
    op: &'static str,
    http: Figures,
    embedded: Figures,
    remote: Figures,
    ratio: f64,
    remote_ratio: f64,
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config =
        serde_json::json!({"type": "file", "path": dir.path().join("serve.redb")}).to_string();
    // The server on a runtime of its own (as `kvstash serve` runs), the
    // clients on another; both share this machine's cores.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let clients_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let store = server_runtime.block_on(kvstash::Store::open(&config))?;
    let pairs: Vec<(String, String)> = (0..KEYS)
        .map(|i| (kvstash::bench::key(i), kvstash::bench::value(i)))
        .collect();
    server_runtime.block_on(async {
        for chunk in pairs.chunks(1000) {
            store.bucket("bench").set_many(chunk).await?;
        }
        anyhow::Ok(())
    })?;
    let listener = server_runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = store.clone();
    let server = server_runtime.spawn(async move {
        kvstash::serve::serve(
            served,
            listener,
            kvstash::serve::ServeOptions::default(),
            async {
                let _ = stopped.await;
            },
        )
        .await
    });

    let remote_config = serde_json::json!({"type": "server", "url": format!("http://{addr}")});
    let remote = clients_runtime.block_on(kvstash::Store::open(&remote_config.to_string()))?;

    let mut rows = Vec::new();
    for clients in CLIENTS {
        for (op, name) in [(Op::Get, "get"), (Op::Put, "durable put")] {
            let (mut https, mut embeddeds, mut remotes) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                https.push(clients_runtime.block_on(over_http(addr, clients, op))?);
                embeddeds.push(clients_runtime.block_on(embedded(&store, clients, op))?);
                remotes.push(clients_runtime.block_on(embedded(&remote, clients, op))?);
            }
            let (http, embedded, remote) = (median(https), median(embeddeds), median(remotes));
            eprintln!(
                "{clients:>2} clients, {name}: HTTP {:.0}/s, embedded {:.0}/s, remote Store {:.0}/s",
                http.ops_per_s, embedded.ops_per_s, remote.ops_per_s
            );
            rows.push(Row {
                clients,
                op: name,
                ratio: http.ops_per_s / embedded.ops_per_s,
                remote_ratio: remote.ops_per_s / embedded.ops_per_s,
                http,
                embedded,
                remote,
            });
        }
    }
    drop(remote);
    let _ = stop.send(());
    server_runtime.block_on(server)??;

    let mut md = String::from(
        "# `kvstash serve` under load (`just bench-serve`)\n\n\
         A 10,000-key file store served on 127.0.0.1 (HTTP/1.1, one keep-alive connection per client, no TLS, no tokens), \
         against the embedded `Store` with as many tasks, in the same run. Server and clients share this machine's 2 cores. \
         Gets read random preloaded keys; each durable put is its own acknowledged commit (concurrent ones share fsyncs). \
         \"Remote Store\" is `Store::open({\"type\":\"server\",…})` in the client process, as many tasks: the component runs there and reaches the server's records over `/v1/storage` (a get, and a put, is one storage call: one HTTP round trip). Medians of 3 alternating runs.\n\n\
         | clients | operation | HTTP ops/s | p50 | p99 | embedded ops/s | p50 | p99 | HTTP / embedded | remote Store ops/s | p50 | p99 | remote / embedded |\n\
         |---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} | {:.3} ms | {:.3} ms | {:.2}x | {:.0} | {:.2} ms | {:.2} ms | {:.2}x |",
            r.clients,
            r.op,
            r.http.ops_per_s,
            r.http.p50_ms,
            r.http.p99_ms,
            r.embedded.ops_per_s,
            r.embedded.p50_ms,
            r.embedded.p99_ms,
            r.ratio,
            r.remote.ops_per_s,
            r.remote.p50_ms,
            r.remote.p99_ms,
            r.remote_ratio
        );
    }
    let results = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    std::fs::write(results.join("serve.md"), &md)?;
    std::fs::write(
        results.join("serve.json"),
        serde_json::to_string_pretty(&rows)? + "\n",
    )?;
    print!("{md}");
    eprintln!("wrote bench/results/serve.md and serve.json");
    Ok(())
}
