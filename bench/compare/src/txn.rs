//! The transfer workload (issue 10): `clients` tasks, each running one
//! read-modify-write transfer at a time between two random accounts of a
//! fresh bank, each tried once (after an abort the task picks the next
//! pair), for the duration; then the total balance is read back and must be
//! what the accounts opened with. With many accounts the transfers seldom
//! touch the same keys (no contention); with 10 accounts and 64 clients
//! most of them collide, and what counts is the goodput: commits per second.
//! Its rows go to a results file of their own, printed as a second table.

use crate::peers::{self, Attempt, Bank};
use anyhow::Context;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What every account opens with.
const OPENING_BALANCE: i64 = 1_000;
/// A task that fails this many transfers (errors, not aborts) stops early.
const TASK_ERRORS_MAX: u64 = 100;
/// The rows that the ratios are taken against.
const BASELINE: &str = "Naxos RF=1";

/// `measure-txn`'s arguments.
#[derive(clap::Args)]
pub struct MeasureTxnArgs {
    /// Which client to drive (naxos, etcd or redis).
    #[arg(long, value_enum)]
    pub system: peers::System,
    /// Address(es) of the system, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub addr: Vec<String>,
    /// Row label in the table.
    #[arg(long)]
    pub label: String,
    /// Whether the system acknowledges only after fsync; anything but "yes" is shown.
    #[arg(long, default_value = "yes")]
    pub durable: String,
    /// Seconds of transfers per case.
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Accounts per case, one case each: many for no contention, 10 for contention.
    #[arg(long, value_delimiter = ',', default_value = "100000,10")]
    pub accounts: Vec<u64>,
    /// Clients, each with one transfer outstanding.
    #[arg(long, default_value_t = 64)]
    pub clients: usize,
    /// Which round of a repeated run this is.
    #[arg(long, default_value_t = 1)]
    pub round: u32,
    /// The results file (JSON lines); rows are appended.
    #[arg(long)]
    pub out: PathBuf,
}

/// One system in one transfer case.
#[derive(Serialize, Deserialize, Default)]
pub struct TxnRow {
    pub label: String,
    pub durable: String,
    pub accounts: u64,
    pub clients: usize,
    pub secs: f64,
    pub commits: u64,
    pub aborts: u64,
    pub errors: u64,
    /// p50 and p99 of committed transfers, in microseconds.
    pub latency_us: Option<[u64; 2]>,
    /// Whether the total read back at the end was the opening total.
    pub total_ok: Option<bool>,
    pub method: String,
    pub notes: Vec<String>,
    #[serde(default)]
    pub round: u32,
}

impl TxnRow {
    fn commits_per_s(&self) -> Option<f64> {
        (self.commits > 0 && self.secs > 0.0).then(|| self.commits as f64 / self.secs)
    }

    fn aborts_per_s(&self) -> Option<f64> {
        (self.secs > 0.0).then(|| self.aborts as f64 / self.secs)
    }

    fn latency_ms(&self, i: usize) -> Option<f64> {
        self.latency_us.map(|l| l[i] as f64 / 1000.0)
    }
}

/// Runs every accounts case against one system and appends a row per case.
pub async fn measure(a: MeasureTxnArgs) -> anyhow::Result<()> {
    let run_id = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    for &accounts in &a.accounts {
        let accounts = accounts.max(2);
        let name = format!("{}-tx{accounts}-{run_id}", crate::workload::slug(&a.label));
        let mut row = TxnRow {
            label: a.label.clone(),
            durable: a.durable.clone(),
            accounts,
            clients: a.clients.max(1),
            round: a.round,
            ..TxnRow::default()
        };
        match peers::open_bank(a.system, &a.addr, &name, accounts, OPENING_BALANCE, row.clients).await {
            Ok(bank) => run_case(bank, Duration::from_secs_f64(a.duration), &mut row).await,
            Err(e) => row.notes.push(format!("n/a: {e:#}")),
        }
        eprintln!(
            "{:<14} {:>6} accounts x{:<3} {:>8} commits/s {:>8} aborts/s  p50 {} ms  total {}  {}",
            row.label,
            row.accounts,
            row.clients,
            opt(row.commits_per_s(), 0),
            opt(row.aborts_per_s(), 0),
            opt(row.latency_ms(0), 2),
            match row.total_ok {
                Some(true) => "kept",
                Some(false) => "CHANGED",
                None => "n/a",
            },
            row.notes.join("; ")
        );
        append(&a.out, &row)?;
    }
    Ok(())
}

