//! The calling side of a connection: one multiplexed TCP connection per peer,
//! many requests in flight on it, responses matched by request id; and a pool
//! that keeps one such connection per address and reconnects when one breaks.
//! Both the client library and servers (sequencer recovery) call through it.

use crate::frame::{self, FrameReader};
use crate::net::Net;
use crate::proto::{request, response, Request, Response};
use crate::ServerError;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Why a call did not produce a response.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to the peer failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection broke before the response arrived; the request may or may not have been applied.
    #[error("connection to {addr} lost; the request may or may not have been applied")]
    ConnectionLost {
        /// The peer.
        addr: String,
    },
    /// No response within the time-out; the request may or may not have been applied.
    #[error("no response from {addr} within {timeout:?}; the request may or may not have been applied")]
    Timeout {
        /// The peer.
        addr: String,
        /// The time-out.
        timeout: Duration,
    },
    /// The peer answered with an error.
    #[error("{addr}: {error}")]
    Server {
        /// The peer.
        addr: String,
        /// What it said.
        error: ServerError,
    },
}

impl Clone for Error {
    fn clone(&self) -> Error {
        match self {
            Error::Connect { addr, source } => {
                Error::Connect { addr: addr.clone(), source: std::io::Error::new(source.kind(), source.to_string()) }
            }
            Error::ConnectionLost { addr } => Error::ConnectionLost { addr: addr.clone() },
            Error::Timeout { addr, timeout } => Error::Timeout { addr: addr.clone(), timeout: *timeout },
            Error::Server { addr, error } => Error::Server { addr: addr.clone(), error: error.clone() },
        }
    }
}

impl Error {
    /// The server's error, if the peer answered with one.
    pub fn server(&self) -> Option<&ServerError> {
        match self {
            Error::Server { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Settings of connections.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time-out for establishing a connection.
    pub timeout_connect: Duration,
    /// Time-out for one call.
    pub timeout_call: Duration,
    /// Largest frame accepted from the peer.
    pub frame_bytes_max: usize,
    /// Requests in flight per connection before callers wait.
    pub inflight_max: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout_connect: Duration::from_secs(2),
            timeout_call: Duration::from_secs(5),
            frame_bytes_max: crate::DEFAULT_FRAME_BYTES_MAX,
            inflight_max: 1024,
        }
    }
}

/// Calls waiting for their response, by request id (ordered, so that a broken
/// connection wakes its waiters in the same order in every replay).
type Pending = Arc<Mutex<BTreeMap<u64, oneshot::Sender<Response>>>>;

/// One multiplexed connection to a peer.
#[derive(Clone)]
pub struct Conn {
    addr: Arc<str>,
    tx: mpsc::UnboundedSender<Request>,
    pending: Pending,
    next_id: Arc<AtomicU64>,
    closed: Arc<AtomicBool>,
    /// Why the server closed the connection, if it said (an answer with id
    /// 0: too many connections, a stalled or oversized frame): what a call
    /// that finds the connection gone reports instead of "lost".
    farewell: Arc<Mutex<Option<ServerError>>>,
    permits: Arc<Semaphore>,
    timeout_call: Duration,
}

/// Removes a call's pending entry when the call is abandoned (time-out, cancel).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut map) = self.pending.lock() {
            map.remove(&self.id);
        }
    }
}

