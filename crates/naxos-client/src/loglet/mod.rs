//! The seam between the virtual log and its segments (Delos's loglets,
//! Bifrost's `Loglet`). The `Client` takes tokens and finds the segment of a
//! position; everything that touches the servers holding a segment goes
//! through that segment's [`Loglet`]: writes at given positions, reads of one
//! position or a range, hole fills, the tail, seal, trim and stream queries.
//! The layout's `Segment.kind` says which implementation serves a segment;
//! chain replication over stripes ([`chain::ChainLoglet`]) is the first.
//!
//! A loglet is cheap: it is made from the layout for each call and holds no
//! state of its own beyond the layout it was made from. It reaches the
//! servers through the client that made it (its connections, settings,
//! retry budget and layout refresh), which every method takes as `vlog`.

pub(crate) mod chain;

use crate::{Client, Error, Value};
use async_trait::async_trait;
use naxos_wire::proto::{Entry, SegmentKind};
use naxos_wire::{rpc, Epoch, Layout, Position, StreamId};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The first answer to a write the sequencer's node already made on the
/// client's behalf (the combined `Append`), as the loglet carries it on.
pub type FirstWrite = Result<(), rpc::Error>;

/// How one write at a given position ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The entry is durable on every replica of the position.
    Written,
    /// Another value (a reader's hole, another writer's entry) took the
    /// position first: the caller takes a new token.
    Lost,
}

/// A segment's tail as its log units see it, and the last position of each
/// stream they hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SegmentTail {
    /// One past the highest position any answering replica holds (at least
    /// the segment's start).
    pub tail: Position,
    /// Whether the layout closes this segment (it takes no more appends).
    pub sealed: bool,
    /// The last position of every stream found, the highest over the replicas.
    pub streams: BTreeMap<StreamId, u64>,
}

/// A stream's positions in a range of a segment, from its index.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPositions {
    /// Positions the index lists for the stream.
    pub listed: Vec<u64>,
    /// Positions not yet written where the index was asked (they may still
    /// receive an entry of the stream, or a hole).
    pub unwritten: Vec<u64>,
    /// Positions at or past the tail of the unit that was asked: not written
    /// there yet either (a writer may be on its way; tailing readers read them).
    pub unreached: Vec<u64>,
}

/// What catching a replica up did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CatchUp {
    /// Positions the replica lacked that its chain holds.
    pub missing: u64,
    /// Entries copied to it.
    pub copied: u64,
    /// Payload bytes copied to it.
    pub bytes: u64,
    /// Positions where the replica holds another value than its chain (a
    /// write it took as a head that the chain later decided otherwise).
    pub diverged: u64,
    /// The stripes with such positions: the replica must not join their chains.
    pub diverged_stripes: Vec<usize>,
    /// The lowest position examined that neither the chain nor the replica
    /// held: a writer holding its token may still write it through the chain
    /// the replica is not in yet, so a later pass must look at it again.
    pub open: Option<u64>,
}

