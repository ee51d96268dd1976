//! The device-connector scenario: a service on a small ARM box keeps
//! user-defined aliases (`environment_sensor_1` is controller `[1, 5, 42]`)
//! and display names (`"backyard shed sensor"`) in a file, in-process.
//!
//! Run: `cargo run --example aliases [DATA_DIR]`. `cargo test` runs it too.

use std::path::{Path, PathBuf};

use kvstash::BlockingStore;

fn main() -> anyhow::Result<()> {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("kvstash-aliases-example"));
    run(&dir)
}

fn run(dir: &Path) -> anyhow::Result<()> {
    let config = serde_json::json!({"type": "file", "path": dir.join("kvstash.redb")});
    let store = BlockingStore::open(&config.to_string())?;
    let aliases = store.bucket("aliases");
    let names = store.bucket("display-names");

    aliases.set_json("environment_sensor_1", &[1, 5, 42])?;
    names.set_json("environment_sensor_1", "backyard shed sensor")?;

    // Later, resolve an alias to its hardware ID and its display name.
    let id: Vec<u32> = aliases
        .get_json("environment_sensor_1")?
        .ok_or_else(|| anyhow::anyhow!("alias missing"))?;
    let name: String = names
        .get_json("environment_sensor_1")?
        .ok_or_else(|| anyhow::anyhow!("display name missing"))?;
    println!("environment_sensor_1 = {id:?}, shown as {name:?}");
    anyhow::ensure!(id == [1, 5, 42] && name == "backyard shed sensor");

    // Rename: the old alias goes, the new one points at the same controller.
    aliases.set_json("shed_sensor", &id)?;
    anyhow::ensure!(aliases.delete("environment_sensor_1")?);
    let page = aliases.list(&kvstash::ListOptions::default())?;
    let keys: Vec<&str> = page.items.iter().map(|i| i.key.as_str()).collect();
    println!("aliases now: {keys:?}");
    anyhow::ensure!(keys == ["shed_sensor"]);
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_example_runs() {
        let dir = tempfile::tempdir().unwrap();
        super::run(dir.path()).unwrap();
    }
}
