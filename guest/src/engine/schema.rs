//! Typed buckets: a JSON Schema subset checked on every write.
//!
//! Supported keywords: `type` (a name or a list of names: null, boolean,
//! object, array, number, integer, string), `properties`, `required`,
//! `additionalProperties` (boolean or schema), `items`, `enum`, `minimum`,
//! `maximum`, `minLength`, `maxLength` (in characters), plus the
//! annotations `title`, `description`, `$schema`, `$id`, `default`,
//! `examples`, which are accepted and ignored. Any other keyword is refused
//! when the schema is set, so nothing a user writes is silently unenforced.

use serde_json::{Map, Value as Json};

use super::StoreError;

const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$schema",
    "$id",
    "default",
    "examples",
];
const TYPES: &[&str] = &[
    "null", "boolean", "object", "array", "number", "integer", "string",
];

/// A checked schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema(Json);

impl Schema {
    /// Checks that `schema` uses only supported keywords, correctly.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let schema: Json = serde_json::from_str(text).map_err(|e| {
            StoreError::InvalidArgument(format!("the schema is not valid JSON: {e}"))
        })?;
        check_schema(&schema, "")?;
        Ok(Self(schema))
    }

    pub fn as_json(&self) -> &Json {
        &self.0
    }

    /// The first violation of `value`, as "`/path`: what is wrong".
    pub fn validate(&self, value: &Json) -> Result<(), String> {
        validate(&self.0, value, &mut String::new())
    }
}

fn bad(at: &str, why: &str) -> StoreError {
    StoreError::InvalidArgument(format!(
        "schema at `{}`: {why}",
        if at.is_empty() { "/" } else { at }
    ))
}

fn check_schema(schema: &Json, at: &str) -> Result<(), StoreError> {
    let map = match schema {
        Json::Object(map) => map,
        Json::Bool(_) => return Ok(()), // `true` accepts anything, `false` nothing
        Json::Null | Json::Number(_) | Json::String(_) | Json::Array(_) => {
            return Err(bad(at, "a schema is an object or a boolean"));
        }
    };
    for (keyword, arg) in map {
        let here = format!("{at}/{keyword}");
        match keyword.as_str() {
            "type" => {
                let names: Vec<&Json> = match arg {
                    Json::Array(items) if !items.is_empty() => items.iter().collect(),
                    Json::String(_) => vec![arg],
                    Json::Null
                    | Json::Bool(_)
                    | Json::Number(_)
                    | Json::Array(_)
                    | Json::Object(_) => {
                        return Err(bad(
                            &here,
                            "`type` is a type name or a non-empty list of them",
                        ));
                    }
                };
                for name in names {
                    if !name.as_str().is_some_and(|n| TYPES.contains(&n)) {
                        return Err(bad(&here, &format!("unknown type {name}")));
                    }
                }
            }
            "properties" => {
                let Json::Object(props) = arg else {
                    return Err(bad(&here, "`properties` is an object of schemas"));
                };
                for (name, sub) in props {
                    check_schema(sub, &format!("{here}/{name}"))?;
                }
            }
            "required" => {
                if !arg
                    .as_array()
                    .is_some_and(|names| names.iter().all(Json::is_string))
                {
                    return Err(bad(&here, "`required` is a list of member names"));
                }
            }
            "additionalProperties" | "items" => check_schema(arg, &here)?,
            "enum" => {
                if arg.as_array().is_none_or(|values| values.is_empty()) {
                    return Err(bad(&here, "`enum` is a non-empty list of values"));
                }
            }
            "minimum" | "maximum" => {
                if !arg.is_number() {
                    return Err(bad(&here, &format!("`{keyword}` is a number")));
                }
            }
            "minLength" | "maxLength" => {
                if !arg.is_u64() {
                    return Err(bad(&here, &format!("`{keyword}` is a whole number")));
                }
            }
            other if ANNOTATIONS.contains(&other) => {}
            other => return Err(bad(&here, &format!("keyword `{other}` is not supported"))),
        }
    }
    Ok(())
}

