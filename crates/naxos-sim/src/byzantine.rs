//! The byzantine-ish client: among the honest workload it sends well-formed
//! requests with extreme values, as a buggy or hostile client with nothing
//! but a socket and the cluster id would (issue 12): trims above the tail,
//! writes far ahead of it or in the reserved top range, seals and layouts
//! far ahead of every chosen epoch, token counts out of range. Each request
//! the servers must refuse that is answered OK is a violation of its own
//! ([`REFUSED`]); what an accepted
//! one did to the log (a trim above the tail deletes acknowledged entries)
//! is left for the history's checkers to find. It records no operations:
//! nothing it sends may change what honest clients read.

use crate::rng::Rng;
use crate::workload::{connect, now};
use crate::Shared;
use bytes::Bytes;
use naxos_check::{Event, Op, Outcome, Violation};
use naxos_wire::proto::{self, request, Request};
use naxos_wire::{Entry, EntryKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The invariant a server broke by accepting a request it must refuse.
pub const REFUSED: &str = "refused";

/// How far above the tail the byzantine trims go: more positions than a
/// run's workload appends, so never below the tail when they arrive (and
/// few enough for the final scan to read, should one be let through: a
/// restarted sequencer then starts at the trim mark).
const TRIM_AHEAD: u64 = 1_000;

/// Extreme requests sent per run.
const ROUNDS: usize = 14;

/// A request every server must refuse.
struct Attempt {
    what: String,
    to: Vec<String>,
    body: request::Body,
    /// Request epoch: the layout's unless the attempt says otherwise.
    epoch: Option<u64>,
}

fn write(position: u64, kind: EntryKind) -> request::Body {
    let payload = if kind == EntryKind::Hole { Bytes::new() } else { Bytes::from_static(b"byzantine") };
    let entry = Entry { kind: kind as i32, payload, ..Default::default() };
    request::Body::Write(proto::Write { position, entry: Some(entry), repair: false })
}

/// One attempt of the seeded mix, built from the current layout and tail;
/// the `first` is always the trim above the tail at every unit.
fn attempt(rng: &mut Rng, layout: &naxos_wire::Layout, tail: u64, first: bool) -> Attempt {
    let units = layout.log_units();
    let pick = |rng: &mut Rng, from: &[String]| from[rng.range(0, from.len() as u64) as usize].clone();
    let unit = pick(rng, &units);
    let layout_server = pick(rng, &layout.layout_servers);
    let sequencer = layout.sequencers.first().cloned().unwrap_or_else(|| unit.clone());
    let e = layout.epoch;
    let plain = |what: String, to: Vec<String>, body| Attempt { what, to, body, epoch: None };
    let kind = rng.range(0, 12);
    match if first { 0 } else { kind } {
        // A trim far above the tail, to every log unit: it once deleted
        // every segment. Sent first, so that under the mutation that lets
        // it through the checkers see what it did.
        0 => {
            let p = tail + TRIM_AHEAD;
            plain(format!("Trim({p}) above the tail {tail}"), units, request::Body::Trim(proto::Trim { position: p }))
        }
        1 => plain("Trim(2^64-1)".into(), vec![unit], request::Body::Trim(proto::Trim { position: u64::MAX })),
        2 => {
            let p = tail + 1_000_000_000_000;
            plain(format!("Write({p}) far above the tail {tail}"), vec![unit], write(p, EntryKind::Data))
        }
        3 => plain("Write(2^64-2)".into(), vec![unit], write(u64::MAX - 1, EntryKind::Data)),
        4 => plain("Fill(2^64-2)".into(), vec![unit], write(u64::MAX - 1, EntryKind::Hole)),
        5 => plain("Seal(2^64-1)".into(), vec![unit], request::Body::Seal(proto::Seal { epoch: u64::MAX })),
        6 => plain(format!("Seal({})", e + 1000), vec![unit], request::Body::Seal(proto::Seal { epoch: e + 1000 })),
        7 => plain(
            format!("Token(count {})", u32::MAX),
            vec![sequencer],
            request::Body::Token(proto::Token { count: u32::MAX, ..Default::default() }),
        ),
        8 => Attempt {
            what: format!("SeqBootstrap at epoch {}", e + 1000),
            to: vec![sequencer],
            body: request::Body::SeqBootstrap(proto::SeqBootstrap { tail: 0, streams: vec![] }),
            epoch: Some(e + 1000),
        },
        9 => {
            let mut ahead = layout.clone();
            ahead.epoch = if rng.chance(0.5) { u64::MAX } else { e + 1000 };
            ahead.layout_servers = vec!["bogus:1".into()];
            plain(
                format!("CommitLayout at epoch {}", ahead.epoch),
                vec![pick(rng, &layout.all_nodes())],
                request::Body::CommitLayout(proto::CommitLayout { layout: Some(Box::new(ahead)) }),
            )
        }
        10 => plain(
            format!("LayoutPrepare for epoch {}", e + 1000),
            vec![layout_server],
            request::Body::LayoutPrepare(proto::LayoutPrepare {
                epoch: e + 1000,
                rank: Some(proto::Rank { round: u64::MAX, proposer: 1 }),
                base: Some(Box::new(layout.clone())),
            }),
        ),
        // A trim above the tail at one unit only. (Hole fills just ahead of
        // the tail, which the log units take within their write window, are
        // not sent: a hole above the tail breaks the `tail` invariant of the
        // history, which holds only for honest clients; hostile.rs covers
        // what they cost honest appends.)
        _ => {
            let p = tail + TRIM_AHEAD;
            plain(
                format!("Trim({p}) above the tail {tail}"),
                vec![unit],
                request::Body::Trim(proto::Trim { position: p }),
            )
        }
    }
}

/// The client id under which the history records a byzantine trim that
/// turned out legitimate (see `run`).
pub const CLIENT: u32 = 1_000;

/// Runs the byzantine client for `seed`; accepted refusals go to `found`.
/// A trim above the tail it read that a unit took is legitimate if the tail
/// had passed it by the time it arrived (a restarted sequencer starts at its
/// token ceiling, a jump of thousands of positions: soak seed 720877 trimmed
/// at 1735 after reading tail 735): it then goes into the history as a trim,
/// so that the checkers know what it removed, instead of a violation.
pub async fn run(shared: Shared, seed: u64, seeds: Vec<String>, found: Arc<Mutex<Vec<Violation>>>) -> turmoil::Result {
    let mut rng = Rng::new(seed, 7_000);
    tokio::time::sleep(Duration::from_millis(rng.range(100, 1500))).await;
    let client = connect(seeds, true).await?;
    let pool = naxos_wire::rpc::Pool::new(Arc::new(crate::net::TurmoilNet), client.config().rpc.clone());
    for round in 0..ROUNDS {
        tokio::time::sleep(Duration::from_millis(rng.range(20, 400))).await;
        let mut tail = client.tail().await;
        // The first round's tail is worth waiting for: its attempt is the trim above it.
        for _ in 0..20 {
            if round > 0 || tail.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            tail = client.tail().await;
        }
        let Ok(tail) = tail else { continue };
        let layout = client.layout();
        let a = attempt(&mut rng, &layout, tail.0, round == 0);
        for addr in &a.to {
            let req = Request {
                id: 0,
                cluster_id: layout.cluster_id.clone(),
                epoch: a.epoch.unwrap_or(layout.epoch),
                body: Some(a.body.clone()),
            };
            let start = now();
            let answer = pool.call(addr, req).await;
            tracing::debug!("byzantine {}: {addr} answered {answer:?}", a.what);
            if let (Ok(_), request::Body::Trim(t)) = (&answer, &a.body) {
                if client.tail().await.is_ok_and(|now| now.0 > t.position) {
                    shared.trimmed_to(t.position);
                    let op = Op::Trim { position: t.position };
                    shared.push(Event { client: CLIENT, start, end: now(), op, outcome: Outcome::Done });
                    continue;
                }
            }
            if answer.is_ok() {
                if let Ok(mut f) = found.lock() {
                    f.push(Violation::new(
                        REFUSED,
                        format!("{addr} accepted {} from the byzantine client; it must refuse it", a.what),
                        vec![],
                    ));
                }
            }
        }
    }
    Ok(())
}
