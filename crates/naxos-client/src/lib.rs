//! The Naxos client library: connects to a cluster, caches its layout, and
//! drives appends and reads over chain replication.
//!
//! ```no_run
//! # async fn demo() -> Result<(), naxos_client::Error> {
//! use naxos_client::{Client, Config, Value};
//! let client = Client::connect(Config::new(["127.0.0.1:7400"])).await?;
//! let pos = client.append("hello".into()).await?;
//! match client.read(pos).await? {
//!     Value::Data(record) => assert_eq!(&record.payload[..], b"hello"),
//!     Value::Hole => unreachable!("an acknowledged append is never a hole"),
//! }
//! let stream = naxos_client::StreamId::from_name("orders");
//! client.append_to(&[stream], "order 1".into()).await?;
//! for (position, record) in client.read_stream(stream, naxos_client::Position(0)).await? {
//!     println!("{position}: {:?}", record.payload);
//! }
//! # Ok(()) }
//! ```
//!
//! What the client owns: the layout cache (refetched on `WrongEpoch`), the
//! chain-replication write path (head to tail; `Overwritten` at the head means
//! a new token), read repair and hole filling, stream reads through the log
//! units' stream index, and bounded retries that end in a clear error. It does
//! not own any server state.

pub mod admin;
mod append;
mod batch;
pub mod loglet;
mod read;
mod retry;
mod stream;
mod subscribe;

use bytes::Bytes;
/// An abort cause as a metric label value.
pub use naxos_wire::error::abort_label;
/// The deliberate protocol bugs of mutation tests (see `naxos_wire::mutation`).
pub use naxos_wire::mutation;
use naxos_wire::net::{Net, TcpNet};
use naxos_wire::proto::{request, response, Request};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::ErrorCode;
pub use naxos_wire::{AbortCause, Epoch, Layout, Position, ServerError, StreamId};
use std::sync::{Arc, RwLock};
use std::time::Duration;
pub use subscribe::Subscription;

/// A data entry as read back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The bytes appended.
    pub payload: Bytes,
    /// The streams the entry belongs to.
    pub streams: Vec<StreamId>,
    /// Per stream (in the same order), the stream's previous position when
    /// the entry was appended ([`naxos_wire::NO_BACKPOINTER`]: none known).
    pub backpointers: Vec<u64>,
}

impl Record {
    /// The position of `stream` before this entry, if the entry is in the
    /// stream and its sequencer knew one.
    pub fn backpointer(&self, stream: StreamId) -> Option<u64> {
        let i = self.streams.iter().position(|s| *s == stream)?;
        self.backpointers.get(i).copied().filter(|&b| b != naxos_wire::NO_BACKPOINTER)
    }
}

/// What a position holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// An appended entry.
    Data(Record),
    /// A hole: the position was filled because its writer never completed.
    Hole,
}

impl Value {
    fn from_entry(entry: naxos_wire::Entry) -> Value {
        if entry.kind == naxos_wire::EntryKind::Hole as i32 {
            return Value::Hole;
        }
        let mut streams = Vec::with_capacity(entry.streams.len());
        let mut backpointers = Vec::with_capacity(entry.streams.len());
        for (i, s) in entry.streams.iter().enumerate() {
            if let Some(s) = StreamId::from_slice(s) {
                streams.push(s);
                backpointers.push(entry.backpointers.get(i).copied().unwrap_or(naxos_wire::NO_BACKPOINTER));
            }
        }
        Value::Data(Record { payload: entry.payload, streams, backpointers })
    }
}

