//! A stateright model check of the layout Paxos (`naxos_control::paxos`).
//!
//! What is modelled: three layout servers, each running the real
//! [`Acceptor`] (with the newest layout it knows committed beside it, as the
//! server keeps it), and two reconfiguration drivers, each running the real
//! [`Proposer`] to get its own layout chosen for epoch 1 on top of the same
//! epoch-0 layout (and, in the bigger run, epoch 2 on top of whatever epoch 1
//! chose). The model holds those structs and drives them only through their
//! public methods (`start`, `on_vote`, `prepare`, `accept`), so what is
//! checked is the code the servers and `naxos reconfigure` run.
//!
//! The environment is as hostile as Paxos allows: every message in flight
//! (prepares, accepts, votes, commits) can be delivered in any order or lost;
//! a layout server can crash and restart (its acceptor state is durable, as
//! `acceptor.json` makes it in the server); a driver that is outranked, or
//! whose call got no majority back, tries again with a higher round; a
//! driver whose attempt ended (chosen, or told the epoch is decided) may go
//! on to the next epoch on top of the layout it learned. As in the
//! reconfiguration runtime, a driver only reads the answers of the call it is
//! making: answers to a call it has left behind are never read, but the
//! requests of that call can still reach the acceptors late.
//!
//! Why: layout agreement is what makes reconfiguration safe. If two layouts
//! were chosen for one epoch, clients and servers would disagree about which
//! log units hold which positions, and acknowledged appends could be lost. The
//! properties are: at most one layout is ever chosen per epoch, and the epochs
//! of newly chosen layouts only go up (plus an example that a layout does get
//! chosen, so the check is not vacuous). The mutation test makes restarts
//! forget the acceptor's promise and accepted layout (a non-durable acceptor)
//! and checks that the model finds two layouts chosen for one epoch: the model
//! is strong enough to catch the bug durability prevents.
//!
//! The checks are bounded (rounds per driver, crashes, epochs) so the file
//! runs in seconds in a debug build.

use naxos_control::paxos::{Acceptor, Ballot, Message, Phase, Proposer, Vote};
use naxos_wire::Layout;
use stateright::{Checker, HasDiscoveries, Model, Property};
use std::collections::hash_map::DefaultHasher;
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::time::Instant;

/// The layout servers (acceptors).
const ACCEPTORS: [&str; 3] = ["x", "y", "z"];
/// The reconfiguration drivers (proposers); their Paxos ids are 1 and 2.
const DRIVERS: usize = 2;

const ONE_PER_EPOCH: &str = "at most one layout per epoch";
const EPOCHS_GO_UP: &str = "chosen epochs only go up";
const SOMETHING_CHOSEN: &str = "a layout is chosen";

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
    /// Crash-restarts of layout servers, all together.
    max_crashes: u32,
    /// The last epoch a driver proposes for.
    max_epoch: u64,
}

/// A message in flight.
#[derive(Clone, Debug, PartialEq)]
enum Envelope {
    /// A proposer's request to one acceptor.
    Request { driver: usize, to: usize, msg: Message },
    /// An acceptor's vote, to the driver's current call.
    Reply { driver: usize, from: usize, vote: Vote },
    /// A chosen layout, committed to a layout server.
    Commit { to: usize, layout: Layout },
}

/// One reconfiguration driver: its current Paxos attempt.
#[derive(Clone, Debug)]
struct Driver {
    proposer: Proposer,
    /// The layout it builds on (the proposer's own copy is private).
    base: Layout,
    /// Attempts made for the current epoch (rounds).
    attempts: u64,
}

#[derive(Clone, Debug)]
struct State {
    /// Each layout server's acceptor (durable).
    acceptors: Vec<Acceptor>,
    /// Each layout server's committed layout (the `chosen` it passes to its acceptor).
    committed: Vec<Layout>,
    drivers: Vec<Driver>,
    /// In flight: a set, kept in a canonical order.
    network: Vec<Envelope>,
    /// History: every layout a proposer reached `Phase::Chosen` with, in the
    /// order they were first chosen (each one once).
    chosen: Vec<Layout>,
    crashes: u32,
}

