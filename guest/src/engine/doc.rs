//! JSON documents: RFC 6901 JSON Pointers into a stored value.
//!
//! pyzdb's `db['l'][4]` is the pointer `/l/4`; `""` is the whole document.
//! `~1` stands for `/` and `~0` for `~` inside a token. An array token is a
//! decimal index without leading zeros, or `-` (one past the end: where
//! `set` appends).

use serde_json::Value as Json;

use super::StoreError;

/// A parsed pointer: its tokens, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pointer {
    text: String,
    tokens: Vec<String>,
}

/// Longest pointer accepted, in bytes.
pub const MAX_POINTER_LEN: usize = 4096;

impl Pointer {
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let invalid = |why: &str| StoreError::InvalidPath(format!("`{text}`: {why}"));
        if text.len() > MAX_POINTER_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        if text.is_empty() {
            return Ok(Self {
                text: String::new(),
                tokens: Vec::new(),
            });
        }
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| invalid("a pointer is empty or starts with `/`"))?;
        let tokens = rest
            .split('/')
            .map(|raw| {
                let mut out = String::with_capacity(raw.len());
                let mut chars = raw.chars();
                while let Some(c) = chars.next() {
                    if c != '~' {
                        out.push(c);
                        continue;
                    }
                    match chars.next() {
                        Some('0') => out.push('~'),
                        Some('1') => out.push('/'),
                        _ => return Err(invalid("`~` must be followed by 0 or 1")),
                    }
                }
                Ok(out)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            text: text.to_string(),
            tokens,
        })
    }

    pub fn is_root(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The pointer made of the first `n` tokens, for error messages.
    fn prefix(&self, n: usize) -> String {
        let mut out = String::new();
        for token in self.tokens.iter().take(n) {
            out.push('/');
            out.push_str(&token.replace('~', "~0").replace('/', "~1"));
        }
        out
    }

    fn not_found(&self, depth: usize) -> StoreError {
        StoreError::PathNotFound(format!("`{}` does not exist", self.prefix(depth + 1)))
    }

    fn mismatch(&self, depth: usize, found: &Json) -> StoreError {
        StoreError::PathTypeMismatch(format!(
            "`{}` is {}, it has no member `{}`",
            if depth == 0 {
                String::new()
            } else {
                self.prefix(depth)
            },
            kind(found),
            self.tokens.get(depth).map_or("", String::as_str)
        ))
    }
}

impl std::fmt::Display for Pointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

fn kind(v: &Json) -> &'static str {
    match v {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

/// An array index token: decimal without leading zeros. `len` allows `-`.
fn index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if token == "-" {
        return allow_end.then_some(len);
    }
    let valid = !token.is_empty()
        && token.bytes().all(|b| b.is_ascii_digit())
        && (token == "0" || !token.starts_with('0'));
    if !valid {
        return None;
    }
    token.parse().ok()
}

/// The value at `ptr`.
pub fn get<'a>(doc: &'a Json, ptr: &Pointer) -> Result<&'a Json, StoreError> {
    let mut at = doc;
    for (depth, token) in ptr.tokens.iter().enumerate() {
        at = match at {
            Json::Object(map) => map.get(token).ok_or_else(|| ptr.not_found(depth))?,
            Json::Array(items) => index(token, items.len(), false)
                .and_then(|i| items.get(i))
                .ok_or_else(|| ptr.not_found(depth))?,
            scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
                return Err(ptr.mismatch(depth, scalar));
            }
        };
    }
    Ok(at)
}

/// The container holding the pointer's last token, which must exist.
fn parent_mut<'a>(doc: &'a mut Json, ptr: &Pointer) -> Result<&'a mut Json, StoreError> {
    let mut at = doc;
    let last = ptr.tokens.len().saturating_sub(1);
    for (depth, token) in ptr.tokens.iter().take(last).enumerate() {
        at = match at {
            Json::Object(map) => map.get_mut(token).ok_or_else(|| ptr.not_found(depth))?,
            Json::Array(items) => {
                let len = items.len();
                index(token, len, false)
                    .and_then(|i| items.get_mut(i))
                    .ok_or_else(|| ptr.not_found(depth))?
            }
            scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
                return Err(ptr.mismatch(depth, scalar));
            }
        };
    }
    Ok(at)
}

