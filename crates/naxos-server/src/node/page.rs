//! The status page (`/` on the metrics listener): one self-contained HTML
//! document rendered on the server, with no script and nothing fetched from
//! elsewhere (it works with no internet), which reloads itself every few
//! seconds. It shows this node's view: the layout, every node's health as
//! this node's manager hears it, appends and reads per second over the last
//! minutes as an inline SVG chart, the running catch-up, and the layout's
//! recent reconfigurations with their reasons.

use super::Ctx;
use naxos_wire::Layout;
use std::collections::VecDeque;
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Seconds of rates the chart shows.
pub(super) const RATE_SECONDS: usize = 300;
/// How often the page reloads itself.
const REFRESH_SECONDS: u32 = 2;

/// Appends and reads per second, one sample a second, oldest first.
#[derive(Default)]
pub(super) struct Rates {
    samples: VecDeque<(f64, f64)>,
    last: Option<(u64, u64, std::time::Instant)>,
}

impl Rates {
    /// Takes one sample of the running totals.
    pub(super) fn sample(&mut self, appends: u64, reads: u64) {
        let now = std::time::Instant::now();
        if let Some((a, r, t)) = self.last {
            let secs = now.duration_since(t).as_secs_f64().max(1e-3);
            self.samples.push_back((appends.saturating_sub(a) as f64 / secs, reads.saturating_sub(r) as f64 / secs));
            while self.samples.len() > RATE_SECONDS {
                self.samples.pop_front();
            }
        }
        self.last = Some((appends, reads, now));
    }
}

/// Escapes text for HTML.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A Unix time in milliseconds as UTC text ("unknown" for 0).
fn utc(ms: u64) -> String {
    if ms == 0 {
        return "unknown".into();
    }
    format!("{} UTC", naxos_control::reconfig::utc(ms))
}

