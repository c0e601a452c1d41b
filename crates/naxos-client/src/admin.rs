//! Cluster administration: bootstrap (install the first layout on every node),
//! node status, and seal. These talk to nodes directly, by address.

use crate::Error;
use naxos_wire::net::Net;
use naxos_wire::proto::{request, response, Bootstrap, CommitLayout, Request, Seal, StatusOk};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Epoch, ErrorCode, Layout};
use std::sync::Arc;

/// Installs `layout` (epoch 0) on every node it names: log units first, then
/// the layout servers and the sequencers (which then recover from the log
/// units). Repeating the same bootstrap is harmless; a different one is refused.
pub async fn bootstrap(net: Arc<dyn Net>, layout: &Layout) -> Result<(), Error> {
    layout.validate().map_err(|e| Error::Invalid(format!("invalid layout: {e}")))?;
    let pool = Pool::new(net, rpc::Options::default());
    let mut order = layout.log_units();
    for a in layout.all_nodes() {
        if !order.contains(&a) {
            order.push(a);
        }
    }
    for addr in order {
        let req = Request {
            id: 0,
            cluster_id: String::new(),
            epoch: 0,
            body: Some(request::Body::Bootstrap(Bootstrap { layout: Some(layout.clone()) })),
        };
        pool.call(&addr, req).await.map_err(|e| match e {
            rpc::Error::Server { error, .. } => Error::Server(error),
            other => Error::Unavailable(format!("bootstrapping {addr}: {other}")),
        })?;
    }
    Ok(())
}

/// One node's status, or why it could not be reached.
pub async fn status(net: Arc<dyn Net>, addr: &str) -> Result<StatusOk, Error> {
    let pool = Pool::new(net, rpc::Options { timeout_call: std::time::Duration::from_secs(2), ..Default::default() });
    let req =
        Request { id: 0, cluster_id: String::new(), epoch: 0, body: Some(request::Body::Status(Default::default())) };
    match pool.call(addr, req).await {
        Ok(response::Body::Status(s)) => Ok(s),
        Ok(_) => Err(Error::Invalid(format!("{addr} answered a status query with something else"))),
        Err(rpc::Error::Server { error, .. }) => Err(Error::Server(error)),
        Err(e) => Err(Error::Unavailable(e.to_string())),
    }
}

/// Seals one node at `epoch`: it refuses every older-epoch request from now on.
/// Returns the node's log unit tail (0 if it has no log unit).
pub async fn seal(net: Arc<dyn Net>, layout: &Layout, addr: &str, epoch: Epoch) -> Result<u64, Error> {
    let pool = Pool::new(net, rpc::Options::default());
    let req = Request {
        id: 0,
        cluster_id: layout.cluster_id.clone(),
        epoch: layout.epoch,
        body: Some(request::Body::Seal(Seal { epoch: epoch.0 })),
    };
    match pool.call(addr, req).await {
        Ok(response::Body::Seal(s)) => Ok(s.tail),
        Ok(_) => Err(Error::Invalid(format!("{addr} answered a seal with something else"))),
        Err(rpc::Error::Server { error, .. }) => Err(Error::Server(error)),
        Err(e) => Err(Error::Unavailable(e.to_string())),
    }
}

/// Whether an error means the node is not bootstrapped yet.
pub fn is_not_bootstrapped(e: &Error) -> bool {
    matches!(e, Error::Server(s) if s.code == ErrorCode::NotBootstrapped)
}

/// Moves the cluster to the next epoch with the same members: seals every
/// node at `layout.epoch + 1` (from then on no request of an older epoch is
/// served anywhere), then commits the new layout to every node, layout
/// servers first; sequencers recover for the new epoch. Each node is tried up
/// to `attempts` times. Returns the new layout.
pub async fn advance_epoch(net: Arc<dyn Net>, layout: &Layout, attempts: u32) -> Result<Layout, Error> {
    let mut next = layout.clone();
    next.epoch += 1;
    let pool = Pool::new(net, rpc::Options { timeout_call: std::time::Duration::from_secs(1), ..Default::default() });
    let nodes = layout.all_nodes();
    for addr in &nodes {
        let body = request::Body::Seal(Seal { epoch: next.epoch });
        call_until_done(&pool, addr, layout, body, attempts).await?;
    }
    for addr in &nodes {
        let body = request::Body::CommitLayout(CommitLayout { layout: Some(next.clone()) });
        call_until_done(&pool, addr, &next, body, attempts).await?;
    }
    Ok(next)
}

async fn call_until_done(
    pool: &Pool,
    addr: &str,
    layout: &Layout,
    body: request::Body,
    attempts: u32,
) -> Result<(), Error> {
    let mut last = String::new();
    for _ in 0..attempts.max(1) {
        let req =
            Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body.clone()) };
        match pool.call(addr, req).await {
            Ok(_) => return Ok(()),
            Err(rpc::Error::Server { error, .. }) if error.code != ErrorCode::Unavailable => {
                return Err(Error::Server(error))
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Err(Error::Unavailable(format!("{addr}: {last}")))
}
