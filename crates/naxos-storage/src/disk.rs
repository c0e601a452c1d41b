//! The on-disk [`Store`]: segment files of fixed position ranges holding CRC32C
//! records, group commit, per-segment index files, torn-tail recovery and
//! prefix trim. `docs/storage.md` describes the format in prose.
//!
//! Data directory:
//!
//! ```text
//! format.json                 {"format_version":1,"segment_positions":S} (fixed at creation)
//! meta.json                   Meta (cluster id, node id, sealed epoch, trim mark), replaced atomically
//! seg-<first:020>.log         records of positions [first, first+S), appended in write order
//! seg-<first:020>.idx         index of a prefix of the .log (see `index`), replaced atomically
//! ```
//!
//! A record is `len u32 | crc32c u32 | position u64 | kind u8 | streams u8 |
//! flags u8 | 0 u8 | payload_len u32 | stream ids | back-pointers | payload`
//! (little-endian, CRC over everything after the CRC field; see `record`).
//!
//! `write` encodes the record into the segment's pending buffer; `sync` writes
//! each touched segment's buffer with one positioned write and fdatasyncs each
//! touched file once (and the directory if a file was created). Reads verify
//! the CRC every time and serve unsynced records from the pending buffer.

mod files;
mod fs;
mod index;
mod inspect;
mod range;
mod record;
mod recovery;
mod resident;
mod segment;
mod sync_header;

use crate::fs::{DirLock, Fs, StdFs};
use crate::query;
use crate::{validate_entry, Corruption, Error, Meta, Result, Store, StreamQuery, StripeFilter};
use bytes::Bytes;
use files::{idx_name, load_format, load_meta, log_name, parse_name, META_FILE};
use index::{SlotKind, StreamIndex};
use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::{NodeId, Position, StreamId, DEFAULT_ENTRY_BYTES_MAX};
use segment::Segment;

pub use inspect::{indexed_bytes, synced_payloads};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// When `sync` makes writes durable.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Group commit: `sync` fdatasyncs every touched file (the default).
    #[default]
    Durable,
    /// Group commit, and each touched file's sync header claims the batch
    /// before `sync` returns: a second, small fdatasync per file and batch.
    /// Damage to any acknowledged record is then reported after a crash,
    /// never cut as a torn tail; with `Durable` that holds for every batch
    /// but those of the last moments before a crash (the claim rides with
    /// the next batch, or is written after a short idle pause).
    Strict,
    /// UNSAFE, for experiments only: `sync` writes the buffers to the files but
    /// never fsyncs data files, so acknowledged writes can be lost (or turn into
    /// torn or corrupted records) on a machine crash or power loss. Metadata and
    /// index files are still replaced atomically.
    UnsafeNoSync,
}

/// How a [`DiskStore`] lays out and syncs its files, and through which file system.
#[derive(Clone, Debug)]
pub struct Options {
    /// Positions per segment file (default `1 << 16`); segment `n` covers
    /// `[n*S, (n+1)*S)`. Fixed when the directory is created: an existing
    /// directory keeps its own value.
    pub segment_positions: u64,
    /// Largest payload accepted (default [`DEFAULT_ENTRY_BYTES_MAX`]; at most 1 GiB).
    pub entry_bytes_max: usize,
    /// When writes become durable (default [`SyncPolicy::Durable`]).
    pub sync: SyncPolicy,
    /// The file system every file of the store is reached through (default
    /// [`StdFs`]; a simulator passes its own).
    pub fs: Arc<dyn Fs>,
    /// Segments whose slot index (12 bytes per position) and open file are
    /// kept in memory at once (default 64); the others are loaded from their
    /// index files when next used, so memory does not grow with the data.
    /// 0 keeps every segment resident.
    pub resident_segments_max: usize,
    /// Zeros a segment file is extended by, ahead of its records, when the
    /// store is idle (default 1 MiB; 0 turns preallocation off).
    pub preallocate_bytes: u64,
    /// The node id written into the metadata of a *new* directory (default
    /// `None`: a random one). An existing directory keeps its own; a simulator
    /// sets it so that runs are deterministic.
    pub node_id: Option<NodeId>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            segment_positions: 1 << 16,
            entry_bytes_max: DEFAULT_ENTRY_BYTES_MAX,
            sync: SyncPolicy::Durable,
            fs: Arc::new(StdFs),
            preallocate_bytes: 1 << 20,
            resident_segments_max: 64,
            node_id: None,
        }
    }
}

