//! Damage to a real server's data directory (issue 12): a deleted
//! `meta.json` or segment file ends in a clear refusal to start, saying
//! what is lost and where, never in a node that serves its entries as
//! holes or its trim mark and sealed epoch reset. (The storage crate's
//! tests cover each file at the store level: flipped, truncated, deleted.)

mod common;

use common::{run_cli, Proc};
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
    let (code, _, err) = run_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), b"");
    assert_ne!(code, 0, "the server started on a damaged directory: {err}");
    err
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
