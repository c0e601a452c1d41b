//! The node's own upkeep of its epoch: sequencer recovery (at start and at
//! every committed layout; after a crash, through a new epoch) and the stall
//! watchdog that learns or finishes a reconfiguration whose driver stopped.

use super::*;

/// How long a primary sequencer keeps failing to recover before it looks for
/// a stalled reconfiguration to finish.
const ROLL_FORWARD_AFTER: Duration = Duration::from_secs(2);

/// If this node sequences and holds a layout, recovers the sequencer's state
/// from the log units in the background, retrying until it succeeds.
///
/// Recovery can only fail for good in one way: the log units were sealed at
/// a later epoch than the node's layout, by a reconfiguration whose layout
/// did not reach this node or was never chosen (its driver died between the
/// seal and the commit). The node then learns the newest layout from the
/// layout servers; if there is none, `watch_for_stalls` finishes it.
pub(super) fn start_recovery(ctx: &Arc<Ctx>) {
    let Some(seq) = ctx.sequencer.clone() else { return };
    if ctx.layout.lock().ok().and_then(|l| l.get().cloned()).is_none() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(20);
        let mut shutdown = ctx.shutdown.clone();
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            // The newest layout the node holds: a commit may arrive while we retry.
            let Some(layout) = ctx.layout.lock().ok().and_then(|l| l.get().cloned()) else { return };
            if ctx.restarted_at.is_some_and(|e| layout.epoch <= e) && layout.sequencers.first() == Some(&ctx.advertise)
            {
                // A newer layout may exist already (this node missed its commit).
                if learn_newer_layout(&ctx, &layout).await {
                    return; // the commit started a recovery for the new epoch
                }
                // Tokens this sequencer handed out before it stopped can still
                // be written, unknown to a recovery from the log units (its
                // stream tails would miss them). A new epoch fences them:
                // as in CORFU, a sequencer recovers through a reconfiguration.
                roll_forward(&ctx, &layout, "the primary sequencer restarted; moving to a new epoch").await;
                if ctx.layout.lock().ok().and_then(|l| l.get().map(|l| l.epoch)).is_some_and(|e| e > layout.epoch) {
                    return; // the commit started a recovery for the new epoch
                }
                tokio::select! {
                    biased;
                    _ = until_stopped(&mut shutdown) => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
            let stalled = match recover_once(&ctx, &seq, &layout).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!("sequencer recovery at epoch {}: {e}; retrying in {backoff:?}", layout.epoch);
                    e.sealed_ahead.is_some()
                }
            };
            if !stalled {
                failing_since = None;
            }
            let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
            // Sealed ahead of this node's layout: learn the newer layout if
            // one was committed (the watchdog finishes a stalled one).
            if stalled && since.elapsed() >= ROLL_FORWARD_AFTER {
                if learn_newer_layout(&ctx, &layout).await {
                    return; // the commit started a recovery for the new epoch
                }
                failing_since = Some(tokio::time::Instant::now());
            }
            tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    });
}

/// One recovery of the sequencer for `layout`'s epoch.
async fn recover_once(
    ctx: &Arc<Ctx>,
    seq: &mpsc::UnboundedSender<sequencer::Op>,
    layout: &Layout,
) -> Result<(), recovery::Failed> {
    let failed = |message: String, sealed_ahead| recovery::Failed { message, sealed_ahead };
    let me = ctx.own_record.then_some(ctx.node_id);
    let r = recovery::recover(&ctx.pool, layout, me).await?;
    let streams = r
        .streams
        .iter()
        .map(|(s, &last)| proto::StreamTail { stream: bytes::Bytes::copy_from_slice(&s.to_bytes()), last })
        .collect();
    let req = Request {
        id: 0,
        cluster_id: layout.cluster_id.clone(),
        epoch: layout.epoch,
        body: Some(request::Body::SeqBootstrap(proto::SeqBootstrap { tail: r.tail, streams })),
    };
    let (reply, rx) = Reply::once(0);
    seq.send(sequencer::Op::Request(req, reply)).map_err(|_| failed("the sequencer stopped".into(), None))?;
    match rx.await.map(|resp| resp.body) {
        Ok(Some(response::Body::Error(e))) => {
            let ahead = (e.code == naxos_wire::ErrorCode::WrongEpoch as i32).then_some(e.epoch);
            Err(failed(format!("sequencer bootstrap refused: {}", e.message), ahead))
        }
        Ok(_) => {
            tracing::info!(tail = r.tail, streams = r.streams.len(), epoch = layout.epoch, "sequencer recovered");
            // The chains may have changed (a unit added, others taken out):
            // its token ceiling goes to the new ones too, or a unit that joined
            // after the last raise would not know of tokens already handed out,
            // and a later sequencer started from it would hand them out again.
            let stored = sequencer::CeilingStore::new(ctx.config.fs.clone(), &ctx.config.data_dir).load();
            if let Ok(stored) = stored.map(|s| s.ceiling).map_err(|e| e.to_string()) {
                if stored > 0 {
                    if let Err(e) = store_ceiling(ctx, stored).await {
                        tracing::warn!(epoch = layout.epoch, "storing the token ceiling on the new chains: {e}");
                    }
                }
            }
            Ok(())
        }
        Err(_) => Err(failed("the sequencer stopped".into(), None)),
    }
}

