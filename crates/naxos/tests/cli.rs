//! The `naxos` binary as a user drives it: `naxos dev`, then the client
//! commands, byte-exact payloads through stdin and stdout, JSON output, and the
//! documented exit codes.

mod common;

use common::{run_cli, Proc};
use naxos_client::{Client, Config};

/// Runs a client command against `addr` (`--cluster` goes after the subcommand).
fn cli(addr: &str, args: &[&str]) -> (i32, Vec<u8>, String) {
    let (sub, rest) = args.split_first().expect("a subcommand");
    let mut v: Vec<&str> = vec![sub];
    if *sub == "stream" {
        v.push(rest[0]);
        v.extend(["--cluster", addr]);
        v.extend_from_slice(&rest[1..]);
    } else {
        v.extend(["--cluster", addr]);
        v.extend_from_slice(rest);
    }
    run_cli(&v, b"")
}

fn cli_stdin(addr: &str, args: &[&str], stdin: &[u8]) -> (i32, Vec<u8>, String) {
    let (sub, rest) = args.split_first().expect("a subcommand");
    let mut v: Vec<&str> = vec![sub, "--cluster", addr];
    v.extend_from_slice(rest);
    run_cli(&v, stdin)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

#[test]
fn the_cli_drives_a_dev_cluster_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data_dir = data_dir.to_str().unwrap();
    let mut dev = Proc::start(&["dev", "--listen", "127.0.0.1:0", "--data-dir", data_dir]);
    let addr = dev.addr.clone();

    let (code, out, err) = cli(&addr, &["append", "hello, log"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(text(&out), "0");

    // Binary payload through stdin and back out of stdout, byte for byte.
    let binary: Vec<u8> = (0..=255u8).chain([0, 0, 255, 10, 13]).collect();
    let (code, out, err) = cli_stdin(&addr, &["append"], &binary);
    assert_eq!(code, 0, "{err}");
    let p = text(&out);
    assert_eq!(p, "1");
    let (code, out, _) = cli(&addr, &["read", &p]);
    assert_eq!(code, 0);
    assert_eq!(out, binary);

    let (code, out, _) = cli(&addr, &["tail"]);
    assert_eq!((code, text(&out)), (0, "2".to_string()));
    let (code, out, _) = run_cli(&["--json", "tail", "--cluster", &addr], b"");
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["tail"], 2);

    // Unwritten: exit 5, and stderr says so.
    let (code, _, err) = cli(&addr, &["read", "50"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("unwritten"), "{err}");

    // A hole: reserve a position without writing it, fill it, read it.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let hole = rt.block_on(async {
        let c = Client::connect(Config::new([addr.clone()])).await.unwrap();
        c.reserve(1).await.unwrap()
    });
    let (code, _, err) = cli(&addr, &["fill", &hole.to_string()]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&addr, &["read", &hole.to_string()]);
    assert_eq!((code, out.len()), (3, 0), "{err}");
    assert!(err.contains("hole"), "{err}");
    // Filling a written position fails and changes nothing.
    let (code, _, err) = cli(&addr, &["fill", "0"]);
    assert_eq!(code, 7, "{err}");
    let (_, out, _) = cli(&addr, &["read", "0"]);
    assert_eq!(out, b"hello, log");

    // Streams.
    let (code, _, _) = cli(&addr, &["append", "--stream", "orders", "order one"]);
    assert_eq!(code, 0);
    cli(&addr, &["append", "--stream", "other", "not an order"]);
    let (code, _, _) = cli(&addr, &["append", "--stream", "orders", "--stream", "audit", "order two"]);
    assert_eq!(code, 0);
    let (code, out, err) = cli(&addr, &["stream", "read", "orders"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = text(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let data: Vec<&str> = lines.iter().map(|l| l["data"].as_str().unwrap()).collect();
    assert_eq!(data, ["order one", "order two"]);

    // Scan: JSON lines, UTF-8 as data, the rest as data_b64, holes marked.
    let (code, out, _) = cli(&addr, &["scan"]);
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = text(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 6);
    assert_eq!(lines[0]["data"], "hello, log");
    assert!(lines[1]["data_b64"].is_string());
    assert_eq!(lines[hole.0 as usize]["hole"], true);
    let (_, out, _) = cli(&addr, &["scan", "--from", "4", "--to", "5"]);
    assert_eq!(text(&out).lines().count(), 1);

    // Layout and status.
    let (code, out, _) = cli(&addr, &["layout", "--json"]);
    assert_eq!(code, 0);
    let layout: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(layout["sequencers"][0], addr.as_str());
    let (code, out, _) = cli(&addr, &["status"]);
    assert_eq!(code, 0);
    assert!(text(&out).contains(&addr));

    // Trim: below the mark reads say trimmed (exit 4).
    let (code, _, _) = cli(&addr, &["trim", "1"]);
    assert_eq!(code, 0);
    let (code, _, err) = cli(&addr, &["read", "0"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("trimmed"));

    // Data survives a restart on the same address.
    assert!(dev.terminate().success());
    let dev2 = Proc::start(&["dev", "--listen", &addr, "--data-dir", data_dir]);
    let (code, out, err) = cli(&dev2.addr, &["read", "1"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, binary);
    let (_, out, _) = cli(&dev2.addr, &["append", "after restart"]);
    assert_eq!(text(&out), "6");
}

#[test]
fn usage_errors_and_an_unreachable_cluster_have_their_exit_codes() {
    let (code, _, _) = run_cli(&["read", "not-a-number"], b"");
    assert_eq!(code, 2);
    let (code, _, err) = run_cli(&["tail", "--cluster", "127.0.0.1:1"], b"");
    assert_eq!(code, 6, "{err}");
    let (code, out, _) = run_cli(&["--help"], b"");
    assert_eq!(code, 0);
    let help = String::from_utf8(out).unwrap();
    for needle in ["Exit codes", "hole", "trimmed", "unwritten", "unavailable", "dev", "bench"] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
    let (code, out, _) = run_cli(&["server", "--help"], b"");
    assert_eq!(code, 0);
    assert!(String::from_utf8(out).unwrap().contains("unsafe-no-fsync"));

    // Usage errors exit 2, as JSON with --json; each cause is printed once.
    let (code, _, err) = run_cli(&["server", "--listen", "127.0.0.1:99999", "--data-dir", "/nonexistent"], b"");
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["tail", "--cluster", "nonsense"], b"");
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["--json", "tail", "--cluster", "nonsense"], b"");
    assert_eq!(code, 2, "{err}");
    let v: serde_json::Value = serde_json::from_str(err.trim()).unwrap_or_else(|e| panic!("{err:?}: {e}"));
    assert_eq!((v["kind"].as_str(), v["exit_code"].as_i64()), (Some("usage"), Some(2)), "{v}");
    let (code, _, err) = run_cli(&["server", "--roles", "bogus", "--data-dir", "/nonexistent"], b"");
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run_cli(&["scan", "--from", "10", "--to", "5"], b"");
    assert_eq!(code, 2, "{err}");
    let file = tempfile::NamedTempFile::new().unwrap();
    let (code, _, err) = run_cli(&["dev", "--listen", "127.0.0.1:0", "--data-dir", file.path().to_str().unwrap()], b"");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is a file, not a directory"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");

    // --timeout bounds the wait for a node that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let (code, _, err) = run_cli(&["tail", "--cluster", &addr, "--timeout", "300ms"], b"");
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("within 300ms"), "{err}");
    drop(silent);

    // Completions and the man page come from the same definitions.
    for (shell, needle) in [("bash", "complete -F"), ("zsh", "#compdef naxos"), ("fish", "complete -c naxos")] {
        let (code, out, err) = run_cli(&["completions", shell], b"");
        assert_eq!(code, 0, "{err}");
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains(needle) && script.contains("reconfigure"), "{shell}: {script}");
    }
    let (code, out, _) = run_cli(&["man"], b"");
    assert_eq!(code, 0);
    let page = String::from_utf8(out).unwrap();
    assert!(page.contains(".TH naxos") && page.contains("Exit codes"), "{page}");
}

