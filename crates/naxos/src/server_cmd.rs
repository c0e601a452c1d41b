//! `naxos server`, `naxos bootstrap` and `naxos dev`.

use crate::cli::{display_path, init_logging, init_logging_as, ClusterArg, LogFormat, DEV_ADDR};
use anyhow::{bail, Context};
use clap::Args;
use naxos_server::{Config, Roles};
use naxos_storage::SyncPolicy;
use naxos_wire::net::TcpNet;
use naxos_wire::Layout;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Prints a line on stdout for whoever started a running server; a closed
/// stdout (`naxos dev | head -1`) is not a reason to stop serving.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Flags of `naxos server`. Each can also come from its `NAXOS_*`
/// environment variable (named in `--help`) or from `--config FILE`; a flag
/// on the command line wins over the variable, the variable over the file.
#[derive(Args, Debug)]
pub struct ServerArgs {
    /// A TOML file that sets any of these flags, by long name without the
    /// dashes in front (`data-dir = "/var/lib/naxos"`, `failure-timeout =
    /// "1s"`); see deploy/naxos.toml. An unknown key is an error.
    #[arg(long, env = "NAXOS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Address to listen on (HOST:PORT; port 0 picks a free port, printed on stdout).
    #[arg(long, env = "NAXOS_LISTEN", default_value = DEV_ADDR, value_parser = crate::cli::parse_addr)]
    pub listen: String,
    /// Address the other nodes and clients use for this one (default: the listen address).
    #[arg(long, env = "NAXOS_ADVERTISE", value_parser = crate::cli::parse_addr)]
    pub advertise: Option<String>,
    /// Directory for the layout, metadata and log segments (created if
    /// missing). Required, here or in the config file.
    #[arg(long, env = "NAXOS_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Roles to run, comma-separated: logunit, sequencer, layout, management.
    /// Management heartbeats the other nodes; the first layout server that
    /// runs it and reaches a majority acts: it takes failed nodes out and
    /// puts returning ones back, caught up, with no command.
    #[arg(long, env = "NAXOS_ROLES", default_value = "logunit,sequencer,layout,management")]
    pub roles: String,
    /// Start as a spare: announce this node to the cluster at ADDR. It holds
    /// no chain until a chain has been short of a replica for --spare-after;
    /// it is then caught up and takes the missing place.
    #[arg(long, env = "NAXOS_JOIN", value_name = "ADDR", value_parser = crate::cli::parse_addr)]
    pub join: Option<String>,
    /// Serve Prometheus metrics over HTTP at http://HOST:PORT/metrics and the
    /// status page at http://HOST:PORT/ (port 0 picks a free port; the URL is
    /// printed on stdout after the address). Off by default.
    #[arg(long, env = "NAXOS_METRICS_LISTEN", value_name = "HOST:PORT", value_parser = crate::cli::parse_addr)]
    pub metrics_listen: Option<String>,
    /// Log lines as `text` or `json` (one object a line), on stderr;
    /// RUST_LOG sets the level (default info).
    #[arg(long, env = "NAXOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// TLS: with all three, every connection (clients' and the other
    /// servers') must present a certificate of --tls-ca, plaintext is
    /// refused, and this server presents --tls-cert to the others (give
    /// servers certificates with OU=admin: they change the cluster on each
    /// other's behalf). docs/operations.md says how to make them.
    #[command(flatten)]
    pub tls: crate::cli::TlsArgs,
    /// What to do if the data directory is damaged at start (a segment file
    /// missing or truncated, a metadata file failing its checksum): refuse
    /// (say what is lost and where), or move-aside (rename the directory to
    /// DIR.damaged-<unix ms>, kept for inspection, and start empty, so that
    /// the cluster takes this node out and copies the log back in from its
    /// replicas). Only for a node of a replicated cluster.
    #[arg(long, env = "NAXOS_DAMAGED_DATA", value_enum, default_value_t = DamagedDataArg::Refuse)]
    pub damaged_data: DamagedDataArg,
    /// Repair records lost to damage on this node's disk (they read as
    /// corrupted) from its chains' other replicas, within about a second of
    /// finding them. `false` keeps a damaged record for inspection; clients
    /// still read that position from other replicas.
    #[arg(long, env = "NAXOS_REPAIR_DAMAGED", default_value_t = true, action = clap::ArgAction::Set)]
    pub repair_damaged: bool,
    #[command(flatten)]
    pub tuning: Tuning,
    #[command(flatten)]
    pub health: HealthArgs,
}

