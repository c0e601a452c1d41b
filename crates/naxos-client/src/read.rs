//! Reads: from the chain's tail, where whatever is found is committed. If the
//! tail has nothing, the head is asked: a value there is copied down the chain
//! (read repair). If no replica has anything and the position is below the
//! log's tail, the reader waits a little for a slow writer, watching the head,
//! then fills a hole; write-once makes either the value or the hole win, for good.

use crate::retry::Retry;
use crate::{rpc_to_error, Client, Error, Value};
use naxos_wire::proto::{request, response, EntryKind, ReadRange};
use naxos_wire::{ErrorCode, Layout, Position};
use std::collections::BTreeMap;
use std::time::Duration;

/// How often a reader looks at the head while it waits for a slow writer.
const HOLE_POLL: Duration = Duration::from_millis(5);
/// Payload bytes asked for in one bulk read.
const RANGE_BYTES: u64 = 4 << 20;

impl Client {
    /// What `position` holds: data, or a hole. `Unwritten` if nothing is there
    /// and the position is at or above the tail; `Trimmed` below the trim mark.
    pub async fn read(&self, position: Position) -> Result<Value, Error> {
        let mut retry = Retry::new(self.config());
        loop {
            let layout = self.layout();
            match self.read_once(&layout, position).await {
                Ok(v) => return Ok(v),
                Err(e) => retry.on_error(self, e, "read").await?,
            }
        }
    }

