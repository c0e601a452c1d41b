//! The simulated clients: each runs a seeded mix of operations through the
//! real client library (appends to the log and to streams, reads, tails,
//! stream reads, writers that die after their token or after the head write,
//! concurrent readers of the same positions, hence concurrent hole fillers)
//! and records every operation, with its start and end time and its outcome,
//! in the shared history. A failed or timed-out operation is recorded as
//! `Unknown`: it may or may not have happened.

use crate::rng::Rng;
use crate::Shared;
use bytes::Bytes;
use naxos_check::{Event, Op, Outcome};
use naxos_client::{Client, Config, Error, Position, StreamId, Value};
use std::sync::Arc;
use std::time::Duration;

/// Stream names the workload uses.
pub const STREAMS: [&str; 3] = ["s0", "s1", "s2"];
/// Longest an operation may take before it is recorded as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(30);

/// Simulated time, in nanoseconds, as the history's clock.
pub fn now() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_nanos() as u64
}

fn stream_id(name: &str) -> u128 {
    StreamId::from_name(name).0
}

/// A client configured for the simulator: short waits, a bounded retry budget.
pub fn client_config(seeds: Vec<String>) -> Config {
    let mut c = Config::new(seeds);
    c.net = Arc::new(crate::net::TurmoilNet);
    c.rpc.timeout_connect = Duration::from_millis(500);
    c.rpc.timeout_call = Duration::from_secs(1);
    c.hole_fill_wait = Duration::from_millis(50);
    c.retries_max = 8;
    c
}

/// Connects, retrying while the cluster boots. `combined`: whether appends
/// may use the one-round-trip `Append` (half the workload clients do, so both
/// append paths run under every fault).
pub async fn connect(seeds: Vec<String>, combined: bool) -> Result<Client, Error> {
    let mut last = None;
    for _ in 0..200 {
        let mut config = client_config(seeds.clone());
        config.combined_append = combined;
        match Client::connect(config).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(last.unwrap_or_else(|| Error::Unavailable("never connected".into())))
}

fn unknown(e: impl std::fmt::Display) -> Outcome {
    Outcome::Unknown { error: e.to_string() }
}

/// The outcome of a read as the history records it (shared with the
/// real-process fault test).
pub fn read_outcome(r: Result<Value, Error>) -> Outcome {
    match r {
        Ok(Value::Data(rec)) => Outcome::Data { payload: rec.payload.to_vec() },
        Ok(Value::Hole) => Outcome::Hole,
        Err(Error::Unwritten(_)) => Outcome::Unwritten,
        Err(Error::Trimmed(_)) => Outcome::Trimmed,
        Err(e) => unknown(e),
    }
}

/// Runs `op` under the time-out; records the event.
async fn record<F>(shared: &Shared, client: u32, op: Op, fut: F)
where
    F: std::future::Future<Output = Outcome>,
{
    let start = now();
    let outcome = match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(o) => o,
        Err(_) => unknown("timed out"),
    };
    shared.push(Event { client, start, end: now(), op, outcome });
}

/// A stream read as the history records it: the tail first, then the
/// stream's entries in `[from, tail)`, with the tail used as `to`. Shared with
/// the real-process fault test.
pub async fn stream_outcome(client: &Client, stream: StreamId, from: u64) -> Outcome {
    let to = match client.tail().await {
        Ok(t) => t,
        Err(e) => return unknown(e),
    };
    match client.read_stream_range(stream, Position(from), to).await {
        Ok(entries) => {
            Outcome::Stream { to: to.0, entries: entries.into_iter().map(|(p, r)| (p.0, r.payload.to_vec())).collect() }
        }
        Err(Error::Trimmed(_)) => Outcome::Trimmed,
        Err(e) => unknown(e),
    }
}

/// A stream's last position, as the sequencer reports it.
pub async fn stream_last(client: &Client, stream: StreamId) -> Outcome {
    match client.tails(&[stream]).await {
        Ok(t) => Outcome::StreamLast {
            last: t.streams.iter().find(|s| StreamId::from_slice(&s.stream) == Some(stream)).map(|s| s.last),
        },
        Err(e) => unknown(e),
    }
}

