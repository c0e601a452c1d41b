//! What an operator watches: the Prometheus metrics a real server serves
//! over HTTP, scraped as Prometheus would, before and after some load; and
//! the status page, loaded in a real headless browser (Debian's chromium).

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

/// The browser the status page is checked in: Debian's chromium, which
/// `.ci/run` installs (the test fails without it rather than skip).
fn chromium() -> &'static str {
    for c in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if std::path::Path::new(c).exists() {
            return c;
        }
    }
    panic!("chromium is not installed: run ./.ci/run (it installs Debian's chromium) or apt-get install chromium");
}

/// The DOM of `url` as headless chromium renders it.
fn rendered(url: &str) -> String {
    let profile = tempfile::tempdir().expect("a browser profile directory");
    let out = std::process::Command::new(chromium())
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--dump-dom"])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url)
        .output()
        .expect("chromium runs");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the table row (`<tr>`) of `dom` that names `addr`.
fn row_of<'a>(dom: &'a str, table: &str, addr: &str) -> &'a str {
    let start = dom.find(&format!("id=\"{table}\"")).unwrap_or_else(|| panic!("no table {table} in {dom}"));
    let rest = &dom[start..];
    let rest = &rest[..rest.find("</table>").unwrap_or(rest.len())];
    rest.split("<tr>")
        .find(|r| r.contains(&format!("<td>{addr}</td>")))
        .unwrap_or_else(|| panic!("{addr} not in {table}: {rest}"))
}

