//! Appends: a token from the sequencer, then the entry through the loglet of
//! its position's segment. Losing the position (a reader filled it first) is
//! normal: the append takes a new token and tries again, within the retry budget.

use crate::batch::Item;
use crate::loglet::{self, WriteOutcome};
use crate::retry::Retry;
use crate::{Client, Conflict, Error};
use bytes::Bytes;
use naxos_wire::proto::{request, response, Entry, EntryKind, Token, TokenConflict, TokenOk};
use naxos_wire::{Layout, Position, StreamId};
use std::sync::Arc;

/// Positions one append may lose (a reader filled them first, or a buggy
/// client wrote there) before each further loss spends a retry: as many as
/// the log units let a write land ahead of the tail unchecked.
const LOST_POSITIONS_FREE: u32 = 4096;

impl Client {
    /// Appends `payload`; returns its position once every replica has it durably.
    pub async fn append(&self, payload: Bytes) -> Result<Position, Error> {
        self.append_to(&[], payload).await
    }

    /// Appends `payload` to the log and to each of `streams`. Concurrent
    /// appends of one client share token and write requests (see `Config::batches_in_flight`).
    pub async fn append_to(&self, streams: &[StreamId], payload: Bytes) -> Result<Position, Error> {
        self.check_size(&payload)?;
        let streams = streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect();
        self.submit(Item { streams, payload: Some(payload), count: 1, conflict: None }).await
    }

    /// Appends many entries with one token request and one write request per
    /// replica. Returns the positions in the order of `payloads` (contiguous
    /// unless a position was lost and retaken), or the first error.
    pub async fn append_batch(&self, payloads: Vec<Bytes>) -> Result<Vec<Position>, Error> {
        if payloads.is_empty() {
            return Ok(Vec::new());
        }
        for p in &payloads {
            self.check_size(p)?;
        }
        let items: Vec<Item> = payloads
            .into_iter()
            .map(|p| Item { streams: Vec::new(), payload: Some(p), count: 1, conflict: None })
            .collect();
        self.append_many(&items).await.into_iter().collect()
    }

    /// Appends `payload` to `streams` if the sequencer's conflict check
    /// passes: `Error::Aborted` (nothing written, no position taken) if a key
    /// of `conflict.reads` was written at or after `conflict.snapshot`; its
    /// `writes` count as written at the returned position. For optimistic
    /// objects and transactions (naxos-tango).
    pub async fn append_checked(
        &self,
        streams: &[StreamId],
        payload: Bytes,
        conflict: &Conflict,
    ) -> Result<Position, Error> {
        self.check_size(&payload)?;
        let streams = streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect();
        let conflict = Some(TokenConflict {
            snapshot: conflict.snapshot.0,
            read_keys: conflict.reads.clone(),
            write_keys: conflict.writes.clone(),
        });
        self.submit(Item { streams, payload: Some(payload), count: 1, conflict }).await
    }

    /// Reserves `count` positions without writing them and returns the first.
    /// Nothing is written there by this call, so readers will fill them with
    /// holes: it is for benchmarking the sequencer and for tests of a writer
    /// that dies between its token and its write.
    pub async fn reserve(&self, count: u32) -> Result<Position, Error> {
        if count == 0 {
            return Err(Error::Invalid("reserve at least one position".into()));
        }
        self.submit(Item { streams: Vec::new(), payload: None, count, conflict: None }).await
    }

    /// Refuses a payload above the entry limit before any position is taken
    /// for it (an oversize entry would otherwise use up a position, and one
    /// above the frame limit would lose the connection).
    fn check_size(&self, payload: &Bytes) -> Result<(), Error> {
        let max = self.config().entry_bytes_max;
        if payload.len() > max {
            return Err(Error::TooLarge { bytes: payload.len(), max });
        }
        Ok(())
    }

    /// Refuses an append while a chain of the active segment is short of
    /// replicas. The layout is fetched again first, so that appends resume
    /// as soon as a replica is back (at one layout read per refused append).
    pub(crate) async fn check_replicas(&self) -> Result<Arc<Layout>, Error> {
        let layout = self.layout();
        if layout.short_chains().is_empty() {
            return Ok(layout);
        }
        let layout = self.refresh_layout().await.unwrap_or(layout);
        match layout.short_chains().first() {
            None => Ok(layout),
            Some((stripe, chain)) => Err(Error::NotEnoughReplicas {
                stripe: *stripe,
                segment_start: layout.segments.last().map_or(0, |s| s.start),
                have: chain.to_vec(),
                need: layout.min_replicas(),
                missing: layout
                    .away
                    .iter()
                    .filter(|a| a.stripes.contains(&(*stripe as u32)))
                    .map(|a| a.addr.clone())
                    .collect(),
            }),
        }
    }

    /// One item on its own: a token, then (for an append) the write through
    /// its chain; a position lost at the head means a new token, within the
    /// retry budget.
    pub(crate) async fn append_alone(&self, item: &Item) -> Result<Position, Error> {
        let mut retry = Retry::new(self.config());
        let mut lost = 0;
        loop {
            if item.payload.is_some() {
                self.check_replicas().await?;
            }
            let (layout, token) = self.token(item.count, &item.streams, item.conflict.as_ref()).await?;
            let pos = Position(token.start);
            let Some(payload) = &item.payload else { return Ok(pos) };
            let entry = Entry {
                kind: EntryKind::Data as i32,
                payload: payload.clone(),
                streams: item.streams.clone(),
                backpointers: token.backpointers,
            };
            if self.write_at(&layout, pos, &entry).await? {
                return Ok(pos);
            }
            // The tail moved past the position: take the next one at once.
            // Only a long run of losses (a buggy client writing ahead of
            // the tail) spends the retry budget.
            lost += 1;
            if lost > LOST_POSITIONS_FREE {
                retry.wait(&format!("position {pos} was taken before the append reached it")).await?;
            }
        }
    }

    /// Reserves `count` positions for `streams` under the current layout.
    async fn token(
        &self,
        count: u32,
        streams: &[Bytes],
        conflict: Option<&TokenConflict>,
    ) -> Result<(Arc<Layout>, TokenOk), Error> {
        let mut retry = Retry::new(self.config());
        loop {
            let layout = self.layout();
            let body = request::Body::Token(Token { count, streams: streams.to_vec(), conflict: conflict.cloned() });
            match self.call(Self::sequencer(&layout)?, &layout, body).await {
                Ok(response::Body::Token(t)) => return Ok((layout, t)),
                Ok(_) => return Err(Error::Invalid("sequencer answered a token request with something else".into())),
                Err(e) => retry.on_error(self, e, "token").await?,
            }
        }
    }

    /// Writes `entry` at `pos` through its segment's loglet; `false` if the position was lost.
    async fn write_at(&self, layout: &Arc<Layout>, pos: Position, entry: &Entry) -> Result<bool, Error> {
        let loglet = loglet::of_position(layout, pos)?;
        Ok(loglet.write(self, pos, entry).await? == WriteOutcome::Written)
    }
}
