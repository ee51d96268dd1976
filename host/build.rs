//! Builds the guest component with a nested cargo, so a plain `cargo build`
//! or `cargo test` works on a fresh clone.

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
        "wit",
        "Cargo.lock",
        "Cargo.toml",
        "host/build_support.rs",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo::rerun-if-env-changed=KVSTASH_GUEST_WASM_OVERRIDE");

    // A prebuilt guest (e.g. for cross builds that cannot run cargo twice).
    if let Ok(path) = std::env::var("KVSTASH_GUEST_WASM_OVERRIDE") {
        println!("cargo::rustc-env=KVSTASH_GUEST_WASM={path}");
        return Ok(());
    }

    build_support::ensure_target_installed(TARGET)?;
    let target_dir = root.join("target").join("guest");
    let mut cmd = build_support::nested_cargo(&root);
    cmd.args(["build", "--package", "kvstash-guest", "--target", TARGET])
        .args(["--profile", "guest", "--target-dir"])
        .arg(&target_dir);
    build_support::run(cmd, "the guest component")?;
    let wasm = target_dir
        .join(TARGET)
        .join("guest")
        .join("kvstash_guest.wasm");
    if !wasm.is_file() {
        return Err(format!("guest build produced no {}", wasm.display()));
    }
    println!("cargo::rustc-env=KVSTASH_GUEST_WASM={}", wasm.display());
    Ok(())
}
