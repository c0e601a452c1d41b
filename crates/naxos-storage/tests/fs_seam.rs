//! The `DiskStore` over a second `Fs` implementation: a crash-modelling wrapper
//! over `StdFs` that, like a real disk after a power loss, keeps only what was
//! made durable (file bytes by `sync_data`, names by `sync_dir`). It shows that
//! the engine reaches its files only through `Options::fs`, works with a no-op
//! directory lock and the default `write_atomic`, and that every acknowledged
//! (synced) write survives a crash.

use naxos_storage::conformance::{self, data};
use naxos_storage::fs::{DataFile, DirLock, Fs, StdFs};
use naxos_storage::{DiskStore, Meta, Options, Store, SyncPolicy};
use naxos_wire::proto::Entry;
use naxos_wire::{Epoch, NodeId, Position};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the crash-modelling file system knows.
#[derive(Debug, Default)]
struct State {
    next_inode: u64,
    /// Names as they are now (the real files under the temp dir).
    live: BTreeMap<PathBuf, u64>,
    /// Names as they were at the last `sync_dir` of their directory.
    durable: BTreeMap<PathBuf, u64>,
    /// Each file's bytes as of its last `sync_data`.
    synced: HashMap<u64, Vec<u8>>,
    data_syncs: u64,
    dir_syncs: u64,
}

/// `StdFs` plus a model of what a power loss would keep.
#[derive(Clone, Debug, Default)]
struct CrashFs {
    state: Arc<Mutex<State>>,
}

impl CrashFs {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("no test thread panicked while holding the state")
    }

    fn data_syncs(&self) -> u64 {
        self.state().data_syncs
    }

    /// Puts every file under `dir` back to what a power loss would leave: the
    /// durable names, each with its last synced bytes (empty if never synced).
    /// The store must be gone (dropped with `simulate_crash`).
    fn crash(&self, dir: &Path) {
        let mut st = self.state();
        for name in StdFs.read_dir(dir).expect("list") {
            StdFs.remove_file(&dir.join(name)).expect("remove");
        }
        let durable: Vec<(PathBuf, u64)> =
            st.durable.iter().filter(|(p, _)| p.starts_with(dir)).map(|(p, i)| (p.clone(), *i)).collect();
        for (path, inode) in &durable {
            std::fs::write(path, st.synced.get(inode).cloned().unwrap_or_default()).expect("restore");
        }
        st.live.retain(|p, _| !p.starts_with(dir));
        st.live.extend(durable);
    }
}

impl Fs for CrashFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Directories are not modelled: StdFs makes them durable.
        StdFs.create_dir_all(dir)
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.read_dir(dir)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        StdFs.remove_file(path)?;
        self.state().live.remove(path);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)?;
        let mut st = self.state();
        let inode = st.live.remove(from).expect("renamed files were created through this Fs");
        st.live.insert(to.to_path_buf(), inode);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)?;
        let mut st = self.state();
        st.dir_syncs += 1;
        st.durable.retain(|p, _| p.parent() != Some(dir));
        let now: Vec<(PathBuf, u64)> =
            st.live.iter().filter(|(p, _)| p.parent() == Some(dir)).map(|(p, i)| (p.clone(), *i)).collect();
        st.durable.extend(now);
        Ok(())
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let inner = StdFs.open(path)?;
        let inode = *self.state().live.get(path).expect("opened files were created through this Fs");
        Ok(Box::new(CrashFile { inner, inode, fs: self.clone() }))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let inner = StdFs.create_new(path)?;
        let mut st = self.state();
        st.next_inode += 1;
        let inode = st.next_inode;
        st.live.insert(path.to_path_buf(), inode);
        Ok(Box::new(CrashFile { inner, inode, fs: self.clone() }))
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<DirLock> {
        Ok(DirLock::unlocked())
    }
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn DataFile>,
    inode: u64,
    fs: CrashFs,
}

