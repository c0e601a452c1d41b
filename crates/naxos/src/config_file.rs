//! `naxos server --config FILE`: a TOML file that sets any server flag, by
//! its long name (`data-dir = "/var/lib/naxos"`). Precedence, highest first:
//! the flag on the command line, its `NAXOS_*` environment variable, the
//! file, the default. A key that names no flag is an error that names it
//! (a typo must not silently leave a default in place).

use crate::exit::Coded;
use crate::server_cmd::{parse_duration, ServerArgs};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The keys a config file may hold: `naxos server`'s flags (and the global
/// `worker-threads`).
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    listen: Option<String>,
    advertise: Option<String>,
    data_dir: Option<PathBuf>,
    roles: Option<String>,
    join: Option<String>,
    metrics_listen: Option<String>,
    log_format: Option<crate::cli::LogFormat>,
    damaged_data: Option<crate::server_cmd::DamagedDataArg>,
    repair_damaged: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    entry_bytes_max: Option<usize>,
    unsafe_no_fsync: Option<bool>,
    strict_sync: Option<bool>,
    preallocate_bytes: Option<u64>,
    resident_segments: Option<usize>,
    connections_max: Option<usize>,
    frame_stall_timeout: Option<String>,
    heartbeat_interval: Option<String>,
    failure_timeout: Option<String>,
    spare_after: Option<String>,
    worker_threads: Option<usize>,
}

fn usage(message: String) -> anyhow::Error {
    Coded { code: crate::exit::USAGE, kind: "usage", message }.into()
}

/// Reads and parses `path`.
pub fn load(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| usage(format!("cannot read the config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| usage(format!("config file {}: {}", path.display(), e.message().trim())))
}

/// Applies `file` to the flags the user did not set: `set(id)` says whether
/// the flag with clap id `id` came from the command line or the environment.
pub fn apply(
    file: FileConfig,
    a: &mut ServerArgs,
    worker_threads: &mut Option<usize>,
    set: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let duration = |key: &str, v: &str| parse_duration(v).map_err(|e| usage(format!("config file: {key}: {e}")));
    macro_rules! take {
        ($field:ident, $target:expr) => {
            if let Some(v) = file.$field {
                if !set(stringify!($field)) {
                    $target = v;
                }
            }
        };
    }
    macro_rules! take_some {
        ($field:ident, $target:expr) => {
            if let Some(v) = file.$field {
                if !set(stringify!($field)) {
                    $target = Some(v);
                }
            }
        };
    }
    macro_rules! take_duration {
        ($field:ident, $target:expr) => {
            if let Some(v) = &file.$field {
                let d = duration(&stringify!($field).replace('_', "-"), v)?;
                if !set(stringify!($field)) {
                    $target = d;
                }
            }
        };
    }
    for (key, v) in [
        ("listen", &file.listen),
        ("advertise", &file.advertise),
        ("join", &file.join),
        ("metrics-listen", &file.metrics_listen),
    ] {
        if let Some(v) = v {
            crate::cli::parse_addr(v).map_err(|e| usage(format!("config file: {key}: {e}")))?;
        }
    }
    take!(listen, a.listen);
    take_some!(advertise, a.advertise);
    take_some!(data_dir, a.data_dir);
    take!(roles, a.roles);
    take_some!(join, a.join);
    take_some!(metrics_listen, a.metrics_listen);
    take!(log_format, a.log_format);
    take!(damaged_data, a.damaged_data);
    take!(repair_damaged, a.repair_damaged);
    take_some!(tls_cert, a.tls.tls_cert);
    take_some!(tls_key, a.tls.tls_key);
    take_some!(tls_ca, a.tls.tls_ca);
    take!(entry_bytes_max, a.tuning.entry_bytes_max);
    take!(unsafe_no_fsync, a.tuning.unsafe_no_fsync);
    take!(strict_sync, a.tuning.strict_sync);
    take!(preallocate_bytes, a.tuning.preallocate_bytes);
    take!(resident_segments, a.tuning.resident_segments);
    take!(connections_max, a.tuning.connections_max);
    take_duration!(frame_stall_timeout, a.tuning.frame_stall_timeout);
    take_duration!(heartbeat_interval, a.health.heartbeat_interval);
    take_duration!(failure_timeout, a.health.failure_timeout);
    take_duration!(spare_after, a.health.spare_after);
    take_some!(worker_threads, *worker_threads);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::{CommandFactory, FromArgMatches};

    /// Parses `args` as the binary does, with the file text `toml` applied.
    fn server(args: &[&str], toml_text: &str) -> anyhow::Result<(ServerArgs, Option<usize>)> {
        let matches = Cli::command().try_get_matches_from(args)?;
        let mut cli = Cli::from_arg_matches(&matches)?;
        let Command::Server(mut a) = cli.command else { panic!("a server command") };
        let sub = matches.subcommand_matches("server").expect("server matches");
        let file: FileConfig = toml::from_str(toml_text).map_err(|e| usage(e.message().to_string()))?;
        apply(file, &mut a, &mut cli.worker_threads, |id| crate::cli::set_by_user(sub, id))?;
        Ok((a, cli.worker_threads))
    }

    #[test]
    fn the_file_fills_what_flags_leave_unset() {
        let toml_text = "listen = \"127.0.0.1:9000\"\ndata-dir = \"/var/lib/naxos\"\nroles = \"logunit\"\n\
                         failure-timeout = \"2s\"\nunsafe-no-fsync = true\nworker-threads = 3\n";
        let (a, workers) = server(&["naxos", "server", "--roles", "sequencer"], toml_text).unwrap();
        assert_eq!(a.listen, "127.0.0.1:9000");
        assert_eq!(a.data_dir.as_deref(), Some(Path::new("/var/lib/naxos")));
        assert_eq!(a.roles, "sequencer", "the flag wins over the file");
        assert_eq!(a.health.failure_timeout, std::time::Duration::from_secs(2));
        assert!(a.tuning.unsafe_no_fsync);
        assert_eq!(workers, Some(3));
        // Untouched keys keep their defaults.
        assert_eq!(a.health.heartbeat_interval, std::time::Duration::from_millis(100));
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_name_them() {
        let e = server(&["naxos", "server"], "data-dir = \"/d\"\nfailure-timout = \"2s\"\n").unwrap_err();
        assert!(e.to_string().contains("failure-timout"), "{e}");
        let e = server(&["naxos", "server"], "failure-timeout = \"soon\"\n").unwrap_err();
        assert!(e.to_string().contains("failure-timeout"), "{e}");
        let e = server(&["naxos", "server"], "entry-bytes-max = \"big\"\n").unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }

    #[test]
    fn damaged_data_is_a_key_of_the_file() {
        let (a, _) = server(&["naxos", "server"], "damaged-data = \"move-aside\"\n").unwrap();
        assert_eq!(a.damaged_data, crate::server_cmd::DamagedDataArg::MoveAside);
        let (a, _) =
            server(&["naxos", "server", "--damaged-data", "refuse"], "damaged-data = \"move-aside\"\n").unwrap();
        assert_eq!(a.damaged_data, crate::server_cmd::DamagedDataArg::Refuse, "the flag wins");
    }
}