#[derive(Clone, Debug, PartialEq)]
enum Action {
    /// Deliver the message at this index of the network.
    Deliver(usize),
    /// Lose it.
    Drop(usize),
    /// The layout server crashes and restarts.
    Restart(usize),
    /// The driver starts a new attempt with a higher round.
    Retry(usize),
    /// The driver's attempt ended; it proposes for the next epoch on top of what it learned.
    NextEpoch(usize),
}

// ---- hashing: `Layout` (a prost message) and `Proposer` do not implement `Hash` ----

fn hash_layout<H: Hasher>(l: &Layout, h: &mut H) {
    l.cluster_id.hash(h);
    l.epoch.hash(h);
    l.layout_servers.hash(h);
    l.sequencers.hash(h);
    l.segments.len().hash(h);
    for s in &l.segments {
        s.start.hash(h);
        s.end.hash(h);
        s.stripes.hash(h);
        s.kind.hash(h);
    }
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

fn hash_envelope<H: Hasher>(e: &Envelope, h: &mut H) {
    match e {
        Envelope::Request { driver, to, msg } => {
            0u8.hash(h);
            driver.hash(h);
            to.hash(h);
            match msg {
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
        Envelope::Reply { driver, from, vote } => {
            1u8.hash(h);
            driver.hash(h);
            from.hash(h);
            hash_vote(vote, h);
        }
        Envelope::Commit { to, layout } => {
            2u8.hash(h);
            to.hash(h);
            hash_layout(layout, h);
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

/// Streams a `Debug` rendering into a hasher. The proposer's votes are private,
/// and its `Debug` shows all of its state deterministically (a `BTreeMap`).
struct HashWriter<'a, H: Hasher>(&'a mut H);

impl<H: Hasher> std::fmt::Write for HashWriter<'_, H> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.write(s.as_bytes());
        Ok(())
    }
}

fn hash_proposer<H: Hasher>(p: &Proposer, h: &mut H) {
    // Writing into a hasher cannot fail.
    let _ = write!(HashWriter(h), "{p:?}");
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
            d.attempts.hash(h);
            hash_layout(&d.base, h);
            hash_proposer(&d.proposer, h);
        }
        self.network.len().hash(h);
        for e in &self.network {
            hash_envelope(e, h);
        }
        self.chosen.len().hash(h);
        for l in &self.chosen {
            hash_layout(l, h);
        }
        self.crashes.hash(h);
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.acceptors == other.acceptors
            && self.committed == other.committed
            && self.drivers.len() == other.drivers.len()
            && self.drivers.iter().zip(&other.drivers).all(|(a, b)| {
                a.attempts == b.attempts
                    && a.base == b.base
                    && format!("{:?}", a.proposer) == format!("{:?}", b.proposer)
            })
            && self.network == other.network
            && self.chosen == other.chosen
            && self.crashes == other.crashes
    }
}

fn envelope_key(e: &Envelope) -> u64 {
    let mut h = DefaultHasher::new();
    hash_envelope(e, &mut h);
    h.finish()
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
    fn send(&mut self, e: Envelope) {
        if !self.network.contains(&e) {
            self.network.push(e);
        }
    }

    fn broadcast(&mut self, driver: usize, msg: &Message) {
        for to in 0..ACCEPTORS.len() {
            self.send(Envelope::Request { driver, to, msg: msg.clone() });
        }
    }

    /// The driver's call is over: answers to it are never read.
    fn end_call(&mut self, driver: usize) {
        self.network.retain(|e| !matches!(e, Envelope::Reply { driver: d, .. } if *d == driver));
    }

    /// Whether `msg` belongs to the call the driver is making now.
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

    /// The driver's call can get no more answers (every request and answer of it was lost or read).
    fn call_is_stuck(&self, driver: usize) -> bool {
        !self.network.iter().any(|e| match e {
            Envelope::Reply { driver: d, .. } => *d == driver,
            Envelope::Request { driver: d, msg, .. } => *d == driver && self.is_current_call(driver, msg),
            Envelope::Commit { .. } => false,
        })
    }

    fn record_chosen(&mut self, l: &Layout) {
        if !self.chosen.contains(l) {
            self.chosen.push(l.clone());
        }
        for to in 0..ACCEPTORS.len() {
            self.send(Envelope::Commit { to, layout: l.clone() });
        }
    }

    /// A new attempt of `driver` at `round` proposing its own layout on top of `base`.
    fn start_attempt(&mut self, driver: usize, base: Layout, round: u64) {
        let epoch = base.epoch + 1;
        let base_copy = base.clone();
        let p = Proposer::new(acceptor_names(), base, proposal(driver, epoch), round, driver as u64 + 1);
        let msg = p.start();
        self.end_call(driver);
        self.drivers[driver].proposer = p;
        self.drivers[driver].base = base_copy;
        self.broadcast(driver, &msg);
    }

    fn deliver(&mut self, e: Envelope) {
        match e {
            Envelope::Request { driver, to, msg } => {
                // The server commits a newer base first (a proposer only builds on a chosen layout).
                let base = match &msg {
                    Message::Prepare { base, .. } | Message::Accept { base, .. } => base,
                };
                if base.epoch > self.committed[to].epoch {
                    self.committed[to] = base.clone();
                }
                let chosen = self.committed[to].clone();
                let acceptor = &mut self.acceptors[to];
                let (vote, _) = match &msg {
                    Message::Prepare { ballot, .. } => acceptor.prepare(Some(&chosen), *ballot),
                    Message::Accept { rank, layout, .. } => acceptor.accept(Some(&chosen), *rank, layout),
                };
                if self.is_current_call(driver, &msg) {
                    self.send(Envelope::Reply { driver, from: to, vote });
                }
            }
            Envelope::Reply { driver, from, vote } => {
                let before = self.drivers[driver].proposer.phase().clone();
                let next = self.drivers[driver].proposer.on_vote(ACCEPTORS[from], vote);
                let after = self.drivers[driver].proposer.phase().clone();
                if let Some(msg) = next {
                    self.end_call(driver);
                    self.broadcast(driver, &msg);
                } else if after != before {
                    self.end_call(driver);
                }
                if after != before {
                    if let Phase::Chosen(l) = &after {
                        self.record_chosen(l);
                    }
                }
            }
            Envelope::Commit { to, layout } => {
                if layout.epoch > self.committed[to].epoch {
                    self.committed[to] = layout;
                }
            }
        }
    }

    fn normalize(&mut self) {
        self.network.sort_by_cached_key(envelope_key);
    }
}

impl Model for LayoutModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let mut s = State {
            acceptors: vec![Acceptor::default(); ACCEPTORS.len()],
            committed: vec![genesis(); ACCEPTORS.len()],
            drivers: (0..DRIVERS)
                .map(|d| Driver {
                    proposer: Proposer::new(acceptor_names(), genesis(), proposal(d, 1), 1, d as u64 + 1),
                    base: genesis(),
                    attempts: 1,
                })
                .collect(),
            network: Vec::new(),
            chosen: Vec::new(),
            crashes: 0,
        };
        // Both drivers have sent their prepares for epoch 1.
        for d in 0..DRIVERS {
            let msg = s.drivers[d].proposer.start();
            s.broadcast(d, &msg);
        }
        s.normalize();
        vec![s]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for i in 0..s.network.len() {
            actions.push(Action::Deliver(i));
            actions.push(Action::Drop(i));
        }
        if s.crashes < self.max_crashes {
            actions.extend((0..ACCEPTORS.len()).map(Action::Restart));
        }
        for (d, driver) in s.drivers.iter().enumerate() {
            let p = &driver.proposer;
            match p.phase() {
                Phase::Outranked(_) if driver.attempts < self.max_rounds => actions.push(Action::Retry(d)),
                Phase::Preparing | Phase::Accepting(_) if driver.attempts < self.max_rounds && s.call_is_stuck(d) => {
                    actions.push(Action::Retry(d))
                }
                Phase::Chosen(l) | Phase::Stale(l) if l.epoch < self.max_epoch => actions.push(Action::NextEpoch(d)),
                _ => {}
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        match action {
            Action::Deliver(i) => {
                let e = s.network.remove(i);
                s.deliver(e);
            }
            Action::Drop(i) => {
                s.network.remove(i);
            }
            Action::Restart(a) => {
                s.crashes += 1;
                if self.forget_promise_on_restart {
                    s.acceptors[a] = Acceptor::default();
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
                    Phase::Chosen(l) | Phase::Stale(l) => l.clone(),
                    _ => return None,
                };
                s.drivers[d].attempts = 1;
                s.start_attempt(d, base, 1);
            }
        }
        s.normalize();
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(ONE_PER_EPOCH, |_, s: &State| {
                s.chosen.iter().all(|a| s.chosen.iter().all(|b| a.epoch != b.epoch || a == b))
            }),
            Property::always(EPOCHS_GO_UP, |_, s: &State| s.chosen.windows(2).all(|w| w[0].epoch < w[1].epoch)),
            Property::sometimes(SOMETHING_CHOSEN, |_, s: &State| !s.chosen.is_empty()),
        ]
    }
}

