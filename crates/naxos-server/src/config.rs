//! Server configuration: the address, the data directory, the roles and every
//! limit, each with a documented default.

use naxos_storage::{Fs, StdFs, SyncPolicy};
use naxos_wire::NodeId;
use std::path::PathBuf;
use std::sync::Arc;

/// Which roles a server runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    /// Stores entries.
    pub logunit: bool,
    /// Hands out positions.
    pub sequencer: bool,
    /// Stores the layout.
    pub layout: bool,
    /// Heartbeats the other nodes and, on the acting manager, takes failed
    /// nodes out and puts returning ones back (self-healing).
    pub management: bool,
}

impl Roles {
    /// Every role.
    pub const ALL: Roles = Roles { logunit: true, sequencer: true, layout: true, management: true };

    /// Parses a comma-separated list of `logunit`, `sequencer`, `layout`, `management`.
    pub fn parse(s: &str) -> Result<Roles, String> {
        let mut r = Roles { logunit: false, sequencer: false, layout: false, management: false };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "logunit" => r.logunit = true,
                "sequencer" => r.sequencer = true,
                "layout" => r.layout = true,
                "management" => r.management = true,
                other => {
                    return Err(format!("unknown role '{other}' (expected logunit, sequencer, layout, management)"))
                }
            }
        }
        if r.names().is_empty() {
            return Err("at least one role is needed".into());
        }
        Ok(r)
    }

    /// The role names, as `Status` reports them.
    pub fn names(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.logunit {
            v.push("logunit".to_string());
        }
        if self.sequencer {
            v.push("sequencer".to_string());
        }
        if self.layout {
            v.push("layout".to_string());
        }
        if self.management {
            v.push("management".to_string());
        }
        v
    }
}

/// A server's configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`HOST:PORT`; port 0 picks a free one).
    pub listen: String,
    /// Address other nodes and clients reach this one at; defaults to the bound address.
    pub advertise: Option<String>,
    /// Where the layout, the metadata and the log unit's segments live.
    pub data_dir: PathBuf,
    /// Which roles to run.
    pub roles: Roles,
    /// Largest entry payload accepted (default 1 MiB).
    pub entry_bytes_max: usize,
    /// Largest frame accepted (default 64 MiB).
    pub frame_bytes_max: usize,
    /// Requests in flight per connection before `Overloaded` (default 4096).
    pub inflight_max: usize,
    /// Connections served at once (default 4096); one more is answered
    /// `Overloaded` and closed.
    pub connections_max: usize,
    /// How long a frame that has begun to arrive may go without more bytes
    /// before its connection is closed (default 10 s).
    pub frame_stall_timeout: std::time::Duration,
    /// What to do when the data directory is damaged at start.
    pub damaged_data: DamagedData,
    /// Whether the node repairs the records its disk lost (they read as
    /// corrupted) from its chains' other replicas (default true). Off keeps
    /// a damaged record for inspection; reads are still served around it.
    pub repair_damaged: bool,
    /// Most payload bytes one bulk read returns (default 16 MiB).
    pub read_range_bytes_max: usize,
    /// Positions per segment file (default 65536).
    pub segment_positions: u64,
    /// When writes are acknowledged: `Durable` (after fdatasync, the default).
    pub sync: SyncPolicy,
    /// Zeros each log segment file is extended by ahead of its records while
    /// the log unit is idle (default 1 MiB; 0 turns it off). Syncs that stay
    /// inside preallocated space need no file-system journal commit.
    pub preallocate_bytes: u64,
    /// Log segments whose position index and open file are kept in memory at
    /// once (default 64, about 48 MiB at 65,536 positions a segment); older
    /// ones are loaded from their index files when read. 0: no limit.
    pub resident_segments_max: usize,
    /// The smallest step the sequencer's durable token ceiling is raised by
    /// (default 1024; the step follows the token rate, about a quarter second
    /// of tokens): one small fsync'd write per step; after a crash, up to one
    /// step of positions reads as holes.
    pub token_ceiling_block: u64,
    /// Simulation knob (zero in production): the log unit waits up to this
    /// long, pseudo-randomly, before each group-commit sync, as a slow disk
    /// would. Only the simulator sets it.
    pub sync_delay_max: std::time::Duration,
    /// Run the log unit's storage on a dedicated OS thread (true in production;
    /// false in the simulator, which must stay on one thread).
    pub storage_thread: bool,
    /// The file system every file of the node (layout, metadata, segments) is
    /// reached through (default [`StdFs`]; the simulator passes its own).
    pub fs: Arc<dyn Fs>,
    /// The node's id when its data directory is new (default `None`: a random
    /// one). A log unit keeps the id stored in its metadata; the simulator sets
    /// it so that runs are deterministic.
    pub node_id: Option<NodeId>,
    /// The management role's timings (heartbeat interval, failure timeout,
    /// how long a chain waits for a node before a spare takes its place).
    pub health: naxos_control::health::Settings,
    /// A spare: the address of a node of the cluster to announce itself to.
    /// It holds no chain until the managers give it the place of a node that
    /// stays away (see `health.spare_after`).
    pub join: Option<String>,
    /// Where to serve the Prometheus metrics over HTTP (`HOST:PORT`, port 0
    /// picks one; default `None`: no listener, and nothing is recorded).
    /// Metrics are per process: the first server of a process to start
    /// with a listener installs the recorder.
    pub metrics_listen: Option<String>,
    /// The wall clock (milliseconds since the Unix epoch) a layout's
    /// history records; the simulator's reads 0, so that a seed replays.
    pub clock: fn() -> u64,
}

impl Config {
    /// A configuration with every default, all roles.
    pub fn new(listen: impl Into<String>, data_dir: impl Into<PathBuf>) -> Config {
        Config {
            listen: listen.into(),
            advertise: None,
            data_dir: data_dir.into(),
            roles: Roles::ALL,
            entry_bytes_max: naxos_wire::DEFAULT_ENTRY_BYTES_MAX,
            frame_bytes_max: naxos_wire::DEFAULT_FRAME_BYTES_MAX,
            inflight_max: naxos_wire::DEFAULT_INFLIGHT_MAX,
            connections_max: 4096,
            frame_stall_timeout: std::time::Duration::from_secs(10),
            damaged_data: DamagedData::Refuse,
            repair_damaged: true,
            read_range_bytes_max: 16 << 20,
            segment_positions: 1 << 16,
            sync: SyncPolicy::Durable,
            preallocate_bytes: 1 << 20,
            resident_segments_max: 64,
            storage_thread: true,
            sync_delay_max: std::time::Duration::ZERO,
            token_ceiling_block: crate::sequencer::CEILING_BLOCK,
            fs: Arc::new(StdFs),
            node_id: None,
            clock: naxos_control::reconfig::unix_ms,
            health: naxos_control::health::Settings::default(),
            join: None,
            metrics_listen: None,
        }
    }
}

/// What a server does when its data directory is damaged at start (a
/// segment file missing or truncated, a metadata file that fails its
/// checksum).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DamagedData {
    /// Refuse to start, saying what is lost and where (the default).
    #[default]
    Refuse,
    /// Move the whole directory aside (`<dir>.damaged-<unix ms>`, kept for
    /// inspection) and start empty, so that the cluster takes the node out
    /// and copies the log back in from its replicas, like a node whose disk
    /// was replaced. Only for a node of a replicated cluster: a node alone
    /// would start a new, empty log.
    MoveAside,
}
