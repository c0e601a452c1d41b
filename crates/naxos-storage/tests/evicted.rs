//! A segment evicted from memory and loaded back: a read error while loading
//! (an injected one here; an EIO on a real disk) must leave the segment
//! evicted, not open with its slots missing. Half loaded, it read its
//! positions as unwritten and took writes over them (soak seed 740428: an
//! acknowledged entry was lost that way).

use naxos_storage::conformance::data;
use naxos_storage::fs::{DataFile, DirLock, Fs, StdFs};
use naxos_storage::{DiskStore, Options, Store};
use naxos_wire::{NodeId, Position};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `StdFs`, except that while `failing` is set every positioned read of a
/// data file fails.
#[derive(Debug, Default)]
struct FlakyReads {
    failing: Arc<AtomicBool>,
}

#[derive(Debug)]
struct FlakyFile(Box<dyn DataFile>, Arc<AtomicBool>);

impl DataFile for FlakyFile {
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.1.load(Ordering::Relaxed) {
            return Err(io::Error::other("injected read error"));
        }
        self.0.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Fs for FlakyReads {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.read_dir(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        Ok(Box::new(FlakyFile(StdFs.open(path)?, self.failing.clone())))
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        Ok(Box::new(FlakyFile(StdFs.create_new(path)?, self.failing.clone())))
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFs.lock_dir(dir)
    }
}

#[test]
fn a_failed_load_of_an_evicted_segment_serves_nothing_from_it_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(FlakyReads::default());
    // One segment resident at a time: using segment 1 evicts segment 0.
    let options = Options {
        segment_positions: 4,
        resident_segments_max: 1,
        fs: fs.clone(),
        node_id: Some(NodeId(7)),
        ..Options::default()
    };
    let mut store = DiskStore::open(dir.path(), options).unwrap();
    for p in 0..6 {
        store.write(Position(p), &data(format!("e{p}").as_bytes(), &[])).unwrap();
        store.sync().unwrap();
    }
    assert_eq!(store.resident_segments(), 1, "segment 0 was evicted");
    fs.failing.store(true, Ordering::Relaxed);
    assert!(store.read(Position(1)).is_err(), "loading segment 0 failed");
    // Tried again with the disk still failing: still an error, never "unwritten".
    assert!(store.read(Position(1)).is_err(), "a half-loaded segment answered");
    assert!(store.write(Position(1), &data(b"over", &[])).is_err(), "a write went over an entry it could not see");
    fs.failing.store(false, Ordering::Relaxed);
    for p in 0..6 {
        let entry = store.read(Position(p)).unwrap().unwrap_or_else(|| panic!("position {p} lost"));
        assert_eq!(entry.payload, format!("e{p}").as_bytes());
    }
}
