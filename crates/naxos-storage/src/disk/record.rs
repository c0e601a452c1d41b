//! The record: how one entry is laid out in a segment file, and the checks that
//! decide whether bytes on disk are a record at all.
//!
//! ```text
//! offset  size    field
//! 0       4       len          u32 LE, whole record in bytes (header + streams + back-pointers + payload)
//! 4       4       crc          u32 LE, CRC32C of bytes [8, len)
//! 8       8       position     u64 LE
//! 16      1       kind         1 = data, 2 = hole (RecordKind; stable)
//! 17      1       streams      n, number of stream ids (<= 64)
//! 18      1       flags        bit 0: back-pointers present; other bits 0
//! 19      1       reserved     0
//! 20      4       payload_len  u32 LE
//! 24      16 * n  stream ids   big-endian u128 each (the wire form)
//! ..      8 * n   back-pointers u64 LE each, only if flags bit 0
//! ..      payload_len  payload
//! ```
//!
//! `len` must equal `24 + 16n + 8n·bp + payload_len`; a header that breaks any
//! rule above is not a record (a torn or garbage header).

use bytes::Bytes;
use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::StreamId;

/// Bytes of the fixed header.
pub(crate) const HEADER_BYTES: usize = 24;

/// Largest payload the format accepts, whatever the configured entry limit
/// (1 GiB): it bounds `len` so that a garbage length is recognised as such.
pub(crate) const PAYLOAD_BYTES_LIMIT: usize = 1 << 30;

/// Largest record the format accepts.
pub(crate) const RECORD_BYTES_MAX: usize = HEADER_BYTES + crate::STREAMS_PER_ENTRY_MAX * 24 + PAYLOAD_BYTES_LIMIT;

/// The kind byte of a record. Persisted: the numbers must stay stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RecordKind {
    /// An entry with data.
    Data = 1,
    /// A hole (junk fill).
    Hole = 2,
}

impl RecordKind {
    /// The record kind of a (validated) entry kind.
    pub(crate) fn of(kind: EntryKind) -> RecordKind {
        match kind {
            EntryKind::Hole => RecordKind::Hole,
            _ => RecordKind::Data,
        }
    }

    /// The entry kind it stores.
    pub(crate) fn entry_kind(self) -> EntryKind {
        match self {
            RecordKind::Data => EntryKind::Data,
            RecordKind::Hole => EntryKind::Hole,
        }
    }

    fn from_byte(b: u8) -> Option<RecordKind> {
        match b {
            1 => Some(RecordKind::Data),
            2 => Some(RecordKind::Hole),
            _ => None,
        }
    }
}

const FLAG_BACKPOINTERS: u8 = 1;

/// A parsed, self-consistent header (its CRC not yet checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Header {
    /// Whole record length.
    pub(crate) len: u32,
    /// The stored CRC32C.
    pub(crate) crc: u32,
    /// The position the record claims.
    pub(crate) position: u64,
    /// Data or hole.
    pub(crate) kind: RecordKind,
    /// Number of stream ids.
    pub(crate) streams: u8,
    /// Whether back-pointers follow the stream ids.
    pub(crate) has_backpointers: bool,
    /// Payload length.
    pub(crate) payload_len: u32,
}

impl Header {
    fn streams_offset(&self) -> usize {
        HEADER_BYTES
    }

    fn backpointers_offset(&self) -> usize {
        HEADER_BYTES + 16 * usize::from(self.streams)
    }

