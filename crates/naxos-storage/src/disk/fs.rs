//! The engine's only door to the file system. Every file operation of the disk
//! store goes through here and comes back with its context (what was being done
//! to which file), so a simulated file system can later replace this module
//! without touching the engine.

use crate::{Error, Result};
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

/// An exclusive lock on a data directory, held while the store is open, so
/// that two processes never write the same log unit's files.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir/LOCK`; fails at once if another process holds it.
    pub(crate) fn take(dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(fs::TryLockError::WouldBlock) => Err(Error::Directory {
                path: dir.display().to_string(),
                reason: "is in use by another log unit (its LOCK file is held); stop that one first".into(),
            }),
            Err(fs::TryLockError::Error(e)) => Err(io(format!("locking {}", path.display()), e)),
        }
    }
}

/// An open data file, read and written with positioned I/O only.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: File,
    path: PathBuf,
}

impl DataFile {
    /// Opens an existing file for reading and writing.
    pub(crate) fn open(path: &Path) -> Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| io(format!("opening {}", path.display()), e))?;
        Ok(DataFile { file, path: path.to_path_buf() })
    }

    /// Creates a new, empty file; fails if it exists.
    pub(crate) fn create(path: &Path) -> Result<DataFile> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| io(format!("creating {}", path.display()), e))?;
        Ok(DataFile { file, path: path.to_path_buf() })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current length.
    pub(crate) fn len(&self) -> Result<u64> {
        self.file.metadata().map(|m| m.len()).map_err(|e| io(format!("reading the size of {}", self.path.display()), e))
    }

    /// Reads exactly `buf.len()` bytes at `offset`. A short file is reported as
    /// `Ok(false)` (the caller decides whether that is corruption).
    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<bool> {
        match self.file.read_exact_at(buf, offset) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(io(format!("reading {} bytes at offset {offset} of {}", buf.len(), self.path.display()), e)),
        }
    }

    /// Writes all of `buf` at `offset` (idempotent, so a failed write can be retried).
    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| io(format!("writing {} bytes at offset {offset} of {}", buf.len(), self.path.display()), e))
    }

    /// `fdatasync`.
    pub(crate) fn sync_data(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| io(format!("syncing {}", self.path.display()), e))
    }

    /// Cuts the file to `len` bytes.
    pub(crate) fn truncate(&self, len: u64) -> Result<()> {
        self.file.set_len(len).map_err(|e| io(format!("truncating {} to {len} bytes", self.path.display()), e))
    }
}

/// Creates `dir` (and its parents) if it does not exist.
pub(crate) fn create_dir_all(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| io(format!("creating data directory {}", dir.display()), e))
}

/// The names of the files in `dir`.
pub(crate) fn list(dir: &Path) -> Result<Vec<String>> {
    let context = || format!("listing data directory {}", dir.display());
    let mut names = Vec::new();
    for item in fs::read_dir(dir).map_err(|e| io(context(), e))? {
        let item = item.map_err(|e| io(context(), e))?;
        if let Some(name) = item.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The whole content of `dir/name`, `None` if it does not exist.
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    match fs::read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()), e)),
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably (see [`crate::meta::write_atomic`]).
pub(crate) fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    crate::meta::write_atomic(dir, name, bytes)
        .map_err(|e| io(format!("writing {} atomically", dir.join(name).display()), e))
}

/// Deletes `dir/name`; a file that is already gone is fine.
pub(crate) fn remove(dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("deleting {}", path.display()), e)),
    }
}

/// fsyncs the directory itself, so that created, renamed and deleted names are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| io(format!("syncing data directory {}", dir.display()), e))
}

/// 64 random bits from the OS (`/dev/urandom`), or, failing that, from the
/// standard library's randomly seeded hasher over the time and process id.
pub(crate) fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    use std::io::Read;
    let mut bytes = [0u8; 8];
    if File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    std::collections::hash_map::RandomState::new().hash_one((std::time::SystemTime::now(), std::process::id()))
}
