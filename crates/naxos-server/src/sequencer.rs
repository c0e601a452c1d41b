//! The sequencer role: hands out positions (tokens) and per-stream back-pointers
//! from memory. Its state is soft: after a start or a seal it refuses tokens
//! until it is bootstrapped with the tail and stream tails recovered from the
//! log units (`recovery`), so it never hands out a position that may hold data.
//!
//! One number is kept durably: the token ceiling, above every position ever
//! handed out. Tokens that were handed out but never written leave no trace
//! on the log units, so without it a restarted sequencer would report a tail
//! below one a client already saw (the simulator found this: seed 78). The
//! ceiling is raised a block at a time, so it costs one small atomic write per
//! block; after a crash the sequencer starts at the ceiling, and the unused
//! rest of the block reads as holes. A clean stop stores the exact tail and
//! every stream's last position: a restart goes on from them in the same
//! epoch. After a crash the stream tails are lost, and tokens handed out
//! before it may still be written, unknown to the log units, so the node
//! moves the cluster to a new epoch first (see `node::start_recovery`). The
//! block follows the token rate (about a quarter second of tokens, at least
//! the configured minimum), so a quiet cluster leaves small gaps and a busy one
//! does few writes.

use crate::conflicts::{Conflicts, CONFLICT_KEYS_MAX};
use crate::fence::Fence;
use crate::reply::{ok, Reply};
use bytes::Bytes;
use naxos_wire::proto::{self, request, response, Request};
use naxos_wire::{Epoch, ErrorCode, Position, ServerError, StreamId, NO_BACKPOINTER};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most positions one token request may reserve.
pub const TOKEN_COUNT_MAX: u32 = 1 << 16;
/// Most streams one token request may name.
pub const TOKEN_STREAMS_MAX: usize = 64;
/// The smallest block the durable token ceiling is raised by (default).
pub const CEILING_BLOCK: u64 = 1024;
/// The largest block the ceiling is raised by, however fast tokens go.
pub const CEILING_BLOCK_MAX: u64 = 1 << 18;
/// The longest a tail query may wait for something new (`SeqTail.wait_ms`).
pub const TAIL_WAIT_MS_MAX: u32 = 10_000;
/// How much of the current token rate one block covers.
const CEILING_LEAD: std::time::Duration = std::time::Duration::from_millis(250);
/// The ceiling's file in the data directory.
pub const CEILING_FILE: &str = "sequencer.json";

/// The sequencer's protocol logic.
#[derive(Debug)]
pub struct Sequencer {
    /// The epoch its state is for (at most the fence).
    epoch: Epoch,
    /// The node's epoch (shared with its other roles; see `fence`).
    fence: Arc<Fence>,
    /// `None` until bootstrapped for `epoch`.
    state: Option<State>,
    /// The durable token ceiling, if the sequencer keeps one: every position
    /// ever handed out is below it.
    ceiling: Option<u64>,
    /// The smallest step the ceiling is raised by.
    ceiling_block: u64,
    /// The first position this process has not handed out (set at a seal):
    /// exact, unlike the ceiling, so a sequencer sealed and bootstrapped again
    /// without a restart leaves no block of holes behind.
    issued: Option<u64>,
    /// The stream tails a clean stop stored, merged into the first bootstrap.
    saved_streams: Vec<(StreamId, u64)>,
    /// The epoch the ceiling file names: no token was ever handed out in a
    /// later one (a restart after a crash knows which epochs it may not serve again).
    recorded: Epoch,
    /// Whether the ceiling was stored (on this node and the log units of
    /// the layout) since the last bootstrap into a new epoch: until it is,
    /// the first token or tail stores it again, on the new chains.
    placed: bool,
    /// How many keys the conflict cache holds.
    conflict_keys_max: usize,
}

#[derive(Debug)]
struct State {
    next: u64,
    streams: HashMap<StreamId, u64>,
    /// The last writes of keys, for transactions' conflict checks.
    conflicts: Conflicts,
}

/// A message to the sequencer task.
pub enum Op {
    /// A client request (token, tail, bootstrap).
    Request(Request, Reply),
    /// The sequencer's requests of one `Batch`, handled in order.
    Requests(Vec<(Request, Reply)>),
    /// Seal at an epoch; the sequencer then waits for a bootstrap at that epoch.
    Seal(Epoch, oneshot::Sender<Result<Option<u64>, ServerError>>),
    /// Report (epoch, next position if ready).
    Info(oneshot::Sender<(Epoch, Option<Position>)>),
}

fn parse_streams(raw: &[Bytes]) -> Result<Vec<StreamId>, ServerError> {
    raw.iter()
        .map(|s| {
            StreamId::from_slice(s).ok_or_else(|| ServerError::new(ErrorCode::BadRequest, "stream ids are 16 bytes"))
        })
        .collect()
}

