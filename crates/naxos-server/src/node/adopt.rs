//! How a node takes a layout: the bootstrap of a new cluster, the enrollment
//! of a fresh node in an existing one, and the commit of a newer layout (its
//! epoch raised on every role, its sequencer recovered for it).

use super::*;

/// Bootstraps a new cluster on this node with `layout` (its epoch-0 layout).
pub(super) async fn bootstrap(ctx: &Arc<Ctx>, layout: Option<Layout>) -> Result<(), ServerError> {
    let Some(layout) = layout else {
        return Err(ServerError::new(ErrorCode::BadRequest, "bootstrap without a layout"));
    };
    layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
    if let Some(current) = ctx.layout.lock().map_err(|_| stopped())?.get() {
        // The same bootstrap again, after the cluster moved on (the managers
        // took out a node the first try could not reach): already done.
        if current.cluster_id == layout.cluster_id && current.epoch > layout.epoch {
            return Ok(());
        }
        if *current != layout {
            return Err(ServerError::new(
                ErrorCode::AlreadyBootstrapped,
                format!(
                    "node is already bootstrapped (cluster {}); a cluster is bootstrapped once",
                    current.cluster_id
                ),
            ));
        }
    }
    set_unit_cluster(ctx, &layout.cluster_id).await?;
    ctx.layout.lock().map_err(|_| stopped())?.bootstrap(layout.clone())?;
    if ctx.cluster.set(layout.cluster_id.clone()).is_ok() {
        tracing::info!(cluster = %layout.cluster_id, "bootstrapped");
        start_recovery(ctx);
    }
    Ok(())
}

/// Records the cluster id on the node's log unit (refused if it holds another).
pub(super) async fn set_unit_cluster(ctx: &Arc<Ctx>, cluster_id: &str) -> Result<(), ServerError> {
    if let Some(tx) = &ctx.logunit {
        let (otx, orx) = oneshot::channel();
        tx.send(logunit::Op::SetCluster(cluster_id.to_string(), otx)).map_err(|_| stopped())?;
        orx.await.map_err(|_| stopped())??;
    }
    Ok(())
}

/// Joins a node that was never bootstrapped to the cluster of `layout`
/// (`naxos reconfigure add` of a fresh server): as a bootstrap, at any epoch.
pub(super) async fn enroll(ctx: &Arc<Ctx>, layout: Layout) -> Result<(), ServerError> {
    layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
    set_unit_cluster(ctx, &layout.cluster_id).await?;
    ctx.layout.lock().map_err(|_| stopped())?.enroll(layout.clone())?;
    ctx.fence.raise(Epoch(layout.epoch));
    if ctx.cluster.set(layout.cluster_id.clone()).is_ok() {
        tracing::info!(cluster = %layout.cluster_id, epoch = layout.epoch, "joined the cluster");
        start_recovery(ctx);
    }
    Ok(())
}

/// Installs a newer layout; a sequencer on this node then recovers for its
/// epoch. A node that holds no layout yet joins the cluster with it.
pub(super) async fn commit(ctx: &Arc<Ctx>, layout: Option<Layout>) -> Result<(), ServerError> {
    let Some(layout) = layout else {
        return Err(ServerError::new(ErrorCode::BadRequest, "commit without a layout"));
    };
    if ctx.cluster.get().is_none() {
        return enroll(ctx, layout).await;
    }
    let epoch = Epoch(layout.epoch);
    let held = ctx.layout.lock().map_err(|_| stopped())?.get().map_or(0, |l| l.epoch);
    if layout.epoch > held {
        layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
        admit_epoch(ctx, layout.epoch, 0, "a layout").await?;
    }
    let newer = ctx.layout.lock().map_err(|_| stopped())?.commit(layout)?;
    if let Some(active) = ctx.layout.lock().map_err(|_| stopped())?.get().and_then(|l| l.segments.last()) {
        ctx.horizon.raise(active.start);
    }
    if newer {
        tracing::info!(%epoch, "layout committed");
        ctx.fence.raise(epoch);
        if let Some(tx) = &ctx.sequencer {
            let (otx, orx) = oneshot::channel();
            tx.send(sequencer::Op::Seal(epoch, otx)).map_err(|_| stopped())?;
            // An older epoch here means the sequencer already moved past it.
            let _ = orx.await.map_err(|_| stopped())?;
        }
        start_recovery(ctx);
    }
    Ok(())
}
