//! A stateright model check of the layout Paxos (`naxos_control::paxos`).
//!
//! What is modelled: three layout servers, each running the real
//! [`Acceptor`] beside the newest layout it has committed (the `chosen` it
//! passes in), and two reconfiguration drivers, each running the real
//! [`Proposer`] to get its own layout chosen for epoch 1 on top of the same
//! epoch-0 layout, and in the second run for epoch 2 on top of whatever
//! epoch 1 got (as a driver that loses an epoch rolls forward). The model
//! state holds those structs and only drives them through their public
//! methods (`start`, `on_vote`, `prepare`, `accept`), so what is checked is
//! the code the layout servers and `naxos reconfigure` run. Layouts are made
//! with `Layout::initial` and told apart by their sequencer.
//!
//! The environment: every request in flight can be delivered in any order
//! or never (a lost request is one that is never delivered: every state with
//! it still in flight is explored, and a driver can time out); a vote can be
//! lost on its way back (the acceptor's state changed, the driver never
//! hears of it); a chosen layout is committed to each server at any time
//! after, and a server commits a newer base a request brings first, as the
//! server does. A driver that is outranked, or that times out, retries with
//! a higher round (up to two attempts per driver in the one-epoch run); one
//! whose attempt ended goes on to the next epoch on top of the layout it
//! learned. As in the runtime, a driver reads only the answers of the call
//! it is making; the requests of calls it has left behind can still reach
//! the acceptors late.
//! A layout server can crash and restart: its acceptor state is durable (the
//! server writes `acceptor.json` before it answers), so a restart leaves the
//! model state as it was and the checker has nothing new to look at; the
//! step is offered only under the mutation below, where it changes the state.
//!
//! Why: layout agreement is what makes reconfiguration safe. Two layouts
//! chosen for one epoch would make clients and servers disagree about which
//! log units hold which positions, and acknowledged appends could be lost.
//! The properties: at most one layout is ever chosen per epoch (every layout
//! a proposer reached `Phase::Chosen` with is kept in a history), and the
//! epochs of newly chosen layouts only go up; and, so that the check is not
//! vacuous, some run does choose a layout, and one for the last epoch.
//!
//! The mutation test makes a restarted acceptor come back as
//! `Acceptor::default()` (an acceptor that does not keep its promise and
//! accepted layout durably) and checks that the same model (less timeouts
//! and lost votes, which the counterexample does not need) then finds two
//! layouts chosen for epoch 1, breadth first so that the counterexample is
//! the shortest: the model is strong enough to catch the bug that
//! durability prevents.
//!
//! Keeping it fast in a debug build: the state space is bounded (two
//! drivers, two attempts each, one or two epochs) and the correct model is
//! explored completely, depth first, with three reductions that merge only
//! states that behave the same: the servers are interchangeable (symmetry),
//! a request whose delivery would change nothing is dropped (promises and
//! committed layouts only go up, so that stays so), and nothing is explored
//! once no driver can act.

use naxos_control::paxos::{Acceptor, Ballot, Message, Phase, Proposer, Vote};
use naxos_wire::Layout;
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// The layout servers (acceptors).
const ACCEPTORS: [&str; 3] = ["x", "y", "z"];
/// The reconfiguration drivers (proposers); their Paxos ids are 1 and 2.
const DRIVERS: usize = 2;

const ONE_PER_EPOCH: &str = "at most one layout per epoch";
const EPOCHS_GO_UP: &str = "chosen epochs only go up";
const SOMETHING_CHOSEN: &str = "a layout is chosen";
const LAST_EPOCH_CHOSEN: &str = "a layout is chosen for the last epoch";

fn acceptor_names() -> Vec<String> {
    ACCEPTORS.iter().map(|a| a.to_string()).collect()
}

/// A small layout; proposals are told apart by their sequencer.
fn layout(epoch: u64, tag: &str) -> Layout {
    let units = vec!["u".to_string()];
    let mut l = Layout::initial("c", &units, 1, 1, vec![tag.to_string()], acceptor_names());
    l.epoch = epoch;
    l
}

