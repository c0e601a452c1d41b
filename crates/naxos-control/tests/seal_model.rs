//! A stateright model check of sealing and the new-segment rule of
//! reconfiguration (`naxos_control::seal`, `naxos_control::plan`).
//!
//! What is modelled: four log units, each with the epoch it is sealed at and
//! the positions it holds (write-once: a second write to a held position is
//! refused, as is a write of an epoch below the sealed one). The epoch-0
//! layout is `Layout::initial` with two stripes, chains of two replicas, and
//! positions go to stripes and chains through the real `Layout::placement`.
//! Clients append: one takes the next token from a model sequencer, in the
//! newest committed epoch, and writes the head, then the next replica of its
//! chain, each hop a step of its own (so a seal can land between them); the
//! append is acknowledged once the last replica took it. A client whose
//! epoch has been superseded keeps writing (a straggler): sealed units refuse
//! it, unsealed ones do not. A reconfiguration driver seals the units of the
//! newest layout at the next epoch, one step each, in any order, any subset
//! of them (a unit it never seals is one it cannot reach); each sealed unit
//! reports its tail (its highest held position + 1, 0 if none), as the log
//! unit does. The driver may finish as the runtime (`reconfig::reconfigure`)
//! does: once the real `SealTally` gives an `end`, the real
//! `seal::new_segment_start` accepts it (every member of the new segment
//! answered the seal) and the real `plan::next_layout` makes the layout. The
//! change is `Change::NextEpoch`, `Change::Remove` of a unit it did not
//! seal, or a `Change::Segment` of the same shape with every chain reversed
//! (a head becomes a tail, where reads go). Layout agreement is taken to be
//! atomic (the layout Paxos has its own model, `layout_model.rs`): the layout
//! is committed at once, and the new epoch's sequencer restarts at the start
//! of the new segment, checked both ways: exactly there (as low as the real
//! bootstrap could go, so a token of the old epoch can be handed out again
//! and a straggler and a new client race for one position), and above every
//! token handed out before.
//!
//! Why: the seal is what keeps acknowledged appends when the layout changes.
//! The properties: an append acknowledged in epoch `e` is, in every layout
//! of epoch `e` or later, inside a segment whose chain for its position has
//! every replica holding it with its value (it is still readable there); no
//! position has two different acknowledged values; and in the newest layout
//! a replica holds a position only if every replica before it in its chain
//! holds it with the same value (what a reader finds on a tail is on the
//! head: a unit that missed the seal may hold a straggler's write above the
//! end, which must never sit in a new chain behind a head that lacks it;
//! this is what the answer rule of `new_segment_start` is for). So that the
//! check is not vacuous: an append is acknowledged, a reconfiguration is
//! done, an append is acknowledged in the last epoch, a straggler is fenced
//! off by a sealed unit, and a straggler is acknowledged after a newer
//! layout was committed (on a unit the new layout no longer names).
//!
//! The mutation test switches `Mutation::SealAtLowestTail` on (the segment
//! is sealed at the lowest tail among its sealed replicas, and the new
//! segment starts there) and checks, breadth first for a short
//! counterexample, that the model then finds an acknowledged append that the
//! new segment places on a chain that does not hold it. The mutation is
//! thread-local and stateright explores on worker threads (and rebuilds a
//! counterexample's path on the caller's), so the model switches it on
//! around each call of the real seal code itself.
//!
//! Keeping it fast in a debug build: three appends in all, two
//! reconfigurations, four units; a state holds only small maps, and layouts
//! are hashed by their segments. The correct model is explored completely
//! (about 44,000 states for each sequencer variant, a second or two each);
//! a fourth append would make it about 260,000 each.

use naxos_control::plan::{next_layout, Change};
use naxos_control::seal::{new_segment_start, SealTally};
use naxos_wire::mutation::{self, Mutation};
use naxos_wire::{Layout, Position};
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// The log units, in the order `Layout::initial` cuts them into chains.
const UNITS: [&str; 4] = ["u0", "u1", "u2", "u3"];

const STILL_READABLE: &str = "an acknowledged append stays on every replica of its chain in later layouts";
const ONE_VALUE: &str = "no position has two acknowledged values";
const CHAIN_PREFIX: &str = "in the newest layout, what a replica holds every replica before it holds";
const ACKED: &str = "an append is acknowledged";
const RECONFIGURED: &str = "a reconfiguration is done";
const ACKED_IN_LAST_EPOCH: &str = "an append is acknowledged in the last epoch";
const STRAGGLER_FENCED: &str = "a straggler is refused by a sealed unit";
const STRAGGLER_ACKED: &str = "a straggler is acknowledged after a newer layout was committed";

/// The index of the log unit at `addr`.
fn unit(addr: &str) -> usize {
    UNITS.iter().position(|u| *u == addr).expect("a unit of the model")
}

