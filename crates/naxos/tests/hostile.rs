//! Hostile and buggy clients, over raw frames against a real server
//! process: frames announced and never sent, frames that stall half-way,
//! more connections than the server serves. For each, the server stays up,
//! answers or closes with a reason, stays within a memory budget, and keeps
//! serving an honest client.

mod common;

use common::{ask, get_layout, layout_of, read_response, run_cli, Proc};
use naxos_wire::frame;
use naxos_wire::proto::{request, response, Request, Response};
use naxos_wire::ErrorCode;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The private data memory (heap and anonymous mappings, touched or not)
/// of process `pid`, in bytes (Linux): what a process has committed to,
/// which a reserved but untouched buffer does not show in its RSS.
fn data_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmData:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("a VmData line");
    kb * 1024
}

fn dev(dir: &std::path::Path, extra: &[&str]) -> Proc {
    let data = dir.join("data");
    let mut args =
        vec!["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data.to_str().unwrap()];
    args.extend_from_slice(extra);
    Proc::start(&args)
}

/// An honest append through the CLI, which must succeed.
fn honest_append(addr: &str, what: &str) {
    let (code, _, err) = run_cli(&["append", "--cluster", addr, "--timeout", "5s", what], b"");
    assert_eq!(code, 0, "an honest append failed: {err}");
}

#[test]
fn frames_announced_and_never_sent_cost_what_arrived_not_what_was_announced() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    honest_append(&server.addr, "before");
    let before = data_bytes(server.child.id());
    // 50 connections each announce a 60 MiB frame and send 1 KiB of it
    // (the old reader reserved the whole announced length: 3 GB).
    let mut conns = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        s.write_all(&(60u32 << 20).to_be_bytes()).unwrap();
        s.write_all(&[0u8; 1024]).unwrap();
        conns.push(s);
    }
    // The server has read them by the time it answers this.
    honest_append(&server.addr, "during");
    let after = data_bytes(server.child.id());
    let grew = after.saturating_sub(before);
    assert!(grew < 64 << 20, "50 half-sent 60 MiB frames grew the server by {} MiB", grew >> 20);
    drop(conns);
}

#[test]
fn a_frame_that_stalls_half_way_is_closed_after_the_stall_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &["--frame-stall-timeout", "300ms"]);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(&100u32.to_be_bytes()).unwrap();
    s.write_all(&[0u8; 10]).unwrap();
    // The server says why and closes it, well before our 30 s guard.
    let (id, code, message) = refusal(read_response(&mut s));
    assert_eq!((id, code), (0, ErrorCode::Unavailable as i32), "{message}");
    assert!(message.contains("stalled"), "{message}");
    let mut byte = [0u8; 1];
    let n = s.read(&mut byte).expect("the server closes the connection (not our read time-out)");
    assert_eq!(n, 0, "the stalled connection was closed");
    // A peer that waits between frames is not stalled: an idle connection
    // still answers after the stall time-out has passed many times over.
    let mut idle = TcpStream::connect(&server.addr).unwrap();
    let first = ask(&mut idle, &get_layout()).expect("an answer");
    assert!(matches!(first.body, Some(response::Body::Layout(_))), "{first:?}");
    let mut other = TcpStream::connect(&server.addr).unwrap();
    other.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    other.write_all(&100u32.to_be_bytes()).unwrap();
    // The second stalled frame is closed too; meanwhile the idle one waited.
    let (_, code, _) = refusal(read_response(&mut other));
    assert_eq!(code, ErrorCode::Unavailable as i32);
    let n = other.read(&mut byte).expect("closed");
    assert_eq!(n, 0);
    let again = ask(&mut idle, &get_layout()).expect("the idle connection still answers");
    assert!(matches!(again.body, Some(response::Body::Layout(_))), "{again:?}");
    honest_append(&server.addr, "after");
}

