//! The node's epoch, with one owner. Every role on a node fences requests of
//! older epochs against this one number: the log unit, before it applies a
//! request (in its queue's order, so no write of an older epoch lands after
//! a seal), and the sequencer, before it hands out a token. It only goes up:
//! by a seal (the log unit stores it durably in its metadata before it
//! answers), and by a committed layout (stored in `layout.json`). At start it
//! is the highest of the two stored ones.

use naxos_wire::{Epoch, ServerError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The epoch below which this node refuses requests.
#[derive(Debug, Default)]
pub struct Fence(AtomicU64);

impl Fence {
    /// A fence at `epoch`, to share between the node's roles.
    pub fn new(epoch: Epoch) -> Arc<Fence> {
        Arc::new(Fence(AtomicU64::new(epoch.0)))
    }

    /// The current epoch.
    pub fn get(&self) -> Epoch {
        Epoch(self.0.load(Ordering::Acquire))
    }

    /// Raises the fence to `epoch` (never lowers it); returns it as it now is.
    pub fn raise(&self, epoch: Epoch) -> Epoch {
        Epoch(self.0.fetch_max(epoch.0, Ordering::AcqRel).max(epoch.0))
    }

    /// Admits a request of `theirs`, or refuses it as of an older epoch.
    pub fn admit(&self, theirs: Epoch) -> Result<(), ServerError> {
        let ours = self.get();
        if theirs < ours {
            return Err(ServerError::wrong_epoch(ours, theirs));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_only_goes_up_and_refuses_older_epochs() {
        let f = Fence::new(Epoch(2));
        assert!(f.admit(Epoch(2)).is_ok());
        assert_eq!(f.admit(Epoch(1)).unwrap_err().code, naxos_wire::ErrorCode::WrongEpoch);
        assert_eq!(f.raise(Epoch(1)), Epoch(2));
        assert_eq!(f.raise(Epoch(5)), Epoch(5));
        assert_eq!(f.get(), Epoch(5));
    }
}
