//! How user keys become storage keys, and the limits on both.
//!
//! A data record of key `k` in bucket `b` lives at `"k" b 0x00 k`. Bucket names
//! hold no byte below 0x20, so the NUL ends the name unambiguously, a bucket's
//! keys are contiguous, and they sort in the byte order of the user keys. The
//! other leading bytes are reserved for the engine's own records, which user
//! keys can never reach:
//!
//! - `"e"`: never stored; deleted by commits that remove expired keys, to
//!   mark them in the change feed.
//! - `"x" expires_at(u64 BE) data_key` → empty: the expiry index. Written in
//!   the same commit as a record with a TTL, so a sweep finds what expired
//!   by scanning `"x"` up to now, in O(expired keys).

use super::StoreError;
use super::limits::{Limits, limits};

pub const MAX_BUCKET_LEN: usize = 256;

/// A delete of this key in a commit marks the commit's deletes as
/// expirations (the sweep and lazy reclamation write it), so watchers can
/// tell `expire` from `delete`. Nothing is ever stored under it.
pub const EXPIRY_MARKER: &[u8] = b"e";

const DATA_TAG: u8 = b'k';
const EXPIRY_TAG: u8 = b'x';
const CURSOR_TAG: &str = "c1";
const REVERSE_CURSOR_TAG: &str = "r1";

pub fn validate_bucket(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::InvalidBucket("bucket name is empty".into()));
    }
    if name.len() > MAX_BUCKET_LEN {
        return Err(StoreError::InvalidBucket(format!(
            "bucket name is {} bytes, at most {MAX_BUCKET_LEN} are allowed",
            name.len()
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(StoreError::InvalidBucket(
            "bucket name contains a control character".into(),
        ));
    }
    Ok(())
}

pub fn validate_key(key: &str) -> Result<(), StoreError> {
    if key.is_empty() {
        return Err(StoreError::InvalidKey("key is empty".into()));
    }
    let most = limits().key_bytes;
    if key.len() > most {
        return Err(StoreError::InvalidKey(format!(
            "key is {} bytes, at most {most} are allowed (limits.key_bytes)",
            key.len()
        )));
    }
    Ok(())
}

/// The storage prefix every key of `bucket` starts with.
pub fn bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(bucket.len() + 2);
    out.push(DATA_TAG);
    out.extend_from_slice(bucket.as_bytes());
    out.push(0);
    out
}

pub fn data_key(bucket: &str, key: &str) -> Vec<u8> {
    let mut out = bucket_prefix(bucket);
    out.extend_from_slice(key.as_bytes());
    out
}

/// The bucket and user key of a data key, or `None` for an engine key.
pub fn split_data_key(storage_key: &[u8]) -> Option<(&str, &str)> {
    let bucket = bucket_of(storage_key)?;
    let rest = storage_key.get(bucket.len() + 2..)?;
    Some((bucket, std::str::from_utf8(rest).ok()?))
}

/// The first storage key after every key of every bucket.
pub fn data_end() -> Vec<u8> {
    vec![DATA_TAG + 1]
}

/// The first storage key of the first bucket after `bucket` (names have no
/// byte below 0x20, so `name 0x01` sorts after all of `name 0x00 ...`).
pub fn after_bucket(bucket: &str) -> Vec<u8> {
    let mut out = bucket_prefix(bucket);
    if let Some(last) = out.last_mut() {
        *last = 1;
    }
    out
}

/// The bucket a data key belongs to, or `None` if it is not a data key.
pub fn bucket_of(storage_key: &[u8]) -> Option<&str> {
    let rest = storage_key.strip_prefix(&[DATA_TAG])?;
    let end = rest.iter().position(|b| *b == 0)?;
    std::str::from_utf8(rest.get(..end)?).ok()
}

/// The user key of a data key of `bucket`.
pub fn user_key<'a>(bucket_prefix: &[u8], storage_key: &'a [u8]) -> Result<&'a str, StoreError> {
    let rest = storage_key
        .strip_prefix(bucket_prefix)
        .ok_or_else(|| StoreError::Corrupt("storage returned a key outside the range".into()))?;
    std::str::from_utf8(rest).map_err(|_| StoreError::Corrupt("stored key is not UTF-8".into()))
}

/// The smallest byte string greater than every string starting with `prefix`,
/// or `None` if there is none (a prefix of only 0xFF bytes).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The expiry-index key of a record at `data_key` expiring at `expires_at_ms`.
pub fn expiry_key(expires_at_ms: u64, data_key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + data_key.len());
    out.push(EXPIRY_TAG);
    out.extend_from_slice(&expires_at_ms.to_be_bytes());
    out.extend_from_slice(data_key);
    out
}