impl Conn {
    /// Connects to `addr` and starts the connection's reader and writer tasks.
    pub async fn connect(net: &dyn Net, addr: &str, options: &Options) -> Result<Conn, Error> {
        let stream = match tokio::time::timeout(options.timeout_connect, net.connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(source)) => return Err(Error::Connect { addr: addr.to_string(), source }),
            Err(_) => {
                let source = std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out");
                return Err(Error::Connect { addr: addr.to_string(), source });
            }
        };
        let (r, w) = tokio::io::split(stream);
        let (tx, rx) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let closed = Arc::new(AtomicBool::new(false));
        let conn = Conn {
            addr: addr.into(),
            tx,
            pending: pending.clone(),
            next_id: Arc::new(AtomicU64::new(1)),
            closed: closed.clone(),
            farewell: Arc::default(),
            permits: Arc::new(Semaphore::new(options.inflight_max.max(1))),
            timeout_call: options.timeout_call,
        };
        let closed_w = closed.clone();
        // When the writer stops (every handle to the connection dropped, or
        // a write failed), the reader stops too, so the socket is closed
        // even if the peer never answers the shutdown (it is partitioned
        // away, or paused): otherwise each connection dropped while its peer
        // was unreachable kept its socket and reader task for good (a soak
        // seed ran a simulated host out of ports).
        let (writer_done, mut stop_reading) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = frame::write_loop(w, rx).await;
            closed_w.store(true, Ordering::Release);
            drop(writer_done);
        });
        let mut reader = FrameReader::new(r, options.frame_bytes_max);
        let addr_r = conn.addr.clone();
        let farewell = conn.farewell.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    next = reader.next::<Response>() => next,
                    _ = &mut stop_reading => break,
                };
                match next {
                    // Id 0 is never a request's (ids start at 1): an error
                    // about the whole connection (refused: too many
                    // connections), for every call waiting on it.
                    Ok(Some(resp)) if resp.id == 0 => {
                        if let (Some(response::Body::Error(e)), Ok(mut f)) = (&resp.body, farewell.lock()) {
                            *f = Some(ServerError::from_proto(e.clone()));
                        }
                        if let Ok(mut m) = pending.lock() {
                            for (id, w) in std::mem::take(&mut *m) {
                                let _ = w.send(Response { id, body: resp.body.clone() });
                            }
                        }
                    }
                    Ok(Some(resp)) => {
                        let waiter = pending.lock().ok().and_then(|mut m| m.remove(&resp.id));
                        if let Some(w) = waiter {
                            let _ = w.send(resp);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(peer = %addr_r, "connection closed: {e}");
                        break;
                    }
                }
            }
            closed.store(true, Ordering::Release);
            // Dropping the senders wakes every waiter with ConnectionLost.
            if let Ok(mut m) = pending.lock() {
                m.clear();
            }
        });
        Ok(conn)
    }

    /// Whether the connection has broken.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The peer's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends `req` (its id is assigned here) and waits for the response; a
    /// server error becomes `Error::Server`.
    pub async fn call(&self, req: Request) -> Result<response::Body, Error> {
        self.call_timeout(req, self.timeout_call).await
    }

    /// Like `call`, with an explicit time-out.
    pub async fn call_timeout(&self, mut req: Request, timeout: Duration) -> Result<response::Body, Error> {
        let lost = || match self.farewell.lock().ok().and_then(|f| f.clone()) {
            Some(error) => Error::Server { addr: self.addr.to_string(), error },
            None => Error::ConnectionLost { addr: self.addr.to_string() },
        };
        let _permit = self.permits.acquire().await.map_err(|_| lost())?;
        if self.is_closed() {
            return Err(lost());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        req.id = id;
        let (tx, rx) = oneshot::channel();
        self.pending.lock().map_err(|_| lost())?.insert(id, tx);
        let _guard = PendingGuard { pending: &self.pending, id };
        if self.tx.send(req).is_err() {
            return Err(lost());
        }
        let resp = match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(_)) => return Err(lost()),
            Err(_) => return Err(Error::Timeout { addr: self.addr.to_string(), timeout }),
        };
        match resp.body {
            Some(response::Body::Error(e)) => {
                Err(Error::Server { addr: self.addr.to_string(), error: ServerError::from_proto(e) })
            }
            Some(body) => Ok(body),
            None => Err(Error::Server {
                addr: self.addr.to_string(),
                error: ServerError::new(crate::ErrorCode::BadRequest, "empty response body"),
            }),
        }
    }
}

/// What each request of a batch came to: its answer's body, or its error.
pub type BatchResults = Vec<Result<response::Body, Error>>;

