//! NATS JetStream: a file-backed stream per case, `publish` and wait for the
//! JetStream ack on one connection; the read-back pulls batches of 1000 from
//! a pull consumer. Whether the ack waits for fsync depends on the server's
//! `sync_interval` (the run script labels the row).

use super::{Log, ReadBack};
use anyhow::Context;
use async_nats::jetstream::{self, consumer::pull, consumer::AckPolicy, stream::StorageType};
use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use std::time::Duration;

/// Messages per pull batch.
const BATCH_MESSAGES: u64 = 1000;
/// How long one pull batch may wait on the server.
const BATCH_WAIT: Duration = Duration::from_secs(5);

pub struct Nats {
    js: jetstream::Context,
    stream: String,
    subject: String,
}

impl Nats {
    pub async fn open(addr: &[String], name: &str) -> anyhow::Result<Nats> {
        let urls: Vec<String> = addr.iter().map(|a| format!("nats://{a}")).collect();
        let client =
            async_nats::connect(urls.join(",")).await.with_context(|| format!("connecting to NATS at {addr:?}"))?;
        let js = jetstream::new(client);
        let stream = name.to_string();
        let subject = format!("bench.{name}");
        js.create_stream(jetstream::stream::Config {
            name: stream.clone(),
            subjects: vec![subject.clone()],
            storage: StorageType::File,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating JetStream stream {stream}"))?;
        Ok(Nats { js, stream, subject })
    }
}

#[async_trait]
impl Log for Nats {
    async fn append(&self, payload: Bytes) -> anyhow::Result<()> {
        // The first await sends; the second waits for the stream's ack.
        self.js.publish(self.subject.clone(), payload).await?.await?;
        Ok(())
    }

    async fn read_back(&self) -> anyhow::Result<ReadBack> {
        let mut stream = self.js.get_stream(&self.stream).await.context("JetStream stream")?;
        let total = stream.info().await.context("JetStream stream info")?.state.messages;
        let consumer = stream
            .create_consumer(pull::Config { ack_policy: AckPolicy::None, ..Default::default() })
            .await
            .context("JetStream pull consumer")?;
        let mut out = ReadBack::default();
        while out.records < total {
            let want = (total - out.records).min(BATCH_MESSAGES);
            let mut batch = consumer
                .batch()
                .max_messages(want as usize)
                .expires(BATCH_WAIT)
                .messages()
                .await
                .context("JetStream pull")?;
            let before = out.records;
            while let Some(message) = batch.next().await {
                let message = message.map_err(|e| anyhow::anyhow!("JetStream pull: {e}"))?;
                out.records += 1;
                out.bytes += message.payload.len() as u64;
            }
            anyhow::ensure!(
                out.records > before,
                "JetStream pull returned nothing with {} of {total} read",
                out.records
            );
        }
        Ok(out)
    }

    fn read_method(&self) -> &'static str {
        "pull consumer, batches of 1000"
    }
}
