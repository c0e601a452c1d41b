//! A segment: the data file of one fixed range of positions `[first, first+S)`,
//! its open handle, its pending (buffered, not yet written) records and its
//! slots. Records are only ever appended; a record's bytes are served from the
//! pending buffer until `flush` writes them to the file. Past the records the
//! file may hold preallocated zeros (`allocated_len`): an fdatasync that does
//! not change the file's size needs no journal commit, which on ext4 took a
//! third off each sync's latency (docs/performance.md).

use super::fs::DataFile;
use super::index::{Slot, SlotKind, SLOT_OFFSET_MAX};
use super::record;
use super::sync_header::{self, SyncHeader};
use crate::{Error, Result};
use bytes::Bytes;
use naxos_wire::proto::{Entry, EntryKind};

/// Capacity a pending buffer keeps between batches.
const PENDING_KEEP_BYTES: usize = 1 << 20;

/// One segment file and its in-memory index.
#[derive(Debug)]
pub(crate) struct Segment {
    /// First position of the range.
    pub(crate) first: u64,
    /// Number of positions in the range.
    pub(crate) positions: u64,
    /// The data file, while the segment is resident (see `evict`).
    pub(crate) file: Option<DataFile>,
    /// When the segment was last used (the store's tick), to pick whom to evict.
    pub(crate) used: u64,
    /// Bytes of the file that hold records (written, maybe not yet synced).
    pub(crate) written_len: u64,
    /// Encoded records not yet written to the file; they follow `written_len`.
    pub(crate) pending: Vec<u8>,
    /// The file's size: at least `written_len`; the bytes past `written_len`
    /// are preallocated zeros.
    pub(crate) allocated_len: u64,
    /// One slot per position from `first`; grows up to the highest written one.
    pub(crate) slots: Vec<Slot>,
    /// Non-empty slots (to skip full segments when looking for unwritten positions).
    pub(crate) held: u64,
    /// Bytes of the data file the on-disk index file covers, if there is a valid one.
    pub(crate) indexed_len: Option<u64>,
    /// Set when a record could not be parsed in the middle of the file: what
    /// follows it is unknown, so every position without a slot is treated as
    /// corrupted and the segment takes no more writes.
    pub(crate) damaged_at: Option<u64>,
    /// The last claim written to the file's sync header (`None`: a file
    /// from before the header, or a new one nothing was appended to yet).
    pub(crate) header: Option<SyncHeader>,
    /// Bytes of the file a finished fdatasync covered.
    pub(crate) synced_len: u64,
}

impl Segment {
    /// A segment over `file` holding no records yet.
    pub(crate) fn new(first: u64, positions: u64, file: DataFile) -> Segment {
        Segment {
            first,
            positions,
            file: Some(file),
            used: 0,
            written_len: 0,
            pending: Vec::new(),
            allocated_len: 0,
            slots: Vec::new(),
            held: 0,
            indexed_len: None,
            damaged_at: None,
            header: None,
            synced_len: 0,
        }
    }

    /// Where records start: after the sync header, if the file has one.
    pub(crate) fn data_start(&self) -> u64 {
        if self.header.is_some() {
            sync_header::BYTES
        } else {
            0
        }
    }

    /// The seed of this file's record checksums (0: a file from before the sync header).
    pub(crate) fn salt(&self) -> u32 {
        self.header.map_or(0, |h| h.salt)
    }

    /// Bytes the file's sync header says were synced (0 without a header).
    pub(crate) fn claimed_len(&self) -> u64 {
        self.header.map_or(0, |h| h.synced)
    }

    /// Records that every byte written so far is synced (after an fdatasync).
    pub(crate) fn mark_synced(&mut self) {
        self.synced_len = self.written_len;
    }

    /// Writes a header claim for what is synced, if the header lags behind
    /// (no fsync: the caller's next fdatasync of the file carries it).
    fn write_claim(&mut self) -> Result<bool> {
        let Some(h) = self.header else { return Ok(false) };
        if self.written_len < sync_header::BYTES || h.synced >= self.synced_len {
            return Ok(false);
        }
        let next = h.next(self.synced_len);
        self.file().write_all_at(&next.encode(), next.offset())?;
        self.header = Some(next);
        Ok(true)
    }

