//! Self-healing against real servers on 127.0.0.1 (in this process, with
//! short management timings): appends refused with NotEnoughReplicas while a
//! chain is short and resumed when a replica returns; a node whose data
//! directory was wiped copied in full; a spare taking the place of a node that
//! stays away; `naxos verify` finding missing and different entries. The
//! kill -9 scenarios with separate processes are in tests/faults.rs and below.

mod common;

use common::{raw_read, raw_write, run_cli, Proc};
use naxos_client::{Client, Config, Error, Position};
use naxos_server::{Config as ServerConfig, Roles, ServerHandle};
use naxos_wire::net::TcpNet;
use naxos_wire::Layout;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Short management timings, so that each test takes seconds.
fn config(addr: &str, dir: &std::path::Path, roles: Roles) -> ServerConfig {
    let mut c = ServerConfig::new(addr, dir);
    c.roles = roles;
    c.health.heartbeat_interval = Duration::from_millis(50);
    c.health.failure_timeout = Duration::from_millis(400);
    c.health.spare_after = Duration::from_secs(1);
    c.health.readd_delay_min = Duration::from_millis(200);
    c
}

async fn start(addr: &str, dir: &std::path::Path, roles: Roles) -> ServerHandle {
    naxos_server::start(config(addr, dir, roles), Arc::new(TcpNet)).await.expect("server starts")
}

/// Every role but the log unit (sequencer, layout server, manager).
const NO_UNIT: Roles = Roles { logunit: false, sequencer: true, layout: true, management: true };

async fn client(addrs: &[String]) -> Client {
    let mut config = Config::new(addrs.iter().cloned());
    config.hole_fill_wait = Duration::from_millis(20);
    config.rpc.timeout_call = Duration::from_secs(2);
    Client::connect(config).await.expect("client connects")
}