// ---- the checks ----

/// Describes a step of a counterexample.
fn describe(s: &State, a: &Action) -> String {
    let env = |i: &usize| match s.network.get(*i) {
        Some(Envelope::Request { driver, to, msg: Message::Prepare { ballot, .. } }) => format!(
            "prepare e{} r{}.{} from d{driver} to {}",
            ballot.epoch.0, ballot.rank.round, ballot.rank.proposer, ACCEPTORS[*to]
        ),
        Some(Envelope::Request { driver, to, msg: Message::Accept { rank, layout, .. } }) => format!(
            "accept {:?}@e{} r{}.{} from d{driver} to {}",
            layout.sequencers, layout.epoch, rank.round, rank.proposer, ACCEPTORS[*to]
        ),
        Some(Envelope::Reply { driver, from, vote }) => format!("vote {vote:?} from {} to d{driver}", ACCEPTORS[*from]),
        Some(Envelope::Commit { to, layout }) => {
            format!("commit {:?}@e{} to {}", layout.sequencers, layout.epoch, ACCEPTORS[*to])
        }
        None => "?".into(),
    };
    match a {
        Action::Deliver(i) => format!("deliver {}", env(i)),
        Action::Drop(i) => format!("lose {}", env(i)),
        Action::Restart(x) => format!("restart {}", ACCEPTORS[*x]),
        Action::Retry(d) => format!("d{d} retries"),
        Action::NextEpoch(d) => format!("d{d} goes to the next epoch"),
    }
}