fn type_name(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "boolean",
        Json::Object(_) => "object",
        Json::Array(_) => "array",
        Json::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Json::Number(_) => "number",
        Json::String(_) => "string",
    }
}

fn has_type(value: &Json, name: &str) -> bool {
    let actual = type_name(value);
    actual == name
        || (name == "number" && actual == "integer")
        || (name == "integer" && value.as_f64().is_some_and(|f| f.fract() == 0.0))
}

fn validate(schema: &Json, value: &Json, path: &mut String) -> Result<(), String> {
    let map: &Map<String, Json> = match schema {
        Json::Bool(true) => return Ok(()),
        Json::Bool(false) => return Err(fail(path, "no value is allowed here")),
        Json::Object(map) => map,
        Json::Null | Json::Number(_) | Json::String(_) | Json::Array(_) => return Ok(()),
    };
    if let Some(types) = map.get("type") {
        let names: Vec<&str> = match types {
            Json::String(name) => vec![name.as_str()],
            Json::Array(names) => names.iter().filter_map(Json::as_str).collect(),
            Json::Null | Json::Bool(_) | Json::Number(_) | Json::Object(_) => Vec::new(),
        };
        if !names.iter().any(|n| has_type(value, n)) {
            return Err(fail(
                path,
                &format!("expected {}, got {}", names.join(" or "), type_name(value)),
            ));
        }
    }
    if let Some(Json::Array(allowed)) = map.get("enum")
        && !allowed.contains(value)
    {
        return Err(fail(
            path,
            &format!("{value} is not one of {}", Json::Array(allowed.clone())),
        ));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = map.get("minimum").and_then(Json::as_f64)
            && n < min
        {
            return Err(fail(
                path,
                &format!("{value} is less than the minimum {min}"),
            ));
        }
        if let Some(max) = map.get("maximum").and_then(Json::as_f64)
            && n > max
        {
            return Err(fail(
                path,
                &format!("{value} is more than the maximum {max}"),
            ));
        }
    }
    if let Json::String(s) = value {
        let chars = u64::try_from(s.chars().count()).unwrap_or(u64::MAX);
        if let Some(min) = map.get("minLength").and_then(Json::as_u64)
            && chars < min
        {
            return Err(fail(path, &format!("shorter than {min} characters")));
        }
        if let Some(max) = map.get("maxLength").and_then(Json::as_u64)
            && chars > max
        {
            return Err(fail(path, &format!("longer than {max} characters")));
        }
    }
    if let Json::Object(members) = value {
        if let Some(Json::Array(required)) = map.get("required") {
            for name in required.iter().filter_map(Json::as_str) {
                if !members.contains_key(name) {
                    return Err(fail(path, &format!("missing required member `{name}`")));
                }
            }
        }
        let props = map.get("properties").and_then(Json::as_object);
        for (name, member) in members {
            let sub = props.and_then(|p| p.get(name));
            let len = path.len();
            path.push('/');
            path.push_str(&name.replace('~', "~0").replace('/', "~1"));
            let result = match (sub, map.get("additionalProperties")) {
                (Some(sub), _) => validate(sub, member, path),
                (None, Some(extra)) => validate(extra, member, path).map_err(|e| {
                    if extra == &Json::Bool(false) {
                        format!("`{path}`: member `{name}` is not allowed")
                    } else {
                        e
                    }
                }),
                (None, None) => Ok(()),
            };
            path.truncate(len);
            result?;
        }
    }
    if let (Json::Array(items), Some(item_schema)) = (value, map.get("items")) {
        for (i, item) in items.iter().enumerate() {
            let len = path.len();
            path.push('/');
            path.push_str(&i.to_string());
            let result = validate(item_schema, item, path);
            path.truncate(len);
            result?;
        }
    }
    Ok(())
}

