//! Deterministic simulation of Naxos. The real server (`naxos-server`) and
//! client (`naxos-client`) code runs on turmoil: several hosts on one thread,
//! simulated TCP and a simulated file system per host (unsynced writes die
//! with a crash; multi-block writes can tear), all driven by one seed. A
//! seeded workload records a history; a seeded fault schedule crashes,
//! partitions and delays; a quiescent phase heals everything, restarts every
//! server and reads the whole log back; the checkers of `naxos-check` judge
//! the history. `NAXOS_SIM_SEED=N` reruns one seed exactly.

pub mod byzantine;
pub mod faults;
pub mod fs;
pub mod net;
pub mod objects;
pub mod rng;
pub mod rot;
pub mod settle;
pub mod workload;

use naxos_check::{Event, History, Violation};
use naxos_wire::mutation::Mutation;
use naxos_wire::Layout;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The port every simulated server listens on.
pub const PORT: u16 = 7400;

/// The history being recorded, shared by every simulated client, and the
/// highest trim any client asked for (the final stream reads start there).
#[derive(Clone, Default)]
pub struct Shared(Arc<Mutex<Vec<Event>>>, Arc<std::sync::atomic::AtomicU64>);

impl Shared {
    /// Notes a trim about to be asked for.
    pub fn trimmed_to(&self, p: u64) {
        self.1.fetch_max(p, std::sync::atomic::Ordering::Relaxed);
    }

    /// The highest trim asked for.
    pub fn trim_mark(&self) -> u64 {
        self.1.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Records one event.
    pub fn push(&self, e: Event) {
        if let Ok(mut v) = self.0.lock() {
            v.push(e);
        }
    }

    /// The events recorded so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn take(&self) -> Vec<Event> {
        self.0.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default()
    }
}

/// What one simulated run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: every choice of the run follows from it.
    pub seed: u64,
    /// Server hosts (each runs every role; the first sequences).
    pub servers: usize,
    /// Replicas per chain.
    pub replication: usize,
    /// Chains.
    pub stripes: usize,
    /// Workload clients.
    pub clients: usize,
    /// Operations per workload client.
    pub ops_per_client: usize,
    /// Inject faults during the workload.
    pub faults: bool,
    /// Probability of an injected I/O error per data-file read, write or sync.
    pub io_error_probability: f64,
    /// A deliberately broken protocol variant to run (mutation tests).
    pub mutation: Option<Mutation>,
    /// Instead of random reconfigurations, one scripted churn: a log unit is
    /// removed, added back (state transfer) and made the sequencer, then
    /// every other unit is removed, so that it alone holds the log.
    pub churn: bool,
    /// Start a spare server (`--join`) beside the cluster: it takes the place
    /// of a unit that stays away longer than the spare delay (2 s here).
    pub spare: bool,
    /// Run the object workload (naxos-tango: bank transfers in transactions,
    /// snapshot reads, a counter) instead of the log workload; the bank and
    /// counter checkers judge it.
    pub objects: bool,
    /// Run the byzantine-ish client beside the workload: extreme but
    /// well-formed requests the servers must refuse (see [`byzantine`]).
    pub byzantine: bool,
}

impl SimConfig {
    /// The default run for `seed`: 3 servers in one chain of 3, 3 clients.
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            servers: 3,
            replication: 3,
            stripes: 1,
            clients: 3,
            ops_per_client: 40,
            faults: true,
            io_error_probability: 0.0005,
            mutation: None,
            churn: false,
            spare: seed.is_multiple_of(3),
            objects: false,
            byzantine: true,
        }
    }
}

/// What a run produced.
pub struct Report {
    /// The seed.
    pub seed: u64,
    /// Every recorded operation.
    pub history: History,
    /// Fault events and operations in order, one line each: the run's trace.
    pub trace: Vec<String>,
    /// What the checkers found.
    pub violations: Vec<Violation>,
    /// Simulated time the run took.
    pub sim_time: Duration,
}