/// The layout driver `d` proposes for `epoch`.
fn proposal(d: usize, epoch: u64) -> Layout {
    layout(epoch, &format!("d{d}e{epoch}"))
}

/// The epoch-0 layout every driver starts from.
fn genesis() -> Layout {
    layout(0, "s0")
}

/// The bounds and the mutation.
#[derive(Clone, Debug)]
struct LayoutModel {
    /// The mutation: a restarted acceptor comes back as `Acceptor::default()`.
    forget_promise_on_restart: bool,
    /// Proposer attempts (rounds) per driver and epoch.
    max_rounds: u64,
    /// Retries (attempts after the first) of all drivers together, per epoch.
    max_retries: u64,
    /// The last epoch a driver proposes for.
    max_epoch: u64,
    /// Whether a driver may time out and retry while it still waits for votes
    /// (otherwise it retries only when outranked).
    timeouts: bool,
    /// Whether a vote can be lost on its way back (the acceptor's state changed,
    /// the driver never hears of it, or hears of it after it stopped listening).
    lose_votes: bool,
    /// Whether a chosen layout may be committed to the layout servers before
    /// the next epoch's requests bring it (as their base).
    commits: bool,
}

/// A request in flight from a driver's proposer to one acceptor. The message
/// is shared between the copies sent to each acceptor and between states.
#[derive(Clone, Debug)]
struct Envelope {
    /// A digest of the driver and the message, for the canonical order and the state's hash.
    key: u64,
    driver: usize,
    to: usize,
    msg: Arc<Message>,
}

impl PartialEq for Envelope {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key && self.driver == other.driver && self.to == other.to && self.msg == other.msg
    }
}

/// One reconfiguration driver: its current Paxos attempt.
#[derive(Clone, Debug)]
struct Driver {
    proposer: Arc<Proposer>,
    /// The layout it builds on (the proposer's own copy is private).
    base: Arc<Layout>,
    /// Attempts made for the current epoch (rounds).
    attempts: u64,
    /// The votes the proposer took in its current phase, in order.
    taken: Vec<(usize, Vote)>,
}

#[derive(Clone, Debug, PartialEq)]
struct State {
    /// Each layout server's acceptor (durable).
    acceptors: Vec<Arc<Acceptor>>,
    /// Each layout server's committed layout (the `chosen` it passes to its acceptor).
    committed: Vec<Arc<Layout>>,
    drivers: Vec<Driver>,
    /// Requests in flight: a set, in a canonical order.
    network: Vec<Envelope>,
    /// History: every layout a proposer reached `Phase::Chosen` with, in the
    /// order they were first chosen (each one once).
    chosen: Vec<Arc<Layout>>,
}

#[derive(Clone, Debug, PartialEq)]
enum Action {
    /// The request at this index reaches its acceptor; the vote reaches the
    /// driver at once (if the driver still listens to that call).
    Deliver(usize),
    /// The request at this index reaches its acceptor; its vote is lost.
    DeliverLoseVote(usize),
    /// The commit of `chosen[i]` reaches layout server `a`: `(a, i)`.
    Commit(usize, usize),
    /// The layout server crashes and restarts (offered only under the
    /// mutation: a durable acceptor restarts as it was).
    Restart(usize),
    /// The driver gives up on its attempt (outranked, or it timed out) and
    /// starts another with a higher round.
    Retry(usize),
    /// The driver's attempt ended; it proposes for the next epoch on top of the layout it learned.
    NextEpoch(usize),
}

// ---- hashing: `Layout` (a prost message) and `Proposer` do not implement `Hash` ----

/// Every layout of the model is made by [`layout`], so its epoch and its
/// sequencer tell it apart (hashing every field costs most of the check).
fn hash_layout<H: Hasher>(l: &Layout, h: &mut H) {
    l.epoch.hash(h);
    l.sequencers.hash(h);
}