impl Default for Sequencer {
    fn default() -> Self {
        Sequencer::new()
    }
}

impl Sequencer {
    /// A sequencer that waits for its bootstrap.
    pub fn new() -> Sequencer {
        Sequencer {
            epoch: Epoch(0),
            fence: Fence::new(Epoch(0)),
            state: None,
            ceiling: None,
            ceiling_block: CEILING_BLOCK,
            issued: None,
            saved_streams: Vec::new(),
            recorded: Epoch(0),
            placed: false,
            conflict_keys_max: CONFLICT_KEYS_MAX,
        }
    }

    /// Holds at most `keys` keys in its conflict cache.
    pub fn with_conflict_keys_max(mut self, keys: usize) -> Sequencer {
        self.conflict_keys_max = keys.max(1);
        self
    }

    /// Fences requests with the node's shared epoch.
    pub fn with_fence(mut self, fence: Arc<Fence>) -> Sequencer {
        self.fence = fence;
        self
    }

    /// Knows that the ceiling file already names `epoch`.
    pub fn recorded_at(mut self, epoch: Epoch) -> Sequencer {
        self.recorded = epoch;
        self
    }

    /// Also starts from the stream tails a clean stop stored: the first
    /// bootstrap takes each one it does not exceed.
    pub fn with_saved_streams(mut self, streams: Vec<(StreamId, u64)>) -> Sequencer {
        self.saved_streams = streams;
        self
    }

    /// A sequencer that keeps a durable token ceiling, starting from the one
    /// it stored before (0 for a new one), raised at least `block` positions at a time.
    pub fn with_ceiling(ceiling: u64, block: u64) -> Sequencer {
        Sequencer { ceiling: Some(ceiling), ceiling_block: block.max(1), ..Sequencer::new() }
    }

    /// The least ceiling that must be durable before `req` can be answered,
    /// if `req` needs positions at or above the current one.
    ///
    /// A tail query needs it too: a bootstrap may have raised the next
    /// position above the ceiling (the last sequencer's floor), and a tail a
    /// client saw must not go back after a crash either (seed 400740).
    pub fn ceiling_needed(&self, req: &Request) -> Option<u64> {
        let ceiling = self.ceiling?;
        let state = self.state.as_ref()?;
        let end = match &req.body {
            // A count the token handler refuses needs no ceiling: raised for
            // `Token(count 2^32-1)`, the durable ceiling jumped 2^32 ahead and
            // the next sequencer started there (the byzantine simulator
            // client found it).
            Some(request::Body::Token(t)) if t.count == 0 || t.count > TOKEN_COUNT_MAX => return None,
            Some(request::Body::Token(t)) => state.next.checked_add(u64::from(t.count))?,
            Some(request::Body::SeqTail(_)) => state.next,
            _ => return None,
        };
        // After a bootstrap into a new epoch the ceiling is stored again,
        // on the new chains, before the first token or tail: the units that
        // held it may all be out of the new layout, and a later sequencer
        // started from the new ones would go below a tail this one showed
        // (soak seed 13013454: a primary bootstrapped by a reconfiguration
        // showed 84, the next one started at 68).
        if !self.placed {
            return Some(end.max(ceiling));
        }
        (end > ceiling).then_some(end)
    }

    /// The ceiling to store when `end` is needed, given that `issued`
    /// positions went out over `elapsed`: `end` plus about a quarter second of
    /// tokens at that rate, within the block bounds.
    pub fn next_ceiling(&self, end: u64, issued: u64, elapsed: std::time::Duration) -> u64 {
        let per_lead = issued as f64 * CEILING_LEAD.as_secs_f64() / elapsed.as_secs_f64().max(1e-3);
        end + (per_lead as u64).clamp(self.ceiling_block, CEILING_BLOCK_MAX.max(self.ceiling_block))
    }

    /// Records that `ceiling` is durable.
    pub fn raise_ceiling(&mut self, ceiling: u64) {
        self.placed = true;
        if let Some(c) = &mut self.ceiling {
            *c = (*c).max(ceiling);
        }
    }

    /// The next position it would hand out, if ready.
    pub fn next(&self) -> Option<Position> {
        self.state.as_ref().map(|s| Position(s.next))
    }

    /// Its epoch.
    pub fn epoch(&self) -> Epoch {
        self.epoch
    }

    fn check_epoch(&self, theirs: Epoch) -> Result<&State, ServerError> {
        self.fence.admit(theirs)?;
        match &self.state {
            Some(s) if theirs == self.epoch => Ok(s),
            _ => Err(ServerError::new(
                ErrorCode::Unavailable,
                "sequencer is recovering its tail from the log units; retry shortly",
            )),
        }
    }

