//! Optimistic transactions across objects. The body runs against one
//! snapshot of every hosted object (the runtime's view, held still while it
//! runs: synced to the tail first, unless the transaction writes and a
//! background refresh keeps the view close behind it), records the version of each key it
//! reads and buffers its writes; the commit is one append of a commit record
//! to the streams of the objects written, whose token the sequencer refuses
//! when a key read was written after the snapshot. Read-only transactions
//! append nothing.

use crate::handles::{self, update, Counter, Map, Queue, Register};
use crate::object::{Kind, State, QUEUE_TAIL};
use crate::record::{self, KeyValue, Op, ReadVersion, RegisterValue, Update};
use crate::runtime::{host, Objects};
use crate::{Error, Runtime};
use bytes::Bytes;
use naxos_client::{conflict_key, Conflict, Position, StreamId};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// A committed transaction: what its body returned, and where its commit
/// record is (`None` for a read-only one, which appends nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed<T> {
    /// The body's result.
    pub value: T,
    /// The commit record's position.
    pub position: Option<Position>,
}

/// How `Runtime::transaction` tries again after an abort.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Attempts in all (default 16).
    pub attempts_max: u32,
    /// The first pause (default 1 ms); it doubles each time, with jitter.
    pub pause_min: Duration,
    /// The longest pause (default 100 ms).
    pub pause_max: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { attempts_max: 16, pause_min: Duration::from_millis(1), pause_max: Duration::from_millis(100) }
    }
}

/// A transaction being run: reads see its snapshot (and its own buffered
/// writes); writes are buffered until the commit.
pub struct Tx<'a> {
    objects: &'a Objects,
    snapshot: Position,
    reads: Vec<ReadVersion>,
    read_keys: HashSet<u64>,
    updates: Vec<Update>,
    write_keys: HashSet<u64>,
    /// Per queue, how many values this transaction popped so far.
    pops: HashMap<StreamId, usize>,
}

/// What a finished body leaves to commit.
pub(crate) struct Outcome {
    pub reads: Vec<ReadVersion>,
    pub updates: Vec<Update>,
    pub conflict: Conflict,
}

impl<'a> Tx<'a> {
    fn new(objects: &'a Objects, snapshot: Position) -> Tx<'a> {
        Tx {
            objects,
            snapshot,
            reads: Vec::new(),
            read_keys: HashSet::new(),
            updates: Vec::new(),
            write_keys: HashSet::new(),
            pops: HashMap::new(),
        }
    }

    /// The snapshot: the transaction sees every position below it.
    pub fn snapshot(&self) -> Position {
        self.snapshot
    }

    fn state(&self, (stream, kind): (StreamId, Kind)) -> Result<&'a State, Error> {
        match self.objects.hosted.get(&stream) {
            Some(h) if h.kind == kind => Ok(&h.state),
            Some(h) => Err(Error::Invalid(format!("stream {stream} is hosted as a {} here", h.kind.name()))),
            None => Err(Error::NotHosted(stream, kind)),
        }
    }

