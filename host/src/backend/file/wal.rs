//! The commit log in front of the redb file (`PATH-wal`, `docs/format.md`).
//!
//! A commit is acknowledged once its record is written and `fdatasync`ed
//! here; redb only takes the log's records in batches at a checkpoint
//! (`super::checkpoint`), after which the log starts again from its header.
//!
//! The file is not shortened while open (only a close cuts it back,
//! [`Wal::shrink`]): a checkpoint writes a new header
//! with a new salt and later records overwrite the old ones in place, so an
//! append changes no file metadata and its `fdatasync` writes only data
//! (SQLite reuses its `-wal` file the same way). Growth is zero-filled ahead
//! in [`GROW`] steps for the same reason. Each record's checksum covers the
//! salt, so a record left from before the last checkpoint never passes for
//! a current one.
//!
//! Replay stops at the first record that is cut short or fails its
//! checksum, when that is an append torn by a crash (never acknowledged).
//! One append writes a group of records with one `fdatasync`, and a power
//! cut may keep any of its pages: so each record says whether it continues
//! a group, and a bad record is torn unless a record that starts a later
//! group follows it. That later group was only written after the bad
//! record's group was synced, so the bad record is damage, and the open is
//! refused rather than dropping acknowledged commits.
//!
//! A clean close seals the log: its header then says where the records end,
//! so a bad record before that is damage too, wherever it is (the last
//! group included, which no later group vouches for). Appends after a
//! seal leave it standing: it only says that everything before it was
//! acknowledged.
//!
//! The file also carries the store's lock: a writer holds it exclusively,
//! a reader shared, for as long as it has the store open.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::disk::{Disk, LogFile};
use crate::backend::{BackendError, Write};

const MAGIC: &[u8; 8] = b"KVSTWAL1";
/// The header: magic, format (u32), sealed end (u32: where the records
/// ended at the last clean close, 0 if none), salt (u64), crc32 of the 24
/// bytes before (u32), zero (u32); all little-endian.
pub(super) const HEADER_LEN: u64 = 32;
const FORMAT: u32 = 3;
/// Format 2 had no seal (its word was zero); format 1 no group flag either
/// (every record started its own group). Both are read, and the header
/// raised to 3 before anything is appended.
const FORMAT_WITHOUT_SEAL: u32 = 2;
const FORMAT_WITHOUT_GROUPS: u32 = 1;
/// A record: u32 length word, u32 crc32 of (salt, length word, body), body.
/// The length word is the body's length, with [`CONTINUES`] set on every
/// record of a group but its first.
const RECORD_HEADER: usize = 8;
const CONTINUES: u32 = 1 << 31;
/// The longest record body; a commit that would not fit is refused.
pub(super) const MAX_RECORD: usize = 1 << 30;
/// Zero-filled growth step.
const GROW: u64 = 256 << 10;

/// One commit as the log holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Record {
    pub version: u64,
    pub writes: Vec<Write>,
}

/// The path of the log of the database at `db`.
pub(super) fn path_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The log, open for appending, and the store's exclusive lock.
#[derive(Debug)]
pub(super) struct Wal {
    file: Box<dyn LogFile>,
    path: PathBuf,
    salt: u64,
    /// Where the next record goes.
    end: u64,
    /// The sealed end the header holds.
    sealed: u64,
    /// Bytes allocated (zero-filled or written) from the start.
    allocated: u64,
    /// Set after a failed write or sync: what is on disk is unknown, so
    /// nothing more is appended (close and reopen: replay decides).
    failed: Option<String>,
    /// Whether this open made the file.
    created: bool,
    disk: std::sync::Arc<dyn Disk>,
}

/// A reader's hold on the log: its shared lock, for as long as the store is
/// open, so no writer changes the store under the reader.
#[derive(Debug)]
pub(super) struct ReadLock {
    _file: File,
}

fn io_error(path: &Path, what: &str, e: &std::io::Error) -> BackendError {
    BackendError::Unavailable(format!("{what} {}: {e}", path.display()))
}

fn in_use(db: &Path) -> BackendError {
    BackendError::Unavailable(format!("{} is in use by another process", db.display()))
}

fn damaged(path: &Path, why: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(format!(
        "corrupt data in the file backend: the commit log {} is damaged: {why}; nothing was changed (move it aside to open the store without the commits it holds)",
        path.display()
    ))
}