/// Sets the value at `ptr`: replaces an object member or array element,
/// adds a missing member, appends at index `len` or `-`. The parent must exist.
pub fn set(doc: &mut Json, ptr: &Pointer, value: Json) -> Result<(), StoreError> {
    let Some(last) = ptr.tokens.last() else {
        *doc = value;
        return Ok(());
    };
    let depth = ptr.tokens.len() - 1;
    match parent_mut(doc, ptr)? {
        Json::Object(map) => {
            map.insert(last.clone(), value);
            Ok(())
        }
        Json::Array(items) => match index(last, items.len(), true) {
            Some(i) if i < items.len() => {
                items[i] = value;
                Ok(())
            }
            Some(i) if i == items.len() => {
                items.push(value);
                Ok(())
            }
            _ => Err(ptr.not_found(depth)),
        },
        scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
            Err(ptr.mismatch(depth, scalar))
        }
    }
}

/// Removes the value at `ptr` (array elements after it shift down).
pub fn delete(doc: &mut Json, ptr: &Pointer) -> Result<(), StoreError> {
    let Some(last) = ptr.tokens.last() else {
        return Err(StoreError::InvalidPath(
            "the root cannot be deleted by path; delete the key".into(),
        ));
    };
    let depth = ptr.tokens.len() - 1;
    match parent_mut(doc, ptr)? {
        Json::Object(map) => map
            .remove(last)
            .map(drop)
            .ok_or_else(|| ptr.not_found(depth)),
        Json::Array(items) => match index(last, items.len(), false) {
            Some(i) if i < items.len() => {
                items.remove(i);
                Ok(())
            }
            _ => Err(ptr.not_found(depth)),
        },
        scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
            Err(ptr.mismatch(depth, scalar))
        }
    }
}

