//! Entry points for the fuzz targets (`fuzz/`), with the `fuzzing`
//! feature: readers of untrusted input that are not public otherwise.

use crate::cli::transfer::{Record, read_records, read_tinydb};

pub use crate::backend::file_fuzzing::{read_log, sound_log};

/// An import's records as `(bucket, key, value)`, or why it is refused.
type Read = Result<Vec<(String, String, crate::Value)>, String>;

fn records(read: anyhow::Result<Vec<Record>>) -> Read {
    read.map(|records| {
        records
            .into_iter()
            .map(|r| (r.bucket, r.key, r.value))
            .collect()
    })
    .map_err(|e| format!("{e:#}"))
}

/// The records of a `kvstash import` JSON Lines file.
pub fn import_jsonl(bytes: &[u8]) -> Read {
    records(read_records(bytes))
}

/// The records of a TinyDB file (`kvstash import --from tinydb`).
pub fn import_tinydb(text: &str) -> Read {
    records(read_tinydb(text))
}
