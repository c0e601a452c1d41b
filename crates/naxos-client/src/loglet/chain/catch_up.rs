//! State transfer for chain segments (`Loglet::catch_up`): what a replica
//! lacks is read from its chain and written to it in large batches; what it
//! holds is checked against the chain first.

use super::{corrupted, overwritten, rpc_to_error, ChainLoglet, HeadWrite};
use crate::loglet::{CatchUp, Extras, Throttle};
use crate::{Client, Error};
use naxos_wire::proto::{request, response, Entry, ReadRange, Trim, Write};
use naxos_wire::{ErrorCode, Position};
use std::collections::BTreeMap;
use std::time::Duration;

/// Positions examined per step of a catch-up (the step's entries are held
/// in memory, at most CATCH_UP_READ_BYTES of them from each side).
const CATCH_UP_POSITIONS: u64 = 1 << 14;
/// Most entries in one catch-up write batch (within the servers' batch limit).
const CATCH_UP_BATCH_ENTRIES: usize = 1024;
/// Most payload bytes in one catch-up write batch.
const CATCH_UP_BATCH_BYTES: usize = 8 << 20;
/// Write batches of a catch-up in flight at once: the next batch is read
/// while the last one is written and synced.
const CATCH_UP_WRITES_IN_FLIGHT: usize = 2;
/// Payload bytes asked for per read of a catch-up.
const CATCH_UP_READ_BYTES: u64 = 8 << 20;
/// How many times one catch-up request is tried before the copy stops
/// (it resumes where it stopped when run again).
const CATCH_UP_TRIES: u32 = 5;

