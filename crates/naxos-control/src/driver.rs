//! The reconfiguration driver's decisions, as a pure state machine (events
//! in, commands out, as openraft's Engine is to its Runtime). It owns the
//! order of the steps of DESIGN §2 (learn, enroll and catch up a joining
//! unit, seal, take the new segment's start, copy the rest, propose, commit,
//! bootstrap the sequencer), the retries and their random back-off, and what
//! every answer means. It does no I/O and reads no clock: `reconfig` runs
//! its commands against the cluster, the unit tests feed it answers by hand,
//! and the self-healing manager will only add the trigger.
//!
//! One command is out at a time; its answers come back as one event.

use crate::paxos::{Message, Phase, Proposer, Vote};
use crate::plan::{next_layout_skipping, Change, Refusal};
use crate::seal::{new_segment_start, SealTally};
use naxos_client::loglet::CatchUp;
use naxos_wire::mutation::{self, Mutation};
use naxos_wire::{Epoch, ErrorCode, Layout, Position, StreamId};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Where a test makes a driver stop, as if it had died there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// After sealing, before proposing.
    AfterSeal,
    /// After the layout was chosen, before anyone was told.
    AfterChoose,
}

/// Why a reconfiguration did not happen.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The change does not fit the current layout; nothing was changed.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// The cluster could not be reconfigured within the attempts.
    #[error("reconfiguration did not complete: {0}")]
    Unavailable(String),
    /// A node answered with an error that no retry helps.
    #[error("{0}")]
    Server(naxos_wire::ServerError),
}

/// What a finished reconfiguration decided (the runtime adds its timings).
#[derive(Clone, Debug, PartialEq)]
pub struct Decided {
    /// The layout it left the cluster in.
    pub layout: Layout,
    /// The layout it started from.
    pub before: Layout,
    /// Where the new segment starts (the sealed one ends).
    pub sealed_at: Position,
    /// Layouts of other drivers that were chosen first and committed on the way.
    pub rolled_forward: Vec<Epoch>,
    /// Nodes that did not take the new layout.
    pub not_committed: Vec<String>,
    /// What the state transfer copied (for `Change::Add`).
    pub transfer: CatchUp,
}

/// How far a catch-up copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyTo {
    /// To the cluster's tail now (before the seal, while appends go on).
    Tail,
    /// To this position (the end of the sealed segment).
    At(Position),
}

/// What the driver asks its runtime to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// Ask every one of `addrs` for its layout; answer with [`Event::Layouts`].
    GetLayouts {
        /// The nodes to ask.
        addrs: Vec<String>,
    },
    /// Commit `layout` to a joining `addr` so that it belongs to the cluster
    /// before it is caught up; answer with [`Event::Enrolled`].
    Enroll {
        /// The joining node.
        addr: String,
        /// The layout it takes.
        layout: Layout,
    },
    /// Seal the joining `addr` at `layout`'s epoch, so that no straggler of
    /// an older layout writes to it while it is checked; [`Event::SealedOne`].
    SealOne {
        /// The joining node.
        addr: String,
        /// Its epoch comes from this layout.
        layout: Layout,
    },
    /// Catch `addr` up on every segment of `layout` (segment `i` from
    /// `from[i]`, or from its start) for `stripe` (every stripe if `None`);
    /// answer with [`Event::Copied`].
    CatchUp {
        /// The layout to copy by (at the epoch the replicas accept).
        layout: Layout,
        /// The unit to fill.
        addr: String,
        /// The stripe it joins.
        stripe: Option<usize>,
        /// How far to copy.
        to: CopyTo,
        /// Where to start in each segment, by index (missing: its start).
        from: Vec<u64>,
    },
    /// Seal `nodes` at `epoch` (requests carry `layout`'s epoch); answer with
    /// [`Event::Sealed`], one answer per node in order.
    Seal {
        /// The layout being sealed.
        layout: Layout,
        /// Every node of it and every joining one.
        nodes: Vec<String>,
        /// The next epoch.
        epoch: u64,
    },
    /// Send `message` to every one of `acceptors` (requests carry `base`'s
    /// cluster and epoch); answer with [`Event::Votes`], in order.
    Paxos {
        /// The layout the proposal builds on.
        base: Layout,
        /// The layout servers.
        acceptors: Vec<String>,
        /// Prepare or accept.
        message: Message,
    },
    /// Commit `layout` to every one of `nodes`; answer with [`Event::Committed`].
    Commit {
        /// The chosen layout.
        layout: Layout,
        /// Its nodes and those of the layout before it.
        nodes: Vec<String>,
    },
    /// Ask every one of `units` for its tail, token ceiling and stream tails;
    /// answer with [`Event::UnitTails`], in order.
    UnitTails {
        /// The new layout.
        layout: Layout,
        /// Its log units.
        units: Vec<String>,
    },
    /// Give the primary sequencer of `layout` its starting state; answer
    /// with [`Event::Bootstrapped`].
    Bootstrap {
        /// The new layout.
        layout: Layout,
        /// Its primary sequencer.
        sequencer: String,
        /// The first position it hands out.
        tail: u64,
        /// The last position of every stream.
        streams: Vec<(StreamId, u64)>,
    },
    /// Wait this long (random back-off); answer with [`Event::Slept`].
    Sleep(Duration),
    /// The reconfiguration is over.
    Done(Result<Decided, DoneError>),
}

