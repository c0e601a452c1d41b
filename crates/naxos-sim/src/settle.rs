//! The checks of self-healing, run once the faults stop and before the final
//! scan (whose reads would repair what they find): the cluster must be whole
//! again on its own within a bound of simulated time (every chain of the
//! active segment back to the replication it was made with, nobody away) and
//! take an append (liveness); then every acknowledged append must be on every
//! replica of its chain in that layout, returning nodes included (a node put
//! back before it was caught up lacks what it missed).

use crate::workload::{connect, now};
use crate::Shared;
use naxos_check::{Event, Op, Outcome, Violation};
use naxos_wire::proto::{request, response, ReadRange, Request};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Layout, Position};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long after the faults the cluster has to be whole again. Above the
/// longest re-add delay of a flapping node (60 s) plus a copy.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(90);

/// The invariant of liveness after faults.
pub const HEALING: &str = "healing";
/// The invariant of full replication of acknowledged appends.
pub const REPLICAS: &str = "replicas";

/// The settle host: waits for the cluster to be whole, appends, then checks
/// every replica; findings go to `found`.
pub async fn settle(
    shared: Shared,
    index: u32,
    seeds: Vec<String>,
    found: Arc<Mutex<Vec<Violation>>>,
) -> turmoil::Result {
    let net: Arc<dyn naxos_wire::net::Net> = Arc::new(crate::net::TurmoilNet);
    let pool = Pool::new(net, rpc::Options { timeout_call: Duration::from_millis(500), ..Default::default() });
    let began = tokio::time::Instant::now();
    let layout = match whole(&pool, &seeds, began + SETTLE_LIMIT).await {
        Ok(l) => l,
        Err(last) => {
            let why = format!("the cluster was not whole {SETTLE_LIMIT:?} after the faults stopped: {last}");
            push(&found, Violation::new(HEALING, why, vec![]));
            return Ok(());
        }
    };
    let whole_after = began.elapsed();
    tracing::info!(epoch = layout.epoch, ?whole_after, "the cluster is whole again");
    // It takes appends again.
    let client = connect(seeds.clone(), false).await?;
    let mut appended = None;
    let mut tries = 0;
    while began.elapsed() < SETTLE_LIMIT * 2 {
        // A new payload per try: one that timed out may still land.
        let payload = bytes::Bytes::from(format!("settle-{index}-{tries}"));
        tries += 1;
        let start = now();
        match tokio::time::timeout(Duration::from_secs(5), client.append(payload.clone())).await {
            Ok(Ok(p)) => {
                appended = Some((p, payload, start));
                break;
            }
            // It may still land: recorded as such, so that a read finding it is valid.
            other => shared.push(Event {
                client: index,
                start,
                end: now(),
                op: Op::Append { payload: payload.to_vec(), streams: vec![] },
                outcome: Outcome::Unknown { error: format!("{other:?}") },
            }),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    match appended {
        Some((p, payload, start)) => shared.push(Event {
            client: index,
            start,
            end: now(),
            op: Op::Append { payload: payload.to_vec(), streams: vec![] },
            outcome: Outcome::Appended { position: p.0 },
        }),
        None => {
            push(&found, Violation::new(HEALING, "the whole cluster took no append after the faults stopped", vec![]));
            return Ok(());
        }
    }
    // The cluster may still move on (a late driver, a manager's next
    // change, nodes restarted by the heal that the managers take out for a
    // moment): the check starts again on the next whole layout.
    let mut layout = layout;
    loop {
        if check_replicas(&shared, &pool, &layout, &found).await {
            return Ok(());
        }
        if began.elapsed() > SETTLE_LIMIT * 2 {
            // A replica of the whole layout keeps refusing its epoch (sealed
            // ahead, and nobody moves the cluster on): a hang, reported.
            let why = format!("a replica of the whole layout (epoch {}) still refuses its epoch", layout.epoch);
            push(&found, Violation::new(HEALING, why, vec![]));
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        layout = match whole(&pool, &seeds, began + SETTLE_LIMIT * 2).await {
            Ok(l) => l,
            Err(last) => {
                let why = format!("the cluster did not stay whole after the faults stopped: {last}");
                push(&found, Violation::new(HEALING, why, vec![]));
                return Ok(());
            }
        };
    }
}

/// The newest layout once it is whole (every chain of the active segment at
/// the replication the cluster was made with, nobody away), or what it was
/// last if that does not happen by `deadline`.
async fn whole(pool: &Pool, seeds: &[String], deadline: tokio::time::Instant) -> Result<Layout, String> {
    let mut last;
    loop {
        match naxos_control::reconfig::newest_layout(pool, seeds, None).await {
            Ok(l) if l.under_replicated().is_empty() && l.away.is_empty() => return Ok(l),
            Ok(l) => {
                last = format!(
                    "epoch {}: chains short {:?}, away {:?}",
                    l.epoch,
                    l.under_replicated(),
                    l.away.iter().map(|a| a.addr.as_str()).collect::<Vec<_>>()
                )
            }
            Err(e) => last = e.to_string(),
        }
        if tokio::time::Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn push(found: &Mutex<Vec<Violation>>, v: Violation) {
    if let Ok(mut f) = found.lock() {
        f.push(v);
    }
}

/// Every acknowledged append (above the highest trim asked for) is on every
/// replica of its chain in `layout`, with its bytes. `false` if a replica is
/// at a later epoch already (the check is to be made on the newer layout).
async fn check_replicas(shared: &Shared, pool: &Pool, layout: &Layout, found: &Mutex<Vec<Violation>>) -> bool {
    let mut violations = Vec::new();
    let trim = shared.trim_mark();
    let events = shared.snapshot();
    // replica -> position -> (payload, event index)
    let mut want: BTreeMap<String, BTreeMap<u64, (Vec<u8>, usize)>> = BTreeMap::new();
    for (i, e) in events.iter().enumerate() {
        let (Op::Append { payload, .. }, Outcome::Appended { position }) = (&e.op, &e.outcome) else { continue };
        if *position < trim {
            continue;
        }
        let Some(place) = layout.placement(Position(*position)) else { continue };
        for r in place.chain {
            want.entry(r.clone()).or_default().insert(*position, (payload.clone(), i));
        }
    }
    for (replica, positions) in want {
        let (Some(&lo), Some(&hi)) = (positions.keys().next(), positions.keys().next_back()) else { continue };
        let mut held: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut trimmed_upto = 0;
        let mut at = lo;
        let mut tries = 0;
        while at <= hi {
            let req = Request {
                id: 0,
                cluster_id: layout.cluster_id.clone(),
                epoch: layout.epoch,
                body: Some(request::Body::ReadRange(ReadRange { from: at, to: hi + 1, max_bytes: 1 << 20 })),
            };
            match pool.call(&replica, req).await {
                Ok(response::Body::ReadRange(r)) => {
                    for pe in r.entries {
                        if let Some(e) = pe.entry {
                            held.insert(pe.position, e.payload.to_vec());
                        }
                    }
                    at = r.next.max(at + 1);
                }
                // Trimmed meanwhile (a trim asked for during the faults may
                // land late): nothing below it is checked.
                Err(rpc::Error::Server { error, .. }) if error.code == naxos_wire::ErrorCode::WrongEpoch => {
                    return false
                }
                Err(rpc::Error::Server { error, .. }) if error.code == naxos_wire::ErrorCode::Trimmed => {
                    trimmed_upto = trimmed_upto.max(at + 1);
                    at += 1;
                }
                other => {
                    tries += 1;
                    if tries > 50 {
                        push(
                            found,
                            Violation::new(
                                HEALING,
                                format!("replica {replica} of the whole cluster answers no read: {other:?}"),
                                vec![],
                            ),
                        );
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        for (p, (payload, i)) in positions {
            match held.get(&p) {
                Some(v) if *v == payload => {}
                Some(_) => violations.push(Violation::new(REPLICAS, format!("replica {replica} holds other bytes at position {p} than the append acknowledged there"), vec![i])),
                None if p < trimmed_upto => {}
                None => violations.push(Violation::new(REPLICAS, format!("replica {replica} lacks the acknowledged append at position {p} (epoch {} of the whole cluster)", layout.epoch), vec![i])),
            }
        }
    }
    if let Ok(mut f) = found.lock() {
        f.extend(violations);
    }
    true
}
