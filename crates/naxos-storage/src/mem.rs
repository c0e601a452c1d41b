//! An in-memory [`Store`]: the reference implementation of the contract, for
//! tests and the simulator. It is deterministic (ordered maps only) and `sync`
//! is a no-op, so it never loses a write.

use crate::query::{self, Budget};
use crate::{validate_entry, Corruption, Error, Meta, Result, Store, StreamQuery, StripeFilter};
use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::{Position, StreamId, DEFAULT_ENTRY_BYTES_MAX};
use std::collections::{BTreeMap, BTreeSet};

/// A [`Store`] that keeps everything in ordered maps.
#[derive(Clone, Debug)]
pub struct MemStore {
    entries: BTreeMap<Position, Entry>,
    streams: BTreeMap<StreamId, BTreeSet<u64>>,
    meta: Meta,
    entry_bytes_max: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    /// An empty store with default metadata and the default entry size limit.
    pub fn new() -> MemStore {
        MemStore::with_entry_bytes_max(DEFAULT_ENTRY_BYTES_MAX)
    }

    /// An empty store that refuses payloads larger than `entry_bytes_max`.
    pub fn with_entry_bytes_max(entry_bytes_max: usize) -> MemStore {
        MemStore { entries: BTreeMap::new(), streams: BTreeMap::new(), meta: Meta::default(), entry_bytes_max }
    }

    fn kind_at(&self, position: Position) -> Option<EntryKind> {
        self.entries.get(&position).map(|e| EntryKind::try_from(e.kind).unwrap_or(EntryKind::Unspecified))
    }
}

impl Store for MemStore {
    fn write(&mut self, position: Position, entry: &Entry) -> Result<()> {
        validate_entry(entry, self.entry_bytes_max)?;
        query::check_position(position)?;
        if position < self.meta.trim_mark {
            return Err(Error::Trimmed { position, mark: self.meta.trim_mark });
        }
        if let Some(kind) = self.kind_at(position) {
            return Err(Error::Overwritten { position, kind });
        }
        for s in &entry.streams {
            let id = StreamId::from_slice(s).expect("validate_entry checked that stream ids are 16 bytes");
            self.streams.entry(id).or_default().insert(position.0);
        }
        self.entries.insert(position, entry.clone());
        Ok(())
    }

    fn sync(&mut self) -> Result<()> {
        Ok(())
    }

    fn read(&mut self, position: Position) -> Result<Option<Entry>> {
        if position < self.meta.trim_mark {
            return Err(Error::Trimmed { position, mark: self.meta.trim_mark });
        }
        Ok(self.entries.get(&position).cloned())
    }

    fn read_range(
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
        for (p, e) in self.entries.range(from..to) {
            if !budget.take(e.payload.len()) {
                return Ok((out, *p));
            }
            out.push((*p, e.clone()));
        }
        Ok((out, to))
    }

    fn tail(&self) -> Position {
        let high = self.entries.keys().next_back().map_or(Position(0), |p| p.next());
        high.max(self.meta.trim_mark)
    }

    fn stream_last(&self, stream: StreamId) -> Option<Position> {
        self.streams.get(&stream).and_then(|s| s.last()).map(|p| Position(*p))
    }

    fn streams_last(&self) -> Vec<(StreamId, Position)> {
        self.streams.iter().filter_map(|(id, s)| s.last().map(|p| (*id, Position(*p)))).collect()
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
        let positions: Vec<u64> =
            self.streams.get(&stream).map_or_else(Vec::new, |s| s.range(from.0..to.0).copied().take(limit).collect());
        let end = to.min(self.tail()).0;
        let mut unwritten = Vec::new();
        let mut p = query::stripe_at_or_after(stripe, from.0);
        while let Some(q) = p.filter(|q| *q < end) {
            if unwritten.len() >= limit {
                break;
            }
            if !self.entries.contains_key(&Position(q)) {
                unwritten.push(q);
            }
            p = q.checked_add(query::stripe_step(stripe));
        }
        Ok(query::merge(positions, unwritten, to, limit))
    }

    fn trim(&mut self, position: Position) -> Result<()> {
        if position <= self.meta.trim_mark {
            return Ok(());
        }
        self.meta.trim_mark = position;
        self.entries = self.entries.split_off(&position);
        for s in self.streams.values_mut() {
            *s = s.split_off(&position.0);
        }
        self.streams.retain(|_, s| !s.is_empty());
        Ok(())
    }

    fn meta(&self) -> &Meta {
        &self.meta
    }

    fn set_meta(&mut self, meta: Meta) -> Result<()> {
        let trim_mark = self.meta.trim_mark;
        self.meta = Meta { trim_mark, ..meta };
        Ok(())
    }

    fn corruptions(&self) -> Vec<Corruption> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_store_passes_the_conformance_suite() {
        crate::conformance::run_all(MemStore::new);
    }
}
