//! Chain replication over stripes, driven by the client: the first loglet.
//! A position belongs to stripe `(p - start) % stripes`; a value is written to
//! the stripe's head, then to each next replica, and is committed once the
//! tail has it. Because every replica is write-once and is written in chain
//! order, the prefix property holds: a value at replica i is at every replica
//! before i, and is the same value. Reads go to the tail; if the tail has
//! nothing, the head is asked and a value there is copied down the chain
//! (read repair); if no replica has anything and the position is below the
//! log's tail, the reader waits a little for a slow writer, watching the
//! head, then fills a hole. Write-once makes either the value or the hole
//! win, for good.

use super::{CatchUp, Extras, FirstWrite, Loglet, SegmentTail, StreamPositions, Throttle, WriteOutcome};
use crate::retry::Retry;
use crate::{rpc_to_error, Client, Error, Value};
use async_trait::async_trait;
use bytes::Bytes;
use naxos_wire::proto::{
    request, response, Entry, EntryKind, Read, ReadRange, Seal, SegmentKind, StreamQuery, Trim, UnitTail, Write,
};
use naxos_wire::{rpc, Epoch, ErrorCode, Layout, Position, ServerError, StreamId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use naxos_wire::layout::stripe_of;

mod catch_up;

/// How often a reader looks at the head while it waits for a slow writer.
const HOLE_POLL: Duration = Duration::from_millis(5);
/// Payload bytes asked for in one bulk read.
const RANGE_BYTES: u64 = 4 << 20;
/// Results asked for per stream query.
const QUERY_LIMIT: u32 = 8192;

/// The outcome of writing at a chain's head.
enum HeadWrite {
    /// Our entry is at the head.
    Ours,
    /// Another value won the position (a filler's hole, or another writer).
    Lost,
}

fn overwritten(e: &rpc::Error) -> Option<EntryKind> {
    e.server().filter(|s| s.code == ErrorCode::Overwritten).map(|s| s.kind)
}

fn unwritten(e: &rpc::Error) -> bool {
    e.server().is_some_and(|s| s.code == ErrorCode::Unwritten)
}

fn corrupted(e: &rpc::Error) -> bool {
    e.server().is_some_and(|s| s.code == ErrorCode::Corrupted)
}

/// An answer that never came (its outcome is unknown: `settle_head` retries).
pub(crate) fn lost_answer(addr: &str) -> rpc::Error {
    rpc::Error::ConnectionLost { addr: addr.to_string() }
}

/// A client error as a transport-level one (the single read's retry loop takes those).
fn as_rpc(e: Error) -> rpc::Error {
    rpc::Error::Server {
        addr: String::new(),
        error: match e {
            Error::Server(s) => s,
            other => ServerError::new(ErrorCode::Unavailable, other.to_string()),
        },
    }
}

/// One segment served by chain replication over its stripes.
#[derive(Clone)]
pub(crate) struct ChainLoglet {
    layout: Arc<Layout>,
    segment: usize,
}

impl ChainLoglet {
    /// The loglet of segment `segment` of `layout` (which must be a chain segment).
    pub(crate) fn new(layout: Arc<Layout>, segment: usize) -> ChainLoglet {
        ChainLoglet { layout, segment }
    }

    fn segment(&self) -> &naxos_wire::proto::Segment {
        &self.layout.segments[self.segment]
    }

    /// The chain of `pos`, head first.
    fn chain_of(&self, pos: Position) -> Result<&[String], Error> {
        let seg = self.segment();
        match stripe_of(seg, pos.0) {
            Some(index) if seg.end.is_none_or(|e| pos.0 < e) => Ok(&seg.stripes[index].chain),
            _ => Err(Error::Invalid(format!("no segment of the layout holds position {pos}"))),
        }
    }

    /// Every distinct replica of the segment, in order of first mention.
    fn replicas(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for stripe in &self.segment().stripes {
            for a in &stripe.chain {
                if !out.contains(a) {
                    out.push(a.clone());
                }
            }
        }
        out
    }

    /// One write RPC to one replica.
    async fn write_replica(
        &self,
        vlog: &Client,
        addr: &str,
        layout: &Layout,
        pos: Position,
        entry: &Entry,
    ) -> Result<(), rpc::Error> {
        let body = request::Body::Write(Write { position: pos.0, entry: Some(entry.clone()), repair: false });
        vlog.call(addr, layout, body).await.map(|_| ())
    }

    /// One read RPC to one replica; `None` if the replica holds nothing there.
    async fn read_replica(
        &self,
        vlog: &Client,
        addr: &str,
        layout: &Layout,
        pos: Position,
    ) -> Result<Option<Entry>, rpc::Error> {
        match vlog.call(addr, layout, request::Body::Read(Read { position: pos.0 })).await {
            Ok(response::Body::Read(r)) => Ok(r.entry),
            Ok(_) => Ok(None),
            Err(e) if unwritten(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes `entry` at the head of `chain`. A write whose outcome is unknown
    /// (lost answer, time-out, or a server that failed after taking it) is
    /// retried; if the retry finds the position taken, the head is read back
    /// and the entry counts as ours only if it is byte-for-byte the same. If
    /// that cannot be told, the append fails as "may or may not have happened"
    /// rather than take a second position (the simulator found this: seed 225).
    async fn write_head(
        &self,
        vlog: &Client,
        chain: &[String],
        pos: Position,
        entry: &Entry,
    ) -> Result<HeadWrite, Error> {
        let first = self.write_replica(vlog, &chain[0], &self.layout, pos, entry).await;
        self.settle_head(vlog, chain, pos, entry, first).await
    }

    /// Carries a head write on from the result of its first try (alone or in
    /// a batch): `write_head` after its first call.
    async fn settle_head(
        &self,
        vlog: &Client,
        chain: &[String],
        pos: Position,
        entry: &Entry,
        first: Result<(), rpc::Error>,
    ) -> Result<HeadWrite, Error> {
        let layout = &self.layout;
        let head = &chain[0];
        let mut retry = Retry::new(vlog.config());
        let mut uncertain = false;
        let mut result = first;
        loop {
            let e = match result {
                Ok(()) => return Ok(HeadWrite::Ours),
                Err(e) => e,
            };
            if overwritten(&e).is_some() {
                if !uncertain {
                    return Ok(HeadWrite::Lost);
                }
                return self.settle_uncertain(vlog, head, pos, entry).await;
            }
            match e.server().map(|s| s.code) {
                Some(ErrorCode::WrongEpoch) if uncertain => {
                    return Err(Error::Unavailable(format!(
                        "append at {pos} may or may not have happened: the layout changed while its outcome was unknown"
                    )));
                }
                // Refused before anything was written: the caller takes a new token.
                Some(ErrorCode::WrongEpoch) => {
                    vlog.refresh_layout().await?;
                    return Ok(HeadWrite::Lost);
                }
                // Refused before it was applied.
                Some(ErrorCode::Overloaded) => {}
                // Not refused outright: the write may have reached the store
                // (a failed sync answers Unavailable after buffering it).
                Some(ErrorCode::Unavailable) | None => uncertain = true,
                Some(_) => {}
            }
            if let Err(err) = retry.on_error(vlog, e, "write at head").await {
                if uncertain {
                    return Err(Error::Unavailable(format!("append at {pos} may or may not have happened: {err}")));
                }
                return Err(err);
            }
            result = self.write_replica(vlog, head, layout, pos, entry).await;
        }
    }

    /// After a write of unknown outcome found the head's position taken: ours
    /// if the head holds exactly our entry, lost if it holds something else,
    /// an unknown outcome if the head cannot be read.
    async fn settle_uncertain(
        &self,
        vlog: &Client,
        head: &str,
        pos: Position,
        entry: &Entry,
    ) -> Result<HeadWrite, Error> {
        let mut retry = Retry::new(vlog.config());
        loop {
            match self.read_replica(vlog, head, &self.layout, pos).await {
                Ok(Some(held)) if held == *entry => return Ok(HeadWrite::Ours),
                Ok(Some(_)) => return Ok(HeadWrite::Lost),
                // Taken a moment ago, empty now: the head lost unsynced state
                // in a crash. Nobody can have seen it; let the caller retake.
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "append at {pos} may or may not have happened: the head lost the position's state"
                    )))
                }
                Err(e) => retry.on_error(vlog, e, "reading back an uncertain write").await.map_err(|err| {
                    Error::Unavailable(format!("append at {pos} may or may not have happened: {err}"))
                })?,
            }
        }
    }

    /// After a replica past the head answered `Overwritten`: fine if it holds
    /// exactly `entry` (an earlier try or a repair put it there), a broken
    /// chain otherwise (something was written to it out of chain order),
    /// which is reported and never acknowledged.
    async fn check_holds(
        &self,
        vlog: &Client,
        addr: &str,
        layout: &Layout,
        pos: Position,
        entry: &Entry,
    ) -> Result<(), Error> {
        let mut retry = Retry::new(vlog.config());
        loop {
            match self.read_replica(vlog, addr, layout, pos).await {
                Ok(Some(held)) if held == *entry => return Ok(()),
                Ok(held) => {
                    tracing::error!(%pos, replica = addr, "broken chain: the replica holds another value than its head");
                    return Err(Error::Unavailable(format!(
                        "broken chain at {pos}: replica {addr} holds {} where its head holds another value; the write is not acknowledged",
                        if held.is_some() { "a different entry" } else { "nothing after refusing the write" }
                    )));
                }
                Err(e) => retry.on_error(vlog, e, "reading back a replica that refused a chain write").await?,
            }
        }
    }

    /// Writes `entry` to `chain[from..]` in order; a replica that already
    /// holds the position must hold the same value (prefix property): that
    /// is checked, and anything else is a broken chain.
    async fn complete_chain(
        &self,
        vlog: &Client,
        chain: &[String],
        from: usize,
        pos: Position,
        entry: &Entry,
    ) -> Result<(), Error> {
        match self.carry_down(vlog, chain, from, pos, entry).await? {
            None => Ok(()),
            Some(_) => Err(Error::Unavailable(format!("the chain of {pos} changed under its write"))),
        }
    }

    /// Completes an append whose entry is at the head: down the chain, and if
    /// a reconfiguration changed the chain of `pos` meanwhile, through the
    /// chain that holds `pos` now (the sealed segment's, or the new one's if
    /// `pos` is past the seal). Write-once settles it there: ours, or lost
    /// (and the append takes a new token), not "may or may not".
    async fn complete_append(
        &self,
        vlog: &Client,
        chain: &[String],
        from: usize,
        pos: Position,
        entry: &Entry,
    ) -> Result<WriteOutcome, Error> {
        let Some(fresh) = self.carry_down(vlog, chain, from, pos, entry).await? else {
            return Ok(WriteOutcome::Written);
        };
        let index = super::segment_of(&fresh, pos)
            .ok_or_else(|| Error::Invalid(format!("no segment of the layout holds position {pos}")))?;
        super::of_segment(&fresh, index)?; // a chain segment, or an error
        let moved = ChainLoglet::new(fresh, index);
        let chain = moved.chain_of(pos)?.to_vec();
        // Our entry is on the old chain. In the new one it counts only if the
        // new head holds it already (then every replica of the new chain gets
        // it); otherwise a hole takes the position there, so that no late copy
        // of our write can land after we give up, and the append is lost.
        match moved.fill_chain(vlog, &chain, pos).await {
            Ok(winner) if winner == *entry => Ok(WriteOutcome::Written),
            Ok(_) => Ok(WriteOutcome::Lost),
            Err(e) => Err(Error::Unavailable(format!("append at {pos} may or may not have happened: {e}"))),
        }
    }

    /// `complete_chain`'s work; the newer layout if the chain of `pos` changed.
    async fn carry_down(
        &self,
        vlog: &Client,
        chain: &[String],
        from: usize,
        pos: Position,
        entry: &Entry,
    ) -> Result<Option<Arc<Layout>>, Error> {
        let mut layout = self.layout.clone();
        for addr in chain.iter().skip(from) {
            let mut retry = Retry::new(vlog.config());
            loop {
                match self.write_replica(vlog, addr, &layout, pos, entry).await {
                    Ok(()) => break,
                    Err(e) if overwritten(&e).is_some() => {
                        self.check_holds(vlog, addr, &layout, pos, entry).await?;
                        break;
                    }
                    Err(e) => {
                        retry.on_error(vlog, e, "chain write").await.map_err(|err| {
                            Error::Unavailable(format!("write at {pos} reached part of its chain: {err}"))
                        })?;
                        // A newer epoch with the same chain carries the write on.
                        let fresh = vlog.layout();
                        if fresh.epoch > layout.epoch {
                            if fresh.placement(pos).map(|p| p.chain) != Some(chain) {
                                return Ok(Some(fresh));
                            }
                            layout = fresh;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    /// Fills `pos` with a hole through the chain, unless a value gets there
    /// first; returns whatever won, now at every replica.
    async fn fill_chain(&self, vlog: &Client, chain: &[String], pos: Position) -> Result<Entry, Error> {
        let hole = Entry { kind: EntryKind::Hole as i32, ..Default::default() };
        let winner = match self.write_head(vlog, chain, pos, &hole).await? {
            HeadWrite::Ours => hole,
            HeadWrite::Lost => {
                match self.read_replica(vlog, &chain[0], &self.layout, pos).await.map_err(rpc_to_error)? {
                    Some(e) => e,
                    None => return Err(Error::Unavailable(format!("head of the chain lost position {pos}"))),
                }
            }
        };
        self.complete_chain(vlog, chain, 1, pos, &winner).await?;
        Ok(winner)
    }

    /// One batch of writes to one replica; each write's own result (a batch
    /// that got no answer gives every write that error: outcome unknown).
    async fn write_batch_to<'a>(
        &self,
        vlog: &Client,
        addr: &str,
        writes: impl Iterator<Item = (Position, &'a Entry)>,
    ) -> Vec<Result<(), rpc::Error>> {
        let mut bodies: Vec<request::Body> = writes
            .map(|(pos, entry)| {
                request::Body::Write(Write { position: pos.0, entry: Some(entry.clone()), repair: false })
            })
            .collect();
        let count = bodies.len();
        if count == 1 {
            // One write goes as itself, not as a batch of one.
            let Some(body) = bodies.pop() else { unreachable!("one body") };
            return vec![vlog.call(addr, &self.layout, body).await.map(|_| ())];
        }
        let batch = vlog.inner.pool.call_batch(addr, &self.layout.cluster_id, self.layout.epoch, bodies);
        match vlog.watched(addr, self.layout.epoch, batch).await {
            Ok(answers) => answers.into_iter().map(|a| a.map(|_| ())).collect(),
            Err(e) => vec![Err(e); count],
        }
    }

    /// Writes a group of entries of one chain, one batch per replica.
    async fn write_group(
        &self,
        vlog: &Client,
        chain: &[String],
        group: &[(Position, &Entry)],
        mut heads: Vec<Option<FirstWrite>>,
    ) -> Vec<Result<WriteOutcome, Error>> {
        let mut out: Vec<Option<Result<WriteOutcome, Error>>> = (0..group.len()).map(|_| None).collect();
        heads.resize_with(group.len(), || None);
        // The head writes not already done by the sequencer's node, in one batch.
        let missing: Vec<usize> = (0..group.len()).filter(|&k| heads[k].is_none()).collect();
        if !missing.is_empty() {
            let written = self.write_batch_to(vlog, &chain[0], missing.iter().map(|&k| group[k])).await;
            for (k, r) in missing.into_iter().zip(written) {
                heads[k] = Some(r);
            }
        }
        let firsts = heads.into_iter().map(|h| h.unwrap_or_else(|| Err(lost_answer(&chain[0]))));
        let heads = futures::future::join_all(
            group.iter().zip(firsts).map(|((pos, entry), first)| self.settle_head(vlog, chain, *pos, entry, first)),
        )
        .await;
        let mut going = Vec::with_capacity(group.len());
        for (k, head) in heads.into_iter().enumerate() {
            match head {
                Ok(HeadWrite::Ours) => going.push(k),
                Ok(HeadWrite::Lost) => out[k] = Some(Ok(WriteOutcome::Lost)),
                Err(e) => out[k] = Some(Err(e)),
            }
        }
        for (replica, addr) in chain.iter().enumerate().skip(1) {
            if going.is_empty() {
                break;
            }
            let answers = self.write_batch_to(vlog, addr, going.iter().map(|&k| group[k])).await;
            let mut next = Vec::with_capacity(going.len());
            let mut stragglers = Vec::new();
            for (k, answer) in going.into_iter().zip(answers) {
                match answer {
                    Ok(()) => next.push(k),
                    // Taken already (an earlier try, a repair) or broken:
                    // the one-entry path reads it back and tells which.
                    Err(_) => stragglers.push(k),
                }
            }
            let finished = futures::future::join_all(
                stragglers.iter().map(|&k| self.complete_append(vlog, chain, replica, group[k].0, group[k].1)),
            )
            .await;
            for (k, r) in stragglers.into_iter().zip(finished) {
                out[k] = Some(r);
            }
            going = next;
        }
        for k in going {
            out[k] = Some(Ok(WriteOutcome::Written));
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Invalid("chain write without outcome".into()))))
            .collect()
    }

    /// If the head holds a value, copies it down the chain and returns it.
    async fn repair(&self, vlog: &Client, chain: &[String], pos: Position) -> Result<Option<Value>, rpc::Error> {
        let layout = &self.layout;
        if chain.len() == 1 {
            return self.read_replica(vlog, &chain[0], layout, pos).await.map(|o| o.map(Value::from_entry));
        }
        match self.read_replica(vlog, &chain[0], layout, pos).await? {
            Some(entry) => {
                self.complete_chain(vlog, chain, 1, pos, &entry).await.map_err(|e| rpc::Error::Server {
                    addr: String::new(),
                    error: ServerError::new(ErrorCode::Unavailable, e.to_string()),
                })?;
                Ok(Some(Value::from_entry(entry)))
            }
            None => Ok(None),
        }
    }

    /// The deliberately broken read of `Mutation::ReadAnyReplica`: trusts one
    /// replica picked by position, and fills a hole there alone. Only for
    /// proving that the simulator catches it.
    async fn read_any_replica_broken(
        &self,
        vlog: &Client,
        chain: &[String],
        pos: Position,
    ) -> Result<Value, rpc::Error> {
        let layout = &self.layout;
        let replica = &chain[(pos.0 as usize) % chain.len()];
        if let Some(entry) = self.read_replica(vlog, replica, layout, pos).await? {
            return Ok(Value::from_entry(entry));
        }
        let below_tail = matches!(vlog.tail().await, Ok(t) if pos < t);
        if !below_tail {
            return Err(rpc::Error::Server {
                addr: String::new(),
                error: ServerError::at(ErrorCode::Unwritten, pos, format!("position {pos} is unwritten")),
            });
        }
        tokio::time::sleep(vlog.config().hole_fill_wait).await;
        let hole = Entry { kind: EntryKind::Hole as i32, ..Default::default() };
        match self.write_replica(vlog, replica, layout, pos, &hole).await {
            Ok(()) => Ok(Value::Hole),
            Err(_) => match self.read_replica(vlog, replica, layout, pos).await? {
                Some(entry) => Ok(Value::from_entry(entry)),
                None => Ok(Value::Hole),
            },
        }
    }

    /// Asks every replica for its tail (and all its stream tails); fails if a
    /// stripe's head did not answer, since the head holds the most.
    async fn unit_tails(&self, vlog: &Client, what: &str) -> Result<SegmentTail, Error> {
        let mut out = SegmentTail {
            tail: Position(self.segment().start),
            sealed: self.segment().end.is_some(),
            streams: BTreeMap::new(),
        };
        let mut answered: BTreeMap<String, bool> = BTreeMap::new();
        for addr in self.replicas() {
            let body = request::Body::UnitTail(UnitTail { streams: vec![], all_streams: true });
            match vlog.call(&addr, &self.layout, body).await {
                Ok(response::Body::Tail(t)) => {
                    out.tail = out.tail.max(Position(t.tail));
                    for st in t.streams {
                        if let Some(s) = StreamId::from_slice(&st.stream) {
                            let e = out.streams.entry(s).or_insert(st.last);
                            *e = (*e).max(st.last);
                        }
                    }
                    answered.insert(addr, true);
                }
                Ok(_) => {
                    return Err(Error::Invalid(format!("log unit {addr} answered a tail query with something else")))
                }
                Err(e) => {
                    tracing::debug!("{what}: {addr}: {e}");
                    answered.insert(addr, false);
                }
            }
        }
        for stripe in &self.segment().stripes {
            if let Some(head) = stripe.chain.first() {
                if !answered.get(head).copied().unwrap_or(false) {
                    return Err(Error::Unavailable(format!("chain head {head} did not answer the tail query")));
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Loglet for ChainLoglet {
    fn kind(&self) -> SegmentKind {
        SegmentKind::Chain
    }

    async fn write(&self, vlog: &Client, pos: Position, entry: &Entry) -> Result<WriteOutcome, Error> {
        // One chain-writing path for every append: a write is a batch of one.
        let chain = self.chain_of(pos)?;
        let mut outcome = self.write_group(vlog, chain, &[(pos, entry)], vec![None]).await;
        outcome.pop().unwrap_or_else(|| Err(Error::Invalid("chain write without outcome".into())))
    }

    async fn write_batch(
        &self,
        vlog: &Client,
        writes: &[(Position, Entry)],
        mut first: Vec<Option<FirstWrite>>,
    ) -> Vec<Result<WriteOutcome, Error>> {
        first.resize_with(writes.len(), || None);
        let mut out: Vec<Option<Result<WriteOutcome, Error>>> = (0..writes.len()).map(|_| None).collect();
        // Entries grouped by the chain that stores them.
        let mut groups: BTreeMap<&[String], Vec<usize>> = BTreeMap::new();
        for (i, (pos, _)) in writes.iter().enumerate() {
            match self.chain_of(*pos) {
                Ok(chain) => groups.entry(chain).or_default().push(i),
                Err(e) => out[i] = Some(Err(e)),
            }
        }
        let written = futures::future::join_all(groups.iter().map(|(chain, members)| {
            let group: Vec<(Position, &Entry)> = members.iter().map(|&i| (writes[i].0, &writes[i].1)).collect();
            let heads = members.iter().map(|&i| first[i].take()).collect();
            async move { self.write_group(vlog, chain, &group, heads).await }
        }))
        .await;
        for (members, outcomes) in groups.values().zip(written) {
            for (&i, outcome) in members.iter().zip(outcomes) {
                out[i] = Some(outcome);
            }
        }
        out.into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Invalid("chain write without outcome".into()))))
            .collect()
    }

    async fn read(&self, vlog: &Client, pos: Position) -> Result<Value, rpc::Error> {
        let chain = self.chain_of(pos).map_err(|_| rpc::Error::Server {
            addr: String::new(),
            error: ServerError::new(ErrorCode::BadRequest, format!("no segment holds position {pos}")),
        })?;
        if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::ReadAnyReplica) {
            return self.read_any_replica_broken(vlog, chain, pos).await;
        }
        let tail_replica = &chain[chain.len() - 1];
        match self.read_replica(vlog, tail_replica, &self.layout, pos).await {
            Ok(Some(entry)) => return Ok(Value::from_entry(entry)),
            Ok(None) => {}
            // The tail's copy is damaged on its disk. The tail held a value,
            // so it was written down the whole chain, and every replica
            // before the tail holds that same value (write-once, chain
            // order): theirs is served instead of an error.
            Err(e) if corrupted(&e) => {
                for addr in chain.iter().rev().skip(1) {
                    if let Ok(Some(entry)) = self.read_replica(vlog, addr, &self.layout, pos).await {
                        tracing::warn!(%pos, replica = tail_replica.as_str(), from = addr.as_str(), "read around a corrupted record");
                        return Ok(Value::from_entry(entry));
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        }
        if let Some(v) = self.repair(vlog, chain, pos).await? {
            return Ok(v);
        }
        // Nothing anywhere. Above the tail it is simply unwritten.
        let tail = vlog.tail().await.map_err(as_rpc)?;
        if pos >= tail {
            return Err(rpc::Error::Server {
                addr: String::new(),
                error: ServerError::at(ErrorCode::Unwritten, pos, format!("position {pos} is unwritten")),
            });
        }
        // Below the tail: a writer holds the token. Give it a moment.
        let deadline = tokio::time::Instant::now() + vlog.config().hole_fill_wait;
        while tokio::time::Instant::now() < deadline {
            tokio::time::sleep(HOLE_POLL).await;
            if let Some(v) = self.repair(vlog, chain, pos).await? {
                return Ok(v);
            }
        }
        let winner = self.fill_chain(vlog, chain, pos).await.map_err(as_rpc)?;
        Ok(Value::from_entry(winner))
    }

    async fn read_range(&self, vlog: &Client, from: Position, to: Position) -> Result<BTreeMap<u64, Value>, Error> {
        let from = from.max(Position(self.segment().start));
        let to = self.segment().end.map_or(to, |e| to.min(Position(e)));
        let mut got: BTreeMap<u64, Value> = BTreeMap::new();
        // Each tail with the stripes it is the tail of: only those positions
        // of its answer count (a unit may hold other stripes' positions, as
        // another chain's head or from before it left that chain).
        let seg = self.segment();
        let mut tails: Vec<(&String, Vec<u64>)> = Vec::new();
        for (index, stripe) in seg.stripes.iter().enumerate() {
            if let Some(t) = stripe.chain.last() {
                match tails.iter_mut().find(|(a, _)| *a == t) {
                    Some((_, stripes)) => stripes.push(index as u64),
                    None => tails.push((t, vec![index as u64])),
                }
            }
        }
        for (addr, stripes) in tails {
            let mut at = from.0;
            while at < to.0 {
                let body = request::Body::ReadRange(ReadRange { from: at, to: to.0, max_bytes: RANGE_BYTES });
                match vlog.call(addr, &self.layout, body).await {
                    Ok(response::Body::ReadRange(r)) => {
                        for pe in r.entries {
                            let ours = stripe_of(seg, pe.position).is_some_and(|s| stripes.contains(&(s as u64)));
                            if let Some(e) = pe.entry.filter(|_| ours) {
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
                        // Any other failure: the caller reads the positions
                        // one by one, each with the single read's retries.
                        _ => break,
                    },
                }
            }
        }
        Ok(got)
    }

    async fn fill(&self, vlog: &Client, pos: Position) -> Result<(), Error> {
        let chain = self.chain_of(pos)?;
        // Already written (anywhere in the chain): complete the chain, report it.
        if let Some(existing) = self.read_replica(vlog, &chain[0], &self.layout, pos).await.map_err(rpc_to_error)? {
            self.complete_chain(vlog, chain, 1, pos, &existing).await?;
            return Err(Error::AlreadyWritten { position: pos, hole: existing.kind == EntryKind::Hole as i32 });
        }
        let winner = self.fill_chain(vlog, chain, pos).await?;
        if winner.kind == EntryKind::Data as i32 {
            return Err(Error::AlreadyWritten { position: pos, hole: false });
        }
        Ok(())
    }

    async fn check_tail(&self, vlog: &Client) -> Result<SegmentTail, Error> {
        self.unit_tails(vlog, "tail check").await
    }

    async fn seal(&self, vlog: &Client, epoch: Epoch) -> Result<SegmentTail, Error> {
        let mut out = SegmentTail { tail: Position(self.segment().start), sealed: true, streams: BTreeMap::new() };
        let mut sealed: Vec<String> = Vec::new();
        let mut last_error = String::new();
        for addr in self.replicas() {
            let body = request::Body::Seal(Seal { epoch: epoch.0 });
            match vlog.call(&addr, &self.layout, body).await {
                Ok(response::Body::Seal(s)) => {
                    out.tail = out.tail.max(Position(s.tail));
                    sealed.push(addr);
                }
                Ok(_) => return Err(Error::Invalid(format!("{addr} answered a seal with something else"))),
                Err(rpc::Error::Server { error, .. }) if error.code != ErrorCode::Unavailable => {
                    return Err(Error::Server(error))
                }
                Err(e) => last_error = format!("{addr}: {e}"),
            }
        }
        for stripe in &self.segment().stripes {
            if !stripe.chain.iter().any(|a| sealed.contains(a)) {
                return Err(Error::Unavailable(format!(
                    "no replica of the chain {} could be sealed; last error: {last_error}",
                    stripe.chain.join(",")
                )));
            }
        }
        Ok(out)
    }

    async fn trim(&self, vlog: &Client, pos: Position) -> Result<(), Error> {
        for addr in self.replicas() {
            let mut retry = Retry::new(vlog.config());
            loop {
                let body = request::Body::Trim(Trim { position: pos.0 });
                match vlog.call(&addr, &vlog.layout(), body).await {
                    Ok(_) => break,
                    Err(e) => retry.on_error(vlog, e, "trim").await?,
                }
            }
        }
        Ok(())
    }

    async fn catch_up(
        &self,
        vlog: &Client,
        replica: &str,
        stripe: Option<usize>,
        from: Position,
        to: Position,
        extras: Extras,
        throttle: &mut Throttle,
    ) -> Result<CatchUp, Error> {
        self.catch_up_replica(vlog, replica, stripe, from, to, extras, throttle).await
    }

    async fn stream_query(
        &self,
        vlog: &Client,
        stream: StreamId,
        from: Position,
        to: Position,
    ) -> Result<StreamPositions, Error> {
        let seg = self.segment();
        let id = Bytes::copy_from_slice(&stream.to_bytes());
        let mut out = StreamPositions::default();
        let lo = from.0.max(seg.start);
        let hi = seg.end.map_or(to.0, |e| e.min(to.0));
        for (index, stripe) in seg.stripes.iter().enumerate() {
            let head = &stripe.chain[0];
            let mut at = lo;
            let mut unit_tail = hi;
            let mut retry = Retry::new(vlog.config());
            while at < hi {
                let body = request::Body::StreamQuery(StreamQuery {
                    stream: id.clone(),
                    from: at,
                    to: hi,
                    segment_start: seg.start,
                    stripe_count: seg.stripes.len() as u32,
                    stripe_index: index as u32,
                    limit: QUERY_LIMIT,
                });
                match vlog.call(head, &vlog.layout(), body).await {
                    Ok(response::Body::StreamQuery(q)) => {
                        // A unit in several chains of the segment indexes the
                        // stream's positions of every one: keep this stripe's.
                        let ours = |p: &u64| stripe_of(seg, *p) == Some(index);
                        out.listed.extend(q.positions.into_iter().filter(ours));
                        out.unwritten.extend(q.unwritten);
                        unit_tail = q.tail;
                        if q.next <= at {
                            return Err(Error::Invalid(format!("log unit {head} made no progress on a stream query")));
                        }
                        at = q.next;
                    }
                    Ok(_) => return Err(Error::Invalid("log unit answered a stream query with something else".into())),
                    Err(e) => retry.on_error(vlog, e, "stream query").await?,
                }
            }
            // The stripe's positions the head has not reached yet.
            let count = seg.stripes.len() as u64;
            let first = unit_tail.max(lo);
            let offset = (index as u64 + count - (first - seg.start) % count) % count;
            out.unreached.extend((first + offset..hi).step_by(count as usize));
        }
        Ok(out)
    }
}
