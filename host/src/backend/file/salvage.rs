//! `kvstash repair`: what is intact of a damaged file store, into a new one
//! (`docs/reliability.md`).
//!
//! redb's file is opened without verifying it and its records table read
//! in key order, every record checked against its own checksum; a read
//! that fails (a damaged page: an error, or a panic inside redb) ends the
//! scan there, and a second scan reads back from the last key to meet the
//! damage from the other side, so one damaged page loses only the records
//! it held. The commit log's sound records (up to its first damage, its
//! seal aside) are applied on top. The result is written as a new store
//! with the same versions: what was lost is named, nothing else changes,
//! and the damaged store is not written.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, ReadableTable};

use super::stored::{self, RECORDS};
use super::{
    FileConfig, META, begin_write, canonical, guarded, init_tables, read_meta, unavailable, wal,
};
use crate::backend::BackendError;

/// What a repair salvaged and what it could not.
#[derive(Clone, Debug, Default)]
pub struct Salvaged {
    /// The store repaired, and the new one written.
    pub from: PathBuf,
    pub into: PathBuf,
    /// Records read from redb's file, and those dropped as damaged.
    pub records: u64,
    pub damaged_records: u64,
    /// Commits of the log applied on top.
    pub log_commits: u64,
    /// The version the new store is at.
    pub version: u64,
    /// What could not be read, each in a sentence.
    pub lost: Vec<String>,
    /// Records the new store holds.
    pub written: u64,
}

/// Salvages the store at `config.path` into a new store at `into`.
pub fn salvage(config: &FileConfig, into: &Path) -> Result<Salvaged, BackendError> {
    let from = canonical(&config.path)?;
    if !std::fs::metadata(&from).is_ok_and(|m| m.is_file()) {
        return Err(BackendError::Invalid(format!(
            "there is no store at {}",
            from.display()
        )));
    }
    if into.exists() || wal::path_of(into).exists() {
        return Err(BackendError::Invalid(format!(
            "{} exists: `kvstash repair` writes a new store",
            into.display()
        )));
    }
    let mut report = Salvaged {
        from: from.clone(),
        into: into.to_path_buf(),
        ..Salvaged::default()
    };
    // The store's shared lock (a writer holding it is refused), and the
    // log's sound records.
    let (_lock, log, log_damage) = wal::salvage(&from)?;
    report.lost.extend(log_damage);
    let mut records: BTreeMap<Vec<u8>, (u64, Vec<u8>)> = BTreeMap::new();
    let mut version = 0;
    // redb may panic opening a damaged file it does not verify.
    let opened = guarded(&from, || Ok(config.builder().open_read_only(&from)))
        .map_err(|e| e.to_string())
        .and_then(|opened| opened.map_err(|e| e.to_string()));
    match opened {
        Ok(db) => version = scan(&db, &from, &mut records, &mut report),
        Err(e) => report.lost.push(format!(
            "redb cannot open {} ({e}): none of its records could be read, only the log's commits",
            from.display()
        )),
    }
    let checkpointed = version;
    for commit in log.into_iter().filter(|c| c.version > checkpointed) {
        for write in commit.writes {
            match write.value {
                Some(value) => {
                    records.insert(write.key, (commit.version, value));
                }
                None => {
                    records.remove(&write.key);
                }
            }
        }
        version = commit.version;
        report.log_commits += 1;
    }
    report.version = version.max(records.values().map(|(v, _)| *v).max().unwrap_or(0));
    write_store(config, into, &records, report.version)?;
    report.written = records.len() as u64;
    Ok(report)
}

