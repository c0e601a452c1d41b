//! The server's Prometheus metrics: their names, the handles the roles
//! update, and the process's recorder. `install` sets the `metrics` crate's
//! recorder once per process (a process that never calls it, as the
//! simulator and most tests, records nothing: every call here is then a
//! no-op); `render` is the text `/metrics` serves. Names follow Prometheus
//! conventions: counters end in `_total`, durations are `_seconds`
//! histograms, sizes are bytes.

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use naxos_wire::proto::request;
use naxos_wire::ErrorCode;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

/// Buckets of every `_seconds` histogram: 50 µs to 10 s.
const SECONDS_BUCKETS: &[f64] =
    &[0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Buckets of the request-count histograms (group commits, batches).
const COUNT_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 4096.0];

/// What a request asks, as a metric label; with the role that answers it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A log unit write of a value.
    Write,
    /// A log unit write of a hole (a fill).
    Fill,
    /// A log unit read of one position.
    Read,
    /// A log unit bulk read.
    ReadRange,
    /// A trim.
    Trim,
    /// A log unit's tail.
    UnitTail,
    /// A stream index query.
    StreamQuery,
    /// A sequencer token.
    Token,
    /// A sequencer tail query.
    SeqTail,
    /// A combined token and write.
    Append,
    /// Several requests in one frame.
    Batch,
    /// A seal.
    Seal,
    /// A heartbeat.
    Heartbeat,
    /// Any layout request (get, bootstrap, commit, Paxos votes).
    Layout,
    /// Anything else (status, probes, digests, ceilings, bootstrap of a sequencer).
    Other,
}

impl Kind {
    /// Every kind, in `index` order.
    pub const ALL: [Kind; 15] = [
        Kind::Write,
        Kind::Fill,
        Kind::Read,
        Kind::ReadRange,
        Kind::Trim,
        Kind::UnitTail,
        Kind::StreamQuery,
        Kind::Token,
        Kind::SeqTail,
        Kind::Append,
        Kind::Batch,
        Kind::Seal,
        Kind::Heartbeat,
        Kind::Layout,
        Kind::Other,
    ];

    /// The kind of a request body.
    pub fn of(body: &request::Body) -> Kind {
        use request::Body as B;
        match body {
            B::Write(w) if w.entry.as_ref().is_some_and(|e| e.kind == naxos_wire::proto::EntryKind::Hole as i32) => {
                Kind::Fill
            }
            B::Write(_) => Kind::Write,
            B::Read(_) => Kind::Read,
            B::ReadRange(_) => Kind::ReadRange,
            B::Trim(_) => Kind::Trim,
            B::UnitTail(_) => Kind::UnitTail,
            B::StreamQuery(_) => Kind::StreamQuery,
            B::Token(_) => Kind::Token,
            B::SeqTail(_) => Kind::SeqTail,
            B::Append(_) => Kind::Append,
            B::Batch(_) => Kind::Batch,
            B::Seal(_) => Kind::Seal,
            B::Heartbeat(_) => Kind::Heartbeat,
            B::GetLayout(_) | B::Bootstrap(_) | B::CommitLayout(_) | B::LayoutPrepare(_) | B::LayoutAccept(_) => {
                Kind::Layout
            }
            _ => Kind::Other,
        }
    }

    /// The label value.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Write => "write",
            Kind::Fill => "fill",
            Kind::Read => "read",
            Kind::ReadRange => "read_range",
            Kind::Trim => "trim",
            Kind::UnitTail => "unit_tail",
            Kind::StreamQuery => "stream_query",
            Kind::Token => "token",
            Kind::SeqTail => "seq_tail",
            Kind::Append => "append",
            Kind::Batch => "batch",
            Kind::Seal => "seal",
            Kind::Heartbeat => "heartbeat",
            Kind::Layout => "layout",
            Kind::Other => "other",
        }
    }

    /// The role that answers it (the `role` label).
    pub fn role(self) -> &'static str {
        match self {
            Kind::Write
            | Kind::Fill
            | Kind::Read
            | Kind::ReadRange
            | Kind::Trim
            | Kind::UnitTail
            | Kind::StreamQuery => "logunit",
            Kind::Token | Kind::SeqTail | Kind::Append => "sequencer",
            Kind::Heartbeat => "management",
            Kind::Layout | Kind::Seal => "layout",
            Kind::Batch | Kind::Other => "server",
        }
    }

    fn index(self) -> usize {
        Kind::ALL.iter().position(|k| *k == self).unwrap_or(Kind::ALL.len() - 1)
    }
}

