//! The reconfiguration runtime: it runs the commands of the pure
//! [`Driver`](crate::driver::Driver) against the cluster (seal, state
//! transfer, layout Paxos, commit, sequencer bootstrap) and brings their
//! answers back to it as events. What the steps are and what every answer
//! means is the driver's; here are the requests, the fan-out and the timings.
//! Every wait is bounded (one call: `timeout_call`; one copy request: 30 s).

use crate::driver::{Answer, Command, CopyTo, Decided, Driver, Event, SealAnswer, TailAnswer};
use crate::paxos::{Message, Vote};
use crate::plan::Change;
use naxos_client::loglet::{self, CatchUp, Extras, Throttle};
use naxos_wire::net::Net;
use naxos_wire::proto::{
    self, request, response, CommitLayout, LayoutAccept, LayoutPrepare, Request, Seal, SeqBootstrap, UnitTail,
};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Layout, Position, StreamId};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::driver::{Abandon, Error};
pub use naxos_client::loglet::Progress;

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
    /// Why the change is made, for the layout's history (empty: "operator:
    /// <change>").
    pub reason: String,
    /// The wall clock, in milliseconds since the Unix epoch, for the history
    /// (the simulator passes one that reads 0, so that a seed replays).
    pub clock: fn() -> u64,
    /// Where a state transfer reports how far it has come (the manager's
    /// status shows it).
    pub progress: Option<Arc<loglet::Progress>>,
    /// Nodes not to ask at all, as if they had failed at once: those the
    /// manager found dead. A paused node keeps its connections open, so
    /// every request to it would cost a whole `timeout_call`.
    pub skip: Vec<String>,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC), as the
/// layout's history is shown.
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

impl Default for Options {
    fn default() -> Self {
        Options {
            timeout_call: Duration::from_secs(1),
            attempts: 8,
            transfer_bytes_per_s_max: 256 << 20,
            abandon: None,
            seed: 0,
            reason: String::new(),
            clock: unix_ms,
            progress: None,
            skip: Vec::new(),
        }
    }
}

/// How long one request of a state transfer may take (a batch of up to
/// 8 MiB and its group commit); the copy as a whole has no time limit.
const TRANSFER_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// What a reconfiguration did: what the driver decided (reachable through
/// `Deref`: `report.layout`, `report.sealed_at`, ...) and how long it took.
#[derive(Clone, Debug)]
pub struct Report {
    /// The layout, the seal's end, the roll-forwards, the nodes not told,
    /// and what a state transfer copied.
    pub decided: Decided,
    /// When the seal began.
    pub seal_started: Instant,
    /// Time from the seal to the new sequencer's bootstrap.
    pub seal_to_ready: Duration,
    /// How long the state transfer took, before and during the seal.
    pub transfer_time: Duration,
}

impl std::ops::Deref for Report {
    type Target = Decided;

