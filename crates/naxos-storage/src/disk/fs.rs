//! The engine's only door to the file system: thin wrappers over the
//! [`crate::fs::Fs`] seam that give every error its context (what was being
//! done to which file) and turn std's "expected" error kinds into values
//! (a missing file is `None`, a short read is `false`).

use crate::fs::{DataFile as RawFile, DirLock, Fs};
use crate::{Error, Result};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

pub(crate) fn io(context: String, source: std::io::Error) -> Error {
    Error::Io { context, source }
}

/// Takes the exclusive lock on the data directory `dir`; fails at once if
/// another store holds it.
pub(crate) fn lock(fs: &dyn Fs, dir: &Path) -> Result<DirLock> {
    match fs.lock_dir(dir) {
        Ok(lock) => Ok(lock),
        Err(e) if e.kind() == ErrorKind::WouldBlock => Err(Error::Directory {
            path: dir.display().to_string(),
            reason: "is in use by another log unit (its LOCK file is held); stop that one first".into(),
        }),
        Err(e) => Err(io(format!("locking data directory {}", dir.display()), e)),
    }
}

/// An open data file, read and written with positioned I/O only.
#[derive(Debug)]
pub(crate) struct DataFile {
    file: Box<dyn RawFile>,
    path: PathBuf,
}

impl DataFile {
    /// Opens an existing file for reading and writing.
    pub(crate) fn open(fs: &dyn Fs, path: &Path) -> Result<DataFile> {
        let file = fs.open(path).map_err(|e| io(format!("opening {}", path.display()), e))?;
        Ok(DataFile { file, path: path.to_path_buf() })
    }

    /// Creates a new, empty file; fails if it exists.
    pub(crate) fn create(fs: &dyn Fs, path: &Path) -> Result<DataFile> {
        let file = fs.create_new(path).map_err(|e| io(format!("creating {}", path.display()), e))?;
        Ok(DataFile { file, path: path.to_path_buf() })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The file's current length.
    pub(crate) fn len(&self) -> Result<u64> {
        self.file.len().map_err(|e| io(format!("reading the size of {}", self.path.display()), e))
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

/// Creates `dir` (and its parents) durably if it does not exist.
pub(crate) fn create_dir_all(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.create_dir_all(dir).map_err(|e| io(format!("creating data directory {}", dir.display()), e))
}

/// The names of the files in `dir`, sorted.
pub(crate) fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<String>> {
    let mut names = fs.read_dir(dir).map_err(|e| io(format!("listing data directory {}", dir.display()), e))?;
    names.sort();
    Ok(names)
}

/// The whole content of `dir/name`, `None` if it does not exist.
pub(crate) fn read(fs: &dyn Fs, dir: &Path, name: &str) -> Result<Option<Vec<u8>>> {
    let path = dir.join(name);
    match fs.read(&path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", path.display()), e)),
    }
}

/// Replaces `dir/name` with `bytes` atomically and durably (see [`Fs::write_atomic`]).
pub(crate) fn write_atomic(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    let path = dir.join(name);
    fs.write_atomic(&path, bytes).map_err(|e| io(format!("writing {} atomically", path.display()), e))
}

/// Deletes `dir/name`; a file that is already gone is fine.
pub(crate) fn remove(fs: &dyn Fs, dir: &Path, name: &str) -> Result<()> {
    let path = dir.join(name);
    match fs.remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(format!("deleting {}", path.display()), e)),
    }
}

/// fsyncs the directory itself, so that created, renamed and deleted names are durable.
pub(crate) fn sync_dir(fs: &dyn Fs, dir: &Path) -> Result<()> {
    fs.sync_dir(dir).map_err(|e| io(format!("syncing data directory {}", dir.display()), e))
}
