//! The peer comparison harness (issue 4, item 1): one load generator, run
//! against Naxos and against what a user would pick instead (Redis Streams,
//! etcd, ZooKeeper, NATS JetStream), and one table of the results; and a
//! transfer workload in transactions against the peers that have them
//! (etcd's `Txn`, Redis's `WATCH`/`MULTI`/`EXEC`), with a table of its own.
//!
//! This binary only measures and reports; `bench/compare/run` installs the
//! peers, starts each on 127.0.0.1 with a fresh data directory, calls
//! `measure` once per system and `report` once at the end. It is its own
//! cargo workspace so that the workspace's tests and CI never compile the
//! peers' clients.

mod peers;
mod report;
mod txn;
mod workload;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser)]
#[command(about = "Naxos against its peers: one workload, one table")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Prints a TCP port that is free on 127.0.0.1 right now.
    FreePort,
    /// Waits until a TCP server accepts connections at ADDR.
    WaitPort {
        addr: String,
        /// Seconds to wait before giving up.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Runs every case against one system and appends its rows to --out.
    Measure(MeasureArgs),
    /// Records that a system was not measured, with the reason.
    Skip {
        /// Row label, as `measure --label`.
        #[arg(long)]
        label: String,
        /// Why (shown in the table).
        #[arg(long)]
        reason: String,
        /// The results file (JSON lines).
        #[arg(long)]
        out: PathBuf,
    },
    /// Runs the transfer cases (transactions) against one system and appends its rows to --out.
    MeasureTxn(txn::MeasureTxnArgs),
    /// Prints the table of a transfer results file.
    ReportTxn {
        /// The results file (JSON lines).
        #[arg(long = "in")]
        input: PathBuf,
    },
    /// Prints the table of a results file.
    Report {
        /// The results file (JSON lines).
        #[arg(long = "in")]
        input: PathBuf,
    },
}

#[derive(clap::Args)]
pub struct MeasureArgs {
    /// Which client to drive.
    #[arg(long, value_enum)]
    pub system: peers::System,
    /// Address(es) of the system, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub addr: Vec<String>,
    /// Row label in the table (e.g. "Naxos RF=3").
    #[arg(long)]
    pub label: String,
    /// Whether the system acknowledges only after fsync; anything but "yes" is shown.
    #[arg(long, default_value = "yes")]
    pub durable: String,
    /// Seconds of appends per case.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Payload sizes in bytes.
    #[arg(long, value_delimiter = ',', default_value = "128,4096")]
    pub sizes: Vec<usize>,
    /// Appends in flight (tasks, each with one append outstanding).
    #[arg(long, value_delimiter = ',', default_value = "1,64")]
    pub in_flight: Vec<usize>,
    /// Which round of a repeated run this is (ratios compare rows of one round).
    #[arg(long, default_value_t = 1)]
    pub round: u32,
    /// The results file (JSON lines); rows are appended.
    #[arg(long)]
    pub out: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The same runtime for every system's client: a quarter of the cores (at
    // least 1), as the naxos binary uses; NAXOS_WORKER_THREADS overrides.
    let workers = std::env::var("NAXOS_WORKER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or_else(|| (std::thread::available_parallelism().map_or(1, |n| n.get()) / 4).clamp(1, 4));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers.max(1))
        .enable_all()
        .build()
        .context("starting tokio")?;
    rt.block_on(async move {
        match cli.command {
            Command::FreePort => {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
                println!("{}", listener.local_addr().context("local address")?.port());
                Ok(())
            }
            Command::WaitPort { addr, timeout } => wait_port(&addr, Duration::from_secs_f64(timeout)).await,
            Command::Measure(a) => workload::measure(a).await,
            Command::Skip { label, reason, out } => report::append(&out, &[report::Row::skipped(label, reason)]),
            Command::Report { input } => report::print(&input),
            Command::MeasureTxn(a) => txn::measure(a).await,
            Command::ReportTxn { input } => txn::print(&input),
        }
    })
}

async fn wait_port(addr: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).with_context(|| format!("nothing listens at {addr} after {timeout:?}"))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
