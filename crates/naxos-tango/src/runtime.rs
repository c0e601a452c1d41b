//! The object runtime: the objects this process hosts, kept in memory and
//! brought up to date by playing their streams in log order (the apply
//! upcall), and the write path that appends updates and commit records with
//! exactly-once sequence numbers. All hosted objects move together to one
//! position of the log, so that a transaction reads one snapshot of all of them.

use crate::object::{Dedup, Kind, State};
use crate::record::{self, Record, Update};
use crate::Error;
use bytes::Bytes;
use naxos_client::{Client, Conflict, Position, StreamId};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// How many times an update whose outcome is unknown is sent again (with
/// the same sequence number, so it is applied at most once) before the
/// caller gets the error.
const UPDATE_TRIES: u32 = 3;

/// Counters of what replaying found.
#[derive(Debug, Default)]
pub struct Stats {
    /// Records applied.
    pub applied: AtomicU64,
    /// Records skipped because their writer's sequence number was applied before (retries).
    pub duplicates: AtomicU64,
    /// Entries in an object's stream that are not Tango records, or updates
    /// of another kind of object: skipped.
    pub foreign: AtomicU64,
    /// Commit records whose read versions this replayer found changed: not
    /// applied. Once the sequencer checks conflicts this is a bug, and the
    /// simulator looks for it.
    pub invalid_commits: AtomicU64,
}

/// One hosted object.
#[derive(Clone, Debug)]
pub(crate) struct Hosted {
    pub kind: Kind,
    pub state: State,
    pub(crate) dedup: Dedup,
    /// Every position below it has been played into `state`.
    pub applied: Position,
    /// Whether its latest checkpoint was looked for (when it was opened).
    opened: bool,
}

impl Hosted {
    fn new(kind: Kind) -> Hosted {
        Hosted { kind, state: State::new(kind), dedup: Dedup::default(), applied: Position(0), opened: false }
    }

    /// Starts again from the latest checkpoint of `stream` at or below `to`,
    /// if there is one past what it applied; whether it did.
    async fn load_checkpoint(&mut self, client: &Client, stream: StreamId, to: Position) -> Result<bool, Error> {
        self.opened = true;
        let found = crate::checkpoint::latest(client, stream).await?;
        tracing::debug!(%stream, applied = %self.applied, %to, found = ?found.as_ref().map(|f| f.0), "latest checkpoint");
        let Some((at, image)) = found else { return Ok(false) };
        if at <= self.applied || at > to {
            return Ok(false);
        }
        let Some((state, dedup)) = crate::checkpoint::decode(self.kind, &image) else {
            tracing::warn!(%stream, %at, "a checkpoint does not decode as a {}: ignored", self.kind.name());
            return Ok(false);
        };
        self.state = state;
        self.dedup = dedup;
        self.applied = at;
        Ok(true)
    }
}

/// The hosted objects (behind the runtime's lock).
#[derive(Default)]
pub(crate) struct Objects {
    /// In stream order, so that a sync reads and opens them in the same
    /// order every run (the simulator replays a seed exactly).
    pub hosted: BTreeMap<StreamId, Hosted>,
    /// The last sync to the tail: every ticket up to `ticket` was taken
    /// before it began, and it reached `at`.
    last_sync: Option<(u64, Position)>,
}

/// The replicated-object runtime of one client (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub client: Client,
    /// This runtime's writer id (in every record it appends).
    pub id: u128,
    next_seq: AtomicU64,
    /// Sequence numbers whose updates are still being sent.
    unsettled: std::sync::Mutex<BTreeSet<u64>>,
    pub objects: tokio::sync::Mutex<Objects>,
    pub stats: Stats,
    /// Back-off jitter state.
    jitter: AtomicU64,
    /// Tickets handed to reads that need a sync to the tail (see `sync_for`).
    tickets: AtomicU64,
    /// Objects this runtime has entered in the catalog.
    cataloged: std::sync::Mutex<std::collections::HashSet<StreamId>>,
    /// Whether objects it opens start from their latest checkpoint.
    use_checkpoints: AtomicBool,
    /// Whether a background refresh is running (see `refresh_behind`).
    refreshing: AtomicBool,
    /// How transactions on the view (not fresh) fare: +1 a commit, -1 a
    /// conflict, within ±`VIEW_SCORE_MAX`; below 0 they run fresh.
    view_score: std::sync::atomic::AtomicI64,
    /// Attempts while the score is below 0 (every `VIEW_PROBE_EVERY`th tries the view again).
    view_skips: AtomicU64,
}

