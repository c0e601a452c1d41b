//! The checkpointer: checkpoints every object of the catalog whose latest
//! checkpoint is too far behind the log (idle ones included), then trims
//! the log below the oldest latest checkpoint of them all, so that every
//! object can still be opened and every lagging runtime can reload. Trim
//! only follows durable checkpoints, never races them (CorfuDB #861): the
//! trim point is computed after the checkpoints of the round are written,
//! from checkpoints only.

use crate::object::Kind;
use crate::{Error, Runtime};
use naxos_client::Position;

/// What one checkpointer round does.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Checkpoint an object once its latest checkpoint is this many log
    /// positions behind the tail, or it has none (default 100,000).
    pub behind_positions: u64,
    /// Trim the log below the oldest latest checkpoint (default off: the
    /// log may hold entries that are not objects', which a trim would take).
    pub trim: bool,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy { behind_positions: 100_000, trim: false }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Objects in the catalog (the catalog itself included).
    pub objects: usize,
    /// Checkpoints written.
    pub checkpointed: usize,
    /// The oldest latest checkpoint: the log below it is no longer needed.
    pub needed_from: Option<Position>,
    /// Where the log was trimmed, if it was.
    pub trimmed_to: Option<Position>,
}

impl Runtime {
    /// One checkpointer round under `policy` (see the module doc).
    pub async fn checkpoint_round(&self, policy: &Policy) -> Result<Round, Error> {
        let catalog = self.map(crate::catalog::NAME);
        // The catalog as of `listed`: an object entered at or after it (its
        // first update comes later still) is not in the list, so the trim
        // never goes past `listed`.
        let (entries, listed) = catalog.list_with_position().await?;
        let mut objects: Vec<(naxos_client::StreamId, Kind)> =
            entries.iter().filter_map(|(k, v)| crate::catalog::parse(k, v)).collect();
        objects.push((catalog.stream(), Kind::Map));
        let tail = self.client().tail().await?;
        let mut round = Round { objects: objects.len(), ..Round::default() };
        let mut oldest: Option<Position> = None;
        for (stream, kind) in objects {
            let latest = crate::checkpoint::latest(self.client(), stream).await?.map(|(at, _)| at);
            let at = match latest {
                Some(at) if at.0.saturating_add(policy.behind_positions) > tail.0 => at,
                _ => {
                    round.checkpointed += 1;
                    self.checkpoint(stream, kind).await?
                }
            };
            oldest = Some(oldest.map_or(at, |o| o.min(at)));
        }
        let oldest = oldest.map(|o| o.min(listed));
        round.needed_from = oldest;
        tracing::debug!(?round, ?oldest, %listed, "checkpointer round");
        if let (true, Some(at)) = (policy.trim, oldest) {
            self.client().trim(at).await?;
            round.trimmed_to = Some(at);
        }
        Ok(round)
    }
}
