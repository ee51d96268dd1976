//! The stored record format, version 1 (docs/format.md is the normative text).
//!
//! ```text
//! byte 0      format version, 1
//! byte 1      encoding: 0 = raw bytes, 1 = JSON text (UTF-8)
//! byte 2      flags: bit 0 = an expiry follows; other bits must be 0
//! [8 bytes]   expiry, u64 little-endian, milliseconds since the UNIX epoch
//! rest        the payload
//! ```

use super::StoreError;

const FORMAT_V1: u8 = 1;
const FLAG_EXPIRY: u8 = 1;
const HEADER_LEN: usize = 3;

/// How a payload is to be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Bytes,
    Json,
}

/// A decoded record value (the version lives beside it, in storage).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub encoding: Encoding,
    /// Milliseconds since the UNIX epoch after which the record is gone.
    pub expires_at_ms: Option<u64>,
    pub payload: Vec<u8>,
}

impl Record {
    pub fn json(text: String) -> Self {
        Self {
            encoding: Encoding::Json,
            expires_at_ms: None,
            payload: text.into_bytes(),
        }
    }

    pub fn bytes(payload: Vec<u8>) -> Self {
        Self {
            encoding: Encoding::Bytes,
            expires_at_ms: None,
            payload,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let expiry = self.expires_at_ms.map(u64::to_le_bytes);
        let mut out = Vec::with_capacity(HEADER_LEN + 8 + self.payload.len());
        out.push(FORMAT_V1);
        out.push(match self.encoding {
            Encoding::Bytes => 0,
            Encoding::Json => 1,
        });
        out.push(if expiry.is_some() { FLAG_EXPIRY } else { 0 });
        if let Some(expiry) = expiry {
            out.extend_from_slice(&expiry);
        }
        out.extend_from_slice(&self.payload);
        out
    }

    /// Decodes a stored record, reusing its buffer for the payload.
    pub fn decode(mut raw: Vec<u8>) -> Result<Self, StoreError> {
        let corrupt = |why: &str| StoreError::Corrupt(why.to_string());
        let [format, encoding, flags, rest @ ..] = raw.as_slice() else {
            return Err(corrupt("record shorter than its header"));
        };
        if *format != FORMAT_V1 {
            return Err(corrupt("unknown record format version"));
        }
        let encoding = match encoding {
            0 => Encoding::Bytes,
            1 => Encoding::Json,
            _ => return Err(corrupt("unknown value encoding")),
        };
        if flags & !FLAG_EXPIRY != 0 {
            return Err(corrupt("unknown record flags"));
        }
        let (expires_at_ms, header) = if flags & FLAG_EXPIRY != 0 {
            let Some((expiry, _)) = rest.split_first_chunk::<8>() else {
                return Err(corrupt("record expiry truncated"));
            };
            (Some(u64::from_le_bytes(*expiry)), HEADER_LEN + 8)
        } else {
            (None, HEADER_LEN)
        };
        raw.drain(..header);
        Ok(Self {
            encoding,
            expires_at_ms,
            payload: raw,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_shape() {
        for record in [
            Record::json("{\"a\":1}".into()),
            Record::bytes(vec![0, 255, 7]),
            Record::bytes(Vec::new()),
            Record {
                encoding: Encoding::Json,
                expires_at_ms: Some(1_700_000_000_123),
                payload: b"[1,2]".to_vec(),
            },
        ] {
            assert_eq!(Record::decode(record.encode()).unwrap(), record);
        }
    }

    #[test]
    fn layout_is_the_documented_one() {
        let mut r = Record::json("7".into());
        r.expires_at_ms = Some(0x0102);
        assert_eq!(r.encode(), vec![1, 1, 1, 2, 1, 0, 0, 0, 0, 0, 0, b'7']);
        assert_eq!(Record::bytes(b"x".to_vec()).encode(), vec![1, 0, 0, b'x']);
    }

    #[test]
    fn rejects_damaged_records_without_panicking() {
        for raw in [
            &[][..],
            &[1, 1][..],
            &[2, 0, 0][..],
            &[1, 9, 0][..],
            &[1, 0, 2][..],
            &[1, 0, 1, 1, 2, 3][..],
        ] {
            assert!(
                matches!(Record::decode(raw.to_vec()), Err(StoreError::Corrupt(_))),
                "{raw:?}"
            );
        }
    }
}
