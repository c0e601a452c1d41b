//! The log unit role: a state machine over a `Store` that answers writes, reads,
//! trims, seals, tail and stream queries, and the task that owns it. The task
//! takes every request that is waiting, applies them in order, makes the batch
//! durable with one `sync` (group commit), and only then sends any answer, so
//! no client ever sees a write that a crash could still take back.

use crate::fence::Fence;
use crate::reply::{ok, Reply};
use naxos_storage::{Meta, Store, StripeFilter};
use naxos_wire::proto::{self, request, response, Entry, EntryKind, Request};
use naxos_wire::{Epoch, ErrorCode, NodeId, Position, ServerError, StreamId};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// Most requests applied in one group-commit batch.
pub const BATCH_REQUESTS_MAX: usize = 4096;
/// Most results one stream query returns.
pub const STREAM_QUERY_LIMIT_MAX: usize = 65536;

/// Answers waiting for a batch's sync: where each goes, the result, and
/// whether the request was a write.
type Answers = Vec<(Reply, Result<response::Body, ServerError>, bool)>;

/// Payload bytes one `RangeDigest` request reads at most.
const DIGEST_READ_BYTES: usize = 64 << 20;

/// A message to the log unit task.
pub enum Op {
    /// A client request.
    Request(Request, Reply),
    /// The log unit's requests of one `Batch`: applied in order, in one group commit.
    Requests(Vec<(Request, Reply)>),
    /// Record the cluster id at bootstrap (refused if another is recorded).
    SetCluster(String, oneshot::Sender<Result<(), ServerError>>),
    /// Report the unit's tail, node id and sealed epoch.
    Info(oneshot::Sender<Info>),
    /// List the positions whose records were lost to damage (at most
    /// `CORRUPTED_LISTED_MAX`): what a repair from replicas can put back.
    Corrupted(oneshot::Sender<Vec<Position>>),
}

/// A snapshot of the log unit for `Status`.
#[derive(Clone, Debug)]
pub struct Info {
    /// The store's metadata.
    pub meta: Meta,
    /// The store's tail.
    pub tail: Position,
    /// Why the unit stopped serving, if it did.
    pub failed: Option<String>,
    /// Entries served to reads since start.
    pub entries_read: u64,
}

/// Most corrupted positions one `Op::Corrupted` lists.
pub const CORRUPTED_LISTED_MAX: usize = 1024;

/// The log unit's protocol logic over a store.
pub struct LogUnit {
    store: Box<dyn Store>,
    entry_bytes_max: usize,
    read_range_bytes_max: usize,
    /// Set when a sync failed: after a failed fdatasync the page cache may hold
    /// writes that never reach the disk, so the unit stops serving rather than
    /// answer from state it cannot vouch for.
    failed: Option<String>,
    /// Raised with `failed`, for whoever watches the unit from outside.
    failed_flag: Arc<std::sync::atomic::AtomicBool>,
    entries_read: u64,
    /// Set when upkeep (preallocation) failed; the unit serves on without it.
    maintain_off: bool,
    /// Slow-disk simulation: the longest wait before a sync, and the state of
    /// the deterministic generator that picks each wait.
    sync_delay_max: std::time::Duration,
    delay_rng: u64,
    /// The node's epoch (shared with its other roles; see `fence`). The
    /// store's metadata keeps the highest seal durably.
    fence: Arc<Fence>,
}

fn storage_error(e: naxos_storage::Error) -> ServerError {
    use naxos_storage::Error as E;
    match e {
        E::Overwritten { position, kind } => ServerError::overwritten(position, kind),
        E::Trimmed { position, mark } => {
            ServerError::at(ErrorCode::Trimmed, position, format!("position {position} is below the trim mark {mark}"))
        }
        E::Corrupted { position, reason } => ServerError::at(
            ErrorCode::Corrupted,
            position,
            format!("record at position {position} failed its checksum ({reason}); read it from another replica"),
        ),
        E::Invalid(m) => ServerError::new(ErrorCode::BadRequest, m),
        other => ServerError::new(ErrorCode::Unavailable, format!("log unit storage: {other}")),
    }
}

