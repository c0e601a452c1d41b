//! End-to-end behaviour of in-process clusters on real sockets: CORFU's
//! claims (distinct positions, identical reads everywhere, hole filling, read
//! repair) and the protocol's refusals (write-once, trim, epochs, clusters,
//! limits, malformed frames).

mod common;

use common::*;
use naxos_client::{Error, Position, StreamId, Value};
use naxos_wire::ErrorCode;
use std::collections::HashSet;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_on_a_chain_of_three_are_distinct_and_identical_everywhere() {
    let c = Cluster::start(3, 3, 1).await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let client = c.client().await;
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..500 {
                let payload = format!("writer {w} entry {i}");
                let p = client.append(payload.clone().into()).await.expect("append");
                acked.push((p, payload));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    let distinct: HashSet<_> = acked.iter().map(|(p, _)| *p).collect();
    assert_eq!(distinct.len(), 8 * 500, "positions must be distinct");

    let pool = pool();
    for (p, payload) in &acked {
        for addr in &c.addrs {
            let e = raw_read(&pool, &c.layout, addr, *p).await.unwrap().expect("every replica holds it");
            assert_eq!(&e.payload[..], payload.as_bytes(), "replica {addr} at {p}");
        }
    }
    // Every client sees the same values.
    let readers = [c.client().await, c.client().await];
    for r in &readers {
        for (p, payload) in acked.iter().step_by(7) {
            match r.read(*p).await.unwrap() {
                Value::Data(rec) => assert_eq!(&rec.payload[..], payload.as_bytes()),
                Value::Hole => panic!("acknowledged append read as a hole at {p}"),
            }
        }
    }
    let max = acked.iter().map(|(p, _)| *p).max().unwrap();
    let all = readers[0].read_range(Position(0), max.next()).await.unwrap();
    for (p, payload) in &acked {
        assert_eq!(all[p.0 as usize].1, readers[1].read(*p).await.unwrap());
        if let Value::Data(rec) = &all[p.0 as usize].1 {
            assert_eq!(&rec.payload[..], payload.as_bytes());
        }
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_dies_after_its_token_leaves_a_hole_readers_fill() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let dead = client.reserve(1).await.unwrap();
    let after = client.append("after".into()).await.unwrap();
    assert!(after > dead);
    assert_eq!(client.read(dead).await.unwrap(), Value::Hole);
    // The hole is everywhere now, and for good: the late writer loses.
    let pool = pool();
    for addr in &c.addrs {
        let e = raw_read(&pool, &c.layout, addr, dead).await.unwrap().expect("filled");
        assert_eq!(e.kind, naxos_wire::EntryKind::Hole as i32);
    }
    let late = raw_write(&pool, &c.layout, &c.addrs[0], dead, data(b"late")).await.unwrap_err();
    assert_eq!(late.server().unwrap().code, ErrorCode::Overwritten);
    assert!(matches!(client.read(after).await.unwrap(), Value::Data(r) if &r.payload[..] == b"after"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_reached_only_the_head_is_repaired_by_readers() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let p = client.reserve(1).await.unwrap();
    let pool = pool();
    raw_write(&pool, &c.layout, &c.addrs[0], p, data(b"head only")).await.unwrap();
    assert!(raw_read(&pool, &c.layout, &c.addrs[2], p).await.unwrap().is_none());
    match client.read(p).await.unwrap() {
        Value::Data(r) => assert_eq!(&r.payload[..], b"head only"),
        Value::Hole => panic!("the head's value must win"),
    }
    for addr in &c.addrs {
        let e = raw_read(&pool, &c.layout, addr, p).await.unwrap().expect("repaired");
        assert_eq!(&e.payload[..], b"head only");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn positions_are_write_once() {
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    let p = client.append("first".into()).await.unwrap();
    let pool = pool();
    let e = raw_write(&pool, &c.layout, &c.addrs[0], p, data(b"second")).await.unwrap_err();
    let s = e.server().unwrap();
    assert_eq!((s.code, s.kind), (ErrorCode::Overwritten, naxos_wire::EntryKind::Data));
    assert!(matches!(client.read(p).await.unwrap(), Value::Data(r) if &r.payload[..] == b"first"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trim_discards_the_prefix_only() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    for i in 0..10 {
        client.append(format!("e{i}").into()).await.unwrap();
    }
    client.trim(Position(5)).await.unwrap();
    assert!(matches!(client.read(Position(3)).await, Err(Error::Trimmed(Position(3)))));
    assert!(matches!(client.read(Position(7)).await.unwrap(), Value::Data(r) if &r.payload[..] == b"e7"));
    assert!(matches!(client.trim(Position(1000)).await, Err(Error::Invalid(_))));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fill_refuses_written_positions_and_fills_unwritten_ones() {
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    let written = client.append("keep me".into()).await.unwrap();
    assert!(matches!(client.fill(written).await, Err(Error::AlreadyWritten { hole: false, .. })));
    assert!(matches!(client.read(written).await.unwrap(), Value::Data(r) if &r.payload[..] == b"keep me"));
    let reserved = client.reserve(1).await.unwrap();
    client.fill(reserved).await.unwrap();
    assert_eq!(client.read(reserved).await.unwrap(), Value::Hole);
    assert!(matches!(client.fill(reserved).await, Err(Error::AlreadyWritten { hole: true, .. })));
    let tail = client.tail().await.unwrap();
    assert!(matches!(client.fill(tail).await, Err(Error::Invalid(_))));
    assert!(matches!(client.read(Position(tail.0 + 10)).await, Err(Error::Unwritten(_))));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversize_entry_is_refused_with_too_large() {
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    let before = client.tail().await.unwrap();
    let big = bytes::Bytes::from(vec![7u8; naxos_wire::DEFAULT_ENTRY_BYTES_MAX + 1]);
    match client.append(big.clone()).await {
        Err(Error::TooLarge { bytes, max }) => assert_eq!((bytes, max), (big.len(), big.len() - 1)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    // Refused before a token: no position was used up.
    assert_eq!(client.tail().await.unwrap(), before);
    // Far above the frame limit: still a clear refusal, and the connection lives on.
    let huge = bytes::Bytes::from(vec![1u8; 200 << 20]);
    assert!(matches!(client.append_batch(vec![huge]).await, Err(Error::TooLarge { .. })));
    assert_eq!(client.tail().await.unwrap(), before);
    // A client that does not check (a larger configured limit) meets the
    // servers' own checks: the log unit's on a write, and the sequencer
    // node's on a combined append, before any token.
    let mut config = naxos_client::Config::new(c.addrs.clone());
    config.entry_bytes_max = usize::MAX;
    let lax = naxos_client::Client::connect(config).await.unwrap();
    match lax.append(big).await {
        Err(Error::Server(s)) => assert_eq!(s.code, ErrorCode::TooLarge),
        other => panic!("expected the server's TooLarge, got {other:?}"),
    }
    assert_eq!(client.tail().await.unwrap(), before, "the combined append checks sizes before tokens");
    let ok = bytes::Bytes::from(vec![7u8; naxos_wire::DEFAULT_ENTRY_BYTES_MAX]);
    let p = client.append(ok.clone()).await.unwrap();
    assert!(matches!(client.read(p).await.unwrap(), Value::Data(r) if r.payload == ok));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_of_an_older_epoch_are_refused_after_a_seal() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let p = client.append("before the seal".into()).await.unwrap();
    let pool = pool();
    for addr in &c.addrs {
        let seal = naxos_wire::proto::request::Body::Seal(naxos_wire::proto::Seal { epoch: 1 });
        let req = naxos_wire::Request { id: 0, cluster_id: c.layout.cluster_id.clone(), epoch: 0, body: Some(seal) };
        pool.call(addr, req).await.unwrap();
    }
    let e = raw_read(&pool, &c.layout, &c.addrs[0], p).await.unwrap_err();
    let s = e.server().unwrap();
    assert_eq!((s.code, s.epoch), (ErrorCode::WrongEpoch, naxos_wire::Epoch(1)));
    // No layout was chosen for epoch 1 (nobody proposed one): the client's
    // bounded retries end in a clear error instead of hanging.
    let mut config = naxos_client::Config::new(c.addrs.clone());
    config.retries_max = 3;
    let short = naxos_client::Client::connect(config).await.unwrap();
    assert!(short.append("after the seal".into()).await.is_err());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_cluster_id_is_refused() {
    let c = Cluster::start(1, 1, 1).await;
    let mut other = c.layout.clone();
    other.cluster_id = "someone-else".into();
    let e = raw_read(&pool(), &other, &c.addrs[0], Position(0)).await.unwrap_err();
    assert_eq!(e.server().unwrap().code, ErrorCode::WrongCluster);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_frame_is_answered_and_harms_no_other_connection() {
    use prost::Message;
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    client.append("x".into()).await.unwrap();
    // One frame's answer: its length, then the response.
    async fn answer(s: &mut tokio::net::TcpStream) -> naxos_wire::proto::Response {
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await.unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await.unwrap();
        naxos_wire::proto::Response::decode(&body[..]).unwrap()
    }
    let error_code = |r: &naxos_wire::proto::Response| match &r.body {
        Some(naxos_wire::proto::response::Body::Error(e)) => e.code,
        other => panic!("expected an error, got {other:?}"),
    };
    // A frame whose body is not a protobuf message: answered, and the
    // connection goes on (its framing is intact).
    let mut bad = tokio::net::TcpStream::connect(&c.addrs[0]).await.unwrap();
    bad.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    assert_eq!(error_code(&answer(&mut bad).await), ErrorCode::BadRequest as i32);
    // A frame announcing more than the limit: answered, then closed.
    let mut huge = tokio::net::TcpStream::connect(&c.addrs[0]).await.unwrap();
    huge.write_all(&[0xff, 0xff, 0xff, 0xf0]).await.unwrap();
    assert_eq!(error_code(&answer(&mut huge).await), ErrorCode::BadRequest as i32);
    let mut buf = [0u8; 16];
    assert_eq!(huge.read(&mut buf).await.unwrap(), 0, "server closes the connection whose framing is lost");
    // Everyone else is still served.
    let p = client.append("still serving".into()).await.unwrap();
    assert!(matches!(client.read(p).await.unwrap(), Value::Data(_)));
    c.stop_all().await;
}

/// `stream` read from position 0 (payloads as text), and how many entries
/// the first node's log unit read meanwhile.
async fn read_stream_counted(
    c: &Cluster,
    client: &naxos_client::Client,
    stream: StreamId,
) -> (Vec<(Position, String)>, u64) {
    let net = std::sync::Arc::new(naxos_wire::net::TcpNet);
    let before = naxos_client::admin::status(net.clone(), &c.addrs[0]).await.unwrap().entries_read;
    let got = client.read_stream(stream, Position(0)).await.unwrap();
    let after = naxos_client::admin::status(net, &c.addrs[0]).await.unwrap().entries_read;
    let got = got.into_iter().map(|(p, r)| (p, String::from_utf8(r.payload.to_vec()).unwrap())).collect();
    (got, after - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reads_return_exactly_the_stream_in_order_and_read_nothing_else() {
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    let (a, b) = (StreamId::from_name("a"), StreamId::from_name("b"));
    let mut expect_a = Vec::new();
    for i in 0..60 {
        match i % 3 {
            0 => expect_a.push((client.append_to(&[a], format!("a{i}").into()).await.unwrap(), format!("a{i}"))),
            1 => {
                client.append_to(&[b], format!("b{i}").into()).await.unwrap();
            }
            _ => {
                client.append(format!("none{i}").into()).await.unwrap();
            }
        }
    }
    let both = client.append_to(&[a, b], "ab".into()).await.unwrap();
    expect_a.push((both, "ab".into()));
    let (got, read) = read_stream_counted(&c, &client, a).await;
    assert_eq!(got, expect_a);
    assert_eq!(read, expect_a.len() as u64, "a stream read reads only the stream's entries");
    let from = expect_a[10].0;
    let tail_part = client.read_stream(a, from).await.unwrap();
    assert_eq!(tail_part.len(), expect_a.len() - 10);
    c.stop_all().await;
}

/// A stream that most positions belong to (a busy object's) is read in bulk:
/// one range read of the span from the chain's tail instead of a read per
/// position; the other stream's entries in the span are read and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dense_stream_is_read_in_bulk_and_still_returns_only_its_entries() {
    let c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    let (a, b) = (StreamId::from_name("dense"), StreamId::from_name("other"));
    let mut expect_a = Vec::new();
    for i in 0..50 {
        if i % 5 == 4 {
            client.append_to(&[b], format!("b{i}").into()).await.unwrap();
        } else {
            expect_a.push((client.append_to(&[a], format!("a{i}").into()).await.unwrap(), format!("a{i}")));
        }
    }
    let (got, read) = read_stream_counted(&c, &client, a).await;
    assert_eq!(got, expect_a);
    let span = expect_a.last().unwrap().0 .0 - expect_a[0].0 .0 + 1;
    assert_eq!(read, span, "every position of the span read once, in bulk (one by one would read {})", expect_a.len());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn striped_layouts_spread_positions_over_chains() {
    let c = Cluster::start(4, 2, 2).await;
    let client = c.client().await;
    let ps = client.append_batch((0..20).map(|i| bytes::Bytes::from(format!("s{i}"))).collect()).await.unwrap();
    let pool = pool();
    for (i, p) in ps.iter().enumerate() {
        let chain = c.layout.placement(*p).unwrap().chain.to_vec();
        for addr in &c.addrs {
            let held = raw_read(&pool, &c.layout, addr, *p).await.unwrap();
            assert_eq!(held.is_some(), chain.contains(addr), "position {p} on {addr}");
        }
        assert!(matches!(client.read(*p).await.unwrap(), Value::Data(r) if r.payload == format!("s{i}").as_bytes()));
    }
    let s = StreamId::from_name("striped");
    for i in 0..6 {
        client.append_to(&[s], format!("x{i}").into()).await.unwrap();
    }
    assert_eq!(client.read_stream(s, Position(0)).await.unwrap().len(), 6);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sequencer_never_reissues_a_written_position() {
    let mut c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let mut last = Position(0);
    for i in 0..20 {
        last = client.append(format!("e{i}").into()).await.unwrap();
    }
    c.restart(0).await;
    let fresh = c.client().await;
    let next = fresh.append("after restart".into()).await.unwrap();
    assert!(next > last, "token {next} after restart must be above {last}");
    assert!(matches!(fresh.read(last).await.unwrap(), Value::Data(r) if &r.payload[..] == b"e19"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_segment_file_is_repaired_or_reported_never_served() {
    let mut c = Cluster::start(1, 1, 1).await;
    let client = c.client().await;
    for tag in ["entry-A", "entry-B-to-be-corrupted", "entry-C"] {
        client.append(tag.into()).await.unwrap();
    }
    c.stop(0).await;
    let seg = c.dirs[0].path().join("log").join(format!("seg-{:020}.log", 0));
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(7).position(|w| w == b"B-to-be").expect("payload on disk");
    bytes[at] ^= 0x40; // corrupt a middle record
    bytes.extend_from_slice(&[0x30, 0, 0, 0, 0xde, 0xad]); // a torn last record
    std::fs::write(&seg, &bytes).unwrap();
    c.restart(0).await;
    let client = c.client().await;
    assert!(matches!(client.read(Position(0)).await.unwrap(), Value::Data(r) if &r.payload[..] == b"entry-A"));
    match client.read(Position(1)).await {
        Err(Error::Server(s)) => assert_eq!(s.code, ErrorCode::Corrupted),
        other => panic!("a corrupted record must be reported, not served: {other:?}"),
    }
    assert!(matches!(client.read(Position(2)).await.unwrap(), Value::Data(r) if &r.payload[..] == b"entry-C"));
    let p = client.append("after repair".into()).await.unwrap();
    assert_eq!(p, Position(3));
    assert!(matches!(client.read(p).await.unwrap(), Value::Data(r) if &r.payload[..] == b"after repair"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_seal_and_a_new_epoch_clients_move_on_and_old_epochs_are_fenced() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let before = client.append("epoch 0".into()).await.unwrap();
    let tail_before = client.tail().await.unwrap();
    let net = std::sync::Arc::new(naxos_wire::net::TcpNet);
    let change = naxos_control::Change::NextEpoch;
    let next = naxos_control::reconfigure(net, &c.addrs, &change, &Default::default()).await.unwrap().decided.layout;
    assert_eq!(next.epoch, 1);
    // The old epoch is fenced everywhere.
    let e = raw_read(&pool(), &c.layout, &c.addrs[2], before).await.unwrap_err();
    assert_eq!(e.server().unwrap().code, ErrorCode::WrongEpoch);
    // The same client learns the new layout and goes on; nothing is lost.
    let after = client.append("epoch 1".into()).await.unwrap();
    assert!(after > before);
    assert_eq!(client.layout().epoch, 1);
    assert!(client.tail().await.unwrap() >= tail_before);
    assert!(matches!(client.read(before).await.unwrap(), Value::Data(r) if &r.payload[..] == b"epoch 0"));
    assert!(matches!(client.read(after).await.unwrap(), Value::Data(r) if &r.payload[..] == b"epoch 1"));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_in_flight_on_one_connection_are_refused_as_overloaded() {
    use naxos_wire::frame;
    use naxos_wire::proto::{request, response, Request, Response};
    let dir = tempfile::tempdir().unwrap();
    let mut config = naxos_server::Config::new("127.0.0.1:0", dir.path());
    config.inflight_max = 4;
    let server = naxos_server::start(config, std::sync::Arc::new(naxos_wire::net::TcpNet)).await.unwrap();
    let addr = server.advertise().to_string();
    let layout =
        naxos_wire::Layout::initial("c", std::slice::from_ref(&addr), 1, 1, vec![addr.clone()], vec![addr.clone()]);
    naxos_client::admin::bootstrap(std::sync::Arc::new(naxos_wire::net::TcpNet), &layout).await.unwrap();
    // 200 pipelined writes in one burst on one connection.
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut buf = bytes::BytesMut::new();
    for i in 0..200u64 {
        let mut r: Request = req(
            &layout,
            request::Body::Write(naxos_wire::proto::Write { position: i, entry: Some(data(b"x")), repair: false }),
        );
        r.id = i + 1;
        frame::encode(&r, &mut buf);
    }
    conn.write_all(&buf).await.unwrap();
    let (rd, _wr) = conn.into_split();
    let mut reader = frame::FrameReader::new(rd, 1 << 20);
    let (mut ok, mut overloaded) = (0, 0);
    for _ in 0..200 {
        let resp: Response = reader.next().await.unwrap().expect("an answer per request");
        match resp.body {
            Some(response::Body::Ok(_)) => ok += 1,
            Some(response::Body::Error(e)) if e.code == ErrorCode::Overloaded as i32 => overloaded += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(overloaded > 0, "the limit of 4 in flight was never hit");
    assert!(ok > 0 && ok + overloaded == 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_append_request_takes_tokens_and_writes_only_the_heads_its_node_leads() {
    use naxos_wire::proto::{request, response, Append};
    // Two chains of two over four nodes: node 0 runs the sequencer and heads chain 0 only.
    let c = Cluster::start(4, 2, 2).await;
    let client = c.client().await;
    client.tail().await.expect("the sequencer recovers");
    let pool = pool();
    let s = StreamId::from_name("combined");
    let mut with_stream = data(b"c");
    with_stream.streams = vec![bytes::Bytes::copy_from_slice(&s.to_bytes())];
    let entries = vec![data(b"a"), data(b"b"), with_stream, data(b"d")];
    let body = request::Body::Append(Append { entries: entries.clone() });
    let ok = match pool.call(&c.addrs[0], req(&c.layout, body)).await.unwrap() {
        response::Body::Append(ok) => ok,
        other => panic!("unexpected answer {other:?}"),
    };
    assert_eq!(ok.results.len(), 4);
    let positions: Vec<u64> = ok.results.iter().map(|r| r.position).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "positions in order: {positions:?}");
    assert_eq!(ok.results[2].backpointers, vec![u64::MAX], "the stream's first entry points nowhere");
    let mut written_here = 0;
    for (r, sent) in ok.results.iter().zip(&entries) {
        let p = Position(r.position);
        let chain = c.layout.placement(p).unwrap().chain.to_vec();
        let at_head = raw_read(&pool, &c.layout, &chain[0], p).await.unwrap();
        if chain[0] == c.addrs[0] {
            let head = r.head.as_ref().expect("node 0 wrote the head of its own chain");
            assert!(!matches!(head.body, Some(response::Body::Error(_))), "head write failed: {head:?}");
            assert_eq!(at_head.expect("written at the head").payload, sent.payload);
            written_here += 1;
        } else {
            assert!(r.head.is_none(), "node 0 does not head {p}'s chain");
            assert!(at_head.is_none(), "nothing written on another node's chain");
        }
        assert!(raw_read(&pool, &c.layout, &chain[1], p).await.unwrap().is_none(), "the client writes the rest");
    }
    assert_eq!(written_here, 2, "half the positions fall on node 0's chain");
    // A node without the sequencer refuses it as a whole.
    let body = request::Body::Append(Append { entries: vec![data(b"e")] });
    let e = pool.call(&c.addrs[1], req(&c.layout, body)).await.unwrap_err();
    assert_eq!(e.server().unwrap().code, ErrorCode::WrongRole);
    // The client's own appends use it and complete every chain.
    for i in 0..4 {
        let p = client.append(format!("via append {i}").into()).await.unwrap();
        for addr in c.layout.placement(p).unwrap().chain {
            let held = raw_read(&pool, &c.layout, addr, p).await.unwrap().expect("on every replica");
            assert_eq!(held.payload, format!("via append {i}").as_bytes());
        }
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_loglet_checks_its_tail_and_seals_every_replica() {
    use naxos_client::loglet;
    let c = Cluster::start(4, 2, 2).await;
    let client = c.client().await;
    let s = StreamId::from_name("orders");
    for i in 0..5 {
        client.append_to(&[s], format!("entry {i}").into()).await.unwrap();
    }
    let layout = client.layout();
    let segment = loglet::of_segment(&layout, 0).unwrap();
    let t = segment.check_tail(&client).await.unwrap();
    assert_eq!((t.tail, t.sealed), (Position(5), false));
    assert_eq!(t.streams.get(&s), Some(&4));
    // Sealing the segment fences every replica of both chains at epoch 1.
    let sealed = segment.seal(&client, naxos_wire::Epoch(1)).await.unwrap();
    assert_eq!((sealed.tail, sealed.sealed), (Position(5), true));
    let pool = pool();
    for addr in &c.addrs {
        let e = raw_read(&pool, &c.layout, addr, Position(0)).await.unwrap_err();
        assert_eq!(e.server().unwrap().code, ErrorCode::WrongEpoch, "{addr} is sealed");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_reports_the_first_open_position_and_a_copy_from_there_gets_what_a_late_writer_put_there() {
    // A sealed segment can still take writes below its end: a writer that
    // holds the token for a position no replica has yet writes it through
    // the chain. A copy to a joining unit says where the first such position
    // is, so that the copy after the seal looks again from there (soak seed
    // 8002739 lost an acknowledged append when it did not).
    use naxos_client::loglet::{self, Extras, Throttle};
    use naxos_wire::proto::{request, CommitLayout};
    use std::sync::Arc;
    let c = Cluster::start(4, 3, 1).await;
    let (chain, joining) = (&c.addrs[..3], &c.addrs[3]);
    let pool = pool();
    // The joining unit takes the layout, as a reconfiguration enrolls it.
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(c.layout.clone())) });
    pool.call(joining, req(&c.layout, body)).await.unwrap();
    // Positions 0..10 on the chain, but for 4 and 7 (their writers are slow).
    let late = [4u64, 7];
    for p in (0..10).filter(|p| !late.contains(p)) {
        for addr in chain {
            raw_write(&pool, &c.layout, addr, Position(p), data(format!("v{p}").as_bytes())).await.unwrap();
        }
    }
    let client = c.client().await;
    let layout = Arc::new(c.layout.clone());
    let segment = loglet::of_segment(&layout, 0).unwrap();
    let progress = Arc::new(loglet::Progress::default());
    let mut throttle = Throttle::new(0).with_progress(progress.clone());
    let compared = || progress.positions_done.load(std::sync::atomic::Ordering::Relaxed);
    let first = segment
        .catch_up(&client, joining, None, Position(0), Position(10), Extras::Settle, &mut throttle)
        .await
        .unwrap();
    assert_eq!((first.copied, first.open), (8, Some(4)), "{first:?}");
    assert_eq!(compared(), 10);
    // The late writers finish through the chain the joining unit is not in.
    for p in late {
        for addr in chain {
            raw_write(&pool, &c.layout, addr, Position(p), data(format!("v{p}").as_bytes())).await.unwrap();
        }
    }
    let again = segment
        .catch_up(&client, joining, None, Position(4), Position(10), Extras::Settle, &mut throttle)
        .await
        .unwrap();
    assert_eq!((again.copied, again.open), (2, None), "only the two late positions are new: {again:?}");
    assert_eq!(compared(), 10 + 6, "the second copy starts at the first open position");
    for p in 0..10 {
        let held = raw_read(&pool, &c.layout, joining, Position(p)).await.unwrap();
        assert_eq!(held.map(|e| e.payload), Some(bytes::Bytes::from(format!("v{p}"))), "position {p}");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_only_the_joining_unit_holds_is_decided_through_the_chain_only_after_the_seal() {
    // A write that reached a unit (then taken out) but not the rest of its
    // chain: the live sequencer took its stream tails from the chain, so it
    // never counted the value. Decided through the chain before the seal,
    // a writer's late append would be acknowledged through it while the
    // stream tail stayed below it (soak seed 712375). The copy before the
    // seal leaves it open; the copy after the seal decides it.
    use naxos_client::loglet::{self, Extras, Throttle};
    use naxos_wire::proto::{request, CommitLayout};
    use std::sync::Arc;
    let c = Cluster::start(3, 2, 1).await;
    let (chain, joining) = (&c.addrs[..2], &c.addrs[2]);
    let pool = pool();
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(c.layout.clone())) });
    pool.call(joining, req(&c.layout, body)).await.unwrap();
    for p in 0..6u64 {
        for addr in chain {
            raw_write(&pool, &c.layout, addr, Position(p), data(format!("v{p}").as_bytes())).await.unwrap();
        }
    }
    raw_write(&pool, &c.layout, joining, Position(3), data(b"v3")).await.unwrap();
    raw_write(&pool, &c.layout, joining, Position(6), data(b"extra")).await.unwrap();
    let client = c.client().await;
    let layout = Arc::new(c.layout.clone());
    let segment = loglet::of_segment(&layout, 0).unwrap();
    let before = segment
        .catch_up(&client, joining, None, Position(0), Position(8), Extras::Defer, &mut Throttle::new(0))
        .await
        .unwrap();
    assert_eq!((before.copied, before.diverged, before.open), (5, 0, Some(6)), "{before:?}");
    for addr in chain {
        assert!(raw_read(&pool, &c.layout, addr, Position(6)).await.unwrap().is_none(), "{addr} took the extra early");
    }
    let after = segment
        .catch_up(&client, joining, None, Position(6), Position(8), Extras::Settle, &mut Throttle::new(0))
        .await
        .unwrap();
    assert_eq!((after.diverged, after.open), (0, Some(7)), "{after:?}");
    for addr in chain {
        let held = raw_read(&pool, &c.layout, addr, Position(6)).await.unwrap().map(|e| e.payload);
        assert_eq!(held, Some(bytes::Bytes::from_static(b"extra")), "{addr}");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_on_the_tails_disk_is_read_from_another_replica() {
    let mut c = Cluster::start(3, 3, 1).await;
    // The tail keeps its damaged record (no repair) for the reads to meet.
    c.repair = false;
    let client = c.client().await;
    for i in 0..3u8 {
        client.append(format!("entry-{i}").into()).await.unwrap();
    }
    let tail = c.layout.segments[0].stripes[0].chain.last().unwrap().clone();
    let t = c.addrs.iter().position(|a| *a == tail).unwrap();
    c.stop(t).await;
    // Flip a byte of entry 1's payload in the tail's segment file.
    let log = c.dirs[t].path().join("log").join("seg-00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(7).position(|w| w == b"entry-1").unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&log, bytes).unwrap();
    c.restart(t).await;
    let pool = pool();
    let direct = raw_read(&pool, &c.layout, &tail, Position(1)).await;
    assert!(
        direct.as_ref().is_err_and(|e| e.server().is_some_and(|s| s.code == naxos_wire::ErrorCode::Corrupted)),
        "the tail itself answers corrupted: {direct:?}"
    );
    let client = c.client().await;
    for i in 0..3u64 {
        match client.read(Position(i)).await {
            Ok(Value::Data(r)) => assert_eq!(r.payload, bytes::Bytes::from(format!("entry-{i}")), "position {i}"),
            other => panic!("position {i}: {other:?}"),
        }
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_takes_a_record_damaged_on_the_tails_disk_from_a_replica_before_it() {
    use naxos_client::loglet::{self, Extras, Throttle};
    use naxos_wire::proto::{request, CommitLayout};
    use std::sync::Arc;
    let mut c = Cluster::start(3, 2, 1).await;
    // The tail keeps its damaged record (no repair) for the copy to meet.
    c.repair = false;
    assert_eq!(c.layout.segments[0].stripes[0].chain, c.addrs[..2]);
    let joining = c.addrs[2].clone();
    let pool = pool();
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(c.layout.clone())) });
    pool.call(&joining, req(&c.layout, body)).await.unwrap();
    for p in 0..5u64 {
        for addr in &c.addrs[..2] {
            raw_write(&pool, &c.layout, addr, Position(p), data(format!("value-{p}").as_bytes())).await.unwrap();
        }
    }
    // Damage position 2's record on the tail's disk.
    c.stop(1).await;
    let log = c.dirs[1].path().join("log").join("seg-00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(7).position(|w| w == b"value-2").unwrap();
    bytes[at + 6] ^= 0x01;
    std::fs::write(&log, bytes).unwrap();
    c.restart(1).await;
    let client = c.client().await;
    let layout = Arc::new(c.layout.clone());
    let segment = loglet::of_segment(&layout, 0).unwrap();
    let done = segment
        .catch_up(&client, &joining, None, Position(0), Position(5), Extras::Settle, &mut Throttle::new(0))
        .await
        .unwrap();
    assert_eq!((done.copied, done.diverged), (5, 0), "{done:?}");
    for p in 0..5 {
        let held = raw_read(&pool, &c.layout, &joining, Position(p)).await.unwrap();
        assert_eq!(held.map(|e| e.payload), Some(bytes::Bytes::from(format!("value-{p}"))), "position {p}");
    }
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_damaged_on_the_heads_disk_is_repaired_by_the_node_from_its_chain() {
    // No client read goes to the head: the node itself finds the damage (its
    // start-up scan), reads the position from its chain and writes it back.
    let mut c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    for i in 0..3u8 {
        client.append(format!("entry-{i}").into()).await.unwrap();
    }
    let head = c.layout.segments[0].stripes[0].chain[0].clone();
    let h = c.addrs.iter().position(|a| *a == head).unwrap();
    c.stop(h).await;
    let log = c.dirs[h].path().join("log").join("seg-00000000000000000000.log");
    let mut bytes = std::fs::read(&log).unwrap();
    let at = bytes.windows(7).position(|w| w == b"entry-1").unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(&log, bytes).unwrap();
    c.restart(h).await;
    let pool = pool();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = raw_read(&pool, &c.layout, &head, Position(1)).await;
        match &r {
            Ok(Some(e)) => {
                assert_eq!(e.payload, bytes::Bytes::from("entry-1"), "the repaired value is the chain's");
                break;
            }
            Err(e) if e.server().is_some_and(|s| s.code == naxos_wire::ErrorCode::Corrupted) => {}
            other => panic!("the head must answer corrupted until repaired, never unwritten: {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "the head was not repaired within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The repair is durable: after another restart the head serves the value at once.
    c.stop(h).await;
    c.restart(h).await;
    let r = raw_read(&pool, &c.layout, &head, Position(1)).await;
    assert!(matches!(&r, Ok(Some(e)) if e.payload == "entry-1"), "{r:?}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_reads_only_from_the_chains_tail_so_a_write_that_stopped_at_the_head_is_not_copied() {
    // The joining unit goes at the end of the chain, so it may hold nothing
    // the tail lacks. A write that reached only the head (its writer died)
    // must not reach the new tail through the copy, even when the tail is
    // down: then the copy fails rather than read from a replica further up
    // (soak seed 15003067 read data at a position, then a hole).
    use naxos_client::loglet::{self, Extras, Throttle};
    use naxos_wire::proto::{request, CommitLayout};
    use std::sync::Arc;
    // A chain of two (head, tail) and a unit that joins it.
    let mut c = Cluster::start(3, 2, 1).await;
    assert_eq!(c.layout.segments[0].stripes[0].chain, c.addrs[..2]);
    let joining = c.addrs[2].clone();
    let pool = pool();
    let body = request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(c.layout.clone())) });
    pool.call(&joining, req(&c.layout, body)).await.unwrap();
    for p in 0..5u64 {
        for addr in &c.addrs[..2] {
            raw_write(&pool, &c.layout, addr, Position(p), data(format!("v{p}").as_bytes())).await.unwrap();
        }
    }
    raw_write(&pool, &c.layout, &c.addrs[0], Position(5), data(b"head only")).await.unwrap();
    let client = c.client().await;
    let layout = Arc::new(c.layout.clone());
    let segment = loglet::of_segment(&layout, 0).unwrap();
    c.stop(1).await;
    let down = segment
        .catch_up(&client, &joining, None, Position(0), Position(6), Extras::Settle, &mut Throttle::new(0))
        .await;
    assert!(down.is_err(), "a copy with the tail down must fail, not read further up: {down:?}");
    assert!(raw_read(&pool, &c.layout, &joining, Position(5)).await.unwrap().is_none());
    c.restart(1).await;
    let up = segment
        .catch_up(&client, &joining, None, Position(0), Position(6), Extras::Settle, &mut Throttle::new(0))
        .await
        .unwrap();
    assert_eq!((up.copied, up.open), (5, Some(5)), "{up:?}");
    assert!(raw_read(&pool, &c.layout, &joining, Position(5)).await.unwrap().is_none());
    c.stop_all().await;
}

/// The next entry of a subscription, or a panic after `limit` (a hung
/// subscription fails the test instead of hanging it).
async fn next_of(sub: &mut naxos_client::Subscription) -> (Position, bytes::Bytes) {
    match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
        Ok(Ok((p, r))) => (p, r.payload),
        Ok(Err(e)) => panic!("subscription failed: {e}"),
        Err(_) => panic!("subscription gave nothing for 20 s at {}", sub.position()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_yields_its_streams_entries_in_log_order_as_they_are_appended() {
    let c = Cluster::start(3, 3, 1).await;
    let writer = c.client().await;
    let (s, other) = (StreamId::from_name("orders"), StreamId::from_name("other"));
    let mut expected = Vec::new();
    for i in 0..5 {
        let p = writer.append_to(&[s], format!("before {i}").into()).await.unwrap();
        expected.push((p, bytes::Bytes::from(format!("before {i}"))));
        writer.append_to(&[other], "noise".into()).await.unwrap();
    }
    let reader = c.client().await;
    let mut sub = reader.subscribe(s, Position(0));
    for e in &expected {
        assert_eq!(&next_of(&mut sub).await, e);
    }
    // Nothing more yet: the reader waits (a long poll) rather than failing.
    assert!(sub.next_within(Duration::from_millis(200)).await.unwrap().is_none());
    // New entries, interleaved with another stream's and written from another
    // task while the reader waits, arrive in log order.
    let w = writer.clone();
    let appender = tokio::spawn(async move {
        let mut appended = Vec::new();
        for i in 0..40 {
            let payload = bytes::Bytes::from(format!("after {i}"));
            appended.push((w.append_to(&[s], payload.clone()).await.unwrap(), payload));
            w.append_to(&[other], "noise".into()).await.unwrap();
        }
        appended
    });
    let mut got = Vec::new();
    for _ in 0..40 {
        got.push(next_of(&mut sub).await);
    }
    assert_eq!(got, appender.await.unwrap());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_skips_burnt_tokens_and_reads_past_a_writer_that_died() {
    // 2^18 positions handed out and never written (as a sequencer crash
    // leaves, or clients that died) lie between two entries of the stream;
    // a writer of the stream took a token and died. The subscription walks
    // the stream's back-pointers over the first, and reads the stream's index
    // below the hole the second leaves.
    let c = Cluster::start(3, 3, 1).await;
    let writer = c.client().await;
    let s = StreamId::from_name("orders");
    let pool = pool();
    let token = |count: u32, streams: Vec<StreamId>| {
        let streams = streams.iter().map(|s| bytes::Bytes::copy_from_slice(&s.to_bytes())).collect();
        req(
            &c.layout,
            naxos_wire::proto::request::Body::Token(naxos_wire::proto::Token { count, streams, conflict: None }),
        )
    };
    let first = writer.append_to(&[s], "first".into()).await.unwrap();
    for _ in 0..4 {
        pool.call(&c.addrs[0], token(1 << 16, vec![])).await.unwrap();
    }
    let second = writer.append_to(&[s], "second".into()).await.unwrap();
    assert!(second.0 - first.0 > 1 << 18);
    // A writer of the stream that took its position and died.
    pool.call(&c.addrs[0], token(1, vec![s])).await.unwrap();
    let third = writer.append_to(&[s], "third".into()).await.unwrap();
    let mut sub = c.client().await.subscribe(s, Position(0));
    assert_eq!(next_of(&mut sub).await, (first, "first".into()));
    assert_eq!(next_of(&mut sub).await, (second, "second".into()));
    assert_eq!(next_of(&mut sub).await, (third, "third".into()));
    let fourth = writer.append_to(&[s], "fourth".into()).await.unwrap();
    assert_eq!(next_of(&mut sub).await, (fourth, "fourth".into()));
    // The burnt positions were neither read nor filled: still unwritten on
    // the head.
    let burnt = Position(first.0 + 1000);
    assert_eq!(raw_read(&pool, &c.layout, &c.addrs[0], burnt).await.unwrap(), None);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_waits_for_a_slow_writer_of_its_stream_instead_of_filling_its_position() {
    // A writer takes a token for the stream, which wakes the waiting reader
    // at once, and writes 500 ms later (over ten hole-fill waits): the reader
    // must wait for it, not fill the position and make the writer lose it.
    let c = Cluster::start(3, 3, 1).await;
    let writer = c.client().await;
    let s = StreamId::from_name("orders");
    let first = writer.append_to(&[s], "first".into()).await.unwrap();
    let mut sub = c.client().await.subscribe(s, Position(0));
    assert_eq!(next_of(&mut sub).await, (first, "first".into()));
    let reading = tokio::spawn(async move { (next_of(&mut sub).await, sub) });
    let pool = pool();
    let token = naxos_wire::proto::Token {
        count: 1,
        streams: vec![bytes::Bytes::copy_from_slice(&s.to_bytes())],
        conflict: None,
    };
    let (slow, back) =
        match pool.call(&c.addrs[0], req(&c.layout, naxos_wire::proto::request::Body::Token(token))).await {
            Ok(naxos_wire::proto::response::Body::Token(t)) => (Position(t.start), t.backpointers),
            other => panic!("unexpected answer {other:?}"),
        };
    assert_eq!(back, vec![first.0]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let entry = naxos_wire::proto::Entry {
        streams: vec![bytes::Bytes::copy_from_slice(&s.to_bytes())],
        backpointers: back,
        ..data(b"slow")
    };
    // Head to tail, as a client writes a chain of three.
    for addr in &c.addrs {
        raw_write(&pool, &c.layout, addr, slow, entry.clone()).await.expect("the slow writer keeps its position");
    }
    let (got, mut sub) = reading.await.unwrap();
    assert_eq!(got, (slow, "slow".into()));
    let after = writer.append_to(&[s], "after".into()).await.unwrap();
    assert_eq!(next_of(&mut sub).await, (after, "after".into()));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscription_goes_on_across_new_epochs_and_catches_up_from_far_behind() {
    // Entries in three segments (two reconfigurations; the older two are
    // read through the index), more of them in the last than one
    // back-pointer walk holds, then new ones while it reads.
    let c = Cluster::start(3, 3, 1).await;
    let writer = c.client().await;
    let (s, other) = (StreamId::from_name("orders"), StreamId::from_name("other"));
    let mut expected = Vec::new();
    let append = |batch: usize, tag: &'static str| {
        let w = writer.clone();
        async move {
            let mut out = Vec::new();
            for i in 0..batch {
                let payload = bytes::Bytes::from(format!("{tag} {i}"));
                out.push((w.append_to(&[s], payload.clone()).await.unwrap(), payload));
                if i % 3 == 0 {
                    w.append_to(&[other], "noise".into()).await.unwrap();
                }
            }
            out
        }
    };
    expected.extend(append(300, "epoch 0").await);
    c.next_epoch().await;
    writer.refresh_layout().await.unwrap();
    expected.extend(append(300, "epoch 1").await);
    c.next_epoch().await;
    writer.refresh_layout().await.unwrap();
    expected.extend(append(5000, "epoch 2").await);
    let mut sub = c.client().await.subscribe(s, Position(0));
    let tail = tokio::spawn(append(200, "while reading"));
    for (i, e) in expected.iter().enumerate() {
        assert_eq!(&next_of(&mut sub).await, e, "entry {i} of those appended before");
    }
    for (i, e) in tail.await.unwrap().iter().enumerate() {
        assert_eq!(&next_of(&mut sub).await, e, "entry {i} of those appended while reading");
    }
    c.stop_all().await;
}
