//! Ordered listing of a bucket: prefix, start/end range, limit, reverse,
//! keys only, and cursors that stay valid across concurrent writes.

use super::{
    Clock, DEFAULT_LIST_LIMIT, Engine, MAX_LIST_LIMIT, MAX_SCAN, Record, Storage, StoreError,
    Value, Versioned, keys,
};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// Only keys starting with this prefix.
    pub prefix: Option<String>,
    /// Only keys `>= start`.
    pub start: Option<String>,
    /// Only keys `< end`.
    pub end: Option<String>,
    /// At most this many items (default 100, clamped to 1..=1000).
    pub limit: Option<u32>,
    /// Continue after the page that returned this cursor (same options).
    pub cursor: Option<String>,
    /// Descending key order.
    pub reverse: bool,
    /// Leave values out of the items.
    pub keys_only: bool,
}

/// One listed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Item {
    pub key: String,
    /// `None` when listing keys only.
    pub value: Option<Value>,
    pub version: u64,
    pub expires_at_ms: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<Item>,
    /// Where the next page starts; `None` when the range is done.
    pub cursor: Option<String>,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// One page of `bucket`'s live keys in key order (descending if
    /// `reverse`). Expired keys are skipped (and reclaimed).
    pub fn list(&self, bucket: &str, options: &ListOptions) -> Result<ListPage, StoreError> {
        keys::validate_bucket(bucket)?;
        let limit = options
            .limit
            .unwrap_or(DEFAULT_LIST_LIMIT)
            .clamp(1, MAX_LIST_LIMIT);
        let want = usize::try_from(limit).unwrap_or(usize::MAX);
        let bucket_prefix = keys::bucket_prefix(bucket);
        let bound = |text: &Option<String>, what: &str| -> Result<Option<Vec<u8>>, StoreError> {
            match text {
                Some(t) if t.len() > super::limits().key_bytes => Err(StoreError::InvalidKey(
                    format!("{what} is longer than a key"),
                )),
                Some(t) => {
                    let mut k = bucket_prefix.clone();
                    k.extend_from_slice(t.as_bytes());
                    Ok(Some(k))
                }
                None => Ok(None),
            }
        };
        // The range [lo, hi) the options select.
        let prefix_start =
            bound(&options.prefix, "prefix")?.unwrap_or_else(|| bucket_prefix.clone());
        let mut lo = prefix_start.clone();
        let mut hi = keys::prefix_end(&prefix_start);
        if let Some(start) = bound(&options.start, "start")? {
            lo = lo.max(start);
        }
        if let Some(end) = bound(&options.end, "end")? {
            hi = Some(hi.map_or(end.clone(), |hi| hi.min(end)));
        }
        // The cursor narrows it to what the previous pages did not cover.
        if let Some(cursor) = &options.cursor {
            let last = keys::data_key(bucket, &keys::decode_cursor(cursor, options.reverse)?);
            let in_range = last >= lo && hi.as_ref().is_none_or(|hi| last < *hi);
            if !in_range {
                return Err(StoreError::InvalidCursor);
            }
            if options.reverse {
                hi = Some(last);
            } else {
                lo = last;
                lo.push(0); // the smallest key after `last`
            }
        }
        let now = self.now();
        let mut items: Vec<Item> = Vec::with_capacity(want.min(1024));
        let mut expired = Vec::new();
        let mut more = false;
        'scan: loop {
            if hi.as_ref().is_some_and(|hi| *hi <= lo) {
                break;
            }
            let ask = u32::try_from(want + 1 - items.len())
                .unwrap_or(MAX_SCAN)
                .min(MAX_SCAN);
            let page = self
                .storage
                .scan(&lo, hi.as_deref(), ask, options.reverse)?;
            let exhausted = page.len() < usize::try_from(ask).unwrap_or(usize::MAX);
            let mut last_key = None;
            for entry in page {
                let record = Record::decode(entry.value)?;
                if now.expired(record.expires_at_ms) {
                    expired.push((entry.key.clone(), entry.version, record.expires_at_ms));
                } else if items.len() == want {
                    more = true;
                    break 'scan;
                } else {
                    let key = keys::user_key(&bucket_prefix, &entry.key)?.to_string();
                    let expires_at_ms = record.expires_at_ms;
                    let value = if options.keys_only {
                        None
                    } else {
                        Some(Versioned::from_record(record, entry.version)?.value)
                    };
                    items.push(Item {
                        key,
                        value,
                        version: entry.version,
                        expires_at_ms,
                    });
                }
                last_key = Some(entry.key);
            }
            match last_key {
                Some(key) if !exhausted => {
                    if options.reverse {
                        hi = Some(key);
                    } else {
                        lo = key;
                        lo.push(0);
                    }
                }
                _ => break,
            }
        }
        self.reclaim(expired);
        let cursor = if more {
            items
                .last()
                .map(|item| keys::encode_cursor(&item.key, options.reverse))
        } else {
            None
        };
        Ok(ListPage { items, cursor })
    }

    /// Up to `limit` live keys of `bucket` after skipping the first `offset`:
    /// the paging `wasi:keyvalue@0.2.0-draft` asks for with its `u64` cursor.
    /// Each call re-scans the skipped keys, so a full listing costs
    /// O(n²/limit).
    pub fn list_keys_at(
        &self,
        bucket: &str,
        offset: u64,
        limit: u32,
    ) -> Result<(Vec<String>, bool), StoreError> {
        let mut to_skip = offset;
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self.list(
                bucket,
                &ListOptions {
                    limit: Some(MAX_LIST_LIMIT),
                    cursor: cursor.take(),
                    keys_only: true,
                    ..ListOptions::default()
                },
            )?;
            for item in page.items {
                if to_skip > 0 {
                    to_skip -= 1;
                } else if out.len() < usize::try_from(limit).unwrap_or(usize::MAX) {
                    out.push(item.key);
                } else {
                    return Ok((out, true));
                }
            }
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => return Ok((out, false)),
            }
        }
    }
}