/// Reads every sound record of redb's file into `out`; the version its
/// meta table gives (or the newest record's, if it cannot be read).
fn scan(
    db: &redb::ReadOnlyDatabase,
    path: &Path,
    out: &mut BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    report: &mut Salvaged,
) -> u64 {
    let guarded = |read: &mut dyn FnMut() -> Result<(), BackendError>| guarded(path, read);
    let mut txn = None;
    let began = guarded(&mut || {
        txn = Some(db.begin_read().map_err(unavailable)?);
        Ok(())
    });
    let Some(txn) = txn else {
        let why = began.err().map(|e| e.to_string()).unwrap_or_default();
        report
            .lost
            .push(format!("redb cannot read {}: {why}", path.display()));
        return 0;
    };
    let mut version = None;
    let mut format = None;
    let meta = guarded(&mut || {
        let meta = read_meta(&txn, path)?;
        version = meta.as_ref().map(|m| m.version);
        format = meta.map(|m| m.format);
        Ok(())
    });
    if let Err(e) = meta {
        report.lost.push(format!("its meta table: {e}"));
    }
    if format.is_some_and(|f| f != super::FORMAT) {
        report.lost.push(format!(
            "{} has an older format, whose records `kvstash repair` does not read: open it once \
             with kvstash (which raises its format), then repair it",
            path.display()
        ));
        return version.unwrap_or(0);
    }
    let mut table = None;
    let opened = guarded(&mut || {
        table = Some(txn.open_table(RECORDS).map_err(unavailable)?);
        Ok(())
    });
    let Some(table) = table else {
        let why = opened.err().map(|e| e.to_string()).unwrap_or_default();
        report.lost.push(format!("its records table: {why}"));
        return version.unwrap_or(0);
    };
    let mut take = |key: &[u8], value: &[u8], report: &mut Salvaged| {
        report.records += 1;
        match stored::decode_record(key, value) {
            Ok((version, record)) => {
                out.insert(key.to_vec(), (version, record.to_vec()));
            }
            Err(damage) => {
                report.damaged_records += 1;
                report
                    .lost
                    .push(format!("the record of key {} {damage}", key.escape_ascii()));
            }
        }
    };
    // Forward, to the first damage.
    let mut last: Option<Vec<u8>> = None;
    let forward = guarded(&mut || {
        for item in table.iter().map_err(unavailable)? {
            let (key, value) = item.map_err(unavailable)?;
            take(key.value(), value.value(), report);
            last = Some(key.value().to_vec());
        }
        Ok(())
    });
    if let Err(e) = forward {
        // Backward from the end, to meet the damage from the other side.
        let mut first: Option<Vec<u8>> = None;
        let after = match &last {
            Some(key) => Bound::Excluded(key.as_slice()),
            None => Bound::Unbounded,
        };
        // It ends at the damage (or the first key read forward).
        let _ = guarded(&mut || {
            let bounds: (Bound<&[u8]>, Bound<&[u8]>) = (after, Bound::Unbounded);
            let range = table.range::<&[u8]>(bounds).map_err(unavailable)?;
            for item in range.rev() {
                let (key, value) = item.map_err(unavailable)?;
                take(key.value(), value.value(), report);
                first = Some(key.value().to_vec());
            }
            Ok(())
        });
        let key = |k: &Option<Vec<u8>>, none: &str| {
            k.as_ref()
                .map_or(none.to_string(), |k| format!("key {}", k.escape_ascii()))
        };
        report.lost.push(format!(
            "the records after {} and before {} could not be read: {e}",
            key(&last, "the start"),
            key(&first, "the end"),
        ));
    }
    version.unwrap_or_else(|| out.values().map(|(v, _)| *v).max().unwrap_or(0))
}

/// Writes `records` as a new store at `into`, at `version` (its change
/// feed empty: it starts at `version`).
fn write_store(
    config: &FileConfig,
    into: &Path,
    records: &BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    version: u64,
) -> Result<(), BackendError> {
    if let Some(dir) = into.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| writing(into, &e))?;
    }
    // Written aside and renamed when whole: a repair that fails leaves no
    // store that looks repaired.
    let mut partial = into.as_os_str().to_owned();
    partial.push(".repairing");
    let partial = PathBuf::from(partial);
    let _ = std::fs::remove_file(&partial);
    let written = write_file(config, &partial, records, version)
        .and_then(|()| std::fs::rename(&partial, into).map_err(|e| writing(into, &e)));
    if written.is_err() {
        let _ = std::fs::remove_file(&partial);
    }
    written
}

/// The error of a failed write of the new store at `into`.
fn writing(into: &Path, e: &dyn std::fmt::Display) -> BackendError {
    BackendError::Unavailable(format!("writing {}: {e}", into.display()))
}

/// [`write_store`]'s file, at `into`.
fn write_file(
    config: &FileConfig,
    into: &Path,
    records: &BTreeMap<Vec<u8>, (u64, Vec<u8>)>,
    version: u64,
) -> Result<(), BackendError> {
    let db = config
        .builder()
        .create(into)
        .map_err(|e| writing(into, &e))?;
    init_tables(&db, into)?;
    let txn = begin_write(&db)?;
    {
        let mut table = txn.open_table(RECORDS).map_err(unavailable)?;
        let mut buf = Vec::new();
        for (key, (at, record)) in records {
            buf.clear();
            stored::encode_record(key, *at, record, &mut buf);
            table
                .insert(key.as_slice(), buf.as_slice())
                .map_err(unavailable)?;
        }
        let mut meta = txn.open_table(META).map_err(unavailable)?;
        meta.insert("version", version).map_err(unavailable)?;
        meta.insert("trimmed", version).map_err(unavailable)?;
    }
    txn.commit().map_err(unavailable)?;
    Ok(())
}
