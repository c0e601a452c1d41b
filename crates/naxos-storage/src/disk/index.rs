//! The in-memory index (a compact slot per position of a segment, and a roaring
//! bitmap of positions per stream) and the per-segment index file that lets
//! start-up skip re-reading data already indexed.
//!
//! Index file `seg-<first>.idx` (all integers little-endian):
//!
//! ```text
//! 0   8   magic "NAXIDX01"
//! 8   8   first position of the segment
//! 16  8   covered: length of the data file this index describes
//! 24  8   slot count m (positions first .. first+m)
//! 32  8   stream count k
//! 40  16*m slots: offset u64, len u32, kind u8 (0 empty, 1 data, 2 hole, 3 corrupted), 3 bytes 0
//! ..  per stream: id (16 bytes, big-endian), count c (u32), c × u32 position - first (ascending)
//! end 4   CRC32C of every byte before it
//! ```

use naxos_wire::StreamId;
use roaring::RoaringTreemap;
use std::collections::BTreeMap;

const MAGIC: &[u8; 8] = b"NAXIDX01";
const HEADER_BYTES: usize = 40;
const SLOT_BYTES: usize = 16;

/// What a position of a segment holds. Persisted in index files: the numbers
/// must stay stable.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) enum SlotKind {
    /// Nothing written.
    #[default]
    Empty = 0,
    /// A data record.
    Data = 1,
    /// A hole record.
    Hole = 2,
    /// A record that failed its checksum at start-up; its value is lost.
    Corrupted = 3,
}

impl SlotKind {
    fn from_byte(b: u8) -> Option<SlotKind> {
        match b {
            0 => Some(SlotKind::Empty),
            1 => Some(SlotKind::Data),
            2 => Some(SlotKind::Hole),
            3 => Some(SlotKind::Corrupted),
            _ => None,
        }
    }
}

/// Where one position's record lies: 12 bytes, no heap. The offset has 48 bits
/// (256 TiB per segment file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    offset_lo: u32,
    offset_hi: u16,
    kind: SlotKind,
    len: u32,
}

/// Largest offset a slot can hold.
pub(crate) const SLOT_OFFSET_MAX: u64 = (1 << 48) - 1;

impl Slot {
    /// A slot for a record at `offset` of `len` bytes.
    pub(crate) fn new(kind: SlotKind, offset: u64, len: u32) -> Slot {
        assert!(offset <= SLOT_OFFSET_MAX, "segment offsets are checked against SLOT_OFFSET_MAX before use");
        Slot { offset_lo: offset as u32, offset_hi: (offset >> 32) as u16, kind, len }
    }

    /// What the position holds.
    pub(crate) fn kind(&self) -> SlotKind {
        self.kind
    }

    /// The record's byte offset in the data file.
    pub(crate) fn offset(&self) -> u64 {
        u64::from(self.offset_lo) | (u64::from(self.offset_hi) << 32)
    }

    /// The record's length.
    pub(crate) fn len(&self) -> u32 {
        self.len
    }
}

/// Every stream's positions.
#[derive(Debug, Default)]
pub(crate) struct StreamIndex {
    streams: BTreeMap<StreamId, RoaringTreemap>,
}

impl StreamIndex {
    /// Records that `position` belongs to `stream`.
    pub(crate) fn insert(&mut self, stream: StreamId, position: u64) {
        self.streams.entry(stream).or_default().insert(position);
    }

    /// The stream's last position.
    pub(crate) fn last(&self, stream: StreamId) -> Option<u64> {
        self.streams.get(&stream).and_then(|m| m.max())
    }

    /// Every stream's last position.
    pub(crate) fn all_last(&self) -> Vec<(StreamId, u64)> {
        self.streams.iter().filter_map(|(id, m)| m.max().map(|p| (*id, p))).collect()
    }

    /// Up to `limit` positions of the stream in `[from, to)`, ascending.
    pub(crate) fn positions(&self, stream: StreamId, from: u64, to: u64, limit: usize) -> Vec<u64> {
        let Some(m) = self.streams.get(&stream) else {
            return Vec::new();
        };
        let mut it = m.iter();
        it.advance_to(from);
        it.take_while(|p| *p < to).take(limit).collect()
    }

    /// Forgets every position below `mark`.
    pub(crate) fn trim(&mut self, mark: u64) {
        for m in self.streams.values_mut() {
            m.remove_range(..mark);
        }
        self.streams.retain(|_, m| !m.is_empty());
    }

    /// Every stream's positions in `[first, end)`, relative to `first`.
    pub(crate) fn in_range(&self, first: u64, end: u64) -> Vec<(StreamId, Vec<u32>)> {
        let mut out = Vec::new();
        for (id, m) in &self.streams {
            let mut it = m.iter();
            it.advance_to(first);
            let rel: Vec<u32> = it.take_while(|p| *p < end).map(|p| (p - first) as u32).collect();
            if !rel.is_empty() {
                out.push((*id, rel));
            }
        }
        out
    }
}

/// The content of a valid index file.
#[derive(Debug)]
pub(crate) struct IndexFile {
    /// Length of the data file prefix it describes.
    pub(crate) covered: u64,
    /// One slot per position from the segment's first.
    pub(crate) slots: Vec<Slot>,
    /// Each stream's positions, relative to the segment's first.
    pub(crate) streams: Vec<(StreamId, Vec<u32>)>,
}