/// Most positions one segment file may cover: its slot vector may grow to
/// 12 bytes per position (192 MiB at this limit).
pub const SEGMENT_POSITIONS_MAX: u64 = 1 << 24;

/// A segment's pending buffer is written out (without fsync) before it grows
/// past this, so a caller that syncs rarely does not grow memory without bound.
const PENDING_BYTES_MAX: usize = 8 << 20;

/// The data directory format this code writes and reads.
/// The on-disk store. Owned by one task; see the crate docs for the contract.
#[derive(Debug)]
pub struct DiskStore {
    dir: PathBuf,
    options: Options,
    meta: Meta,
    /// The first positions of the segment files the directory must hold
    /// (the manifest kept in meta.json beside `meta`).
    manifest: BTreeSet<u64>,
    /// Segments by number (`first / segment_positions`).
    segments: BTreeMap<u64, Segment>,
    streams: StreamIndex,
    /// One past the highest position any segment holds.
    high: u64,
    /// Segments with bytes that are pending or written but not yet synced.
    touched: BTreeSet<u64>,
    /// Segments whose index file does not describe them any more.
    index_dirty: BTreeSet<u64>,
    /// A newer segment was started: write the older dirty indexes at the next sync.
    index_due: bool,
    /// A file was created since the directory was last synced.
    dir_dirty: bool,
    corruptions: Vec<Corruption>,
    /// Set by a failed fsync: the kernel may have dropped the dirty pages, so
    /// the only safe way on is a restart that re-reads the files.
    failed: Option<String>,
    /// Closed or abandoned: dropping does nothing more.
    closed: bool,
    /// Counts uses of segments (least recently used ones are evicted first).
    tick: u64,
    /// Held for the store's lifetime; released on drop.
    _lock: DirLock,
}

/// Most bytes one read of a run of records fetches (`read_range`). Small
/// enough that the buffer comes from the allocator's heap: a fresh mmap per
/// read (glibc does that above 128 KiB) costs a page fault per 4 KiB, which
/// made 1 MiB runs of 4 KiB entries 4x slower than 64 KiB ones.
const RUN_BYTES_MAX: u64 = 64 << 10;