/// What can go wrong for a client call.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The position is below the trim mark.
    #[error("position {0} is trimmed")]
    Trimmed(Position),
    /// Nothing was written at the position and it is at or above the tail.
    #[error("position {0} is unwritten")]
    Unwritten(Position),
    /// `fill` found the position already written (with data or a hole).
    #[error("position {position} is already written ({})", if *.hole { "a hole" } else { "data" })]
    AlreadyWritten {
        /// The position.
        position: Position,
        /// Whether it holds a hole (else data).
        hole: bool,
    },
    /// An entry is larger than the cluster's entry limit; refused before a
    /// position was taken for it.
    #[error("entry of {bytes} bytes exceeds the limit of {max} bytes (the servers' --entry-bytes-max)")]
    TooLarge {
        /// The entry's payload size.
        bytes: usize,
        /// The limit (`Config::entry_bytes_max`).
        max: usize,
    },
    /// The request is not valid (bad position, ...).
    #[error("{0}")]
    Invalid(String),
    /// The cluster could not serve the call within the retry budget; for an
    /// append this means it may or may not have happened.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    /// A chain of the active segment has fewer replicas than the layout's
    /// `min_replicas` (failed nodes were taken out): the append was refused
    /// before a position was taken. It resumes by itself once a replica is back.
    #[error(
        "not enough replicas: chain {stripe} of the segment starting at {segment_start} has {} replica(s) [{}], \
         the layout asks for at least {need}; waiting for {} to come back",
        have.len(), have.join(", "), if missing.is_empty() { "a replica".to_string() } else { missing.join(", ") }
    )]
    NotEnoughReplicas {
        /// The chain (stripe index) that is short.
        stripe: usize,
        /// The active segment's first position.
        segment_start: u64,
        /// The replicas it has.
        have: Vec<String>,
        /// The replicas it needs.
        need: usize,
        /// The nodes taken out of it that may come back (the layout's `away`).
        missing: Vec<String>,
    },
    /// The sequencer refused an `append_checked` token: nothing was
    /// written and no position taken.
    #[error("aborted ({cause}): {message}")]
    Aborted {
        /// Why (a conflict, the sequencer's cache overflowed, a new sequencer).
        cause: AbortCause,
        /// The detail.
        message: String,
    },
    /// A server refused the call.
    #[error("{0}")]
    Server(ServerError),
}

/// The sequencer's conflict check for one append (see `Client::append_checked`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conflict {
    /// The reads saw every position below it.
    pub snapshot: Position,
    /// Keys read (see [`conflict_key`]).
    pub reads: Vec<u64>,
    /// Keys written.
    pub writes: Vec<u64>,
}

/// The conflict key of `key` of the object backed by `stream` (`whole`: of
/// the object as a whole, as a listing reads it): a 64-bit hash.
pub fn conflict_key(stream: StreamId, key: &[u8], whole: bool) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&stream.to_bytes());
    h.update(&[u8::from(whole)]);
    h.update(key);
    h.digest()
}

/// Client settings.
#[derive(Clone)]
pub struct Config {
    /// Addresses to fetch the layout from (any node of the cluster).
    pub seeds: Vec<String>,
    /// Connection settings.
    pub rpc: rpc::Options,
    /// How long a reader waits for a slow writer before it fills a hole below the tail (default 50 ms).
    pub hole_fill_wait: Duration,
    /// How many times a call is retried before it fails (default 12, about 4 s of back-off).
    pub retries_max: u32,
    /// The network (real TCP by default; the simulator supplies its own).
    pub net: Arc<dyn Net>,
    /// Batches of concurrent appends in flight at once (default 4): appends
    /// made while that many are out wait and go together in the next batch
    /// (one token request, one write request per replica). 0 sends every
    /// append on its own.
    pub batches_in_flight: usize,
    /// When the sequencer also heads the chain (as in `naxos dev`, or a node
    /// running every role), take tokens and write the heads in one `Append`
    /// round trip (default on). The price: if that round trip gets no answer,
    /// the appends fail as "may or may not have happened" instead of being
    /// retried, since their positions are unknown.
    pub combined_append: bool,
    /// The largest payload an append may carry (default
    /// [`naxos_wire::DEFAULT_ENTRY_BYTES_MAX`], as the servers' default
    /// `--entry-bytes-max`). Checked before a position is taken, so an
    /// oversize entry costs no position and no round trip; set it to the
    /// servers' limit if they were started with another one.
    pub entry_bytes_max: usize,
}

impl Config {
    /// Defaults, with these seed addresses.
    pub fn new<S: Into<String>>(seeds: impl IntoIterator<Item = S>) -> Config {
        Config {
            seeds: seeds.into_iter().map(Into::into).collect(),
            rpc: rpc::Options::default(),
            hole_fill_wait: Duration::from_millis(50),
            retries_max: 12,
            net: Arc::new(TcpNet),
            batches_in_flight: 4,
            combined_append: true,
            entry_bytes_max: naxos_wire::DEFAULT_ENTRY_BYTES_MAX,
        }
    }
}

struct Inner {
    config: Config,
    pool: Pool,
    layout: RwLock<Arc<Layout>>,
    /// Held while the layout is fetched again; holds when it last was.
    refresh: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    /// Where concurrent appends wait for their batch (none if coalescing is off).
    coalescer: Option<batch::Queue>,
}

/// A handle to a Naxos cluster; cheap to clone, safe to share between tasks.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

