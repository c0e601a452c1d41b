//! The server runtime: opens the data directory, starts one task per role,
//! accepts connections through the `Net` seam and routes each request to the
//! role that owns it. A connection's reader decodes frames and enforces the
//! in-flight limit; its writer coalesces answers into few syscalls. A malformed
//! frame closes only that connection, with a logged reason.

use crate::acceptor::AcceptorStore;
use crate::config::Config;
use crate::fence::Fence;
use crate::layout::LayoutStore;
use crate::reply::Reply;
use crate::{logunit, metrics, recovery, sequencer, Error};
use naxos_storage::{DiskStore, Options as StoreOptions};
use naxos_wire::net::Net;
use naxos_wire::proto::{self, request, response, Request};
use naxos_wire::rpc::{self, Pool};
use naxos_wire::{Epoch, ErrorCode, Layout, NodeId, ServerError};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

/// Time a stopping server waits for its log unit to close its files.
const STOP_STORAGE_WAIT: Duration = Duration::from_secs(10);

struct Ctx {
    config: Config,
    advertise: String,
    node_id: NodeId,
    cluster: OnceLock<String>,
    layout: Mutex<LayoutStore>,
    /// The layout Paxos acceptor, on layout servers only.
    acceptor: Option<Mutex<AcceptorStore>>,
    logunit: Option<mpsc::UnboundedSender<logunit::Op>>,
    sequencer: Option<mpsc::UnboundedSender<sequencer::Op>>,
    pool: Pool,
    /// The network, for the connections a roll-forward makes.
    net: Arc<dyn Net>,
    shutdown: watch::Receiver<bool>,
    /// If this process's sequencer crashed (no clean stop) after handing out
    /// tokens: the last epoch it may have handed them out in. It never serves
    /// that epoch or an older one again.
    restarted_at: Option<u64>,
    /// The node's epoch, which every role fences requests with.
    fence: Arc<Fence>,
    /// Whether the sequencer's own file (`sequencer.json`) was there at
    /// start. Only then does a recovery skip the token ceiling this node
    /// stored on the log units (its own record is at least as high, and
    /// exact after a clean stop); without the file that ceiling is all that
    /// says which positions it handed out (a deleted file once let it hand
    /// out acknowledged positions again).
    own_record: bool,
    /// When this process started, on its runtime's clock.
    started: tokio::time::Instant,
    /// The management role's view (heartbeats, the acting manager, catch-up).
    health: Mutex<manage::Health>,
    /// Raised when the log unit failed for good (it refuses every request).
    unit_failed: Arc<std::sync::atomic::AtomicBool>,
    /// How far ahead of the log's tail the log unit takes writes.
    horizon: Horizon,
}

/// A running server: its address, and the way to stop it.
pub struct ServerHandle {
    addr: SocketAddr,
    advertise: String,
    metrics_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    accept: tokio::task::JoinHandle<()>,
    storage_done: Option<oneshot::Receiver<()>>,
    sequencer_done: Option<oneshot::Receiver<()>>,
    ctx: Arc<Ctx>,
}

impl ServerHandle {
    /// The bound socket address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the metrics listener is bound (with `Config::metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The address the server tells others (the layout names it so).
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// Whether the node holds a layout.
    pub fn is_bootstrapped(&self) -> bool {
        self.ctx.cluster.get().is_some()
    }

    /// The layout the node holds, if bootstrapped.
    pub fn layout(&self) -> Option<Layout> {
        self.ctx.layout.lock().ok().and_then(|l| l.get().cloned())
    }

    /// Stops accepting, closes every connection and waits for the log unit to
    /// close its files.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        let _ = self.accept.await;
        drop(self.ctx);
        if let Some(done) = self.sequencer_done {
            let _ = tokio::time::timeout(STOP_STORAGE_WAIT, done).await;
        }
        if let Some(done) = self.storage_done {
            let _ = tokio::time::timeout(STOP_STORAGE_WAIT, done).await;
        }
    }

    /// Waits until the server stops (it only stops through `stop`).
    pub async fn wait(&mut self) {
        until_stopped(&mut self.shutdown.subscribe()).await;
    }
}

/// Resolves once the server is told to stop.
async fn until_stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

fn random_node_id() -> NodeId {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    NodeId(h.finish())
}

