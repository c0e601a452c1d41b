//! The command line: every command, its flags and its `--help`.

use crate::objects_cmd::{self, CounterCommand, MapCommand, QueueCommand};
use crate::{bench, client_cmd, exit, reconfigure_cmd, server_cmd, verify_cmd};
use clap::{Args, Parser, Subcommand};
use naxos_wire::net::{Net, TcpNet};
use naxos_wire::tls::{TlsFiles, TlsNet};
use std::path::PathBuf;
use std::sync::Arc;

/// The address `naxos dev` listens on and clients use by default.
pub const DEV_ADDR: &str = "127.0.0.1:7400";

/// Naxos: a distributed, durable shared log (CORFU-style: a sequencer hands
/// out positions, clients write straight to chain-replicated, write-once log units).
#[derive(Parser, Debug)]
#[command(name = "naxos", version, after_help = exit::HELP)]
pub struct Cli {
    /// Print results (and errors, on stderr) as JSON, for scripts.
    #[arg(long, global = true)]
    pub json: bool,
    /// Threads that run network work (a server's log unit has its own thread
    /// besides). Default: a quarter of the cores, at least 1, at most 4: on
    /// small machines every extra thread costs more in wake-ups than it gives.
    #[arg(long, global = true, env = "NAXOS_WORKER_THREADS")]
    pub worker_threads: Option<usize>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the cluster is, and how long to wait for it.
#[derive(Args, Debug, Clone)]
pub struct ClusterArg {
    /// Addresses of cluster nodes (HOST:PORT, comma-separated); any node will do.
    #[arg(long, env = "NAXOS_CLUSTER", default_value = DEV_ADDR, value_delimiter = ',', value_parser = parse_addr)]
    pub cluster: Vec<String>,
    /// The longest wait for one node to connect or answer (500ms, 5s, 1m).
    /// A command that retries (another node, a newer layout) may wait a few
    /// times this.
    #[arg(long, env = "NAXOS_TIMEOUT", default_value = "5s", value_parser = crate::server_cmd::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(flatten)]
    pub tls: TlsArgs,
}

/// TLS: this client's (or server's) certificate and key, and the cluster's
/// CA; all three or none.
#[derive(Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// Certificate (PEM) to present, signed by the cluster's CA. Its subject's
    /// OU=admin makes it an admin's (bootstrap, reconfigure, trim, seal);
    /// any other is a client's. Needs --tls-key and --tls-ca.
    #[arg(long, env = "NAXOS_TLS_CERT", value_name = "FILE", requires_all = ["tls_key", "tls_ca"])]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "NAXOS_TLS_KEY", value_name = "FILE", requires_all = ["tls_cert", "tls_ca"])]
    pub tls_key: Option<PathBuf>,
    /// The cluster's CA certificate (PEM): peers must present a certificate it signed.
    #[arg(long, env = "NAXOS_TLS_CA", value_name = "FILE", requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
}

impl TlsArgs {
    /// The network these flags ask for: TLS with them, plain TCP without.
    pub fn net(&self) -> anyhow::Result<Arc<dyn Net>> {
        match (&self.tls_cert, &self.tls_key, &self.tls_ca) {
            (Some(cert), Some(key), Some(ca)) => {
                let files = TlsFiles { cert: cert.clone(), key: key.clone(), ca: ca.clone() };
                let net = TlsNet::new(&files).map_err(|e| crate::exit::Coded {
                    code: crate::exit::USAGE,
                    kind: "usage",
                    message: e.to_string(),
                })?;
                Ok(Arc::new(net))
            }
            (None, None, None) => Ok(Arc::new(TcpNet)),
            _ => Err(crate::exit::Coded {
                code: crate::exit::USAGE,
                kind: "usage",
                message: "TLS needs all three of --tls-cert, --tls-key and --tls-ca".into(),
            }
            .into()),
        }
    }
}

