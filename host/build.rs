//! Builds the guest component and the wasi:keyvalue storage adapter with a
//! nested cargo, so a plain `cargo build` or `cargo test` works on a fresh
//! clone.

use std::path::PathBuf;

#[path = "build_support.rs"]
mod build_support;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    if let Err(e) = build_guest() {
        println!("cargo::error={e}");
    }
}

fn build_guest() -> Result<(), String> {
    let manifest_dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").map_err(|_| "CARGO_MANIFEST_DIR is not set")?,
    );
    let root = manifest_dir
        .parent()
        .ok_or("host crate has no parent directory")?
        .to_path_buf();
    for input in [
        "guest/src",
        "guest/Cargo.toml",
        "adapters/keyvalue/src",
        "adapters/keyvalue/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
        "host/build_support.rs",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo::rerun-if-env-changed=KVSTASH_GUEST_WASM_OVERRIDE");
    println!("cargo::rerun-if-env-changed=KVSTASH_ADAPTER_WASM_OVERRIDE");

    // Prebuilt components (e.g. for cross builds that cannot run cargo twice).
    if let (Ok(guest), Ok(adapter)) = (
        std::env::var("KVSTASH_GUEST_WASM_OVERRIDE"),
        std::env::var("KVSTASH_ADAPTER_WASM_OVERRIDE"),
    ) {
        println!("cargo::rustc-env=KVSTASH_GUEST_WASM={guest}");
        println!("cargo::rustc-env=KVSTASH_ADAPTER_WASM={adapter}");
        return Ok(());
    }

    build_support::ensure_target_installed(TARGET)?;
    let target_dir = root.join("target").join("guest");
    let mut cmd = build_support::nested_cargo(&root);
    cmd.args(["build", "--package", "kvstash-guest"])
        .args(["--package", "kvstash-keyvalue-adapter", "--target", TARGET])
        .args(["--profile", "guest", "--target-dir"])
        .arg(&target_dir);
    build_support::run(cmd, "the guest component and the storage adapter")?;
    for (name, var) in [
        ("kvstash_guest", "KVSTASH_GUEST_WASM"),
        ("kvstash_keyvalue_adapter", "KVSTASH_ADAPTER_WASM"),
    ] {
        let wasm = target_dir
            .join(TARGET)
            .join("guest")
            .join(format!("{name}.wasm"));
        if !wasm.is_file() {
            return Err(format!("the guest build produced no {}", wasm.display()));
        }
        println!("cargo::rustc-env={var}={}", wasm.display());
    }
    Ok(())
}