/// [`Error`] as a comparable value inside a [`Command`].
#[derive(Clone, Debug, PartialEq)]
pub enum DoneError {
    /// See [`Error::Refused`].
    Refused(Refusal),
    /// See [`Error::Unavailable`].
    Unavailable(String),
}

impl From<DoneError> for Error {
    fn from(e: DoneError) -> Error {
        match e {
            DoneError::Refused(r) => Error::Refused(r),
            DoneError::Unavailable(s) => Error::Unavailable(s),
        }
    }
}

/// How a node answered one request of a command.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer<T> {
    /// The answer it was asked for.
    Ok(T),
    /// Some other answer.
    Other,
    /// A server error: its code, the epoch it is at, its message, and the
    /// whole error as the runtime words it (with the address).
    Refused(ErrorCode, u64, String, String),
    /// No answer (unreachable, timed out, connection lost).
    Failed(String),
}

/// A sealed node's answer: its log unit tail and what its sequencer had handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealAnswer {
    /// The log unit's local tail (0 without a log unit).
    pub tail: u64,
    /// The first position its sequencer had not handed out, if it sequences.
    pub sequencer_next: Option<u64>,
}

pub use crate::tails::TailAnswer;

/// What the runtime brings back, one per command.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// The layout each node holds (`None`: it answered without one), in the
    /// order of the command's addresses.
    Layouts(Vec<Answer<Option<Layout>>>),
    /// The joining node took the layout.
    Enrolled(Answer<()>),
    /// The joining node is sealed.
    SealedOne(Answer<()>),
    /// What a catch-up copied; the (segment, stripe) chains where the unit
    /// holds values its chain decided otherwise (found even if it then failed).
    Copied {
        /// What was copied, or why it stopped.
        result: Result<CatchUp, String>,
        /// Chains the unit must stay out of.
        diverged: Vec<(usize, usize)>,
        /// Per segment, by index: where a later pass must look again (the
        /// first position left open, or where this pass stopped).
        resume: Vec<u64>,
    },
    /// The seal answers, in the order of the command's nodes.
    Sealed(Vec<Answer<SealAnswer>>),
    /// The acceptors' votes, in order (`None`: no vote in the answer).
    Votes(Vec<Answer<Option<Vote>>>),
    /// Whether each node took the commit, in order.
    Committed(Vec<bool>),
    /// The units' tails, in order.
    UnitTails(Vec<Answer<TailAnswer>>),
    /// The sequencer's bootstrap answer.
    Bootstrapped(Answer<()>),
    /// The back-off is over.
    Slept,
}

