//! The file-system seam: every file the server touches (segments, index files,
//! `meta.json`, `format.json`, `layout.json`, the directory lock) is reached
//! through the object-safe [`Fs`] trait, so a simulator can run the real server
//! over a simulated, crashable disk. [`StdFs`] is the production implementation
//! over `std::fs`.
//!
//! The trait mirrors `std::fs` and returns plain `std::io::Result`s with std's
//! error kinds (`NotFound` for a missing file, `UnexpectedEof` for a short
//! read, `WouldBlock` for a held lock); the engine adds the context (what was
//! being done to which file) when it turns them into [`crate::Error::Io`].
//!
//! Durability, as on a POSIX file system: a file's bytes and length are durable
//! after [`DataFile::sync_data`]; a created, renamed or deleted name is durable
//! after [`Fs::sync_dir`] of its directory; [`Fs::create_dir_all`] and
//! [`Fs::write_atomic`] are durable when they return.

use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// A file system: the server's only way to its files. See the module docs for
/// the durability each call promises.
pub trait Fs: Send + Sync + Debug + 'static {
    /// Creates `dir` and its missing parents, durably: each directory it
    /// creates is synced into its parent. An existing directory is fine.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;

    /// The names of the entries of `dir`, in any order (names that are not
    /// UTF-8 may be left out).
    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>>;

    /// The whole content of the file at `path` (`NotFound` if there is none).
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;

    /// Deletes the file at `path` (`NotFound` if there is none). Durable after
    /// `sync_dir` of its directory.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Renames `from` to `to`, atomically replacing `to` if it exists. Durable
    /// after `sync_dir` of the directory.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// fsyncs the directory `dir`, so that the names created, renamed and
    /// deleted in it so far are durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;

    /// Opens the existing file at `path` for positioned reads and writes
    /// (`NotFound` if there is none).
    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>>;

    /// Creates a new, empty file at `path` for positioned reads and writes
    /// (`AlreadyExists` if there is one). Its name is durable after `sync_dir`.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>>;

    /// Takes an exclusive lock on the directory `dir` (which exists), held
    /// until the returned guard is dropped, so that two stores never write the
    /// same files. Fails at once with `WouldBlock` if someone else holds it.
    /// A file system with a single user may return [`DirLock::unlocked`].
    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock>;

    /// Replaces the file at `path` with `bytes` atomically and durably: write
    /// `<path>.tmp`, `sync_data` it, rename it over `path`, `sync_dir`. After
    /// a crash the file holds either the old or the new bytes, never a mix; a
    /// crash may leave the `.tmp` file behind (the next call replaces it).
    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let tmp = tmp_path(path);
        let step = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
        match self.remove_file(&tmp) {
            // Make the removal durable before a new file takes the name, so
            // that no crash can replay the stale file's entry over the new one.
            Ok(()) => self
                .sync_dir(parent_dir(path))
                .map_err(|e| step(&format!("syncing the removal of the stale {}", tmp.display()), e))?,
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(step(&format!("deleting the stale {}", tmp.display()), e)),
        }
        let file = self.create_new(&tmp).map_err(|e| step(&format!("creating {}", tmp.display()), e))?;
        file.write_all_at(bytes, 0).map_err(|e| step(&format!("writing {}", tmp.display()), e))?;
        file.sync_data().map_err(|e| step(&format!("syncing {}", tmp.display()), e))?;
        drop(file);
        self.rename(&tmp, path).map_err(|e| step(&format!("renaming {} over it", tmp.display()), e))?;
        let dir = parent_dir(path);
        self.sync_dir(dir).map_err(|e| step(&format!("syncing directory {}", dir.display()), e))
    }
}

/// An open file, read and written with positioned I/O only.
pub trait DataFile: Send + Sync + Debug {
    /// The file's current length in bytes.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the
    /// file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// Writes all of `buf` at `offset`, extending the file if needed. Not
    /// durable until `sync_data`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;

    /// `fdatasync`: makes the file's bytes and length durable.
    fn sync_data(&self) -> io::Result<()>;