    /// Reserves `count` positions for `streams`, if `conflict`'s check passes
    /// (its writes then count as written at the last of them).
    pub fn token(
        &mut self,
        epoch: Epoch,
        count: u32,
        streams: &[StreamId],
        conflict: Option<&proto::TokenConflict>,
    ) -> Result<proto::TokenOk, ServerError> {
        self.check_epoch(epoch)?;
        if count == 0 || count > TOKEN_COUNT_MAX {
            return Err(ServerError::new(
                ErrorCode::BadRequest,
                format!("token count must be between 1 and {TOKEN_COUNT_MAX}"),
            ));
        }
        if streams.len() > TOKEN_STREAMS_MAX {
            return Err(ServerError::new(
                ErrorCode::TooLarge,
                format!("at most {TOKEN_STREAMS_MAX} streams per token"),
            ));
        }
        let state = self.state.as_mut().expect("check_epoch returned a state, so the sequencer is ready");
        if let Some(c) = conflict {
            if let Err(e) = state.conflicts.check(c.snapshot, &c.read_keys) {
                crate::metrics::sequencer_abort(naxos_wire::error::abort_label(e.abort));
                return Err(e);
            }
        }
        let start = state.next;
        if start.saturating_add(u64::from(count)) > naxos_wire::POSITION_LIMIT {
            return Err(naxos_wire::reserved_position("token", start));
        }
        state.next += u64::from(count);
        if let Some(h) = crate::metrics::get() {
            h.tokens.increment(u64::from(count));
        }
        let last = state.next - 1;
        if let Some(c) = conflict {
            state.conflicts.record(last, &c.write_keys);
        }
        let backpointers = streams.iter().map(|s| state.streams.insert(*s, last).unwrap_or(NO_BACKPOINTER)).collect();
        Ok(proto::TokenOk { start, count, backpointers })
    }

    /// The tail (next position to hand out) and the last position of `streams`.
    pub fn tail(&self, epoch: Epoch, streams: &[StreamId]) -> Result<proto::TailOk, ServerError> {
        let state = self.check_epoch(epoch)?;
        let streams = streams
            .iter()
            .filter_map(|s| {
                state
                    .streams
                    .get(s)
                    .map(|&last| proto::StreamTail { stream: Bytes::copy_from_slice(&s.to_bytes()), last })
            })
            .collect();
        Ok(proto::TailOk { tail: state.next, streams, token_ceiling: 0, token_ceiling_by: 0 })
    }

