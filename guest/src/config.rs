//! The store configuration: the JSON the host was opened with, a tree.
//!
//! A node is a **leaf** (`{"type":"memory"}`, `{"type":"file","path":…}`,
//! any `type` the host's backend registry knows) or a **layer** over other
//! nodes:
//! - `{"type":"caching","main":NODE,"policy":{…},"buckets":{…}}` — a cache
//!   in the component's memory in front of `main` ([`CachePolicy`]);
//! - `{"type":"migrating","from":NODE,"to":NODE}` — reads from `from`,
//!   writes to both, while `kvstash migrate` copies `from` into `to`.
//!
//! Every node accepts the options the guest handles itself:
//! - `"prefix": "text"` — keep the node's records under a key prefix of
//!   what is below it;
//! - `"read_only": true` — reject every write through it with `read-only`.
//!
//! The root also accepts:
//! - `"retry_deadline_ms": N` — how long a write retries races it lost to
//!   other writers (with backoff) before `contention`; 10,000 by default;
//! - `"limits": {"key_bytes": N, "value_bytes": N, "depth": N, "batch": N}`
//!   — what the store accepts ([`Limits`]: 4096, 8 MiB, 127 and 1000 by
//!   default, at most [`Limits::MOST`]); any may be left out;
//! - `"stores": {"NAME": "BUCKET", …}` — the store names (`wasi:keyvalue`
//!   identifiers, Spin labels) apps may open, and the bucket each opens; see
//!   [`StoreNames`].
//!
//! The whole tree is checked before anything opens; an error names the
//! offending field by its path from the root (`$.main.from.prefix`). A
//! leaf, without the guest's options, is what the host's `backend.open`
//! receives; the host checks its fields.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

pub use crate::engine::CachePolicy;
use crate::engine::{Limits, StoreError, validate_bucket};

/// A parsed configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreConfig {
    pub root: Node,
    pub retry_deadline_ms: u64,
    pub limits: Limits,
    pub stores: StoreNames,
}

/// One node of the tree, with the options every node has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Where it is in the configuration (`$`, `$.main`, …), for errors.
    pub path: String,
    pub kind: NodeKind,
    pub prefix: Option<Vec<u8>>,
    pub read_only: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    /// The JSON the host's `backend.open` receives.
    Leaf(String),
    Caching {
        main: Box<Node>,
        policy: CachePolicy,
        /// Policies of their own for some buckets' keys.
        buckets: BTreeMap<String, CachePolicy>,
    },
    Migrating {
        from: Box<Node>,
        to: Box<Node>,
    },
}

impl Node {
    /// The leaves under this node (itself, if it is one), left to right.
    pub fn leaves(&self) -> Vec<&str> {
        match &self.kind {
            NodeKind::Leaf(config) => vec![config],
            NodeKind::Caching { main, .. } => main.leaves(),
            NodeKind::Migrating { from, to } => {
                let mut leaves = from.leaves();
                leaves.extend(to.leaves());
                leaves
            }
        }
    }
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

    fn parse(value: Value, at: &str) -> Result<Self, StoreError> {
        let Value::Object(fields) = value else {
            return Err(invalid(
                at,
                "must be an object of store names to bucket names",
            ));
        };
        let mut map = BTreeMap::new();
        for (name, bucket) in fields {
            let at = field_path(at, &name);
            let Value::String(bucket) = bucket else {
                return Err(invalid(&at, "must be a bucket name (a string)"));
            };
            validate_bucket(&bucket).map_err(|e| invalid(&at, &e.to_string()))?;
            map.insert(name, bucket);
        }
        Ok(StoreNames { map: Some(map) })
    }
}

/// The error for the field at `path`.
fn invalid(path: &str, why: &str) -> StoreError {
    StoreError::InvalidConfig(format!("`{path}` {why}"))
}

/// The path of field `name` of the object at `path`.
fn field_path(path: &str, name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{name}")
    } else {
        format!("{path}[{}]", Value::String(name.into()))
    }
}

/// The fields only the root may have.
const ROOT_OPTIONS: [&str; 3] = ["retry_deadline_ms", "limits", "stores"];