/// `read --no-fill` reports a position a writer holds instead of filling
/// it; `scan` and `stream read` start at the trim mark by default.
#[test]
fn reads_that_do_not_fill_and_scans_from_the_trim_mark() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let dev = Proc::start(&["dev", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()]);
    let addr = dev.addr.clone();
    for i in 0..5 {
        let (code, _, err) = cli(&addr, &["append", "--stream", "s", &format!("e{i}")]);
        assert_eq!(code, 0, "{err}");
    }
    // A position handed out and never written (a writer that died).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let held = rt.block_on(async {
        let client = Client::connect(Config::new([addr.clone()])).await.unwrap();
        client.reserve(1).await.unwrap()
    });
    let p = held.0.to_string();
    let (code, _, err) = cli(&addr, &["read", "--no-fill", &p]);
    assert_eq!(code, 5, "unwritten, and left alone: {err}");
    let (code, _, err) = cli(&addr, &["read", &p]);
    assert_eq!(code, 3, "a plain read fills the dead writer's position: {err}");
    let (code, _, err) = cli(&addr, &["read", "--no-fill", &p]);
    assert_eq!(code, 3, "the hole is there for good: {err}");

    let (code, _, err) = cli(&addr, &["trim", "3"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = cli(&addr, &["scan"]);
    assert_eq!(code, 0, "{err}");
    let first: serde_json::Value = serde_json::from_str(text(&out).lines().next().unwrap()).unwrap();
    assert_eq!(first["position"], 3, "{}", text(&out));
    let (code, out, err) = cli(&addr, &["stream", "read", "s"]);
    assert_eq!(code, 0, "{err}");
    let positions: Vec<u64> = text(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["position"].as_u64().unwrap())
        .collect();
    assert_eq!(positions, vec![3, 4]);

    // Progress bars are for terminals: piped, verify and scan print none.
    let (code, _, err) = cli(&addr, &["verify"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err2) = cli(&addr, &["scan"]);
    assert_eq!(code, 0, "{err2}");
    assert!(!err.contains('\u{1b}') && !err2.contains('\u{1b}'), "escape codes off a terminal: {err:?} {err2:?}");
}

/// A `naxos ... --follow` process whose stdout lines arrive on a channel;
/// killed when dropped.
struct Follower {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Follower {
    fn start(args: &[&str]) -> Follower {
        use std::io::BufRead;
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_naxos"))
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("naxos runs");
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    /// The next line as JSON (a hung follower fails the test after 20 s).
    fn next(&self) -> serde_json::Value {
        let line = self.lines.recv_timeout(std::time::Duration::from_secs(20)).expect("a line within 20 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn following_a_stream_and_the_log_prints_entries_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let dev = Proc::start(&["dev", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()]);
    let addr = dev.addr.clone();
    cli(&addr, &["append", "--stream", "orders", "order 0"]);
    cli(&addr, &["append", "--stream", "other", "not an order"]);
    let stream = Follower::start(&["stream", "read", "orders", "--cluster", &addr, "--follow"]);
    let log = Follower::start(&["scan", "--cluster", &addr, "--from", "1", "--follow"]);
    assert_eq!(stream.next()["data"], "order 0");
    assert_eq!(log.next()["data"], "not an order");
    // Entries appended after they started arrive, each in log order.
    for i in 1..4 {
        let (code, out, err) = cli(&addr, &["append", "--stream", "orders", &format!("order {i}")]);
        assert_eq!(code, 0, "{err}");
        cli(&addr, &["append", "--stream", "other", "still not an order"]);
        let position: u64 = text(&out).parse().unwrap();
        let got = stream.next();
        assert_eq!((got["position"].as_u64(), got["data"].as_str()), (Some(position), Some(&*format!("order {i}"))));
        assert_eq!(log.next()["data"], format!("order {i}"));
        assert_eq!(log.next()["data"], "still not an order");
    }
}

#[test]
fn maps_counters_queues_and_transactions_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let dev = Proc::start(&["dev", "--listen", "127.0.0.1:0", "--data-dir", data_dir.to_str().unwrap()]);
    let addr = dev.addr.as_str();
    let run = |args: &[&str], stdin: &[u8]| {
        let mut v = vec![args[0], "--cluster", addr];
        v.extend_from_slice(&args[1..]);
        run_cli(&v, stdin)
    };
    let ok = |args: &[&str]| {
        let (code, out, err) = run(args, b"");
        assert_eq!(code, 0, "naxos {args:?}: {err}");
        text(&out)
    };
    // Map: put, get (bytes as written), list, delete; a missing key is exit 10.
    ok(&["map", "config", "put", "region", "eu-west"]);
    ok(&["map", "config", "put", "zone", "b"]);
    assert_eq!(ok(&["map", "config", "get", "region"]), "eu-west");
    assert_eq!(ok(&["map", "config", "list"]), "region\teu-west\nzone\tb");
    let (code, out, _) = run(&["map", "config", "list", "--json"], b"");
    assert_eq!(code, 0);
    let lines: Vec<serde_json::Value> = text(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines[1], serde_json::json!({"key": "zone", "value": "b"}));
    ok(&["map", "config", "delete", "zone"]);
    assert_eq!(run(&["map", "config", "get", "zone"], b"").0, 10);
    // cas: only when the value is the expected one (else exit 11, nothing changed).
    assert_eq!(run(&["map", "config", "cas", "region", "us-east", "ap-south"], b"").0, 11);
    ok(&["map", "config", "cas", "region", "eu-west", "us-east"]);
    ok(&["map", "config", "cas", "--if-absent", "owner", "me"]);
    assert_eq!(run(&["map", "config", "cas", "--if-absent", "owner", "you"], b"").0, 11);
    assert_eq!(ok(&["map", "config", "get", "owner"]), "me");
    // Counter.
    ok(&["counter", "hits", "add", "5"]);
    ok(&["counter", "hits", "add", "-2"]);
    assert_eq!(ok(&["counter", "hits", "get"]), "3");
    // Queue: FIFO; popping an empty queue is exit 10.
    ok(&["queue", "jobs", "push", "first"]);
    ok(&["queue", "jobs", "push", "second"]);
    assert_eq!(ok(&["queue", "jobs", "len"]), "2");
    assert_eq!(ok(&["queue", "jobs", "pop"]), "first");
    assert_eq!(ok(&["queue", "jobs", "pop"]), "second");
    assert_eq!(run(&["queue", "jobs", "pop"], b"").0, 10);
    // txn: the comparisons decide which branch is applied, atomically.
    let req = br#"{"if": [{"map": "config", "key": "region", "equals": "us-east"}, {"map": "config", "key": "gone", "absent": true}],
                  "then": [{"map": "config", "key": "region", "put": "moved"}, {"map": "accounts", "key": "a", "put": "1"}],
                  "else": [{"map": "config", "key": "failed", "put": "yes"}]}"#;
    let (code, out, err) = run(&["txn"], req);
    assert_eq!(code, 0, "{err}");
    let answer: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(answer["succeeded"], true);
    assert!(answer["position"].is_u64(), "{answer}");
    assert_eq!(ok(&["map", "config", "get", "region"]), "moved");
    assert_eq!(ok(&["map", "accounts", "get", "a"]), "1");
    let (_, out, _) = run(&["txn"], req);
    let answer: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert_eq!(answer["succeeded"], false, "region is no longer us-east");
    assert_eq!(ok(&["map", "config", "get", "failed"]), "yes");
    // Checkpoint everything and trim below it: every object still reads back.
    let (code, out, err) = run(&["checkpoint", "--behind", "0", "--trim", "--json"], b"");
    assert_eq!(code, 0, "{err}");
    let round: serde_json::Value = serde_json::from_str(&text(&out)).unwrap();
    assert!(round["trimmed_to"].as_u64().unwrap() > 0, "{round}");
    assert_eq!(ok(&["map", "config", "get", "region"]), "moved");
    assert_eq!(ok(&["counter", "hits", "get"]), "3");
    // A malformed request is refused before anything runs.
    let (code, _, err) = run(&["txn"], br#"{"if": [{"map": "config"}]}"#);
    assert_ne!(code, 0);
    assert!(err.contains("\"key\" must be a string"), "{err}");
}
