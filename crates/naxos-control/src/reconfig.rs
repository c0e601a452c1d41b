//! The reconfiguration runtime: seal, agree, recover, as DESIGN §2 says. It
//! does the I/O around the pure parts (`seal::SealTally` decides when the
//! seal is enough and where the segment ends, `plan::next_layout` makes the
//! next layout, `paxos::Proposer` gets it chosen):
//!
//! 1. learn the newest layout from every node it can reach;
//! 2. seal every node of that layout at the next epoch (one replica of each
//!    chain of the active segment is enough) and take the end of the segment;
//! 3. propose the next layout to the layout servers; if another layout was
//!    chosen for that epoch (a racing driver, or one that crashed between
//!    choosing and committing), commit that one and start again on top of it;
//! 4. commit the chosen layout to every node;
//! 5. bootstrap the new primary sequencer with the segment's end and the
//!    stream tails gathered from the log units of every chain.
//!
//! Every wait is bounded, and a failure says what it waited for.

use crate::paxos::{Message, Phase, Proposer, Vote};
use crate::plan::{next_layout_skipping, Change, Refusal};
use crate::seal::SealTally;
use naxos_client::loglet::{self, CatchUp, Throttle};
use naxos_wire::net::Net;
use naxos_wire::proto::{
    self, request, response, CommitLayout, LayoutAccept, LayoutPrepare, Request, Seal, SeqBootstrap, UnitTail,
};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Epoch, ErrorCode, Layout, Position, StreamId};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How a reconfiguration is run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The longest wait for one answer (default 1 s).
    pub timeout_call: Duration,
    /// How many times the whole reconfiguration is tried before it fails
    /// (default 8): each try starts again from the newest layout.
    pub attempts: u32,
    /// The most payload bytes per second a state transfer sends (default
    /// 256 MiB/s; 0 for no limit), so that it does not starve appends.
    pub transfer_bytes_per_s_max: u64,
    /// For tests: stop as a driver that dies at this step would (the
    /// simulator checks that the cluster recovers from it).
    pub abandon: Option<Abandon>,
    /// Seeds the random parts (Paxos rank ids, back-off); 0 takes one from
    /// the clock. The simulator passes its own, so that a seed replays.
    pub seed: u64,
}

/// Where a test makes a driver stop, as if it had died there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abandon {
    /// After sealing, before proposing.
    AfterSeal,
    /// After the layout was chosen, before anyone was told.
    AfterChoose,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout_call: Duration::from_secs(1),
            attempts: 8,
            transfer_bytes_per_s_max: 256 << 20,
            abandon: None,
            seed: 0,
        }
    }
}

/// How long one request of a state transfer may take (a batch of up to
/// 8 MiB and its group commit); the copy as a whole has no time limit.
const TRANSFER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

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

/// What a reconfiguration did.
#[derive(Clone, Debug)]
pub struct Report {
    /// The layout it left the cluster in.
    pub layout: Layout,
    /// The layout it started from.
    pub before: Layout,
    /// Where the sealed segment ended.
    pub sealed_at: Position,
    /// Layouts of other drivers that were chosen first and committed on the
    /// way (the change was then applied on top of them).
    pub rolled_forward: Vec<Epoch>,
    /// Nodes that did not take the new layout (they learn it later, at their
    /// next request of the new epoch or restart).
    pub not_committed: Vec<String>,
    /// When the seal began.
    pub seal_started: Instant,
    /// Time from the seal to the new sequencer's bootstrap.
    pub seal_to_ready: Duration,
    /// What the state transfer copied (for `Change::Add`).
    pub transfer: CatchUp,
    /// How long the state transfer took, before and during the seal.
    pub transfer_time: Duration,
}

