//! Sequencer recovery: the global tail and the stream tails, read from the log
//! units of every chain. A chain's head holds a superset of what the rest of
//! the chain holds (the prefix property), so every head must answer; the
//! answers of the other replicas are taken too, and the maximum wins. Taking
//! them from one unit only is how CorfuDB lost data (#2715).

use naxos_wire::proto::{request, response, Request, UnitTail};
use naxos_wire::rpc::Pool;
use naxos_wire::{Layout, StreamId};
use std::collections::BTreeMap;

/// What the sequencer starts from.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The first position no log unit holds.
    pub tail: u64,
    /// The last position of every stream.
    pub streams: BTreeMap<StreamId, u64>,
}

/// Why a recovery failed.
#[derive(Clone, Debug)]
pub struct Failed {
    /// What went wrong.
    pub message: String,
    /// A log unit is sealed at this epoch, later than the layout's: a
    /// reconfiguration is under way (or stalled) and this layout is old.
    pub sealed_ahead: Option<u64>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Queries every log unit of `layout` once; fails if any chain's head did
/// not answer. `me` is this node: the token ceiling its own sequencer stored
/// on the units is not taken (its own record is exact after a clean stop).
pub async fn recover(pool: &Pool, layout: &Layout, me: naxos_wire::NodeId) -> Result<Recovered, Failed> {
    let mut out = Recovered::default();
    let mut sealed_ahead = None;
    let mut answered: BTreeMap<String, bool> = BTreeMap::new();
    for addr in layout.log_units() {
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::UnitTail(UnitTail { streams: vec![], all_streams: true })),
        };
        match pool.call(&addr, req).await {
            Ok(response::Body::Tail(t)) => {
                // Never below a position another sequencer handed out (the
                // ceiling it stored here).
                let ceiling = if t.token_ceiling_by == me.0 { 0 } else { t.token_ceiling };
                out.tail = out.tail.max(t.tail).max(ceiling);
                for st in t.streams {
                    if let Some(s) = StreamId::from_slice(&st.stream) {
                        let e = out.streams.entry(s).or_insert(st.last);
                        *e = (*e).max(st.last);
                    }
                }
                answered.insert(addr, true);
            }
            Ok(_) => {
                return Err(Failed {
                    message: format!("log unit {addr} answered a tail query with something else"),
                    sealed_ahead: None,
                })
            }
            Err(e) => {
                if let Some(s) = e.server().filter(|s| s.code == naxos_wire::ErrorCode::WrongEpoch) {
                    sealed_ahead = sealed_ahead.max(Some(s.epoch.0));
                }
                tracing::debug!("sequencer recovery: {addr}: {e}");
                answered.insert(addr, false);
            }
        }
    }
    for seg in &layout.segments {
        for stripe in &seg.stripes {
            if let Some(head) = stripe.chain.first() {
                if !answered.get(head).copied().unwrap_or(false) {
                    return Err(Failed {
                        message: format!("chain head {head} did not answer the tail query"),
                        sealed_ahead,
                    });
                }
            }
        }
    }
    Ok(out)
}
