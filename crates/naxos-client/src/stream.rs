//! Stream reads: a stream's entries in log order, found through the log
//! units' per-stream index instead of a scan. Each segment's loglet is asked
//! (a chain asks each stripe's head, which holds a superset of its chain) for
//! the stream's positions and for the positions not seen written yet; those
//! are read (waiting for their writer or filling them), so nothing below the
//! tail is missed, and no entry of another stream is ever read.

use crate::loglet;
use crate::{Client, Error, Record, Value};
use naxos_wire::{Position, StreamId};

/// Positions read at once.
const READ_CHUNK: usize = 256;

impl Client {
    /// The entries of `stream` from position `from` up to the current tail, in log order.
    pub async fn read_stream(&self, stream: StreamId, from: Position) -> Result<Vec<(Position, Record)>, Error> {
        let tail = self.tail().await?;
        self.read_stream_range(stream, from, tail).await
    }

    /// The entries of `stream` in `[from, to)`, in log order.
    pub async fn read_stream_range(
        &self,
        stream: StreamId,
        from: Position,
        to: Position,
    ) -> Result<Vec<(Position, Record)>, Error> {
        let layout = self.layout();
        let mut mine: Vec<u64> = Vec::new();
        let mut unknown: Vec<u64> = Vec::new();
        for segment in loglet::segments_in(&layout, from, to) {
            let found = loglet::of_segment(&layout, segment)?.stream_query(self, stream, from, to).await?;
            mine.extend(found.listed);
            unknown.extend(found.unwritten);
        }
        mine.sort_unstable();
        mine.dedup();
        unknown.sort_unstable();
        unknown.dedup();
        // Both lists, merged into log order; each position knows whether the
        // index listed it (then it must be in the stream).
        let mut todo: Vec<(u64, bool)> =
            mine.iter().map(|&p| (p, true)).chain(unknown.iter().map(|&p| (p, false))).collect();
        todo.sort_unstable();
        let mut out = Vec::with_capacity(mine.len());
        // Read a chunk at a time, all of a chunk at once: a run of holes to
        // fill costs one hole-fill wait, not one per position.
        for chunk in todo.chunks(READ_CHUNK) {
            let reads = futures::future::join_all(chunk.iter().map(|&(p, _)| self.read(Position(p)))).await;
            for (&(p, known), value) in chunk.iter().zip(reads) {
                match value? {
                    Value::Data(r) if r.streams.contains(&stream) => out.push((Position(p), r)),
                    Value::Data(_) if known => {
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
}