    /// Installs the recovered state for `epoch`. Refused for an older epoch;
    /// for the current one, once serving, it only raises: the tail and each
    /// stream's last position never go back.
    pub fn bootstrap(&mut self, epoch: Epoch, tail: u64, streams: &[(StreamId, u64)]) -> Result<(), ServerError> {
        if tail > naxos_wire::POSITION_LIMIT {
            return Err(naxos_wire::reserved_position("sequencer bootstrap", tail));
        }
        self.fence.admit(epoch)?;
        self.fence.raise(epoch);
        if epoch == self.epoch {
            if let Some(s) = &mut self.state {
                // Already serving this epoch: a late bootstrap (the node's own
                // recovery and a reconfiguration's both arrive) was computed
                // before tokens this sequencer has handed out since, so it
                // is merged, never installed over them (soak seed 700062:
                // a stream's tail went back below an acknowledged append).
                s.next = s.next.max(tail);
                for &(stream, last) in streams {
                    let e = s.streams.entry(stream).or_insert(last);
                    *e = (*e).max(last);
                }
                return Ok(());
            }
        }
        let (tail, streams) = if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::SequencerFromZero) {
            (0, &[][..])
        } else {
            // Never below a position handed out: exactly known if this
            // process handed it out, else bounded by the durable ceiling.
            (tail.max(self.issued.unwrap_or_else(|| self.ceiling.unwrap_or(0))), streams)
        };
        let mut map = HashMap::with_capacity(streams.len());
        for &(s, last) in streams.iter().chain(std::mem::take(&mut self.saved_streams).iter()) {
            let e = map.entry(s).or_insert(last);
            *e = (*e).max(last);
        }
        self.epoch = epoch;
        self.state = Some(State { next: tail, streams: map, conflicts: Conflicts::new(tail, self.conflict_keys_max) });
        self.placed = false;
        Ok(())
    }

    /// Seals at `epoch`: no token for an older epoch from now on, none at all
    /// until a bootstrap at `epoch`. Returns the first position this process
    /// has not handed out, if it has handed any out (a reconfiguration starts
    /// the next sequencer there, so the tail never goes back).
    pub fn seal(&mut self, epoch: Epoch) -> Result<Option<u64>, ServerError> {
        self.fence.admit(epoch)?;
        self.fence.raise(epoch);
        if let Some(s) = &self.state {
            self.issued = Some(self.issued.unwrap_or(0).max(s.next));
        }
        if epoch > self.epoch {
            self.epoch = epoch;
            self.state = None;
        }
        Ok(self.issued)
    }

    /// Applies one request.
    pub fn apply(&mut self, req: &Request) -> Result<response::Body, ServerError> {
        let epoch = Epoch(req.epoch);
        match &req.body {
            Some(request::Body::Token(t)) => {
                let streams = parse_streams(&t.streams)?;
                self.token(epoch, t.count, &streams, t.conflict.as_ref()).map(response::Body::Token)
            }
            Some(request::Body::SeqTail(t)) => {
                let streams = parse_streams(&t.streams)?;
                self.tail(epoch, &streams).map(response::Body::Tail)
            }
            Some(request::Body::SeqBootstrap(b)) => {
                let streams: Vec<(StreamId, u64)> = b
                    .streams
                    .iter()
                    .map(|t| {
                        StreamId::from_slice(&t.stream)
                            .map(|s| (s, t.last))
                            .ok_or_else(|| ServerError::new(ErrorCode::BadRequest, "stream ids are 16 bytes"))
                    })
                    .collect::<Result<_, _>>()?;
                self.bootstrap(epoch, b.tail, &streams).map(|_| ok())
            }
            _ => Err(ServerError::new(ErrorCode::WrongRole, "not a sequencer request")),
        }
    }

    /// Answers one request, first raising the durable ceiling if it needs to.
    async fn handle(
        &mut self,
        req: Request,
        reply: Reply,
        store: Option<&CeilingStore>,
        raised: &mut Option<(tokio::time::Instant, u64)>,
    ) {
        if let (Some(end), Some(store)) = (self.ceiling_needed(&req), store) {
            let now = tokio::time::Instant::now();
            let from = self.next().map_or(end, |p| p.0);
            // No rate is known before the first raise: take the smallest step.
            let (issued, elapsed) = match *raised {
                Some((at, tail)) => (from.saturating_sub(tail), now - at),
                None => (0, std::time::Duration::from_secs(1)),
            };
            let c = self.next_ceiling(end, issued, elapsed);
            *raised = Some((now, from));
            if let Err(e) = store.save(c, self.epoch.0) {
                tracing::error!("cannot store the sequencer's token ceiling: {e}");
                return reply.send(Err(ServerError::new(
                    ErrorCode::Unavailable,
                    format!("sequencer cannot store its token ceiling: {e}"),
                )));
            }
            if let Some(replicate) = &store.replicate {
                if let Err(e) = replicate(c).await {
                    tracing::warn!("cannot store the token ceiling on the log units: {e}");
                    return reply.send(Err(ServerError::new(
                        ErrorCode::Unavailable,
                        format!("sequencer cannot store its token ceiling on the log units: {e}"),
                    )));
                }
            }
            self.raise_ceiling(c);
            self.recorded = self.recorded.max(self.epoch);
        }
        // The first token of an epoch waits until the file names the epoch.
        let token = matches!(req.body, Some(request::Body::Token(_)));
        if let (true, Some(store)) = (token, store) {
            if self.recorded < self.epoch && self.state.is_some() && Epoch(req.epoch) == self.epoch {
                if let Err(e) = store.save(self.ceiling.unwrap_or(0), self.epoch.0) {
                    tracing::error!("cannot store the sequencer's epoch: {e}");
                    return reply.send(Err(ServerError::new(
                        ErrorCode::Unavailable,
                        format!("sequencer cannot store its epoch: {e}"),
                    )));
                }
                self.recorded = self.epoch;
            }
        }
        reply.send(self.apply(&req))
    }

    /// When a waiting tail query (`SeqTail.wait_ms > 0`) can be answered
    /// now: `None` while there is nothing at or after its `wait_from` yet.
    /// Anything it would be refused for is answered at once.
    fn waits(&self, req: &Request) -> Option<std::time::Duration> {
        let Some(request::Body::SeqTail(t)) = &req.body else { return None };
        if t.wait_ms == 0 {
            return None;
        }
        let state =
            self.state.as_ref().filter(|_| Epoch(req.epoch) == self.epoch && self.fence.admit(self.epoch).is_ok())?;
        let arrived = if t.streams.is_empty() {
            state.next > t.wait_from
        } else {
            t.streams
                .iter()
                .filter_map(|s| StreamId::from_slice(s))
                .any(|s| state.streams.get(&s).is_some_and(|&last| last != NO_BACKPOINTER && last >= t.wait_from))
        };
        (!arrived).then(|| std::time::Duration::from_millis(u64::from(t.wait_ms.min(TAIL_WAIT_MS_MAX))))
    }

    /// Answers the waiting tail queries that can be answered now (all of
    /// them once their time is up).
    async fn answer_waiting(
        &mut self,
        waiting: &mut Vec<Waiting>,
        store: Option<&CeilingStore>,
        raised: &mut Option<(tokio::time::Instant, u64)>,
    ) {
        if waiting.is_empty() {
            return;
        }
        let now = tokio::time::Instant::now();
        let mut still = Vec::with_capacity(waiting.len());
        for w in std::mem::take(waiting) {
            if w.until > now && self.waits(&w.req).is_some() {
                still.push(w);
            } else {
                self.handle(w.req, w.reply, store, raised).await;
            }
        }
        *waiting = still;
    }

    /// Answers `req`, or keeps it in `waiting` if it is a tail query that
    /// waits for something new.
    async fn handle_or_wait(
        &mut self,
        req: Request,
        reply: Reply,
        store: Option<&CeilingStore>,
        raised: &mut Option<(tokio::time::Instant, u64)>,
        waiting: &mut Vec<Waiting>,
    ) {
        match self.waits(&req) {
            Some(wait) if waiting.len() < WAITING_MAX => {
                waiting.push(Waiting { until: tokio::time::Instant::now() + wait, req, reply })
            }
            _ => self.handle(req, reply, store, raised).await,
        }
    }

    /// Runs the sequencer's task until every sender of `rx` is gone; the
    /// ceiling, if kept, is stored through `store`.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>, store: Option<CeilingStore>) {
        // When the ceiling was last raised, and the tail then: the token rate.
        let mut raised: Option<(tokio::time::Instant, u64)> = None;
        // Tail queries waiting for something new, answered after every op.
        let mut waiting: Vec<Waiting> = Vec::new();
        loop {
            let first_due = waiting.iter().map(|w| w.until).min();
            let op = tokio::select! {
                // Deterministic order (the simulator replays runs).
                biased;
                op = rx.recv() => match op {
                    Some(op) => op,
                    None => break,
                },
                _ = sleep_until(first_due) => {
                    self.answer_waiting(&mut waiting, store.as_ref(), &mut raised).await;
                    continue;
                }
            };
            match op {
                Op::Request(req, reply) => {
                    self.handle_or_wait(req, reply, store.as_ref(), &mut raised, &mut waiting).await
                }
                Op::Requests(reqs) => {
                    for (req, reply) in reqs {
                        self.handle_or_wait(req, reply, store.as_ref(), &mut raised, &mut waiting).await;
                    }
                }
                Op::Seal(epoch, tx) => {
                    let _ = tx.send(self.seal(epoch));
                }
                Op::Info(tx) => {
                    let _ = tx.send((self.epoch, self.next()));
                }
            }
            self.answer_waiting(&mut waiting, store.as_ref(), &mut raised).await;
        }
        // Whoever still waits gets what there is (the node is stopping).
        for w in waiting {
            self.handle(w.req, w.reply, store.as_ref(), &mut raised).await;
        }
        // A clean stop: every token handed out is below `next`, so storing it
        // as the ceiling lets the next start continue without a gap, and with
        // the stream tails the next start needs no new epoch.
        if let (Some(state), Some(store)) = (&self.state, &store) {
            let streams: Vec<(StreamId, u64)> = state.streams.iter().map(|(&s, &l)| (s, l)).collect();
            if let Err(e) = store.save_clean(state.next, &streams) {
                tracing::warn!("cannot store the sequencer's tail at stop: {e}");
            }
        }
    }
}