/// What a seal found.
struct Sealed {
    end: Position,
    sequencer_next: u64,
    tails: BTreeMap<String, u64>,
}

enum Sealing {
    Newer(u64),
    Refused(String),
    Unavailable(String),
}

/// Where the driver is: which event it waits for.
#[derive(Clone, Debug)]
enum Wait {
    FirstLayouts,
    Backoff,
    Layouts,
    Enrolled,
    RoundBackoff,
    SealedOne,
    PreCopied,
    Sealed,
    PostCopied,
    Votes,
    Committed,
    UnitTails,
    Bootstrapped,
    Over,
}

/// The driver of one reconfiguration.
pub struct Driver {
    seeds: Vec<String>,
    change: Change,
    attempts: u32,
    abandon: Option<Abandon>,
    rng: Random,
    wait: Wait,
    /// The nodes the command out now was sent to, in order.
    asked: Vec<String>,
    attempt: u32,
    known: Option<Layout>,
    before: Option<Layout>,
    rolled_forward: Vec<Epoch>,
    last: String,
    transfer: CatchUp,
    diverged: BTreeSet<(usize, usize)>,
    /// Where the copy after the seal starts in each segment, once the copy
    /// before it succeeded.
    resume: Option<Vec<u64>>,
    sealed: Option<Sealed>,
    sealed_at: Position,
    proposal: Option<Layout>,
    proposer: Option<Proposer>,
    round: u64,
    rounds: u32,
    chosen: Option<Layout>,
    not_committed: Vec<String>,
    reason: String,
    unix_ms: u64,
}

/// Paxos attempts (rounds) per proposal before the driver gives up on it.
const ROUNDS: u32 = 8;

impl Driver {
    /// A driver that applies `change` to the cluster `seeds` belong to, in
    /// at most `attempts` tries, with random numbers from `seed` (0: from
    /// the clock), stopping early at `abandon` (tests).
    pub fn new(seeds: Vec<String>, change: Change, attempts: u32, abandon: Option<Abandon>, seed: u64) -> Driver {
        Driver {
            seeds,
            change,
            attempts: attempts.max(1),
            abandon,
            rng: Random::new(seed),
            wait: Wait::FirstLayouts,
            asked: Vec::new(),
            attempt: 0,
            known: None,
            before: None,
            rolled_forward: Vec::new(),
            last: String::new(),
            transfer: CatchUp::default(),
            diverged: BTreeSet::new(),
            resume: None,
            sealed: None,
            sealed_at: Position(0),
            proposal: None,
            proposer: None,
            round: 1,
            rounds: 0,
            chosen: None,
            not_committed: Vec::new(),
            reason: String::new(),
            unix_ms: 0,
        }
    }

    /// Records `reason` and the time `unix_ms` (milliseconds since the Unix
    /// epoch; 0 if unknown) in the history of the layout it proposes.
    /// Without a reason the history says "operator: <change>".
    pub fn with_reason(mut self, reason: impl Into<String>, unix_ms: u64) -> Driver {
        self.reason = reason.into();
        self.unix_ms = unix_ms;
        self
    }

    /// The first command: learn the newest layout from the seeds.
    pub fn start(&mut self) -> Command {
        self.wait = Wait::FirstLayouts;
        self.asked = self.seeds.clone();
        Command::GetLayouts { addrs: self.seeds.clone() }
    }

