//! The object commands (naxos-tango): `naxos map`, `naxos counter`,
//! `naxos queue` and `naxos txn`, each one short-lived runtime that replays
//! the objects it touches from the log, does its operation and exits.

use crate::cli::{init_logging, ClusterArg};
use crate::exit::Coded;
use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Subcommand;
use naxos_client::Client;
use naxos_tango::Runtime;
use std::io::{Read, Write};

/// `map get`: the key is absent.
pub const NOT_FOUND: i32 = 10;
/// `map cas`: the current value is not the expected one (nothing changed).
pub const CAS_FAILED: i32 = 11;
/// A transaction aborted on every attempt (conflicts); nothing was applied.
pub const ABORTED: i32 = 12;

/// `naxos map NAME ...`.
#[derive(Subcommand, Debug)]
pub enum MapCommand {
    /// Write the value of KEY to stdout, byte for byte (exit 10 if absent).
    Get {
        /// The key.
        key: String,
    },
    /// Set KEY to VALUE (or to all of stdin when VALUE is absent); prints the update's position.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Option<String>,
    },
    /// Remove KEY; prints the update's position.
    Delete {
        /// The key.
        key: String,
    },
    /// Print every entry of one consistent snapshot, in key order: `KEY<TAB>VALUE`
    /// lines (with --json: `{"key": K, "value": V}` lines).
    List,
    /// Set KEY to NEW only if its value is EXPECTED, atomically (exit 11, changing nothing, if not).
    ///
    /// `--if-absent` expects no value (then give NEW only); `--delete`
    /// removes the key instead of setting NEW.
    Cas {
        /// The key.
        key: String,
        /// The expected value, then the new one (see --if-absent, --delete).
        values: Vec<String>,
        /// Expect the key to be absent.
        #[arg(long)]
        if_absent: bool,
        /// Remove the key instead of setting a new value.
        #[arg(long)]
        delete: bool,
    },
}

/// `naxos counter NAME ...`.
#[derive(Subcommand, Debug)]
pub enum CounterCommand {
    /// Print its value.
    Get,
    /// Add N (may be negative); prints the update's position.
    Add {
        /// How much.
        #[arg(allow_negative_numbers = true)]
        n: i64,
    },
}

/// `naxos queue NAME ...`.
#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// Append VALUE (or all of stdin) at the back; prints the update's position.
    Push {
        /// The value.
        value: Option<String>,
    },
    /// Take the front value and write it to stdout (exit 10 if the queue is empty).
    Pop,
    /// Print how many values it holds.
    Len,
}

async fn runtime(c: &ClusterArg) -> anyhow::Result<Runtime> {
    init_logging("warn");
    let client =
        Client::connect(c.config()?).await.with_context(|| format!("connecting to {}", c.cluster.join(",")))?;
    Ok(Runtime::new(client))
}

fn stdin_or(value: Option<String>) -> anyhow::Result<Bytes> {
    match value {
        Some(v) => Ok(Bytes::from(v)),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading the value from stdin")?;
            Ok(Bytes::from(buf))
        }
    }
}

