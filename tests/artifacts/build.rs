//! Builds the apps in `tests/apps` (their own workspace) and writes their
//! paths as constants, as wasmtime's test-programs artifacts crate does.

use std::fmt::Write as _;
use std::path::PathBuf;

#[path = "../../host/build_support.rs"]
mod build_support;

/// Every app, as `tests/apps/src/bin/NAME.rs`; each is a constant `NAME`.
const APPS: &[&str] = &[
    "draft", "draft2", "spin_kv", "rich", "trap", "missing", "http", "escape", "net",
];
/// Built for wasm32-wasip1 too (a core module, as Spin's templates build).
const WASIP1_APPS: &[&str] = &["draft2"];

fn main() {
    if let Err(e) = build() {
        println!("cargo::error={e}");
    }
}

fn build() -> Result<(), String> {
    let manifest_dir = PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").map_err(|_| "CARGO_MANIFEST_DIR is not set")?,
    );
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or("tests/artifacts has no grandparent")?
        .to_path_buf();
    let apps = root.join("tests").join("apps");
    for input in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={}", apps.join(input).display());
    }
    println!("cargo::rerun-if-changed={}", root.join("wit").display());
    println!(
        "cargo::rerun-if-changed={}",
        root.join("host/build_support.rs").display()
    );
    let target_dir = root.join("target").join("apps");
    let mut consts = String::new();
    for (target, names, suffix) in [
        ("wasm32-wasip2", APPS, ""),
        ("wasm32-wasip1", WASIP1_APPS, "_WASIP1"),
    ] {
        build_support::ensure_target_installed(target)?;
        let mut cmd = build_support::nested_cargo(&apps);
        cmd.args(["build", "--release", "--target", target, "--target-dir"])
            .arg(&target_dir);
        for name in names {
            cmd.args(["--bin", name]);
        }
        build_support::run(cmd, &format!("the test apps for {target}"))?;
        for name in names {
            let wasm = target_dir
                .join(target)
                .join("release")
                .join(format!("{name}.wasm"));
            if !wasm.is_file() {
                return Err(format!("the apps build produced no {}", wasm.display()));
            }
            writeln!(
                consts,
                "pub const {}{suffix}: &str = {:?};",
                name.to_uppercase(),
                wasm.display().to_string()
            )
            .map_err(|e| e.to_string())?;
        }
    }
    // examples/spin: the Spin SDK app, as `spin build` builds it.
    let example = root.join("examples").join("spin");
    for input in ["src", "Cargo.toml", "Cargo.lock"] {
        println!("cargo::rerun-if-changed={}", example.join(input).display());
    }
    let example_target = root.join("target").join("examples");
    let mut cmd = build_support::nested_cargo(&example);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(&example_target);
    build_support::run(cmd, "examples/spin")?;
    let wasm = example_target
        .join("wasm32-wasip2")
        .join("release")
        .join("device_aliases.wasm");
    if !wasm.is_file() {
        return Err(format!("examples/spin produced no {}", wasm.display()));
    }
    writeln!(
        consts,
        "pub const EXAMPLE_SPIN: &str = {:?};",
        wasm.display().to_string()
    )
    .map_err(|e| e.to_string())?;

    // The guest with its test-only `runaway` feature (a call that never
    // returns), for the host's call-time-limit tests: its own target
    // directory, as the feature would otherwise rebuild the real guest.
    for input in ["src", "Cargo.toml"] {
        println!(
            "cargo::rerun-if-changed={}",
            root.join("guest").join(input).display()
        );
    }
    let runaway_target = root.join("target").join("guest-runaway");
    let mut cmd = build_support::nested_cargo(&root);
    cmd.args([
        "build",
        "--release",
        "--package",
        "kvstash-guest",
        "--features",
        "runaway",
        "--target",
        "wasm32-wasip2",
        "--target-dir",
    ])
    .arg(&runaway_target);
    build_support::run(cmd, "the runaway guest")?;
    let wasm = runaway_target
        .join("wasm32-wasip2")
        .join("release")
        .join("kvstash_guest.wasm");
    if !wasm.is_file() {
        return Err(format!(
            "the runaway guest build produced no {}",
            wasm.display()
        ));
    }
    writeln!(
        consts,
        "pub const RUNAWAY_GUEST: &str = {:?};",
        wasm.display().to_string()
    )
    .map_err(|e| e.to_string())?;

    let out = PathBuf::from(std::env::var("OUT_DIR").map_err(|_| "OUT_DIR is not set")?);
    std::fs::write(out.join("apps.rs"), consts).map_err(|e| e.to_string())?;
    Ok(())
}