fn hash_vote<H: Hasher>(v: &Vote, h: &mut H) {
    match v {
        Vote::Promise(acc) => {
            0u8.hash(h);
            if let Some(a) = acc {
                a.ballot.hash(h);
                hash_layout(&a.layout, h);
            }
        }
        Vote::Accepted => 1u8.hash(h),
        Vote::Stale(l) => {
            2u8.hash(h);
            hash_layout(l, h);
        }
        Vote::Rejected(b) => {
            3u8.hash(h);
            b.hash(h);
        }
    }
}

fn hash_message<H: Hasher>(m: &Message, h: &mut H) {
    match m {
        Message::Prepare { ballot, base } => {
            0u8.hash(h);
            ballot.hash(h);
            hash_layout(base, h);
        }
        Message::Accept { rank, layout, base } => {
            1u8.hash(h);
            rank.hash(h);
            hash_layout(layout, h);
            hash_layout(base, h);
        }
    }
}

fn hash_phase<H: Hasher>(p: &Phase, h: &mut H) {
    match p {
        Phase::Preparing => 0u8.hash(h),
        Phase::Accepting(l) => {
            1u8.hash(h);
            hash_layout(l, h);
        }
        Phase::Chosen(l) => {
            2u8.hash(h);
            hash_layout(l, h);
        }
        Phase::Stale(l) => {
            3u8.hash(h);
            hash_layout(l, h);
        }
        Phase::Outranked(round) => {
            4u8.hash(h);
            round.hash(h);
        }
    }
}

fn hash_acceptor<H: Hasher>(a: &Acceptor, h: &mut H) {
    a.promised.hash(h);
    match &a.accepted {
        None => 0u8.hash(h),
        Some(acc) => {
            1u8.hash(h);
            acc.ballot.hash(h);
            hash_layout(&acc.layout, h);
        }
    }
}

impl Envelope {
    fn new(driver: usize, to: usize, msg: Arc<Message>) -> Envelope {
        let mut h = DefaultHasher::new();
        driver.hash(&mut h);
        hash_message(&msg, &mut h);
        Envelope { key: h.finish(), driver, to, msg }
    }
}

impl Driver {
    /// Whether the proposer still takes votes (its phase is not final).
    fn live(&self) -> bool {
        matches!(self.proposer.phase(), Phase::Preparing | Phase::Accepting(_))
    }
}

/// A driver is identified by what determines its proposer: the base (and so
/// its proposal), the ballot, the phase and the votes taken in that phase
/// (the proposer's own copy of them is private). A proposer whose phase is
/// final takes no more votes, so those are left out then.
impl Hash for Driver {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_layout(&self.base, h);
        self.attempts.hash(h);
        self.proposer.ballot().hash(h);
        hash_phase(self.proposer.phase(), h);
        if self.live() {
            self.taken.len().hash(h);
            for (from, vote) in &self.taken {
                from.hash(h);
                hash_vote(vote, h);
            }
        }
    }
}

impl PartialEq for Driver {
    fn eq(&self, other: &Self) -> bool {
        self.base == other.base
            && self.attempts == other.attempts
            && self.proposer.ballot() == other.proposer.ballot()
            && self.proposer.phase() == other.proposer.phase()
            && (!self.live() || self.taken == other.taken)
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        for a in &self.acceptors {
            hash_acceptor(a, h);
        }
        for l in &self.committed {
            hash_layout(l, h);
        }
        for d in &self.drivers {
            d.hash(h);
        }
        self.network.len().hash(h);
        for e in &self.network {
            e.key.hash(h);
            e.to.hash(h);
        }
        self.chosen.len().hash(h);
        for l in &self.chosen {
            hash_layout(l, h);
        }
    }
}

// ---- the protocol steps around the real state machines ----

/// The ballot a request is made at.
fn request_ballot(msg: &Message) -> Ballot {
    match msg {
        Message::Prepare { ballot, .. } => *ballot,
        Message::Accept { rank, layout, .. } => Ballot { epoch: naxos_wire::Epoch(layout.epoch), rank: *rank },
    }
}

