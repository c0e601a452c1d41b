//! Runs every example program against a one-node cluster started in this
//! process (on a port the OS picks), and checks what each prints: the
//! examples are kept working, not only compiling.

use std::path::PathBuf;
use std::sync::Arc;

/// Where cargo put the example binaries (it builds them before the tests).
fn example(name: &str) -> PathBuf {
    let mut dir = std::env::current_exe().expect("the test's path");
    dir.pop(); // deps
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join("examples").join(name);
    assert!(path.exists(), "{} was not built (cargo test builds the examples)", path.display());
    path
}

#[test]
fn every_example_runs_against_a_cluster() {
    let data = tempfile::tempdir().expect("a data directory");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let server = rt.block_on(async {
        let config = naxos_server::Config::new("127.0.0.1:0", data.path());
        let server = naxos_server::start(config, Arc::new(naxos_wire::net::TcpNet)).await.expect("server starts");
        let addr = server.advertise().to_string();
        let one = vec![addr.clone()];
        let layout = naxos_wire::Layout::initial("examples", &one, 1, 1, one.clone(), one.clone());
        naxos_client::admin::bootstrap(Arc::new(naxos_wire::net::TcpNet), &layout).await.expect("bootstrap");
        server
    });
    let addr = server.advertise().to_string();
    let expect = [
        ("append_and_read", "0: hello, log"),
        ("follow_a_stream", ": order 3"),
        ("replicated_map", "pears 7 -> 6: true"),
        ("transaction", "moved: true"),
    ];
    for (name, wanted) in expect {
        let out = std::process::Command::new(example(name))
            .env("NAXOS_CLUSTER", &addr)
            .env("COUNT", "3")
            .output()
            .expect("the example runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{name} failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
        assert!(stdout.contains(wanted), "{name} printed {stdout:?}, not {wanted:?}");
    }
    rt.block_on(server.stop());
}
