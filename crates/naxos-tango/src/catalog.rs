//! The catalog: a map (`map/tango/catalog`) of every object ever written,
//! object stream id -> kind, which each runtime fills in before its first
//! update of an object. The checkpointer walks it, so that idle objects are
//! checkpointed too before the log is trimmed (CorfuDB #2951: idle streams
//! fell below the trim mark). It is an object itself, checkpointed like any.

use crate::handles::{stream_of, update};
use crate::object::Kind;
use crate::record::{KeyValue, Op, Update};
use bytes::Bytes;
use naxos_client::{conflict_key, StreamId};

/// The catalog map's name.
pub const NAME: &str = "tango/catalog";

/// The catalog's stream.
pub fn stream() -> StreamId {
    stream_of(Kind::Map, NAME)
}

/// The update that enters `object` in the catalog, and its conflict keys.
pub(crate) fn entry(object: StreamId, kind: Kind) -> (Update, Vec<u64>) {
    let key = Bytes::from(object.to_string());
    let catalog = stream();
    let writes = vec![conflict_key(catalog, &key, false), conflict_key(catalog, &[], true)];
    (update(catalog, Op::Put(KeyValue { key, value: Bytes::from_static(kind.name().as_bytes()) })), writes)
}

/// An entry read back: the object's stream and kind.
pub(crate) fn parse(key: &[u8], value: &[u8]) -> Option<(StreamId, Kind)> {
    let id = u128::from_str_radix(std::str::from_utf8(key).ok()?, 16).ok()?;
    let kind = match value {
        b"map" => Kind::Map,
        b"counter" => Kind::Counter,
        b"register" => Kind::Register,
        b"queue" => Kind::Queue,
        _ => return None,
    };
    Some((StreamId(id), kind))
}