/// Runs one reconfiguration: applies `change` to the cluster that `seeds`
/// belong to, and returns the new layout.
pub async fn reconfigure(
    net: Arc<dyn Net>,
    seeds: &[String],
    change: &Change,
    options: &Options,
) -> Result<Report, Error> {
    let pool_net = net.clone();
    let pool = Pool::new(net, rpc::Options { timeout_call: options.timeout_call, ..Default::default() });
    let mut known = newest_layout(&pool, seeds, None).await?;
    let before = known.clone();
    let mut rng = Random::new(options.seed);
    let mut rolled_forward = Vec::new();
    let mut last = String::new();
    let mut transfer = CatchUp::default();
    let mut diverged: std::collections::BTreeSet<(usize, usize)> = Default::default();
    let mut transfer_time = Duration::ZERO;
    let mut throttle = Throttle::new(options.transfer_bytes_per_s_max);
    // The copy runs on connections of its own, apart from the seal and the votes.
    let copier = match change {
        Change::Add { .. } => {
            let mut config = naxos_client::Config::new(seeds.iter().cloned());
            config.net = pool_net.clone();
            config.rpc.timeout_call = TRANSFER_CALL_TIMEOUT;
            config.batches_in_flight = 0;
            Some(naxos_client::Client::connect(config).await.map_err(|e| Error::Unavailable(e.to_string()))?)
        }
        _ => None,
    };
    for attempt in 0..options.attempts.max(1) {
        if attempt > 0 {
            // Random back-off: competing drivers must not keep outranking each other.
            tokio::time::sleep(Duration::from_millis(10 + rng.next() % (20 << attempt.min(5)))).await;
            let mut addrs = seeds.to_vec();
            addrs.extend(known.all_nodes());
            known = newest_layout(&pool, &addrs, Some(known)).await?;
        }
        // A joining log unit is caught up before the seal, while appends go
        // on; then only what was appended meanwhile is copied during the
        // seal. The early copy is best effort: a cluster that cannot serve
        // its tail now (a sequencer waiting for this very reconfiguration)
        // gets the whole copy after the seal instead.
        let mut precopied = false;
        if let (Change::Add { addr, stripe }, Some(copier)) = (change, &copier) {
            // Sealed at the current epoch first: no straggler of an older
            // layout can write to it while what it holds is checked.
            match enroll(&pool, &known, addr).await {
                Ok(()) => {}
                Err(Error::Unavailable(why)) => {
                    last = why;
                    continue;
                }
                Err(e) => return Err(e),
            }
            if let Err(e) = seal_one(&pool, &known, addr).await {
                last = e.to_string();
                continue;
            }
            let began = Instant::now();
            // Copy requests carry the next epoch: the replicas accept it before
            // the seal and after it (a try that failed may have sealed them).
            let mut ahead = known.clone();
            ahead.epoch += 1;
            let copied = match copier.tail().await {
                Ok(tail) => catch_up(copier, &ahead, addr, *stripe, tail, None, &mut throttle, &mut diverged).await,
                Err(e) => Err(e),
            };
            transfer_time += began.elapsed();
            match copied {
                Ok(c) => {
                    transfer += c;
                    precopied = true;
                }
                Err(e) => tracing::info!("catching {addr} up before the seal: {e}; copying after it"),
            }
        }
        let started = Instant::now();
        let (sealed_at, sequencer_next, tails) = match seal(&pool, &known, &change.joining(&known)).await {
            Ok(s) => (s.end, s.sequencer_next, s.tails),
            Err(Sealing::Newer(epoch)) => {
                last = format!("a node is already at epoch {epoch}");
                continue;
            }
            Err(Sealing::Unavailable(why)) => {
                last = why;
                continue;
            }
            Err(Sealing::Refused(why)) => return Err(Error::Refused(Refusal::Shape(why))),
        };
        // Every replica of the new segment must have answered the seal, and
        // the segment starts above all they hold: a replica that missed an
        // earlier seal may hold old writes past that seal's end, and where it
        // is not the head such a write would read as committed without being
        // on the head (the soak found this at seed 501869).
        let sealed_at = match crate::seal::new_segment_start(&known, change, sealed_at, &tails) {
            Ok(start) => start,
            Err(why) => {
                last = why;
                continue;
            }
        };
        if let (Change::Add { addr, stripe }, Some(copier)) = (change, &copier) {
            // The rest of the segment just sealed, read under the new epoch
            // (its replicas refuse the old one now).
            let began = Instant::now();
            let mut sealed = known.clone();
            sealed.epoch += 1;
            let only = precopied.then(|| sealed.segments.len() - 1);
            let copied = catch_up(copier, &sealed, addr, *stripe, sealed_at, only, &mut throttle, &mut diverged).await;
            transfer_time += began.elapsed();
            match copied {
                Ok(c) => transfer += c,
                Err(e) => {
                    last = format!("catching {addr} up after the seal: {e}");
                    continue;
                }
            }
        }
        if options.abandon == Some(Abandon::AfterSeal) {
            return Err(Error::Unavailable("abandoned after the seal (test)".into()));
        }
        // Chains where the joining unit holds values its chain decided
        // otherwise: it stays out of those (it holds nothing there it may serve).
        let skip: Vec<(usize, usize)> = diverged.iter().copied().collect();
        let proposal = next_layout_skipping(&known, change, sealed_at, &skip)?;
        tracing::info!(%change, epoch = proposal.epoch, ?skip, sealed = %sealed_at, "proposing");
        match propose(&pool, &known, proposal.clone(), &mut rng).await {
            Proposal::Chosen(_) if options.abandon == Some(Abandon::AfterChoose) => {
                return Err(Error::Unavailable("abandoned after the layout was chosen (test)".into()));
            }
            Proposal::Chosen(chosen) => {
                tracing::info!(epoch = chosen.epoch, layout = ?chosen, transfer = ?transfer, "layout chosen");
                let not_committed = commit(&pool, &known, &chosen).await;
                if let Err(e) = bootstrap_sequencer(&pool, &chosen, sequencer_next).await {
                    // The node recovers its sequencer by itself after the commit.
                    tracing::warn!("bootstrapping the new sequencer: {e}");
                }
                if chosen == proposal {
                    return Ok(Report {
                        layout: chosen,
                        before,
                        sealed_at,
                        rolled_forward,
                        not_committed,
                        seal_started: started,
                        seal_to_ready: started.elapsed(),
                        transfer,
                        transfer_time,
                    });
                }
                // Another driver's layout won this epoch: it is committed
                // now; apply ours on top of it.
                tracing::info!(epoch = chosen.epoch, "another layout was chosen first; trying again on top of it");
                rolled_forward.push(Epoch(chosen.epoch));
                known = chosen;
                last = "another layout was chosen for the epoch".into();
            }
            Proposal::Stale(newer) => {
                last = format!("epoch {} is decided already", newer.epoch);
                if newer.epoch > known.epoch {
                    known = newer;
                }
            }
            Proposal::Failed(why) => last = why,
        }
    }
    Err(Error::Unavailable(format!("gave up after {} attempts; last: {last}", options.attempts.max(1))))
}

