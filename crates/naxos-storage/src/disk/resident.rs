//! Which segments stay in memory: making one resident again (from its index
//! file, or a scan), reading its sync header on the way, and evicting the
//! least recently used beyond the cap. A load that fails leaves the segment
//! evicted, never half loaded.

use super::files::{self, idx_name, log_name};
use super::index::{self, SlotKind};
use super::segment::Segment;
use super::{fs, recovery, sync_header, DiskStore};
use crate::{Corruption, Result};

impl DiskStore {
    /// Makes segment `n` (if it exists) resident: its slots and open file in
    /// memory, loaded from its index file if it was evicted.
    pub(super) fn make_resident(&mut self, n: u64) -> Result<()> {
        self.tick += 1;
        let tick = self.tick;
        let Some(seg) = self.segments.get_mut(&n) else { return Ok(()) };
        seg.used = tick;
        if seg.is_resident() {
            return Ok(());
        }
        self.load_segment(n)?;
        self.evict_beyond_cap(Some(n));
        Ok(())
    }

    /// Loads an evicted segment back: its slots from its index file (which
    /// described it exactly when it was evicted); if that file is no longer
    /// valid, from a scan of the data file, as at start-up.
    pub(super) fn load_segment(&mut self, n: u64) -> Result<()> {
        let loaded = self.load_evicted(n);
        if loaded.is_err() {
            // Nothing half-loaded may be served: a segment whose file is open
            // but whose slots are missing reads its positions as unwritten
            // and takes writes over them (soak seed 740428: an injected read
            // error of the sync header left one so, and an acknowledged entry
            // was lost). It stays evicted; the next use tries again.
            if let Some(seg) = self.segments.get_mut(&n) {
                seg.evict();
            }
        }
        loaded
    }

    /// `load_segment`'s work; on an error the segment may be half loaded.
    fn load_evicted(&mut self, n: u64) -> Result<()> {
        let s = self.options.segment_positions;
        let first = n * s;
        let file = fs::DataFile::open(self.fs(), &self.dir.join(log_name(first)))?;
        let file_len = file.len()?;
        let index = fs::read(self.fs(), &self.dir, &idx_name(first))?;
        if let Some(bytes) = &index {
            files::check_not_truncated(&self.dir, first, bytes, file_len)?;
        }
        let mut seg = self.segments.remove(&n).expect("make_resident found it");
        seg.file = Some(file);
        let header = self.read_sync_header(&mut seg, file_len);
        let lost = seg.damaged_at.is_some();
        self.segments.insert(n, seg);
        header?;
        if lost {
            return Ok(());
        }
        let seg = self.segments.get_mut(&n).expect("put back just above");
        let decoded = index.map(|bytes| index::decode(&bytes, first, s, file_len));
        match decoded {
            Some(Ok(ix)) if ix.covered == seg.written_len => {
                seg.held = ix.slots.iter().filter(|slot| slot.kind() != SlotKind::Empty).count() as u64;
                seg.slots = ix.slots;
                seg.allocated_len = file_len;
                tracing::debug!(segment = first, "segment loaded from its index file");
            }
            other => {
                let why = match other {
                    Some(Err(reason)) => reason,
                    None => "it is missing".into(),
                    Some(Ok(_)) => "it covers a different length".into(),
                };
                tracing::warn!(segment = first, %why, "index file of an evicted segment is not valid; scanning the segment");
                seg.slots = Vec::new();
                seg.held = 0;
                seg.indexed_len = None;
                recovery::scan(seg, &mut self.streams, 0, file_len, self.meta.trim_mark.0, &mut self.corruptions)?;
                self.index_dirty.insert(n);
            }
        }
        Ok(())
    }

    /// Reads the sync header of `seg`'s file into it. Refuses a file shorter
    /// than its header says was synced; reports a damaged header (the
    /// records are then scanned with no claim).
    pub(super) fn read_sync_header(&mut self, seg: &mut Segment, file_len: u64) -> Result<()> {
        match sync_header::read(seg.file(), file_len)? {
            sync_header::Found::None => seg.header = None,
            sync_header::Found::Valid(h) => {
                files::check_synced_len(&self.dir, seg.first, h.synced, file_len)?;
                seg.header = Some(h);
            }
            sync_header::Found::Damaged => {
                // Without its salt no record of the file can be verified:
                // nothing is read, cut or indexed; every position of the
                // segment reads as corrupted (never as unwritten) and it takes
                // no writes, until the file is restored or re-copied.
                let reason = "the sync header is damaged (neither slot is valid): the file's records cannot be \
                              verified, so every position of this segment reads as corrupted"
                    .to_string();
                tracing::error!(file = %seg.file_name(), %reason, "damaged segment file header");
                self.corruptions.push(Corruption { file: seg.file_name(), offset: 0, position: None, reason });
                seg.header = Some(sync_header::SyncHeader::initial(0));
                seg.slots = Vec::new();
                seg.held = 0;
                seg.damaged_at = Some(0);
                seg.written_len = file_len;
                seg.allocated_len = file_len;
                seg.synced_len = file_len;
            }
        }
        Ok(())
    }

    /// Whether segment `n` may be evicted: synced, fully described by its
    /// index file and undamaged.
    pub(super) fn evictable(&self, n: u64, seg: &Segment) -> bool {
        seg.is_resident()
            && seg.pending.is_empty()
            && seg.damaged_at.is_none()
            && seg.indexed_len == Some(seg.written_len)
            && !self.touched.contains(&n)
            && !self.index_dirty.contains(&n)
    }

    /// Evicts least recently used segments (never `keep`, never the newest)
    /// until at most `resident_segments_max` are resident.
    pub(super) fn evict_beyond_cap(&mut self, keep: Option<u64>) {
        let cap = self.options.resident_segments_max;
        if cap == 0 {
            return;
        }
        let newest = self.segments.keys().next_back().copied();
        let mut resident = self.segments.values().filter(|seg| seg.is_resident()).count();
        while resident > cap {
            let victim = self
                .segments
                .iter()
                .filter(|(n, seg)| Some(**n) != keep && Some(**n) != newest && self.evictable(**n, seg))
                .min_by_key(|(_, seg)| seg.used)
                .map(|(n, _)| *n);
            let Some(v) = victim else { return };
            if let Some(seg) = self.segments.get_mut(&v) {
                // Its spare zeros go back first: only the newest segment keeps some.
                if let Err(e) = seg.release_spare() {
                    tracing::warn!(segment = seg.first, "cannot give back preallocated space: {e}; not evicting");
                    return;
                }
                seg.evict();
            }
            resident -= 1;
        }
    }
}
