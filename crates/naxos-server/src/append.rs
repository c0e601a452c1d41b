//! The `Append` request: on a node that runs the sequencer and heads the chain
//! of the positions it hands out, a token and the head write in one round
//! trip. The protocol is unchanged (a token, then the head, then the rest of
//! the chain, which the client writes); only the first two steps run here,
//! through the same sequencer and log unit tasks as any other request, so
//! write-once, epochs and group commit apply as always.

use crate::reply::Reply;
use crate::{logunit, sequencer};
use naxos_wire::proto::{self, request, response, Entry, Request, Response, Write};
use naxos_wire::{ErrorCode, Layout, Position, ServerError};
use tokio::sync::mpsc;

/// Where the two roles on this node are reached.
pub(crate) struct Roles<'a> {
    pub sequencer: &'a mpsc::UnboundedSender<sequencer::Op>,
    pub logunit: Option<&'a mpsc::UnboundedSender<logunit::Op>>,
    /// The node's layout, if it holds one.
    pub layout: Option<Layout>,
    /// This node's address as layouts name it.
    pub me: &'a str,
}

fn stopped(role: &str) -> ServerError {
    ServerError::new(ErrorCode::Unavailable, format!("{role} stopped"))
}

/// Answers an `Append`: tokens for every entry, then the writes this node heads.
pub(crate) async fn append(
    roles: Roles<'_>,
    req: Request,
    entries_max: usize,
    entry_bytes_max: usize,
) -> Result<response::Body, ServerError> {
    let Some(request::Body::Append(a)) = req.body else {
        return Err(ServerError::new(ErrorCode::BadRequest, "not an append"));
    };
    if a.entries.is_empty() || a.entries.len() > entries_max {
        return Err(ServerError::new(
            ErrorCode::BadRequest,
            format!("an append holds 1 to {entries_max} entries, this one {}", a.entries.len()),
        ));
    }
    // Sizes before tokens: an oversize entry must not use up a position.
    if let Some(big) = a.entries.iter().find(|e| e.payload.len() > entry_bytes_max) {
        return Err(ServerError::new(
            ErrorCode::TooLarge,
            format!(
                "entry of {} bytes exceeds the limit of {entry_bytes_max} bytes (server flag --entry-bytes-max)",
                big.payload.len()
            ),
        ));
    }
    // Only the layout's sequencer hands out positions for an append (another
    // node's idle sequencer role would hand out positions already in use).
    if roles.layout.as_ref().and_then(|l| l.sequencers.first()).is_none_or(|s| s != roles.me) {
        return Err(ServerError::new(
            ErrorCode::WrongRole,
            format!("{} is not the layout's sequencer; send appends to the sequencer", roles.me),
        ));
    }
    let sub = |body| Request { id: 0, cluster_id: req.cluster_id.clone(), epoch: req.epoch, body: Some(body) };
    // Grouped as the client groups a batch (naxos_wire::tokens).
    let groups = naxos_wire::tokens::groups(a.entries.iter().map(|e| (&e.streams[..], 1, None)));
    let mut waits = Vec::with_capacity(groups.len());
    let mut ops = Vec::with_capacity(groups.len());
    for (_, t) in &groups {
        let (reply, rx) = Reply::once(0);
        ops.push((sub(request::Body::Token(t.clone())), reply));
        waits.push(rx);
    }
    roles.sequencer.send(sequencer::Op::Requests(ops)).map_err(|_| stopped("sequencer"))?;
    let mut results = vec![proto::AppendResult::default(); a.entries.len()];
    for ((members, _), rx) in groups.iter().zip(waits) {
        let token = match rx.await.map_err(|_| stopped("sequencer"))?.body {
            Some(response::Body::Token(t)) => t,
            // Nothing written yet: the whole append is refused (taken tokens become holes).
            Some(response::Body::Error(e)) => return Err(ServerError::from_proto(e)),
            _ => return Err(ServerError::new(ErrorCode::Unavailable, "sequencer gave no token")),
        };
        for (k, &i) in members.iter().enumerate() {
            results[i].position = token.start + k as u64;
            if !a.entries[i].streams.is_empty() {
                results[i].backpointers = token.backpointers.clone();
            }
        }
    }
    // The head writes this node owns, in one message: one group commit.
    let (Some(unit), Some(layout)) = (roles.logunit, roles.layout.filter(|l| l.epoch == req.epoch)) else {
        return Ok(response::Body::Append(proto::AppendOk { results }));
    };
    let mut writes = Vec::new();
    let mut written = Vec::new();
    for (i, (entry, r)) in a.entries.into_iter().zip(&results).enumerate() {
        let heads_here =
            layout.placement(Position(r.position)).and_then(|p| p.chain.first()).is_some_and(|h| h == roles.me);
        if !heads_here {
            continue;
        }
        let entry = Entry { backpointers: r.backpointers.clone(), ..entry };
        writes.push(sub(request::Body::Write(Write { position: r.position, entry: Some(entry), repair: false })));
        written.push(i);
    }
    if !writes.is_empty() {
        // The answers are gathered as a batch's are: one wake-up for them all.
        let (all, rx) = Reply::once(0);
        let ops = writes.into_iter().zip(Reply::batch(all, written.len())).collect();
        unit.send(logunit::Op::Requests(ops)).map_err(|_| stopped("log unit"))?;
        let answers = match rx.await.map(|r| r.body) {
            Ok(Some(response::Body::Batch(b))) if b.responses.len() == written.len() => b.responses,
            // A lost answer is reported like any unknown outcome: the client settles it.
            _ => vec![
                Response { id: 0, body: Some(response::Body::Error(stopped("log unit").to_proto())) };
                written.len()
            ],
        };
        for (i, head) in written.into_iter().zip(answers) {
            results[i].head = Some(head);
        }
    }
    Ok(response::Body::Append(proto::AppendOk { results }))
}
