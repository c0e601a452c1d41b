//! `Fs` over turmoil's simulated per-host file system: unsynced data dies with
//! a crash, multi-block writes can tear, and I/O can fail, so the real storage
//! engine's durability is tested, not assumed.

use naxos_storage::fs::{DataFile, DirLock, Fs};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use turmoil::fs::shim::std::fs as sfs;

/// The current simulated host's file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilFs;

#[derive(Debug)]
struct SimFile(sfs::File);

impl DataFile for SimFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.0, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.0, buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
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
        Ok(Box::new(SimFile(f)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let f = sfs::OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(SimFile(f)))
    }

    fn lock_dir(&self, _dir: &Path) -> io::Result<DirLock> {
        // One process per simulated host: nothing to lock against.
        Ok(DirLock::unlocked())
    }
}
