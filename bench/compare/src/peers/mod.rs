//! One module per system; each gives the append workload the same three
//! calls, and the systems with transactions (Naxos, etcd, Redis) give the
//! transfer workload (`crate::txn`) a bank of accounts.

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

/// How one transfer attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// The transaction committed (the transfer, or nothing if the source
    /// account could not cover it: both read the balances serializably).
    Committed,
    /// The system refused the commit because a key it read had changed
    /// (etcd's failed compare, Redis's nil EXEC, Naxos's conflict abort).
    Aborted,
}

/// One case's accounts on a system with transactions: `accounts` keys, each
/// opened with the same balance, and read-modify-write transfers between
/// two of them, each tried once (the workload picks the next pair after an
/// abort, so goodput under contention is what the system gets through).
#[async_trait]
pub trait Bank: Send + Sync {
    /// One transfer attempt by client `client` (0..clients): read both
    /// balances, and if `from` holds `amount`, write both in one
    /// transaction that commits only if neither changed since it was read.
    async fn transfer(&self, client: usize, from: u64, to: u64, amount: i64) -> anyhow::Result<Attempt>;
    /// The sum of every balance, read at one point in time.
    async fn total(&self) -> anyhow::Result<i64>;
    /// How a transfer is done (shown in the table's notes).
    fn method(&self) -> &'static str;
}

/// Connects `clients` clients to `addr` and opens `accounts` accounts of
/// `opening` each in the fresh namespace of case `name`.
pub async fn open_bank(
    system: System,
    addr: &[String],
    name: &str,
    accounts: u64,
    opening: i64,
    clients: usize,
) -> anyhow::Result<Arc<dyn Bank>> {
    Ok(match system {
        System::Naxos => Arc::new(naxos::NaxosBank::open(addr, name, accounts, opening).await?),
        System::Redis => Arc::new(redis::RedisBank::open(addr, name, accounts, opening, clients).await?),
        System::Etcd => Arc::new(etcd::EtcdBank::open(addr, name, accounts, opening).await?),
        other => anyhow::bail!("{other:?} has no transactions in this harness"),
    })
}

/// The key of account `i` (the same on every system).
pub fn account(i: u64) -> String {
    format!("a{i:08}")
}
