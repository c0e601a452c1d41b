//! Start-up recovery of one segment: verify the records that no index file
//! covers, rebuild their slots and stream entries, cut off a torn tail and
//! report corruption in the middle without ever serving bad bytes.
//!
//! The rules, from the start offset to the end of the file:
//! - a valid record (self-consistent header, CRC32C match, position inside the
//!   segment, not already held) is indexed;
//! - a valid record whose position lies outside the segment or is already held
//!   is reported and skipped (its framing is sound, so the scan goes on);
//! - records whose headers are sound but whose CRC fails are *in the middle* if
//!   a valid record starts right after them: each is reported, its position (if
//!   plausible: inside the segment and held by no other record) is marked
//!   corrupted, and the scan goes on after them. If they reach the end of the
//!   file they are a torn tail;
//! - below the claim of the file's sync header (bytes a finished fdatasync
//!   covered) nothing is a torn tail: a whole record with a sound header that
//!   fails its CRC is reported, its position marked corrupted, and the scan
//!   goes on; zeros or unparseable bytes there mark the segment damaged;
//! - past the claim, any other failure (a header that is not one, a length running past the end
//!   of the file, a CRC failure not followed by a valid record) is a torn tail
//!   if no valid record starts anywhere after it: the file is truncated there
//!   with a warning (an unacknowledged partial write). If a valid record does
//!   start later, acknowledged data may follow the damage: nothing is truncated,
//!   the damage is reported and the segment is marked damaged (its unknown
//!   positions read as corrupted and take no writes). In a salted file (its
//!   records' CRCs seeded with the sync header's random salt, which a
//!   payload cannot forge) the scan resumes at that record; in a file from
//!   before the salt it stops, because guessing where records resume could
//!   index bytes of a payload as a record.

use super::index::{Slot, SlotKind, StreamIndex};
use super::record::{self, Header, HEADER_BYTES};
use super::segment::Segment;
use crate::{Corruption, Result};
use naxos_wire::Position;

/// Bytes read from the file at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Buffered positioned reads over one file region.
struct Reader<'a> {
    segment: &'a Segment,
    file_len: u64,
    buf: Vec<u8>,
    start: u64,
}

impl Reader<'_> {
    /// The bytes `[offset, offset+len)`, `None` if they run past the end of the file.
    fn get(&mut self, offset: u64, len: usize) -> Result<Option<&[u8]>> {
        let Some(end) = offset.checked_add(len as u64).filter(|e| *e <= self.file_len) else {
            return Ok(None);
        };
        let buffered_end = self.start + self.buf.len() as u64;
        if offset < self.start || end > buffered_end {
            let want = (self.file_len - offset).min(len.max(CHUNK_BYTES) as u64) as usize;
            self.buf.resize(want, 0);
            self.start = offset;
            if !self.segment.file().read_exact_at(&mut self.buf, offset)? {
                // The file shrank under us; treat the rest as absent.
                self.buf.clear();
                self.file_len = offset;
                return Ok(None);
            }
        }
        let at = (offset - self.start) as usize;
        Ok(Some(&self.buf[at..at + len]))
    }

    /// The header at `offset` if a whole valid record of this segment starts there.
    fn valid_at(&mut self, offset: u64) -> Result<Option<Header>> {
        let Some(h) = self.get(offset, HEADER_BYTES)? else {
            return Ok(None);
        };
        let Ok(header) = record::parse_header(h) else {
            return Ok(None);
        };
        if header.position < self.segment.first || header.position >= self.segment.end() {
            return Ok(None);
        }
        let salt = self.segment.salt();
        let Some(bytes) = self.get(offset, header.len as usize)? else {
            return Ok(None);
        };
        Ok(record::verify(bytes, salt).ok())
    }

    /// Follows self-consistent headers (each record wholly inside the file)
    /// from `offset`, which holds no valid record, until a valid record starts.
    /// `None` if the chain breaks or reaches the end of the file first.
    fn sound_chain(&mut self, offset: u64) -> Result<Option<Chain>> {
        let mut records = Vec::new();
        let mut at = offset;
        loop {
            if !records.is_empty() && self.valid_at(at)?.is_some() {
                return Ok(Some(Chain { records, resume: at }));
            }
            let Some(h) = self.get(at, HEADER_BYTES)? else { return Ok(None) };
            let Ok(header) = record::parse_header(h) else { return Ok(None) };
            let next = at + u64::from(header.len);
            if next >= self.file_len {
                // Damage reaching the end of the file is a torn tail, not a chain.
                return Ok(None);
            }
            records.push((at, header));
            at = next;
        }
    }

    /// The offset of the first valid record starting after `offset`.
    /// Whether every byte from `offset` to the end of the file is zero (the
    /// preallocated space past the last record).
    fn zeros_from(&mut self, offset: u64) -> Result<bool> {
        let mut at = offset;
        while at < self.file_len {
            let len = (self.file_len - at).min(CHUNK_BYTES as u64) as usize;
            let Some(bytes) = self.get(at, len)? else { return Ok(false) };
            if bytes.iter().any(|b| *b != 0) {
                return Ok(false);
            }
            at += len as u64;
        }
        Ok(true)
    }

    fn next_valid_after(&mut self, offset: u64) -> Result<Option<u64>> {
        let mut at = offset + 1;
        while at + HEADER_BYTES as u64 <= self.file_len {
            if self.valid_at(at)?.is_some() {
                return Ok(Some(at));
            }
            at += 1;
        }
        Ok(None)
    }
}

