//! Builds the guest component and the storage adapters (wasi:keyvalue,
//! memory) with a nested cargo, so a plain `cargo build` or `cargo test` works on a fresh
//! clone.

use std::path::PathBuf;

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
        return Ok(());
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
    Ok(())
}
