//! Naxos: `Client::append` (durable on every replica before it returns) and
//! `read_range` in chunks over the positions this case appended.

use super::{Log, ReadBack};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use naxos_client::{Client, Config, Position, Value};

/// Positions per `read_range` call in the read-back.
const READ_CHUNK_POSITIONS: u64 = 4096;

pub struct Naxos {
    client: Client,
    /// The tail when the case started: its appends are at or above it.
    start: Position,
}

impl Naxos {
    pub async fn open(addr: &[String]) -> anyhow::Result<Naxos> {
        let client = Client::connect(Config::new(addr.iter().cloned()))
            .await
            .with_context(|| format!("connecting to Naxos at {addr:?}"))?;
        let start = client.tail().await.context("Naxos tail")?;
        Ok(Naxos { client, start })
    }
}

#[async_trait]
impl Log for Naxos {
    async fn append(&self, payload: Bytes) -> anyhow::Result<()> {
        self.client.append(payload).await?;
        Ok(())
    }

    async fn read_back(&self) -> anyhow::Result<ReadBack> {
        let end = self.client.tail().await.context("Naxos tail")?;
        let mut out = ReadBack::default();
        let mut at = self.start.0;
        while at < end.0 {
            let to = (at + READ_CHUNK_POSITIONS).min(end.0);
            for (_, value) in self.client.read_range(Position(at), Position(to)).await? {
                if let Value::Data(record) = value {
                    out.records += 1;
                    out.bytes += record.payload.len() as u64;
                }
            }
            at = to;
        }
        Ok(out)
    }

    fn read_method(&self) -> &'static str {
        "read_range, 4096 positions a call"
    }
}

/// Accounts in a Naxos map (naxos-tango): a transfer is `try_transaction`
/// (reads both balances at a snapshot, buffers both writes, and commits with
/// one append whose token the sequencer refuses if either key was written
/// since the snapshot). One runtime serves every client: one process's
/// transactions share its replay of the map, as an application's would.
pub struct NaxosBank {
    runtime: naxos_tango::Runtime,
    map: naxos_tango::Map,
}

/// Accounts opened per transaction while setting up.
const OPEN_PER_TX: u64 = 500;

impl NaxosBank {
    pub async fn open(addr: &[String], name: &str, accounts: u64, opening: i64) -> anyhow::Result<NaxosBank> {
        let client = Client::connect(Config::new(addr.iter().cloned()))
            .await
            .with_context(|| format!("connecting to Naxos at {addr:?}"))?;
        let runtime = naxos_tango::Runtime::new(client);
        let map = runtime.map(&format!("bank/{name}"));
        let mut at = 0;
        while at < accounts {
            let end = (at + OPEN_PER_TX).min(accounts);
            runtime
                .transaction(|tx| {
                    for i in at..end {
                        tx.put(&map, super::account(i), opening.to_string());
                    }
                    Ok(())
                })
                .await
                .context("opening the accounts")?;
            at = end;
        }
        Ok(NaxosBank { runtime, map })
    }
}

#[async_trait]
impl super::Bank for NaxosBank {
    async fn transfer(&self, _client: usize, from: u64, to: u64, amount: i64) -> anyhow::Result<super::Attempt> {
        let (from, to) = (super::account(from), super::account(to));
        let done = self
            .runtime
            .try_transaction(|tx| {
                let a: i64 = naxos_tango::parse(&tx.get(&self.map, &from)?.unwrap_or_default())?;
                let b: i64 = naxos_tango::parse(&tx.get(&self.map, &to)?.unwrap_or_default())?;
                if a >= amount {
                    tx.put(&self.map, from.clone(), (a - amount).to_string());
                    tx.put(&self.map, to.clone(), (b + amount).to_string());
                }
                Ok(())
            })
            .await;
        match done {
            Ok(_) => Ok(super::Attempt::Committed),
            Err(naxos_tango::Error::Aborted { .. }) => Ok(super::Attempt::Aborted),
            Err(e) => Err(e.into()),
        }
    }

    async fn total(&self) -> anyhow::Result<i64> {
        let mut sum = 0;
        for (_, v) in self.map.list().await? {
            sum += naxos_tango::parse::<i64>(&v)?;
        }
        Ok(sum)
    }

    fn method(&self) -> &'static str {
        "naxos-tango try_transaction: get, get, put, put; the sequencer checks the read keys (one runtime for all clients)"
    }
}
