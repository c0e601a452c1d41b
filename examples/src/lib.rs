//! Runnable examples of the Naxos libraries; each is a program under
//! `examples/` (`cargo run -p naxos-examples --example append_and_read`).
//! They reach the cluster named by `NAXOS_CLUSTER` (comma-separated
//! addresses), or `naxos dev` on 127.0.0.1:7400.

/// The cluster the examples talk to: `NAXOS_CLUSTER`, else `naxos dev`'s address.
pub fn cluster() -> Vec<String> {
    match std::env::var("NAXOS_CLUSTER") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|a| a.trim().to_string()).collect(),
        _ => vec!["127.0.0.1:7400".to_string()],
    }
}