#[test]
fn connections_beyond_the_maximum_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &["--connections-max", "8"]);
    // Open connections until one is refused: within 8 (the server's own
    // roles hold some of the places themselves).
    let mut held: Vec<TcpStream> = Vec::new();
    let refused = loop {
        assert!(held.len() <= 8, "more than --connections-max connections were served");
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let r = ask(&mut s, &get_layout()).expect("an answer");
        match r.body {
            Some(response::Body::Layout(_)) => held.push(s),
            other => break other,
        }
    };
    assert!(!held.is_empty(), "some connections were served");
    match refused {
        Some(response::Body::Error(e)) => {
            assert_eq!(e.code, ErrorCode::Overloaded as i32);
            assert!(e.message.contains("connections-max"), "{}", e.message);
        }
        other => panic!("expected an overloaded error, got {other:?}"),
    }
    // The CLI hears the reason too.
    let (code, _, err) = run_cli(&["tail", "--cluster", &server.addr, "--timeout", "2s"], b"");
    assert_ne!(code, 0);
    assert!(err.contains("connections-max"), "{err}");
    // Served connections keep working, and a freed place is taken again.
    let r = ask(&mut held[0], &get_layout()).expect("still served");
    assert!(matches!(r.body, Some(response::Body::Layout(_))));
    held.pop();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        if ask(&mut s, &get_layout()).is_some_and(|r| matches!(r.body, Some(response::Body::Layout(_)))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "a freed place was not taken again");
    }
}

/// Sends raw bytes as one frame; the response.
fn ask_raw(s: &mut TcpStream, body: &[u8]) -> Option<Response> {
    s.write_all(&(body.len() as u32).to_be_bytes()).ok()?;
    s.write_all(body).ok()?;
    read_response(s)
}

fn refusal(r: Option<Response>) -> (u64, i32, String) {
    match r {
        Some(Response { id, body: Some(response::Body::Error(e)) }) => (id, e.code, e.message),
        other => panic!("expected an error answer, got {other:?}"),
    }
}

#[test]
fn requests_with_two_bodies_huge_batches_or_bad_bytes_are_refused_and_nothing_runs() {
    use naxos_wire::proto::{Batch, Read, Trim};
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    for i in 0..5 {
        honest_append(&server.addr, &format!("e{i}"));
    }
    let (cluster, _) = layout_of(&server.addr);
    let mut s = TcpStream::connect(&server.addr).unwrap();
    // `Read` then `Trim` in one frame: protobuf keeps the last, the trim.
    let read = Request {
        id: 7,
        cluster_id: cluster.clone(),
        body: Some(request::Body::Read(Read { position: 0 })),
        ..Default::default()
    };
    let trim = Request {
        id: 7,
        cluster_id: cluster.clone(),
        body: Some(request::Body::Trim(Trim { position: 4 })),
        ..Default::default()
    };
    let mut both = read.encode_to_vec();
    both.extend(trim.encode_to_vec());
    let (id, code, message) = refusal(ask_raw(&mut s, &both));
    assert_eq!((id, code), (7, ErrorCode::BadRequest as i32), "{message}");
    assert!(message.contains("two bodies"), "{message}");
    // A batch of more items than may be in flight is refused before it is built.
    let item = Request { id: 1, body: Some(request::Body::Read(Read { position: 0 })), ..Default::default() };
    let batch = Request {
        id: 8,
        cluster_id: cluster.clone(),
        body: Some(request::Body::Batch(Batch { requests: vec![item; 5000] })),
        ..Default::default()
    };
    let (id, code, message) = refusal(ask(&mut s, &batch));
    assert_eq!((id, code), (8, ErrorCode::BadRequest as i32), "{message}");
    assert!(message.contains("batch holds more than"), "{message}");
    // Bytes that are not a request are answered, and the connection goes on.
    let (_, code, message) = refusal(ask_raw(&mut s, &[0x0a, 0xff, 0xff]));
    assert_eq!(code, ErrorCode::BadRequest as i32, "{message}");
    let r = ask(&mut s, &get_layout()).expect("the connection still serves");
    assert!(matches!(r.body, Some(response::Body::Layout(_))), "{r:?}");
    // Nothing was trimmed: position 0 still reads.
    let (code, out, err) = run_cli(&["read", "--cluster", &server.addr, "0"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).to_string()), (0, "e0".to_string()), "{err}");

    // A frame longer than the limit: an error frame, then the close.
    let mut big = TcpStream::connect(&server.addr).unwrap();
    big.write_all(&u32::MAX.to_be_bytes()).unwrap();
    let (id, code, message) = refusal(read_response(&mut big));
    assert_eq!((id, code), (0, ErrorCode::BadRequest as i32), "{message}");
    assert!(message.contains("exceeds the limit"), "{message}");
    honest_append(&server.addr, "after");
}

