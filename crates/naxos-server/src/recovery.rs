//! Sequencer recovery: asks the log units of every chain for their tails and
//! stream tails (every head must answer; `naxos_control::tails` decides what
//! the answers mean, as it does for a reconfiguration's bootstrap).

use naxos_control::tails::{sequencer_start, TailAnswer};
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
/// not answer. `me` is this node if its sequencer has its own record: the
/// token ceiling it stored on the units is then not taken (its own record is
/// exact after a clean stop); `None` takes every ceiling.
/// What the answers mean is `naxos_control::tails::sequencer_start`'s.
pub async fn recover(pool: &Pool, layout: &Layout, me: Option<naxos_wire::NodeId>) -> Result<Recovered, Failed> {
    let mut sealed_ahead = None;
    let mut answers = Vec::new();
    for addr in layout.log_units() {
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::UnitTail(UnitTail { streams: vec![], all_streams: true })),
        };
        match pool.call(&addr, req).await {
            Ok(response::Body::Tail(t)) => {
                let streams =
                    t.streams.iter().filter_map(|st| StreamId::from_slice(&st.stream).map(|s| (s, st.last))).collect();
                let answer = TailAnswer {
                    tail: t.tail,
                    token_ceiling: t.token_ceiling,
                    token_ceiling_by: t.token_ceiling_by,
                    streams,
                };
                answers.push((addr, Some(answer)));
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
                answers.push((addr, None));
            }
        }
    }
    // Never below the active segment's start (the positions below it
    // belong to sealed segments, which take no appends) nor the layout's
    // tail floor (what the sealed sequencers had handed out).
    match sequencer_start(layout, layout.tail_floor, &answers, me) {
        Ok(start) => Ok(Recovered { tail: start.tail, streams: start.streams }),
        Err(message) => Err(Failed { message, sealed_ahead }),
    }
}
