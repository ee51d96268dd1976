//! A wasmCloud/Spin-style command: `wasi:keyvalue@0.2.0-draft2` on store
//! `"default"`, with CAS. Prints `hits=N` (N counts its runs). Also built
//! for wasm32-wasip1, as Spin's templates build apps.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world draft2 {
            import wasi:keyvalue/store@0.2.0-draft2;
            import wasi:keyvalue/atomics@0.2.0-draft2;
            import wasi:keyvalue/batch@0.2.0-draft2;
        }
    ",
    path: "../../wit",
    world: "test:apps/draft2",
    generate_all,
});

use crate::wasi::keyvalue0_2_0_draft2::{atomics, batch, store};
use kvstash_test_apps::check;

fn main() {
    let bucket = store::open("default").expect("open the default store");
    let hits = atomics::increment(&bucket, "hits", 1).expect("increment");
    // Spin's built-in store keeps draft2 counters as 8 little-endian bytes.
    check(
        bucket.get("hits").expect("get") == Some(hits.to_le_bytes().to_vec()),
        "a draft2 counter reads back as i64 little-endian bytes",
    );
    // Compare-and-swap: an unchanged key swaps; a changed one fails.
    let cas = atomics::Cas::new(&bucket, "doc").expect("cas");
    let seen = cas.current().expect("current");
    let next = format!("{}+", String::from_utf8_lossy(&seen.unwrap_or_default()));
    atomics::swap(cas, next.as_bytes()).expect("swap an unchanged key");
    let stale = atomics::Cas::new(&bucket, "doc").expect("cas");
    bucket.set("doc", b"changed by someone else").expect("set");
    match atomics::swap(stale, b"mine") {
        Err(atomics::CasError::CasFailed(fresh)) => check(
            fresh.current().expect("current") == Some(b"changed by someone else".to_vec()),
            "cas-failed hands back the current value",
        ),
        Ok(()) => check(false, "a swap after a change must fail"),
        Err(atomics::CasError::StoreError(e)) => check(false, &format!("swap: {e:?}")),
    }
    bucket.set("doc", next.as_bytes()).expect("set");
    batch::set_many(&bucket, &[("x".into(), b"1".to_vec())]).expect("set-many");
    let page = bucket.list_keys(None).expect("list-keys");
    check(page.keys.contains(&"x".to_string()), "list-keys lists x");
    println!("hits={hits}");
}
