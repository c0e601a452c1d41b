//! Where a sequencer starts (pure): the first position it hands out and the
//! last position of every stream, from the tails the log units report. The
//! reconfiguration driver bootstraps a new primary with it, and a node
//! recovers its own sequencer with it (at start, and at every layout it
//! commits). Every chain's head must have answered: by the prefix property
//! it holds everything the rest of its chain holds, including writes that
//! reached only the head and that a reader may still complete; the other
//! replicas' answers are taken too, and the highest wins. Taking the tails
//! from one unit alone is how CorfuDB lost data (#2715).

use naxos_wire::{Layout, NodeId, StreamId};
use std::collections::BTreeMap;

/// What one log unit reports for a sequencer's start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailAnswer {
    /// Its local tail (the first position above everything it holds).
    pub tail: u64,
    /// The durable token ceiling a sequencer stored on it.
    pub token_ceiling: u64,
    /// The node whose sequencer stored that ceiling.
    pub token_ceiling_by: u64,
    /// The last position of every stream it holds.
    pub streams: Vec<(StreamId, u64)>,
}

/// A sequencer's starting state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Start {
    /// The first position it hands out.
    pub tail: u64,
    /// The last position of every stream.
    pub streams: BTreeMap<StreamId, u64>,
}

/// The start of a sequencer of `layout` from the units' answers (`None`:
/// no answer), never below the active segment's start or `floor` (what
/// sealed sequencers had handed out). `me`: the node that will sequence;
/// a ceiling it stored itself is not taken (its own record is exact).
pub fn sequencer_start(
    layout: &Layout,
    floor: u64,
    answers: &[(String, Option<TailAnswer>)],
    me: Option<NodeId>,
) -> Result<Start, String> {
    let mut out = Start { tail: layout.segments.last().map_or(0, |s| s.start).max(floor), ..Start::default() };
    let broken = naxos_wire::mutation::active(naxos_wire::mutation::Mutation::SequencerFromOneUnit);
    for (_, answer) in answers.iter().filter(|(_, a)| a.is_some()).take(if broken { 1 } else { usize::MAX }) {
        let Some(t) = answer else { continue };
        let ceiling = if me.is_some_and(|m| m.0 == t.token_ceiling_by) { 0 } else { t.token_ceiling };
        out.tail = out.tail.max(t.tail).max(ceiling);
        for &(s, last) in &t.streams {
            let e = out.streams.entry(s).or_insert(last);
            *e = (*e).max(last);
        }
    }
    let answered = |addr: &str| answers.iter().any(|(a, t)| a == addr && t.is_some());
    for seg in &layout.segments {
        for stripe in &seg.stripes {
            if let Some(head) = stripe.chain.first().filter(|h| !answered(h)) {
                return Err(format!("chain head {head} did not answer the tail query"));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tail(tail: u64, ceiling: (u64, u64), streams: &[(u128, u64)]) -> Option<TailAnswer> {
        let streams = streams.iter().map(|&(s, l)| (StreamId(s), l)).collect();
        Some(TailAnswer { tail, token_ceiling: ceiling.0, token_ceiling_by: ceiling.1, streams })
    }

    #[test]
    fn the_start_takes_the_highest_of_every_unit_and_needs_every_head() {
        let n = names(&["a", "b", "c", "d"]);
        let layout = Layout::initial("c1", &n, 2, 2, n.clone(), n.clone());
        let answers = vec![
            ("a".to_string(), tail(9, (0, 0), &[(1, 4)])),
            ("b".to_string(), None),
            ("c".to_string(), tail(7, (12, 2), &[(1, 6), (2, 1)])),
            ("d".to_string(), tail(8, (0, 0), &[(2, 3)])),
        ];
        let s = sequencer_start(&layout, 3, &answers, None).unwrap();
        assert_eq!(s.tail, 12);
        assert_eq!(s.streams, BTreeMap::from([(StreamId(1), 6), (StreamId(2), 3)]));
        // Node 2's own ceiling is not a floor for node 2.
        assert_eq!(sequencer_start(&layout, 3, &answers, Some(NodeId(2))).unwrap().tail, 9);
        let mut no_head = answers.clone();
        no_head[2].1 = None;
        let e = sequencer_start(&layout, 3, &no_head, None).unwrap_err();
        assert!(e.contains("chain head c"), "{e}");
    }
}