    async fn read_once(&self, layout: &Layout, pos: Position) -> Result<Value, naxos_wire::rpc::Error> {
        let Some(placement) = layout.placement(pos) else {
            return Err(naxos_wire::rpc::Error::Server {
                addr: String::new(),
                error: naxos_wire::ServerError::new(ErrorCode::BadRequest, format!("no segment holds position {pos}")),
            });
        };
        let chain = placement.chain;
        if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::ReadAnyReplica) {
            return self.read_any_replica_broken(layout, chain, pos).await;
        }
        let tail_replica = &chain[chain.len() - 1];
        if let Some(entry) = self.read_replica(tail_replica, layout, pos).await? {
            return Ok(Value::from_entry(entry));
        }
        match self.repair(layout, chain, pos).await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => return Err(e),
        }
        // Nothing anywhere. Above the tail it is simply unwritten.
        let tail = self.tail().await.map_err(|e| match e {
            Error::Server(error) => naxos_wire::rpc::Error::Server { addr: String::new(), error },
            other => naxos_wire::rpc::Error::Server {
                addr: String::new(),
                error: naxos_wire::ServerError::new(ErrorCode::Unavailable, other.to_string()),
            },
        })?;
        if pos >= tail {
            return Err(naxos_wire::rpc::Error::Server {
                addr: String::new(),
                error: naxos_wire::ServerError::at(ErrorCode::Unwritten, pos, format!("position {pos} is unwritten")),
            });
        }
        // Below the tail: a writer holds the token. Give it a moment.
        let deadline = tokio::time::Instant::now() + self.config().hole_fill_wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(HOLE_POLL).await;
            if let Some(v) = self.repair(layout, chain, pos).await? {
                return Ok(v);
            }
        }
        let winner = self.fill_chain(layout, chain, pos).await.map_err(|e| naxos_wire::rpc::Error::Server {
            addr: String::new(),
            error: match e {
                Error::Server(s) => s,
                other => naxos_wire::ServerError::new(ErrorCode::Unavailable, other.to_string()),
            },
        })?;
        Ok(Value::from_entry(winner))
    }

    /// The deliberately broken read of `Mutation::ReadAnyReplica`: trusts one
    /// replica picked by position, and fills a hole there alone. Only for
    /// proving that the simulator catches it.
    async fn read_any_replica_broken(
        &self,
        layout: &Layout,
        chain: &[String],
        pos: Position,
    ) -> Result<Value, naxos_wire::rpc::Error> {
        let replica = &chain[(pos.0 as usize) % chain.len()];
        if let Some(entry) = self.read_replica(replica, layout, pos).await? {
            return Ok(Value::from_entry(entry));
        }
        let below_tail = matches!(self.tail().await, Ok(t) if pos < t);
        if !below_tail {
            return Err(naxos_wire::rpc::Error::Server {
                addr: String::new(),
                error: naxos_wire::ServerError::at(ErrorCode::Unwritten, pos, format!("position {pos} is unwritten")),
            });
        }
        tokio::time::sleep(self.config().hole_fill_wait).await;
        let hole = naxos_wire::Entry { kind: EntryKind::Hole as i32, ..Default::default() };
        match self.write_replica(replica, layout, pos, &hole).await {
            Ok(()) => Ok(Value::Hole),
            Err(_) => match self.read_replica(replica, layout, pos).await? {
                Some(entry) => Ok(Value::from_entry(entry)),
                None => Ok(Value::Hole),
            },
        }
    }

    /// If the head holds a value, copies it down the chain and returns it.
    async fn repair(
        &self,
        layout: &Layout,
        chain: &[String],
        pos: Position,
    ) -> Result<Option<Value>, naxos_wire::rpc::Error> {
        if chain.len() == 1 {
            return self.read_replica(&chain[0], layout, pos).await.map(|o| o.map(Value::from_entry));
        }
        match self.read_replica(&chain[0], layout, pos).await? {
            Some(entry) => {
                self.complete_chain(layout, chain, 1, pos, &entry).await.map_err(|e| {
                    naxos_wire::rpc::Error::Server {
                        addr: String::new(),
                        error: naxos_wire::ServerError::new(ErrorCode::Unavailable, e.to_string()),
                    }
                })?;
                Ok(Some(Value::from_entry(entry)))
            }
            None => Ok(None),
        }
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
        let chain = layout
            .placement(position)
            .ok_or_else(|| Error::Invalid(format!("no segment holds position {position}")))?
            .chain
            .to_vec();
        // Already written (anywhere in the chain): complete the chain, report it.
        if let Some(existing) = self.read_replica(&chain[0], &layout, position).await.map_err(rpc_to_error)? {
            self.complete_chain(&layout, &chain, 1, position, &existing).await?;
            return Err(Error::AlreadyWritten { position, hole: existing.kind == EntryKind::Hole as i32 });
        }
        let winner = self.fill_chain(&layout, &chain, position).await?;
        if winner.kind == EntryKind::Data as i32 {
            return Err(Error::AlreadyWritten { position, hole: false });
        }
        Ok(())
    }

    /// Every position in `[from, to)` with its value, in order. Bulk reads go
    /// to each chain's tail; positions a tail lacks are read one by one (with
    /// repair and hole filling). `to` is clipped to the tail.
    pub async fn read_range(&self, from: Position, to: Position) -> Result<Vec<(Position, Value)>, Error> {
        let tail = self.tail().await?;
        let to = to.min(tail);
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            let layout = self.layout();
            let chunk_end = Position(to.0.min(next.0 + 4096));
            let mut got: BTreeMap<u64, Value> = BTreeMap::new();
            for addr in tails_of(&layout, next, chunk_end) {
                let mut at = next.0;
                while at < chunk_end.0 {
                    let body =
                        request::Body::ReadRange(ReadRange { from: at, to: chunk_end.0, max_bytes: RANGE_BYTES });
                    match self.call(&addr, &layout, body).await {
                        Ok(response::Body::ReadRange(r)) => {
                            for pe in r.entries {
                                if let Some(e) = pe.entry {
                                    got.insert(pe.position, Value::from_entry(e));
                                }
                            }
                            if r.next <= at {
                                break;
                            }
                            at = r.next;
                        }
                        Ok(_) => break,
                        Err(e) => match rpc_to_error(e) {
                            // Below the trim mark nothing is there to read.
                            Error::Trimmed(p) => return Err(Error::Trimmed(p)),
                            // Any other failure: the positions are read one by
                            // one below, each with the single read's retries.
                            _ => break,
                        },
                    }
                }
            }
            // Positions the tails lack are read one by one, but all at once:
            // a run of holes (a dead writer's batch, a restarted sequencer's
            // unused block) costs one hole-fill wait, not one per position.
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

/// The tail replica of every chain that holds positions in `[from, to)`.
fn tails_of(layout: &Layout, from: Position, to: Position) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for seg in &layout.segments {
        if seg.start >= to.0 || seg.end.is_some_and(|e| e <= from.0) {
            continue;
        }
        for stripe in &seg.stripes {
            if let Some(t) = stripe.chain.last() {
                if !out.contains(t) {
                    out.push(t.clone());
                }
            }
        }
    }
    out
}
