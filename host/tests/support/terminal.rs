//! `kvstash` at a pseudo-terminal, as a person types at it: a Python
//! script driving `terminal.py`'s `Terminal` (shared by the CLI and server
//! tests: `#[path = "support/terminal.rs"] mod terminal;`).

use std::ffi::OsStr;
use std::process::Command;

/// Runs `script` (Python, with `Terminal` imported; `sys.argv[1]` is the
/// `kvstash` binary, then `args`) with the environment `env` added; asserts
/// that it exits 0 and returns what it printed, lines ending in `\n`.
pub fn run(script: &str, args: &[&OsStr], env: &[(&str, &str)]) -> String {
    let script = format!(
        "import sys\nsys.path.insert(0, sys.argv.pop(1))\nfrom terminal import Terminal\n{script}"
    );
    let out = Command::new("python3")
        .args([
            "-c",
            &script,
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support"),
        ])
        .arg(env!("CARGO_BIN_EXE_kvstash"))
        .args(args)
        .env_remove("KVSTASH_STORE")
        .env("TERM", "xterm")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    assert!(
        out.status.success(),
        "{shown}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    shown
}
