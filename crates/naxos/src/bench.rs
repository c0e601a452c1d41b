//! `naxos bench`: a load generator. Clients x in-flight depth tasks run one
//! operation in a loop for a duration; it prints throughput (entries/s, MB/s)
//! and latency percentiles from an HDR histogram.

use crate::cli::{init_logging, ClusterArg};
use anyhow::Context;
use bytes::Bytes;
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use naxos_client::{Client, Position, Value};
use std::time::{Duration, Instant};

/// What to measure.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Workload {
    /// Durable appends of --size bytes (each waits for every replica).
    Append,
    /// Appends of --batch entries per token request.
    AppendBatch,
    /// Point reads of random positions among entries the bench first appends.
    Read,
    /// Sequential bulk reads (read_range) over entries the bench first appends.
    Scan,
    /// Sequencer tokens only (positions are reserved and left unwritten: they
    /// become holes when read, so do not run this against data you care about).
    Tokens,
    /// Appends at --depth while the primary sequencer is moved --changes
    /// times round the layout's sequencers (each a reconfiguration); prints
    /// each change's append unavailability window: from the seal to the first
    /// append acknowledged in the new epoch, p50 and p99.
    Failover,
    /// Transfers between random --accounts in serializable transactions
    /// (naxos-tango), with --read-fraction snapshot reads of every balance;
    /// prints commits/s, aborts/s by cause and latency, and fails if the
    /// total balance ever changed.
    Tx,
    /// Fills a map with --keys keys, checkpoints it, and opens it from the
    /// checkpoint and by replaying the log; prints both times.
    Checkpoint,
}

/// Flags of `naxos bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The workload.
    #[arg(value_enum)]
    pub workload: Workload,
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Independent clients (each with its own connections).
    #[arg(long, default_value_t = 1)]
    pub clients: usize,
    /// Operations in flight per client.
    #[arg(long, default_value_t = 64)]
    pub depth: usize,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Entries per operation for append-batch, positions per token for tokens.
    #[arg(long, default_value_t = 1)]
    pub batch: u32,
    /// Batches of concurrent appends (or token requests) a client keeps in
    /// flight; appends made meanwhile share the next batch. 0 sends each
    /// append (each token request) on its own.
    #[arg(long, default_value_t = 4)]
    pub batches_in_flight: usize,
    /// Take tokens and write heads in separate round trips even where the
    /// sequencer heads the chain (no `Append` request).
    #[arg(long)]
    pub no_combined_append: bool,
    /// Entries appended first by read and scan.
    #[arg(long, default_value_t = 20_000)]
    pub prefill: u64,
    /// Sequencer changes made by failover.
    #[arg(long, default_value_t = 50)]
    pub changes: usize,
    /// Accounts of tx (fewer accounts, more conflicts).
    #[arg(long, default_value_t = 1000)]
    pub accounts: u64,
    /// Fraction of tx's operations that are read-only snapshot reads of every balance.
    #[arg(long, default_value_t = 0.0)]
    pub read_fraction: f64,
    /// Keys of checkpoint's map.
    #[arg(long, default_value_t = 1_000_000)]
    pub keys: u64,
}

