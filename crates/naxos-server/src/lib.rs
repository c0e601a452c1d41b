//! The Naxos server: the roles (log unit, sequencer, layout server) and the
//! runtime that serves them on one address.
//!
//! Each role's protocol logic is a plain struct that takes a request and
//! returns a response (`logunit::LogUnit`, `sequencer::Sequencer`,
//! `layout::LayoutStore`); one task owns each and a thin runtime (`node`) does
//! the sockets (through the `Net` seam of `naxos-wire`), the channels and the
//! timers. This crate does not drive chains or retry appends: that is the
//! client's job (`naxos-client`).

pub mod acceptor;
mod append;
pub mod config;
pub mod conflicts;
pub mod fence;
pub mod layout;
pub mod logunit;
pub mod metrics;
pub mod node;
pub mod recovery;
pub mod reply;
pub mod sequencer;

pub use config::{Config, DamagedData, Roles};
pub use node::{start, ServerHandle};

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The storage engine failed to open the data directory.
    #[error("log unit storage: {0}")]
    Storage(#[from] naxos_storage::Error),
    /// A file or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The configuration or the data directory is not usable.
    #[error("{0}")]
    Config(String),
    /// A metadata file of the data directory is damaged (fails its checksum
    /// or does not parse).
    #[error("{0}")]
    Damaged(String),
}

impl Error {
    /// Whether the data directory is damaged (what `DamagedData::MoveAside`
    /// acts on): a refusal of the storage engine to open it, or a damaged
    /// metadata file; not a configuration mistake or an I/O failure.
    pub fn is_damage(&self) -> bool {
        matches!(self, Error::Damaged(_) | Error::Storage(naxos_storage::Error::Directory { .. }))
    }
}
