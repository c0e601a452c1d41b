//! Bit rot: a byte of a synced record's payload flips on a server's disk
//! while the server is down. The fault schedule picks the server; its host
//! applies the rot when it starts again, inside its own file system, before
//! the server opens its data directory. The node's start-up scan (or the
//! first read of an indexed record) finds the damage, reads are served around
//! it, and the node repairs it from its chain (`naxos_server`'s mender).
//!
//! Rot of the only copy of an entry is a real loss, not a bug for the
//! checkers to find; so is rot that nobody notices until the last other copy
//! is gone. So only a record is damaged that the start-up scan verifies (past
//! what its segment's index file covers, whose records are verified only when
//! read) and that every other replica of its chain holds, with the same
//! bytes, in the newest layout the layout servers give, while that layout is
//! whole (nobody away, every chain at full replication) and every other
//! server holds it; and the fault
//! schedule then starts no new fault for `REPAIR_GRACE`, the time the node
//! has to repair it (rot and the loss of every other replica within that
//! window would be a real loss too).

use naxos_wire::proto::{request, response, Read, Request};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Layout, Position};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use turmoil::fs::shim::std::fs as sfs;

/// How long the fault schedule starts no new fault after a rot.
pub const REPAIR_GRACE: Duration = Duration::from_secs(5);

/// Candidate records checked against their replicas before giving up.
const CANDIDATES_MAX: usize = 8;

/// The rot scheduled for servers' next starts, and what was done.
#[derive(Debug, Default)]
pub struct Rot {
    due: Mutex<Vec<(String, u64)>>,
    /// Set once a byte was flipped: at most one rot a run (two, on the same
    /// position of different replicas, would be a real loss).
    done: std::sync::atomic::AtomicBool,
    /// Set when a byte was flipped, until the fault schedule saw it.
    fresh: std::sync::atomic::AtomicBool,
    /// What was flipped, for the run's trace.
    pub applied: Mutex<Vec<String>>,
}

impl Rot {
    /// Whether a rot may be scheduled: none was applied and none is due.
    pub fn wanted(&self) -> bool {
        !self.done.load(std::sync::atomic::Ordering::Relaxed) && self.due.lock().is_ok_and(|d| d.is_empty())
    }