/// Starts a server: opens its data directory, binds, and serves until
/// stopped. A damaged data directory is refused, or with
/// `DamagedData::MoveAside` moved aside and replaced by an empty one.
pub async fn start(config: Config, net: Arc<dyn Net>) -> Result<ServerHandle, Error> {
    match start_once(config.clone(), net.clone()).await {
        Err(e) if e.is_damage() && config.damaged_data == crate::DamagedData::MoveAside => {
            let dir = &config.data_dir;
            let unix_ms =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let mut aside = dir.clone().into_os_string();
            aside.push(format!(".damaged-{unix_ms}"));
            let aside = std::path::PathBuf::from(aside);
            config.fs.rename(dir, &aside).map_err(|source| Error::Io {
                context: format!("moving the damaged data directory {} aside to {}", dir.display(), aside.display()),
                source,
            })?;
            tracing::error!(
                dir = %dir.display(),
                moved_to = %aside.display(),
                "the data directory is damaged ({e}); moved it aside and starting empty: the cluster copies the \
                 log back in from this node's replicas"
            );
            start_once(config, net).await
        }
        other => other,
    }
}

async fn start_once(config: Config, net: Arc<dyn Net>) -> Result<ServerHandle, Error> {
    let dir = config.data_dir.clone();
    config
        .fs
        .create_dir_all(&dir)
        .map_err(|source| Error::Io { context: format!("creating data directory {}", dir.display()), source })?;
    let layout = LayoutStore::open(&dir, config.fs.clone())?;
    let acceptor = if config.roles.layout {
        Some(Mutex::new(AcceptorStore::open(&dir, config.fs.clone(), layout.get().map(|l| l.epoch))?))
    } else {
        None
    };
    if config.roles.sequencer {
        // Checked before the log unit opens its files, so that a damaged
        // directory is refused (or moved aside) with nothing of it in use.
        if let Err(e) = sequencer::CeilingStore::new(config.fs.clone(), &dir).load() {
            if e.kind() == std::io::ErrorKind::InvalidData {
                return Err(Error::Damaged(format!("reading the sequencer's token ceiling in {}: {e}", dir.display())));
            }
        }
    }
    let layout_cluster = layout.get().map(|l| l.cluster_id.clone());
    // The node's epoch: the committed layout's, raised by the log unit's seal.
    let fence = Fence::new(Epoch(layout.get().map_or(0, |l| l.epoch)));

    let mut node_id = config.node_id.unwrap_or_else(random_node_id);
    let mut storage_done = None;
    let mut sequencer_done = None;
    let unit_failed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
    let horizon = Horizon::default();
    if let Some(active) = layout.get().and_then(|l| l.segments.last()) {
        horizon.raise(active.start);
    }
    let logunit = if config.roles.logunit {
        let options = StoreOptions {
            segment_positions: config.segment_positions,
            entry_bytes_max: config.entry_bytes_max,
            sync: config.sync,
            preallocate_bytes: config.preallocate_bytes,
            resident_segments_max: config.resident_segments_max,
            fs: config.fs.clone(),
            node_id: config.node_id,
        };
        let store = DiskStore::open(&dir.join("log"), options)?;
        let meta = naxos_storage::Store::meta(&store).clone();
        horizon.raise(naxos_storage::Store::tail(&store).0.max(meta.trim_mark.0));
        if let Some(c) = &layout_cluster {
            if !meta.cluster_id.is_empty() && meta.cluster_id != *c {
                return Err(Error::Config(format!(
                    "data directory {} mixes clusters: layout says {c}, log unit says {}",
                    dir.display(),
                    meta.cluster_id
                )));
            }
        }
        node_id = meta.node_id;
        let unit = logunit::LogUnit::new(Box::new(store), config.entry_bytes_max, config.read_range_bytes_max)
            .with_sync_delay(config.sync_delay_max, node_id.0)
            .with_fence(fence.clone())
            .with_failure_flag(unit_failed.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let (done_tx, done_rx) = oneshot::channel();
        storage_done = Some(done_rx);
        if config.storage_thread {
            std::thread::Builder::new()
                .name("naxos-logunit".into())
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                        Ok(rt) => rt.block_on(unit.run(rx)),
                        Err(e) => tracing::error!("cannot start the log unit's runtime: {e}"),
                    }
                    let _ = done_tx.send(());
                })
                .map_err(|source| Error::Io { context: "starting the log unit thread".into(), source })?;
        } else {
            tokio::spawn(async move {
                unit.run(rx).await;
                let _ = done_tx.send(());
            });
        }
        Some(tx)
    } else {
        None
    };

    // The context, for tasks started before it exists (the sequencer's ceiling replicator).
    let ctx_slot: Arc<OnceLock<std::sync::Weak<Ctx>>> = Arc::new(OnceLock::new());
    let mut crashed_in: Option<u64> = None;
    let mut own_record = false;
    let sequencer = if config.roles.sequencer {
        let (tx, rx) = mpsc::unbounded_channel();
        let slot = ctx_slot.clone();
        let replicate: sequencer::CeilingReplicator = Arc::new(move |ceiling| {
            let slot = slot.clone();
            Box::pin(async move {
                let ctx = slot.get().and_then(std::sync::Weak::upgrade).ok_or("the server is stopping")?;
                store_ceiling(&ctx, ceiling).await
            })
        });
        let store = sequencer::CeilingStore::new(config.fs.clone(), &dir).with_replicator(replicate);
        let stored = store.load().map_err(|source| match source.kind() {
            std::io::ErrorKind::InvalidData => {
                Error::Damaged(format!("reading the sequencer's token ceiling in {}: {source}", dir.display()))
            }
            _ => Error::Io { context: format!("reading the sequencer's token ceiling in {}", dir.display()), source },
        })?;
        // Tokens handed out before a crash (not a clean stop) may still be
        // written, in any epoch up to the one the file names.
        if stored.ceiling > 0 && stored.clean_streams.is_none() {
            crashed_in = Some(stored.epoch);
        }
        own_record = stored.present;
        if !stored.present && layout_cluster.is_some() {
            // Deleted, or never written by a node that never handed out a
            // token: either way the ceiling this node stored on the log
            // units bounds what it may have handed out (see `own_record`).
            tracing::warn!(
                file = %dir.join(sequencer::CEILING_FILE).display(),
                "the sequencer's token ceiling file is missing in a data directory that belongs to a cluster; \
                 the sequencer starts above the ceiling the log units hold for it"
            );
        }
        let seq = sequencer::Sequencer::with_ceiling(stored.ceiling, config.token_ceiling_block)
            .recorded_at(Epoch(stored.epoch))
            .with_saved_streams(stored.clean_streams.unwrap_or_default())
            .with_fence(fence.clone());
        let (done_tx, done_rx) = oneshot::channel();
        sequencer_done = Some(done_rx);
        tokio::spawn(async move {
            seq.run(rx, Some(store)).await;
            let _ = done_tx.send(());
        });
        Some(tx)
    } else {
        None
    };

    let mut listener = net
        .bind(&config.listen)
        .await
        .map_err(|source| Error::Io { context: format!("binding {}", config.listen), source })?;
    let addr =
        listener.local_addr().map_err(|source| Error::Io { context: "reading the bound address".into(), source })?;
    let advertise = config.advertise.clone().unwrap_or_else(|| addr.to_string());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let cluster = OnceLock::new();
    if let Some(c) = layout_cluster {
        let _ = cluster.set(c);
    }
    let pool = Pool::new(net.clone(), rpc::Options { frame_bytes_max: config.frame_bytes_max, ..Default::default() });
    let restarted_at = crashed_in;
    let ctx = Arc::new(Ctx {
        config,
        advertise: advertise.clone(),
        node_id,
        cluster,
        layout: Mutex::new(layout),
        acceptor,
        logunit,
        sequencer,
        pool,
        net: net.clone(),
        shutdown: shutdown_rx,
        restarted_at,
        fence,
        own_record,
        started: tokio::time::Instant::now(),
        health: Mutex::new(manage::Health::default()),
        unit_failed,
        horizon,
    });
    let _ = ctx_slot.set(Arc::downgrade(&ctx));
    let metrics_addr = match ctx.config.metrics_listen.clone() {
        Some(listen) => Some(http::start(&ctx, &listen).await?),
        None => None,
    };
    start_recovery(&ctx);
    watch_for_stalls(&ctx);
    manage::start_management(&ctx);
    mend::start_mending(&ctx);

    let actx = ctx.clone();
    let accept = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        let mut shutdown = actx.shutdown.clone();
        loop {
            tokio::select! {
                biased; // deterministic polling order (the simulator replays seeds)
                _ = until_stopped(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer, role)) if conns.len() < actx.config.connections_max => {
                        conns.spawn(serve_conn(actx.clone(), stream, peer, role));
                    }
                    Ok((stream, peer, _)) => {
                        tracing::warn!(%peer, max = actx.config.connections_max, "refused a connection: too many connections");
                        conns.spawn(refuse_conn(stream, actx.config.connections_max));
                    }
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        conns.shutdown().await;
    });
    tracing::info!(%addr, roles = ?ctx.config.roles.names(), "naxos server listening");
    if let Some(m) = metrics_addr {
        tracing::info!(%addr, "metrics at http://{m}/metrics");
    }
    Ok(ServerHandle { addr, advertise, metrics_addr, shutdown: shutdown_tx, accept, storage_done, sequencer_done, ctx })
}