impl DiskStore {
    /// Opens (or creates) the store in `dir`: loads the metadata, loads valid
    /// index files, verifies every record they do not cover, truncates a torn
    /// tail, reports corruption and finishes an interrupted trim.
    pub fn open(dir: &Path, options: Options) -> Result<DiskStore> {
        if options.segment_positions == 0 || options.segment_positions > SEGMENT_POSITIONS_MAX {
            return Err(Error::Invalid(format!(
                "segment_positions must be in 1..={SEGMENT_POSITIONS_MAX}, not {}",
                options.segment_positions
            )));
        }
        if options.entry_bytes_max > record::PAYLOAD_BYTES_LIMIT {
            return Err(Error::Invalid(format!(
                "entry_bytes_max {} exceeds the format's limit of {} bytes",
                options.entry_bytes_max,
                record::PAYLOAD_BYTES_LIMIT
            )));
        }
        // A handle of our own: `options` moves into the store below.
        let fs_handle = options.fs.clone();
        let files = fs_handle.as_ref();
        fs::create_dir_all(files, dir)?;
        let lock = fs::lock(files, dir)?;
        let names = fs::list(files, dir)?;
        let stale: Vec<&String> = names.iter().filter(|n| n.ends_with(".tmp")).collect();
        for name in &stale {
            // Left by an atomic replacement that crashed before its rename.
            fs::remove(files, dir, name)?;
        }
        if !stale.is_empty() {
            // Durable before a new file may take one of those names.
            fs::sync_dir(files, dir)?;
        }
        let logs: BTreeSet<u64> = names.iter().filter_map(|n| parse_name(n, ".log")).collect();
        let idxs: BTreeSet<u64> = names.iter().filter_map(|n| parse_name(n, ".idx")).collect();
        let mut options = options;
        options.segment_positions = load_format(dir, &options, !logs.is_empty())?;
        let loaded = load_meta(dir, &options, &logs)?;
        let manifest = files::check_manifest(dir, &loaded, &logs, options.segment_positions)?;
        let manifest_changed = loaded.segments.as_ref() != Some(&manifest);
        let meta = loaded.meta;
        let mut store = DiskStore {
            dir: dir.to_path_buf(),
            options,
            meta,
            manifest,
            segments: BTreeMap::new(),
            streams: StreamIndex::default(),
            high: 0,
            touched: BTreeSet::new(),
            index_dirty: BTreeSet::new(),
            index_due: false,
            dir_dirty: false,
            corruptions: Vec::new(),
            failed: None,
            // Until open succeeds, dropping must not write anything.
            closed: true,
            tick: 0,
            _lock: lock,
        };
        let s = store.options.segment_positions;
        let mut removed = false;
        for first in idxs.iter().filter(|f| !logs.contains(f)) {
            fs::remove(files, dir, &idx_name(*first))?;
            removed = true;
        }
        for first in logs {
            if first % s != 0 {
                return Err(Error::Directory {
                    path: dir.display().to_string(),
                    reason: format!("{} does not start at a multiple of segment_positions {s}", log_name(first)),
                });
            }
            if first.saturating_add(s) <= store.meta.trim_mark.0 {
                // Wholly below the trim mark: a trim persisted its mark and
                // crashed before deleting this file.
                fs::remove(files, dir, &log_name(first))?;
                fs::remove(files, dir, &idx_name(first))?;
                removed = true;
                continue;
            }
            store.recover_segment(first)?;
            if let Some(h) = store.segments.get(&(first / s)).and_then(highest_possible) {
                store.high = store.high.max(h);
            }
            // Bounded memory from the start: evict as segments are loaded.
            store.evict_beyond_cap(None);
        }
        if removed {
            fs::sync_dir(files, dir)?;
        }
        if manifest_changed {
            // A directory from before the manifest, or a segment created
            // just before a crash that kept it out of the list.
            store.persist_meta(&store.meta)?;
        }
        // Closed segments that had to be scanned get an index now, so the next
        // start-up does not scan them again.
        store.write_indexes(false)?;
        store.evict_beyond_cap(None);
        store.closed = false;
        tracing::info!(
            dir = %dir.display(),
            segments = store.segments.len(),
            tail = store.tail().0,
            trim_mark = store.meta.trim_mark.0,
            corruptions = store.corruptions.len(),
            "storage opened"
        );
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file system the store works through.
    fn fs(&self) -> &dyn Fs {
        self.options.fs.as_ref()
    }

    /// How many segments have their slots and file in memory now.
    pub fn resident_segments(&self) -> usize {
        self.segments.values().filter(|seg| seg.is_resident()).count()
    }

    /// The options in force (`segment_positions` is the directory's own).
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Syncs every buffered write and writes the index file of every segment
    /// that changed, so the next start-up reads no data. Dropping the store
    /// does the same but can only log a failure.
    pub fn close(mut self) -> Result<()> {
        Store::close(&mut self)
    }

    /// Drops the store the way a crash would: buffered (unsynced) writes are
    /// lost and no index file is written. For tests and simulations.
    pub fn simulate_crash(mut self) {
        self.closed = true;
    }

    fn shutdown(&mut self) -> Result<()> {
        self.sync()?;
        self.claim_synced()?;
        self.write_indexes(true)
    }

    fn check_failed(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(reason) => Err(Error::Io {
                context: format!("the store stopped taking writes after a failed fsync ({reason}); restart it to recover from its files"),
                source: std::io::Error::other("earlier fsync failure"),
            }),
        }
    }

    fn segment_number(&self, position: u64) -> u64 {
        position / self.options.segment_positions
    }