/// Where records resume after damage at `offset` in a salted file (the next
/// valid record), `None` in a file from before the salt: there a payload
/// can hold a well-formed record with a valid plain CRC, and the scan stops
/// rather than index a client's bytes.
fn resume_after(reader: &mut Reader<'_>, offset: u64, salt: u32) -> Result<Option<u64>> {
    if salt == 0 {
        return Ok(None);
    }
    reader.next_valid_after(offset)
}

/// The report of damage the scan went past.
fn resumed(why: &str, resume: u64) -> String {
    format!(
        "{why}; records resume at {resume}: what lay between is lost, and the positions the segment does not \
         hold read as corrupted"
    )
}

/// Whether the record the slot of `p` points at (one an index file named,
/// or a damaged one) is lost: a later valid record for `p` is then its repair.
fn held_is_lost(segment: &Segment, p: u64) -> Result<bool> {
    let slot = segment.slot(p);
    if slot.kind() == SlotKind::Corrupted {
        return Ok(true);
    }
    // During the scan `written_len` is not set yet: read the file itself.
    let mut bytes = vec![0u8; slot.len() as usize];
    if !segment.file().read_exact_at(&mut bytes, slot.offset())? {
        return Ok(true);
    }
    Ok(!matches!(record::verify(&bytes, segment.salt()), Ok(h) if h.position == p))
}

/// Records with sound headers but no valid content, followed by a valid record.
struct Chain {
    /// Offsets and headers of the damaged records.
    records: Vec<(u64, Header)>,
    /// Where the next valid record starts.
    resume: u64,
}

/// What one scan found.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Where the file was truncated (a torn tail), if it was.
    pub(crate) truncated_at: Option<u64>,
    /// Records indexed by the scan.
    pub(crate) records: u64,
    /// Where the records end when only preallocated zeros follow them.
    pub(crate) data_end: Option<u64>,
}

