//! The Python package, as a user gets it: `pip install ./bindings/python`
//! (maturin builds the native module) into a virtualenv under `target/`,
//! then its pytest suite (`bindings/python/tests/test_*.py`).
//!
//! The package builds with the dev profile in the workspace's target dir
//! (`MATURIN_PEP517_ARGS=--profile dev`), so it reuses what `cargo test`
//! just compiled and only links the module: 50 s for this test instead of
//! 8.5 min with a release build of its own (cargo does not hold the target
//! dir's lock while tests run). What it checks does not depend on the
//! profile; a user's `pip install` builds in release.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::Command;

fn run(command: &mut Command) {
    let shown = format!("{command:?}");
    let status = command.status().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(status.success(), "{shown} failed ({status})");
}

#[test]
fn the_python_package_installs_and_passes_its_tests() {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = package.join("../../target");
    let python = kvstash_test_servers::python_venv("py-venv", &["pytest==9.2.0"]);
    let mut install = kvstash_test_servers::pip_install(&python);
    install
        .args(["--force-reinstall", "--no-deps"])
        .arg(package)
        .env("CARGO_TARGET_DIR", &target)
        .env("MATURIN_PEP517_ARGS", "--profile dev");
    run(&mut install);
    run(Command::new(&python)
        .args(["-m", "pytest", "-q", "-p", "no:cacheprovider"])
        .arg(package.join("tests")));
}