    /// Loads one segment: its index file if valid, then a scan of the rest.
    fn recover_segment(&mut self, first: u64) -> Result<()> {
        let s = self.options.segment_positions;
        let file = fs::DataFile::open(self.fs(), &self.dir.join(log_name(first)))?;
        let file_len = file.len()?;
        let mut seg = Segment::new(first, s, file);
        self.read_sync_header(&mut seg, file_len)?;
        if seg.damaged_at.is_some() {
            self.segments.insert(first / s, seg);
            return Ok(());
        }
        let mut from = 0;
        if let Some(bytes) = fs::read(self.fs(), &self.dir, &idx_name(first))? {
            files::check_not_truncated(&self.dir, first, &bytes, file_len)?;
            match index::decode(&bytes, first, s, file_len) {
                Ok(ix) => {
                    seg.held = ix.slots.iter().filter(|slot| slot.kind() != SlotKind::Empty).count() as u64;
                    seg.slots = ix.slots;
                    for (i, slot) in seg.slots.iter().enumerate() {
                        if slot.kind() == SlotKind::Corrupted {
                            self.corruptions.push(Corruption {
                                file: seg.file_name(),
                                offset: slot.offset(),
                                position: Some(Position(first + i as u64)),
                                reason: "record failed its checksum at an earlier start-up".into(),
                            });
                        }
                    }
                    for (id, rel) in ix.streams {
                        for r in rel {
                            let p = first + u64::from(r);
                            if p >= self.meta.trim_mark.0 {
                                self.streams.insert(id, p);
                            }
                        }
                    }
                    from = ix.covered;
                    seg.indexed_len = Some(ix.covered);
                }
                Err(reason) => {
                    tracing::warn!(file = %idx_name(first), %reason, "ignoring an invalid index file; scanning the whole segment");
                }
            }
        }
        let outcome =
            recovery::scan(&mut seg, &mut self.streams, from, file_len, self.meta.trim_mark.0, &mut self.corruptions)?;
        tracing::debug!(file = %seg.file_name(), indexed_bytes = from, scanned_records = outcome.records, "segment recovered");
        if seg.header.is_some() && seg.written_len > seg.claimed_len() && seg.damaged_at.is_none() {
            // Records past the claim may have been in the page cache only (a
            // killed process): durable before they are served, then claimed.
            seg.file().sync_data()?;
        }
        seg.mark_synced();
        if seg.damaged_at.is_none() && seg.indexed_len != Some(seg.written_len) {
            self.index_dirty.insert(first / s);
        }
        self.segments.insert(first / s, seg);
        Ok(())
    }

    /// Writes the index files of the dirty segments (all, or all but the newest).
    fn write_indexes(&mut self, include_newest: bool) -> Result<()> {
        let newest = self.segments.keys().next_back().copied();
        let dirty: Vec<u64> =
            self.index_dirty.iter().copied().filter(|n| include_newest || Some(*n) != newest).collect();
        for n in dirty {
            self.write_index(n)?;
        }
        Ok(())
    }

    fn write_index(&mut self, n: u64) -> Result<()> {
        let Some(seg) = self.segments.get_mut(&n) else {
            self.index_dirty.remove(&n);
            return Ok(());
        };
        if seg.damaged_at.is_some() {
            // Its scan must run (and report the damage) at every start-up.
            self.index_dirty.remove(&n);
            return Ok(());
        }
        if !seg.pending.is_empty() || self.touched.contains(&n) {
            // Only synced bytes may be indexed; this one waits for a later sync.
            return Ok(());
        }
        let streams = self.streams.in_range(seg.first, seg.end());
        let bytes = index::encode(seg.first, seg.written_len, &seg.slots, &streams);
        fs::write_atomic(self.options.fs.as_ref(), &self.dir, &idx_name(seg.first), &bytes)?;
        seg.indexed_len = Some(seg.written_len);
        // Indexed means closed or idle: its write buffer's memory goes back.
        seg.pending = Vec::new();
        self.index_dirty.remove(&n);
        Ok(())
    }

    /// Replaces meta.json with `meta` and the current manifest.
    fn persist_meta(&self, meta: &Meta) -> Result<()> {
        let file = files::MetaFile { meta: meta.clone(), segments: Some(self.manifest.clone()) };
        let bytes = crate::checked::encode(&file).expect("MetaFile has only plain fields and always serializes");
        fs::write_atomic(self.fs(), &self.dir, META_FILE, &bytes)
    }

    fn create_segment(&mut self, n: u64) -> Result<()> {
        let first = n * self.options.segment_positions;
        let file = fs::DataFile::create(self.fs(), &self.dir.join(log_name(first)))?;
        // Listed before anything is written to it (the atomic replace of
        // meta.json also makes the new file's directory entry durable).
        self.manifest.insert(first);
        if let Err(e) = self.persist_meta(&self.meta) {
            // Unlisted, the file must not stay either: the next write that
            // needs it creates it again.
            self.manifest.remove(&first);
            drop(file);
            if let Err(remove) = fs::remove(self.fs(), &self.dir, &log_name(first)) {
                tracing::warn!(file = %log_name(first), %remove, "could not remove an unlisted new segment file");
            }
            return Err(e);
        }
        self.dir_dirty = true;
        if self.segments.keys().next_back().is_some_and(|newest| *newest < n) {
            self.index_due = true;
        }
        self.segments.insert(n, Segment::new(first, self.options.segment_positions, file));
        Ok(())
    }

