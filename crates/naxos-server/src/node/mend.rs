//! The log unit's own repair of records lost to damage on its disk: every
//! `MEND_EVERY` it asks its unit which positions read as corrupted (records
//! that failed their checksum at start-up or on a read, the unknown positions
//! of a damaged segment), reads each from the other replicas of its chain in
//! the node's newest layout, and writes the first value one holds back as a
//! repair (`Write.repair`). Any replica's value is the position's value:
//! entries go down a chain in order and positions are write-once, so every
//! replica that holds a value holds the same one. A position that no other
//! replica holds is tried again later, with a growing pause; it keeps
//! reading as corrupted, never as unwritten.

use super::*;
use naxos_wire::Position;
use std::collections::BTreeMap;

/// How often the node looks for corrupted positions to repair.
pub(super) const MEND_EVERY: Duration = Duration::from_secs(1);

/// The longest pause before a position no replica could give is tried again.
const RETRY_MAX: Duration = Duration::from_secs(60);

/// Starts the repair loop, on nodes that run a log unit (unless
/// `Config::repair_damaged` is off).
pub(super) fn start_mending(ctx: &Arc<Ctx>) {
    let Some(unit) = ctx.logunit.clone().filter(|_| ctx.config.repair_damaged) else { return };
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut shutdown = ctx.shutdown.clone();
        // Per position: the pause before the next try, and when that is.
        let mut waiting: BTreeMap<u64, (Duration, tokio::time::Instant)> = BTreeMap::new();
        let mut first = true;
        loop {
            // The first look is at once: the start-up scan's findings are
            // repaired before the chain can change.
            if !std::mem::take(&mut first) {
                tokio::select! {
                    biased; // deterministic polling order (the simulator replays seeds)
                    _ = until_stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(MEND_EVERY) => {}
                }
            }
            let (otx, orx) = oneshot::channel();
            if unit.send(logunit::Op::Corrupted(otx)).is_err() {
                return;
            }
            let Ok(corrupted) = orx.await else { return };
            waiting.retain(|p, _| corrupted.contains(&Position(*p)));
            if corrupted.is_empty() || naxos_wire::mutation::active(naxos_wire::mutation::Mutation::NoMend) {
                continue;
            }
            let Some(held) = ctx.layout.lock().ok().and_then(|l| l.get().cloned()) else { continue };
            // A node taken out of its chains (away, or fenced) holds an old
            // layout, whose epoch the chain's replicas refuse: ask the layout
            // servers for the newest.
            let servers = held.layout_servers.clone();
            let layout =
                naxos_control::reconfig::newest_layout(&ctx.pool, &servers, Some(held.clone())).await.unwrap_or(held);
            let now = tokio::time::Instant::now();
            for p in corrupted {
                if waiting.get(&p.0).is_some_and(|(_, at)| *at > now) {
                    continue;
                }
                let mut result = mend_one(&ctx, &unit, &layout, p).await;
                // A reconfiguration moved the chain on meanwhile: at once
                // again with the newest layout (a pause would give the
                // chain time to lose its other replicas too).
                for _ in 0..STALE_RETRIES {
                    match &result {
                        Err(Stale(_)) => {}
                        _ => break,
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    let fresh = naxos_control::reconfig::newest_layout(&ctx.pool, &servers, Some(layout.clone()))
                        .await
                        .unwrap_or_else(|_| layout.clone());
                    result = mend_one(&ctx, &unit, &fresh, p).await;
                }
                match result.map_err(|(Stale(why) | Failed(why))| why) {
                    Ok(from) => {
                        tracing::info!(position = %p, %from, "repaired a record lost to damage from a replica's copy");
                        waiting.remove(&p.0);
                    }
                    Err(why) => {
                        let pause = waiting.get(&p.0).map_or(MEND_EVERY, |(d, _)| (*d * 2).min(RETRY_MAX));
                        tracing::warn!(position = %p, %why, retry_in = ?pause, "a corrupted record is not repaired yet");
                        waiting.insert(p.0, (pause, now + pause));
                    }
                }
            }
        }
    });
}

/// Tries made at once, with the newest layout, when a replica refused the
/// epoch of the layout a try used.
const STALE_RETRIES: usize = 5;

/// Why a repair did not happen.
enum NotMended {
    /// A replica refused the layout's epoch: try again with a newer one.
    Stale(String),
    /// Anything else (no replica holds it, none answered, the unit refused).
    Failed(String),
}
use NotMended::{Failed, Stale};

/// Repairs position `p` from another replica of its chain in `layout`;
/// returns the replica it came from.
async fn mend_one(
    ctx: &Arc<Ctx>,
    unit: &mpsc::UnboundedSender<logunit::Op>,
    layout: &Layout,
    p: Position,
) -> Result<String, NotMended> {
    let place =
        layout.placement(p).ok_or_else(|| Failed(format!("the layout of epoch {} does not place it", layout.epoch)))?;
    let mut last = String::from("no other replica in its chain");
    let mut stale = false;
    for addr in place.chain.iter().filter(|a| **a != ctx.advertise) {
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::Read(proto::Read { position: p.0 })),
        };
        let entry = match ctx.pool.call(addr, req).await {
            Ok(response::Body::Read(proto::ReadOk { entry: Some(entry) })) => entry,
            Ok(other) => {
                last = format!("{addr} answered {other:?}");
                continue;
            }
            Err(e) => {
                stale |= e.server().is_some_and(|s| s.code == ErrorCode::WrongEpoch);
                last = format!("{addr}: {e}");
                continue;
            }
        };
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch.max(ctx.fence.get().0),
            body: Some(request::Body::Write(proto::Write { position: p.0, entry: Some(entry), repair: true })),
        };
        let (reply, rx) = Reply::once(0);
        unit.send(logunit::Op::Request(req, reply)).map_err(|_| Failed("the log unit stopped".to_string()))?;
        return match rx.await.map_err(|_| Failed("the log unit stopped".to_string()))?.body {
            Some(response::Body::Error(e)) => Err(Failed(format!("the log unit refused the repair: {}", e.message))),
            _ => Ok(addr.clone()),
        };
    }
    Err(if stale { Stale(last) } else { Failed(last) })
}
