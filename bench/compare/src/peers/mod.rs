//! One module per system; each gives the workload the same three calls.

mod etcd;
mod nats;
mod naxos;
mod redis;
mod zookeeper;

use async_trait::async_trait;
use bytes::Bytes;
use std::sync::Arc;

/// The systems the harness can drive.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum System {
    /// Naxos through naxos-client (`append`, `read_range`).
    Naxos,
    /// Redis Streams: XADD, XRANGE in pages.
    Redis,
    /// etcd: Put of sequential keys, range Gets.
    Etcd,
    /// ZooKeeper: PERSISTENT_SEQUENTIAL znodes, getData per znode.
    Zookeeper,
    /// NATS JetStream: publish with ack to a file stream, pull consumer.
    Nats,
}

/// What the read-back phase saw.
#[derive(Default)]
pub struct ReadBack {
    pub records: u64,
    pub bytes: u64,
}

/// One case's view of a system: a fresh namespace (stream key, key prefix,
/// parent znode, JetStream stream, log range) that appends go to and that is
/// read back whole.
#[async_trait]
pub trait Log: Send + Sync {
    /// One append; returns when the system acknowledged it.
    async fn append(&self, payload: Bytes) -> anyhow::Result<()>;
    /// Reads every record appended in this case, in order.
    async fn read_back(&self) -> anyhow::Result<ReadBack>;
    /// How the read-back reads (shown in the table's notes).
    fn read_method(&self) -> &'static str;
}

/// Connects to `addr` and sets up the namespace of case `name`.
pub async fn open(system: System, addr: &[String], name: &str) -> anyhow::Result<Arc<dyn Log>> {
    Ok(match system {
        System::Naxos => Arc::new(naxos::Naxos::open(addr).await?),
        System::Redis => Arc::new(redis::Redis::open(addr, name).await?),
        System::Etcd => Arc::new(etcd::Etcd::open(addr, name).await?),
        System::Zookeeper => Arc::new(zookeeper::ZooKeeper::open(addr, name).await?),
        System::Nats => Arc::new(nats::Nats::open(addr, name).await?),
    })
}
