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
        }
    };
}
