//! The verified mark (`PATH-verified`): how an open knows, without reading
//! it, that a redb file too large to verify at every open is sound.
//!
//! redb checks no page checksum when it reads, so an open verifies the file
//! (`verify.rs`, about 1 ms per MiB): every time for a file of at most
//! `verify_mb`, and a larger one whenever it is not exactly as it was when
//! last known sound. It is known sound when a writer's open verified it,
//! and when the writer that opened it so closes it, having met no damage
//! and no failing checkpoint (its own checkpoints are the only writes in
//! between; any other close removes the mark). The mark records
//! the file's identity and times at that moment: device, inode, length,
//! modification and change time. A write to the file through the file
//! system (another program's) sets its change time, and a copy or a
//! restore is another inode, so the next open verifies it in full.
//!
//! A writer removes the mark, durably, before it first writes to the file
//! ([`unmark`]), and marks it again only as it closes it, with the store's
//! lock still held and the file synced: so a crash or a power cut in the
//! middle of a checkpoint (which may leave new pages under old times, as
//! `fdatasync` does not make times durable) leaves no mark, and the next
//! open verifies the file.
//!
//! What the mark cannot see: damage below the file system (a disk
//! returning other bytes without an error), writes made while the store
//! is open, and, on a network file system, another client's writes that
//! its attribute cache hides. `kvstash check` finds those; inside a record,
//! its checksum does on every read. A file system whose times are coarser
//! than a millisecond (FAT, HFS+, ext4 with small inodes: a later write
//! could keep the times the mark holds) gets no mark: there, every open of
//! a file past `verify_mb` verifies it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How old the file's times must be when the mark is taken: longer than
/// the kernel's clock tick (at most 10 ms), which is what file times are
/// taken from, so that any later write gets other times.
const SETTLED: Duration = Duration::from_millis(20);

/// What the mark records of the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Fingerprint {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

fn nanos(secs: i64, nsecs: i64) -> i128 {
    i128::from(secs) * 1_000_000_000 + i128::from(nsecs)
}

