//! The layout (projection): which log units hold which positions, who sequences,
//! who stores the layout, at which epoch. The generated `proto::Layout` is the
//! one type; this module adds the lookups and the checks.

use crate::proto::{Change, Layout, Segment, SegmentKind, Stripe};
use crate::{Epoch, Position};

/// Where a position lives: its segment's start, the stripe count and index, and the chain.
#[derive(Clone, Copy, Debug)]
pub struct Placement<'a> {
    /// The first position of the segment.
    pub segment_start: Position,
    /// How many stripes the segment has.
    pub stripe_count: u32,
    /// The stripe holding the position.
    pub stripe_index: u32,
    /// The stripe's chain, head first.
    pub chain: &'a [String],
}

/// Why a layout is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// The layout has no segment.
    #[error("layout has no segment")]
    NoSegments,
    /// A segment has no stripe or a stripe has an empty chain.
    #[error("segment starting at {0} has an empty stripe or no stripes")]
    EmptyStripe(u64),
    /// A segment's kind is not one this version knows how to serve.
    #[error("segment starting at {0} is of kind {1}, which this version of Naxos does not know; upgrade it")]
    UnknownKind(u64, i32),
    /// Segments do not follow each other without gaps, or only the last is open.
    #[error("segments must be contiguous from position 0 and only the last may be open")]
    Segments,
    /// No sequencer or no layout server is named.
    #[error("layout names no {0}")]
    Missing(&'static str),
    /// The cluster id is empty.
    #[error("layout has an empty cluster id")]
    NoClusterId,
    /// The last segment has an end, so no position could be appended.
    #[error("the last segment (starting at {0}) is closed: no append could ever succeed")]
    LastClosed(u64),
    /// A segment bound lies in the reserved top range of positions.
    #[error("segment bound {0} is in the reserved top range of positions (at or above 2^62)")]
    Reserved(u64),
    /// The epoch lies in the reserved top range.
    #[error("epoch {0} is in the reserved top range of epochs (at or above 2^62)")]
    ReservedEpoch(u64),
}

/// Epochs a layout's history keeps.
pub const HISTORY_MAX: usize = 32;

/// The default `min_replicas` for chains of `replication` replicas: 2 when
/// there are 3 or more (one failure leaves appends going, a second stops
/// them rather than leave one copy), else 1.
pub fn default_min_replicas(replication: usize) -> usize {
    if replication >= 3 {
        2
    } else {
        1
    }
}

/// The stripe of `segment` that holds `position` (positions go round its
/// stripes from its start), or `None` below its start or without stripes.
/// Every part of Naxos that maps positions to stripes goes through this.
pub fn stripe_of(segment: &Segment, position: u64) -> Option<usize> {
    let count = segment.stripes.len() as u64;
    if position < segment.start || count == 0 {
        return None;
    }
    Some(((position - segment.start) % count) as usize)
}

impl Layout {
    /// A one-segment layout: the log units are cut into `stripes` chains of
    /// `replication` units each, in the order given.
    pub fn initial(
        cluster_id: &str,
        log_units: &[String],
        replication: usize,
        stripes: usize,
        sequencers: Vec<String>,
        layout_servers: Vec<String>,
    ) -> Layout {
        let chains = (0..stripes)
            .map(|s| Stripe { chain: log_units[s * replication..(s + 1) * replication].to_vec() })
            .collect();
        Layout {
            cluster_id: cluster_id.to_string(),
            epoch: 0,
            layout_servers,
            sequencers,
            segments: vec![Segment { start: 0, end: None, stripes: chains, kind: SegmentKind::Chain as i32 }],
            min_replicas: default_min_replicas(replication) as u32,
            replication: replication as u32,
            away: Vec::new(),
            history: vec![Change { epoch: 0, unix_ms: 0, reason: "bootstrap".into() }],
            tail_floor: 0,
        }
    }

    /// Replicas a chain of the active segment needs for appends (at least 1).
    pub fn min_replicas(&self) -> usize {
        (self.min_replicas as usize).max(1)
    }

    /// The chains of the active segment with fewer than `min_replicas`
    /// replicas: (stripe index, chain).
    pub fn short_chains(&self) -> Vec<(usize, &[String])> {
        self.active_chains_below(self.min_replicas())
    }

    /// The chains of the active segment with fewer replicas than the
    /// cluster was made with: (stripe index, replicas missing).
    pub fn under_replicated(&self) -> Vec<(usize, usize)> {
        let want = self.replication as usize;
        self.active_chains_below(want).into_iter().map(|(i, chain)| (i, want - chain.len())).collect()
    }