/// The random numbers of one reconfiguration (rank ids, back-off): xorshift64
/// from the options' seed, or from the clock and the process.
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

fn request(layout: &Layout, body: request::Body) -> Request {
    Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body) }
}

/// Sends `body` to every one of `addrs` at once; each answer, in order.
async fn call_all(
    pool: &Pool,
    layout: &Layout,
    addrs: &[String],
    body: request::Body,
) -> Vec<Result<response::Body, rpc::Error>> {
    futures::future::join_all(addrs.iter().map(|a| pool.call(a, request(layout, body.clone())))).await
}

/// The newest layout any of `addrs` holds (at least `floor`).
pub async fn newest_layout(pool: &Pool, addrs: &[String], floor: Option<Layout>) -> Result<Layout, Error> {
    let get = Request {
        id: 0,
        cluster_id: String::new(),
        epoch: 0,
        body: Some(request::Body::GetLayout(Default::default())),
    };
    let answers = futures::future::join_all(addrs.iter().map(|a| pool.call(a, get.clone()))).await;
    let mut best = floor;
    let mut errors = Vec::new();
    for (addr, answer) in addrs.iter().zip(answers) {
        match answer {
            Ok(response::Body::Layout(proto::LayoutOk { layout: Some(l) })) => {
                if best.as_ref().is_some_and(|b| b.cluster_id != l.cluster_id) {
                    continue;
                }
                if best.as_ref().is_none_or(|b| l.epoch > b.epoch) {
                    best = Some(l);
                }
            }
            Ok(_) => errors.push(format!("{addr}: no layout in its answer")),
            Err(e) => errors.push(e.to_string()),
        }
    }
    best.ok_or_else(|| Error::Unavailable(format!("no node gave its layout: {}", errors.join("; "))))
}

/// What a seal found.
struct Sealed {
    /// Where the active segment ends.
    end: Position,
    /// The highest first-position-not-handed-out of the sealed sequencers.
    sequencer_next: u64,
    /// The log unit tail of every node that answered the seal (a fresh
    /// joining server counts with 0: it holds nothing).
    tails: BTreeMap<String, u64>,
}

enum Sealing {
    /// A node is sealed beyond the next epoch: the layout we hold is old.
    Newer(u64),
    /// A joining node cannot join (it belongs to another cluster, say).
    Refused(String),
    Unavailable(String),
}

