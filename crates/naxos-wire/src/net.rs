//! The network seam: servers and clients reach sockets only through `Net`, so
//! the same code runs over real TCP (`TcpNet`) and inside the simulator.

use async_trait::async_trait;
use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// A bidirectional byte stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed byte stream.
pub type BoxStream = Box<dyn Stream>;

/// What the peer of an accepted connection may ask for, as its TLS
/// certificate says (see `tls`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Not authenticated (plain TCP, the simulator): everything, as a
    /// cluster without TLS trusts everyone who can reach it.
    Unauthenticated,
    /// A client's certificate: the data path (append, read, fill, streams,
    /// objects, status).
    Client,
    /// An admin's certificate (servers use theirs with each other): also
    /// bootstrap, seal, layout changes, reconfiguration and trim.
    Admin,
}

impl Role {
    /// Whether it may change the cluster (bootstrap, seal, layouts, trim).
    pub fn is_admin(self) -> bool {
        !matches!(self, Role::Client)
    }
}

/// A bound listening socket.
#[async_trait]
pub trait Listener: Send {
    /// Waits for the next connection: the stream, the peer's address, and
    /// what the peer may do.
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr, Role)>;
    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Binds and connects; one implementation per environment.
#[async_trait]
pub trait Net: Send + Sync + 'static {
    /// Binds a listener on `addr` (`HOST:PORT`).
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn Listener>>;
    /// Connects to `addr` (`HOST:PORT`).
    async fn connect(&self, addr: &str) -> io::Result<BoxStream>;
}

/// Real TCP through tokio, with Nagle's algorithm off.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpNet;

struct TcpListener(tokio::net::TcpListener);

#[async_trait]
impl Listener for TcpListener {
    async fn accept(&mut self) -> io::Result<(BoxStream, SocketAddr, Role)> {
        let (s, peer) = self.0.accept().await?;
        s.set_nodelay(true)?;
        Ok((Box::new(s), peer, Role::Unauthenticated))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

#[async_trait]
impl Net for TcpNet {
    async fn bind(&self, addr: &str) -> io::Result<Box<dyn Listener>> {
        Ok(Box::new(TcpListener(tokio::net::TcpListener::bind(addr).await?)))
    }

    async fn connect(&self, addr: &str) -> io::Result<BoxStream> {
        let s = tokio::net::TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        Ok(Box::new(s))
    }
}