pub fn parse(text: &str) -> Result<StoreConfig, StoreError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| StoreError::InvalidConfig(format!("not valid JSON: {e}")))?;
    let Value::Object(mut fields) = value else {
        return Err(invalid("$", "must be a JSON object"));
    };
    let retry_deadline_ms = match fields.remove("retry_deadline_ms") {
        None | Some(Value::Null) => crate::engine::DEFAULT_RETRY_DEADLINE_MS,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|ms| ms <= 3_600_000) => {
            n.as_u64().unwrap_or_default()
        }
        Some(_) => {
            return Err(invalid(
                "$.retry_deadline_ms",
                "must be a whole number of milliseconds, at most 3600000",
            ));
        }
    };
    let limits = match fields.remove("limits") {
        None | Some(Value::Null) => Limits::DEFAULT,
        Some(value) => parse_limits(value)?,
    };
    let stores = match fields.remove("stores") {
        None | Some(Value::Null) => StoreNames::default(),
        Some(value) => StoreNames::parse(value, "$.stores")?,
    };
    let root = node(fields, "$".into())?;
    Ok(StoreConfig {
        root,
        retry_deadline_ms,
        limits,
        stores,
    })
}

/// `$.limits`: each field a whole number from 1 to its [`Limits::MOST`].
fn parse_limits(value: Value) -> Result<Limits, StoreError> {
    let Value::Object(fields) = value else {
        return Err(invalid("$.limits", "must be a JSON object"));
    };
    let mut limits = Limits::DEFAULT;
    for (name, value) in fields {
        let (slot, most) = match name.as_str() {
            "key_bytes" => (&mut limits.key_bytes, Limits::MOST.key_bytes),
            "value_bytes" => (&mut limits.value_bytes, Limits::MOST.value_bytes),
            "depth" => (&mut limits.depth, Limits::MOST.depth),
            "batch" => (&mut limits.batch, Limits::MOST.batch),
            _ => {
                return Err(invalid(
                    &field_path("$.limits", &name),
                    "is not a limit (key_bytes, value_bytes, depth, batch)",
                ));
            }
        };
        *slot = value
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|n| (1..=most).contains(n))
            .ok_or_else(|| {
                invalid(
                    &field_path("$.limits", &name),
                    &format!("must be a whole number from 1 to {most}"),
                )
            })?;
    }
    Ok(limits)
}

/// The node whose fields are `fields`, at `path`.
fn node(mut fields: Map<String, Value>, path: String) -> Result<Node, StoreError> {
    let kind = match fields.get("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind.clone(),
        Some(_) => {
            return Err(invalid(
                &field_path(&path, "type"),
                "must be a non-empty string",
            ));
        }
        None => return Err(invalid(&path, "has no `type`")),
    };
    let prefix = match fields.remove("prefix") {
        None | Some(Value::Null) => None,
        Some(Value::String(p)) if !p.is_empty() => Some(p.into_bytes()),
        Some(_) => {
            return Err(invalid(
                &field_path(&path, "prefix"),
                "must be a non-empty string",
            ));
        }
    };
    let read_only = match fields.remove("read_only") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => b,
        Some(_) => {
            return Err(invalid(
                &field_path(&path, "read_only"),
                "must be true or false",
            ));
        }
    };
    for option in ROOT_OPTIONS {
        if fields.contains_key(option) {
            return Err(invalid(
                &field_path(&path, option),
                "is an option of the whole store: give it at the root",
            ));
        }
    }
    let kind = match kind.as_str() {
        "caching" => caching(fields, &path)?,
        "migrating" => migrating(fields, &path)?,
        _ => NodeKind::Leaf(Value::Object(fields).to_string()),
    };
    Ok(Node {
        path,
        kind,
        prefix,
        read_only,
    })
}