    fn deref(&self) -> &Decided {
        &self.decided
    }
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
    let calls = Calls { pool: &pool, skip: &options.skip };
    let mut driver = Driver::new(seeds.to_vec(), change.clone(), options.attempts, options.abandon, options.seed)
        .with_reason(options.reason.clone(), (options.clock)());
    let mut throttle = Throttle::new(options.transfer_bytes_per_s_max);
    if let Some(p) = &options.progress {
        throttle = throttle.with_progress(p.clone());
    }
    // The copy runs on connections of its own, apart from the seal and the
    // votes; it connects when the first copy (or enrollment) is due.
    let mut copier: Option<naxos_client::Client> = None;
    let mut seal_started = Instant::now();
    let mut transfer_time = Duration::ZERO;
    let mut command = driver.start();
    loop {
        let event = match command {
            Command::GetLayouts { addrs } => Event::Layouts(get_layouts(calls, &addrs).await),
            Command::Enroll { addr, layout } => {
                if copier.is_none() {
                    copier = Some(connect_copier(&pool_net, seeds).await?);
                }
                let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(layout.clone())) });
                Event::Enrolled(answer(calls.call(&addr, request(&layout, body)).await, |_| Some(())))
            }
            Command::SealOne { addr, layout } => {
                let body = request::Body::Seal(Seal { epoch: layout.epoch });
                Event::SealedOne(answer(calls.call(&addr, request(&layout, body)).await, |_| Some(())))
            }
            Command::CatchUp { layout, addr, stripe, to, from } => {
                if copier.is_none() {
                    copier = Some(connect_copier(&pool_net, seeds).await?);
                }
                let Some(copier) = copier.as_ref() else { unreachable!("connected just above") };
                let began = Instant::now();
                let mut diverged = Vec::new();
                let mut resume = Vec::new();
                // Before the seal the live sequencer never counted a value
                // the joining unit holds and its chain lacks: such values
                // are decided only by the pass after the seal.
                let (to, extras) = match to {
                    CopyTo::At(p) => (Ok(p), Extras::Settle),
                    CopyTo::Tail => (copier.tail().await, Extras::Defer),
                };
                let result = match to {
                    Ok(to) => {
                        let span = Span { from: &from, to, extras };
                        catch_up(copier, &layout, &addr, stripe, span, &mut throttle, &mut diverged, &mut resume).await
                    }
                    Err(e) => Err(e),
                };
                transfer_time += began.elapsed();
                Event::Copied { result: result.map_err(|e| e.to_string()), diverged, resume }
            }
            Command::Seal { layout, nodes, epoch } => {
                seal_started = Instant::now();
                let answers = call_all(calls, &layout, &nodes, request::Body::Seal(Seal { epoch })).await;
                Event::Sealed(
                    answers
                        .into_iter()
                        .map(|a| {
                            answer(a, |b| match b {
                                response::Body::Seal(s) => {
                                    Some(SealAnswer { tail: s.tail, sequencer_next: s.sequencer_next })
                                }
                                _ => None,
                            })
                        })
                        .collect(),
                )
            }
            Command::Paxos { base, acceptors, message } => {
                let body = match message {
                    Message::Prepare { ballot, base } => request::Body::LayoutPrepare(LayoutPrepare {
                        epoch: ballot.epoch.0,
                        rank: Some(ballot.rank.to_proto()),
                        base: Some(Box::new(base)),
                    }),
                    Message::Accept { rank, layout, base } => request::Body::LayoutAccept(LayoutAccept {
                        rank: Some(rank.to_proto()),
                        layout: Some(Box::new(layout)),
                        base: Some(Box::new(base)),
                    }),
                };
                let answers = call_all(calls, &base, &acceptors, body).await;
                Event::Votes(
                    answers
                        .into_iter()
                        .map(|a| {
                            answer(a, |b| match b {
                                response::Body::LayoutVote(v) => Some(Vote::from_proto(v)),
                                _ => None,
                            })
                        })
                        .collect(),
                )
            }
            Command::Commit { layout, nodes } => {
                let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(layout.clone())) });
                let answers = call_all(calls, &layout, &nodes, body).await;
                Event::Committed(answers.iter().map(|a| a.is_ok()).collect())
            }
            Command::UnitTails { layout, units } => Event::UnitTails(unit_tails(calls, &layout, &units).await),
            Command::Bootstrap { layout, sequencer, tail, streams } => {
                let body = bootstrap_body(tail, streams);
                Event::Bootstrapped(answer(calls.call(&sequencer, request(&layout, body)).await, |_| Some(())))
            }
            Command::Sleep(d) => {
                tokio::time::sleep(d).await;
                Event::Slept
            }
            Command::Done(result) => {
                return Ok(Report {
                    decided: result?,
                    seal_started,
                    seal_to_ready: seal_started.elapsed(),
                    transfer_time,
                });
            }
        };
        command = driver.on(event);
    }
}

/// A client for the state transfer, with long calls and no batching.
async fn connect_copier(net: &Arc<dyn Net>, seeds: &[String]) -> Result<naxos_client::Client, Error> {
    let mut config = naxos_client::Config::new(seeds.iter().cloned());
    config.net = net.clone();
    config.rpc.timeout_call = TRANSFER_CALL_TIMEOUT;
    config.batches_in_flight = 0;
    naxos_client::Client::connect(config).await.map_err(|e| Error::Unavailable(e.to_string()))
}

/// One answer, as the driver reads it: `ok` picks what it asked for.
fn answer<T>(a: Result<response::Body, rpc::Error>, ok: impl FnOnce(response::Body) -> Option<T>) -> Answer<T> {
    match a {
        Ok(body) => ok(body).map_or(Answer::Other, Answer::Ok),
        Err(e) => match &e {
            rpc::Error::Server { error, .. } => {
                Answer::Refused(error.code, error.epoch.0, error.message.clone(), e.to_string())
            }
            _ => Answer::Failed(e.to_string()),
        },
    }
}

/// The pool, minus the nodes the options say not to ask.
#[derive(Clone, Copy)]
struct Calls<'a> {
    pool: &'a Pool,
    skip: &'a [String],
}

impl Calls<'_> {
    async fn call(&self, addr: &str, req: Request) -> Result<response::Body, rpc::Error> {
        if self.skip.iter().any(|s| s == addr) {
            let source = std::io::Error::other("found dead by the manager; not asked");
            return Err(rpc::Error::Connect { addr: addr.to_string(), source });
        }
        self.pool.call(addr, req).await
    }
}

fn request(layout: &Layout, body: request::Body) -> Request {
    Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body) }
}

/// Sends `body` to every one of `addrs` at once; each answer, in order.
async fn call_all(
    calls: Calls<'_>,
    layout: &Layout,
    addrs: &[String],
    body: request::Body,
) -> Vec<Result<response::Body, rpc::Error>> {
    futures::future::join_all(addrs.iter().map(|a| calls.call(a, request(layout, body.clone())))).await
}