impl State {
    fn broadcast(&mut self, driver: usize, msg: Message) {
        let msg = Arc::new(msg);
        for to in 0..ACCEPTORS.len() {
            let e = Envelope::new(driver, to, msg.clone());
            if !self.network.contains(&e) {
                self.network.push(e);
            }
        }
        self.network.sort_by_key(|e| (e.key, e.to));
    }

    /// Whether `msg` belongs to the call the driver is making now (the
    /// runtime reads the answers of that call only).
    fn is_current_call(&self, driver: usize, msg: &Message) -> bool {
        let p = &self.drivers[driver].proposer;
        if p.ballot() != request_ballot(msg) {
            return false;
        }
        match (p.phase(), msg) {
            (Phase::Preparing, Message::Prepare { .. }) => true,
            (Phase::Accepting(ours), Message::Accept { layout, .. }) => ours == layout,
            _ => false,
        }
    }

    /// Whether delivering the request would leave the state as it is: it is
    /// not part of a call its driver listens to (it never will be again), its
    /// base is not newer than the server's, and the real acceptor refuses it
    /// or already holds what it asks.
    fn is_useless(&self, e: &Envelope) -> bool {
        if self.is_current_call(e.driver, &e.msg) {
            return false;
        }
        let committed = &self.committed[e.to];
        let (Message::Prepare { base, .. } | Message::Accept { base, .. }) = &*e.msg;
        if base.epoch > committed.epoch {
            return false;
        }
        let mut acceptor = (*self.acceptors[e.to]).clone();
        match &*e.msg {
            Message::Prepare { ballot, .. } => acceptor.prepare(Some(committed), *ballot),
            Message::Accept { rank, layout, .. } => acceptor.accept(Some(committed), *rank, layout),
        };
        acceptor == *self.acceptors[e.to]
    }

    /// Drops the requests whose delivery would change nothing. With durable
    /// acceptors that stays so forever (promises and committed layouts only
    /// go up, which `deliver` asserts), so this only merges states that
    /// behave the same.
    fn forget_useless_requests(&mut self) {
        let useless: Vec<bool> = self.network.iter().map(|e| self.is_useless(e)).collect();
        let mut flags = useless.into_iter();
        self.network.retain(|_| !flags.next().unwrap_or(false));
    }

    /// A new attempt of `driver` at `round`, proposing its own layout on top of `base`.
    fn start_attempt(&mut self, driver: usize, base: Arc<Layout>, round: u64) {
        let epoch = base.epoch + 1;
        let p = Proposer::new(acceptor_names(), (*base).clone(), proposal(driver, epoch), round, driver as u64 + 1);
        let msg = p.start();
        let d = &mut self.drivers[driver];
        d.proposer = Arc::new(p);
        d.base = base;
        d.taken.clear();
        self.broadcast(driver, msg);
    }

    /// The request reaches its acceptor; the vote reaches the driver if `vote_arrives`.
    fn deliver(&mut self, e: Envelope, vote_arrives: bool) {
        let Envelope { driver, to, msg, .. } = e;
        // The server commits a newer base first (a proposer only builds on a chosen layout).
        let base = match &*msg {
            Message::Prepare { base, .. } | Message::Accept { base, .. } => base,
        };
        if base.epoch > self.committed[to].epoch {
            self.committed[to] = Arc::new(base.clone());
        }
        let chosen = self.committed[to].clone();
        let acceptor = Arc::make_mut(&mut self.acceptors[to]);
        let promised = acceptor.promised;
        let (vote, _) = match &*msg {
            Message::Prepare { ballot, .. } => acceptor.prepare(Some(&chosen), *ballot),
            Message::Accept { rank, layout, .. } => acceptor.accept(Some(&chosen), *rank, layout),
        };
        assert!(acceptor.promised >= promised, "a promise never goes down");
        if vote_arrives && self.is_current_call(driver, &msg) {
            self.on_vote(driver, to, vote);
        }
    }

