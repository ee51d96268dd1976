//! Verifying a redb file in full without writing it (`docs/reliability.md`).
//!
//! redb checks no page checksum when it reads: a damaged branch page, or a
//! leaf's header, silently drops records from reads (kvstash's own record
//! checksums, `stored.rs`, catch damage inside a record, not a record that
//! is no longer found). redb verifies every page of its committed trees
//! only in its repair, which an open runs with
//! `Builder::set_check_integrity_on_open`, and which commits. [`verify`]
//! runs that open on a copy-on-write view of the file: reads come from the
//! file, what redb writes stays in memory, so the file is not changed and
//! no lock is needed beyond the one the caller holds on the store.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Mutex;

use redb::{Builder, Database, DatabaseError, StorageBackend};

/// The unit of the in-memory copies of what redb writes.
const BLOCK: u64 = 4096;

/// A file seen through the writes made since it was opened.
#[derive(Debug)]
struct Overlay {
    file: File,
    view: Mutex<View>,
}

#[derive(Debug)]
struct View {
    /// The length redb sees.
    len: u64,
    /// Bytes of the file at or past this are zeros (the view was cut
    /// shorter than the file and grown again).
    file_until: u64,
    /// Blocks written, whole.
    blocks: BTreeMap<u64, Box<[u8]>>,
}

impl Overlay {
    fn open(path: &Path) -> io::Result<Self> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        Ok(Self {
            file,
            view: Mutex::new(View {
                len,
                file_until: len,
                blocks: BTreeMap::new(),
            }),
        })
    }

    fn view(&self) -> std::sync::MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl View {
    /// The file's bytes of block `block` (zeros past `file_until`).
    fn file_block(&self, file: &File, block: u64) -> io::Result<Box<[u8]>> {
        let mut buf = vec![0; BLOCK as usize].into_boxed_slice();
        let start = block * BLOCK;
        let end = (start + BLOCK).min(self.file_until);
        if end > start {
            let want = usize::try_from(end - start).unwrap_or(0);
            let mut read = 0;
            while read < want {
                match file.read_at(&mut buf[read..want], start + read as u64)? {
                    0 => break,
                    n => read += n,
                }
            }
        }
        Ok(buf)
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "read past the end of the file")
}

impl StorageBackend for Overlay {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.view().len)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let view = self.view();
        let end = offset
            .checked_add(out.len() as u64)
            .filter(|&end| end <= view.len)
            .ok_or_else(out_of_range)?;
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(usize::try_from(end - at).unwrap_or(usize::MAX));
            let dst = &mut out[(at - offset) as usize..][..n];
            match view.blocks.get(&block) {
                Some(bytes) => dst.copy_from_slice(&bytes[within..within + n]),
                None if at + n as u64 <= view.file_until => {
                    let mut read = 0;
                    while read < n {
                        match self.file.read_at(&mut dst[read..], at + read as u64)? {
                            0 => return Err(out_of_range()),
                            r => read += r,
                        }
                    }
                }
                None => dst.copy_from_slice(&view.file_block(&self.file, block)?[within..][..n]),
            }
            at += n as u64;
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut view = self.view();
        if len < view.len {
            view.file_until = view.file_until.min(len);
            let first_gone = len.div_ceil(BLOCK);
            view.blocks.split_off(&first_gone);
            // The kept part of a block cut in the middle; the rest reads
            // as zeros if the view grows again.
            if !len.is_multiple_of(BLOCK) {
                let block = len / BLOCK;
                if !view.blocks.contains_key(&block) {
                    let bytes = view.file_block(&self.file, block)?;
                    view.blocks.insert(block, bytes);
                }
                if let Some(bytes) = view.blocks.get_mut(&block) {
                    bytes[(len % BLOCK) as usize..].fill(0);
                }
            }
        }
        view.len = len;
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut view = self.view();
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= view.len)
            .ok_or_else(out_of_range)?;
        let mut at = offset;
        while at < end {
            let block = at / BLOCK;
            let within = (at % BLOCK) as usize;
            let n = (BLOCK as usize - within).min(usize::try_from(end - at).unwrap_or(usize::MAX));
            if !view.blocks.contains_key(&block) {
                let bytes = view.file_block(&self.file, block)?;
                view.blocks.insert(block, bytes);
            }
            if let Some(bytes) = view.blocks.get_mut(&block) {
                bytes[within..within + n].copy_from_slice(&data[(at - offset) as usize..][..n]);
            }
            at += n as u64;
        }
        Ok(())
    }
}

/// Opens the redb file at `path` with `builder` as redb's integrity check
/// does: every page of its committed trees is read and its checksum
/// verified. The file is not written. The database returned reads the
/// verified state (and whatever its check wrote, in memory).
pub(super) fn open_verified(mut builder: Builder, path: &Path) -> Result<Database, DatabaseError> {
    #[cfg(test)]
    RUNS.set(RUNS.get() + 1);
    let overlay = Overlay::open(path)?;
    builder.set_check_integrity_on_open(true);
    builder.create_with_backend(overlay)
}

#[cfg(test)]
thread_local! {
    /// Verifications this thread ran, for the tests of when an open
    /// verifies (an open verifies on its caller's thread).
    pub(super) static RUNS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_view_reads_the_file_through_its_writes_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let original: Vec<u8> = (0..3 * BLOCK + 100).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &original).unwrap();
        let view = Overlay::open(&path).unwrap();
        let mut model = original.clone();
        let read = |view: &Overlay, model: &[u8]| {
            assert_eq!(view.len().unwrap(), model.len() as u64);
            for (offset, n) in [
                (0, model.len()),
                (10, model.len() - 20),
                (4090, 10),
                (model.len() - 1, 1),
            ] {
                let mut out = vec![0; n];
                view.read(offset as u64, &mut out).unwrap();
                assert_eq!(out, model[offset..offset + n]);
            }
        };
        read(&view, &model);
        view.write(4000, &[7; 300]).unwrap();
        model[4000..4300].fill(7);
        read(&view, &model);
        // Cut in the middle of a block, grown again: zeros past the cut.
        view.set_len(5000).unwrap();
        model.truncate(5000);
        read(&view, &model);
        view.set_len(3 * BLOCK + 100).unwrap();
        model.resize(3 * BLOCK as usize + 100, 0);
        read(&view, &model);
        view.write(3 * BLOCK, &[9; 100]).unwrap();
        model[3 * BLOCK as usize..].fill(9);
        read(&view, &model);
        let mut past = [0; 2];
        assert!(view.read(model.len() as u64 - 1, &mut past).is_err());
        assert!(view.write(model.len() as u64, &[1]).is_err());
        assert_eq!(
            std::fs::read(&path).unwrap(),
            original,
            "the file is untouched"
        );
    }
}