/// Appends `value` to the array at `ptr`.
pub fn append(doc: &mut Json, ptr: &Pointer, value: Json) -> Result<(), StoreError> {
    let target = if ptr.is_root() {
        doc
    } else {
        let depth = ptr.tokens.len() - 1;
        let last = &ptr.tokens[depth];
        match parent_mut(doc, ptr)? {
            Json::Object(map) => map.get_mut(last).ok_or_else(|| ptr.not_found(depth))?,
            Json::Array(items) => {
                let len = items.len();
                index(last, len, false)
                    .and_then(|i| items.get_mut(i))
                    .ok_or_else(|| ptr.not_found(depth))?
            }
            scalar @ (Json::Null | Json::Bool(_) | Json::Number(_) | Json::String(_)) => {
                return Err(ptr.mismatch(depth, scalar));
            }
        }
    };
    match target {
        Json::Array(items) => {
            items.push(value);
            Ok(())
        }
        other @ (Json::Null
        | Json::Bool(_)
        | Json::Number(_)
        | Json::String(_)
        | Json::Object(_)) => Err(StoreError::PathTypeMismatch(format!(
            "`{ptr}` is {}, not an array",
            kind(other)
        ))),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(text: &str) -> Pointer {
        Pointer::parse(text).unwrap()
    }

    #[test]
    fn parses_rfc6901_examples() {
        let doc = json!({
            "foo": ["bar", "baz"], "": 0, "a/b": 1, "c%d": 2, "e^f": 3,
            "g|h": 4, "i\\j": 5, "k\"l": 6, " ": 7, "m~n": 8
        });
        for (ptr, want) in [
            ("", doc.clone()),
            ("/foo", json!(["bar", "baz"])),
            ("/foo/0", json!("bar")),
            ("/", json!(0)),
            ("/a~1b", json!(1)),
            ("/c%d", json!(2)),
            ("/e^f", json!(3)),
            ("/g|h", json!(4)),
            ("/i\\j", json!(5)),
            ("/k\"l", json!(6)),
            ("/ ", json!(7)),
            ("/m~0n", json!(8)),
        ] {
            assert_eq!(get(&doc, &p(ptr)).unwrap(), &want, "{ptr}");
        }
        for bad in ["foo", "/a~2", "/a~"] {
            assert!(
                matches!(Pointer::parse(bad), Err(StoreError::InvalidPath(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_pyzdb_session() {
        // db['l'] = range(10); db['l'][4] = ['a','b','c']; db['l'][4].append('d')
        let mut db = json!({"x": 3});
        set(&mut db, &p("/l"), json!([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])).unwrap();
        set(&mut db, &p("/l/4"), json!(["a", "b", "c"])).unwrap();
        append(&mut db, &p("/l/4"), json!("d")).unwrap();
        assert_eq!(
            db,
            json!({"x": 3, "l": [0, 1, 2, 3, ["a", "b", "c", "d"], 5, 6, 7, 8, 9]})
        );
        assert_eq!(get(&db, &p("/l/4/3")).unwrap(), &json!("d"));
    }

    #[test]
    fn set_appends_at_the_end_and_replaces_the_root() {
        let mut doc = json!({"l": [1]});
        set(&mut doc, &p("/l/1"), json!(2)).unwrap();
        set(&mut doc, &p("/l/-"), json!(3)).unwrap();
        assert_eq!(doc, json!({"l": [1, 2, 3]}));
        assert!(matches!(
            set(&mut doc, &p("/l/9"), json!(0)),
            Err(StoreError::PathNotFound(_))
        ));
        set(&mut doc, &p(""), json!("new")).unwrap();
        assert_eq!(doc, json!("new"));
    }

    #[test]
    fn delete_removes_members_and_shifts_arrays() {
        let mut doc = json!({"a": {"b": 1, "c": 2}, "l": [1, 2, 3]});
        delete(&mut doc, &p("/a/b")).unwrap();
        delete(&mut doc, &p("/l/0")).unwrap();
        assert_eq!(doc, json!({"a": {"c": 2}, "l": [2, 3]}));
        assert!(matches!(
            delete(&mut doc, &p("/a/b")),
            Err(StoreError::PathNotFound(_))
        ));
        assert!(matches!(
            delete(&mut doc, &p("/l/-")),
            Err(StoreError::PathNotFound(_))
        ));
        assert!(matches!(
            delete(&mut doc, &p("")),
            Err(StoreError::InvalidPath(_))
        ));
    }

    #[test]
    fn errors_name_the_failing_path() {
        let mut doc = json!({"a": {"n": 5}, "l": [0]});
        let missing = get(&doc, &p("/a/zz/q")).unwrap_err();
        assert_eq!(
            missing,
            StoreError::PathNotFound("`/a/zz` does not exist".into())
        );
        let mismatch = set(&mut doc, &p("/a/n/deeper"), json!(1)).unwrap_err();
        assert_eq!(
            mismatch,
            StoreError::PathTypeMismatch("`/a/n` is a number, it has no member `deeper`".into())
        );
        for bad_index in ["/l/01", "/l/x", "/l/-1", "/l/1"] {
            assert!(
                matches!(get(&doc, &p(bad_index)), Err(StoreError::PathNotFound(_))),
                "{bad_index}"
            );
        }
        let not_array = append(&mut doc, &p("/a"), json!(1)).unwrap_err();
        assert_eq!(
            not_array,
            StoreError::PathTypeMismatch("`/a` is an object, not an array".into())
        );
        assert!(matches!(
            append(&mut doc, &p("/nope"), json!(1)),
            Err(StoreError::PathNotFound(_))
        ));
    }
}
