//! The JavaScript package (`bindings/js`), as a user gets it: `npm ci`,
//! `npm pack` (which transpiles this build's guest component with jco),
//! the package's own `npm test` (its types through `tsc`, then `node --test`), then a fresh app that installs
//! the packed tarball from npm's point of view and runs the README's
//! "Use it from JavaScript" example exactly as written there.
//!
//! Needs Node ≥ 20.19 and npm on PATH (`.ci/run` makes sure of both).

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use kvstash_test_servers::run;

fn npm(dir: &Path, args: &[&str]) -> Command {
    let mut command = Command::new("npm");
    command
        .current_dir(dir)
        .args(args)
        .args(["--no-audit", "--no-fund", "--loglevel=error"]);
    command
}

/// The code block of `lang` in the section headed `heading` of `readme`
/// (relative to the repository root).
fn readme_block(readme: &str, heading: &str, lang: &str) -> String {
    let readme = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(readme),
    )
    .expect(readme);
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with(heading))
        .unwrap_or_else(|| panic!("README has no section {heading:?}"));
    let fence = format!("```{lang}\n");
    let start = section.find(&fence).expect("a code block") + fence.len();
    let len = section[start..].find("```").expect("the block's end");
    section[start..start + len].to_string()
}

#[test]
fn the_javascript_package_packs_passes_its_tests_and_runs_the_readme_example() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let package = root.join("bindings/js");
    let work = root.join("target/js");
    fs::create_dir_all(&work).unwrap();
    // This build's component, so the package tests what the host embeds.
    let wasm = work.join("kvstash_guest.wasm");
    fs::write(&wasm, kvstash::GUEST_WASM).unwrap();

    if !package.join("node_modules/.package-lock.json").exists() {
        run(&mut npm(&package, &["ci"]));
    }
    let destination = format!("--pack-destination={}", work.display());
    let packed = run(npm(&package, &["pack", &destination]).env("KVSTASH_WASM", &wasm));
    let tarball: PathBuf = work.join(
        String::from_utf8(packed.stdout)
            .unwrap()
            .lines()
            .last()
            .expect("npm pack names its tarball")
            .trim(),
    );
    assert!(tarball.exists(), "{}", tarball.display());

    // The types (`tsc` over test/types.ts), then every test/*.test.js.
    let tests = fs::read_dir(package.join("test"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".test.js")
        })
        .count();
    assert!(tests >= 3, "{tests} test files");
    run(&mut npm(&package, &["test"]));

    // A user's app: a new directory, the packed package installed into it.
    let app = tempfile::tempdir().unwrap();
    fs::write(
        app.path().join("package.json"),
        r#"{"name": "app", "private": true, "type": "module"}"#,
    )
    .unwrap();
    run(npm(app.path(), &["install"]).arg(&tarball));
    fs::write(
        app.path().join("app.js"),
        readme_block("README.md", "Use it from JavaScript", "js"),
    )
    .unwrap();
    // The package README's example, in a directory of its own.
    let other = app.path().join("other");
    fs::create_dir(&other).unwrap();
    fs::write(
        other.join("example.js"),
        readme_block("bindings/js/README.md", "Use", "js"),
    )
    .unwrap();
    let out = run(Command::new("node").current_dir(&other).arg("example.js"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("sensor-1 { name: 'porch' }\n"), "{stdout}");
    let out = run(Command::new("node").current_dir(app.path()).arg("app.js"));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("someone else wrote it first; it is at version 1\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("1 environment_sensor_1 set [ 1, 5, 42 ]\n"),
        "{stdout}"
    );
    assert!(app.path().join("devices.kvlog").exists());
}
