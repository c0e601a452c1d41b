//! The one load generator: for each payload size and in-flight count, N tasks
//! each keep one append outstanding until the duration is up (latency of each
//! append into an HDR histogram), then one reader reads the case's records
//! back. Every system gets the same payload bytes, tasks and duration.

use crate::peers::{self, Log};
use crate::report::{self, Row};
use crate::MeasureArgs;
use bytes::Bytes;
use hdrhistogram::Histogram;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The histograms' range: 1 µs to 60 s; a slower append is recorded as 60 s.
const LATENCY_US_MAX: u64 = 60_000_000;

/// A task that fails this many appends stops early (the system is down or
/// refusing); the row then says so.
const TASK_ERRORS_MAX: u64 = 100;

/// Appends of the warm-up, which are not measured.
const WARM_UP_APPENDS: u32 = 200;
/// The warm-up stops after this long even if it has not done its appends.
const WARM_UP_MAX: Duration = Duration::from_secs(10);

/// Runs every (size, in flight) case against one system and appends a row per case.
pub async fn measure(a: MeasureArgs) -> anyhow::Result<()> {
    let run_id = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
    warm_up(&a, &format!("{}-warmup-{run_id}", slug(&a.label))).await;
    for &size in &a.sizes {
        for &in_flight in &a.in_flight {
            let name = format!("{}-{size}-{in_flight}-{run_id}", slug(&a.label));
            let mut row = Row::new(&a.label, &a.durable, size, in_flight, a.duration, a.round);
            match peers::open(a.system, &a.addr, &name).await {
                Ok(log) => run_case(log, size, in_flight, Duration::from_secs_f64(a.duration), &mut row).await,
                Err(e) => row.notes.push(format!("n/a: {e:#}")),
            }
            eprintln!("{}", row.summary());
            report::append(&a.out, &[row])?;
        }
    }
    Ok(())
}

/// A few appends to a namespace of its own before the first case, so that a
/// system that has only just opened its port (etcd electing itself leader,
/// the JVM loading ZooKeeper's classes, first connections) does not charge
/// that to the first case. Errors are left for the cases to report.
async fn warm_up(a: &MeasureArgs, name: &str) {
    let deadline = Instant::now() + WARM_UP_MAX;
    let Ok(log) = peers::open(a.system, &a.addr, name).await else { return };
    let payload = payload(a.sizes.first().copied().unwrap_or(128));
    for _ in 0..WARM_UP_APPENDS {
        if Instant::now() >= deadline || log.append(payload.clone()).await.is_err() {
            break;
        }
    }
}

/// Bytes that do not compress, the same for every system.
fn payload(size: usize) -> Bytes {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect::<Vec<u8>>()
        .into()
}

pub(crate) fn slug(label: &str) -> String {
    label.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect()
}

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("1 µs to 60 s at 3 significant digits is a valid range")
}

struct TaskOutcome {
    appends: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram<u64>,
}

async fn run_case(log: Arc<dyn Log>, size: usize, in_flight: usize, duration: Duration, row: &mut Row) {
    let payload = payload(size);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(in_flight);
    for _ in 0..in_flight.max(1) {
        let log = log.clone();
        let payload = payload.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = TaskOutcome { appends: 0, errors: 0, first_error: None, hist: histogram() };
            while Instant::now() < deadline && out.errors < TASK_ERRORS_MAX {
                let t0 = Instant::now();
                match log.append(payload.clone()).await {
                    Ok(()) => {
                        out.appends += 1;
                        out.hist.saturating_record(t0.elapsed().as_micros() as u64);
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            out
        }));
    }
    let mut hist = histogram();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(o) => {
                row.appends += o.appends;
                row.append_errors += o.errors;
                if let Err(e) = hist.add(&o.hist) {
                    first_error.get_or_insert(format!("histogram: {e}"));
                }
                if first_error.is_none() {
                    first_error = o.first_error;
                }
            }
            Err(e) => {
                first_error.get_or_insert(format!("append task: {e}"));
            }
        }
    }
    // Until the last append in flight returned, not just the nominal duration.
    row.append_secs = started.elapsed().as_secs_f64();
    if !hist.is_empty() {
        row.latency_us =
            Some([hist.value_at_quantile(0.5), hist.value_at_quantile(0.99), hist.value_at_quantile(0.999)]);
    }
    if let Some(e) = first_error {
        row.notes.push(format!("{} append errors, first: {e}", row.append_errors));
    }
    let t0 = Instant::now();
    match log.read_back().await {
        Ok(r) => {
            row.read_secs = t0.elapsed().as_secs_f64();
            row.read_records = Some(r.records);
            row.read_bytes = r.bytes;
            row.read_method = log.read_method().to_string();
            if r.records != row.appends {
                row.notes.push(format!("read back {} records, {} appends acknowledged", r.records, row.appends));
            }
        }
        Err(e) => row.notes.push(format!("read n/a: {e:#}")),
    }
}