mod adopt;
mod conn;
mod guard;
mod http;
mod manage;
mod mend;
mod page;
mod upkeep;
use adopt::{bootstrap, commit};
pub use conn::TOKEN_POSITIONS_PER_S;
use conn::{refuse_conn, serve_conn};
pub use guard::WRITE_WINDOW;
use guard::{admit_epoch, check_ahead, check_trim, confirm_epoch, highest_epoch, Horizon};
use upkeep::{start_recovery, watch_for_stalls};

/// Requests the log unit answers.
fn for_logunit(body: &request::Body) -> bool {
    matches!(
        body,
        request::Body::Write(_)
            | request::Body::Read(_)
            | request::Body::ReadRange(_)
            | request::Body::Trim(_)
            | request::Body::UnitTail(_)
            | request::Body::StreamQuery(_)
            | request::Body::StoreCeiling(_)
            | request::Body::RangeDigest(_)
    )
}

/// Requests the sequencer answers.
fn for_sequencer(body: &request::Body) -> bool {
    matches!(body, request::Body::Token(_) | request::Body::SeqTail(_) | request::Body::SeqBootstrap(_))
}

fn is_admin(body: &request::Body) -> bool {
    matches!(
        body,
        request::Body::GetLayout(_)
            | request::Body::Status(_)
            | request::Body::Bootstrap(_)
            | request::Body::Heartbeat(_)
    )
}

