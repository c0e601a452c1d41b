//! Identifier newtypes: the compiler keeps a position from being passed as an epoch.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A position (offset) in the shared log.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Position(pub u64);

impl Position {
    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A layout epoch; it only ever goes up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Epoch(pub u64);

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A node's identity, chosen at random when its data directory is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A stream's 128-bit id; usually the hash of its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct StreamId(pub u128);

impl StreamId {
    /// The stream id of a name: XXH3-128 of its UTF-8 bytes (stable across versions).
    pub fn from_name(name: &str) -> StreamId {
        StreamId(xxhash_rust::xxh3::xxh3_128(name.as_bytes()))
    }

    /// The 16-byte big-endian form that travels on the wire and sits on disk.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Parses the 16-byte wire form; `None` if the length is not 16.
    pub fn from_slice(bytes: &[u8]) -> Option<StreamId> {
        let arr: [u8; 16] = bytes.try_into().ok()?;
        Some(StreamId(u128::from_be_bytes(arr)))
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_round_trips_through_bytes() {
        let id = StreamId::from_name("orders");
        assert_eq!(StreamId::from_slice(&id.to_bytes()), Some(id));
        assert_ne!(id, StreamId::from_name("orders2"));
        assert_eq!(StreamId::from_slice(&[1, 2, 3]), None);
    }
}
