//! Where a role sends its answer: back to the connection that asked (through
//! its `Outbox`, which counts the answer against the connection until it is
//! written to the socket), to an in-process waiter, or into its slot of a
//! `Batch`, whose one answer goes out when its last slot is filled.

use crate::metrics::{self, Kind};
use naxos_wire::proto::{response, Response};
use naxos_wire::ServerError;
use prost::Message;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::AsyncWrite;
use tokio::sync::{mpsc, oneshot, Notify};

/// Bytes of answers one connection may have queued and not yet written
/// before the server stops reading its requests (docs/operations.md): a
/// client that does not read its answers is held back by TCP, not by the
/// server's memory (12,000 unread 64 KiB reads once cost 747 MiB).
pub const BACKLOG_BYTES_MAX: usize = 16 << 20;

/// Reads (`Read`, `ReadRange`, `RangeDigest`, or a batch holding one) one
/// connection may have dispatched and not yet answered: their answers'
/// sizes are known only once built, so without a bound a client that sends
/// thousands of reads at once has them all built before the backlog is
/// seen to be full.
pub const READS_PENDING_MAX: usize = 64;

/// A connection's answers on their way to the socket.
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    backlog: Arc<Backlog>,
}

/// What a connection has taken and not yet written back: shared by its
/// reader, its answers' `Reply`s and its writer.
#[derive(Default)]
pub struct Backlog {
    /// Requests taken whose answers are not written yet.
    inflight: AtomicUsize,
    /// Bytes of answers queued and not written yet.
    queued: AtomicUsize,
    /// Reads dispatched whose answers are not queued yet.
    reads_pending: AtomicUsize,
    /// The writer stopped (the socket failed or closed).
    closed: AtomicBool,
    /// Woken when the writer wrote or stopped.
    drained: Notify,
}

/// One queued answer: its size, and whether it holds an in-flight slot.
pub struct Outgoing {
    resp: Response,
    bytes: usize,
    slot: bool,
}

impl Outbox {
    /// A connection's outbox and the queue its writer (`write_loop`) drains.
    pub fn new() -> (Arc<Outbox>, mpsc::UnboundedReceiver<Outgoing>, Arc<Backlog>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let backlog = Arc::new(Backlog::default());
        (Arc::new(Outbox { tx, backlog: backlog.clone() }), rx, backlog)
    }

    /// Queues an answer given without taking an in-flight slot (a refusal).
    pub fn refuse(&self, resp: Response) {
        self.push(resp, false, false);
    }

    fn push(&self, resp: Response, slot: bool, read: bool) {
        let bytes = resp.encoded_len();
        self.backlog.queued.fetch_add(bytes, Ordering::AcqRel);
        if read {
            self.backlog.reads_pending.fetch_sub(1, Ordering::AcqRel);
            self.backlog.drained.notify_waiters();
        }
        if let Err(lost) = self.tx.send(Outgoing { resp, bytes, slot }) {
            // The writer is gone: nothing will be written, release it all.
            self.backlog.release(&[lost.0]);
        }
    }

    /// Takes an in-flight slot for a request about to be dispatched
    /// (`read`: one whose answer may be large, see [`READS_PENDING_MAX`]).
    pub fn take_slot(&self, read: bool) {
        if read {
            self.backlog.reads_pending.fetch_add(1, Ordering::AcqRel);
        }
        self.backlog.inflight.fetch_add(1, Ordering::AcqRel);
        if let Some(h) = metrics::get() {
            h.in_flight.increment(1.0);
        }
    }

    /// Requests taken whose answers are not written yet.
    pub fn inflight(&self) -> usize {
        self.backlog.inflight.load(Ordering::Acquire)
    }

    /// Waits until at most `max` bytes of answers are queued and fewer than
    /// [`READS_PENDING_MAX`] reads are being answered (or the writer
    /// stopped): the reader calls it before taking the next request.
    pub async fn drained_to(&self, max: usize) {
        let b = &self.backlog;
        loop {
            let woken = b.drained.notified();
            let room =
                b.queued.load(Ordering::Acquire) <= max && b.reads_pending.load(Ordering::Acquire) < READS_PENDING_MAX;
            if room || b.closed.load(Ordering::Acquire) {
                return;
            }
            woken.await;
        }
    }
}

impl Backlog {
    fn release(&self, written: &[Outgoing]) {
        let bytes: usize = written.iter().map(|o| o.bytes).sum();
        let slots = written.iter().filter(|o| o.slot).count();
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        if slots > 0 {
            self.inflight.fetch_sub(slots, Ordering::AcqRel);
            if let Some(h) = metrics::get() {
                h.in_flight.decrement(slots as f64);
            }
        }
        self.drained.notify_waiters();
    }