/// Every one of `addrs`' layout, in order.
async fn get_layouts(calls: Calls<'_>, addrs: &[String]) -> Vec<Answer<Option<Layout>>> {
    let get = Request {
        id: 0,
        cluster_id: String::new(),
        epoch: 0,
        body: Some(request::Body::GetLayout(Default::default())),
    };
    let answers = futures::future::join_all(addrs.iter().map(|a| calls.call(a, get.clone()))).await;
    answers
        .into_iter()
        .map(|a| {
            answer(a, |b| match b {
                response::Body::Layout(proto::LayoutOk { layout }) => Some(layout),
                _ => None,
            })
        })
        .collect()
}

/// The newest layout any of `addrs` holds (at least `floor`).
pub async fn newest_layout(pool: &Pool, addrs: &[String], floor: Option<Layout>) -> Result<Layout, Error> {
    let calls = Calls { pool, skip: &[] };
    crate::driver::newest_of(floor, addrs, get_layouts(calls, addrs).await).map_err(Error::Unavailable)
}

/// Every one of `units`' tails, in order.
async fn unit_tails(calls: Calls<'_>, layout: &Layout, units: &[String]) -> Vec<Answer<TailAnswer>> {
    let body = request::Body::UnitTail(UnitTail { streams: vec![], all_streams: true });
    let answers = call_all(calls, layout, units, body).await;
    answers
        .into_iter()
        .map(|a| {
            answer(a, |b| match b {
                response::Body::Tail(t) => Some(TailAnswer {
                    tail: t.tail,
                    token_ceiling: t.token_ceiling,
                    token_ceiling_by: t.token_ceiling_by,
                    streams: t
                        .streams
                        .into_iter()
                        .filter_map(|st| StreamId::from_slice(&st.stream).map(|s| (s, st.last)))
                        .collect(),
                }),
                _ => None,
            })
        })
        .collect()
}

fn bootstrap_body(tail: u64, streams: Vec<(StreamId, u64)>) -> request::Body {
    let streams = streams
        .into_iter()
        .map(|(s, last)| proto::StreamTail { stream: bytes::Bytes::copy_from_slice(&s.to_bytes()), last })
        .collect();
    request::Body::SeqBootstrap(SeqBootstrap { tail, streams })
}

/// The positions a catch-up covers: below `to`, and in segment `i` from
/// `from[i]` (from the segment's start where `from` has no entry).
struct Span<'a> {
    from: &'a [u64],
    to: Position,
    /// Whether values the chain lacks are decided now (after the seal).
    extras: Extras,
}

impl Span<'_> {
    /// `[start, end)` of segment `index` to copy (empty when start >= end).
    fn of(&self, index: usize, seg: &naxos_wire::proto::Segment) -> (u64, u64) {
        let end = seg.end.map_or(self.to.0, |e| e.min(self.to.0));
        (self.from.get(index).map_or(seg.start, |f| (*f).max(seg.start)), end)
    }
}

/// Catches `addr` up on the segments of `layout` over `span`; adds to
/// `diverged` the (segment, stripe) chains it must stay out of, and sets
/// `resume` to where, in each segment, a later pass must look again.
#[allow(clippy::too_many_arguments)]
async fn catch_up(
    copier: &naxos_client::Client,
    layout: &Layout,
    addr: &str,
    stripe: Option<usize>,
    span: Span<'_>,
    throttle: &mut Throttle,
    diverged: &mut Vec<(usize, usize)>,
    resume: &mut Vec<u64>,
) -> Result<CatchUp, naxos_client::Error> {
    let layout = Arc::new(layout.clone());
    let mut done = CatchUp::default();
    if let Some(p) = throttle.progress() {
        // The positions each stripe to copy covers, to tell how far the copy is.
        for (index, seg) in layout.segments.iter().enumerate() {
            let (start, end) = span.of(index, seg);
            let stripes = seg
                .stripes
                .iter()
                .enumerate()
                .filter(|(i, st)| stripe.is_none_or(|s| s == *i) && !st.chain.iter().any(|a| a == addr))
                .count() as u64;
            p.plan(end.saturating_sub(start) * stripes);
        }
    }
    for (index, seg) in layout.segments.iter().enumerate() {
        let (start, end) = span.of(index, seg);
        if start >= end || stripe.is_some_and(|s| s >= seg.stripes.len()) {
            resume.push(start);
            continue;
        }
        let l = loglet::of_segment(&layout, index)?;
        let c = l.catch_up(copier, addr, stripe, Position(start), span.to, span.extras, throttle).await?;
        diverged.extend(c.diverged_stripes.iter().map(|&s| (index, s)));
        resume.push(c.open.map_or(end, |o| o.min(end)));
        done += c;
    }
    Ok(done)
}
