//! Where a role sends its answer: back to the connection that asked (which also
//! releases the connection's in-flight slot), to an in-process waiter, or into
//! its slot of a `Batch`, whose one answer goes out when its last slot is filled.

use crate::metrics::{self, Kind};
use naxos_wire::proto::{response, Response};
use naxos_wire::ServerError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};

/// The answer address of one request.
pub struct Reply {
    id: u64,
    to: To,
    /// What the request was and when it was taken, for the metrics (only
    /// when the process records them).
    timed: Option<(Kind, Instant)>,
}

enum To {
    Conn { tx: mpsc::UnboundedSender<Response>, inflight: Arc<AtomicUsize> },
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
    /// Answer on a connection; `inflight` is the connection's count, released on send.
    pub fn conn(id: u64, tx: mpsc::UnboundedSender<Response>, inflight: Arc<AtomicUsize>) -> Reply {
        Reply { id, to: To::Conn { tx, inflight }, timed: None }
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
            To::Conn { tx, inflight } => {
                inflight.fetch_sub(1, Ordering::AcqRel);
                if let Some(h) = metrics::get() {
                    h.in_flight.decrement(1.0);
                }
                let _ = tx.send(resp);
            }
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
