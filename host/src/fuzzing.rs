//! Entry points for the fuzz targets (`fuzz/`), with the `fuzzing`
//! feature: readers of untrusted input that are not public otherwise.

pub use crate::backend::file_fuzzing::{read_log, sound_log};

/// The records of a `kvstash import` JSON Lines file, as `(bucket, key,
/// value)`, or why it is refused.
pub fn import_jsonl(bytes: &[u8]) -> Result<Vec<(String, String, crate::Value)>, String> {
    crate::cli::transfer::read_records(bytes)
        .map(|records| {
            records
                .into_iter()
                .map(|r| (r.bucket, r.key, r.value))
                .collect()
        })
        .map_err(|e| format!("{e:#}"))
}

/// The records of a TinyDB file (`kvstash import --from tinydb`).
pub fn import_tinydb(text: &str) -> Result<Vec<(String, String, crate::Value)>, String> {
    crate::cli::transfer::read_tinydb(text)
        .map(|records| {
            records
                .into_iter()
                .map(|r| (r.bucket, r.key, r.value))
                .collect()
        })
        .map_err(|e| format!("{e:#}"))
}
