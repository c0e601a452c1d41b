//! Reads, fills and range reads of the virtual log: each position is served
//! by the loglet of its segment (for chains: from the tail, with read repair
//! and hole filling; see `loglet::chain`). Range reads ask each segment's
//! loglet for a bulk pass, then read whatever it lacked one position at a
//! time, all at once.

use crate::loglet;
use crate::retry::Retry;
use crate::{Client, Error, Value};
use naxos_wire::{rpc, ErrorCode, Position, ServerError};
use std::collections::BTreeMap;

impl Client {
    /// What `position` holds: data, or a hole. `Unwritten` if nothing is there
    /// and the position is at or above the tail; `Trimmed` below the trim mark.
    pub async fn read(&self, position: Position) -> Result<Value, Error> {
        let mut retry = Retry::new(self.config());
        loop {
            let layout = self.layout();
            let result = match loglet::segment_of(&layout, position) {
                Some(segment) => loglet::of_segment(&layout, segment)?.read(self, position).await,
                None => Err(rpc::Error::Server {
                    addr: String::new(),
                    error: ServerError::new(ErrorCode::BadRequest, format!("no segment holds position {position}")),
                }),
            };
            match result {
                Ok(v) => return Ok(v),
                Err(e) => retry.on_error(self, e, "read").await?,
            }
        }
    }

    /// What is committed at `position` (on its chain's tail), without
    /// waiting for a slow writer and without filling: `None` if nothing is
    /// there yet (a writer may hold the position, or it is past the tail).
    pub async fn peek(&self, position: Position) -> Result<Option<Value>, Error> {
        Ok(self.read_tails(position, Position(position.0.saturating_add(1))).await?.remove(&position.0))
    }

    /// Fills `position` with a hole. Fails with `AlreadyWritten` (changing
    /// nothing) if it holds data or a hole already, and refuses positions at or
    /// above the tail, which a writer may still be given.
    pub async fn fill(&self, position: Position) -> Result<(), Error> {
        let tail = self.tail().await?;
        if position >= tail {
            return Err(Error::Invalid(format!(
                "cannot fill {position}: it is at or above the tail {tail}, so no writer holds it yet"
            )));
        }
        let layout = self.layout();
        loglet::of_position(&layout, position)?.fill(self, position).await
    }

    /// What the chains' tails hold of `[from, to)`, one bulk read per
    /// segment's loglet; positions missing there are left to single reads.
    pub(crate) async fn read_tails(&self, from: Position, to: Position) -> Result<BTreeMap<u64, Value>, Error> {
        let layout = self.layout();
        let mut got: BTreeMap<u64, Value> = BTreeMap::new();
        for segment in loglet::segments_in(&layout, from, to) {
            got.append(&mut loglet::of_segment(&layout, segment)?.read_range(self, from, to).await?);
        }
        Ok(got)
    }

    /// Every position in `[from, to)` with its value, in order. Bulk reads go
    /// to each segment's loglet; positions a bulk read lacks are read one by
    /// one (with repair and hole filling). `to` is clipped to the tail.
    pub async fn read_range(&self, from: Position, to: Position) -> Result<Vec<(Position, Value)>, Error> {
        let tail = self.tail().await?;
        let to = to.min(tail);
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            let chunk_end = Position(to.0.min(next.0 + 4096));
            let mut got = self.read_tails(next, chunk_end).await?;
            // Positions the bulk reads lack are read one by one, but all at
            // once: a run of holes (a dead writer's batch, a restarted
            // sequencer's unused block) costs one hole-fill wait, not one per position.
            let missing: Vec<u64> = (next.0..chunk_end.0).filter(|p| !got.contains_key(p)).collect();
            let reads = futures::future::join_all(missing.iter().map(|&p| self.read(Position(p)))).await;
            for (p, v) in missing.into_iter().zip(reads) {
                got.insert(p, v?);
            }
            out.extend(got.into_iter().map(|(p, v)| (Position(p), v)));
            next = chunk_end;
        }
        Ok(out)
    }
}
