//! What a reconfiguration changes, and the next layout it makes (pure). The
//! active segment is sealed at `end`, the highest tail among its sealed
//! replicas: every acknowledged append is on every replica of its chain, so
//! it is below `end` and stays in the sealed segment, which keeps serving
//! reads. A new active segment starts at `end` with the new shape. If the
//! active segment is still empty (`end` is its start), it is replaced instead.

use naxos_wire::proto::{Away, Segment, SegmentKind, Stripe};
use naxos_wire::{Layout, Position};

/// A change to the cluster's layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The next epoch with the same members (a new segment of the same shape).
    NextEpoch,
    /// Take a log unit out of every chain it is in; if it sequences, it stops.
    Remove(String),
    /// As `Remove`, for nodes the management role found failed, all at once
    /// (a new chain must not name a dead replica): each is kept in the
    /// layout's `away` list (with its stripes and whether it sequenced), to
    /// be put back when it answers again.
    TakeOut(Vec<String>),
    /// Put a node of the `away` list back as a sequencer (if it was one),
    /// without a chain: for nodes that only sequence. Units rejoin chains
    /// through `Add`, which also does this.
    Restore(String),
    /// Put a log unit at the end of the chains of one stripe (or of every
    /// stripe) in every segment. The runtime catches it up first (state
    /// transfer): it joins a chain only once it holds what the chain holds.
    Add {
        /// The log unit.
        addr: String,
        /// The stripe to join (every stripe if `None`).
        stripe: Option<usize>,
    },
    /// Make this node the primary sequencer.
    Sequencer(String),
    /// A new active segment with another shape.
    Segment {
        /// The log units, cut into `stripes` chains of `replication` each, in order.
        log_units: Vec<String>,
        /// Replicas per chain.
        replication: usize,
        /// Chains.
        stripes: usize,
    },
}

impl Change {
    /// The nodes this change brings into the layout (they are sealed with the
    /// others, and the new segment starts above whatever they hold, so that
    /// no old write on them can ever be taken for a new one).
    pub fn joining(&self, layout: &Layout) -> Vec<String> {
        let known = layout.all_nodes();
        let named = match self {
            Change::Add { addr, .. } | Change::Sequencer(addr) | Change::Restore(addr) => vec![addr.clone()],
            Change::Segment { log_units, .. } => log_units.clone(),
            Change::NextEpoch | Change::Remove(_) | Change::TakeOut(_) => Vec::new(),
        };
        named.into_iter().filter(|a| !known.contains(a)).collect()
    }
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::NextEpoch => write!(f, "next epoch"),
            Change::Remove(a) => write!(f, "remove {a}"),
            Change::TakeOut(a) => write!(f, "take out {} until it returns", a.join(",")),
            Change::Restore(a) => write!(f, "put {a} back as a sequencer"),
            Change::Add { addr, stripe: Some(s) } => write!(f, "add {addr} to stripe {s}"),
            Change::Add { addr, stripe: None } => write!(f, "add {addr}"),
            Change::Sequencer(a) => write!(f, "make {a} the primary sequencer"),
            Change::Segment { log_units, replication, stripes } => {
                write!(f, "new segment over {} (replication {replication}, {stripes} stripe(s))", log_units.join(","))
            }
        }
    }
}

/// Why a change cannot be made.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Removing the unit would leave a chain with no replica.
    #[error(
        "{addr} is the only replica of a chain of the segment starting at {segment_start}; add another log unit first"
    )]
    LastReplica {
        /// The unit.
        addr: String,
        /// The segment whose chain would be empty.
        segment_start: u64,
    },
    /// The unit is in no chain.
    #[error("{0} is not a log unit of this cluster's layout")]
    NotMember(String),
    /// The unit is in every chain it could join already.
    #[error("{0} is already in the chain(s) it would join")]
    AlreadyMember(String),
    /// Removing the node would leave no sequencer.
    #[error("{0} is the only sequencer; make another node the sequencer first")]
    LastSequencer(String),
    /// The stripe does not exist.
    #[error("the active segment has {stripes} stripe(s); there is no stripe {index}")]
    NoStripe {
        /// The stripe asked for.
        index: usize,
        /// How many there are.
        stripes: usize,
    },
    /// The node is not in the layout's `away` list.
    #[error("{0} was not taken out by the management role")]
    NotAway(String),
    /// The new shape does not fit the units given.
    #[error("{0}")]
    Shape(String),
}

/// The layout after `change`, on top of `base`, with the active segment sealed at `end`.
pub fn next_layout(base: &Layout, change: &Change, end: Position) -> Result<Layout, Refusal> {
    next_layout_skipping(base, change, end, &[])
}

