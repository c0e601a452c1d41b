//! A connection nobody holds any more closes its socket, even when the peer
//! never closes its side (partitioned away, or paused): the soak once ran a
//! simulated host out of ports with connections dropped that way.

use naxos_wire::net::TcpNet;
use naxos_wire::rpc::{Conn, Options};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn a_dropped_connection_closes_its_socket_though_the_peer_stays_silent() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let conn = Conn::connect(&TcpNet, &addr, &Options::default()).await.unwrap();
    let (mut peer, _) = listener.accept().await.unwrap();
    drop(conn);
    // The writer's shutdown arrives as end of stream...
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 0);
    // ... and the peer, which never closes its side, finds the socket gone:
    // once both halves are closed, its writes are refused (a reset). With the
    // read half still open they would be taken in: the start of a frame of
    // 1 MiB, then its body a little at a time, which a reader still there
    // would wait for.
    peer.write_all(&(1u32 << 20).to_be_bytes()).await.ok();
    let refused = async {
        loop {
            if peer.write_all(&[0u8; 64]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), refused).await.expect("the dropped connection's socket was closed");
}
