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
    /// Whether restarted nodes repair records their disks lost (default
    /// true); off for tests of reads around a damaged record.
    pub repair: bool,
}

impl Cluster {
    /// `n` nodes cut into `stripes` chains of `replication`.
    pub async fn start(n: usize, replication: usize, stripes: usize) -> Cluster {
        let mut servers = Vec::new();
        let mut dirs = Vec::new();
        let mut addrs = Vec::new();
        for _ in 0..n {
            let dir = tempfile::tempdir().expect("temp dir");
            let h =
                naxos_server::start(config("127.0.0.1:0", dir.path()), Arc::new(TcpNet)).await.expect("server starts");
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
        Cluster { servers, dirs, addrs, layout, repair: true }
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
        let mut c = config(&self.addrs[i], self.dirs[i].path());
        c.repair_damaged = self.repair;
        let h = naxos_server::start(c, Arc::new(TcpNet)).await.expect("server restarts");
        self.servers[i] = Some(h);
    }

    /// Moves the cluster to a new epoch with the same members (a reconfiguration).
    pub async fn next_epoch(&self) {
        naxos_control::reconfigure(
            Arc::new(TcpNet),
            &self.addrs,
            &naxos_control::Change::NextEpoch,
            &naxos_control::Options::default(),
        )
        .await
        .expect("a new epoch");
    }

    pub async fn stop_all(mut self) {
        for i in 0..self.servers.len() {
            self.stop(i).await;
        }
    }
}

/// A server's configuration for these tests: every role but management
/// (they stop nodes and check what follows by hand; tests/healing.rs runs
/// the managers).
pub fn config(addr: &str, dir: &std::path::Path) -> ServerConfig {
    let mut c = ServerConfig::new(addr, dir);
    c.roles.management = false;
    c
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
    pool.call(addr, req(layout, request::Body::Write(Write { position: p.0, entry: Some(entry), repair: false })))
        .await
        .map(|_| ())
}

/// A data entry.
pub fn data(payload: &[u8]) -> Entry {
    Entry {
        kind: naxos_wire::EntryKind::Data as i32,
        payload: bytes::Bytes::copy_from_slice(payload),
        ..Default::default()
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    pub child: std::process::Child,
    pub addr: String,
    /// The lines it printed on stdout after its address.
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Proc {
    /// Starts `naxos ARGS...` and waits for the line on stdout that holds its
    /// address (the first token that parses as a socket address).
    pub fn start(args: &[&str]) -> Proc {
        Proc::start_with(args, &[])
    }

    /// As `start`, with environment variables set.
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> Proc {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"));
        command.args(args).envs(env.iter().copied());
        Proc::spawn(command, args)
    }

    /// As `start`, under an open-file limit of `files` (soft and hard), as
    /// `ulimit -n FILES` would set.
    #[allow(dead_code)]
    pub fn start_with_files_limit(args: &[&str], files: u64) -> Proc {
        use std::os::unix::process::CommandExt;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"));
        command.args(args);
        // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(move || rlimit::setrlimit(rlimit::Resource::NOFILE, files, files));
        }
        Proc::spawn(command, args)
    }

    /// Starts `naxos ARGS...`: the process once it printed its address, or
    /// what it wrote on stderr if it exited first (a refusal to start).
    pub fn try_start(args: &[&str]) -> Result<Proc, String> {
        use std::io::Read;
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"));
        command.args(args).stderr(std::process::Stdio::piped());
        let mut child =
            command.env("RUST_LOG", "warn").stdout(std::process::Stdio::piped()).spawn().expect("naxos starts");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        // Drained until the process ends, so that it never blocks on a full pipe.
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        Proc::until_address(child).ok_or_else(|| errors.join().unwrap_or_default())
    }

    fn spawn(mut command: std::process::Command, args: &[&str]) -> Proc {
        let child = command
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("naxos starts");
        Proc::until_address(child).unwrap_or_else(|| panic!("naxos {args:?} exited before printing its address"))
    }

    /// Waits for `child` to print its address (the first token that parses
    /// as a socket address); `None` if it exits first (then it is reaped).
    fn until_address(mut child: std::process::Child) -> Option<Proc> {
        use std::io::BufRead;
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = std::io::BufReader::new(stdout).lines();
        let addr = loop {
            let Some(Ok(line)) = lines.next() else {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            };
            if let Some(a) = line.split_whitespace().find(|w| w.parse::<std::net::SocketAddr>().is_ok()) {
                break a.to_string();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Some(Proc { child, addr, lines: rx })
    }

    /// The next line it prints on stdout that `wanted` accepts (waiting up
    /// to 30 s; `None` if it exits or stays silent first).
    pub fn line(&self, wanted: impl Fn(&str) -> bool) -> Option<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let left = deadline.checked_duration_since(std::time::Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(l) if wanted(&l) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM (graceful stop), and wait for exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        self.child.wait().expect("wait for naxos")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Runs `naxos ARGS...` to completion with `stdin`; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("naxos runs");
    let mut input = child.stdin.take().expect("stdin is piped");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let out = child.wait_with_output().expect("naxos finishes");
    (out.status.code().unwrap_or(-1), out.stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

/// One framed request on a raw connection; the response.
pub fn ask(s: &mut std::net::TcpStream, req: &Request) -> Option<naxos_wire::proto::Response> {
    use std::io::Write;
    let mut buf = bytes::BytesMut::new();
    naxos_wire::frame::encode(req, &mut buf);
    s.write_all(&buf).ok()?;
    read_response(s)
}

/// The next response on `s` (waiting up to 20 s). Reads one frame's worth
/// of bytes exactly, so that what follows stays on the socket.
pub fn read_response(s: &mut std::net::TcpStream) -> Option<naxos_wire::proto::Response> {
    use prost::Message;
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).ok()?;
    naxos_wire::proto::Response::decode(&body[..]).ok()
}

/// The cluster id and epoch of the server at `addr`, from its layout.
pub fn layout_of(addr: &str) -> (String, u64) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    match ask(&mut s, &get_layout()).and_then(|r| r.body) {
        Some(response::Body::Layout(l)) => l.layout.map(|l| (l.cluster_id, l.epoch)).unwrap_or_default(),
        other => panic!("{other:?}"),
    }
}

/// A `GetLayout` request (anyone may send it).
pub fn get_layout() -> Request {
    Request { id: 1, body: Some(request::Body::GetLayout(naxos_wire::proto::GetLayout {})), ..Default::default() }
}
