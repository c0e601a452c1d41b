//! Indexes over a history that several checkers share: trims by time, and the
//! append that wrote each payload.

use std::collections::HashMap;

use crate::{History, Op};

/// The trims of a history, by invocation time, whatever their outcome (a failed
/// trim may have happened).
pub(crate) struct Trims {
    /// Start times, sorted.
    starts: Vec<u64>,
    /// For each prefix of `starts`: the highest trim position and its event.
    prefix_max: Vec<(u64, usize)>,
}

impl Trims {
    pub(crate) fn new(history: &History) -> Self {
        let mut trims: Vec<(u64, u64, usize)> = history
            .events
            .iter()
            .enumerate()
            .filter_map(|(i, e)| match e.op {
                Op::Trim { position } => Some((e.start, position, i)),
                _ => None,
            })
            .collect();
        trims.sort_unstable();
        let mut best: Option<(u64, usize)> = None;
        let mut prefix_max = Vec::with_capacity(trims.len());
        for &(_, position, i) in &trims {
            if best.is_none_or(|(p, _)| position > p) {
                best = Some((position, i));
            }
            prefix_max.push(best.expect("set just above"));
        }
        Trims { starts: trims.iter().map(|t| t.0).collect(), prefix_max }
    }

    /// The highest trim invoked at or before `time`: (position, event).
    pub(crate) fn max_invoked_by(&self, time: u64) -> Option<(u64, usize)> {
        let count = self.starts.partition_point(|&s| s <= time);
        count.checked_sub(1).map(|last| self.prefix_max[last])
    }

    /// A trim above `position` invoked at or before `time`, if any: its event.
    pub(crate) fn covering(&self, position: u64, time: u64) -> Option<usize> {
        self.max_invoked_by(time).filter(|&(p, _)| p > position).map(|(_, i)| i)
    }

    /// The highest trim ever invoked: (position, event).
    pub(crate) fn max_ever(&self) -> Option<(u64, usize)> {
        self.prefix_max.last().copied()
    }
}

/// For each payload, the first `Append` that carried it: (event, its streams).
pub(crate) fn appends_by_payload(history: &History) -> HashMap<&[u8], (usize, &[u128])> {
    let mut map = HashMap::new();
    for (i, e) in history.events.iter().enumerate() {
        if let Op::Append { payload, streams } = &e.op {
            map.entry(payload.as_slice()).or_insert((i, streams.as_slice()));
        }
    }
    map
}

/// What a position was seen to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Value<'a> {
    /// An entry with these bytes.
    Data(&'a [u8]),
    /// A hole.
    Hole,
}

impl std::fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Data(payload) => f.write_str(&crate::short_payload(payload)),
            Value::Hole => f.write_str("hole"),
        }
    }
}

/// Where an observation comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// An `Append` acknowledged at the position.
    Ack,
    /// A `Read` of the position.
    Read,
    /// An entry of a `StreamRead`.
    StreamEntry,
}

/// One thing known about one position: event `event` saw `value` there.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Observation<'a> {
    pub(crate) event: usize,
    pub(crate) position: u64,
    pub(crate) value: Value<'a>,
    pub(crate) source: Source,
}

/// Every observation of a position's value in the history: acknowledged
/// appends, `Data` and `Hole` reads, and stream entries. Events whose outcome
/// does not fit their op are skipped (the well-formedness check reports them).
pub(crate) fn observations(history: &History) -> impl Iterator<Item = Observation<'_>> + '_ {
    use crate::Outcome;
    history.events.iter().enumerate().flat_map(|(event, e)| {
        let mut single = None;
        let mut entries: &[(u64, Vec<u8>)] = &[];
        match (&e.op, &e.outcome) {
            (Op::Append { payload, .. }, Outcome::Appended { position }) => {
                single = Some((*position, Value::Data(payload), Source::Ack));
            }
            (Op::Read { position }, Outcome::Data { payload }) => {
                single = Some((*position, Value::Data(payload), Source::Read));
            }
            (Op::Read { position }, Outcome::Hole) => single = Some((*position, Value::Hole, Source::Read)),
            (Op::StreamRead { .. }, Outcome::Stream { entries: list, .. }) => entries = list,
            _ => {}
        }
        let single = single.map(|(position, value, source)| Observation { event, position, value, source });
        let listed = entries.iter().map(move |(position, payload)| Observation {
            event,
            position: *position,
            value: Value::Data(payload),
            source: Source::StreamEntry,
        });
        single.into_iter().chain(listed)
    })
}