    /// Records a read of `key` (or with `whole`, of the whole object).
    fn read(&mut self, (stream, kind): (StreamId, Kind), key: &[u8], whole: bool) -> Result<&'a State, Error> {
        let state = self.state((stream, kind))?;
        if self.read_keys.insert(conflict_key(stream, key, whole)) {
            self.reads.push(ReadVersion {
                object: Bytes::copy_from_slice(&stream.to_bytes()),
                key: Bytes::copy_from_slice(key),
                version: record::version_code(state.version(key, whole)),
                whole,
            });
        }
        Ok(state)
    }

    fn write(&mut self, stream: StreamId, op: Op, keys: &[(&[u8], bool)]) {
        for (k, whole) in keys {
            self.write_keys.insert(conflict_key(stream, k, *whole));
        }
        self.updates.push(update(stream, op));
    }

    /// This transaction's own buffered ops on `stream`, oldest first.
    fn own(&self, stream: StreamId) -> impl Iterator<Item = &Op> + '_ {
        self.updates.iter().filter(move |u| record::stream_of(&u.object) == Some(stream)).filter_map(|u| u.op.as_ref())
    }

    /// The value of `key` in `map`.
    pub fn get(&mut self, map: &Map, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        let key = key.as_ref();
        let mine = self.own(map.stream()).fold(None, |acc, op| match op {
            Op::Put(kv) if kv.key == key => Some(Some(kv.value.clone())),
            Op::Delete(k) if k == key => Some(None),
            _ => acc,
        });
        if let Some(v) = mine {
            return Ok(v);
        }
        let state = self.read(map.id(), key, false)?;
        Ok(handles::map_get(state, key))
    }

    /// Every entry of `map`, in key order (a conflict with any write to it).
    pub fn list(&mut self, map: &Map) -> Result<Vec<(Bytes, Bytes)>, Error> {
        let state = self.read(map.id(), &[], true)?;
        let mut entries: BTreeMap<Bytes, Bytes> = handles::map_entries(state).into_iter().collect();
        for op in self.own(map.stream()) {
            match op {
                Op::Put(kv) => {
                    entries.insert(kv.key.clone(), kv.value.clone());
                }
                Op::Delete(k) => {
                    entries.remove(k);
                }
                _ => {}
            }
        }
        Ok(entries.into_iter().collect())
    }

    /// Sets `key` of `map` to `value` at commit.
    pub fn put(&mut self, map: &Map, key: impl Into<Bytes>, value: impl Into<Bytes>) {
        let key = key.into();
        let keys = [(&key[..], false), (&[][..], true)];
        self.write(map.stream(), Op::Put(KeyValue { key: key.clone(), value: value.into() }), &keys);
    }

    /// Removes `key` from `map` at commit.
    pub fn delete(&mut self, map: &Map, key: impl Into<Bytes>) {
        let key = key.into();
        let keys = [(&key[..], false), (&[][..], true)];
        self.write(map.stream(), Op::Delete(key.clone()), &keys);
    }

    /// The value of `counter`.
    pub fn counter(&mut self, counter: &Counter) -> Result<i64, Error> {
        let base = handles::counter_value(self.read(counter.id(), &[], false)?);
        Ok(self.own(counter.stream()).fold(base, |v, op| match op {
            Op::Add(d) => v.wrapping_add(*d),
            _ => v,
        }))
    }

    /// Adds `delta` to `counter` at commit.
    pub fn add(&mut self, counter: &Counter, delta: i64) {
        self.write(counter.stream(), Op::Add(delta), &[(&[][..], false)]);
    }

    /// The value of `register`.
    pub fn register(&mut self, register: &Register) -> Result<Option<Bytes>, Error> {
        let mine = self.own(register.stream()).fold(None, |acc, op| match op {
            Op::Set(v) => Some(v.value.clone()),
            _ => acc,
        });
        if let Some(v) = mine {
            return Ok(v);
        }
        Ok(handles::register_value(self.read(register.id(), &[], false)?))
    }

    /// Sets `register` at commit (`None`: clears it).
    pub fn set(&mut self, register: &Register, value: Option<Bytes>) {
        self.write(register.stream(), Op::Set(RegisterValue { value }), &[(&[][..], false)]);
    }

    /// Takes the front value of `queue` at commit (`None` if it is empty).
    pub fn pop(&mut self, queue: &Queue) -> Result<Option<Bytes>, Error> {
        let mut items = handles::queue_items(self.read(queue.id(), handles::POP_KEY, false)?);
        items.extend(self.own(queue.stream()).filter_map(|op| match op {
            Op::Push(v) => Some(v.clone()),
            _ => None,
        }));
        let taken = self.pops.get(&queue.stream()).copied().unwrap_or(0);
        let Some(value) = items.get(taken).cloned() else { return Ok(None) };
        self.pops.insert(queue.stream(), taken + 1);
        self.write(queue.stream(), handles::pop_op(), &[(handles::POP_KEY, false)]);
        Ok(Some(value))
    }

    /// Appends `value` to `queue` at commit.
    pub fn push(&mut self, queue: &Queue, value: impl Into<Bytes>) {
        self.write(queue.stream(), Op::Push(value.into()), &[(QUEUE_TAIL, false)]);
    }

    fn finish(self) -> Outcome {
        // Sorted: the same request bytes every run.
        let mut reads: Vec<u64> = self.read_keys.into_iter().collect();
        let mut writes: Vec<u64> = self.write_keys.into_iter().collect();
        reads.sort_unstable();
        writes.sort_unstable();
        let conflict = Conflict { snapshot: self.snapshot, reads, writes };
        Outcome { reads: self.reads, updates: self.updates, conflict }
    }
}

