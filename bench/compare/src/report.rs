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
}

impl Row {
    pub fn new(label: &str, durable: &str, size: usize, in_flight: usize, duration_s: f64) -> Row {
        Row { label: label.into(), durable: durable.into(), size, in_flight, duration_s, ..Row::default() }
    }

    pub fn skipped(label: String, reason: String) -> Row {
        Row { label, skipped: Some(reason), ..Row::default() }
    }

    fn appends_per_s(&self) -> Option<f64> {
        (self.appends > 0 && self.append_secs > 0.0).then(|| self.appends as f64 / self.append_secs)
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

fn mb(bytes: f64) -> String {
    format!("{:.1}", bytes / 1e6)
}

fn ratio(ours: Option<f64>, theirs: Option<f64>) -> String {
    match (ours, theirs) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
        _ => "n/a".into(),
    }
}

/// Prints the results file as one Markdown table.
pub fn print(path: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let row: Row = serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        rows.push(row);
    }
    let (skipped, mut measured): (Vec<Row>, Vec<Row>) = rows.into_iter().partition(|r| r.skipped.is_some());
    // Stable: within a case, systems stay in the order they ran.
    measured.sort_by_key(|r| (r.size, r.in_flight));
    let find = |label: &str, r: &Row| {
        measured.iter().find(|b| b.label == label && b.size == r.size && b.in_flight == r.in_flight)
    };
    println!(
        "| System | Durable | Size | In flight | Appends/s | MB/s | p50 ms | p99 ms | p999 ms | Read rec/s | Read MB/s \
         | RF=1 ÷ this: appends | RF=1 ÷ this: reads | RF=3 ÷ this: appends | Notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &measured {
        let rf1 = find(BASELINE_RF1, r);
        let rf3 = find(BASELINE_RF3, r);
        let lat = r
            .latency_us
            .map(|l| [ms(l[0]), ms(l[1]), ms(l[2])])
            .unwrap_or_else(|| ["n/a".into(), "n/a".into(), "n/a".into()]);
        let mut notes = r.notes.clone();
        if !r.read_method.is_empty() {
            notes.push(format!("reads: {}", r.read_method));
        }
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.label,
            r.durable,
            if r.size % 1024 == 0 { format!("{} KiB", r.size / 1024) } else { format!("{} B", r.size) },
            r.in_flight,
            opt(r.appends_per_s(), 0),
            r.appends_per_s().map(|a| mb(a * r.size as f64)).unwrap_or_else(|| "n/a".into()),
            lat[0],
            lat[1],
            lat[2],
            opt(r.reads_per_s(), 0),
            if r.read_secs > 0.0 && r.read_records.is_some() {
                mb(r.read_bytes as f64 / r.read_secs)
            } else {
                "n/a".into()
            },
            ratio(rf1.and_then(Row::appends_per_s), r.appends_per_s()),
            ratio(rf1.and_then(Row::reads_per_s), r.reads_per_s()),
            ratio(rf3.and_then(Row::appends_per_s), r.appends_per_s()),
            notes.join("; ")
        );
    }
    for r in &skipped {
        println!(
            "| {} | n/a | | | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | not measured: {} |",
            r.label,
            r.skipped.as_deref().unwrap_or("")
        );
    }
    Ok(())
}