struct TaskOutcome {
    commits: u64,
    aborts: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

async fn run_case(bank: Arc<dyn Bank>, duration: Duration, row: &mut TxnRow) {
    row.method = bank.method().to_string();
    let accounts = row.accounts;
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(row.clients);
    for client in 0..row.clients {
        let bank = bank.clone();
        let mut rng = (client as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        tasks.push(tokio::spawn(async move {
            let mut out =
                TaskOutcome { commits: 0, aborts: 0, errors: 0, first_error: None, hist: crate::workload::histogram() };
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            while Instant::now() < deadline && out.errors < TASK_ERRORS_MAX {
                let from = next() % accounts;
                let to = (from + 1 + next() % (accounts - 1)) % accounts;
                let amount = (next() % 10 + 1) as i64;
                let t0 = Instant::now();
                match bank.transfer(client, from, to, amount).await {
                    Ok(Attempt::Committed) => {
                        out.commits += 1;
                        out.hist.saturating_record(t0.elapsed().as_micros() as u64);
                    }
                    Ok(Attempt::Aborted) => out.aborts += 1,
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            out
        }));
    }
    let mut hist = crate::workload::histogram();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(o) => {
                row.commits += o.commits;
                row.aborts += o.aborts;
                row.errors += o.errors;
                if let Err(e) = hist.add(&o.hist) {
                    first_error.get_or_insert(format!("histogram: {e}"));
                }
                if first_error.is_none() {
                    first_error = o.first_error;
                }
            }
            Err(e) => {
                first_error.get_or_insert(format!("transfer task: {e}"));
            }
        }
    }
    row.secs = started.elapsed().as_secs_f64();
    if !hist.is_empty() {
        row.latency_us = Some([hist.value_at_quantile(0.5), hist.value_at_quantile(0.99)]);
    }
    if let Some(e) = first_error {
        row.notes.push(format!("{} errors, first: {e}", row.errors));
    }
    match bank.total().await {
        Ok(total) => {
            let expected = OPENING_BALANCE * accounts as i64;
            row.total_ok = Some(total == expected);
            if total != expected {
                row.notes.push(format!("TOTAL CHANGED: {total}, opened with {expected}"));
            }
        }
        Err(e) => row.notes.push(format!("total n/a: {e:#}")),
    }
}

fn append(path: &Path, row: &TxnRow) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    let line = serde_json::to_string(row).context("encoding a row")?;
    writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "n/a".into())
}

/// Prints the transfer results as one Markdown table (medians over rounds;
/// each ratio the median of the ratios within a round), then one line per
/// case: Naxos against the better peer.
pub fn print(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows: Vec<TxnRow> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        rows.push(serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?);
    }
    let mut groups: Vec<Vec<&TxnRow>> = Vec::new();
    for r in &rows {
        match groups.iter_mut().find(|g| g[0].label == r.label && g[0].accounts == r.accounts) {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.sort_by_key(|g| std::cmp::Reverse(g[0].accounts));
    let med =
        |g: &[&TxnRow], metric: &dyn Fn(&TxnRow) -> Option<f64>| crate::report::median(g.iter().map(|r| metric(r)));
    let ratio = |g: &[&TxnRow]| {
        crate::report::median(g.iter().map(|r| {
            let ours = rows
                .iter()
                .find(|b| b.label == BASELINE && b.accounts == r.accounts && b.round == r.round)
                .and_then(TxnRow::commits_per_s)?;
            r.commits_per_s().filter(|&t| t > 0.0).map(|t| ours / t)
        }))
    };
    println!(
        "| System | Durable | Accounts | Clients | Commits/s | Aborts/s | p50 ms | p99 ms | Total kept | {BASELINE} ÷ this: commits | How |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for g in &groups {
        let r = g[0];
        let kept = if g.iter().all(|r| r.total_ok == Some(true)) {
            "yes".to_string()
        } else if g.iter().any(|r| r.total_ok == Some(false)) {
            "NO".to_string()
        } else {
            "n/a".to_string()
        };
        let mut how = vec![r.method.clone()];
        if g.len() > 1 {
            how.push(format!("median of {} runs", g.len()));
        }
        for n in g.iter().flat_map(|r| r.notes.iter()) {
            if !how.contains(n) {
                how.push(n.clone());
            }
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.durable,
            r.accounts,
            r.clients,
            opt(med(g, &TxnRow::commits_per_s), 0),
            opt(med(g, &TxnRow::aborts_per_s), 0),
            opt(med(g, &|r| r.latency_ms(0)), 2),
            opt(med(g, &|r| r.latency_ms(1)), 2),
            kept,
            ratio(g).map(|x| format!("{x:.2}x")).unwrap_or_else(|| "n/a".into()),
            how.join("; ")
        );
    }
    println!();
    let mut cases: Vec<u64> = groups.iter().map(|g| g[0].accounts).collect();
    cases.dedup();
    for accounts in cases {
        let in_case = || groups.iter().filter(move |g| g[0].accounts == accounts);
        let best = in_case()
            .filter(|g| !g[0].label.starts_with("Naxos"))
            .filter_map(|g| med(g, &TxnRow::commits_per_s).map(|c| (g[0].label.as_str(), c)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let ours = in_case().find(|g| g[0].label == BASELINE).and_then(|g| med(g, &TxnRow::commits_per_s));
        if let (Some((peer, theirs)), Some(ours)) = (best, ours) {
            println!(
                "- {accounts} accounts: most commits/s of the peers: {peer} {theirs:.0}/s; {BASELINE} {ours:.0}/s, {:.2}x that",
                ours / theirs
            );
        }
    }
    Ok(())
}
