//! Tailing stream readers (`Client::subscribe`): a stream's entries in log
//! order as they become readable, without polling in a loop. The reader asks
//! the sequencer to answer once the stream has an entry at or after the next
//! position it wants (a bounded long poll), then finds the new entries by
//! walking their back-pointers from the stream's last position: within one
//! segment one sequencer handed out every token, so the back-pointers there
//! name every position of the stream and nothing else is read (other
//! writers' positions in flight are neither waited for nor filled). Older
//! segments, a broken chain (a position of the stream that became a hole) or
//! a reader far behind go through the log units' stream index instead, a
//! window of positions at a time; either way what the reader holds besides
//! the entries it has not handed out yet is bounded.

use crate::stream::STREAM_WINDOW;
use crate::{loglet, Client, Error, Record, Value};
use naxos_wire::{Position, StreamId};
use std::collections::VecDeque;
use std::time::Duration;

/// How long one long poll of the sequencer waits for something new.
const WAIT: Duration = Duration::from_millis(1000);
/// Most entries one back-pointer walk holds before it gives up for a scan.
const WALK_ENTRIES_MAX: usize = 4096;
/// Most payload bytes one back-pointer walk holds before it gives up for a scan.
const WALK_BYTES_MAX: usize = 32 << 20;
/// How long a walk waits, without filling it, for a position of the stream
/// whose token was handed out but whose write has not landed: the sequencer
/// wakes the reader at the token, so a plain read (which fills after the
/// hole-fill wait) would make a slow writer lose its position again and again.
const PATIENCE: Duration = Duration::from_secs(2);
/// A long poll that comes back early with nothing new (the sequencer holds
/// too many already) is asked again only after this pause.
const EARLY_PAUSE: Duration = Duration::from_millis(100);

/// A tailing reader of one stream (see [`Client::subscribe`]).
pub struct Subscription {
    client: Client,
    stream: StreamId,
    /// The first position not examined yet.
    next: Position,
    /// Entries found and not handed out yet, in log order.
    ready: VecDeque<(Position, Record)>,
    /// A walk that found too much at once: the index is read forward up
    /// to `until`, then `after` (what the walk found from there) comes.
    pending: Option<Pending>,
    wait: Duration,
}

/// The rest of a back-pointer walk that stopped at its bound.
struct Pending {
    until: Position,
    after: Vec<(Position, Record)>,
    resume: Position,
}

impl Client {
    /// A reader of `stream`'s entries from position `from` on, in log order,
    /// that waits for new ones at the end: call [`Subscription::next`].
    pub fn subscribe(&self, stream: StreamId, from: Position) -> Subscription {
        Subscription { client: self.clone(), stream, next: from, ready: VecDeque::new(), pending: None, wait: WAIT }
    }
}

