//! Where a role sends its answer: back to the connection that asked (which also
//! releases the connection's in-flight slot), or to an in-process waiter.

use naxos_wire::proto::{response, Response};
use naxos_wire::ServerError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// The answer address of one request.
pub struct Reply {
    id: u64,
    to: To,
}

enum To {
    Conn { tx: mpsc::UnboundedSender<Response>, inflight: Arc<AtomicUsize> },
    Once(oneshot::Sender<Response>),
}

impl Reply {
    /// Answer on a connection; `inflight` is the connection's count, released on send.
    pub fn conn(id: u64, tx: mpsc::UnboundedSender<Response>, inflight: Arc<AtomicUsize>) -> Reply {
        Reply { id, to: To::Conn { tx, inflight } }
    }

    /// Answer an in-process waiter.
    pub fn once(id: u64) -> (Reply, oneshot::Receiver<Response>) {
        let (tx, rx) = oneshot::channel();
        (Reply { id, to: To::Once(tx) }, rx)
    }

    /// Sends the result (a lost receiver means the asker went away; nothing to do).
    pub fn send(self, result: Result<response::Body, ServerError>) {
        let body = match result {
            Ok(b) => b,
            Err(e) => response::Body::Error(e.to_proto()),
        };
        let resp = Response { id: self.id, body: Some(body) };
        match self.to {
            To::Conn { tx, inflight } => {
                inflight.fetch_sub(1, Ordering::AcqRel);
                let _ = tx.send(resp);
            }
            To::Once(tx) => {
                let _ = tx.send(resp);
            }
        }
    }
}

/// The empty success body.
pub fn ok() -> response::Body {
    response::Body::Ok(naxos_wire::proto::Empty {})
}
