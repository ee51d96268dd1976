//! A wasmtime-style command: `wasi:keyvalue@0.2.0-draft`, the default store `""`.
//! Prints `runs=N`: N counts its runs, so a second run on a file store prints 2.
//! With `READ_FILE=PATH` it prints the file (or why not), with an argument
//! `arg=…`, and with `EXIT_WITH=N` it exits with status N.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world draft {
            import wasi:keyvalue/store@0.2.0-draft;
            import wasi:keyvalue/atomics@0.2.0-draft;
            import wasi:keyvalue/batch@0.2.0-draft;
        }
    ",
    path: "../../wit",
    world: "test:apps/draft",
    generate_all,
});

use crate::wasi::keyvalue0_2_0_draft::{atomics, batch, store};
use kvstash_test_apps::check;

fn main() {
    let bucket = store::open("").expect("open the default store");
    let runs = atomics::increment(&bucket, "runs", 1).expect("increment");
    // wasmtime's draft host stores counters as decimal text.
    check(
        bucket.get("runs").expect("get") == Some(runs.to_string().into_bytes()),
        "a draft counter reads back as decimal text",
    );
    bucket.set("greeting", b"hello from draft").expect("set");
    check(
        bucket.get("greeting").expect("get") == Some(b"hello from draft".to_vec()),
        "get returns what set stored",
    );
    batch::set_many(
        &bucket,
        &[("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())],
    )
    .expect("set-many");
    let got = batch::get_many(&bucket, &["a".into(), "missing".into()]).expect("get-many");
    check(
        got == vec![Some(("a".to_string(), b"1".to_vec())), None],
        "get-many returns present keys and none for missing ones",
    );
    batch::delete_many(&bucket, &["a".into()]).expect("delete-many");
    check(
        !bucket.exists("a").expect("exists"),
        "deleted keys are gone",
    );
    let mut keys = Vec::new();
    let mut cursor = None;
    loop {
        let page = bucket.list_keys(cursor).expect("list-keys");
        keys.extend(page.keys);
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    check(
        keys.contains(&"greeting".to_string()) && keys.contains(&"b".to_string()),
        "list-keys lists what was set",
    );
    check(
        matches!(store::open("bad\u{7}name"), Err(store::Error::NoSuchStore)),
        "an invalid store name is no-such-store",
    );
    println!("runs={runs}");
    // What `kvstash run` passes through, checked by the tests.
    if let Ok(path) = std::env::var("READ_FILE") {
        match std::fs::read_to_string(&path) {
            Ok(text) => println!("file={}", text.trim()),
            Err(e) => println!("file-error={e}"),
        }
    }
    if let Some(args) = std::env::args().nth(1) {
        println!("arg={args}");
    }
    if let Ok(code) = std::env::var("EXIT_WITH") {
        std::process::exit(code.parse().unwrap_or(1));
    }
}