    fn corrupted_error(&self, seg: &Segment, position: u64) -> Error {
        let reason = match (seg.slot(position).kind(), seg.damaged_at) {
            (SlotKind::Corrupted, _) => {
                format!(
                    "the record at offset {} of {} failed its checksum at start-up",
                    seg.slot(position).offset(),
                    seg.file_name()
                )
            }
            (_, Some(at)) => {
                format!("{} is damaged from offset {at}; what it held for this position is unknown", seg.file_name())
            }
            _ => "the record is unreadable".into(),
        };
        Error::Corrupted { position: Position(position), reason }
    }

    fn note_corruption(&mut self, file: String, offset: u64, position: u64, reason: &str) {
        if !self.corruptions.iter().any(|c| c.file == file && c.offset == offset) {
            tracing::error!(file = %file, offset, position, %reason, "corrupted record read");
            self.corruptions.push(Corruption {
                file,
                offset,
                position: Some(Position(position)),
                reason: reason.to_owned(),
            });
        }
    }

    /// Reads and verifies the record held at `position` (a data or hole slot).
    fn read_held(&mut self, n: u64, position: u64) -> Result<Entry> {
        let seg = self.segments.get(&n).expect("callers looked the segment up");
        let bytes = seg.record_bytes(seg.slot(position))?;
        self.check_record(n, position, bytes)
    }

    /// Decodes the record read for `position` of segment `n` and checks it is
    /// the one the index promised; anything else is a corruption, noted.
    fn check_record(&mut self, n: u64, position: u64, bytes: Option<Bytes>) -> Result<Entry> {
        let seg = self.segments.get(&n).expect("callers looked the segment up");
        let slot = seg.slot(position);
        let decoded = match bytes {
            None => Err(format!("the file ends before the record's {} bytes", slot.len())),
            Some(bytes) => record::decode(bytes, seg.salt()),
        };
        let want = if slot.kind() == SlotKind::Hole { record::RecordKind::Hole } else { record::RecordKind::Data };
        let reason = match decoded {
            Ok((header, entry)) if header.position == position && header.kind == want => return Ok(entry),
            Ok((header, _)) => format!(
                "the record claims position {} ({:?}), the index says {position} ({want:?})",
                header.position, header.kind
            ),
            Err(reason) => reason,
        };
        let file = seg.file_name();
        self.note_corruption(file, slot.offset(), position, &reason);
        Err(Error::Corrupted { position: Position(position), reason })
    }

    /// The checks before a write or a repair of `entry` at `position`; returns
    /// the entry's kind and its segment's number, made resident if it exists.
    fn admit(&mut self, position: Position, entry: &Entry) -> Result<(EntryKind, u64)> {
        self.check_failed()?;
        let kind = validate_entry(entry, self.options.entry_bytes_max)?;
        query::check_position(position)?;
        if position < self.meta.trim_mark {
            return Err(Error::Trimmed { position, mark: self.meta.trim_mark });
        }
        let n = self.segment_number(position.0);
        self.make_resident(n)?;
        Ok((kind, n))
    }

    /// Books a record appended to segment `n` for position `p`: stream
    /// index, tail, and what the next sync and index write must cover.
    fn written(&mut self, n: u64, p: u64, entry: &Entry) {
        for s in &entry.streams {
            let id = StreamId::from_slice(s).expect("validate_entry checked that stream ids are 16 bytes");
            self.streams.insert(id, p);
        }
        self.high = self.high.max(p + 1);
        self.touched.insert(n);
        self.index_dirty.insert(n);
    }