impl Wal {
    /// Opens (creating) the log of the database `db` for writing, takes the
    /// store's exclusive lock, and returns the records it holds.
    pub(super) fn open(
        disk: std::sync::Arc<dyn Disk>,
        db: &Path,
    ) -> Result<(Self, Vec<Record>), BackendError> {
        let path = path_of(db);
        let existed = disk.file_len(&path).is_some();
        let file = disk
            .open(&path)
            .map_err(|e| io_error(&path, "cannot open the commit log", &e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(db)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error(&path, "cannot lock", &e));
            }
        }
        if !existed {
            sync_parent(&*disk, &path)?;
        }
        let allocated = file
            .len()
            .map_err(|e| io_error(&path, "cannot read the commit log", &e))?;
        let mut bytes = Bytes::new(&*file, &path);
        bytes.fill(HEADER_LEN as usize)?;
        let Some(Header {
            salt,
            format,
            sealed,
        }) = parse_header(&bytes.buf, &path)?
        else {
            // New, or created by a crash before its first header: empty.
            let mut wal = Self {
                file,
                path,
                salt: initial_salt(),
                end: HEADER_LEN,
                sealed: 0,
                allocated,
                failed: None,
                created: !existed,
                disk,
            };
            wal.write_header()?;
            return Ok((wal, Vec::new()));
        };
        let (records, end) = parse_records(&mut bytes, salt, sealed, &path)?;
        let mut wal = Self {
            file,
            path,
            salt,
            end,
            sealed,
            allocated,
            failed: None,
            created: false,
            disk,
        };
        if format != FORMAT {
            // Same salt: the records stay valid under the new header, and
            // a build that reads only an older format refuses the file
            // instead of taking a continued record for a torn one (format
            // 1) or a sealed end for damage it cannot see (format 2).
            wal.write_header()?;
        }
        Ok((wal, records))
    }

    /// When the store could not be opened after all: removes the log if
    /// this open made it, so a failed open leaves nothing behind.
    pub(super) fn discard_if_new(self) {
        if self.created {
            let _ = self.disk.remove(&self.path);
        }
    }

    /// Bytes of records since the last checkpoint.
    pub(super) fn used(&self) -> u64 {
        self.end - HEADER_LEN
    }

    /// Appends `records` as one group and makes them durable with one
    /// `fdatasync`. After an error the group's outcome is unknown (a failed
    /// sync may still have written it): replay on the next open decides.
    pub(super) fn append(&mut self, records: &[(u64, &[Write])]) -> Result<(), BackendError> {
        if let Some(why) = &self.failed {
            return Err(BackendError::Unavailable(why.clone()));
        }
        let mut buf = Vec::new();
        for (i, (version, writes)) in records.iter().enumerate() {
            encode(&mut buf, self.salt, *version, writes, i > 0);
        }
        let result = self.write_durably(buf);
        if let Err(e) = &result {
            self.failed = Some(format!(
                "the commit log {} failed earlier ({e}); close and reopen the store",
                self.path.display()
            ));
        }
        result
    }

    fn write_durably(&mut self, mut buf: Vec<u8>) -> Result<(), BackendError> {
        let needed = self.end + buf.len() as u64;
        let grown = needed.div_ceil(GROW) * GROW;
        if needed > self.allocated {
            // Zero-fill ahead in the same write, so the appends that follow
            // change no metadata.
            buf.resize(usize::try_from(grown - self.end).unwrap_or(buf.len()), 0);
        }
        self.file.write_all_at(&buf, self.end).map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot write the commit log {} ({e}); the commits being written are not acknowledged and may or may not be kept",
                self.path.display()
            ))
        })?;
        self.allocated = self.allocated.max(self.end + buf.len() as u64);
        self.file.sync_data().map_err(|e| {
            BackendError::Unavailable(format!(
                "cannot sync the commit log {} ({e}); the commits being written are not acknowledged and may or may not be kept: reopen the store and read them back",
                self.path.display()
            ))
        })?;
        self.end = needed;
        Ok(())
    }

    /// After a checkpoint made everything durable in redb: start the log
    /// again (a new salt, so the old records no longer count).
    pub(super) fn reset(&mut self) -> Result<(), BackendError> {
        if let Some(why) = &self.failed {
            return Err(BackendError::Unavailable(why.clone()));
        }
        self.salt = self.salt.wrapping_add(1);
        self.end = HEADER_LEN;
        self.sealed = 0;
        let result = self.write_header();
        if let Err(e) = &result {
            self.failed = Some(format!(
                "the commit log {} failed ({e}); close and reopen the store",
                self.path.display()
            ));
        }
        result
    }

    /// On a clean close: the header says where the records end, so that
    /// the next open refuses damage anywhere before it (see the module
    /// comment). Nothing to do for an empty log, or one already sealed
    /// where it ends; a failure leaves the log unsealed (and is caught by
    /// the next append).
    pub(super) fn seal(&mut self) {
        if self.failed.is_some() || self.end == HEADER_LEN || self.end == self.sealed {
            return;
        }
        // A log too long for the header's word stays unsealed (a checkpoint
        // comes long before, at `checkpoint_kb`).
        if u32::try_from(self.end).is_err() {
            return;
        }
        let unsealed = self.sealed;
        self.sealed = self.end;
        if self.write_header().is_err() {
            self.sealed = unsealed;
        }
    }

    /// On close: the file cut back to what its records use, rounded up to
    /// a [`GROW`] step, so a closed store does not keep the zero-filled or
    /// stale space its busiest moment grew the log to (SQLite removes its
    /// `-wal` on the last close). Nothing beyond [`Self::used`] counts, so a
    /// crash during the cut loses nothing. A failure leaves the file larger.
    pub(super) fn shrink(&mut self) {
        let keep = self.end.div_ceil(GROW) * GROW;
        if self.failed.is_some() || self.allocated <= keep {
            return;
        }
        if self
            .file
            .set_len(keep)
            .and_then(|()| self.file.sync_data())
            .is_ok()
        {
            self.allocated = keep;
        }
    }

    fn write_header(&mut self) -> Result<(), BackendError> {
        let header = header(self.salt, self.sealed);
        self.file
            .write_all_at(&header, 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&self.path, "cannot write the commit log header of", &e))?;
        self.allocated = self.allocated.max(HEADER_LEN);
        Ok(())
    }
}