fn dispatch(ctx: &Arc<Ctx>, req: Request, reply: Reply) {
    let Some(body) = &req.body else {
        return reply.send(Err(ServerError::new(ErrorCode::BadRequest, "request has no body")));
    };
    match ctx.cluster.get() {
        // A node that was never bootstrapped joins a cluster by taking its layout.
        None if matches!(body, request::Body::CommitLayout(_)) => {}
        None if !is_admin(body) => {
            return reply.send(Err(ServerError::new(
                ErrorCode::NotBootstrapped,
                "node is not bootstrapped; run `naxos bootstrap` first",
            )));
        }
        Some(c) if *c != req.cluster_id && (!is_admin(body) || !req.cluster_id.is_empty()) => {
            return reply.send(Err(ServerError::new(
                ErrorCode::WrongCluster,
                format!("this node belongs to cluster {c}, not '{}'", req.cluster_id),
            )));
        }
        _ => {}
    }
    if matches!(body, request::Body::Batch(_)) {
        return dispatch_batch(ctx, req, reply);
    }
    match body {
        request::Body::Batch(_) => {
            reply.send(Err(ServerError::new(ErrorCode::BadRequest, "a batch may not hold a batch")))
        }
        request::Body::Trim(t) if ctx.logunit.is_some() => {
            let ctx = ctx.clone();
            let position = t.position;
            tokio::spawn(async move {
                match check_trim(&ctx, position, req.epoch).await {
                    Ok(()) => to_logunit(&ctx, req, reply),
                    Err(e) => reply.send(Err(e)),
                }
            });
        }
        request::Body::Write(w) if ctx.logunit.is_some() && w.position >= ctx.horizon.limit() => {
            let ctx = ctx.clone();
            let position = w.position;
            tokio::spawn(async move {
                match check_ahead(&ctx, position, req.epoch).await {
                    Ok(()) => to_logunit(&ctx, req, reply),
                    Err(e) => reply.send(Err(e)),
                }
            });
        }
        request::Body::SeqBootstrap(_) if ctx.sequencer.is_some() => {
            let ctx = ctx.clone();
            tokio::spawn(async move {
                match admit_epoch(&ctx, req.epoch, 0, "a sequencer bootstrap").await {
                    Ok(()) => to_sequencer(&ctx, req, reply),
                    Err(e) => reply.send(Err(e)),
                }
            });
        }
        b if for_logunit(b) => to_logunit(ctx, req, reply),
        request::Body::SeqTail(_) if ctx.sequencer.is_some() => tail_query(ctx, req, reply),
        request::Body::EpochProbe(_) => {
            reply.send(Ok(response::Body::EpochProbe(proto::EpochProbeOk { epoch: highest_epoch(ctx) })))
        }
        b if for_sequencer(b) => to_sequencer(ctx, req, reply),
        request::Body::Append(_) => match &ctx.sequencer {
            Some(_) => {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    let Some(seq) = &ctx.sequencer else { return };
                    let roles = crate::append::Roles {
                        sequencer: seq,
                        logunit: ctx.logunit.as_ref(),
                        layout: ctx.layout.lock().ok().and_then(|l| l.get().cloned()),
                        me: &ctx.advertise,
                    };
                    reply.send(
                        crate::append::append(roles, req, ctx.config.inflight_max, ctx.config.entry_bytes_max).await,
                    )
                });
            }
            None => reply.send(Err(wrong_role(ctx, "sequencer"))),
        },
        request::Body::Heartbeat(hb) => reply.send(Ok(response::Body::Heartbeat(manage::heartbeat(ctx, hb)))),
        request::Body::GetLayout(_) => {
            let layout = ctx.layout.lock().ok().and_then(|l| l.get().cloned());
            reply.send(match layout {
                Some(l) => Ok(response::Body::Layout(proto::LayoutOk { layout: Some(l) })),
                None => Err(ServerError::new(
                    ErrorCode::NotBootstrapped,
                    "node holds no layout; run `naxos bootstrap` first",
                )),
            })
        }
        request::Body::Bootstrap(b) => {
            let ctx = ctx.clone();
            let layout = b.layout.clone().map(|l| *l);
            tokio::spawn(async move { reply.send(bootstrap(&ctx, layout).await.map(|_| crate::reply::ok())) });
        }
        request::Body::CommitLayout(c) => {
            let ctx = ctx.clone();
            let layout = c.layout.clone().map(|l| *l);
            tokio::spawn(async move { reply.send(commit(&ctx, layout).await.map(|_| crate::reply::ok())) });
        }
        request::Body::LayoutPrepare(_) | request::Body::LayoutAccept(_) => {
            if ctx.acceptor.is_none() {
                return reply.send(Err(wrong_role(ctx, "layout")));
            }
            let ctx = ctx.clone();
            tokio::spawn(async move { reply.send(vote(&ctx, req).await) });
        }
        request::Body::Seal(s) => {
            let ctx = ctx.clone();
            let epoch = Epoch(s.epoch);
            tokio::spawn(async move {
                // A seal comes one epoch ahead of the chosen layout.
                match admit_epoch(&ctx, epoch.0, 1, "a seal").await {
                    Ok(()) => reply.send(seal(&ctx, req, epoch).await),
                    Err(e) => reply.send(Err(e)),
                }
            });
        }
        request::Body::Status(_) => {
            let ctx = ctx.clone();
            tokio::spawn(async move { reply.send(Ok(response::Body::Status(status(&ctx).await))) });
        }
        // Every role request matched a guard above; nothing else is left.
        _ => reply.send(Err(ServerError::new(ErrorCode::BadRequest, "request of no known kind"))),
    }
}

