//! History: per-bucket undo and redo of the last changes.
//!
//! With history enabled (`BucketMeta::history`, 1..=10000 changes kept),
//! every commit that writes into the bucket also writes, in the same commit:
//!
//! - an entry at `"h" bucket 0x00 seq(u64 BE)`: the before and after
//!   images of every key the commit changed in the bucket;
//! - the bucket's head at `"H" bucket`: `first` (oldest kept entry), `top`
//!   (next entry; entries below it can be undone), `end` (entries from `top`
//!   to `end` can be redone).
//!
//! The commit is guarded on the head's version and on every before-image it
//! read, so history is exact whichever instance or process writes. Undo
//! writes the before-images as new versions (the past is never rewritten),
//! only if the keys are still as the change left them, and moves `top` down;
//! redo is the reverse. A new change after an undo drops what could have
//! been redone. Expirations (the sweep, lazy reclamation) are not recorded.

use super::meta::Committed;
use super::{Clock, Engine, Now, Record, Storage, StoreError, keys};
use crate::engine::storage::Check;

const ENTRY_TAG: u8 = b'h';
const HEAD_TAG: u8 = b'H';
/// Most changes a bucket's history keeps.
pub const MAX_HISTORY: u32 = 10_000;

pub(super) fn head_key(bucket: &str) -> Vec<u8> {
    let mut key = vec![HEAD_TAG];
    key.extend_from_slice(bucket.as_bytes());
    key
}

fn entry_prefix(bucket: &str) -> Vec<u8> {
    let mut key = vec![ENTRY_TAG];
    key.extend_from_slice(bucket.as_bytes());
    key.push(0);
    key
}

fn entry_key(bucket: &str, seq: u64) -> Vec<u8> {
    let mut key = entry_prefix(bucket);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// Where a bucket's history stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Head {
    first: u64,
    top: u64,
    end: u64,
}

impl Head {
    fn encode(self) -> Vec<u8> {
        [self.first, self.top, self.end]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    fn decode(raw: &[u8]) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt("history head".into());
        let (first, rest) = raw.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (top, rest) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let (end, _) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let head = Self {
            first: u64::from_be_bytes(*first),
            top: u64::from_be_bytes(*top),
            end: u64::from_be_bytes(*end),
        };
        if head.first > head.top || head.top > head.end {
            return Err(corrupt());
        }
        Ok(head)
    }
}

/// One recorded change of one key: its user key, stored record before and
/// after (`None`: absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct KeyChange {
    key: String,
    before: Option<Vec<u8>>,
    after: Option<Vec<u8>>,
}

/// Entry format: u32 count, then per change: u32 key length, key, and for
/// before and after: u8 present, u32 length, bytes (all big-endian).
fn encode_entry(changes: &[KeyChange]) -> Vec<u8> {
    let mut out = Vec::new();
    let len = |n: usize| u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&len(changes.len()));
    for c in changes {
        out.extend_from_slice(&len(c.key.len()));
        out.extend_from_slice(c.key.as_bytes());
        for image in [&c.before, &c.after] {
            match image {
                Some(bytes) => {
                    out.push(1);
                    out.extend_from_slice(&len(bytes.len()));
                    out.extend_from_slice(bytes);
                }
                None => out.push(0),
            }
        }
    }
    out
}

fn decode_entry(raw: &[u8]) -> Result<Vec<KeyChange>, StoreError> {
    let corrupt = || StoreError::Corrupt("history entry".into());
    let mut rest = raw;
    let mut take = |n: usize| -> Result<&[u8], StoreError> {
        let (head, tail) = rest.split_at_checked(n).ok_or_else(corrupt)?;
        rest = tail;
        Ok(head)
    };
    let read_len = |bytes: &[u8]| -> Result<usize, StoreError> {
        let arr: [u8; 4] = bytes.try_into().map_err(|_| corrupt())?;
        usize::try_from(u32::from_be_bytes(arr)).map_err(|_| corrupt())
    };
    let count = read_len(take(4)?)?;
    let mut changes = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let key_len = read_len(take(4)?)?;
        let key = String::from_utf8(take(key_len)?.to_vec()).map_err(|_| corrupt())?;
        let mut images = [None, None];
        for image in &mut images {
            match take(1)? {
                [0] => {}
                [1] => {
                    let n = read_len(take(4)?)?;
                    *image = Some(take(n)?.to_vec());
                }
                _ => return Err(corrupt()),
            }
        }
        let [before, after] = images;
        changes.push(KeyChange { key, before, after });
    }
    Ok(changes)
}

