//! Byte layouts. Everything lives under one key prefix of the store, so an
//! app's own keys (a Spin app's labels, say) sit beside kvstash's.
//!
//! | key | value |
//! |---|---|
//! | `kvstash/head` | version (u64 LE) · intent, if a commit is being applied |
//! | `kvstash/init` | a counter (the host's encoding): who created the head |
//! | `kvstash/r/HEX` | version (u64 LE) · 1 + value, or 0 (a tombstone) |
//! | `kvstash/log/VERSION` (20 digits) | the commit's intent |
//!
//! An intent is the commit's version, a random nonce (two committers writing
//! the same values must still tell their commits apart) and its writes:
//! `u64 version · u64 nonce · u32 count · (u32 key-len · key · u8 0|1 ·
//! [u32 value-len · value])*`, integers LE.

use crate::storage::Write;

pub const HEAD: &str = "kvstash/head";
/// A counter whose first increment elects the one creator of the head.
pub const INIT: &str = "kvstash/init";
pub const RECORDS: &str = "kvstash/r/";
pub const LOG: &str = "kvstash/log/";

pub fn record_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(RECORDS.len() + key.len() * 2);
    out.push_str(RECORDS);
    for byte in key {
        out.push(char::from(HEX[usize::from(byte >> 4)]));
        out.push(char::from(HEX[usize::from(byte & 15)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The storage key a record key names; `None` if it is not one of ours.
pub fn parse_record_key(key: &str) -> Option<Vec<u8>> {
    let hex = key.strip_prefix(RECORDS)?.as_bytes();
    if hex.len() % 2 != 0 {
        return None;
    }
    hex.chunks(2)
        .map(|pair| {
            let digit = |c: u8| HEX.iter().position(|&h| h == c);
            u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()
        })
        .collect()
}

pub fn log_key(version: u64) -> String {
    format!("{LOG}{version:020}")
}

/// A decoded head: the store's version and the commit being applied.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Head {
    pub version: u64,
    pub pending: Option<Intent>,
}

/// A commit: its version, its committer's nonce and its writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Intent {
    pub version: u64,
    pub nonce: u64,
    pub writes: Vec<Write>,
}

/// A decoded record: the version that wrote it and its value (`None`: deleted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub version: u64,
    pub value: Option<Vec<u8>>,
}

pub fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = head.version.to_le_bytes().to_vec();
    if let Some(intent) = &head.pending {
        out.extend(encode_intent(intent));
    }
    out
}

pub fn decode_head(bytes: &[u8]) -> Option<Head> {
    let mut reader = Reader(bytes);
    let version = reader.u64()?;
    let pending = if reader.0.is_empty() {
        None
    } else {
        Some(decode_intent(reader.0)?)
    };
    Some(Head { version, pending })
}

pub fn encode_record(record: &Record) -> Vec<u8> {
    let mut out = record.version.to_le_bytes().to_vec();
    match &record.value {
        Some(value) => {
            out.push(1);
            out.extend_from_slice(value);
        }
        None => out.push(0),
    }
    out
}

pub fn decode_record(bytes: &[u8]) -> Option<Record> {
    let mut reader = Reader(bytes);
    let version = reader.u64()?;
    let value = match reader.u8()? {
        0 if reader.0.is_empty() => None,
        1 => Some(reader.0.to_vec()),
        _ => return None,
    };
    Some(Record { version, value })
}

pub fn encode_intent(intent: &Intent) -> Vec<u8> {
    let mut out = intent.version.to_le_bytes().to_vec();
    out.extend_from_slice(&intent.nonce.to_le_bytes());
    push_len(&mut out, intent.writes.len());
    for write in &intent.writes {
        push_len(&mut out, write.key.len());
        out.extend_from_slice(&write.key);
        match &write.value {
            Some(value) => {
                out.push(1);
                push_len(&mut out, value.len());
                out.extend_from_slice(value);
            }
            None => out.push(0),
        }
    }
    out
}

pub fn decode_intent(bytes: &[u8]) -> Option<Intent> {
    let mut reader = Reader(bytes);
    let version = reader.u64()?;
    let nonce = reader.u64()?;
    let count = reader.len()?;
    let mut writes = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let key_len = reader.len()?;
        let key = reader.take(key_len)?.to_vec();
        let value = match reader.u8()? {
            0 => None,
            1 => {
                let len = reader.len()?;
                Some(reader.take(len)?.to_vec())
            }
            _ => return None,
        };
        writes.push(Write { key, value });
    }
    reader.0.is_empty().then_some(Intent {
        version,
        nonce,
        writes,
    })
}

/// Lengths are u32; the commit limits keep every one far below 4 GiB.
fn push_len(out: &mut Vec<u8>, len: usize) {
    out.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)?.try_into().ok().map(u64::from_le_bytes)
    }
    fn len(&mut self) -> Option<usize> {
        let bytes: [u8; 4] = self.take(4)?.try_into().ok()?;
        usize::try_from(u32::from_le_bytes(bytes)).ok()
    }
}
