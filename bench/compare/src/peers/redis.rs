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

/// Accounts as Redis string keys: a transfer is `WATCH from to`, `MGET`,
/// then `MULTI` / `SET` / `SET` / `EXEC`, which Redis refuses (nil) if a
/// watched key changed. WATCH is per connection, so each client has its own.
pub struct RedisBank {
    conns: Vec<tokio::sync::Mutex<MultiplexedConnection>>,
    prefix: String,
}

/// Accounts set per `MSET` while opening them.
const OPEN_PER_MSET: u64 = 1000;

impl RedisBank {
    pub async fn open(
        addr: &[String],
        name: &str,
        accounts: u64,
        opening: i64,
        clients: usize,
    ) -> anyhow::Result<RedisBank> {
        let addr = addr.first().context("no Redis address")?;
        let client = redis::Client::open(format!("redis://{addr}/")).context("Redis address")?;
        let mut conns = Vec::with_capacity(clients.max(1));
        for _ in 0..clients.max(1) {
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .with_context(|| format!("connecting to Redis at {addr}"))?;
            conns.push(tokio::sync::Mutex::new(conn));
        }
        let prefix = format!("naxos-bank:{name}:");
        let mut conn = conns[0].lock().await.clone();
        let mut at = 0;
        while at < accounts {
            let end = (at + OPEN_PER_MSET).min(accounts);
            let mut mset = redis::cmd("MSET");
            for i in at..end {
                mset.arg(format!("{prefix}{}", super::account(i))).arg(opening);
            }
            mset.query_async::<()>(&mut conn).await.context("Redis MSET opening accounts")?;
            at = end;
        }
        Ok(RedisBank { conns, prefix })
    }
}

#[async_trait]
impl super::Bank for RedisBank {
    async fn transfer(&self, client: usize, from: u64, to: u64, amount: i64) -> anyhow::Result<super::Attempt> {
        let mut conn = self.conns[client % self.conns.len()].lock().await;
        let (kf, kt) =
            (format!("{}{}", self.prefix, super::account(from)), format!("{}{}", self.prefix, super::account(to)));
        redis::cmd("WATCH").arg(&kf).arg(&kt).query_async::<()>(&mut *conn).await.context("Redis WATCH")?;
        let (a, b): (i64, i64) =
            redis::cmd("MGET").arg(&kf).arg(&kt).query_async(&mut *conn).await.context("Redis MGET")?;
        let mut tx = redis::pipe();
        tx.atomic();
        if a >= amount {
            tx.set(&kf, a - amount).set(&kt, b + amount);
        } else {
            // An empty MULTI/EXEC still fails if a watched key changed.
            tx.cmd("PING");
        }
        let done: Option<Vec<redis::Value>> = tx.query_async(&mut *conn).await.context("Redis MULTI/EXEC")?;
        Ok(if done.is_some() { super::Attempt::Committed } else { super::Attempt::Aborted })
    }

    async fn total(&self) -> anyhow::Result<i64> {
        let mut conn = self.conns[0].lock().await;
        // The keys, then one MGET of them all (atomic, so one point in time).
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{}*", self.prefix)).query_async(&mut *conn).await.context("Redis KEYS")?;
        if keys.is_empty() {
            return Ok(0);
        }
        let values: Vec<i64> = redis::cmd("MGET").arg(&keys).query_async(&mut *conn).await.context("Redis MGET")?;
        Ok(values.iter().sum())
    }

    fn method(&self) -> &'static str {
        "Redis: WATCH, MGET, MULTI SET SET EXEC; one connection per client (WATCH is per connection)"
    }
}