/// The epoch-0 layout: chains u0,u1 and u2,u3.
fn genesis() -> Layout {
    let units: Vec<String> = UNITS.iter().map(|u| u.to_string()).collect();
    Layout::initial("c", &units, 2, 2, vec!["s".to_string()], vec!["l".to_string()])
}

/// The bounds and the mutation.
#[derive(Clone, Debug)]
struct SealModel {
    /// The mutation: the segment is sealed at the lowest tail (`Mutation::SealAtLowestTail`).
    seal_at_lowest_tail: bool,
    /// Appends (tokens taken) in all.
    max_appends: usize,
    /// Reconfigurations in all (the last epoch).
    max_reconfigs: usize,
    /// Whether the new epoch's sequencer restarts at the new segment's start
    /// (so tokens of the old epoch can be handed out again), or above every
    /// token handed out before.
    reissue_tokens: bool,
}

/// One log unit.
#[derive(Clone, Debug, Default, PartialEq, Hash)]
struct Unit {
    /// The epoch it is sealed at: it refuses writes of lower epochs.
    sealed: u64,
    /// What it holds: position -> the append that wrote it.
    held: BTreeMap<u64, usize>,
}

impl Unit {
    /// Its tail, as a log unit reports it: the highest held position + 1, 0 if none.
    fn tail(&self) -> u64 {
        self.held.keys().next_back().map_or(0, |p| p + 1)
    }
}

/// Where an append is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Status {
    /// It writes the replica at this hop of its chain next.
    Writing(usize),
    /// The last replica of its chain took it; `after` layouts had been committed then.
    Acked { after: usize },
    /// A unit sealed at a higher epoch refused it.
    Fenced,
    /// A unit already held the position.
    Taken,
}

/// One append: the client's epoch, its token and its progress.
#[derive(Clone, Debug, PartialEq, Hash)]
struct Append {
    /// The epoch of the layout the client writes with.
    epoch: u64,
    /// Its token.
    position: u64,
    status: Status,
}

/// The cluster, the clients and the driver.
#[derive(Clone, Debug, PartialEq)]
struct State {
    /// The log units, in the order of `UNITS`.
    units: Vec<Unit>,
    /// The committed layouts; the one at index `e` is that of epoch `e`.
    layouts: Vec<Arc<Layout>>,
    /// The next token of the newest epoch's sequencer.
    next_token: u64,
    /// Every append made, in order (its index is its value).
    appends: Vec<Append>,
    /// The reconfiguration under way: the units sealed at the next epoch, with the tails they reported.
    sealed: BTreeMap<usize, u64>,
}

/// A step of a client or of the driver.
#[derive(Clone, Debug, PartialEq)]
enum Action {
    /// A client of the newest epoch takes the next token.
    Token,
    /// The append at this index writes its next replica.
    Write(usize),
    /// The driver seals this unit at the next epoch.
    Seal(usize),
    /// The driver commits the next layout made with this change.
    Finish(Change),
}

/// Layouts are prost messages, which do not implement `Hash`: the model's
/// differ only in their epoch and segments.
impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.units.hash(h);
        self.layouts.len().hash(h);
        for l in &self.layouts {
            l.epoch.hash(h);
            for seg in &l.segments {
                (seg.start, seg.end).hash(h);
                for stripe in &seg.stripes {
                    stripe.chain.hash(h);
                }
            }
        }
        self.next_token.hash(h);
        self.appends.hash(h);
        self.sealed.hash(h);
    }
}

impl State {
    /// The newest committed layout.
    fn newest(&self) -> &Layout {
        self.layouts.last().expect("the genesis layout")
    }

    /// The chain (head first) the append writes, in its own epoch's layout.
    fn chain(&self, a: &Append) -> Vec<String> {
        let placement = self.layouts[a.epoch as usize].placement(Position(a.position));
        placement.expect("the last segment is open").chain.to_vec()
    }

    /// Whether the acknowledged append `i` is, in every layout of its epoch or
    /// later, on every replica of the chain that layout places it on.
    fn readable(&self, i: usize) -> bool {
        let a = &self.appends[i];
        self.layouts.iter().skip(a.epoch as usize).all(|l| match l.placement(Position(a.position)) {
            Some(p) => p.chain.iter().all(|u| self.units[unit(u)].held.get(&a.position) == Some(&i)),
            None => false,
        })
    }

    /// Whether, in the newest layout, every replica of a chain holds a
    /// position only if every replica before it holds it with the same value
    /// (what a reader finds on the tail is on the head).
    fn chains_are_prefixes(&self) -> bool {
        let held: BTreeSet<u64> = self.units.iter().flat_map(|u| u.held.keys().copied()).collect();
        held.into_iter().all(|p| {
            let Some(placement) = self.newest().placement(Position(p)) else { return false };
            placement.chain.windows(2).all(|w| {
                let (before, after) = (&self.units[unit(&w[0])], &self.units[unit(&w[1])]);
                after.held.get(&p).is_none_or(|v| before.held.get(&p) == Some(v))
            })
        })
    }

