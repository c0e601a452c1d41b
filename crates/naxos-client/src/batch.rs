//! Coalescing: the appends (and reservations) that the tasks of one client
//! make concurrently are gathered into batches, so N appends cost one token
//! request and one write request per replica instead of N of each, and each
//! log unit makes them durable in one group commit. A batch goes out at once
//! when the client is idle; while `Config::batches_in_flight` batches are out,
//! new appends wait and join the next one, so batches grow with the load and
//! an idle client adds no delay. Every entry keeps its own outcome: the fast
//! path handles the common answers for the whole batch, and an entry that
//! meets anything else (a lost position, an uncertain write, a broken
//! connection) finishes alone on the one-entry path with its own retries.

use crate::loglet::chain::lost_answer;
use crate::loglet::{self, FirstWrite, WriteOutcome};
use crate::{Client, Error, Inner};
use bytes::Bytes;
use naxos_wire::proto::{request, response, Append, Entry, EntryKind};
use naxos_wire::{rpc, ErrorCode, Layout, Position, ServerError};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot, Semaphore};

/// Most entries in one batch.
const BATCH_ENTRIES_MAX: usize = 1024;
/// Most payload bytes in one batch (one request frame per replica carries them).
const BATCH_BYTES_MAX: usize = 8 << 20;

/// One append or reservation of a batch.
pub(crate) struct Item {
    /// The streams of the entry (raw stream ids).
    pub streams: Vec<Bytes>,
    /// The payload, or `None` for a reservation (positions only, nothing written).
    pub payload: Option<Bytes>,
    /// Positions taken: 1 for an append.
    pub count: u32,
    /// The sequencer's conflict check for the token (optimistic objects and transactions).
    pub conflict: Option<naxos_wire::proto::TokenConflict>,
}

/// An item waiting for a batch, and where its outcome goes.
pub(crate) struct Job {
    item: Item,
    done: oneshot::Sender<Result<Position, Error>>,
}

/// The sending side of a client's coalescer.
pub(crate) type Queue = mpsc::UnboundedSender<Job>;

/// Starts the coalescer task of the client behind `inner`.
pub(crate) fn start(inner: Weak<Inner>, batches_in_flight: usize) -> Queue {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(inner, rx, batches_in_flight.max(1)));
    tx
}

