//! `kvstash txn`: a transaction read as JSON.

use anyhow::{Context, bail};
use serde_json::json;

use super::parse_duration;
use crate::api::{Check, Store};

/// The largest version or token a document names: 2^53 - 1, what every
/// JSON reader (JavaScript's numbers) holds exactly.
pub(crate) const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// A transaction document: `{"checks":[…],"mutations":[…]}` (see
/// docs/semantics.md). `bucket` may be left out of a check or mutation.
pub(crate) fn parse_transaction(
    store: &Store,
    default_bucket: &str,
    text: &str,
) -> anyhow::Result<crate::api::Transaction> {
    let doc: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).context("not a JSON object")?;
    if let Some(extra) = doc.keys().find(|k| *k != "checks" && *k != "mutations") {
        bail!("unknown field `{extra}`");
    }
    let list = |name: &str| -> anyhow::Result<Vec<serde_json::Map<String, serde_json::Value>>> {
        match doc.get(name) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    serde_json::Value::Object(map) => Ok(map.clone()),
                    serde_json::Value::Null
                    | serde_json::Value::Bool(_)
                    | serde_json::Value::Number(_)
                    | serde_json::Value::String(_)
                    | serde_json::Value::Array(_) => bail!("{name}[{i}] is not an object"),
                })
                .collect(),
            Some(_) => bail!("`{name}` must be an array"),
        }
    };
    let mut txn = store.transaction();
    for (i, mut check) in list("checks")?.into_iter().enumerate() {
        let ctx = || format!("checks[{i}]");
        if let Some(name) = check.remove("lock") {
            let name = name
                .as_str()
                .context("`lock` must be a string")
                .with_context(ctx)?
                .to_string();
            let token = check
                .remove("token")
                .and_then(|t| t.as_u64())
                .filter(|&t| t <= MAX_SAFE_INTEGER)
                .context("a `lock` check needs a whole-number `token` (at most 2^53 - 1)")
                .with_context(ctx)?;
            if let Some(extra) = check.keys().next() {
                bail!("checks[{i}] has an unknown field `{extra}`");
            }
            txn = txn.check(Check::lease(&name, token));
            continue;
        }
        let (bucket, key) = target(&mut check, default_bucket).with_context(ctx)?;
        let condition = if let Some(v) = check.remove("version") {
            let version = v
                .as_u64()
                .filter(|&v| v <= MAX_SAFE_INTEGER)
                .context("`version` must be a whole number (at most 2^53 - 1)")
                .with_context(ctx)?;
            Check::version(&bucket, &key, version)
        } else if check.remove("absent") == Some(json!(true)) {
            Check::absent(&bucket, &key)
        } else if check.remove("exists") == Some(json!(true)) {
            Check::exists(&bucket, &key)
        } else if let Some(value) = check.remove("equals") {
            Check::equals_json(&bucket, &key, &value)?
        } else {
            bail!("checks[{i}] needs one of `version`, `absent`: true, `exists`: true, `equals`");
        };
        if let Some(extra) = check.keys().next() {
            bail!("checks[{i}] has an unknown or second condition `{extra}`");
        }
        txn = txn.check(condition);
    }
    for (i, mut m) in list("mutations")?.into_iter().enumerate() {
        let ctx = || format!("mutations[{i}]");
        let (bucket, key) = target(&mut m, default_bucket).with_context(ctx)?;
        let ttl = match (m.remove("ttl"), m.remove("ttl_ms")) {
            (Some(_), Some(_)) => bail!("mutations[{i}] has both `ttl` and `ttl_ms`"),
            (Some(serde_json::Value::String(t)), None) => Some(
                parse_duration(&t)
                    .map_err(anyhow::Error::msg)
                    .with_context(ctx)?,
            ),
            (Some(_), None) => bail!("mutations[{i}]: `ttl` must be a duration like \"30s\""),
            (None, Some(ms)) => match ms.as_u64() {
                Some(ms) if ms > 0 => Some(std::time::Duration::from_millis(ms)),
                _ => bail!(
                    "mutations[{i}]: `ttl_ms` must be a whole number of milliseconds, at least 1"
                ),
            },
            (None, None) => None,
        };
        txn = if let Some(value) = m.remove("set") {
            txn.set_json(&bucket, &key, &value)?
        } else if m.remove("delete") == Some(json!(true)) {
            txn.delete(&bucket, &key)
        } else if let Some(delta) = m.remove("increment") {
            let delta = delta
                .as_i64()
                .context("`increment` must be an integer")
                .with_context(ctx)?;
            txn.increment(&bucket, &key, delta)
        } else if let Some(path) = m.remove("set_path") {
            let path = path
                .as_str()
                .context("`set_path` must be a string")
                .with_context(ctx)?
                .to_string();
            let value = m
                .remove("value")
                .context("`set_path` needs `value`")
                .with_context(ctx)?;
            txn.set_path_json(&bucket, &key, &path, &value)?
        } else if let Some(path) = m.remove("append_path") {
            let path = path
                .as_str()
                .context("`append_path` must be a string")
                .with_context(ctx)?
                .to_string();
            let value = m
                .remove("value")
                .context("`append_path` needs `value`")
                .with_context(ctx)?;
            txn.append_path_json(&bucket, &key, &path, &value)?
        } else if let Some(path) = m.remove("delete_path") {
            let path = path
                .as_str()
                .context("`delete_path` must be a string")
                .with_context(ctx)?
                .to_string();
            txn.delete_path(&bucket, &key, &path)
        } else {
            bail!(
                "mutations[{i}] needs one of `set`, `delete`: true, `increment`, `set_path`, `delete_path`, `append_path`"
            );
        };
        if let Some(ttl) = ttl {
            txn = txn.ttl(ttl);
        }
        if let Some(extra) = m.keys().next() {
            bail!("mutations[{i}] has an unknown or second operation `{extra}`");
        }
    }
    Ok(txn)
}

/// The `bucket` (default: the command's) and `key` of a check or mutation.
fn target(
    item: &mut serde_json::Map<String, serde_json::Value>,
    default_bucket: &str,
) -> anyhow::Result<(String, String)> {
    let bucket = match item.remove("bucket") {
        None => default_bucket.to_string(),
        Some(serde_json::Value::String(b)) => b,
        Some(_) => bail!("`bucket` must be a string"),
    };
    let key = match item.remove("key") {
        Some(serde_json::Value::String(k)) => k,
        Some(_) => bail!("`key` must be a string"),
        None => bail!("missing `key`"),
    };
    Ok((bucket, key))
}