    /// The acknowledged appends, with their values.
    fn acked(&self) -> impl Iterator<Item = (usize, &Append)> {
        self.appends.iter().enumerate().filter(|(_, a)| matches!(a.status, Status::Acked { .. }))
    }
}

impl SealModel {
    /// Runs `f` (a call of the real seal code) with the model's mutation
    /// switched on for this thread, whichever thread the checker runs it on.
    fn with_mutation<T>(&self, f: impl FnOnce() -> T) -> T {
        let m = self.seal_at_lowest_tail.then_some(Mutation::SealAtLowestTail);
        assert!(mutation::set(m), "the seal model needs naxos-wire's `mutations` feature");
        let out = f();
        mutation::set(None);
        out
    }

    /// The layout the driver would commit with `change`, if the seal so far
    /// allows it: the runtime's steps, with the real tally, new-segment rule
    /// and planner.
    fn finish(&self, s: &State, change: &Change) -> Option<Layout> {
        let known = s.newest();
        let active = known.segments.last()?.clone();
        self.with_mutation(|| {
            let mut tally = SealTally::new(active);
            let mut tails = BTreeMap::new();
            for (&u, &tail) in &s.sealed {
                tally.sealed(UNITS[u], tail);
                tails.insert(UNITS[u].to_string(), tail);
            }
            let end = tally.end()?;
            let start = new_segment_start(known, change, end, &tails).ok()?;
            next_layout(known, change, start).ok()
        })
    }

    /// The changes a driver may finish with: the next epoch, removing a unit
    /// it did not seal (one it cannot reach), or a new segment of the same
    /// shape whose chains are the active ones reversed (so that a unit that
    /// was a head is a tail, where reads go).
    fn changes(&self, s: &State) -> Vec<Change> {
        let mut out = vec![Change::NextEpoch];
        for addr in s.newest().log_units() {
            if !s.sealed.contains_key(&unit(&addr)) {
                out.push(Change::Remove(addr));
            }
        }
        let stripes = &s.newest().segments.last().expect("a segment").stripes;
        let replication = stripes[0].chain.len();
        if stripes.iter().all(|st| st.chain.len() == replication) {
            let log_units = stripes.iter().flat_map(|st| st.chain.iter().rev().cloned()).collect();
            out.push(Change::Segment { log_units, replication, stripes: stripes.len() });
        }
        out
    }

    /// Whether the driver may still seal (reconfigurations are left).
    fn may_reconfigure(&self, s: &State) -> bool {
        s.layouts.len() <= self.max_reconfigs
    }
}