impl ReadLock {
    /// Takes the store's shared lock and returns the records the log holds;
    /// `None` if the store has no log. Writes nothing.
    pub(super) fn open(db: &Path) -> Result<Option<(Self, Vec<Record>)>, BackendError> {
        let path = path_of(db);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(&path, "cannot open the commit log", &e)),
        };
        match file.try_lock_shared() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(db)),
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(io_error(&path, "cannot lock", &e));
            }
        }
        let mut bytes = Bytes::new(&file, &path);
        bytes.fill(HEADER_LEN as usize)?;
        let records = match parse_header(&bytes.buf, &path)? {
            Some(header) => parse_records(&mut bytes, header.salt, header.sealed, &path)?.0,
            None => Vec::new(),
        };
        Ok(Some((Self { _file: file }, records)))
    }
}

/// What [`salvage`] read: the store's shared lock (`None`: there is no
/// log), the sound records, and what was wrong, if anything.
pub(super) type Salvaged = (Option<ReadLock>, Vec<Record>, Option<String>);

/// For `kvstash repair`: the store's shared lock, the sound records of
/// its log from the start up to the first that is not (whatever its seal
/// says), and what was wrong, if anything.
pub(super) fn salvage(db: &Path) -> Result<Salvaged, BackendError> {
    let path = path_of(db);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((None, Vec::new(), None)),
        Err(e) => return Err(io_error(&path, "cannot open the commit log", &e)),
    };
    match file.try_lock_shared() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(in_use(db)),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path, "cannot lock", &e)),
    }
    let mut bytes = Bytes::new(&file, &path);
    bytes.fill(HEADER_LEN as usize)?;
    let header = match parse_header(&bytes.buf, &path) {
        Ok(Some(header)) => header,
        Ok(None) => return Ok((Some(ReadLock { _file: file }), Vec::new(), None)),
        Err(e) => {
            let why = format!("the commit log, whose commits are lost: {e}");
            return Ok((Some(ReadLock { _file: file }), Vec::new(), Some(why)));
        }
    };
    // What the store's open would say of the log, if anything.
    let damage = parse_records(&mut bytes, header.salt, header.sealed, &path)
        .err()
        .map(|e| format!("the commit log's commits after the first damaged one: {e}"));
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while let Some(sound) = bytes.sound_at(at, header.salt)? {
        let Some(record) = decode(&bytes.buf[sound.body]) else {
            break;
        };
        records.push(record);
        at = sound.next;
    }
    Ok((Some(ReadLock { _file: file }), records, damage))
}

/// The start of the log, read as far as parsing needs: the file is
/// usually mostly zero-filled growth, or records from before the last
/// checkpoint, which a one-shot open should not pay to read.
struct Bytes<'f> {
    file: &'f dyn LogFile,
    path: &'f Path,
    buf: Vec<u8>,
    eof: bool,
    /// The file's length at open: reads never ask for more, so a garbage
    /// length field cannot make one allocate up to `MAX_RECORD`.
    len: usize,
}

/// Reads go in steps of at least this much.
const READ_STEP: usize = 16 << 10;

impl<'f> Bytes<'f> {
    fn new(file: &'f dyn LogFile, path: &'f Path) -> Self {
        let len = file
            .len()
            .map_or(usize::MAX, |len| usize::try_from(len).unwrap_or(usize::MAX));
        Self {
            file,
            path,
            buf: Vec::new(),
            eof: false,
            len,
        }
    }