impl LogUnit {
    /// A log unit over `store`.
    pub fn new(store: Box<dyn Store>, entry_bytes_max: usize, read_range_bytes_max: usize) -> LogUnit {
        let fence = Fence::new(store.meta().sealed_epoch);
        LogUnit {
            fence,
            store,
            entry_bytes_max,
            read_range_bytes_max,
            failed: None,
            failed_flag: Arc::default(),
            entries_read: 0,
            maintain_off: false,
            sync_delay_max: std::time::Duration::ZERO,
            delay_rng: 0,
        }
    }

    /// Raises `flag` when the log unit fails for good (the heartbeat answer
    /// reports it without waiting on the unit's queue).
    pub fn with_failure_flag(mut self, flag: Arc<std::sync::atomic::AtomicBool>) -> LogUnit {
        self.failed_flag = flag;
        self
    }

    /// Fences requests with the node's shared epoch (raised to this unit's seal).
    pub fn with_fence(mut self, fence: Arc<Fence>) -> LogUnit {
        fence.raise(self.store.meta().sealed_epoch);
        self.fence = fence;
        self
    }

    /// Simulates a slow disk: waits up to `max` before each sync, chosen by a
    /// generator seeded with `seed` (deterministic, for the simulator).
    pub fn with_sync_delay(mut self, max: std::time::Duration, seed: u64) -> LogUnit {
        self.sync_delay_max = max;
        self.delay_rng = seed | 1;
        self
    }

    /// The store's metadata.
    pub fn meta(&self) -> &Meta {
        self.store.meta()
    }

    fn sealed(&self) -> Epoch {
        self.fence.get()
    }

    /// Applies one request and queues its answer for after the batch's sync;
    /// returns whether it wrote something.
    fn apply_into(&mut self, req: &Request, reply: Reply, answers: &mut Answers) -> bool {
        let (result, is_write) = self.apply(req);
        let wrote = is_write && result.is_ok();
        answers.push((reply, result, is_write));
        wrote
    }

    /// Applies one request; returns the result and whether it wrote (and so
    /// must wait for the batch's sync before it is answered).
    pub fn apply(&mut self, req: &Request) -> (Result<response::Body, ServerError>, bool) {
        if let Some(why) = &self.failed {
            return (
                Err(ServerError::new(ErrorCode::Unavailable, format!("log unit failed: {why}; restart it"))),
                false,
            );
        }
        let Some(body) = &req.body else {
            return (Err(ServerError::new(ErrorCode::BadRequest, "request has no body")), false);
        };
        if let request::Body::Seal(s) = body {
            return (self.seal(Epoch(s.epoch)), false);
        }
        if Epoch(req.epoch) < self.sealed() {
            return (Err(ServerError::wrong_epoch(self.sealed(), Epoch(req.epoch))), false);
        }
        match body {
            request::Body::Write(w) => (self.write(w), true),
            request::Body::Read(r) => (self.read(Position(r.position)), false),
            request::Body::ReadRange(r) => (self.read_range(r), false),
            request::Body::RangeDigest(r) => (self.range_digest(r), false),
            request::Body::Trim(t) => (self.trim(Position(t.position)), false),
            request::Body::UnitTail(t) => (Ok(self.tail(t)), false),
            request::Body::StreamQuery(q) => (self.stream_query(q), false),
            request::Body::StoreCeiling(c) => (self.store_ceiling(c.ceiling, NodeId(c.node_id)), false),
            _ => (Err(ServerError::new(ErrorCode::WrongRole, "not a log unit request")), false),
        }
    }

    fn seal(&mut self, epoch: Epoch) -> Result<response::Body, ServerError> {
        let current = self.sealed();
        if epoch < current {
            return Err(ServerError::wrong_epoch(current, epoch));
        }
        if epoch > self.store.meta().sealed_epoch {
            let meta = Meta { sealed_epoch: epoch, ..self.store.meta().clone() };
            self.store.set_meta(meta).map_err(storage_error)?;
        }
        self.fence.raise(epoch);
        let ceiling = self.store.meta().token_ceiling;
        Ok(response::Body::Seal(proto::SealOk {
            tail: self.store.tail().0,
            sequencer_next: (ceiling > 0).then_some(ceiling),
        }))
    }

