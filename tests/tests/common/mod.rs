//! Shared by the component integration tests (`mod common;` in each).

/// Runs `$body` with `$store` opened on each backend in turn: one test
/// module per use, with a test per backend. Needs `Store` and `json!` in
/// scope where it is used.
macro_rules! on_every_backend {
    ($name:ident, |$store:ident| $body:block) => {
        mod $name {
            use super::*;

            #[tokio::test]
            async fn memory() {
                let $store = Store::open(r#"{"type":"memory"}"#).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn file() {
                let dir = tempfile::tempdir().unwrap();
                let config = json!({"type": "file", "path": dir.path().join("s.redb")});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            // The caching layer in front of each kind of store: what the
            // component reads from its memory must mean what the store
            // holds (a long timeout, so a stale entry would show).
            #[tokio::test]
            async fn caching_memory() {
                let config = json!({"type": "caching", "main": {"type": "memory"},
                    "policy": {"timeout_ms": 60000}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn caching_file() {
                let dir = tempfile::tempdir().unwrap();
                let config = json!({"type": "caching",
                    "main": {"type": "file", "path": dir.path().join("s.redb")},
                    "policy": {"timeout_ms": 60000, "max_entries": 50}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn caching_redis() {
                let Some(server) = kvstash_test_servers::Redis::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config = json!({"type": "caching", "main":
                    {"type": "redis", "url": server.url(), "namespace": namespace},
                    "policy": {"timeout_ms": 60000}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn caching_etcd() {
                let Some(server) = kvstash_test_servers::Etcd::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config = json!({"type": "caching", "main":
                    {"type": "etcd", "endpoints": server.endpoints(), "namespace": namespace},
                    "policy": {"timeout_ms": 60000}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn caching_postgres() {
                let Some(server) = kvstash_test_servers::Postgres::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config = json!({"type": "caching", "main":
                    {"type": "postgres", "url": server.url(), "namespace": namespace},
                    "policy": {"timeout_ms": 60000}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn caching_server() {
                let url = common::served(json!({"type": "memory"})).await;
                let config = json!({"type": "caching", "main": {"type": "server", "url": url},
                    "policy": {"timeout_ms": 60000, "max_entries": 50}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            // The migrating layer, mid-migration: reads from `from`, every
            // write copied to `to`; all of the store's behaviour is `from`'s.
            #[tokio::test]
            async fn migrating() {
                let dir = tempfile::tempdir().unwrap();
                let config = json!({"type": "migrating", "from": {"type": "memory"},
                    "to": {"type": "file", "path": dir.path().join("to.redb")}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            // And between remote stores: etcd to PostgreSQL, Redis to
            // another host's `kvstash serve`.
            #[tokio::test]
            async fn migrating_etcd_to_postgres() {
                let (Some(etcd), Some(postgres)) = (
                    kvstash_test_servers::Etcd::shared(),
                    kvstash_test_servers::Postgres::shared(),
                ) else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config = json!({"type": "migrating",
                    "from": {"type": "etcd", "endpoints": etcd.endpoints(), "namespace": namespace},
                    "to": {"type": "postgres", "url": postgres.url(), "namespace": namespace}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn migrating_redis_to_server() {
                let Some(redis) = kvstash_test_servers::Redis::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let url = common::served(json!({"type": "memory"})).await;
                let config = json!({"type": "migrating",
                    "from": {"type": "redis", "url": redis.url(), "namespace": namespace},
                    "to": {"type": "server", "url": url}});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            // Another host's store: `kvstash serve` (in this process) on a
            // memory store, reached through its `/v1/storage` routes.
            #[tokio::test]
            async fn server() {
                let url = common::served(json!({"type": "memory"})).await;
                let config = json!({"type": "server", "url": url});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            // The remote backends: one server per test binary, a namespace
            // per test.
            #[tokio::test]
            async fn redis() {
                let Some(server) = kvstash_test_servers::Redis::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config = json!({"type": "redis", "url": server.url(), "namespace": namespace});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn postgres() {
                let Some(server) = kvstash_test_servers::Postgres::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config =
                    json!({"type": "postgres", "url": server.url(), "namespace": namespace});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }

            #[tokio::test]
            async fn etcd() {
                let Some(server) = kvstash_test_servers::Etcd::shared() else {
                    return;
                };
                let namespace = kvstash_test_servers::unique(stringify!($name));
                let config =
                    json!({"type": "etcd", "endpoints": server.endpoints(), "namespace": namespace});
                let $store = Store::open(&config.to_string()).await.unwrap();
                $body
            }
        }
    };
}

/// A `kvstash serve` in this process on a store of its own (`config`); its
/// URL. It serves until the test's runtime ends.
pub async fn served(config: serde_json::Value) -> String {
    let served = kvstash::Store::open(&config.to_string()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(kvstash::serve::serve(
        served,
        listener,
        kvstash::serve::ServeOptions::default(),
        std::future::pending(),
    ));
    url
}
