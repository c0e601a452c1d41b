//! ZooKeeper: `create(<parent>/n, payload, PERSISTENT_SEQUENTIAL)` on one
//! session (the in-flight creates are pipelined on its connection). ZooKeeper
//! has no range read, so the read-back lists the parent's children and gets
//! each znode's data, 64 `getData` calls in flight at a time.

use super::{Log, ReadBack};
use anyhow::Context;
use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};
use zookeeper_client::{Acls, Client, CreateMode};

/// `getData` calls in flight during the read-back.
const READ_IN_FLIGHT: usize = 64;

pub struct ZooKeeper {
    client: Client,
    parent: String,
}

impl ZooKeeper {
    pub async fn open(addr: &[String], name: &str) -> anyhow::Result<ZooKeeper> {
        let cluster = addr.join(",");
        let client =
            Client::connect(&cluster).await.with_context(|| format!("connecting to ZooKeeper at {cluster}"))?;
        let parent = format!("/{name}");
        client
            .create(&parent, &[], &CreateMode::Persistent.with_acls(Acls::anyone_all()))
            .await
            .with_context(|| format!("creating ZooKeeper parent {parent}"))?;
        Ok(ZooKeeper { client, parent })
    }
}

#[async_trait]
impl Log for ZooKeeper {
    async fn append(&self, payload: Bytes) -> anyhow::Result<()> {
        let path = format!("{}/n", self.parent);
        self.client.create(&path, &payload, &CreateMode::PersistentSequential.with_acls(Acls::anyone_all())).await?;
        Ok(())
    }

    async fn read_back(&self) -> anyhow::Result<ReadBack> {
        let (mut children, _) = self.client.get_children(&self.parent).await.context("ZooKeeper getChildren")?;
        // Sequence suffixes are zero-padded, so name order is creation order.
        children.sort_unstable();
        let sizes: Vec<usize> = stream::iter(children)
            .map(|child| {
                let client = self.client.clone();
                let path = format!("{}/{child}", self.parent);
                async move { client.get_data(&path).await.map(|(data, _)| data.len()) }
            })
            .buffered(READ_IN_FLIGHT)
            .try_collect()
            .await
            .context("ZooKeeper getData")?;
        Ok(ReadBack { records: sizes.len() as u64, bytes: sizes.iter().map(|&n| n as u64).sum() })
    }

    fn read_method(&self) -> &'static str {
        "getChildren, then getData per znode, 64 in flight"
    }
}