    /// Makes `buf` hold the first `upto` bytes, or the whole file if shorter.
    fn fill(&mut self, upto: usize) -> Result<(), BackendError> {
        let upto = upto.min(self.len);
        while self.buf.len() < upto && !self.eof {
            let old = self.buf.len();
            let step = (upto - old)
                .max(READ_STEP)
                .min(self.len.saturating_sub(old).max(1));
            self.buf.resize(old + step, 0);
            let read = self
                .file
                .read_at(&mut self.buf[old..], old as u64)
                .map_err(|e| io_error(self.path, "cannot read the commit log", &e));
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    self.buf.truncate(old);
                    return Err(e);
                }
            };
            self.buf.truncate(old + n);
            self.eof = n == 0;
        }
        Ok(())
    }

    /// [`sound_record`] at `at`, reading what it needs: the body's range
    /// and the offset after it.
    fn sound_at(&mut self, at: usize, salt: u64) -> Result<Option<Sound>, BackendError> {
        self.fill(at.saturating_add(RECORD_HEADER))?;
        if let Some(len) = self.body_len_at(at) {
            self.fill(at + RECORD_HEADER + len)?;
        }
        Ok(
            sound_record(&self.buf, at, salt).map(|(body, next, continues)| Sound {
                body: next - body.len()..next,
                next,
                continues,
            }),
        )
    }

    /// The body length the (read) record header at `at` gives, if it is
    /// one a record can have.
    fn body_len_at(&self, at: usize) -> Option<usize> {
        let head = self.buf.get(at..at.checked_add(RECORD_HEADER)?)?;
        let len = (u32::from_le_bytes([head[0], head[1], head[2], head[3]]) & !CONTINUES) as usize;
        (len != 0 && len <= MAX_RECORD).then_some(len)
    }
}

/// A sound record in [`Bytes`].
struct Sound {
    body: std::ops::Range<usize>,
    /// The offset after it.
    next: usize,
    /// Whether it continues the group of the record before it.
    continues: bool,
}

pub(super) fn sync_parent(disk: &dyn Disk, path: &Path) -> Result<(), BackendError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    disk.sync_dir(parent)
        .map_err(|e| io_error(parent, "cannot sync the directory", &e))
}

fn initial_salt() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    (now as u64) ^ u64::from(std::process::id()).rotate_left(32)
}

fn header(salt: u64, sealed: u64) -> [u8; HEADER_LEN as usize] {
    header_of_format(salt, FORMAT, u32::try_from(sealed).unwrap_or(0))
}