    /// The next command, given the answer to the last one.
    pub fn on(&mut self, event: Event) -> Command {
        match (std::mem::replace(&mut self.wait, Wait::Over), event) {
            (Wait::FirstLayouts, Event::Layouts(answers)) => match self.newest(answers) {
                Ok(l) => {
                    self.before = Some(l.clone());
                    self.known = Some(l);
                    self.begin_attempt()
                }
                Err(why) => self.done(Err(DoneError::Unavailable(why))),
            },
            (Wait::Backoff, Event::Slept) => {
                let mut addrs = self.seeds.clone();
                addrs.extend(self.known().all_nodes());
                self.wait = Wait::Layouts;
                self.asked = addrs.clone();
                Command::GetLayouts { addrs }
            }
            (Wait::Layouts, Event::Layouts(answers)) => match self.newest(answers) {
                Ok(l) => {
                    self.known = Some(l);
                    self.begin_attempt()
                }
                Err(why) => self.done(Err(DoneError::Unavailable(why))),
            },
            (Wait::Enrolled, Event::Enrolled(answer)) => {
                let addr = self.joining_unit().0;
                match answer {
                    Answer::Ok(()) | Answer::Other => {
                        self.wait = Wait::SealedOne;
                        Command::SealOne { addr, layout: self.known().clone() }
                    }
                    Answer::Refused(ErrorCode::WrongCluster | ErrorCode::AlreadyBootstrapped, _, m, _) => {
                        self.done(Err(DoneError::Refused(Refusal::Shape(format!("{addr} cannot join: {m}")))))
                    }
                    Answer::Refused(_, _, _, e) | Answer::Failed(e) => self.retry(format!("{addr} cannot join: {e}")),
                }
            }
            (Wait::SealedOne, Event::SealedOne(answer)) => {
                let (addr, stripe) = self.joining_unit();
                match answer {
                    // A later seal already fences it too.
                    Answer::Ok(()) | Answer::Other | Answer::Refused(ErrorCode::WrongEpoch, ..) => {
                        // Copy requests carry the next epoch: the replicas
                        // accept it before the seal and after it (a try that
                        // failed may have sealed them).
                        let mut ahead = self.known().clone();
                        ahead.epoch += 1;
                        if mutation::active(Mutation::AddBeforeCatchUp) {
                            return self.seal();
                        }
                        self.wait = Wait::PreCopied;
                        Command::CatchUp { layout: ahead, addr, stripe, to: CopyTo::Tail, from: Vec::new() }
                    }
                    Answer::Refused(_, _, _, e) | Answer::Failed(e) => {
                        self.retry(format!("reconfiguration did not complete: sealing {addr} before its catch-up: {e}"))
                    }
                }
            }
            (Wait::PreCopied, Event::Copied { result, diverged, resume }) => {
                self.diverged.extend(diverged);
                match result {
                    Ok(c) => {
                        self.transfer += c;
                        self.resume = Some(resume);
                    }
                    Err(e) => {
                        let addr = self.joining_unit().0;
                        tracing::info!("catching {addr} up before the seal: {e}; copying after it");
                    }
                }
                self.seal()
            }
            (Wait::Sealed, Event::Sealed(answers)) => self.on_sealed(answers),
            (Wait::PostCopied, Event::Copied { result, diverged, .. }) => {
                self.diverged.extend(diverged);
                match result {
                    Ok(c) => {
                        self.transfer += c;
                        self.propose()
                    }
                    Err(e) => {
                        let addr = self.joining_unit().0;
                        self.retry(format!("catching {addr} up after the seal: {e}"))
                    }
                }
            }
            (Wait::Votes, Event::Votes(votes)) => self.on_votes(votes),
            (Wait::Committed, Event::Committed(took)) => {
                let nodes = std::mem::take(&mut self.asked);
                self.not_committed = nodes.into_iter().zip(took).filter(|(_, ok)| !ok).map(|(n, _)| n).collect();
                let chosen = self.chosen().clone();
                self.wait = Wait::UnitTails;
                let units = chosen.log_units();
                self.asked = units.clone();
                Command::UnitTails { units, layout: chosen }
            }
            (Wait::UnitTails, Event::UnitTails(answers)) => {
                let chosen = self.chosen().clone();
                let floor = self.sealed.as_ref().map_or(0, |s| s.sequencer_next).max(chosen.tail_floor);
                match bootstrap_state(&chosen, floor, &self.asked, answers) {
                    Ok(command) => {
                        self.wait = Wait::Bootstrapped;
                        command
                    }
                    Err(e) => {
                        // The node recovers its sequencer by itself after the commit.
                        tracing::warn!("bootstrapping the new sequencer: {e}");
                        self.after_bootstrap()
                    }
                }
            }
            (Wait::Bootstrapped, Event::Bootstrapped(answer)) => {
                let sequencer = self.chosen().sequencers.first().cloned().unwrap_or_default();
                if let Answer::Refused(_, _, _, e) | Answer::Failed(e) = answer {
                    tracing::warn!("bootstrapping the new sequencer: {sequencer}: {e}");
                }
                self.after_bootstrap()
            }
            (Wait::RoundBackoff, Event::Slept) => self.next_round(),
            (wait, event) => panic!("reconfiguration driver waiting at {wait:?} got {event:?}"),
        }
    }

