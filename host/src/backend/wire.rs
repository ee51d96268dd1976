//! The storage interface over HTTP/JSON: what a server's `/v1/storage`
//! routes take and answer (`docs/http.md`), shared by the server
//! (`crate::serve`) and its client, the `server` backend.
//!
//! Keys and values are bytes, sent as standard base64 (RFC 4648, with
//! padding). Errors are the API's `{"error":{"code",…}}` bodies; the
//! storage errors carry their fields (`index` and `current` of a conflict,
//! `oldest` of a compacted feed), so a client rebuilds the
//! [`BackendError`] exactly.

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{BackendError, Change, Check, Entry, Scan, Write};

/// The largest body of a storage call: a commit of large values,
/// base64-encoded (a client refuses a larger one before sending it).
pub const MAX_STORAGE_BODY: usize = 128 << 20;

/// A JSON array of at most `N` items: a longer one is refused as it is
/// read, before it takes memory (a body of empty strings would be about
/// ten times its size as `Vec`s).
#[derive(Debug)]
pub struct Bounded<T, const N: usize>(pub Vec<T>);

impl<T: Serialize, const N: usize> Serialize for Bounded<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for Bounded<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Items<T, const N: usize>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> serde::de::Visitor<'de> for Items<T, N> {
            type Value = Vec<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "an array of at most {N} items")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Vec<T>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(N).min(1024));
                while let Some(item) = seq.next_element()? {
                    if items.len() == N {
                        return Err(serde::de::Error::custom(format!("more than {N} items")));
                    }
                    items.push(item);
                }
                Ok(items)
            }
        }
        d.deserialize_seq(Items::<T, N>(std::marker::PhantomData))
            .map(Bounded)
    }
}

/// Bytes, as base64 text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct B64(pub Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(B64)
            .map_err(|e| serde::de::Error::custom(format!("not base64: {e}")))
    }
}

/// A stored record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireEntry {
    pub key: B64,
    pub value: B64,
    pub version: u64,
}

impl From<Entry> for WireEntry {
    fn from(e: Entry) -> Self {
        Self {
            key: B64(e.key),
            value: B64(e.value),
            version: e.version,
        }
    }
}

impl From<WireEntry> for Entry {
    fn from(e: WireEntry) -> Self {
        Self {
            key: e.key.0,
            value: e.value.0,
            version: e.version,
        }
    }
}

/// `POST /v1/storage/get`: one slot per key in the answer.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetRequest {
    pub keys: Bounded<B64, { super::MAX_GET_MANY }>,
}

/// The answer of a get (`entries`, one per key) or a scan.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesAnswer<T> {
    pub entries: Vec<T>,
    /// A scan cut short by the server's size budget: ask again after the
    /// last key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// `POST /v1/storage/scan`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRequest {
    pub start: B64,
    #[serde(default)]
    pub end: Option<B64>,
    pub limit: u32,
    #[serde(default)]
    pub reverse: bool,
}

impl From<ScanRequest> for Scan {
    fn from(s: ScanRequest) -> Self {
        Self {
            start: s.start.0,
            end: s.end.map(|e| e.0),
            limit: s.limit,
            reverse: s.reverse,
        }
    }
}

impl From<&Scan> for ScanRequest {
    fn from(s: &Scan) -> Self {
        Self {
            start: B64(s.start.clone()),
            end: s.end.clone().map(B64),
            limit: s.limit,
            reverse: s.reverse,
        }
    }
}

/// A check of a commit: the key is at `version`, or absent (`null`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireCheck {
    pub key: B64,
    pub version: Option<u64>,
}

/// A write of a commit: `value` `null` deletes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireWrite {
    pub key: B64,
    pub value: Option<B64>,
}

/// `POST /v1/storage/commit`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    #[serde(default = "no_checks")]
    pub checks: Bounded<WireCheck, { super::MAX_COMMIT_OPS }>,
    pub writes: Bounded<WireWrite, { super::MAX_COMMIT_OPS }>,
}

fn no_checks() -> Bounded<WireCheck, { super::MAX_COMMIT_OPS }> {
    Bounded(Vec::new())
}

impl CommitRequest {
    pub fn new(checks: Vec<Check>, writes: Vec<Write>) -> Self {
        Self {
            checks: Bounded(
                checks
                    .into_iter()
                    .map(|c| match c {
                        Check::VersionIs(key, version) => WireCheck {
                            key: B64(key),
                            version: Some(version),
                        },
                        Check::Absent(key) => WireCheck {
                            key: B64(key),
                            version: None,
                        },
                    })
                    .collect(),
            ),
            writes: Bounded(
                writes
                    .into_iter()
                    .map(|w| WireWrite {
                        key: B64(w.key),
                        value: w.value.map(B64),
                    })
                    .collect(),
            ),
        }
    }

    pub fn into_parts(self) -> (Vec<Check>, Vec<Write>) {
        let checks = self
            .checks
            .0
            .into_iter()
            .map(|c| match c.version {
                Some(version) => Check::VersionIs(c.key.0, version),
                None => Check::Absent(c.key.0),
            })
            .collect();
        let writes = self
            .writes
            .0
            .into_iter()
            .map(|w| Write {
                key: w.key.0,
                value: w.value.map(|v| v.0),
            })
            .collect();
        (checks, writes)
    }
}

/// The answer of a commit, or of `GET /v1/storage/version`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionAnswer {
    pub version: u64,
}