fn header_of_format(salt: u64, format: u32, sealed: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&format.to_le_bytes());
    h[12..16].copy_from_slice(&sealed.to_le_bytes());
    h[16..24].copy_from_slice(&salt.to_le_bytes());
    let crc = crc32fast::hash(&h[..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A sound header's fields.
struct Header {
    salt: u64,
    format: u32,
    /// Where the records ended at the last clean close (0: unsealed).
    sealed: u64,
}

/// A sound header; `None` for a file that never got one (empty or all
/// zeros: created by a crash before its first header).
fn parse_header(bytes: &[u8], path: &Path) -> Result<Option<Header>, BackendError> {
    let head = &bytes[..bytes.len().min(HEADER_LEN as usize)];
    if head.iter().all(|&b| b == 0) {
        return Ok(None);
    }
    // The log is kvstash's by its name: a header that is not a log's is
    // damage (or another program's file in its place), not a setting.
    if head.len() < HEADER_LEN as usize {
        return Err(damaged(path, "its header is cut short"));
    }
    if &head[..8] != MAGIC {
        return Err(damaged(
            path,
            "its header is not a kvstash commit log's (damaged, or another program's file)",
        ));
    }
    let word = |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
    if word(24) != crc32fast::hash(&head[..24]) {
        return Err(damaged(path, "its header fails its checksum"));
    }
    let format = word(8);
    if !(FORMAT_WITHOUT_GROUPS..=FORMAT).contains(&format) {
        return Err(BackendError::Invalid(format!(
            "{} has commit log format {format}; this build reads formats {FORMAT_WITHOUT_GROUPS} to {FORMAT}",
            path.display(),
        )));
    }
    let sealed = match format {
        FORMAT_WITHOUT_GROUPS | FORMAT_WITHOUT_SEAL => 0,
        _ => u64::from(word(12)),
    };
    if sealed != 0 && sealed < HEADER_LEN {
        return Err(damaged(
            path,
            format_args!("its header seals it at offset {sealed}, inside the header"),
        ));
    }
    let mut salt = [0u8; 8];
    salt.copy_from_slice(&head[16..24]);
    Ok(Some(Header {
        salt: u64::from_le_bytes(salt),
        format,
        sealed,
    }))
}

fn encode(buf: &mut Vec<u8>, salt: u64, version: u64, writes: &[Write], continues: bool) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; RECORD_HEADER]);
    buf.extend_from_slice(&version.to_le_bytes());
    buf.extend_from_slice(
        &u32::try_from(writes.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    for write in writes {
        let put = |buf: &mut Vec<u8>, bytes: &[u8]| {
            buf.extend_from_slice(&u32::try_from(bytes.len()).unwrap_or(u32::MAX).to_le_bytes());
            buf.extend_from_slice(bytes);
        };
        match &write.value {
            Some(value) => {
                buf.push(1);
                put(buf, &write.key);
                put(buf, value);
            }
            None => {
                buf.push(0);
                put(buf, &write.key);
            }
        }
    }
    let len = u32::try_from(buf.len() - start - RECORD_HEADER).unwrap_or(u32::MAX);
    let len = if continues { len | CONTINUES } else { len };
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    let crc = record_crc(salt, len, &buf[start + RECORD_HEADER..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The size of the record `writes` makes, to refuse what the log cannot hold.
pub(super) fn record_len(writes: &[Write]) -> usize {
    12 + writes
        .iter()
        .map(|w| 5 + w.key.len() + w.value.as_ref().map_or(0, |v| 4 + v.len()))
        .sum::<usize>()
}

fn record_crc(salt: u64, len: u32, body: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&salt.to_le_bytes());
    hasher.update(&len.to_le_bytes());
    hasher.update(body);
    hasher.finalize()
}

/// A sound record at `at`: its body, the offset after it, and whether it
/// continues a group.
fn sound_record(bytes: &[u8], at: usize, salt: u64) -> Option<(&[u8], usize, bool)> {
    let head = bytes.get(at..at.checked_add(RECORD_HEADER)?)?;
    let word = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    let len = (word & !CONTINUES) as usize;
    if len == 0 || len > MAX_RECORD {
        return None;
    }
    let body_at = at + RECORD_HEADER;
    let body = bytes.get(body_at..body_at.checked_add(len)?)?;
    (record_crc(salt, word, body) == crc).then_some((body, body_at + len, word & CONTINUES != 0))
}

/// The records from the header on, and the offset after the last sound one;
/// an error if a record before `sealed` is not sound, or one is followed
/// by a later group.
fn parse_records(
    bytes: &mut Bytes<'_>,
    salt: u64,
    sealed: u64,
    path: &Path,
) -> Result<(Vec<Record>, u64), BackendError> {
    let mut records = Vec::new();
    let mut at = HEADER_LEN as usize;
    while let Some(sound) = bytes.sound_at(at, salt)? {
        let record = decode(&bytes.buf[sound.body]).ok_or_else(|| {
            damaged(
                path,
                format_args!("the record at offset {at} passes its checksum but cannot be read"),
            )
        })?;
        records.push(record);
        at = sound.next;
    }
    if (at as u64) < sealed {
        return Err(damaged(
            path,
            format_args!(
                "the record at offset {at} is bad, and the log's last close found sound records up to offset {sealed}"
            ),
        ));
    }
    // Not sound at `at`: torn, unless a later group follows. Its length
    // field may itself be torn, so this looks where it says the next
    // record is, and on through the records that continue its group.
    let mut next = bytes.body_len_at(at).map(|len| at + RECORD_HEADER + len);
    while let Some(after) = next {
        match bytes.sound_at(after, salt)? {
            Some(sound) if sound.continues => next = Some(sound.next),
            Some(_) => {
                return Err(damaged(
                    path,
                    format_args!(
                        "the record at offset {at} is bad and a later group of records (at offset {after}) follows it"
                    ),
                ));
            }
            None => next = None,
        }
    }
    Ok((records, at as u64))
}

fn decode(body: &[u8]) -> Option<Record> {
    let mut rest = body;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (head, tail) = rest.split_at_checked(n)?;
        rest = tail;
        Some(head)
    };
    let version = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let count = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let mut writes = Vec::with_capacity(count.min(1024) as usize);
    for _ in 0..count {
        let has = take(1)?[0];
        let klen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
        let key = take(klen)?.to_vec();
        let value = match has {
            0 => None,
            1 => {
                let vlen = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
                Some(take(vlen)?.to_vec())
            }
            _ => return None,
        };
        writes.push(Write { key, value });
    }
    rest.is_empty().then_some(Record { version, writes })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::backend::file::disk::Real;

    fn open(db: &Path) -> Result<(Wal, Vec<Record>), BackendError> {
        Wal::open(std::sync::Arc::new(Real), db)
    }

    fn put(key: &str, value: &str) -> Write {
        Write {
            key: key.as_bytes().to_vec(),
            value: Some(value.as_bytes().to_vec()),
        }
    }

    fn del(key: &str) -> Write {
        Write {
            key: key.as_bytes().to_vec(),
            value: None,
        }
    }

    fn three(db: &Path) {
        let (mut wal, records) = open(db).unwrap();
        assert!(records.is_empty());
        wal.append(&[(1, &[put("a", "1"), put("b", "")][..])])
            .unwrap();
        wal.append(&[(2, &[del("a")][..]), (3, &[put("c", "3")][..])])
            .unwrap();
    }

    #[test]
    fn records_come_back_in_order_and_a_reset_drops_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        three(&db);
        let (mut wal, records) = open(&db).unwrap();
        let versions: Vec<u64> = records.iter().map(|r| r.version).collect();
        assert_eq!(versions, [1, 2, 3]);
        assert_eq!(records[0].writes, [put("a", "1"), put("b", "")]);
        assert_eq!(records[1].writes, [del("a")]);
        let used = wal.used();
        assert!(used > 0);
        wal.reset().unwrap();
        assert_eq!(wal.used(), 0);
        // The old records are still in the file, under the old salt.
        wal.append(&[(4, &[put("d", "4")][..])]).unwrap();
        drop(wal);
        let (_, records) = open(&db).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].version, 4);
    }

    #[test]
    fn a_reader_sees_the_records_and_excludes_writers() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        assert!(
            ReadLock::open(&db).unwrap().is_none(),
            "no log, no file made"
        );
        assert!(!path_of(&db).exists());
        three(&db);
        let (lock, records) = ReadLock::open(&db).unwrap().unwrap();
        assert_eq!(records.len(), 3);
        let err = open(&db).unwrap_err();
        assert!(
            format!("{err}").contains("in use by another process"),
            "{err}"
        );
        assert!(ReadLock::open(&db).unwrap().is_some(), "readers share");
        drop(lock);
        let (_wal, _) = open(&db).unwrap();
        assert!(ReadLock::open(&db).is_err(), "a writer excludes readers");
    }

    /// Every cut of the appends after the first record, as a crash in the
    /// middle of them would leave the file: the records before the cut
    /// always come back, a torn one never, and never in part.
    #[test]
    fn a_torn_append_is_dropped_at_every_length() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        three(&db);
        let full = std::fs::read(path_of(&db)).unwrap();
        let salt = parse_header(&full, &db).unwrap().unwrap().salt;
        let mut ends = vec![HEADER_LEN as usize];
        while let Some((_, next, _)) = sound_record(&full, *ends.last().unwrap(), salt) {
            ends.push(next);
        }
        assert_eq!(ends.len(), 4, "three records");
        for cut in ends[1]..ends[3] {
            let mut torn = full.clone();
            // What was not written yet reads as the zero-filled growth.
            torn[cut..ends[3]].fill(0);
            std::fs::write(path_of(&db), &torn).unwrap();
            let (wal, records) = open(&db).unwrap();
            let whole = ends.iter().filter(|&&end| end <= cut).count() - 1;
            assert_eq!(records.len(), whole, "cut at {cut}");
            assert_eq!(wal.used() as usize, ends[whole] - HEADER_LEN as usize);
        }
    }

    /// Replay reads the file in steps: records of every size across the
    /// step boundaries come back whole, and so does damage far in.
    #[test]
    fn long_logs_are_read_in_steps() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        let (mut wal, _) = open(&db).unwrap();
        let sizes = [10usize, 40_000, 3, 16_000, 16_400, 100_000, 7];
        for (i, size) in sizes.iter().enumerate() {
            let value = "x".repeat(*size);
            wal.append(&[(i as u64 + 1, &[put("k", &value)][..])])
                .unwrap();
        }
        let used = wal.used();
        drop(wal);
        let (wal, records) = open(&db).unwrap();
        assert_eq!(wal.used(), used);
        let got: Vec<usize> = records
            .iter()
            .map(|r| r.writes[0].value.as_ref().unwrap().len())
            .collect();
        assert_eq!(got, sizes);
        drop(wal);
        let (_, read) = ReadLock::open(&db).unwrap().unwrap();
        assert_eq!(read, records);
        // A flip in the 100 KB record, with a sound one after it.
        let mut bytes = std::fs::read(path_of(&db)).unwrap();
        let at = usize::try_from(HEADER_LEN + used).unwrap() - 200;
        bytes[at] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let err = open(&db).unwrap_err();
        assert!(format!("{err}").contains("damaged"), "{err}");
    }

    #[test]
    fn damage_before_a_sound_record_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        three(&db);
        let mut bytes = std::fs::read(path_of(&db)).unwrap();
        // A flipped bit in the first record's body: two sound records follow.
        bytes[HEADER_LEN as usize + RECORD_HEADER + 2] ^= 0x10;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let err = open(&db).unwrap_err();
        assert!(format!("{err}").contains("damaged"), "{err}");
        assert_eq!(std::fs::read(path_of(&db)).unwrap(), bytes, "untouched");
        let err = ReadLock::open(&db).unwrap_err();
        assert!(format!("{err}").contains("damaged"), "{err}");
    }

    /// The offsets of the records in the log of `db`, and its salt.
    fn record_offsets(db: &Path) -> (Vec<usize>, u64) {
        let full = std::fs::read(path_of(db)).unwrap();
        let salt = parse_header(&full, db).unwrap().unwrap().salt;
        let mut at = vec![HEADER_LEN as usize];
        while let Some((_, next, _)) = sound_record(&full, *at.last().unwrap(), salt) {
            at.push(next);
        }
        at.pop();
        (at, salt)
    }

    /// Groups (1), (2, 3, 4) and (5) in a new log at `db`.
    fn grouped(db: &Path) {
        let (mut wal, _) = open(db).unwrap();
        wal.append(&[(1, &[put("a", "1")][..])]).unwrap();
        let v = "v".repeat(5000);
        wal.append(&[
            (2, &[put("b", &v)][..]),
            (3, &[put("c", &v)][..]),
            (4, &[put("d", &v)][..]),
        ])
        .unwrap();
        wal.append(&[(5, &[del("a")][..])]).unwrap();
    }

    /// Writes [`grouped`]'s log for `db`, then lets `damage` change its
    /// bytes (given the records' offsets); returns the offsets and bytes.
    fn grouped_then(db: &Path, damage: impl FnOnce(&mut [u8], &[usize])) -> (Vec<usize>, Vec<u8>) {
        grouped(db);
        let (at, _) = record_offsets(db);
        assert_eq!(at.len(), 5);
        let mut bytes = std::fs::read(path_of(db)).unwrap();
        damage(&mut bytes, &at);
        std::fs::write(path_of(db), &bytes).unwrap();
        (at, bytes)
    }

    /// A power cut during a group's append may keep a later page of it and
    /// lose an earlier one: that group was never acknowledged, so the open
    /// drops it from the bad record on and succeeds.
    #[test]
    fn a_group_torn_out_of_order_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        // The last group (5) was not written, nor the middle of (2, 3, 4);
        // the rest of it (4) was.
        let (at, _) = grouped_then(&db, |bytes, at| {
            bytes[at[4]..].fill(0);
            bytes[at[2]..at[3]].fill(0);
        });
        let (wal, records) = open(&db).unwrap();
        let versions: Vec<u64> = records.iter().map(|r| r.version).collect();
        assert_eq!(
            versions,
            [1, 2],
            "the torn group's sound start may come back"
        );
        assert_eq!(wal.used() as usize, at[2] - HEADER_LEN as usize);
        // Only its first record's body lost, the length field intact.
        let other = dir.path().join("t.redb");
        grouped_then(&other, |bytes, at| {
            bytes[at[4]..].fill(0);
            bytes[at[1] + RECORD_HEADER..at[2]].fill(0);
        });
        let (_, records) = open(&other).unwrap();
        assert_eq!(records.len(), 1);
    }

    /// Damage in a group that a later group follows: that group was synced
    /// (the later one is only written after), so it is damage.
    #[test]
    fn damage_in_a_group_before_a_later_group_refuses_the_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        let (_, bytes) = grouped_then(&db, |bytes, at| bytes[at[2] + RECORD_HEADER + 100] ^= 4);
        let err = open(&db).unwrap_err();
        assert!(format!("{err}").contains("later group"), "{err}");
        assert_eq!(std::fs::read(path_of(&db)).unwrap(), bytes, "untouched");
    }

    /// A log written before records carried their group flag: read, and
    /// its header raised to the current format with the same salt.
    #[test]
    fn a_format_1_log_is_read_and_raised() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        let salt = 99;
        let mut bytes = header_of_format(salt, FORMAT_WITHOUT_GROUPS, 0).to_vec();
        encode(&mut bytes, salt, 1, &[put("a", "1")], false);
        encode(&mut bytes, salt, 2, &[put("b", "2")], false);
        bytes.resize(bytes.len() + 100, 0);
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (mut wal, records) = open(&db).unwrap();
        assert_eq!(records.len(), 2);
        wal.append(&[(3, &[put("c", "3")][..]), (4, &[put("d", "4")][..])])
            .unwrap();
        drop(wal);
        let head = std::fs::read(path_of(&db)).unwrap();
        let header = parse_header(&head, &db).unwrap().unwrap();
        assert_eq!((header.salt, header.format), (salt, FORMAT));
        assert_eq!(open(&db).unwrap().1.len(), 4);
    }

    /// A clean close's seal: damage anywhere before it refuses the open,
    /// the last group's included (unsealed, that group reads as torn and
    /// is dropped). Appends after the seal keep it; an append torn after
    /// it is dropped as before.
    #[test]
    fn a_sealed_log_refuses_damage_anywhere_before_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        grouped(&db);
        let unsealed = std::fs::read(path_of(&db)).unwrap();
        let (starts, _) = record_offsets(&db);
        let last = *starts.last().unwrap();
        let mut flipped = unsealed.clone();
        flipped[last + RECORD_HEADER + 2] ^= 1;
        std::fs::write(path_of(&db), &flipped).unwrap();
        assert_eq!(
            open(&db).unwrap().1.len(),
            4,
            "unsealed: the last group reads as torn"
        );
        std::fs::write(path_of(&db), &unsealed).unwrap();
        {
            let (mut wal, records) = open(&db).unwrap();
            assert_eq!(records.len(), 5);
            wal.seal();
        }
        let sealed = std::fs::read(path_of(&db)).unwrap();
        let header = parse_header(&sealed, &db).unwrap().unwrap();
        let end = usize::try_from(header.sealed).unwrap();
        assert!(end > last, "sealed after the last record");
        for at in HEADER_LEN as usize..end {
            for bit in [0x01, 0x80] {
                let mut bytes = sealed.clone();
                bytes[at] ^= bit;
                std::fs::write(path_of(&db), &bytes).unwrap();
                let err = open(&db).unwrap_err();
                assert!(format!("{err}").contains("damaged"), "flip at {at}: {err}");
                assert!(ReadLock::open(&db).is_err(), "flip at {at}, read-only");
            }
        }
        // Appends after the seal, then one torn: the seal stands, and the
        // torn append is dropped, not taken for damage.
        std::fs::write(path_of(&db), &sealed).unwrap();
        {
            let (mut wal, records) = open(&db).unwrap();
            assert_eq!(records.len(), 5);
            wal.append(&[(6, &[put("e", "6")][..])]).unwrap();
            wal.append(&[(7, &[put("f", "7")][..])]).unwrap();
        }
        let mut bytes = std::fs::read(path_of(&db)).unwrap();
        let (starts, _) = record_offsets(&db);
        let torn = *starts.last().unwrap();
        bytes[torn + RECORD_HEADER + 1] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (_, records) = open(&db).unwrap();
        assert_eq!(
            records.last().unwrap().version,
            6,
            "the torn append is dropped"
        );
        let header = parse_header(&bytes, &db).unwrap().unwrap();
        assert_eq!(header.sealed as usize, end, "the seal stands");
    }

    /// A format-2 log (no seal) is read and raised like format 1's.
    #[test]
    fn a_format_2_log_is_read_and_raised() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        let salt = 7;
        let mut bytes = header_of_format(salt, FORMAT_WITHOUT_SEAL, 0).to_vec();
        encode(&mut bytes, salt, 1, &[put("a", "1")], false);
        bytes.resize(bytes.len() + 100, 0);
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (mut wal, records) = open(&db).unwrap();
        assert_eq!(records.len(), 1);
        wal.seal();
        drop(wal);
        let header = parse_header(&std::fs::read(path_of(&db)).unwrap(), &db)
            .unwrap()
            .unwrap();
        assert_eq!((header.salt, header.format), (salt, FORMAT));
        assert!(header.sealed > HEADER_LEN);
        assert_eq!(open(&db).unwrap().1.len(), 1);
    }

    #[test]
    fn salvage_takes_the_sound_records_before_the_damage() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        grouped(&db);
        {
            let (mut wal, _) = open(&db).unwrap();
            wal.seal();
        }
        let (starts, _) = record_offsets(&db);
        let sound = std::fs::read(path_of(&db)).unwrap();
        let (_, all, damage) = salvage(&db).unwrap();
        assert_eq!((all.len(), damage), (5, None));
        // Damage inside the fourth record: the sealed log is refused, and
        // a salvage takes the three before it.
        let mut bytes = sound.clone();
        bytes[starts[3] + RECORD_HEADER + 2] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        assert!(open(&db).is_err());
        let (lock, records, damage) = salvage(&db).unwrap();
        assert!(lock.is_some());
        assert_eq!(records, all[..3].to_vec());
        assert!(damage.unwrap().contains("damaged"));
        // A damaged header: nothing to take, and said so.
        let mut bytes = sound;
        bytes[3] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let (_, records, damage) = salvage(&db).unwrap();
        assert!(records.is_empty());
        assert!(damage.unwrap().contains("commits are lost"));
        // No log: nothing, and nothing wrong.
        std::fs::remove_file(path_of(&db)).unwrap();
        let (lock, records, damage) = salvage(&db).unwrap();
        assert!(lock.is_none() && records.is_empty() && damage.is_none());
    }

    #[test]
    fn a_foreign_or_damaged_header_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        // The log is kvstash's by its name: another header is damage (or
        // another program's file in its place), never taken for a log.
        std::fs::write(path_of(&db), b"some other file, not a log at all").unwrap();
        let err = open(&db).unwrap_err();
        assert!(matches!(err, BackendError::Corrupt(_)), "{err:?}");
        assert!(format!("{err}").contains("another program's file"), "{err}");
        std::fs::write(path_of(&db), b"short").unwrap();
        assert!(matches!(open(&db), Err(BackendError::Corrupt(_))));
        three(&dir.path().join("t.redb"));
        let mut bytes = std::fs::read(path_of(&dir.path().join("t.redb"))).unwrap();
        bytes[17] ^= 1;
        std::fs::write(path_of(&db), &bytes).unwrap();
        let err = open(&db).unwrap_err();
        assert!(format!("{err}").contains("header"), "{err}");
    }

    #[test]
    fn an_all_zero_log_is_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        std::fs::write(path_of(&db), [0u8; 10]).unwrap();
        let (mut wal, records) = open(&db).unwrap();
        assert!(records.is_empty());
        wal.append(&[(1, &[put("a", "1")][..])]).unwrap();
        drop(wal);
        assert_eq!(open(&db).unwrap().1.len(), 1);
    }

    #[test]
    fn the_size_estimate_is_the_encoded_size() {
        let writes = [put("key", "value"), del("gone"), put("", "")];
        let mut buf = Vec::new();
        encode(&mut buf, 7, 1, &writes, false);
        assert_eq!(buf.len(), RECORD_HEADER + record_len(&writes));
        assert_eq!(
            decode(&buf[RECORD_HEADER..]).unwrap(),
            Record {
                version: 1,
                writes: writes.to_vec()
            }
        );
    }
}
