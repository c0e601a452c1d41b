//! What a node knows and checks of epochs and tails: the highest epoch it
//! knows, the confirmation of an epoch by the layout servers, and the checks
//! made before a request reaches a role, for values no single
//! role can judge alone: a trim above the log's tail, a write or fill far
//! ahead of it, an epoch that jumps past anything the layout servers know.
//! Each was a way for one message from a hostile or buggy client to delete
//! the log or brick the cluster for good; each is checked against the
//! sequencer's tail or the layout servers, on a slow path that honest
//! traffic rarely takes.

use super::{logunit, stopped, wrong_role, Ctx};
use naxos_wire::proto::{self, request, response, Request};
use naxos_wire::{Epoch, ErrorCode, ServerError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::oneshot;

/// How far above the highest sequencer tail the node has seen a write or a
/// fill may land without a check against the sequencer. Documented in
/// docs/operations.md: a write further ahead is checked, and refused if it
/// is above the sequencer's tail (no token was handed out there).
pub const WRITE_WINDOW: u64 = 4096;

/// The highest position the node knows the log's tail reached: the
/// sequencer's tail when it last asked, its log unit's tail and trim mark at
/// start-up, the start of the active segment of its layout. Writes of the
/// unit itself do not move it (a hostile client's would creep it up).
#[derive(Debug, Default)]
pub struct Horizon {
    known: AtomicU64,
    /// One check against the sequencer at a time; the others wait for it.
    asking: tokio::sync::Mutex<()>,
}

impl Horizon {
    /// Raises the known tail to `position` (never lowers it).
    pub fn raise(&self, position: u64) {
        self.known.fetch_max(position, Ordering::Relaxed);
    }

    /// The first position a write must be checked at.
    pub fn limit(&self) -> u64 {
        self.known.load(Ordering::Relaxed).saturating_add(WRITE_WINDOW)
    }
}

/// The primary sequencer's tail, asked at the node's epoch (or `epoch`, if
/// the request is newer).
async fn sequencer_tail(ctx: &Arc<Ctx>, epoch: u64, what: &str) -> Result<u64, ServerError> {
    let Some(layout) = ctx.layout.lock().map_err(|_| stopped())?.get().cloned() else {
        return Err(ServerError::new(ErrorCode::NotBootstrapped, "node holds no layout"));
    };
    let Some(sequencer) = layout.sequencers.first() else {
        return Err(ServerError::new(ErrorCode::Unavailable, format!("the layout names no sequencer to check {what}")));
    };
    let req = Request {
        id: 0,
        cluster_id: layout.cluster_id.clone(),
        epoch: epoch.max(layout.epoch),
        body: Some(request::Body::SeqTail(proto::SeqTail::default())),
    };
    match ctx.pool.call(sequencer, req).await {
        Ok(response::Body::Tail(t)) => {
            ctx.horizon.raise(t.tail);
            Ok(t.tail)
        }
        Ok(_) => {
            Err(ServerError::new(ErrorCode::Unavailable, "the sequencer answered a tail query with something else"))
        }
        Err(e) => Err(ServerError::new(
            ErrorCode::Unavailable,
            format!("cannot check {what} against the log's tail: {sequencer}: {e}"),
        )),
    }
}

/// Refuses a trim above the log's tail. One at or below what the unit holds
/// (or has trimmed) is below the tail; one above it (a unit of an older
/// segment, a replica being caught up, a hostile client's `Trim(2^64-1)`,
/// which once deleted every segment for good) is checked against the
/// primary sequencer's tail, which is above every position ever handed out.
pub async fn check_trim(ctx: &Arc<Ctx>, position: u64, epoch: u64) -> Result<(), ServerError> {
    if position > naxos_wire::POSITION_LIMIT {
        return Err(naxos_wire::reserved_position("trim", position));
    }
    let Some(tx) = &ctx.logunit else { return Err(wrong_role(ctx, "logunit")) };
    let (otx, orx) = oneshot::channel();
    tx.send(logunit::Op::Info(otx)).map_err(|_| stopped())?;
    let info = orx.await.map_err(|_| stopped())?;
    if position <= info.tail.0.max(info.meta.trim_mark.0)
        || naxos_wire::mutation::active(naxos_wire::mutation::Mutation::TrimAboveTail)
    {
        return Ok(());
    }
    let tail = sequencer_tail(ctx, epoch, &format!("the trim at {position}")).await?;
    if position > tail {
        return Err(ServerError::new(
            ErrorCode::BadRequest,
            format!("cannot trim at {position}: it is above the log's tail {tail}"),
        ));
    }
    Ok(())
}

/// Refuses a write or fill at or above the sequencer's tail: no token was
/// handed out there, so only a buggy or hostile client writes it (a write
/// at tail+10^12 once made the tail jump; hole writes just ahead of the
/// tail made honest appends lose their positions). Called only for
/// positions at or above `Horizon::limit`; concurrent callers share one
/// question to the sequencer.
pub async fn check_ahead(ctx: &Arc<Ctx>, position: u64, epoch: u64) -> Result<(), ServerError> {
    if position >= naxos_wire::POSITION_LIMIT {
        return Err(naxos_wire::reserved_position("write", position));
    }
    let _one = ctx.horizon.asking.lock().await;
    if position < ctx.horizon.limit() {
        return Ok(());
    }
    let tail = sequencer_tail(ctx, epoch, &format!("the write at {position}")).await?;
    if position >= tail {
        return Err(ServerError::at(
            ErrorCode::BadRequest,
            naxos_wire::Position(position),
            format!(
                "cannot write at {position}: it is at or above the log's tail {tail} (no token was handed out there)"
            ),
        ));
    }
    Ok(())
}

/// Admits a request that moves the node to `epoch` (a seal, a layout, a
/// sequencer bootstrap, a Paxos vote) only if the layout servers know an
/// epoch of at least `epoch - ahead`: epochs move forward one at a time
/// through the layout protocol, and a `Seal(2^64-1)` or a layout at epoch
/// 2^64-1 once bricked a cluster for good. The node's own knowledge (its
/// layout, its acceptor) answers the common case; otherwise it asks the
/// layout servers of its layout, and a chosen epoch is known to a majority
/// of them, so any majority's answers settle it.
pub async fn admit_epoch(ctx: &Arc<Ctx>, epoch: u64, ahead: u64, what: &str) -> Result<(), ServerError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let needed = epoch.saturating_sub(ahead);
    if highest_epoch(ctx) >= needed {
        return Ok(());
    }
    let refused = |known: u64| {
        ServerError::new(
            ErrorCode::BadRequest,
            format!(
                "{what} at epoch {epoch} is ahead of every epoch the layout servers know (the newest is {known}); epochs move forward one at a time through the layout protocol"
            ),
        )
    };
    let Some(layout) = ctx.layout.lock().map_err(|_| stopped())?.get().cloned() else {
        return Err(ServerError::new(ErrorCode::NotBootstrapped, "node holds no layout"));
    };
    let majority = layout.layout_servers.len() / 2 + 1;
    let mut known = highest_epoch(ctx);
    let mut answered = 0;
    let mut asks = FuturesUnordered::new();
    for server in &layout.layout_servers {
        if *server == ctx.advertise {
            answered += 1;
            continue;
        }
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::EpochProbe(proto::EpochProbe {})),
        };
        let pool = &ctx.pool;
        asks.push(async move { pool.call(server, req).await });
    }
    let mut errors = Vec::new();
    while let Some(answer) = asks.next().await {
        match answer {
            Ok(response::Body::EpochProbe(p)) => {
                answered += 1;
                known = known.max(p.epoch);
                if known >= needed {
                    return Ok(());
                }
            }
            Ok(_) => errors.push("a layout server answered an epoch probe with something else".to_string()),
            Err(e) => errors.push(e.to_string()),
        }
    }
    if answered >= majority {
        return Err(refused(known));
    }
    Err(ServerError::new(
        ErrorCode::Unavailable,
        format!("cannot check {what} at epoch {epoch} with a majority of the layout servers: {}", errors.join("; ")),
    ))
}

