//! The management role's runtime: heartbeats on connections of their own
//! (never queued behind bulk traffic), answers fed to the pure
//! [`Manager`](naxos_control::health::Manager), and, on the acting manager,
//! its actions run one at a time as reconfigurations through the driver.
//! Also the spare's side (`--join`): announce itself to the layout servers
//! until a layout names it. Every automatic reconfiguration is logged with
//! its reason and the new epoch.

use super::*;
use naxos_control::health::{Action, Manager, Seen};
use naxos_control::reconfig::Progress;
use std::collections::BTreeSet;

/// What the management role shows to heartbeats and `naxos status`.
#[derive(Default)]
pub(super) struct Health {
    /// The role's decisions (only with the management role).
    pub manager: Option<Manager>,
    /// Whether this node acted as the manager at its last tick.
    pub acting: bool,
    /// The running state transfer: to whom, its progress, since when.
    pub copying: Option<(String, Arc<Progress>, tokio::time::Instant)>,
    /// The last automatic reconfiguration's failure (empty once one succeeds).
    pub last_error: String,
}

/// The time the manager reasons in: since the node started, on its runtime's clock.
fn now(ctx: &Ctx) -> Duration {
    ctx.started.elapsed()
}

/// Answers a heartbeat (on the connection's own task): who this node is, and
/// what its management role sees. A spare's heartbeat makes it known.
pub(super) fn heartbeat(ctx: &Arc<Ctx>, hb: &proto::Heartbeat) -> proto::HeartbeatOk {
    let layout_epoch = ctx.layout.lock().ok().and_then(|l| l.get().map(|l| l.epoch)).unwrap_or(0);
    let mut out = proto::HeartbeatOk {
        node_id: ctx.node_id.0,
        bootstrapped: ctx.cluster.get().is_some(),
        cluster_id: ctx.cluster.get().cloned().unwrap_or_default(),
        epoch: layout_epoch.max(ctx.fence.get().0),
        roles: ctx.config.roles.names(),
        unit_failed: ctx.unit_failed.load(std::sync::atomic::Ordering::Acquire),
        ..Default::default()
    };
    let t = now(ctx);
    if let Ok(mut h) = ctx.health.lock() {
        let layout = ctx.layout.lock().ok().and_then(|l| l.get().cloned());
        if let Some(m) = h.manager.as_mut() {
            if hb.spare && !hb.from.is_empty() {
                m.spare(&hb.from, t);
            }
            out.suspected = m.detector.suspects(t);
            if let Some(l) = &layout {
                out.spares = m.spares(l, t);
            }
        }
        out.acting_manager = h.acting;
        out.last_error = h.last_error.clone();
        if let Some((addr, p, since)) = &h.copying {
            use std::sync::atomic::Ordering::Relaxed;
            let done = p.positions_done.load(Relaxed);
            let total = p.positions_total.load(Relaxed);
            let bytes = p.bytes.load(Relaxed);
            // Bytes to copy, estimated from the share of positions compared so far.
            let estimate = if done == 0 { 0 } else { (bytes as f64 * total as f64 / done as f64) as u64 };
            out.catch_up = Some(proto::CatchUpProgress {
                addr: addr.clone(),
                bytes_copied: bytes,
                bytes_total: estimate.max(bytes),
                elapsed_ms: since.elapsed().as_millis() as u64,
                positions_done: done,
                positions_total: total,
            });
        }
    }
    out
}