fn fail(path: &str, why: &str) -> String {
    format!("`{}`: {why}", if path.is_empty() { "/" } else { path })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema(s: Json) -> Schema {
        Schema::parse(&s.to_string()).unwrap()
    }

    #[test]
    fn the_device_schema() {
        let s = schema(json!({
            "type": "object",
            "required": ["alias", "name"],
            "additionalProperties": false,
            "properties": {
                "alias": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 255}},
                "name": {"type": "string", "minLength": 1, "maxLength": 64},
                "kind": {"enum": ["sensor", "actuator"]},
                "note": {"type": ["string", "null"]}
            }
        }));
        assert_eq!(
            s.validate(&json!({"alias": [1, 5, 42], "name": "backyard shed sensor"})),
            Ok(())
        );
        assert_eq!(
            s.validate(&json!({"alias": [], "name": "x", "kind": "sensor", "note": null})),
            Ok(())
        );
        for (value, error) in [
            (json!([1]), "`/`: expected object, got array"),
            (json!({"alias": [1]}), "`/`: missing required member `name`"),
            (
                json!({"alias": [1, "5"], "name": "x"}),
                "`/alias/1`: expected integer, got string",
            ),
            (
                json!({"alias": [1, 300], "name": "x"}),
                "`/alias/1`: 300 is more than the maximum 255",
            ),
            (
                json!({"alias": [], "name": ""}),
                "`/name`: shorter than 1 characters",
            ),
            (
                json!({"alias": [], "name": "x", "kind": "lamp"}),
                "`/kind`: \"lamp\" is not one of [\"sensor\",\"actuator\"]",
            ),
            (
                json!({"alias": [], "name": "x", "colour": 1}),
                "`/colour`: member `colour` is not allowed",
            ),
            (
                json!({"alias": [], "name": "x", "note": 1}),
                "`/note`: expected string or null, got integer",
            ),
        ] {
            assert_eq!(s.validate(&value), Err(error.to_string()), "{value}");
        }
    }

    #[test]
    fn numbers_and_integers() {
        let int = schema(json!({"type": "integer"}));
        assert!(int.validate(&json!(3)).is_ok());
        assert!(
            int.validate(&json!(3.0)).is_ok(),
            "3.0 is an integer in JSON Schema"
        );
        assert!(int.validate(&json!(3.5)).is_err());
        let num = schema(json!({"type": "number", "minimum": -1.5}));
        assert!(num.validate(&json!(7)).is_ok());
        assert!(num.validate(&json!(-2)).is_err());
        assert!(
            schema(json!(true))
                .validate(&json!({"anything": 1}))
                .is_ok()
        );
        assert!(
            schema(json!({"properties": {"x": false}}))
                .validate(&json!({"x": 1}))
                .is_err()
        );
    }

    #[test]
    fn unsupported_or_malformed_schemas_are_refused() {
        for (bad_schema, needle) in [
            (
                json!({"pattern": "^a"}),
                "keyword `pattern` is not supported",
            ),
            (json!({"type": "float"}), "unknown type"),
            (json!({"type": []}), "`type`"),
            (
                json!({"properties": {"a": {"oneOf": []}}}),
                "/properties/a/oneOf",
            ),
            (json!({"required": "a"}), "`required`"),
            (json!({"enum": []}), "`enum`"),
            (json!({"minLength": -1}), "`minLength`"),
            (json!(3), "object or a boolean"),
        ] {
            match Schema::parse(&bad_schema.to_string()) {
                Err(StoreError::InvalidArgument(why)) => {
                    assert!(why.contains(needle), "{bad_schema}: {why}")
                }
                other => panic!("{bad_schema}: {other:?}"),
            }
        }
        assert!(
            Schema::parse(&json!({"title": "t", "$schema": "x", "description": "d"}).to_string())
                .is_ok()
        );
    }
}