/// Routes each request of a batch as if it came alone, under the batch's
/// cluster and epoch; the answers are gathered into one `BatchOk`.
fn dispatch_batch(ctx: &Arc<Ctx>, req: Request, reply: Reply) {
    let Some(request::Body::Batch(batch)) = req.body else {
        return reply.send(Err(ServerError::new(ErrorCode::BadRequest, "not a batch")));
    };
    let count = batch.requests.len();
    if count > ctx.config.inflight_max {
        return reply.send(Err(ServerError::new(
            ErrorCode::BadRequest,
            format!("a batch holds at most {} requests, this one {count}", ctx.config.inflight_max),
        )));
    }
    if count == 0 {
        return reply.send(Ok(response::Body::Batch(proto::BatchOk { responses: Vec::new() })));
    }
    // The batch's one answer must fit a frame: bulk reads may each fill up
    // to their byte limit (a 1 KB batch of them once built a 480 MiB answer).
    let read_bytes: u64 = batch
        .requests
        .iter()
        .filter_map(|r| match &r.body {
            Some(request::Body::ReadRange(rr)) => Some(rr.max_bytes.min(ctx.config.read_range_bytes_max as u64)),
            _ => None,
        })
        .sum();
    if read_bytes > ctx.config.frame_bytes_max as u64 / 2 {
        return reply.send(Err(ServerError::new(
            ErrorCode::BadRequest,
            format!(
                "the bulk reads of this batch could answer {read_bytes} bytes, more than half the frame limit ({} bytes): send them in several batches",
                ctx.config.frame_bytes_max
            ),
        )));
    }
    if let Some(h) = metrics::get() {
        h.batch_requests.record(count as f64);
    }
    // Each role gets its share of the batch in one message, so the log unit
    // applies all of its writes in one group commit.
    let mut unit = Vec::new();
    let mut seq = Vec::new();
    for (mut sub, r) in batch.requests.into_iter().zip(Reply::batch(reply, count)) {
        let r = r.with_id(sub.id).timed(sub.body.as_ref().map_or(metrics::Kind::Other, metrics::Kind::of));
        sub.cluster_id.clone_from(&req.cluster_id);
        sub.epoch = req.epoch;
        match sub.body {
            Some(request::Body::Batch(_)) => {
                r.send(Err(ServerError::new(ErrorCode::BadRequest, "a batch may not hold a batch")))
            }
            // Checked first, on their own (see `guard`).
            Some(request::Body::Trim(_) | request::Body::SeqBootstrap(_)) => dispatch(ctx, sub, r),
            Some(request::Body::Write(ref w)) if w.position >= ctx.horizon.limit() => dispatch(ctx, sub, r),
            Some(ref b) if for_logunit(b) && ctx.logunit.is_some() => unit.push((sub, r)),
            Some(request::Body::SeqTail(_)) => dispatch(ctx, sub, r),
            Some(ref b) if for_sequencer(b) && ctx.sequencer.is_some() => seq.push((sub, r)),
            _ => dispatch(ctx, sub, r),
        }
    }
    if let (false, Some(tx)) = (unit.is_empty(), &ctx.logunit) {
        if let Err(mpsc::error::SendError(logunit::Op::Requests(reqs))) = tx.send(logunit::Op::Requests(unit)) {
            for (_, r) in reqs {
                r.send(Err(ServerError::new(ErrorCode::Unavailable, "log unit stopped")));
            }
        }
    }
    if let (false, Some(tx)) = (seq.is_empty(), &ctx.sequencer) {
        if let Err(mpsc::error::SendError(sequencer::Op::Requests(reqs))) = tx.send(sequencer::Op::Requests(seq)) {
            for (_, r) in reqs {
                r.send(Err(ServerError::new(ErrorCode::Unavailable, "sequencer stopped")));
            }
        }
    }
}

