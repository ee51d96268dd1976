//! A command written against Spin's `fermyon:spin/key-value@2.0.0` (what
//! `spin_sdk::key_value::Store` wraps). Prints `keys=…`. With argument
//! `only-default`, checks that other labels are `no-such-store`.

wit_bindgen::generate!({
    inline: "
        package test:apps;
        world spin-kv {
            import fermyon:spin/key-value@2.0.0;
        }
    ",
    path: "../../wit",
    world: "test:apps/spin-kv",
    generate_all,
});

use fermyon::spin2_0_0::key_value::{Error, Store};
use kvstash_test_apps::{arg, check};

fn main() {
    let store = Store::open("default").expect("open the default label");
    store.set("spin-key", b"spin value").expect("set");
    check(
        store.get("spin-key").expect("get") == Some(b"spin value".to_vec()),
        "get returns what set stored",
    );
    check(
        store.exists("spin-key").expect("exists"),
        "exists after set",
    );
    store.set("temp", b"x").expect("set");
    store.delete("temp").expect("delete");
    check(!store.exists("temp").expect("exists"), "gone after delete");
    if arg(1).as_deref() == Some("only-default") {
        check(
            matches!(Store::open("other"), Err(Error::NoSuchStore)),
            "an unconfigured label is no-such-store",
        );
    }
    let keys = store.get_keys().expect("get-keys");
    println!("keys={}", keys.join(","));
}
