//! `naxos verify`: compares every replica of every chain below the tail, a
//! window at a time by range digests that each log unit computes over what it
//! holds, and position by position only where the digests differ. Read-only:
//! it reports what is missing or different and repairs nothing.

use crate::cli::{init_logging, ClusterArg};
use crate::exit::{Coded, DEGRADED};
use anyhow::Context;
use clap::Args;
use naxos_client::Client;
use naxos_wire::proto::{request, response, RangeDigest, ReadRange, Request};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{ErrorCode, Layout};
use std::collections::BTreeMap;

/// Flags of `naxos verify`.
#[derive(Args, Debug)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Positions compared per digest (a smaller window finds differences
    /// with less reading, a larger one makes fewer requests).
    #[arg(long, default_value_t = 4096)]
    pub window: u64,
    /// Differences listed at most (all are counted).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// One difference between the replicas of a chain.
#[derive(Debug)]
struct Difference {
    segment_start: u64,
    stripe: usize,
    position: u64,
    replica: String,
    /// `missing` (others hold it) or `different` (another value than the
    /// chain's first replica that holds it).
    problem: &'static str,
}

/// Which positions of a segment one stripe holds.
#[derive(Clone, Copy)]
struct Stripe {
    start: u64,
    count: u32,
    index: u32,
}

impl Stripe {
    fn holds(&self, p: u64) -> bool {
        p >= self.start && (p - self.start) % u64::from(self.count) == u64::from(self.index)
    }
}

fn req(layout: &Layout, body: request::Body) -> Request {
    Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body) }
}

/// What a replica answered for a digest window.
enum Digest {
    Held { digest: u32, count: u64, next: u64 },
    Trimmed,
}

async fn digest(pool: &Pool, layout: &Layout, addr: &str, from: u64, to: u64, s: Stripe) -> anyhow::Result<Digest> {
    let body = request::Body::RangeDigest(RangeDigest {
        from,
        to,
        stripe_start: s.start,
        stripe_count: s.count,
        stripe_index: s.index,
    });
    match pool.call(addr, req(layout, body)).await {
        Ok(response::Body::RangeDigest(d)) => Ok(Digest::Held { digest: d.digest, count: d.count, next: d.next }),
        Ok(_) => anyhow::bail!("{addr} answered a digest request with something else"),
        Err(rpc::Error::Server { error, .. }) if error.code == ErrorCode::Trimmed => Ok(Digest::Trimmed),
        Err(e) => Err(e).with_context(|| format!("asking {addr} for a digest of [{from}, {to})")),
    }
}

/// What `addr` holds in [from, to) of stripe `s`: position -> (kind, payload).
async fn held(
    pool: &Pool,
    layout: &Layout,
    addr: &str,
    from: u64,
    to: u64,
    s: Stripe,
) -> anyhow::Result<BTreeMap<u64, (i32, bytes::Bytes)>> {
    let mut out = BTreeMap::new();
    let mut at = from;
    while at < to {
        let body = request::Body::ReadRange(ReadRange { from: at, to, max_bytes: 16 << 20 });
        match pool.call(addr, req(layout, body)).await {
            Ok(response::Body::ReadRange(r)) => {
                for pe in r.entries {
                    if let Some(e) = pe.entry.filter(|_| s.holds(pe.position)) {
                        out.insert(pe.position, (e.kind, e.payload));
                    }
                }
                at = r.next.max(at + 1);
            }
            Ok(_) => anyhow::bail!("{addr} answered a read range with something else"),
            Err(e) => return Err(e).with_context(|| format!("reading [{at}, {to}) from {addr}")),
        }
    }
    Ok(out)
}

