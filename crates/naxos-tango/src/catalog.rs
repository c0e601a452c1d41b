//! The catalog: a map (`map/tango/catalog`) of every object ever written,
//! object stream id -> kind, which each runtime fills in (put if absent, in
//! a transaction) before its first update of an object: the entry's version
//! is below every update of the object. The checkpointer walks it, so that idle objects are
//! checkpointed too before the log is trimmed (CorfuDB #2951: idle streams
//! fell below the trim mark). It is an object itself, checkpointed like any.

use crate::handles::stream_of;
use crate::object::Kind;
use naxos_client::StreamId;

/// The catalog map's name.
pub const NAME: &str = "tango/catalog";

/// The catalog's stream.
pub fn stream() -> StreamId {
    stream_of(Kind::Map, NAME)
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