/// Bound of `Inner::view_score`: how much history it weighs.
const VIEW_SCORE_MAX: i64 = 32;
/// While views lose, one attempt in this many still runs on one.
const VIEW_PROBE_EVERY: u64 = 32;

impl Runtime {
    /// A runtime over `client`, with a random writer id.
    pub fn new(client: Client) -> Runtime {
        Runtime::with_id(client, random_id())
    }

    /// A runtime with a given writer id (the simulator's are deterministic).
    /// Two runtimes must never share an id.
    pub fn with_id(client: Client, id: u128) -> Runtime {
        Runtime {
            inner: Arc::new(Inner {
                client,
                id,
                next_seq: AtomicU64::new(0),
                unsettled: std::sync::Mutex::new(BTreeSet::new()),
                objects: tokio::sync::Mutex::new(Objects::default()),
                stats: Stats::default(),
                jitter: AtomicU64::new((id as u64 ^ (id >> 64) as u64) | 1),
                tickets: AtomicU64::new(0),
                cataloged: std::sync::Mutex::new(std::collections::HashSet::new()),
                use_checkpoints: AtomicBool::new(true),
                refreshing: AtomicBool::new(false),
                view_score: std::sync::atomic::AtomicI64::new(0),
                view_skips: AtomicU64::new(0),
            }),
        }
    }

    /// Whether objects opened from now on start from their latest
    /// checkpoint (the default) or replay their stream from the start (for
    /// measuring what a checkpoint saves; it fails behind a trim).
    pub fn set_use_checkpoints(&self, on: bool) {
        self.inner.use_checkpoints.store(on, Ordering::Relaxed);
    }

    /// The log client underneath.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// This runtime's writer id.
    pub fn id(&self) -> u128 {
        self.inner.id
    }

    /// What replaying has found so far.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// A replicated map (bytes to bytes) named `name`.
    pub fn map(&self, name: &str) -> crate::Map {
        crate::Map::new(self.clone(), name)
    }

    /// A replicated counter named `name`.
    pub fn counter(&self, name: &str) -> crate::Counter {
        crate::Counter::new(self.clone(), name)
    }

    /// A replicated register named `name`.
    pub fn register(&self, name: &str) -> crate::Register {
        crate::Register::new(self.clone(), name)
    }

    /// A replicated FIFO queue named `name`.
    pub fn queue(&self, name: &str) -> crate::Queue {
        crate::Queue::new(self.clone(), name)
    }

    /// Brings every hosted object (and `also`, hosting it first) up to the
    /// log's current tail, and runs `read` on them there: a linearizable read.
    pub(crate) async fn read_synced<T>(
        &self,
        also: &[(StreamId, Kind)],
        read: impl FnOnce(&Objects, Position) -> T,
    ) -> Result<T, Error> {
        let ticket = self.ticket();
        let mut objects = self.inner.objects.lock().await;
        for (stream, kind) in also {
            host(&mut objects, *stream, *kind)?;
        }
        let at = self.sync_for(&mut objects, ticket).await?;
        Ok(read(&objects, at))
    }