/// Most tail queries waiting at once; more are answered at once.
const WAITING_MAX: usize = 4096;

/// A tail query waiting for something new, until `until` at the latest.
struct Waiting {
    until: tokio::time::Instant,
    req: Request,
    reply: Reply,
}

/// Sleeps until `at`, or for ever if there is no `at`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Stores a token ceiling beyond this node (on log units), so that it
/// survives the node: a reconfiguration that replaces a dead sequencer reads
/// it back from the sealed log units and starts the next one above it.
pub type CeilingReplicator = std::sync::Arc<
    dyn Fn(u64) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>> + Send + Sync,
>;

/// Where the token ceiling is stored: `sequencer.json` in the data
/// directory, and, with a replicator, on log units too.
pub struct CeilingStore {
    fs: std::sync::Arc<dyn naxos_storage::Fs>,
    path: std::path::PathBuf,
    replicate: Option<CeilingReplicator>,
}

impl CeilingStore {
    /// The store in `dir`.
    pub fn new(fs: std::sync::Arc<dyn naxos_storage::Fs>, dir: &std::path::Path) -> CeilingStore {
        CeilingStore { fs, path: dir.join(CEILING_FILE), replicate: None }
    }

    /// Also stores every raised ceiling through `replicate` before tokens below it go out.
    pub fn with_replicator(mut self, replicate: CeilingReplicator) -> CeilingStore {
        self.replicate = Some(replicate);
        self
    }

