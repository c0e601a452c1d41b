//! `naxos reconfigure`: the operator's changes to a running cluster, each one
//! reconfiguration through `naxos_control` (seal the active segment, agree on
//! the next layout with the layout servers, bootstrap the sequencer).

use crate::cli::{init_logging, ClusterArg};
use crate::exit::{Coded, UNAVAILABLE, USAGE};
use anyhow::bail;
use clap::{Args, Subcommand};
use naxos_control::reconfig::Error as ReconfigError;
use naxos_control::{Change, Options};
use std::time::Duration;

/// What to change.
#[derive(Subcommand, Debug)]
pub enum ReconfigureCommand {
    /// Take a log unit out of every chain it is in (reads go on from the
    /// other replicas); if it is the primary sequencer, the next sequencer
    /// of the layout takes over. Refused if a chain would be left empty.
    Remove {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The node's address, as the layout names it.
        addr: String,
    },
    /// Put a log unit at the tail of the chains of every segment (of one
    /// stripe, or of every stripe), after copying to it what it lacks (state
    /// transfer: incremental, so a returning node gets only what it missed,
    /// resumable, throttled by --transfer-bytes-per-s-max). A server that was
    /// never bootstrapped is enrolled in the cluster first; one of another
    /// cluster is refused.
    Add {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The node's address.
        addr: String,
        /// Join only this stripe's chain (default: every stripe).
        #[arg(long)]
        stripe: Option<usize>,
    },
    /// Make ADDR the primary sequencer (it is bootstrapped with the log's
    /// tail and every stream's tail, read from the log units).
    Sequencer {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The node's address (a server running the sequencer role).
        addr: String,
    },
    /// Seal the active segment and start a new one with a new shape (more
    /// stripes for more throughput, or other nodes).
    Segment {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Log unit addresses, in chain order (comma-separated).
        #[arg(long, value_delimiter = ',', required = true)]
        log_units: Vec<String>,
        /// Replicas per chain (default: all log units divided by --stripes).
        #[arg(long)]
        replication: Option<usize>,
        /// Number of chains positions are striped over.
        #[arg(long, default_value_t = 1)]
        stripes: usize,
    },
}

/// Flags shared by every `reconfigure` command.
#[derive(Args, Debug)]
pub struct ReconfigureArgs {
    /// What to change.
    #[command(subcommand)]
    pub command: ReconfigureCommand,
    /// The longest wait for one node's answer, in milliseconds.
    #[arg(long, default_value_t = 1000, global = true)]
    pub timeout_ms: u64,
    /// The most bytes per second a state transfer (`add`) sends, so that it
    /// does not starve appends (0: no limit).
    #[arg(long, default_value_t = 256 << 20, global = true, env = "NAXOS_TRANSFER_BYTES_PER_S_MAX")]
    pub transfer_bytes_per_s_max: u64,
}

/// `naxos reconfigure ...`.
pub async fn run(a: ReconfigureArgs, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    let (cluster, change) = match a.command {
        ReconfigureCommand::Remove { cluster, addr } => (cluster, Change::Remove(addr)),
        ReconfigureCommand::Add { cluster, addr, stripe } => (cluster, Change::Add { addr, stripe }),
        ReconfigureCommand::Sequencer { cluster, addr } => (cluster, Change::Sequencer(addr)),
        ReconfigureCommand::Segment { cluster, log_units, replication, stripes } => {
            let replication = replication.unwrap_or(log_units.len().checked_div(stripes).unwrap_or(0));
            (cluster, Change::Segment { log_units, replication, stripes })
        }
    };
    let progress = std::sync::Arc::new(naxos_client::loglet::Progress::default());
    let options = Options {
        timeout_call: Duration::from_millis(a.timeout_ms.max(1)),
        transfer_bytes_per_s_max: a.transfer_bytes_per_s_max,
        progress: Some(progress.clone()),
        ..Options::default()
    };
    // The state transfer's progress, while the change runs (a bar on a terminal).
    let bar = crate::progress::bar(0, "copying positions");
    let shown = {
        let (bar, progress) = (bar.clone(), progress.clone());
        tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            loop {
                bar.set_length(progress.positions_total.load(Relaxed));
                bar.set_position(progress.positions_done.load(Relaxed));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let outcome = naxos_control::reconfigure(cluster.tls.net()?, &cluster.cluster, &change, &options).await;
    shown.abort();
    bar.finish_and_clear();
    let report = match outcome {
        Ok(r) => r,
        Err(ReconfigError::Refused(why)) => {
            bail!(Coded { code: USAGE, kind: "refused", message: format!("{change}: refused: {why}") })
        }
        Err(ReconfigError::Unavailable(why)) => {
            bail!(Coded { code: UNAVAILABLE, kind: "unavailable", message: format!("{change}: {why}") })
        }
        Err(e) => bail!("{change}: {e}"),
    };
    let l = &report.layout;
    if json {
        let v = serde_json::json!({
            "change": change.to_string(),
            "epoch_before": report.before.epoch,
            "epoch": l.epoch,
            "sealed_at": report.sealed_at.0,
            "sequencer": l.sequencers.first(),
            "rolled_forward": report.rolled_forward.iter().map(|e| e.0).collect::<Vec<_>>(),
            "not_committed": report.not_committed,
            "seal_to_ready_ms": report.seal_to_ready.as_secs_f64() * 1e3,
            "transfer": {
                "positions_missing": report.transfer.missing,
                "entries_copied": report.transfer.copied,
                "bytes_copied": report.transfer.bytes,
                "positions_diverged": report.transfer.diverged,
                "seconds": report.transfer_time.as_secs_f64(),
            },
            "layout": l,
        });
        println!("{v}");
    } else {
        println!("{change}: epoch {} -> {}", report.before.epoch, l.epoch);
        println!("  the segment before was sealed at position {}", report.sealed_at);
        println!("  primary sequencer: {}", l.sequencers.first().map_or("-", String::as_str));
        if !report.rolled_forward.is_empty() {
            let epochs: Vec<String> = report.rolled_forward.iter().map(|e| e.to_string()).collect();
            println!("  another change was chosen first at epoch(s) {}; this one was applied on top", epochs.join(","));
        }
        if !report.not_committed.is_empty() {
            println!("  not told yet (they learn it at their next request): {}", report.not_committed.join(", "));
        }
        if matches!(change, Change::Add { .. }) {
            let t = &report.transfer;
            if t.diverged > 0 {
                println!(
                    "  {} position(s) on it held values its chains decided otherwise (writes it took as a head that never completed); it stays out of those chains",
                    t.diverged
                );
            }
            let secs = report.transfer_time.as_secs_f64();
            println!(
                "  state transfer: {} of {} missing positions copied ({} bytes) in {:.2} s ({:.1} MB/s)",
                t.copied,
                t.missing,
                t.bytes,
                secs,
                t.bytes as f64 / secs.max(1e-9) / 1e6
            );
        }
        println!("  took {:.1} ms from the seal to the new sequencer", report.seal_to_ready.as_secs_f64() * 1e3);
    }
    Ok(())
}