/// Polls the newest layout until `done` holds of it (the managers act on
/// their own); fails after `limit`.
async fn until_layout(client: &Client, limit: Duration, what: &str, done: impl Fn(&Layout) -> bool) -> Layout {
    let t0 = Instant::now();
    loop {
        if let Ok(l) = client.refresh_layout().await {
            if done(&l) {
                return (*l).clone();
            }
            assert!(t0.elapsed() < limit, "{what}: not within {limit:?}; layout at epoch {}: {l:?}", l.epoch);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn active_chain(l: &Layout) -> Vec<String> {
    l.segments.last().map(|s| s.stripes[0].chain.clone()).unwrap_or_default()
}

/// Appends `n` entries tagged `tag`; returns the acknowledged ones. While
/// the managers take a node out, an append may end "may or may not have
/// happened": it is tried again under a new payload (only acknowledged ones
/// are checked).
async fn append(client: &Client, tag: &str, n: usize) -> Vec<(Position, bytes::Bytes)> {
    let mut out = Vec::new();
    for i in 0..n {
        let mut tries = 0;
        loop {
            let payload = bytes::Bytes::from(format!("{tag}-{i}-{tries}"));
            match client.append(payload.clone()).await {
                Ok(p) => {
                    out.push((p, payload));
                    break;
                }
                Err(Error::Unavailable(e)) if tries < 5 => {
                    tries += 1;
                    eprintln!("append {tag}-{i}: {e}; again");
                }
                Err(e) => panic!("append {tag}-{i}: {e}"),
            }
        }
    }
    out
}

/// Every acknowledged append is on `addr` itself (read from it alone, no
/// repair), under the cluster's newest layout.
async fn all_on(client: &Client, addr: &str, acked: &[(Position, bytes::Bytes)]) {
    let pool = common::pool();
    let mut layout = (*client.refresh_layout().await.expect("layout")).clone();
    for (p, payload) in acked {
        let mut tries = 0;
        loop {
            match raw_read(&pool, &layout, addr, *p).await {
                Ok(Some(e)) => {
                    assert_eq!(&e.payload, payload, "{addr} at {p}");
                    break;
                }
                // The cluster moved on meanwhile: read under its newest layout.
                Err(e) if e.server().is_some_and(|s| s.code == naxos_wire::ErrorCode::WrongEpoch) && tries < 10 => {
                    tries += 1;
                    layout = (*client.refresh_layout().await.expect("layout")).clone();
                }
                other => panic!(
                    "{addr} lacks the acknowledged append at {p}: {other:?}; layout epoch {}: segments {:?}, history {:?}",
                    layout.epoch,
                    layout.segments,
                    layout.history.iter().map(|h| (h.epoch, &h.reason)).collect::<Vec<_>>()
                ),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_fail_with_not_enough_replicas_and_resume_when_a_replica_returns() {
    // Three log units in one chain (min replicas 2) and two nodes that only
    // sequence, store the layout and manage: a majority of the five layout
    // servers survives two units.
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        servers.push(Some(start("127.0.0.1:0", d.path(), if i < 3 { Roles::ALL } else { NO_UNIT }).await));
    }
    let addrs: Vec<String> = servers.iter().flatten().map(|s| s.advertise().to_string()).collect();
    let layout =
        Layout::initial("nes-test", &addrs[..3], 3, 1, vec![addrs[3].clone(), addrs[4].clone()], addrs.clone());
    assert_eq!(layout.min_replicas(), 2);
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let c = client(&addrs).await;
    let mut acked = append(&c, "three", 20).await;

    // Two units die: the managers take both out; one replica is left, fewer
    // than min replicas, so appends fail at once with an error naming them.
    for i in [1, 2] {
        if let Some(h) = servers[i].take() {
            h.stop().await;
        }
    }
    until_layout(&c, Duration::from_secs(20), "both units taken out", |l| active_chain(l) == addrs[..1]).await;
    let t0 = Instant::now();
    match c.append(bytes::Bytes::from_static(b"refused")).await {
        Err(Error::NotEnoughReplicas { have, need, missing, .. }) => {
            assert_eq!(have, addrs[..1]);
            assert_eq!(need, 2);
            assert!(missing.contains(&addrs[1]) && missing.contains(&addrs[2]), "{missing:?}");
        }
        other => panic!("expected NotEnoughReplicas, got {other:?}"),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "refused at once, not after retries");
    // The CLI says so with its own exit code.
    let (code, _, err) = run_cli(&["append", "--cluster", &addrs[0], "x"], b"");
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("not enough replicas"), "{err}");
    // `naxos status` reports the cluster degraded.
    let (code, out, _) = run_cli(&["status", "--cluster", &addrs[0]], b"");
    assert_eq!(code, 9, "{}", String::from_utf8_lossy(&out));

    // One unit returns: it is caught up and put back; appends resume by themselves.
    servers[1] = Some(start(&addrs[1], dirs[1].path(), Roles::ALL).await);
    until_layout(&c, Duration::from_secs(20), "the unit back in its chain", |l| active_chain(l).len() == 2).await;
    acked.extend(append(&c, "two", 20).await);
    all_on(&c, &addrs[1], &acked).await;
    let l = (*c.refresh_layout().await.expect("layout")).clone();
    // The history says who made each epoch and why.
    let reasons: Vec<&str> = l.history.iter().map(|h| h.reason.as_str()).collect();
    assert!(reasons.iter().any(|r| r.contains("suspected")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("is back")), "{reasons:?}");
    for s in servers.into_iter().flatten() {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_data_was_wiped_is_copied_in_full_and_a_spare_fills_a_place() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for d in &dirs[..3] {
        servers.push(Some(start("127.0.0.1:0", d.path(), Roles::ALL).await));
    }
    let addrs: Vec<String> = servers.iter().flatten().map(|s| s.advertise().to_string()).collect();
    let layout = Layout::initial("wipe-test", &addrs, 3, 1, addrs.clone(), addrs.clone());
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let c = client(&addrs).await;
    let mut acked = append(&c, "before", 30).await;

    // Node 2's data directory is wiped; it comes back on its address as a
    // new node (not bootstrapped, another id): taken out, then copied in full.
    if let Some(h) = servers[2].take() {
        h.stop().await;
    }
    let wiped = tempfile::tempdir().expect("temp dir");
    servers[2] = Some(start(&addrs[2], wiped.path(), Roles::ALL).await);
    let l = until_layout(&c, Duration::from_secs(20), "the wiped node back in its chain", |l| {
        l.away.is_empty() && active_chain(l).contains(&addrs[2]) && l.epoch >= 2
    })
    .await;
    assert!(
        l.history.iter().any(|h| h.reason.contains("without its data")),
        "{:?}",
        l.history.iter().map(|h| &h.reason).collect::<Vec<_>>()
    );
    acked.extend(append(&c, "after-wipe", 10).await);
    all_on(&c, &addrs[2], &acked).await;

    // A spare announces itself; node 1 dies for good: after the spare delay
    // the spare is caught up and takes its place.
    let mut spare_config = config("127.0.0.1:0", dirs[3].path(), Roles::ALL);
    spare_config.join = Some(addrs[0].clone());
    let spare = naxos_server::start(spare_config, Arc::new(TcpNet)).await.expect("spare starts");
    let spare_addr = spare.advertise().to_string();
    if let Some(h) = servers[1].take() {
        h.stop().await;
    }
    acked.extend(append(&c, "short", 10).await);
    let l = until_layout(&c, Duration::from_secs(30), "the spare in the chain", |l| {
        active_chain(l).contains(&spare_addr) && active_chain(l).len() == 3
    })
    .await;
    assert!(l.history.iter().any(|h| h.reason.contains("spare")), "{:?}", l.history);
    acked.extend(append(&c, "with-spare", 10).await);
    all_on(&c, &spare_addr, &acked).await;
    spare.stop().await;
    for s in servers.into_iter().flatten() {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_segment_file_was_deleted_moves_its_data_aside_and_is_copied_back_in() {
    // With --damaged-data move-aside a node whose directory is damaged (here
    // a deleted segment file, which it refuses to serve as holes) renames
    // the directory and starts empty; the managers copy it back in.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let data: Vec<std::path::PathBuf> = dirs.iter().map(|d| d.path().join("data")).collect();
    let mut servers = Vec::new();
    for d in &data {
        servers.push(Some(start("127.0.0.1:0", d, Roles::ALL).await));
    }
    let addrs: Vec<String> = servers.iter().flatten().map(|s| s.advertise().to_string()).collect();
    let layout = Layout::initial("aside-test", &addrs, 3, 1, addrs.clone(), addrs.clone());
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let c = client(&addrs).await;
    let mut acked = append(&c, "before", 30).await;
    if let Some(h) = servers[2].take() {
        h.stop().await;
    }
    std::fs::remove_file(data[2].join("log").join("seg-00000000000000000000.log")).expect("delete the segment");
    // Refused by default, saying what is lost.
    let refused = naxos_server::start(config(&addrs[2], &data[2], Roles::ALL), Arc::new(TcpNet)).await;
    let why = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(why.contains("missing"), "{why}");
    let mut aside = config(&addrs[2], &data[2], Roles::ALL);
    aside.damaged_data = naxos_server::DamagedData::MoveAside;
    servers[2] = Some(naxos_server::start(aside, Arc::new(TcpNet)).await.expect("starts empty"));
    let moved: Vec<String> = std::fs::read_dir(dirs[2].path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("data.damaged-"))
        .collect();
    assert_eq!(moved.len(), 1, "the damaged directory is kept beside: {moved:?}");
    until_layout(&c, Duration::from_secs(20), "the node back in its chain", |l| {
        l.away.is_empty() && active_chain(l).contains(&addrs[2]) && l.epoch >= 2
    })
    .await;
    acked.extend(append(&c, "after", 10).await);
    all_on(&c, &addrs[2], &acked).await;
    for s in servers.into_iter().flatten() {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_when_replicas_agree_and_lists_what_differs() {
    let mut cluster = common::Cluster::start(3, 3, 1).await;
    let c = cluster.client().await;
    append(&c, "v", 50).await;
    let seeds = cluster.addrs.join(",");
    let (code, out, err) = run_cli(&["verify", "--cluster", &seeds], b"");
    assert_eq!(code, 0, "{err}");
    assert!(String::from_utf8_lossy(&out).contains("every replica agrees"), "{}", String::from_utf8_lossy(&out));

    // A position taken but never written; two replicas get different values
    // by hand, the third none.
    let p = c.reserve(1).await.expect("a position");
    let pool = common::pool();
    let entry = common::data;
    raw_write(&pool, &cluster.layout, &cluster.addrs[0], p, entry(b"left")).await.expect("write");
    raw_write(&pool, &cluster.layout, &cluster.addrs[2], p, entry(b"right")).await.expect("write");
    append(&c, "w", 5).await;
    let (code, out, _) = run_cli(&["--json", "verify", "--cluster", &seeds, "--window", "16"], b"");
    assert_eq!(code, 9);
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    let found: Vec<(u64, String, String)> = v["differences"]
        .as_array()
        .expect("differences")
        .iter()
        .map(|d| (d["position"].as_u64().unwrap_or(0), d["replica"].to_string(), d["problem"].to_string()))
        .collect();
    assert_eq!(
        found,
        [
            (p.0, format!("{:?}", cluster.addrs[1]), "\"missing\"".to_string()),
            (p.0, format!("{:?}", cluster.addrs[2]), "\"different\"".to_string()),
        ],
        "{v}"
    );
    cluster.stop(0).await;
    cluster.stop_all().await;
}

/// Five server processes: three log units, two that only sequence, store the
/// layout and manage (so that a majority of layout servers outlives two
/// units), bootstrapped with --min-replicas 1. One unit is killed with -9,
/// taken out, restarted and caught up; then the other two are killed at
/// once. Appends go on throughout, and every acknowledged append of the
/// whole run reads back from the one unit left, which proves it was caught
/// up on what it missed while it was down. Nobody types a reconfiguration.
#[test]
fn two_of_three_units_killed_at_once_with_min_replicas_1_lose_nothing() {
    let dirs: Vec<tempfile::TempDir> = (0..5).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let timing = ["--heartbeat-interval", "50ms", "--failure-timeout", "500ms"];
    let server = |i: usize, listen: &str| {
        let d = dirs[i].path().to_str().expect("utf-8 path").to_string();
        let roles = if i < 3 { "logunit,sequencer,layout,management" } else { "sequencer,layout,management" };
        let mut args = vec!["server", "--listen", listen, "--data-dir", &d, "--roles", roles];
        args.extend_from_slice(&timing);
        Proc::start(&args)
    };
    let mut procs: Vec<Proc> = (0..5).map(|i| server(i, "127.0.0.1:0")).collect();
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let units = addrs[..3].join(",");
    let seqs = format!("{},{}", addrs[3], addrs[4]);
    let all = addrs.join(",");
    let (code, _, err) = run_cli(
        &[
            "bootstrap",
            "--cluster",
            &addrs[0],
            "--log-units",
            &units,
            "--sequencers",
            &seqs,
            "--layout-servers",
            &all,
            "--min-replicas",
            "1",
        ],
        b"",
    );
    assert_eq!(code, 0, "bootstrap: {err}");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let c = rt.block_on(client(&addrs));
    // Appends run all along on their own task.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let acked: Arc<std::sync::Mutex<Vec<(Position, bytes::Bytes)>>> = Arc::default();
    let writer = {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        rt.spawn(async move {
            let mut failed = 0;
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = bytes::Bytes::from(format!("e-{i}"));
                i += 1;
                match tokio::time::timeout(Duration::from_secs(10), c.append(payload.clone())).await {
                    Ok(Ok(p)) => acked.lock().expect("acked").push((p, payload)),
                    _ => failed += 1,
                }
            }
            failed
        })
    };
    let chain = |c: &Client| rt.block_on(async { active_chain(&c.refresh_layout().await.expect("layout")) });
    let wait = |what: &str, done: &dyn Fn(&[String]) -> bool| {
        let t0 = Instant::now();
        while !done(&chain(&c)) {
            assert!(t0.elapsed() < Duration::from_secs(30), "{what}: not within 30 s; chain {:?}", chain(&c));
            std::thread::sleep(Duration::from_millis(20));
        }
        t0.elapsed()
    };
    std::thread::sleep(Duration::from_millis(500));
    // Unit 0 dies, misses appends, comes back and is caught up.
    procs[0].kill9();
    wait("unit 0 taken out", &|ch| !ch.contains(&addrs[0]));
    std::thread::sleep(Duration::from_millis(1000));
    procs[0] = server(0, &addrs[0]);
    let rejoin = wait("unit 0 back", &|ch| ch.contains(&addrs[0]) && ch.len() == 3);
    eprintln!("unit 0 back in its chain {:.0} ms after its restart", rejoin.as_secs_f64() * 1e3);
    std::thread::sleep(Duration::from_millis(500));
    // The other two die at once: unit 0 alone holds the log.
    procs[1].kill9();
    procs[2].kill9();
    let out = wait("units 1 and 2 taken out", &|ch| ch == [addrs[0].clone()]);
    eprintln!("units 1 and 2 taken out {:.0} ms after their kill", out.as_secs_f64() * 1e3);
    // Appends go on with one unit (min replicas 1): wait for one in the new segment.
    let start = rt.block_on(async { c.refresh_layout().await.expect("layout").segments.last().map_or(0, |s| s.start) });
    let t0 = Instant::now();
    while !acked.lock().expect("acked").iter().any(|(p, _)| p.0 >= start) {
        assert!(t0.elapsed() < Duration::from_secs(30), "no append acknowledged with one unit left");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let failed = rt.block_on(writer).expect("the writer");
    let acked = acked.lock().expect("acked").clone();
    eprintln!("{} appends acknowledged, {failed} failed or timed out", acked.len());
    assert!(acked.len() > 100, "appends went on: {} acknowledged", acked.len());
    // Every acknowledged append reads back from unit 0 alone.
    rt.block_on(all_on(&c, &addrs[0], &acked));
    // The status says so: two nodes unreachable.
    let (code, out, _) = run_cli(&["status", "--cluster", &addrs[3]], b"");
    assert_eq!(code, 9, "{}", String::from_utf8_lossy(&out));
    let (code, out, _) = run_cli(&["layout", "--history", "--cluster", &addrs[3]], b"");
    assert_eq!(code, 0);
    eprintln!("{}", String::from_utf8_lossy(&out));
    rt.shutdown_timeout(Duration::from_secs(1));
}