    /// Keeps the highest token ceiling a sequencer stored, durably.
    fn store_ceiling(&mut self, ceiling: u64, by: NodeId) -> Result<response::Body, ServerError> {
        let meta = self.store.meta().clone();
        if ceiling > meta.token_ceiling {
            let meta = Meta { token_ceiling: ceiling, token_ceiling_by: by, ..meta };
            self.store.set_meta(meta).map_err(storage_error)?;
        }
        Ok(ok())
    }

    fn write(&mut self, w: &proto::Write) -> Result<response::Body, ServerError> {
        let Some(entry) = &w.entry else {
            return Err(ServerError::new(ErrorCode::BadRequest, "write without an entry"));
        };
        if w.position >= naxos_wire::POSITION_LIMIT {
            return Err(naxos_wire::reserved_position("write", w.position));
        }
        if entry.payload.len() > self.entry_bytes_max {
            return Err(ServerError::new(
                ErrorCode::TooLarge,
                format!(
                    "entry of {} bytes exceeds the limit of {} bytes (server flag --entry-bytes-max)",
                    entry.payload.len(),
                    self.entry_bytes_max
                ),
            ));
        }
        if w.repair {
            self.store.repair(Position(w.position), entry).map_err(storage_error)?;
            return Ok(ok());
        }
        self.store.write(Position(w.position), entry).map_err(storage_error)?;
        if let Some(h) = crate::metrics::get() {
            h.totals.appends.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if entry.kind == EntryKind::Hole as i32 {
                h.fills.increment(1);
            } else {
                h.appends.increment(1);
                h.appended_bytes.increment(entry.payload.len() as u64);
            }
        }
        Ok(ok())
    }

