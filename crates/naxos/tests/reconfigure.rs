//! Reconfiguration against real servers on 127.0.0.1: a dead node (the head
//! and primary sequencer) is taken out while a client appends, the client
//! moves on to the next sequencer by itself, the node comes back and is added
//! again, and a segment of another shape is started; every acknowledged
//! append reads back the same throughout.

use naxos_client::{Client, Config, Position, Value};
use naxos_control::{Change, Options};
use naxos_server::{Config as ServerConfig, ServerHandle};
use naxos_wire::net::TcpNet;
use naxos_wire::Layout;
use std::sync::Arc;
use std::time::Duration;

/// A server with every role but management: these tests make each change by
/// hand (tests/healing.rs has the managers make them).
async fn start(addr: &str, dir: &std::path::Path) -> ServerHandle {
    let mut config = ServerConfig::new(addr, dir);
    config.roles.management = false;
    naxos_server::start(config, Arc::new(TcpNet)).await.expect("server starts")
}

/// Appends `n` entries tagged `tag`; returns their positions and payloads.
async fn append(client: &Client, tag: &str, n: usize) -> Vec<(Position, bytes::Bytes)> {
    let mut out = Vec::new();
    for i in 0..n {
        let payload = bytes::Bytes::from(format!("{tag}-{i}"));
        let p = client.append(payload.clone()).await.unwrap_or_else(|e| panic!("append {tag}-{i}: {e}"));
        out.push((p, payload));
    }
    out
}

async fn read_back(client: &Client, acked: &[(Position, bytes::Bytes)]) {
    for (p, payload) in acked {
        match client.read(*p).await {
            Ok(Value::Data(r)) => assert_eq!(&r.payload, payload, "position {p}"),
            other => panic!("acknowledged append at {p} reads back as {other:?}"),
        }
    }
}