fn correct(max_epoch: u64) -> LayoutModel {
    LayoutModel { forget_promise_on_restart: false, max_rounds: 2, max_crashes: 1, max_epoch }
}

#[test]
fn layout_paxos_model_holds() {
    let started = Instant::now();
    let checker = correct(1).checker().spawn_bfs().join();
    eprintln!(
        "layout_paxos_model_holds: {} unique states ({} generated), max depth {}, {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        checker.max_depth(),
        started.elapsed()
    );
    checker.assert_properties();
}

#[test]
fn forgetting_a_promise_on_restart_is_caught() {
    let started = Instant::now();
    let model = LayoutModel { forget_promise_on_restart: true, ..correct(1) };
    let checker =
        model.checker().finish_when(HasDiscoveries::AnyOf(BTreeSet::from([ONE_PER_EPOCH]))).spawn_bfs().join();
    eprintln!(
        "forgetting_a_promise_on_restart_is_caught: {} unique states ({} generated), {:?}",
        checker.unique_state_count(),
        checker.state_count(),
        started.elapsed()
    );
    let path = checker.discovery(ONE_PER_EPOCH);
    assert!(path.is_some(), "a non-durable acceptor must let two layouts be chosen for one epoch");
    if let Some(path) = path {
        let steps = path.into_vec();
        eprintln!("counterexample of {} steps:", steps.len() - 1);
        for (s, a) in &steps {
            match a {
                Some(a) => eprintln!("  {}", describe(s, a)),
                None => eprintln!(
                    "  => chosen: {:?}",
                    s.chosen.iter().map(|l| (l.epoch, &l.sequencers)).collect::<Vec<_>>()
                ),
            }
        }
    }
}
