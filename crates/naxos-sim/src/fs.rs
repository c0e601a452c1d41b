//! `Fs` over turmoil's simulated per-host file system: unsynced data dies with
//! a crash and multi-block writes can tear, so the real storage engine's
//! durability is tested, not assumed. I/O errors are injected here (seeded,
//! and switched off for the quiescent phase): a failing call fails before it
//! takes effect.

use crate::rng::Rng;
use naxos_storage::fs::{DataFile, DirLock, Fs};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use turmoil::fs::shim::std::fs as sfs;

/// Seeded I/O error injection, shared by every simulated host of a run.
#[derive(Debug)]
pub struct IoFaults {
    probability: f64,
    on: AtomicBool,
    rng: Mutex<Rng>,
}

impl IoFaults {
    /// Errors with `probability` per data-file operation, from `seed`.
    pub fn new(seed: u64, probability: f64) -> Arc<IoFaults> {
        Arc::new(IoFaults { probability, on: AtomicBool::new(probability > 0.0), rng: Mutex::new(Rng::new(seed, 99)) })
    }

    /// Stops injecting errors (the quiescent phase).
    pub fn stop(&self) {
        self.on.store(false, Ordering::Relaxed);
    }

    fn check(&self, what: &str) -> io::Result<()> {
        if !self.on.load(Ordering::Relaxed) {
            return Ok(());
        }
        let hit = self.rng.lock().map(|mut r| r.chance(self.probability)).unwrap_or(false);
        if hit {
            return Err(io::Error::other(format!("injected I/O error ({what})")));
        }
        Ok(())
    }
}

/// The current simulated host's file system.
#[derive(Clone, Debug)]
pub struct TurmoilFs {
    faults: Arc<IoFaults>,
}

impl TurmoilFs {
    /// The file system, with these injected errors.
    pub fn new(faults: Arc<IoFaults>) -> TurmoilFs {
        TurmoilFs { faults }
    }
}

#[derive(Debug)]
struct SimFile(sfs::File, Arc<IoFaults>);

impl DataFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.1.check("read")?;
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.1.check("write")?;
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.1.check("sync")?;
        // The simulated file system makes length and bytes durable together.
        self.0.sync_all()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Fs for TurmoilFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Durable by itself: sync the parent of every directory created.
        let mut missing = Vec::new();
        let mut at = Some(dir);
        while let Some(p) = at {
            if p.as_os_str().is_empty() || sfs::exists(p) {
                break;
            }
            missing.push(p.to_path_buf());
            at = p.parent();
        }
        sfs::create_dir_all(dir)?;
        for d in missing.iter().rev() {
            if let Some(parent) = d.parent() {
                sfs::sync_dir(if parent.as_os_str().is_empty() { Path::new("/") } else { parent })?;
            }
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in sfs::read_dir(dir)? {
            out.push(entry?.file_name().to_string_lossy().into_owned());
        }
        out.sort();
        Ok(out)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        sfs::read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        // turmoil keys unsynced writes by path, not by file: writes left
        // unsynced (a sync failed) would land in the next file created at
        // that path, as they never could on a real disk (the simulator made
        // a `meta.json` with trailing bytes this way, seed 732657). Flushing
        // them into the file being deleted first keeps them out of it.
        if let Ok(f) = sfs::OpenOptions::new().write(true).open(path) {
            let _ = f.sync_all();
        }
        sfs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        sfs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        sfs::sync_dir(dir)
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let f = sfs::OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(SimFile(f, self.faults.clone())))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let f = sfs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(SimFile(f, self.faults.clone())))
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<DirLock> {
        // One process per simulated host: nothing to lock against.
        Ok(DirLock::unlocked())
    }
}