/// Three servers with the management role, one killed with -9: the status
/// page of another, loaded in a real browser, shows the layout, the dead
/// node taken out, the others healthy, the chart and the reconfiguration
/// with its reason.
#[test]
fn the_status_page_shows_the_cluster_in_a_browser() {
    // Before any server starts: no browser, no test.
    chromium();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("temp dir")).collect();
    let mut procs: Vec<Proc> = dirs
        .iter()
        .map(|d| {
            Proc::start(&[
                "server",
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--data-dir",
                d.path().to_str().expect("utf-8 path"),
                "--heartbeat-interval",
                "50ms",
                "--failure-timeout",
                "500ms",
            ])
        })
        .collect();
    let pages: Vec<String> = procs
        .iter()
        .map(|p| {
            let l = p.line(|l| l.starts_with("metrics: ")).expect("the server prints its metrics URL");
            l.trim_start_matches("metrics: ").trim_end_matches("metrics").to_string()
        })
        .collect();
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let (code, _, err) = run_cli(&["bootstrap", "--cluster", &addrs[0], "--log-units", &addrs.join(",")], b"");
    assert_eq!(code, 0, "bootstrap: {err}");
    for i in 0..20 {
        let (code, _, err) = run_cli(&["append", "--cluster", &addrs[0], &format!("e{i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    let dom = rendered(&pages[0]);
    assert!(dom.contains(&format!("Naxos — {}", addrs[0])), "title: {dom}");
    for a in &addrs {
        assert!(row_of(&dom, "nodes", a).contains("class=\"up\""), "{a} is healthy before the kill: {dom}");
    }
    assert!(dom.contains("<svg id=\"chart\""), "the chart is drawn");
    assert!(dom.contains("operator: bootstrap"), "the bootstrap is the first reconfiguration: {dom}");

    // The last node dies; the managers take it out with a recorded reason.
    let dead = addrs[2].clone();
    procs[2].kill9();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let client = rt.block_on(naxos_client::Client::connect(naxos_client::Config::new(addrs[..2].iter().cloned())));
    let client = client.expect("client connects");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let layout = rt.block_on(client.refresh_layout());
        if layout.is_ok_and(|l| l.away.iter().any(|a| a.addr == dead)) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the dead node was not taken out within 30 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let dom = rendered(&pages[0]);
    assert!(row_of(&dom, "nodes", &dead).contains("away: taken out at epoch"), "{dom}");
    assert!(row_of(&dom, "nodes", &addrs[1]).contains("class=\"up\""), "{dom}");
    let history = &dom[dom.find("id=\"history\"").expect("a history table")..];
    assert!(history.contains(&dead), "the reason names the dead node: {history}");
    let segments = &dom[dom.find("id=\"segments\"").expect("a segments table")..];
    assert!(segments.contains("(sealed)") && segments.contains("(open)"), "the kill sealed a segment: {segments}");
}

/// `naxos server --config FILE` with `env`: (exit code, stderr) of a run
/// that must end on its own (a configuration error).
fn server_fails(config: &std::path::Path, env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
        .args(["server", "--config", config.to_str().expect("utf-8 path")])
        .envs(env.iter().copied())
        .env_remove("NAXOS_ROLES")
        .output()
        .expect("naxos runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The config file sets the flags; a NAXOS_* variable beats the file and a
/// flag beats the variable; an unknown key stops the server and is named.
#[test]
fn a_config_file_sets_server_flags_below_the_environment_and_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("from-the-file");
    let config = dir.path().join("naxos.toml");
    let body = format!(
        "# a test config\nlisten = \"127.0.0.1:0\"\nmetrics-listen = \"127.0.0.1:0\"\ndata-dir = \"{}\"\nroles = \"bogus\"\n",
        data.display()
    );
    std::fs::write(&config, &body).unwrap();
    // The file's roles are read (and refused, as a usage error).
    let (code, err) = server_fails(&config, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown role 'bogus'"), "{err}");

    // The environment beats the file; the rest of the file still applies.
    let cfg = config.to_str().unwrap();
    let all = "logunit,sequencer,layout,management";
    let server = Proc::start_with(&["server", "--config", cfg], &[("NAXOS_ROLES", all)]);
    assert!(server.line(|l| l.starts_with("metrics: ")).is_some(), "the file's metrics-listen applies");
    assert!(data.join("log").is_dir(), "the file's data-dir is used");
    drop(server);

    // A flag beats the environment.
    let (code, err) = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
            .args(["server", "--config", cfg, "--roles", "nonsense"])
            .env("NAXOS_ROLES", all)
            .output()
            .expect("naxos runs");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown role 'nonsense'"), "{err}");

    // An unknown key is named.
    std::fs::write(&config, format!("{body}heartbeat-intervall = \"50ms\"\n")).unwrap();
    let (code, err) = server_fails(&config, &[("NAXOS_ROLES", all)]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("heartbeat-intervall"), "{err}");
}

/// Starts `naxos dev ARGS` with stderr into a file; returns the process
/// (address read from stdout) and the file's path.
fn dev_logging_to_file(dir: &std::path::Path, extra: &[&str]) -> (std::process::Child, String, std::path::PathBuf) {
    use std::io::BufRead;
    let log = dir.join("stderr.log");
    let data = dir.join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
        .args(["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data.to_str().unwrap()])
        .args(extra)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("naxos dev starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    let addr = first.split_whitespace().find(|w| w.parse::<std::net::SocketAddr>().is_ok()).unwrap_or_default();
    // Keep reading what else it prints, as a terminal would.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr.to_string(), log)
}

/// Logs written to a file carry no colour codes; `--log-format json`
/// writes one JSON object a line.
#[test]
fn server_logs_off_a_terminal_are_plain_or_json() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, addr, log) = dev_logging_to_file(dir.path(), &["--log-format", format]);
        assert!(!addr.is_empty(), "naxos dev printed its address");
        let (code, _, err) = run_cli(&["append", "--cluster", &addr, "x"], b"");
        assert_eq!(code, 0, "{err}");
        let _ = child.kill();
        let _ = child.wait();
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.lines().count() >= 2, "{format}: some log lines: {text}");
        assert!(!text.contains('\u{1b}'), "{format}: escape codes in a log file: {text:?}");
        if format == "json" {
            for line in text.lines() {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}\nin {text:?}"));
                assert!(v["level"].is_string() && v["fields"].is_object(), "{line}");
            }
        }
    }
}

/// A bench whose operations fail (the server dies under it) says how many
/// failed and exits non-zero.
#[test]
fn a_bench_with_failed_operations_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (mut dev, addr, _) = dev_logging_to_file(dir.path(), &[]);
    let bench = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
        .args(["bench", "append", "--cluster", &addr, "--duration", "4", "--depth", "4", "--timeout", "300ms"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the bench starts");
    // Kill the server once the bench has appended something.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (code, out, _) = run_cli(&["tail", "--cluster", &addr], b"");
        if code == 0 && String::from_utf8_lossy(&out).trim().parse::<u64>().unwrap_or(0) > 100 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the bench appended nothing");
    }
    let _ = dev.kill();
    let _ = dev.wait();
    let out = bench.wait_with_output().expect("the bench ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains(" ok, ") && stderr.contains(" errors"), "{stderr}");
}

/// `naxos dev | head -1`: a server whose stdout is closed goes on serving
/// (printing to it used to panic the process).
#[test]
fn a_server_whose_stdout_is_closed_goes_on_serving() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
        .args(["dev", "--listen", "127.0.0.1:0", "--metrics-listen", "off", "--data-dir", data.to_str().unwrap()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("naxos dev starts");
    let first = {
        let stdout = child.stdout.take().unwrap();
        std::io::BufReader::new(stdout).lines().next().and_then(Result::ok).unwrap_or_default()
        // stdout is closed here, as `head -1` would.
    };
    let addr = first.split_whitespace().find(|w| w.parse::<std::net::SocketAddr>().is_ok()).unwrap_or_default();
    for i in 0..3 {
        let (code, _, err) = run_cli(&["append", "--cluster", addr, &format!("after {i}")], b"");
        assert_eq!(code, 0, "{err}");
    }
    assert!(child.try_wait().unwrap().is_none(), "naxos dev exited");
    let _ = child.kill();
    let _ = child.wait();
}