/// The top of the position space is reserved: a write, a fill, a trim or a
/// sequencer bootstrap there is refused, so no tail wraps to 0 and
/// `Trim(2^64-1)` deletes nothing.
#[test]
fn positions_in_the_reserved_top_range_are_refused() {
    use naxos_wire::proto::{Entry, EntryKind, SeqBootstrap, Trim, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    for i in 0..3 {
        honest_append(&server.addr, &format!("e{i}"));
    }
    let (cluster, epoch) = layout_of(&server.addr);
    let req = |id: u64, body: request::Body| Request { id, cluster_id: cluster.clone(), epoch, body: Some(body) };
    let data = |kind: EntryKind| Entry { kind: kind as i32, payload: "x".into(), ..Default::default() };
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let cases = [
        req(
            1,
            request::Body::Write(Write { position: u64::MAX - 1, entry: Some(data(EntryKind::Data)), repair: false }),
        ),
        req(
            2,
            request::Body::Write(Write {
                position: naxos_wire::POSITION_LIMIT,
                entry: Some(data(EntryKind::Hole)),
                repair: false,
            }),
        ),
        req(3, request::Body::Trim(Trim { position: u64::MAX })),
        req(4, request::Body::SeqBootstrap(SeqBootstrap { tail: u64::MAX - 2, streams: Vec::new() })),
    ];
    for r in &cases {
        let (id, code, message) = refusal(ask(&mut s, r));
        assert_eq!((id, code), (r.id, ErrorCode::BadRequest as i32), "{message}");
        assert!(message.contains("reserved"), "{message}");
    }
    // Nothing was lost, and the log goes on from where it was.
    let (code, out, err) = run_cli(&["read", "--cluster", &server.addr, "0"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).to_string()), (0, "e0".to_string()), "{err}");
    let (code, out, err) = run_cli(&["append", "--cluster", &server.addr, "e3"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).trim().to_string()), (0, "3".to_string()), "{err}");
}

/// A batch of bulk reads whose answers could not fit one frame is refused
/// before any is served (a 1 KB request once built a 480 MiB answer).
#[test]
fn a_batch_of_bulk_reads_too_large_to_answer_is_refused() {
    use naxos_wire::proto::{Batch, ReadRange};
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    for i in 0..3 {
        honest_append(&server.addr, &format!("e{i}"));
    }
    let (cluster, _) = layout_of(&server.addr);
    let range = |id: u64| Request {
        id,
        body: Some(request::Body::ReadRange(ReadRange { from: 0, to: 3, max_bytes: 16 << 20 })),
        ..Default::default()
    };
    let batch = |n: u64| Request {
        id: 100 + n,
        cluster_id: cluster.clone(),
        body: Some(request::Body::Batch(Batch { requests: (0..n).map(range).collect() })),
        ..Default::default()
    };
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let (id, code, message) = refusal(ask(&mut s, &batch(64)));
    assert_eq!((id, code), (164, ErrorCode::BadRequest as i32), "{message}");
    assert!(message.contains("bulk reads"), "{message}");
    // Two such reads fit, and are served.
    match ask(&mut s, &batch(2)).and_then(|r| r.body) {
        Some(response::Body::Batch(b)) => assert_eq!(b.responses.len(), 2),
        other => panic!("expected the batch's answers, got {other:?}"),
    }
}

