//! Running out of file descriptors is not a failed disk: a directory sync
//! that cannot even open the directory (EMFILE) fails that batch, and the
//! store goes on once descriptors are back (it once refused every read and
//! write until restarted, when idle connections had taken the descriptors).

use naxos_storage::conformance::data;
use naxos_storage::fs::{DataFile, DirLock, Fs, StdFs};
use naxos_storage::{DiskStore, Options, Store};
use naxos_wire::{NodeId, Position};
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `StdFs`, except that while `out` is set opening a file or a directory
/// fails as a process out of descriptors does.
#[derive(Debug, Default)]
struct ShortFs {
    out: AtomicBool,
}

impl ShortFs {
    fn check(&self) -> io::Result<()> {
        if self.out.load(Ordering::Relaxed) {
            return Err(io::Error::from_raw_os_error(24)); // EMFILE
        }
        Ok(())
    }
}

impl Fs for ShortFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.read_dir(dir)
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check()?;
        StdFs.read(path)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check()?;
        StdFs.sync_dir(dir)
    }
    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        self.check()?;
        StdFs.open(path)
    }
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        StdFs.create_new(path)
    }
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        StdFs.lock_dir(dir)
    }
}

#[test]
fn a_directory_sync_out_of_descriptors_fails_the_batch_not_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(ShortFs::default());
    let options = Options { segment_positions: 4, fs: fs.clone(), node_id: Some(NodeId(7)), ..Options::default() };
    let mut store = DiskStore::open(dir.path(), options.clone()).unwrap();
    for p in 0..4 {
        store.write(Position(p), &data(format!("e{p}").as_bytes(), &[])).unwrap();
    }
    store.sync().unwrap();
    // The write that starts the next segment file lists it in meta.json,
    // whose atomic replace syncs the directory: without descriptors, the
    // write fails and leaves no unlisted file behind.
    fs.out.store(true, Ordering::Relaxed);
    let e = store.write(Position(4), &data(b"e4", &[])).expect_err("the directory could not be opened");
    assert!(e.to_string().contains("Too many open files"), "{e}");
    // Descriptors are back: the same store writes, syncs and reads again.
    fs.out.store(false, Ordering::Relaxed);
    store.write(Position(4), &data(b"e4", &[])).expect("the store did not take EMFILE for a failed disk");
    store.sync().unwrap();
    // A sync that cannot open the directory fails the batch only.
    store.write(Position(5), &data(b"e5", &[])).unwrap();
    store.sync().unwrap();
    store.write(Position(8), &data(b"e8", &[])).unwrap();
    fs.out.store(true, Ordering::Relaxed);
    let e = store.sync().expect_err("the directory could not be opened");
    fs.out.store(false, Ordering::Relaxed);
    assert!(e.to_string().contains("syncing data directory"), "{e}");
    store.sync().expect("the store did not take EMFILE for a failed disk");
    store.sync().unwrap();
    for p in 0..6 {
        let entry = store.read(Position(p)).unwrap().expect("written");
        assert_eq!(entry.payload, format!("e{p}").as_bytes());
    }
    drop(store);
    let store = DiskStore::open(dir.path(), options).unwrap();
    assert_eq!(store.tail(), Position(9));
}