    fn known(&self) -> &Layout {
        self.known.as_ref().unwrap_or_else(|| panic!("the driver holds no layout yet"))
    }

    fn chosen(&self) -> &Layout {
        self.chosen.as_ref().unwrap_or_else(|| panic!("the driver has no chosen layout"))
    }

    fn joining_unit(&self) -> (String, Option<usize>) {
        match &self.change {
            Change::Add { addr, stripe } => (addr.clone(), *stripe),
            other => panic!("no unit joins with {other}"),
        }
    }

    fn done(&mut self, result: Result<Decided, DoneError>) -> Command {
        self.wait = Wait::Over;
        Command::Done(result)
    }

    /// The newest layout among the answers (at least the one held).
    fn newest(&self, answers: Vec<Answer<Option<Layout>>>) -> Result<Layout, String> {
        newest_of(self.known.clone(), &self.asked, answers)
    }

    /// An attempt starts: a joining unit is enrolled and caught up before
    /// the seal, while appends go on; then only what was appended meanwhile
    /// is copied during the seal. The early copy is best effort: a cluster
    /// that cannot serve its tail now (a sequencer waiting for this very
    /// reconfiguration) gets the whole copy after the seal instead.
    fn begin_attempt(&mut self) -> Command {
        self.resume = None;
        self.sealed = None;
        // A change that does not fit is refused before anything is sealed:
        // the shape of the next layout does not depend on where it starts.
        let start = Position(self.known().segments.last().map_or(0, |s| s.start));
        if let Err(r) = crate::plan::next_layout(self.known(), &self.change, start) {
            return self.done(Err(DoneError::Refused(r)));
        }
        if let Change::Add { addr, .. } = &self.change {
            // Sealed at the current epoch first: no straggler of an older
            // layout can write to it while what it holds is checked.
            self.wait = Wait::Enrolled;
            return Command::Enroll { addr: addr.clone(), layout: self.known().clone() };
        }
        self.seal()
    }

    /// The attempt failed for `why`: back off and try again, or give up.
    fn retry(&mut self, why: String) -> Command {
        self.last = why;
        self.attempt += 1;
        if self.attempt >= self.attempts {
            let why = format!("gave up after {} attempts; last: {}", self.attempts, self.last);
            return self.done(Err(DoneError::Unavailable(why)));
        }
        // Random back-off: competing drivers must not keep outranking each other.
        self.wait = Wait::Backoff;
        Command::Sleep(Duration::from_millis(10 + self.rng.next() % (20 << self.attempt.min(5))))
    }

    fn seal(&mut self) -> Command {
        let known = self.known().clone();
        let mut nodes = known.all_nodes();
        nodes.extend(self.change.joining(&known));
        self.wait = Wait::Sealed;
        self.asked = nodes.clone();
        Command::Seal { epoch: known.epoch + 1, layout: known, nodes }
    }