    /// Whether a byte was flipped since the last call (the fault schedule
    /// then holds new faults back while the node repairs it).
    pub fn take_fresh(&self) -> bool {
        self.fresh.swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// Flips a byte on `host`'s disk at its next start, chosen by `draw`.
    pub fn schedule(&self, host: &str, draw: u64) {
        if let Ok(mut due) = self.due.lock() {
            due.push((host.to_string(), draw));
        }
    }

    /// Applies `host`'s scheduled rot, if any, to the data directory `dir`
    /// of the server at `addr`; `seeds` are the cluster's servers.
    pub async fn apply(&self, host: &str, addr: &str, dir: &Path, seeds: &[String]) {
        let draw = match self.due.lock() {
            Ok(mut due) => match due.iter().position(|(h, _)| h == host) {
                Some(i) => due.remove(i).1,
                None => return,
            },
            Err(_) => return,
        };
        let what = match flip(dir, addr, seeds, draw).await {
            Ok(Some(what)) => {
                self.done.store(true, std::sync::atomic::Ordering::Relaxed);
                self.fresh.store(true, std::sync::atomic::Ordering::Relaxed);
                format!("rot on {host}: {what}")
            }
            Ok(None) => format!("rot on {host}: no synced payload that the other replicas hold"),
            Err(e) => format!("rot on {host} failed: {e}"),
        };
        tracing::warn!("{what}");
        if let Ok(mut applied) = self.applied.lock() {
            applied.push(what);
        }
    }
}

/// A synced payload in a segment file: the file, its position, offset and length.
struct Span {
    name: String,
    position: Position,
    offset: u64,
    len: u64,
}

/// Flips one byte of a synced payload that the other replicas hold.
async fn flip(dir: &Path, addr: &str, seeds: &[String], draw: u64) -> io::Result<Option<String>> {
    let dir = dir.join("log");
    let mut names = Vec::new();
    for entry in sfs::read_dir(&dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".log") {
            names.push(name);
        }
    }
    names.sort();
    let mut spans = Vec::new();
    for name in &names {
        let bytes = sfs::read(dir.join(name))?;
        let first = name.trim_start_matches("seg-").trim_end_matches(".log").parse::<u64>().unwrap_or(0);
        let idx = dir.join(name.replace(".log", ".idx"));
        let indexed = match sfs::read(&idx) {
            Ok(b) => naxos_storage::disk::indexed_bytes(&b, first, crate::SEGMENT_POSITIONS, bytes.len() as u64),
            Err(_) => None,
        };
        for (position, offset, len) in naxos_storage::disk::synced_payloads(&bytes) {
            if indexed.is_none_or(|covered| offset >= covered) {
                spans.push(Span { name: name.clone(), position, offset, len });
            }
        }
    }
    if spans.is_empty() {
        return Ok(None);
    }
    let net: Arc<dyn naxos_wire::net::Net> = Arc::new(crate::net::TurmoilNet);
    let pool = Pool::new(net, rpc::Options { timeout_call: Duration::from_millis(300), ..Default::default() });
    let others: Vec<String> = seeds.iter().filter(|s| *s != addr).cloned().collect();
    // Every other server must answer with that same newest layout (one
    // that is down or behind may be about to be taken out).
    let Ok(layout) = naxos_control::reconfig::newest_layout(&pool, &others, None).await else { return Ok(None) };
    for other in &others {
        match naxos_control::reconfig::newest_layout(&pool, std::slice::from_ref(other), None).await {
            Ok(l) if l.epoch == layout.epoch => {}
            _ => return Ok(None),
        }
    }
    if !layout.away.is_empty() || !layout.under_replicated().is_empty() {
        return Ok(None);
    }
    let start = (draw % spans.len() as u64) as usize;
    for k in 0..spans.len().min(CANDIDATES_MAX) {
        let span = &spans[(start + k) % spans.len()];
        let path = dir.join(&span.name);
        let f = sfs::OpenOptions::new().read(true).write(true).open(&path)?;
        let mut payload = vec![0u8; span.len as usize];
        FileExt::read_exact_at(&f, &mut payload, span.offset)?;
        if !held_elsewhere(&pool, &layout, addr, span.position, &payload).await {
            continue;
        }
        let at = span.offset + (draw >> 32) % span.len;
        let mut b = [0u8; 1];
        FileExt::read_exact_at(&f, &mut b, at)?;
        b[0] ^= 0x20;
        FileExt::write_all_at(&f, &b, at)?;
        f.sync_all()?;
        return Ok(Some(format!("flipped byte {at} of {} (position {})", span.name, span.position)));
    }
    Ok(None)
}

/// Whether every other replica of `p`'s chain in `layout` (one at least)
/// holds `payload` there: the write was complete. (The head's copy of a
/// write that stopped half-way, rotted, is the position's only trace once
/// the chain changes: nobody can tell its value, nor that it was never
/// acknowledged, and the position stays corrupted there.)
async fn held_elsewhere(pool: &Pool, layout: &Layout, addr: &str, p: Position, payload: &[u8]) -> bool {
    let Some(place) = layout.placement(p) else { return false };
    let others: Vec<&String> = place.chain.iter().filter(|a| *a != addr).collect();
    if others.is_empty() {
        return false;
    }
    for other in others {
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::Read(Read { position: p.0 })),
        };
        match pool.call(other, req).await {
            Ok(response::Body::Read(r)) if r.entry.as_ref().is_some_and(|e| e.payload == payload) => {}
            _ => return false,
        }
    }
    true
}