    fn read(&mut self, p: Position) -> Result<response::Body, ServerError> {
        match self.store.read(p).map_err(storage_error)? {
            Some(entry) => {
                self.entries_read += 1;
                if let Some(h) = crate::metrics::get() {
                    h.reads.increment(1);
                    h.totals.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                Ok(response::Body::Read(proto::ReadOk { entry: Some(entry) }))
            }
            None => Err(ServerError::at(ErrorCode::Unwritten, p, format!("position {p} is unwritten"))),
        }
    }

    fn read_range(&mut self, r: &proto::ReadRange) -> Result<response::Body, ServerError> {
        if r.to < r.from {
            return Err(ServerError::new(ErrorCode::BadRequest, "range end is below its start"));
        }
        let max = (r.max_bytes as usize).clamp(1, self.read_range_bytes_max);
        let (entries, next) = self.store.read_range(Position(r.from), Position(r.to), max).map_err(storage_error)?;
        self.entries_read += entries.len() as u64;
        if let Some(h) = crate::metrics::get() {
            h.reads.increment(entries.len() as u64);
            h.totals.reads.fetch_add(entries.len() as u64, std::sync::atomic::Ordering::Relaxed);
        }
        let entries =
            entries.into_iter().map(|(p, e)| proto::PositionedEntry { position: p.0, entry: Some(e) }).collect();
        Ok(response::Body::ReadRange(proto::ReadRangeOk { entries, next: next.0 }))
    }

    /// A digest of the held positions of one stripe in a range (`naxos
    /// verify`), reading at most `DIGEST_READ_BYTES` per request.
    fn range_digest(&mut self, r: &proto::RangeDigest) -> Result<response::Body, ServerError> {
        if r.to < r.from {
            return Err(ServerError::new(ErrorCode::BadRequest, "range end is below its start"));
        }
        let wanted = |p: u64| {
            r.stripe_count == 0
                || (p >= r.stripe_start
                    && (p - r.stripe_start) % u64::from(r.stripe_count) == u64::from(r.stripe_index))
        };
        let (mut digest, mut count, mut at, mut read) = (0u32, 0u64, r.from, 0usize);
        while at < r.to && read < DIGEST_READ_BYTES {
            let (entries, next) = self
                .store
                .read_range(Position(at), Position(r.to), self.read_range_bytes_max)
                .map_err(storage_error)?;
            for (p, e) in entries.iter().filter(|(p, _)| wanted(p.0)) {
                digest = crc32c::crc32c_append(digest, &p.0.to_le_bytes());
                digest = crc32c::crc32c_append(digest, &e.kind.to_le_bytes());
                digest = crc32c::crc32c_append(digest, &e.payload);
                count += 1;
                read += e.payload.len();
            }
            at = next.0.max(at + 1).min(r.to);
        }
        Ok(response::Body::RangeDigest(proto::RangeDigestOk { digest, count, next: at }))
    }

    fn trim(&mut self, p: Position) -> Result<response::Body, ServerError> {
        if p.0 > naxos_wire::POSITION_LIMIT {
            return Err(naxos_wire::reserved_position("trim", p.0));
        }
        self.store.trim(p).map_err(storage_error)?;
        if let Some(h) = crate::metrics::get() {
            h.trims.increment(1);
        }
        Ok(ok())
    }

    fn tail(&self, t: &proto::UnitTail) -> response::Body {
        let streams = if t.all_streams {
            self.store.streams_last()
        } else {
            t.streams
                .iter()
                .filter_map(|s| StreamId::from_slice(s))
                .filter_map(|s| self.store.stream_last(s).map(|p| (s, p)))
                .collect()
        };
        let streams = streams
            .into_iter()
            .map(|(s, p)| proto::StreamTail { stream: bytes::Bytes::copy_from_slice(&s.to_bytes()), last: p.0 })
            .collect();
        response::Body::Tail(proto::TailOk {
            tail: self.store.tail().0,
            streams,
            token_ceiling: self.store.meta().token_ceiling,
            token_ceiling_by: self.store.meta().token_ceiling_by.0,
        })
    }

    fn stream_query(&mut self, q: &proto::StreamQuery) -> Result<response::Body, ServerError> {
        let Some(stream) = StreamId::from_slice(&q.stream) else {
            return Err(ServerError::new(ErrorCode::BadRequest, "stream ids are 16 bytes"));
        };
        if q.stripe_count == 0 || q.stripe_index >= q.stripe_count {
            return Err(ServerError::new(ErrorCode::BadRequest, "stripe index must be below a non-zero stripe count"));
        }
        let stripe =
            StripeFilter { segment_start: Position(q.segment_start), count: q.stripe_count, index: q.stripe_index };
        let limit = (q.limit as usize).clamp(1, STREAM_QUERY_LIMIT_MAX);
        let r =
            self.store.stream_query(stream, Position(q.from), Position(q.to), stripe, limit).map_err(storage_error)?;
        Ok(response::Body::StreamQuery(proto::StreamQueryOk {
            positions: r.positions.into_iter().map(|p| p.0).collect(),
            unwritten: r.unwritten.into_iter().map(|p| p.0).collect(),
            next: r.next.0,
            tail: self.store.tail().0,
        }))
    }

    fn set_cluster(&mut self, cluster_id: String) -> Result<(), ServerError> {
        let meta = self.store.meta().clone();
        if meta.cluster_id == cluster_id {
            return Ok(());
        }
        if !meta.cluster_id.is_empty() {
            return Err(ServerError::new(
                ErrorCode::AlreadyBootstrapped,
                format!("log unit already belongs to cluster {}", meta.cluster_id),
            ));
        }
        self.store.set_meta(Meta { cluster_id, ..meta }).map_err(storage_error)
    }

    /// Makes the batch durable; on failure the unit stops serving.
    fn sync(&mut self) -> Result<(), ServerError> {
        if let Err(e) = self.store.sync() {
            tracing::error!("log unit sync failed, refusing all further requests: {e}");
            self.failed = Some(e.to_string());
            self.failed_flag.store(true, std::sync::atomic::Ordering::Release);
            return Err(ServerError::new(ErrorCode::Unavailable, format!("log unit sync failed: {e}")));
        }
        Ok(())
    }

    /// `sync`, timed for the metrics.
    fn timed_sync(&mut self) -> Result<(), ServerError> {
        let Some(h) = crate::metrics::get() else { return self.sync() };
        let started = std::time::Instant::now();
        let synced = self.sync();
        h.fsync_seconds.record(started.elapsed().as_secs_f64());
        synced
    }

    /// Runs the unit's task until every sender of `rx` is gone.
    pub async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Op>) {
        let mut batch: Vec<Op> = Vec::with_capacity(256);
        let mut answers: Answers = Vec::with_capacity(256);
        // Whether a batch was synced since the store last claimed its syncs.
        let mut unclaimed = false;
        loop {
            let first = if unclaimed && !self.maintain_off {
                match tokio::time::timeout(CLAIM_IDLE_AFTER, rx.recv()).await {
                    Ok(op) => op,
                    Err(_) => {
                        // Idle for a while: the last batch gets claimed too.
                        unclaimed = false;
                        if let Err(e) = self.store.claim_synced() {
                            tracing::warn!("log unit upkeep failed, claims and preallocation stop until restart: {e}");
                            self.maintain_off = true;
                        }
                        continue;
                    }
                }
            } else {
                rx.recv().await
            };
            let Some(first) = first else { break };
            batch.push(first);
            while batch.len() < BATCH_REQUESTS_MAX {
                match rx.try_recv() {
                    Ok(op) => batch.push(op),
                    Err(_) => break,
                }
            }
            let mut wrote = false;
            for op in batch.drain(..) {
                match op {
                    Op::Request(req, reply) => wrote |= self.apply_into(&req, reply, &mut answers),
                    Op::Requests(reqs) => {
                        for (req, reply) in reqs {
                            wrote |= self.apply_into(&req, reply, &mut answers);
                        }
                    }
                    Op::SetCluster(id, tx) => {
                        let _ = tx.send(self.set_cluster(id));
                    }
                    Op::Info(tx) => {
                        let _ = tx.send(Info {
                            meta: self.store.meta().clone(),
                            tail: self.store.tail(),
                            failed: self.failed.clone(),
                            entries_read: self.entries_read,
                        });
                    }
                    Op::Corrupted(tx) => {
                        let _ = tx.send(self.store.corrupted_positions(CORRUPTED_LISTED_MAX));
                    }
                }
            }
            // Group commit: one sync for the batch, then every answer. Reads
            // wait too: they may have seen a write of this batch.
            if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::AckBeforeSync) {
                for (reply, result, _) in answers.drain(..) {
                    reply.send(result);
                }
                // The broken variant syncs "later", as a lazy flusher would.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            if wrote && !self.sync_delay_max.is_zero() {
                // xorshift64: a deterministic slow disk for the simulator.
                self.delay_rng ^= self.delay_rng << 13;
                self.delay_rng ^= self.delay_rng >> 7;
                self.delay_rng ^= self.delay_rng << 17;
                let max_us = self.sync_delay_max.as_micros().max(1) as u64;
                tokio::time::sleep(std::time::Duration::from_micros(self.delay_rng % max_us)).await;
            }
            let synced = if wrote { self.timed_sync() } else { Ok(()) };
            unclaimed |= wrote && synced.is_ok();
            if let Some(h) = crate::metrics::get() {
                h.group_commit_requests.record(answers.len() as f64);
            }
            for (reply, result, is_write) in answers.drain(..) {
                match (&synced, is_write) {
                    (Err(e), _) if result.is_ok() => reply.send(Err(e.clone())),
                    _ => reply.send(result),
                }
            }
            // Nothing waiting: preallocate file space while the disk is free.
            if rx.is_empty() && self.failed.is_none() && !self.maintain_off {
                if let Err(e) = self.store.maintain() {
                    tracing::warn!("log unit upkeep failed, preallocation stops until restart: {e}");
                    self.maintain_off = true;
                }
            }
        }
        // Every sender is gone: a clean stop.
        if let Err(e) = self.store.close() {
            tracing::warn!("closing the log unit's store: {e}");
        }
    }
}

/// How long the log unit waits with nothing to do before its store claims
/// the last synced batch durably (`Store::claim_synced`, an fdatasync).
/// Busy units never wait that long between batches, and each batch carries
/// the claim of the one before it; claiming at every idle moment instead
/// halved the appends/s of one client with 16 in flight (28,000 to 12,000).
pub const CLAIM_IDLE_AFTER: std::time::Duration = std::time::Duration::from_millis(2);

/// Builds a hole entry (what `fill` writes).
pub fn hole() -> Entry {
    Entry { kind: EntryKind::Hole as i32, ..Default::default() }
}
