//! Replicated objects and transactions on the Naxos shared log (Tango).
//!
//! Each object (a [`Map`], [`Counter`], [`Register`] or [`Queue`]) lives in
//! the memory of every client that opens it and is backed by its own stream:
//! an update is an append to the stream, and a read first plays the stream's
//! new entries in log order (so reads are linearizable; `*_at` reads see a
//! snapshot at a given position). Transactions across objects are
//! optimistic: they run against one snapshot, record what they read, and
//! commit with one multi-stream append whose token the sequencer refuses if a
//! key they read was written after their snapshot (a doomed transaction
//! never reaches the log); every replayer re-validates the commit record.
//! Every record carries its writer's id and sequence number, so a retry after
//! an unknown outcome is applied once.
//!
//! ```no_run
//! # async fn demo() -> Result<(), naxos_tango::Error> {
//! use naxos_client::{Client, Config};
//! let rt = naxos_tango::Runtime::new(Client::connect(Config::new(["127.0.0.1:7400"])).await?);
//! let accounts = rt.map("accounts");
//! accounts.put("alice", "100").await?;
//! let done = rt
//!     .transaction(|tx| {
//!         let alice: i64 = tx.get(&accounts, "alice")?.map_or(Ok(0), |v| naxos_tango::parse(&v))?;
//!         tx.put(&accounts, "alice", (alice - 10).to_string());
//!         tx.put(&accounts, "bob", "10");
//!         Ok(())
//!     })
//!     .await?;
//! println!("committed at {:?}", done.position);
//! # Ok(()) }
//! ```
//!
//! What it owns: object state in client memory, the replay (apply upcall),
//! the record format, exactly-once bookkeeping, the transaction runner. It
//! talks to the cluster only through `naxos-client`; the conflict check
//! itself runs in the sequencer.

pub mod catalog;
pub mod checkpoint;
pub mod checkpointer;
mod handles;
pub mod object;
pub mod record;
mod runtime;
mod txn;

pub use checkpointer::{Policy, Round};
pub use handles::{Counter, Map, Queue, Register, TypedMap};
pub use naxos_client::AbortCause;
pub use runtime::{Runtime, Stats};
pub use txn::{Committed, Retry, Tx};

/// What can go wrong with an object operation or a transaction.
#[derive(Clone, Debug, thiserror::Error)]
pub enum Error {
    /// The log refused or failed the call.
    #[error(transparent)]
    Log(#[from] naxos_client::Error),
    /// The transaction aborted; nothing of it was applied.
    #[error("transaction aborted ({cause}): {message}")]
    Aborted {
        /// Why (conflict, the sequencer's cache overflowed, a new sequencer, a trimmed snapshot).
        cause: AbortCause,
        /// The detail.
        message: String,
    },
    /// An update was sent several times and every attempt's outcome is
    /// unknown: it may have been applied (once) or not.
    #[error("outcome unknown (the update may or may not have been applied, at most once): {0}")]
    Unknown(String),
    /// The cluster could not take the update, and reading the log showed
    /// it was not applied: nothing happened, and it is safe to try again.
    #[error("not applied (nothing happened; safe to retry): {0}")]
    NotApplied(String),
    /// A value could not be decoded (a typed read of bytes written otherwise).
    #[error("cannot decode a value: {0}")]
    Decode(String),
    /// The call is not valid (a position above the tail, a stream opened as two kinds, ...).
    #[error("{0}")]
    Invalid(String),
    /// Internal: a transaction touched an object this runtime did not host;
    /// the runtime hosts it and runs the body again. Never returned by the
    /// runtime's calls.
    #[error("object {0} is not hosted yet")]
    NotHosted(naxos_client::StreamId, object::Kind),
}

/// Parses a value written as text (`"42"`), for counters kept in maps.
pub fn parse<T: std::str::FromStr>(value: &[u8]) -> Result<T, Error> {
    std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()).ok_or_else(|| {
        Error::Decode(format!("{:?} is not a {}", String::from_utf8_lossy(value), std::any::type_name::<T>()))
    })
}
