//! What an operator watches: the Prometheus metrics a real server serves
//! over HTTP, scraped as Prometheus would, before and after some load.

mod common;

use common::{run_cli, Proc};
use std::collections::HashMap;
use std::io::{Read, Write};

/// GETs `path` from `addr` over plain HTTP/1.0; (status code, body).
fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("the metrics listener accepts");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).expect("an HTTP answer");
    let (head, body) = raw.split_once("\r\n\r\n").expect("headers end");
    let status = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("a status line");
    (status, body.to_string())
}

/// The samples of an exposition text: `name{labels}` -> value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn value(s: &HashMap<String, f64>, key: &str) -> f64 {
    *s.get(key).unwrap_or_else(|| panic!("no sample {key} in the scrape"))
}

#[test]
fn the_metrics_a_server_serves_move_with_its_load() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let dev = Proc::start(&[
        "dev",
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let line = dev.line(|l| l.starts_with("metrics: ")).expect("naxos dev prints the metrics URL");
    let url = line.trim_start_matches("metrics: ");
    let host = url.trim_start_matches("http://").trim_end_matches("/metrics").to_string();

    let (status, text) = get(&host, "/metrics");
    assert_eq!(status, 200);
    assert!(text.contains("# HELP naxos_appends_total"), "described metrics: {text}");
    let before = samples(&text);

    let appends = 25;
    for i in 0..appends {
        let (code, _, err) = run_cli(&["append", "--cluster", &dev.addr, &format!("entry {i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = run_cli(&["read", "--cluster", &dev.addr, "3"], b"");
    assert_eq!(code, 0, "{err}");
    // An error, counted by its code: a position far above the tail is unwritten.
    let (code, _, _) = run_cli(&["read", "--cluster", &dev.addr, "1000000"], b"");
    assert_ne!(code, 0);

    // The gauges are sampled every second: wait for the first sample after
    // the bootstrap (the chain count turns 1).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let after = loop {
        let s = samples(&get(&host, "/metrics").1);
        if s.get("naxos_chains") == Some(&1.0) || std::time::Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let moved = |key: &str| value(&after, key) - before.get(key).copied().unwrap_or(0.0);
    assert!(moved("naxos_appends_total") >= appends as f64, "appends: {}", moved("naxos_appends_total"));
    assert!(moved("naxos_tokens_total") >= appends as f64);
    assert!(moved("naxos_appended_bytes_total") >= (appends * "entry 0".len()) as f64);
    assert!(moved("naxos_reads_total") >= 1.0);
    assert!(moved("naxos_fsync_duration_seconds_count") >= 1.0, "every append was made durable by a sync");
    let appended_by = ["append", "write"]
        .iter()
        .map(|k| {
            let role = if *k == "append" { "sequencer" } else { "logunit" };
            after.get(&format!("naxos_requests_total{{kind=\"{k}\",role=\"{role}\"}}")).copied().unwrap_or(0.0)
        })
        .sum::<f64>();
    assert!(appended_by >= appends as f64, "append requests counted: {appended_by}");
    let errors: f64 = after.iter().filter(|(k, _)| k.starts_with("naxos_errors_total{")).map(|(_, v)| v).sum();
    assert!(errors >= 1.0, "the read of an unwritten position counts as an error");
    assert_eq!(value(&after, "naxos_chains"), 1.0, "the dev node is the one replica of the one chain");
    assert!(value(&after, "naxos_disk_total_bytes") > 0.0);

    let (status, _) = get(&host, "/nothing-here");
    assert_eq!(status, 404);
}
