//! The store configuration: the JSON the host was opened with.
//!
//! A configuration is a leaf (`{"type":"memory"}`, `{"type":"file","path":…}`,
//! any `type` the host's backend registry knows), optionally with the layer
//! options every configuration accepts:
//! - `"prefix": "text"` — keep this store under a key prefix of the backend;
//! - `"read_only": true` — reject every write with `read-only`.
//!
//! The guest strips the layer options and hands the rest to the host's
//! `backend.open`, which validates its own fields.

use serde_json::{Map, Value};

use crate::engine::StoreError;

/// A parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The leaf's JSON, as the host's `backend.open` receives it.
    pub leaf: String,
    pub prefix: Option<Vec<u8>>,
    pub read_only: bool,
}

/// Layer types that are part of the design but not built yet.
const PLANNED_LAYERS: &[&str] = &["caching", "migrating"];

pub fn parse(text: &str) -> Result<StoreConfig, StoreError> {
    let invalid = |why: String| StoreError::InvalidConfig(why);
    let value: Value =
        serde_json::from_str(text).map_err(|e| invalid(format!("not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("expected a JSON object".into()));
    };
    let kind = match fields.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
        Some(_) => return Err(invalid("`type` must be a non-empty string".into())),
        None => return Err(invalid("missing `type`".into())),
    };
    if PLANNED_LAYERS.contains(&kind.as_str()) {
        return Err(invalid(format!("layer type `{kind}` is not supported yet")));
    }
    let prefix = match fields.remove("prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() => Some(p.into_bytes()),
        Some(_) => return Err(invalid("`prefix` must be a non-empty string".into())),
    };
    let read_only = match fields.remove("read_only") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("`read_only` must be true or false".into())),
    };
    let leaf = Value::Object(Map::from_iter(fields)).to_string();
    Ok(StoreConfig {
        leaf,
        prefix,
        read_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_layer_options_from_the_leaf() {
        let c = parse(r#"{"type":"file","path":"/d/s.redb","prefix":"app/","read_only":true}"#)
            .unwrap();
        assert_eq!(c.prefix.as_deref(), Some(&b"app/"[..]));
        assert!(c.read_only);
        let leaf: Value = serde_json::from_str(&c.leaf).unwrap();
        assert_eq!(leaf, serde_json::json!({"type":"file","path":"/d/s.redb"}));
    }

    #[test]
    fn rejects_bad_configurations_with_the_field_named() {
        for (text, needle) in [
            ("nope", "JSON"),
            ("[]", "object"),
            ("{}", "type"),
            (r#"{"type":3}"#, "type"),
            (r#"{"type":"memory","prefix":""}"#, "prefix"),
            (r#"{"type":"memory","read_only":"yes"}"#, "read_only"),
            (r#"{"type":"caching"}"#, "caching"),
        ] {
            match parse(text) {
                Err(StoreError::InvalidConfig(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