impl Conn {
    /// Sends `bodies` as one `Batch` under `cluster_id` and `epoch` and waits
    /// for the one answer; the outer error (the batch got no answer) applies to
    /// every request in it. A single body goes out as a plain request.
    pub async fn call_batch(
        &self,
        cluster_id: &str,
        epoch: u64,
        bodies: Vec<request::Body>,
    ) -> Result<BatchResults, Error> {
        let wrap = |body| Request { id: 0, cluster_id: cluster_id.to_string(), epoch, body: Some(body) };
        if bodies.len() == 1 {
            let body = bodies.into_iter().next().map(wrap).unwrap_or_default();
            return Ok(vec![self.call(body).await]);
        }
        let count = bodies.len();
        let requests = bodies
            .into_iter()
            .enumerate()
            .map(|(i, body)| Request { id: i as u64, cluster_id: String::new(), epoch: 0, body: Some(body) })
            .collect();
        let bad = |why: &str| Error::Server {
            addr: self.addr.to_string(),
            error: ServerError::new(crate::ErrorCode::BadRequest, format!("answer to a batch {why}")),
        };
        let answer = match self.call(wrap(request::Body::Batch(crate::proto::Batch { requests }))).await? {
            response::Body::Batch(ok) => ok,
            _ => return Err(bad("is not a batch answer")),
        };
        if answer.responses.len() != count {
            return Err(bad(&format!("holds {} answers for {count} requests", answer.responses.len())));
        }
        Ok(answer
            .responses
            .into_iter()
            .map(|resp| match resp.body {
                Some(response::Body::Error(e)) => {
                    Err(Error::Server { addr: self.addr.to_string(), error: ServerError::from_proto(e) })
                }
                Some(body) => Ok(body),
                None => Err(bad("holds an empty answer")),
            })
            .collect())
    }
}

/// After a failed connect to a peer, further calls to it fail at once for
/// this long instead of dialling again: a burst of calls to an unreachable
/// peer (every tail query probes every layout server) would otherwise open
/// a connect attempt each, holding a socket until its time-out.
pub const RECONNECT_AFTER: Duration = Duration::from_millis(100);

/// The last failed connect to one peer, if recent; its lock makes connects
/// to that peer one at a time.
type Dialing = Arc<tokio::sync::Mutex<Option<(tokio::time::Instant, String)>>>;

/// One connection per peer address, made on first use and remade after a break.
#[derive(Clone)]
pub struct Pool {
    net: Arc<dyn Net>,
    options: Options,
    conns: Arc<tokio::sync::Mutex<BTreeMap<String, Conn>>>,
    dialing: Arc<Mutex<BTreeMap<String, Dialing>>>,
}

impl Pool {
    /// An empty pool.
    pub fn new(net: Arc<dyn Net>, options: Options) -> Pool {
        Pool { net, options, conns: Arc::default(), dialing: Arc::default() }
    }

    /// The pool's options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// A live connection to `addr`.
    pub async fn get(&self, addr: &str) -> Result<Conn, Error> {
        if let Some(c) = self.live(addr).await {
            return Ok(c);
        }
        // One connect at a time per peer (without the pool's lock, so one
        // dead peer does not stall calls to the others): those who waited
        // take the connection it made, or its failure while it is recent.
        let slot = {
            let mut dialing = self.dialing.lock().unwrap_or_else(|e| e.into_inner());
            dialing.entry(addr.to_string()).or_default().clone()
        };
        let mut failed = slot.lock().await;
        if let Some(c) = self.live(addr).await {
            return Ok(c);
        }
        if let Some((at, why)) = failed.as_ref() {
            if at.elapsed() < RECONNECT_AFTER {
                let source = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why.clone());
                return Err(Error::Connect { addr: addr.to_string(), source });
            }
        }
        match Conn::connect(self.net.as_ref(), addr, &self.options).await {
            Ok(c) => {
                *failed = None;
                self.conns.lock().await.insert(addr.to_string(), c.clone());
                Ok(c)
            }
            Err(e) => {
                *failed = Some((tokio::time::Instant::now(), format!("{e} (within the last {RECONNECT_AFTER:?})")));
                Err(e)
            }
        }
    }

    /// The pooled connection to `addr`, if it is up.
    async fn live(&self, addr: &str) -> Option<Conn> {
        self.conns.lock().await.get(addr).filter(|c| !c.is_closed()).cloned()
    }

    /// Calls `addr` with `req`.
    pub async fn call(&self, addr: &str, req: Request) -> Result<response::Body, Error> {
        self.get(addr).await?.call(req).await
    }

    /// Calls `addr` with `bodies` as one batch (see `Conn::call_batch`).
    pub async fn call_batch(
        &self,
        addr: &str,
        cluster_id: &str,
        epoch: u64,
        bodies: Vec<request::Body>,
    ) -> Result<BatchResults, Error> {
        self.get(addr).await?.call_batch(cluster_id, epoch, bodies).await
    }
}
