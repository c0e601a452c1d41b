//! The real-process fault test. Three `naxos server` processes (one chain of
//! three, bootstrapped with `naxos bootstrap --replication 3`) serve several
//! concurrent clients while a seeded schedule kills servers with SIGKILL and
//! restarts them on the same address, freezes them with SIGSTOP and thaws them
//! with SIGCONT, and, when network namespaces are usable (root, `ip netns`),
//! cuts the links between two servers or between a server and the clients.
//! Every operation is recorded in one `naxos_check::History` (a time-out or an
//! error is `Unknown`: it may or may not have happened). At the end every
//! fault is undone, every server is killed and restarted, a scanner reads the
//! whole log and every stream back, and every invariant checker of
//! `naxos-check` must pass.
//!
//! The healing scenarios run every role on every server and type no command:
//! the managers take each killed or paused node out and put it back. One of
//! them runs the simulator's object clients (naxos-tango) instead of the log
//! clients, so that the sequencer fails over in the middle of transactions.
//!
//! The clients are tasks of this test, each with its own `naxos_client::Client`
//! (its own connections and layout cache), on a runtime of their own: the
//! history needs one clock for every client, and one process gives that.
//!
//! The schedule follows the seed; the processes' timing does not, so a seed
//! reruns the same faults, not the same interleaving. `NAXOS_FAULTS_SEED=N`
//! picks the seed; `NAXOS_FAULTS_NETNS=0` skips the namespaces. On a failure
//! (or with `NAXOS_FAULTS_KEEP=1`) the history is written as JSON lines under
//! the target directory's `tmp`, with the fault trace and the servers' logs,
//! and the path is printed.

mod common;

use common::run_cli;
use naxos_check::{check_all, explain, Event, History, Op, Outcome};
use naxos_client::{Client, Config, Position, StreamId};
use naxos_sim::workload::{batch_outcomes, read_outcome, stream_outcome};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Server processes: one chain of three.
const SERVERS: usize = 3;
/// Concurrent workload clients.
const CLIENTS: u32 = 4;
/// Concurrent scanners in the final phase.
const SCANNERS: u32 = 3;
/// Object clients (naxos-tango) beside the log clients, in the healing scenario.
const OBJECT_CLIENTS: u32 = 3;
/// The history's client number of the first object client.
const OBJECT_BASE: u32 = CLIENTS + SCANNERS;
/// How long the workload runs under faults.
const LOAD: Duration = Duration::from_secs(7);
/// Longest a workload operation may take before it is recorded as unknown.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// Tries per chunk, position or stream in the final scan before it gives up.
const SCAN_TRIES: usize = 20;
/// Positions the final scan reads in one bulk read.
const SCAN_CHUNK: u64 = 1024;
/// Crashes of the sequencer (server 0) during the load, at most. After a
/// crash the sequencer resumes at its durable token ceiling, so up to a
/// ceiling block (32768) of positions become holes that the final scan must
/// fill; the cap keeps the scan within the test's time budget.
const SEQUENCER_CRASHES_MAX: usize = 2;
/// Longest a server may take to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// The streams the workload appends to.
const STREAMS: [&str; 3] = ["f0", "f1", "f2"];

// ---------------------------------------------------------------------------
// Seeds and time.

/// splitmix64: small, seedable, good enough for a schedule.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        Rng(seed ^ stream.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[lo, hi)`; `lo` when the range is empty.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next() % (hi - lo)
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// The history's clock: nanoseconds since the test began, one for every client.
#[derive(Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(&self) -> u64 {
        self.0.elapsed().as_nanos() as u64
    }
}

/// The events recorded so far, by every client.
type Shared = Arc<Mutex<Vec<Event>>>;

// ---------------------------------------------------------------------------
// Network namespaces: one per server, on a bridge in the test's namespace.

/// A link the schedule can cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Between two servers (both ways).
    Servers(usize, usize),
    /// Between a server and every client (both ways).
    Clients(usize),
}