impl Runtime {
    /// Runs `body` as a serializable transaction, again after each abort
    /// (with bounded, jittered back-off; see [`Retry`]'s defaults) until it
    /// commits or the attempts run out (then the last abort is returned).
    pub async fn transaction<T>(
        &self,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<Committed<T>, Error> {
        self.transaction_with(Retry::default(), body).await
    }

    /// As [`Runtime::transaction`], with the given retry policy.
    pub async fn transaction_with<T>(
        &self,
        retry: Retry,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<Committed<T>, Error> {
        let mut pause = retry.pause_min;
        let mut attempt = 0;
        loop {
            attempt += 1;
            // After an abort, at a fresh snapshot: the view may be what made it fail.
            match self.attempt(&mut body, attempt > 1).await {
                Err(Error::Aborted { .. }) if attempt < retry.attempts_max => {
                    metrics::counter!("naxos_tango_retries_total").increment(1);
                    let jittered = pause.mul_f64(0.5 + self.jitter());
                    tokio::time::sleep(jittered).await;
                    pause = (pause * 2).min(retry.pause_max);
                }
                other => return other,
            }
        }
    }

    /// Runs `body` once as a serializable transaction: `Error::Aborted` (with
    /// its cause) if the sequencer refused its commit.
    pub async fn try_transaction<T>(
        &self,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
    ) -> Result<Committed<T>, Error> {
        self.attempt(body, false).await
    }

    /// One attempt, counted in the metrics (commits, aborts by cause).
    async fn attempt<T>(
        &self,
        body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
        fresh: bool,
    ) -> Result<Committed<T>, Error> {
        // Under contention a stale view costs more than it saves (nearly
        // every attempt on it aborts): the runtime keeps score and runs
        // fresh while views lose, trying one again now and then.
        let stale_ok = !fresh && self.view_pays();
        let (done, on_view) = self.run_attempt(body, !stale_ok).await;
        if on_view {
            self.score_view(match &done {
                Ok(_) => Some(true),
                Err(Error::Aborted { cause: naxos_client::AbortCause::Conflict, .. }) => Some(false),
                _ => None,
            });
        }
        match &done {
            Ok(c) => {
                let kind = if c.position.is_some() { "read_write" } else { "read_only" };
                metrics::counter!("naxos_tango_commits_total", "kind" => kind).increment(1);
            }
            Err(Error::Aborted { cause, .. }) => {
                metrics::counter!("naxos_tango_aborts_total", "cause" => naxos_client::abort_label(*cause))
                    .increment(1);
            }
            Err(_) => {}
        }
        done
    }
}

impl Runtime {
    /// One attempt. A transaction that writes need not see the tail: the
    /// sequencer refuses its commit if a key it read was written after its
    /// snapshot, so it commits only if what it read is still current when
    /// it takes its position (it is serialized there, inside its own run).
    /// So unless `fresh`, while a background refresh keeps the view near
    /// the tail, the body runs on the view as it is; the price of a stale
    /// view is an abort, and the retry runs fresh. A read-only transaction
    /// is checked by no one, nor is a body's error: either runs again at a
    /// fresh snapshot.
    /// Also says whether it committed or aborted on the view (not fresh).
    async fn run_attempt<T>(
        &self,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
        fresh: bool,
    ) -> (Result<Committed<T>, Error>, bool) {
        let mut on_view = false;
        let done = self.run_attempt_inner(&mut body, fresh, &mut on_view).await;
        (done, on_view)
    }

    async fn run_attempt_inner<T>(
        &self,
        mut body: impl FnMut(&mut Tx<'_>) -> Result<T, Error>,
        fresh: bool,
        on_view: &mut bool,
    ) -> Result<Committed<T>, Error> {
        let ticket = self.ticket();
        let mut current = !fresh && self.refresh_behind();
        let (value, outcome, snapshot) = loop {
            let mut objects = self.inner.objects.lock().await;
            let snapshot = match Runtime::view(&objects).filter(|_| current) {
                Some(at) => at,
                None => self.sync_for(&mut objects, ticket).await?,
            };
            let mut tx = Tx::new(&objects, snapshot);
            match body(&mut tx) {
                Ok(_) if current && tx.updates.is_empty() => current = false,
                Ok(value) => break (value, tx.finish(), snapshot),
                Err(Error::NotHosted(stream, kind)) => {
                    drop(tx);
                    host(&mut objects, stream, kind)?;
                    current = false;
                }
                // An error the body drew from a stale view may not hold at the tail.
                Err(_) if current => current = false,
                Err(e) => return Err(e),
            }
        };
        if outcome.updates.is_empty() {
            return Ok(Committed { value, position: None });
        }
        *on_view = current;
        let position = self.commit(outcome, snapshot).await?;
        Ok(Committed { value, position: Some(position) })
    }
}
