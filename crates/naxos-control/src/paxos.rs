//! Layout agreement: single-decree Paxos per epoch among the layout servers
//! (Delos's MetaStore conditional write). The layout of epoch `e + 1` can only
//! be chosen on top of the layout chosen at `e` (every message carries that
//! `base`), so at most one layout is ever chosen per epoch and epochs only go
//! up. Both sides are pure state machines: the [`Acceptor`] (one per layout
//! server; its state must be durable before it answers) and the [`Proposer`]
//! (one per attempt to change the layout). The server runtime, the
//! reconfiguration runtime, the simulator and the model checker all drive
//! these same structs.
//!
//! A ballot is `(epoch, rank)`, ordered by epoch first: an acceptor that
//! promised a later epoch refuses every message of an earlier one, which is
//! what lets it forget the instances before (their layouts are chosen: a
//! proposer only prepares `e + 1` once it holds the layout chosen at `e`).
//! Ranks carry the proposer's random id, and a proposer that is outranked
//! retries with a higher round after a random back-off (CorfuDB livelocked
//! with deterministic ranks, PR #3476).

use naxos_wire::proto::{self, layout_vote::Outcome};
use naxos_wire::{Epoch, Layout};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A Paxos rank within one epoch's instance: rounds first, then the
/// proposer's random id breaks ties.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rank {
    /// The round; a proposer that is outranked retries above the highest round it saw.
    pub round: u64,
    /// The proposer's random id.
    pub proposer: u64,
}

impl Rank {
    /// The rank as it travels.
    pub fn to_proto(self) -> proto::Rank {
        proto::Rank { round: self.round, proposer: self.proposer }
    }

    /// The rank from the wire (absent means the lowest).
    pub fn from_proto(r: Option<&proto::Rank>) -> Rank {
        r.map(|r| Rank { round: r.round, proposer: r.proposer }).unwrap_or_default()
    }
}

/// A ballot: the epoch whose layout is being decided, and the rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ballot {
    /// The epoch of the layout being decided.
    pub epoch: Epoch,
    /// The rank within that epoch.
    pub rank: Rank,
}

/// What an acceptor accepted: the ballot and the layout.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    /// The ballot it was accepted at.
    pub ballot: Ballot,
    /// The layout (its epoch is `ballot.epoch`).
    pub layout: Layout,
}

/// One layout server's acceptor: its promise and what it accepted. The
/// newest chosen layout the server knows is kept beside it (the node's
/// committed layout) and passed in.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Acceptor {
    /// The highest ballot promised.
    pub promised: Option<Ballot>,
    /// The last layout accepted.
    pub accepted: Option<Accepted>,
}

/// An acceptor's answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Vote {
    /// Phase 1 granted, with what was accepted for this epoch, if anything.
    Promise(Option<Accepted>),
    /// Phase 2 granted.
    Accepted,
    /// The epoch is decided already: the newest chosen layout known here.
    Stale(Layout),
    /// A higher ballot was promised.
    Rejected(Ballot),
}

impl Vote {
    /// The vote as it travels.
    pub fn to_proto(&self) -> proto::LayoutVote {
        let mut v = proto::LayoutVote::default();
        match self {
            Vote::Promise(acc) => {
                v.outcome = Outcome::Promise as i32;
                if let Some(a) = acc {
                    v.accepted_rank = Some(a.ballot.rank.to_proto());
                    v.layout = Some(a.layout.clone());
                }
            }
            Vote::Accepted => v.outcome = Outcome::Accepted as i32,
            Vote::Stale(l) => {
                v.outcome = Outcome::Stale as i32;
                v.layout = Some(l.clone());
            }
            Vote::Rejected(b) => {
                v.outcome = Outcome::Rejected as i32;
                v.promised_epoch = b.epoch.0;
                v.promised_rank = Some(b.rank.to_proto());
            }
        }
        v
    }

