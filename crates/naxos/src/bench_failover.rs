//! `naxos bench failover`: the append unavailability window of a
//! reconfiguration. Tasks append at the given depth while the primary
//! sequencer is moved round the layout's sequencers; for each change, the
//! window runs from the start of the seal to the first append acknowledged at
//! a position of the new epoch's segment.

use crate::bench::BenchArgs;
use anyhow::{bail, Context};
use bytes::Bytes;
use naxos_client::Client;
use naxos_control::{Change, Options};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Pause between two changes, so that each starts from a steady state.
const BETWEEN_CHANGES: Duration = Duration::from_millis(200);

/// Runs the failover benchmark and prints its figures.
pub async fn run(a: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let mut config = a.cluster.config()?;
    config.batches_in_flight = a.batches_in_flight;
    let client = Client::connect(config).await.context("connecting")?;
    let sequencers = client.layout().sequencers.clone();
    if sequencers.len() < 2 {
        bail!("failover needs a layout with two sequencers or more (naxos bootstrap --sequencers A,B,...)");
    }
    let acks: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from(vec![b'x'; a.size]);
    let mut tasks = Vec::new();
    for _ in 0..a.depth.max(1) {
        let (client, acks, stop, payload) = (client.clone(), acks.clone(), stop.clone(), payload.clone());
        tasks.push(tokio::spawn(async move {
            let mut errors = 0u64;
            while !stop.load(Ordering::Relaxed) {
                match client.append(payload.clone()).await {
                    Ok(p) => {
                        if let Ok(mut v) = acks.lock() {
                            v.push((Instant::now(), p.0));
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            errors
        }));
    }
    let options = Options::default();
    let mut changes: Vec<(Instant, u64, Duration)> = Vec::new();
    for i in 0..a.changes {
        tokio::time::sleep(BETWEEN_CHANGES).await;
        let target = sequencers[(i + 1) % sequencers.len()].clone();
        let report =
            naxos_control::reconfigure(a.cluster.tls.net()?, &a.cluster.cluster, &Change::Sequencer(target), &options)
                .await
                .with_context(|| format!("change {i}"))?;
        let start = report.layout.segments.last().map_or(0, |s| s.start);
        changes.push((report.seal_started, start, report.seal_to_ready));
    }
    tokio::time::sleep(BETWEEN_CHANGES).await;
    stop.store(true, Ordering::Relaxed);
    let mut errors = 0;
    for t in tasks {
        errors += t.await.context("append task")?;
    }
    let acks = acks.lock().map(|v| v.clone()).unwrap_or_default();
    let mut windows: Vec<f64> = Vec::new();
    for (sealed, start, _) in &changes {
        let first = acks.iter().filter(|(t, p)| t > sealed && *p >= *start).map(|(t, _)| *t).min();
        match first {
            Some(t) => windows.push(t.duration_since(*sealed).as_secs_f64() * 1e3),
            None => bail!("no append was acknowledged in the epoch that began at {start}"),
        }
    }
    let mut sorted = windows.clone();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() as f64 - 1.0) * q).round() as usize];
    let mut ready: Vec<f64> = changes.iter().map(|c| c.2.as_secs_f64() * 1e3).collect();
    ready.sort_by(f64::total_cmp);
    let ready_p50 = ready[(ready.len() - 1) / 2];
    if json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "failover", "changes": windows.len(), "depth": a.depth, "size": a.size,
                "window_ms_p50": at(0.5), "window_ms_p99": at(0.99), "window_ms_max": at(1.0),
                "seal_to_sequencer_ms_p50": ready_p50, "appends": acks.len(), "append_errors": errors,
            })
        );
    } else {
        println!(
            "Failover: {} sequencer changes under {} appends in flight of {} B: unavailability window ms p50 {:.1} p99 {:.1} max {:.1} (seal to new sequencer p50 {:.1} ms; {} appends, {} errors)",
            windows.len(), a.depth, a.size, at(0.5), at(0.99), at(1.0), ready_p50, acks.len(), errors
        );
    }
    Ok(())
}
