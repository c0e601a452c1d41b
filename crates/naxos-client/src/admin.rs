//! Cluster administration: bootstrap (install the first layout on every node)
//! and node status. These talk to nodes directly, by address. Sealing and
//! every later layout belong to the control plane (`naxos-control`), which
//! gets each layout chosen by the layout servers.

use crate::Error;
use naxos_wire::net::Net;
use naxos_wire::proto::{request, response, Bootstrap, Request, StatusOk};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{ErrorCode, Layout};
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
            body: Some(request::Body::Bootstrap(Bootstrap { layout: Some(Box::new(layout.clone())) })),
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

/// Asks `addr` what its management role sees (a heartbeat, as the managers
/// send them): whom it suspects, whether it acts, the catch-up it runs.
pub async fn heartbeat(net: Arc<dyn Net>, addr: &str) -> Result<naxos_wire::proto::HeartbeatOk, Error> {
    let pool = Pool::new(net, rpc::Options { timeout_call: std::time::Duration::from_secs(2), ..Default::default() });
    let body = request::Body::Heartbeat(naxos_wire::proto::Heartbeat { from: String::new(), spare: false });
    let req = Request { id: 0, cluster_id: String::new(), epoch: 0, body: Some(body) };
    match pool.call(addr, req).await {
        Ok(response::Body::Heartbeat(s)) => Ok(s),
        Ok(_) => Err(Error::Invalid(format!("{addr} answered a heartbeat with something else"))),
        Err(rpc::Error::Server { error, .. }) => Err(Error::Server(error)),
        Err(e) => Err(Error::Unavailable(e.to_string())),
    }
}

/// Whether an error means the node is not bootstrapped yet.
pub fn is_not_bootstrapped(e: &Error) -> bool {
    matches!(e, Error::Server(s) if s.code == ErrorCode::NotBootstrapped)
}
