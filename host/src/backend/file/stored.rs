//! How format 3 stores records and changes in redb (`docs/format.md`).
//!
//! redb verifies no checksum when it reads a page, so each stored value
//! carries its own crc32: a damaged record is reported, never served. The
//! checksum covers the redb key too, so a record that a damaged page gives
//! under another key fails it as well. Versions are varints: a store's
//! versions stay far below 2^63, and a million keys save 5 MB.
//!
//! A change whose value the records table holds at the change's version
//! (the common case: the newest change of a key) is stored without it, as
//! [`Change::Current`]; the checkpoint that replaces or removes that
//! record copies the old value into the change first.

use redb::TableDefinition;

/// Storage key → crc32 · varint version · record.
pub(super) const RECORDS: TableDefinition<'_, &[u8], &[u8]> = TableDefinition::new("records");
/// (version, index in its commit) → crc32 · kind · varint key length · key
/// · record (kind [`VALUE`] only).
pub(super) const FEED: TableDefinition<'_, (u64, u32), &[u8]> = TableDefinition::new("feed");

/// A change's kinds.
const DELETED: u8 = 0;
const VALUE: u8 = 1;
const CURRENT: u8 = 2;

/// What a stored value fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Damage {
    /// Shorter than its own header says.
    Short,
    /// Its checksum does not match.
    Checksum,
    /// A varint of more than 64 bits, or a kind this build does not know.
    Malformed,
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Damage::Short => "is cut short",
            Damage::Checksum => "fails its checksum",
            Damage::Malformed => "has a malformed header",
        })
    }
}

/// A change of the feed as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change<'a> {
    Deleted,
    Value(&'a [u8]),
    /// The value is the records table's, which holds this version.
    Current,
}

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// The varint at the start of `bytes` and what follows it.
fn take_varint(bytes: &[u8]) -> Result<(u64, &[u8]), Damage> {
    let mut n = 0u64;
    for (i, &b) in bytes.iter().enumerate() {
        let bits = u64::from(b & 0x7f);
        if i == 9 && b > 1 {
            return Err(Damage::Malformed);
        }
        n |= bits << (7 * i);
        if b & 0x80 == 0 {
            return Ok((n, &bytes[i + 1..]));
        }
    }
    Err(Damage::Short)
}

/// The checksum `stored` starts with and the rest, once it matches `crc`
/// of what precedes the rest (`prefix`) and the rest.
fn verified<'a>(prefix: &[&[u8]], stored: &'a [u8]) -> Result<&'a [u8], Damage> {
    let (sum, rest) = stored.split_first_chunk::<4>().ok_or(Damage::Short)?;
    let mut crc = crc32fast::Hasher::new();
    for part in prefix {
        crc.update(part);
    }
    crc.update(rest);
    if crc.finalize() != u32::from_le_bytes(*sum) {
        return Err(Damage::Checksum);
    }
    Ok(rest)
}

/// Fills in the checksum `out` was started with by [`start`].
fn seal(prefix: &[&[u8]], out: &mut [u8]) {
    let mut crc = crc32fast::Hasher::new();
    for part in prefix {
        crc.update(part);
    }
    crc.update(&out[4..]);
    out[..4].copy_from_slice(&crc.finalize().to_le_bytes());
}

fn start(out: &mut Vec<u8>, capacity: usize) {
    out.clear();
    out.reserve(capacity);
    out.extend_from_slice(&[0; 4]);
}

/// The records table's value for `key` at `version` into `out`.
pub(super) fn encode_record(key: &[u8], version: u64, record: &[u8], out: &mut Vec<u8>) {
    start(out, 4 + 10 + record.len());
    put_varint(out, version);
    out.extend_from_slice(record);
    seal(&[key], out);
}

/// The version and record of a records-table value stored under `key`.
pub(super) fn decode_record<'a>(key: &[u8], stored: &'a [u8]) -> Result<(u64, &'a [u8]), Damage> {
    take_varint(verified(&[key], stored)?)
}

/// The feed's value for a change at `(version, index)` into `out`.
pub(super) fn encode_change(
    (version, index): (u64, u32),
    key: &[u8],
    change: Change<'_>,
    out: &mut Vec<u8>,
) {
    let (kind, record) = match change {
        Change::Deleted => (DELETED, &[][..]),
        Change::Value(record) => (VALUE, record),
        Change::Current => (CURRENT, &[][..]),
    };
    start(out, 4 + 1 + 10 + key.len() + record.len());
    out.push(kind);
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key);
    out.extend_from_slice(record);
    seal(&[&version.to_le_bytes(), &index.to_le_bytes()], out);
}