/// Starts the management role (if the node runs it) and the spare's
/// announcements (if it was started with `--join`).
pub(super) fn start_management(ctx: &Arc<Ctx>) {
    if ctx.config.roles.logunit {
        announce_spare(ctx.clone(), ctx.config.join.clone());
    }
    if !ctx.config.roles.management {
        return;
    }
    let settings = ctx.config.health.clone();
    let seed = ctx.config.node_id.map_or_else(|| ctx.node_id.0, |id| id.0);
    if let Ok(mut h) = ctx.health.lock() {
        h.manager = Some(Manager::new(ctx.advertise.clone(), settings.clone(), seed));
    }
    let ctx = ctx.clone();
    tokio::spawn(async move {
        // Connections of its own, so that heartbeats never wait behind appends.
        let pool = Pool::new(
            ctx.net.clone(),
            rpc::Options {
                timeout_call: settings.failure_timeout,
                frame_bytes_max: ctx.config.frame_bytes_max,
                ..Default::default()
            },
        );
        let (beat_tx, mut beats) = mpsc::unbounded_channel::<(String, Option<proto::HeartbeatOk>)>();
        // A finished action: the new epoch and what its state transfer copied (entries, bytes).
        type Done = (Action, Result<(u64, u64, u64), naxos_control::reconfig::Error>);
        let (done_tx, mut dones) = mpsc::unbounded_channel::<Done>();
        let mut outstanding: BTreeSet<String> = BTreeSet::new();
        let mut running = false;
        let mut learning = false;
        let mut runs: u64 = 0;
        let mut tick = tokio::time::interval(settings.heartbeat_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = ctx.shutdown.clone();
        let (learnt_tx, mut learnt) = mpsc::unbounded_channel::<()>();
        loop {
            tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => break,
                Some((addr, answer)) = beats.recv() => {
                    outstanding.remove(&addr);
                    let Some(ok) = answer else { continue };
                    let held = ctx.layout.lock().ok().and_then(|l| l.get().cloned());
                    // Someone holds a newer layout: learn it before deciding anything.
                    if let Some(held) = held {
                        if ok.epoch > held.epoch && ok.cluster_id == held.cluster_id && !learning {
                            learning = true;
                            let (ctx, tx) = (ctx.clone(), learnt_tx.clone());
                            tokio::spawn(async move {
                                super::upkeep::learn_newer_layout(&ctx, &held).await;
                                let _ = tx.send(());
                            });
                        }
                    }
                    let seen = Seen {
                        node_id: ok.node_id,
                        cluster_id: ok.cluster_id.clone(),
                        management: ok.roles.iter().any(|r| r == "management"),
                        log_unit: ok.roles.iter().any(|r| r == "logunit"),
                        suspects: ok.suspected.clone(),
                        unit_failed: ok.unit_failed,
                    };
                    let t = now(&ctx);
                    if let Ok(mut h) = ctx.health.lock() {
                        if let Some(m) = h.manager.as_mut() {
                            m.heard(&addr, t, seen);
                        }
                    }
                }
                Some(()) = learnt.recv() => learning = false,
                Some((action, outcome)) = dones.recv() => {
                    running = false;
                    let t = now(&ctx);
                    let verdict = match &outcome {
                        Ok((epoch, entries, bytes)) => {
                            tracing::warn!(
                                epoch,
                                change = %action.change,
                                reason = %action.reason,
                                copied_entries = entries,
                                copied_bytes = bytes,
                                "automatic reconfiguration"
                            );
                            Ok(())
                        }
                        Err(naxos_control::reconfig::Error::Refused(r)) => {
                            tracing::info!(change = %action.change, "automatic reconfiguration refused: {r}");
                            Err(true)
                        }
                        Err(e) => {
                            tracing::warn!(change = %action.change, reason = %action.reason, "automatic reconfiguration failed: {e}");
                            Err(false)
                        }
                    };
                    crate::metrics::reconfiguration(match &outcome {
                        Ok(_) => crate::metrics::Outcome::Done,
                        Err(naxos_control::reconfig::Error::Refused(_)) => crate::metrics::Outcome::Refused,
                        Err(_) => crate::metrics::Outcome::Failed,
                    });
                    if let (Some(m), Ok((_, entries, _))) = (crate::metrics::get(), &outcome) {
                        if *entries > 0 {
                            m.catch_ups.increment(1);
                        }
                    }
                    if let Ok(mut h) = ctx.health.lock() {
                        h.copying = None;
                        h.last_error = match &outcome {
                            Err(e) => format!("{}: {e}", action.change),
                            Ok(_) => String::new(),
                        };
                        if let Some(m) = h.manager.as_mut() {
                            m.finished(&action, verdict, t);
                        }
                    }
                }
                _ = tick.tick() => {
                    let Some(layout) = ctx.layout.lock().ok().and_then(|l| l.get().cloned()) else { continue };
                    let t = now(&ctx);
                    let (targets, action) = {
                        let Ok(mut h) = ctx.health.lock() else { break };
                        let Some(m) = h.manager.as_mut() else { break };
                        // A node whose own log unit failed does not manage.
                        m.unit_failed = ctx.unit_failed.load(std::sync::atomic::Ordering::Acquire);
                        m.log_unit = ctx.config.roles.logunit;
                        let targets = m.targets(&layout, t);
                        let action = if running || learning { None } else { m.decide(&layout, t) };
                        let acting = m.acting(&layout, t, true).as_deref() == Some(ctx.advertise.as_str());
                        h.acting = acting;
                        (targets, action)
                    };
                    for addr in targets {
                        if !outstanding.insert(addr.clone()) {
                            continue; // the last heartbeat has not come back yet
                        }
                        let (pool, tx) = (pool.clone(), beat_tx.clone());
                        let req = Request {
                            id: 0,
                            cluster_id: layout.cluster_id.clone(),
                            epoch: layout.epoch,
                            body: Some(request::Body::Heartbeat(proto::Heartbeat {
                                from: ctx.advertise.clone(),
                                spare: false,
                            })),
                        };
                        tokio::spawn(async move {
                            let sent = std::time::Instant::now();
                            let answer = match pool.call(&addr, req).await {
                                Ok(response::Body::Heartbeat(ok)) => Some(ok),
                                _ => None,
                            };
                            if let Some(m) = crate::metrics::get() {
                                match answer {
                                    Some(_) => m.heartbeat_seconds.record(sent.elapsed().as_secs_f64()),
                                    None => m.heartbeat_failures.increment(1),
                                }
                            }
                            let _ = tx.send((addr, answer));
                        });
                    }
                    if let Some(action) = action {
                        running = true;
                        runs += 1;
                        tracing::info!(change = %action.change, reason = %action.reason, "manager acting");
                        let progress = Arc::new(Progress::default());
                        if let naxos_control::Change::Add { addr, .. } = &action.change {
                            if let Ok(mut h) = ctx.health.lock() {
                                h.copying = Some((addr.clone(), progress.clone(), tokio::time::Instant::now()));
                            }
                        }
                        // The nodes it found dead are not asked (a paused one
                        // would cost a time-out per step); a node being put back is.
                        let joining = action.change.joining(&layout);
                        let back = match &action.change {
                            naxos_control::Change::Add { addr, .. } | naxos_control::Change::Restore(addr) => Some(addr.clone()),
                            _ => None,
                        };
                        let skip: Vec<String> = ctx
                            .health
                            .lock()
                            .ok()
                            .and_then(|h| h.manager.as_ref().map(|m| m.detector.suspects(t)))
                            .unwrap_or_default()
                            .into_iter()
                            .filter(|a| !joining.contains(a) && back.as_ref() != Some(a))
                            .collect();
                        let options = naxos_control::Options {
                            skip,
                            timeout_call: settings.failure_timeout.clamp(Duration::from_millis(200), Duration::from_secs(1)),
                            attempts: 3,
                            seed: seed ^ runs.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ layout.epoch.rotate_left(29),
                            reason: action.reason.clone(),
                            clock: ctx.config.clock,
                            progress: Some(progress),
                            ..Default::default()
                        };
                        let (net, seeds, tx) = (ctx.net.clone(), layout.all_nodes(), done_tx.clone());
                        tokio::spawn(async move {
                            let outcome = naxos_control::reconfigure(net, &seeds, &action.change, &options)
                                .await
                                .map(|r| (r.layout.epoch, r.transfer.copied, r.transfer.bytes));
                            let _ = tx.send((action, outcome));
                        });
                    }
                }
            }
        }
    });
}