fn text(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::String(s.to_string()),
        Err(_) => serde_json::json!({ "b64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b) }),
    }
}

fn write_raw(b: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(b).context("writing to stdout")?;
    out.flush().context("writing to stdout")
}

fn position(p: naxos_client::Position, json: bool) {
    if json {
        println!("{}", serde_json::json!({ "position": p.0 }));
    } else {
        println!("{p}");
    }
}

fn tango(e: naxos_tango::Error, what: &str) -> anyhow::Error {
    match e {
        naxos_tango::Error::Log(l) => anyhow::Error::new(l).context(what.to_string()),
        naxos_tango::Error::Aborted { cause, message } => Coded {
            code: ABORTED,
            kind: "aborted",
            message: format!("{what}: the transaction aborted ({cause}) on every attempt: {message}"),
        }
        .into(),
        other => anyhow!(other).context(what.to_string()),
    }
}

/// `naxos map`.
pub async fn map(c: &ClusterArg, name: &str, command: MapCommand, json: bool) -> anyhow::Result<()> {
    let rt = runtime(c).await?;
    let m = rt.map(name);
    match command {
        MapCommand::Get { key } => match m.get(&key).await.map_err(|e| tango(e, "reading the map"))? {
            Some(v) if json => println!("{}", serde_json::json!({ "key": key, "value": text(&v) })),
            Some(v) => write_raw(&v)?,
            None => {
                let message = format!("map {name} has no key {key:?}");
                return Err(Coded { code: NOT_FOUND, kind: "not_found", message }.into());
            }
        },
        MapCommand::Put { key, value } => {
            let p = m.put(key, stdin_or(value)?).await.map_err(|e| tango(e, "writing the map"))?;
            position(p, json);
        }
        MapCommand::Delete { key } => {
            let p = m.delete(key).await.map_err(|e| tango(e, "writing the map"))?;
            position(p, json);
        }
        MapCommand::List => {
            let entries = m.list().await.map_err(|e| tango(e, "reading the map"))?;
            let mut out = std::io::stdout().lock();
            for (k, v) in entries {
                if json {
                    writeln!(out, "{}", serde_json::json!({ "key": text(&k), "value": text(&v) }))
                } else {
                    writeln!(out, "{}\t{}", String::from_utf8_lossy(&k), String::from_utf8_lossy(&v))
                }
                .context("writing to stdout")?;
            }
        }
        MapCommand::Cas { key, values, if_absent, delete } => {
            let want = usize::from(!if_absent) + usize::from(!delete);
            if values.len() != want {
                bail!(
                    "cas takes {want} value(s) here: {}{}",
                    if if_absent { "" } else { "EXPECTED " },
                    if delete { "(and --delete)" } else { "NEW" }
                );
            }
            let expected = (!if_absent).then(|| Bytes::from(values[0].clone()));
            let new = (!delete).then(|| Bytes::from(values[want - 1].clone()));
            let done = m.cas(key.clone(), expected.as_deref(), new).await.map_err(|e| tango(e, "cas"))?;
            if json {
                println!("{}", serde_json::json!({ "succeeded": done }));
            }
            if !done {
                let message = format!("map {name}: the value of {key:?} is not the expected one; nothing changed");
                return Err(Coded { code: CAS_FAILED, kind: "cas_failed", message }.into());
            }
        }
    }
    Ok(())
}

/// `naxos counter`.
pub async fn counter(c: &ClusterArg, name: &str, command: CounterCommand, json: bool) -> anyhow::Result<()> {
    let rt = runtime(c).await?;
    let counter = rt.counter(name);
    match command {
        CounterCommand::Get => {
            let v = counter.get().await.map_err(|e| tango(e, "reading the counter"))?;
            if json {
                println!("{}", serde_json::json!({ "value": v }));
            } else {
                println!("{v}");
            }
        }
        CounterCommand::Add { n } => {
            let p = counter.add(n).await.map_err(|e| tango(e, "adding to the counter"))?;
            position(p, json);
        }
    }
    Ok(())
}

/// `naxos queue`.
pub async fn queue(c: &ClusterArg, name: &str, command: QueueCommand, json: bool) -> anyhow::Result<()> {
    let rt = runtime(c).await?;
    let q = rt.queue(name);
    match command {
        QueueCommand::Push { value } => {
            let p = q.push(stdin_or(value)?).await.map_err(|e| tango(e, "pushing"))?;
            position(p, json);
        }
        QueueCommand::Pop => match q.pop().await.map_err(|e| tango(e, "popping"))? {
            Some(v) if json => println!("{}", serde_json::json!({ "value": text(&v) })),
            Some(v) => write_raw(&v)?,
            None => {
                let message = format!("queue {name} is empty");
                return Err(Coded { code: NOT_FOUND, kind: "empty", message }.into());
            }
        },
        QueueCommand::Len => {
            let n = q.len().await.map_err(|e| tango(e, "reading the queue"))?;
            if json {
                println!("{}", serde_json::json!({ "len": n }));
            } else {
                println!("{n}");
            }
        }
    }
    Ok(())
}

/// One comparison of a `txn` request.
struct Compare {
    map: String,
    key: String,
    /// `None`: the key must be absent.
    equals: Option<String>,
}

/// One operation of a `txn` request.
struct Change {
    map: String,
    key: String,
    /// `None`: delete.
    put: Option<String>,
}

fn field<'a>(o: &'a serde_json::Map<String, serde_json::Value>, name: &str, at: &str) -> anyhow::Result<&'a str> {
    o.get(name).and_then(|v| v.as_str()).ok_or_else(|| anyhow!("{at}: \"{name}\" must be a string"))
}