/// The key and change of a feed value stored at `(version, index)`.
pub(super) fn decode_change(
    (version, index): (u64, u32),
    stored: &[u8],
) -> Result<(&[u8], Change<'_>), Damage> {
    let rest = verified(&[&version.to_le_bytes(), &index.to_le_bytes()], stored)?;
    let (&kind, rest) = rest.split_first().ok_or(Damage::Short)?;
    let (len, rest) = take_varint(rest)?;
    let len = usize::try_from(len).map_err(|_| Damage::Malformed)?;
    if rest.len() < len {
        return Err(Damage::Short);
    }
    let (key, record) = rest.split_at(len);
    let change = match kind {
        DELETED if record.is_empty() => Change::Deleted,
        VALUE => Change::Value(record),
        CURRENT if record.is_empty() => Change::Current,
        _ => return Err(Damage::Malformed),
    };
    Ok((key, change))
}

/// The bytes a change counts against the feed's `retention_bytes`: what
/// the feed itself holds of it.
pub(super) fn change_bytes(key: &[u8], change: Change<'_>) -> u64 {
    let value = match change {
        Change::Value(record) => record.len(),
        Change::Deleted | Change::Current => 0,
    };
    (key.len() + value) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for n in [0, 1, 127, 128, 300, 1 << 21, u64::MAX >> 1, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, n);
            out.push(0xAA);
            assert_eq!(take_varint(&out), Ok((n, &[0xAA][..])), "{n}");
        }
        let mut long = vec![0xFF; 9];
        long.push(0x02);
        assert_eq!(take_varint(&long), Err(Damage::Malformed));
        assert_eq!(take_varint(&[0xFF; 11]), Err(Damage::Malformed));
        assert_eq!(take_varint(&[0x80]), Err(Damage::Short));
        assert_eq!(take_varint(&[]), Err(Damage::Short));
    }

    #[test]
    fn records_round_trip() {
        let mut out = Vec::new();
        encode_record(b"kb\0key", 1_000_000, b"\x01\x01\x00{}", &mut out);
        assert_eq!(out.len(), 4 + 3 + 5);
        assert_eq!(
            decode_record(b"kb\0key", &out),
            Ok((1_000_000, &b"\x01\x01\x00{}"[..]))
        );
        encode_record(b"k", 0, b"", &mut out);
        assert_eq!(decode_record(b"k", &out), Ok((0, &b""[..])));
    }

    /// Every flip of one to four bytes of a record, and every cut, is
    /// caught; so is the record read under another key.
    #[test]
    fn damaged_records_are_caught() {
        let key = b"ksensors\0sensor_000123";
        let mut out = Vec::new();
        encode_record(
            key,
            123_456,
            br#"{"alias":[1,5,42],"name":"shed"}"#,
            &mut out,
        );
        for at in 0..out.len() {
            for width in 1..=4.min(out.len() - at) {
                for flip in [0x01, 0x80, 0xFF] {
                    let mut bad = out.clone();
                    for b in &mut bad[at..at + width] {
                        *b ^= flip;
                    }
                    assert!(decode_record(key, &bad).is_err(), "{at}+{width} ^{flip}");
                }
            }
        }
        for len in 0..out.len() {
            assert!(decode_record(key, &out[..len]).is_err(), "cut at {len}");
        }
        assert_eq!(
            decode_record(b"ksensors\0sensor_000124", &out),
            Err(Damage::Checksum)
        );
    }

    #[test]
    fn changes_round_trip_and_are_checked() {
        let mut out = Vec::new();
        for change in [
            Change::Deleted,
            Change::Value(b"\x01\x00\x00v"),
            Change::Current,
        ] {
            encode_change((9, 2), b"key", change, &mut out);
            assert_eq!(decode_change((9, 2), &out), Ok((&b"key"[..], change)));
            assert_eq!(decode_change((9, 3), &out), Err(Damage::Checksum));
            assert_eq!(decode_change((8, 2), &out), Err(Damage::Checksum));
            for at in 0..out.len() {
                let mut bad = out.clone();
                bad[at] ^= 0x10;
                assert!(decode_change((9, 2), &bad).is_err(), "{at}");
            }
            for len in 0..out.len() {
                assert!(decode_change((9, 2), &out[..len]).is_err(), "cut at {len}");
            }
        }
        assert_eq!(change_bytes(b"key", Change::Current), 3);
        assert_eq!(change_bytes(b"key", Change::Value(b"12")), 5);
    }
}
