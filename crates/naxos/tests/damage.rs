//! Damage to a real server's data directory (issue 12): a deleted
//! `meta.json` or segment file, or a newest segment truncated after a
//! crash, ends in a clear refusal to start, saying what is lost and where,
//! never in a node that serves its entries as holes or its trim mark and
//! sealed epoch reset; a deleted `sequencer.json` never makes the node hand
//! out positions again. (The storage crate's tests cover each file at the
//! store level: flipped, truncated, deleted.)

mod common;

use common::{ask, layout_of, run_cli, Proc};
use std::path::{Path, PathBuf};

fn dev_args(data: &Path) -> Vec<String> {
    ["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data.to_str().unwrap()]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The files named `name` (or ending so) under `dir`, recursively.
fn find(dir: &Path, matches: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(find(&path, matches));
        } else if path.file_name().and_then(|n| n.to_str()).is_some_and(matches) {
            out.push(path);
        }
    }
    out
}

/// A data directory that a dev server wrote three entries to and stopped.
fn written() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = dev_args(&data);
    let mut server = Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..3 {
        let (code, _, err) = run_cli(&["append", "--cluster", &server.addr, "--timeout", "5s", &format!("e{i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    assert!(server.terminate().success());
    (dir, data)
}

/// Starting a dev server on `data` fails; its error output.
fn refused_start(data: &Path) -> String {
    let args = dev_args(data);
    match Proc::try_start(&args.iter().map(String::as_str).collect::<Vec<_>>()) {
        Ok(server) => panic!("the server started on a damaged directory (at {})", server.addr),
        Err(err) => err,
    }
}

#[test]
fn a_deleted_meta_json_stops_the_node_with_what_is_lost() {
    let (_dir, data) = written();
    let metas = find(&data, &|n| n == "meta.json");
    assert_eq!(metas.len(), 1, "{metas:?}");
    std::fs::remove_file(&metas[0]).unwrap();
    let err = refused_start(&data);
    assert!(err.contains("meta.json is missing next to 1 segment file(s)"), "{err}");
    assert!(err.contains(&metas[0].parent().unwrap().display().to_string()), "where is not said: {err}");
}

#[test]
fn a_deleted_segment_file_stops_the_node_with_what_is_lost() {
    let (_dir, data) = written();
    let segments = find(&data, &|n| n.starts_with("seg-") && n.ends_with(".log"));
    assert_eq!(segments.len(), 1, "{segments:?}");
    std::fs::remove_file(&segments[0]).unwrap();
    let err = refused_start(&data);
    assert!(err.contains("seg-00000000000000000000.log (positions 0..65536)"), "{err}");
    assert!(err.contains("missing"), "{err}");
}

/// What the sync header of a segment file claims was synced (the newer of
/// its two slots; docs/storage.md), 0 if neither is valid.
fn claimed(segment: &Path) -> u64 {
    let bytes = std::fs::read(segment).unwrap();
    let mut best = (0u64, 0u64);
    for at in [0usize, 2048] {
        let Some(slot) = bytes.get(at..at + 32) else { continue };
        let crc = u32::from_le_bytes(slot[28..32].try_into().unwrap());
        if &slot[..8] == b"NAXSYNC1" && crc32c::crc32c(&slot[..28]) == crc {
            let seq = u64::from_le_bytes(slot[8..16].try_into().unwrap());
            let synced = u64::from_le_bytes(slot[16..24].try_into().unwrap());
            best = best.max((seq, synced));
        }
    }
    best.1
}

#[test]
fn a_killed_servers_newest_segment_truncated_below_what_was_synced_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = dev_args(&data);
    let mut server = Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    for i in 0..3 {
        let (code, _, err) =
            run_cli(&["append", "--cluster", &server.addr, "--timeout", "5s", &format!("entry-{i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    let segments = find(&data, &|n| n.starts_with("seg-") && n.ends_with(".log"));
    assert_eq!(segments.len(), 1, "{segments:?}");
    let log = &segments[0];
    // The log unit claims what it synced in the segment's header once it
    // is idle: wait for the claim to cover the last entry, then crash.
    let last_end = |bytes: &[u8]| bytes.windows(7).rposition(|w| w == b"entry-2").map(|at| (at + 7) as u64);
    let end = last_end(&std::fs::read(log).unwrap()).expect("the last entry is in the file");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while claimed(log) < end {
        assert!(std::time::Instant::now() < deadline, "the header never claimed the synced entries");
        std::thread::yield_now();
    }
    server.kill9();
    assert!(find(&data, &|n| n.ends_with(".idx")).is_empty(), "a killed server wrote no index file");
    std::fs::OpenOptions::new().write(true).open(log).unwrap().set_len(end - 3).unwrap();
    let err = refused_start(&data);
    assert!(err.contains("seg-00000000000000000000.log was truncated"), "{err}");
    assert!(err.contains("bytes were synced"), "{err}");
}

#[test]
fn a_deleted_sequencer_json_does_not_hand_out_positions_again() {
    use naxos_wire::proto::{request, response, Request, Token};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let args = dev_args(&data);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let token = |addr: &str, count: u32| -> u64 {
        let (cluster, epoch) = layout_of(addr);
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let req = Request {
            id: 1,
            cluster_id: cluster,
            epoch,
            body: Some(request::Body::Token(Token { count, ..Default::default() })),
        };
        // Until the sequencer has recovered its tail (it answers Unavailable meanwhile).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match ask(&mut s, &req).and_then(|r| r.body) {
                Some(response::Body::Token(t)) => return t.start,
                Some(response::Body::Error(e))
                    if e.code == naxos_wire::ErrorCode::Unavailable as i32 && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => panic!("{other:?}"),
            }
        }
    };
    let mut server = Proc::start(&args);
    // Positions 0..1000 handed out to a writer that has not written them yet.
    let first = token(&server.addr, 1000);
    server.kill9();
    let files = find(&data, &|n| n == "sequencer.json");
    assert_eq!(files.len(), 1, "{files:?}");
    std::fs::remove_file(&files[0]).unwrap();
    // Again at the address the cluster's layout names.
    let again: Vec<&str> = args.iter().map(|a| if *a == "127.0.0.1:0" { server.addr.as_str() } else { a }).collect();
    let server = Proc::start(&again);
    let next = token(&server.addr, 1);
    assert!(next >= first + 1000, "position {next} was handed out again (the writer holds {first}..{})", first + 1000);
}

/// What one damaged file must end in.
#[derive(Debug)]
enum Expect {
    /// A refusal to start whose message contains this.
    Refused(&'static str),
    /// A start with every entry intact (the file is rebuilt or not needed).
    Intact,
    /// A start where entry 1 reads as corrupted and the others are intact.
    EntryCorrupted,
}

/// Damages `path` in the way `how` names.
fn damage(path: &Path, how: &str) {
    let bytes = std::fs::read(path).unwrap();
    match how {
        "flipped" => {
            // A byte of the content: entry 1's payload in a segment file, the
            // first digit before the checksum elsewhere (in a JSON file a
            // flipped digit leaves valid JSON: its checksum must catch it),
            // else the middle byte of the content.
            let at = match bytes.windows(7).position(|w| w == b"entry-1") {
                Some(at) => at + 6,
                None => {
                    let content = bytes.windows(8).position(|w| w == b"\"crc32c\"").unwrap_or(bytes.len());
                    bytes[..content].iter().position(|b| b.is_ascii_digit()).unwrap_or(content / 2)
                }
            };
            let mut b = bytes;
            b[at] ^= 0x01;
            std::fs::write(path, b).unwrap();
        }
        "truncated" => {
            // Into the records of a segment file (past them is preallocated space).
            let end = bytes.windows(7).rposition(|w| w == b"entry-2").map_or(bytes.len(), |at| at + 7);
            std::fs::OpenOptions::new().write(true).open(path).unwrap().set_len(end as u64 / 2).unwrap();
        }
        "deleted" => std::fs::remove_file(path).unwrap(),
        "unreadable" => {
            // Permissions do not stop root (CI): a directory in its place does.
            std::fs::remove_file(path).unwrap();
            std::fs::create_dir(path).unwrap();
        }
        other => panic!("no damage {other}"),
    }
}

/// Reads position `p` through the CLI: (exit code, stdout, stderr).
fn read_at(addr: &str, p: u64) -> (i32, String, String) {
    let (code, out, err) = run_cli(&["read", "--cluster", addr, "--timeout", "5s", &p.to_string()], b"");
    (code, String::from_utf8_lossy(&out).trim().to_string(), err)
}

#[test]
fn every_file_of_a_data_directory_flipped_truncated_deleted_or_unreadable_is_refused_or_repaired() {
    use Expect::*;
    // (file, [flipped, truncated, deleted, unreadable])
    let cases: &[(&str, [Expect; 4])] = &[
        (
            "layout.json",
            [
                Refused("layout.json"),
                Refused("layout.json"),
                Refused("already belongs to cluster"),
                Refused("layout.json"),
            ],
        ),
        // Deleted: the node abstains from the next epoch's vote (it may have voted there).
        ("acceptor.json", [Refused("acceptor"), Refused("acceptor"), Intact, Refused("acceptor.json")]),
        ("sequencer.json", [Refused("sequencer.json"), Refused("sequencer.json"), Intact, Refused("token ceiling")]),
        (
            "log/format.json",
            [Refused("format.json"), Refused("format.json"), Refused("format.json is missing"), Refused("format.json")],
        ),
        (
            "log/meta.json",
            [Refused("meta.json"), Refused("meta.json"), Refused("meta.json is missing"), Refused("meta.json")],
        ),
        (
            "log/seg-00000000000000000000.log",
            [EntryCorrupted, Refused("was truncated"), Refused("missing"), Refused("seg-00000000000000000000.log")],
        ),
        ("log/seg-00000000000000000000.idx", [Intact, Intact, Intact, Refused("seg-00000000000000000000.idx")]),
    ];
    let base = tempfile::tempdir().unwrap();
    let data = base.path().join("data");
    let args = dev_args(&data);
    let mut server = Proc::start(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let addr = server.addr.clone();
    for i in 0..3 {
        let (code, _, err) = run_cli(&["append", "--cluster", &addr, "--timeout", "5s", &format!("entry-{i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    assert!(server.terminate().success());
    let mut failures = Vec::new();
    for (file, expects) in cases {
        for (how, expect) in ["flipped", "truncated", "deleted", "unreadable"].iter().zip(expects) {
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join("data");
            copy_dir(&data, &copy);
            damage(&copy.join(file), how);
            // At the address the layout names.
            let mut args = dev_args(&copy);
            args.iter_mut().filter(|a| *a == "127.0.0.1:0").for_each(|a| *a = addr.clone());
            let started = Proc::try_start(&args.iter().map(String::as_str).collect::<Vec<_>>());
            let case = format!("{file} {how}");
            match (expect, started) {
                (Refused(what), Err(err)) if err.contains(what) => {}
                (Refused(what), Err(err)) => failures.push(format!("{case}: refused without naming {what:?}: {err}")),
                (Refused(_), Ok(s)) => failures.push(format!("{case}: started at {} instead of refusing", s.addr)),
                (Intact | EntryCorrupted, Err(err)) => failures.push(format!("{case}: refused to start: {err}")),
                (Intact | EntryCorrupted, Ok(s)) => {
                    for p in 0..3 {
                        let (code, out, err) = read_at(&s.addr, p);
                        let corrupted = matches!(expect, EntryCorrupted) && p == 1;
                        if corrupted && (code == 0 || !err.contains("corrupt")) {
                            failures.push(format!("{case}: entry {p} read as {out:?} ({err}), not as corrupted"));
                        } else if !corrupted && (code, out.as_str()) != (0, format!("entry-{p}").as_str()) {
                            failures.push(format!("{case}: entry {p} read as {out:?} ({err})"));
                        }
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Copies directory `from` to `to`, recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}