/// Hands one request to the node's log unit.
fn to_logunit(ctx: &Ctx, req: Request, reply: Reply) {
    match &ctx.logunit {
        Some(tx) => {
            if let Err(mpsc::error::SendError(logunit::Op::Request(_, reply))) =
                tx.send(logunit::Op::Request(req, reply))
            {
                reply.send(Err(ServerError::new(ErrorCode::Unavailable, "log unit stopped")));
            }
        }
        None => reply.send(Err(wrong_role(ctx, "logunit"))),
    }
}

/// Hands one request to the node's sequencer.
fn to_sequencer(ctx: &Ctx, req: Request, reply: Reply) {
    match &ctx.sequencer {
        Some(tx) => {
            if let Err(mpsc::error::SendError(sequencer::Op::Request(_, reply))) =
                tx.send(sequencer::Op::Request(req, reply))
            {
                reply.send(Err(ServerError::new(ErrorCode::Unavailable, "sequencer stopped")));
            }
        }
        None => reply.send(Err(wrong_role(ctx, "sequencer"))),
    }
}

/// A tail query: the sequencer's answer goes out once a majority of the
/// layout servers confirm that no newer epoch exists (see `confirm_epoch`).
fn tail_query(ctx: &Arc<Ctx>, req: Request, reply: Reply) {
    let Some(tx) = &ctx.sequencer else { return reply.send(Err(wrong_role(ctx, "sequencer"))) };
    let epoch = req.epoch;
    let (inner, answer) = Reply::once(req.id);
    if tx.send(sequencer::Op::Request(req, inner)).is_err() {
        return reply.send(Err(ServerError::new(ErrorCode::Unavailable, "sequencer stopped")));
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        let Ok(answer) = answer.await else { return reply.send(Err(stopped())) };
        match answer.body {
            Some(response::Body::Tail(t)) => match confirm_epoch(&ctx, epoch).await {
                Ok(()) => reply.send(Ok(response::Body::Tail(t))),
                Err(e) => reply.send(Err(e)),
            },
            Some(other) => reply.send(Ok(other)),
            None => reply.send(Err(ServerError::new(ErrorCode::Unavailable, "sequencer gave no answer"))),
        }
    });
}