/// Namespaces `naxos-<pid>-<i>` with `10.A.B.(i+1)` on `eth0`, a veth to a
/// bridge that holds `10.A.B.254` (the clients' side). Link cuts are
/// blackhole routes on both ends, so packets vanish as on a cut cable.
struct Netns {
    prefix: String,
    bridge: Option<String>,
    namespaces: Vec<String>,
    veths: Vec<String>,
    cut: Vec<Link>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip").args(args).output().map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!("`ip {}` failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Netns {
    /// Sets up `n` namespaces, or says why it cannot.
    fn setup(n: usize) -> Result<Netns, String> {
        if std::env::var("NAXOS_FAULTS_NETNS").is_ok_and(|v| v == "0") {
            return Err("NAXOS_FAULTS_NETNS=0".into());
        }
        let uid = Command::new("id").arg("-u").output().map_err(|e| format!("cannot run `id`: {e}"))?;
        if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
            return Err("not root".into());
        }
        let pid = std::process::id();
        // A /24 of our own, chosen by pid so that parallel runs do not meet.
        let prefix = format!("10.{}.{}", 64 + (pid >> 8) % 128, pid & 0xff);
        let routes = Command::new("ip").args(["-4", "route", "show"]).output().map_err(|e| format!("`ip`: {e}"))?;
        if String::from_utf8_lossy(&routes.stdout).contains(&format!("{prefix}.")) {
            return Err(format!("subnet {prefix}.0/24 is already routed here"));
        }
        let mut net = Netns { prefix, bridge: None, namespaces: Vec::new(), veths: Vec::new(), cut: Vec::new() };
        // Interface names have at most 15 bytes.
        let tag = format!("{:x}", pid & 0xf_ffff);
        let bridge = format!("nxb{tag}");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        net.bridge = Some(bridge.clone());
        ip(&["addr", "add", &format!("{}/24", net.gateway()), "dev", &bridge])?;
        ip(&["link", "set", &bridge, "up"])?;
        for i in 0..n {
            let ns = format!("naxos-{pid}-{i}");
            ip(&["netns", "add", &ns])?;
            net.namespaces.push(ns.clone());
            let veth = format!("nxv{tag}{i}");
            ip(&["link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns])?;
            net.veths.push(veth.clone());
            ip(&["link", "set", &veth, "master", &bridge])?;
            ip(&["link", "set", &veth, "up"])?;
            ip(&["-n", &ns, "addr", "add", &format!("{}/24", net.addr(i)), "dev", "eth0"])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}.{}", self.prefix, i + 1)
    }

    fn gateway(&self) -> String {
        format!("{}.254", self.prefix)
    }

    /// The blackhole routes that cut `link`: (namespace or None for ours, destination).
    fn routes(&self, link: Link) -> [(Option<&str>, String); 2] {
        match link {
            Link::Servers(a, b) => {
                [(Some(self.namespaces[a].as_str()), self.addr(b)), (Some(self.namespaces[b].as_str()), self.addr(a))]
            }
            Link::Clients(a) => [(Some(self.namespaces[a].as_str()), self.gateway()), (None, self.addr(a))],
        }
    }

    fn route(ns: Option<&str>, verb: &str, dest: &str) -> Result<(), String> {
        let dest = format!("{dest}/32");
        match ns {
            Some(ns) => ip(&["-n", ns, "route", verb, "blackhole", &dest]),
            None => ip(&["route", verb, "blackhole", &dest]),
        }
    }

    fn cut(&mut self, link: Link) -> Result<(), String> {
        for (ns, dest) in self.routes(link) {
            Self::route(ns, "add", &dest)?;
        }
        self.cut.push(link);
        Ok(())
    }

    fn repair(&mut self, link: Link) -> Result<(), String> {
        self.cut.retain(|l| *l != link);
        for (ns, dest) in self.routes(link) {
            Self::route(ns, "del", &dest)?;
        }
        Ok(())
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for link in self.cut.clone() {
            let _ = self.repair(link);
        }
        for ns in &self.namespaces {
            let _ = ip(&["netns", "delete", ns]);
        }
        for veth in &self.veths {
            let _ = ip(&["link", "delete", veth]); // usually gone with its namespace
        }
        if let Some(b) = &self.bridge {
            let _ = ip(&["link", "delete", b]);
        }
    }
}

// ---------------------------------------------------------------------------
// Server processes.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    Down,
    Stopped,
}

/// One `naxos server` process (inside its namespace, if any); killed when dropped.
struct Server {
    netns: Option<String>,
    /// Flags after `--data-dir` (roles, management timings).
    args: Vec<String>,
    addr: String,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    state: State,
}

impl Server {
    /// Starts the server listening on `listen`; records the address it prints.
    fn start(netns: Option<String>, listen: &str, dir: PathBuf, log: PathBuf, args: Vec<String>) -> Server {
        let mut s = Server { netns, args, addr: listen.to_string(), dir, log, child: None, state: State::Down };
        s.spawn();
        s
    }

    /// Spawns the process on `self.addr`, retrying while the port is not free yet.
    fn spawn(&mut self) {
        let mut last = String::new();
        for _ in 0..20 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("naxos server on {} did not start: {last} (log: {})", self.addr, self.log.display());
    }

    fn try_spawn(&mut self) -> Result<(), String> {
        let exe = env!("CARGO_BIN_EXE_naxos");
        let mut cmd = match &self.netns {
            // `ip netns exec` execs in place: the child's pid is the server's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, exe]);
                c
            }
            None => Command::new(exe),
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("open {}: {e}", self.log.display()))?;
        let mut child = cmd
            .args(["server", "--listen", &self.addr, "--data-dir"])
            .arg(&self.dir)
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn: {e}"))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            // Keep draining after the address so the server never blocks on a full pipe.
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if !sent {
                    if let Some(a) = line.split_whitespace().find(|w| w.parse::<std::net::SocketAddr>().is_ok()) {
                        let _ = tx.send(a.to_string());
                        sent = true;
                    }
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                self.addr = addr;
                self.child = Some(child);
                self.state = State::Up;
                Ok(())
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                Err("exited or stayed silent before printing its address".into())
            }
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            let ok = Command::new("kill").args([sig, &pid.to_string()]).status().is_ok_and(|s| s.success());
            assert!(ok, "kill {sig} {pid} failed");
        }
    }

    /// SIGKILL (works on a stopped process too), and wait until it is gone.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.state = State::Down;
    }

    fn stop(&mut self) {
        self.signal("-STOP");
        self.state = State::Stopped;
    }

    fn cont(&mut self) {
        self.signal("-CONT");
        self.state = State::Up;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The servers, then the namespaces they live in (fields drop in this order).
struct Cluster {
    servers: Vec<Server>,
    net: Option<Netns>,
}

// ---------------------------------------------------------------------------
// The fault schedule.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Kill,
    Stop,
    PowerLoss,
    CutServers,
    CutClients,
}

enum Undo {
    Restart(Vec<usize>),
    Cont(usize),
    Repair(Link),
}

struct Schedule {
    rng: Rng,
    began: Instant,
    next_at: Instant,
    /// Kinds the schedule injects first, so every run has each at least once.
    forced: Vec<Kind>,
    pending: Vec<(Instant, Undo)>,
    counts: std::collections::BTreeMap<Kind, usize>,
    sequencer_crashes: usize,
    trace: Vec<String>,
}

impl Schedule {
    fn new(seed: u64, with_cuts: bool, began: Instant) -> Schedule {
        let mut rng = Rng::new(seed, 7);
        let mut forced = vec![Kind::Kill, Kind::Stop];
        if with_cuts {
            forced.extend([Kind::CutServers, Kind::CutClients]);
        }
        // A seeded shuffle of the forced kinds.
        for i in (1..forced.len()).rev() {
            let j = rng.range(0, i as u64 + 1) as usize;
            forced.swap(i, j);
        }
        let next_at = Instant::now() + rng.millis(200, 500);
        Schedule {
            rng,
            began,
            next_at,
            forced,
            pending: Vec::new(),
            counts: Default::default(),
            sequencer_crashes: 0,
            trace: Vec::new(),
        }
    }

    fn note(&mut self, what: String) {
        let line = format!("{:>8.3}s fault: {what}", self.began.elapsed().as_secs_f64());
        eprintln!("{line}");
        self.trace.push(line);
    }

