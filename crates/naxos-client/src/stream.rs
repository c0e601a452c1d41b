//! Stream reads: a stream's entries in log order, found through the log
//! units' per-stream index instead of a scan. Each segment's loglet is asked
//! (a chain asks each stripe's head, which holds a superset of its chain) for
//! the stream's positions and for the positions not seen written yet; those
//! are read (waiting for their writer or filling them), so nothing below the
//! tail is missed. Where the stream's positions are dense they are read in
//! bulk from the chains' tails (entries of other streams among them are
//! dropped: at most as many as the stream's own); else one by one, and no
//! entry of another stream is read.

use crate::loglet;
use crate::{Client, Error, Record, Value};
use naxos_wire::{Position, StreamId};

/// Positions read at once.
const READ_CHUNK: usize = 256;
/// A chunk of at least this many positions, dense enough, is read in bulk.
const DENSE_MIN: usize = 4;
/// Positions examined per window of a stream read: what it keeps in memory
/// besides the entries found is bounded by this, however long a run of
/// unwritten or filled positions it crosses.
pub(crate) const STREAM_WINDOW: u64 = 1 << 16;

impl Client {
    /// The entries of `stream` from position `from` up to the current tail, in log order.
    pub async fn read_stream(&self, stream: StreamId, from: Position) -> Result<Vec<(Position, Record)>, Error> {
        let tail = self.tail().await?;
        self.read_stream_range(stream, from, tail).await
    }

    /// The entries of `stream` in `[from, to)`, in log order, a window of
    /// positions at a time.
    pub async fn read_stream_range(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
    ) -> Result<Vec<(Position, Record)>, Error> {
        self.read_stream_windows(stream, from, to, false).await
    }

    /// Every entry of `stream` in `[from, to)`, in log order, with every
    /// position below `to` settled: positions handed out but not yet written
    /// are waited for (and filled if their writer is gone), so that a reader
    /// that goes on from `to` misses nothing. `to` must not be above the
    /// tail. For replaying objects (naxos-tango); `read_stream_range` may
    /// stop short of writes still on their way.
    pub async fn read_stream_settled(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
    ) -> Result<Vec<(Position, Record)>, Error> {
        self.read_stream_windows(stream, from, to, true).await
    }

    /// `[from, to)` of `stream` a window at a time (see `read_stream_window`).
    async fn read_stream_windows(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
        unreached: bool,
    ) -> Result<Vec<(Position, Record)>, Error> {
        let mut out = Vec::new();
        let mut at = from.0;
        while at < to.0 {
            let end = to.0.min(at.saturating_add(STREAM_WINDOW));
            out.extend(self.read_stream_window(stream, Position(at), Position(end), unreached).await?);
            at = end;
        }
        Ok(out)
    }