/// As `next_layout`, but an added unit stays out of the chains `skip` names
/// (segment index, stripe index): those where it holds values its chain
/// decided otherwise (see `Loglet::catch_up`).
pub fn next_layout_skipping(
    base: &Layout,
    change: &Change,
    end: Position,
    skip: &[(usize, usize)],
) -> Result<Layout, Refusal> {
    let mut next = base.clone();
    next.epoch = base.epoch + 1;
    let active = base.segments.last().cloned().unwrap_or_else(|| Segment {
        start: 0,
        end: None,
        stripes: Vec::new(),
        kind: SegmentKind::Chain as i32,
    });
    let mut chains: Vec<Vec<String>> = active.stripes.iter().map(|s| s.chain.clone()).collect();
    match change {
        Change::NextEpoch => {}
        Change::Restore(addr) => {
            let Some(away) = base.away.iter().find(|a| a.addr == *addr) else {
                return Err(Refusal::NotAway(addr.clone()));
            };
            if away.sequencer && !next.sequencers.contains(addr) {
                next.sequencers.push(addr.clone());
            }
            next.away.retain(|a| a.addr != *addr);
        }
        Change::Remove(_) | Change::TakeOut(_) => {
            let addrs = match change {
                Change::TakeOut(v) => v.clone(),
                Change::Remove(a) => vec![a.clone()],
                _ => Vec::new(),
            };
            for addr in &addrs {
                let member = base.segments.iter().any(|s| s.stripes.iter().any(|st| st.chain.contains(addr)));
                let forget = matches!(change, Change::Remove(_)) && base.away.iter().any(|a| a.addr == *addr);
                if !(member || base.sequencers.contains(addr) || forget) {
                    return Err(Refusal::NotMember(addr.clone()));
                }
                // The operator's removal is for good: the managers forget it.
                next.away.retain(|a| a.addr != *addr);
                if let Change::TakeOut(_) = change {
                    let stripes =
                        chains.iter().enumerate().filter(|(_, c)| c.contains(addr)).map(|(i, _)| i as u32).collect();
                    next.away.push(Away {
                        addr: addr.clone(),
                        sequencer: base.sequencers.contains(addr),
                        since_epoch: next.epoch,
                        stripes,
                    });
                }
                for chain in &mut chains {
                    chain.retain(|a| a != addr);
                }
                if chains.iter().any(Vec::is_empty) {
                    return Err(Refusal::LastReplica { addr: addr.clone(), segment_start: active.start });
                }
                // The segments sealed before, and the one being sealed now, keep
                // serving reads from the survivors. A failed node that is the
                // last replica of a sealed chain stays in it (that segment is
                // unreadable until it is back, but nothing else waits on it).
                let taken_out = matches!(change, Change::TakeOut(_));
                for seg in next.segments.iter_mut() {
                    for stripe in &mut seg.stripes {
                        if taken_out && stripe.chain.len() == 1 && stripe.chain[0] == *addr {
                            continue;
                        }
                        stripe.chain.retain(|a| a != addr);
                        if stripe.chain.is_empty() {
                            return Err(Refusal::LastReplica { addr: addr.clone(), segment_start: seg.start });
                        }
                    }
                }
                if next.sequencers.contains(addr) {
                    next.sequencers.retain(|a| a != addr);
                    if next.sequencers.is_empty() {
                        return Err(Refusal::LastSequencer(addr.clone()));
                    }
                }
            }
        }
        Change::Add { addr, stripe } => {
            let targets: Vec<usize> = match stripe {
                Some(i) if *i >= chains.len() => {
                    return Err(Refusal::NoStripe { index: *i, stripes: chains.len() });
                }
                Some(i) => vec![*i],
                None => (0..chains.len()).collect(),
            };
            if targets.iter().all(|&i| chains[i].contains(addr)) {
                return Err(Refusal::AlreadyMember(addr.clone()));
            }
            for i in targets {
                if !chains[i].contains(addr) {
                    chains[i].push(addr.clone());
                }
            }
            // A node the management role took out is back: a sequencer again.
            if let Some(away) = base.away.iter().find(|a| a.addr == *addr) {
                if away.sequencer && !next.sequencers.contains(addr) {
                    next.sequencers.push(addr.clone());
                }
                next.away.retain(|a| a.addr != *addr);
            }
            // It was caught up on the segments before (state transfer): it
            // joins their chains too, at the tail, where reads go.
            for (k, seg) in next.segments.iter_mut().enumerate() {
                for (i, st) in seg.stripes.iter_mut().enumerate() {
                    if stripe.is_none_or(|s| s == i) && !st.chain.contains(addr) && !skip.contains(&(k, i)) {
                        st.chain.push(addr.clone());
                    }
                }
            }
        }
        Change::Sequencer(addr) => {
            next.sequencers.retain(|a| a != addr);
            next.sequencers.insert(0, addr.clone());
        }
        Change::Segment { log_units, replication, stripes } => {
            if *replication == 0 || *stripes == 0 || log_units.len() != replication * stripes {
                return Err(Refusal::Shape(format!(
                    "{} log unit(s) cannot make {stripes} chain(s) of {replication}: give replication x stripes units",
                    log_units.len()
                )));
            }
            chains = log_units.chunks(*replication).map(<[String]>::to_vec).collect();
            // The operator's new shape is what the managers heal towards.
            next.replication = *replication as u32;
            next.min_replicas = next.min_replicas.min(*replication as u32);
            // A unit may serve several stripes, but a chain needs distinct replicas.
            for chain in &chains {
                let mut seen = chain.clone();
                seen.sort();
                seen.dedup();
                if seen.len() != chain.len() {
                    return Err(Refusal::Shape(format!("the chain {} names a log unit twice", chain.join(","))));
                }
            }
        }
    }
    let new_segment = Segment {
        start: end.0.max(active.start),
        end: None,
        stripes: chains.into_iter().map(|chain| Stripe { chain }).collect(),
        kind: SegmentKind::Chain as i32,
    };
    // A node back in a chain (or in line as a sequencer, for one that only
    // sequenced) by any change is not away any more.
    next.away.retain(|a| {
        let chained = new_segment.stripes.iter().any(|s| s.chain.contains(&a.addr));
        !(chained || (a.stripes.is_empty() && next.sequencers.contains(&a.addr)))
    });
    let last = next.segments.len() - 1;
    if new_segment.start == active.start {
        // Nothing was written to the active segment: replace it.
        next.segments[last] = new_segment;
    } else {
        next.segments[last].end = Some(new_segment.start);
        next.segments.push(new_segment);
    }
    Ok(next)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    fn three() -> Layout {
        let a = addrs(3);
        Layout::initial("c", &a, 3, 1, a.clone(), vec![a[0].clone()])
    }

    #[test]
    fn removing_a_unit_seals_the_segment_at_the_end_and_starts_a_new_one_without_it() {
        let next = next_layout(&three(), &Change::Remove("n1".into()), Position(42)).unwrap();
        next.validate().unwrap();
        assert_eq!(next.epoch, 1);
        assert_eq!(next.segments.len(), 2);
        assert_eq!((next.segments[0].start, next.segments[0].end), (0, Some(42)));
        assert_eq!(next.segments[0].stripes[0].chain, ["n0", "n2"], "sealed segments read from the survivors");
        assert_eq!(next.segments[1].start, 42);
        assert_eq!(next.segments[1].stripes[0].chain, ["n0", "n2"]);
        assert_eq!(next.sequencers, ["n0", "n2"]);
    }

    #[test]
    fn removing_the_primary_sequencer_hands_over_to_the_next() {
        let next = next_layout(&three(), &Change::Remove("n0".into()), Position(7)).unwrap();
        assert_eq!(next.sequencers[0], "n1");
        assert_eq!(next.segments[1].stripes[0].chain, ["n1", "n2"]);
    }

    #[test]
    fn an_empty_active_segment_is_replaced_not_closed() {
        let next = next_layout(&three(), &Change::Remove("n2".into()), Position(0)).unwrap();
        next.validate().unwrap();
        assert_eq!(next.segments.len(), 1);
        assert_eq!(next.segments[0].stripes[0].chain, ["n0", "n1"]);
    }

    #[test]
    fn the_last_replica_and_the_last_sequencer_cannot_be_removed() {
        let a = addrs(1);
        let one = Layout::initial("c", &a, 1, 1, a.clone(), a.clone());
        assert!(matches!(
            next_layout(&one, &Change::Remove("n0".into()), Position(3)),
            Err(Refusal::LastReplica { .. })
        ));
        assert_eq!(
            next_layout(&three(), &Change::Remove("zz".into()), Position(3)),
            Err(Refusal::NotMember("zz".into()))
        );
    }

    #[test]
    fn a_new_segment_can_have_more_stripes() {
        let change = Change::Segment { log_units: addrs(4), replication: 2, stripes: 2 };
        let next = next_layout(&three(), &change, Position(10)).unwrap();
        next.validate().unwrap();
        assert_eq!(next.segments[1].stripes.len(), 2);
        assert_eq!(next.placement(Position(11)).unwrap().chain, ["n2", "n3"]);
        assert_eq!(next.placement(Position(9)).unwrap().chain, ["n0", "n1", "n2"]);
        let bad = Change::Segment { log_units: addrs(3), replication: 2, stripes: 2 };
        assert!(matches!(next_layout(&three(), &bad, Position(10)), Err(Refusal::Shape(_))));
    }

    #[test]
    fn an_added_unit_stays_out_of_chains_it_diverged_from() {
        let removed = next_layout(&three(), &Change::Remove("n0".into()), Position(5)).unwrap();
        let add = Change::Add { addr: "n0".into(), stripe: None };
        let back = next_layout_skipping(&removed, &add, Position(9), &[(0, 0)]).unwrap();
        back.validate().unwrap();
        assert_eq!(back.segments[0].stripes[0].chain, ["n1", "n2"]);
        assert_eq!(back.segments[1].stripes[0].chain, ["n1", "n2", "n0"]);
        assert_eq!(back.segments[2].stripes[0].chain, ["n1", "n2", "n0"]);
    }

    #[test]
    fn an_added_unit_joins_every_segment_at_the_tail() {
        let removed = next_layout(&three(), &Change::Remove("n2".into()), Position(5)).unwrap();
        let back = next_layout(&removed, &Change::Add { addr: "n2".into(), stripe: None }, Position(9)).unwrap();
        back.validate().unwrap();
        assert_eq!(back.segments.len(), 3);
        for seg in &back.segments {
            assert_eq!(seg.stripes[0].chain, ["n0", "n1", "n2"]);
        }
        assert_eq!(
            next_layout(&back, &Change::Add { addr: "n2".into(), stripe: None }, Position(9)),
            Err(Refusal::AlreadyMember("n2".into()))
        );
    }

    #[test]
    fn a_unit_taken_out_is_kept_away_and_comes_back_as_a_sequencer() {
        let out = next_layout(&three(), &Change::TakeOut(vec!["n0".into()]), Position(5)).unwrap();
        out.validate().unwrap();
        assert_eq!(out.sequencers, ["n1", "n2"], "the next sequencer in line is the primary");
        assert_eq!(out.away.len(), 1);
        assert_eq!(
            (out.away[0].addr.as_str(), out.away[0].sequencer, out.away[0].stripes.as_slice()),
            ("n0", true, &[0][..])
        );
        assert_eq!(out.away[0].since_epoch, out.epoch);
        let back = next_layout(&out, &Change::Add { addr: "n0".into(), stripe: None }, Position(9)).unwrap();
        assert!(back.away.is_empty());
        assert_eq!(back.sequencers, ["n1", "n2", "n0"], "back in line, last");
        assert_eq!(back.segments.last().unwrap().stripes[0].chain, ["n1", "n2", "n0"]);
    }

    #[test]
    fn the_operators_removal_forgets_an_away_node() {
        let out = next_layout(&three(), &Change::TakeOut(vec!["n2".into()]), Position(5)).unwrap();
        let gone = next_layout(&out, &Change::Remove("n2".into()), Position(5)).unwrap();
        assert!(gone.away.is_empty());
        assert_eq!(next_layout(&gone, &Change::Remove("n2".into()), Position(5)), Err(Refusal::NotMember("n2".into())));
        assert_eq!(next_layout(&gone, &Change::Restore("n2".into()), Position(5)), Err(Refusal::NotAway("n2".into())));
    }

    #[test]
    fn a_sequencer_only_node_is_restored_without_a_chain() {
        let a = addrs(3);
        let mut l = Layout::initial("c", &a, 3, 1, vec!["s0".into(), "s1".into()], vec![a[0].clone()]);
        l = next_layout(&l, &Change::TakeOut(vec!["s0".into()]), Position(1)).unwrap();
        assert_eq!(l.sequencers, ["s1"]);
        assert!(l.away[0].stripes.is_empty());
        l = next_layout(&l, &Change::Restore("s0".into()), Position(2)).unwrap();
        assert_eq!(l.sequencers, ["s1", "s0"]);
        assert!(l.away.is_empty());
        assert_eq!(l.segments.last().unwrap().stripes[0].chain, a);
    }

    #[test]
    fn short_chains_are_those_below_min_replicas() {
        let mut l = three();
        assert_eq!(l.min_replicas(), 2);
        l = next_layout(&l, &Change::TakeOut(vec!["n0".into()]), Position(1)).unwrap();
        assert!(l.short_chains().is_empty());
        assert_eq!(l.under_replicated(), [(0, 1)]);
        l = next_layout(&l, &Change::TakeOut(vec!["n1".into()]), Position(2)).unwrap();
        assert_eq!(l.short_chains(), [(0, &["n2".to_string()][..])]);
        assert_eq!(
            next_layout(&l, &Change::TakeOut(vec!["n2".into()]), Position(3)),
            Err(Refusal::LastReplica { addr: "n2".into(), segment_start: 2 })
        );
    }

    #[test]
    fn history_keeps_the_last_epochs() {
        let mut l = three();
        for e in 1..=40 {
            l.epoch = e;
            l.record(e * 1000, format!("change {e}"));
        }
        assert_eq!(l.history.len(), naxos_wire::layout::HISTORY_MAX);
        assert_eq!(l.history.last().map(|h| h.reason.as_str()), Some("change 40"));
        assert_eq!(l.history[0].epoch, 9);
    }
}
