//! The client commands: append, read, tail, trim, fill, scan, stream read,
//! layout and status.

use crate::cli::{init_logging, ClusterArg};
use crate::exit::{Coded, HOLE};
use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use naxos_client::{Client, Config, Position, StreamId, Value};
use naxos_wire::net::TcpNet;
use std::io::{Read, Write};
use std::sync::Arc;

/// Positions read per chunk by `scan`.
const SCAN_CHUNK: u64 = 4096;

async fn connect(c: &ClusterArg) -> anyhow::Result<Client> {
    init_logging("warn");
    Client::connect(Config::new(c.cluster.iter().cloned()))
        .await
        .with_context(|| format!("connecting to {}", c.cluster.join(",")))
}

/// One entry as a JSON line: UTF-8 data as "data", anything else as "data_b64".
fn entry_json(position: u64, payload: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(payload) {
        Ok(s) => serde_json::json!({ "position": position, "data": s }),
        Err(_) => serde_json::json!({
            "position": position,
            "data_b64": base64::engine::general_purpose::STANDARD.encode(payload),
        }),
    }
}

/// `naxos append`.
pub async fn append(c: &ClusterArg, streams: &[String], data: Option<String>, json: bool) -> anyhow::Result<()> {
    let payload = match data {
        Some(d) => Bytes::from(d),
        None => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).context("reading the entry from stdin")?;
            Bytes::from(buf)
        }
    };
    let client = connect(c).await?;
    let ids: Vec<StreamId> = streams.iter().map(|s| StreamId::from_name(s)).collect();
    let pos = client.append_to(&ids, payload).await.context("appending")?;
    if json {
        println!("{}", serde_json::json!({ "position": pos.0 }));
    } else {
        println!("{pos}");
    }
    Ok(())
}

/// `naxos read`.
pub async fn read(c: &ClusterArg, position: u64, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    match client.read(Position(position)).await.with_context(|| format!("reading position {position}"))? {
        Value::Data(r) => {
            if json {
                println!("{}", entry_json(position, &r.payload));
            } else {
                let mut out = std::io::stdout().lock();
                out.write_all(&r.payload).context("writing to stdout")?;
                out.flush().context("writing to stdout")?;
            }
            Ok(())
        }
        Value::Hole => {
            Err(Coded { code: HOLE, kind: "hole", message: format!("position {position} holds a hole") }.into())
        }
    }
}

/// `naxos tail`.
pub async fn tail(c: &ClusterArg, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let t = client.tail().await.context("querying the tail")?;
    if json {
        println!("{}", serde_json::json!({ "tail": t.0 }));
    } else {
        println!("{t}");
    }
    Ok(())
}

/// `naxos trim`.
pub async fn trim(c: &ClusterArg, position: u64, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    client.trim(Position(position)).await.with_context(|| format!("trimming below {position}"))?;
    if json {
        println!("{}", serde_json::json!({ "trimmed_below": position }));
    } else {
        println!("trimmed below {position}");
    }
    Ok(())
}

/// `naxos fill`.
pub async fn fill(c: &ClusterArg, position: u64, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    client.fill(Position(position)).await.with_context(|| format!("filling position {position}"))?;
    if json {
        println!("{}", serde_json::json!({ "filled": position }));
    } else {
        println!("filled {position} with a hole");
    }
    Ok(())
}

/// `naxos scan`.
pub async fn scan(c: &ClusterArg, from: u64, to: Option<u64>) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let tail = client.tail().await.context("querying the tail")?.0;
    let end = to.unwrap_or(tail).min(tail);
    let mut out = std::io::stdout().lock();
    let mut at = from;
    while at < end {
        let chunk_end = end.min(at + SCAN_CHUNK);
        let values = client
            .read_range(Position(at), Position(chunk_end))
            .await
            .with_context(|| format!("reading positions {at}..{chunk_end}"))?;
        for (p, v) in values {
            let line = match v {
                Value::Data(r) => entry_json(p.0, &r.payload),
                Value::Hole => serde_json::json!({ "position": p.0, "hole": true }),
            };
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        at = chunk_end;
    }
    Ok(())
}

