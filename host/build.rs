//! Builds the guest component with a nested cargo, so a plain `cargo build`
//! or `cargo test` works on a fresh clone.
//!
//! The nested build uses its own target directory (sharing the outer one
//! deadlocks an outer `--release` build) and a scrubbed environment (the
//! outer build's flags and wrappers are for the host target, not wasm).

use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    if let Err(e) = build_guest() {
        println!("cargo::error={e}");
    }
}

fn build_guest() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
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
    ] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo::rerun-if-env-changed=KVSTASH_GUEST_WASM_OVERRIDE");

    // A prebuilt guest (e.g. for cross builds that cannot run cargo twice).
    if let Ok(path) = std::env::var("KVSTASH_GUEST_WASM_OVERRIDE") {
        println!("cargo::rustc-env=KVSTASH_GUEST_WASM={path}");
        return Ok(());
    }

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    ensure_target_installed()?;
    let target_dir = root.join("target").join("guest");
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(&root)
        .args(["build", "--package", "kvstash-guest", "--target", TARGET])
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
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run `{cargo}` to build the guest: {e}"))?;
    if !status.success() {
        return Err(format!("building the guest component failed ({status})"));
    }
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

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// rustup installs `rust-toolchain.toml`'s targets only when it installs the
/// toolchain (and not at all with RUSTUP_AUTO_INSTALL=0), so add it here.
fn ensure_target_installed() -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
    {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &toolchain]);
    }
    let status = cmd.status().map_err(|e| {
        format!("the {TARGET} target is missing and rustup could not be run ({e}); install it with `rustup target add {TARGET}`")
    })?;
    if !status.success() {
        return Err(format!(
            "the {TARGET} target is missing and `rustup target add {TARGET}` failed"
        ));
    }
    Ok(())
}
