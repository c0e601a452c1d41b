//! A replicated map: every runtime that opens `inventory` sees the same
//! keys; reads are linearizable (synced to the log's tail first).
//!
//! `cargo run -p naxos-examples --example replicated_map`; `naxos map
//! inventory list` shows the same entries from the command line.

use naxos_client::{Client, Config};
use naxos_tango::Runtime;

#[tokio::main]
async fn main() -> Result<(), naxos_tango::Error> {
    let cluster = naxos_examples::cluster();
    let writer = Runtime::new(Client::connect(Config::new(cluster.clone())).await?);
    let inventory = writer.map("inventory");
    inventory.put("apples", "12").await?;
    inventory.put("pears", "7").await?;
    inventory.delete("plums").await?;

    // Another runtime (another process, in real life) sees those writes.
    let reader = Runtime::new(Client::connect(Config::new(cluster)).await?);
    let seen = reader.map("inventory");
    println!("apples: {:?}", seen.get("apples").await?);
    for (key, value) in seen.list().await? {
        println!("{} = {}", String::from_utf8_lossy(&key), String::from_utf8_lossy(&value));
    }
    // Compare-and-set through a transaction: only if the value is still "7".
    let swapped = reader
        .transaction(|tx| {
            if tx.get(&seen, "pears")?.as_deref() == Some(&b"7"[..]) {
                tx.put(&seen, "pears", "6");
                return Ok(true);
            }
            Ok(false)
        })
        .await?;
    println!("pears 7 -> 6: {}", swapped.value);
    Ok(())
}
