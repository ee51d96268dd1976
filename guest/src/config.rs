//! The store configuration: the JSON the host was opened with.
//!
//! A configuration is a leaf (`{"type":"memory"}`, `{"type":"file","path":…}`,
//! any `type` the host's backend registry knows), optionally with the layer
//! options every configuration accepts:
//! - `"prefix": "text"` — keep this store under a key prefix of the backend;
//! - `"read_only": true` — reject every write with `read-only`;
//! - `"retry_deadline_ms": N` — how long a write retries races it lost to
//!   other writers (with backoff) before `contention`; 10,000 by default;
//! - `"stores": {"NAME": "BUCKET", …}` — the store names (`wasi:keyvalue`
//!   identifiers, Spin labels) apps may open, and the bucket each opens; see
//!   [`StoreNames`].
//!
//! The guest strips the layer options and hands the rest to the host's
//! `backend.open`, which validates its own fields.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::engine::{StoreError, validate_bucket};

/// A parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    /// The leaf's JSON, as the host's `backend.open` receives it.
    pub leaf: String,
    pub prefix: Option<Vec<u8>>,
    pub read_only: bool,
    pub retry_deadline_ms: u64,
    pub stores: StoreNames,
}

/// The bucket that store name `""` and `"default"` open.
pub const DEFAULT_BUCKET: &str = "default";

/// How the store names apps open (`wasi:keyvalue` `open(identifier)`, Spin's
/// `Store::open(label)`) map to buckets.
///
/// - `""` (wasmtime's and wasmCloud's default store) means `"default"`.
/// - Without a `stores` map, every name is the bucket of that name, and
///   `"default"` is the bucket `default` (the CLI's default bucket).
/// - With a map, only its names open (others are `no-such-store`, as in a
///   Spin runtime config that does not define the label), each to its bucket.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StoreNames {
    map: Option<BTreeMap<String, String>>,
}

impl StoreNames {
    /// The bucket store `name` opens; `InvalidBucket` (`no-such-store`) if
    /// there is none.
    pub fn resolve(&self, name: &str) -> Result<String, StoreError> {
        let name = if name.is_empty() {
            DEFAULT_BUCKET
        } else {
            name
        };
        match &self.map {
            None => {
                validate_bucket(name)?;
                Ok(name.to_string())
            }
            Some(map) => map.get(name).cloned().ok_or_else(|| {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                StoreError::InvalidBucket(format!(
                    "no store named `{name}` is configured (the configuration's `stores` has: {})",
                    known.join(", ")
                ))
            }),
        }
    }

    fn parse(value: Value) -> Result<Self, StoreError> {
        let invalid = |why: String| StoreError::InvalidConfig(why);
        let Value::Object(fields) = value else {
            return Err(invalid(
                "`stores` must be an object of store names to bucket names".into(),
            ));
        };
        let mut map = BTreeMap::new();
        for (name, bucket) in fields {
            let Value::String(bucket) = bucket else {
                return Err(invalid(format!(
                    "`stores.{name}` must be a bucket name (a string)"
                )));
            };
            validate_bucket(&bucket).map_err(|e| invalid(format!("`stores.{name}`: {e}")))?;
            map.insert(name, bucket);
        }
        Ok(StoreNames { map: Some(map) })
    }
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
    let retry_deadline_ms = match fields.remove("retry_deadline_ms") {
        None | Some(Value::Null) => crate::engine::DEFAULT_RETRY_DEADLINE_MS,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|ms| ms <= 3_600_000) => {
            n.as_u64().unwrap_or_default()
        }
        Some(_) => {
            return Err(invalid(
                "`retry_deadline_ms` must be a whole number of milliseconds, at most 3600000"
                    .into(),
            ));
        }
    };
    let stores = match fields.remove("stores") {
        None | Some(Value::Null) => StoreNames::default(),
        Some(value) => StoreNames::parse(value)?,
    };
    let leaf = Value::Object(Map::from_iter(fields)).to_string();
    Ok(StoreConfig {
        leaf,
        prefix,
        read_only,
        retry_deadline_ms,
        stores,
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
            (
                r#"{"type":"memory","retry_deadline_ms":-1}"#,
                "retry_deadline_ms",
            ),
            (
                r#"{"type":"memory","retry_deadline_ms":1e9}"#,
                "retry_deadline_ms",
            ),
            (r#"{"type":"caching"}"#, "caching"),
            (r#"{"type":"memory","stores":[]}"#, "stores"),
            (r#"{"type":"memory","stores":{"a":3}}"#, "stores.a"),
            (r#"{"type":"memory","stores":{"a":""}}"#, "stores.a"),
        ] {
            match parse(text) {
                Err(StoreError::InvalidConfig(why)) => assert!(why.contains(needle), "{why}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn store_names_default_to_buckets_of_that_name() {
        let names = parse(r#"{"type":"memory"}"#).unwrap().stores;
        assert_eq!(names.resolve("").unwrap(), "default");
        assert_eq!(names.resolve("default").unwrap(), "default");
        assert_eq!(names.resolve("cache").unwrap(), "cache");
        assert!(matches!(
            names.resolve("bad\u{7}name"),
            Err(StoreError::InvalidBucket(_))
        ));
    }

    #[test]
    fn a_stores_map_limits_and_renames() {
        let c = parse(r#"{"type":"memory","stores":{"default":"main","cache":"tmp"}}"#).unwrap();
        let leaf: Value = serde_json::from_str(&c.leaf).unwrap();
        assert_eq!(leaf, serde_json::json!({"type":"memory"}));
        assert_eq!(c.stores.resolve("").unwrap(), "main");
        assert_eq!(c.stores.resolve("default").unwrap(), "main");
        assert_eq!(c.stores.resolve("cache").unwrap(), "tmp");
        match c.stores.resolve("other") {
            Err(StoreError::InvalidBucket(why)) => assert!(why.contains("cache, default"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