/// `naxos stream read`.
pub async fn stream_read(c: &ClusterArg, name: &str, from: u64) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let entries = client
        .read_stream(StreamId::from_name(name), Position(from))
        .await
        .with_context(|| format!("reading stream {name}"))?;
    let mut out = std::io::stdout().lock();
    for (p, r) in entries {
        writeln!(out, "{}", entry_json(p.0, &r.payload)).context("writing to stdout")?;
    }
    Ok(())
}

/// `naxos layout`.
pub async fn layout(c: &ClusterArg, history: bool, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let l = client.layout();
    if history {
        if json {
            println!("{}", serde_json::to_string_pretty(&l.history)?);
            return Ok(());
        }
        println!("{:>6}  {:<24}  WHY", "EPOCH", "WHEN (UTC)");
        for h in &l.history {
            println!("{:>6}  {:<24}  {}", h.epoch, when(h.unix_ms), h.reason);
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(l.as_ref())?);
        return Ok(());
    }
    println!("cluster {} at epoch {}", l.cluster_id, l.epoch);
    println!("sequencers (first is primary): {}", l.sequencers.join(", "));
    println!("layout servers: {}", l.layout_servers.join(", "));
    println!("replication {}, min replicas {} (appends to a chain with fewer fail)", l.replication, l.min_replicas());
    for a in &l.away {
        println!("away since epoch {}: {} (taken out as failed; put back when it answers)", a.since_epoch, a.addr);
    }
    println!("{:<8} {:>12} {:>12}  CHAINS (head first)", "SEGMENT", "START", "END");
    for seg in &l.segments {
        let chains: Vec<String> = seg.stripes.iter().map(|s| s.chain.join(" > ")).collect();
        println!(
            "{:<8} {:>12} {:>12}  {}",
            if seg.end.is_some() { "sealed" } else { "active" },
            seg.start,
            seg.end.map_or("-".to_string(), |e| e.to_string()),
            chains.join(" | ")
        );
    }
    Ok(())
}

/// A Unix time in milliseconds as `YYYY-MM-DD HH:MM:SS.mmm` (UTC); "-" if unknown.
fn when(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// `naxos status`.
pub async fn status(c: &ClusterArg, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    // The nodes the layout names, or the given addresses if none answers with a layout.
    let nodes = match Client::connect(Config::new(c.cluster.iter().cloned())).await {
        Ok(client) => client.layout().all_nodes(),
        Err(_) => c.cluster.clone(),
    };
    let mut rows = Vec::new();
    for addr in &nodes {
        let row = match naxos_client::admin::status(Arc::new(TcpNet), addr).await {
            Ok(s) => serde_json::json!({
                "address": addr, "reachable": true, "roles": s.roles, "epoch": s.epoch,
                "tail": s.tail, "bootstrapped": s.bootstrapped, "cluster_id": s.cluster_id,
                "sequencer_ready": s.sequencer_ready, "node_id": format!("{:016x}", s.node_id),
            }),
            Err(e) => serde_json::json!({ "address": addr, "reachable": false, "error": e.to_string() }),
        };
        rows.push(row);
    }
    if json {
        println!("{}", serde_json::Value::Array(rows.clone()));
    } else {
        println!("{:<24} {:<28} {:>6} {:>10} {:>12}", "ADDRESS", "ROLES", "EPOCH", "REACHABLE", "TAIL");
        for r in &rows {
            let roles =
                r["roles"].as_array().map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(","));
            println!(
                "{:<24} {:<28} {:>6} {:>10} {:>12}",
                r["address"].as_str().unwrap_or("?"),
                roles.unwrap_or_else(|| "-".into()),
                r["epoch"].as_u64().map_or("-".into(), |e| e.to_string()),
                if r["reachable"].as_bool() == Some(true) { "yes" } else { "no" },
                r["tail"].as_u64().map_or("-".into(), |t| t.to_string()),
            );
        }
    }
    if rows.iter().all(|r| r["reachable"].as_bool() != Some(true)) {
        return Err(
            Coded { code: crate::exit::UNAVAILABLE, kind: "unavailable", message: "no node answered".into() }.into()
        );
    }
    Ok(())
}