/// The range of expiry-index keys of records expired at `now_ms`.
pub fn expired_range(now_ms: u64) -> (Vec<u8>, Vec<u8>) {
    (vec![EXPIRY_TAG], expiry_key(now_ms.saturating_add(1), &[]))
}

/// The expiry and data key an expiry-index key names.
pub fn parse_expiry_key(key: &[u8]) -> Option<(u64, &[u8])> {
    let rest = key.strip_prefix(&[EXPIRY_TAG])?;
    let (at, data_key) = rest.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*at), data_key))
}

/// An opaque list cursor naming the last key returned, and the direction.
pub fn encode_cursor(last_key: &str, reverse: bool) -> String {
    let tag = if reverse {
        REVERSE_CURSOR_TAG
    } else {
        CURSOR_TAG
    };
    let mut out = String::with_capacity(tag.len() + 2 * last_key.len());
    out.push_str(tag);
    for byte in last_key.bytes() {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The last key named by a cursor from [`encode_cursor`] for a listing in
/// direction `reverse`.
pub fn decode_cursor(cursor: &str, reverse: bool) -> Result<String, StoreError> {
    let tag = if reverse {
        REVERSE_CURSOR_TAG
    } else {
        CURSOR_TAG
    };
    let hex = cursor.strip_prefix(tag).ok_or(StoreError::InvalidCursor)?;
    // Any stored key, whatever the limit is now.
    if hex.len() % 2 != 0 || hex.len() > 2 * Limits::MOST.key_bytes {
        return Err(StoreError::InvalidCursor);
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        _ => Err(StoreError::InvalidCursor),
    };
    let bytes = hex
        .as_bytes()
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => Ok(nibble(*hi)? << 4 | nibble(*lo)?),
            _ => Err(StoreError::InvalidCursor),
        })
        .collect::<Result<Vec<u8>, _>>()?;
    let key = String::from_utf8(bytes).map_err(|_| StoreError::InvalidCursor)?;
    // Any stored key, whatever the limit is now (the length was checked
    // above against the most a key may be).
    if key.is_empty() {
        return Err(StoreError::InvalidCursor);
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let a = data_key("a", "zzz");
        let aa = data_key("aa", "");
        assert!(a < after_bucket("a"));
        assert!(after_bucket("a") <= aa);
        assert!(data_key("b", "\u{10FFFF}") < data_end());
        assert_eq!(bucket_of(&data_key("my bucket", "k\0x")), Some("my bucket"));
        assert_eq!(bucket_of(b"m-meta"), None);
    }

    #[test]
    fn prefix_end_handles_carry() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
    }

    #[test]
    fn cursor_round_trips_and_rejects_forgeries() {
        for key in ["a", "sensor_000123", "ünï\0côde", "\u{10FFFF}"] {
            assert_eq!(
                decode_cursor(&encode_cursor(key, false), false).unwrap(),
                key
            );
            assert_eq!(decode_cursor(&encode_cursor(key, true), true).unwrap(), key);
        }
        for bad in ["", "c1", "c2aa", "c1a", "c1zz", "c1ff", "xx61"] {
            assert_eq!(
                decode_cursor(bad, false),
                Err(StoreError::InvalidCursor),
                "{bad}"
            );
        }
        // A cursor only continues a listing in its own direction.
        assert_eq!(
            decode_cursor(&encode_cursor("a", false), true),
            Err(StoreError::InvalidCursor)
        );
        assert_eq!(
            decode_cursor(&encode_cursor("a", true), false),
            Err(StoreError::InvalidCursor)
        );
    }

    #[test]
    fn expiry_index_orders_by_time_then_key() {
        let early = expiry_key(5, &data_key("b", "z"));
        let late = expiry_key(6, &data_key("a", "a"));
        assert!(early < late);
        let (start, end) = expired_range(5);
        assert!(start <= early && early < end && late >= end);
        assert_eq!(parse_expiry_key(&late), Some((6, &data_key("a", "a")[..])));
        assert_eq!(parse_expiry_key(b"x123"), None);
        assert_eq!(parse_expiry_key(&data_key("a", "a")), None);
    }

    #[test]
    fn limits_are_enforced() {
        assert!(validate_key(&"k".repeat(Limits::DEFAULT.key_bytes)).is_ok());
        assert!(validate_key(&"k".repeat(Limits::DEFAULT.key_bytes + 1)).is_err());
        assert!(validate_key("").is_err());
        assert!(validate_bucket("").is_err());
        assert!(validate_bucket("a\nb").is_err());
        assert!(validate_bucket("a\0b").is_err());
        assert!(validate_bucket("devices/aliases").is_ok());
    }
}
