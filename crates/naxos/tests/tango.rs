//! Replicated objects and transactions (naxos-tango) on in-process clusters
//! on real sockets: Tango's claims (every runtime sees one history of each
//! object, transactions are serializable, an update applies once however
//! often it lands) and the sequencer's conflict check.

mod common;

use bytes::Bytes;
use common::*;
use naxos_client::{conflict_key, AbortCause, Conflict, Error as LogError, Position, StreamId};
use naxos_tango::{Error, Runtime};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_runtime_reads_the_others_writes_at_once() {
    let c = Cluster::start(3, 3, 1).await;
    let (a, b) = (Runtime::new(c.client().await), Runtime::new(c.client().await));
    let (ma, mb) = (a.map("config"), b.map("config"));
    assert_eq!(mb.get("k").await.unwrap(), None);
    ma.put("k", "1").await.unwrap();
    // Linearizable: a read that starts after the put returned sees it.
    assert_eq!(mb.get("k").await.unwrap(), Some(Bytes::from("1")));
    mb.put("j", "2").await.unwrap();
    let before_delete = ma.delete("k").await.unwrap();
    assert_eq!(mb.list().await.unwrap(), vec![(Bytes::from("j"), Bytes::from("2"))]);
    // A snapshot read sees the map as it was below a position.
    assert_eq!(mb.get_at("k", before_delete).await.unwrap(), Some(Bytes::from("1")));
    // A runtime that opens the map later replays it from the log.
    let late = Runtime::new(c.client().await);
    assert_eq!(late.map("config").list().await.unwrap(), ma.list().await.unwrap());
    let (ca, cb) = (a.counter("hits"), b.counter("hits"));
    ca.add(5).await.unwrap();
    cb.add(-2).await.unwrap();
    assert_eq!(ca.get().await.unwrap(), 3);
    // Typed keys and values, through serde.
    let ta = a.map("typed").typed::<u64, (String, bool)>();
    ta.put(&7, &("seven".into(), true)).await.unwrap();
    let tb = b.map("typed").typed::<u64, (String, bool)>();
    assert_eq!(tb.get(&7).await.unwrap(), Some(("seven".into(), true)));
    assert_eq!(tb.list().await.unwrap(), vec![(7, ("seven".to_string(), true))]);
    assert!(matches!(b.map("config").typed::<u64, u64>().list().await, Err(Error::Decode(_))));
    let (ra, rb) = (a.register("leader"), b.register("leader"));
    assert!(ra.cas(None, Some("a".into())).await.unwrap());
    assert!(!rb.cas(None, Some("b".into())).await.unwrap(), "taken already");
    assert_eq!(rb.get().await.unwrap(), Some(Bytes::from("a")));
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_write_transactions_lose_no_update() {
    let c = Cluster::start(3, 3, 1).await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let rt = Runtime::new(c.client().await);
        tasks.push(tokio::spawn(async move {
            let m = rt.map("counts");
            // One hot key among four writers: allow many attempts (the test
            // is about lost updates, not about how soon each one commits).
            let patient = naxos_tango::Retry { attempts_max: 1000, ..naxos_tango::Retry::default() };
            for _ in 0..25 {
                rt.transaction_with(patient, |tx| {
                    let v: i64 = tx.get(&m, "n")?.map_or(Ok(0), |v| naxos_tango::parse(&v))?;
                    tx.put(&m, "n", (v + 1).to_string());
                    Ok(())
                })
                .await
                .expect("commits within its retries");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let rt = Runtime::new(c.client().await);
    assert_eq!(rt.map("counts").get("n").await.unwrap(), Some(Bytes::from("100")));
    assert_eq!(rt.stats().invalid_commits.load(std::sync::atomic::Ordering::Relaxed), 0);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_between_accounts_conserve_the_total_in_every_snapshot() {
    let c = Cluster::start(3, 3, 1).await;
    let setup = Runtime::new(c.client().await);
    let accounts = setup.map("accounts");
    for i in 0..5 {
        accounts.put(format!("acct{i}"), "100").await.unwrap();
    }
    let mut tasks = Vec::new();
    for t in 0..3u64 {
        let rt = Runtime::new(c.client().await);
        tasks.push(tokio::spawn(async move {
            let m = rt.map("accounts");
            for i in 0..20u64 {
                let (from, to) = (format!("acct{}", (t + i) % 5), format!("acct{}", (t + 2 * i + 1) % 5));
                rt.transaction(|tx| {
                    let a: i64 = naxos_tango::parse(&tx.get(&m, &from)?.unwrap_or_default())?;
                    let b: i64 = naxos_tango::parse(&tx.get(&m, &to)?.unwrap_or_default())?;
                    if from != to && a >= 7 {
                        tx.put(&m, from.clone(), (a - 7).to_string());
                        tx.put(&m, to.clone(), (b + 7).to_string());
                    }
                    Ok(())
                })
                .await
                .expect("commits within its retries");
                // A read-only transaction: one consistent snapshot.
                let total = rt
                    .transaction(|tx| {
                        let all = tx.list(&m)?;
                        all.iter().map(|(_, v)| naxos_tango::parse::<i64>(v)).sum::<Result<i64, Error>>()
                    })
                    .await
                    .unwrap();
                assert_eq!(total.value, 500, "a snapshot saw money made or lost");
                assert_eq!(total.position, None, "a read-only transaction appends nothing");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = accounts.list().await.unwrap();
    let total: i64 = all.iter().map(|(_, v)| naxos_tango::parse::<i64>(v).unwrap()).sum();
    assert_eq!(total, 500);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencer_refuses_a_token_whose_read_key_was_written_after_the_snapshot() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let s = StreamId::from_name("map/x");
    let k = conflict_key(s, b"k", false);
    let snapshot = client.tail().await.unwrap();
    let write = Conflict { snapshot: Position(0), reads: vec![], writes: vec![k] };
    let written = client.append_checked(&[s], "w".into(), &write).await.unwrap();
    let read = Conflict { snapshot, reads: vec![k], writes: vec![k] };
    let refused = client.append_checked(&[s], "r".into(), &read).await.unwrap_err();
    assert!(
        matches!(&refused, LogError::Aborted { cause: AbortCause::Conflict, message } if message.contains(&written.0.to_string())),
        "{refused}"
    );
    // No position was taken for it.
    assert_eq!(client.tail().await.unwrap(), Position(written.0 + 1));
    // Another key, or a snapshot past the write, passes.
    let other = Conflict { snapshot, reads: vec![conflict_key(s, b"j", false)], writes: vec![] };
    client.append_checked(&[s], "o".into(), &other).await.unwrap();
    let later = Conflict { snapshot: Position(written.0 + 1), reads: vec![k], writes: vec![k] };
    client.append_checked(&[s], "l".into(), &later).await.unwrap();
    // After a new epoch the sequencer knows no earlier writes: an older snapshot aborts.
    c.next_epoch().await;
    client.refresh_layout().await.unwrap();
    let stale = client.append_checked(&[s], "s".into(), &later).await.unwrap_err();
    assert!(matches!(stale, LogError::Aborted { cause: AbortCause::NewSequencer, .. }), "{stale}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_that_lands_twice_is_applied_once() {
    use naxos_tango::record::{Op, Record, Update};
    use prost::Message;
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let rt = Runtime::with_id(c.client().await, 1);
    let counter = rt.counter("visits");
    // A writer's record, appended twice as a retry after an unknown outcome would.
    let rec = Record {
        magic: 0x4e58_5431,
        client: Bytes::copy_from_slice(&7u128.to_be_bytes()),
        seq: 0,
        floor: 0,
        updates: vec![Update { object: Bytes::copy_from_slice(&counter.stream().to_bytes()), op: Some(Op::Add(10)) }],
        snapshot: None,
        reads: vec![],
    };
    for _ in 0..2 {
        client.append_to(&[counter.stream()], rec.encode_to_vec().into()).await.unwrap();
    }
    // Something that is not a record in the same stream is skipped.
    client.append_to(&[counter.stream()], "not a record".into()).await.unwrap();
    counter.add(1).await.unwrap();
    assert_eq!(counter.get().await.unwrap(), 11);
    let stats = rt.stats();
    assert_eq!(stats.duplicates.load(std::sync::atomic::Ordering::Relaxed), 1);
    assert_eq!(stats.foreign.load(std::sync::atomic::Ordering::Relaxed), 1);
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pops_take_each_value_once() {
    let c = Cluster::start(3, 3, 1).await;
    let rt = Runtime::new(c.client().await);
    let q = rt.queue("jobs");
    for i in 0..30 {
        q.push(format!("job{i}")).await.unwrap();
    }
    let mut tasks = Vec::new();
    for _ in 0..3 {
        let rt = Runtime::new(c.client().await);
        tasks.push(tokio::spawn(async move {
            let q = rt.queue("jobs");
            let mut got = Vec::new();
            while let Some(v) = q.pop().await.expect("pops within its retries") {
                got.push(v);
            }
            got
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort();
    let mut want: Vec<Bytes> = (0..30).map(|i| Bytes::from(format!("job{i}"))).collect();
    want.sort();
    assert_eq!(all, want, "each value popped exactly once");
    assert!(q.is_empty().await.unwrap());
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_lets_new_and_lagging_runtimes_start_past_a_trim() {
    let c = Cluster::start(3, 3, 1).await;
    let client = c.client().await;
    let writer = Runtime::new(c.client().await);
    let lagging = Runtime::new(c.client().await);
    let (m, hits) = (writer.map("big"), writer.counter("hits"));
    m.put("k0", "v0").await.unwrap();
    // A runtime that read the map early, then saw nothing for a while.
    assert_eq!(lagging.map("big").len().await.unwrap(), 1);
    for i in 1..50 {
        m.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    m.delete("k7").await.unwrap();
    hits.add(3).await.unwrap();
    let at = m.checkpoint().await.unwrap();
    // A checkpoint of every object (the catalog of objects included), and a
    // trim below the oldest: what the checkpointer does.
    let policy = naxos_tango::Policy { behind_positions: 0, trim: true };
    let round = writer.checkpoint_round(&policy).await.unwrap();
    assert!(round.trimmed_to.is_some_and(|t| t >= at), "{round:?}");
    for i in 50..55 {
        m.put(format!("k{i}"), format!("v{i}")).await.unwrap();
    }
    let fresh = Runtime::new(c.client().await);
    let list = fresh.map("big").list().await.unwrap();
    assert_eq!(list.len(), 54, "55 keys put, one deleted");
    assert_eq!(fresh.map("big").get("k54").await.unwrap(), Some(Bytes::from("v54")));
    assert_eq!(fresh.counter("hits").get().await.unwrap(), 3);
    // It replayed only what came after the checkpoint: 5 puts.
    assert_eq!(fresh.stats().applied.load(std::sync::atomic::Ordering::Relaxed), 5);
    // The lagging runtime's next read meets the trim and reloads.
    assert_eq!(lagging.map("big").list().await.unwrap(), list);
    // A trim by hand past an object's checkpoints: a runtime that needs
    // the trimmed positions fails with a clear error instead of reading a
    // wrong state.
    let lost = Runtime::new(c.client().await);
    lost.map("other").put("x", "1").await.unwrap();
    client.trim(client.tail().await.unwrap()).await.unwrap();
    let err = Runtime::new(c.client().await).map("other").get("x").await.unwrap_err();
    assert!(matches!(err, Error::Log(LogError::Trimmed(_))), "{err}");
    c.stop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checkpointer_covers_idle_objects_before_it_trims() {
    let c = Cluster::start(3, 3, 1).await;
    let rt = Runtime::new(c.client().await);
    // An object written once, long ago, then idle.
    rt.counter("idle").add(7).await.unwrap();
    let busy = rt.map("busy");
    for i in 0..30 {
        busy.put(format!("k{i}"), "v").await.unwrap();
    }
    let policy = naxos_tango::Policy { behind_positions: 10, trim: true };
    let round = rt.checkpoint_round(&policy).await.unwrap();
    // The catalog knows both objects (and itself); none had a checkpoint.
    assert_eq!((round.objects, round.checkpointed), (3, 3), "{round:?}");
    let trimmed = round.trimmed_to.expect("trimmed");
    assert!(trimmed.0 > 30, "everything the objects needed is in their checkpoints: {round:?}");
    // Below the trim mark nothing is left, yet every object opens.
    assert!(matches!(rt.client().read(Position(0)).await, Err(LogError::Trimmed(_))));
    let fresh = Runtime::new(c.client().await);
    assert_eq!(fresh.counter("idle").get().await.unwrap(), 7);
    assert_eq!(fresh.map("busy").len().await.unwrap(), 30);
    // A second round right away finds every checkpoint recent enough.
    busy.put("k30", "v").await.unwrap();
    let again = rt.checkpoint_round(&policy).await.unwrap();
    assert_eq!(again.checkpointed, 0, "{again:?}");
    assert_eq!(again.trimmed_to, Some(trimmed), "the oldest latest checkpoint did not move");
    c.stop_all().await;
}