    /// The driver's proposer takes a vote.
    fn on_vote(&mut self, driver: usize, from: usize, vote: Vote) {
        let d = &mut self.drivers[driver];
        let before = d.proposer.phase().clone();
        let next = Arc::make_mut(&mut d.proposer).on_vote(ACCEPTORS[from], vote.clone());
        let after = d.proposer.phase().clone();
        if after == before {
            d.taken.push((from, vote));
        } else {
            d.taken.clear();
        }
        if let Some(msg) = next {
            self.broadcast(driver, msg);
        }
        if after != before {
            if let Phase::Chosen(l) = &after {
                // The driver commits it to every node (see `Action::Commit`).
                if !self.chosen.iter().any(|c| **c == *l) {
                    self.chosen.push(Arc::new(l.clone()));
                }
            }
        }
    }
}

/// A fast hasher for the symmetry's signatures (SipHash is slow in a debug
/// build, and a clash only costs some reduction: a representative is always
/// a renaming of the state).
#[derive(Default)]
struct Fx(u64);

impl Hasher for Fx {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
}

/// Symmetry: the layout servers are interchangeable (nothing in the protocol
/// depends on their names but the proposer's bookkeeping of who voted), so a
/// state is checked once for all orders of them. The representative puts
/// them in the order of what each one holds and what is on its way to it.
/// It is only hashed, never run: its proposers still know the servers by
/// their old names, but a driver's hash does not look at that.
impl State {
    fn signature(&self, a: usize) -> u64 {
        let mut h = Fx::default();
        hash_acceptor(&self.acceptors[a], &mut h);
        hash_layout(&self.committed[a], &mut h);
        for e in self.network.iter().filter(|e| e.to == a) {
            e.key.hash(&mut h);
        }
        for (d, driver) in self.drivers.iter().enumerate() {
            for (i, (from, vote)) in driver.taken.iter().enumerate() {
                if *from == a {
                    (d, i).hash(&mut h);
                    hash_vote(vote, &mut h);
                }
            }
        }
        h.finish()
    }

    fn representative(&self) -> State {
        let signatures: Vec<u64> = (0..ACCEPTORS.len()).map(|a| self.signature(a)).collect();
        let mut order: Vec<usize> = (0..ACCEPTORS.len()).collect();
        order.sort_by_key(|a| signatures[*a]);
        let mut renamed = vec![0; ACCEPTORS.len()];
        for (new, old) in order.iter().enumerate() {
            renamed[*old] = new;
        }
        let mut network: Vec<Envelope> =
            self.network.iter().map(|e| Envelope { to: renamed[e.to], ..e.clone() }).collect();
        network.sort_by_key(|e| (e.key, e.to));
        State {
            acceptors: order.iter().map(|a| self.acceptors[*a].clone()).collect(),
            committed: order.iter().map(|a| self.committed[*a].clone()).collect(),
            drivers: self
                .drivers
                .iter()
                .map(|d| Driver {
                    taken: d.taken.iter().map(|(from, vote)| (renamed[*from], vote.clone())).collect(),
                    ..d.clone()
                })
                .collect(),
            network,
            chosen: self.chosen.clone(),
        }
    }
}

impl LayoutModel {
    /// What the driver may do by itself: retry, or go on to the next epoch.
    fn driver_action(&self, s: &State, d: usize) -> Option<Action> {
        let driver = &s.drivers[d];
        let epoch = driver.base.epoch;
        let retries: u64 = s.drivers.iter().filter(|o| o.base.epoch == epoch).map(|o| o.attempts - 1).sum();
        let may_retry = driver.attempts < self.max_rounds && retries < self.max_retries;
        match driver.proposer.phase() {
            Phase::Outranked(_) if may_retry => Some(Action::Retry(d)),
            Phase::Preparing | Phase::Accepting(_) if self.timeouts && may_retry => Some(Action::Retry(d)),
            Phase::Chosen(l) | Phase::Stale(l) if l.epoch < self.max_epoch => Some(Action::NextEpoch(d)),
            _ => None,
        }
    }
}