    /// The vote from the wire; `None` if it is malformed.
    pub fn from_proto(v: proto::LayoutVote) -> Option<Vote> {
        match Outcome::try_from(v.outcome).ok()? {
            // A promise that carries a layout must say at which rank it was accepted.
            Outcome::Promise => match (v.layout, v.accepted_rank) {
                (None, _) => Some(Vote::Promise(None)),
                (Some(layout), Some(rank)) => Some(Vote::Promise(Some(Accepted {
                    ballot: Ballot { epoch: Epoch(layout.epoch), rank: Rank::from_proto(Some(&rank)) },
                    layout,
                }))),
                (Some(_), None) => None,
            },
            Outcome::Accepted => Some(Vote::Accepted),
            Outcome::Stale => v.layout.map(Vote::Stale),
            Outcome::Rejected => Some(Vote::Rejected(Ballot {
                epoch: Epoch(v.promised_epoch),
                rank: Rank::from_proto(v.promised_rank.as_ref()),
            })),
            Outcome::Unspecified => None,
        }
    }
}

impl Acceptor {
    /// The highest epoch it accepted a layout for (0: none).
    pub fn accepted_epoch(&self) -> u64 {
        self.accepted.as_ref().map_or(0, |a| a.ballot.epoch.0)
    }

    /// Phase 1: promise `ballot` unless its epoch is decided (`chosen` is the
    /// newest chosen layout this server holds) or a higher ballot was
    /// promised. Returns the vote and whether the state changed (then it must
    /// be made durable before the vote is sent).
    pub fn prepare(&mut self, chosen: Option<&Layout>, ballot: Ballot) -> (Vote, bool) {
        if let Some(c) = chosen.filter(|c| Epoch(c.epoch) >= ballot.epoch) {
            return (Vote::Stale(c.clone()), false);
        }
        if let Some(p) = self.promised.filter(|p| *p > ballot) {
            return (Vote::Rejected(p), false);
        }
        let changed = self.promised != Some(ballot);
        self.promised = Some(ballot);
        let accepted = self.accepted.clone().filter(|a| a.ballot.epoch == ballot.epoch);
        (Vote::Promise(accepted), changed)
    }

    /// Phase 2: accept `layout` at `rank` unless its epoch is decided or a
    /// higher ballot was promised. Returns the vote and whether the state changed.
    pub fn accept(&mut self, chosen: Option<&Layout>, rank: Rank, layout: &Layout) -> (Vote, bool) {
        let ballot = Ballot { epoch: Epoch(layout.epoch), rank };
        if let Some(c) = chosen.filter(|c| Epoch(c.epoch) >= ballot.epoch) {
            return (Vote::Stale(c.clone()), false);
        }
        if let Some(p) = self.promised.filter(|p| *p > ballot) {
            return (Vote::Rejected(p), false);
        }
        // One ballot, one value: a second layout at a ballot already accepted
        // (two proposers that drew the same rank) is refused, and the same
        // layout again changes nothing.
        if let Some(a) = self.accepted.as_ref().filter(|a| a.ballot == ballot) {
            return if a.layout == *layout { (Vote::Accepted, false) } else { (Vote::Rejected(ballot), false) };
        }
        self.promised = Some(ballot);
        self.accepted = Some(Accepted { ballot, layout: layout.clone() });
        (Vote::Accepted, true)
    }
}

/// Where a proposer stands.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// Waiting for promises.
    Preparing,
    /// Waiting for acceptances of this layout.
    Accepting(Layout),
    /// A layout was chosen for the epoch (ours or one found accepted before).
    Chosen(Layout),
    /// The epoch was decided before we got there; this is the newest chosen layout seen.
    Stale(Layout),
    /// Outranked: retry (after a random back-off) with a round above this one.
    Outranked(u64),
}

/// A message a proposer asks its runtime to send to every acceptor.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// Phase 1 for `ballot`, on top of `base`.
    Prepare {
        /// The ballot.
        ballot: Ballot,
        /// The layout chosen at `ballot.epoch - 1`.
        base: Layout,
    },
    /// Phase 2.
    Accept {
        /// The rank.
        rank: Rank,
        /// The layout to accept.
        layout: Layout,
        /// The layout chosen at `layout.epoch - 1`.
        base: Layout,
    },
}

/// One attempt to choose the layout of `base.epoch + 1`: prepare, then
/// accept what a promise carried (the highest-ranked accepted layout) or our
/// own proposal.
#[derive(Clone, Debug)]
pub struct Proposer {
    acceptors: Vec<String>,
    base: Layout,
    proposal: Layout,
    ballot: Ballot,
    phase: Phase,
    votes: BTreeMap<String, Vote>,
}