    /// A ticket for a read that starts now: a sync to the tail that begins
    /// after it was taken serves it (see `sync_for`).
    pub(crate) fn ticket(&self) -> u64 {
        self.inner.tickets.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// Brings every hosted object to the tail, unless a sync that began
    /// after `ticket` was taken already did (and no object was hosted
    /// since): concurrent readers of one runtime share one sync, and each
    /// still sees everything acknowledged before it started.
    pub(crate) async fn sync_for(&self, objects: &mut Objects, ticket: u64) -> Result<Position, Error> {
        if let Some((served, at)) = objects.last_sync {
            if served >= ticket && objects.hosted.values().all(|h| h.applied >= at) {
                return Ok(at);
            }
        }
        // Every ticket taken so far was taken before this sync's tail query.
        let covering = self.inner.tickets.load(Ordering::SeqCst);
        let at = self.sync_locked(objects, None).await?;
        objects.last_sync = Some((covering, at));
        Ok(at)
    }

    /// Whether every hosted object has been synced at least once, and the
    /// lowest position they all reached: a snapshot a transaction that
    /// writes may run at without waiting for a sync (see `try_transaction`).
    pub(crate) fn view(objects: &Objects) -> Option<Position> {
        objects.last_sync?;
        if objects.hosted.values().any(|h| !h.opened) {
            return None;
        }
        objects.hosted.values().map(|h| h.applied).min()
    }

    /// Whether the next transaction should try the view (see `view_score`).
    pub(crate) fn view_pays(&self) -> bool {
        if self.inner.view_score.load(Ordering::Relaxed) >= 0 {
            return true;
        }
        self.inner.view_skips.fetch_add(1, Ordering::Relaxed).is_multiple_of(VIEW_PROBE_EVERY)
    }

    /// Scores an attempt on the view: `Some(true)` committed, `Some(false)`
    /// refused for a conflict, `None` neither.
    pub(crate) fn score_view(&self, committed: Option<bool>) {
        let Some(ok) = committed else { return };
        let step = if ok { 1 } else { -1 };
        let _ = self.inner.view_score.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
            Some((s + step).clamp(-VIEW_SCORE_MAX, VIEW_SCORE_MAX))
        });
    }

    /// Starts a background refresh if none is running; whether one was
    /// running already. While transactions keep taking tickets, refreshes
    /// run back to back, so the view they run on trails the tail by about
    /// one sync.
    pub(crate) fn refresh_behind(&self) -> bool {
        if self.inner.refreshing.swap(true, Ordering::SeqCst) {
            return true;
        }
        let rt = self.clone();
        tokio::spawn(async move {
            loop {
                let covering = rt.inner.tickets.load(Ordering::SeqCst);
                if let Err(e) = rt.refresh(covering).await {
                    tracing::debug!("background refresh: {e}");
                    break;
                }
                if rt.inner.tickets.load(Ordering::SeqCst) == covering {
                    break;
                }
            }
            rt.inner.refreshing.store(false, Ordering::SeqCst);
        });
        false
    }

    /// One sync to the tail that holds the objects only to see where they
    /// are and to play what it read, not while it reads (transactions run
    /// meanwhile). It leaves what it cannot do so (opening an object, a
    /// trim) to the next locked sync. `covering`: the tickets taken before
    /// it began.
    async fn refresh(&self, covering: u64) -> Result<(), Error> {
        let client = &self.inner.client;
        let from: Vec<(StreamId, Position)> = {
            let objects = self.inner.objects.lock().await;
            if Runtime::view(&objects).is_none() {
                return Ok(());
            }
            objects.hosted.iter().map(|(s, h)| (*s, h.applied)).collect()
        };
        let to = Position(client.tails(&[]).await?.tail);
        let stale: Vec<(StreamId, Position)> = from.into_iter().filter(|(_, a)| *a < to).collect();
        let reads = stale.iter().map(|(s, at)| client.read_stream_settled(*s, *at, to));
        let mut merged: BTreeMap<u64, Bytes> = BTreeMap::new();
        for found in futures::future::join_all(reads).await {
            for (p, r) in found? {
                merged.entry(p.0).or_insert(r.payload);
            }
        }
        let mut objects = self.inner.objects.lock().await;
        // Where each object is now: a locked sync may have moved it on
        // meanwhile (never back), and what was read covers from there to `to`.
        let starts: HashMap<StreamId, Position> = stale
            .iter()
            .filter_map(|(s, _)| Some((*s, objects.hosted.get(s)?.applied)))
            .filter(|(_, a)| *a < to)
            .collect();
        for (p, payload) in merged {
            self.play(&mut objects, &starts, Position(p), &payload);
        }
        for s in starts.keys() {
            if let Some(h) = objects.hosted.get_mut(s) {
                h.applied = to;
            }
        }
        let served = objects.last_sync.map_or(0, |(t, _)| t);
        if covering >= served && objects.hosted.values().all(|h| h.applied >= to) {
            objects.last_sync = Some((covering, to));
        }
        Ok(())
    }

    /// The state of one object as of `position` (everything below it):
    /// the hosted copy brought there if it is not past it yet, else a copy
    /// replayed from the start of its stream.
    pub(crate) async fn read_at<T>(
        &self,
        stream: StreamId,
        kind: Kind,
        position: Position,
        read: impl FnOnce(&Hosted) -> T,
    ) -> Result<T, Error> {
        let mut objects = self.inner.objects.lock().await;
        host(&mut objects, stream, kind)?;
        let behind = objects.hosted.get(&stream).is_some_and(|h| h.applied <= position);
        if behind {
            self.sync_locked(&mut objects, Some(position)).await?;
            let h = objects.hosted.get(&stream).expect("hosted above, and hosted objects are never dropped");
            return Ok(read(h));
        }
        drop(objects);
        let mut alone = Objects::default();
        host(&mut alone, stream, kind)?;
        self.sync_locked(&mut alone, Some(position)).await?;
        let h = alone.hosted.get(&stream).expect("hosted just above");
        Ok(read(h))
    }

    /// Plays every hosted object's stream up to `to` (default: the tail now)
    /// in log order. Returns the position reached. An object opened here
    /// starts from its latest checkpoint; one whose stream was trimmed
    /// below what it applied reloads from its latest checkpoint.
    pub(crate) async fn sync_locked(&self, objects: &mut Objects, to: Option<Position>) -> Result<Position, Error> {
        let client = &self.inner.client;
        let tails = client.tails(&[]).await?;
        let to = match to {
            Some(p) if p.0 > tails.tail => {
                return Err(Error::Invalid(format!("position {p} is above the log's tail {}", tails.tail)));
            }
            Some(p) => p,
            None => Position(tails.tail),
        };
        let use_checkpoints = self.inner.use_checkpoints.load(Ordering::Relaxed);
        for (stream, h) in objects.hosted.iter_mut().filter(|(_, h)| !h.opened) {
            if use_checkpoints {
                h.load_checkpoint(client, *stream, to).await?;
            } else {
                h.opened = true;
            }
        }
        let mut reloads = 0;
        // The position of each object's catalog entry, if this runtime hosts
        // the catalog (an opener behind a trim hosts it to find out).
        let mut catalog_entry: HashMap<StreamId, Option<Position>> = HashMap::new();
        let merged = loop {
            // Every stream not read up to `to` yet. Not only those whose last
            // position (the sequencer's) says they have news: after a
            // failover the new sequencer learns a stream's last position
            // from the log units, which do not have a write still on its way
            // under a token of the old one (it lands later, below the
            // seal); skipping the stream would skip that record for good.
            let stale: Vec<(StreamId, Position)> =
                objects.hosted.iter().filter(|(_, h)| h.applied < to).map(|(s, h)| (*s, h.applied)).collect();
            let reads = stale.iter().map(|(s, from)| client.read_stream_settled(*s, *from, to));
            let mut merged: BTreeMap<u64, Bytes> = BTreeMap::new();
            let mut trimmed = None;
            for ((stream, _), found) in stale.iter().zip(futures::future::join_all(reads).await) {
                match found {
                    Ok(entries) => {
                        for (p, r) in entries {
                            merged.entry(p.0).or_insert(r.payload);
                        }
                    }
                    Err(naxos_client::Error::Trimmed(p)) => trimmed = Some((*stream, p)),
                    Err(e) => return Err(e.into()),
                }
            }
            let Some((stream, at)) = trimmed else { break merged };
            // Behind a trim: start again from the latest checkpoint (it is
            // at or above the trim if whoever trimmed followed the rule).
            let h = objects.hosted.get_mut(&stream).expect("in `stale`, so hosted");
            reloads += 1;
            if reloads > 3 {
                return Err(naxos_client::Error::Trimmed(at).into());
            }
            if !h.load_checkpoint(client, stream, to).await? {
                // No checkpoint. The checkpointer checkpoints every object
                // it lists before it trims, and never trims past its
                // listing; so an object with none whose catalog entry (put
                // before its first update) lies above the trim was born
                // after it: start there. Otherwise what it needs is gone.
                let from = client.first_untrimmed(stream, to).await?;
                if let std::collections::hash_map::Entry::Vacant(e) = catalog_entry.entry(stream) {
                    // The entry's position; the catalog's tail if there is
                    // none (every update of the object comes after its entry,
                    // so after that); `None` if the catalog cannot be read.
                    e.insert(self.catalog_entry_of(stream).await.ok());
                }
                let born = catalog_entry.get(&stream).copied().flatten();
                if from <= h.applied || born.is_none_or(|b| b < from) {
                    return Err(naxos_client::Error::Trimmed(at).into());
                }
                tracing::info!(%stream, %from, "no checkpoint, born above the trim at {from}: starting there");
                h.applied = from;
            }
        };
        let starts: HashMap<StreamId, Position> =
            objects.hosted.iter().map(|(s, h)| (*s, h.applied)).filter(|(_, a)| *a < to).collect();
        for (p, payload) in merged {
            self.play(objects, &starts, Position(p), &payload);
        }
        for h in objects.hosted.values_mut() {
            if h.applied < to {
                h.applied = to;
            }
        }
        Ok(to)
    }

    /// Where the catalog entry of `object` is (the version of its key in the
    /// catalog map), or the position the catalog was read up to if it has
    /// none (the object's first update, if any, comes after both); read by
    /// a runtime of its own (this one's objects are locked by the caller).
    async fn catalog_entry_of(&self, object: StreamId) -> Result<Position, Error> {
        let catalog = crate::handles::stream_of(Kind::Map, crate::catalog::NAME);
        if object == catalog {
            // The catalog is in no catalog: behind a trim it needs its checkpoint.
            return Err(Error::Invalid("the catalog has no catalog entry".into()));
        }
        let probe = Runtime::with_id(self.inner.client.clone(), self.inner.id ^ 0x5a5a);
        let key = object.to_string();
        Box::pin(probe.read_synced(&[(catalog, Kind::Map)], |o, at| {
            o.hosted.get(&catalog).and_then(|h| h.state.version(key.as_bytes(), false)).unwrap_or(at)
        }))
        .await
    }

    /// Writes a checkpoint of the object `stream` (hosting it and syncing it
    /// to the tail first): its state as of the position returned. The log
    /// may be trimmed below it once every object has a checkpoint there.
    pub(crate) async fn checkpoint(&self, stream: StreamId, kind: Kind) -> Result<Position, Error> {
        let ticket = self.ticket();
        let mut objects = self.inner.objects.lock().await;
        host(&mut objects, stream, kind)?;
        let at = self.sync_for(&mut objects, ticket).await?;
        let h = objects.hosted.get(&stream).expect("hosted above");
        // The state is as of what the object applied, which a read at a
        // position may have taken past the last sync's `at`: label it so, or
        // openers would replay (and re-validate) what it already holds.
        let at = at.max(h.applied);
        let image = crate::checkpoint::encode(&h.state, &h.dedup);
        drop(objects);
        let at = if naxos_client::mutation::active(naxos_client::mutation::Mutation::CheckpointAhead) {
            self.inner.client.tail().await?
        } else {
            at
        };
        crate::checkpoint::write(&self.inner.client, stream, at, image).await?;
        Ok(at)
    }

    /// Plays one record at `position` into the hosted objects whose sync
    /// started at or below it (`starts`).
    fn play(&self, objects: &mut Objects, starts: &HashMap<StreamId, Position>, position: Position, payload: &[u8]) {
        let stats = &self.inner.stats;
        let Some(rec) = Record::decode_payload(payload) else {
            stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(client) = rec.client_id() else {
            stats.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let ours = |raw: &[u8]| record::stream_of(raw).filter(|s| starts.get(s).is_some_and(|&a| a <= position));
        // The objects this record updates here, each once.
        let mut touched: Vec<StreamId> = rec.updates.iter().filter_map(|u| ours(&u.object)).collect();
        touched.sort_unstable();
        touched.dedup();
        if touched.is_empty() {
            return;
        }
        // A retry of a record every object here applied already: skipped
        // before its reads are checked (they may have moved since).
        let seen_all = touched.iter().all(|s| {
            let h = objects.hosted.get(s).expect("in `starts`, so hosted");
            h.dedup.position_of(client, rec.seq).is_some()
        });
        if seen_all {
            stats.duplicates.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // A transaction: every read of an object played here must still hold.
        let unchecked = naxos_client::mutation::active(naxos_client::mutation::Mutation::NoConflictCheck);
        if rec.snapshot.is_some() && !unchecked {
            let stale = rec.reads.iter().any(|r| {
                ours(&r.object).is_some_and(|s| {
                    let h = objects.hosted.get(&s).expect("in `starts`, so hosted");
                    record::version_code(h.state.version(&r.key, r.whole)) != r.version
                })
            });
            if stale {
                stats.invalid_commits.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%position, "a commit record's reads no longer hold here: not applied");
                return;
            }
        }
        for s in touched {
            let h = objects.hosted.get_mut(&s).expect("in `starts`, so hosted");
            if !h.dedup.first_time(client, rec.seq, rec.floor, position) {
                stats.duplicates.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            for u in rec.updates.iter().filter(|u| record::stream_of(&u.object) == Some(s)) {
                let applied = u.op.as_ref().is_some_and(|op| h.state.apply(op, position));
                if !applied {
                    stats.foreign.fetch_add(1, Ordering::Relaxed);
                }
            }
            stats.applied.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A new sequence number, counted as unsettled until `settle`.
    pub(crate) fn take_seq(&self) -> u64 {
        let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.unsettled).insert(seq);
        seq
    }

    /// The lowest sequence number still being sent: every one below is settled.
    pub(crate) fn floor(&self) -> u64 {
        lock(&self.inner.unsettled).first().copied().unwrap_or_else(|| self.inner.next_seq.load(Ordering::Relaxed))
    }

    /// `seq` will not be sent again.
    pub(crate) fn settle(&self, seq: u64) {
        lock(&self.inner.unsettled).remove(&seq);
    }

    /// Appends `updates` as one record to the streams of the objects they
    /// touch, registering `writes` (conflict keys) with the sequencer.
    pub(crate) async fn update(&self, updates: Vec<Update>, writes: Vec<u64>) -> Result<Position, Error> {
        let conflict = Conflict { snapshot: Position(0), reads: Vec::new(), writes };
        self.append_record(updates, None, Vec::new(), conflict).await
    }

    /// Appends a transaction's commit record.
    pub(crate) async fn commit(&self, outcome: crate::txn::Outcome, snapshot: Position) -> Result<Position, Error> {
        self.append_record(outcome.updates, Some(snapshot.0), outcome.reads, outcome.conflict).await
    }

    /// Appends one record under a new sequence number: sent again while its
    /// outcome is unknown (it is applied once however often it lands), and
    /// if every attempt's outcome stays unknown, settled by reading the log:
    /// the runtime syncs past every position an attempt could have taken and
    /// looks whether the object applied the number.
    async fn append_record(
        &self,
        updates: Vec<Update>,
        snapshot: Option<u64>,
        reads: Vec<record::ReadVersion>,
        conflict: Conflict,
    ) -> Result<Position, Error> {
        self.enter_in_catalog(&updates).await?;
        let seq = self.take_seq();
        let (result, uncertain) = self.send(seq, &updates, snapshot, &reads, &conflict).await;
        let result = match result {
            Err(Error::Unknown(why)) => self.resolve(seq, &updates, why).await,
            // A retry refused after an attempt whose outcome was unknown: that
            // attempt may be the one that wrote the keys it conflicts with.
            Err(Error::Aborted { message, .. }) if uncertain => self.resolve(seq, &updates, message).await,
            other => other,
        };
        self.settle(seq);
        result
    }

    /// Sends one record, again with the same sequence number while its
    /// outcome is unknown. Also says whether any attempt's outcome was unknown.
    async fn send(
        &self,
        seq: u64,
        updates: &[Update],
        snapshot: Option<u64>,
        reads: &[record::ReadVersion],
        conflict: &Conflict,
    ) -> (Result<Position, Error>, bool) {
        let mut streams: Vec<StreamId> = updates.iter().filter_map(|u| record::stream_of(&u.object)).collect();
        streams.sort_unstable();
        streams.dedup();
        let mut last = String::new();
        let mut uncertain = false;
        for _ in 0..UPDATE_TRIES {
            let rec = Record {
                magic: record::MAGIC,
                client: Bytes::copy_from_slice(&self.inner.id.to_be_bytes()),
                seq,
                floor: self.floor(),
                updates: updates.to_vec(),
                snapshot,
                reads: reads.to_vec(),
            };
            match self.inner.client.append_checked(&streams, rec.encode_to_vec().into(), conflict).await {
                Ok(p) => return (Ok(p), uncertain),
                Err(naxos_client::Error::Aborted { cause, message }) => {
                    return (Err(Error::Aborted { cause, message }), uncertain);
                }
                Err(e @ naxos_client::Error::Unavailable(_)) => {
                    tracing::debug!("record {seq}: {e}; sending it again");
                    uncertain = true;
                    last = e.to_string();
                }
                Err(e) => return (Err(e.into()), uncertain),
            }
        }
        (Err(Error::Unknown(last)), uncertain)
    }

    /// Enters the objects `updates` touch in the catalog (once per runtime),
    /// before their first update: the checkpointer must know every object,
    /// idle ones included, before it trims the log.
    async fn enter_in_catalog(&self, updates: &[Update]) -> Result<(), Error> {
        let catalog = crate::catalog::stream();
        let new: Vec<(StreamId, Kind)> = {
            let known = lock(&self.inner.cataloged);
            let mut new: Vec<(StreamId, Kind)> = updates
                .iter()
                .filter_map(|u| Some((record::stream_of(&u.object)?, kind_of(u.op.as_ref()?))))
                .filter(|(s, _)| *s != catalog && !known.contains(s))
                .collect();
            new.sort_unstable_by_key(|(s, _)| *s);
            new.dedup_by_key(|(s, _)| *s);
            new
        };
        let catalog = self.map(crate::catalog::NAME);
        for (stream, kind) in new {
            let key = stream.to_string();
            // Put if absent, in a transaction: the entry's version is then
            // the position of the object's first entry, below every update
            // of it (what an opener behind a trim compares with). Boxed: the
            // commit enters its own objects first (the catalog enters
            // nothing, so the recursion is one level deep).
            let entered = Box::pin(self.transaction(|tx| {
                if tx.get(&catalog, &key)?.is_none() {
                    tx.put(&catalog, key.clone(), kind.name());
                }
                Ok(())
            }))
            .await?;
            tracing::debug!(%stream, at = ?entered.position, "entered in the catalog");
            lock(&self.inner.cataloged).insert(stream);
        }
        Ok(())
    }

    /// Whether record `seq` was applied: syncs to the tail (past every
    /// position its attempts took) and asks the first object it updates.
    async fn resolve(&self, seq: u64, updates: &[Update], why: String) -> Result<Position, Error> {
        let Some((stream, kind)) =
            updates.iter().find_map(|u| Some((record::stream_of(&u.object)?, kind_of(u.op.as_ref()?))))
        else {
            return Err(Error::Unknown(why));
        };
        let ticket = self.ticket();
        let mut objects = self.inner.objects.lock().await;
        host(&mut objects, stream, kind)?;
        if let Err(e) = self.sync_for(&mut objects, ticket).await {
            return Err(Error::Unknown(format!("{why}; and reading the log to find out failed: {e}")));
        }
        let h = objects.hosted.get(&stream).expect("hosted above");
        match h.dedup.position_of(self.inner.id, seq) {
            Some(p) => Ok(p),
            None => Err(Error::NotApplied(why)),
        }
    }

    /// A number in [0, 1) for back-off jitter (deterministic per runtime id).
    pub(crate) fn jitter(&self) -> f64 {
        let mut x = self.inner.jitter.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.inner.jitter.store(x, Ordering::Relaxed);
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The kind of object an op belongs to.
fn kind_of(op: &record::Op) -> Kind {
    use record::Op;
    match op {
        Op::Put(_) | Op::Delete(_) => Kind::Map,
        Op::Add(_) => Kind::Counter,
        Op::Set(_) => Kind::Register,
        Op::Push(_) | Op::Pop(_) => Kind::Queue,
    }
}

/// Hosts `stream` as an object of `kind` (from an empty state); refuses a
/// stream hosted as another kind.
pub(crate) fn host(objects: &mut Objects, stream: StreamId, kind: Kind) -> Result<(), Error> {
    let h = objects.hosted.entry(stream).or_insert_with(|| Hosted::new(kind));
    if h.kind != kind {
        return Err(Error::Invalid(format!("stream {stream} is hosted as a {} here", h.kind.name())));
    }
    Ok(())
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock leaves a set of numbers, still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A random 128-bit id from the standard library's per-process random keys.
fn random_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
        h.finish()
    };
    (u128::from(half()) << 64) | u128::from(half())
}