impl Model for LayoutModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let genesis = Arc::new(genesis());
        let mut s = State {
            acceptors: (0..ACCEPTORS.len()).map(|_| Arc::new(Acceptor::default())).collect(),
            committed: vec![genesis.clone(); ACCEPTORS.len()],
            drivers: (0..DRIVERS)
                .map(|d| Driver {
                    proposer: Arc::new(Proposer::new(
                        acceptor_names(),
                        (*genesis).clone(),
                        proposal(d, 1),
                        1,
                        d as u64 + 1,
                    )),
                    base: genesis.clone(),
                    attempts: 1,
                    taken: Vec::new(),
                })
                .collect(),
            network: Vec::new(),
            chosen: Vec::new(),
        };
        // Both drivers have sent their prepares for epoch 1 (a request can
        // stay in flight as long as a late start would have taken).
        for d in 0..DRIVERS {
            let msg = s.drivers[d].proposer.start();
            s.broadcast(d, msg);
        }
        vec![s]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let drivers: Vec<Option<Action>> = (0..DRIVERS).map(|d| self.driver_action(s, d)).collect();
        if !s.drivers.iter().any(Driver::live) && drivers.iter().all(Option::is_none) {
            // Every driver is done for good: nothing can be chosen any more.
            return;
        }
        for (i, e) in s.network.iter().enumerate() {
            actions.push(Action::Deliver(i));
            if self.lose_votes && s.is_current_call(e.driver, &e.msg) {
                actions.push(Action::DeliverLoseVote(i));
            }
        }
        for (a, committed) in s.committed.iter().enumerate().filter(|_| self.commits) {
            for (i, l) in s.chosen.iter().enumerate() {
                if l.epoch > committed.epoch {
                    actions.push(Action::Commit(a, i));
                }
            }
        }
        for (a, acceptor) in s.acceptors.iter().enumerate() {
            // A durable acceptor restarts as it was: the step would lead back
            // to the same state, so it is offered only when it forgets.
            if self.forget_promise_on_restart && **acceptor != Acceptor::default() {
                actions.push(Action::Restart(a));
            }
        }
        actions.extend(drivers.into_iter().flatten());
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Deliver(i) => {
                let e = s.network.remove(i);
                s.deliver(e, true);
            }
            Action::DeliverLoseVote(i) => {
                let e = s.network.remove(i);
                s.deliver(e, false);
            }
            Action::Commit(a, i) => {
                s.committed[a] = s.chosen[i].clone();
            }
            Action::Restart(a) => {
                // The acceptor state is durable (`acceptor.json`): a restart
                // changes nothing, unless the mutation makes it forget.
                if self.forget_promise_on_restart {
                    s.acceptors[a] = Arc::new(Acceptor::default());
                }
            }
            Action::Retry(d) => {
                let p = &s.drivers[d].proposer;
                let round = match p.phase() {
                    Phase::Outranked(seen) => seen + 1,
                    _ => p.ballot().rank.round + 1,
                };
                let base = s.drivers[d].base.clone();
                s.drivers[d].attempts += 1;
                s.start_attempt(d, base, round);
            }
            Action::NextEpoch(d) => {
                let base = match s.drivers[d].proposer.phase() {
                    Phase::Chosen(l) | Phase::Stale(l) => Arc::new(l.clone()),
                    _ => return None,
                };
                s.drivers[d].attempts = 1;
                s.start_attempt(d, base, 1);
            }
        }
        if !self.forget_promise_on_restart {
            s.forget_useless_requests();
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(ONE_PER_EPOCH, |_, s: &State| {
                s.chosen.iter().all(|a| s.chosen.iter().all(|b| a.epoch != b.epoch || a == b))
            }),
            Property::always(EPOCHS_GO_UP, |_, s: &State| s.chosen.windows(2).all(|w| w[0].epoch < w[1].epoch)),
            Property::sometimes(SOMETHING_CHOSEN, |_, s: &State| !s.chosen.is_empty()),
            Property::sometimes(LAST_EPOCH_CHOSEN, |m: &LayoutModel, s: &State| {
                s.chosen.iter().any(|l| l.epoch == m.max_epoch)
            }),
        ]
    }
}