impl ChainLoglet {
    /// `Loglet::catch_up` for a chain segment.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn catch_up_replica(
        &self,
        vlog: &Client,
        replica: &str,
        stripe: Option<usize>,
        from: Position,
        to: Position,
        extras: Extras,
        throttle: &mut Throttle,
    ) -> Result<CatchUp, Error> {
        let seg = self.segment();
        let end = seg.end.map_or(to.0, |e| e.min(to.0));
        let mut done = CatchUp::default();
        let mut writing: std::collections::VecDeque<tokio::task::JoinHandle<Result<(), Error>>> =
            std::collections::VecDeque::new();
        for (index, st) in seg.stripes.iter().enumerate() {
            if stripe.is_some_and(|s| s != index) || st.chain.iter().any(|a| a == replica) {
                continue;
            }
            // The source is the chain's tail, and only the tail: the
            // replica joins at the end of the chain, so it may hold nothing
            // its predecessor lacks. A replica further up can hold a write
            // that never got past it (its writer died); copied to the new
            // tail, readers would take it for committed while the replicas
            // above it lack it, and a later chain without the one that had
            // it would fill a hole there (soak seed 15003067: a read saw
            // data, a later one a hole). If the tail cannot answer, the copy
            // fails and is tried again (the manager takes a dead tail out).
            let Some(source) = st.chain.last() else { continue };
            let filter =
                stripe_filter::Filter { start: seg.start, count: seg.stripes.len() as u32, index: index as u32 };
            let mut at = seg.start.max(from.0);
            let mut diverged = false;
            let mut open: Option<u64> = None;
            while at < end {
                let window_end = end.min(at + CATCH_UP_POSITIONS);
                // The chain's entries in a window of at most CATCH_UP_READ_BYTES.
                let body =
                    request::Body::ReadRange(ReadRange { from: at, to: window_end, max_bytes: CATCH_UP_READ_BYTES });
                let (theirs, next) = match self.copy_call(vlog, source, body).await {
                    Ok(response::Body::ReadRange(r)) => (r.entries, r.next.max(at + 1).min(window_end)),
                    // The source's record at `at` is damaged on its disk (a
                    // range read stops before such a record and reports it
                    // at the next call). The source held a value there, so
                    // every replica before it holds the same one: take it
                    // from one of them, then go on from the source.
                    Err(Error::Server(e)) if e.code == ErrorCode::Corrupted && e.position.0 == at => {
                        match self.read_around(vlog, &st.chain, at).await {
                            Some(entry) => {
                                tracing::warn!(position = at, source, "catch-up: read around a corrupted record");
                                let entries =
                                    vec![naxos_wire::proto::PositionedEntry { position: at, entry: Some(entry) }];
                                (entries, at + 1)
                            }
                            None => return Err(Error::Server(e)),
                        }
                    }
                    Ok(_) => return Err(Error::Invalid("a read range answered with something else".into())),
                    // Below the chain's trim mark: nothing there to copy, and
                    // nothing the replica may serve (it missed the trim).
                    Err(Error::Trimmed(_)) => {
                        let trimmed_from = at;
                        at = self.first_untrimmed(vlog, source, at, end).await?;
                        self.copy_call(vlog, replica, request::Body::Trim(Trim { position: at })).await?;
                        throttle.advanced(at.saturating_sub(trimmed_from));
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let theirs: BTreeMap<u64, Entry> = theirs
                    .into_iter()
                    .filter(|pe| filter.contains(pe.position))
                    .filter_map(|pe| pe.entry.map(|e| (pe.position, e)))
                    .collect();
                // What the replica holds in the same window.
                let (ours, floor) = self.read_window(vlog, replica, at, next).await?;
                tracing::debug!(
                    replica,
                    segment = seg.start,
                    stripe = index,
                    at,
                    next,
                    theirs = theirs.len(),
                    ours = ours.len(),
                    "catch-up window"
                );
                for (p, v) in ours.iter().filter(|(p, _)| filter.contains(**p)) {
                    let defer = extras == Extras::Defer
                        && !naxos_wire::mutation::active(naxos_wire::mutation::Mutation::SettleExtrasEarly);
                    let agrees = match theirs.get(p) {
                        Some(t) => t == v,
                        // Left for the pass after the seal (see `Extras`).
                        None if defer => {
                            open = Some(open.map_or(*p, |o| o.min(*p)));
                            continue;
                        }
                        // The chain has not decided the position (its writer
                        // died after reaching the replica): decide it through
                        // the chain with the replica's value, as a read repair
                        // of a head would, or find what it decided.
                        None => match self.settle_extra(vlog, &st.chain, Position(*p), v).await {
                            Ok(agrees) => agrees,
                            // The chain trimmed it meanwhile (or a replica
                            // the source missed the trim): so does the unit,
                            // up to it (trim marks are prefixes).
                            Err(Error::Trimmed(_)) => {
                                self.copy_call(vlog, replica, request::Body::Trim(Trim { position: p + 1 })).await?;
                                true
                            }
                            Err(e) => return Err(e),
                        },
                    };
                    tracing::debug!(
                        replica,
                        segment = seg.start,
                        stripe = index,
                        position = p,
                        agrees,
                        "catch-up check"
                    );
                    if !agrees {
                        done.diverged += 1;
                        if !diverged {
                            tracing::warn!(position = p, replica, "the replica holds another value than its chain");
                        }
                        diverged = true;
                    }
                }
                // Positions neither side holds are still open: a writer that
                // holds the token may write them through the old chain.
                let unheld = (at.max(floor)..next)
                    .find(|p| filter.contains(*p) && !theirs.contains_key(p) && !ours.contains_key(p));
                open = match (open, unheld) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                let mut batch: Vec<(u64, Entry)> = Vec::new();
                let mut batch_bytes = 0;
                for (p, e) in theirs.into_iter().filter(|(p, _)| *p >= floor && !ours.contains_key(p)) {
                    done.missing += 1;
                    done.copied += 1;
                    done.bytes += e.payload.len() as u64;
                    batch_bytes += e.payload.len();
                    batch.push((p, e));
                    if batch.len() >= CATCH_UP_BATCH_ENTRIES || batch_bytes >= CATCH_UP_BATCH_BYTES {
                        throttle.spend(batch_bytes as u64).await;
                        self.send_batch(vlog, replica, std::mem::take(&mut batch), &mut writing).await?;
                        batch_bytes = 0;
                    }
                }
                if next >= end && naxos_wire::mutation::active(naxos_wire::mutation::Mutation::TransferSkipsLastBatch) {
                    batch.clear();
                }
                throttle.spend(batch_bytes as u64).await;
                self.send_batch(vlog, replica, batch, &mut writing).await?;
                throttle.advanced(next - at);
                at = next;
            }
            if diverged {
                done.diverged_stripes.push(index);
            }
            done += CatchUp { open, ..CatchUp::default() };
        }
        // Every batch durable on the replica before the copy counts as done.
        while let Some(w) = writing.pop_front() {
            w.await.map_err(|e| Error::Unavailable(format!("a catch-up write stopped: {e}")))??;
        }
        Ok(done)
    }
}

impl ChainLoglet {
    /// One request of a copy, tried a few times with a short back-off.
    async fn copy_call(&self, vlog: &Client, addr: &str, body: request::Body) -> Result<response::Body, Error> {
        let mut last = None;
        for attempt in 0..CATCH_UP_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            match vlog.call(addr, &self.layout, body.clone()).await {
                Ok(b) => return Ok(b),
                Err(e) if e.server().is_some_and(|s| s.code != ErrorCode::Unavailable) => return Err(rpc_to_error(e)),
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Unavailable(format!(
            "catching up: {addr}: {}",
            last.map_or_else(|| "no answer".to_string(), |e| e.to_string())
        )))
    }

    /// The first position in `(trimmed, end]` that `source` has not trimmed
    /// (`end` if all of them are), found by doubling then halving steps.
    async fn first_untrimmed(&self, vlog: &Client, source: &str, trimmed: u64, end: u64) -> Result<u64, Error> {
        let is_trimmed = |p: u64| async move {
            let body = request::Body::ReadRange(ReadRange { from: p, to: p + 1, max_bytes: 1 });
            match self.copy_call(vlog, source, body).await {
                Ok(_) => Ok(false),
                Err(Error::Trimmed(_)) => Ok(true),
                Err(e) => Err(e),
            }
        };
        // Invariant: `lo` is trimmed, `hi` is not (or is `end`).
        let (mut lo, mut hi) = (trimmed, end);
        let mut step = 1;
        while lo + step < hi {
            if !is_trimmed(lo + step).await? {
                hi = lo + step;
                break;
            }
            lo += step;
            step *= 2;
        }
        while lo + 1 < hi {
            let mid = lo + (hi - lo) / 2;
            if is_trimmed(mid).await? {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(hi)
    }

    /// Everything `addr` holds in `[from, to)`, and the first position it
    /// has not trimmed (nothing below it is wanted there).
    async fn read_window(
        &self,
        vlog: &Client,
        addr: &str,
        from: u64,
        to: u64,
    ) -> Result<(BTreeMap<u64, Entry>, u64), Error> {
        let mut out = BTreeMap::new();
        let mut floor = from;
        let mut at = from;
        while at < to {
            let body = request::Body::ReadRange(ReadRange { from: at, to, max_bytes: CATCH_UP_READ_BYTES });
            match self.copy_call(vlog, addr, body).await {
                Ok(response::Body::ReadRange(r)) => {
                    out.extend(r.entries.into_iter().filter_map(|pe| pe.entry.map(|e| (pe.position, e))));
                    if r.next <= at {
                        break;
                    }
                    at = r.next;
                }
                Ok(_) => return Err(Error::Invalid(format!("{addr} answered a read range with something else"))),
                Err(Error::Trimmed(_)) => {
                    at = self.first_untrimmed(vlog, addr, at, to).await?;
                    floor = at;
                }
                Err(e) => return Err(e),
            }
        }
        Ok((out, floor))
    }

    /// The entry at `pos` from a replica of `chain` other than its tail
    /// (the last one first), if one holds it.
    async fn read_around(&self, vlog: &Client, chain: &[String], pos: u64) -> Option<Entry> {
        for addr in chain.iter().rev().skip(1) {
            if let Ok(Some(entry)) = self.read_replica(vlog, addr, &self.layout, Position(pos)).await {
                return Some(entry);
            }
        }
        None
    }

    /// A value the replica holds at `pos` and the chain lacks: written
    /// through the chain (write-once decides between it and anything racing
    /// it); whether the chain now holds that same value.
    async fn settle_extra(&self, vlog: &Client, chain: &[String], pos: Position, value: &Entry) -> Result<bool, Error> {
        match self.write_head(vlog, chain, pos, value).await? {
            HeadWrite::Ours => {
                self.complete_chain(vlog, chain, 1, pos, value).await?;
                Ok(true)
            }
            HeadWrite::Lost => {
                let held = self.read_replica(vlog, &chain[0], &self.layout, pos).await.map_err(rpc_to_error)?;
                match held {
                    Some(h) if h == *value => {
                        self.complete_chain(vlog, chain, 1, pos, &h).await?;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
        }
    }

    /// Writes `batch` to `replica` in one request; an entry it holds already
    /// must be the same one.
    async fn copy_batch(&self, vlog: &Client, replica: &str, batch: &mut Vec<(u64, Entry)>) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        let bodies: Vec<request::Body> = batch
            .iter()
            .map(|(p, e)| request::Body::Write(Write { position: *p, entry: Some(e.clone()), repair: false }))
            .collect();
        let mut last = None;
        for attempt in 0..CATCH_UP_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(20 << attempt)).await;
            }
            match vlog.inner.pool.call_batch(replica, &self.layout.cluster_id, self.layout.epoch, bodies.clone()).await
            {
                Ok(answers) => {
                    for ((p, e), answer) in batch.iter().zip(answers) {
                        match answer {
                            Ok(_) => {}
                            Err(err) if overwritten(&err).is_some() => {
                                self.check_holds(vlog, replica, &self.layout, Position(*p), e).await?;
                            }
                            // The replica's own record of the position is lost
                            // to damage on its disk: the copy's value is the
                            // chain's, so it is written back as a repair.
                            Err(err) if corrupted(&err) => {
                                let repair = Write { position: *p, entry: Some(e.clone()), repair: true };
                                vlog.call(replica, &self.layout, request::Body::Write(repair))
                                    .await
                                    .map_err(rpc_to_error)?;
                            }
                            Err(err) => return Err(rpc_to_error(err)),
                        }
                    }
                    batch.clear();
                    return Ok(());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Error::Unavailable(format!(
            "catching up: writing to {replica}: {}",
            last.map_or_else(|| "no answer".to_string(), |e| e.to_string())
        )))
    }
}

impl ChainLoglet {
    /// Starts writing `batch` to `replica` in the background, after waiting
    /// for the oldest write if `CATCH_UP_WRITES_IN_FLIGHT` are out already.
    async fn send_batch(
        &self,
        vlog: &Client,
        replica: &str,
        mut batch: Vec<(u64, Entry)>,
        writing: &mut std::collections::VecDeque<tokio::task::JoinHandle<Result<(), Error>>>,
    ) -> Result<(), Error> {
        if batch.is_empty() {
            return Ok(());
        }
        while writing.len() >= CATCH_UP_WRITES_IN_FLIGHT {
            if let Some(w) = writing.pop_front() {
                w.await.map_err(|e| Error::Unavailable(format!("a catch-up write stopped: {e}")))??;
            }
        }
        let (me, vlog, replica) = (self.clone(), vlog.clone(), replica.to_string());
        writing.push_back(tokio::spawn(async move { me.copy_batch(&vlog, &replica, &mut batch).await }));
        Ok(())
    }
}

/// Which positions of a segment one stripe holds.
mod stripe_filter {
    /// The positions `p >= start` with `(p - start) % count == index`.
    pub(super) struct Filter {
        pub start: u64,
        pub count: u32,
        pub index: u32,
    }

    impl Filter {
        pub fn contains(&self, p: u64) -> bool {
            p >= self.start && (p - self.start) % u64::from(self.count) == u64::from(self.index)
        }
    }
}
