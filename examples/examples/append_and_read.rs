//! Appends an entry, reads it back by position, and appends a batch.
//!
//! Run `naxos dev` in another shell, then:
//! `cargo run -p naxos-examples --example append_and_read`.

use naxos_client::{Client, Config, Value};

#[tokio::main]
async fn main() -> Result<(), naxos_client::Error> {
    let client = Client::connect(Config::new(naxos_examples::cluster())).await?;
    // Returns once the entry is durable on every replica of its chain.
    let p = client.append("hello, log".into()).await?;
    match client.read(p).await? {
        Value::Data(record) => println!("{p}: {}", String::from_utf8_lossy(&record.payload)),
        other => println!("{p}: {other:?}"),
    }
    // Several entries under one token request: consecutive positions.
    let positions = client.append_batch(vec!["a".into(), "b".into(), "c".into()]).await?;
    println!("batch at {positions:?}; the tail is now {}", client.tail().await?);
    Ok(())
}
