//! The device build under emulation (issue 12): the CLI cross-built for
//! aarch64 and 32-bit ARMv7 by `scripts/cross` (what `just cross` runs: no
//! compiler, the component precompiled and embedded), run under qemu-user.
//! The seed's device connector sets aliases and display names in one
//! process and reads them in another, on the file backend; and the Python
//! package's device example does the same under qemu-aarch64 with Debian's
//! arm64 CPython.

// Test code: a broken assumption should fail the test loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use kvstash_test_servers::run;

struct Device {
    target: &'static str,
    qemu: &'static str,
    sysroot: &'static str,
}

const AARCH64: Device = Device {
    target: "aarch64-unknown-linux-gnu",
    qemu: "qemu-aarch64",
    sysroot: "/usr/aarch64-linux-gnu",
};

const ARMV7: Device = Device {
    target: "armv7-unknown-linux-gnueabihf",
    qemu: "qemu-arm",
    sysroot: "/usr/arm-linux-gnueabihf",
};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds both device binaries once per test run (incremental: quick when
/// nothing changed), installing the cross linkers and qemu if missing.
fn cross_built() {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cross = Command::new("bash");
        // The debug CLI `cargo test` built for the host's tests precompiles.
        let precompiler = root().join("target/debug/kvstash");
        if precompiler.is_file() {
            cross.env("KVSTASH_PRECOMPILER", precompiler);
        }
        let status = cross
            .arg(root().join("scripts/cross"))
            .args([AARCH64.target, ARMV7.target])
            .env("KVSTASH_CROSS_PARTS", "cli")
            .current_dir(root())
            .status()
            .map_err(|e| format!("cannot run scripts/cross: {e}"))?;
        status
            .success()
            .then_some(())
            .ok_or_else(|| format!("scripts/cross failed: {status}"))
    });
    if let Err(e) = built {
        panic!("{e}");
    }
}

impl Device {
    fn binary(&self) -> PathBuf {
        root()
            .join("target/cross")
            .join(self.target)
            .join("kvstash")
    }

    /// `kvstash ARGS` on the emulated device, with its data in `data`.
    fn kvstash(&self, data: &Path, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write as _;
        let mut child = Command::new(self.qemu)
            .arg("-L")
            .arg(self.sysroot)
            .arg(self.binary())
            .arg("--data")
            .arg(data)
            .args(args)
            // No compile cache to fall back on: the component must be the
            // embedded one.
            .env("HOME", data)
            .env_remove("KVSTASH_STORE")
            .env_remove("KVSTASH_BUCKET")
            .env_remove("KVSTASH_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.qemu));
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            input.write_all(text.as_bytes()).unwrap();
        }
        drop(input);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{} kvstash {}: {:?}\n{}",
            self.target,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    fn stdout(&self, data: &Path, args: &[&str]) -> String {
        String::from_utf8(self.kvstash(data, args, None).stdout).unwrap()
    }
}

fn aliases_and_display_names(device: &Device) {
    cross_built();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();

    let info: serde_json::Value = serde_json::from_str(&device.stdout(data, &["info"])).unwrap();
    assert_eq!(info["component"], "embedded", "{info}");
    assert_eq!(info["target"], device.target, "{info}");
    // 32-bit ARM has no Cranelift backend: wasmtime runs Pulley bytecode.
    let engine = if device.target.starts_with("armv7") {
        "pulley"
    } else {
        "native"
    };
    assert_eq!(info["engine_target"], engine, "{info}");
    assert_eq!(info["features"], serde_json::json!([]), "{info}");
    assert_eq!(
        info["backends"],
        serde_json::json!(["file", "memory"]),
        "{info}"
    );

    // One process sets the alias both ways and the display name, atomically.
    let txn = r#"{"mutations":[
        {"bucket":"aliases","key":"environment_sensor_1","set":[1,5,42]},
        {"bucket":"hardware","key":"[1,5,42]","set":"environment_sensor_1"},
        {"bucket":"names","key":"environment_sensor_1","set":"backyard shed sensor"}
    ]}"#;
    device.kvstash(data, &["txn"], Some(txn));

    // Others read them.
    let get = |bucket: &str, key: &str| device.stdout(data, &["--bucket", bucket, "get", key]);
    assert_eq!(get("aliases", "environment_sensor_1"), "[1,5,42]\n");
    assert_eq!(get("hardware", "[1,5,42]"), "\"environment_sensor_1\"\n");
    assert_eq!(
        get("names", "environment_sensor_1"),
        "\"backyard shed sensor\"\n"
    );
    assert_eq!(
        device.stdout(
            data,
            &[
                "--bucket",
                "aliases",
                "get",
                "environment_sensor_1",
                "--path",
                "/2"
            ]
        ),
        "42\n"
    );
    // A rename, seen by the next process.
    device.kvstash(
        data,
        &[
            "--bucket",
            "names",
            "set",
            "environment_sensor_1",
            "greenhouse sensor",
            "--string",
        ],
        None,
    );
    assert_eq!(
        get("names", "environment_sensor_1"),
        "\"greenhouse sensor\"\n"
    );

    // The file is the same format on every target: this x86_64 host reads it.
    let file = data.join("kvstash.redb");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let alias: Option<Vec<u32>> = runtime.block_on(async {
        let config = serde_json::json!({"type": "file", "path": file}).to_string();
        let store = kvstash::Store::open(&config).await.unwrap();
        store
            .bucket("aliases")
            .get_json("environment_sensor_1")
            .await
            .unwrap()
    });
    assert_eq!(alias, Some(vec![1, 5, 42]));

    // A TinyDB file moves in and back out on the device too.
    let tinydb = r#"{"_default":{"1":{"alias":"environment_sensor_1","id":[1,5,42]}},"names":{"1":{"alias":"environment_sensor_1","name":"backyard shed sensor"}}}"#;
    let other = dir.path().join("moved");
    device.kvstash(&other, &["import", "--from", "tinydb"], Some(tinydb));
    let back: serde_json::Value =
        serde_json::from_str(&device.stdout(&other, &["export", "--format", "tinydb"])).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<serde_json::Value>(tinydb).unwrap()
    );
}