    /// Makes the header claim everything synced, durably (an idle moment:
    /// the last batch before it is claimed too). Only with nothing pending.
    pub(crate) fn claim_synced(&mut self) -> Result<bool> {
        if !self.pending.is_empty() || !self.write_claim()? {
            return Ok(false);
        }
        self.file().sync_data()?;
        Ok(true)
    }

    /// The open data file. Callers make the segment resident first.
    pub(crate) fn file(&self) -> &DataFile {
        match &self.file {
            Some(f) => f,
            None => panic!("segment {} used while not resident", self.first),
        }
    }

    /// Whether the slots and the file handle are in memory.
    pub(crate) fn is_resident(&self) -> bool {
        self.file.is_some()
    }

    /// Drops the slots and closes the file; they are loaded again from the
    /// segment's index file when the segment is next used. Only for a segment
    /// whose index file describes it exactly and that holds nothing unsynced.
    pub(crate) fn evict(&mut self) {
        self.slots = Vec::new();
        self.pending = Vec::new();
        self.file = None;
    }

    /// One past the last position of the range (saturating at `u64::MAX`).
    pub(crate) fn end(&self) -> u64 {
        self.first.saturating_add(self.positions)
    }

    /// The file name, for reports.
    pub(crate) fn file_name(&self) -> String {
        self.file().path().display().to_string()
    }

    /// The slot of `position` (empty if never set).
    pub(crate) fn slot(&self, position: u64) -> Slot {
        debug_assert!(position >= self.first && position < self.end());
        assert!(self.file.is_some(), "segment {} read while not resident", self.first);
        self.slots.get((position - self.first) as usize).copied().unwrap_or_default()
    }

    /// What `position` holds, counting the unknown positions of a damaged segment as corrupted.
    pub(crate) fn kind(&self, position: u64) -> SlotKind {
        match self.slot(position).kind() {
            SlotKind::Empty if self.damaged_at.is_some() => SlotKind::Corrupted,
            k => k,
        }
    }

    /// Whether every position of the range holds something (or is unknown).
    pub(crate) fn is_full(&self) -> bool {
        self.damaged_at.is_some() || self.held >= self.positions
    }

    /// Sets the slot of `position`; it must be empty.
    pub(crate) fn set_slot(&mut self, position: u64, slot: Slot) {
        let i = (position - self.first) as usize;
        if self.slots.len() <= i {
            // Grow by doubling, but never past the segment's range: a full
            // segment's slots take exactly 12 bytes a position.
            if self.slots.capacity() <= i {
                let want = (i + 1).max(self.slots.capacity() * 2).min(self.positions as usize);
                self.slots.reserve_exact(want - self.slots.len());
            }
            self.slots.resize(i + 1, Slot::default());
        }
        assert_eq!(self.slots[i].kind(), SlotKind::Empty, "a slot is set once (write-once is checked before)");
        self.slots[i] = slot;
        self.held += 1;
    }

    /// The logical length of the file: written bytes plus pending ones.
    pub(crate) fn len(&self) -> u64 {
        self.written_len + self.pending.len() as u64
    }

    /// Appends the record of a validated entry to the pending buffer and sets
    /// the slot. The caller checked that the position is free.
    pub(crate) fn append(&mut self, position: u64, kind: EntryKind, entry: &Entry) -> Result<()> {
        let slot = self.append_record(position, kind, entry)?;
        self.set_slot(position, slot);
        Ok(())
    }

    /// Appends the record of a repaired position (a replica's copy of a value
    /// this file lost) and points its slot at it, whatever the slot held: the
    /// caller checked that it held nothing readable. The scan at the next start
    /// lets this valid record win over the damaged one.
    pub(crate) fn append_repair(&mut self, position: u64, kind: EntryKind, entry: &Entry) -> Result<()> {
        let slot = self.append_record(position, kind, entry)?;
        self.replace_slot(position, slot);
        Ok(())
    }

