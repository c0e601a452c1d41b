//! Chain replication, driven by the client: a value is written to the head,
//! then to each next replica, and is committed once the tail has it. Because
//! every replica is write-once and is written in chain order, the prefix
//! property holds: a value at replica i is at every replica before i, and is
//! the same value. Read repair and hole filling keep that order too.

use crate::retry::Retry;
use crate::{rpc_to_error, Client, Error};
use naxos_wire::proto::{request, response, Entry, EntryKind, Read, Write};
use naxos_wire::{rpc, ErrorCode, Layout, Position};

/// The outcome of writing at a chain's head.
pub(crate) enum HeadWrite {
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

impl Client {
    /// One write RPC to one replica.
    pub(crate) async fn write_replica(
        &self,
        addr: &str,
        layout: &Layout,
        pos: Position,
        entry: &Entry,
    ) -> Result<(), rpc::Error> {
        let body = request::Body::Write(Write { position: pos.0, entry: Some(entry.clone()) });
        self.call(addr, layout, body).await.map(|_| ())
    }

    /// One read RPC to one replica; `None` if the replica holds nothing there.
    pub(crate) async fn read_replica(
        &self,
        addr: &str,
        layout: &Layout,
        pos: Position,
    ) -> Result<Option<Entry>, rpc::Error> {
        match self.call(addr, layout, request::Body::Read(Read { position: pos.0 })).await {
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
    pub(crate) async fn write_head(
        &self,
        layout: &Layout,
        chain: &[String],
        pos: Position,
        entry: &Entry,
    ) -> Result<HeadWrite, Error> {
        let first = self.write_replica(&chain[0], layout, pos, entry).await;
        self.settle_head(layout, chain, pos, entry, first).await
    }

    /// Carries a head write on from the result of its first try (alone or in
    /// a batch): `write_head` after its first call.
    pub(crate) async fn settle_head(
        &self,
        layout: &Layout,
        chain: &[String],
        pos: Position,
        entry: &Entry,
        first: Result<(), rpc::Error>,
    ) -> Result<HeadWrite, Error> {
        let head = &chain[0];
        let mut retry = Retry::new(self.config());
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
                return self.settle_uncertain(layout, head, pos, entry).await;
            }
            match e.server().map(|s| s.code) {
                Some(ErrorCode::WrongEpoch) if uncertain => {
                    return Err(Error::Unavailable(format!(
                        "append at {pos} may or may not have happened: the layout changed while its outcome was unknown"
                    )));
                }
                // Refused before anything was written: the caller takes a new token.
                Some(ErrorCode::WrongEpoch) => {
                    self.refresh_layout().await?;
                    return Ok(HeadWrite::Lost);
                }
                // Refused before it was applied.
                Some(ErrorCode::Overloaded) => {}
                // Not refused outright: the write may have reached the store
                // (a failed sync answers Unavailable after buffering it).
                Some(ErrorCode::Unavailable) | None => uncertain = true,
                Some(_) => {}
            }
            if let Err(err) = retry.on_error(self, e, "write at head").await {
                if uncertain {
                    return Err(Error::Unavailable(format!("append at {pos} may or may not have happened: {err}")));
                }
                return Err(err);
            }
            result = self.write_replica(head, layout, pos, entry).await;
        }
    }

    /// After a write of unknown outcome found the head's position taken: ours
    /// if the head holds exactly our entry, lost if it holds something else,
    /// an unknown outcome if the head cannot be read.
    async fn settle_uncertain(
        &self,
        layout: &Layout,
        head: &str,
        pos: Position,
        entry: &Entry,
    ) -> Result<HeadWrite, Error> {
        let mut retry = Retry::new(self.config());
        loop {
            match self.read_replica(head, layout, pos).await {
                Ok(Some(held)) if held == *entry => return Ok(HeadWrite::Ours),
                Ok(Some(_)) => return Ok(HeadWrite::Lost),
                // Taken a moment ago, empty now: the head lost unsynced state
                // in a crash. Nobody can have seen it; let the caller retake.
                Ok(None) => {
                    return Err(Error::Unavailable(format!(
                        "append at {pos} may or may not have happened: the head lost the position's state"
                    )))
                }
                Err(e) => retry.on_error(self, e, "reading back an uncertain write").await.map_err(|err| {
                    Error::Unavailable(format!("append at {pos} may or may not have happened: {err}"))
                })?,
            }
        }
    }

    /// Writes `entry` to `chain[from..]` in order; a replica that already
    /// holds the position holds the same value (prefix property), so
    /// `Overwritten` there is success.
    pub(crate) async fn complete_chain(
        &self,
        layout: &Layout,
        chain: &[String],
        from: usize,
        pos: Position,
        entry: &Entry,
    ) -> Result<(), Error> {
        let mut layout = std::sync::Arc::new(layout.clone());
        for addr in chain.iter().skip(from) {
            let mut retry = Retry::new(self.config());
            loop {
                match self.write_replica(addr, &layout, pos, entry).await {
                    Ok(()) => break,
                    Err(e) if overwritten(&e).is_some() => break,
                    Err(e) => {
                        retry.on_error(self, e, "chain write").await.map_err(|err| {
                            Error::Unavailable(format!("write at {pos} reached part of its chain: {err}"))
                        })?;
                        // A newer epoch with the same chain carries the write on.
                        let fresh = self.layout();
                        if fresh.epoch > layout.epoch {
                            if fresh.placement(pos).map(|p| p.chain) != Some(chain) {
                                return Err(Error::Unavailable(format!("the chain of {pos} changed under its write")));
                            }
                            layout = fresh;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Fills `pos` with a hole through the chain, unless a value gets there
    /// first; returns whatever won, now at every replica.
    pub(crate) async fn fill_chain(&self, layout: &Layout, chain: &[String], pos: Position) -> Result<Entry, Error> {
        let hole = Entry { kind: EntryKind::Hole as i32, ..Default::default() };
        let winner = match self.write_head(layout, chain, pos, &hole).await? {
            HeadWrite::Ours => hole,
            HeadWrite::Lost => match self.read_replica(&chain[0], layout, pos).await.map_err(rpc_to_error)? {
                Some(e) => e,
                None => return Err(Error::Unavailable(format!("head of the chain lost position {pos}"))),
            },
        };
        self.complete_chain(layout, chain, 1, pos, &winner).await?;
        Ok(winner)
    }
}