/// The page.
pub(super) fn render(ctx: &Arc<Ctx>, rates: &Rates) -> String {
    let layout = ctx.layout.lock().ok().and_then(|l| l.get().cloned());
    let mut h = String::with_capacity(16 << 10);
    let title = format!("Naxos — {}", ctx.advertise);
    let _ = write!(
        h,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>{}</title><style>{STYLE}</style></head><body>",
        esc(&title)
    );
    let _ = write!(h, "<h1>{}</h1>", esc(&title));
    let epoch = ctx.fence.get().0.max(layout.as_ref().map_or(0, |l| l.epoch));
    let _ = write!(
        h,
        "<p class=\"facts\">cluster <b id=\"cluster\">{}</b> · epoch <b id=\"epoch\">{epoch}</b> · roles {} · \
         version {}</p>",
        esc(ctx.cluster.get().map_or("(not bootstrapped)", String::as_str)),
        esc(&ctx.config.roles.names().join(", ")),
        esc(naxos_wire::VERSION),
    );
    match &layout {
        Some(l) => {
            layout_section(&mut h, l);
            nodes_section(&mut h, ctx, l);
        }
        None => {
            h.push_str("<p>This node holds no layout yet: bootstrap the cluster (<code>naxos bootstrap</code>).</p>")
        }
    }
    chart_section(&mut h, rates);
    catch_up_section(&mut h, ctx);
    if let Some(l) = &layout {
        history_section(&mut h, ctx, l);
    }
    h.push_str("<p class=\"foot\">Metrics for Prometheus: <a href=\"/metrics\">/metrics</a>.</p></body></html>");
    h
}

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}\
h1{font-size:20px}h2{font-size:16px;margin-top:1.4em}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}\
th{background:#f3f3f3}.up{color:#176b1d}.bad{color:#b00020;font-weight:bold}.warn{color:#9a6700}\
.facts{color:#555}.foot{color:#777;margin-top:2em}svg{border:1px solid #ccc;background:#fcfcfc}";

fn layout_section(h: &mut String, l: &Layout) {
    h.push_str("<h2>Layout</h2><p>");
    let _ = write!(
        h,
        "sequencer <b>{}</b>{} · layout servers {} · min replicas {} · tail floor {}",
        esc(l.sequencers.first().map_or("(none)", String::as_str)),
        if l.sequencers.len() > 1 {
            format!(" (standbys: {})", esc(&l.sequencers[1..].join(", ")))
        } else {
            String::new()
        },
        esc(&l.layout_servers.join(", ")),
        l.min_replicas.max(1),
        l.tail_floor,
    );
    h.push_str("</p><table id=\"segments\"><tr><th>segment</th><th>positions</th><th>chains (head first)</th></tr>");
    for (i, s) in l.segments.iter().enumerate() {
        let range = match s.end {
            Some(e) => format!("{} – {} (sealed)", s.start, e),
            None => format!("{} – (open)", s.start),
        };
        let chains: Vec<String> = s.stripes.iter().map(|st| esc(&st.chain.join(" → "))).collect();
        let _ = write!(h, "<tr><td>{i}</td><td>{range}</td><td>{}</td></tr>", chains.join("<br>"));
    }
    h.push_str("</table>");
}

fn nodes_section(h: &mut String, ctx: &Arc<Ctx>, l: &Layout) {
    h.push_str("<h2>Nodes</h2><table id=\"nodes\"><tr><th>node</th><th>in the layout as</th><th>health</th></tr>");
    let mut nodes = l.all_nodes();
    for a in &l.away {
        if !nodes.contains(&a.addr) {
            nodes.push(a.addr.clone());
        }
    }
    let now = ctx.started.elapsed();
    let health = ctx.health.lock().ok();
    let manager = health.as_ref().and_then(|g| g.manager.as_ref());
    let open = l.segments.last();
    for addr in &nodes {
        let mut roles = Vec::new();
        if l.sequencers.first() == Some(addr) {
            roles.push("primary sequencer".to_string());
        } else if l.sequencers.contains(addr) {
            roles.push("standby sequencer".to_string());
        }
        if l.layout_servers.contains(addr) {
            roles.push("layout server".to_string());
        }
        if let Some(seg) = open {
            let chains = seg.stripes.iter().filter(|s| s.chain.contains(addr)).count();
            if chains > 0 {
                roles.push(format!("replica of {chains} chain(s)"));
            }
        }
        let away = l.away.iter().find(|a| a.addr == *addr);
        let (class, state) = if let Some(a) = away {
            ("bad", format!("away: taken out at epoch {}, put back once it answers and is caught up", a.since_epoch))
        } else if *addr == ctx.advertise {
            let failed = ctx.unit_failed.load(Relaxed);
            if failed {
                ("bad", "this node: its log unit failed (restart it)".to_string())
            } else {
                ("up", "this node: serving".to_string())
            }
        } else {
            match manager {
                None => ("warn", "unknown (this node does not run the management role)".to_string()),
                Some(m) if m.detector.seen(addr).is_some_and(|s| s.unit_failed) => {
                    ("bad", "its log unit failed (restart it)".to_string())
                }
                Some(m) if m.detector.suspected(addr, now) => ("bad", "suspected: no answer to heartbeats".to_string()),
                Some(m) => match m.detector.up_for(addr, now) {
                    Some(d) => ("up", format!("answers heartbeats (up for {}s)", d.as_secs())),
                    None => ("warn", "no answer yet".to_string()),
                },
            }
        };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            esc(addr),
            esc(&roles.join(", ")),
            esc(&state)
        );
    }
    h.push_str("</table>");
}

fn chart_section(h: &mut String, rates: &Rates) {
    const W: f64 = 600.0;
    const H: f64 = 140.0;
    let s = &rates.samples;
    let last = s.back().copied().unwrap_or((0.0, 0.0));
    let _ = write!(
        h,
        "<h2>Throughput</h2><p id=\"rates\">now: <b>{:.0}</b> appends/s, <b>{:.0}</b> reads/s (log unit entries; \
         last {} s)</p>",
        last.0,
        last.1,
        s.len()
    );
    let top = s.iter().map(|(a, r)| a.max(*r)).fold(1.0_f64, f64::max);
    let line = |pick: fn(&(f64, f64)) -> f64| -> String {
        s.iter()
            .enumerate()
            .map(|(i, v)| {
                let x = W * (i as f64 + (RATE_SECONDS - s.len()) as f64) / (RATE_SECONDS - 1).max(1) as f64;
                let y = H - H * pick(v) / top;
                format!("{x:.1},{y:.1}")
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    let _ = write!(
        h,
        "<svg id=\"chart\" width=\"{W}\" height=\"{}\" viewBox=\"0 -14 {W} {}\" role=\"img\" \
         aria-label=\"appends and reads per second\">\
         <text x=\"4\" y=\"-2\" font-size=\"11\">{top:.0}/s</text>\
         <polyline fill=\"none\" stroke=\"#1f6feb\" stroke-width=\"1.5\" points=\"{}\"/>\
         <polyline fill=\"none\" stroke=\"#d4622a\" stroke-width=\"1.5\" points=\"{}\"/></svg>\
         <p><span style=\"color:#1f6feb\">■ appends/s</span> &nbsp; <span style=\"color:#d4622a\">■ reads/s</span> \
         &nbsp; over the last {} minutes</p>",
        H + 14.0,
        H + 14.0,
        line(|v| v.0),
        line(|v| v.1),
        RATE_SECONDS / 60
    );
}

fn catch_up_section(h: &mut String, ctx: &Arc<Ctx>) {
    h.push_str("<h2>Catch-up</h2><p id=\"catch-up\">");
    let copying = ctx.health.lock().ok().and_then(|g| {
        g.copying.as_ref().map(|(to, p, since)| {
            (to.clone(), p.positions_done.load(Relaxed), p.positions_total.load(Relaxed), p.bytes.load(Relaxed), *since)
        })
    });
    match copying {
        Some((to, done, total, bytes, since)) => {
            let pct = if total > 0 { 100.0 * done as f64 / total as f64 } else { 0.0 };
            let _ = write!(
                h,
                "copying to <b>{}</b>: {done} of {total} positions ({pct:.0}%), {bytes} bytes, for {}s",
                esc(&to),
                since.elapsed().as_secs()
            );
        }
        None => h.push_str("none running (this node's manager copies to a node it puts back or adds)"),
    }
    if let Some(err) = ctx.health.lock().ok().map(|g| g.last_error.clone()).filter(|e| !e.is_empty()) {
        let _ = write!(h, "<br><span class=\"warn\">last automatic reconfiguration failed: {}</span>", esc(&err));
    }
    h.push_str("</p>");
}

fn history_section(h: &mut String, _ctx: &Arc<Ctx>, l: &Layout) {
    h.push_str(
        "<h2>Recent reconfigurations</h2><table id=\"history\"><tr><th>epoch</th><th>when</th><th>why</th></tr>",
    );
    for c in l.history.iter().rev() {
        let _ = write!(h, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", c.epoch, utc(c.unix_ms), esc(&c.reason));
    }
    h.push_str("</table>");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_escapes() {
        assert_eq!(utc(0), "unknown");
        assert_eq!(utc(1_764_547_200_000), "2025-12-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_000 + 3_723_004), "2000-02-29 01:02:03.004 UTC");
        assert_eq!(esc("<a href=\"x\">&'"), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
    }

    #[test]
    fn rates_are_per_second_and_bounded() {
        let mut r = Rates::default();
        r.sample(0, 0);
        assert!(r.samples.is_empty());
        r.last = r.last.map(|(a, b, t)| (a, b, t - std::time::Duration::from_secs(2)));
        r.sample(200, 50);
        let (a, b) = r.samples[0];
        assert!((a - 100.0).abs() < 5.0 && (b - 25.0).abs() < 2.0, "{a} {b}");
        for i in 0..(RATE_SECONDS as u64 + 10) {
            r.sample(300 + i, 60);
        }
        assert_eq!(r.samples.len(), RATE_SECONDS);
    }
}