/// One entry of the change feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WireChange {
    pub version: u64,
    pub key: B64,
    pub value: Option<B64>,
}

impl From<Change> for WireChange {
    fn from(c: Change) -> Self {
        Self {
            version: c.version,
            key: B64(c.key),
            value: c.value.map(B64),
        }
    }
}

impl From<WireChange> for Change {
    fn from(c: WireChange) -> Self {
        Self {
            version: c.version,
            key: c.key.0,
            value: c.value.map(|v| v.0),
        }
    }
}

/// `GET /v1/storage/changes`: the changes, and the newest version when
/// they were read (how far behind a follower is).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesAnswer {
    pub changes: Vec<WireChange>,
    pub version: u64,
}

/// The `{"error":{…}}` body of a failed storage call.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: WireError,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WireError {
    pub code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// A conflict's current version (`null`: absent; no field: not a
    /// conflict).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present"
    )]
    pub current: Option<Option<u64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest: Option<u64>,
}

/// A field that is there, `null` or not.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<u64>>, D::Error> {
    Option::<u64>::deserialize(d).map(Some)
}

/// The API error code of a storage error ([`crate::Error::code`]'s names).
pub fn code_of(e: &BackendError) -> &'static str {
    match e {
        BackendError::Conflict { .. } => "conflict",
        BackendError::Compacted { .. } => "compacted",
        BackendError::ReadOnly => "read-only",
        BackendError::Invalid(_) => "invalid-argument",
        BackendError::Unavailable(_) => "storage",
        BackendError::Corrupt(_) => "corrupt",
    }
}

impl From<&BackendError> for WireError {
    fn from(e: &BackendError) -> Self {
        let mut wire = WireError {
            code: code_of(e).into(),
            message: e.to_string(),
            index: None,
            current: None,
            oldest: None,
        };
        match e {
            BackendError::Conflict { index, current } => {
                wire.index = Some(*index);
                wire.current = Some(*current);
            }
            BackendError::Compacted { oldest } => wire.oldest = Some(*oldest),
            BackendError::ReadOnly
            | BackendError::Invalid(_)
            | BackendError::Unavailable(_)
            | BackendError::Corrupt(_) => {}
        }
        wire
    }
}

impl WireError {
    /// The storage error a server's answer stands for; `None` for an
    /// error that is none of them (refused by the API: 401, 403, 404…).
    pub fn to_backend(&self) -> Option<BackendError> {
        Some(match self.code.as_str() {
            "conflict" => BackendError::Conflict {
                index: self.index?,
                current: self.current?,
            },
            "compacted" => BackendError::Compacted {
                oldest: self.oldest?,
            },
            "read-only" => BackendError::ReadOnly,
            "invalid-argument" => BackendError::Invalid(self.message.clone()),
            "storage" => BackendError::Unavailable(self.message.clone()),
            "corrupt" => BackendError::Corrupt(self.message.clone()),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn every_storage_error_comes_back_as_it_left() {
        for e in [
            BackendError::Conflict {
                index: 2,
                current: None,
            },
            BackendError::Conflict {
                index: 0,
                current: Some(7),
            },
            BackendError::Compacted { oldest: 40 },
            BackendError::ReadOnly,
            BackendError::Invalid("bad".into()),
            BackendError::Unavailable("down".into()),
            BackendError::Corrupt("a page fails its checksum".into()),
        ] {
            let body = serde_json::to_string(&ErrorBody {
                error: WireError::from(&e),
            })
            .unwrap();
            let back: ErrorBody = serde_json::from_str(&body).unwrap();
            assert_eq!(back.error.to_backend(), Some(e), "{body}");
        }
    }

    #[test]
    fn bytes_travel_as_base64() {
        let entry = WireEntry::from(Entry {
            key: vec![0, 255],
            value: b"hi".to_vec(),
            version: 3,
        });
        let text = serde_json::to_string(&entry).unwrap();
        assert_eq!(text, r#"{"key":"AP8=","value":"aGk=","version":3}"#);
        assert!(
            serde_json::from_str::<WireEntry>(r#"{"key":"!","value":"","version":1}"#).is_err()
        );
    }

    /// A list longer than a call may hold is refused while it is parsed,
    /// naming the limit; one at the limit is taken.
    #[test]
    fn storage_bodies_are_bounded_while_parsed() {
        let keys = |n: usize| {
            let keys = vec![r#""AA==""#; n].join(",");
            format!(r#"{{"keys":[{keys}]}}"#)
        };
        let at_limit: GetRequest = serde_json::from_str(&keys(super::super::MAX_GET_MANY)).unwrap();
        assert_eq!(at_limit.keys.0.len(), super::super::MAX_GET_MANY);
        let e = serde_json::from_str::<GetRequest>(&keys(super::super::MAX_GET_MANY + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 10000 items"), "{e}");

        let writes = |n: usize| {
            let writes = vec![r#"{"key":"AA==","value":null}"#; n].join(",");
            format!(r#"{{"writes":[{writes}]}}"#)
        };
        let at_limit: CommitRequest =
            serde_json::from_str(&writes(super::super::MAX_COMMIT_OPS)).unwrap();
        assert_eq!(at_limit.writes.0.len(), super::super::MAX_COMMIT_OPS);
        assert!(at_limit.checks.0.is_empty());
        let e = serde_json::from_str::<CommitRequest>(&writes(super::super::MAX_COMMIT_OPS + 1))
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than 20000 items"), "{e}");
    }
}