/// `naxos verify`.
pub async fn run(a: VerifyArgs, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    let client = Client::connect(a.cluster.config()?).await.context("connecting")?;
    let layout = client.refresh_layout().await.context("reading the layout")?;
    let tail = client.tail().await.context("reading the tail")?.0;
    let pool = Pool::new(a.cluster.tls.net()?, rpc::Options::default());
    let window = a.window.max(1);
    let mut differences: Vec<Difference> = Vec::new();
    let (mut positions, mut chains, mut trimmed_windows) = (0u64, 0usize, 0u64);
    let to_compare: u64 = layout
        .segments
        .iter()
        .map(|seg| seg.end.unwrap_or(tail).min(tail).saturating_sub(seg.start) * seg.stripes.len() as u64)
        .sum();
    let bar = crate::progress::bar(to_compare, "verifying positions");
    for seg in &layout.segments {
        let end = seg.end.unwrap_or(tail).min(tail);
        let count = seg.stripes.len() as u32;
        for (index, st) in seg.stripes.iter().enumerate() {
            chains += 1;
            let s = Stripe { start: seg.start, count: count.max(1), index: index as u32 };
            let mut at = seg.start;
            while at < end {
                let mut to = (at + window).min(end);
                // Every replica's digest of the same range (a replica may stop
                // early on a large window: the range shrinks to the shortest).
                let digests = loop {
                    let mut got = Vec::new();
                    for r in &st.chain {
                        got.push(digest(&pool, &layout, r, at, to, s).await?);
                    }
                    let shortest = got
                        .iter()
                        .filter_map(|d| match d {
                            Digest::Held { next, .. } => Some(*next),
                            Digest::Trimmed => None,
                        })
                        .min()
                        .unwrap_or(to);
                    if shortest >= to {
                        break got;
                    }
                    to = shortest.max(at + 1);
                };
                bar.inc(to - at);
                if digests.iter().any(|d| matches!(d, Digest::Trimmed)) {
                    trimmed_windows += 1;
                    at = to;
                    continue;
                }
                let sums: Vec<(u32, u64)> = digests
                    .iter()
                    .filter_map(|d| match d {
                        Digest::Held { digest, count, .. } => Some((*digest, *count)),
                        Digest::Trimmed => None,
                    })
                    .collect();
                positions += sums.iter().map(|(_, c)| *c).max().unwrap_or(0);
                if sums.windows(2).any(|w| w[0] != w[1]) {
                    // Position by position, only here.
                    let mut each = Vec::new();
                    for r in &st.chain {
                        each.push(held(&pool, &layout, r, at, to, s).await?);
                    }
                    let mut all: Vec<u64> = each.iter().flat_map(|m| m.keys().copied()).collect();
                    all.sort_unstable();
                    all.dedup();
                    for p in all {
                        let first = each.iter().find_map(|m| m.get(&p));
                        for (r, m) in st.chain.iter().zip(&each) {
                            let problem = match (m.get(&p), first) {
                                (None, _) => "missing",
                                (Some(v), Some(f)) if v != f => "different",
                                _ => continue,
                            };
                            differences.push(Difference {
                                segment_start: seg.start,
                                stripe: index,
                                position: p,
                                replica: r.clone(),
                                problem,
                            });
                        }
                    }
                }
                at = to;
            }
        }
    }
    bar.finish_and_clear();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "epoch": layout.epoch, "tail": tail, "positions_compared": positions, "chains": chains,
                "trimmed_windows_skipped": trimmed_windows, "differences_total": differences.len(),
                "differences": differences.iter().take(a.limit).map(|d| serde_json::json!({
                    "segment_start": d.segment_start, "stripe": d.stripe, "position": d.position,
                    "replica": d.replica, "problem": d.problem,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        for d in differences.iter().take(a.limit) {
            println!(
                "segment {} chain {} position {}: {} on {}",
                d.segment_start, d.stripe, d.position, d.problem, d.replica
            );
        }
        println!(
            "compared {positions} positions below the tail {tail} in {chains} chain(s) of {} segment(s) at epoch {}: {}",
            layout.segments.len(),
            layout.epoch,
            if differences.is_empty() {
                "every replica agrees".to_string()
            } else {
                format!("{} difference(s)", differences.len())
            }
        );
    }
    if !differences.is_empty() {
        return Err(Coded {
            code: DEGRADED,
            kind: "replicas_differ",
            message: format!(
                "{} difference(s) between replicas (an unfinished write, whose writer stopped after the head, shows as missing on the later replicas until a read repairs it)",
                differences.len()
            ),
        }
        .into());
    }
    Ok(())
}