/// The handles the roles update (registered once, when the recorder is installed).
pub struct Handles {
    requests: Vec<Counter>,
    durations: Vec<Histogram>,
    /// Requests taken and not answered yet, over every connection.
    pub in_flight: Gauge,
    /// Values written by the log unit.
    pub appends: Counter,
    /// Payload bytes of those values.
    pub appended_bytes: Counter,
    /// Holes written by the log unit (fills).
    pub fills: Counter,
    /// Entries the log unit served to reads (single and bulk).
    pub reads: Counter,
    /// Trims the log unit applied.
    pub trims: Counter,
    /// `appends` and `reads` again, readable here (the status page's chart).
    pub totals: Totals,
    /// Time of each group-commit fdatasync.
    pub fsync_seconds: Histogram,
    /// Requests applied per group commit.
    pub group_commit_requests: Histogram,
    /// Requests per `Batch` frame.
    pub batch_requests: Histogram,
    /// Positions the sequencer handed out.
    pub tokens: Counter,
    /// The node's epoch.
    pub epoch: Gauge,
    /// Chains (stripes) of the current layout this node is a replica of.
    pub chains: Gauge,
    /// Bytes of the files under the data directory.
    pub data_bytes: Gauge,
    /// Free bytes on the data directory's file system (for unprivileged users).
    pub disk_free_bytes: Gauge,
    /// Size of the data directory's file system.
    pub disk_total_bytes: Gauge,
    /// Positions the running catch-up (state transfer to a node put back
    /// or added) compared so far; 0 when none runs.
    pub catch_up_positions_done: Gauge,
    /// Positions the running catch-up compares in all; 0 when none runs.
    pub catch_up_positions_total: Gauge,
    /// Bytes the running catch-up copied so far.
    pub catch_up_bytes: Gauge,
    /// Catch-ups finished (state transfers of automatic reconfigurations).
    pub catch_ups: Counter,
    /// Round trip of each answered heartbeat.
    pub heartbeat_seconds: Histogram,
    /// Heartbeats that got no answer in time.
    pub heartbeat_failures: Counter,
    /// Nodes this manager suspects now.
    pub suspected_nodes: Gauge,
    /// Automatic reconfigurations this node's manager ran, by outcome.
    reconfigurations: [Counter; 3],
}

/// Running totals the process reads back (a `Counter` cannot be read).
#[derive(Default)]
pub struct Totals {
    /// Values and holes written.
    pub appends: AtomicU64,
    /// Entries served to reads.
    pub reads: AtomicU64,
}

/// How an automatic reconfiguration ended (the `outcome` label).
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    /// It committed a new layout.
    Done,
    /// Another manager's change won, or it was not needed.
    Refused,
    /// It failed (retried later).
    Failed,
}

static HANDLES: OnceLock<Handles> = OnceLock::new();
static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The handles, if this process records metrics.
pub fn get() -> Option<&'static Handles> {
    HANDLES.get()
}