/// The server's layout, whole.
fn full_layout(addr: &str) -> naxos_wire::Layout {
    let mut s = TcpStream::connect(addr).unwrap();
    match ask(&mut s, &get_layout()).and_then(|r| r.body) {
        Some(response::Body::Layout(l)) => l.layout.expect("a layout"),
        other => panic!("{other:?}"),
    }
}

/// One message that would once delete the log or brick the cluster for good
/// (a trim above the tail, a write far ahead, an epoch jump, a layout
/// nobody chose) is refused with a reason; nothing is lost, the log goes
/// on, and it still does after a restart.
#[test]
fn trims_writes_and_epochs_beyond_the_log_are_refused() {
    use naxos_wire::proto::{
        Batch, CommitLayout, Entry, EntryKind, LayoutPrepare, Rank, Seal, SeqBootstrap, Trim, Write,
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = dev(dir.path(), &[]);
    for i in 0..5 {
        honest_append(&server.addr, &format!("e{i}"));
    }
    let layout = full_layout(&server.addr);
    let (cluster, epoch) = (layout.cluster_id.clone(), layout.epoch);
    let at =
        |id: u64, epoch: u64, body: request::Body| Request { id, cluster_id: cluster.clone(), epoch, body: Some(body) };
    let req = |id: u64, body: request::Body| at(id, epoch, body);
    let data = |kind: EntryKind| Entry { kind: kind as i32, payload: "x".into(), ..Default::default() };
    let commit =
        |l: &naxos_wire::Layout| request::Body::CommitLayout(CommitLayout { layout: Some(Box::new(l.clone())) });
    let mut far = layout.clone();
    far.epoch = u64::MAX;
    far.sequencers = vec!["10.255.255.1:1".into()];
    let mut next = far.clone();
    next.epoch = epoch + 7;
    let mut same = far.clone();
    same.epoch = epoch;
    let mut closed = layout.clone();
    closed.epoch = epoch + 1;
    if let Some(last) = closed.segments.last_mut() {
        last.end = Some(last.start + 10);
    }
    let cases: Vec<(Request, &str)> = vec![
        (req(1, request::Body::Trim(Trim { position: 6 })), "above the log's tail"),
        (req(2, request::Body::Trim(Trim { position: 1005 })), "above the log's tail"),
        (
            req(
                3,
                request::Body::Write(Write {
                    position: 5 + 1_000_000_000_000,
                    entry: Some(data(EntryKind::Data)),
                    repair: false,
                }),
            ),
            "above the log's tail",
        ),
        (
            req(
                4,
                request::Body::Write(Write { position: 5 + 5000, entry: Some(data(EntryKind::Hole)), repair: false }),
            ),
            "above the log's tail",
        ),
        (req(5, request::Body::Seal(Seal { epoch: u64::MAX })), "ahead of every epoch"),
        (req(6, request::Body::Seal(Seal { epoch: epoch + 5 })), "ahead of every epoch"),
        (
            req(
                7,
                request::Body::LayoutPrepare(LayoutPrepare {
                    epoch: u64::MAX,
                    rank: Some(Rank { round: 1, proposer: 1 }),
                    base: None,
                }),
            ),
            "does not build on",
        ),
        (req(8, commit(&far)), "reserved"),
        (req(9, commit(&next)), "ahead of every epoch"),
        (req(10, commit(&same)), "different layout is already chosen"),
        (req(11, commit(&closed)), "last segment"),
        (
            at(12, u64::MAX, request::Body::SeqBootstrap(SeqBootstrap { tail: 5, streams: Vec::new() })),
            "ahead of every epoch",
        ),
    ];
    let mut s = TcpStream::connect(&server.addr).unwrap();
    for (r, why) in &cases {
        let (id, code, message) = refusal(ask(&mut s, r));
        assert_eq!((id, code), (r.id, ErrorCode::BadRequest as i32), "case {}: {message}", r.id);
        assert!(message.contains(why), "case {}: {message}", r.id);
    }
    // In a batch too, each refused on its own.
    let batch =
        req(20, request::Body::Batch(Batch { requests: cases.iter().take(4).map(|(r, _)| r.clone()).collect() }));
    match ask(&mut s, &batch).and_then(|r| r.body) {
        Some(response::Body::Batch(b)) => {
            for answer in b.responses {
                let (_, code, message) = refusal(Some(answer));
                assert_eq!(code, ErrorCode::BadRequest as i32, "{message}");
                assert!(message.contains("above the log's tail"), "{message}");
            }
        }
        other => panic!("expected the batch's answers, got {other:?}"),
    }
    // Nothing was lost and the log goes on, at its epoch, from its tail.
    assert_eq!(full_layout(&server.addr), layout);
    let read = |addr: &str, p: &str| {
        let (code, out, err) = run_cli(&["read", "--cluster", addr, "--timeout", "5s", p], b"");
        (code, String::from_utf8_lossy(&out).to_string(), err)
    };
    for i in 0..5 {
        let (code, out, err) = read(&server.addr, &i.to_string());
        assert_eq!((code, out), (0, format!("e{i}")), "{err}");
    }
    let (code, out, err) = run_cli(&["append", "--cluster", &server.addr, "e5"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).trim().to_string()), (0, "5".to_string()), "{err}");
    // A trim at or below the tail still works.
    let (code, _, err) = run_cli(&["trim", "--cluster", &server.addr, "3"], b"");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = read(&server.addr, "2");
    assert_ne!(code, 0, "position 2 is trimmed: {err}");
    // And after a restart.
    server.terminate();
    let data = dir.path().join("data");
    let server = Proc::start(&[
        "dev",
        "--listen",
        &server.addr,
        "--metrics-listen",
        "off",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let (code, out, err) = read(&server.addr, "3");
    assert_eq!((code, out), (0, "e3".to_string()), "{err}");
    let (code, out, err) = run_cli(&["append", "--cluster", &server.addr, "e6"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).trim().to_string()), (0, "6".to_string()), "{err}");
}

/// A buggy client's holes just ahead of the tail (inside the window a log
/// unit takes unchecked) cost an honest append new tokens, not an error
/// after its retries; further ahead they are refused.
#[test]
fn holes_written_just_ahead_of_the_tail_cost_appends_new_tokens_not_errors() {
    use naxos_wire::proto::{Batch, Entry, EntryKind, Write};
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    for i in 0..3 {
        honest_append(&server.addr, &format!("e{i}"));
    }
    let (cluster, epoch) = layout_of(&server.addr);
    let hole = |p: u64| Request {
        id: p,
        body: Some(request::Body::Write(Write {
            position: p,
            entry: Some(Entry { kind: EntryKind::Hole as i32, ..Default::default() }),
            repair: false,
        })),
        ..Default::default()
    };
    let mut s = TcpStream::connect(&server.addr).unwrap();
    for first in (3..1003).step_by(250) {
        let batch = Request {
            id: 1,
            cluster_id: cluster.clone(),
            epoch,
            body: Some(request::Body::Batch(Batch { requests: (first..first + 250).map(hole).collect() })),
        };
        match ask(&mut s, &batch).and_then(|r| r.body) {
            Some(response::Body::Batch(b)) => {
                assert!(b.responses.iter().all(|r| !matches!(r.body, Some(response::Body::Error(_)))), "{b:?}")
            }
            other => panic!("expected the batch's answers, got {other:?}"),
        }
    }
    // The next honest append loses 1,000 positions and lands after them.
    let (code, out, err) = run_cli(&["append", "--cluster", &server.addr, "--timeout", "30s", "after"], b"");
    assert_eq!((code, String::from_utf8_lossy(&out).trim().to_string()), (0, "1003".to_string()), "{err}");
    // Beyond the window, a hole is refused: no token was handed out there.
    let far = Request { cluster_id: cluster.clone(), epoch, ..hole(1004 + 2 * naxos_server::node::WRITE_WINDOW) };
    let (_, code, message) = refusal(ask(&mut s, &far));
    assert_eq!(code, ErrorCode::BadRequest as i32, "{message}");
    assert!(message.contains("above the log's tail"), "{message}");
}

/// Under a low open-file limit, idle connections cannot take the
/// descriptors the log unit needs: the server takes fewer connections than
/// `--connections-max` (refusing the rest with a reason), and once they are
/// gone it serves as before.
#[test]
fn idle_connections_cannot_take_the_log_units_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = common::Proc::start_with_files_limit(
        &["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data.to_str().unwrap()],
        256,
    );
    honest_append(&server.addr, "before");
    let idle: Vec<TcpStream> = (0..300).filter_map(|_| TcpStream::connect(&server.addr).ok()).collect();
    // Each connection is either served (it answers) or refused with a reason.
    let mut served = 0;
    for mut s in idle.iter().map(|s| s.try_clone().unwrap()) {
        match ask(&mut s, &get_layout()).map(|r| r.body) {
            Some(Some(response::Body::Layout(_))) => served += 1,
            Some(Some(response::Body::Error(e))) => {
                assert_eq!(e.code, ErrorCode::Overloaded as i32, "{e:?}");
                assert!(e.message.contains("connections"), "{e:?}");
            }
            other => panic!("neither served nor refused with a reason: {other:?}"),
        }
    }
    assert!((1..256).contains(&served), "{served} connections served under a limit of 256 files");
    let open_files = std::fs::read_dir(format!("/proc/{}/fd", server.child.id())).unwrap().count();
    assert!(open_files < 256, "{open_files} descriptors open");
    // The connections go; the log unit never took the shortage for a failed disk.
    drop(idle);
    // Wait until the server has seen them close: a new connection is served.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        if matches!(ask(&mut s, &get_layout()).and_then(|r| r.body), Some(response::Body::Layout(_))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the closed connections were never let go");
        std::thread::sleep(Duration::from_millis(20));
    }
    for i in 0..20 {
        honest_append(&server.addr, &format!("after idle connections {i}"));
    }
}

