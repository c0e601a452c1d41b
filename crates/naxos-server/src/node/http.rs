//! The node's HTTP listener (`--metrics-listen`): the Prometheus metrics at
//! `/metrics`, the status page at `/` (see `page`), and the sampler that
//! keeps the gauges and the page's rates current (epoch, chains, disk,
//! catch-up, suspicions). It is plain TCP on real sockets only: the
//! simulator never starts it.

use super::page::{self, Rates};
use super::{until_stopped, Ctx};
use crate::{metrics, Error};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often the gauges are sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(1);
/// How often the data directory's size is summed (it walks every file).
const DATA_SIZE_EVERY: u32 = 10;

/// Installs the recorder, binds `listen` and serves until the node stops.
/// Returns the bound address.
pub(super) async fn start(ctx: &Arc<Ctx>, listen: &str) -> Result<SocketAddr, Error> {
    metrics::install().map_err(Error::Config)?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Io { context: format!("binding the metrics listener {listen}"), source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| Error::Io { context: "reading the metrics listener's address".into(), source })?;
    let rates: Arc<Mutex<Rates>> = Arc::default();
    let (actx, arates) = (ctx.clone(), rates.clone());
    tokio::spawn(async move {
        let mut shutdown = actx.shutdown.clone();
        loop {
            tokio::select! {
                _ = until_stopped(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (ctx, rates) = (actx.clone(), arates.clone());
                        tokio::spawn(async move {
                            let service = hyper::service::service_fn(move |req| {
                                let answer = route(&ctx, &rates, &req);
                                async move { Ok::<_, Infallible>(answer) }
                            });
                            let io = hyper_util::rt::TokioIo::new(stream);
                            if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                                tracing::debug!("metrics connection: {e}");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!("metrics listener: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    });
    let sctx = ctx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SAMPLE_EVERY);
        let mut shutdown = sctx.shutdown.clone();
        let mut n: u32 = 0;
        loop {
            tokio::select! {
                _ = until_stopped(&mut shutdown) => break,
                _ = tick.tick() => {
                    if let (Some(m), Ok(mut r)) = (metrics::get(), rates.lock()) {
                        use std::sync::atomic::Ordering::Relaxed;
                        r.sample(m.totals.appends.load(Relaxed), m.totals.reads.load(Relaxed));
                    }
                    sample(&sctx, n.is_multiple_of(DATA_SIZE_EVERY)).await;
                    n = n.wrapping_add(1);
                }
            }
        }
    });
    Ok(addr)
}

fn route(ctx: &Arc<Ctx>, rates: &Mutex<Rates>, req: &Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
    match req.uri().path() {
        "/metrics" => reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics::render()),
        "/" => match rates.lock() {
            Ok(r) => reply(StatusCode::OK, "text/html; charset=utf-8", page::render(ctx, &r)),
            Err(_) => {
                reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", "rates lock poisoned\n".into())
            }
        },
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", "not found: try / or /metrics\n".to_string()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
    r
}

/// Updates every gauge; with `sizes`, also the data directory's size.
async fn sample(ctx: &Arc<Ctx>, sizes: bool) {
    let Some(m) = metrics::get() else { return };
    m.epoch.set(ctx.fence.get().0 as f64);
    let chains = ctx.layout.lock().ok().and_then(|l| {
        let layout = l.get()?;
        let open = layout.segments.last()?;
        Some(open.stripes.iter().filter(|s| s.chain.iter().any(|a| *a == ctx.advertise)).count())
    });
    m.chains.set(chains.unwrap_or(0) as f64);
    let (done, total, bytes, suspected) = match ctx.health.lock() {
        Ok(h) => {
            let (done, total, bytes) = h.copying.as_ref().map_or((0, 0, 0), |(_, p, _)| {
                use std::sync::atomic::Ordering::Relaxed;
                (p.positions_done.load(Relaxed), p.positions_total.load(Relaxed), p.bytes.load(Relaxed))
            });
            let suspected = h.manager.as_ref().map_or(0, |man| man.detector.suspects(ctx.started.elapsed()).len());
            (done, total, bytes, suspected)
        }
        Err(_) => (0, 0, 0, 0),
    };
    m.catch_up_positions_done.set(done as f64);
    m.catch_up_positions_total.set(total as f64);
    m.catch_up_bytes.set(bytes as f64);
    m.suspected_nodes.set(suspected as f64);
    let dir = ctx.config.data_dir.clone();
    let measured = tokio::task::spawn_blocking(move || {
        let used = sizes.then(|| dir_bytes(&dir));
        (used, fs4::available_space(&dir).ok(), fs4::total_space(&dir).ok())
    })
    .await;
    if let Ok((used, free, total)) = measured {
        if let Some(used) = used {
            m.data_bytes.set(used as f64);
        }
        if let Some(free) = free {
            m.disk_free_bytes.set(free as f64);
        }
        if let Some(total) = total {
            m.disk_total_bytes.set(total as f64);
        }
    }
}

/// Bytes of the files under `dir` (what cannot be read counts as nothing).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}