    /// The active segment's chains of fewer than `n` replicas, by stripe.
    fn active_chains_below(&self, n: usize) -> Vec<(usize, &[String])> {
        self.segments
            .last()
            .map(|seg| {
                seg.stripes
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.chain.len() < n)
                    .map(|(i, s)| (i, s.chain.as_slice()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records why this layout's epoch was made (the history keeps the last 32).
    pub fn record(&mut self, unix_ms: u64, reason: impl Into<String>) {
        self.history.retain(|c| c.epoch != self.epoch);
        self.history.push(Change { epoch: self.epoch, unix_ms, reason: reason.into() });
        let over = self.history.len().saturating_sub(HISTORY_MAX);
        self.history.drain(..over);
    }

    /// The layout's epoch.
    pub fn epoch_id(&self) -> Epoch {
        Epoch(self.epoch)
    }

    /// Checks the layout is well formed.
    pub fn validate(&self) -> Result<(), Error> {
        if self.cluster_id.is_empty() {
            return Err(Error::NoClusterId);
        }
        if self.segments.is_empty() {
            return Err(Error::NoSegments);
        }
        if self.sequencers.is_empty() {
            return Err(Error::Missing("sequencer"));
        }
        if self.layout_servers.is_empty() {
            return Err(Error::Missing("layout server"));
        }
        if self.epoch >= crate::POSITION_LIMIT {
            return Err(Error::ReservedEpoch(self.epoch));
        }
        let mut expect = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            if let Some(bound) = Some(seg.start).into_iter().chain(seg.end).find(|b| *b >= crate::POSITION_LIMIT) {
                return Err(Error::Reserved(bound));
            }
            if seg.stripes.is_empty() || seg.stripes.iter().any(|s| s.chain.is_empty()) {
                return Err(Error::EmptyStripe(seg.start));
            }
            if SegmentKind::try_from(seg.kind).is_err() {
                return Err(Error::UnknownKind(seg.start, seg.kind));
            }
            if seg.start != expect {
                return Err(Error::Segments);
            }
            match seg.end {
                Some(_) if i + 1 == self.segments.len() => return Err(Error::LastClosed(seg.start)),
                Some(end) if end > seg.start => expect = end,
                None if i + 1 == self.segments.len() => {}
                _ => return Err(Error::Segments),
            }
        }
        Ok(())
    }

    /// Where `position` lives, or `None` if no segment covers it.
    pub fn placement(&self, position: Position) -> Option<Placement<'_>> {
        let p = position.0;
        let seg = self.segments.iter().find(|s| s.start <= p && s.end.is_none_or(|e| p < e))?;
        let index = stripe_of(seg, p)?;
        Some(Placement {
            segment_start: Position(seg.start),
            stripe_count: seg.stripes.len() as u32,
            stripe_index: index as u32,
            chain: &seg.stripes[index].chain,
        })
    }

    /// Every distinct log unit address in the layout, in order of first mention.
    pub fn log_units(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for seg in &self.segments {
            for stripe in &seg.stripes {
                for a in &stripe.chain {
                    if !out.contains(a) {
                        out.push(a.clone());
                    }
                }
            }
        }
        out
    }

    /// Every distinct address the layout names (layout servers, sequencers, log units).
    pub fn all_nodes(&self) -> Vec<String> {
        let mut out = self.layout_servers.clone();
        for a in self.sequencers.iter().cloned().chain(self.log_units()) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn positions_stripe_round_robin_over_chains() {
        let l = Layout::initial("c", &addrs(6), 3, 2, vec!["n0".into()], vec!["n0".into()]);
        l.validate().unwrap();
        let p0 = l.placement(Position(0)).unwrap();
        let p1 = l.placement(Position(1)).unwrap();
        let p2 = l.placement(Position(2)).unwrap();
        assert_eq!(p0.chain, &["n0", "n1", "n2"]);
        assert_eq!(p1.chain, &["n3", "n4", "n5"]);
        assert_eq!(p2.stripe_index, 0);
        assert_eq!(l.log_units().len(), 6);
    }

    #[test]
    fn a_layout_stored_before_segment_kinds_reads_as_chains() {
        let json = r#"{"cluster_id":"c","epoch":3,"layout_servers":["n0"],"sequencers":["n0"],
            "segments":[{"start":0,"end":null,"stripes":[{"chain":["n0"]}]}]}"#;
        let l: Layout = serde_json::from_str(json).unwrap();
        assert_eq!(l.segments[0].kind(), SegmentKind::Chain);
        assert_eq!(l.tail_floor, 0, "no floor before the field existed");
        l.validate().unwrap();
    }

    #[test]
    fn a_segment_of_an_unknown_kind_is_refused() {
        let mut l = Layout::initial("c", &addrs(1), 1, 1, vec!["n0".into()], vec!["n0".into()]);
        l.segments[0].kind = 99;
        assert_eq!(l.validate(), Err(Error::UnknownKind(0, 99)));
    }

    #[test]
    fn malformed_layouts_are_refused() {
        let mut l = Layout::initial("c", &addrs(1), 1, 1, vec!["n0".into()], vec!["n0".into()]);
        l.segments[0].start = 5;
        assert_eq!(l.validate(), Err(Error::Segments));
        l.segments.clear();
        assert_eq!(l.validate(), Err(Error::NoSegments));
    }
}