    /// What is stored: a ceiling of 0 if nothing ever was.
    pub fn load(&self) -> std::io::Result<Stored> {
        let bad = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a valid ceiling file", self.path.display()),
            )
        };
        let bytes = match self.fs.read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Stored::default()),
            Err(e) => return Err(e),
        };
        let v = naxos_storage::checked::decode::<serde_json::Value>(&bytes).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} is not a valid ceiling file: {e}", self.path.display()),
            )
        })?;
        let ceiling = v.get("token_ceiling").and_then(|c| c.as_u64()).ok_or_else(bad)?;
        let epoch = match v.get("epoch") {
            None => 0, // written before the file named its epoch
            Some(e) => e.as_u64().ok_or_else(bad)?,
        };
        let clean_streams = match v.get("clean_stop_streams") {
            None => None,
            Some(list) => {
                let list = list.as_array().ok_or_else(bad)?;
                let mut out = Vec::with_capacity(list.len());
                for pair in list {
                    let id = pair.get(0).and_then(|s| s.as_str()).and_then(|s| u128::from_str_radix(s, 16).ok());
                    let last = pair.get(1).and_then(|l| l.as_u64());
                    match (id, last) {
                        (Some(id), Some(last)) => out.push((StreamId(id), last)),
                        _ => return Err(bad()),
                    }
                }
                Some(out)
            }
        };
        Ok(Stored { ceiling, epoch, clean_streams, present: true })
    }

    /// Stores `ceiling` and the epoch tokens are handed out in durably
    /// (atomic replace); the file no longer says the last stop was clean.
    pub fn save(&self, ceiling: u64, epoch: u64) -> std::io::Result<()> {
        let json = serde_json::json!({ "token_ceiling": ceiling, "epoch": epoch });
        self.fs.write_atomic(&self.path, &checked(&json))
    }

    /// Stores the exact tail and every stream's last position at a clean stop.
    pub fn save_clean(&self, next: u64, streams: &[(StreamId, u64)]) -> std::io::Result<()> {
        let streams: Vec<serde_json::Value> =
            streams.iter().map(|(s, last)| serde_json::json!([format!("{:032x}", s.0), last])).collect();
        let json = serde_json::json!({ "token_ceiling": next, "clean_stop_streams": streams });
        self.fs.write_atomic(&self.path, &checked(&json))
    }
}

/// The file bytes of `json`, an object, with its checksum.
fn checked(json: &serde_json::Value) -> Vec<u8> {
    naxos_storage::checked::encode(json).expect("the ceiling file is a non-empty JSON object")
}