    /// Up to `limit` positions of the stripe in `[from, end)` that hold
    /// nothing, or whose record failed its checksum (a corrupted slot):
    /// which streams such an entry belonged to is unknown here, so a stream
    /// reader reads it (from another replica) to find out (soak seed 852910:
    /// a stream read missed an entry whose record had rotted on the head it
    /// asked).
    fn unwritten(&mut self, from: u64, end: u64, stripe: StripeFilter, limit: usize) -> Result<Vec<u64>> {
        let step = query::stripe_step(stripe);
        let mut out = Vec::new();
        let mut next = query::stripe_at_or_after(stripe, from);
        let mut resident = None;
        while let Some(p) = next.filter(|p| *p < end) {
            if out.len() >= limit {
                break;
            }
            let n = self.segment_number(p);
            if let Some(seg) = self.segments.get(&n).filter(|seg| seg.is_full()) {
                let lost =
                    self.corruptions.iter().any(|c| c.position.is_some_and(|q| q.0 >= seg.first && q.0 < seg.end()));
                if !lost {
                    next = query::stripe_at_or_after(stripe, seg.end());
                    continue;
                }
            }
            if resident != Some(n) {
                self.make_resident(n)?;
                resident = Some(n);
            }
            match self.segments.get(&n) {
                // A damaged segment's unknown positions (`kind` says
                // corrupted, the slot is empty) are not listed: most were
                // never written, and a reader cannot fill them there.
                Some(seg) if seg.slot(p).kind() == SlotKind::Corrupted => out.push(p),
                Some(seg) if seg.kind(p) != SlotKind::Empty => {}
                _ => out.push(p),
            }
            next = p.checked_add(step);
        }
        Ok(out)
    }
}

impl Drop for DiskStore {
    fn drop(&mut self) {
        // Dropping is what a crash looks like (a killed process, a crashed
        // simulated host): nothing is written here. `close` is the clean way
        // out; without it the next start-up scans what the index files lack.
        if !self.closed {
            tracing::debug!(dir = %self.dir.display(), "store dropped without close: unsynced writes are lost");
        }
    }
}

/// One past the highest position a segment may hold. A damaged segment may
/// hold acknowledged writes anywhere in its range, so the tail covers all of it
/// (a tail that is too low would let a recovering sequencer reissue them).
fn highest_possible(seg: &Segment) -> Option<u64> {
    if seg.damaged_at.is_some() {
        return Some(seg.end());
    }
    seg.slots.iter().rposition(|s| s.kind() != SlotKind::Empty).map(|i| seg.first + i as u64 + 1)
}

impl Store for DiskStore {
    fn write(&mut self, position: Position, entry: &Entry) -> Result<()> {
        let (kind, n) = self.admit(position, entry)?;
        let p = position.0;
        match self.segments.get(&n) {
            Some(seg) => match seg.kind(p) {
                SlotKind::Empty => {}
                SlotKind::Data => return Err(Error::Overwritten { position, kind: EntryKind::Data }),
                SlotKind::Hole => return Err(Error::Overwritten { position, kind: EntryKind::Hole }),
                SlotKind::Corrupted => return Err(self.corrupted_error(seg, p)),
            },
            None => self.create_segment(n)?,
        }
        let seg = self.segments.get_mut(&n).expect("found or created above");
        if seg.pending.len() >= PENDING_BYTES_MAX {
            seg.flush()?;
        }
        seg.append(p, kind, entry)?;
        self.written(n, p, entry);
        Ok(())
    }

    fn repair(&mut self, position: Position, entry: &Entry) -> Result<()> {
        let (kind, n) = self.admit(position, entry)?;
        let p = position.0;
        let Some(seg) = self.segments.get(&n) else {
            return Err(Error::Invalid(format!("position {position} holds nothing to repair; write it instead")));
        };
        match seg.kind(p) {
            SlotKind::Empty => {
                return Err(Error::Invalid(format!("position {position} holds nothing to repair; write it instead")))
            }
            SlotKind::Data | SlotKind::Hole => match self.read_held(n, p) {
                Ok(held) => {
                    // Readable: a report for this position (a second record
                    // for it, say) names nothing to repair.
                    self.corruptions.retain(|c| c.position != Some(position));
                    return Err(Error::Overwritten { position, kind: held.kind() });
                }
                Err(Error::Corrupted { .. }) => {}
                Err(e) => return Err(e),
            },
            SlotKind::Corrupted => {}
        }
        let seg = self.segments.get_mut(&n).expect("looked up above");
        if seg.header.is_none() {
            // Without a salt the scan stops at the damage and would never
            // find the repair again after a restart.
            return Err(Error::Invalid(format!(
                "{} predates the sync header (or lost it): it cannot take a repair",
                seg.file_name()
            )));
        }
        if seg.pending.len() >= PENDING_BYTES_MAX {
            seg.flush()?;
        }
        seg.append_repair(p, kind, entry)?;
        tracing::info!(%position, file = %seg.file_name(), "a corrupted record is repaired from a replica's copy");
        self.corruptions.retain(|c| c.position != Some(position));
        self.written(n, p, entry);
        Ok(())
    }