impl std::ops::AddAssign for CatchUp {
    fn add_assign(&mut self, o: CatchUp) {
        self.missing += o.missing;
        self.copied += o.copied;
        self.bytes += o.bytes;
        self.diverged += o.diverged;
        for s in o.diverged_stripes {
            if !self.diverged_stripes.contains(&s) {
                self.diverged_stripes.push(s);
            }
        }
        self.open = match (self.open, o.open) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// What a catch-up does with a value the replica holds and its chain lacks
/// (an append whose writer reached the replica but not the chain).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Extras {
    /// Decide it through the chain now, as a read repair of a head would.
    /// Only once the chain's sequencer is sealed: the next one takes its
    /// stream tails from the units afterwards, so it counts the value.
    Settle,
    /// Leave it open for a pass after the seal. While appends go on, the
    /// live sequencer never counted the value (it took its stream tails
    /// from units that lacked it): decided now, an append acknowledged
    /// through it would be missing from its streams' tails (soak seed
    /// 712375: a stream tail said 23 after an append at 24 was acknowledged).
    Defer,
}

/// A limit on the bytes per second a copy sends (0: none), so that catching
/// a replica up does not starve appends.
#[derive(Debug)]
pub struct Throttle {
    bytes_per_s_max: u64,
    started: tokio::time::Instant,
    sent: u64,
    progress: Option<std::sync::Arc<Progress>>,
}

/// How far a running state transfer has come, shared with whoever reports
/// it (the manager's heartbeat answers, `naxos status`).
#[derive(Debug, Default)]
pub struct Progress {
    /// Payload bytes copied so far.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Positions compared so far (per stripe copied).
    pub positions_done: std::sync::atomic::AtomicU64,
    /// Positions to compare in all (per stripe copied).
    pub positions_total: std::sync::atomic::AtomicU64,
}

impl Progress {
    /// Adds `n` to the positions to compare.
    pub fn plan(&self, n: u64) {
        self.positions_total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Throttle {
    /// A throttle at `bytes_per_s_max` (0 for none).
    pub fn new(bytes_per_s_max: u64) -> Throttle {
        Throttle { bytes_per_s_max, started: tokio::time::Instant::now(), sent: 0, progress: None }
    }

    /// The same, reporting what it lets through to `progress`.
    pub fn with_progress(mut self, progress: std::sync::Arc<Progress>) -> Throttle {
        self.progress = Some(progress);
        self
    }

    /// The progress it reports to, if any.
    pub fn progress(&self) -> Option<&Progress> {
        self.progress.as_deref()
    }

    /// Counts `n` positions as compared.
    pub fn advanced(&self, n: u64) {
        if let Some(p) = &self.progress {
            p.positions_done.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Counts `bytes` as sent, waiting first as long as the rate asks.
    pub async fn spend(&mut self, bytes: u64) {
        self.sent += bytes;
        if let Some(p) = &self.progress {
            p.bytes.fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
        if self.bytes_per_s_max == 0 {
            return;
        }
        let due = std::time::Duration::from_secs_f64(self.sent as f64 / self.bytes_per_s_max as f64);
        let at = self.started + due;
        if at > tokio::time::Instant::now() {
            tokio::time::sleep_until(at).await;
        }
    }
}

/// One segment of the log, as the virtual log reaches it.
#[async_trait]
pub trait Loglet: Send + Sync {
    /// Which kind of segment this loglet serves.
    fn kind(&self) -> SegmentKind;

    /// Writes one entry at `pos` (given by the sequencer), on its own.
    async fn write(&self, vlog: &Client, pos: Position, entry: &Entry) -> Result<WriteOutcome, Error>;

    /// Writes many entries at their positions with as few requests as the
    /// loglet can; `first[i]`, when set, is the answer of a first write of
    /// entry `i` that was already made. Each entry keeps its own outcome.
    async fn write_batch(
        &self,
        vlog: &Client,
        writes: &[(Position, Entry)],
        first: Vec<Option<FirstWrite>>,
    ) -> Vec<Result<WriteOutcome, Error>>;

    /// What `pos` holds, repairing and filling as needed; `Unwritten` above the log's tail.
    async fn read(&self, vlog: &Client, pos: Position) -> Result<Value, rpc::Error>;

    /// What the positions of `[from, to)` hold, as far as one bulk pass over
    /// the replicas finds them (positions it lacks are read one at a time by
    /// the caller).
    async fn read_range(&self, vlog: &Client, from: Position, to: Position) -> Result<BTreeMap<u64, Value>, Error>;

    /// Fills `pos` with a hole unless it is written; `AlreadyWritten` if it is.
    async fn fill(&self, vlog: &Client, pos: Position) -> Result<(), Error>;

    /// The segment's tail and stream tails, from every replica that answers
    /// (each stripe's first replica must answer: it holds the most).
    async fn check_tail(&self, vlog: &Client) -> Result<SegmentTail, Error>;

    /// Seals every reachable replica at `epoch` and returns the tail the
    /// sealed replicas hold (at least one per stripe must answer).
    async fn seal(&self, vlog: &Client, epoch: Epoch) -> Result<SegmentTail, Error>;

    /// Discards the positions below `pos` on every replica.
    async fn trim(&self, vlog: &Client, pos: Position) -> Result<(), Error>;

    /// Copies to `replica` what it lacks of the positions it will hold in
    /// this segment in `[from, to)` (those of stripe `stripe`, or of every stripe,
    /// skipping chains it is in already), from the replicas that hold them.
    /// Incremental (only what the replica lacks is sent) and so resumable;
    /// large batches, one group commit each; nothing on the replica is ever
    /// deleted or overwritten. What the replica holds is checked against the
    /// chain: a value the chain lacks is completed through the chain first
    /// (as a read repair would), and a value the chain decided otherwise
    /// marks the stripe as diverged (the replica must not join it). The
    /// replica must be sealed, so that nothing new lands on it meanwhile.
    /// `extras` says whether values the chain lacks are decided now or left
    /// open (see [`Extras`]).
    #[allow(clippy::too_many_arguments)]
    async fn catch_up(
        &self,
        vlog: &Client,
        replica: &str,
        stripe: Option<usize>,
        from: Position,
        to: Position,
        extras: Extras,
        throttle: &mut Throttle,
    ) -> Result<CatchUp, Error>;

    /// The positions of `stream` in `[from, to)` (clipped to the segment).
    async fn stream_query(
        &self,
        vlog: &Client,
        stream: StreamId,
        from: Position,
        to: Position,
    ) -> Result<StreamPositions, Error>;
}

/// The loglet of segment `index` of `layout`.
pub fn of_segment(layout: &Arc<Layout>, index: usize) -> Result<Arc<dyn Loglet>, Error> {
    let segment =
        layout.segments.get(index).ok_or_else(|| Error::Invalid(format!("the layout has no segment {index}")))?;
    match SegmentKind::try_from(segment.kind) {
        Ok(SegmentKind::Chain) => Ok(Arc::new(chain::ChainLoglet::new(layout.clone(), index))),
        Err(_) => Err(Error::Invalid(format!(
            "segment starting at {} is of kind {}, which this client does not know; upgrade it",
            segment.start, segment.kind
        ))),
    }
}

/// The index of the segment of `layout` that holds `pos`.
pub fn segment_of(layout: &Layout, pos: Position) -> Option<usize> {
    layout.segments.iter().position(|s| s.start <= pos.0 && s.end.is_none_or(|e| pos.0 < e))
}

/// The loglet that holds `pos`.
pub fn of_position(layout: &Arc<Layout>, pos: Position) -> Result<Arc<dyn Loglet>, Error> {
    let index = segment_of(layout, pos)
        .ok_or_else(|| Error::Invalid(format!("no segment of the layout holds position {pos}")))?;
    of_segment(layout, index)
}

/// The indexes of the segments that overlap `[from, to)`.
pub fn segments_in(layout: &Layout, from: Position, to: Position) -> Vec<usize> {
    layout
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.start < to.0 && s.end.is_none_or(|e| e > from.0))
        .map(|(i, _)| i)
        .collect()
}
