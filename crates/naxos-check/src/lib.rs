//! Naxos's invariant checkers: plain histories of log operations in,
//! violations out. This crate owns the history model ([`History`], [`Event`],
//! [`Op`], [`Outcome`]) and its JSON-lines form, one checker per invariant of
//! the shared log (agreement, durability, uniqueness, validity, tail, streams,
//! plus a well-formedness check of the history itself), and [`explain`], which
//! prints the short trace behind a violation. The deterministic simulator and
//! the real-process fault test both record histories and hand them here; the
//! crate knows nothing of the client, the servers or the network, and depends
//! on no other Naxos crate.
//!
//! Every checker treats an [`Outcome::Unknown`] as "may or may not have
//! happened", never as "did not happen", and every checker runs in
//! O(n log n) for a history of n events (sorts, sweeps and hash maps; no pass
//! over all pairs of events). Time comparisons are strict where the invariant
//! needs an order (`b.start > a.end` for "b began after a ended") and lenient
//! on ties otherwise, so a checker never reports two events that may have been
//! concurrent.
//!
//! Recording a history: take `start` just before the operation is sent and
//! `end` once it returns, from one clock shared by every client (the
//! simulator's clock, or `CLOCK_MONOTONIC` of the machine that runs all client
//! processes); record a time-out or error as [`Outcome::Unknown`], never as a
//! failure; give every append a payload unique in the run; end the workload
//! with a full read of `[trim, tail)` after everything else ended, or the
//! durability checker reports the appends nobody read back. A client process
//! can write its events as it goes ([`Event::to_json_line`]); the test then
//! reads each file ([`History::read_json_lines`]), joins them
//! ([`History::merge`]), runs [`check_all`] and prints [`explain`] for each
//! violation.

mod agreement;
mod durability;
mod elle;
mod history;
mod index;
mod objects;
mod streams;
mod tail;
mod uniqueness;
mod validity;
mod violation;
mod well_formed;

#[cfg(test)]
mod testkit;

pub use agreement::check_agreement;
pub use durability::check_durability;
pub use elle::check_list_append;
pub use history::{short_payload, Event, History, ListOp, Op, Outcome};
pub use objects::{check_bank, check_counter, check_register};
pub use streams::check_streams;
pub use tail::check_tail;
pub use uniqueness::check_uniqueness;
pub use validity::check_validity;
pub use violation::{explain, Violation};
pub use well_formed::check_well_formed;

/// The names of the invariants, as found in [`Violation::invariant`].
pub mod invariant {
    /// Every event is well formed: `end >= start`, outcome fits op, payloads unique.
    pub const WELL_FORMED: &str = "well_formed";
    /// No two reads of one position return different values; none goes back to unwritten.
    pub const AGREEMENT: &str = "agreement";
    /// Every acknowledged append reads back with its bytes until it is trimmed.
    pub const DURABILITY: &str = "durability";
    /// No payload sits at two positions.
    pub const UNIQUENESS: &str = "uniqueness";
    /// Every payload a read returns was appended by someone.
    pub const VALIDITY: &str = "validity";
    /// The tail is monotonic and above every position known to be taken.
    pub const TAIL: &str = "tail";
    /// Stream reads are ordered, hold only their stream's entries, and miss none.
    pub const STREAMS: &str = "streams";
    /// Objects: every snapshot of the bank's accounts holds their opening
    /// total, none overdrawn.
    pub const BANK: &str = "bank";
    /// Objects: every counter read lies between the adds acknowledged before
    /// it and those invoked before it ended.
    pub const COUNTER: &str = "counter";
    /// Objects: successful compare-and-sets of a register form one chain of
    /// versions (none lost, none from a value nobody wrote).
    pub const REGISTER: &str = "register";
    /// Objects: list-append transactions are serializable (no G0, G1a, G1c
    /// or G2 anomaly, Elle-style).
    pub const LIST_APPEND: &str = "list_append";
    /// Every invariant name, in the order [`check_all`](crate::check_all) runs them.
    pub const ALL: [&str; 11] =
        [WELL_FORMED, AGREEMENT, DURABILITY, UNIQUENESS, VALIDITY, TAIL, STREAMS, BANK, COUNTER, REGISTER, LIST_APPEND];
}

/// Errors reading or writing histories.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of a JSON-lines history is not an [`Event`].
    #[error("history line {line} is not an event: {source}")]
    Json {
        /// The line's number, counting from 1.
        line: usize,
        /// What serde_json found wrong.
        source: serde_json::Error,
    },
    /// Reading or writing the history failed.
    #[error("history I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Runs every checker, in the order of [`invariant::ALL`], and returns all violations.
pub fn check_all(history: &History) -> Vec<Violation> {
    let mut violations = check_well_formed(history);
    violations.extend(check_agreement(history));
    violations.extend(check_durability(history));
    violations.extend(check_uniqueness(history));
    violations.extend(check_validity(history));
    violations.extend(check_tail(history));
    violations.extend(check_streams(history));
    violations.extend(check_bank(history));
    violations.extend(check_counter(history));
    violations.extend(check_register(history));
    violations.extend(check_list_append(history));
    violations
}