    fn on_sealed(&mut self, answers: Vec<Answer<SealAnswer>>) -> Command {
        let known = self.known().clone();
        let joining = self.change.joining(&known);
        let sealed = match tally_seal(&known, &joining, &self.asked, answers) {
            Ok(s) => s,
            Err(Sealing::Newer(epoch)) => return self.retry(format!("a node is already at epoch {epoch}")),
            Err(Sealing::Unavailable(why)) => return self.retry(why),
            Err(Sealing::Refused(why)) => return self.done(Err(DoneError::Refused(Refusal::Shape(why)))),
        };
        // Every replica of the new segment must have answered the seal, and
        // the segment starts above all they hold: a replica that missed an
        // earlier seal may hold old writes past that seal's end, and where it
        // is not the head such a write would read as committed without being
        // on the head (the soak found this at seed 501869).
        self.sealed_at = match new_segment_start(&known, &self.change, sealed.end, &sealed.tails) {
            Ok(start) => start,
            Err(why) => return self.retry(why),
        };
        self.sealed = Some(sealed);
        if mutation::active(Mutation::AddBeforeCatchUp) {
            return self.propose();
        }
        if let Change::Add { addr, stripe } = &self.change {
            // What the copy before the seal left: the rest of the segment
            // just sealed, and in every segment the positions no replica held
            // then (a writer holding its token may have written them through
            // the old chain since: seed 8002739). Read under the new epoch
            // (the replicas refuse the old one now).
            let mut layout = known;
            layout.epoch += 1;
            self.wait = Wait::PostCopied;
            return Command::CatchUp {
                layout,
                addr: addr.clone(),
                stripe: *stripe,
                to: CopyTo::At(self.sealed_at),
                from: self.resume.clone().unwrap_or_default(),
            };
        }
        self.propose()
    }

    fn propose(&mut self) -> Command {
        if self.abandon == Some(Abandon::AfterSeal) {
            return self.done(Err(DoneError::Unavailable("abandoned after the seal (test)".into())));
        }
        // Chains where the joining unit holds values its chain decided
        // otherwise: it stays out of those (it holds nothing there it may serve).
        let skip: Vec<(usize, usize)> = self.diverged.iter().copied().collect();
        let proposal = match next_layout_skipping(self.known(), &self.change, self.sealed_at, &skip) {
            Ok(p) => p,
            Err(r) => return self.done(Err(DoneError::Refused(r))),
        };
        let mut proposal = proposal;
        let reason = if self.reason.is_empty() { format!("operator: {}", self.change) } else { self.reason.clone() };
        proposal.record(self.unix_ms, reason);
        // The new primary may have to recover by itself (the driver's
        // bootstrap can fail): it must still start above every position the
        // sealed sequencers handed out or showed as the tail (soak seed
        // 9001389: a client saw tail 166, the next primary started at 54).
        let handed_out = self.sealed.as_ref().map_or(0, |s| s.sequencer_next);
        proposal.tail_floor = proposal.tail_floor.max(handed_out);
        tracing::info!(change = %self.change, epoch = proposal.epoch, ?skip, sealed = %self.sealed_at, "proposing");
        self.proposal = Some(proposal);
        self.round = 1;
        self.rounds = 0;
        self.next_round()
    }

    /// A new Paxos round with a fresh rank.
    fn next_round(&mut self) -> Command {
        if self.rounds >= ROUNDS {
            return self.retry("outranked by other proposers eight times".into());
        }
        self.rounds += 1;
        let known = self.known().clone();
        let proposal = self.proposal.clone().unwrap_or_else(|| panic!("a round without a proposal"));
        let p = Proposer::new(known.layout_servers.clone(), known, proposal, self.round, self.rng.next());
        let message = p.start();
        self.proposer = Some(p);
        self.send(message)
    }

    fn send(&mut self, message: Message) -> Command {
        let base = self.known().clone();
        self.wait = Wait::Votes;
        Command::Paxos { acceptors: base.layout_servers.clone(), base, message }
    }

