//! Builds the guest component and the storage adapters (wasi:keyvalue,
//! memory) with a nested cargo, so a plain `cargo build` or `cargo test` works on a fresh
//! clone.
//!
//! Also:
//! - `KVSTASH_GUEST_SHA256`: the guest's SHA-256, so a start does not hash it;
//! - the components are copied into OUT_DIR and embedded from there, so the
//!   bytes compiled in are the bytes hashed;
//! - with `KVSTASH_PRECOMPILED=FILE.cwasm` (what `kvstash precompile` wrote,
//!   beside `FILE.cwasm.stamp`: the guest, target and version it was made
//!   for, checked against this build), the compiled guest for the target is
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
    if let Err(e) = build_guest().and_then(|built| embed(&built)) {
        println!("cargo::error={e}");
    }
}

/// Copies the components into OUT_DIR and names the copies for
/// `include_bytes!`, so the bytes compiled in are the bytes hashed here,
/// whatever rewrites the originals later; then the precompiled guest.
fn embed(built: &[PathBuf]) -> Result<(), String> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").map_err(|_| "OUT_DIR is not set")?);
    let mut guest = None;
    for ((name, var), wasm) in COMPONENTS.iter().zip(built) {
        let copy = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(wasm, &copy)
            .map_err(|e| format!("copying {} to {}: {e}", wasm.display(), copy.display()))?;
        println!("cargo::rustc-env={var}={}", copy.display());
        guest.get_or_insert(copy);
    }
    let guest = guest.ok_or("no guest component")?;
    let bytes = std::fs::read(&guest).map_err(|e| format!("reading {}: {e}", guest.display()))?;
    let digest: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    println!("cargo::rustc-env=KVSTASH_GUEST_SHA256={digest}");
    let target = std::env::var("TARGET").map_err(|_| "TARGET is not set")?;
    println!("cargo::rustc-env=KVSTASH_TARGET={target}");
    embed_precompiled(&digest, &target, &out_dir)
}

/// With `KVSTASH_PRECOMPILED=FILE`, checks FILE's stamp (what
/// `kvstash precompile` wrote beside it: the guest's SHA-256, the target,
/// the kvstash version) against this build and embeds a copy of FILE
/// (`cfg(kvstash_precompiled)`).
fn embed_precompiled(digest: &str, target: &str, out_dir: &std::path::Path) -> Result<(), String> {
    println!("cargo::rerun-if-env-changed=KVSTASH_PRECOMPILED");
    let Some(cwasm) = std::env::var_os("KVSTASH_PRECOMPILED").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let cwasm = PathBuf::from(cwasm);
    let mut stamp = cwasm.clone().into_os_string();
    stamp.push(".stamp");
    let stamp = PathBuf::from(stamp);
    println!("cargo::rerun-if-changed={}", cwasm.display());
    println!("cargo::rerun-if-changed={}", stamp.display());
    let text = std::fs::read_to_string(&stamp)
        .map_err(|e| format!("KVSTASH_PRECOMPILED: reading {}: {e}", stamp.display()))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("(none)")
            .trim()
            .to_string()
    };
    let version = std::env::var("CARGO_PKG_VERSION").unwrap_or_default();
    for (name, want) in [
        ("guest", digest),
        ("target", target),
        ("kvstash", version.as_str()),
    ] {
        let got = field(name);
        if got != want {
            return Err(format!(
                "KVSTASH_PRECOMPILED: {} does not suit this build: its {name} is {got}, \
                 this build's is {want}; run `kvstash precompile --target {target}` again \
                 (or `just cross`)",
                cwasm.display()
            ));
        }
    }
    let copy = out_dir.join("kvstash_guest.cwasm");
    std::fs::copy(&cwasm, &copy)
        .map_err(|e| format!("KVSTASH_PRECOMPILED: copying {}: {e}", cwasm.display()))?;
    println!(
        "cargo::rustc-env=KVSTASH_PRECOMPILED_CWASM={}",
        copy.display()
    );
    println!("cargo::rustc-cfg=kvstash_precompiled");
    Ok(())
}

/// Builds the components; returns their paths, in `COMPONENTS` order.
fn build_guest() -> Result<Vec<PathBuf>, String> {
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
        let mut built = Vec::new();
        for (name, _) in COMPONENTS {
            let wasm = PathBuf::from(&dir).join(format!("{name}.wasm"));
            println!("cargo::rerun-if-changed={}", wasm.display());
            built.push(wasm);
        }
        return Ok(built);
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
    let mut built = Vec::new();
    for (name, _) in COMPONENTS {
        let wasm = target_dir
            .join(TARGET)
            .join("guest")
            .join(format!("{name}.wasm"));
        if !wasm.is_file() {
            return Err(format!("the guest build produced no {}", wasm.display()));
        }
        built.push(wasm);
    }
    Ok(built)
}
