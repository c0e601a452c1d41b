//! The one record format every object update and transaction commit is
//! appended as: who wrote it (client id and sequence number, for exactly-once),
//! the updates (each addressed to one object), and for a transaction its
//! snapshot and read versions (so that every replayer can re-validate it).
//! Encoded with prost; the field numbers are persisted in the log and must
//! stay stable.

use bytes::Bytes;
use naxos_client::{Position, StreamId};
use prost::Message;

/// Marks a payload as a Tango record ("NXT1"); entries without it are not
/// ours and are skipped (counted) by replayers.
pub(crate) const MAGIC: u32 = 0x4e58_5431;

/// A record as appended to the log (in the stream of every object it updates).
#[derive(Clone, PartialEq, Message)]
pub struct Record {
    /// [`MAGIC`].
    #[prost(fixed32, tag = "1")]
    pub magic: u32,
    /// The writing runtime's id (16 bytes, big-endian).
    #[prost(bytes = "bytes", tag = "2")]
    pub client: Bytes,
    /// The writer's sequence number for this record (a retry repeats it).
    #[prost(uint64, tag = "3")]
    pub seq: u64,
    /// Every sequence number of this writer below this one is settled: it
    /// will not be sent again (replayers forget them).
    #[prost(uint64, tag = "4")]
    pub floor: u64,
    /// What the record changes.
    #[prost(message, repeated, tag = "5")]
    pub updates: Vec<Update>,
    /// For a transaction: the log position its reads saw everything below.
    #[prost(uint64, optional, tag = "6")]
    pub snapshot: Option<u64>,
    /// For a transaction: the version of every key it read.
    #[prost(message, repeated, tag = "7")]
    pub reads: Vec<ReadVersion>,
}

/// One change to one object.
#[derive(Clone, PartialEq, Message)]
pub struct Update {
    /// The object's stream id (16 bytes, big-endian).
    #[prost(bytes = "bytes", tag = "1")]
    pub object: Bytes,
    /// The change.
    #[prost(oneof = "Op", tags = "2, 3, 4, 5, 6, 7")]
    pub op: Option<Op>,
}

/// The changes objects know.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Op {
    /// Map: set a key.
    #[prost(message, tag = "2")]
    Put(KeyValue),
    /// Map: remove a key.
    #[prost(bytes = "bytes", tag = "3")]
    Delete(Bytes),
    /// Counter: add (may be negative).
    #[prost(sint64, tag = "4")]
    Add(i64),
    /// Register: set the value (empty message: clear it).
    #[prost(message, tag = "5")]
    Set(RegisterValue),
    /// Queue: push at the back.
    #[prost(bytes = "bytes", tag = "6")]
    Push(Bytes),
    /// Queue: pop the front.
    #[prost(message, tag = "7")]
    Pop(Empty),
}

/// A key and its new value.
#[derive(Clone, PartialEq, Message)]
pub struct KeyValue {
    /// The key.
    #[prost(bytes = "bytes", tag = "1")]
    pub key: Bytes,
    /// The value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// A register's new value (`None`: cleared).
#[derive(Clone, PartialEq, Message)]
pub struct RegisterValue {
    /// The value.
    #[prost(bytes = "bytes", optional, tag = "1")]
    pub value: Option<Bytes>,
}

/// No fields.
#[derive(Clone, PartialEq, Message)]
pub struct Empty {}

/// A key a transaction read, and the version it saw.
#[derive(Clone, PartialEq, Message)]
pub struct ReadVersion {
    /// The object's stream id.
    #[prost(bytes = "bytes", tag = "1")]
    pub object: Bytes,
    /// The key (empty for single-valued objects).
    #[prost(bytes = "bytes", tag = "2")]
    pub key: Bytes,
    /// The position of the key's last write, plus one; 0: never written.
    #[prost(uint64, tag = "3")]
    pub version: u64,
    /// The whole object was read (a map's listing): `version` is that of its
    /// last write of any key.
    #[prost(bool, tag = "4")]
    pub whole: bool,
}

/// A version as recorded: `None` (never written) is 0, position `p` is `p + 1`.
pub(crate) fn version_code(v: Option<Position>) -> u64 {
    v.map_or(0, |p| p.0 + 1)
}

/// The stream id bytes of a record field.
pub(crate) fn stream_of(raw: &[u8]) -> Option<StreamId> {
    StreamId::from_slice(raw)
}

impl Record {
    /// Decodes a payload; `None` if it is not a Tango record.
    pub fn decode_payload(payload: &[u8]) -> Option<Record> {
        let r = Record::decode(payload).ok()?;
        (r.magic == MAGIC).then_some(r)
    }

    /// The writer's id.
    pub fn client_id(&self) -> Option<u128> {
        let raw: [u8; 16] = self.client.as_ref().try_into().ok()?;
        Some(u128::from_be_bytes(raw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_foreign_payloads_are_not_records() {
        let r = Record {
            magic: MAGIC,
            client: Bytes::copy_from_slice(&7u128.to_be_bytes()),
            seq: 3,
            floor: 2,
            updates: vec![Update {
                object: Bytes::copy_from_slice(&StreamId::from_name("m").to_bytes()),
                op: Some(Op::Put(KeyValue { key: "k".into(), value: "v".into() })),
            }],
            snapshot: Some(9),
            reads: vec![ReadVersion { object: Bytes::new(), key: "k".into(), version: 4, whole: false }],
        };
        let back = Record::decode_payload(&r.encode_to_vec()).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.client_id(), Some(7));
        assert!(Record::decode_payload(b"hello").is_none());
        assert!(Record::decode_payload(b"").is_none());
    }
}