/// Encodes an index file.
pub(crate) fn encode(first: u64, covered: u64, slots: &[Slot], streams: &[(StreamId, Vec<u32>)]) -> Vec<u8> {
    let stream_bytes: usize = streams.iter().map(|(_, r)| 20 + 4 * r.len()).sum();
    let mut out = Vec::with_capacity(HEADER_BYTES + SLOT_BYTES * slots.len() + stream_bytes + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&first.to_le_bytes());
    out.extend_from_slice(&covered.to_le_bytes());
    out.extend_from_slice(&(slots.len() as u64).to_le_bytes());
    out.extend_from_slice(&(streams.len() as u64).to_le_bytes());
    for s in slots {
        out.extend_from_slice(&s.offset().to_le_bytes());
        out.extend_from_slice(&s.len().to_le_bytes());
        out.extend_from_slice(&[s.kind() as u8, 0, 0, 0]);
    }
    for (id, rel) in streams {
        out.extend_from_slice(&id.to_bytes());
        out.extend_from_slice(&(rel.len() as u32).to_le_bytes());
        for r in rel {
            out.extend_from_slice(&r.to_le_bytes());
        }
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// A cursor over untrusted bytes.
struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.b.len()).ok_or("index file is truncated")?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u64(&mut self) -> Result<u64, String> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
}

/// The data file length a sound index file (its CRC, magic and segment
/// check out) says was synced, whatever else it holds: a data file shorter
/// than that was truncated after the sync.
pub(crate) fn covered_len(b: &[u8], first: u64) -> Option<u64> {
    if b.len() < HEADER_BYTES + 4 {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return None;
    }
    let mut c = Cursor { b: body, at: 0 };
    if c.take(8).ok()? != MAGIC || c.u64().ok()? != first {
        return None;
    }
    c.u64().ok()
}

/// Decodes and checks an index file of the segment starting at `first` with
/// `positions` positions, whose data file is `file_len` bytes long. Any
/// inconsistency makes the whole index invalid.
pub(crate) fn decode(b: &[u8], first: u64, positions: u64, file_len: u64) -> Result<IndexFile, String> {
    if b.len() < HEADER_BYTES + 4 {
        return Err("index file is too short".into());
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(body) != stored {
        return Err("index file fails its CRC32C".into());
    }
    let mut c = Cursor { b: body, at: 0 };
    if c.take(8)? != MAGIC {
        return Err("index file has an unknown magic".into());
    }
    if c.u64()? != first {
        return Err("index file describes another segment".into());
    }
    let covered = c.u64()?;
    if covered > file_len {
        return Err(format!("index covers {covered} bytes but the data file has {file_len}"));
    }
    let slot_count = c.u64()?;
    if slot_count > positions || slot_count.saturating_mul(SLOT_BYTES as u64) > body.len() as u64 {
        return Err(format!("index has an impossible slot count {slot_count}"));
    }
    let stream_count = c.u64()?;
    let mut slots = Vec::with_capacity(slot_count as usize);
    for _ in 0..slot_count {
        let offset = c.u64()?;
        let len = c.u32()?;
        let tail = c.take(4)?;
        let kind = SlotKind::from_byte(tail[0]).ok_or("index has an unknown slot kind")?;
        if kind == SlotKind::Empty {
            slots.push(Slot::default());
            continue;
        }
        if offset.saturating_add(u64::from(len)) > covered || offset > SLOT_OFFSET_MAX {
            return Err(format!("index slot at offset {offset} (+{len}) lies outside the {covered} covered bytes"));
        }
        slots.push(Slot::new(kind, offset, len));
    }
    let mut streams = Vec::new();
    for _ in 0..stream_count {
        let id = StreamId::from_slice(c.take(16)?).ok_or("index stream id is not 16 bytes")?;
        let count = c.u32()?;
        let mut rel = Vec::new();
        let mut previous: Option<u32> = None;
        for _ in 0..count {
            let r = c.u32()?;
            let held = slots.get(r as usize).map(Slot::kind);
            if held != Some(SlotKind::Data) || previous.is_some_and(|p| p >= r) {
                return Err(format!("index lists stream position {r}, which holds no data record"));
            }
            previous = Some(r);
            rel.push(r);
        }
        streams.push((id, rel));
    }
    if c.at != body.len() {
        return Err("index file has trailing bytes".into());
    }
    Ok(IndexFile { covered, slots, streams })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_is_small_and_keeps_48_bit_offsets() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
        let s = Slot::new(SlotKind::Hole, SLOT_OFFSET_MAX, 77);
        assert_eq!((s.kind(), s.offset(), s.len()), (SlotKind::Hole, SLOT_OFFSET_MAX, 77));
    }

    #[test]
    fn index_file_round_trips_and_rejects_damage() {
        let slots = vec![Slot::new(SlotKind::Data, 0, 40), Slot::default(), Slot::new(SlotKind::Hole, 40, 24)];
        let streams = vec![(StreamId(5), vec![0])];
        let bytes = encode(100, 64, &slots, &streams);
        let back = decode(&bytes, 100, 16, 64).expect("valid");
        assert_eq!((back.covered, back.slots, back.streams), (64, slots, streams));
        assert!(decode(&bytes, 116, 16, 64).is_err(), "another segment");
        assert!(decode(&bytes, 100, 16, 63).is_err(), "data file shorter than covered");
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(decode(&bad, 100, 16, 64).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(decode(&bytes[..bytes.len() - 1], 100, 16, 64).is_err());
    }
}
