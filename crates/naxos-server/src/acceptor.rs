//! The layout acceptor of a layout server: the Paxos state of
//! `naxos_control::paxos::Acceptor` (its promise and what it accepted), kept
//! durably as `acceptor.json` in the data directory. A changed state is
//! written (temp file, fsync, rename, fsync of the directory) before the
//! vote that depends on it is sent, so a restarted layout server never
//! forgets a promise it made.

use naxos_control::paxos::{Acceptor, Rank, Vote};
use naxos_storage::Fs;
use naxos_wire::{ErrorCode, Layout, ServerError};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The acceptor state's file name inside the data directory.
pub const FILE: &str = "acceptor.json";

/// A layout server's durable acceptor.
pub struct AcceptorStore {
    path: PathBuf,
    fs: Arc<dyn Fs>,
    state: Acceptor,
}

impl AcceptorStore {
    /// Loads `dir/acceptor.json` through `fs` (a fresh acceptor if there is none).
    pub fn open(dir: &Path, fs: Arc<dyn Fs>) -> Result<AcceptorStore, crate::Error> {
        let path = dir.join(FILE);
        let state = match fs.read(&path) {
            // The state is one line of JSON. Only that line counts: the
            // simulated file system can leave stale bytes after it when a
            // crash interrupts the replacement of a longer file.
            Ok(bytes) => naxos_storage::checked::decode(&bytes)
                .map_err(|e| crate::Error::Config(format!("{}: not a valid acceptor state: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Acceptor::default(),
            Err(source) => return Err(crate::Error::Io { context: format!("reading {}", path.display()), source }),
        };
        Ok(AcceptorStore { path, fs, state })
    }

    fn persist(&self) -> Result<(), ServerError> {
        let json =
            naxos_storage::checked::encode(&self.state).expect("the acceptor state always serializes to a JSON object");
        self.fs.write_atomic(&self.path, &json).map_err(|e| {
            ServerError::new(
                ErrorCode::Unavailable,
                format!("storing the acceptor state in {}: {e}", self.path.display()),
            )
        })
    }

    /// The highest epoch it accepted a layout for (0: none).
    pub fn accepted_epoch(&self) -> u64 {
        self.state.accepted_epoch()
    }

    /// Phase 1, made durable before the vote is returned.
    pub fn prepare(&mut self, chosen: Option<&Layout>, epoch: u64, rank: Rank) -> Result<Vote, ServerError> {
        let before = self.state.clone();
        let ballot = naxos_control::paxos::Ballot { epoch: naxos_wire::Epoch(epoch), rank };
        let (vote, changed) = self.state.prepare(chosen, ballot);
        if changed {
            if let Err(e) = self.persist() {
                self.state = before;
                return Err(e);
            }
        }
        Ok(vote)
    }

    /// Phase 2, made durable before the vote is returned.
    pub fn accept(&mut self, chosen: Option<&Layout>, rank: Rank, layout: &Layout) -> Result<Vote, ServerError> {
        let before = self.state.clone();
        let (vote, changed) = self.state.accept(chosen, rank, layout);
        if changed {
            if let Err(e) = self.persist() {
                self.state = before;
                return Err(e);
            }
        }
        Ok(vote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use naxos_control::paxos::Ballot;

    #[test]
    fn a_promise_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(naxos_storage::StdFs);
        let high = Rank { round: 5, proposer: 1 };
        let mut a = AcceptorStore::open(dir.path(), fs.clone()).unwrap();
        assert!(matches!(a.prepare(None, 1, high).unwrap(), Vote::Promise(None)));
        drop(a);
        let mut again = AcceptorStore::open(dir.path(), fs).unwrap();
        let low = Rank { round: 4, proposer: 9 };
        assert_eq!(
            again.prepare(None, 1, low).unwrap(),
            Vote::Rejected(Ballot { epoch: naxos_wire::Epoch(1), rank: high })
        );
    }
}
