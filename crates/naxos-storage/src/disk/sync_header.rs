//! The sync header: the first 4 KiB of a segment file say how many of its
//! bytes were synced, so that start-up can tell a torn tail (bytes past the
//! last sync: an unacknowledged write) from damage to synced, possibly
//! acknowledged records (a flipped byte, a truncated file), which it reports
//! instead of cutting.
//!
//! ```text
//! offset  size  field (two slots, at 0 and 2048, written alternately)
//! 0       8     magic "NAXSYNC1"
//! 8       8     seq          u64 LE, +1 per write; the valid slot with the higher one wins
//! 16      8     synced       u64 LE, the file's bytes known synced (records end at or past it)
//! 24      4     salt         u32 LE, random per file, never 0: seeds every record's CRC
//! 28      4     crc          u32 LE, CRC32C of bytes [0, 28)
//! ```
//!
//! A slot only ever claims bytes a finished `fdatasync` covered: it is written
//! with the next batch of the segment (same sync) or, when the unit is idle,
//! on its own. So the last batch before a crash may not be claimed yet: damage
//! there still counts as a torn tail. Files written before the header existed
//! (no magic at offset 0) keep their records from byte 0 and have no claim.

use super::fs::DataFile;
use crate::Result;

/// Bytes the header takes at the start of the file; records follow it.
pub(crate) const BYTES: u64 = 4096;

const SLOT_BYTES: usize = 32;
/// Each slot in its own 512-byte sector, so a torn write spoils at most one.
const SLOT_OFFSETS: [u64; 2] = [0, 2048];
const MAGIC: &[u8; 8] = b"NAXSYNC1";

/// What a slot says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SyncHeader {
    /// Write sequence number.
    pub(crate) seq: u64,
    /// Bytes of the file known synced.
    pub(crate) synced: u64,
    /// The file's record checksum seed (see `record::checksum`).
    pub(crate) salt: u32,
}

impl SyncHeader {
    /// The header of a new file: it claims only itself.
    pub(crate) fn initial(salt: u32) -> SyncHeader {
        SyncHeader { seq: 1, synced: BYTES, salt }
    }

    /// The next write of the header, claiming `synced`.
    pub(crate) fn next(self, synced: u64) -> SyncHeader {
        SyncHeader { seq: self.seq + 1, synced, salt: self.salt }
    }

    /// A random salt for a new file (never 0, which means "no salt").
    pub(crate) fn random_salt() -> u32 {
        (crate::meta::random_node_id().0 as u32).max(1)
    }

    /// Where this write goes (the slots alternate, so the other one keeps the
    /// previous claim if this write is torn).
    pub(crate) fn offset(self) -> u64 {
        SLOT_OFFSETS[(self.seq % 2) as usize]
    }

    /// The slot's bytes.
    pub(crate) fn encode(self) -> [u8; SLOT_BYTES] {
        let mut b = [0u8; SLOT_BYTES];
        b[..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.synced.to_le_bytes());
        b[24..28].copy_from_slice(&self.salt.to_le_bytes());
        let crc = crc32c::crc32c(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// The whole header block of a new file.
    pub(crate) fn initial_block(salt: u32) -> Vec<u8> {
        let h = SyncHeader::initial(salt);
        let mut block = vec![0u8; BYTES as usize];
        let at = h.offset() as usize;
        block[at..at + SLOT_BYTES].copy_from_slice(&h.encode());
        block
    }
}

fn decode(b: &[u8]) -> Option<SyncHeader> {
    if b.len() < SLOT_BYTES || &b[..8] != MAGIC {
        return None;
    }
    let crc = u32::from_le_bytes([b[28], b[29], b[30], b[31]]);
    if crc32c::crc32c(&b[..28]) != crc {
        return None;
    }
    let salt = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    let u64_at = |at: usize| {
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(a)
    };
    Some(SyncHeader { seq: u64_at(8), synced: u64_at(16), salt })
}

/// The newest valid slot among a file's first bytes, if any.
pub(crate) fn from_bytes(file: &[u8]) -> Option<SyncHeader> {
    SLOT_OFFSETS
        .iter()
        .filter_map(|at| file.get(*at as usize..*at as usize + SLOT_BYTES).and_then(decode))
        .max_by_key(|h| h.seq)
}

/// What the start of a segment file holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Found {
    /// No header: a file from before it (records from byte 0), or a new file
    /// whose first write never reached the disk.
    None,
    /// A valid slot (the newer one if both are).
    Valid(SyncHeader),
    /// A slot begins with the magic but none is valid: the file has a header
    /// whose claim and salt are lost (its records cannot be verified).
    Damaged,
}

/// Reads the header of `file` (`file_len` bytes long).
pub(crate) fn read(file: &DataFile, file_len: u64) -> Result<Found> {
    let mut best: Option<SyncHeader> = None;
    let mut magic = false;
    for at in SLOT_OFFSETS {
        if at + SLOT_BYTES as u64 > file_len {
            continue;
        }
        let mut b = [0u8; SLOT_BYTES];
        if !file.read_exact_at(&mut b, at)? {
            continue;
        }
        magic |= &b[..8] == MAGIC;
        if let Some(h) = decode(&b) {
            if best.is_none_or(|x| h.seq > x.seq) {
                best = Some(h);
            }
        }
    }
    Ok(match (best, magic) {
        (Some(h), _) => Found::Valid(h),
        (None, true) => Found::Damaged,
        (None, false) => Found::None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_round_trip_alternate_and_reject_a_flipped_byte() {
        let h = SyncHeader::initial(77);
        assert_eq!(decode(&h.encode()), Some(h));
        let mut salted = h.encode();
        salted[25] ^= 1;
        assert_eq!(decode(&salted), None, "the salt is covered by the slot's CRC");
        let n = h.next(10_000);
        assert_ne!(n.offset(), h.offset());
        assert_eq!(n.next(20_000).offset(), h.offset());
        let mut b = n.encode();
        b[17] ^= 1;
        assert_eq!(decode(&b), None);
        let block = SyncHeader::initial_block(77);
        assert_eq!(block.len() as u64, BYTES);
        assert_eq!(decode(&block[h.offset() as usize..]), Some(h));
    }
}
