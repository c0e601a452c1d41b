//! Redis Streams: `XADD key * d <payload>` on one multiplexed connection, and
//! `XRANGE key (last + COUNT 1000` pages for the read-back.

use super::{Log, ReadBack};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamRangeReply;

/// Entries per XRANGE page.
const PAGE_ENTRIES: usize = 1000;

pub struct Redis {
    conn: MultiplexedConnection,
    key: String,
}

impl Redis {
    pub async fn open(addr: &[String], name: &str) -> anyhow::Result<Redis> {
        let addr = addr.first().context("no Redis address")?;
        let client = redis::Client::open(format!("redis://{addr}/")).context("Redis address")?;
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        let key = format!("naxos-bench:{name}");
        redis::cmd("DEL").arg(&key).query_async::<()>(&mut conn).await.context("Redis DEL")?;
        Ok(Redis { conn, key })
    }
}

#[async_trait]
impl Log for Redis {
    async fn append(&self, payload: Bytes) -> anyhow::Result<()> {
        let mut conn = self.conn.clone();
        redis::cmd("XADD").arg(&self.key).arg("*").arg("d").arg(&payload[..]).query_async::<String>(&mut conn).await?;
        Ok(())
    }

    async fn read_back(&self) -> anyhow::Result<ReadBack> {
        let mut conn = self.conn.clone();
        let mut out = ReadBack::default();
        let mut from = "-".to_string();
        loop {
            let page: StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.key)
                .arg(&from)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE_ENTRIES)
                .query_async(&mut conn)
                .await
                .context("Redis XRANGE")?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            for entry in &page.ids {
                if let Some(redis::Value::BulkString(data)) = entry.map.get("d") {
                    out.records += 1;
                    out.bytes += data.len() as u64;
                }
            }
            if page.ids.len() < PAGE_ENTRIES {
                break;
            }
        }
        Ok(out)
    }

    fn read_method(&self) -> &'static str {
        "XRANGE, 1000 entries a page"
    }
}
