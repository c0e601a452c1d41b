//! The Naxos wire protocol: the message schema (`proto/naxos.proto`, compiled
//! with prost and protox), length-prefixed framing, typed error codes, the
//! identifier newtypes (positions, epochs, stream ids, node ids), the layout and
//! the network seam (`Net`) that both the real runtime and the simulator plug in.
//!
//! This crate owns no protocol logic: it says what travels and how, not what a
//! server does with it. See `docs/protocol.md` for the protocol in prose.

pub mod error;
pub mod frame;
pub mod ids;
pub mod layout;
pub mod mutation;
pub mod net;
pub mod rpc;
pub mod scan;
pub mod tls;
pub mod tokens;

/// The generated protobuf messages of `proto/naxos.proto`.
#[allow(missing_docs, clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/naxos.v1.rs"));
}

pub use error::{AbortCause, ErrorCode, ServerError};
pub use ids::{Epoch, NodeId, Position, StreamId};
pub use proto::{Entry, EntryKind, Layout, Request, Response};

/// Default largest entry payload a server accepts (1 MiB).
pub const DEFAULT_ENTRY_BYTES_MAX: usize = 1 << 20;
/// Default largest frame either side accepts (64 MiB, enough for a bulk read).
pub const DEFAULT_FRAME_BYTES_MAX: usize = 64 << 20;
/// Default requests in flight a server allows on one connection.
pub const DEFAULT_INFLIGHT_MAX: usize = 4096;
/// The protocol's version, reported by `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Back-pointer value that means "the stream had no previous entry".
pub const NO_BACKPOINTER: u64 = u64::MAX;
/// Positions at or above this are reserved: no write, fill, trim, token or
/// sequencer bootstrap may reach them, so that no tail can wrap past 2^64
/// to 0 (and `NO_BACKPOINTER` never names a position). 2^62 positions is
/// about 146 years at a billion appends a second.
pub const POSITION_LIMIT: u64 = 1 << 62;

/// The error for a position in the reserved range (`what`: "write", ...).
pub fn reserved_position(what: &str, position: u64) -> ServerError {
    ServerError::new(
        ErrorCode::BadRequest,
        format!("{what} at {position}: positions at or above {POSITION_LIMIT} (2^62) are reserved"),
    )
}
