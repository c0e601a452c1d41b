//! The `naxos` binary: runs servers (`server`, `dev`), bootstraps clusters and
//! drives the log from the command line (`append`, `read`, `scan`, ...), and
//! measures it (`bench`). Errors are reported with context and map to the exit
//! codes listed in `naxos --help`.

mod bench;
mod bench_checkpoint;
mod bench_failover;
mod bench_tx;
mod cli;
mod client_cmd;
mod config_file;
mod exit;
mod objects_cmd;
mod progress;
mod reconfigure_cmd;
mod server_cmd;
mod verify_cmd;

use clap::{CommandFactory, FromArgMatches};

/// A quarter of the cores, 1 to 4 (measured on 2 cores: one worker per
/// process gave 134K appends/s against 76K with two; docs/performance.md).
fn default_worker_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / 4).clamp(1, 4)
}

/// Reports a command line clap refused (as JSON with `--json`; usage
/// errors exit 2) and exits; help and version go to stdout as usual.
fn usage_error(e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let json = std::env::args().any(|a| a == "--json");
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            e.exit()
        }
        _ if json => {
            let message = e.render().to_string();
            let first = message.lines().next().unwrap_or_default().trim_start_matches("error: ").to_string();
            let v = serde_json::json!({ "error": first, "kind": "usage", "exit_code": exit::USAGE });
            eprintln!("{v}");
            std::process::exit(exit::USAGE)
        }
        _ => {
            let _ = e.print();
            std::process::exit(exit::USAGE)
        }
    }
}

fn main() {
    let matches = cli::Cli::command().try_get_matches().and_then(|m| cli::Cli::from_arg_matches(&m).map(|c| (m, c)));
    let (matches, mut cli) = match matches {
        Ok(parsed) => parsed,
        Err(e) => usage_error(e),
    };
    let json = cli.json;
    // `naxos server --config FILE`: the file fills the flags left unset.
    if let (cli::Command::Server(a), Some(sub)) = (&mut cli.command, matches.subcommand_matches("server")) {
        if let Some(path) = a.config.clone() {
            let applied = config_file::load(&path)
                .and_then(|f| config_file::apply(f, a, &mut cli.worker_threads, |id| cli::set_by_user(sub, id)));
            if let Err(e) = applied {
                std::process::exit(exit::report(&e, json));
            }
        }
    }
    let workers = cli.worker_threads.unwrap_or_else(default_worker_threads).max(1);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(workers).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("naxos: cannot start the async runtime: {e}");
            std::process::exit(exit::OTHER);
        }
    };
    let code = runtime.block_on(async move {
        match cli::run(cli).await {
            Ok(()) => exit::OK,
            Err(e) => exit::report(&e, json),
        }
    });
    // Do not wait for background tasks (open connections) at exit.
    runtime.shutdown_background();
    std::process::exit(code);
}
