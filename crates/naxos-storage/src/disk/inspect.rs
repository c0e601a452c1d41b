//! Reading a segment file's bytes from outside the store, for damage tests
//! and the simulator's rot fault: which records its sync header claims as
//! synced, and how much of it its index file covers.

use super::{index, record, sync_header};
use naxos_wire::Position;

/// Where the payloads of the data records lie that a segment file's sync
/// header claims as synced, as `(position, offset, len)`, given the file's bytes. For
/// damage tests and the simulator's rot fault: a byte flipped there damages
/// one record whose header, and so its position, stays readable.
pub fn synced_payloads(file: &[u8]) -> Vec<(Position, u64, u64)> {
    let Some(header) = sync_header::from_bytes(file) else { return Vec::new() };
    let synced = header.synced.min(file.len() as u64);
    let mut out = Vec::new();
    let mut at = sync_header::BYTES;
    while at < synced {
        let Some(len) = file.get(at as usize..).and_then(|b| record::parse_header(b).ok()).map(|h| u64::from(h.len))
        else {
            break;
        };
        let end = at + len;
        let Some(h) = file.get(at as usize..end.min(synced) as usize).and_then(|b| record::verify(b, header.salt).ok())
        else {
            break;
        };
        if h.payload_len > 0 {
            out.push((Position(h.position), end - u64::from(h.payload_len), u64::from(h.payload_len)));
        }
        at = end;
    }
    out
}

/// How many bytes of its segment file a valid index file covers (records
/// there are not verified at start-up, only when read); `None` if the index
/// file is not valid. `first` is the segment's first position. For damage
/// tests and the simulator's rot fault.
pub fn indexed_bytes(idx: &[u8], first: u64, segment_positions: u64, file_len: u64) -> Option<u64> {
    index::decode(idx, first, segment_positions, file_len).ok().map(|ix| ix.covered)
}
