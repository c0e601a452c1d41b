//! etcd: `Put` of sequential keys `<case>/<20-digit sequence>` over one gRPC
//! channel (HTTP/2, so the in-flight puts share it as the other clients share
//! their connection), and range `Get`s of 1000 keys for the read-back.

use super::{Log, ReadBack};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{Client, GetOptions};
use std::sync::atomic::{AtomicU64, Ordering};

/// Keys per range Get.
const PAGE_KEYS: i64 = 1000;

pub struct Etcd {
    client: Client,
    prefix: String,
    next: AtomicU64,
}

impl Etcd {
    pub async fn open(addr: &[String], name: &str) -> anyhow::Result<Etcd> {
        let endpoints: Vec<String> = addr.iter().map(|a| format!("http://{a}")).collect();
        let client =
            Client::connect(&endpoints, None).await.with_context(|| format!("connecting to etcd at {addr:?}"))?;
        Ok(Etcd { client, prefix: format!("{name}/"), next: AtomicU64::new(0) })
    }
}

/// The first key after every key that starts with `prefix` (which ends in '/').
fn range_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

#[async_trait]
impl Log for Etcd {
    async fn append(&self, payload: Bytes) -> anyhow::Result<()> {
        let key = format!("{}{:020}", self.prefix, self.next.fetch_add(1, Ordering::Relaxed));
        self.client.kv_client().put(key, payload.to_vec(), None).await?;
        Ok(())
    }

    async fn read_back(&self) -> anyhow::Result<ReadBack> {
        let mut kv = self.client.kv_client();
        let end = range_end(&self.prefix);
        let mut from = self.prefix.as_bytes().to_vec();
        let mut out = ReadBack::default();
        loop {
            let page = kv
                .get(from.clone(), Some(GetOptions::new().with_range(end.clone()).with_limit(PAGE_KEYS)))
                .await
                .context("etcd range Get")?;
            for entry in page.kvs() {
                out.records += 1;
                out.bytes += entry.value().len() as u64;
            }
            let Some(last) = page.kvs().last() else { break };
            if !page.more() {
                break;
            }
            from = last.key().to_vec();
            from.push(0);
        }
        Ok(out)
    }

    fn read_method(&self) -> &'static str {
        "range Get, 1000 keys a page"
    }
}