fn wrong_role(ctx: &Ctx, role: &str) -> ServerError {
    ServerError::new(
        ErrorCode::WrongRole,
        format!("{} does not run the {role} role (it runs {:?})", ctx.advertise, ctx.config.roles.names()),
    )
}

fn stopped() -> ServerError {
    ServerError::new(ErrorCode::Unavailable, "server is stopping")
}

/// A layout server's Paxos vote on a `LayoutPrepare` or `LayoutAccept`. A
/// base layout newer than the node's is chosen (a proposer only builds on a
/// chosen layout): the node commits it first, as if told by a commit.
async fn vote(ctx: &Arc<Ctx>, req: Request) -> Result<response::Body, ServerError> {
    let base = match &req.body {
        Some(request::Body::LayoutPrepare(p)) => p.base.as_deref().cloned(),
        Some(request::Body::LayoutAccept(a)) => a.base.as_deref().cloned(),
        _ => None,
    };
    let held = ctx.layout.lock().map_err(|_| stopped())?.get().map(|l| l.epoch);
    if let Some(base) = base.filter(|b| held.is_none_or(|e| b.epoch > e)) {
        commit(ctx, Some(base)).await?;
    }
    let chosen = ctx.layout.lock().map_err(|_| stopped())?.get().cloned();
    let wanted = match &req.body {
        Some(request::Body::LayoutPrepare(p)) => p.epoch,
        Some(request::Body::LayoutAccept(a)) => a.layout.as_ref().map_or(0, |l| l.epoch),
        _ => 0,
    };
    // A proposal builds on the chosen layout (sent as its base): a ballot
    // further ahead would shut out every honest proposer for good.
    if let Some(c) = chosen.as_ref().filter(|c| wanted > c.epoch.saturating_add(1)) {
        return Err(ServerError::new(
            ErrorCode::BadRequest,
            format!("a proposal at epoch {wanted} does not build on the chosen epoch {}", c.epoch),
        ));
    }
    let Some(acceptor) = &ctx.acceptor else { return Err(wrong_role(ctx, "layout")) };
    let mut acceptor = acceptor.lock().map_err(|_| stopped())?;
    let vote = match req.body {
        Some(request::Body::LayoutPrepare(p)) => {
            acceptor.prepare(chosen.as_ref(), p.epoch, naxos_control::paxos::Rank::from_proto(p.rank.as_ref()))?
        }
        Some(request::Body::LayoutAccept(a)) => {
            let Some(layout) = a.layout.map(|l| *l) else {
                return Err(ServerError::new(ErrorCode::BadRequest, "layout accept without a layout"));
            };
            if chosen.as_ref().is_some_and(|c| c.cluster_id != layout.cluster_id) {
                return Err(ServerError::new(ErrorCode::WrongCluster, "layout of another cluster"));
            }
            layout.validate().map_err(|e| ServerError::new(ErrorCode::BadRequest, format!("invalid layout: {e}")))?;
            acceptor.accept(chosen.as_ref(), naxos_control::paxos::Rank::from_proto(a.rank.as_ref()), &layout)?
        }
        _ => return Err(ServerError::new(ErrorCode::BadRequest, "not a layout vote request")),
    };
    Ok(response::Body::LayoutVote(vote.to_proto()))
}