    fn corrupted_positions(&mut self, limit: usize) -> Vec<Position> {
        let mut out: BTreeSet<u64> = self.corruptions.iter().filter_map(|c| c.position.map(|p| p.0)).collect();
        for seg in self.segments.values().filter(|s| s.damaged_at.is_some() && s.is_resident()) {
            let end = seg.end().min(self.high.max(seg.first));
            for p in seg.first..end {
                if out.len() >= limit {
                    break;
                }
                if seg.kind(p) == SlotKind::Corrupted {
                    out.insert(p);
                }
            }
        }
        out.into_iter().filter(|p| *p >= self.meta.trim_mark.0).take(limit).map(Position).collect()
    }

    fn close(&mut self) -> Result<()> {
        let result = self.shutdown();
        self.closed = true;
        result
    }

    fn sync(&mut self) -> Result<()> {
        self.check_failed()?;
        let durable = self.options.sync != SyncPolicy::UnsafeNoSync;
        let strict = self.options.sync == SyncPolicy::Strict;
        let touched: Vec<u64> = self.touched.iter().copied().collect();
        for n in touched {
            let Some(seg) = self.segments.get_mut(&n) else {
                self.touched.remove(&n);
                continue;
            };
            // A failed write leaves the buffer in place; a retry rewrites it at the same offset.
            seg.flush()?;
            if durable {
                if let Err(e) = seg.file().sync_data() {
                    self.failed = Some(e.to_string());
                    return Err(e);
                }
                seg.mark_synced();
                if strict {
                    if let Err(e) = seg.claim_synced() {
                        self.failed = Some(e.to_string());
                        return Err(e);
                    }
                }
            }
            self.touched.remove(&n);
        }
        if self.dir_dirty && durable {
            if let Err(e) = self.options.fs.sync_dir(&self.dir) {
                // Out of descriptors, the directory could not even be opened:
                // nothing failed on disk. The batch is not acknowledged and
                // the directory is synced again with the next one.
                if e.raw_os_error().is_some_and(is_out_of_descriptors) {
                    return Err(fs::io(format!("syncing data directory {}", self.dir.display()), e));
                }
                let e = fs::io(format!("syncing data directory {}", self.dir.display()), e);
                self.failed = Some(e.to_string());
                return Err(e);
            }
        }
        self.dir_dirty = false;
        if self.index_due {
            self.write_indexes(false)?;
            self.index_due = false;
            self.evict_beyond_cap(None);
        }
        Ok(())
    }

    fn maintain(&mut self) -> Result<bool> {
        if self.failed.is_some() {
            return Ok(false);
        }
        let step = self.options.preallocate_bytes;
        if step == 0 {
            return Ok(false);
        }
        let Some(newest) = self.segments.keys().next_back().copied() else { return Ok(false) };
        let mut did = false;
        // Older segments give their spare zeros back once their writes are synced.
        let older: Vec<u64> = self
            .segments
            .iter()
            .filter(|(n, seg)| {
                **n != newest && seg.is_resident() && seg.allocated_len > seg.written_len && !self.touched.contains(n)
            })
            .map(|(n, _)| *n)
            .collect();
        for n in older {
            if let Some(seg) = self.segments.get_mut(&n) {
                seg.release_spare()?;
                did = true;
            }
        }
        if did {
            self.evict_beyond_cap(None);
        }
        let touched = self.touched.contains(&newest);
        if let Some(seg) = self.segments.get_mut(&newest) {
            // Keep at least one step of zeros ahead of the newest segment's records.
            if !touched && seg.damaged_at.is_none() && !seg.is_full() && seg.spare() < step {
                seg.preallocate(step)?;
                did = true;
            }
        }
        Ok(did)
    }

