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
    file: AcceptorFile,
}

/// What `acceptor.json` holds.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct AcceptorFile {
    #[serde(flatten)]
    state: Acceptor,
    /// Epochs up to this one get no vote: the file was lost (deleted) while
    /// the node held a layout, so a promise or acceptance it made for the
    /// next epoch is forgotten, and voting again there could let a second
    /// layout be chosen for it. Absent (0) in a file that was never lost.
    #[serde(default, skip_serializing_if = "is_zero")]
    abstain_through: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AcceptorStore {
    /// Loads `dir/acceptor.json` through `fs`. With none there: a fresh
    /// acceptor for a node with no layout yet (`layout_epoch` `None`),
    /// written at once; for a
    /// node that holds a layout at epoch E, one that abstains through epoch
    /// E+1, the only epoch whose ballots it could have answered (they must
    /// build on its chosen layout), made durable at once.
    pub fn open(dir: &Path, fs: Arc<dyn Fs>, layout_epoch: Option<u64>) -> Result<AcceptorStore, crate::Error> {
        let path = dir.join(FILE);
        let file = match fs.read(&path) {
            Ok(bytes) => naxos_storage::checked::decode(&bytes)
                .map_err(|e| crate::Error::Damaged(format!("{}: not a valid acceptor state: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match layout_epoch {
                None => {
                    // Written before the node can hold a layout, so that a
                    // missing file next to one always means a lost one.
                    let store = AcceptorStore { path: path.clone(), fs: fs.clone(), file: AcceptorFile::default() };
                    store.persist().map_err(|e| crate::Error::Config(e.message))?;
                    store.file
                }
                Some(epoch) => {
                    let through = epoch.saturating_add(1);
                    tracing::warn!(
                        file = %path.display(),
                        through,
                        "the layout acceptor's state is missing next to a layout: it votes in no epoch up to {through} \
                         (it may have promised or accepted there before)"
                    );
                    let store = AcceptorStore {
                        path: path.clone(),
                        fs: fs.clone(),
                        file: AcceptorFile { abstain_through: through, ..AcceptorFile::default() },
                    };
                    store.persist().map_err(|e| crate::Error::Config(e.message))?;
                    store.file
                }
            },
            Err(source) => return Err(crate::Error::Io { context: format!("reading {}", path.display()), source }),
        };
        Ok(AcceptorStore { path, fs, file })
    }

    /// The refusal of a ballot in an epoch it abstains from.
    fn abstains(&self, epoch: u64, rank: Rank) -> Option<Vote> {
        (epoch <= self.file.abstain_through)
            .then_some(Vote::Rejected(naxos_control::paxos::Ballot { epoch: naxos_wire::Epoch(epoch), rank }))
    }

    fn persist(&self) -> Result<(), ServerError> {
        let json =
            naxos_storage::checked::encode(&self.file).expect("the acceptor state always serializes to a JSON object");
        self.fs.write_atomic(&self.path, &json).map_err(|e| {
            ServerError::new(
                ErrorCode::Unavailable,
                format!("storing the acceptor state in {}: {e}", self.path.display()),
            )
        })
    }

    /// The highest epoch it accepted a layout for (0: none).
    pub fn accepted_epoch(&self) -> u64 {
        self.file.state.accepted_epoch()
    }

    /// Phase 1, made durable before the vote is returned.
    pub fn prepare(&mut self, chosen: Option<&Layout>, epoch: u64, rank: Rank) -> Result<Vote, ServerError> {
        if let Some(no) = self.abstains(epoch, rank) {
            return Ok(no);
        }
        let before = self.file.state.clone();
        let ballot = naxos_control::paxos::Ballot { epoch: naxos_wire::Epoch(epoch), rank };
        let (vote, changed) = self.file.state.prepare(chosen, ballot);
        if changed {
            if let Err(e) = self.persist() {
                self.file.state = before;
                return Err(e);
            }
        }
        Ok(vote)
    }

    /// Phase 2, made durable before the vote is returned.
    pub fn accept(&mut self, chosen: Option<&Layout>, rank: Rank, layout: &Layout) -> Result<Vote, ServerError> {
        if let Some(no) = self.abstains(layout.epoch, rank) {
            return Ok(no);
        }
        let before = self.file.state.clone();
        let (vote, changed) = self.file.state.accept(chosen, rank, layout);
        if changed {
            if let Err(e) = self.persist() {
                self.file.state = before;
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
        let mut a = AcceptorStore::open(dir.path(), fs.clone(), None).unwrap();
        assert!(matches!(a.prepare(None, 1, high).unwrap(), Vote::Promise(None)));
        drop(a);
        let mut again = AcceptorStore::open(dir.path(), fs, None).unwrap();
        let low = Rank { round: 4, proposer: 9 };
        assert_eq!(
            again.prepare(None, 1, low).unwrap(),
            Vote::Rejected(Ballot { epoch: naxos_wire::Epoch(1), rank: high })
        );
    }

    #[test]
    fn a_lost_state_next_to_a_layout_votes_in_no_epoch_it_may_have_voted_in() {
        let dir = tempfile::tempdir().unwrap();
        let fs: Arc<dyn Fs> = Arc::new(naxos_storage::StdFs);
        let rank = Rank { round: 1, proposer: 7 };
        // The node holds layout 4: it may have promised or accepted at 5.
        let mut a = AcceptorStore::open(dir.path(), fs.clone(), Some(4)).unwrap();
        assert!(matches!(a.prepare(None, 5, rank).unwrap(), Vote::Rejected(_)));
        let l = naxos_wire::Layout {
            epoch: 5,
            ..naxos_wire::Layout::initial("c", &["a".into()], 1, 1, vec!["a".into()], vec!["a".into()])
        };
        assert!(matches!(a.accept(None, rank, &l).unwrap(), Vote::Rejected(_)));
        // Durably so: a restart still abstains, and 6 gets its votes.
        drop(a);
        let mut again = AcceptorStore::open(dir.path(), fs, Some(4)).unwrap();
        assert!(matches!(again.prepare(None, 5, rank).unwrap(), Vote::Rejected(_)));
        assert!(matches!(again.prepare(None, 6, rank).unwrap(), Vote::Promise(None)));
    }
}