/// `--damaged-data`: see `naxos_server::DamagedData`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DamagedDataArg {
    /// Refuse to start, saying what is lost and where.
    #[default]
    Refuse,
    /// Move the directory aside and start empty; the cluster copies the log back in.
    MoveAside,
}

/// The management role's timings (shared by `server` and `dev`).
#[derive(Args, Debug)]
pub struct HealthArgs {
    /// How often the management role heartbeats every other node (e.g. 100ms).
    #[arg(long, env = "NAXOS_HEARTBEAT_INTERVAL", default_value = "100ms", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// A node that has not answered heartbeats for this long is suspected and
    /// taken out of its chains (e.g. 1s, 300ms). Shorter fails over faster
    /// and risks suspecting a node that is only slow; a suspicion never costs
    /// data, only a reconfiguration.
    #[arg(long, env = "NAXOS_FAILURE_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub failure_timeout: Duration,
    /// How long a chain may stay short of a replica before a spare (a server
    /// started with --join) takes the missing place (e.g. 10s).
    #[arg(long, env = "NAXOS_SPARE_AFTER", default_value = "10s", value_parser = parse_duration)]
    pub spare_after: Duration,
}

/// Parses a duration: a number and a unit, `ms`, `s` or `m` (`250ms`, `1.5s`, `2m`).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("'{s}' is not a duration (try 100ms, 1s, 2m)"))?;
    let secs = match unit.trim() {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "" => return Err(format!("'{s}' has no unit (try {s}ms or {s}s)")),
        other => return Err(format!("unknown unit '{other}' in '{s}' (use ms, s or m)")),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
        return Err(format!("'{s}' is out of range (more than 0, at most a day)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl HealthArgs {
    /// The server's management settings from the flags.
    fn apply(&self, c: &mut Config) -> anyhow::Result<()> {
        if self.failure_timeout < self.heartbeat_interval * 2 {
            bail!(crate::exit::Coded {
                code: crate::exit::USAGE,
                kind: "usage",
                message: format!(
                    "--failure-timeout ({:?}) must be at least twice --heartbeat-interval ({:?})",
                    self.failure_timeout, self.heartbeat_interval
                ),
            });
        }
        c.health.heartbeat_interval = self.heartbeat_interval;
        c.health.failure_timeout = self.failure_timeout;
        c.health.spare_after = self.spare_after;
        Ok(())
    }
}

/// Limits and durability shared by `server` and `dev`.
#[derive(Args, Debug)]
pub struct Tuning {
    /// Largest entry payload accepted, in bytes.
    #[arg(long, env = "NAXOS_ENTRY_BYTES_MAX", default_value_t = naxos_wire::DEFAULT_ENTRY_BYTES_MAX)]
    pub entry_bytes_max: usize,
    /// UNSAFE, for experiments only: acknowledge writes without fsync. A crash
    /// or power loss then loses acknowledged entries.
    #[arg(long, env = "NAXOS_UNSAFE_NO_FSYNC", conflicts_with = "strict_sync")]
    pub unsafe_no_fsync: bool,
    /// Make each segment file's record of how much of it is synced durable
    /// before a write is acknowledged (a second, small fdatasync per batch).
    /// A flipped record of the very last batch before a crash is then
    /// reported as damage and repaired from replicas, never cut as an
    /// unfinished write. Without it that holds for every batch but those of
    /// the last ~2 ms before a crash. Costs append throughput (docs/operations.md).
    #[arg(long, env = "NAXOS_STRICT_SYNC")]
    pub strict_sync: bool,
    /// Zeros (in bytes) each log segment file is extended by ahead of its
    /// records while the log unit is idle; syncs inside preallocated space
    /// skip the file system's journal commit. 0 turns it off.
    #[arg(long, env = "NAXOS_PREALLOCATE_BYTES", default_value_t = 1 << 20)]
    pub preallocate_bytes: u64,
    /// Log segments whose position index (12 bytes a position) and open file
    /// stay in memory; older ones are loaded from their index files when
    /// read. Bounds memory however much is stored. 0: no limit.
    #[arg(long, env = "NAXOS_RESIDENT_SEGMENTS", default_value_t = 64)]
    pub resident_segments: usize,
    /// Connections served at once; one more is answered "overloaded" and
    /// closed. The open-file limit is raised at start as far as the system
    /// allows (a warning says if it stays below this plus the files the
    /// log unit needs).
    #[arg(long, env = "NAXOS_CONNECTIONS_MAX", default_value_t = 4096)]
    pub connections_max: usize,
    /// A connection whose frame has begun and then gets no more bytes for
    /// this long is closed (e.g. 10s, 500ms).
    #[arg(long, env = "NAXOS_FRAME_STALL_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub frame_stall_timeout: Duration,
}

/// File descriptors kept for the log unit's files besides the connections.
const FILES_RESERVE: u64 = 512;

/// Raises the open-file limit as far as the system allows; returns how many
/// connections the server may take. If the limit is below `connections_max`
/// plus a reserve for the log unit's files, fewer (with a warning): running
/// out of descriptors to idle connections once failed a segment roll's
/// directory sync, and the log unit then refused everything until restarted.
fn raise_open_files(connections_max: usize) -> usize {
    let wanted = connections_max as u64 + FILES_RESERVE;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(got) if got < wanted => {
            let allowed = got.saturating_sub(FILES_RESERVE).max(got / 2).max(1) as usize;
            tracing::warn!(
                limit = got,
                wanted,
                connections_max = allowed,
                "the open-file limit is below --connections-max plus {FILES_RESERVE} for the log unit: taking fewer connections; raise the hard limit (ulimit -Hn, LimitNOFILE=) for more"
            );
            allowed.min(connections_max)
        }
        Ok(got) => {
            tracing::debug!(limit = got, "open-file limit");
            connections_max
        }
        Err(e) => {
            tracing::warn!("cannot raise the open-file limit: {e}");
            connections_max
        }
    }
}

/// Flags of `naxos bootstrap`.
#[derive(Args, Debug)]
pub struct BootstrapArgs {
    #[command(flatten)]
    pub cluster: ClusterArg,
    /// Log unit addresses, in chain order (comma-separated).
    #[arg(long, value_delimiter = ',', required = true)]
    pub log_units: Vec<String>,
    /// Replicas per chain (default: all log units divided by --stripes).
    #[arg(long)]
    pub replication: Option<usize>,
    /// Number of chains positions are striped over.
    #[arg(long, default_value_t = 1)]
    pub stripes: usize,
    /// Replicas a chain needs for appends (default 2 when --replication is 3
    /// or more, else 1). When failed nodes leave a chain with fewer, appends
    /// to it fail at once (exit code 8) until a replica is back, rather than
    /// be acknowledged by fewer copies.
    #[arg(long)]
    pub min_replicas: Option<usize>,
    /// Sequencer addresses, comma-separated: the first is the primary, the
    /// others are standbys that take over in turn (default: every log unit,
    /// in order).
    #[arg(long, value_delimiter = ',', alias = "sequencer")]
    pub sequencers: Vec<String>,
    /// Layout server addresses (default: the first five log units, or the
    /// largest odd number of them, so that a majority survives failures).
    #[arg(long, value_delimiter = ',')]
    pub layout_servers: Vec<String>,
    /// How long to wait for the named nodes to listen, in seconds.
    #[arg(long, default_value_t = 10)]
    pub wait_s: u64,
}

/// Flags of `naxos dev`.
#[derive(Args, Debug)]
pub struct DevArgs {
    /// Address to listen on; clients use it by default.
    #[arg(long, default_value = DEV_ADDR, value_parser = crate::cli::parse_addr)]
    pub listen: String,
    /// Directory kept across restarts.
    #[arg(long, default_value = "./naxos-data")]
    pub data_dir: PathBuf,
    /// Where to serve Prometheus metrics (http://HOST:PORT/metrics); `off`
    /// turns it off. Default: the --listen host at the next port (7401),
    /// or a free port if that one is taken or --listen has port 0.
    #[arg(long, value_name = "HOST:PORT|off")]
    pub metrics_listen: Option<String>,
    /// Log lines as `text` or `json` (one object a line), on stderr.
    #[arg(long, env = "NAXOS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub tuning: Tuning,
}

/// `naxos dev`'s metrics address: the flag's, or the listen port + 1 if it
/// is free, else a free port; `None` for `off`.
fn dev_metrics_listen(flag: Option<&str>, listen: &str) -> Option<String> {
    match flag {
        Some("off") => return None,
        Some(a) => return Some(a.to_string()),
        None => {}
    }
    let (host, port) = listen.rsplit_once(':')?;
    let next = port.parse::<u16>().ok().filter(|p| *p != 0).and_then(|p| p.checked_add(1));
    if let Some(next) = next {
        let candidate = format!("{host}:{next}");
        if std::net::TcpListener::bind(&candidate).is_ok() {
            return Some(candidate);
        }
    }
    Some(format!("{host}:0"))
}

/// Refuses a data directory path that names something other than a directory.
fn check_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.exists() && !dir.is_dir() {
        bail!(crate::exit::Coded {
            code: crate::exit::USAGE,
            kind: "usage",
            message: format!("the data directory {} is a file, not a directory", display_path(dir).display()),
        });
    }
    Ok(())
}

