//! The results file (one JSON object a line, one line per system and case)
//! and the table printed from it.

use anyhow::Context;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;

/// The rows that the ratios are taken against.
const BASELINE_RF1: &str = "Naxos RF=1";
const BASELINE_RF3: &str = "Naxos RF=3";

/// One system in one case.
#[derive(Serialize, Deserialize, Default)]
pub struct Row {
    pub label: String,
    pub durable: String,
    pub size: usize,
    pub in_flight: usize,
    pub duration_s: f64,
    pub appends: u64,
    pub append_errors: u64,
    pub append_secs: f64,
    /// p50, p99, p999 of append latency in microseconds.
    pub latency_us: Option<[u64; 3]>,
    pub read_records: Option<u64>,
    pub read_bytes: u64,
    pub read_secs: f64,
    pub read_method: String,
    pub notes: Vec<String>,
    /// Set when the system was not measured at all: why.
    pub skipped: Option<String>,
    /// Which round of `run --repeat` the row is from (ratios compare rows of one round).
    #[serde(default)]
    pub round: u32,
}

impl Row {
    pub fn new(label: &str, durable: &str, size: usize, in_flight: usize, duration_s: f64, round: u32) -> Row {
        Row { label: label.into(), durable: durable.into(), size, in_flight, duration_s, round, ..Row::default() }
    }

    pub fn skipped(label: String, reason: String) -> Row {
        Row { label, skipped: Some(reason), ..Row::default() }
    }

    fn appends_per_s(&self) -> Option<f64> {
        (self.appends > 0 && self.append_secs > 0.0).then(|| self.appends as f64 / self.append_secs)
    }

    fn append_mb_per_s(&self) -> Option<f64> {
        self.appends_per_s().map(|a| a * self.size as f64 / 1e6)
    }

    fn latency_ms(&self, i: usize) -> Option<f64> {
        self.latency_us.map(|l| l[i] as f64 / 1000.0)
    }

    fn read_mb_per_s(&self) -> Option<f64> {
        self.read_records?;
        (self.read_secs > 0.0).then(|| self.read_bytes as f64 / self.read_secs / 1e6)
    }

    fn reads_per_s(&self) -> Option<f64> {
        let n = self.read_records.filter(|&n| n > 0)?;
        (self.read_secs > 0.0).then(|| n as f64 / self.read_secs)
    }

    /// One line for the log while the harness runs.
    pub fn summary(&self) -> String {
        format!(
            "{:<18} {:>5} B x{:<3} {:>10} appends/s  p50 {:>8} ms  reads {:>10}/s  {}",
            self.label,
            self.size,
            self.in_flight,
            opt(self.appends_per_s(), 0),
            self.latency_us.map(|l| ms(l[0])).unwrap_or_else(|| "n/a".into()),
            opt(self.reads_per_s(), 0),
            self.notes.join("; ")
        )
    }
}

