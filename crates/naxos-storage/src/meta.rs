//! The store's small metadata (cluster id, node id, sealed epoch, trim mark) and
//! its atomic replacement: write a temp file, fsync it, rename it over the old
//! one, fsync the directory.

use naxos_wire::{Epoch, NodeId, Position};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::Path;

/// A log unit's durable metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The cluster this unit belongs to; empty until bootstrap.
    pub cluster_id: String,
    /// This unit's identity.
    pub node_id: NodeId,
    /// Requests of older epochs are refused.
    pub sealed_epoch: Epoch,
    /// Positions below it are trimmed.
    pub trim_mark: Position,
}

/// Writes `bytes` to `dir/name` atomically and durably.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join(name))?;
    fs::File::open(dir)?.sync_all()
}
