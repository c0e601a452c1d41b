//! `naxos bench checkpoint`: fills a fresh map with --keys keys (--size bytes
//! each), checkpoints it, then opens it in fresh runtimes twice: from the
//! checkpoint, and by replaying its stream from the start. Prints the time of
//! each and checks that both see every key.

use crate::bench::BenchArgs;
use anyhow::{bail, Context};
use naxos_client::Client;
use naxos_tango::Runtime;
use std::time::Instant;

/// Keys per filling transaction (one commit record each, well under 1 MiB).
const KEYS_PER_TX: u64 = 1000;

/// Runs the benchmark and prints its figures.
pub async fn run(a: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let config = a.cluster.config()?;
    let connect = || async { Client::connect(config.clone()).await.context("connecting") };
    let filler = Runtime::new(connect().await?);
    let name = format!("bench-checkpoint/{:016x}", filler.id() as u64);
    let map = filler.map(&name);
    let value = "v".repeat(a.size.max(1));
    eprintln!("filling map {name} with {} keys of {} bytes...", a.keys, a.size);
    let started = Instant::now();
    let mut at = 0;
    while at < a.keys {
        let end = (at + KEYS_PER_TX).min(a.keys);
        filler
            .transaction(|tx| {
                for i in at..end {
                    tx.put(&map, format!("k{i:010}"), value.clone());
                }
                Ok(())
            })
            .await
            .context("filling the map")?;
        at = end;
    }
    let fill_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let checkpoint_at = map.checkpoint().await.context("writing the checkpoint")?;
    let checkpoint_s = started.elapsed().as_secs_f64();
    let open = |use_checkpoints: bool| {
        let name = name.clone();
        async move {
            let rt = Runtime::new(connect().await?);
            rt.set_use_checkpoints(use_checkpoints);
            let started = Instant::now();
            let n = rt.map(&name).len().await.context("opening the map")?;
            anyhow::Ok((started.elapsed().as_secs_f64(), n))
        }
    };
    let (from_checkpoint_s, n1) = open(true).await?;
    let (replay_s, n2) = open(false).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "keys": a.keys, "size": a.size, "fill_s": fill_s, "checkpoint_s": checkpoint_s,
                "checkpoint_at": checkpoint_at.0, "open_from_checkpoint_s": from_checkpoint_s, "open_by_replay_s": replay_s,
            })
        );
    } else {
        println!(
            "checkpoint: {} keys of {} B: filled in {fill_s:.1} s, checkpoint written in {checkpoint_s:.2} s; opened from the checkpoint in {from_checkpoint_s:.2} s, by replaying the log in {replay_s:.2} s",
            a.keys, a.size
        );
    }
    if n1 as u64 != a.keys || n2 as u64 != a.keys {
        bail!("the map opened with {n1} keys from the checkpoint and {n2} by replay, not {}", a.keys);
    }
    Ok(())
}
