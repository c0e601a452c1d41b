//! etcd: `Put` of sequential keys `<case>/<20-digit sequence>` over one gRPC
//! channel (HTTP/2, so the in-flight puts share it as the other clients share
//! their connection), and range `Get`s of 1000 keys for the read-back.

use super::{Log, ReadBack};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};
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

/// Accounts as etcd keys: a transfer is two `Get`s (linearizable, the
/// default), then one `Txn` that compares both keys' `mod_revision` with
/// what was read and puts both new balances only if they match. One client
/// channel for every client, as for the appends.
pub struct EtcdBank {
    client: Client,
    prefix: String,
}

/// Puts per `Txn` while opening the accounts (etcd's default limit is 128 operations).
const OPEN_PER_TXN: u64 = 100;

impl EtcdBank {
    pub async fn open(addr: &[String], name: &str, accounts: u64, opening: i64) -> anyhow::Result<EtcdBank> {
        let endpoints: Vec<String> = addr.iter().map(|a| format!("http://{a}")).collect();
        let client =
            Client::connect(&endpoints, None).await.with_context(|| format!("connecting to etcd at {addr:?}"))?;
        let prefix = format!("{name}/");
        let mut kv = client.kv_client();
        let mut at = 0;
        while at < accounts {
            let end = (at + OPEN_PER_TXN).min(accounts);
            let puts: Vec<TxnOp> = (at..end)
                .map(|i| TxnOp::put(format!("{prefix}{}", super::account(i)), opening.to_string(), None))
                .collect();
            kv.txn(Txn::new().and_then(puts)).await.context("etcd Txn opening accounts")?;
            at = end;
        }
        Ok(EtcdBank { client, prefix })
    }
}

/// A balance as etcd holds it, and the key's `mod_revision`.
fn balance(r: &etcd_client::GetResponse) -> anyhow::Result<(i64, i64)> {
    let kv = r.kvs().first().context("no such account")?;
    let v: i64 =
        std::str::from_utf8(kv.value()).ok().and_then(|s| s.parse().ok()).context("a balance is not a number")?;
    Ok((v, kv.mod_revision()))
}

/// Keys per page when the total is summed.
const TOTAL_PAGE: i64 = 10_000;

#[async_trait]
impl super::Bank for EtcdBank {
    async fn transfer(&self, _client: usize, from: u64, to: u64, amount: i64) -> anyhow::Result<super::Attempt> {
        let mut kv = self.client.kv_client();
        let (kf, kt) =
            (format!("{}{}", self.prefix, super::account(from)), format!("{}{}", self.prefix, super::account(to)));
        let (mut kv_from, mut kv_to) = (kv.clone(), kv.clone());
        let (rf, rt) = tokio::try_join!(kv_from.get(kf.clone(), None), kv_to.get(kt.clone(), None))?;
        let ((a, rev_a), (b, rev_b)) = (balance(&rf)?, balance(&rt)?);
        let compare = vec![
            Compare::mod_revision(kf.clone(), CompareOp::Equal, rev_a),
            Compare::mod_revision(kt.clone(), CompareOp::Equal, rev_b),
        ];
        // A transfer the source cannot cover still commits (writing nothing)
        // only if its reads held, as the other systems' do.
        let writes = if a >= amount {
            vec![TxnOp::put(kf, (a - amount).to_string(), None), TxnOp::put(kt, (b + amount).to_string(), None)]
        } else {
            Vec::new()
        };
        let answer = kv.txn(Txn::new().when(compare).and_then(writes)).await?;
        Ok(if answer.succeeded() { super::Attempt::Committed } else { super::Attempt::Aborted })
    }

    async fn total(&self) -> anyhow::Result<i64> {
        let mut kv = self.client.kv_client();
        let end = range_end(&self.prefix);
        // Pages of the range, every one at the revision of the first: one
        // point in time (one Get of 100,000 keys exceeds the client's 4 MiB
        // message limit).
        let (mut from, mut revision, mut sum) = (self.prefix.clone().into_bytes(), 0i64, 0i64);
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(TOTAL_PAGE);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let page = kv.get(from.clone(), Some(options)).await.context("etcd range Get")?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            for kv in page.kvs() {
                sum += std::str::from_utf8(kv.value()).ok().and_then(|s| s.parse::<i64>().ok()).context("a balance")?;
            }
            match page.kvs().last() {
                Some(last) if page.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => return Ok(sum),
            }
        }
    }

    fn method(&self) -> &'static str {
        "etcd: Get, Get, then Txn(compare both mod_revisions; put, put); one gRPC channel"
    }
}