/// A spare: a log unit in no chain of the active segment of the layout it
/// holds (the managers let it go, the operator removed it), or one started
/// with `--join` and no layout yet, announces itself to the layout servers once per heartbeat
/// interval, so that the managers can give it the place of a node that
/// stays away. A node in a chain only checks again later.
fn announce_spare(ctx: Arc<Ctx>, join: Option<String>) {
    tokio::spawn(async move {
        let settings = ctx.config.health.clone();
        let pool =
            Pool::new(ctx.net.clone(), rpc::Options { timeout_call: settings.failure_timeout, ..Default::default() });
        let mut shutdown = ctx.shutdown.clone();
        let mut said = false;
        loop {
            let held = ctx.layout.lock().ok().and_then(|l| l.get().cloned());
            let chained = |l: &naxos_wire::Layout| {
                l.segments.last().is_some_and(|s| s.stripes.iter().any(|st| st.chain.contains(&ctx.advertise)))
            };
            let targets = match &held {
                Some(l) if chained(l) => {
                    said = false;
                    Vec::new()
                }
                Some(l) => l.layout_servers.clone(),
                None => match &join {
                    // Learn the cluster's layout servers from the node given.
                    Some(seed) => {
                        let get = Request {
                            id: 0,
                            cluster_id: String::new(),
                            epoch: 0,
                            body: Some(request::Body::GetLayout(proto::GetLayout {})),
                        };
                        match pool.call(seed, get).await {
                            Ok(response::Body::Layout(proto::LayoutOk { layout: Some(l) })) => l.layout_servers,
                            _ => vec![seed.clone()],
                        }
                    }
                    None => Vec::new(),
                },
            };
            for addr in targets.iter().filter(|a| **a != ctx.advertise) {
                let hb = Request {
                    id: 0,
                    cluster_id: String::new(),
                    epoch: 0,
                    body: Some(request::Body::Heartbeat(proto::Heartbeat { from: ctx.advertise.clone(), spare: true })),
                };
                if pool.call(addr, hb).await.is_ok() && !said {
                    tracing::info!(to = %addr, "announced as a spare");
                    said = true;
                }
            }
            tokio::select! {
                biased;
                _ = until_stopped(&mut shutdown) => return,
                _ = tokio::time::sleep(settings.heartbeat_interval) => {}
            }
        }
    });
}