/// Refuses fields of a layer it does not have.
fn only(fields: &Map<String, Value>, path: &str, known: &[&str]) -> Result<(), StoreError> {
    match fields.keys().find(|f| !known.contains(&f.as_str())) {
        Some(unknown) => Err(invalid(
            &field_path(path, unknown),
            &format!(
                "is not a field of this layer (it has: {}, prefix, read_only)",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// The child node in field `name`.
fn child(fields: &mut Map<String, Value>, path: &str, name: &str) -> Result<Box<Node>, StoreError> {
    let at = field_path(path, name);
    match fields.remove(name) {
        Some(Value::Object(child)) => Ok(Box::new(node(child, at)?)),
        Some(_) => Err(invalid(&at, "must be a store configuration (an object)")),
        None => Err(invalid(path, &format!("has no `{name}`"))),
    }
}

fn caching(mut fields: Map<String, Value>, path: &str) -> Result<NodeKind, StoreError> {
    only(
        &fields,
        path,
        &["type", "main", "cache", "policy", "buckets"],
    )?;
    // The cache lives in the component's memory; `cache` may say so.
    if let Some(cache) = fields.remove("cache") {
        let at = field_path(path, "cache");
        let memory = cache.as_object().is_some_and(|c| {
            c.len() == 1 && c.get("type").and_then(Value::as_str) == Some("memory")
        });
        if !memory {
            return Err(invalid(
                &at,
                "must be {\"type\":\"memory\"} (or left out): the cache is held in the component's memory",
            ));
        }
    }
    let main = child(&mut fields, path, "main")?;
    let policy = match fields.remove("policy") {
        None | Some(Value::Null) => CachePolicy::default(),
        Some(value) => cache_policy(value, &CachePolicy::default(), &field_path(path, "policy"))?,
    };
    let mut buckets = BTreeMap::new();
    match fields.remove("buckets") {
        None | Some(Value::Null) => {}
        Some(Value::Object(overrides)) => {
            let at = field_path(path, "buckets");
            for (bucket, value) in overrides {
                let at = field_path(&at, &bucket);
                validate_bucket(&bucket).map_err(|e| invalid(&at, &e.to_string()))?;
                let own = cache_policy(value, &policy, &at)?;
                buckets.insert(bucket, own);
            }
        }
        Some(_) => {
            return Err(invalid(
                &field_path(path, "buckets"),
                "must be an object of bucket names to policies",
            ));
        }
    }
    Ok(NodeKind::Caching {
        main,
        policy,
        buckets,
    })
}

/// A policy: `base` with the fields `value` gives.
fn cache_policy(value: Value, base: &CachePolicy, path: &str) -> Result<CachePolicy, StoreError> {
    let Value::Object(fields) = value else {
        return Err(invalid(path, "must be an object"));
    };
    let mut policy = base.clone();
    for (name, value) in fields {
        let at = field_path(path, &name);
        let number = |max: u64| {
            value
                .as_u64()
                .filter(|n| *n <= max)
                .ok_or_else(|| invalid(&at, &format!("must be a whole number, at most {max}")))
        };
        match name.as_str() {
            "cache" => {
                policy.cache = value
                    .as_bool()
                    .ok_or_else(|| invalid(&at, "must be true or false"))?;
            }
            "max_entries" => policy.max_entries = number(1 << 32)?,
            "max_bytes" => policy.max_bytes = number(1 << 40)?,
            "cull_to_percent" => {
                let percent = number(100)?;
                if percent == 0 {
                    return Err(invalid(&at, "must be 1 to 100"));
                }
                policy.cull_to_percent = u8::try_from(percent).unwrap_or(100);
            }
            "timeout_ms" => policy.timeout_ms = number(86_400_000)?,
            _ => {
                return Err(invalid(
                    &at,
                    "is not a policy field (they are: cache, max_entries, max_bytes, cull_to_percent, timeout_ms)",
                ));
            }
        }
    }
    Ok(policy)
}

fn migrating(mut fields: Map<String, Value>, path: &str) -> Result<NodeKind, StoreError> {
    only(&fields, path, &["type", "from", "to"])?;
    let from = child(&mut fields, path, "from")?;
    let to = child(&mut fields, path, "to")?;
    for side in [&from, &to] {
        uncached(side)?;
    }
    Ok(NodeKind::Migrating { from, to })
}

/// Refuses a caching layer at or below `node`, a side of a migration: the
/// copy must read `from` as it is, and write `to` as it is.
fn uncached(node: &Node) -> Result<(), StoreError> {
    match &node.kind {
        NodeKind::Leaf(_) => Ok(()),
        NodeKind::Caching { .. } => Err(invalid(
            &node.path,
            "is a caching layer inside a migrating layer, which is refused (a migration must read `from` as it is): put the cache above the migrating layer",
        )),
        NodeKind::Migrating { from, to } => uncached(from).and_then(|()| uncached(to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(node: &Node) -> Value {
        match &node.kind {
            NodeKind::Leaf(config) => serde_json::from_str(config).unwrap(),
            other @ (NodeKind::Caching { .. } | NodeKind::Migrating { .. }) => {
                panic!("not a leaf: {other:?}")
            }
        }
    }

    #[test]
    fn strips_layer_options_from_the_leaf() {
        let c = parse(r#"{"type":"file","path":"/d/s.redb","prefix":"app/","read_only":true}"#)
            .unwrap();
        assert_eq!(c.root.prefix.as_deref(), Some(&b"app/"[..]));
        assert!(c.root.read_only);
        assert_eq!(
            leaf(&c.root),
            serde_json::json!({"type":"file","path":"/d/s.redb"})
        );
    }

    #[test]
    fn a_tree_of_layers_over_leaves() {
        let c = parse(
            r#"{"type":"caching","read_only":true,
                "main":{"type":"migrating","from":{"type":"file","path":"a"},"to":{"type":"etcd","endpoints":["x"],"prefix":"p/"}},
                "policy":{"timeout_ms":500,"max_entries":10},
                "buckets":{"sessions":{"cache":false},"config":{"timeout_ms":60000}},
                "stores":{"default":"config"}}"#,
        )
        .unwrap();
        assert!(c.root.read_only);
        assert_eq!(c.stores.resolve("").unwrap(), "config");
        let NodeKind::Caching {
            main,
            policy,
            buckets,
        } = &c.root.kind
        else {
            panic!("{:?}", c.root.kind)
        };
        assert_eq!(policy.timeout_ms, 500);
        assert_eq!(policy.max_entries, 10);
        assert_eq!(policy.cull_to_percent, 75, "the default");
        assert!(!buckets["sessions"].cache);
        assert_eq!(buckets["sessions"].timeout_ms, 500, "the layer's policy");
        assert_eq!(buckets["config"].timeout_ms, 60_000);
        assert_eq!(buckets["config"].max_entries, 10);
        let NodeKind::Migrating { from, to } = &main.kind else {
            panic!("{:?}", main.kind)
        };
        assert_eq!(leaf(from), serde_json::json!({"type":"file","path":"a"}));
        assert_eq!(to.path, "$.main.to");
        assert_eq!(to.prefix.as_deref(), Some(&b"p/"[..]));
        assert_eq!(c.root.leaves().len(), 2);
    }

    #[test]
    fn rejects_bad_configurations_with_the_field_named() {
        for (text, needle) in [
            ("nope", "JSON"),
            ("[]", "`$` must be a JSON object"),
            ("{}", "`$` has no `type`"),
            (r#"{"type":3}"#, "`$.type`"),
            (r#"{"type":"memory","prefix":""}"#, "`$.prefix`"),
            (r#"{"type":"memory","read_only":"yes"}"#, "`$.read_only`"),
            (
                r#"{"type":"migrating","from":{"type":"memory"},"to":{"type":"caching","main":{"type":"memory"}}}"#,
                "`$.to` is a caching layer inside a migrating layer",
            ),
            (
                r#"{"type":"migrating","from":{"type":"migrating","from":{"type":"memory"},"to":{"type":"caching","main":{"type":"memory"}}},"to":{"type":"memory"}}"#,
                "`$.from.to` is a caching layer",
            ),
            (
                r#"{"type":"memory","retry_deadline_ms":-1}"#,
                "`$.retry_deadline_ms`",
            ),
            (
                r#"{"type":"memory","retry_deadline_ms":1e9}"#,
                "`$.retry_deadline_ms`",
            ),
            (r#"{"type":"memory","limits":[]}"#, "`$.limits` must be"),
            (
                r#"{"type":"memory","limits":{"keys":10}}"#,
                "`$.limits.keys` is not a limit",
            ),
            (
                r#"{"type":"memory","limits":{"depth":0}}"#,
                "`$.limits.depth` must be a whole number from 1 to 127",
            ),
            (
                r#"{"type":"memory","limits":{"depth":128}}"#,
                "`$.limits.depth` must be a whole number from 1 to 127",
            ),
            (
                r#"{"type":"memory","limits":{"value_bytes":67108865}}"#,
                "`$.limits.value_bytes` must be a whole number from 1 to 67108864",
            ),
            (
                r#"{"type":"memory","limits":{"batch":"10"}}"#,
                "`$.limits.batch`",
            ),
            (
                r#"{"type":"memory","limits":{"key_bytes":1.5}}"#,
                "`$.limits.key_bytes`",
            ),
            (r#"{"type":"memory","stores":[]}"#, "`$.stores`"),
            (r#"{"type":"memory","stores":{"a":3}}"#, "`$.stores.a`"),
            (
                r#"{"type":"memory","stores":{"a b":""}}"#,
                r#"`$.stores["a b"]`"#,
            ),
            (r#"{"type":"caching"}"#, "`$` has no `main`"),
            (
                r#"{"type":"caching","main":[]}"#,
                "`$.main` must be a store",
            ),
            (r#"{"type":"caching","main":{}}"#, "`$.main` has no `type`"),
            (
                r#"{"type":"caching","main":{"type":"memory"},"cache":{"type":"file"}}"#,
                "`$.cache`",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"mian":{}}"#,
                "`$.mian` is not a field of this layer",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"policy":{"timeout":5}}"#,
                "`$.policy.timeout` is not a policy field",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"policy":{"cull_to_percent":101}}"#,
                "`$.policy.cull_to_percent` must be a whole number, at most 100",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"policy":{"cull_to_percent":0}}"#,
                "`$.policy.cull_to_percent` must be 1 to 100",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"buckets":{"b":{"cache":1}}}"#,
                "`$.buckets.b.cache` must be true or false",
            ),
            (
                r#"{"type":"caching","main":{"type":"memory"},"buckets":{"":{}}}"#,
                r#"`$.buckets[""]`"#,
            ),
            (
                r#"{"type":"migrating","from":{"type":"memory"}}"#,
                "`$` has no `to`",
            ),
            (
                r#"{"type":"migrating","from":{"type":"memory"},"to":{"type":"memory","prefix":7}}"#,
                "`$.to.prefix`",
            ),
            (
                r#"{"type":"migrating","from":{"type":"memory","stores":{}},"to":{"type":"memory"}}"#,
                "`$.from.stores` is an option of the whole store",
            ),
            (
                r#"{"type":"caching","main":{"type":"migrating","from":{"type":"memory"},"to":{"type":""}}}"#,
                "`$.main.to.type`",
            ),
        ] {
            match parse(text) {
                Err(StoreError::InvalidConfig(why)) => {
                    assert!(why.contains(needle), "{text}: {why}");
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }

    #[test]
    fn limits_default_and_may_be_set_one_by_one() {
        assert_eq!(
            parse(r#"{"type":"memory"}"#).unwrap().limits,
            Limits::DEFAULT
        );
        let c = parse(r#"{"type":"memory","limits":{"depth":8,"batch":50}}"#).unwrap();
        assert_eq!(
            c.limits,
            Limits {
                depth: 8,
                batch: 50,
                ..Limits::DEFAULT
            }
        );
        let most = r#"{"type":"memory","limits":{"key_bytes":65536,"value_bytes":67108864,"depth":127,"batch":10000}}"#;
        assert_eq!(parse(most).unwrap().limits, Limits::MOST);
        // Not a leaf's field: the backend never sees it.
        assert_eq!(
            parse(r#"{"type":"memory","limits":{"depth":8}}"#)
                .unwrap()
                .root
                .leaves(),
            vec![r#"{"type":"memory"}"#]
        );
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
        assert_eq!(leaf(&c.root), serde_json::json!({"type":"memory"}));
        assert_eq!(c.stores.resolve("").unwrap(), "main");
        assert_eq!(c.stores.resolve("default").unwrap(), "main");
        assert_eq!(c.stores.resolve("cache").unwrap(), "tmp");
        match c.stores.resolve("other") {
            Err(StoreError::InvalidBucket(why)) => assert!(why.contains("cache, default"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
