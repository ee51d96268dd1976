//! `kvstash check` for the file backend: the whole store verified, without
//! writing to it, and everything wrong with it named.
//!
//! - redb's integrity check: every page of its committed trees against its
//!   checksum (`verify.rs`, on a copy-on-write view: nothing is written);
//! - every record and change-feed entry against kvstash's own checksum,
//!   and their versions against the store's (`meta`): no record newer than
//!   the last checkpoint, no change outside the versions the feed keeps, a
//!   change that refers to a key's current record finds that version;
//! - the commit log: its header and records (a bad record before its seal,
//!   or before a later group, is damage: `wal.rs`), versions increasing.

use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable};

use super::{
    BackendError, FEED, FORMAT, FileConfig, RECORDS, canonical, damaged_db, is_in_use, read_meta,
    stored, stored_change, unavailable, verify, wal,
};

/// Problems listed in full; past this, only counted.
const LISTED: usize = 20;

/// What [`check`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Report {
    /// The database file.
    pub path: PathBuf,
    /// Its kvstash file format (0 if it has no kvstash tables).
    pub format: u64,
    /// The newest version checkpointed into redb.
    pub checkpointed: u64,
    /// The newest version, the commit log's included.
    pub version: u64,
    /// Records in redb.
    pub records: u64,
    /// Entries of the change feed in redb.
    pub changes: u64,
    /// Commits in the log after the checkpoint.
    pub log_commits: u64,
    /// What is wrong, at most [`LISTED`] of it; empty for a sound store.
    pub problems: Vec<String>,
    /// Problems found beyond those listed.
    pub unlisted: u64,
}

impl Report {
    fn problem(&mut self, what: String) {
        if self.problems.len() < LISTED {
            self.problems.push(what);
        } else {
            self.unlisted += 1;
        }
    }

    /// Whether nothing is wrong.
    pub fn is_sound(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the store at `config.path` (see the module comment). An error is
/// for a store that cannot be checked at all (missing, in use by a
/// writer); damage is in the report.
pub fn check(config: &FileConfig) -> Result<Report, BackendError> {
    let path = canonical(&config.path)?;
    if !std::fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() > 0) {
        return Err(BackendError::Invalid(format!(
            "there is no store at {}",
            path.display()
        )));
    }
    let mut report = Report {
        path: path.clone(),
        ..Report::default()
    };
    // The store's shared lock, for as long as the check reads.
    let log = match wal::ReadLock::open(&path) {
        Ok(log) => log,
        Err(e) if is_in_use(&e) => return Err(e),
        Err(e) => {
            report.problem(e.to_string());
            None
        }
    };
    let db = match verify::open_verified(config.builder(), &path) {
        Ok(db) => db,
        Err(e) => {
            report.problem(damaged_db(&path, e).to_string());
            return Ok(report);
        }
    };
    let txn = db.begin_read().map_err(unavailable)?;
    let Some(meta) = read_meta(&txn, &path)? else {
        report.problem(format!("{} has no kvstash tables", path.display()));
        return Ok(report);
    };
    report.format = meta.format;
    report.checkpointed = meta.version;
    report.version = meta.version;
    if meta.format == FORMAT {
        let records = txn.open_table(RECORDS).map_err(unavailable)?;
        for item in records.iter().map_err(unavailable)? {
            let (key, value) = item.map_err(unavailable)?;
            report.records += 1;
            let key = key.value();
            match stored::decode_record(key, value.value()) {
                Ok((version, _)) if version > meta.version => report.problem(format!(
                    "the record of key {} has version {version}, after the last checkpoint's {}",
                    key.escape_ascii(),
                    meta.version
                )),
                Ok(_) => {}
                Err(damage) => {
                    report.problem(format!("the record of key {} {damage}", key.escape_ascii()));
                }
            }
        }
        let feed = txn.open_table(FEED).map_err(unavailable)?;
        for item in feed.iter().map_err(unavailable)? {
            let (at, value) = item.map_err(unavailable)?;
            report.changes += 1;
            let at = at.value();
            if at.0 <= meta.trimmed || at.0 > meta.version {
                report.problem(format!(
                    "the change feed's entry {}.{} is outside the versions it keeps ({} to {})",
                    at.0,
                    at.1,
                    meta.trimmed + 1,
                    meta.version
                ));
            }
            if let Err(e) = stored_change(&records, at, value.value()) {
                report.problem(e.to_string());
            }
        }
    } else {
        report.problem(format!(
            "{} has the older format {}: its first open migrates it (the check reads format {FORMAT})",
            path.display(),
            meta.format
        ));
    }
    if let Some((_lock, records)) = &log {
        let mut newest = meta.version;
        for record in records.iter().filter(|r| r.version > meta.version) {
            if record.version <= newest {
                report.problem(format!(
                    "the commit log holds version {} after version {newest}",
                    record.version
                ));
            }
            newest = newest.max(record.version);
            report.log_commits += 1;
        }
        report.version = newest;
    }
    Ok(report)
}
