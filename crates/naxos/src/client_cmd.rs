//! The client commands: append, read, tail, trim, fill, scan, stream read,
//! layout and status.

use crate::cli::{init_logging, ClusterArg};
use crate::exit::{Coded, HOLE};
use anyhow::Context;
use base64::Engine;
use bytes::Bytes;
use naxos_client::{Client, Position, StreamId, Value};
use std::io::{Read, Write};
use std::time::Duration;

/// Positions read per chunk by `scan`.
const SCAN_CHUNK: u64 = 4096;

async fn connect(c: &ClusterArg) -> anyhow::Result<Client> {
    init_logging("warn");
    Client::connect(c.config()?).await.with_context(|| format!("connecting to {}", c.cluster.join(",")))
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
pub async fn read(c: &ClusterArg, position: u64, no_fill: bool, json: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let value = if no_fill {
        let found = client.peek(Position(position)).await.with_context(|| format!("reading position {position}"))?;
        found.ok_or_else(|| Coded {
            code: crate::exit::UNWRITTEN,
            kind: "unwritten",
            message: format!("position {position} is unwritten (--no-fill: nothing was filled)"),
        })?
    } else {
        client.read(Position(position)).await.with_context(|| format!("reading position {position}"))?
    };
    match value {
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

/// How long `--follow` waits for something new per long poll.
const FOLLOW_WAIT: Duration = Duration::from_secs(1);

/// `naxos scan`.
pub async fn scan(c: &ClusterArg, from: Option<u64>, to: Option<u64>, follow: bool) -> anyhow::Result<()> {
    if let (Some(f), Some(t)) = (from, to) {
        if t < f {
            return Err(Coded {
                code: crate::exit::USAGE,
                kind: "usage",
                message: format!("--to {t} is below --from {f}: the range is [--from, --to)"),
            }
            .into());
        }
    }
    let client = connect(c).await?;
    let from = match from {
        Some(f) => f,
        None => client.trim_mark().await.context("finding the trim mark")?.0,
    };
    let mut tail = client.tail().await.context("querying the tail")?.0;
    // A bar while a large range goes into a file (not when following, not
    // onto a terminal, where the lines themselves show the progress).
    let bar = if follow || std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        indicatif::ProgressBar::hidden()
    } else {
        crate::progress::bar(to.unwrap_or(tail).min(tail).saturating_sub(from), "scanning positions")
    };
    let mut out = std::io::stdout().lock();
    let mut at = from;
    loop {
        let end = to.unwrap_or(tail).min(tail);
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
            out.flush().context("writing to stdout")?;
            bar.inc(chunk_end - at);
            at = chunk_end;
        }
        if !follow {
            bar.finish_and_clear();
            return Ok(());
        }
        // Wait (a long poll of the sequencer) until the tail passes `at`.
        tail = client.wait_tails(&[], Position(at), FOLLOW_WAIT).await.context("waiting for the tail to move")?.tail;
    }
}

/// `naxos stream read`.
pub async fn stream_read(c: &ClusterArg, name: &str, from: Option<u64>, follow: bool) -> anyhow::Result<()> {
    let client = connect(c).await?;
    let stream = StreamId::from_name(name);
    let from = match from {
        Some(f) => f,
        None => client.trim_mark().await.context("finding the trim mark")?.0,
    };
    let mut out = std::io::stdout().lock();
    if follow {
        let mut sub = client.subscribe(stream, Position(from));
        loop {
            let (p, r) = sub.next().await.with_context(|| format!("following stream {name}"))?;
            writeln!(out, "{}", entry_json(p.0, &r.payload)).context("writing to stdout")?;
            out.flush().context("writing to stdout")?;
        }
    }
    let entries = client.read_stream(stream, Position(from)).await.with_context(|| format!("reading stream {name}"))?;
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
            println!(
                "{:>6}  {:<24}  {}",
                h.epoch,
                if h.unix_ms == 0 { "-".to_string() } else { naxos_control::reconfig::utc(h.unix_ms) },
                h.reason
            );
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

/// `naxos status`: every node the layout names (and those away and the
/// spares), what the acting manager thinks of each, and whether the cluster
/// is whole. Exits `DEGRADED` when a node is unreachable or a chain is short.
pub async fn status(c: &ClusterArg, json: bool) -> anyhow::Result<()> {
    init_logging("warn");
    // The nodes the layout names, or the given addresses if none answers with a layout.
    let layout = Client::connect(c.config()?).await.ok().map(|c| c.layout());
    let mut nodes = layout.as_ref().map_or_else(|| c.cluster.clone(), |l| l.all_nodes());
    for a in layout.iter().flat_map(|l| l.away.iter()) {
        if !nodes.contains(&a.addr) {
            nodes.push(a.addr.clone());
        }
    }
    let net = c.tls.net()?;
    let answers = futures::future::join_all(nodes.iter().map(|addr| {
        let net = net.clone();
        async move {
            let s = naxos_client::admin::status(net.clone(), addr).await;
            let h = naxos_client::admin::heartbeat(net, addr).await.ok();
            (s, h)
        }
    }))
    .await;
    // The acting manager's view: whom it suspects, its catch-up, its spares.
    let acting = answers.iter().zip(&nodes).find(|((_, h), _)| h.as_ref().is_some_and(|h| h.acting_manager));
    let manager = acting.map(|(_, a)| a.clone());
    let view = acting.and_then(|((_, h), _)| h.clone()).unwrap_or_default();
    for s in &view.spares {
        if !nodes.contains(s) {
            nodes.push(s.clone());
        }
    }
    let epoch = layout.as_ref().map_or(0, |l| l.epoch);
    let mut rows = Vec::new();
    let mut unreachable = 0;
    for (i, addr) in nodes.iter().enumerate() {
        let (status, beat) = match answers.get(i) {
            Some((s, h)) => (s.as_ref().ok().cloned(), h.clone()),
            None => (naxos_client::admin::status(net.clone(), addr).await.ok(), None),
        };
        let away = layout.as_ref().is_some_and(|l| l.away.iter().any(|a| a.addr == *addr));
        let spare = view.spares.contains(addr);
        let chains: Vec<usize> = layout
            .as_ref()
            .and_then(|l| l.segments.last())
            .map(|seg| seg.stripes.iter().enumerate().filter(|(_, s)| s.chain.contains(addr)).map(|(k, _)| k).collect())
            .unwrap_or_default();
        let reachable = status.is_some();
        if !reachable && !spare {
            unreachable += 1;
        }
        let node_epoch = status.as_ref().map(|s| s.epoch);
        let state = if !reachable {
            "unreachable"
        } else if view.suspected.contains(addr) {
            "suspected"
        } else if away || node_epoch.is_some_and(|e| e < epoch) {
            "fenced"
        } else if spare {
            "spare"
        } else {
            "ok"
        };
        let catch_up = view.catch_up.as_ref().filter(|p| p.addr == *addr).map(|p| {
            let rate = if p.elapsed_ms == 0 { 0.0 } else { p.bytes_copied as f64 * 1000.0 / p.elapsed_ms as f64 };
            let left = if p.positions_done == 0 || p.positions_total == 0 {
                None
            } else {
                let share = p.positions_done as f64 / p.positions_total as f64;
                Some(p.elapsed_ms as f64 / 1000.0 * (1.0 / share - 1.0))
            };
            serde_json::json!({
                "bytes_copied": p.bytes_copied, "bytes_to_copy": p.bytes_total,
                "bytes_per_s": rate as u64, "seconds_left": left,
                "positions_done": p.positions_done, "positions_total": p.positions_total,
            })
        });
        let mut row = serde_json::json!({
            "address": addr, "state": state, "reachable": reachable, "chains": chains,
            "manager": manager.as_deref() == Some(addr.as_str()), "catch_up": catch_up,
        });
        if let Some(s) = &status {
            row["roles"] = serde_json::json!(s.roles);
            row["epoch"] = serde_json::json!(s.epoch);
            row["tail"] = serde_json::json!(s.tail);
            row["bootstrapped"] = serde_json::json!(s.bootstrapped);
            row["cluster_id"] = serde_json::json!(s.cluster_id);
            row["sequencer_ready"] = serde_json::json!(s.sequencer_ready);
            row["node_id"] = serde_json::json!(format!("{:016x}", s.node_id));
        }
        if let Some(e) = beat.as_ref().map(|b| b.last_error.clone()).filter(|e| !e.is_empty()) {
            row["last_error"] = serde_json::json!(e);
        }
        rows.push(row);
    }
    let short: Vec<(usize, usize)> = layout.as_ref().map(|l| l.under_replicated()).unwrap_or_default();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "epoch": epoch, "manager": manager, "nodes": rows,
                "short_chains": short.iter().map(|(i, m)| serde_json::json!({"chain": i, "missing": m})).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{:<22} {:<12} {:<34} {:>6} {:<8} {:>10}  CATCH-UP",
            "ADDRESS", "STATE", "ROLES", "EPOCH", "CHAINS", "TAIL"
        );
        for r in &rows {
            let list = |v: &serde_json::Value| {
                v.as_array().map(|a| {
                    a.iter().map(|x| x.to_string().trim_matches('"').to_string()).collect::<Vec<_>>().join(",")
                })
            };
            let mut state = r["state"].as_str().unwrap_or("?").to_string();
            if r["manager"].as_bool() == Some(true) {
                state.push('*');
            }
            let catch_up = match &r["catch_up"] {
                serde_json::Value::Null => String::new(),
                p => format!(
                    "{} of ~{} bytes at {}/s, {} left",
                    p["bytes_copied"],
                    p["bytes_to_copy"],
                    p["bytes_per_s"],
                    p["seconds_left"].as_f64().map_or("?".into(), |s| format!("{s:.1} s"))
                ),
            };
            println!(
                "{:<22} {:<12} {:<34} {:>6} {:<8} {:>10}  {}",
                r["address"].as_str().unwrap_or("?"),
                state,
                list(&r["roles"]).unwrap_or_else(|| "-".into()),
                r["epoch"].as_u64().map_or("-".into(), |e| e.to_string()),
                list(&r["chains"]).filter(|s| !s.is_empty()).unwrap_or_else(|| "-".into()),
                r["tail"].as_u64().map_or("-".into(), |t| t.to_string()),
                catch_up,
            );
        }
        if manager.is_some() {
            println!("(* the acting manager)");
        }
        for (i, missing) in &short {
            println!("chain {i} is short of {missing} replica(s)");
        }
    }
    if rows.iter().all(|r| r["reachable"].as_bool() != Some(true)) {
        return Err(
            Coded { code: crate::exit::UNAVAILABLE, kind: "unavailable", message: "no node answered".into() }.into()
        );
    }
    if unreachable > 0 || !short.is_empty() {
        return Err(Coded {
            code: crate::exit::DEGRADED,
            kind: "degraded",
            message: format!(
                "the cluster is degraded: {unreachable} node(s) unreachable, {} chain(s) short of replicas",
                short.len()
            ),
        }
        .into());
    }
    Ok(())
}