struct Outcome {
    entries: u64,
    errors: u64,
    hist: Histogram<u64>,
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: BenchArgs, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    if a.workload == Workload::Failover {
        return crate::bench_failover::run(&a, json).await;
    }
    if a.workload == Workload::Tx {
        return crate::bench_tx::run(&a, json).await;
    }
    if a.workload == Workload::Checkpoint {
        return crate::bench_checkpoint::run(&a, json).await;
    }
    let mut config = a.cluster.config()?;
    config.batches_in_flight = a.batches_in_flight;
    config.combined_append = !a.no_combined_append;
    let first = Client::connect(config.clone()).await.context("connecting")?;
    let payload = Bytes::from(vec![b'x'; a.size]);
    let mut range = (Position(0), Position(0));
    if matches!(a.workload, Workload::Read | Workload::Scan) {
        eprintln!("prefilling {} entries of {} bytes...", a.prefill, a.size);
        let start = first.tail().await?;
        let mut left = a.prefill;
        while left > 0 {
            let n = left.min(512);
            first.append_batch(vec![payload.clone(); n as usize]).await.context("prefilling")?;
            left -= n;
        }
        range = (start, first.tail().await?);
    }
    let duration = Duration::from_secs_f64(a.duration);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let client =
            if c == 0 { first.clone() } else { Client::connect(config.clone()).await.context("connecting")? };
        for t in 0..a.depth.max(1) {
            let client = client.clone();
            let payload = payload.clone();
            let workload = a.workload;
            let batch = a.batch.max(1);
            let seed = (c * 7919 + t * 104_729 + 1) as u64;
            tasks.push(tokio::spawn(async move {
                let mut out =
                    Outcome { entries: 0, errors: 0, hist: Histogram::new(3).expect("3 significant digits is valid") };
                let mut rng = seed;
                let mut scan_at = range.0 .0;
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let done: Result<u64, naxos_client::Error> = match workload {
                        Workload::Append => client.append(payload.clone()).await.map(|_| 1),
                        Workload::AppendBatch => {
                            client.append_batch(vec![payload.clone(); batch as usize]).await.map(|v| v.len() as u64)
                        }
                        Workload::Tokens => client.reserve(batch).await.map(|_| u64::from(batch)),
                        Workload::Failover | Workload::Tx | Workload::Checkpoint => Ok(0),
                        Workload::Read => {
                            rng ^= rng << 13;
                            rng ^= rng >> 7;
                            rng ^= rng << 17;
                            let span = (range.1 .0 - range.0 .0).max(1);
                            let p = Position(range.0 .0 + rng % span);
                            client.read(p).await.map(|v| matches!(v, Value::Data(_)) as u64)
                        }
                        Workload::Scan => {
                            if scan_at >= range.1 .0 {
                                scan_at = range.0 .0;
                            }
                            let end = (scan_at + 1024).min(range.1 .0);
                            let r = client.read_range(Position(scan_at), Position(end)).await.map(|v| v.len() as u64);
                            scan_at = end;
                            r
                        }
                    };
                    match done {
                        Ok(n) => {
                            out.entries += n;
                            let _ = out.hist.record(t0.elapsed().as_micros() as u64);
                        }
                        Err(_) => out.errors += 1,
                    }
                }
                out
            }));
        }
    }
    let mut total = Outcome { entries: 0, errors: 0, hist: Histogram::new(3).expect("3 significant digits is valid") };
    for t in tasks {
        let o = t.await.context("bench task")?;
        total.entries += o.entries;
        total.errors += o.errors;
        total.hist.add(&o.hist).context("merging histograms")?;
    }
    let secs = started.elapsed().as_secs_f64();
    let rate = total.entries as f64 / secs;
    let bytes = if a.workload == Workload::Tokens { 0.0 } else { rate * a.size as f64 / 1e6 };
    let q = |p: f64| total.hist.value_at_quantile(p);
    if json {
        println!(
            "{}",
            serde_json::json!({
                "workload": format!("{:?}", a.workload).to_lowercase(), "clients": a.clients, "depth": a.depth,
                "size": a.size, "batch": a.batch, "seconds": secs, "entries": total.entries, "errors": total.errors,
                "entries_per_s": rate, "mb_per_s": bytes, "ops": total.hist.len(),
                "latency_us_p50": q(0.5), "latency_us_p99": q(0.99), "latency_us_p999": q(0.999),
            })
        );
    } else {
        println!(
            "{:?}: {} clients x {} in flight, {} B, {:.1} s: {:.0} entries/s, {:.1} MB/s, latency us p50 {} p99 {} p999 {} ({} ok, {} errors)",
            a.workload, a.clients, a.depth, a.size, secs, rate, bytes, q(0.5), q(0.99), q(0.999), total.hist.len(), total.errors
        );
    }
    if total.errors > 0 {
        anyhow::bail!(
            "{} ok, {} errors: operations failed (the figures above count only those that succeeded)",
            total.hist.len(),
            total.errors
        );
    }
    Ok(())
}