/// Watches for a reconfiguration that stalled: this node's log unit or
/// sequencer is sealed at an epoch later than its layout, and stays so. The
/// node then learns the newest layout from the layout servers, and if there
/// is none (the driver died between the seal and the commit, before or after
/// the layout was chosen), a layout server finishes the reconfiguration
/// itself: the next epoch, same members. Paxos keeps a layout that was
/// already chosen, so nothing can fork, and the cluster is never left sealed
/// with no layout to follow (CorfuDB #3875). Nodes wait a little longer the
/// higher their place among the layout servers, so one usually acts alone.
pub(super) fn watch_for_stalls(ctx: &Arc<Ctx>) {
    if ctx.logunit.is_none() && ctx.sequencer.is_none() {
        return;
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let mut shutdown = ctx.shutdown.clone();
        let mut stalled_for = 0u32;
        loop {
            tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(ROLL_FORWARD_AFTER) => {}
            }
            let Some(layout) = ctx.layout.lock().ok().and_then(|l| l.get().cloned()) else { continue };
            if ctx.fence.get().0 <= layout.epoch {
                stalled_for = 0;
                continue;
            }
            stalled_for += 1;
            if learn_newer_layout(&ctx, &layout).await {
                stalled_for = 0;
                continue;
            }
            // Layout servers act, the first after two periods, the next after
            // three, ...; any other node after all of them: a unit sealed
            // ahead by an attempt that sealed nothing else (a re-add that
            // failed after its copy) leaves the layout servers nothing to
            // notice, and refuses reads of the segments it serves until the
            // cluster moves on (soak seed 11016795).
            let rank = layout.layout_servers.iter().position(|a| *a == ctx.advertise);
            let rank = rank.unwrap_or(layout.layout_servers.len());
            if stalled_for >= 2 + rank as u32 {
                roll_forward(
                    &ctx,
                    &layout,
                    "the log units are sealed ahead of this node's layout; finishing the reconfiguration",
                )
                .await;
                stalled_for = 0;
            }
        }
    });
}

/// Commits the newest layout the layout servers hold, if it is newer than
/// `held`; returns whether it did.
pub(super) async fn learn_newer_layout(ctx: &Arc<Ctx>, held: &Layout) -> bool {
    let mut addrs = held.layout_servers.clone();
    addrs.extend(held.all_nodes());
    let Ok(newest) = naxos_control::reconfig::newest_layout(&ctx.pool, &addrs, Some(held.clone())).await else {
        return false;
    };
    if newest.epoch <= held.epoch || newest.cluster_id != held.cluster_id {
        return false;
    }
    tracing::info!(epoch = newest.epoch, "learnt a newer layout from the layout servers");
    commit(ctx, Some(newest)).await.is_ok()
}

/// Moves the cluster to the next epoch with the same members (a stalled
/// reconfiguration, or a restarted primary sequencer).
async fn roll_forward(ctx: &Arc<Ctx>, layout: &Layout, why: &str) {
    tracing::warn!(epoch = layout.epoch, "{why}");
    let net = ctx.net.clone();
    // A node with a given id (the simulator's) seeds its random choices from
    // the id, the epoch and the time since it started on its own runtime's
    // clock (simulated, so a run replays; a clock shared between hosts would
    // not be), so that no two roll-forwards draw the same rank ids; others
    // draw at random.
    let seed = match ctx.config.node_id {
        Some(id) => {
            let since = ctx.started.elapsed().as_nanos() as u64;
            id.0 ^ layout.epoch.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ since.rotate_left(17)
        }
        None => 0,
    };
    let options = naxos_control::Options {
        attempts: 3,
        seed,
        reason: format!("{}: roll forward a reconfiguration nobody finished", ctx.advertise),
        clock: ctx.config.clock,
        ..Default::default()
    };
    match naxos_control::reconfigure(net, &layout.all_nodes(), &naxos_control::Change::NextEpoch, &options).await {
        Ok(r) => tracing::info!(epoch = r.layout.epoch, "rolled the stalled reconfiguration forward"),
        Err(e) => tracing::warn!("rolling forward: {e}"),
    }
}