fn rpc_to_error(e: rpc::Error) -> Error {
    match e {
        rpc::Error::Server { error, .. } => match error.code {
            ErrorCode::Trimmed => Error::Trimmed(error.position),
            ErrorCode::Unwritten => Error::Unwritten(error.position),
            ErrorCode::Aborted => Error::Aborted { cause: error.abort, message: error.message },
            _ => Error::Server(error),
        },
        other => Error::Unavailable(other.to_string()),
    }
}

impl Client {
    /// Connects: fetches the layout from the first seed that answers.
    pub async fn connect(config: Config) -> Result<Client, Error> {
        if config.seeds.is_empty() {
            return Err(Error::Invalid("no cluster address given".into()));
        }
        let pool = Pool::new(config.net.clone(), config.rpc.clone());
        let layout = fetch_layout(&pool, &config.seeds).await?;
        let inner = Arc::new_cyclic(|weak| Inner {
            coalescer: (config.batches_in_flight > 0).then(|| batch::start(weak.clone(), config.batches_in_flight)),
            config,
            pool,
            layout: RwLock::new(Arc::new(layout)),
            refresh: tokio::sync::Mutex::new(None),
        });
        Ok(Client { inner })
    }

    /// The cached layout.
    pub fn layout(&self) -> Arc<Layout> {
        self.inner.layout.read().map(|l| l.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// The client's settings.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Refetches the layout from the layout servers and the seeds, keeping the
    /// newest epoch seen; called when a server says `WrongEpoch`.
    pub async fn refresh_layout(&self) -> Result<Arc<Layout>, Error> {
        let seen = self.layout().epoch;
        let mut last = self.inner.refresh.lock().await;
        *last = Some(tokio::time::Instant::now());
        let current = self.layout();
        if current.epoch > seen {
            return Ok(current); // another task refreshed meanwhile
        }
        let mut addrs = current.layout_servers.clone();
        for a in self.inner.config.seeds.iter().chain(current.all_nodes().iter()) {
            if !addrs.contains(a) {
                addrs.push(a.clone());
            }
        }
        // Everyone at once: a dead node must not hold the others' answers up,
        // nor a stalled one (a paused process keeps its connections open):
        // once one has answered, the others get a short grace and no more.
        let mut pending: futures::stream::FuturesUnordered<_> =
            addrs.iter().map(|a| get_layout(&self.inner.pool, a)).collect();
        let mut answers = Vec::new();
        let mut grace: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        loop {
            let next = async {
                match grace.as_mut() {
                    Some(g) => tokio::select! { n = futures::StreamExt::next(&mut pending) => n, _ = g => None },
                    None => futures::StreamExt::next(&mut pending).await,
                }
            };
            match next.await {
                Some(Ok(l)) => {
                    answers.push(l);
                    if grace.is_none() {
                        grace = Some(Box::pin(tokio::time::sleep(REFRESH_GRACE)));
                    }
                }
                Some(Err(_)) => {}
                None => break,
            }
        }
        let mut best: Option<Layout> = None;
        for l in answers {
            if l.cluster_id == current.cluster_id && best.as_ref().is_none_or(|b| l.epoch > b.epoch) {
                best = Some(l);
            }
        }
        let Some(best) = best else {
            return Err(Error::Unavailable("no layout server answered".into()));
        };
        if best.epoch > current.epoch {
            let new = Arc::new(best);
            if let Ok(mut w) = self.inner.layout.write() {
                *w = new.clone();
            }
            return Ok(new);
        }
        Ok(current)
    }

    /// Sends one request to `addr` under `layout`'s cluster id and epoch.
    async fn call(&self, addr: &str, layout: &Layout, body: request::Body) -> Result<response::Body, rpc::Error> {
        let req = Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body) };
        self.watched(addr, layout.epoch, self.inner.pool.call(addr, req)).await
    }

    /// Runs `call` to `addr`, but gives up on it (as on a lost connection:
    /// it may or may not have happened) once a newer layout than `epoch`
    /// names `addr` as taken out by the managers. A paused node keeps its
    /// connections open: without this, every request waiting on it would
    /// wait for its whole time-out after the cluster moved on.
    pub(crate) async fn watched<T>(
        &self,
        addr: &str,
        epoch: u64,
        call: impl std::future::Future<Output = Result<T, rpc::Error>>,
    ) -> Result<T, rpc::Error> {
        let watch = async {
            tokio::time::sleep(WATCH_AFTER).await;
            loop {
                // Every waiting request looks, but the layout is fetched at
                // most once per WATCH_EVERY for all of them.
                let fresh = self.inner.refresh.lock().await.is_some_and(|t| t.elapsed() < WATCH_EVERY);
                let layout =
                    if fresh { self.layout() } else { self.refresh_layout().await.unwrap_or_else(|_| self.layout()) };
                if layout.epoch > epoch && layout.away.iter().any(|a| a.addr == addr) {
                    return;
                }
                tokio::time::sleep(WATCH_EVERY).await;
            }
        };
        tokio::select! {
            biased;
            r = call => r,
            () = watch => Err(rpc::Error::ConnectionLost { addr: addr.to_string() }),
        }
    }