    /// Makes the sync header of every resident segment with no unsynced
    /// writes claim all its synced bytes; whether any header was written.
    fn claim_synced(&mut self) -> Result<bool> {
        if self.options.sync != SyncPolicy::Durable || self.failed.is_some() {
            return Ok(false);
        }
        let mut did = false;
        for (n, seg) in self.segments.iter_mut() {
            if seg.is_resident() && !self.touched.contains(n) && seg.synced_len > seg.claimed_len() {
                did |= seg.claim_synced()?;
            }
        }
        Ok(did)
    }

    fn read(&mut self, position: Position) -> Result<Option<Entry>> {
        if position < self.meta.trim_mark {
            return Err(Error::Trimmed { position, mark: self.meta.trim_mark });
        }
        let p = position.0;
        let n = self.segment_number(p);
        self.make_resident(n)?;
        let Some(seg) = self.segments.get(&n) else {
            return Ok(None);
        };
        match seg.kind(p) {
            SlotKind::Empty => Ok(None),
            SlotKind::Corrupted => Err(self.corrupted_error(seg, p)),
            SlotKind::Data | SlotKind::Hole => self.read_held(n, p).map(Some),
        }
    }

    fn read_range(
        &mut self,
        from: Position,
        to: Position,
        max_bytes: usize,
    ) -> Result<(Vec<(Position, Entry)>, Position)> {
        self.read_runs(from, to, max_bytes)
    }

    fn tail(&self) -> Position {
        Position(self.high).max(self.meta.trim_mark)
    }

    fn stream_last(&self, stream: StreamId) -> Option<Position> {
        self.streams.last(stream).map(Position)
    }

    fn streams_last(&self) -> Vec<(StreamId, Position)> {
        self.streams.all_last().into_iter().map(|(id, p)| (id, Position(p))).collect()
    }

    fn stream_query(
        &mut self,
        stream: StreamId,
        from: Position,
        to: Position,
        stripe: StripeFilter,
        limit: usize,
    ) -> Result<StreamQuery> {
        if !query::check_range(from, to, self.meta.trim_mark)? || limit == 0 {
            return Ok(StreamQuery { positions: Vec::new(), unwritten: Vec::new(), next: from });
        }
        let positions = self.streams.positions(stream, from.0, to.0, limit);
        let end = to.min(self.tail()).0;
        let unwritten = self.unwritten(from.0, end, stripe, limit)?;
        Ok(query::merge(positions, unwritten, to, limit))
    }

    fn trim(&mut self, position: Position) -> Result<()> {
        if position <= self.meta.trim_mark {
            return Ok(());
        }
        // The mark is durable before anything is deleted: a crash in between
        // leaves files that the next open deletes.
        let meta = Meta { trim_mark: position, ..self.meta.clone() };
        let s = self.options.segment_positions;
        let kept = self.manifest.iter().copied().filter(|f| f.saturating_add(s) > position.0).collect();
        let listed = std::mem::replace(&mut self.manifest, kept);
        if let Err(e) = self.persist_meta(&meta) {
            self.manifest = listed;
            return Err(e);
        }
        self.meta = meta;
        self.streams.trim(position.0);
        let doomed: Vec<u64> =
            self.segments.iter().filter(|(_, seg)| seg.end() <= position.0).map(|(n, _)| *n).collect();
        for n in &doomed {
            let seg = self.segments.remove(n).expect("listed above");
            self.touched.remove(n);
            self.index_dirty.remove(n);
            let first = seg.first;
            drop(seg);
            fs::remove(self.fs(), &self.dir, &log_name(first))?;
            fs::remove(self.fs(), &self.dir, &idx_name(first))?;
        }
        if !doomed.is_empty() && self.options.sync == SyncPolicy::Durable {
            fs::sync_dir(self.fs(), &self.dir)?;
        }
        tracing::info!(mark = position.0, deleted_segments = doomed.len(), "trimmed");
        Ok(())
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn set_meta(&mut self, meta: Meta) -> Result<()> {
        let meta = Meta { trim_mark: self.meta.trim_mark, ..meta };
        self.persist_meta(&meta)?;
        self.meta = meta;
        Ok(())
    }

    fn corruptions(&self) -> Vec<Corruption> {
        self.corruptions.clone()
    }
}

/// Whether an OS error number says the process (EMFILE) or the system
/// (ENFILE) is out of file descriptors: not a failed write or sync.
pub(crate) fn is_out_of_descriptors(errno: i32) -> bool {
    const ENFILE: i32 = 23;
    const EMFILE: i32 = 24;
    errno == EMFILE || errno == ENFILE
}
