//! `naxos-sim`: run one simulated seed, or soak many in parallel.
//!
//! ```text
//! naxos-sim run --seed 42            # one seed; prints its report (and the trace with --trace)
//! naxos-sim soak --seconds 3600      # seeds 0, 1, 2, ... on every core until a violation or time is up
//! ```

use clap::{Parser, Subcommand};
use naxos_sim::{run, SimConfig};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deterministic simulation of Naxos: real server and client code on a
/// simulated network and file system, with faults and invariant checkers.
#[derive(Parser)]
#[command(name = "naxos-sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one seed and print what the checkers found.
    Run {
        /// The seed.
        #[arg(long, env = "NAXOS_SIM_SEED")]
        seed: u64,
        /// Operations per client.
        #[arg(long, default_value_t = 40)]
        ops: usize,
        /// Print the whole trace (faults and operations).
        #[arg(long)]
        trace: bool,
        /// Run the scripted membership churn instead of random
        /// reconfigurations (a unit leaves, comes back, then holds the log alone).
        #[arg(long)]
        churn: bool,
        /// Run the object workload (naxos-tango bank transfers, snapshot
        /// reads, a counter) instead of the log workload.
        #[arg(long)]
        objects: bool,
    },
    /// Run seeds until one fails, the time is up, or Ctrl-C; in parallel over cores.
    Soak {
        /// Stop after this many seconds (default: run until stopped).
        #[arg(long)]
        seconds: Option<u64>,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        jobs: Option<usize>,
        /// First seed.
        #[arg(long, default_value_t = 0)]
        start: u64,
        /// Operations per client.
        #[arg(long, default_value_t = 40)]
        ops: usize,
        /// Soak the object workload instead of the log workload.
        #[arg(long)]
        objects: bool,
    },
}

fn main() {
    let cli = Cli::parse();
    // Logs go to stderr, off unless RUST_LOG asks (e.g. RUST_LOG=naxos_server=debug).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("off"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
    match cli.command {
        Command::Run { seed, ops, trace, churn, objects } => {
            let mut c = SimConfig::new(seed);
            c.ops_per_client = ops;
            c.churn = churn;
            c.objects = objects;
            match run(&c) {
                Ok(r) => {
                    if trace {
                        for line in &r.trace {
                            println!("{line}");
                        }
                    }
                    println!(
                        "seed {seed}: {} operations, {:.1}s simulated, {} violation(s)",
                        r.history.len(),
                        r.sim_time.as_secs_f64(),
                        r.violations.len()
                    );
                    if !r.violations.is_empty() {
                        println!("{}", r.explain());
                        std::process::exit(1);
                    }
                }
                Err(e) => {
                    eprintln!("{e}");
                    std::process::exit(2);
                }
            }
        }
        Command::Soak { seconds, jobs, start, ops, objects } => soak(seconds, jobs, start, ops, objects),
    }
}

/// Runs one seed in a child process (`naxos-sim run`), exactly as a rerun
/// would; returns (passed, operations, output).
fn run_child(exe: &std::path::Path, seed: u64, ops: usize, objects: bool) -> (bool, u64, String) {
    let mut args = vec!["run".to_string(), "--seed".into(), seed.to_string(), "--ops".into(), ops.to_string()];
    if objects {
        args.push("--objects".into());
    }
    let out = std::process::Command::new(exe).args(&args).output();
    match out {
        Ok(o) => {
            let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
            let n = text
                .lines()
                .rev()
                .find_map(|l| l.split_once(" operations").and_then(|(a, _)| a.rsplit(' ').next()?.parse().ok()))
                .unwrap_or(0);
            (o.status.success(), n, text)
        }
        Err(e) => (false, 0, format!("cannot run {}: {e}", exe.display())),
    }
}

fn soak(seconds: Option<u64>, jobs: Option<usize>, start: u64, ops: usize, objects: bool) {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("naxos-sim: cannot find its own executable: {e}");
            std::process::exit(2);
        }
    };
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let deadline = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let next = Arc::new(AtomicU64::new(start));
    let stop = Arc::new(AtomicBool::new(false));
    let seeds_done = Arc::new(AtomicU64::new(0));
    let ops_done = Arc::new(AtomicU64::new(0));
    let began = Instant::now();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let (next, stop, seeds_done, ops_done) = (next.clone(), stop.clone(), seeds_done.clone(), ops_done.clone());
            let exe = exe.clone();
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    let (passed, n, text) = run_child(&exe, seed, ops, objects);
                    if passed {
                        ops_done.fetch_add(n, Ordering::Relaxed);
                        let done = seeds_done.fetch_add(1, Ordering::Relaxed) + 1;
                        if done % 1000 == 0 {
                            eprintln!(
                                "{done} seeds, {} operations, no violation ({:.0}s)",
                                ops_done.load(Ordering::Relaxed),
                                began.elapsed().as_secs_f64()
                            );
                        }
                    } else if !stop.swap(true, Ordering::Relaxed) {
                        println!("FAILING SEED {seed}\n{text}");
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let failed = stop.load(Ordering::Relaxed);
    println!(
        "soak: {} seeds, {} operations checked in {:.0}s, {}",
        seeds_done.load(Ordering::Relaxed),
        ops_done.load(Ordering::Relaxed),
        began.elapsed().as_secs_f64(),
        if failed { "a seed FAILED (see above)" } else { "no violation" }
    );
    if failed {
        std::process::exit(1);
    }
}
