//! `naxos bench tx`: transfers between random accounts of a fresh map in
//! serializable transactions (each tried once, so that aborts are counted
//! by cause), mixed with read-only snapshot reads of every balance. Prints
//! commits/s, aborts/s by cause and commit latency, and checks that every
//! snapshot, and the end state read by a fresh runtime, holds the opening
//! total; exits non-zero if one did not.

use crate::bench::BenchArgs;
use anyhow::{bail, Context};
use hdrhistogram::Histogram;
use naxos_client::{AbortCause, Client};
use naxos_tango::{Error, Runtime};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// What each account opens with.
const OPENING_BALANCE: i64 = 1_000;
/// Accounts opened per transaction while setting up.
const OPEN_PER_TX: usize = 500;

#[derive(Default)]
struct Tally {
    commits: u64,
    reads: u64,
    aborts: BTreeMap<String, u64>,
    errors: u64,
    /// Snapshots whose total was not the opening one.
    bad_totals: u64,
}

fn account(i: u64) -> String {
    format!("a{i:08}")
}

/// Runs the benchmark and prints its figures.
pub async fn run(a: &BenchArgs, json: bool) -> anyhow::Result<()> {
    let accounts = a.accounts.max(2);
    let mut config = a.cluster.config()?;
    config.batches_in_flight = a.batches_in_flight;
    let setup = Runtime::new(Client::connect(config.clone()).await.context("connecting")?);
    let name = format!("bench-tx/{:016x}", setup.id() as u64);
    let map = setup.map(&name);
    eprintln!("opening {accounts} accounts in map {name}...");
    let mut at = 0;
    while at < accounts {
        let end = (at + OPEN_PER_TX as u64).min(accounts);
        setup
            .transaction(|tx| {
                for i in at..end {
                    tx.put(&map, account(i), OPENING_BALANCE.to_string());
                }
                Ok(())
            })
            .await
            .context("opening the accounts")?;
        at = end;
    }
    let total = OPENING_BALANCE * accounts as i64;
    let deadline = Instant::now() + Duration::from_secs_f64(a.duration);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let rt = Runtime::new(Client::connect(config.clone()).await.context("connecting")?);
        for t in 0..a.depth.max(1) {
            let (rt, name) = (rt.clone(), name.clone());
            let read_fraction = a.read_fraction;
            let mut rng = (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (t as u64 + 1).wrapping_mul(104_729);
            tasks.push(tokio::spawn(async move {
                let map = rt.map(&name);
                let mut tally = Tally::default();
                let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
                let mut next = || {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    rng
                };
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    if (next() % 10_000) as f64 / 10_000.0 < read_fraction {
                        let seen = rt
                            .try_transaction(|tx| {
                                let mut sum = 0i64;
                                for (_, v) in tx.list(&map)? {
                                    sum += naxos_tango::parse::<i64>(&v)?;
                                }
                                Ok(sum)
                            })
                            .await;
                        match seen {
                            Ok(s) => {
                                tally.reads += 1;
                                tally.bad_totals += u64::from(s.value != total);
                            }
                            Err(_) => tally.errors += 1,
                        }
                        continue;
                    }
                    let from = next() % accounts;
                    let to = (from + 1 + next() % (accounts - 1)) % accounts;
                    let amount = (next() % 10 + 1) as i64;
                    let done = rt
                        .try_transaction(|tx| {
                            let a: i64 = naxos_tango::parse(&tx.get(&map, account(from))?.unwrap_or_default())?;
                            let b: i64 = naxos_tango::parse(&tx.get(&map, account(to))?.unwrap_or_default())?;
                            if a >= amount {
                                tx.put(&map, account(from), (a - amount).to_string());
                                tx.put(&map, account(to), (b + amount).to_string());
                            }
                            Ok(())
                        })
                        .await;
                    match done {
                        Ok(_) => {
                            tally.commits += 1;
                            let _ = hist.record(t0.elapsed().as_micros() as u64);
                        }
                        Err(Error::Aborted { cause, .. }) => {
                            let key = match cause {
                                AbortCause::Conflict => "conflict".to_string(),
                                other => other.to_string(),
                            };
                            *tally.aborts.entry(key).or_default() += 1;
                        }
                        Err(_) => tally.errors += 1,
                    }
                }
                (tally, hist)
            }));
        }
    }
    let mut all = Tally::default();
    let mut hist = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for t in tasks {
        let (tally, h) = t.await.context("bench task")?;
        all.commits += tally.commits;
        all.reads += tally.reads;
        all.errors += tally.errors;
        all.bad_totals += tally.bad_totals;
        for (k, v) in tally.aborts {
            *all.aborts.entry(k).or_default() += v;
        }
        hist.add(&h).context("merging histograms")?;
    }
    let secs = started.elapsed().as_secs_f64();
    // The end state, replayed by a runtime that saw none of it.
    let check = Runtime::new(Client::connect(config).await.context("connecting")?);
    let end_total: i64 = check
        .map(&name)
        .list()
        .await
        .context("reading the accounts back")?
        .iter()
        .map(|(_, v)| naxos_tango::parse::<i64>(v))
        .sum::<Result<i64, Error>>()?;
    let q = |p: f64| hist.value_at_quantile(p);
    let aborts: u64 = all.aborts.values().sum();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "workload": "tx", "accounts": accounts, "clients": a.clients, "depth": a.depth,
                "read_fraction": a.read_fraction, "seconds": secs,
                "commits": all.commits, "commits_per_s": all.commits as f64 / secs,
                "snapshot_reads": all.reads, "snapshot_reads_per_s": all.reads as f64 / secs,
                "aborts": all.aborts, "aborts_per_s": aborts as f64 / secs, "errors": all.errors,
                "commit_latency_us_p50": q(0.5), "commit_latency_us_p99": q(0.99),
                "bad_snapshot_totals": all.bad_totals, "end_total": end_total, "expected_total": total,
            })
        );
    } else {
        let causes: Vec<String> = all.aborts.iter().map(|(k, v)| format!("{k} {:.0}/s", *v as f64 / secs)).collect();
        println!(
            "tx: {accounts} accounts, {} clients x {} in flight, read fraction {}, {secs:.1} s: {:.0} commits/s, {:.0} snapshot reads/s, {:.0} aborts/s ({}), {} errors; commit latency us p50 {} p99 {}; totals: {} bad snapshot(s), end {end_total} of {total}",
            a.clients, a.depth, a.read_fraction, all.commits as f64 / secs, all.reads as f64 / secs,
            aborts as f64 / secs, if causes.is_empty() { "none".to_string() } else { causes.join(", ") },
            all.errors, q(0.5), q(0.99), all.bad_totals
        );
    }
    if all.errors > 0 {
        bail!("{} ok, {} errors: transactions failed other than by aborting", all.commits + all.reads, all.errors);
    }
    if all.bad_totals > 0 || end_total != total {
        bail!(
            "the total balance changed: {} snapshot(s) off, end total {end_total} instead of {total}",
            all.bad_totals
        );
    }
    Ok(())
}
