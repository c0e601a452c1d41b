//! Exit codes, and how an error is reported on stderr (plain or JSON).

use naxos_client::Error;

/// Success.
pub const OK: i32 = 0;
/// Any other failure.
pub const OTHER: i32 = 1;
/// Bad usage: an unknown flag, a bad value (clap uses 2 as well).
pub const USAGE: i32 = 2;
/// The position holds a hole.
pub const HOLE: i32 = 3;
/// The position is trimmed.
pub const TRIMMED: i32 = 4;
/// The position is unwritten.
pub const UNWRITTEN: i32 = 5;
/// The cluster could not be reached or could not serve the request.
pub const UNAVAILABLE: i32 = 6;
/// `fill` found the position already written.
pub const ALREADY_WRITTEN: i32 = 7;
/// An append was refused: a chain has fewer replicas than `min_replicas`.
pub const NOT_ENOUGH_REPLICAS: i32 = 8;
/// `status`: a node is unreachable or a chain is short of replicas;
/// `verify`: replicas disagree.
pub const DEGRADED: i32 = 9;
/// TLS: the server refused the connection's certificate for the request
/// (an admin's is needed), or refused plaintext.
pub const FORBIDDEN: i32 = 13;

/// The help text's table of exit codes.
pub const HELP: &str = "Exit codes:
  0  success
  1  other error
  2  bad usage (unknown flag, bad value)
  3  the position holds a hole
  4  the position is trimmed
  5  the position is unwritten
  6  the cluster is unavailable (no node answered, or retries ran out)
  7  fill: the position is already written (nothing was changed)
  8  append: a chain has fewer replicas than --min-replicas (nothing was appended)
  9  status: a node is unreachable or a chain is short of replicas;
     verify: replicas of a chain disagree
 10  map get: no such key; queue pop: the queue is empty
 11  map cas: the value is not the expected one (nothing was changed)
 12  a transaction aborted on every attempt (nothing was applied)
 13  forbidden: the server requires TLS, or the request needs an admin's
     certificate (OU=admin) and this one is a client's";

/// A failure a command reports with a specific exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    /// The exit code.
    pub code: i32,
    /// A short kind for `--json` (`hole`, `trimmed`, ...).
    pub kind: &'static str,
    /// What happened.
    pub message: String,
}

/// The exit code and kind for an error.
fn classify(e: &anyhow::Error) -> (i32, &'static str) {
    if let Some(c) = e.downcast_ref::<Coded>() {
        return (c.code, c.kind);
    }
    match e.downcast_ref::<Error>() {
        Some(Error::Trimmed(_)) => (TRIMMED, "trimmed"),
        Some(Error::Unwritten(_)) => (UNWRITTEN, "unwritten"),
        Some(Error::AlreadyWritten { .. }) => (ALREADY_WRITTEN, "already_written"),
        Some(Error::Unavailable(_)) => (UNAVAILABLE, "unavailable"),
        Some(Error::Invalid(_)) => (USAGE, "invalid"),
        Some(Error::TooLarge { .. }) => (USAGE, "too_large"),
        Some(Error::NotEnoughReplicas { .. }) => (NOT_ENOUGH_REPLICAS, "not_enough_replicas"),
        Some(Error::Server(s)) if s.code == naxos_wire::ErrorCode::Forbidden => (FORBIDDEN, "forbidden"),
        _ => (OTHER, "error"),
    }
}

/// `e` and its causes as one line, each cause once: a layer whose message
/// already quotes its cause (`binding X: invalid port`) is not followed by
/// the cause again.
fn chain_text(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if text.is_empty() || out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

/// Prints `e` on stderr and returns its exit code.
pub fn report(e: &anyhow::Error, json: bool) -> i32 {
    let (code, kind) = classify(e);
    let text = chain_text(e);
    if json {
        let v = serde_json::json!({ "error": text, "kind": kind, "exit_code": code });
        eprintln!("{v}");
    } else {
        eprintln!("naxos: {kind}: {text}");
    }
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::other("Permission denied");
        let inner = anyhow::Error::new(io).context("creating data directory /d: Permission denied");
        let e = inner.context("starting the server");
        assert_eq!(chain_text(&e), "starting the server: creating data directory /d: Permission denied");
    }
}