/// One batch append (one token request for all) as the history records it:
/// one outcome per payload, in order, `Unknown` for all if the batch failed or
/// took longer than `limit`. Shared with the real-process fault test.
pub async fn batch_outcomes(client: &Client, payloads: &[Vec<u8>], limit: Duration) -> Vec<Outcome> {
    let batch = client.append_batch(payloads.iter().map(|p| Bytes::from(p.clone())).collect());
    match tokio::time::timeout(limit, batch).await {
        Ok(Ok(positions)) => positions.into_iter().map(|p| Outcome::Appended { position: p.0 }).collect(),
        Ok(Err(e)) => payloads.iter().map(|_| unknown(&e)).collect(),
        Err(_) => payloads.iter().map(|_| unknown("timed out")).collect(),
    }
}

/// Reads a stream up to the current tail; records it.
pub async fn stream_read(shared: &Shared, client_no: u32, client: &Client, name: &str, from: u64) {
    let stream = StreamId::from_name(name);
    let op = Op::StreamRead { stream: stream.0, from };
    record(shared, client_no, op, stream_outcome(client, stream, from)).await;
}

/// One workload client: `ops` seeded operations.
pub async fn run(shared: Shared, index: u32, seed: u64, ops: usize, seeds: Vec<String>) -> turmoil::Result {
    let mut rng = Rng::new(seed, 1000 + u64::from(index));
    tokio::time::sleep(Duration::from_millis(rng.range(20, 120))).await;
    let client = connect(seeds, index.is_multiple_of(2)).await?;
    let mut known_tail = 0u64;
    for n in 0..ops {
        // Think time, so that the workload overlaps the fault schedule.
        tokio::time::sleep(Duration::from_millis(rng.range(0, 60))).await;
        let roll = rng.range(0, 100);
        let payload = format!("c{index}-{n}").into_bytes();
        match roll {
            0..=44 => {
                let names: Vec<&str> = STREAMS.iter().copied().filter(|_| rng.chance(0.3)).collect();
                let ids: Vec<StreamId> = names.iter().map(|s| StreamId::from_name(s)).collect();
                let op = Op::Append { payload: payload.clone(), streams: names.iter().map(|s| stream_id(s)).collect() };
                record(&shared, index, op, async {
                    match client.append_to(&ids, Bytes::from(payload)).await {
                        Ok(p) => {
                            known_tail = known_tail.max(p.0 + 1);
                            Outcome::Appended { position: p.0 }
                        }
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            45..=69 => {
                let p = rng.range(0, known_tail + 3);
                record(&shared, index, Op::Read { position: p }, async {
                    read_outcome(client.read(Position(p)).await)
                })
                .await;
            }
            75..=79 => {
                let name = STREAMS[rng.range(0, STREAMS.len() as u64) as usize];
                let stream = StreamId::from_name(name);
                record(&shared, index, Op::StreamTail { stream: stream.0 }, stream_last(&client, stream)).await;
            }
            70..=74 => {
                record(&shared, index, Op::Tail, async {
                    match client.tail().await {
                        Ok(t) => {
                            known_tail = known_tail.max(t.0);
                            Outcome::Tail { tail: t.0 }
                        }
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            80..=87 => {
                let name = STREAMS[rng.range(0, STREAMS.len() as u64) as usize];
                let from = if rng.chance(0.5) { 0 } else { rng.range(0, known_tail + 1) };
                stream_read(&shared, index, &client, name, from).await;
            }
            88 if rng.chance(0.5) => {
                // A prefix trim, well below what readers still use.
                let p = rng.range(0, known_tail / 3 + 1);
                shared.trimmed_to(p);
                record(&shared, index, Op::Trim { position: p }, async {
                    match client.trim(Position(p)).await {
                        Ok(()) => Outcome::Done,
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            88..=92 => {
                // A writer that dies between its token and its write.
                if let Ok(p) = client.reserve(1).await {
                    known_tail = known_tail.max(p.0 + 1);
                }
            }
            93..=96 => {
                // A writer that reaches only the head of its chain, then dies.
                let op = Op::Append { payload: payload.clone(), streams: vec![] };
                record(&shared, index, op, async {
                    match head_only_write(&client, Bytes::from(payload)).await {
                        Ok(()) => unknown("writer died after the head write"),
                        Err(e) => unknown(e),
                    }
                })
                .await;
            }
            _ => {
                let count = rng.range(2, 6) as usize;
                let payloads: Vec<Vec<u8>> = (0..count).map(|k| format!("c{index}-{n}-b{k}").into_bytes()).collect();
                let start = now();
                let outcomes = batch_outcomes(&client, &payloads, OP_TIMEOUT).await;
                let end = now();
                for (p, outcome) in payloads.into_iter().zip(outcomes) {
                    if let Outcome::Appended { position } = outcome {
                        known_tail = known_tail.max(position + 1);
                    }
                    shared.push(Event {
                        client: index,
                        start,
                        end,
                        op: Op::Append { payload: p, streams: vec![] },
                        outcome,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Takes a token and writes only the chain's head, as a writer that dies right after.
async fn head_only_write(client: &Client, payload: Bytes) -> Result<(), String> {
    let p = client.reserve(1).await.map_err(|e| e.to_string())?;
    let layout = client.layout();
    let head = layout.placement(p).ok_or("no placement")?.chain[0].clone();
    let pool = naxos_wire::rpc::Pool::new(Arc::new(crate::net::TurmoilNet), client.config().rpc.clone());
    let entry = naxos_wire::Entry { kind: naxos_wire::EntryKind::Data as i32, payload, ..Default::default() };
    let req = naxos_wire::Request {
        id: 0,
        cluster_id: layout.cluster_id.clone(),
        epoch: layout.epoch,
        body: Some(naxos_wire::proto::request::Body::Write(naxos_wire::proto::Write {
            position: p.0,
            entry: Some(entry),
            repair: false,
        })),
    };
    pool.call(&head, req).await.map(|_| ()).map_err(|e| e.to_string())
}

/// The quiescent phase's reader: every position below the tail, every
/// stream, and the tail, through the normal read path (with repair and hole
/// filling).
pub async fn scan(shared: Shared, index: u32, seeds: Vec<String>) -> turmoil::Result {
    let client = connect(seeds, true).await?;
    let tail = {
        let mut t = None;
        for _ in 0..50 {
            let start = now();
            match client.tail().await {
                Ok(v) => {
                    shared.push(Event {
                        client: index,
                        start,
                        end: now(),
                        op: Op::Tail,
                        outcome: Outcome::Tail { tail: v.0 },
                    });
                    t = Some(v.0);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        t.ok_or("the scanner never got the tail")?
    };
    // Bulk reads (with repair and concurrent hole filling) a chunk at a time;
    // a chunk that fails is read again position by position.
    let mut at = 0;
    while at < tail {
        let end = (at + 64).min(tail);
        let start = now();
        if let Ok(Ok(values)) = tokio::time::timeout(OP_TIMEOUT, client.read_range(Position(at), Position(end))).await {
            let stop = now();
            for (p, v) in values {
                shared.push(Event {
                    client: index,
                    start,
                    end: stop,
                    op: Op::Read { position: p.0 },
                    outcome: read_outcome(Ok(v)),
                });
            }
            at = end;
            continue;
        }
        for p in at..end {
            let mut outcome = Outcome::Unknown { error: String::new() };
            let mut start = now();
            for _ in 0..20 {
                start = now();
                outcome = read_outcome(client.read(Position(p)).await);
                if !matches!(outcome, Outcome::Unknown { .. }) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            shared.push(Event { client: index, start, end: now(), op: Op::Read { position: p }, outcome });
        }
        at = end;
    }
    for name in STREAMS {
        stream_read(&shared, index, &client, name, shared.trim_mark()).await;
    }
    Ok(())
}