/// A line of /proc/PID/status in bytes (`VmRSS`, `VmHWM`: the peak RSS).
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field).and_then(|v| v.strip_prefix(':')))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("the status line");
    kb * 1024
}

/// A client that sends 12,000 reads of a 64 KiB entry and reads none of
/// the answers (once +747 MiB: the answers queued without bound) holds
/// the server to a bounded backlog: the server stops reading from it, an
/// honest client is served meanwhile, and every request is answered once
/// the client reads.
#[test]
fn answers_a_client_does_not_read_are_bounded() {
    use naxos_wire::proto::Read;
    const READS: u64 = 12_000;
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    let big = "x".repeat(64 << 10);
    honest_append(&server.addr, &big);
    let (cluster, epoch) = layout_of(&server.addr);
    let pid = server.child.id();
    let before = status_bytes(pid, "VmRSS");
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let mut buf = bytes::BytesMut::new();
    for id in 0..READS {
        let read =
            Request { id, cluster_id: cluster.clone(), epoch, body: Some(request::Body::Read(Read { position: 0 })) };
        frame::encode(&read, &mut buf);
    }
    // The server may stop reading before all of it arrived: write from a thread.
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&buf).is_ok());
    // Wait until the server has done what it will: its RSS stays put for a second.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut last = (status_bytes(pid, "VmRSS"), std::time::Instant::now());
    while last.1.elapsed() < Duration::from_secs(1) {
        assert!(std::time::Instant::now() < deadline, "the server's memory never stopped growing");
        std::thread::sleep(Duration::from_millis(50));
        let now = status_bytes(pid, "VmRSS");
        if now.abs_diff(last.0) > 1 << 20 {
            last = (now, std::time::Instant::now());
        }
    }
    // An honest client meanwhile: one append at a time for 2 s, its latency
    // as `naxos bench` measures it (the figure for the closing note).
    let (code, out, err) =
        run_cli(&["bench", "append", "--cluster", &server.addr, "--depth", "1", "--duration", "2", "--json"], b"");
    assert_eq!(code, 0, "the honest client was not served: {err}");
    let bench: serde_json::Value = serde_json::from_slice(&out).expect("bench prints JSON");
    assert_eq!(bench["errors"], 0, "{bench}");
    assert!(bench["ops"].as_u64().unwrap_or(0) > 0, "{bench}");
    let peak = status_bytes(pid, "VmHWM");
    let grew = peak.saturating_sub(before);
    eprintln!(
        "{READS} unread 64 KiB reads: peak RSS {} MiB (+{} MiB); an honest client meanwhile: {} appends, p50 {} us, p99 {} us",
        peak >> 20,
        grew >> 20,
        bench["ops"],
        bench["latency_us_p50"],
        bench["latency_us_p99"]
    );
    assert!(grew < 64 << 20, "unread answers grew the server by {} MiB", grew >> 20);
    // Nothing is lost: reading now, every request has its answer.
    let mut answered = 0;
    let mut data = 0;
    while answered < READS {
        match read_response(&mut s).and_then(|r| r.body) {
            Some(response::Body::Read(r)) => {
                assert_eq!(r.entry.map(|e| e.payload.len()), Some(big.len()));
                data += 1;
            }
            Some(response::Body::Error(e)) => assert_eq!(e.code, ErrorCode::Overloaded as i32, "{e:?}"),
            other => panic!("answer {answered}: {other:?}"),
        }
        answered += 1;
    }
    assert!(writer.join().unwrap(), "the server closed the connection instead of holding it back");
    assert!(data > 0, "no read was served");
    honest_append(&server.addr, "after");
}