    fn on_votes(&mut self, votes: Vec<Answer<Option<Vote>>>) -> Command {
        let acceptors = self.known().layout_servers.clone();
        let Some(p) = self.proposer.as_mut() else { panic!("votes without a proposer") };
        let mut errors = Vec::new();
        let mut next = None;
        for (addr, answer) in acceptors.iter().zip(votes) {
            let vote = match answer {
                Answer::Ok(v) => v,
                Answer::Other => None,
                Answer::Refused(_, _, _, e) | Answer::Failed(e) => {
                    errors.push(e);
                    None
                }
            };
            if let Some(n) = vote.and_then(|v| p.on_vote(addr, v)) {
                next = Some(n);
                break;
            }
            if !matches!(p.phase(), Phase::Preparing | Phase::Accepting(_)) {
                break;
            }
        }
        match p.phase().clone() {
            Phase::Chosen(chosen) => self.on_chosen(chosen),
            Phase::Stale(newer) => {
                let why = format!("epoch {} is decided already", newer.epoch);
                if newer.epoch > self.known().epoch {
                    self.known = Some(newer);
                }
                self.retry(why)
            }
            Phase::Outranked(seen) => {
                self.round = seen + 1;
                self.wait = Wait::RoundBackoff;
                Command::Sleep(Duration::from_millis(1 + self.rng.next() % 20))
            }
            Phase::Preparing | Phase::Accepting(_) => match next {
                Some(m) => self.send(m),
                None => self.retry(format!(
                    "no majority of the layout servers {} answered: {}",
                    acceptors.join(","),
                    errors.join("; ")
                )),
            },
        }
    }

    fn on_chosen(&mut self, chosen: Layout) -> Command {
        if self.abandon == Some(Abandon::AfterChoose) {
            return self.done(Err(DoneError::Unavailable("abandoned after the layout was chosen (test)".into())));
        }
        tracing::info!(epoch = chosen.epoch, layout = ?chosen, transfer = ?self.transfer, "layout chosen");
        let mut nodes = chosen.all_nodes();
        for a in self.known().all_nodes() {
            if !nodes.contains(&a) {
                nodes.push(a);
            }
        }
        self.chosen = Some(chosen.clone());
        self.wait = Wait::Committed;
        self.asked = nodes.clone();
        Command::Commit { layout: chosen, nodes }
    }

    fn after_bootstrap(&mut self) -> Command {
        let chosen = self.chosen().clone();
        if Some(&chosen) == self.proposal.as_ref() {
            let decided = Decided {
                layout: chosen,
                before: self.before.clone().unwrap_or_else(|| panic!("no starting layout")),
                sealed_at: self.sealed_at,
                rolled_forward: std::mem::take(&mut self.rolled_forward),
                not_committed: std::mem::take(&mut self.not_committed),
                transfer: std::mem::take(&mut self.transfer),
            };
            return self.done(Ok(decided));
        }
        // Another driver's layout won this epoch: it is committed now; apply
        // ours on top of it.
        tracing::info!(epoch = chosen.epoch, "another layout was chosen first; trying again on top of it");
        self.rolled_forward.push(Epoch(chosen.epoch));
        self.known = Some(chosen);
        self.retry("another layout was chosen for the epoch".into())
    }
}

/// The newest layout among `addrs`' answers, of `floor`'s cluster, at least `floor`.
pub fn newest_of(
    floor: Option<Layout>,
    addrs: &[String],
    answers: Vec<Answer<Option<Layout>>>,
) -> Result<Layout, String> {
    let mut best = floor;
    let mut errors = Vec::new();
    for (addr, answer) in addrs.iter().zip(answers) {
        match answer {
            Answer::Ok(Some(l)) => {
                if best.as_ref().is_some_and(|b| b.cluster_id != l.cluster_id) {
                    continue;
                }
                if best.as_ref().is_none_or(|b| l.epoch > b.epoch) {
                    best = Some(l);
                }
            }
            Answer::Ok(None) | Answer::Other => errors.push(format!("{addr}: no layout in its answer")),
            Answer::Refused(_, _, _, e) | Answer::Failed(e) => errors.push(e),
        }
    }
    best.ok_or_else(|| format!("no node gave its layout: {}", errors.join("; ")))
}