    /// Points the slot of `position` at another record (a repair); counts it
    /// as held if it was empty.
    pub(crate) fn replace_slot(&mut self, position: u64, slot: Slot) {
        let i = (position - self.first) as usize;
        match self.slots.get_mut(i) {
            Some(s) if s.kind() != SlotKind::Empty => *s = slot,
            _ => self.set_slot(position, slot),
        }
    }

    /// Encodes a record into the pending buffer; returns its slot.
    fn append_record(&mut self, position: u64, kind: EntryKind, entry: &Entry) -> Result<Slot> {
        if self.len() == 0 {
            // A new (or empty) file starts with its sync header.
            let salt = SyncHeader::random_salt();
            self.pending.extend_from_slice(&SyncHeader::initial_block(salt));
            self.header = Some(SyncHeader::initial(salt));
        }
        let offset = self.len();
        if offset > SLOT_OFFSET_MAX {
            return Err(Error::Invalid(format!("segment file {} is full ({offset} bytes)", self.file_name())));
        }
        let before = self.pending.len();
        record::encode(position, kind, entry, self.salt(), &mut self.pending);
        let len = (self.pending.len() - before) as u32;
        let slot_kind = if kind == EntryKind::Hole { SlotKind::Hole } else { SlotKind::Data };
        Ok(Slot::new(slot_kind, offset, len))
    }

    /// The bytes of the record in `slot`, from the pending buffer or the file.
    /// `Ok(None)` if the file is shorter than the slot says.
    pub(crate) fn record_bytes(&self, slot: Slot) -> Result<Option<Bytes>> {
        self.span_bytes(slot.offset(), slot.len() as usize)
    }

    /// `len` bytes at `offset`, all in the file or all in the pending buffer
    /// (one read for a run of records). `Ok(None)` if the file is shorter.
    pub(crate) fn span_bytes(&self, offset: u64, len: usize) -> Result<Option<Bytes>> {
        if offset >= self.written_len {
            let at = (offset - self.written_len) as usize;
            let bytes = self.pending.get(at..at + len).expect("pending slots point inside the pending buffer");
            return Ok(Some(Bytes::copy_from_slice(bytes)));
        }
        let mut buf = vec![0u8; len];
        if !self.file().read_exact_at(&mut buf, offset)? {
            return Ok(None);
        }
        Ok(Some(Bytes::from(buf)))
    }

    /// Preallocated bytes not yet used by records.
    pub(crate) fn spare(&self) -> u64 {
        self.allocated_len.saturating_sub(self.written_len + self.pending.len() as u64)
    }

    /// Extends the file by `bytes` of zeros past what it holds and makes that
    /// durable, so later syncs of records written there change no metadata.
    /// Only with nothing pending (the zeros must not land on unwritten records).
    pub(crate) fn preallocate(&mut self, bytes: u64) -> Result<()> {
        if !self.pending.is_empty() || bytes == 0 {
            return Ok(());
        }
        let zeros = vec![0u8; bytes as usize];
        self.file().write_all_at(&zeros, self.allocated_len)?;
        self.file().sync_data()?;
        self.allocated_len += bytes;
        Ok(())
    }

    /// Gives back the preallocated zeros past the records (a segment that is
    /// no longer the newest keeps no spare space).
    pub(crate) fn release_spare(&mut self) -> Result<()> {
        if !self.pending.is_empty() || self.allocated_len <= self.written_len {
            return Ok(());
        }
        self.file().truncate(self.written_len)?;
        self.file().sync_data()?;
        self.allocated_len = self.written_len;
        Ok(())
    }

    /// Writes the pending buffer to the file (one write); no fsync.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        // The header claims what the last sync covered; this batch's
        // fdatasync makes the claim durable with the batch.
        self.write_claim()?;
        // Positioned at `written_len`: a retry after a failed (maybe partial)
        // write rewrites the same bytes at the same place.
        self.file().write_all_at(&self.pending, self.written_len)?;
        self.written_len += self.pending.len() as u64;
        self.allocated_len = self.allocated_len.max(self.written_len);
        self.pending.clear();
        // Keep a buffer for the next batch, but not the memory of a rare huge one.
        self.pending.shrink_to(PENDING_KEEP_BYTES);
        Ok(())
    }
}