fn parse_list<T>(
    req: &serde_json::Value,
    name: &str,
    one: impl Fn(&serde_json::Map<String, serde_json::Value>, &str) -> anyhow::Result<T>,
) -> anyhow::Result<Vec<T>> {
    let Some(v) = req.get(name) else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or_else(|| anyhow!("\"{name}\" must be a list"))?;
    list.iter()
        .enumerate()
        .map(|(i, item)| {
            let at = format!("{name}[{i}]");
            let o = item.as_object().ok_or_else(|| anyhow!("{at} must be an object"))?;
            one(o, &at)
        })
        .collect()
}

/// `naxos txn`: an etcd-style transaction from a JSON object on stdin.
pub async fn txn(c: &ClusterArg) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input).context("reading the transaction from stdin")?;
    let req: serde_json::Value = serde_json::from_str(&input).context("the transaction is not JSON")?;
    if !req.is_object() {
        bail!("the transaction must be a JSON object with \"if\", \"then\" and \"else\" lists");
    }
    let compares = parse_list(&req, "if", |o, at| {
        let (map, key) = (field(o, "map", at)?.to_string(), field(o, "key", at)?.to_string());
        match (o.get("equals"), o.get("absent")) {
            (Some(v), None) => Ok(Compare {
                map,
                key,
                equals: Some(v.as_str().ok_or_else(|| anyhow!("{at}: \"equals\" must be a string"))?.to_string()),
            }),
            (None, Some(serde_json::Value::Bool(true))) => Ok(Compare { map, key, equals: None }),
            _ => bail!("{at}: give either \"equals\": VALUE or \"absent\": true"),
        }
    })?;
    let change = |o: &serde_json::Map<String, serde_json::Value>, at: &str| {
        let (map, key) = (field(o, "map", at)?.to_string(), field(o, "key", at)?.to_string());
        match (o.get("put"), o.get("delete")) {
            (Some(v), None) => Ok(Change {
                map,
                key,
                put: Some(v.as_str().ok_or_else(|| anyhow!("{at}: \"put\" must be a string"))?.to_string()),
            }),
            (None, Some(serde_json::Value::Bool(true))) => Ok(Change { map, key, put: None }),
            _ => bail!("{at}: give either \"put\": VALUE or \"delete\": true"),
        }
    };
    let then = parse_list(&req, "then", change)?;
    let otherwise = parse_list(&req, "else", change)?;
    let rt = runtime(c).await?;
    let done = rt
        .transaction(|tx| {
            let mut ok = true;
            for cmp in &compares {
                let now = tx.get(&rt.map(&cmp.map), &cmp.key)?;
                if now.as_deref() != cmp.equals.as_deref().map(str::as_bytes) {
                    ok = false;
                }
            }
            for ch in if ok { &then } else { &otherwise } {
                let m = rt.map(&ch.map);
                match &ch.put {
                    Some(v) => tx.put(&m, ch.key.clone(), v.clone()),
                    None => tx.delete(&m, ch.key.clone()),
                }
            }
            Ok(ok)
        })
        .await
        .map_err(|e| tango(e, "the transaction"))?;
    println!("{}", serde_json::json!({ "succeeded": done.value, "position": done.position.map(|p| p.0) }));
    Ok(())
}

/// `naxos checkpoint`: checkpointer rounds.
pub async fn checkpoint(c: &ClusterArg, behind: u64, trim: bool, every: Option<f64>, json: bool) -> anyhow::Result<()> {
    let rt = runtime(c).await?;
    let policy = naxos_tango::Policy { behind_positions: behind, trim };
    loop {
        let round = rt.checkpoint_round(&policy).await.map_err(|e| tango(e, "a checkpointer round"))?;
        let pos = |p: Option<naxos_client::Position>| p.map(|p| p.0);
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "objects": round.objects, "checkpointed": round.checkpointed,
                    "needed_from": pos(round.needed_from), "trimmed_to": pos(round.trimmed_to),
                })
            );
        } else {
            println!(
                "{} objects, {} checkpointed; the log is needed from {}{}",
                round.objects,
                round.checkpointed,
                round.needed_from.map_or("0".to_string(), |p| p.to_string()),
                round.trimmed_to.map_or(String::new(), |p| format!("; trimmed below {p}"))
            );
        }
        let Some(secs) = every else { return Ok(()) };
        tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
    }
}
