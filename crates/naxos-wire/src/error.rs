//! Typed error codes and the error a server returns: a code, a human message and
//! the detail the code needs (the server's epoch, the position concerned).

use crate::proto::{self, EntryKind};
pub use crate::proto::{AbortCause, ErrorCode};
use crate::{Epoch, Position};

/// An error returned by a server, as carried in a `Response`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code_name(*.code))]
pub struct ServerError {
    /// What went wrong.
    pub code: ErrorCode,
    /// A human-readable explanation that says what to do next where it can.
    pub message: String,
    /// For `WrongEpoch`: the server's sealed epoch.
    pub epoch: Epoch,
    /// For position errors: the position concerned.
    pub position: Position,
    /// For `Overwritten`: what the position already holds.
    pub kind: EntryKind,
    /// For `Aborted`: why.
    pub abort: AbortCause,
}

/// A short, stable, human name for an error code.
pub fn code_name(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::Unspecified => "unspecified error",
        ErrorCode::WrongEpoch => "wrong epoch",
        ErrorCode::Overwritten => "overwritten",
        ErrorCode::Trimmed => "trimmed",
        ErrorCode::Unwritten => "unwritten",
        ErrorCode::Sealed => "sealed",
        ErrorCode::TooLarge => "too large",
        ErrorCode::WrongCluster => "wrong cluster",
        ErrorCode::NotBootstrapped => "not bootstrapped",
        ErrorCode::BadRequest => "bad request",
        ErrorCode::Unavailable => "unavailable",
        ErrorCode::WrongRole => "wrong role",
        ErrorCode::Corrupted => "corrupted",
        ErrorCode::AlreadyBootstrapped => "already bootstrapped",
        ErrorCode::Overloaded => "overloaded",
        ErrorCode::NotEnoughReplicas => "not enough replicas",
        ErrorCode::Aborted => "aborted",
        ErrorCode::Forbidden => "forbidden",
    }
}

/// A short, stable, human name for an abort cause.
pub fn abort_name(cause: AbortCause) -> &'static str {
    match cause {
        AbortCause::Unspecified => "unspecified",
        AbortCause::Conflict => "conflict",
        AbortCause::CacheOverflow => "cache overflow",
        AbortCause::NewSequencer => "new sequencer",
        AbortCause::SnapshotTrimmed => "trimmed",
    }
}

/// An abort cause as a metric label value (`abort_name` in snake case).
pub fn abort_label(cause: AbortCause) -> &'static str {
    match cause {
        AbortCause::Unspecified => "unspecified",
        AbortCause::Conflict => "conflict",
        AbortCause::CacheOverflow => "cache_overflow",
        AbortCause::NewSequencer => "new_sequencer",
        AbortCause::SnapshotTrimmed => "trimmed",
    }
}

impl std::fmt::Display for AbortCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(abort_name(*self))
    }
}

impl ServerError {
    /// An error with a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ServerError {
        ServerError {
            code,
            message: message.into(),
            epoch: Epoch(0),
            position: Position(0),
            kind: EntryKind::Unspecified,
            abort: AbortCause::Unspecified,
        }
    }

    /// `Aborted`: a transaction's token was refused, for `cause`.
    pub fn aborted(cause: AbortCause, message: impl Into<String>) -> ServerError {
        ServerError { abort: cause, ..ServerError::new(ErrorCode::Aborted, message) }
    }

    /// `WrongEpoch`: the request's epoch is older than the server's sealed epoch.
    pub fn wrong_epoch(ours: Epoch, theirs: Epoch) -> ServerError {
        ServerError {
            epoch: ours,
            ..ServerError::new(
                ErrorCode::WrongEpoch,
                format!("request epoch {theirs} is older than sealed epoch {ours}; fetch the layout and retry"),
            )
        }
    }

    /// `Overwritten`: the position already holds data or a hole.
    pub fn overwritten(position: Position, kind: EntryKind) -> ServerError {
        let what = if kind == EntryKind::Hole { "a hole" } else { "data" };
        ServerError {
            position,
            kind,
            ..ServerError::new(ErrorCode::Overwritten, format!("position {position} already holds {what}"))
        }
    }

    /// An error about one position (`Trimmed`, `Unwritten`, `Corrupted`).
    pub fn at(code: ErrorCode, position: Position, message: impl Into<String>) -> ServerError {
        ServerError { position, ..ServerError::new(code, message) }
    }

    /// The wire form.
    pub fn to_proto(&self) -> proto::Error {
        proto::Error {
            code: self.code as i32,
            message: self.message.clone(),
            epoch: self.epoch.0,
            position: self.position.0,
            kind: self.kind as i32,
            abort: self.abort as i32,
        }
    }

    /// From the wire form; an unknown code becomes `Unspecified`.
    pub fn from_proto(e: proto::Error) -> ServerError {
        ServerError {
            code: ErrorCode::try_from(e.code).unwrap_or(ErrorCode::Unspecified),
            message: e.message,
            epoch: Epoch(e.epoch),
            position: Position(e.position),
            kind: EntryKind::try_from(e.kind).unwrap_or(EntryKind::Unspecified),
            abort: AbortCause::try_from(e.abort).unwrap_or(AbortCause::Unspecified),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_round_trips_through_proto() {
        let e = ServerError::overwritten(Position(7), EntryKind::Hole);
        assert_eq!(ServerError::from_proto(e.to_proto()), e);
        assert!(e.to_string().contains("a hole"));
        let w = ServerError::wrong_epoch(Epoch(3), Epoch(1));
        assert_eq!(ServerError::from_proto(w.to_proto()).epoch, Epoch(3));
        let a = ServerError::aborted(AbortCause::Conflict, "key written at 9");
        assert_eq!(ServerError::from_proto(a.to_proto()), a);
    }
}