    /// Undoes what is due; maybe injects a new fault.
    fn step(&mut self, c: &mut Cluster) {
        let now = Instant::now();
        let (due, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending).into_iter().partition(|(t, _)| *t <= now);
        self.pending = keep;
        for (_, u) in due {
            self.undo(c, u);
        }
        if now < self.next_at {
            return;
        }
        self.next_at = now + self.rng.millis(300, 1200);
        let forced = self.forced.pop();
        let kind = match forced {
            Some(k) => k,
            None => {
                let roll = self.rng.range(0, 100);
                match roll {
                    0..=34 => Kind::Kill,
                    35..=69 => Kind::Stop,
                    70..=74 => Kind::PowerLoss,
                    75..=87 if c.net.is_some() => Kind::CutServers,
                    88..=99 if c.net.is_some() => Kind::CutClients,
                    _ => return,
                }
            }
        };
        let up: Vec<usize> = (0..SERVERS).filter(|&i| c.servers[i].state == State::Up).collect();
        let killable: Vec<usize> =
            up.iter().copied().filter(|&i| i != 0 || self.sequencer_crashes < SEQUENCER_CRASHES_MAX).collect();
        if (kind == Kind::Kill && killable.is_empty()) || (kind == Kind::Stop && up.is_empty()) {
            // Nothing to hit now; a forced kind waits for its turn.
            self.forced.extend(forced);
            return;
        }
        match kind {
            Kind::Kill => {
                // The first kill hits the sequencer (server 0) if it is up, so
                // that its recovery also happens under load (the final
                // restart exercises it in every run).
                let i = if self.counts.contains_key(&Kind::Kill) || !killable.contains(&0) {
                    killable[self.rng.range(0, killable.len() as u64) as usize]
                } else {
                    0
                };
                if i == 0 {
                    self.sequencer_crashes += 1;
                }
                c.servers[i].kill9();
                let at = now + self.rng.millis(100, 1000);
                self.note(format!("kill -9 server {i}"));
                self.pending.push((at, Undo::Restart(vec![i])));
            }
            Kind::Stop => {
                let i = up[self.rng.range(0, up.len() as u64) as usize];
                c.servers[i].stop();
                // Sometimes longer than a call's time-out, sometimes shorter.
                let at = now + self.rng.millis(100, 1500);
                self.note(format!("SIGSTOP server {i}"));
                self.pending.push((at, Undo::Cont(i)));
            }
            Kind::PowerLoss => {
                if up.len() < SERVERS || self.sequencer_crashes >= SEQUENCER_CRASHES_MAX {
                    return;
                }
                self.sequencer_crashes += 1;
                for s in &mut c.servers {
                    s.kill9();
                }
                let at = now + self.rng.millis(100, 800);
                self.note("power loss: kill -9 every server".into());
                self.pending.push((at, Undo::Restart((0..SERVERS).collect())));
            }
            Kind::CutServers | Kind::CutClients => {
                let a = self.rng.range(0, SERVERS as u64) as usize;
                let link = if kind == Kind::CutServers {
                    Link::Servers(a, (a + 1 + self.rng.range(0, SERVERS as u64 - 1) as usize) % SERVERS)
                } else {
                    Link::Clients(a)
                };
                let net = c.net.as_mut().expect("cuts are chosen only with namespaces");
                if net.cut.iter().any(|l| {
                    *l == link || matches!((l, link), (Link::Servers(x, y), Link::Servers(p, q)) if (*x, *y) == (q, p))
                }) {
                    self.forced.extend(forced);
                    return;
                }
                net.cut(link).unwrap_or_else(|e| panic!("cutting {link:?}: {e}"));
                let at = now + self.rng.millis(100, 1500);
                self.note(format!("cut {link:?}"));
                self.pending.push((at, Undo::Repair(link)));
            }
        }
        *self.counts.entry(kind).or_default() += 1;
    }

    fn undo(&mut self, c: &mut Cluster, u: Undo) {
        match u {
            Undo::Restart(v) => {
                for &i in &v {
                    c.servers[i].spawn();
                }
                self.note(format!("restart server(s) {v:?}"));
            }
            Undo::Cont(i) => {
                c.servers[i].cont();
                self.note(format!("SIGCONT server {i}"));
            }
            Undo::Repair(link) => {
                if let Some(net) = c.net.as_mut() {
                    net.repair(link).unwrap_or_else(|e| panic!("repairing {link:?}: {e}"));
                }
                self.note(format!("repair {link:?}"));
            }
        }
    }

