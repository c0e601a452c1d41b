//! Follows a stream like `tail -f`: prints its entries from the start as
//! they become readable, waiting for new ones. Appends a few first, so that
//! there is something to see; stops after `COUNT` entries (or runs until
//! Ctrl-C with `COUNT=0`).
//!
//! `cargo run -p naxos-examples --example follow_a_stream`, and in another
//! shell `naxos append --stream orders 'order 4'` to watch it arrive.

use naxos_client::{Client, Config, Position, StreamId};

#[tokio::main]
async fn main() -> Result<(), naxos_client::Error> {
    let client = Client::connect(Config::new(naxos_examples::cluster())).await?;
    let orders = StreamId::from_name("orders");
    for i in 1..=3 {
        client.append_to(&[orders], format!("order {i}").into()).await?;
    }
    let count: usize = std::env::var("COUNT").ok().and_then(|c| c.parse().ok()).unwrap_or(3);
    let mut subscription = client.subscribe(orders, Position(0));
    let mut seen = 0;
    while count == 0 || seen < count {
        // Waits (server-side, bounded) when the reader has every entry so far.
        let (position, record) = subscription.next().await?;
        println!("{position}: {}", String::from_utf8_lossy(&record.payload));
        seen += 1;
    }
    Ok(())
}