    /// The highest position below `below` that the log units' index lists
    /// for `stream` (`None` if there is none, or only trimmed ones): for
    /// walking a stream backwards past a hole, whose back-pointers are gone.
    /// One index query per window of [`STREAM_WINDOW`] positions.
    pub async fn stream_last_below(&self, stream: StreamId, below: Position) -> Result<Option<Position>, Error> {
        let mut hi = below.0;
        let mut floor = 0;
        while hi > floor {
            let lo = hi.saturating_sub(STREAM_WINDOW).max(floor);
            match self.stream_positions(stream, Position(lo), Position(hi), false).await {
                Ok((listed, _)) => {
                    if let Some(&p) = listed.last() {
                        return Ok(Some(Position(p)));
                    }
                    hi = lo;
                }
                // The window reaches into the trimmed prefix: look again
                // from the trim mark (nothing below it is left).
                Err(Error::Trimmed(_)) if floor == 0 => floor = self.first_untrimmed(stream, Position(hi)).await?.0,
                Err(Error::Trimmed(_)) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// The log's trim mark: the first position not trimmed (0 if nothing
    /// was). A binary search of one-position index queries.
    pub async fn trim_mark(&self) -> Result<Position, Error> {
        let tail = self.tail().await?;
        // The index query refuses a trimmed window whatever stream it names.
        self.first_untrimmed(StreamId::from_name(""), tail).await
    }

    /// The first position at or below `below` that is not trimmed where
    /// `stream`'s entries are indexed (a binary search of index queries of
    /// one position each: nothing is read or filled).
    pub async fn first_untrimmed(&self, stream: StreamId, below: Position) -> Result<Position, Error> {
        let (mut lo, mut hi) = (0u64, below.0);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.stream_positions(stream, Position(mid), Position(mid + 1), false).await {
                Ok(_) => hi = mid,
                Err(Error::Trimmed(_)) => lo = mid + 1,
                Err(e) => return Err(e),
            }
        }
        Ok(Position(lo))
    }

    /// The entries of `stream` in `[from, to)`, at most [`STREAM_WINDOW`]
    /// positions: the index's positions of the stream, and every position
    /// not seen written, read. `unreached`: also those past the tail of the
    /// unit asked (a tailing reader must not step over a write on its way;
    /// a one-off read up to the tail need not wait for one).
    pub(crate) async fn read_stream_window(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
        unreached: bool,
    ) -> Result<Vec<(Position, Record)>, Error> {
        let (listed, unknown) = self.stream_positions(stream, from, to, unreached).await?;
        // Both lists, merged into log order; each position knows whether the
        // index listed it (then it must be in the stream).
        let mut todo: Vec<(u64, bool)> =
            listed.iter().map(|&p| (p, true)).chain(unknown.iter().map(|&p| (p, false))).collect();
        todo.sort_unstable();
        self.read_stream_positions(stream, &todo).await
    }

    /// What the index says of `stream` in `[from, to)`: the positions it
    /// lists, and those not written yet (with `unreached`, also those past
    /// the asked units' tails), each sorted.
    pub(crate) async fn stream_positions(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
        unreached: bool,
    ) -> Result<(Vec<u64>, Vec<u64>), Error> {
        let layout = self.layout();
        let mut listed: Vec<u64> = Vec::new();
        let mut unknown: Vec<u64> = Vec::new();
        for segment in loglet::segments_in(&layout, from, to) {
            let found = loglet::of_segment(&layout, segment)?.stream_query(self, stream, from, to).await?;
            listed.extend(found.listed);
            unknown.extend(found.unwritten);
            if unreached {
                unknown.extend(found.unreached);
            }
        }
        listed.sort_unstable();
        listed.dedup();
        unknown.sort_unstable();
        unknown.dedup();
        Ok((listed, unknown))
    }

    /// Reads `todo` (positions in log order, each with whether the index
    /// listed it for `stream`); the entries of `stream` among them.
    pub(crate) async fn read_stream_positions(
        &self,
        stream: StreamId,
        todo: &[(u64, bool)],
    ) -> Result<Vec<(Position, Record)>, Error> {
        let mut out = Vec::new();
        // Read a chunk at a time, all of a chunk at once: a run of holes to
        // fill costs one hole-fill wait, not one per position.
        for chunk in todo.chunks(READ_CHUNK) {
            let mut got = self.read_dense(chunk).await?;
            let missing: Vec<u64> = chunk.iter().map(|&(p, _)| p).filter(|p| !got.contains_key(p)).collect();
            let reads = futures::future::join_all(missing.iter().map(|&p| self.read(Position(p)))).await;
            for (p, value) in missing.into_iter().zip(reads) {
                got.insert(p, value?);
            }
            for &(p, known) in chunk {
                match got.remove(&p) {
                    Some(Value::Data(r)) if r.streams.contains(&stream) => out.push((Position(p), r)),
                    Some(Value::Data(_)) if known => {
                        return Err(Error::Invalid(format!(
                            "stream index lists position {p}, whose entry is not in the stream"
                        )));
                    }
                    _ => {}
                }
            }
        }
        Ok(out)
    }

    /// Where `chunk` (positions in log order) is dense, at least half of the
    /// positions it spans: what the chains' tails hold of that span, in one
    /// bulk read per segment instead of a read per position (a stream that
    /// most entries belong to, as a busy object's is). Positions not there
    /// (unwritten, or not at the tail yet) are left to the single reads.
    async fn read_dense(&self, chunk: &[(u64, bool)]) -> Result<std::collections::BTreeMap<u64, Value>, Error> {
        let (Some(&(first, _)), Some(&(last, _))) = (chunk.first(), chunk.last()) else {
            return Ok(Default::default());
        };
        if chunk.len() < DENSE_MIN || last - first + 1 > 2 * chunk.len() as u64 {
            return Ok(Default::default());
        }
        self.read_tails(Position(first), Position(last + 1)).await
    }
}