    /// Undoes every pending fault.
    fn heal(&mut self, c: &mut Cluster) {
        for (_, u) in std::mem::take(&mut self.pending) {
            self.undo(c, u);
        }
        for s in &mut c.servers {
            if s.state == State::Stopped {
                s.cont();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Clients.

fn client_config(addrs: &[String], retries_max: u32) -> Config {
    let mut c = Config::new(addrs.iter().cloned());
    c.rpc.timeout_connect = Duration::from_millis(500);
    c.rpc.timeout_call = Duration::from_secs(1);
    c.retries_max = retries_max;
    c
}

async fn connect(addrs: &[String], retries_max: u32) -> Client {
    let mut last = None;
    for _ in 0..100 {
        match Client::connect(client_config(addrs, retries_max)).await {
            Ok(c) => return c,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no client could connect to {addrs:?}: {last:?}");
}

fn unknown(e: impl std::fmt::Display) -> Outcome {
    Outcome::Unknown { error: e.to_string() }
}

/// One client's recorder: its number, the shared clock and history.
#[derive(Clone)]
struct Recorder {
    client: u32,
    clock: Clock,
    shared: Shared,
}

impl Recorder {
    /// Runs `fut` under `limit` and records it as `op`; returns the outcome.
    async fn record<F>(&self, op: Op, limit: Duration, fut: F) -> Outcome
    where
        F: std::future::Future<Output = Outcome>,
    {
        let start = self.clock.now();
        let outcome = tokio::time::timeout(limit, fut).await.unwrap_or_else(|_| unknown("timed out"));
        let event = Event::new(self.client, start, self.clock.now(), op, outcome.clone());
        self.shared.lock().expect("no recorder panics while holding the lock").push(event);
        outcome
    }

    /// The tail, then the stream's entries in `[from, tail)`.
    async fn stream_read(&self, client: &Client, name: &str, from: u64, limit: Duration) -> Outcome {
        let stream = StreamId::from_name(name);
        self.record(Op::StreamRead { stream: stream.0, from }, limit, stream_outcome(client, stream, from)).await
    }
}

impl naxos_sim::objects::Recorder for Recorder {
    fn now(&self) -> u64 {
        self.clock.now()
    }

    fn push(&self, event: Event) {
        self.shared.lock().expect("no recorder panics while holding the lock").push(event);
    }
}

/// An object client (the simulator's object operations: transfers in
/// transactions, snapshot reads, list-append transactions, a counter, a
/// register compare-and-set, checkpoints without trim) until `stop`; returns
/// its runtime, whose replay the test checks at the end.
async fn object_client(rec: Recorder, addrs: Vec<String>, seed: u64, stop: Arc<AtomicBool>) -> naxos_tango::Runtime {
    let runtime = naxos_tango::Runtime::with_id(connect(&addrs, 3).await, u128::from(rec.client) + 1);
    let mut rng = naxos_sim::rng::Rng::new(seed, 2000 + u64::from(rec.client));
    let options = naxos_sim::objects::Options { trim: false, opens: rec.client == OBJECT_BASE, stop: Some(stop) };
    naxos_sim::objects::operations(&rec, &runtime, rec.client, &mut rng, usize::MAX, &options).await;
    runtime
}

/// The final phase's scan of the healed cluster: the tail, then the whole
/// log in chunks by several scanners (which fills every hole), then every
/// stream; each read recorded. Returns the tail and what gave no answer.
fn scan(rt: &tokio::runtime::Runtime, addrs: &[String], clock: Clock, shared: &Shared) -> (u64, Unsettled) {
    rt.block_on(async {
        let first = Recorder { client: CLIENTS, clock, shared: shared.clone() };
        let client = connect(addrs, 12).await;
        let mut tail = None;
        for _ in 0..SCAN_TRIES {
            let o = first
                .record(Op::Tail, OP_TIMEOUT, async {
                    match client.tail().await {
                        Ok(t) => Outcome::Tail { tail: t.0 },
                        Err(e) => unknown(e),
                    }
                })
                .await;
            if let Outcome::Tail { tail: t } = o {
                tail = Some(t);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let tail = tail.expect("the healed cluster never answered a tail query");
        let mut recorders = vec![(first, client)];
        for k in 1..SCANNERS {
            recorders.push((Recorder { client: CLIENTS + k, clock, shared: shared.clone() }, connect(addrs, 12).await));
        }
        // The whole log first (this fills every hole), then the streams: a
        // stream read waits for each position its head has not seen written.
        let scans: Vec<_> = recorders
            .iter()
            .enumerate()
            .map(|(k, (rec, client))| tokio::spawn(scan_log(rec.clone(), client.clone(), k as u32, tail)))
            .collect();
        let mut unsettled = Unsettled::default();
        for s in scans {
            unsettled.positions.extend(s.await.expect("a scanner panicked"));
        }
        let streams: Vec<_> = STREAMS
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let (rec, client) = recorders[i % recorders.len()].clone();
                tokio::spawn(async move { (name.to_string(), scan_stream(rec, client, name).await) })
            })
            .collect();
        for s in streams {
            let (name, settled) = s.await.expect("a stream scanner panicked");
            if !settled {
                unsettled.streams.push(name);
            }
        }
        (tail, unsettled)
    })
}

/// A workload client: seeded operations until `until`.
async fn workload(rec: Recorder, client: Client, seed: u64, until: Instant, stop: Arc<AtomicBool>) {
    let mut rng = Rng::new(seed, 1000 + u64::from(rec.client));
    let mut known_tail = 0u64;
    let mut n = 0u64;
    while Instant::now() < until && !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(rng.millis(0, 5)).await;
        n += 1;
        // Unique in the run: the client and sequence number come first.
        let mut payload = format!("c{}-{n}-", rec.client).into_bytes();
        payload.resize(payload.len() + rng.range(0, 200) as usize, b'x');
        match rng.range(0, 100) {
            0..=39 => {
                let names: Vec<&str> = STREAMS.iter().copied().filter(|_| rng.chance(0.3)).collect();
                let ids: Vec<StreamId> = names.iter().map(|s| StreamId::from_name(s)).collect();
                let op = Op::Append { payload: payload.clone(), streams: ids.iter().map(|s| s.0).collect() };
                let o = rec
                    .record(op, OP_TIMEOUT, async {
                        match client.append_to(&ids, payload.into()).await {
                            Ok(p) => Outcome::Appended { position: p.0 },
                            Err(e) => unknown(e),
                        }
                    })
                    .await;
                if let Outcome::Appended { position } = o {
                    known_tail = known_tail.max(position + 1);
                }
            }
            40..=44 => {
                // A batch: one token request, several entries; one event per entry.
                let count = rng.range(2, 5);
                let payloads: Vec<Vec<u8>> = (0..count)
                    .map(|k| {
                        let mut p = payload.clone();
                        p.extend(format!("b{k}").bytes());
                        p
                    })
                    .collect();
                let start = rec.clock.now();
                let outcomes = batch_outcomes(&client, &payloads, OP_TIMEOUT).await;
                let end = rec.clock.now();
                let mut shared = rec.shared.lock().expect("no recorder panics while holding the lock");
                for (p, outcome) in payloads.into_iter().zip(outcomes) {
                    if let Outcome::Appended { position } = outcome {
                        known_tail = known_tail.max(position + 1);
                    }
                    shared.push(Event::new(
                        rec.client,
                        start,
                        end,
                        Op::Append { payload: p, streams: vec![] },
                        outcome,
                    ));
                }
            }
            45..=69 if known_tail > 0 => {
                // Mostly just below the known tail, where other clients'
                // entries are (a restarted sequencer leaves a long run of
                // holes further down); sometimes anywhere below it, now and
                // then just above it.
                let p = match rng.range(0, 10) {
                    0..=5 => known_tail - 1 - rng.range(0, known_tail.min(300)),
                    6..=8 => rng.range(0, known_tail),
                    _ => rng.range(known_tail, known_tail + 3),
                };
                rec.record(Op::Read { position: p }, OP_TIMEOUT, async {
                    read_outcome(client.read(Position(p)).await)
                })
                .await;
            }
            // A tail; also in place of a read while no tail is known yet.
            45..=81 => {
                let o = rec
                    .record(Op::Tail, OP_TIMEOUT, async {
                        match client.tail().await {
                            Ok(t) => Outcome::Tail { tail: t.0 },
                            Err(e) => unknown(e),
                        }
                    })
                    .await;
                if let Outcome::Tail { tail } = o {
                    known_tail = known_tail.max(tail);
                }
            }
            _ => {
                let name = STREAMS[rng.range(0, STREAMS.len() as u64) as usize];
                // From the start only now and then: a stream read reads every
                // position its head has not seen written one at a time, so
                // across a run of holes it rarely ends in time.
                let from = if rng.chance(0.2) { 0 } else { known_tail.saturating_sub(rng.range(0, 300)) };
                rec.stream_read(&client, name, from, OP_TIMEOUT).await;
            }
        }
    }
}

/// What the final scan could not settle.
#[derive(Default)]
struct Unsettled {
    positions: Vec<u64>,
    streams: Vec<String>,
}

/// Reads `[from, to)` in bulk (the client repairs and fills holes, a run of
/// holes at once) and records one read per position, each spanning the bulk
/// call; if the bulk read keeps failing, reads the positions one by one.
/// Returns the positions that never got a definite answer.
async fn scan_chunk(rec: &Recorder, client: &Client, from: u64, to: u64) -> Vec<u64> {
    for _ in 0..3 {
        let start = rec.clock.now();
        let r = tokio::time::timeout(Duration::from_secs(30), client.read_range(Position(from), Position(to))).await;
        let end = rec.clock.now();
        // The bulk read stops at the tail it sees; the scan's tail is below it.
        if let Ok(Ok(values)) = r {
            if values.len() as u64 == to - from {
                let mut shared = rec.shared.lock().expect("no recorder panics while holding the lock");
                for (p, v) in values {
                    let outcome = read_outcome(Ok(v));
                    shared.push(Event::new(rec.client, start, end, Op::Read { position: p.0 }, outcome));
                }
                return Vec::new();
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut unsettled = Vec::new();
    for p in from..to {
        let mut settled = false;
        for _ in 0..SCAN_TRIES {
            let o = rec
                .record(Op::Read { position: p }, OP_TIMEOUT, async { read_outcome(client.read(Position(p)).await) })
                .await;
            if !matches!(o, Outcome::Unknown { .. }) {
                settled = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !settled {
            unsettled.push(p);
        }
    }
    unsettled
}

/// Scanner `k`: every `SCANNERS`-th chunk of `[0, tail)`, starting at chunk `k`.
async fn scan_log(rec: Recorder, client: Client, k: u32, tail: u64) -> Vec<u64> {
    let mut unsettled = Vec::new();
    let mut from = u64::from(k) * SCAN_CHUNK;
    while from < tail {
        unsettled.extend(scan_chunk(&rec, &client, from, (from + SCAN_CHUNK).min(tail)).await);
        from += u64::from(SCANNERS) * SCAN_CHUNK;
    }
    unsettled
}

/// Reads stream `name` from the start, retried until the outcome is definite.
async fn scan_stream(rec: Recorder, client: Client, name: &str) -> bool {
    for _ in 0..SCAN_TRIES {
        let o = rec.stream_read(&client, name, 0, Duration::from_secs(30)).await;
        if !matches!(o, Outcome::Unknown { .. }) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

// ---------------------------------------------------------------------------
// The test.

fn seed() -> u64 {
    match std::env::var("NAXOS_FAULTS_SEED") {
        Ok(s) => s.parse().expect("NAXOS_FAULTS_SEED is a number"),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64 % 1_000_000)
            .unwrap_or(1),
    }
}

/// Counts of events by kind of outcome, for the summary line.
fn summary(history: &History) -> String {
    let mut acked = 0;
    let mut unknown = 0;
    let mut data = 0;
    let mut holes = 0;
    let mut streams = 0;
    for e in &history.events {
        match &e.outcome {
            Outcome::Appended { .. } => acked += 1,
            Outcome::Unknown { .. } => unknown += 1,
            Outcome::Data { .. } => data += 1,
            Outcome::Hole => holes += 1,
            Outcome::Stream { .. } => streams += 1,
            _ => {}
        }
    }
    format!(
        "{} events: {acked} appends acknowledged, {data} reads of data, {holes} of holes, {streams} stream reads, {unknown} unknown",
        history.len()
    )
}

fn dump(dir: &Path, history: &History, trace: &[String]) -> PathBuf {
    std::fs::create_dir_all(dir).expect("create the failure directory");
    let path = dir.join("history.jsonl");
    let file = std::fs::File::create(&path).expect("create the history file");
    history.write_json_lines(std::io::BufWriter::new(file)).expect("write the history");
    std::fs::write(dir.join("faults.txt"), trace.join("\n")).expect("write the fault trace");
    path
}

#[test]
fn invariants_hold_under_kill_stop_and_link_cuts_of_real_servers() {
    run(Scenario::Faults);
}

/// Reconfigurations of real servers under load, each through the CLI as an
/// operator would type it: the head (which is also the primary sequencer),
/// then the middle, then the tail of the chain is killed with -9, removed
/// with `naxos reconfigure remove`, restarted on its address and data, and
/// added back with `naxos reconfigure add` (state transfer); then `naxos
/// reconfigure segment` goes from one stripe to two. The history checkers
/// judge every operation of the clients, who follow the layout by themselves.
#[test]
fn invariants_hold_across_operator_reconfigurations_of_real_servers() {
    run(Scenario::Reconfigurations);
}

/// Three servers with every role (management included) under load: kill -9
/// of the node holding the primary sequencer, then of the middle replica,
/// each restarted after a while. No command is typed: the managers take each
/// out, appends go on, and the returning node is caught up and put back.
/// Prints the time from each kill to the first acknowledged append after it,
/// and from each restart to full replication. The history checkers judge
/// the run.
#[test]
fn the_cluster_heals_itself_after_kill_9_of_any_node() {
    run(Scenario::Healing);
}

/// The healing scenario's faults (kill -9 of the primary sequencer's node,
/// then of the middle replica, then SIGSTOP of the tail, no command typed)
/// under object clients instead of log clients (naxos-tango: transfers in
/// transactions, snapshot reads, list-append transactions, a counter, a
/// register compare-and-set, checkpoints), so that the sequencer fails over
/// in the middle of transactions; then every server is killed and restarted
/// and a fresh runtime reads the objects back. The bank, counter, register
/// and list-append checkers judge the history, every runtime's replay must
/// find no commit record whose reads no longer held, and a transfer begun
/// after the first kill must commit.
#[test]
fn objects_keep_their_invariants_while_the_cluster_heals_itself() {
    run(Scenario::Objects);
}

/// What happens to the servers while the clients run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    /// The seeded schedule of kills, stops and link cuts.
    Faults,
    /// The scripted reconfigurations.
    Reconfigurations,
    /// Kills with no command typed: the management role heals the cluster.
    Healing,
    /// The healing scenario under object clients instead of log clients.
    Objects,
}

/// The cluster's newest layout, by `naxos layout --json`.
fn layout_json(addrs: &[String]) -> serde_json::Value {
    for _ in 0..50 {
        let (code, out, _) = run_cli(&["--json", "layout", "--cluster", &addrs.join(",")], b"");
        if code == 0 {
            return serde_json::from_slice(&out).expect("layout --json is JSON");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("no node gave its layout");
}

/// The active segment's chains of the cluster's newest layout.
fn active_chains(addrs: &[String]) -> Vec<Vec<String>> {
    let v = layout_json(addrs);
    let seg = v["segments"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
    seg["stripes"]
        .as_array()
        .map(|st| {
            st.iter()
                .map(|c| {
                    c["chain"]
                        .as_array()
                        .map_or_else(Vec::new, |a| a.iter().filter_map(|x| x.as_str().map(String::from)).collect())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Polls the layout until `done` holds of it; how long that took. Fails the
/// test after `limit` with what it waited for.
fn wait_for_layout(
    addrs: &[String],
    limit: Duration,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> Duration {
    let t0 = Instant::now();
    loop {
        let v = layout_json(addrs);
        if done(&v) {
            return t0.elapsed();
        }
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}; layout now {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether the layout's active chains all hold `addr`, or none does.
fn in_chains(v: &serde_json::Value, addr: &str) -> (bool, bool) {
    let seg = v["segments"].as_array().and_then(|s| s.last()).cloned().unwrap_or_default();
    let chains: Vec<bool> = seg["stripes"]
        .as_array()
        .map(|st| st.iter().map(|c| c["chain"].as_array().is_some_and(|a| a.iter().any(|x| x == addr))).collect())
        .unwrap_or_default();
    (chains.iter().all(|c| *c), chains.iter().all(|c| !*c))
}

/// One automatic failover and rejoin, for the figures: when the node was
/// stopped and came back (on the test's clock), how long until the managers
/// took it out and had it back in every chain.
struct Healed {
    what: String,
    server: usize,
    /// How many times the managers had put this server back, this time included.
    nth_back: usize,
    killed_at: u64,
    restarted_at: u64,
    taken_out: Duration,
    rejoined: Duration,
}

/// The healing scenario: kill -9 of the node that holds the primary
/// sequencer, then of the middle replica, each restarted after
/// `NAXOS_HEAL_DOWN_S` seconds (default 2); then SIGSTOP of the tail past the
/// failure timeout and SIGCONT. Each time the managers must take the node
/// out (appends go on), and, once it is back, catch it up and put it back,
/// with no command typed.
fn healing(c: &mut Cluster, schedule: &mut Schedule, addrs: &[String], clock: &Clock) -> Vec<Healed> {
    let down: f64 = std::env::var("NAXOS_HEAL_DOWN_S").ok().and_then(|s| s.parse().ok()).unwrap_or(2.0);
    let mut out: Vec<Healed> = Vec::new();
    let limit = Duration::from_secs(30) + Duration::from_secs_f64(down);
    for what in ["the primary sequencer", "the middle replica", "the tail (SIGSTOP)"] {
        std::thread::sleep(Duration::from_millis(1000));
        let v = layout_json(addrs);
        let chain = active_chains(addrs)[0].clone();
        let victim = match what {
            "the primary sequencer" => v["sequencers"][0].as_str().expect("a primary sequencer").to_string(),
            "the middle replica" => chain.get(1).expect("a chain of three").clone(),
            _ => chain.last().expect("a chain").clone(),
        };
        let i = addrs.iter().position(|a| *a == victim).expect("a server of the test");
        let pause = what.contains("SIGSTOP");
        if pause {
            c.servers[i].stop();
        } else {
            c.servers[i].kill9();
        }
        let killed_at = clock.now();
        schedule.note(format!("{} server {i} ({victim}), {what}", if pause { "SIGSTOP" } else { "kill -9" }));
        let taken_out = wait_for_layout(addrs, limit, &format!("{victim} taken out"), |v| in_chains(v, &victim).1);
        schedule.note(format!("{victim} taken out by the managers after {taken_out:?}"));
        // Appends go on without it for a while: it misses them.
        let away = if pause { 2.0 } else { down };
        std::thread::sleep(Duration::from_secs_f64(away));
        // Timed from the restart command (the process takes a moment to listen).
        let restarted_at = clock.now();
        let began = Instant::now();
        if pause {
            c.servers[i].cont();
        } else {
            c.servers[i].spawn();
        }
        schedule.note(format!("{} server {i} ({victim})", if pause { "SIGCONT" } else { "restart" }));
        wait_for_layout(addrs, limit, &format!("{victim} back in every chain"), |v| {
            in_chains(v, &victim).0 && v["away"].as_array().is_none_or(|a| a.is_empty())
        });
        let rejoined = began.elapsed();
        schedule.note(format!("{victim} back in every chain {rejoined:?} after it came back"));
        let nth_back = 1 + out.iter().filter(|h| h.server == i).count();
        out.push(Healed { what: what.to_string(), server: i, nth_back, killed_at, restarted_at, taken_out, rejoined });
    }
    std::thread::sleep(Duration::from_millis(500));
    out
}

/// Entries and bytes the managers' `nth` state transfer to `addr` copied,
/// from the servers' logs ("automatic reconfiguration ... copied_bytes=").
fn copied_to(out_dir: &Path, addr: &str, nth: usize) -> (u64, u64) {
    // Its lines start with the time: sorted, they are in time order.
    let mut lines: Vec<String> = Vec::new();
    for i in 0..SERVERS {
        let log = std::fs::read_to_string(out_dir.join(format!("server-{i}.log"))).unwrap_or_default();
        let add = format!("change=add {addr} ");
        lines.extend(
            log.lines().filter(|l| l.contains("automatic reconfiguration") && l.contains(&add)).map(String::from),
        );
    }
    lines.sort();
    let Some(line) = lines.get(nth.saturating_sub(1)) else { return (0, 0) };
    let field = |name: &str| {
        line.split(name).nth(1).and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
    };
    (field("copied_entries=").unwrap_or(0), field("copied_bytes=").unwrap_or(0))
}

/// Runs one `naxos reconfigure` command; it must succeed.
fn reconfigure(schedule: &mut Schedule, addrs: &[String], args: &[&str]) {
    let t0 = Instant::now();
    let mut all = vec!["--json", "reconfigure"];
    all.extend_from_slice(args);
    let cluster = addrs.join(",");
    all.extend_from_slice(&["--cluster", &cluster]);
    let (code, out, err) = run_cli(&all, b"");
    assert_eq!(code, 0, "naxos reconfigure {args:?} failed: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out).expect("reconfigure --json is JSON");
    schedule.note(format!(
        "reconfigure {} -> epoch {}, sealed at {}, {:.0} ms (seal to sequencer {:.1} ms, copied {} entries)",
        args.join(" "),
        v["epoch"],
        v["sealed_at"],
        t0.elapsed().as_secs_f64() * 1e3,
        v["seal_to_ready_ms"].as_f64().unwrap_or(0.0),
        v["transfer"]["entries_copied"]
    ));
}

/// The scripted reconfigurations (see the test above), on this thread while
/// the clients run.
fn reconfigurations(c: &mut Cluster, schedule: &mut Schedule, addrs: &[String]) {
    for (what, index) in [("head", 0), ("middle", 1), ("tail", 2)] {
        std::thread::sleep(Duration::from_millis(500));
        let chain = active_chains(addrs).into_iter().next().expect("an active chain");
        let victim = chain[index].clone();
        let i = addrs.iter().position(|a| *a == victim).expect("a server of the test");
        c.servers[i].kill9();
        schedule.note(format!("kill -9 server {i}, the {what} of {chain:?}"));
        reconfigure(schedule, addrs, &["remove", &victim]);
        std::thread::sleep(Duration::from_millis(300));
        c.servers[i].spawn();
        schedule.note(format!("restart server {i}"));
        reconfigure(schedule, addrs, &["add", &victim]);
    }
    std::thread::sleep(Duration::from_millis(500));
    let units = format!("{},{},{},{}", addrs[0], addrs[1], addrs[2], addrs[0]);
    reconfigure(schedule, addrs, &["segment", "--log-units", &units, "--replication", "2", "--stripes", "2"]);
    std::thread::sleep(Duration::from_millis(500));
}

fn run(scenario: Scenario) {
    let began = Instant::now();
    let clock = Clock(began);
    let seed = seed();
    eprintln!(
        "fault test seed {seed} (same schedule again: NAXOS_FAULTS_SEED={seed} cargo test -p naxos --test faults)"
    );
    let out_dir =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("faults-seed-{seed}-pid-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("create the run's directory");

    let net = match scenario {
        Scenario::Faults => Netns::setup(SERVERS),
        Scenario::Reconfigurations | Scenario::Healing | Scenario::Objects => {
            Err("not used by this scenario".to_string())
        }
    };
    let net = match net {
        Ok(n) => {
            eprintln!("network-namespace link cuts: on (one namespace per server, {}.0/24)", n.prefix);
            Some(n)
        }
        Err(why) => {
            eprintln!("network-namespace link cuts: skipped ({why}); kill -9 and SIGSTOP only");
            None
        }
    };
    let dirs: Vec<tempfile::TempDir> = (0..SERVERS).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let servers: Vec<Server> = (0..SERVERS)
        .map(|i| {
            let (ns, listen) = match &net {
                Some(n) => (Some(n.namespaces[i].clone()), format!("{}:0", n.addr(i))),
                None => (None, "127.0.0.1:0".to_string()),
            };
            // The other scenarios make every change by hand (or none): no managers.
            let args: Vec<String> = match scenario {
                Scenario::Healing | Scenario::Objects => {
                    let timeout = std::env::var("NAXOS_FAILURE_TIMEOUT").unwrap_or_else(|_| "1s".into());
                    vec!["--failure-timeout".into(), timeout]
                }
                _ => vec!["--roles".into(), "logunit,sequencer,layout".into()],
            };
            Server::start(ns, &listen, dirs[i].path().to_path_buf(), out_dir.join(format!("server-{i}.log")), args)
        })
        .collect();
    let mut cluster = Cluster { servers, net };
    let addrs: Vec<String> = cluster.servers.iter().map(|s| s.addr.clone()).collect();
    let (code, _, err) =
        run_cli(&["bootstrap", "--cluster", &addrs[0], "--log-units", &addrs.join(","), "--replication", "3"], b"");
    assert_eq!(code, 0, "bootstrap failed: {err}");

    // The workload, on its own runtime, while this thread runs the schedule.
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let shared: Shared = Arc::default();
    let objects = scenario == Scenario::Objects;
    let clients: Vec<Client> = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..if objects { 0 } else { CLIENTS } {
            v.push(connect(&addrs, 3).await);
        }
        v
    });
    // The scripted reconfigurations end the load themselves (the clients
    // stop at the first deadline they check after it).
    let load_end = Instant::now() + if scenario == Scenario::Faults { LOAD } else { Duration::from_secs(600) };
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let rec = Recorder { client: i as u32, clock, shared: shared.clone() };
            rt.spawn(workload(rec, client, seed, load_end, stop.clone()))
        })
        .collect();
    // In the objects scenario object clients run instead (the log checkers
    // would take their records for data no append carried), so that the
    // sequencer's failover lands in the middle of transactions.
    let object_tasks: Vec<_> = (0..if objects { OBJECT_CLIENTS } else { 0 })
        .map(|k| {
            let rec = Recorder { client: OBJECT_BASE + k, clock, shared: shared.clone() };
            rt.spawn(object_client(rec, addrs.clone(), seed, stop.clone()))
        })
        .collect();
    let mut schedule = Schedule::new(seed, cluster.net.is_some(), began);
    let mut healed = Vec::new();
    match scenario {
        Scenario::Faults => {
            while Instant::now() < load_end {
                schedule.step(&mut cluster);
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        Scenario::Reconfigurations => reconfigurations(&mut cluster, &mut schedule, &addrs),
        Scenario::Healing | Scenario::Objects => healed = healing(&mut cluster, &mut schedule, &addrs, &clock),
    }
    stop.store(true, Ordering::Relaxed);
    schedule.heal(&mut cluster);
    let runtimes: Vec<naxos_tango::Runtime> = rt.block_on(async {
        for t in tasks {
            t.await.expect("a workload client panicked");
        }
        let mut runtimes = Vec::new();
        for t in object_tasks {
            runtimes.push(t.await.expect("an object client panicked"));
        }
        runtimes
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let load_secs = began.elapsed().as_secs_f64();

    // Quiescence: every server killed and restarted, then the whole log read back.
    for s in &mut cluster.servers {
        s.kill9();
    }
    for s in &mut cluster.servers {
        s.spawn();
    }
    schedule.note("final: every server killed with -9 and restarted; links whole".into());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let scan_began = Instant::now();
    let (tail, unsettled) = if objects {
        // No log clients, so nothing for the log scan to judge (it would read
        // the object records as data no append carried).
        (0, Unsettled::default())
    } else {
        scan(&rt, &addrs, clock, &shared)
    };
    // The objects read once more by a runtime that replays them from the
    // start, and every runtime's replay checked.
    let mut object_problems = Vec::new();
    if objects {
        let index = OBJECT_BASE + OBJECT_CLIENTS;
        let rec = Recorder { client: index, clock, shared: shared.clone() };
        let last = rt.block_on(async {
            let runtime = naxos_tango::Runtime::with_id(connect(&addrs, 12).await, u128::from(index) + 1);
            if let Err(e) = naxos_sim::objects::final_reads(&rec, &runtime, index).await {
                object_problems.push(e);
            }
            runtime
        });
        for (k, runtime) in runtimes.iter().chain([&last]).enumerate() {
            if let Some(v) = naxos_sim::objects::replay_violation(runtime, OBJECT_BASE + k as u32) {
                object_problems.push(v.to_string());
            }
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let scan_secs = scan_began.elapsed().as_secs_f64();

    let events = std::mem::take(&mut *shared.lock().expect("every client is done"));
    let history = History::merge([History::from(events)]);
    let violations = check_all(&history);
    let mut healing_problems = Vec::new();
    for h in &healed {
        // The first acknowledgement of an append made after the kill (one
        // made before may be acknowledged just after it).
        let first = history
            .events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Appended { .. }) && e.start > h.killed_at)
            .map(|e| e.end)
            .min();
        let failover = first.map_or("none".to_string(), |t| format!("{:.0} ms", (t - h.killed_at) as f64 / 1e6));
        if first.is_none() && !objects {
            healing_problems.push(format!("no append was acknowledged after {} stopped", h.what));
        }
        // What it missed: the payloads acknowledged while it was away.
        let missed: u64 = history
            .events
            .iter()
            .filter(|e| e.end > h.killed_at && e.start < h.restarted_at)
            .filter_map(|e| match (&e.op, &e.outcome) {
                (Op::Append { payload, .. }, Outcome::Appended { .. }) => Some(payload.len() as u64),
                _ => None,
            })
            .sum();
        let (entries, bytes) = copied_to(&out_dir, &addrs[h.server], h.nth_back);
        eprintln!(
            "healing figures: {}: first acknowledged append {failover} after it stopped; taken out after {:.0} ms; back in every chain {:.0} ms after its restart (or SIGCONT); copied {entries} entries, {bytes} bytes (it missed about {missed} bytes of acknowledged appends)",
            h.what,
            h.taken_out.as_secs_f64() * 1e3,
            h.rejoined.as_secs_f64() * 1e3
        );
    }
    let counts: Vec<String> = schedule.counts.iter().map(|(k, n)| format!("{k:?} x{n}")).collect();
    let cuts = cluster.net.is_some();
    drop(cluster); // stop every server, remove the namespaces
    eprintln!(
        "faults injected: {}; load {load_secs:.1}s, final scan of {tail} positions in {scan_secs:.1}s; {}",
        counts.join(", "),
        summary(&history)
    );

    let mut problems = healing_problems;
    problems.extend(object_problems);
    if objects {
        let committed = |after: u64| {
            history
                .events
                .iter()
                .filter(|e| matches!(e.op, Op::Transfer { .. }) && e.outcome == Outcome::Committed && e.start > after)
                .count()
        };
        let after_kill = healed.first().map_or(0, |h| committed(h.killed_at));
        let mut unknown: std::collections::BTreeMap<String, usize> = Default::default();
        for e in &history.events {
            if let Outcome::Unknown { error } = &e.outcome {
                *unknown.entry(error.chars().take(120).collect()).or_default() += 1;
            }
        }
        eprintln!(
            "object clients: {} events, {} transfers committed, {after_kill} of them begun after the first kill; unknown outcomes: {unknown:?}",
            history.len(),
            committed(0)
        );
        if after_kill == 0 {
            problems.push("no transfer begun after the first kill committed".into());
        }
    }
    for v in &violations {
        eprintln!("{}", explain(&history, v, 6));
    }
    if !violations.is_empty() {
        problems.push(format!("{} invariant violation(s)", violations.len()));
    }
    if !unsettled.positions.is_empty() || !unsettled.streams.is_empty() {
        problems.push(format!(
            "the healed cluster gave no definite answer for positions {:?} and streams {:?}",
            unsettled.positions, unsettled.streams
        ));
    }
    let acked = history.events.iter().filter(|e| matches!(e.outcome, Outcome::Appended { .. })).count();
    if acked < 50 && !objects {
        problems.push(format!("only {acked} appends were acknowledged: the load made too little progress"));
    }
    let mut wanted = if scenario == Scenario::Faults { vec![Kind::Kill, Kind::Stop] } else { Vec::new() };
    if cuts {
        wanted.extend([Kind::CutServers, Kind::CutClients]);
    }
    for k in wanted {
        if !schedule.counts.contains_key(&k) {
            problems.push(format!("the schedule never injected {k:?}"));
        }
    }
    if problems.is_empty() && std::env::var("NAXOS_FAULTS_KEEP").is_ok_and(|v| v == "1") {
        let path = dump(&out_dir, &history, &schedule.trace);
        eprintln!(
            "NAXOS_FAULTS_KEEP=1: history in {}, fault trace and server logs in {}",
            path.display(),
            out_dir.display()
        );
    } else if problems.is_empty() {
        let _ = std::fs::remove_dir_all(&out_dir);
    } else {
        let path = dump(&out_dir, &history, &schedule.trace);
        panic!(
            "seed {seed}: {}\nhistory (JSON lines): {}\nfault trace and server logs: {}\nrerun the schedule: NAXOS_FAULTS_SEED={seed} cargo test -p naxos --test faults",
            problems.join("; "),
            path.display(),
            out_dir.display()
        );
    }
}