impl Proposer {
    /// A proposer of `proposal` (whose epoch must be `base.epoch + 1`) among
    /// `acceptors`, at `round` with the random id `id`.
    pub fn new(acceptors: Vec<String>, base: Layout, proposal: Layout, round: u64, id: u64) -> Proposer {
        assert_eq!(proposal.epoch, base.epoch + 1, "a layout is proposed on top of the one chosen just before it");
        let ballot = Ballot { epoch: Epoch(proposal.epoch), rank: Rank { round, proposer: id } };
        Proposer { acceptors, base, proposal, ballot, phase: Phase::Preparing, votes: BTreeMap::new() }
    }

    /// The first message: phase 1 to every acceptor.
    pub fn start(&self) -> Message {
        Message::Prepare { ballot: self.ballot, base: self.base.clone() }
    }

    /// Where the attempt stands.
    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// The ballot of this attempt.
    pub fn ballot(&self) -> Ballot {
        self.ballot
    }

    fn majority(&self) -> usize {
        self.acceptors.len() / 2 + 1
    }

    /// Takes one acceptor's vote; returns the next message to send to every
    /// acceptor, if the vote completed a phase.
    pub fn on_vote(&mut self, from: &str, vote: Vote) -> Option<Message> {
        if !self.acceptors.iter().any(|a| a == from) {
            return None;
        }
        match (&self.phase, &vote) {
            (Phase::Preparing | Phase::Accepting(_), Vote::Stale(newest)) => {
                // Our own layout, chosen (by this attempt, or an earlier one of
                // ours) and learnt by the acceptor before its answer reached us.
                let ours = match &self.phase {
                    Phase::Accepting(l) => l,
                    _ => &self.proposal,
                };
                if newest == ours {
                    self.phase = Phase::Chosen(ours.clone());
                    return None;
                }
                self.phase = Phase::Stale(newest.clone());
                return None;
            }
            (Phase::Preparing | Phase::Accepting(_), Vote::Rejected(promised)) => {
                self.phase = Phase::Outranked(promised.rank.round.max(self.ballot.rank.round));
                return None;
            }
            (Phase::Preparing, Vote::Promise(_)) | (Phase::Accepting(_), Vote::Accepted) => {}
            _ => return None, // a late answer to an earlier phase
        }
        self.votes.insert(from.to_string(), vote);
        if self.votes.len() < self.majority() {
            return None;
        }
        match &self.phase {
            Phase::Preparing => {
                // The highest-ranked layout accepted for this epoch wins; ours only if none was.
                let found = self
                    .votes
                    .values()
                    .filter_map(|v| match v {
                        Vote::Promise(Some(a)) if a.ballot.epoch == self.ballot.epoch => Some(a),
                        _ => None,
                    })
                    .max_by_key(|a| a.ballot.rank)
                    .map(|a| a.layout.clone());
                let layout = found.unwrap_or_else(|| self.proposal.clone());
                self.votes.clear();
                self.phase = Phase::Accepting(layout.clone());
                Some(Message::Accept { rank: self.ballot.rank, layout, base: self.base.clone() })
            }
            Phase::Accepting(layout) => {
                self.phase = Phase::Chosen(layout.clone());
                None
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(epoch: u64, tag: &str) -> Layout {
        let a = vec!["a".to_string()];
        let mut l = Layout::initial("c", &a, 1, 1, a.clone(), a.clone());
        l.epoch = epoch;
        l.sequencers = vec![tag.to_string()];
        l
    }

    fn acceptors() -> Vec<String> {
        vec!["x".into(), "y".into(), "z".into()]
    }

    /// Runs one proposer to the end against `accs` (all reachable).
    fn run(p: &mut Proposer, accs: &mut [Acceptor], chosen: &[Option<Layout>]) -> Phase {
        let names = acceptors();
        let mut msg = Some(p.start());
        while let Some(m) = msg.take() {
            for (i, a) in accs.iter_mut().enumerate() {
                let vote = match &m {
                    Message::Prepare { ballot, .. } => a.prepare(chosen[i].as_ref(), *ballot).0,
                    Message::Accept { rank, layout, .. } => a.accept(chosen[i].as_ref(), *rank, layout).0,
                };
                if let Some(next) = p.on_vote(&names[i], vote) {
                    msg = Some(next);
                    break;
                }
                if !matches!(p.phase(), Phase::Preparing | Phase::Accepting(_)) {
                    return p.phase().clone();
                }
            }
        }
        p.phase().clone()
    }

    #[test]
    fn a_lone_proposer_chooses_its_layout() {
        let mut accs = vec![Acceptor::default(); 3];
        let mut p = Proposer::new(acceptors(), layout(0, "s0"), layout(1, "s1"), 1, 7);
        assert_eq!(run(&mut p, &mut accs, &[None, None, None]), Phase::Chosen(layout(1, "s1")));
    }

    #[test]
    fn a_layout_accepted_by_a_majority_wins_over_a_later_proposal() {
        let mut accs = vec![Acceptor::default(); 3];
        // The first proposer gets its layout accepted by x and y, then dies before committing.
        let first = Ballot { epoch: Epoch(1), rank: Rank { round: 1, proposer: 1 } };
        for a in accs.iter_mut().take(2) {
            a.prepare(None, first);
            a.accept(None, first.rank, &layout(1, "first"));
        }
        let mut p = Proposer::new(acceptors(), layout(0, "s0"), layout(1, "second"), 2, 2);
        assert_eq!(run(&mut p, &mut accs, &[None, None, None]), Phase::Chosen(layout(1, "first")));
    }

    #[test]
    fn a_proposer_behind_a_chosen_epoch_learns_it() {
        let mut accs = vec![Acceptor::default(); 3];
        let chosen = layout(3, "newest");
        let mut p = Proposer::new(acceptors(), layout(1, "old"), layout(2, "mine"), 1, 1);
        assert_eq!(run(&mut p, &mut accs, &[Some(chosen.clone()), None, None]), Phase::Stale(chosen));
    }

    #[test]
    fn a_lower_rank_is_refused_after_a_higher_promise() {
        let mut a = Acceptor::default();
        let high = Ballot { epoch: Epoch(1), rank: Rank { round: 5, proposer: 1 } };
        assert!(matches!(a.prepare(None, high).0, Vote::Promise(None)));
        let low = Rank { round: 4, proposer: 9 };
        assert_eq!(a.accept(None, low, &layout(1, "late")).0, Vote::Rejected(high));
        // A later epoch outranks every ballot of an earlier one.
        let next = Ballot { epoch: Epoch(2), rank: Rank { round: 0, proposer: 0 } };
        assert!(matches!(a.prepare(None, next).0, Vote::Promise(None)));
        assert_eq!(a.prepare(None, high).0, Vote::Rejected(next));
    }

    #[test]
    fn a_second_layout_at_an_accepted_ballot_is_refused() {
        let mut a = Acceptor::default();
        let b = Ballot { epoch: Epoch(1), rank: Rank { round: 1, proposer: 5 } };
        a.prepare(None, b);
        assert_eq!(a.accept(None, b.rank, &layout(1, "one")), (Vote::Accepted, true));
        assert_eq!(a.accept(None, b.rank, &layout(1, "one")), (Vote::Accepted, false));
        assert_eq!(a.accept(None, b.rank, &layout(1, "two")).0, Vote::Rejected(b));
    }

    #[test]
    fn a_promise_with_a_layout_but_no_rank_is_malformed() {
        let mut v = Vote::Promise(None).to_proto();
        v.layout = Some(layout(1, "x"));
        assert_eq!(Vote::from_proto(v), None);
    }

    #[test]
    fn an_outranked_proposer_is_told_the_round_to_beat() {
        let mut accs = vec![Acceptor::default(); 3];
        let other = Ballot { epoch: Epoch(1), rank: Rank { round: 9, proposer: 3 } };
        for a in accs.iter_mut() {
            a.prepare(None, other);
        }
        let mut p = Proposer::new(acceptors(), layout(0, "s0"), layout(1, "mine"), 1, 1);
        assert_eq!(run(&mut p, &mut accs, &[None, None, None]), Phase::Outranked(9));
    }

    #[test]
    fn votes_survive_the_wire() {
        let acc = Accepted {
            ballot: Ballot { epoch: Epoch(4), rank: Rank { round: 2, proposer: 3 } },
            layout: layout(4, "a"),
        };
        for v in [
            Vote::Promise(None),
            Vote::Promise(Some(acc)),
            Vote::Accepted,
            Vote::Stale(layout(2, "b")),
            Vote::Rejected(Ballot { epoch: Epoch(5), rank: Rank { round: 1, proposer: 2 } }),
        ] {
            assert_eq!(Vote::from_proto(v.to_proto()), Some(v));
        }
    }
}
