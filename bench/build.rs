//! Builds the floor component (`bench/floor`) with a nested cargo, as the
//! host's build script builds the kvstash guest.

use std::path::PathBuf;
use std::process::Command;

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
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target_dir = root.join("target").join("floor");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--package",
            "kvstash-floor",
            "--target",
            "wasm32-wasip2",
        ])
        .args(["--profile", "guest", "--target-dir"])
        .arg(&target_dir);
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("building the floor component failed ({status})"));
    }
    let wasm = target_dir.join("wasm32-wasip2/guest/kvstash_floor.wasm");
    if !wasm.is_file() {
        return Err(format!("no {}", wasm.display()));
    }
    println!("cargo::rustc-env=KVSTASH_FLOOR_WASM={}", wasm.display());
    Ok(())
}
