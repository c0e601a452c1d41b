//! A serializable transaction across objects: moves money between two
//! accounts of a map and counts the transfer, atomically. The sequencer
//! refuses the commit if an account it read was written since; then
//! `transaction` runs the body again (bounded, jittered back-off).
//!
//! `cargo run -p naxos-examples --example transaction`.

use naxos_client::{Client, Config};
use naxos_tango::Runtime;

#[tokio::main]
async fn main() -> Result<(), naxos_tango::Error> {
    let rt = Runtime::new(Client::connect(Config::new(naxos_examples::cluster())).await?);
    let accounts = rt.map("accounts");
    let transfers = rt.counter("transfers");
    accounts.put("alice", "100").await?;
    let moved = rt
        .transaction(|tx| {
            let alice: i64 = naxos_tango::parse(&tx.get(&accounts, "alice")?.unwrap_or_default())?;
            let bob: i64 = tx.get(&accounts, "bob")?.map_or(Ok(0), |v| naxos_tango::parse(&v))?;
            if alice < 10 {
                return Ok(false);
            }
            tx.put(&accounts, "alice", (alice - 10).to_string());
            tx.put(&accounts, "bob", (bob + 10).to_string());
            tx.add(&transfers, 1);
            Ok(true)
        })
        .await?;
    println!("moved: {} (commit record at {:?})", moved.value, moved.position);
    println!("transfers so far: {}", transfers.get().await?);
    Ok(())
}
