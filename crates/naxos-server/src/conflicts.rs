//! The sequencer's conflict check for optimistic objects and transactions
//! (CorfuDB's fast path): the last position each key was written at, in a
//! bounded cache. A token whose reads include a key written at or after its
//! snapshot is refused, so a doomed transaction never reaches the log. When
//! the cache evicts a key it raises a watermark above that key's last write:
//! a snapshot below it could have missed the evicted write, so it aborts
//! ("cache overflow"). A sequencer starts with its watermark at its bootstrap
//! tail: it knows no writes from before ("new sequencer").

use naxos_wire::{AbortCause, ServerError};
use std::collections::{HashMap, VecDeque};

/// How many keys the cache holds by default (about 48 MB at 1M).
pub const CONFLICT_KEYS_MAX: usize = 1 << 20;

/// The last writes the sequencer knows, per key.
#[derive(Debug)]
pub struct Conflicts {
    /// Key -> the position it was last written at.
    last: HashMap<u64, u64>,
    /// (position, key) in the order written, for eviction (may hold stale
    /// pairs of keys written again since; they count against the bound too).
    order: VecDeque<(u64, u64)>,
    capacity: usize,
    /// Snapshots below it abort.
    watermark: u64,
    /// Why the watermark is where it is.
    watermark_cause: AbortCause,
}

impl Conflicts {
    /// An empty cache for a sequencer that starts at `tail` (the watermark).
    pub fn new(tail: u64, capacity: usize) -> Conflicts {
        let watermark =
            if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::WatermarkFromZero) { 0 } else { tail };
        Conflicts {
            last: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
            watermark,
            watermark_cause: AbortCause::NewSequencer,
        }
    }

    /// Refuses a token for reads of `reads` at `snapshot`, saying why.
    pub fn check(&self, snapshot: u64, reads: &[u64]) -> Result<(), ServerError> {
        if reads.is_empty() || naxos_wire::mutation::active(naxos_wire::mutation::Mutation::NoConflictCheck) {
            return Ok(());
        }
        if snapshot < self.watermark {
            let why = match self.watermark_cause {
                AbortCause::NewSequencer => "this sequencer started after it and knows no writes from before",
                _ => "the sequencer's cache of last writes evicted keys written after it",
            };
            return Err(ServerError::aborted(
                self.watermark_cause,
                format!("snapshot {snapshot} is below the watermark {}: {why}; retry", self.watermark),
            ));
        }
        for key in reads {
            if let Some(&at) = self.last.get(key).filter(|&&at| at >= snapshot) {
                return Err(ServerError::aborted(
                    AbortCause::Conflict,
                    format!("a key it read ({key:016x}) was written at {at}, after its snapshot {snapshot}"),
                ));
            }
        }
        Ok(())
    }

    /// Records `writes` as written at `position`.
    pub fn record(&mut self, position: u64, writes: &[u64]) {
        for &key in writes {
            self.last.insert(key, position);
            self.order.push_back((position, key));
        }
        while self.order.len() > self.capacity {
            let Some((at, key)) = self.order.pop_front() else { break };
            if self.last.get(&key) == Some(&at) {
                self.last.remove(&key);
                if at + 1 > self.watermark {
                    self.watermark = at + 1;
                    self.watermark_cause = AbortCause::CacheOverflow;
                }
            }
        }
    }

    /// Snapshots below it abort.
    pub fn watermark(&self) -> u64 {
        self.watermark
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naxos_wire::ErrorCode;

    fn cause(r: Result<(), ServerError>) -> Option<AbortCause> {
        r.err().map(|e| {
            assert_eq!(e.code, ErrorCode::Aborted);
            e.abort
        })
    }

    #[test]
    fn a_read_key_written_at_or_after_the_snapshot_aborts_and_others_pass() {
        let mut c = Conflicts::new(10, 100);
        c.record(12, &[1, 2]);
        assert_eq!(cause(c.check(12, &[1])), Some(AbortCause::Conflict), "written at the snapshot itself");
        assert_eq!(cause(c.check(13, &[1, 2])), None, "written before the snapshot");
        assert_eq!(cause(c.check(11, &[3])), None, "another key");
        assert_eq!(cause(c.check(9, &[3])), Some(AbortCause::NewSequencer), "below the bootstrap tail");
        assert_eq!(cause(c.check(0, &[])), None, "a blind write reads nothing");
    }

    #[test]
    fn evicting_raises_the_watermark_above_the_evicted_write() {
        let mut c = Conflicts::new(0, 2);
        c.record(5, &[1]);
        c.record(6, &[2]);
        c.record(7, &[3]);
        // Key 1 (written at 5) is gone: a snapshot at or below 5 cannot be checked.
        assert_eq!(c.watermark(), 6);
        assert_eq!(cause(c.check(5, &[9])), Some(AbortCause::CacheOverflow));
        assert_eq!(cause(c.check(6, &[1])), None);
        assert_eq!(cause(c.check(6, &[2])), Some(AbortCause::Conflict));
        // Key 2 written again: its old pair, evicted next, raises nothing.
        c.record(8, &[2]);
        assert_eq!(c.watermark(), 6);
        // Then key 3 (written at 7) goes.
        c.record(9, &[4]);
        assert_eq!(c.watermark(), 8);
    }
}