impl ClusterArg {
    /// The client configuration these flags ask for.
    pub fn config(&self) -> anyhow::Result<naxos_client::Config> {
        let mut c = naxos_client::Config::new(self.cluster.iter().cloned());
        c.rpc.timeout_call = self.timeout;
        c.rpc.timeout_connect = self.timeout.min(c.rpc.timeout_connect);
        c.net = self.tls.net()?;
        Ok(c)
    }
}

/// Checks a `HOST:PORT` address's shape (the host is resolved when used).
pub fn parse_addr(s: &str) -> Result<String, String> {
    let (host, port) = s.rsplit_once(':').ok_or_else(|| format!("'{s}' is not HOST:PORT"))?;
    if host.is_empty() {
        return Err(format!("'{s}' has no host (HOST:PORT)"));
    }
    port.parse::<u16>().map_err(|_| format!("'{s}': the port must be a number from 0 to 65535"))?;
    Ok(s.to_string())
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a server with some or all roles (log unit, sequencer, layout server).
    ///
    /// The server keeps its layout, metadata and log segments in --data-dir and
    /// serves until SIGINT or SIGTERM. A new cluster's servers wait for
    /// `naxos bootstrap`.
    Server(server_cmd::ServerArgs),
    /// Write a new cluster's first layout to every node it names (once per cluster).
    ///
    /// The log units are cut into --stripes chains of --replication units each,
    /// in the order given; positions are striped round-robin over the chains.
    Bootstrap(server_cmd::BootstrapArgs),
    /// Run a one-process cluster with every role, bootstrapped on first start.
    ///
    /// The embedded default for development and trying Naxos out: data is kept
    /// in --data-dir across restarts. Other commands reach it with no flags.
    Dev(server_cmd::DevArgs),
    /// Append one entry; prints its position.
    ///
    /// The entry is DATA, or all of stdin when DATA is absent (bytes are kept
    /// exactly). The command returns once every replica holds it durably.
    Append {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Also append to this stream (repeatable).
        #[arg(long = "stream", value_name = "NAME")]
        streams: Vec<String>,
        /// The entry's bytes (UTF-8); read from stdin when absent.
        data: Option<String>,
    },
    /// Write the payload at POSITION to stdout, byte for byte.
    ///
    /// A hole, a trimmed or an unwritten position is an error (see the exit
    /// codes). A position below the tail that no writer has written yet is
    /// waited for briefly and then FILLED WITH A HOLE (the writer is taken
    /// for dead, so that readers are not stuck behind it): that position then
    /// reads as a hole for good. --no-fill reports it as unwritten instead.
    Read {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Never fill: an unwritten position is reported (exit 5), not filled.
        #[arg(long)]
        no_fill: bool,
        /// The position to read.
        position: u64,
    },
    /// Print the tail: the next position the sequencer will hand out.
    Tail {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Discard every position below POSITION (prefix trim) on every log unit.
    Trim {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The new trim mark; must not be above the tail.
        position: u64,
    },
    /// Fill POSITION with a hole, so readers are not stuck behind a dead writer.
    ///
    /// Fails, changing nothing, if the position is already written; refuses
    /// positions at or above the tail.
    Fill {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The position to fill.
        position: u64,
    },
    /// Print entries in [--from, --to) as JSON lines: {"position": N, "data": "..."}.
    ///
    /// Data that is not UTF-8 is given as "data_b64"; holes as {"position": N, "hole": true}.
    Scan {
        #[command(flatten)]
        cluster: ClusterArg,
        /// First position (default: the trim mark, the first one left).
        #[arg(long)]
        from: Option<u64>,
        /// End position, exclusive (default: the tail).
        #[arg(long, conflicts_with = "follow")]
        to: Option<u64>,
        /// Keep going at the tail: print new positions as they are written,
        /// like `tail -f`, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Stream commands.
    Stream {
        /// What to do with a stream.
        #[command(subcommand)]
        command: StreamCommand,
    },
    /// Print the cluster's layout: every segment (active or sealed, its
    /// positions and chains), the sequencers and the layout servers.
    ///
    /// With --json, the layout itself: `segments[].stripes[].chain[]` (head
    /// first), `sequencers[0]` the primary.
    Layout {
        #[command(flatten)]
        cluster: ClusterArg,
        /// List the last epochs instead (up to 32): when each was made and
        /// why (the operator's command, or the manager's reason).
        #[arg(long)]
        history: bool,
    },
    /// Print each node's state (ok, suspected, fenced, unreachable, spare),
    /// roles, epoch, chains, tail and catch-up progress.
    ///
    /// Marks the acting manager with `*`. Exits 9 when a node is unreachable
    /// or a chain is short of replicas, 6 when no node answers.
    Status {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Change a running cluster: remove or add a log unit, move the
    /// sequencer, or start a segment of another shape.
    ///
    /// Each change is one reconfiguration: the active segment is sealed (it
    /// keeps serving reads), the layout servers agree on the next layout, and
    /// the new sequencer is bootstrapped from the log units. Appends pause
    /// for the few milliseconds this takes; nothing acknowledged is lost.
    Reconfigure(reconfigure_cmd::ReconfigureArgs),
    /// Compare every replica of every chain below the tail (read-only).
    ///
    /// Each log unit digests what it holds a window at a time; where the
    /// digests of a chain's replicas differ, the window is compared position
    /// by position and every missing or different entry is listed. Exits 0
    /// only when all replicas agree (9 otherwise).
    Verify(verify_cmd::VerifyArgs),
    /// Measure throughput and latency (append, read, tokens).
    Bench(bench::BenchArgs),
    /// A replicated map (bytes to bytes), backed by the stream `map/NAME`.
    ///
    /// Reads are linearizable (the map is replayed from the log up to its
    /// tail first); `cas` is a transaction.
    Map {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The map's name.
        name: String,
        /// What to do.
        #[command(subcommand)]
        command: MapCommand,
    },
    /// A replicated counter, backed by the stream `counter/NAME`.
    Counter {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The counter's name.
        name: String,
        /// What to do.
        #[command(subcommand)]
        command: CounterCommand,
    },
    /// A replicated FIFO queue, backed by the stream `queue/NAME`; a pop is a
    /// transaction, so two pops never take the same value.
    Queue {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The queue's name.
        name: String,
        /// What to do.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Run a transaction over maps, etcd-style, from a JSON object on stdin.
    ///
    /// {"if": [{"map": M, "key": K, "equals": V} | {"map": M, "key": K, "absent": true}, ...],
    ///  "then": [{"map": M, "key": K, "put": V} | {"map": M, "key": K, "delete": true}, ...],
    ///  "else": [...]}
    ///
    /// Every comparison holding, "then" is applied, else "else", atomically
    /// and serializably (retried on conflicts). Prints
    /// {"succeeded": BOOL, "position": N} (the commit record's position;
    /// null when nothing was written). Exit 12 if it aborted on every attempt.
    Txn {
        #[command(flatten)]
        cluster: ClusterArg,
    },
    /// Print a shell completion script for bash, zsh or fish.
    ///
    /// bash: `naxos completions bash > /etc/bash_completion.d/naxos`;
    /// zsh: `naxos completions zsh > "${fpath[1]}/_naxos"`;
    /// fish: `naxos completions fish > ~/.config/fish/completions/naxos.fish`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `naxos man > /usr/local/share/man/man1/naxos.1`.
    Man,
    /// Checkpoint the objects (maps, counters, registers, queues) and,
    /// with --trim, trim the log below what they still need.
    ///
    /// Every object ever written is in the catalog; each one whose latest
    /// checkpoint is more than --behind positions behind the tail (or that has
    /// none), idle ones included, gets a new checkpoint; then, with --trim, the
    /// log is trimmed below the oldest latest checkpoint of them all. Do not
    /// use --trim on a log that also holds entries that are not objects':
    /// they would go too. One round, or one every --every seconds.
    Checkpoint {
        #[command(flatten)]
        cluster: ClusterArg,
        /// Checkpoint an object once its latest checkpoint is this many positions behind the tail.
        #[arg(long, default_value_t = 100_000)]
        behind: u64,
        /// Trim the log below the oldest latest checkpoint.
        #[arg(long)]
        trim: bool,
        /// Run a round every this many seconds (until interrupted).
        #[arg(long)]
        every: Option<f64>,
    },
}

/// Stream commands.
#[derive(Subcommand, Debug)]
pub enum StreamCommand {
    /// Print a stream's entries in log order as JSON lines, like `scan`.
    Read {
        #[command(flatten)]
        cluster: ClusterArg,
        /// The stream's name.
        name: String,
        /// First position to consider (default: the trim mark).
        #[arg(long)]
        from: Option<u64>,
        /// Keep going at the end: print the stream's new entries as they are
        /// appended, like `tail -f`, until interrupted.
        #[arg(long, short = 'f')]
        follow: bool,
    },
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let json = cli.json;
    match cli.command {
        Command::Server(a) => server_cmd::server(a).await,
        Command::Bootstrap(a) => server_cmd::bootstrap(a, json).await,
        Command::Dev(a) => server_cmd::dev(a).await,
        Command::Append { cluster, streams, data } => client_cmd::append(&cluster, &streams, data, json).await,
        Command::Read { cluster, position, no_fill } => client_cmd::read(&cluster, position, no_fill, json).await,
        Command::Tail { cluster } => client_cmd::tail(&cluster, json).await,
        Command::Trim { cluster, position } => client_cmd::trim(&cluster, position, json).await,
        Command::Fill { cluster, position } => client_cmd::fill(&cluster, position, json).await,
        Command::Scan { cluster, from, to, follow } => client_cmd::scan(&cluster, from, to, follow).await,
        Command::Stream { command: StreamCommand::Read { cluster, name, from, follow } } => {
            client_cmd::stream_read(&cluster, &name, from, follow).await
        }
        Command::Layout { cluster, history } => client_cmd::layout(&cluster, history, json).await,
        Command::Reconfigure(a) => reconfigure_cmd::run(a, json).await,
        Command::Status { cluster } => client_cmd::status(&cluster, json).await,
        Command::Bench(a) => bench::run(a, json).await,
        Command::Verify(a) => verify_cmd::run(a, json).await,
        Command::Map { cluster, name, command } => objects_cmd::map(&cluster, &name, command, json).await,
        Command::Counter { cluster, name, command } => objects_cmd::counter(&cluster, &name, command, json).await,
        Command::Queue { cluster, name, command } => objects_cmd::queue(&cluster, &name, command, json).await,
        Command::Txn { cluster } => objects_cmd::txn(&cluster).await,
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(shell, &mut Cli::command(), "naxos", &mut std::io::stdout());
            Ok(())
        }
        Command::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
            Ok(())
        }
        Command::Checkpoint { cluster, behind, trim, every } => {
            objects_cmd::checkpoint(&cluster, behind, trim, every, json).await
        }
    }
}

/// How a server writes its log lines.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (coloured only on a terminal).
    #[default]
    Text,
    /// One JSON object a line (for log collectors).
    Json,
}

/// Sets up logging to stderr: `default` unless `RUST_LOG` says otherwise.
pub fn init_logging(default: &str) {
    init_logging_as(default, LogFormat::Text)
}

/// As `init_logging`, in `format`.
pub fn init_logging_as(default: &str, format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => {
            // Colours only on a terminal: logs redirected to a file stay plain text.
            let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
            builder.with_ansi(ansi).try_init()
        }
    };
}

/// A path given on the command line, made absolute for messages.
pub fn display_path(p: &std::path::Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// Whether flag `id` of `matches` was set by the user (on the command line
/// or through its environment variable), not left at its default.
pub fn set_by_user(matches: &clap::ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    )
}