// ---- the checks ----

/// Describes a step of a counterexample.
fn describe(s: &State, a: &Action) -> String {
    let request = |i: &usize| match s.network.get(*i) {
        Some(Envelope { driver, to, msg, .. }) => match &**msg {
            Message::Prepare { ballot, .. } => format!(
                "prepare e{} r{}.{} of d{driver} to {}",
                ballot.epoch.0, ballot.rank.round, ballot.rank.proposer, ACCEPTORS[*to]
            ),
            Message::Accept { rank, layout, .. } => format!(
                "accept {:?}@e{} r{}.{} of d{driver} to {}",
                layout.sequencers, layout.epoch, rank.round, rank.proposer, ACCEPTORS[*to]
            ),
        },
        None => "?".into(),
    };
    match a {
        Action::Deliver(i) => format!("deliver {}", request(i)),
        Action::DeliverLoseVote(i) => format!("deliver {}, lose its vote", request(i)),
        Action::Commit(a, i) => format!("commit {:?} to {}", s.chosen.get(*i).map(|l| &l.sequencers), ACCEPTORS[*a]),
        Action::Restart(x) => format!("restart {}", ACCEPTORS[*x]),
        Action::Retry(d) => format!("d{d} retries"),
        Action::NextEpoch(d) => format!("d{d} goes to the next epoch"),
    }
}

/// Epoch 1 with everything: two attempts per driver (outranked or timed
/// out), lost votes, commits.
fn one_epoch() -> LayoutModel {
    LayoutModel {
        forget_promise_on_restart: false,
        max_rounds: 2,
        max_retries: 2,
        max_epoch: 1,
        timeouts: true,
        lose_votes: true,
        commits: true,
    }
}

/// Epochs 1 and 2, one attempt per driver and epoch: a driver that lost
/// epoch 1, or was told it is decided, proposes for epoch 2 on top of it.
fn two_epochs() -> LayoutModel {
    LayoutModel { max_rounds: 1, max_retries: 0, max_epoch: 2, timeouts: false, ..one_epoch() }
}

#[test]
fn layout_paxos_model_holds() {
    for (name, model) in [("one epoch", one_epoch()), ("two epochs", two_epochs())] {
        let started = Instant::now();
        let checker = model.checker().symmetry_fn(State::representative).spawn_dfs().join();
        eprintln!(
            "layout_paxos_model_holds ({name}): {} states explored ({} generated), max depth {}, {:?}",
            checker.unique_state_count(),
            checker.state_count(),
            checker.max_depth(),
            started.elapsed()
        );
        checker.assert_properties();
    }
}

#[test]
fn forgetting_a_promise_on_restart_is_caught() {
    // Breadth first, for the shortest counterexample; timeouts and lost votes
    // are not needed for it and would only make the search longer.
    let model = LayoutModel { forget_promise_on_restart: true, timeouts: false, lose_votes: false, ..one_epoch() };
    let started = Instant::now();
    let checker =
        model.checker().finish_when(HasDiscoveries::AnyOf(BTreeSet::from([ONE_PER_EPOCH]))).spawn_bfs().join();
    eprintln!(
        "forgetting_a_promise_on_restart_is_caught: {} states explored ({} generated), {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        started.elapsed()
    );
    let path = checker.discovery(ONE_PER_EPOCH);
    assert!(path.is_some(), "an acceptor that forgets its promise must let two layouts be chosen for one epoch");
    if let Some(path) = path {
        let steps = path.into_vec();
        eprintln!("counterexample of {} steps:", steps.len() - 1);
        for (s, a) in &steps {
            match a {
                Some(a) => eprintln!("  {}", describe(s, a)),
                None => eprintln!(
                    "  chosen for epoch 1: {:?}",
                    s.chosen.iter().map(|l| l.sequencers.join(",")).collect::<Vec<_>>()
                ),
            }
        }
    }
}