    /// The primary sequencer of `layout`.
    fn sequencer(layout: &Layout) -> Result<&str, Error> {
        layout.sequencers.first().map(String::as_str).ok_or_else(|| Error::Invalid("layout names no sequencer".into()))
    }

    /// The tail: the first position not yet handed out (CORFU's `check`).
    pub async fn tail(&self) -> Result<Position, Error> {
        Ok(Position(self.tails(&[]).await?.tail))
    }

    /// The tail and the last position of each of `streams` that has one.
    pub async fn tails(&self, streams: &[StreamId]) -> Result<naxos_wire::proto::TailOk, Error> {
        self.wait_tails(streams, Position(0), Duration::ZERO).await
    }

    /// As [`Client::tails`], but the sequencer answers only once there is
    /// something at or after `from` (one of `streams` has its last position
    /// there; with no streams, the tail is above it), or when `wait` is over
    /// (at most half the call time-out): a long poll, for tailing readers.
    pub async fn wait_tails(
        &self,
        streams: &[StreamId],
        from: Position,
        wait: Duration,
    ) -> Result<naxos_wire::proto::TailOk, Error> {
        let raw: Vec<Bytes> = streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect();
        let wait_ms = wait.min(self.config().rpc.timeout_call / 2).as_millis().min(u128::from(u32::MAX)) as u32;
        let mut retry = retry::Retry::new(self.config());
        loop {
            let layout = self.layout();
            let body =
                request::Body::SeqTail(naxos_wire::proto::SeqTail { streams: raw.clone(), wait_from: from.0, wait_ms });
            match self.call(Self::sequencer(&layout)?, &layout, body).await {
                Ok(response::Body::Tail(t)) => return Ok(t),
                Ok(_) => return Err(Error::Invalid("sequencer answered a tail query with something else".into())),
                Err(e) => retry.on_error(self, e, "tail").await?,
            }
        }
    }

    /// Discards every position below `position` on every log unit. Positions
    /// at or above the tail cannot be trimmed.
    pub async fn trim(&self, position: Position) -> Result<(), Error> {
        let tail = self.tail().await?;
        if position > tail {
            return Err(Error::Invalid(format!("cannot trim at {position}: it is above the tail {tail}")));
        }
        let layout = self.layout();
        for (segment, _) in layout.segments.iter().enumerate().filter(|(_, s)| s.start <= position.0) {
            loglet::of_segment(&layout, segment)?.trim(self, position).await?;
        }
        Ok(())
    }
}

/// Asks one node for its layout.
/// How long a request waits before its client starts to look for a newer
/// layout that took its node out.
const WATCH_AFTER: Duration = Duration::from_millis(300);
/// How often it looks then.
const WATCH_EVERY: Duration = Duration::from_millis(200);
/// How long a layout refresh waits for the other nodes once one answered.
const REFRESH_GRACE: Duration = Duration::from_millis(100);

async fn get_layout(pool: &Pool, addr: &str) -> Result<Layout, rpc::Error> {
    let req = Request {
        id: 0,
        cluster_id: String::new(),
        epoch: 0,
        body: Some(request::Body::GetLayout(Default::default())),
    };
    match pool.call(addr, req).await? {
        response::Body::Layout(naxos_wire::proto::LayoutOk { layout: Some(l) }) => Ok(l),
        _ => Err(rpc::Error::Server {
            addr: addr.to_string(),
            error: ServerError::new(ErrorCode::BadRequest, "answer to GetLayout holds no layout"),
        }),
    }
}

/// The layout from the first of `seeds` that answers.
async fn fetch_layout(pool: &Pool, seeds: &[String]) -> Result<Layout, Error> {
    let mut errors = Vec::new();
    for addr in seeds {
        match get_layout(pool, addr).await {
            Ok(l) => return Ok(l),
            Err(rpc::Error::Server { error, .. }) if error.code == ErrorCode::NotBootstrapped => {
                return Err(Error::Server(error));
            }
            Err(e) => errors.push(e.to_string()),
        }
    }
    Err(Error::Unavailable(format!("no node answered: {}", errors.join("; "))))
}