    /// Cuts (or extends with zeros) the file to `len` bytes. Not durable until
    /// `sync_data`.
    fn set_len(&self, len: u64) -> io::Result<()>;
}

/// The guard of a directory lock: the lock is released when it is dropped.
pub struct DirLock {
    guard: Option<Box<dyn Send + Sync>>,
}

impl DirLock {
    /// A lock held as long as `guard` lives (e.g. the locked file's handle).
    pub fn new(guard: impl Send + Sync + 'static) -> DirLock {
        DirLock { guard: Some(Box::new(guard)) }
    }

    /// A lock that locks nothing, for a file system with a single user (a
    /// simulated host).
    pub fn unlocked() -> DirLock {
        DirLock { guard: None }
    }
}

impl Debug for DirLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.guard.is_some() { "DirLock(held)" } else { "DirLock(unlocked)" })
    }
}

/// `<path>.tmp`: where [`Fs::write_atomic`] writes before its rename.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory that holds `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The real file system, through `std::fs`: `fdatasync` for data files, an
/// fsync of the directory for names, and an advisory `flock` on `<dir>/LOCK`
/// (`File::try_lock`) for the directory lock.
#[derive(Clone, Copy, Debug, Default)]
pub struct StdFs;

impl Fs for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        // The ancestors that do not exist yet, from `dir` up: each needs its
        // parent synced once it is created.
        let missing: Vec<&Path> = dir.ancestors().take_while(|a| !a.as_os_str().is_empty() && !a.exists()).collect();
        std::fs::create_dir_all(dir)?;
        for created in missing.iter().rev() {
            self.sync_dir(parent_dir(created))?;
        }
        Ok(())
    }

    fn read_dir(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for item in std::fs::read_dir(dir)? {
            if let Some(name) = item?.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        Ok(names)
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn open(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn create_new(&self, path: &Path) -> io::Result<Box<dyn DataFile>> {
        let file = OpenOptions::new().read(true).write(true).create_new(true).open(path)?;
        Ok(Box::new(StdFile(file)))
    }

    fn lock_dir(&self, dir: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(dir.join("LOCK"))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock::new(file)),
            Err(std::fs::TryLockError::WouldBlock) => {
                Err(io::Error::new(ErrorKind::WouldBlock, "the LOCK file is held by another process"))
            }
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

/// A [`DataFile`] over a `std::fs::File`.
#[derive(Debug)]
struct StdFile(File);

impl DataFile for StdFile {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmp_path_appends_to_the_file_name() {
        assert_eq!(tmp_path(Path::new("/d/meta.json")), Path::new("/d/meta.json.tmp"));
        assert_eq!(tmp_path(Path::new("layout.json")), Path::new("layout.json.tmp"));
        assert_eq!(parent_dir(Path::new("layout.json")), Path::new("."));
    }

    #[test]
    fn std_fs_write_atomic_replaces_and_cleans_up() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("a.json");
        std::fs::write(tmp_path(&path), b"stale").expect("stale tmp");
        StdFs.write_atomic(&path, b"one").expect("first");
        StdFs.write_atomic(&path, b"two").expect("second");
        assert_eq!(StdFs.read(&path).expect("read"), b"two");
        assert!(!tmp_path(&path).exists());
    }

    #[test]
    fn std_fs_create_dir_all_creates_parents() {
        let dir = tempfile::tempdir().expect("temp dir");
        let deep = dir.path().join("a/b/c");
        StdFs.create_dir_all(&deep).expect("create");
        StdFs.create_dir_all(&deep).expect("again");
        assert!(deep.is_dir());
    }

    #[test]
    fn std_fs_lock_is_exclusive_until_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let lock = StdFs.lock_dir(dir.path()).expect("lock");
        let second = StdFs.lock_dir(dir.path()).expect_err("held");
        assert_eq!(second.kind(), ErrorKind::WouldBlock);
        drop(lock);
        StdFs.lock_dir(dir.path()).expect("free again");
    }
}