impl DataFile for CrashFile {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.inner.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.inner.sync_data()?;
        let mut bytes = vec![0; self.inner.len()? as usize];
        self.inner.read_exact_at(&mut bytes, 0)?;
        let mut st = self.fs.state();
        st.data_syncs += 1;
        st.synced.insert(self.inode, bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
}

fn options(fs: &CrashFs) -> Options {
    Options { segment_positions: 4, fs: Arc::new(fs.clone()), node_id: Some(NodeId(7)), ..Options::default() }
}

fn entry(i: u64) -> Entry {
    data(&i.to_le_bytes(), &[])
}

#[test]
fn the_model_loses_what_was_not_synced() {
    let root = tempfile::tempdir().expect("temp dir");
    let fs = CrashFs::default();
    let (a, b) = (root.path().join("a"), root.path().join("b"));
    let fa = fs.create_new(&a).expect("create a");
    fa.write_all_at(b"synced", 0).expect("write a");
    fa.sync_data().expect("sync a");
    fs.sync_dir(root.path()).expect("sync dir");
    fa.write_all_at(b"SYNCED, then more", 0).expect("write a again");
    let fb = fs.create_new(&b).expect("create b");
    fb.write_all_at(b"never durable", 0).expect("write b");
    fb.sync_data().expect("sync b, but not its name");
    fs.crash(root.path());
    assert_eq!(StdFs.read(&a).expect("a survives"), b"synced");
    assert!(StdFs.read(&b).is_err(), "b's name was never synced");
}

#[test]
fn disk_store_over_another_fs_conforms() {
    let root = tempfile::tempdir().expect("temp dir");
    let fs = CrashFs::default();
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        DiskStore::open(&root.path().join(format!("store-{n}")), options(&fs)).expect("open")
    });
}

#[test]
fn sync_costs_one_fdatasync_per_touched_file() {
    let root = tempfile::tempdir().expect("temp dir");
    let fs = CrashFs::default();
    let mut store = DiskStore::open(root.path(), options(&fs)).expect("open");
    for i in [0, 1, 2, 5, 6, 9] {
        store.write(Position(i), &entry(i)).expect("write");
    }
    let before = fs.data_syncs();
    store.sync().expect("sync");
    // Three segments were touched; the older two also get their index files
    // (one atomic write, so one fdatasync, each).
    assert_eq!(fs.data_syncs() - before, 3 + 2);
    let before = fs.data_syncs();
    store.sync().expect("an idle sync");
    assert_eq!(fs.data_syncs(), before, "nothing was touched");

    let unsafe_options = Options { sync: SyncPolicy::UnsafeNoSync, ..options(&fs) };
    let other = root.path().join("unsafe");
    let mut store = DiskStore::open(&other, unsafe_options).expect("open");
    store.write(Position(0), &entry(0)).expect("write");
    let before = fs.data_syncs();
    store.sync().expect("sync");
    assert_eq!(fs.data_syncs(), before, "UnsafeNoSync never fsyncs data files");
}

#[test]
fn every_synced_write_survives_a_crash_and_unsynced_ones_may_not() {
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("log");
    let fs = CrashFs::default();
    let mut acknowledged: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut unsynced: BTreeMap<u64, Entry> = BTreeMap::new();
    let mut trim_mark = 0;
    let mut epoch = 0;
    for round in 0..12u64 {
        let mut store = DiskStore::open(&dir, options(&fs)).expect("open after a crash");
        assert_eq!(store.meta().node_id, NodeId(7), "the node id given for the new directory");
        assert_eq!(store.meta().trim_mark, Position(trim_mark));
        assert_eq!(store.meta().sealed_epoch, Epoch(epoch));
        for (p, e) in &acknowledged {
            if *p >= trim_mark {
                assert_eq!(store.read(Position(*p)).expect("read"), Some(e.clone()), "round {round}: lost {p}");
            }
        }
        for (p, e) in std::mem::take(&mut unsynced) {
            if p >= trim_mark {
                let got = store.read(Position(p)).expect("read");
                assert!(got.is_none() || got == Some(e.clone()), "round {round}: {p} holds {got:?}");
                if got.is_some() {
                    acknowledged.insert(p, e);
                }
            }
        }
        let tail = store.tail().0;
        // Acknowledged writes, often into a new segment (a created file).
        for p in tail..tail + 3 {
            store.write(Position(p), &entry(p)).expect("write");
            acknowledged.insert(p, entry(p));
        }
        store.sync().expect("sync");
        if round % 3 == 1 {
            trim_mark = trim_mark.max(tail.saturating_sub(4));
            store.trim(Position(trim_mark)).expect("trim");
        }
        if round % 4 == 2 {
            epoch += 1;
            store.set_meta(Meta { sealed_epoch: Epoch(epoch), ..store.meta().clone() }).expect("seal");
        }
        // Never synced: may be lost.
        for p in tail + 3..tail + 5 {
            store.write(Position(p), &entry(p)).expect("write");
            unsynced.insert(p, entry(p));
        }
        if round % 5 == 4 {
            store.close().expect("a clean close writes the index files");
        } else {
            store.simulate_crash();
        }
        fs.crash(&dir);
    }
}
