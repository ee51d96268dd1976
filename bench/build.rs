//! Builds the floor component (`bench/floor`) with a nested cargo, as the
//! host's build script builds the kvstash guest.

use std::path::PathBuf;

#[path = "../host/build_support.rs"]
mod build_support;

fn main() {
    if let Err(e) = build() {
        println!("cargo::error={e}");
    }
}

fn build() -> Result<(), String> {
    let bench = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let root = bench.parent().ok_or("no workspace root")?.to_path_buf();
    for input in ["floor/src", "floor/wit", "floor/Cargo.toml"] {
        println!("cargo::rerun-if-changed={}", bench.join(input).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        root.join("host/build_support.rs").display()
    );
    build_support::ensure_target_installed("wasm32-wasip2")?;
    let target_dir = root.join("target").join("floor");
    let mut cmd = build_support::nested_cargo(&root);
    cmd.args([
        "build",
        "--package",
        "kvstash-floor",
        "--target",
        "wasm32-wasip2",
    ])
    .args(["--profile", "guest", "--target-dir"])
    .arg(&target_dir);
    build_support::run(cmd, "the floor component")?;
    let wasm = target_dir.join("wasm32-wasip2/guest/kvstash_floor.wasm");
    if !wasm.is_file() {
        return Err(format!("no {}", wasm.display()));
    }
    println!("cargo::rustc-env=KVSTASH_FLOOR_WASM={}", wasm.display());
    Ok(())
}
