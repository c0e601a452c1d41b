//! The log unit's storage engine: write-once positions, group commit, segment
//! files with CRC32C records, per-segment index files, torn-tail recovery,
//! prefix trim, a per-stream position index and atomically written metadata.
//!
//! The engine is reached through the [`Store`] trait, which has an in-memory
//! implementation ([`MemStore`], for tests and the simulator) and an on-disk one
//! ([`DiskStore`]); one conformance suite ([`conformance`]) runs against both.
//! The engine knows nothing of the network, of epochs' meaning or of chains: it
//! stores entries by position and says what it holds.
//!
//! The store is synchronous and owned by one task (the log unit's writer);
//! `write` buffers, `sync` makes every buffered write durable with one
//! `fdatasync` per touched file (group commit). Callers acknowledge a write only
//! after the `sync` that follows it returned.
//!
//! Details of the contract that every implementation keeps (and the
//! [`conformance`] suite checks):
//! - a write to a position whose record is corrupted fails with `Corrupted`
//!   (the position was written; its value is lost, so it is neither free nor
//!   readable);
//! - `read_range` and `stream_query` fail with `Trimmed` when a non-empty range
//!   starts below the trim mark (a stream reader must learn that it missed
//!   entries); an empty range (`from >= to`) returns nothing with `next = from`;
//! - `read_range` returns at most [`RANGE_ENTRIES_MAX`] entries and never more
//!   than `max_bytes` of payload, except that the first entry is always
//!   returned; it stops before a corrupted record if it already gathered
//!   entries (the next call then reports the corruption);
//! - position `u64::MAX` is reserved (it means "none" in back-pointers):
//!   writing it is `Invalid`.
//!
//! Every file the on-disk store touches is reached through the [`Fs`] trait
//! (module [`fs`]): [`StdFs`] in production, a simulated file system in the
//! simulator (set through [`Options::fs`]).
//!
//! The on-disk format is described in `docs/storage.md` and in [`disk`].

pub mod checked;
pub mod conformance;
pub mod disk;
pub mod fs;
pub mod mem;
pub mod meta;
mod query;

pub use disk::{DiskStore, Options, SyncPolicy};
pub use fs::{Fs, StdFs};
pub use mem::MemStore;
pub use meta::Meta;

use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::{Position, StreamId};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The position was already written; `kind` says with data or a hole.
    #[error("position {position} was already written ({kind:?})")]
    Overwritten {
        /// The position.
        position: Position,
        /// What it holds.
        kind: EntryKind,
    },
    /// The position is below the trim mark.
    #[error("position {position} is below the trim mark {mark}")]
    Trimmed {
        /// The position.
        position: Position,
        /// The trim mark.
        mark: Position,
    },
    /// The stored record at the position failed its checksum or is unreadable.
    #[error("record at position {position} is corrupted: {reason}")]
    Corrupted {
        /// The position.
        position: Position,
        /// What was wrong.
        reason: String,
    },
    /// The entry is malformed (bad kind, a hole with a payload, too many streams, too large).
    #[error("invalid entry: {0}")]
    Invalid(String),
    /// The data directory is unusable (another cluster's, a newer format, ...).
    #[error("data directory {path}: {reason}")]
    Directory {
        /// The directory.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, to which file.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, Error>;

/// Which positions of a range belong to one stripe: `p >= segment_start` and
/// `(p - segment_start) % count == index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StripeFilter {
    /// First position of the segment.
    pub segment_start: Position,
    /// Number of stripes in the segment (at least 1).
    pub count: u32,
    /// This stripe's index.
    pub index: u32,
}

impl StripeFilter {
    /// The filter that takes every position.
    pub const ALL: StripeFilter = StripeFilter { segment_start: Position(0), count: 1, index: 0 };

    /// Whether `p` belongs to the stripe.
    pub fn contains(&self, p: Position) -> bool {
        p >= self.segment_start && (p.0 - self.segment_start.0) % u64::from(self.count.max(1)) == u64::from(self.index)
    }
}

/// The answer to a stream query over a range.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamQuery {
    /// The stream's positions in the examined range, ascending.
    pub positions: Vec<Position>,
    /// The stripe's positions in the examined range that hold nothing yet,
    /// or whose record failed its checksum (its streams are unknown), ascending.
    pub unwritten: Vec<Position>,
    /// The first position not examined (the range's end if all of it was).
    pub next: Position,
}