/// Stores the sequencer's token ceiling on every replica of one chain of the
/// active segment (the first chain that takes it on all its replicas): any
/// later seal reaches one replica of that chain, so the next sequencer
/// learns the ceiling even if this node is gone.
async fn store_ceiling(ctx: &Arc<Ctx>, ceiling: u64) -> Result<(), String> {
    let layout = ctx.layout.lock().ok().and_then(|l| l.get().cloned()).ok_or("no layout")?;
    let Some(active) = layout.segments.last() else { return Err("the layout has no segment".into()) };
    let mut last = String::new();
    for stripe in &active.stripes {
        let req = Request {
            id: 0,
            cluster_id: layout.cluster_id.clone(),
            epoch: layout.epoch,
            body: Some(request::Body::StoreCeiling(proto::StoreCeiling { ceiling, node_id: ctx.node_id.0 })),
        };
        let answers = futures::future::join_all(stripe.chain.iter().map(|a| ctx.pool.call(a, req.clone()))).await;
        match answers.into_iter().find_map(|a| a.err()) {
            None => return Ok(()),
            Some(e) => last = e.to_string(),
        }
    }
    Err(format!("no chain took it on every replica: {last}"))
}

async fn seal(ctx: &Arc<Ctx>, req: Request, epoch: Epoch) -> Result<response::Body, ServerError> {
    let mut tail = 0;
    let mut unit_ceiling = None;
    if let Some(tx) = &ctx.logunit {
        let (reply, rx) = Reply::once(req.id);
        tx.send(logunit::Op::Request(req, reply)).map_err(|_| stopped())?;
        match rx.await.map_err(|_| stopped())?.body {
            Some(response::Body::Seal(s)) => {
                tail = s.tail;
                unit_ceiling = s.sequencer_next;
            }
            Some(response::Body::Error(e)) => return Err(ServerError::from_proto(e)),
            _ => return Err(ServerError::new(ErrorCode::Unavailable, "log unit gave no seal answer")),
        }
    }
    let mut sequencer_next = None;
    if let Some(tx) = &ctx.sequencer {
        let (otx, orx) = oneshot::channel();
        tx.send(sequencer::Op::Seal(epoch, otx)).map_err(|_| stopped())?;
        sequencer_next = orx.await.map_err(|_| stopped())??;
    }
    Ok(response::Body::Seal(proto::SealOk { tail, sequencer_next: sequencer_next.max(unit_ceiling) }))
}

async fn status(ctx: &Arc<Ctx>) -> proto::StatusOk {
    let layout_epoch = ctx.layout.lock().ok().and_then(|l| l.get().map(|l| l.epoch)).unwrap_or(0);
    let mut out = proto::StatusOk {
        node_id: ctx.node_id.0,
        roles: ctx.config.roles.names(),
        epoch: layout_epoch.max(ctx.fence.get().0),
        bootstrapped: ctx.cluster.get().is_some(),
        cluster_id: ctx.cluster.get().cloned().unwrap_or_default(),
        tail: None,
        sequencer_ready: false,
        version: naxos_wire::VERSION.to_string(),
        entries_read: 0,
    };
    if let Some(tx) = &ctx.logunit {
        let (otx, orx) = oneshot::channel();
        if tx.send(logunit::Op::Info(otx)).is_ok() {
            if let Ok(info) = orx.await {
                out.tail = Some(info.tail.0);
                out.entries_read = info.entries_read;
            }
        }
    }
    if let Some(tx) = &ctx.sequencer {
        let (otx, orx) = oneshot::channel();
        if tx.send(sequencer::Op::Info(otx)).is_ok() {
            if let Ok((_, next)) = orx.await {
                out.sequencer_ready = next.is_some();
                if let Some(n) = next {
                    out.tail = Some(out.tail.unwrap_or(0).max(n.0));
                }
            }
        }
    }
    out
}