/// The highest epoch this node knows a layout may have been chosen for:
/// its layout's and (on a layout server) the last one its acceptor accepted.
/// Not its seal's nor a promise's: a reconfiguration that stalled after
/// them chose nothing, and must not stop tail queries until it is rolled
/// forward.
pub(super) fn highest_epoch(ctx: &Ctx) -> u64 {
    let layout = ctx.layout.lock().ok().and_then(|l| l.get().map(|l| l.epoch)).unwrap_or(0);
    let acceptor = ctx.acceptor.as_ref().and_then(|a| a.lock().ok().map(|a| a.accepted_epoch())).unwrap_or(0);
    layout.max(acceptor)
}

/// Confirms that no epoch above `epoch` may have been chosen: a majority of
/// the layout servers know of no layout for a later one. A primary
/// sequencer cut off by a partition keeps its state and would answer clients
/// that still hold its layout with a tail below positions the next epoch's
/// sequencer has handed out (soak seed 10004301: a tail of 55 after position
/// 68 was acknowledged). Asked after the answer was computed, so a newer
/// epoch chosen before the query began is always seen: Paxos chose it
/// through a majority of acceptances, which meets this majority. A server
/// that accepted a later layout only takes its vote away: a proposal
/// accepted by a minority and abandoned chose nothing.
pub(super) async fn confirm_epoch(ctx: &Arc<Ctx>, epoch: u64) -> Result<(), ServerError> {
    use futures::stream::{FuturesUnordered, StreamExt};
    let Some(layout) = ctx.layout.lock().map_err(|_| stopped())?.get().cloned() else {
        return Err(ServerError::new(ErrorCode::NotBootstrapped, "node holds no layout"));
    };
    let majority = layout.layout_servers.len() / 2 + 1;
    let (mut confirmed, mut newest) = (0, None::<u64>);
    let mut seen = |at: u64, confirmed: &mut usize| {
        if at > epoch {
            newest = newest.max(Some(at));
        } else {
            *confirmed += 1;
        }
    };
    let mut asks = FuturesUnordered::new();
    for server in &layout.layout_servers {
        if *server == ctx.advertise {
            seen(highest_epoch(ctx), &mut confirmed);
            continue;
        }
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch,
            body: Some(request::Body::EpochProbe(proto::EpochProbe {})),
        };
        let pool = &ctx.pool;
        asks.push(async move { pool.call(server, req).await });
    }
    let mut errors = Vec::new();
    while confirmed < majority {
        if confirmed + asks.len() < majority {
            // Too few left to make a majority.
            break;
        }
        match asks.next().await {
            Some(Ok(response::Body::EpochProbe(p))) => seen(p.epoch, &mut confirmed),
            Some(Ok(_)) => errors.push("a layout server answered an epoch probe with something else".to_string()),
            Some(Err(e)) => errors.push(e.to_string()),
            None => break,
        }
    }
    if confirmed >= majority {
        return Ok(());
    }
    match newest {
        Some(newer) => Err(ServerError::wrong_epoch(Epoch(newer), Epoch(epoch))),
        None => Err(ServerError::new(
            ErrorCode::Unavailable,
            format!("cannot confirm epoch {epoch} with a majority of the layout servers: {}", errors.join("; ")),
        )),
    }
}