/// Appends rows to the results file.
pub fn append(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    for row in rows {
        let line = serde_json::to_string(row).context("encoding a row")?;
        writeln!(f, "{line}").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn opt(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{v:.decimals$}")).unwrap_or_else(|| "n/a".into())
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

/// The median of the values that are there (the mean of the middle two for an even count).
pub(crate) fn median(values: impl IntoIterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.into_iter().flatten().collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 { v[mid] } else { (v[mid - 1] + v[mid]) / 2.0 })
}

/// Prints the results file as one Markdown table: one line per system and
/// case, each figure the median over the rounds, each ratio the median of the
/// ratios within a round (so a noisy round does not pair with a quiet one).
pub fn print(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        rows.push(row);
    }
    let (skipped, measured): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.skipped.is_some());
    // Groups of (label, size, in flight), in the order the systems first ran.
    let mut groups: Vec<Vec<&Row>> = Vec::new();
    for r in &measured {
        match groups.iter_mut().find(|g| g[0].label == r.label && g[0].size == r.size && g[0].in_flight == r.in_flight)
        {
            Some(g) => g.push(r),
            None => groups.push(vec![r]),
        }
    }
    groups.sort_by_key(|g| (g[0].size, g[0].in_flight));
    let baseline = |label: &str, r: &Row| {
        measured
            .iter()
            .find(|b| b.label == label && b.size == r.size && b.in_flight == r.in_flight && b.round == r.round)
    };
    let ratio = |g: &[&Row], label: &str, metric: fn(&Row) -> Option<f64>| {
        median(g.iter().map(|r| {
            let ours = baseline(label, r).and_then(metric)?;
            metric(r).filter(|&theirs| theirs > 0.0).map(|theirs| ours / theirs)
        }))
        .map(|x| format!("{x:.2}x"))
        .unwrap_or_else(|| "n/a".into())
    };
    let fig = |g: &[&Row], metric: fn(&Row) -> Option<f64>, decimals: usize| {
        opt(median(g.iter().map(|r| metric(r))), decimals)
    };
    println!(
        "| System | Durable | Size | In flight | Appends/s | MB/s | p50 ms | p99 ms | p999 ms | Read rec/s | Read MB/s \
         | RF=1 ÷ this: appends | RF=1 ÷ this: reads | RF=3 ÷ this: appends | Notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for g in &groups {
        let r = g[0];
        let mut notes: Vec<String> = Vec::new();
        if g.len() > 1 {
            notes.push(format!("median of {} runs", g.len()));
        }
        for n in g.iter().flat_map(|r| r.notes.iter()) {
            if !notes.contains(n) {
                notes.push(n.clone());
            }
        }
        if !r.read_method.is_empty() {
            notes.push(format!("reads: {}", r.read_method));
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.durable,
            if r.size % 1024 == 0 { format!("{} KiB", r.size / 1024) } else { format!("{} B", r.size) },
            r.in_flight,
            fig(g, Row::appends_per_s, 0),
            fig(g, Row::append_mb_per_s, 1),
            fig(g, |r| r.latency_ms(0), 2),
            fig(g, |r| r.latency_ms(1), 2),
            fig(g, |r| r.latency_ms(2), 2),
            fig(g, Row::reads_per_s, 0),
            fig(g, Row::read_mb_per_s, 1),
            ratio(g, BASELINE_RF1, Row::appends_per_s),
            ratio(g, BASELINE_RF1, Row::reads_per_s),
            ratio(g, BASELINE_RF3, Row::appends_per_s),
            notes.join("; ")
        );
    }
    print_best_peer(&groups);
    let mut seen: Vec<&str> = Vec::new();
    for r in &skipped {
        if seen.contains(&r.label.as_str()) {
            continue;
        }
        seen.push(&r.label);
        println!(
            "| {} | n/a | | | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | not measured: {} |",
            r.label,
            r.skipped.as_deref().unwrap_or("")
        );
    }
    Ok(())
}

/// Under the table, one line per case: the best durable peer (by appends/s)
/// and where Naxos stands against it, the comparison issue 4's targets are
/// stated in. Medians, as in the table.
fn print_best_peer(groups: &[Vec<&Row>]) {
    let med = |g: &[&Row], metric: fn(&Row) -> Option<f64>| median(g.iter().map(|r| metric(r)));
    let mut lines = Vec::new();
    let mut cases: Vec<(usize, usize)> = groups.iter().map(|g| (g[0].size, g[0].in_flight)).collect();
    cases.dedup();
    for (size, in_flight) in cases {
        let in_case = || groups.iter().filter(move |g| g[0].size == size && g[0].in_flight == in_flight);
        let best = in_case()
            .filter(|g| g[0].durable == "yes" && !g[0].label.starts_with("Naxos"))
            .filter_map(|g| med(g, Row::appends_per_s).map(|a| (g, a)))
            .max_by(|x, y| x.1.total_cmp(&y.1));
        let Some((best, best_rate)) = best else { continue };
        let best_p50 = med(best, |r| r.latency_ms(0));
        let lowest_p50 = in_case()
            .filter(|g| g[0].durable == "yes" && !g[0].label.starts_with("Naxos"))
            .filter_map(|g| med(g, |r| r.latency_ms(0)).map(|p| (g[0].label.as_str(), p)))
            .min_by(|x, y| x.1.total_cmp(&y.1));
        let mut parts = vec![format!(
            "{} x{in_flight}: most appends/s of the durable peers: {} {best_rate:.0}/s (p50 {} ms)",
            if size % 1024 == 0 { format!("{} KiB", size / 1024) } else { format!("{size} B") },
            best[0].label,
            opt(best_p50, 2)
        )];
        for label in [BASELINE_RF1, BASELINE_RF3] {
            if let Some(g) = in_case().find(|g| g[0].label == label) {
                let rate = med(g, Row::appends_per_s);
                parts.push(format!(
                    "{label} {:.2}x that, p50 {} ms",
                    rate.unwrap_or(0.0) / best_rate,
                    opt(med(g, |r| r.latency_ms(0)), 2)
                ));
            }
        }
        if let Some((label, p50)) = lowest_p50 {
            parts.push(format!("lowest durable-peer p50: {label} {p50:.2} ms"));
        }
        lines.push(parts.join("; "));
    }
    if !lines.is_empty() {
        println!();
        for l in lines {
            println!("- {l}");
        }
    }
}