/// A client that asks for the most positions a token request may reserve,
/// again and again (each burnt position costs readers a hole fill), is held
/// to its connection's rate: beyond a burst its requests are refused
/// `Overloaded`, and the tail moves by no more than it was granted.
#[test]
fn token_requests_beyond_a_connections_rate_are_refused() {
    use naxos_wire::proto::Token;
    const REQUESTS: u64 = 400;
    let dir = tempfile::tempdir().unwrap();
    let server = dev(dir.path(), &[]);
    honest_append(&server.addr, "before");
    let (cluster, epoch) = layout_of(&server.addr);
    let count = naxos_server::sequencer::TOKEN_COUNT_MAX;
    let mut s = TcpStream::connect(&server.addr).unwrap();
    let mut buf = bytes::BytesMut::new();
    for id in 0..REQUESTS {
        let token = Request {
            id,
            cluster_id: cluster.clone(),
            epoch,
            body: Some(request::Body::Token(Token { count, ..Default::default() })),
        };
        frame::encode(&token, &mut buf);
    }
    let started = std::time::Instant::now();
    s.write_all(&buf).unwrap();
    let (mut granted, mut refused) = (0u64, 0u64);
    for _ in 0..REQUESTS {
        match read_response(&mut s).and_then(|r| r.body) {
            Some(response::Body::Token(t)) => {
                assert_eq!(t.count, count);
                granted += 1;
            }
            Some(response::Body::Error(e)) => {
                assert_eq!(e.code, ErrorCode::Overloaded as i32, "{e:?}");
                assert!(e.message.contains("positions a second"), "{e:?}");
                refused += 1;
            }
            other => panic!("{other:?}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = naxos_server::node::TOKEN_POSITIONS_PER_S as f64;
    let allowed = ((2.0 * rate + elapsed * rate) / f64::from(count)).ceil() as u64;
    assert!(refused > 0, "{REQUESTS} requests of {count} positions in {elapsed:.2}s were all granted");
    assert!(granted <= allowed, "{granted} granted, at most {allowed} allowed in {elapsed:.2}s");
    let (code, out, err) = run_cli(&["tail", "--cluster", &server.addr], b"");
    assert_eq!(code, 0, "{err}");
    let tail: u64 = String::from_utf8_lossy(&out).trim().parse().expect("a tail");
    assert!(tail <= 1 + granted * u64::from(count), "tail {tail} after {granted} grants");
    // Other connections are not held back.
    honest_append(&server.addr, "after");
}