/// Installs the Prometheus recorder for this process (the first call does;
/// later ones return the same handle) and registers every handle.
pub fn install() -> Result<&'static PrometheusHandle, String> {
    if let Some(h) = RECORDER.get() {
        return Ok(h);
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_requests".into()), COUNT_BUCKETS))
        .map_err(|e| format!("metrics buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| format!("installing the metrics recorder: {e}"))?;
    describe();
    let _ = HANDLES.set(register());
    let _ = RECORDER.set(handle);
    RECORDER.get().ok_or_else(|| "metrics recorder vanished".to_string())
}

/// The exposition text of every metric (empty if none was installed).
pub fn render() -> String {
    RECORDER.get().map(|h| h.render()).unwrap_or_default()
}

fn register() -> Handles {
    Handles {
        requests: Kind::ALL
            .iter()
            .map(|k| metrics::counter!("naxos_requests_total", "kind" => k.name(), "role" => k.role()))
            .collect(),
        durations: Kind::ALL
            .iter()
            .map(|k| metrics::histogram!("naxos_request_duration_seconds", "kind" => k.name(), "role" => k.role()))
            .collect(),
        in_flight: metrics::gauge!("naxos_requests_in_flight"),
        appends: metrics::counter!("naxos_appends_total"),
        appended_bytes: metrics::counter!("naxos_appended_bytes_total"),
        fills: metrics::counter!("naxos_fills_total"),
        reads: metrics::counter!("naxos_reads_total"),
        trims: metrics::counter!("naxos_trims_total"),
        totals: Totals::default(),
        fsync_seconds: metrics::histogram!("naxos_fsync_duration_seconds"),
        group_commit_requests: metrics::histogram!("naxos_group_commit_requests"),
        batch_requests: metrics::histogram!("naxos_batch_requests"),
        tokens: metrics::counter!("naxos_tokens_total"),
        epoch: metrics::gauge!("naxos_epoch"),
        chains: metrics::gauge!("naxos_chains"),
        data_bytes: metrics::gauge!("naxos_data_bytes"),
        disk_free_bytes: metrics::gauge!("naxos_disk_free_bytes"),
        disk_total_bytes: metrics::gauge!("naxos_disk_total_bytes"),
        catch_up_positions_done: metrics::gauge!("naxos_catch_up_positions_done"),
        catch_up_positions_total: metrics::gauge!("naxos_catch_up_positions_total"),
        catch_up_bytes: metrics::gauge!("naxos_catch_up_copied_bytes"),
        catch_ups: metrics::counter!("naxos_catch_ups_total"),
        heartbeat_seconds: metrics::histogram!("naxos_heartbeat_round_trip_seconds"),
        heartbeat_failures: metrics::counter!("naxos_heartbeat_failures_total"),
        suspected_nodes: metrics::gauge!("naxos_suspected_nodes"),
        reconfigurations: [
            metrics::counter!("naxos_reconfigurations_total", "outcome" => "done"),
            metrics::counter!("naxos_reconfigurations_total", "outcome" => "refused"),
            metrics::counter!("naxos_reconfigurations_total", "outcome" => "failed"),
        ],
    }
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("naxos_requests_total", "Requests taken, by kind and by the role that answers them.");
    describe_counter!("naxos_errors_total", "Requests answered with an error, by kind, role and error code.");
    describe_histogram!(
        "naxos_request_duration_seconds",
        Unit::Seconds,
        "Time from taking a request to answering it (a write's includes its group commit)."
    );
    describe_gauge!("naxos_requests_in_flight", "Requests taken and not answered yet, over every connection.");
    describe_counter!("naxos_appends_total", "Values the log unit wrote.");
    describe_counter!("naxos_appended_bytes_total", Unit::Bytes, "Payload bytes of the values the log unit wrote.");
    describe_counter!("naxos_fills_total", "Holes the log unit wrote (fills of positions a writer never wrote).");
    describe_counter!("naxos_reads_total", "Entries the log unit served to reads.");
    describe_counter!("naxos_trims_total", "Trims the log unit applied.");
    describe_histogram!("naxos_fsync_duration_seconds", Unit::Seconds, "Time of each group-commit fdatasync.");
    describe_histogram!("naxos_group_commit_requests", "Requests applied per group commit (per fdatasync).");
    describe_histogram!("naxos_batch_requests", "Requests per Batch frame.");
    describe_counter!("naxos_tokens_total", "Positions the sequencer handed out.");
    describe_counter!("naxos_sequencer_aborts_total", "Conflict-checked tokens the sequencer refused, by cause.");
    describe_gauge!("naxos_epoch", "The node's epoch (the newest layout it knows).");
    describe_gauge!("naxos_chains", "Chains of the current layout's open segment this node is a replica of.");
    describe_gauge!("naxos_data_bytes", Unit::Bytes, "Bytes of the files under the data directory.");
    describe_gauge!("naxos_disk_free_bytes", Unit::Bytes, "Free bytes on the data directory's file system.");
    describe_gauge!("naxos_disk_total_bytes", Unit::Bytes, "Size of the data directory's file system.");
    describe_gauge!("naxos_catch_up_positions_done", "Positions the running catch-up compared so far (0: none runs).");
    describe_gauge!("naxos_catch_up_positions_total", "Positions the running catch-up compares in all (0: none runs).");
    describe_gauge!("naxos_catch_up_copied_bytes", Unit::Bytes, "Bytes the running catch-up copied so far.");
    describe_counter!("naxos_catch_ups_total", "Catch-ups (state transfers) this node's manager finished.");
    describe_histogram!(
        "naxos_heartbeat_round_trip_seconds",
        Unit::Seconds,
        "Round trip of each answered heartbeat this node's manager sent."
    );
    describe_counter!("naxos_heartbeat_failures_total", "Heartbeats that got no answer in time.");
    describe_gauge!("naxos_suspected_nodes", "Nodes this node's manager suspects of having failed.");
    describe_counter!(
        "naxos_reconfigurations_total",
        "Automatic reconfigurations this node's manager ran, by outcome."
    );
}

/// Counts a request taken.
pub fn request(kind: Kind) {
    if let Some(h) = get() {
        h.requests[kind.index()].increment(1);
    }
}

/// Records an answer: its time, and its error code if it failed.
pub fn answered(kind: Kind, started: std::time::Instant, error: Option<ErrorCode>) {
    let Some(h) = get() else { return };
    h.durations[kind.index()].record(started.elapsed().as_secs_f64());
    if let Some(code) = error {
        let code = code.as_str_name().to_ascii_lowercase();
        metrics::counter!("naxos_errors_total", "kind" => kind.name(), "role" => kind.role(), "code" => code)
            .increment(1);
    }
}

/// Counts a conflict-checked token the sequencer refused, by cause.
pub fn sequencer_abort(cause: &'static str) {
    if get().is_some() {
        metrics::counter!("naxos_sequencer_aborts_total", "cause" => cause).increment(1);
    }
}

/// Counts an automatic reconfiguration that ended.
pub fn reconfiguration(outcome: Outcome) {
    if let Some(h) = get() {
        h.reconfigurations[outcome as usize].increment(1);
    }
}
