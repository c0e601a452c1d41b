//! Short-hand for building small histories by hand in unit tests.

use crate::{History, Op, Outcome, Violation};

/// A history under construction; each method adds one event and returns its index.
#[derive(Default)]
pub(crate) struct Builder {
    pub(crate) h: History,
}

pub(crate) fn data(payload: &str) -> Outcome {
    Outcome::Data { payload: payload.as_bytes().to_vec() }
}

pub(crate) fn unknown() -> Outcome {
    Outcome::Unknown { error: "timed out".into() }
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder::default()
    }

    pub(crate) fn append(
        &mut self,
        client: u32,
        start: u64,
        end: u64,
        payload: &str,
        streams: &[u128],
        position: u64,
    ) -> usize {
        self.append_with(client, start, end, payload, streams, Outcome::Appended { position })
    }

    pub(crate) fn append_failed(
        &mut self,
        client: u32,
        start: u64,
        end: u64,
        payload: &str,
        streams: &[u128],
    ) -> usize {
        self.append_with(client, start, end, payload, streams, unknown())
    }

    pub(crate) fn append_with(
        &mut self,
        client: u32,
        start: u64,
        end: u64,
        payload: &str,
        streams: &[u128],
        outcome: Outcome,
    ) -> usize {
        let op = Op::Append { payload: payload.as_bytes().to_vec(), streams: streams.to_vec() };
        self.h.record(client, start, end, op, outcome)
    }

    pub(crate) fn read(&mut self, client: u32, start: u64, end: u64, position: u64, outcome: Outcome) -> usize {
        self.h.record(client, start, end, Op::Read { position }, outcome)
    }

    pub(crate) fn tail(&mut self, client: u32, start: u64, end: u64, tail: u64) -> usize {
        self.h.record(client, start, end, Op::Tail, Outcome::Tail { tail })
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn stream_read(
        &mut self,
        client: u32,
        start: u64,
        end: u64,
        stream: u128,
        from: u64,
        to: u64,
        entries: &[(u64, &str)],
    ) -> usize {
        let entries = entries.iter().map(|(p, v)| (*p, v.as_bytes().to_vec())).collect();
        self.h.record(client, start, end, Op::StreamRead { stream, from }, Outcome::Stream { to, entries })
    }

    pub(crate) fn stream_read_with(
        &mut self,
        client: u32,
        start: u64,
        end: u64,
        stream: u128,
        from: u64,
        outcome: Outcome,
    ) -> usize {
        self.h.record(client, start, end, Op::StreamRead { stream, from }, outcome)
    }

    pub(crate) fn stream_tail(&mut self, client: u32, start: u64, end: u64, stream: u128, last: Option<u64>) -> usize {
        self.h.record(client, start, end, Op::StreamTail { stream }, Outcome::StreamLast { last })
    }

    pub(crate) fn trim(&mut self, client: u32, start: u64, end: u64, position: u64, outcome: Outcome) -> usize {
        self.h.record(client, start, end, Op::Trim { position }, outcome)
    }
}

/// Asserts that exactly the listed checker found nothing, printing the violations if it did.
pub(crate) fn assert_clean(violations: &[Violation]) {
    assert!(violations.is_empty(), "expected no violations, got:\n{}", render(violations));
}

/// Asserts that `violations` holds one whose events include all of `events`; returns it.
pub(crate) fn assert_found<'v>(violations: &'v [Violation], invariant: &str, events: &[usize]) -> &'v Violation {
    violations.iter().find(|v| v.invariant == invariant && events.iter().all(|e| v.events.contains(e))).unwrap_or_else(
        || panic!("expected a {invariant} violation naming events {events:?}, got:\n{}", render(violations)),
    )
}

fn render(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("  {v}\n")).collect()
}