async fn run(inner: Weak<Inner>, mut rx: mpsc::UnboundedReceiver<Job>, batches_in_flight: usize) {
    let permits = Arc::new(Semaphore::new(batches_in_flight));
    while let Some(first) = rx.recv().await {
        // Wait for a free slot first: whatever arrives meanwhile joins this batch.
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let mut bytes = first.item.payload.as_ref().map_or(0, Bytes::len);
        let mut jobs = vec![first];
        while jobs.len() < BATCH_ENTRIES_MAX && bytes < BATCH_BYTES_MAX {
            match rx.try_recv() {
                Ok(job) => {
                    bytes += job.item.payload.as_ref().map_or(0, Bytes::len);
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let Some(inner) = inner.upgrade() else { return };
        let client = Client { inner };
        tokio::spawn(async move {
            let (items, dones): (Vec<Item>, Vec<_>) = jobs.into_iter().map(|j| (j.item, j.done)).unzip();
            let results = client.append_many(&items).await;
            drop(permit);
            for (done, result) in dones.into_iter().zip(results) {
                let _ = done.send(result);
            }
        });
    }
}

/// How an `Append` round trip went.
enum Combined {
    /// Every entry's position (and back-pointers), and the head writes done.
    Done(Vec<Option<(Position, Vec<u64>)>>, Vec<Option<FirstWrite>>),
    /// Refused as a whole: nothing was written.
    Refused,
    /// Refused as a whole for a reason no retry can help (an entry over the
    /// node's size limit): every entry fails with it, no token is taken.
    Failed(ServerError),
    /// No answer: entries may have been written at unknown positions.
    Unknown(String),
}

/// The entries of a batch that one segment holds: their indexes in the
/// batch, their writes, and the first write's answer where it was made.
type SegmentGroup = (Vec<usize>, Vec<(Position, Entry)>, Vec<Option<FirstWrite>>);

impl Client {
    /// Hands `item` to the coalescer (or, without one, runs it alone).
    pub(crate) async fn submit(&self, item: Item) -> Result<Position, Error> {
        if let Some(queue) = &self.inner.coalescer {
            let (done, outcome) = oneshot::channel();
            match queue.send(Job { item, done }) {
                Ok(()) => {
                    return outcome
                        .await
                        .map_err(|_| Error::Unavailable("the client's append batch was dropped".into()))?
                }
                Err(mpsc::error::SendError(job)) => return self.append_alone(&job.item).await,
            }
        }
        self.append_alone(&item).await
    }

    /// Appends (or reserves) every item, sharing one token request and one
    /// write request per replica; returns each item's outcome, in order.
    pub(crate) async fn append_many(&self, items: &[Item]) -> Vec<Result<Position, Error>> {
        if items.iter().any(|i| i.payload.is_some()) {
            if let Err(e) = self.check_replicas().await {
                return items.iter().map(|_| Err(e.clone())).collect();
            }
        }
        let layout = self.layout();
        let mut heads: Vec<Option<FirstWrite>> = (0..items.len()).map(|_| None).collect();
        let tokens = if self.combined(&layout, items) {
            match self.append_rpc(&layout, items).await {
                Combined::Done(tokens, written) => {
                    heads = written;
                    tokens
                }
                // Refused before anything was written: tokens the usual way.
                Combined::Refused => self.batch_tokens(&layout, items).await,
                Combined::Failed(e) => return items.iter().map(|_| Err(Error::Server(e.clone()))).collect(),
                // Tokens may have been taken and heads written at positions we
                // do not know: retrying could append twice.
                Combined::Unknown(why) => {
                    return items
                        .iter()
                        .map(|_| Err(Error::Unavailable(format!("append may or may not have happened: {why}"))))
                        .collect();
                }
            }
        } else {
            self.batch_tokens(&layout, items).await
        };
        let mut results: Vec<Option<Result<Position, Error>>> = (0..items.len()).map(|_| None).collect();
        // Entries grouped by the segment that holds them, with the first
        // write's answer when the sequencer's node already made it.
        let mut groups: BTreeMap<usize, SegmentGroup> = BTreeMap::new();
        for (i, (item, token)) in items.iter().zip(tokens).enumerate() {
            let Some((pos, backpointers)) = token else { continue };
            let Some(payload) = &item.payload else {
                results[i] = Some(Ok(pos));
                continue;
            };
            let Some(segment) = loglet::segment_of(&layout, pos) else {
                results[i] = Some(Err(Error::Invalid(format!("no segment of the layout holds position {pos}"))));
                continue;
            };
            let entry = Entry {
                kind: EntryKind::Data as i32,
                payload: payload.clone(),
                streams: item.streams.clone(),
                backpointers,
            };
            let group = groups.entry(segment).or_default();
            group.0.push(i);
            group.1.push((pos, entry));
            group.2.push(heads[i].take());
        }
        let written = futures::future::join_all(groups.iter_mut().map(|(&segment, (_, writes, firsts))| {
            let firsts = std::mem::take(firsts);
            let layout = &layout;
            async move {
                match loglet::of_segment(layout, segment) {
                    Ok(l) => l.write_batch(self, writes, firsts).await,
                    Err(e) => writes.iter().map(|_| Err(Error::Invalid(e.to_string()))).collect(),
                }
            }
        }))
        .await;
        for ((members, writes, _), outcomes) in groups.values().zip(written) {
            for ((i, (pos, _)), outcome) in members.iter().zip(writes).zip(outcomes) {
                match outcome {
                    Ok(WriteOutcome::Written) => results[*i] = Some(Ok(*pos)),
                    Ok(WriteOutcome::Lost) => {} // lost at the head: a new token, alone
                    Err(e) => results[*i] = Some(Err(e)),
                }
            }
        }
        // Whatever is left (no token, or its position lost) goes alone.
        let alone: Vec<usize> = (0..items.len()).filter(|&i| results[i].is_none()).collect();
        let retried = futures::future::join_all(alone.iter().map(|&i| self.append_alone(&items[i]))).await;
        for (i, r) in alone.into_iter().zip(retried) {
            results[i] = Some(r);
        }
        results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::Invalid("batch item without outcome".into()))))
            .collect()
    }

    /// One token request (a batch of them) for every item: stream-less items
    /// share one `Token`, each item with streams gets its own (for its
    /// back-pointers). `None` for an item whose token did not come.
    async fn batch_tokens(&self, layout: &Layout, items: &[Item]) -> Vec<Option<(Position, Vec<u64>)>> {
        let mut out = vec![None; items.len()];
        let Ok(sequencer) = Self::sequencer(layout) else { return out };
        let groups = naxos_wire::tokens::groups(items.iter().map(|i| (&i.streams[..], i.count, i.conflict.as_ref())));
        let bodies = groups.iter().map(|(_, t)| request::Body::Token(t.clone())).collect();
        let Ok(answers) = self.inner.pool.call_batch(sequencer, &layout.cluster_id, layout.epoch, bodies).await else {
            return out;
        };
        for ((members, asked), answer) in groups.iter().zip(answers) {
            let Ok(response::Body::Token(t)) = answer else { continue };
            if t.count != asked.count {
                continue;
            }
            let mut next = t.start;
            for &i in members {
                let backpointers = if items[i].streams.is_empty() { Vec::new() } else { t.backpointers.clone() };
                out[i] = Some((Position(next), backpointers));
                next += u64::from(items[i].count);
            }
        }
        out
    }

    /// Whether to append with one `Append` round trip: every item is an
    /// append, and the sequencer heads a chain of the newest segment.
    fn combined(&self, layout: &Layout, items: &[Item]) -> bool {
        let Ok(sequencer) = Self::sequencer(layout) else { return false };
        self.config().combined_append
            && items.iter().all(|i| i.payload.is_some() && i.conflict.is_none())
            && layout
                .segments
                .last()
                .is_some_and(|s| s.stripes.iter().any(|st| st.chain.first().is_some_and(|h| h == sequencer)))
    }

    /// Tokens and (where the sequencer's node heads the chain) head writes in
    /// one round trip.
    async fn append_rpc(&self, layout: &Layout, items: &[Item]) -> Combined {
        let Ok(sequencer) = Self::sequencer(layout) else { return Combined::Refused };
        let entries = items
            .iter()
            .map(|it| Entry {
                kind: EntryKind::Data as i32,
                payload: it.payload.clone().unwrap_or_default(),
                streams: it.streams.clone(),
                backpointers: Vec::new(),
            })
            .collect();
        let answer = match self.call(sequencer, layout, request::Body::Append(Append { entries })).await {
            Ok(response::Body::Append(ok)) if ok.results.len() == items.len() => ok,
            Ok(_) => return Combined::Unknown(format!("{sequencer} answered an append with something else")),
            // An error for the whole request: nothing was written.
            Err(rpc::Error::Server { error, .. }) if error.code == ErrorCode::TooLarge => {
                return Combined::Failed(error)
            }
            Err(e) if e.server().is_some() => return Combined::Refused,
            // Refused before anything was sent (the node is down): a definite
            // failure, and the usual path finds the next sequencer.
            Err(rpc::Error::Connect { .. }) => return Combined::Refused,
            Err(e) => return Combined::Unknown(e.to_string()),
        };
        let mut tokens = Vec::with_capacity(items.len());
        let mut heads = Vec::with_capacity(items.len());
        for r in answer.results {
            tokens.push(Some((Position(r.position), r.backpointers)));
            heads.push(r.head.map(|resp| match resp.body {
                Some(response::Body::Error(e)) => {
                    Err(rpc::Error::Server { addr: sequencer.to_string(), error: ServerError::from_proto(e) })
                }
                Some(_) => Ok(()),
                None => Err(lost_answer(sequencer)),
            }));
        }
        Combined::Done(tokens, heads)
    }
}
