//! `Net` over turmoil's simulated TCP: addresses are `host:port` with turmoil
//! host names, so layouts in the simulator read like real ones.

use async_trait::async_trait;
use naxos_wire::net::{BoxStream, Listener, Net, Role};
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The simulated network.
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

struct SimListener(turmoil::net::TcpListener);

#[async_trait]
impl Listener for SimListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr, Role)> {
        let (s, peer) = self.0.accept().await?;
        Ok((Box::new(s), peer, Role::Unauthenticated))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

fn port_of(addr: &str) -> io::Result<u16> {
    addr.rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("no port in '{addr}'")))
}

#[async_trait]
impl Net for TurmoilNet {
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        // A simulated host listens on every address it has.
        let sock = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port_of(addr)?);
        Ok(Box::new(SimListener(turmoil::net::TcpListener::bind(sock).await?)))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        let s = turmoil::net::TcpStream::connect(addr).await?;
        Ok(Box::new(s))
    }
}