    fn payload_offset(&self) -> usize {
        self.backpointers_offset() + if self.has_backpointers { 8 * usize::from(self.streams) } else { 0 }
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The encoded size of `entry`.
pub(crate) fn encoded_len(entry: &Entry) -> usize {
    let n = entry.streams.len();
    HEADER_BYTES + 16 * n + 8 * entry.backpointers.len() + entry.payload.len()
}

/// The CRC of a record's bytes `[8, len)` in a file whose sync header holds
/// `salt` (0: a file from before the header, plain CRC32C). Seeded with the
/// file's random salt, a record cannot be forged from outside: a payload
/// that holds a well-formed record with a valid plain CRC (CRC is no
/// authentication) is not one here, so a scan may look for the next record
/// after damage without indexing a client's bytes as a record.
pub(crate) fn checksum(salt: u32, bytes: &[u8]) -> u32 {
    if salt == 0 {
        return crc32c::crc32c(bytes);
    }
    crc32c::crc32c_append(crc32c::crc32c(&salt.to_le_bytes()), bytes)
}

/// Appends the record of a validated `entry` at `position` to `out`
/// (checksummed with the file's `salt`).
pub(crate) fn encode(position: u64, kind: EntryKind, entry: &Entry, salt: u32, out: &mut Vec<u8>) {
    let start = out.len();
    let len = encoded_len(entry);
    debug_assert!(len <= RECORD_BYTES_MAX, "validate_entry bounds the entry size");
    let n = entry.streams.len();
    let has_bp = !entry.backpointers.is_empty();
    out.reserve(len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // CRC, filled in below
    out.extend_from_slice(&position.to_le_bytes());
    out.push(RecordKind::of(kind) as u8);
    out.push(n as u8);
    out.push(if has_bp { FLAG_BACKPOINTERS } else { 0 });
    out.push(0);
    out.extend_from_slice(&(entry.payload.len() as u32).to_le_bytes());
    for s in &entry.streams {
        out.extend_from_slice(s);
    }
    for bp in &entry.backpointers {
        out.extend_from_slice(&bp.to_le_bytes());
    }
    out.extend_from_slice(&entry.payload);
    debug_assert_eq!(out.len() - start, len);
    let crc = checksum(salt, &out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Parses the fixed header and checks that it is self-consistent.
pub(crate) fn parse_header(b: &[u8]) -> Result<Header, String> {
    if b.len() < HEADER_BYTES {
        return Err(format!("header needs {HEADER_BYTES} bytes, {} left", b.len()));
    }
    let len = u32_at(b, 0);
    let kind = RecordKind::from_byte(b[16]).ok_or_else(|| format!("unknown record kind {}", b[16]))?;
    let streams = b[17];
    let flags = b[18];
    if usize::from(streams) > crate::STREAMS_PER_ENTRY_MAX {
        return Err(format!("{streams} streams exceed the limit"));
    }
    if flags & !FLAG_BACKPOINTERS != 0 || b[19] != 0 {
        return Err(format!("unknown flags {flags:#x}/{:#x}", b[19]));
    }
    let header = Header {
        len,
        crc: u32_at(b, 4),
        position: u64_at(b, 8),
        kind,
        streams,
        has_backpointers: flags & FLAG_BACKPOINTERS != 0,
        payload_len: u32_at(b, 20),
    };
    if header.payload_len as usize > PAYLOAD_BYTES_LIMIT {
        return Err(format!("payload length {} exceeds the format's limit", header.payload_len));
    }
    if kind == RecordKind::Hole && (streams != 0 || header.payload_len != 0 || header.has_backpointers) {
        return Err("a hole record with streams or payload".into());
    }
    let want = header.payload_offset() + header.payload_len as usize;
    if len as usize != want {
        return Err(format!("length {len} does not match its fields ({want})"));
    }
    Ok(header)
}

/// Parses and verifies a whole record (`b.len()` must be the record's
/// length) of a file whose sync header holds `salt`.
pub(crate) fn verify(b: &[u8], salt: u32) -> Result<Header, String> {
    let header = parse_header(b)?;
    if header.len as usize != b.len() {
        return Err(format!("record is {} bytes, its header says {}", b.len(), header.len));
    }
    let crc = checksum(salt, &b[8..]);
    if crc != header.crc {
        return Err(format!("CRC32C mismatch (stored {:#010x}, computed {crc:#010x})", header.crc));
    }
    Ok(header)
}

/// The stream ids of a verified record.
pub(crate) fn stream_ids<'a>(b: &'a [u8], header: &Header) -> impl Iterator<Item = StreamId> + 'a {
    let at = header.streams_offset();
    (0..usize::from(header.streams)).map(move |i| {
        let mut id = [0u8; 16];
        id.copy_from_slice(&b[at + 16 * i..at + 16 * (i + 1)]);
        StreamId(u128::from_be_bytes(id))
    })
}

/// Verifies a whole record and turns it into its entry; the payload and the
/// stream ids share `b`'s buffer (no copy).
pub(crate) fn decode(b: Bytes, salt: u32) -> Result<(Header, Entry), String> {
    let header = verify(&b, salt)?;
    let n = usize::from(header.streams);
    let at = header.streams_offset();
    let streams = (0..n).map(|i| b.slice(at + 16 * i..at + 16 * (i + 1))).collect();
    let backpointers = if header.has_backpointers {
        let at = header.backpointers_offset();
        (0..n).map(|i| u64_at(&b, at + 8 * i)).collect()
    } else {
        Vec::new()
    };
    let payload = b.slice(header.payload_offset()..);
    let entry = Entry { kind: header.kind.entry_kind() as i32, payload, streams, backpointers };
    Ok((header, entry))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::{data, hole};

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_caught() {
        let a = StreamId::from_name("a");
        let mut entry = data(b"payload", &[a, StreamId::from_name("b")]);
        entry.backpointers = vec![7, u64::MAX];
        for (entry, kind) in [(entry, EntryKind::Data), (hole(), EntryKind::Hole), (data(b"", &[]), EntryKind::Data)] {
            for salt in [0, 0x5eed_0001] {
                flips_are_caught(&entry, kind, salt);
            }
        }
    }

    fn flips_are_caught(entry: &Entry, kind: EntryKind, salt: u32) {
        {
            let entry = entry.clone();
            let mut buf = vec![0xAB]; // records are appended after other bytes
            encode(42, kind, &entry, salt, &mut buf);
            let rec = Bytes::copy_from_slice(&buf[1..]);
            assert_eq!(rec.len(), encoded_len(&entry));
            let other = if salt == 0 { 1 } else { 0 };
            assert!(decode(rec.clone(), other).is_err(), "a record verified under another file's salt");
            let (header, back) = decode(rec.clone(), salt).expect("a fresh record verifies");
            assert_eq!(header.position, 42);
            assert_eq!(back, entry);
            for byte in 0..rec.len() {
                for bit in 0..8 {
                    let mut bad = rec.to_vec();
                    bad[byte] ^= 1 << bit;
                    assert!(decode(Bytes::from(bad), salt).is_err(), "flip of bit {bit} in byte {byte} went unnoticed");
                }
            }
        }
    }

    #[test]
    fn zeros_and_short_bytes_are_not_a_header() {
        assert!(parse_header(&[0; 24]).is_err());
        assert!(parse_header(&[1; 10]).is_err());
    }
}