impl Subscription {
    /// The next entry of the stream, waiting for one to be appended if the
    /// reader has them all. Errors are the reads' (`Trimmed` when the next
    /// entry was trimmed away; `Unavailable` when the cluster is).
    pub async fn next(&mut self) -> Result<(Position, Record), Error> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Ok(e);
            }
            self.advance().await?;
        }
    }

    /// The next entry if one is readable now or arrives within `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Result<Option<(Position, Record)>, Error> {
        match tokio::time::timeout(wait, self.next()).await {
            Ok(r) => r.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The first position the reader has not examined yet (every entry of
    /// the stream below it was handed out or is ready to be).
    pub fn position(&self) -> Position {
        self.next
    }

    /// Sets how long one long poll of the sequencer may wait (tests, tools).
    pub fn with_wait(mut self, wait: Duration) -> Subscription {
        self.wait = wait;
        self
    }

    /// Finds the next entries, or waits (at most one long poll) for some.
    async fn advance(&mut self) -> Result<(), Error> {
        if let Some(p) = &self.pending {
            if self.next < p.until {
                let end = Position(p.until.0.min(self.next.0.saturating_add(STREAM_WINDOW)));
                let found = self.client.read_stream_window(self.stream, self.next, end, true).await?;
                self.ready.extend(found);
                self.next = end;
                return Ok(());
            }
            if let Some(p) = self.pending.take() {
                self.ready.extend(p.after);
                self.next = p.resume;
            }
            return Ok(());
        }
        let asked = tokio::time::Instant::now();
        let tails = self.client.wait_tails(&[self.stream], self.next, self.wait).await?;
        let id = self.stream.to_bytes();
        let last = tails.streams.iter().find(|t| t.stream.as_ref() == id.as_slice()).map(|t| t.last);
        let Some(last) = last.filter(|&l| l != naxos_wire::NO_BACKPOINTER && l >= self.next.0) else {
            // Nothing new within the wait; back early means the sequencer
            // would not hold the query: do not ask again at once.
            if asked.elapsed() < self.wait / 4 {
                tokio::time::sleep(EARLY_PAUSE).await;
            }
            return Ok(());
        };
        let layout = self.client.layout();
        let segment_start = match loglet::segment_of(&layout, Position(last)) {
            Some(i) => layout.segments[i].start,
            None => self.client.refresh_layout().await?.segments.last().map_or(0, |s| s.start),
        };
        if self.next.0 < segment_start {
            // Older segments (their tokens came from other sequencers): the
            // index, a window at a time.
            let end = Position(segment_start.min(self.next.0.saturating_add(STREAM_WINDOW)));
            let found = self.client.read_stream_window(self.stream, self.next, end, true).await?;
            self.ready.extend(found);
            self.next = end;
            return Ok(());
        }
        self.walk(last).await
    }

    /// Collects the stream's entries in `[next, last]` by their back-pointers,
    /// from `last` down (all in the segment of `last`).
    async fn walk(&mut self, last: u64) -> Result<(), Error> {
        // Found so far, highest position first.
        let mut found: Vec<(Position, Record)> = Vec::new();
        let mut bytes = 0;
        let mut at = Some(last);
        while let Some(p) = at {
            if found.len() >= WALK_ENTRIES_MAX || bytes >= WALK_BYTES_MAX {
                // Far behind: what lies below the lowest entry found is read
                // forward through the index first, a window at a time.
                let lowest = found.last().map_or(Position(p), |f| f.0);
                found.reverse();
                self.pending = Some(Pending { until: lowest, after: found, resume: Position(last + 1) });
                return Ok(());
            }
            at = match self.patient_read(p).await? {
                Value::Data(r) if r.streams.contains(&self.stream) => {
                    let back = r.backpointer(self.stream);
                    bytes += r.payload.len();
                    found.push((Position(p), r));
                    match back {
                        Some(b) if b >= p => {
                            return Err(Error::Invalid(format!("position {p}'s back-pointer {b} does not go back")))
                        }
                        Some(b) if b >= self.next.0 => Some(b),
                        _ => None,
                    }
                }
                Value::Data(_) => {
                    return Err(Error::Invalid(format!(
                        "a back-pointer of the stream leads to position {p}, whose entry is not in the stream"
                    )));
                }
                // Its writer never finished: where the stream went before it
                // is unknown here; the index tells.
                Value::Hole => self.below_hole(p, &mut found, &mut bytes).await?,
            };
        }
        found.reverse();
        self.ready.extend(found);
        self.next = Position(last + 1);
        Ok(())
    }

    /// What `p` holds, waiting up to [`PATIENCE`] (without filling it) for
    /// its writer first; then as any read (which fills a hole).
    async fn patient_read(&self, p: u64) -> Result<Value, Error> {
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            let layout = self.client.layout();
            let loglet = loglet::of_position(&layout, Position(p))?;
            if let Some(v) = loglet.read_range(&self.client, Position(p), Position(p + 1)).await?.remove(&p) {
                return Ok(v);
            }
            if started.elapsed() >= PATIENCE {
                return self.client.read(Position(p)).await;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Below a hole at `hole` on the back-pointer chain: the stream's
    /// highest position the index lists below it (the walk goes on from
    /// there; `None` when there is none down to `next`), after the positions
    /// between the two that are not written yet are read (a writer of the
    /// stream may be on its way to one), the stream's entries among them
    /// pushed onto `found`.
    async fn below_hole(
        &self,
        hole: u64,
        found: &mut Vec<(Position, Record)>,
        bytes: &mut usize,
    ) -> Result<Option<u64>, Error> {
        let mut hi = hole;
        while hi > self.next.0 {
            let lo = hi.saturating_sub(STREAM_WINDOW).max(self.next.0);
            let (listed, unknown) = self.client.stream_positions(self.stream, Position(lo), Position(hi), true).await?;
            let below = listed.iter().copied().filter(|&p| p < hi).max();
            let floor = below.map_or(lo, |b| b + 1);
            let todo: Vec<(u64, bool)> =
                unknown.into_iter().filter(|&p| p >= floor && p < hi).map(|p| (p, false)).collect();
            let entries = self.client.read_stream_positions(self.stream, &todo).await?;
            for e in entries.into_iter().rev() {
                *bytes += e.1.payload.len();
                found.push(e);
            }
            if below.is_some() {
                return Ok(below);
            }
            hi = lo;
        }
        Ok(None)
    }
}