/// The extra checks and writes that record one commit's changes to a
/// bucket with history: filled in by [`Engine::history_for`].
pub(super) struct Recording {
    pub(super) checks: Vec<Check>,
    pub(super) writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl<S: Storage, C: Clock> Engine<S, C> {
    /// Records `changes` (data keys of `bucket` → new record) as one history
    /// entry: reads the head and the before-images, and returns the guards
    /// and writes to add to the commit.
    pub(super) fn history_for(
        &self,
        bucket: &str,
        keep: u32,
        changes: &[(Vec<u8>, Option<Record>)],
        now: &Now<'_>,
    ) -> Result<Recording, StoreError> {
        let head_key = head_key(bucket);
        let mut read: Vec<Vec<u8>> = vec![head_key.clone()];
        read.extend(changes.iter().map(|(key, _)| key.clone()));
        let found = self.storage.get_many(&read)?;
        let mut checks = Vec::with_capacity(read.len());
        let mut images = Vec::with_capacity(changes.len());
        let mut head = Head::default();
        for (i, (key, entry)) in read.iter().zip(found).enumerate() {
            checks.push(Check::unchanged(
                key.clone(),
                entry.as_ref().map(|e| e.version),
            ));
            if i == 0 {
                if let Some(entry) = entry {
                    head = Head::decode(&entry.value)?;
                }
                continue;
            }
            // An expired record counts as absent: undo restores "absent".
            let before = match entry {
                Some(entry) => {
                    let record = Record::decode(entry.value.clone())?;
                    (!now.expired(record.expires_at_ms)).then_some(entry.value)
                }
                None => None,
            };
            images.push(before);
        }
        let entry: Vec<KeyChange> = changes
            .iter()
            .zip(images)
            .map(|((key, after), before)| {
                let user = keys::split_data_key(key).map_or("", |(_, k)| k).to_string();
                KeyChange {
                    key: user,
                    before,
                    after: after.as_ref().map(Record::encode),
                }
            })
            .collect();
        let mut writes = Vec::new();
        // What could have been redone is dropped by a new change.
        for seq in head.top..head.end {
            writes.push((entry_key(bucket, seq), None));
        }
        writes.push((entry_key(bucket, head.top), Some(encode_entry(&entry))));
        let top = head.top + 1;
        let mut first = head.first;
        while top - first > u64::from(keep) {
            writes.push((entry_key(bucket, first), None));
            first += 1;
        }
        let head = Head {
            first,
            top,
            end: top,
        };
        writes.push((head_key, Some(head.encode())));
        Ok(Recording { checks, writes })
    }

    /// Turns history on for `bucket`, keeping its last `keep` changes
    /// (1..=10000), or off with `0` (dropping what was kept).
    pub fn set_history(&self, bucket: &str, keep: u32) -> Result<(), StoreError> {
        keys::validate_bucket(bucket)?;
        self.writable()?;
        if keep > MAX_HISTORY {
            return Err(StoreError::InvalidArgument(format!(
                "history keeps at most {MAX_HISTORY} changes"
            )));
        }
        self.update_meta(bucket, &|meta| {
            let mut next = meta.clone();
            next.history = keep;
            Ok(Some(next))
        })?;
        if keep == 0 {
            self.drop_history(bucket)?;
        }
        Ok(())
    }

    fn drop_history(&self, bucket: &str) -> Result<(), StoreError> {
        let prefix = entry_prefix(bucket);
        let end = keys::prefix_end(&prefix);
        loop {
            let entries = self
                .storage
                .scan(&prefix, end.as_deref(), super::MAX_SCAN, false)?;
            let mut writes: Vec<crate::engine::storage::Write> = entries
                .iter()
                .map(|e| crate::engine::storage::Write {
                    key: e.key.clone(),
                    value: None,
                })
                .collect();
            let done = writes.len() < usize::try_from(super::MAX_SCAN).unwrap_or(usize::MAX);
            writes.push(crate::engine::storage::Write {
                key: head_key(bucket),
                value: None,
            });
            self.storage.commit(Vec::new(), writes)?;
            if done {
                return Ok(());
            }
        }
    }

    /// How many changes of `bucket` can be undone and redone.
    pub fn history(&self, bucket: &str) -> Result<(u64, u64), StoreError> {
        keys::validate_bucket(bucket)?;
        let head = match self.storage.get(&head_key(bucket))? {
            Some(entry) => Head::decode(&entry.value)?,
            None => Head::default(),
        };
        Ok((head.top - head.first, head.end - head.top))
    }

    /// Undoes the bucket's last change (all the keys one commit changed),
    /// by writing the values from before it as a new version, which it
    /// returns. Errors: `not-found` if there is nothing to undo, `conflict`
    /// if a key changed since without history (it expired).
    pub fn undo(&self, bucket: &str) -> Result<u64, StoreError> {
        self.step(bucket, true)
    }

    /// Redoes the last undone change; as [`undo`](Self::undo).
    pub fn redo(&self, bucket: &str) -> Result<u64, StoreError> {
        self.step(bucket, false)
    }

    fn step(&self, bucket: &str, undo: bool) -> Result<u64, StoreError> {
        keys::validate_bucket(bucket)?;
        self.writable()?;
        let now = self.now();
        let what = if undo { "undo" } else { "redo" };
        let mut retry = self.retry();
        loop {
            let head_key = head_key(bucket);
            let head_entry = self.storage.get(&head_key)?;
            let head = match &head_entry {
                Some(entry) => Head::decode(&entry.value)?,
                None => Head::default(),
            };
            let (seq, next) = if undo {
                if head.top == head.first {
                    return Err(StoreError::NotFound(format!(
                        "no change to {what} in bucket `{bucket}`"
                    )));
                }
                (
                    head.top - 1,
                    Head {
                        top: head.top - 1,
                        ..head
                    },
                )
            } else {
                if head.top == head.end {
                    return Err(StoreError::NotFound(format!(
                        "no change to {what} in bucket `{bucket}`"
                    )));
                }
                (
                    head.top,
                    Head {
                        top: head.top + 1,
                        ..head
                    },
                )
            };
            let raw = self
                .storage
                .get(&entry_key(bucket, seq))?
                .ok_or_else(|| StoreError::Corrupt("history entry missing".into()))?;
            let entry = decode_entry(&raw.value)?;
            let data_keys: Vec<Vec<u8>> = entry
                .iter()
                .map(|c| keys::data_key(bucket, &c.key))
                .collect();
            let current = self.storage.get_many(&data_keys)?;
            let mut checks = vec![Check::unchanged(
                head_key.clone(),
                head_entry.as_ref().map(|e| e.version),
            )];
            let mut changes = Vec::with_capacity(entry.len() + 1);
            for ((change, key), found) in entry.iter().zip(&data_keys).zip(current) {
                let (expect, restore) = if undo {
                    (&change.after, &change.before)
                } else {
                    (&change.before, &change.after)
                };
                let live = match &found {
                    Some(e) => {
                        let record = Record::decode(e.value.clone())?;
                        (!now.expired(record.expires_at_ms)).then_some(&e.value)
                    }
                    None => None,
                };
                if live != expect.as_ref() {
                    return Err(StoreError::Conflict {
                        current: found.as_ref().filter(|_| live.is_some()).map(|e| e.version),
                    });
                }
                checks.push(Check::unchanged(
                    key.clone(),
                    found.as_ref().map(|e| e.version),
                ));
                let record = restore.clone().map(Record::decode).transpose()?;
                changes.push((key.clone(), record));
            }
            let extra = vec![(head_key.clone(), Some(next.encode()))];
            match self.commit_changes(checks, &changes, extra, false)? {
                Committed::At(version) => return Ok(version),
                Committed::Conflict if retry.again() => continue,
                Committed::Conflict => return Err(StoreError::Contention),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_damage_is_reported() {
        let changes = vec![
            KeyChange {
                key: "a".into(),
                before: None,
                after: Some(vec![1, 2]),
            },
            KeyChange {
                key: "ü".into(),
                before: Some(vec![]),
                after: None,
            },
        ];
        assert_eq!(decode_entry(&encode_entry(&changes)).unwrap(), changes);
        let raw = encode_entry(&changes);
        for cut in 0..raw.len() {
            assert!(decode_entry(&raw[..cut]).is_err(), "cut at {cut}");
        }
        let head = Head {
            first: 2,
            top: 5,
            end: 7,
        };
        assert_eq!(Head::decode(&head.encode()).unwrap(), head);
        assert!(
            Head::decode(
                &Head {
                    first: 3,
                    top: 2,
                    end: 9
                }
                .encode()
            )
            .is_err()
        );
    }
}