#[test]
fn aliases_and_display_names_on_aarch64() {
    aliases_and_display_names(&AARCH64);
}

#[test]
fn aliases_and_display_names_on_armv7() {
    aliases_and_display_names(&ARMV7);
}

/// The Python package's device example (`bindings/python/examples/device.py`,
/// asyncio) on the aarch64 wheel `just cross` builds, run by Debian's arm64
/// CPython 3.11 under qemu-aarch64 (`scripts/python-sysroot` unpacks it; no
/// pip on the device: the wheel is unpacked onto `PYTHONPATH`). One process
/// sets an alias both ways and its display name; another reads them back,
/// and so does the device CLI.
#[test]
fn python_device_example_on_aarch64() {
    cross_built();
    let mut cross = Command::new("bash");
    let precompiler = root().join("target/debug/kvstash");
    if precompiler.is_file() {
        cross.env("KVSTASH_PRECOMPILER", precompiler);
    }
    run(cross
        .arg(root().join("scripts/cross"))
        .arg(AARCH64.target)
        .env("KVSTASH_CROSS_PARTS", "python")
        .current_dir(root()));
    let sysroot = root().join("target/py-aarch64-sysroot");
    run(Command::new("bash")
        .arg(root().join("scripts/python-sysroot"))
        .arg(&sysroot));

    let dir = tempfile::tempdir().unwrap();
    let wheels = root()
        .join("target/cross")
        .join(AARCH64.target)
        .join("python");
    let wheel = std::fs::read_dir(&wheels)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .find(|path| path.extension().is_some_and(|e| e == "whl"))
        .unwrap_or_else(|| panic!("no wheel in {}", wheels.display()));
    assert!(
        wheel.to_string_lossy().contains("aarch64"),
        "{}",
        wheel.display()
    );
    let site = dir.path().join("site");
    run(Command::new("python3")
        .args(["-m", "zipfile", "-e"])
        .arg(&wheel)
        .arg(&site));

    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let store = data.join("kvstash.redb");
    let example = |args: &[&str]| {
        let out = run(Command::new(AARCH64.qemu)
            .arg("-L")
            .arg(&sysroot)
            .arg(sysroot.join("usr/bin/python3.11"))
            .arg(root().join("bindings/python/examples/device.py"))
            .arg(&store)
            .args(args)
            .env("PYTHONPATH", &site)
            .env("HOME", dir.path())
            .env_remove("PYTHONHOME")
            .env_remove("KVSTASH_CACHE_DIR")
            .env_remove("XDG_CACHE_HOME"));
        String::from_utf8(out.stdout).unwrap()
    };
    example(&[
        "set",
        "environment_sensor_1",
        "[1, 5, 42]",
        "backyard shed sensor",
    ]);
    let shown: serde_json::Value =
        serde_json::from_str(&example(&["show", "environment_sensor_1"])).unwrap();
    assert_eq!(
        shown,
        serde_json::json!({
            "alias": "environment_sensor_1",
            "hardware_id": [1, 5, 42],
            "alias_of_hardware_id": "environment_sensor_1",
            "name": "backyard shed sensor",
        })
    );
    // The device CLI reads what the Python package wrote.
    assert_eq!(
        AARCH64.stdout(&data, &["--bucket", "names", "get", "environment_sensor_1"]),
        "\"backyard shed sensor\"\n"
    );
    assert_eq!(
        AARCH64.stdout(&data, &["--bucket", "hardware", "get", "[1,5,42]"]),
        "\"environment_sensor_1\"\n"
    );
}
