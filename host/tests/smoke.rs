#[tokio::test]
async fn smoke() {
    let store = kvstash::Store::open(r#"{"type":"memory"}"#).await.unwrap();
    let b = store.bucket("b");
    let v = b
        .set_json("k", &serde_json::json!({"hello":"world"}))
        .await
        .unwrap();
    let e = b.get("k").await.unwrap().unwrap();
    assert_eq!(e.version, v);
    assert_eq!(
        e.value,
        kvstash::Value::Json("{\"hello\":\"world\"}".into())
    );
}
