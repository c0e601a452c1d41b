//! Sealing the active segment (pure): which answers are enough, and where the
//! segment ends. A replica that answered a seal at `e + 1` refuses every
//! write of epoch `e` from then on, so once one replica of every chain is
//! sealed no old-epoch append can complete anywhere. The end is the highest
//! tail among the sealed replicas: an acknowledged append is on every replica
//! of its chain, so it is below that tail (taking the lowest would cut
//! acknowledged appends off; the mutation tests check that the simulator
//! catches exactly that).

use naxos_wire::proto::Segment;
use naxos_wire::{Layout, Position};
use std::collections::BTreeMap;

/// The seal answers gathered for the active segment.
#[derive(Clone, Debug)]
pub struct SealTally {
    active: Segment,
    tails: BTreeMap<String, u64>,
}

impl SealTally {
    /// A tally for `active`, the segment being sealed.
    pub fn new(active: Segment) -> SealTally {
        SealTally { active, tails: BTreeMap::new() }
    }

    /// Records that `addr` is sealed, with its log unit's tail.
    pub fn sealed(&mut self, addr: &str, tail: u64) {
        self.tails.insert(addr.to_string(), tail);
    }

    /// The chains (head first) of which no replica is sealed yet.
    pub fn unsealed_chains(&self) -> Vec<Vec<String>> {
        self.active
            .stripes
            .iter()
            .filter(|s| !s.chain.iter().any(|a| self.tails.contains_key(a)))
            .map(|s| s.chain.clone())
            .collect()
    }

    /// Whether every replica of the segment answered (no need to wait for more).
    pub fn all_sealed(&self) -> bool {
        self.active.stripes.iter().all(|s| s.chain.iter().all(|a| self.tails.contains_key(a)))
    }

    /// Where the sealed segment ends, once every chain has a sealed replica.
    pub fn end(&self) -> Option<Position> {
        if !self.unsealed_chains().is_empty() {
            return None;
        }
        let tails = self.active.stripes.iter().flat_map(|s| s.chain.iter()).filter_map(|a| self.tails.get(a).copied());
        let end = if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::SealAtLowestTail) {
            tails.min()
        } else {
            tails.max()
        };
        Some(Position(end.unwrap_or(0).max(self.active.start)))
    }
}

/// Where the new segment starts: at `end`, or above the highest tail of the
/// units its chains name; an error if one of them did not answer the seal.
pub fn new_segment_start(
    known: &Layout,
    change: &crate::plan::Change,
    end: Position,
    tails: &BTreeMap<String, u64>,
) -> Result<Position, String> {
    // The broken variant keeps the tally's (lowest) end as it is.
    if naxos_wire::mutation::active(naxos_wire::mutation::Mutation::SealAtLowestTail) {
        return Ok(end);
    }
    // The chains do not depend on the start: a draft layout names them.
    let Ok(draft) = crate::plan::next_layout(known, change, end) else { return Ok(end) };
    let Some(new) = draft.segments.last() else { return Ok(end) };
    let mut start = end;
    for addr in new.stripes.iter().flat_map(|s| s.chain.iter()) {
        match tails.get(addr) {
            Some(&t) => start = start.max(Position(t)),
            None => {
                return Err(format!(
                    "{addr} did not answer the seal, so it cannot take new positions; if it is gone, remove it first"
                ))
            }
        }
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use naxos_wire::proto::Stripe;

    fn segment() -> Segment {
        let chain = |v: &[&str]| Stripe { chain: v.iter().map(|s| s.to_string()).collect() };
        Segment { start: 10, end: None, stripes: vec![chain(&["a", "b"]), chain(&["c", "d"])], kind: 0 }
    }

    #[test]
    fn the_end_waits_for_one_sealed_replica_per_chain_and_takes_the_highest_tail() {
        let mut t = SealTally::new(segment());
        t.sealed("a", 30);
        assert_eq!(t.end(), None);
        assert_eq!(t.unsealed_chains(), vec![vec!["c".to_string(), "d".to_string()]]);
        t.sealed("d", 25);
        assert_eq!(t.end(), Some(Position(30)));
        assert!(!t.all_sealed());
    }

    #[test]
    fn an_empty_segment_ends_at_its_start() {
        let mut t = SealTally::new(segment());
        t.sealed("a", 3);
        t.sealed("c", 0);
        assert_eq!(t.end(), Some(Position(10)));
    }
}
