//! Shared test harness: in-process clusters on 127.0.0.1 with OS-chosen ports,
//! and raw requests to single replicas.
#![allow(dead_code)]

use naxos_client::{Client, Config};
use naxos_server::{Config as ServerConfig, ServerHandle};
use naxos_wire::net::TcpNet;
use naxos_wire::proto::{request, response, Entry, Read, Request, Write};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Layout, Position};
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

/// An in-process cluster: every node runs every role; node 0 sequences.
pub struct Cluster {
    pub servers: Vec<Option<ServerHandle>>,
    pub dirs: Vec<TempDir>,
    pub addrs: Vec<String>,
    pub layout: Layout,
}

impl Cluster {
    /// `n` nodes cut into `stripes` chains of `replication`.
    pub async fn start(n: usize, replication: usize, stripes: usize) -> Cluster {
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("temp dir");
            let h = naxos_server::start(ServerConfig::new("127.0.0.1:0", dir.path()), Arc::new(TcpNet))
                .await
                .expect("server starts");
            addrs.push(h.advertise().to_string());
            servers.push(Some(h));
            dirs.push(dir);
        }
        let layout = Layout::initial(
            "test-cluster",
            &addrs,
            replication,
            stripes,
            vec![addrs[0].clone()],
            vec![addrs[0].clone()],
        );
        naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
        Cluster { servers, dirs, addrs, layout }
    }

    /// A new client (own connections).
    pub async fn client(&self) -> Client {
        let mut config = Config::new(self.addrs.iter().cloned());
        config.hole_fill_wait = Duration::from_millis(20);
        Client::connect(config).await.expect("client connects")
    }

    /// Stops node `i` (closing its files).
    pub async fn stop(&mut self, i: usize) {
        if let Some(h) = self.servers[i].take() {
            h.stop().await;
        }
    }

    /// Restarts node `i` on its old address.
    pub async fn restart(&mut self, i: usize) {
        self.stop(i).await;
        let h = naxos_server::start(ServerConfig::new(self.addrs[i].clone(), self.dirs[i].path()), Arc::new(TcpNet))
            .await
            .expect("server restarts");
        self.servers[i] = Some(h);
    }

    pub async fn stop_all(mut self) {
        for i in 0..self.servers.len() {
            self.stop(i).await;
        }
    }
}

/// A pool for raw requests.
pub fn pool() -> Pool {
    Pool::new(Arc::new(TcpNet), rpc::Options::default())
}

/// A request under `layout`'s cluster and epoch.
pub fn req(layout: &Layout, body: request::Body) -> Request {
    Request { id: 0, cluster_id: layout.cluster_id.clone(), epoch: layout.epoch, body: Some(body) }
}

/// Reads one replica directly; `Ok(None)` if unwritten there.
pub async fn raw_read(pool: &Pool, layout: &Layout, addr: &str, p: Position) -> Result<Option<Entry>, rpc::Error> {
    match pool.call(addr, req(layout, request::Body::Read(Read { position: p.0 }))).await {
        Ok(response::Body::Read(r)) => Ok(r.entry),
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(e) if e.server().is_some_and(|s| s.code == naxos_wire::ErrorCode::Unwritten) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Writes one replica directly.
pub async fn raw_write(pool: &Pool, layout: &Layout, addr: &str, p: Position, entry: Entry) -> Result<(), rpc::Error> {
    pool.call(addr, req(layout, request::Body::Write(Write { position: p.0, entry: Some(entry) }))).await.map(|_| ())
}

/// A data entry.
pub fn data(payload: &[u8]) -> Entry {
    Entry { kind: naxos_wire::EntryKind::Data as i32, payload: bytes::Bytes::copy_from_slice(payload), ..Default::default() }
}
