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

/// A network whose every connect fails after a while (an unreachable
/// peer), counting the attempts.
struct Unreachable(std::sync::atomic::AtomicUsize);

#[async_trait::async_trait]
impl naxos_wire::net::Net for Unreachable {
    async fn bind(&self, _addr: &str) -> std::io::Result<Box<dyn naxos_wire::net::Listener>> {
        Err(std::io::Error::other("no listening here"))
    }
    async fn connect(&self, _addr: &str) -> std::io::Result<naxos_wire::net::BoxStream> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))
    }
}

#[tokio::test]
async fn calls_to_an_unreachable_peer_share_one_connect_attempt_at_a_time() {
    use naxos_wire::proto::{request, Read, Request};
    use naxos_wire::rpc::{Pool, RECONNECT_AFTER};
    let net = std::sync::Arc::new(Unreachable(std::sync::atomic::AtomicUsize::new(0)));
    let pool = Pool::new(net.clone(), Options::default());
    let req =
        || Request { id: 0, cluster_id: "c".into(), epoch: 0, body: Some(request::Body::Read(Read { position: 0 })) };
    // A burst of calls (as tail queries probing a layout server): one dial.
    let burst = futures_like_join((0..50).map(|_| pool.call("peer:1", req()))).await;
    assert!(burst.iter().all(|r| r.is_err()));
    assert_eq!(net.0.load(std::sync::atomic::Ordering::SeqCst), 1, "one connect for the whole burst");
    // After the back-off, the next call dials again.
    tokio::time::sleep(RECONNECT_AFTER + Duration::from_millis(10)).await;
    assert!(pool.call("peer:1", req()).await.is_err());
    assert_eq!(net.0.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Runs futures concurrently on this task, results in order.
async fn futures_like_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.map(Box::pin).collect();
    let mut pending: Vec<Option<std::pin::Pin<Box<F>>>> = handles.into_iter().map(Some).collect();
    let mut out: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        out[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    out.into_iter().map(|o| o.expect("every future finished")).collect()
}