/// Seals every node of `layout` and the `joining` ones at the next epoch;
/// returns where the active segment ends (above whatever a joining node holds).
async fn seal(pool: &Pool, layout: &Layout, joining: &[String]) -> Result<Sealed, Sealing> {
    let Some(active) = layout.segments.last() else {
        return Err(Sealing::Unavailable("the layout has no segment".into()));
    };
    let mut nodes = layout.all_nodes();
    nodes.extend(joining.iter().cloned());
    let mut floor = 0;
    let mut sequencer_next = 0;
    let next = layout.epoch + 1;
    let answers = call_all(pool, layout, &nodes, request::Body::Seal(Seal { epoch: next })).await;
    let mut tally = SealTally::new(active.clone());
    let mut errors = Vec::new();
    let mut tails = BTreeMap::new();
    for (addr, answer) in nodes.iter().zip(answers) {
        let joins = joining.contains(addr);
        if let Ok(response::Body::Seal(s)) = &answer {
            sequencer_next = sequencer_next.max(s.sequencer_next.unwrap_or(0));
            tails.insert(addr.clone(), s.tail);
        }
        match answer {
            Ok(response::Body::Seal(s)) if joins => floor = floor.max(s.tail),
            Ok(response::Body::Seal(s)) => tally.sealed(addr, s.tail),
            Ok(_) => errors.push(format!("{addr} answered a seal with something else")),
            // A fresh server holds nothing: it is enrolled by the commit.
            Err(rpc::Error::Server { error, .. }) if joins && error.code == ErrorCode::NotBootstrapped => {
                tails.insert(addr.clone(), 0);
            }
            Err(rpc::Error::Server { error, .. }) if joins => {
                return Err(Sealing::Refused(format!("{addr} cannot join: {}", error.message)));
            }
            Err(e) if joins => return Err(Sealing::Unavailable(format!("{addr} cannot join: {e}"))),
            Err(rpc::Error::Server { error, .. }) if error.code == ErrorCode::WrongEpoch && error.epoch.0 > next => {
                return Err(Sealing::Newer(error.epoch.0));
            }
            Err(e) => errors.push(e.to_string()),
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

enum Proposal {
    Chosen(Layout),
    Stale(Layout),
    Failed(String),
}

/// Gets a layout chosen for `base.epoch + 1` (ours or one accepted before).
async fn propose(pool: &Pool, base: &Layout, proposal: Layout, rng: &mut Random) -> Proposal {
    let acceptors = base.layout_servers.clone();
    let mut round = 1;
    for _ in 0..8 {
        let mut p = Proposer::new(acceptors.clone(), base.clone(), proposal.clone(), round, rng.next());
        let mut message = Some(p.start());
        while let Some(m) = message.take() {
            let body = match &m {
                Message::Prepare { ballot, base } => request::Body::LayoutPrepare(LayoutPrepare {
                    epoch: ballot.epoch.0,
                    rank: Some(ballot.rank.to_proto()),
                    base: Some(Box::new(base.clone())),
                }),
                Message::Accept { rank, layout, base } => request::Body::LayoutAccept(LayoutAccept {
                    rank: Some(rank.to_proto()),
                    layout: Some(Box::new(layout.clone())),
                    base: Some(Box::new(base.clone())),
                }),
            };
            let answers = call_all(pool, base, &acceptors, body).await;
            let mut errors = Vec::new();
            for (addr, answer) in acceptors.iter().zip(answers) {
                let vote = match answer {
                    Ok(response::Body::LayoutVote(v)) => Vote::from_proto(v),
                    Ok(_) => None,
                    Err(e) => {
                        errors.push(e.to_string());
                        None
                    }
                };
                if let Some(next) = vote.and_then(|v| p.on_vote(addr, v)) {
                    message = Some(next);
                    break;
                }
                if !matches!(p.phase(), Phase::Preparing | Phase::Accepting(_)) {
                    break;
                }
            }
            match p.phase() {
                Phase::Chosen(l) => return Proposal::Chosen(l.clone()),
                Phase::Stale(l) => return Proposal::Stale(l.clone()),
                Phase::Outranked(seen) => {
                    round = seen + 1;
                    tokio::time::sleep(Duration::from_millis(1 + rng.next() % 20)).await;
                }
                Phase::Preparing | Phase::Accepting(_) if message.is_none() => {
                    return Proposal::Failed(format!(
                        "no majority of the layout servers {} answered: {}",
                        acceptors.join(","),
                        errors.join("; ")
                    ));
                }
                _ => {}
            }
        }
    }
    Proposal::Failed("outranked by other proposers eight times".into())
}

/// Makes `addr` a member of the cluster of `layout` before it is caught up:
/// a server that was never bootstrapped takes the layout (it is in no chain
/// yet); one of another cluster is refused.
async fn enroll(pool: &Pool, layout: &Layout, addr: &str) -> Result<(), Error> {
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(layout.clone()) });
    match pool.call(addr, request(layout, body)).await {
        Ok(_) => Ok(()),
        Err(rpc::Error::Server { error, .. })
            if matches!(error.code, ErrorCode::WrongCluster | ErrorCode::AlreadyBootstrapped) =>
        {
            Err(Error::Refused(Refusal::Shape(format!("{addr} cannot join: {}", error.message))))
        }
        Err(e) => Err(Error::Unavailable(format!("{addr} cannot join: {e}"))),
    }
}

/// Catches `addr` up on every segment of `layout` (or only `only`), below
/// `to`; adds to `diverged` the (segment, stripe) chains it must stay out of.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    copier: &naxos_client::Client,
    layout: &Layout,
    addr: &str,
    stripe: Option<usize>,
    to: Position,
    only: Option<usize>,
    throttle: &mut Throttle,
    diverged: &mut std::collections::BTreeSet<(usize, usize)>,
) -> Result<CatchUp, naxos_client::Error> {
    let layout = Arc::new(layout.clone());
    let mut done = CatchUp::default();
    for index in 0..layout.segments.len() {
        if only.is_some_and(|o| o != index) {
            continue;
        }
        if stripe.is_some_and(|s| s >= layout.segments[index].stripes.len()) {
            continue;
        }
        let l = loglet::of_segment(&layout, index)?;
        let c = l.catch_up(copier, addr, stripe, to, throttle).await?;
        diverged.extend(c.diverged_stripes.iter().map(|&s| (index, s)));
        done += c;
    }
    Ok(done)
}