/// A log unit's storage engine. See the crate docs for the durability contract.
pub trait Store: Send + 'static {
    /// Buffers `entry` at `position`. Fails with `Overwritten` if the position
    /// holds anything (even unsynced), `Trimmed` below the trim mark, `Invalid`
    /// for a malformed entry. Durable only after the next `sync`.
    fn write(&mut self, position: Position, entry: &Entry) -> Result<()>;

    /// Puts back the value of a position whose record was lost to damage
    /// (it reads as `Corrupted`), from a replica that holds it: write-once
    /// still holds, because only a position whose own record is unreadable
    /// takes a repair. Fails with `Overwritten` if the position holds a
    /// readable record, `Invalid` if it holds nothing (write it instead) or if
    /// its file cannot take a repair, `Trimmed` below the trim mark. Durable
    /// only after the next `sync`. A store that never loses records (the
    /// in-memory one) has nothing to repair.
    fn repair(&mut self, position: Position, entry: &Entry) -> Result<()> {
        validate_entry(entry, usize::MAX)?;
        match self.read(position)? {
            Some(held) => Err(Error::Overwritten { position, kind: held.kind() }),
            None => Err(Error::Invalid(format!("position {position} holds nothing to repair; write it instead"))),
        }
    }

    /// Up to `limit` positions that read as `Corrupted` (records found damaged
    /// at start-up or on reads, and the unknown positions of a damaged segment
    /// below the tail), lowest first: what a repair from replicas can put back.
    fn corrupted_positions(&mut self, limit: usize) -> Vec<Position> {
        let _ = limit;
        Vec::new()
    }

    /// Makes every buffered write durable (one fdatasync per touched file).
    fn sync(&mut self) -> Result<()>;

    /// Upkeep for an idle moment (the disk store preallocates file space
    /// ahead of its records); returns whether it did anything. Nothing it does
    /// can lose data: a failure only means no preallocation.
    fn maintain(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Upkeep for a longer idle moment: records durably how much of each
    /// file is synced (the disk store's sync headers), so that after a crash
    /// damage to acknowledged records is told from a torn tail; returns
    /// whether it wrote anything. A batch's own sync already carries the
    /// claim of the batch before it, so this only adds the last batch before
    /// the pause (it costs an fdatasync: run it after the unit has been idle
    /// for a while, not between two batches of a busy client).
    fn claim_synced(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Closes the store cleanly: syncs, and writes what makes the next start
    /// quick (the disk store's index files). Dropping without it is a crash.
    fn close(&mut self) -> Result<()> {
        self.sync()
    }

    /// The entry at `position` (data or hole), `None` if unwritten; `Trimmed`
    /// below the trim mark; `Corrupted` if the record fails its checksum.
    fn read(&mut self, position: Position) -> Result<Option<Entry>>;

    /// Written entries in `[from, to)` in order, stopping once `max_bytes` of
    /// payload were gathered (at least one entry is returned if any exists).
    /// Returns the entries and the first position not examined.
    fn read_range(
        &mut self,
        from: Position,
        to: Position,
        max_bytes: usize,
    ) -> Result<(Vec<(Position, Entry)>, Position)>;

    /// One past the highest position ever written (data or hole), and never
    /// below the trim mark.
    fn tail(&self) -> Position;

    /// The last position of `stream`, if the store holds any of its entries.
    fn stream_last(&self, stream: StreamId) -> Option<Position>;

    /// The last position of every stream the store holds.
    fn streams_last(&self) -> Vec<(StreamId, Position)>;

    /// The stream's positions in `[from, to)` and the stripe's unwritten
    /// positions there (below `tail()` only; with those whose record failed
    /// its checksum), returning at most `limit` of them
    /// together; `next` says where the examination stopped.
    fn stream_query(
        &mut self,
        stream: StreamId,
        from: Position,
        to: Position,
        stripe: StripeFilter,
        limit: usize,
    ) -> Result<StreamQuery>;

    /// Raises the trim mark to `position` (durably) and deletes what lies wholly
    /// below it. A lower mark than the current one is a no-op.
    fn trim(&mut self, position: Position) -> Result<()>;

    /// The store's metadata.
    fn meta(&self) -> &Meta;

    /// Replaces the metadata durably (atomic write). The trim mark in `meta` is
    /// ignored: only `trim` moves it.
    fn set_meta(&mut self, meta: Meta) -> Result<()>;

    /// Corrupted records found at start-up or on reads, for reporting.
    fn corruptions(&self) -> Vec<Corruption>;
}

/// A corrupted record the store found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Corruption {
    /// The file.
    pub file: String,
    /// The byte offset of the record in the file.
    pub offset: u64,
    /// The position the record claims, if its header was readable.
    pub position: Option<Position>,
    /// What was wrong.
    pub reason: String,
}

/// Checks an entry before it is stored; shared by every implementation.
pub fn validate_entry(entry: &Entry, entry_bytes_max: usize) -> Result<EntryKind> {
    let kind =
        EntryKind::try_from(entry.kind).map_err(|_| Error::Invalid(format!("unknown entry kind {}", entry.kind)))?;
    match kind {
        EntryKind::Data => {
            if entry.payload.len() > entry_bytes_max {
                return Err(Error::Invalid(format!(
                    "payload of {} bytes exceeds the entry limit of {entry_bytes_max} bytes",
                    entry.payload.len()
                )));
            }
        }
        EntryKind::Hole => {
            if !entry.payload.is_empty() || !entry.streams.is_empty() {
                return Err(Error::Invalid("a hole carries no payload and no streams".into()));
            }
        }
        EntryKind::Unspecified => return Err(Error::Invalid("entry kind is unspecified".into())),
    }
    if entry.streams.len() > STREAMS_PER_ENTRY_MAX {
        return Err(Error::Invalid(format!("an entry belongs to at most {STREAMS_PER_ENTRY_MAX} streams")));
    }
    if entry.streams.iter().any(|s| s.len() != 16) {
        return Err(Error::Invalid("stream ids are 16 bytes".into()));
    }
    if !entry.backpointers.is_empty() && entry.backpointers.len() != entry.streams.len() {
        return Err(Error::Invalid("one back-pointer per stream, or none".into()));
    }
    Ok(kind)
}

/// Most streams one entry can belong to.
pub const STREAMS_PER_ENTRY_MAX: usize = 64;

/// Most entries one `read_range` returns, whatever `max_bytes` says (holes
/// carry no payload, so the byte budget alone does not bound a reply).
pub const RANGE_ENTRIES_MAX: usize = 16384;

/// The highest position a store accepts; `u64::MAX` is reserved.
pub const POSITION_MAX: Position = Position(u64::MAX - 1);
