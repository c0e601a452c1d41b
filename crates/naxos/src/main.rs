//! The `naxos` binary: runs servers (`server`, `dev`), bootstraps clusters and
//! drives the log from the command line (`append`, `read`, `scan`, ...), and
//! measures it (`bench`). Errors are reported with context and map to the exit
//! codes listed in `naxos --help`.

mod bench;
mod cli;
mod client_cmd;
mod exit;
mod server_cmd;

use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
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
