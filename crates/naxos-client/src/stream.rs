//! Stream reads: a stream's entries in log order, found through the log
//! units' per-stream index instead of a scan. Each chain's head is asked (it
//! holds a superset of its chain), for the stream's positions and for the
//! positions it has not seen written yet; those are read (waiting for their
//! writer or filling them), so nothing below the tail is missed, and no entry
//! of another stream is ever read.

use crate::retry::Retry;
use crate::{Client, Error, Record, Value};
use bytes::Bytes;
use naxos_wire::proto::{request, response, StreamQuery};
use naxos_wire::{Position, StreamId};

/// Results asked for per stream query.
const QUERY_LIMIT: u32 = 8192;
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
        let id = Bytes::copy_from_slice(&stream.to_bytes());
        let mut mine: Vec<u64> = Vec::new();
        let mut unknown: Vec<u64> = Vec::new();
        for seg in &layout.segments {
            let lo = from.0.max(seg.start);
            let hi = seg.end.map_or(to.0, |e| e.min(to.0));
            if lo >= hi {
                continue;
            }
            for (index, stripe) in seg.stripes.iter().enumerate() {
                let head = &stripe.chain[0];
                let mut at = lo;
                let mut retry = Retry::new(self.config());
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
                    match self.call(head, &self.layout(), body).await {
                        Ok(response::Body::StreamQuery(q)) => {
                            mine.extend(q.positions);
                            unknown.extend(q.unwritten);
                            if q.next <= at {
                                return Err(Error::Invalid(format!(
                                    "log unit {head} made no progress on a stream query"
                                )));
                            }
                            at = q.next;
                        }
                        Ok(_) => {
                            return Err(Error::Invalid("log unit answered a stream query with something else".into()))
                        }
                        Err(e) => retry.on_error(self, e, "stream query").await?,
                    }
                }
            }
        }
        mine.sort_unstable();
        unknown.sort_unstable();
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