    /// Writes every queued answer as frames (coalesced, as
    /// `naxos_wire::frame::write_loop` does) and releases each (its bytes,
    /// its in-flight slot) once written; returns when every `Outbox` and
    /// `Reply` of the connection is gone or the socket fails.
    pub async fn write_loop<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        w: W,
        mut rx: mpsc::UnboundedReceiver<Outgoing>,
    ) -> std::io::Result<()> {
        let result = naxos_wire::frame::write_loop_with(
            w,
            &mut rx,
            |o, buf| naxos_wire::frame::encode(&o.resp, buf),
            |written| self.release(written),
        )
        .await;
        // Whatever was not written never will be: release it, and wake a
        // reader waiting for room.
        self.closed.store(true, Ordering::Release);
        rx.close();
        let mut left = Vec::new();
        while let Ok(o) = rx.try_recv() {
            left.push(o);
        }
        self.release(&left);
        result
    }
}

/// The answer address of one request.
pub struct Reply {
    id: u64,
    to: To,
    /// What the request was and when it was taken, for the metrics (only
    /// when the process records them).
    timed: Option<(Kind, Instant)>,
}

enum To {
    Conn { outbox: Arc<Outbox>, read: bool },
    Once(oneshot::Sender<Response>),
    Batch { collector: Arc<Collector>, index: usize },
}

/// The answers of one `Batch` as they arrive, and where the whole goes.
pub struct Collector {
    state: Mutex<Gathering>,
}

struct Gathering {
    responses: Vec<Response>,
    remaining: usize,
    reply: Option<Reply>,
}

impl Reply {
    /// Answer on a connection, whose in-flight slot (taken by the caller
    /// with the same `read`) the answer holds until the writer wrote it.
    pub fn conn(id: u64, outbox: Arc<Outbox>, read: bool) -> Reply {
        Reply { id, to: To::Conn { outbox, read }, timed: None }
    }

    /// Answer an in-process waiter.
    pub fn once(id: u64) -> (Reply, oneshot::Receiver<Response>) {
        let (tx, rx) = oneshot::channel();
        (Reply { id, to: To::Once(tx), timed: None }, rx)
    }

    /// One answer address per request of a batch of `count`; the batch's
    /// answer goes to `reply` once every one of them was used.
    pub fn batch(reply: Reply, count: usize) -> Vec<Reply> {
        let gathering = Gathering { responses: vec![Response::default(); count], remaining: count, reply: Some(reply) };
        let collector = Arc::new(Collector { state: Mutex::new(gathering) });
        (0..count)
            .map(|index| Reply { id: 0, to: To::Batch { collector: collector.clone(), index }, timed: None })
            .collect()
    }

    /// Sets the request id the answer carries (a batch's requests keep theirs).
    pub fn with_id(mut self, id: u64) -> Reply {
        self.id = id;
        self
    }

    /// Counts the request as taken (by kind) and times its answer, if the
    /// process records metrics.
    pub fn timed(mut self, kind: Kind) -> Reply {
        if metrics::get().is_some() {
            metrics::request(kind);
            self.timed = Some((kind, Instant::now()));
        }
        self
    }

    /// Sends the result (a lost receiver means the asker went away; nothing to do).
    pub fn send(self, result: Result<response::Body, ServerError>) {
        if let Some((kind, started)) = self.timed {
            metrics::answered(kind, started, result.as_ref().err().map(|e| e.code));
        }
        let body = match result {
            Ok(b) => b,
            Err(e) => response::Body::Error(e.to_proto()),
        };
        let resp = Response { id: self.id, body: Some(body) };
        match self.to {
            To::Conn { outbox, read } => outbox.push(resp, true, read),
            To::Once(tx) => {
                let _ = tx.send(resp);
            }
            To::Batch { collector, index } => {
                let done = {
                    let Ok(mut g) = collector.state.lock() else { return };
                    g.responses[index] = resp;
                    g.remaining -= 1;
                    if g.remaining == 0 {
                        g.reply.take().map(|r| (r, std::mem::take(&mut g.responses)))
                    } else {
                        None
                    }
                };
                if let Some((reply, responses)) = done {
                    reply.send(Ok(response::Body::Batch(naxos_wire::proto::BatchOk { responses })));
                }
            }
        }
    }
}

/// The empty success body.
pub fn ok() -> response::Body {
    response::Body::Ok(naxos_wire::proto::Empty {})
}
