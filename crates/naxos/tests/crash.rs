//! kill -9 of every server in the middle of a load, then a restart: every
//! acknowledged append reads back with its bytes, and the tail is above every
//! acknowledged position.

mod common;

use common::{run_cli, Proc};
use naxos_client::{Client, Config, Position, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Acknowledged appends: position and payload.
type Acked = Vec<(Position, Vec<u8>)>;

fn start_server(addr: &str, dir: &std::path::Path) -> Proc {
    Proc::start(&["server", "--listen", addr, "--data-dir", dir.to_str().unwrap()])
}

#[test]
fn acknowledged_appends_survive_kill_9_of_every_server() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut procs: Vec<Proc> = dirs.iter().map(|d| start_server("127.0.0.1:0", d.path())).collect();
    let addrs: Vec<String> = procs.iter().map(|p| p.addr.clone()).collect();
    let units = addrs.join(",");
    let (code, _, err) =
        run_cli(&["bootstrap", "--cluster", &addrs[0], "--log-units", &units, "--replication", "3"], b"");
    assert_eq!(code, 0, "{err}");

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let acked: Arc<Mutex<Acked>> = Arc::default();
    let mut config = Config::new(addrs.clone());
    config.retries_max = 2;
    config.rpc.timeout_call = Duration::from_millis(500);
    let client = rt.block_on(Client::connect(config)).unwrap();
    let mut tasks = Vec::new();
    for w in 0..6 {
        let client = client.clone();
        let acked = acked.clone();
        tasks.push(rt.spawn(async move {
            for i in 0u32.. {
                let payload = format!("writer {w} entry {i} ").repeat(1 + (i % 5) as usize).into_bytes();
                match client.append(payload.clone().into()).await {
                    Ok(p) => acked.lock().unwrap().push((p, payload)),
                    Err(_) => return, // the cluster died under us: may or may not have happened
                }
            }
        }));
    }
    // Let the load run until a good number of appends were acknowledged.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while acked.lock().unwrap().len() < 1500 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in &mut procs {
        p.kill9();
    }
    rt.block_on(async {
        for t in tasks {
            let _ = t.await;
        }
    });
    let acked = acked.lock().unwrap().clone();
    eprintln!("{} appends acknowledged before kill -9", acked.len());
    assert!(acked.len() >= 1500, "the load made progress before the crash ({} acks)", acked.len());

    let _restarted: Vec<Proc> = addrs.iter().zip(&dirs).map(|(a, d)| start_server(a, d.path())).collect();
    let reader = rt.block_on(Client::connect(Config::new(addrs.clone()))).unwrap();
    rt.block_on(async {
        for (p, payload) in &acked {
            match reader.read(*p).await {
                Ok(Value::Data(r)) => assert_eq!(&r.payload[..], &payload[..], "bytes at {p}"),
                other => panic!("acknowledged append at {p} lost after kill -9: {other:?}"),
            }
        }
        let tail = reader.tail().await.unwrap();
        let max = acked.iter().map(|(p, _)| *p).max().unwrap();
        assert!(tail > max, "tail {tail} must be above every acknowledged position ({max})");
        // The log goes on.
        let next = reader.append("after the crash".into()).await.unwrap();
        assert!(next >= tail);
    });
}