impl Report {
    /// A short account of each violation with the operations around it.
    pub fn explain(&self) -> String {
        let mut out =
            format!("seed {} ({} operations): {} violation(s)\n", self.seed, self.history.len(), self.violations.len());
        for v in self.violations.iter().take(3) {
            out.push_str(&naxos_check::explain(&self.history, v, 6));
            out.push('\n');
        }
        out.push_str(&format!("rerun with NAXOS_SIM_SEED={}\n", self.seed));
        out
    }
}

/// Positions per segment file on the simulated servers (small: runs cross
/// many segments, evict them and load them back).
pub const SEGMENT_POSITIONS: u64 = 64;

fn server_host(i: usize) -> String {
    format!("n{i}")
}

async fn server(
    i: usize,
    seed: u64,
    io: Arc<fs::IoFaults>,
    rot: Arc<rot::Rot>,
    seeds: Vec<String>,
    join: Option<String>,
) -> turmoil::Result {
    rot.apply(&server_host(i), &format!("{}:{PORT}", server_host(i)), std::path::Path::new("/data"), &seeds).await;
    let mut config = naxos_server::Config::new(format!("0.0.0.0:{PORT}"), "/data");
    config.join = join;
    // Spares step in after 2 s (10 s by default), so that runs use them.
    config.health.spare_after = Duration::from_secs(2);
    config.advertise = Some(format!("{}:{PORT}", server_host(i)));
    config.storage_thread = false;
    config.clock = || 0;
    config.segment_positions = SEGMENT_POSITIONS;
    // Small preallocation steps: records land in and past the zeros under every fault.
    config.preallocate_bytes = 4096;
    // Few resident segments: older ones are evicted and reloaded from their index files.
    config.resident_segments_max = 2;
    config.token_ceiling_block = 16;
    config.fs = Arc::new(fs::TurmoilFs::new(io));
    config.node_id = Some(naxos_wire::NodeId(seed.wrapping_mul(31).wrapping_add(i as u64 + 1)));
    config.sync_delay_max = Duration::from_millis(3);
    // A start can fail on an injected I/O error; a supervisor would retry it.
    loop {
        match naxos_server::start(config.clone(), Arc::new(net::TurmoilNet)).await {
            Ok(mut handle) => {
                handle.wait().await;
                return Ok(());
            }
            Err(e) => {
                tracing::warn!("simulated server {i} failed to start: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Steps the simulation until every client host is done, injecting faults
/// after each step if asked; a host's failure ends the run with the fault log.
fn run_phase(
    sim: &mut turmoil::Sim<'_>,
    faults: &mut faults::Faults,
    inject: bool,
    seed: u64,
    phase: &str,
) -> Result<(), String> {
    loop {
        match sim.step() {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(e) => {
                return Err(format!(
                    "seed {seed}: simulation failed in the {phase} phase: {e}\nfaults so far:\n{}",
                    faults.log.join("\n")
                ))
            }
        }
        if inject {
            faults.step(sim);
        }
    }
}

/// Runs one seed; `Err` if the simulation itself broke (a host failed or it ran too long).
pub fn run(config: &SimConfig) -> Result<Report, String> {
    if !naxos_wire::mutation::set(config.mutation) {
        return Err("mutations are compiled in only with the `mutations` feature of naxos-wire (test builds)".into());
    }
    let result = run_inner(config);
    naxos_wire::mutation::set(None);
    result
}

fn run_inner(config: &SimConfig) -> Result<Report, String> {
    let seed = config.seed;
    let mut builder = turmoil::Builder::new();
    builder
        .rng_seed(seed)
        .simulation_duration(Duration::from_secs(3600))
        .tick_duration(Duration::from_millis(1))
        .min_message_latency(Duration::from_micros(100))
        .max_message_latency(Duration::from_millis(2))
        .enable_random_order()
        // Simulated sockets have no flow control: give them room for bulk reads.
        .tcp_capacity(1 << 16);
    builder.fs().block_size(4096).sync_probability(0.05);
    let mut sim = builder.build();

    let servers: Vec<String> = (0..config.servers).map(server_host).collect();
    let addrs: Vec<String> = servers.iter().map(|h| format!("{h}:{PORT}")).collect();
    let io = fs::IoFaults::new(seed, config.io_error_probability);
    let rot = Arc::new(rot::Rot::default());
    for (i, host) in servers.iter().enumerate() {
        let (io, rot, seeds) = (io.clone(), rot.clone(), addrs.clone());
        sim.host(host.as_str(), move || server(i, seed, io.clone(), rot.clone(), seeds.clone(), None));
    }
    if config.spare {
        let i = config.servers;
        let (io, rot, seeds) = (io.clone(), rot.clone(), addrs.clone());
        let join = Some(addrs[0].clone());
        sim.host(server_host(i).as_str(), move || {
            server(i, seed, io.clone(), rot.clone(), seeds.clone(), join.clone())
        });
    }
    let layout = Layout::initial(
        &format!("sim-{seed}"),
        &addrs,
        config.replication,
        config.stripes,
        // As `naxos bootstrap` does: every server a sequencer (the first is
        // the primary), and every server a layout server.
        addrs.clone(),
        addrs.clone(),
    );
    let boot = layout.clone();
    sim.client("admin", async move {
        let mut last = String::new();
        for _ in 0..100 {
            match naxos_client::admin::bootstrap(Arc::new(net::TurmoilNet), &boot).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(format!("bootstrap never succeeded: {last}").into())
    });

    let shared = Shared::default();
    // What the settle check and the object clients find besides the history.
    let found = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<String> = (0..config.clients).map(|i| format!("c{i}")).collect();
    for (i, name) in clients.iter().enumerate() {
        let shared = shared.clone();
        let seeds = addrs.clone();
        let ops = config.ops_per_client;
        if config.objects {
            sim.client(name.as_str(), objects::run(shared, i as u32, seed, ops, seeds, found.clone()));
        } else {
            sim.client(name.as_str(), workload::run(shared, i as u32, seed, ops, seeds));
        }
    }

    if config.byzantine {
        sim.client("byz", byzantine::run(shared.clone(), seed, addrs.clone(), found.clone()));
    }

    let mut faults =
        faults::Faults::new(seed, servers.clone(), clients.clone(), addrs.clone(), config.churn, rot.clone());
    if config.spare {
        faults.extra.push(server_host(config.servers));
    }
    run_phase(&mut sim, &mut faults, config.faults, seed, "workload")?;
    io.stop();
    faults.heal(&mut sim);
    let scanner = u32::try_from(config.clients).unwrap_or(u32::MAX);
    // The churn script leaves one unit holding the log on purpose: not
    // whole. Without faults there is nothing to heal (and the mutation
    // test that runs so leaves a log trimmed above its tail, which no
    // append can heal).
    if !config.churn && config.faults {
        sim.client("settle", settle::settle(shared.clone(), scanner + 1, addrs.clone(), found.clone()));
        run_phase(&mut sim, &mut faults, false, seed, "settle")?;
    }
    if config.objects {
        // Object records are not the log workload's appends: the log
        // scanner's validity check would not know them.
        sim.client("scanner", objects::finish(shared.clone(), scanner, addrs.clone(), found.clone()));
    } else {
        sim.client("scanner", workload::scan(shared.clone(), scanner, addrs.clone()));
    }
    run_phase(&mut sim, &mut faults, false, seed, "quiescent")?;
    let sim_time = sim.elapsed();
    let pushed = shared.take();
    // Events are pushed when they end; order them by start for readability
    // (the checkers do not depend on the order).
    let mut order: Vec<usize> = (0..pushed.len()).collect();
    order.sort_by_key(|&i| (pushed[i].start, pushed[i].end, pushed[i].client));
    let mut rank = vec![0; pushed.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let events: Vec<_> = order.iter().map(|&i| pushed[i].clone()).collect();
    let mut trace = faults.log.clone();
    trace.extend(rot.applied.lock().map(|a| a.clone()).unwrap_or_default());
    trace.extend(events.iter().map(|e| format!("{e:?}")));
    let history = History::from(events);
    let mut violations = naxos_check::check_all(&history);
    // The settle checks named events in the order they were pushed.
    let mut settled = found.lock().map(|f| f.clone()).unwrap_or_default();
    for v in &mut settled {
        v.events = v.events.iter().filter_map(|&i| rank.get(i).copied()).collect();
    }
    violations.extend(settled);
    Ok(Report { seed, history, trace, violations, sim_time })
}
