//! The layout a node holds, stored durably as `layout.json` in its data
//! directory. Every node keeps the layout it was bootstrapped with (the
//! sequencer recovers from it); nodes with the layout role serve it as the
//! authority. Bootstrap writes epoch 0 once: a different second bootstrap is
//! refused, the same one repeated is accepted (so a retried bootstrap is safe).

use naxos_storage::Fs;
use naxos_wire::{ErrorCode, Layout, ServerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The layout file's name inside the data directory.
pub const FILE: &str = "layout.json";

/// A node's durable copy of the layout.
#[derive(Debug)]
pub struct LayoutStore {
    path: PathBuf,
    fs: Arc<dyn Fs>,
    layout: Option<Layout>,
}

impl LayoutStore {
    /// Loads `dir/layout.json` through `fs` if it exists.
    pub fn open(dir: &Path, fs: Arc<dyn Fs>) -> Result<LayoutStore, crate::Error> {
        let path = dir.join(FILE);
        let layout = match fs.read(&path) {
            Ok(bytes) => {
                let l: Layout = naxos_storage::checked::decode(&bytes)
                    .map_err(|e| crate::Error::Damaged(format!("{}: not a valid layout: {e}", path.display())))?;
                Some(l)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(crate::Error::Io { context: format!("reading {}", path.display()), source }),
        };
        Ok(LayoutStore { path, fs, layout })
    }

    /// The layout, if bootstrapped.
    pub fn get(&self) -> Option<&Layout> {
        self.layout.as_ref()
    }

    /// Stores the first layout durably.
    pub fn bootstrap(&mut self, layout: Layout) -> Result<(), ServerError> {
        if let Some(current) = &self.layout {
            if *current == layout {
                return Ok(());
            }
            return Err(ServerError::new(
                ErrorCode::AlreadyBootstrapped,
                format!(
                    "node is already bootstrapped (cluster {}, epoch {}); a cluster is bootstrapped once",
                    current.cluster_id, current.epoch
                ),
            ));
        }
        if layout.epoch != 0 {
            return Err(ServerError::new(ErrorCode::BadRequest, "the bootstrap layout has epoch 0"));
        }
        layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
        self.store(layout)
    }
}

impl LayoutStore {
    /// Writes `layout` durably and holds it.
    fn store(&mut self, layout: Layout) -> Result<(), ServerError> {
        let json = naxos_storage::checked::encode(&layout).expect("a layout always serializes to a JSON object");
        self.fs.write_atomic(&self.path, &json).map_err(|e| {
            ServerError::new(ErrorCode::Unavailable, format!("storing the layout in {}: {e}", self.path.display()))
        })?;
        self.layout = Some(layout);
        Ok(())
    }

    /// Stores the layout of a cluster this node joins (any epoch); refused if
    /// the node holds a layout already.
    pub fn enroll(&mut self, layout: Layout) -> Result<(), ServerError> {
        if let Some(current) = &self.layout {
            if current.cluster_id != layout.cluster_id {
                return Err(ServerError::new(
                    ErrorCode::WrongCluster,
                    format!("this node belongs to cluster {}, not {}", current.cluster_id, layout.cluster_id),
                ));
            }
            return self.commit(layout).map(|_| ());
        }
        layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
        self.store(layout)
    }

    /// Stores a newer layout of the same cluster durably; an older epoch or
    /// the same layout again is ignored (returns false), another layout at
    /// the held epoch refused.
    pub fn commit(&mut self, layout: Layout) -> Result<bool, ServerError> {
        let Some(current) = &self.layout else {
            return Err(ServerError::new(ErrorCode::NotBootstrapped, "node holds no layout; bootstrap it first"));
        };
        if layout.cluster_id != current.cluster_id {
            return Err(ServerError::new(
                ErrorCode::WrongCluster,
                format!("layout of cluster {} offered to cluster {}", layout.cluster_id, current.cluster_id),
            ));
        }
        if layout.epoch == current.epoch && layout != *current {
            return Err(ServerError::new(
                ErrorCode::BadRequest,
                format!("a different layout is already chosen at epoch {}; it cannot be replaced", current.epoch),
            ));
        }
        if layout.epoch <= current.epoch {
            return Ok(false);
        }
        layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
        self.store(layout)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_is_durable_and_happens_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = vec!["a:1".to_string()];
        let l = Layout::initial("c1", &a, 1, 1, a.clone(), a.clone());
        let mut s = LayoutStore::open(dir.path(), Arc::new(naxos_storage::StdFs)).unwrap();
        s.bootstrap(l.clone()).unwrap();
        s.bootstrap(l.clone()).unwrap();
        let other = Layout::initial("c2", &a, 1, 1, a.clone(), a.clone());
        assert_eq!(s.bootstrap(other).unwrap_err().code, ErrorCode::AlreadyBootstrapped);
        let s2 = LayoutStore::open(dir.path(), Arc::new(naxos_storage::StdFs)).unwrap();
        assert_eq!(s2.get(), Some(&l));
    }
}
