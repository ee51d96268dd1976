//! Builds the guest component and the storage adapters (wasi:keyvalue,
//! memory) with a nested cargo, so a plain `cargo build` or `cargo test` works on a fresh
//! clone.
//!
//! Also:
//! - `KVSTASH_GUEST_SHA256`: the guest's SHA-256, so a start does not hash it;
//! - with `KVSTASH_PRECOMPILED=FILE.cwasm` (what `kvstash precompile` wrote,
//!   beside `FILE.cwasm.guest-sha256`), the compiled guest for the target is
//!   embedded too (`cfg(kvstash_precompiled)`): the binary then never
//!   compiles it. `just cross` does this for each device target.

use std::path::PathBuf;

use sha2::Digest as _;

#[path = "build_support.rs"]
mod build_support;

const TARGET: &str = "wasm32-wasip2";

/// What this script builds: (crate file name, the variable naming its path).
const COMPONENTS: [(&str, &str); 3] = [
    ("kvstash_guest", "KVSTASH_GUEST_WASM"),
    ("kvstash_keyvalue_adapter", "KVSTASH_ADAPTER_WASM"),
    ("kvstash_memory_adapter", "KVSTASH_MEMORY_ADAPTER_WASM"),
];

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kvstash_precompiled)");
    if let Err(e) = build_guest().and_then(|guest| embed_precompiled(&guest)) {
        println!("cargo::error={e}");
    }
}

/// Names the precompiled guest for `cfg(kvstash_precompiled)` builds, after
/// checking it was compiled from `guest` (this build's guest component).
fn embed_precompiled(guest: &std::path::Path) -> Result<(), String> {
    println!("cargo::rerun-if-env-changed=KVSTASH_PRECOMPILED");
    let bytes = std::fs::read(guest).map_err(|e| format!("reading {}: {e}", guest.display()))?;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo::rustc-env=KVSTASH_GUEST_SHA256={digest}");
    let Some(cwasm) = std::env::var_os("KVSTASH_PRECOMPILED").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let cwasm = PathBuf::from(cwasm);
    let mut stamp = cwasm.clone().into_os_string();
    stamp.push(".guest-sha256");
    let stamp = PathBuf::from(stamp);
    println!("cargo::rerun-if-changed={}", cwasm.display());
    println!("cargo::rerun-if-changed={}", stamp.display());
    let made_from = std::fs::read_to_string(&stamp)
        .map_err(|e| format!("KVSTASH_PRECOMPILED: reading {}: {e}", stamp.display()))?;
    if made_from.trim() != digest {
        return Err(format!(
            "KVSTASH_PRECOMPILED: {} was compiled from another guest build \
             (made from {}, this build's guest is {digest}); precompile it again",
            cwasm.display(),
            made_from.trim()
        ));
    }
    let cwasm = cwasm
        .canonicalize()
        .map_err(|e| format!("KVSTASH_PRECOMPILED: {}: {e}", cwasm.display()))?;
    println!(
        "cargo::rustc-env=KVSTASH_PRECOMPILED_CWASM={}",
        cwasm.display()
    );
    println!("cargo::rustc-cfg=kvstash_precompiled");
    Ok(())
}

/// Builds the components; returns the guest's path.
fn build_guest() -> Result<PathBuf, String> {
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
        "adapters/memory/src",
        "adapters/storage_export.rs",
        "adapters/memory/Cargo.toml",
        "wit",
        "Cargo.lock",
        "Cargo.toml",
        "host/build_support.rs",
    ] {
        println!("cargo::rerun-if-changed={}", root.join(input).display());
    }
    println!("cargo::rerun-if-env-changed=KVSTASH_WASM_OVERRIDE_DIR");

    // Prebuilt components (e.g. for cross builds that cannot run cargo
    // twice): a directory holding the three files this script would build.
    if let Ok(dir) = std::env::var("KVSTASH_WASM_OVERRIDE_DIR") {
        for (name, var) in COMPONENTS {
            let wasm = PathBuf::from(&dir).join(format!("{name}.wasm"));
            println!("cargo::rustc-env={var}={}", wasm.display());
        }
        return Ok(PathBuf::from(&dir).join(format!("{}.wasm", COMPONENTS[0].0)));
    }

    build_support::ensure_target_installed(TARGET)?;
    let target_dir = root.join("target").join("guest");
    let mut cmd = build_support::nested_cargo(&root);
    cmd.args(["build", "--target", TARGET]);
    for (name, _) in COMPONENTS {
        cmd.args(["--package", &name.replace('_', "-")]);
    }
    cmd.args(["--profile", "guest", "--target-dir"])
        .arg(&target_dir);
    build_support::run(cmd, "the guest component and the storage adapters")?;
    for (name, var) in COMPONENTS {
        let wasm = target_dir
            .join(TARGET)
            .join("guest")
            .join(format!("{name}.wasm"));
        if !wasm.is_file() {
            return Err(format!("the guest build produced no {}", wasm.display()));
        }
        println!("cargo::rustc-env={var}={}", wasm.display());
    }
    Ok(target_dir
        .join(TARGET)
        .join("guest")
        .join(format!("{}.wasm", COMPONENTS[0].0)))
}