fn config(listen: &str, data_dir: PathBuf, roles: Roles, tuning: &Tuning) -> Config {
    let mut c = Config::new(listen, data_dir);
    c.roles = roles;
    c.entry_bytes_max = tuning.entry_bytes_max;
    c.preallocate_bytes = tuning.preallocate_bytes;
    c.resident_segments_max = tuning.resident_segments;
    c.connections_max = tuning.connections_max.max(1);
    c.frame_stall_timeout = tuning.frame_stall_timeout;
    c.connections_max = raise_open_files(c.connections_max);
    if tuning.unsafe_no_fsync {
        tracing::warn!("--unsafe-no-fsync: writes are acknowledged before they are durable; a crash loses them");
        c.sync = SyncPolicy::UnsafeNoSync;
    }
    if tuning.strict_sync {
        c.sync = SyncPolicy::Strict;
    }
    c
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `naxos server`.
pub async fn server(a: ServerArgs) -> anyhow::Result<()> {
    init_logging_as("info", a.log_format);
    let roles = Roles::parse(&a.roles).map_err(|e| crate::exit::Coded {
        code: crate::exit::USAGE,
        kind: "usage",
        message: format!("--roles: {e}"),
    })?;
    let Some(data_dir) = a.data_dir.clone() else {
        bail!(crate::exit::Coded {
            code: crate::exit::USAGE,
            kind: "usage",
            message: "no data directory: give --data-dir, NAXOS_DATA_DIR or data-dir in the --config file".into(),
        });
    };
    check_data_dir(&data_dir)?;
    let mut c = config(&a.listen, data_dir.clone(), roles, &a.tuning);
    c.advertise = a.advertise.clone();
    c.join = a.join.clone();
    c.repair_damaged = a.repair_damaged;
    c.damaged_data = match a.damaged_data {
        DamagedDataArg::Refuse => naxos_server::DamagedData::Refuse,
        DamagedDataArg::MoveAside => naxos_server::DamagedData::MoveAside,
    };
    c.metrics_listen = a.metrics_listen.clone();
    a.health.apply(&mut c)?;
    let net = a.tls.net()?;
    if a.tls.tls_cert.is_some() {
        tracing::info!(
            "TLS on: every connection needs a certificate of {}",
            a.tls.tls_ca.as_deref().map(display_path).unwrap_or_default().display()
        );
    }
    let handle = naxos_server::start(c, net)
        .await
        .with_context(|| format!("starting the server in {}", display_path(&data_dir).display()))?;
    say!("{}", handle.advertise());
    if let Some(m) = handle.metrics_addr() {
        say!("metrics: http://{m}/metrics");
    }
    wait_for_signal().await;
    tracing::info!("stopping");
    handle.stop().await;
    Ok(())
}

/// `naxos bootstrap`.
pub async fn bootstrap(a: BootstrapArgs, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    let n = a.log_units.len();
    if a.stripes == 0 {
        bail!(crate::exit::Coded {
            code: crate::exit::USAGE,
            kind: "usage",
            message: "--stripes must be at least 1".into()
        });
    }
    let replication = a.replication.unwrap_or(n / a.stripes);
    if replication == 0 || replication * a.stripes != n {
        bail!(crate::exit::Coded {
            code: crate::exit::USAGE,
            kind: "usage",
            message: format!(
                "{n} log units cannot form {} chains of {replication}: give --replication x --stripes log units",
                a.stripes
            ),
        });
    }
    let sequencers = if a.sequencers.is_empty() { a.log_units.clone() } else { a.sequencers.clone() };
    let layout_servers = if a.layout_servers.is_empty() {
        let mut units = a.log_units.clone();
        units.dedup();
        let odd = units.len().min(5);
        units.truncate(if odd.is_multiple_of(2) { odd - 1 } else { odd });
        units
    } else {
        a.layout_servers.clone()
    };
    let cluster_id = uuid::Uuid::new_v4().to_string();
    let mut layout = Layout::initial(&cluster_id, &a.log_units, replication, a.stripes, sequencers, layout_servers);
    if let Some(m) = a.min_replicas {
        if m == 0 || m > replication {
            bail!(crate::exit::Coded {
                code: crate::exit::USAGE,
                kind: "usage",
                message: format!("--min-replicas must be between 1 and the replication ({replication})"),
            });
        }
        layout.min_replicas = m as u32;
    }
    layout.record(naxos_control::reconfig::unix_ms(), "operator: bootstrap");
    wait_for_nodes(&layout.all_nodes(), Duration::from_secs(a.wait_s)).await?;
    naxos_client::admin::bootstrap(a.cluster.tls.net()?, &layout).await.context("bootstrapping")?;
    if json {
        println!("{}", serde_json::to_string(&layout)?);
    } else {
        println!(
            "bootstrapped cluster {cluster_id}: {} chain(s) of {replication}, sequencer {}",
            a.stripes, layout.sequencers[0]
        );
    }
    Ok(())
}

/// Waits (bounded) until every one of `nodes` accepts a connection, so that
/// a script can start servers and bootstrap them right away.
async fn wait_for_nodes(nodes: &[String], wait: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut told = false;
    for addr in nodes {
        loop {
            match tokio::net::TcpStream::connect(addr.as_str()).await {
                Ok(_) => break,
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    bail!(crate::exit::Coded {
                        code: crate::exit::UNAVAILABLE,
                        kind: "unavailable",
                        message: format!("{addr} did not start listening within {wait:?}: {e}"),
                    });
                }
                Err(_) => {
                    if !told {
                        eprintln!("naxos: waiting for {addr} to listen (up to {wait:?})");
                        told = true;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    Ok(())
}

/// `naxos dev`.
pub async fn dev(a: DevArgs) -> anyhow::Result<()> {
    init_logging_as("info", a.log_format);
    let dir = display_path(&a.data_dir);
    check_data_dir(&a.data_dir)?;
    let mut c = config(&a.listen, a.data_dir.clone(), Roles::ALL, &a.tuning);
    c.metrics_listen = dev_metrics_listen(a.metrics_listen.as_deref(), &a.listen);
    let handle = naxos_server::start(c, Arc::new(TcpNet))
        .await
        .with_context(|| format!("starting the dev server in {}", dir.display()))?;
    let addr = handle.advertise().to_string();
    match handle.layout() {
        Some(l) => {
            if !l.all_nodes().contains(&addr) {
                let named = l.all_nodes().join(", ");
                handle.stop().await;
                bail!(
                    "{} holds a cluster whose layout names {named}, not {addr}: start `naxos dev --listen` with that address, or use another --data-dir",
                    dir.display()
                );
            }
        }
        None => {
            let id = uuid::Uuid::new_v4().to_string();
            let one = vec![addr.clone()];
            let layout = Layout::initial(&id, &one, 1, 1, one.clone(), one.clone());
            naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.context("bootstrapping the dev cluster")?;
        }
    }
    say!("naxos dev is running on {addr} (data in {})", dir.display());
    if let Some(m) = handle.metrics_addr() {
        say!("metrics: http://{m}/metrics");
    }
    say!("try:");
    say!("  naxos append 'hello, log'          # prints the position");
    say!("  naxos read 0                       # prints the payload");
    say!("  naxos tail; naxos scan; naxos status");
    say!("other shells reach it with no flags (or --cluster {addr}); stop it with Ctrl-C");
    wait_for_signal().await;
    tracing::info!("stopping");
    handle.stop().await;
    Ok(())
}