fn reconfig_options() -> Options {
    Options { timeout_call: Duration::from_millis(500), ..Options::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_head_is_removed_appends_go_on_and_it_is_added_back() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for d in &dirs {
        servers.push(Some(start("127.0.0.1:0", d.path()).await));
    }
    let addrs: Vec<String> = servers.iter().flatten().map(|s| s.advertise().to_string()).collect();
    // As `naxos bootstrap` does by default: every node sequences (the first
    // is the primary) and every node is a layout server.
    let mut layout = Layout::initial("reconfig-test", &addrs, 3, 1, addrs.clone(), addrs.clone());
    // The end of the test appends with one replica left.
    layout.min_replicas = 1;
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let mut config = Config::new(addrs.clone());
    config.hole_fill_wait = Duration::from_millis(20);
    config.rpc.timeout_call = Duration::from_secs(1);
    let client = Client::connect(config).await.expect("client connects");

    let mut acked = append(&client, "before", 50).await;

    // The head, which is also the primary sequencer, dies.
    if let Some(h) = servers[0].take() {
        h.stop().await;
    }
    let net = Arc::new(TcpNet);
    let report =
        naxos_control::reconfigure(net.clone(), &addrs[1..], &Change::Remove(addrs[0].clone()), &reconfig_options())
            .await
            .expect("the dead head is removed");
    assert_eq!(report.layout.epoch, 1);
    assert_eq!(report.layout.sequencers[0], addrs[1], "the next sequencer took over");
    assert_eq!(report.layout.segments.len(), 2);
    assert_eq!(report.layout.segments[0].end, Some(report.sealed_at.0));
    assert!(report.sealed_at >= Position(50), "the sealed segment keeps every acknowledged append");
    for seg in &report.layout.segments {
        assert!(seg.stripes[0].chain.iter().all(|a| *a != addrs[0]), "{} is out of every chain", addrs[0]);
    }

    // The client finds the new layout by itself and appends on.
    acked.extend(append(&client, "without-head", 50).await);
    read_back(&client, &acked).await;

    // The node comes back with its data, on its address, and is added again.
    servers[0] = Some(start(&addrs[0], dirs[0].path()).await);
    let add = Change::Add { addr: addrs[0].clone(), stripe: None };
    let report = naxos_control::reconfigure(net.clone(), &addrs[1..], &add, &reconfig_options())
        .await
        .expect("the returning node is added");
    assert_eq!(report.layout.epoch, 2);
    for seg in &report.layout.segments {
        assert_eq!(seg.stripes[0].chain.last(), Some(&addrs[0]), "it joins every chain as its tail");
    }
    // It was away for 50 appends and held the 50 before: only what it lacked was copied.
    assert!(report.transfer.copied >= 50, "copied {:?}", report.transfer);
    assert!(report.transfer.copied < 100, "a returning node is not copied again what it holds: {:?}", report.transfer);
    acked.extend(append(&client, "back", 50).await);
    read_back(&client, &acked).await;
    // The new tail really holds what was appended after it joined.
    let last = acked.last().expect("appends were made").0;
    let direct = naxos_client::Client::connect(Config::new([addrs[0].clone()])).await.expect("connects");
    assert_eq!(direct.layout().epoch, 2, "the returning node learnt the layout");

    // Adding a node that is in the chain already is refused, and changes nothing.
    match naxos_control::reconfigure(net.clone(), &addrs, &add, &reconfig_options()).await {
        Err(naxos_control::reconfig::Error::Refused(_)) => {}
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert_eq!(direct.refresh_layout().await.expect("layout").epoch, 2);
    assert!(last >= Position(149));

    // The other two leave every chain (they stay up as layout servers: the
    // layout Paxos needs a majority of them). The returning node alone then
    // serves every read: a position it lacked would read as a hole.
    naxos_control::reconfigure(net.clone(), &addrs, &Change::Sequencer(addrs[0].clone()), &reconfig_options())
        .await
        .expect("the returning node sequences again");
    for gone in [&addrs[1], &addrs[2]] {
        naxos_control::reconfigure(net.clone(), &addrs[..1], &Change::Remove(gone.clone()), &reconfig_options())
            .await
            .unwrap_or_else(|e| panic!("removing {gone}: {e}"));
    }
    let alone = Client::connect(Config::new([addrs[0].clone()])).await.expect("connects");
    read_back(&alone, &acked).await;
    acked.extend(append(&alone, "alone", 10).await);
    read_back(&alone, &acked).await;
    for s in servers.into_iter().flatten() {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_segment_with_two_stripes_and_a_new_sequencer() {
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for d in &dirs {
        servers.push(start("127.0.0.1:0", d.path()).await);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.advertise().to_string()).collect();
    let layout = Layout::initial("segment-test", &addrs[..2], 2, 1, addrs.clone(), addrs[..3].to_vec());
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let client = Client::connect(Config::new(addrs.clone())).await.expect("client connects");
    let stream = naxos_client::StreamId::from_name("orders");
    let first = client.append_to(&[stream], "order 1".into()).await.expect("append");
    let mut acked = append(&client, "one-stripe", 20).await;

    let net = Arc::new(TcpNet);
    // addrs[2] and addrs[3] were never bootstrapped: the change enrolls them.
    let change = Change::Segment { log_units: addrs.clone(), replication: 2, stripes: 2 };
    let report =
        naxos_control::reconfigure(net.clone(), &addrs, &change, &reconfig_options()).await.expect("new segment");
    assert_eq!(report.layout.segments.last().map(|s| s.stripes.len()), Some(2));
    let report = naxos_control::reconfigure(net, &addrs, &Change::Sequencer(addrs[3].clone()), &reconfig_options())
        .await
        .expect("new sequencer");
    assert_eq!(report.layout.sequencers[0], addrs[3]);

    acked.extend(append(&client, "two-stripes", 40).await);
    let second = client.append_to(&[stream], "order 2".into()).await.expect("append");
    read_back(&client, &acked).await;
    // The new sequencer was given the stream's tail: its entries read back in order.
    let orders = client.read_stream(stream, Position(0)).await.expect("stream read");
    let positions: Vec<Position> = orders.iter().map(|(p, _)| *p).collect();
    assert_eq!(positions, vec![first, second]);
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_that_dies_after_choosing_a_layout_does_not_wedge_the_cluster() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for d in &dirs {
        servers.push(start("127.0.0.1:0", d.path()).await);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.advertise().to_string()).collect();
    let layout = Layout::initial("wedge-test", &addrs, 3, 1, addrs.clone(), addrs.clone());
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let client = Client::connect(Config::new(addrs.clone())).await.expect("client connects");
    let acked = append(&client, "before", 20).await;

    // The driver seals every node and gets its layout chosen, then dies
    // before telling anyone: the nodes are sealed at epoch 1 with no layout 1.
    let options = Options { abandon: Some(naxos_control::reconfig::Abandon::AfterChoose), ..reconfig_options() };
    let change = Change::Sequencer(addrs[1].clone());
    assert!(naxos_control::reconfigure(Arc::new(TcpNet), &addrs, &change, &options).await.is_err());

    // The primary sequencer finds the stalled reconfiguration and finishes it,
    // keeping the layout that was chosen; appends resume with no operator.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let p = loop {
        match client.append("after".into()).await {
            Ok(p) => break p,
            Err(e) if tokio::time::Instant::now() < deadline => eprintln!("not yet: {e}"),
            Err(e) => panic!("the cluster stayed wedged: {e}"),
        }
    };
    let now = client.refresh_layout().await.expect("layout");
    assert!(now.epoch >= 1);
    assert_eq!(now.sequencers[0], addrs[1], "the chosen layout was kept, not replaced");
    assert!(acked.iter().all(|(q, _)| *q < p));
    read_back(&client, &acked).await;
    for s in servers {
        s.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_sequencer_left_out_of_a_new_epoch_answers_no_tail() {
    // The managers take out a primary they cannot reach without sealing it
    // (it stays unaware of the new epoch, as behind a partition). A client
    // that still holds the old layout and reaches only that node must not
    // get a tail below what the new primary has handed out since (soak seed
    // 10004301): the old primary first asks a majority of the layout servers
    // whether a newer epoch exists.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut servers = Vec::new();
    for d in &dirs {
        servers.push(start("127.0.0.1:0", d.path()).await);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.advertise().to_string()).collect();
    let layout = Layout::initial("stale-tail-test", &addrs, 3, 1, addrs.clone(), addrs.clone());
    naxos_client::admin::bootstrap(Arc::new(TcpNet), &layout).await.expect("bootstrap");
    let client = Client::connect(Config::new(addrs.clone())).await.expect("client connects");
    append(&client, "before", 5).await;
    let old = client.layout();
    let options = Options { skip: vec![addrs[0].clone()], ..reconfig_options() };
    let change = Change::TakeOut(vec![addrs[0].clone()]);
    let report = naxos_control::reconfigure(Arc::new(TcpNet), &addrs[1..], &change, &options)
        .await
        .expect("the primary is taken out");
    assert_eq!(report.layout.sequencers[0], addrs[1]);
    // The new primary hands out positions; one append is acknowledged.
    let mut config = Config::new(addrs[1..].to_vec());
    config.rpc.timeout_call = Duration::from_secs(1);
    let fresh = Client::connect(config).await.expect("client connects");
    let acked = fresh.append("after".into()).await.expect("append in the new epoch");
    // The old primary, asked under the old layout, refuses: a newer epoch exists.
    let pool = naxos_wire::rpc::Pool::new(Arc::new(TcpNet), naxos_wire::rpc::Options::default());
    let body = naxos_wire::proto::request::Body::SeqTail(naxos_wire::proto::SeqTail::default());
    let req =
        naxos_wire::proto::Request { id: 1, cluster_id: old.cluster_id.clone(), epoch: old.epoch, body: Some(body) };
    match pool.call(&addrs[0], req).await {
        Ok(naxos_wire::proto::response::Body::Tail(t)) => {
            panic!("the old primary answered tail {} after position {acked} was acknowledged", t.tail)
        }
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(e) => {
            let code = e.server().map(|s| s.code);
            assert_eq!(code, Some(naxos_wire::ErrorCode::WrongEpoch), "{e}");
        }
    }
    for s in servers {
        s.stop().await;
    }
}
