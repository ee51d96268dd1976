//! What build scripts that build Wasm with a nested cargo share
//! (`host/build.rs` for the guest, `bench/build.rs` for the floor,
//! `tests/artifacts/build.rs` for the test apps); included with `#[path]`.
//!
//! The nested build uses its own target directory (sharing the outer one
//! deadlocks an outer `--release` build) and a scrubbed environment (the
//! outer build's flags and wrappers are for the host target, not wasm).

use std::path::Path;
use std::process::Command;

/// `cargo` with the outer build's target-specific settings removed.
pub fn nested_cargo(root: &Path) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root);
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
    cmd
}

/// Runs `cmd`, naming `what` if it fails.
pub fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let status = cmd
        .status()
        .map_err(|e| format!("cannot run cargo to build {what}: {e}"))?;
    if !status.success() {
        return Err(format!("building {what} failed ({status})"));
    }
    Ok(())
}

/// rustup installs `rust-toolchain.toml`'s targets only when it installs the
/// toolchain (and not at all with RUSTUP_AUTO_INSTALL=0), so add `target`
/// here if the sysroot lacks it.
pub fn ensure_target_installed(target: &str) -> Result<(), String> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .map_err(|e| format!("cannot run {rustc}: {e}"))?;
    let sysroot = String::from_utf8_lossy(&sysroot.stdout).trim().to_string();
    if Path::new(&sysroot)
        .join("lib/rustlib")
        .join(target)
        .is_dir()
    {
        return Ok(());
    }
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", target]);
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &toolchain]);
    }
    let status = cmd.status().map_err(|e| {
        format!("the {target} target is missing and rustup could not be run ({e}); install it with `rustup target add {target}`")
    })?;
    if !status.success() {
        return Err(format!(
            "the {target} target is missing and `rustup target add {target}` failed"
        ));
    }
    Ok(())
}