/// What the sequencer's file holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stored {
    /// Above every position ever handed out (exact after a clean stop).
    pub ceiling: u64,
    /// No token was handed out in a later epoch.
    pub epoch: u64,
    /// Every stream's last position, if the last stop was clean.
    pub clean_streams: Option<Vec<(StreamId, u64)>>,
    /// Whether the file was there (missing, this node knows nothing of the
    /// tokens it handed out before: only its ceiling on the log units does).
    pub present: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_refused_until_bootstrap() {
        let mut s = Sequencer::new();
        assert_eq!(s.token(Epoch(0), 1, &[], None).unwrap_err().code, ErrorCode::Unavailable);
        s.bootstrap(Epoch(0), 10, &[]).unwrap();
        assert_eq!(s.token(Epoch(0), 1, &[], None).unwrap().start, 10);
    }

    #[test]
    fn tokens_never_repeat_and_carry_backpointers() {
        let mut s = Sequencer::new();
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        let a = StreamId::from_name("a");
        let t1 = s.token(Epoch(0), 3, &[a], None).unwrap();
        let t2 = s.token(Epoch(0), 1, &[a], None).unwrap();
        assert_eq!((t1.start, t1.backpointers[0]), (0, NO_BACKPOINTER));
        assert_eq!((t2.start, t2.backpointers[0]), (3, 2));
        // A late bootstrap never lowers the tail.
        s.bootstrap(Epoch(0), 1, &[]).unwrap();
        assert_eq!(s.token(Epoch(0), 1, &[], None).unwrap().start, 4);
    }

    #[test]
    fn a_clean_stop_stores_the_stream_tails_and_a_raised_ceiling_forgets_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = CeilingStore::new(std::sync::Arc::new(naxos_storage::fs::StdFs), dir.path());
        assert_eq!(store.load().unwrap(), Stored::default());
        let a = StreamId::from_name("a");
        store.save_clean(6, &[(a, 4)]).unwrap();
        assert_eq!(
            store.load().unwrap(),
            Stored { ceiling: 6, epoch: 0, clean_streams: Some(vec![(a, 4)]), present: true }
        );
        // A restart from it merges the saved tails into its first bootstrap.
        let mut s = Sequencer::with_ceiling(6, 16).with_saved_streams(vec![(a, 4)]);
        s.bootstrap(Epoch(0), 5, &[(a, 3)]).unwrap();
        let t = s.tail(Epoch(0), &[a]).unwrap();
        assert_eq!((t.tail, t.streams[0].last), (6, 4));
        // Once tokens go out again the ceiling is raised, and the file no
        // longer says the stop was clean.
        store.save(1030, 2).unwrap();
        assert_eq!(store.load().unwrap(), Stored { ceiling: 1030, epoch: 2, clean_streams: None, present: true });
        std::fs::write(dir.path().join(CEILING_FILE), b"{\"token_ceiling\": 3, \"clean_stop_streams\": [[1]]}")
            .unwrap();
        assert!(store.load().is_err(), "a damaged file is an error, not a guess");
    }

    #[test]
    fn a_seal_of_the_nodes_log_unit_fences_its_sequencer_at_once() {
        // One epoch per node: the log unit's seal (raising the shared fence)
        // stops tokens of the old epoch before the sequencer hears of it.
        let fence = Fence::new(Epoch(0));
        let mut s = Sequencer::new().with_fence(fence.clone());
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        assert!(s.token(Epoch(0), 1, &[], None).is_ok());
        fence.raise(Epoch(1));
        assert_eq!(s.token(Epoch(0), 1, &[], None).unwrap_err().code, ErrorCode::WrongEpoch);
        // Its own seal at that epoch is still taken, and it waits for its bootstrap.
        assert_eq!(s.seal(Epoch(1)).unwrap(), Some(1));
        assert_eq!(s.token(Epoch(1), 1, &[], None).unwrap_err().code, ErrorCode::Unavailable);
    }

    #[test]
    fn a_late_bootstrap_raises_the_tail_but_never_lowers_a_stream_tail() {
        let mut s = Sequencer::new();
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        let (a, b) = (StreamId::from_name("a"), StreamId::from_name("b"));
        s.token(Epoch(0), 3, &[a], None).unwrap(); // a's last is 2
                                                   // Computed before that token: a higher tail, an older stream tail of a, one of b.
        s.bootstrap(Epoch(0), 7, &[(a, 1), (b, 5)]).unwrap();
        let t = s.tail(Epoch(0), &[a, b]).unwrap();
        assert_eq!(t.tail, 7);
        let lasts: Vec<u64> = t.streams.iter().map(|st| st.last).collect();
        assert_eq!(lasts, vec![2, 5]);
    }

    #[test]
    fn a_restarted_sequencer_starts_at_its_ceiling_not_below_tokens_it_gave() {
        let mut s = Sequencer::with_ceiling(0, 16);
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        let req = Request {
            body: Some(request::Body::Token(proto::Token { count: 3, streams: vec![], conflict: None })),
            ..Default::default()
        };
        let end = s.ceiling_needed(&req).expect("the first tokens need a ceiling");
        assert_eq!(end, 3);
        let c = s.next_ceiling(end, 0, std::time::Duration::from_secs(1));
        assert_eq!(c, 3 + 16, "a quiet sequencer raises by the minimum block");
        assert_eq!(s.next_ceiling(end, 1_000_000, std::time::Duration::from_secs(1)), 3 + 250_000);
        s.raise_ceiling(c);
        assert_eq!(s.ceiling_needed(&req), None);
        assert_eq!(s.token(Epoch(0), 3, &[], None).unwrap().start, 0);
        // The process dies; three tokens were handed out and never written.
        let mut again = Sequencer::with_ceiling(c, 16);
        again.bootstrap(Epoch(0), 0, &[]).unwrap();
        assert!(again.token(Epoch(0), 1, &[], None).unwrap().start >= 3);
    }

    #[test]
    fn a_token_count_out_of_range_raises_no_ceiling() {
        let mut s = Sequencer::with_ceiling(0, 16);
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        s.raise_ceiling(16);
        for count in [0, TOKEN_COUNT_MAX + 1, u32::MAX] {
            let req = Request {
                body: Some(request::Body::Token(proto::Token { count, streams: vec![], conflict: None })),
                ..Default::default()
            };
            assert_eq!(s.ceiling_needed(&req), None, "count {count}");
            assert!(s.token(Epoch(0), count, &[], None).is_err(), "count {count} was granted");
        }
    }

    #[test]
    fn a_tail_above_the_ceiling_needs_the_ceiling_raised_first() {
        let mut s = Sequencer::with_ceiling(10, 16);
        s.bootstrap(Epoch(0), 50, &[]).unwrap();
        let tail = Request {
            id: 0,
            cluster_id: String::new(),
            epoch: 0,
            body: Some(request::Body::SeqTail(proto::SeqTail { streams: vec![], ..Default::default() })),
        };
        assert_eq!(s.ceiling_needed(&tail), Some(50), "the next position 50 is above the durable ceiling 10");
        s.raise_ceiling(66);
        assert_eq!(s.ceiling_needed(&tail), None);
    }

    #[test]
    fn seal_fences_older_epochs_and_waits_for_bootstrap() {
        let mut s = Sequencer::new();
        s.bootstrap(Epoch(0), 5, &[]).unwrap();
        s.seal(Epoch(1)).unwrap();
        assert_eq!(s.token(Epoch(0), 1, &[], None).unwrap_err().code, ErrorCode::WrongEpoch);
        assert_eq!(s.token(Epoch(1), 1, &[], None).unwrap_err().code, ErrorCode::Unavailable);
        s.bootstrap(Epoch(1), 5, &[]).unwrap();
        assert_eq!(s.token(Epoch(1), 1, &[], None).unwrap().start, 5);
        assert_eq!(s.seal(Epoch(0)).unwrap_err().code, ErrorCode::WrongEpoch);
    }

    fn seq_request(body: request::Body) -> Request {
        Request { id: 1, cluster_id: String::new(), epoch: 0, body: Some(body) }
    }

    fn waiting_tail(streams: &[StreamId], from: u64, wait_ms: u32) -> Request {
        let streams = streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect();
        seq_request(request::Body::SeqTail(proto::SeqTail { streams, wait_from: from, wait_ms }))
    }

    async fn answer(rx: oneshot::Receiver<naxos_wire::proto::Response>) -> proto::TailOk {
        match rx.await.expect("the sequencer answers").body {
            Some(response::Body::Tail(t)) => t,
            other => panic!("expected a tail, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_waiting_tail_query_is_answered_by_the_token_it_waits_for_or_at_its_time() {
        let mut s = Sequencer::new();
        s.bootstrap(Epoch(0), 0, &[]).unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(s.run(rx, None));
        let (a, b) = (StreamId::from_name("a"), StreamId::from_name("b"));
        // Waits for stream a at position 0 or later: nothing there yet.
        let (reply, mut waiting) = Reply::once(1);
        tx.send(Op::Request(waiting_tail(&[a], 0, 60_000), reply)).unwrap();
        // A token of another stream, then a tail query that does not wait:
        // answered in order, while the first still waits.
        let token = |streams: Vec<StreamId>| {
            let streams = streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect();
            seq_request(request::Body::Token(proto::Token { count: 1, streams, conflict: None }))
        };
        let (reply, got) = Reply::once(2);
        tx.send(Op::Request(token(vec![b]), reply)).unwrap();
        got.await.unwrap();
        let (reply, now) = Reply::once(3);
        tx.send(Op::Request(waiting_tail(&[a], 0, 0), reply)).unwrap();
        assert_eq!(answer(now).await.tail, 1);
        assert!(waiting.try_recv().is_err(), "nothing of stream a yet: the query still waits");
        // The token of stream a answers it.
        let (reply, got) = Reply::once(4);
        tx.send(Op::Request(token(vec![a]), reply)).unwrap();
        got.await.unwrap();
        let t = answer(waiting).await;
        assert_eq!(t.tail, 2);
        assert_eq!(t.streams.len(), 1);
        assert_eq!(t.streams[0].last, 1);
        // Waiting for stream a at 2 or later: nothing comes, so it is
        // answered when its time is up, with what there is.
        let (reply, waiting) = Reply::once(5);
        tx.send(Op::Request(waiting_tail(&[a], 2, 20), reply)).unwrap();
        let t = answer(waiting).await;
        assert_eq!((t.tail, t.streams[0].last), (2, 1));
        // Without streams it waits for the tail to pass `wait_from`.
        let (reply, mut waiting) = Reply::once(6);
        tx.send(Op::Request(waiting_tail(&[], 2, 60_000), reply)).unwrap();
        let (reply, now) = Reply::once(7);
        tx.send(Op::Request(waiting_tail(&[], 0, 0), reply)).unwrap();
        answer(now).await;
        assert!(waiting.try_recv().is_err(), "the tail is 2: the query waits for more");
        let (reply, got) = Reply::once(8);
        tx.send(Op::Request(token(vec![]), reply)).unwrap();
        got.await.unwrap();
        assert_eq!(answer(waiting).await.tail, 3);
        // A seal answers whoever waits (with the refusal of its old epoch).
        let (reply, waiting) = Reply::once(9);
        tx.send(Op::Request(waiting_tail(&[], 3, 60_000), reply)).unwrap();
        let (sealed, done) = oneshot::channel();
        tx.send(Op::Seal(Epoch(1), sealed)).unwrap();
        done.await.unwrap().unwrap();
        let refused = waiting.await.unwrap();
        assert!(matches!(refused.body, Some(response::Body::Error(_))), "{refused:?}");
        drop(tx);
        task.await.unwrap();
    }
}