/// Seals `addr` at `layout`'s epoch (a unit about to join).
async fn seal_one(pool: &Pool, layout: &Layout, addr: &str) -> Result<(), Error> {
    match pool.call(addr, request(layout, request::Body::Seal(Seal { epoch: layout.epoch }))).await {
        Ok(_) => Ok(()),
        Err(rpc::Error::Server { error, .. }) if error.code == ErrorCode::WrongEpoch => Ok(()), // sealed later already
        Err(e) => Err(Error::Unavailable(format!("sealing {addr} before its catch-up: {e}"))),
    }
}

/// Commits `chosen` to every node of it and of `before`; returns those that did not take it.
async fn commit(pool: &Pool, before: &Layout, chosen: &Layout) -> Vec<String> {
    let mut nodes = chosen.all_nodes();
    for a in before.all_nodes() {
        if !nodes.contains(&a) {
            nodes.push(a);
        }
    }
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(chosen.clone()) });
    let answers = call_all(pool, chosen, &nodes, body).await;
    nodes.into_iter().zip(answers).filter(|(_, a)| a.is_err()).map(|(n, _)| n).collect()
}

/// Gives the primary sequencer of `layout` its starting state: the start of
/// the active segment (at least `floor`, what the sealed sequencers had
/// handed out, so the tail never goes back), and the last position of every
/// stream, read from the log units of every chain (never from one unit
/// alone: CorfuDB #2715).
pub async fn bootstrap_sequencer(pool: &Pool, layout: &Layout, floor: u64) -> Result<(), String> {
    let sequencer = layout.sequencers.first().ok_or("the layout names no sequencer")?;
    let units = layout.log_units();
    let body = request::Body::UnitTail(UnitTail { streams: vec![], all_streams: true });
    let answers = call_all(pool, layout, &units, body).await;
    let mut tail = layout.segments.last().map_or(0, |s| s.start).max(floor);
    let mut streams: BTreeMap<StreamId, u64> = BTreeMap::new();
    let mut answered = Vec::new();
    for (addr, answer) in units.iter().zip(answers) {
        if let Ok(response::Body::Tail(t)) = answer {
            tail = tail.max(t.tail).max(t.token_ceiling);
            for st in t.streams {
                if let Some(s) = StreamId::from_slice(&st.stream) {
                    let e = streams.entry(s).or_insert(st.last);
                    *e = (*e).max(st.last);
                }
            }
            answered.push(addr.clone());
        }
    }
    // Every chain must have answered through one replica at least: an
    // acknowledged entry is on every replica of its chain.
    for seg in &layout.segments {
        for stripe in &seg.stripes {
            if !stripe.chain.iter().any(|a| answered.contains(a)) {
                return Err(format!("no replica of chain {} gave its stream tails", stripe.chain.join(",")));
            }
        }
    }
    let streams = streams
        .into_iter()
        .map(|(s, last)| proto::StreamTail { stream: bytes::Bytes::copy_from_slice(&s.to_bytes()), last })
        .collect();
    match pool.call(sequencer, request(layout, request::Body::SeqBootstrap(SeqBootstrap { tail, streams }))).await {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("{sequencer}: {e}")),
    }
}