impl Fingerprint {
    /// The file at `path` as it is now; `None` if it is not a file.
    pub(super) fn of(path: &Path) -> Option<Self> {
        let m = std::fs::metadata(path).ok().filter(|m| m.is_file())?;
        Some(Self {
            dev: m.dev(),
            ino: m.ino(),
            len: m.len(),
            mtime_ns: nanos(m.mtime(), m.mtime_nsec()),
            ctime_ns: nanos(m.ctime(), m.ctime_nsec()),
        })
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file system keeps the file's times finer than a
    /// millisecond (one of the two has a part below it): on a coarser one,
    /// a later write could keep the times a mark holds.
    pub(super) fn fine(&self) -> bool {
        self.mtime_ns % 1_000_000 != 0 || self.ctime_ns % 1_000_000 != 0
    }

    /// Whether the file last changed longer ago than the clock's tick, so
    /// that any later write gets other times.
    pub(super) fn settled(&self) -> bool {
        self.age() >= SETTLED
    }

    /// How long ago the file last changed (zero if its times are ahead of
    /// the clock).
    fn age(&self) -> Duration {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let changed = self.mtime_ns.max(self.ctime_ns);
        Duration::from_nanos(u64::try_from(now - changed).unwrap_or(0))
    }

    fn line(&self) -> String {
        format!(
            "kvstash-verified 1 {} {} {} {} {}",
            self.dev, self.ino, self.len, self.mtime_ns, self.ctime_ns
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let mut words = line.split(' ');
        if words.next()? != "kvstash-verified" || words.next()? != "1" {
            return None;
        }
        let fingerprint = Self {
            dev: words.next()?.parse().ok()?,
            ino: words.next()?.parse().ok()?,
            len: words.next()?.parse().ok()?,
            mtime_ns: words.next()?.parse().ok()?,
            ctime_ns: words.next()?.parse().ok()?,
        };
        words.next().is_none().then_some(fingerprint)
    }
}

/// The mark of the redb file at `db`.
pub(super) fn path_of(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-verified");
    PathBuf::from(name)
}

/// Whether the mark beside `db` vouches for `now`, the file as it is. A
/// mark that is missing, unreadable or damaged vouches for nothing.
pub(super) fn vouches(db: &Path, now: &Fingerprint) -> bool {
    let Ok(text) = std::fs::read_to_string(path_of(db)) else {
        return false;
    };
    let Some((line, sum)) = text.trim_end_matches('\n').rsplit_once(' ') else {
        return false;
    };
    let sound =
        u32::from_str_radix(sum, 16).is_ok_and(|sum| sum == crc32fast::hash(line.as_bytes()));
    sound && Fingerprint::parse(line).as_ref() == Some(now)
}

/// Marks the redb file at `db` sound as it is, if it is still `known`
/// (what was verified, or what the writer left) once synced, and its file
/// system keeps fine times: after waiting, at most [`SETTLED`], until its
/// times are older than the clock's tick. Only a writer marks, holding the
/// store's lock. Best effort: without a mark, the next open verifies the
/// file.
pub(super) fn mark(db: &Path, known: &Fingerprint) {
    if !known.fine() || vouches(db, known) {
        return;
    }
    if let Some(wait) = SETTLED.checked_sub(known.age()) {
        std::thread::sleep(wait);
    }
    // The times durable before a mark names them (`fdatasync` leaves them).
    let synced = std::fs::File::open(db).and_then(|file| file.sync_all());
    if synced.is_err() || Fingerprint::of(db).as_ref() != Some(known) {
        return;
    }
    let line = known.line();
    let text = format!("{line} {:08x}\n", crc32fast::hash(line.as_bytes()));
    let mark = path_of(db);
    let mut aside = mark.clone().into_os_string();
    aside.push(".tmp");
    // Written aside and renamed: a reader sees the old mark or the new one.
    // Not synced: a mark lost to a power cut only costs a verification.
    let written = std::fs::write(&aside, text).and_then(|()| std::fs::rename(&aside, &mark));
    if written.is_err() {
        let _ = std::fs::remove_file(&aside);
    }
}

/// Removes the mark of the redb file at `db`, durably (its directory
/// synced), before a writer first writes to the file. Nothing to do when
/// there is none. Where it cannot be removed (a directory the writer may
/// not change), it is emptied in place and synced: an empty mark vouches
/// for nothing.
pub(super) fn unmark(db: &Path) -> std::io::Result<()> {
    let mark = path_of(db);
    match std::fs::remove_file(&mark) {
        Ok(()) => {
            let dir = db.parent().filter(|d| !d.as_os_str().is_empty());
            std::fs::File::open(dir.unwrap_or(Path::new("."))).and_then(|dir| dir.sync_all())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(removing) => std::fs::OpenOptions::new()
            .write(true)
            .open(&mark)
            .and_then(|file| file.set_len(0).and_then(|()| file.sync_all()))
            .map_err(|_| removing),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mark_vouches_for_the_file_it_was_taken_of_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        std::fs::write(&db, b"pages").unwrap();
        let taken = Fingerprint::of(&db).unwrap();
        assert!(!vouches(&db, &taken), "no mark yet");
        mark(&db, &taken);
        assert!(vouches(&db, &taken));
        unmark(&db).unwrap();
        assert!(!vouches(&db, &taken));
        unmark(&db).unwrap();
        mark(&db, &taken);

        // Any write through the file system, even of the same bytes.
        std::fs::write(&db, b"pages").unwrap();
        assert!(!vouches(&db, &Fingerprint::of(&db).unwrap()));

        // A copy in its place is another inode.
        mark(&db, &Fingerprint::of(&db).unwrap());
        assert!(vouches(&db, &Fingerprint::of(&db).unwrap()));
        let copy = dir.path().join("copy");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::rename(&copy, &db).unwrap();
        assert!(!vouches(&db, &Fingerprint::of(&db).unwrap()));

        // A file changed since `known` is not marked.
        let known = Fingerprint::of(&db).unwrap();
        std::fs::write(&db, b"other pages").unwrap();
        mark(&db, &known);
        assert!(!vouches(&db, &known));
        assert!(!vouches(&db, &Fingerprint::of(&db).unwrap()));
    }

    /// Times in whole milliseconds (a coarse file system's) are not marked.
    #[test]
    fn coarse_times_are_not_marked() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        std::fs::write(&db, b"pages").unwrap();
        let fine = Fingerprint::of(&db).unwrap();
        assert!(fine.fine(), "{fine:?}");
        let coarse = Fingerprint {
            mtime_ns: fine.mtime_ns - fine.mtime_ns % 1_000_000_000,
            ctime_ns: fine.ctime_ns - fine.ctime_ns % 1_000_000,
            ..fine
        };
        assert!(!coarse.fine());
        mark(&db, &coarse);
        assert!(!path_of(&db).exists());
    }

    #[test]
    fn a_damaged_mark_vouches_for_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.redb");
        std::fs::write(&db, b"pages").unwrap();
        let now = Fingerprint::of(&db).unwrap();
        mark(&db, &now);
        let text = std::fs::read(path_of(&db)).unwrap();
        for at in 0..text.len() {
            let mut damaged = text.clone();
            damaged[at] ^= 0x01;
            std::fs::write(path_of(&db), &damaged).unwrap();
            assert!(!vouches(&db, &now), "flipped at {at}: {damaged:?}");
        }
        for len in 0..text.len() - 1 {
            std::fs::write(path_of(&db), &text[..len]).unwrap();
            assert!(!vouches(&db, &now), "cut to {len}");
        }
        std::fs::write(path_of(&db), &text).unwrap();
        assert!(vouches(&db, &now));
    }
}