/// Decides a seal from its answers: where the active segment ends (above
/// whatever a joining node holds), or why it cannot be sealed.
fn tally_seal(
    layout: &Layout,
    joining: &[String],
    nodes: &[String],
    answers: Vec<Answer<SealAnswer>>,
) -> Result<Sealed, Sealing> {
    let Some(active) = layout.segments.last() else {
        return Err(Sealing::Unavailable("the layout has no segment".into()));
    };
    let next = layout.epoch + 1;
    let mut floor = 0;
    let mut sequencer_next = 0;
    let mut tally = SealTally::new(active.clone());
    let mut errors = Vec::new();
    let mut tails = BTreeMap::new();
    for (addr, answer) in nodes.iter().zip(answers) {
        let joins = joining.contains(addr);
        if let Answer::Ok(s) = &answer {
            sequencer_next = sequencer_next.max(s.sequencer_next.unwrap_or(0));
            tails.insert(addr.clone(), s.tail);
        }
        match answer {
            Answer::Ok(s) if joins => floor = floor.max(s.tail),
            Answer::Ok(s) => tally.sealed(addr, s.tail),
            Answer::Other => errors.push(format!("{addr} answered a seal with something else")),
            // A fresh server holds nothing: it is enrolled by the commit.
            Answer::Refused(ErrorCode::NotBootstrapped, ..) if joins => {
                tails.insert(addr.clone(), 0);
            }
            Answer::Refused(_, _, m, _) if joins => return Err(Sealing::Refused(format!("{addr} cannot join: {m}"))),
            Answer::Failed(e) if joins => return Err(Sealing::Unavailable(format!("{addr} cannot join: {e}"))),
            Answer::Refused(ErrorCode::WrongEpoch, epoch, ..) if epoch > next => return Err(Sealing::Newer(epoch)),
            Answer::Refused(_, _, _, e) | Answer::Failed(e) => errors.push(e),
        }
    }
    tally.end().map(|end| Sealed { end: end.max(Position(floor)), sequencer_next, tails }).ok_or_else(|| {
        let chains: Vec<String> = tally.unsealed_chains().iter().map(|c| c.join(",")).collect();
        Sealing::Unavailable(format!(
            "no replica of chain(s) [{}] could be sealed ({})",
            chains.join("] ["),
            errors.join("; ")
        ))
    })
}

/// The bootstrap of `layout`'s primary sequencer (see
/// [`crate::tails::sequencer_start`]) from the answers of `units`, at least
/// `floor`, what the sealed sequencers had handed out, so that the tail
/// never goes back.
pub fn bootstrap_state(
    layout: &Layout,
    floor: u64,
    units: &[String],
    answers: Vec<Answer<TailAnswer>>,
) -> Result<Command, String> {
    let sequencer = layout.sequencers.first().ok_or("the layout names no sequencer")?.clone();
    let answers: Vec<(String, Option<TailAnswer>)> = units
        .iter()
        .cloned()
        .zip(answers)
        .map(|(addr, a)| match a {
            Answer::Ok(t) => (addr, Some(t)),
            _ => (addr, None),
        })
        .collect();
    let start = crate::tails::sequencer_start(layout, floor, &answers, None)?;
    Ok(Command::Bootstrap {
        layout: layout.clone(),
        sequencer,
        tail: start.tail,
        streams: start.streams.into_iter().collect(),
    })
}

/// The random numbers of one reconfiguration (rank ids, back-off): xorshift64
/// from a seed, or from the clock and the process.
struct Random(u64);

impl Random {
    fn new(seed: u64) -> Random {
        if seed != 0 {
            // splitmix64's finalizer: distinct seeds give distinct states
            // (two drivers must never draw the same rank ids).
            let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            return Random((z ^ (z >> 31)).max(1));
        }
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
        );
        Random(h.finish() | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[cfg(test)]
mod tests;
