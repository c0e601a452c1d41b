//! The Naxos control plane: everything that changes the layout. It owns the
//! layout Paxos (`paxos`: the acceptor that layout servers run and the
//! proposer), sealing and where a sealed segment ends (`seal`), the next
//! layout a change makes (`plan`), the driver that takes a reconfiguration
//! through those steps, retries it and bootstraps the new sequencer
//! (`driver`: events in, commands out), and the runtime that runs the
//! driver's commands against the cluster (`reconfig`). The decisions are pure state machines and functions, so the
//! unit tests, the simulator and the model checker run the same code as the
//! servers and the `naxos reconfigure` command. It does not serve requests
//! (that is `naxos-server`) or append and read (that is `naxos-client`).

pub mod driver;
pub mod health;
pub mod paxos;
pub mod plan;
pub mod reconfig;
pub mod seal;
pub mod tails;

pub use plan::{Change, Refusal};
pub use reconfig::{reconfigure, Options, Report};