impl Model for SealModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        vec![State {
            units: vec![Unit::default(); UNITS.len()],
            layouts: vec![Arc::new(genesis())],
            next_token: 0,
            appends: Vec::new(),
            sealed: BTreeMap::new(),
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        if s.appends.len() < self.max_appends {
            actions.push(Action::Token);
        }
        for (i, a) in s.appends.iter().enumerate() {
            if matches!(a.status, Status::Writing(_)) {
                actions.push(Action::Write(i));
            }
        }
        if self.may_reconfigure(s) {
            for addr in s.newest().log_units() {
                let u = unit(&addr);
                if !s.sealed.contains_key(&u) {
                    actions.push(Action::Seal(u));
                }
            }
            if !s.sealed.is_empty() {
                for change in self.changes(s) {
                    if self.finish(s, &change).is_some() {
                        actions.push(Action::Finish(change));
                    }
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Token => {
                let epoch = s.newest().epoch;
                s.appends.push(Append { epoch, position: s.next_token, status: Status::Writing(0) });
                s.next_token += 1;
            }
            Action::Write(i) => {
                let a = s.appends[i].clone();
                let Status::Writing(hop) = a.status else { return None };
                let chain = s.chain(&a);
                let after = s.layouts.len();
                let replica = &mut s.units[unit(&chain[hop])];
                s.appends[i].status = if a.epoch < replica.sealed {
                    Status::Fenced
                } else if let Entry::Vacant(slot) = replica.held.entry(a.position) {
                    slot.insert(i);
                    if hop + 1 == chain.len() {
                        Status::Acked { after }
                    } else {
                        Status::Writing(hop + 1)
                    }
                } else {
                    Status::Taken
                };
            }
            Action::Seal(u) => {
                let next = s.newest().epoch + 1;
                let replica = &mut s.units[u];
                replica.sealed = replica.sealed.max(next);
                let tail = replica.tail();
                s.sealed.insert(u, tail);
            }
            Action::Finish(change) => {
                let layout = self.finish(&s, &change)?;
                let start = layout.segments.last()?.start;
                s.next_token = if self.reissue_tokens { start } else { s.next_token.max(start) };
                s.layouts.push(Arc::new(layout));
                s.sealed.clear();
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(STILL_READABLE, |_, s: &State| s.acked().all(|(i, _)| s.readable(i))),
            Property::always(ONE_VALUE, |_, s: &State| {
                let mut seen = BTreeSet::new();
                s.acked().all(|(_, a)| seen.insert(a.position))
            }),
            Property::always(CHAIN_PREFIX, |_, s: &State| s.chains_are_prefixes()),
            Property::sometimes(ACKED, |_, s: &State| s.acked().next().is_some()),
            Property::sometimes(RECONFIGURED, |_, s: &State| s.layouts.len() > 1),
            Property::sometimes(ACKED_IN_LAST_EPOCH, |m: &SealModel, s: &State| {
                s.acked().any(|(_, a)| a.epoch as usize == m.max_reconfigs)
            }),
            Property::sometimes(STRAGGLER_FENCED, |_, s: &State| {
                s.appends.iter().any(|a| a.status == Status::Fenced && (a.epoch as usize) + 1 < s.layouts.len())
            }),
            Property::sometimes(STRAGGLER_ACKED, |_, s: &State| {
                s.appends.iter().any(|a| matches!(a.status, Status::Acked { after } if after > a.epoch as usize + 1))
            }),
        ]
    }
}

// ---- the checks ----

/// Describes a step of a counterexample.
fn describe(s: &State, a: &Action) -> String {
    match a {
        Action::Token => format!("a client of epoch {} takes token {}", s.newest().epoch, s.next_token),
        Action::Write(i) => {
            let append = &s.appends[*i];
            let hop = match append.status {
                Status::Writing(hop) => hop,
                _ => 0,
            };
            let chain = s.chain(append);
            format!(
                "append {i} (epoch {}, position {}) writes {}{}",
                append.epoch,
                append.position,
                chain[hop],
                if hop + 1 == chain.len() { " (its last replica)" } else { "" }
            )
        }
        Action::Seal(u) => {
            format!("seal {} at epoch {} (tail {})", UNITS[*u], s.newest().epoch + 1, s.units[*u].tail())
        }
        Action::Finish(change) => format!("commit epoch {} ({change})", s.newest().epoch + 1),
    }
}

/// Describes a layout's segments.
fn segments(l: &Layout) -> String {
    let segs: Vec<String> = l
        .segments
        .iter()
        .map(|seg| {
            let chains: Vec<String> = seg.stripes.iter().map(|st| st.chain.join(",")).collect();
            let end = seg.end.map_or("..".to_string(), |e| format!("..{e}"));
            format!("[{}{end}: {}]", seg.start, chains.join(" | "))
        })
        .collect();
    format!("epoch {}: {}", l.epoch, segs.join(" "))
}

/// The correct model: three appends, two reconfigurations.
fn model() -> SealModel {
    SealModel { seal_at_lowest_tail: false, max_appends: 3, max_reconfigs: 2, reissue_tokens: true }
}

#[test]
fn seal_model_holds() {
    let keep_counter = SealModel { reissue_tokens: false, ..model() };
    for (name, model) in [("tokens reissued", model()), ("sequencer keeps its counter", keep_counter)] {
        let started = Instant::now();
        let checker = model.checker().spawn_bfs().join();
        eprintln!(
            "seal_model_holds ({name}): {} states explored ({} generated), max depth {}, {:?}",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            started.elapsed()
        );
        checker.assert_properties();
    }
}

#[test]
fn sealing_at_the_lowest_tail_is_caught() {
    let model = SealModel { seal_at_lowest_tail: true, ..model() };
    let started = Instant::now();
    let checker =
        model.checker().finish_when(HasDiscoveries::AnyOf(BTreeSet::from([STILL_READABLE]))).spawn_bfs().join();
    eprintln!(
        "sealing_at_the_lowest_tail_is_caught: {} states explored ({} generated), {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        started.elapsed()
    );
    for name in [ONE_VALUE, CHAIN_PREFIX] {
        eprintln!("  also broken before it stopped: {name}: {}", checker.discovery(name).is_some());
    }
    let path = checker.discovery(STILL_READABLE);
    assert!(path.is_some(), "sealing at the lowest tail must cut an acknowledged append off its segment");
    if let Some(path) = path {
        let steps = path.into_vec();
        eprintln!("counterexample of {} steps:", steps.len() - 1);
        for (s, a) in &steps {
            match a {
                Some(a) => eprintln!("  {}", describe(s, a)),
                None => {
                    for l in &s.layouts {
                        eprintln!("  {}", segments(l));
                    }
                }
            }
        }
    }
}
