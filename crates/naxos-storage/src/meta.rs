//! The store's small metadata (cluster id, node id, sealed epoch, trim mark,
//! the sequencers' token ceiling).
//! It is replaced atomically through [`crate::fs::Fs::write_atomic`].

use naxos_wire::{Epoch, NodeId, Position};
use serde::{Deserialize, Serialize};

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
    /// The highest token ceiling a sequencer stored here: every position a
    /// sequencer ever handed out is below the ceiling it stored on every
    /// replica of one chain, so a reconfiguration that seals the chains can
    /// start the next sequencer above it even when the last one is dead.
    #[serde(default)]
    pub token_ceiling: u64,
    /// The node whose sequencer stored `token_ceiling` (a restarting
    /// sequencer trusts its own exact record over it).
    #[serde(default)]
    pub token_ceiling_by: NodeId,
}

/// A random, non-zero node id: 64 bits from the OS (`/dev/urandom`), or,
/// failing that, from the standard library's randomly seeded hasher over the
/// time and process id. (Randomness, not storage: it does not go through the
/// `Fs` seam; a simulator passes `Options::node_id` instead.)
pub(crate) fn random_node_id() -> NodeId {
    use std::hash::BuildHasher;
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_ok() {
        u64::from_le_bytes(bytes)
    } else {
        std::collections::hash_map::RandomState::new().hash_one((std::time::SystemTime::now(), std::process::id()))
    };
    NodeId(random.max(1))
}
