//! The store's bulk read (`Store::read_range`): the held records of a range
//! of positions, in order, reading each run of records that lie back to back
//! in a segment file with one read, within a byte budget, stopping before a
//! corrupted record once something was gathered.

use super::index::SlotKind;
use super::{DiskStore, RUN_BYTES_MAX};
use crate::query::{self, Budget};
use crate::{Error, Result};
use naxos_wire::proto::Entry;
use naxos_wire::Position;

impl DiskStore {
    /// `Store::read_range`'s work.
    pub(super) fn read_runs(
        &mut self,
        from: Position,
        to: Position,
        max_bytes: usize,
    ) -> Result<(Vec<(Position, Entry)>, Position)> {
        if !query::check_range(from, to, self.meta.trim_mark)? {
            return Ok((Vec::new(), from));
        }
        let mut budget = Budget::new(max_bytes);
        let mut out = Vec::new();
        let numbers: Vec<u64> =
            self.segments.range(self.segment_number(from.0)..=self.segment_number(to.0 - 1)).map(|(n, _)| *n).collect();
        for n in numbers {
            self.make_resident(n)?;
            let seg = &self.segments[&n];
            let lo = from.0.max(seg.first);
            let hi = if seg.damaged_at.is_some() {
                to.0.min(seg.end())
            } else {
                to.0.min(seg.first + seg.slots.len() as u64)
            };
            let mut p = lo;
            while p < hi {
                // A run of held records that lie back to back: one read for all.
                let seg = &self.segments[&n];
                let (run_end, run) = match seg.kind(p) {
                    SlotKind::Empty => {
                        p += 1;
                        continue;
                    }
                    SlotKind::Corrupted => (p + 1, Err(self.corrupted_error(seg, p))),
                    SlotKind::Data | SlotKind::Hole => {
                        let start = seg.slot(p).offset();
                        let in_file = start < seg.written_len;
                        let mut end = start + u64::from(seg.slot(p).len());
                        let mut q = p + 1;
                        while q < hi && end - start < RUN_BYTES_MAX && budget.allows(end - start) {
                            let slot = seg.slot(q);
                            let held = matches!(seg.kind(q), SlotKind::Data | SlotKind::Hole);
                            if !held || slot.offset() != end || (slot.offset() < seg.written_len) != in_file {
                                break;
                            }
                            end += u64::from(slot.len());
                            q += 1;
                        }
                        (q, seg.span_bytes(start, (end - start) as usize).map(|b| (start, b)))
                    }
                };
                let (start, bytes) = match run {
                    Ok(run) => run,
                    // Deliver what was gathered; the next call starts at the corruption and reports it.
                    Err(Error::Corrupted { .. }) if !budget.is_empty() => return Ok((out, Position(p))),
                    Err(e) => return Err(e),
                };
                for r in p..run_end {
                    let slot = self.segments[&n].slot(r);
                    let at = (slot.offset() - start) as usize;
                    let record = bytes.as_ref().map(|b| b.slice(at..at + slot.len() as usize));
                    let read = self.check_record(n, r, record);
                    match read {
                        Ok(entry) => {
                            if !budget.take(entry.payload.len()) {
                                return Ok((out, Position(r)));
                            }
                            out.push((Position(r), entry));
                        }
                        // Deliver what was gathered; the next call starts at the corruption and reports it.
                        Err(Error::Corrupted { .. }) if !budget.is_empty() => return Ok((out, Position(r))),
                        Err(e) => return Err(e),
                    }
                }
                p = run_end;
            }
        }
        Ok((out, to))
    }
}
