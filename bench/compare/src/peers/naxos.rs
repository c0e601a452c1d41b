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