/// Scans the segment's data file from `from` (the end of what its index file
/// covers, or 0) to `file_len`, filling slots, stream entries (for positions at
/// or above `trim_mark`) and `corruptions`. Sets the segment's `written_len`.
pub(crate) fn scan(
    segment: &mut Segment,
    streams: &mut StreamIndex,
    from: u64,
    file_len: u64,
    trim_mark: u64,
    corruptions: &mut Vec<Corruption>,
) -> Result<Outcome> {
    let file = segment.file_name();
    let report = |corruptions: &mut Vec<Corruption>, offset: u64, position: Option<u64>, reason: String| {
        tracing::error!(file = %file, offset, ?position, %reason, "corrupted record in a segment file");
        corruptions.push(Corruption { file: file.clone(), offset, position: position.map(Position), reason });
    };
    let mut outcome = Outcome::default();
    // Applied after the scan (the reader borrows the segment); the stream ids
    // of all records go into one flat list, `header.streams` apiece.
    let mut found: Vec<(u64, Header)> = Vec::new();
    let mut found_ids: Vec<naxos_wire::StreamId> = Vec::new();
    let mut suspects: Vec<(u64, Header)> = Vec::new();
    let mut damaged_at = None;
    // Bytes a sync covered (the file's sync header): damage below it hit
    // records that may have been acknowledged, so it is never a torn tail.
    let synced = segment.claimed_len();
    // A salted file's records cannot be forged by a payload: after damage the
    // scan may look for the next record (see `resume_after`).
    let salt = segment.salt();
    let mut reader = Reader { segment, file_len, buf: Vec::new(), start: 0 };
    let mut offset = from.max(reader.segment.data_start());
    while offset < reader.file_len {
        if let Some(header) = reader.valid_at(offset)? {
            let bytes = reader.get(offset, header.len as usize)?.expect("valid_at read these bytes");
            found_ids.extend(record::stream_ids(bytes, &header));
            found.push((offset, header));
            offset += u64::from(header.len);
            continue;
        }
        // Only zeros from here on: the preallocated space past the last record.
        if reader.zeros_from(offset)? {
            if offset < synced {
                let reason = format!("zeros at {offset} where synced records reach {synced}: synced records are lost");
                report(corruptions, offset, None, reason);
                damaged_at = damaged_at.or(Some(offset));
            } else {
                outcome.data_end = Some(offset);
            }
            break;
        }
        // Not a valid record of this segment. If the framing is sound (a chain
        // of self-consistent headers leading to a valid record), the damage is
        // confined to those records.
        if let Some(chain) = reader.sound_chain(offset)? {
            for (at, header) in &chain.records {
                let bytes =
                    reader.get(*at, header.len as usize)?.expect("sound_chain checked the bytes are in the file");
                if let Err(reason) = record::verify(bytes, salt) {
                    report(corruptions, *at, Some(header.position), reason);
                    suspects.push((*at, *header));
                } else {
                    let reason = format!("record claims position {} outside the segment", header.position);
                    report(corruptions, *at, Some(header.position), reason);
                }
            }
            offset = chain.resume;
            continue;
        }
        if offset < synced {
            // A whole record with a sound header inside the synced bytes:
            // only it is damaged, and the scan goes on after it.
            let whole = match reader.get(offset, HEADER_BYTES)? {
                Some(h) => record::parse_header(h).ok().filter(|h| offset + u64::from(h.len) <= synced),
                None => None,
            };
            if let Some(header) = whole {
                let bytes = reader.get(offset, header.len as usize)?.expect("inside the synced bytes of the file");
                let reason = record::verify(bytes, salt)
                    .err()
                    .unwrap_or_else(|| format!("record claims position {} outside the segment", header.position));
                report(corruptions, offset, Some(header.position), format!("{reason} (a synced record)"));
                suspects.push((offset, header));
                offset += u64::from(header.len);
                continue;
            }
            damaged_at = damaged_at.or(Some(offset));
            let why =
                format!("unparseable bytes at {offset}, below the {synced} bytes the file's header says were synced");
            match resume_after(&mut reader, offset, salt)? {
                Some(resume) => {
                    report(corruptions, offset, None, resumed(&why, resume));
                    offset = resume;
                    continue;
                }
                None => {
                    report(corruptions, offset, None, format!("{why}; the rest of the file is not indexed"));
                    break;
                }
            }
        }
        match reader.next_valid_after(offset)? {
            None => {
                tracing::warn!(file = %file, offset, file_len = reader.file_len, "torn tail: truncating an unfinished write");
                outcome.truncated_at = Some(offset);
            }
            Some(resume) => {
                damaged_at = damaged_at.or(Some(offset));
                let why = format!("unparseable bytes at {offset} followed by a valid record at {resume}");
                if salt != 0 {
                    report(corruptions, offset, None, resumed(&why, resume));
                    offset = resume;
                    continue;
                }
                report(corruptions, offset, None, format!("{why}; the rest of the file is not indexed"));
            }
        }
        break;
    }
    let file_len = reader.file_len;
    drop(reader);

    let mut ids = found_ids.into_iter();
    for (offset, header) in found {
        let p = header.position;
        let record_ids = ids.by_ref().take(usize::from(header.streams));
        let kind = if header.kind == record::RecordKind::Hole { SlotKind::Hole } else { SlotKind::Data };
        if segment.slot(p).kind() != SlotKind::Empty {
            if held_is_lost(segment, p)? {
                // A repair: a replica's copy of a value the first record lost.
                segment.replace_slot(p, Slot::new(kind, offset, header.len));
                corruptions.retain(|c| c.position != Some(Position(p)));
                for id in record_ids {
                    if p >= trim_mark {
                        streams.insert(id, p);
                    }
                }
                outcome.records += 1;
                continue;
            }
            record_ids.for_each(drop);
            report(corruptions, offset, Some(p), format!("a second record for position {p}; the first one is kept"));
            continue;
        }
        segment.set_slot(p, Slot::new(kind, offset, header.len));
        for id in record_ids {
            if p >= trim_mark {
                streams.insert(id, p);
            }
        }
        outcome.records += 1;
    }
    for (offset, header) in suspects {
        if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::DamageReadsUnwritten) {
            // The deliberate bug: a damaged record's position is left empty,
            // so it reads as unwritten and takes a hole.
            continue;
        }
        let p = header.position;
        if p < segment.first || p >= segment.end() {
            continue;
        }
        match segment.slot(p).kind() {
            SlotKind::Empty => segment.set_slot(p, Slot::new(SlotKind::Corrupted, offset, header.len)),
            SlotKind::Data | SlotKind::Hole if segment.slot(p).offset() > offset => {
                // A valid record later in the file holds the position: the
                // repair of this one, made after it was found damaged.
                corruptions.retain(|c| !(c.file == file && c.offset == offset));
                tracing::info!(file = %file, offset, position = p, "a damaged record was repaired before");
            }
            _ => {}
        }
    }
    segment.damaged_at = damaged_at;
    segment.written_len = outcome.data_end.unwrap_or(file_len);
    segment.allocated_len = file_len;
    if let Some(at) = outcome.truncated_at {
        segment.file().truncate(at)?;
        segment.file().sync_data()?;
        segment.written_len = at;
        segment.allocated_len = at;
    }
    Ok(outcome)
}
