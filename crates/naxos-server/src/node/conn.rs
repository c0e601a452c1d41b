//! One client connection: its reader decodes frames (after a walk of their
//! bytes that refuses what decoding would silently accept), enforces the
//! in-flight limit and the admin-only requests of TLS roles, stops reading
//! while too many bytes of answers wait for the peer to read them, and hands
//! each request to `dispatch`; its writer coalesces answers. Also the
//! refusal of a connection beyond `--connections-max`.

use super::{dispatch, until_stopped, Ctx};
use crate::metrics;
use crate::reply::{Outbox, Reply, BACKLOG_BYTES_MAX};
use naxos_wire::frame::{self, FrameReader};
use naxos_wire::net::{BoxStream, Role};
use naxos_wire::proto::{request, response, Request, Response};
use naxos_wire::{ErrorCode, ServerError};
use prost::Message;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Answers a connection beyond `--connections-max` with one `Overloaded`
/// frame (request id 0: the refusal comes before any request) and closes it.
pub(super) async fn refuse_conn(mut stream: BoxStream, max: usize) {
    use tokio::io::AsyncWriteExt;
    let e = ServerError::new(
        ErrorCode::Overloaded,
        format!("this server already serves {max} connections (--connections-max); try again later"),
    );
    let mut buf = bytes::BytesMut::new();
    frame::encode(&Response { id: 0, body: Some(response::Body::Error(e.to_proto())) }, &mut buf);
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(&buf).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// Whether a request needs an admin's certificate (with TLS on): what
/// changes the cluster rather than its data (bootstrap, layouts, seals,
/// sequencer bootstrap and ceilings, trims, spare announcements).
fn needs_admin(body: &request::Body) -> bool {
    use request::Body as B;
    match body {
        B::Bootstrap(_)
        | B::CommitLayout(_)
        | B::LayoutPrepare(_)
        | B::LayoutAccept(_)
        | B::Seal(_)
        | B::Trim(_)
        | B::SeqBootstrap(_)
        | B::StoreCeiling(_) => true,
        // A repair replaces a damaged record without the write-once check a
        // client's write gets: the node's own mender and a catch-up send it.
        B::Write(w) => w.repair,
        B::Heartbeat(h) => h.spare,
        B::Batch(b) => b.requests.iter().any(|r| r.body.as_ref().is_some_and(needs_admin)),
        _ => false,
    }
}

/// Positions one connection may reserve per second, sustained (`Token`
/// counts, one per entry of an `Append`), with bursts of twice as many;
/// beyond, its token requests are answered `Overloaded` (docs/operations.md).
/// Each position burnt and never written costs readers a hole fill: one
/// request once burnt 2^28.
pub const TOKEN_POSITIONS_PER_S: u64 = 1 << 22;

/// A connection's allowance of positions: a token bucket.
struct PositionBudget {
    left: f64,
    at: tokio::time::Instant,
}

impl PositionBudget {
    fn new() -> PositionBudget {
        PositionBudget { left: 2.0 * TOKEN_POSITIONS_PER_S as f64, at: tokio::time::Instant::now() }
    }

    /// Takes `n` positions if the budget has them.
    fn take(&mut self, n: u64) -> bool {
        let now = tokio::time::Instant::now();
        let rate = TOKEN_POSITIONS_PER_S as f64;
        self.left = (self.left + now.duration_since(self.at).as_secs_f64() * rate).min(2.0 * rate);
        self.at = now;
        if n as f64 > self.left {
            return false;
        }
        self.left -= n as f64;
        true
    }
}

/// The positions a request asks the sequencer for.
fn positions_asked(body: &request::Body) -> u64 {
    use request::Body as B;
    match body {
        B::Token(t) => u64::from(t.count),
        B::Append(a) => a.entries.len() as u64,
        B::Batch(b) => b.requests.iter().filter_map(|r| r.body.as_ref()).map(positions_asked).sum(),
        _ => 0,
    }
}

/// Whether a request's answer may be large (bulk bytes read back).
fn is_read(body: &request::Body) -> bool {
    use request::Body as B;
    match body {
        B::Read(_) | B::ReadRange(_) | B::RangeDigest(_) | B::StreamQuery(_) => true,
        B::Batch(b) => b.requests.iter().any(|r| r.body.as_ref().is_some_and(is_read)),
        _ => false,
    }
}

pub(super) async fn serve_conn(ctx: Arc<Ctx>, stream: BoxStream, peer: SocketAddr, role: Role) {
    let (r, w) = tokio::io::split(stream);
    let (outbox, rx, backlog) = Outbox::new();
    let writer = tokio::spawn(backlog.write_loop(w, rx));
    let mut reader = FrameReader::new(r, ctx.config.frame_bytes_max).with_stall_timeout(ctx.config.frame_stall_timeout);
    let mut shutdown = ctx.shutdown.clone();
    let mut budget = PositionBudget::new();
    loop {
        let next = tokio::select! {
            biased;
            _ = until_stopped(&mut shutdown) => break,
            // A peer that does not read its answers is not read from either
            // until they drain: TCP holds it back, not the server's memory.
            next = async {
                outbox.drained_to(BACKLOG_BYTES_MAX).await;
                reader.next_frame().await
            } => next,
        };
        let refuse = |id: u64, why: String| {
            let e = ServerError::new(ErrorCode::BadRequest, why);
            outbox.refuse(Response { id, body: Some(response::Body::Error(e.to_proto())) });
        };
        let next = match next {
            // Looked at before it is decoded: two bodies, an oversized or
            // nested batch are refused (the frame boundary is intact, so the
            // connection goes on); bytes that do not decode are answered too.
            Ok(Some(bytes)) => match naxos_wire::scan::check_request(&bytes, ctx.config.inflight_max) {
                Err(why) => {
                    tracing::warn!(%peer, "refused a request: {why}");
                    refuse(naxos_wire::scan::request_id(&bytes), why.to_string());
                    continue;
                }
                Ok(()) => match Request::decode(bytes.clone()) {
                    Ok(req) => Ok(Some(req)),
                    Err(e) => {
                        tracing::warn!(%peer, "refused a malformed request: {e}");
                        refuse(naxos_wire::scan::request_id(&bytes), format!("malformed request: {e}"));
                        continue;
                    }
                },
            },
            Ok(None) => Ok(None),
            Err(e) => Err(e),
        };
        match next {
            Ok(Some(req)) => {
                let id = req.id;
                if outbox.inflight() >= ctx.config.inflight_max {
                    let e = ServerError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "more than {} requests in flight on one connection; wait for answers",
                            ctx.config.inflight_max
                        ),
                    );
                    outbox.refuse(Response { id, body: Some(response::Body::Error(e.to_proto())) });
                    continue;
                }
                let positions = req.body.as_ref().map_or(0, positions_asked);
                if positions > 0 && !budget.take(positions) {
                    let e = ServerError::new(
                        ErrorCode::Overloaded,
                        format!(
                            "this connection asked for more than {TOKEN_POSITIONS_PER_S} positions a second; slow down"
                        ),
                    );
                    outbox.refuse(Response { id, body: Some(response::Body::Error(e.to_proto())) });
                    continue;
                }
                if !role.is_admin() && req.body.as_ref().is_some_and(needs_admin) {
                    let e = ServerError::new(
                        ErrorCode::Forbidden,
                        "this request changes the cluster and needs an admin's certificate; this connection's is a client's",
                    );
                    tracing::warn!(%peer, "refused a request that needs an admin's certificate");
                    outbox.refuse(Response { id, body: Some(response::Body::Error(e.to_proto())) });
                    continue;
                }
                let read = req.body.as_ref().is_some_and(is_read);
                outbox.take_slot(read);
                let kind = req.body.as_ref().map_or(metrics::Kind::Other, metrics::Kind::of);
                dispatch(&ctx, req, Reply::conn(id, outbox.clone(), read).timed(kind));
            }
            Ok(None) => break,
            Err(e) => {
                // The framing is lost (an oversized length, a stalled or
                // truncated frame): say why, to every call waiting (id 0).
                tracing::warn!(%peer, "closing connection: {e}");
                let code = match e {
                    // The network's doing, maybe: worth another try.
                    frame::Error::Stalled(_) => Some(ErrorCode::Unavailable),
                    frame::Error::TooLarge { .. } | frame::Error::Decode(_) => Some(ErrorCode::BadRequest),
                    // The peer is gone: nobody to tell.
                    frame::Error::Truncated | frame::Error::Io(_) => None,
                };
                if let Some(code) = code {
                    let e = ServerError::new(code, format!("closing the connection: {e}"));
                    outbox.refuse(Response { id: 0, body: Some(response::Body::Error(e.to_proto())) });
                }
                break;
            }
        }
    }
    drop(outbox);
    // Let answers already produced reach the peer; bounded, as the peer may be gone.
    let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
}

#[cfg(test)]
mod tests {
    use super::needs_admin;
    use naxos_wire::proto::{request, Batch, Entry, Request, Write};

    #[test]
    fn a_repair_write_needs_admin_rights_and_a_plain_write_does_not() {
        let write = |repair| request::Body::Write(Write { position: 3, entry: Some(Entry::default()), repair });
        assert!(!needs_admin(&write(false)));
        assert!(needs_admin(&write(true)));
        let batch = request::Body::Batch(Batch {
            requests: vec![
                Request { body: Some(write(false)), ..Default::default() },
                Request { body: Some(write(true)), ..Default::default() },
            ],
        });
        assert!(needs_admin(&batch), "a repair inside a batch needs admin rights too");
    }
}
