//! The replicated objects' in-memory state and how each update changes it:
//! pure code, no I/O (the runtime feeds it records in log order). Every
//! object keeps, per key, the position of its last write (its version), which
//! transactions read and replayers re-validate, and per writer the sequence
//! numbers it applied, so that a retried update is applied once.

use crate::record::Op;
use bytes::Bytes;
use naxos_client::Position;
use std::collections::{BTreeMap, HashMap, VecDeque};

/// The kinds of object; each object's stream holds updates of one kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Bytes to bytes.
    Map,
    /// A signed 64-bit sum.
    Counter,
    /// One value, or none.
    Register,
    /// A FIFO of values.
    Queue,
}

impl Kind {
    /// The prefix of the stream name of objects of this kind.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Map => "map",
            Kind::Counter => "counter",
            Kind::Register => "register",
            Kind::Queue => "queue",
        }
    }
}

/// The queue's key popped elements are versioned under.
pub(crate) const QUEUE_HEAD: &[u8] = b"head";
/// The queue's key pushed elements are versioned under.
pub(crate) const QUEUE_TAIL: &[u8] = b"tail";

/// One map key's value (`None`: deleted) and version.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Versioned {
    pub value: Option<Bytes>,
    pub version: Position,
}

/// The state of one object.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum State {
    /// Keys (hashed: a transaction looks up a few keys of a large map, and
    /// a lookup in a tree of byte strings costs dozens of comparisons;
    /// whoever walks them sorts them first); deleted keys stay as versions
    /// (tombstones); `any`: the last write of any key (what a transaction
    /// that listed the map read).
    Map { entries: HashMap<Bytes, Versioned>, any: Option<Position> },
    /// The sum and the last write.
    Counter { value: i64, version: Option<Position> },
    /// The value and the last write.
    Register { value: Option<Bytes>, version: Option<Position> },
    /// The elements, and the last pop and push.
    Queue { items: VecDeque<Bytes>, head: Option<Position>, tail: Option<Position> },
}

impl State {
    /// An empty object of `kind`.
    pub fn new(kind: Kind) -> State {
        match kind {
            Kind::Map => State::Map { entries: HashMap::new(), any: None },
            Kind::Counter => State::Counter { value: 0, version: None },
            Kind::Register => State::Register { value: None, version: None },
            Kind::Queue => State::Queue { items: VecDeque::new(), head: None, tail: None },
        }
    }

    /// The position of the last write of `key` (single-valued objects have
    /// one key, the empty one), or with `whole` of anything in the object.
    pub fn version(&self, key: &[u8], whole: bool) -> Option<Position> {
        match self {
            State::Map { any, .. } if whole => *any,
            State::Map { entries, .. } => entries.get(key).map(|v| v.version),
            State::Queue { head, tail, .. } if whole => (*head).max(*tail),
            State::Counter { version, .. } | State::Register { version, .. } => *version,
            State::Queue { head, tail, .. } => match key {
                QUEUE_HEAD => *head,
                QUEUE_TAIL => *tail,
                _ => None,
            },
        }
    }

    /// Applies `op`, written at `position`. `false` if the op is not one of
    /// this kind's (a foreign writer's stream; nothing changes).
    pub fn apply(&mut self, op: &Op, position: Position) -> bool {
        match (self, op) {
            (State::Map { entries, any }, Op::Put(kv)) => {
                entries.insert(kv.key.clone(), Versioned { value: Some(kv.value.clone()), version: position });
                *any = Some(position);
            }
            (State::Map { entries, any }, Op::Delete(key)) => {
                entries.insert(key.clone(), Versioned { value: None, version: position });
                *any = Some(position);
            }
            (State::Counter { value, version }, Op::Add(delta)) => {
                *value = value.wrapping_add(*delta);
                *version = Some(position);
            }
            (State::Register { value, version }, Op::Set(v)) => {
                *value = v.value.clone();
                *version = Some(position);
            }
            (State::Queue { items, tail, .. }, Op::Push(v)) => {
                items.push_back(v.clone());
                *tail = Some(position);
            }
            (State::Queue { items, head, .. }, Op::Pop(_)) => {
                items.pop_front();
                *head = Some(position);
            }
            _ => return false,
        }
        true
    }
}

/// The sequence numbers of one writer an object has applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Seen {
    /// Every number below it is settled (applied, or never to be sent again).
    floor: u64,
    /// Applied numbers at or above `floor`, with where each was applied.
    applied: BTreeMap<u64, Position>,
}

/// One writer's part of a [`Dedup`], as a checkpoint stores it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct WriterSeen {
    /// The writer's id.
    pub client: u128,
    /// Every number below it is settled.
    pub floor: u64,
    /// (number, position applied at), at or above the floor.
    pub applied: Vec<(u64, Position)>,
}

/// Per writer, what an object applied: exactly-once.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Dedup {
    writers: BTreeMap<u128, Seen>,
}

impl Dedup {
    /// Whether `seq` of `client` is new (then it counts as applied now); the
    /// writer's `floor` lets the object forget older numbers.
    pub fn first_time(&mut self, client: u128, seq: u64, floor: u64, position: Position) -> bool {
        let seen = self.writers.entry(client).or_default();
        if floor > seen.floor {
            seen.floor = floor;
            seen.applied = seen.applied.split_off(&floor);
        }
        if seq < seen.floor || seen.applied.contains_key(&seq) {
            return false;
        }
        seen.applied.insert(seq, position);
        true
    }

    /// Where `seq` of `client` was applied, if it was and is not settled yet.
    pub fn position_of(&self, client: u128, seq: u64) -> Option<Position> {
        self.writers.get(&client)?.applied.get(&seq).copied()
    }

    /// Per writer: its floor and the numbers applied at or above it, with their positions.
    pub fn export(&self) -> Vec<WriterSeen> {
        let mut out: Vec<_> = self
            .writers
            .iter()
            .map(|(c, s)| WriterSeen {
                client: *c,
                floor: s.floor,
                applied: s.applied.iter().map(|(q, p)| (*q, *p)).collect(),
            })
            .collect();
        out.sort_by_key(|w| w.client);
        out
    }

    /// The inverse of [`Dedup::export`].
    pub fn import(writers: Vec<WriterSeen>) -> Dedup {
        Dedup {
            writers: writers
                .into_iter()
                .map(|w| (w.client, Seen { floor: w.floor, applied: w.applied.into_iter().collect() }))
                .collect(),
        }
    }

    /// How many writers it remembers.
    #[cfg(test)]
    pub fn writers(&self) -> usize {
        self.writers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Empty, KeyValue};

    #[test]
    fn each_kind_applies_its_own_ops_and_keeps_versions() {
        let mut m = State::new(Kind::Map);
        assert!(m.apply(&Op::Put(KeyValue { key: "a".into(), value: "1".into() }), Position(3)));
        assert!(m.apply(&Op::Delete("a".into()), Position(5)));
        assert_eq!(m.version(b"a", false), Some(Position(5)));
        assert_eq!(m.version(b"b", true), Some(Position(5)));
        assert!(!m.apply(&Op::Add(1), Position(6)), "a counter op on a map changes nothing");
        let mut q = State::new(Kind::Queue);
        q.apply(&Op::Push("x".into()), Position(1));
        q.apply(&Op::Push("y".into()), Position(2));
        q.apply(&Op::Pop(Empty {}), Position(4));
        assert_eq!(q.version(QUEUE_HEAD, false), Some(Position(4)));
        assert_eq!(q.version(QUEUE_TAIL, false), Some(Position(2)));
        match q {
            State::Queue { items, .. } => assert_eq!(items, VecDeque::from(vec![Bytes::from("y")])),
            _ => unreachable!(),
        }
    }

    #[test]
    fn a_retried_update_is_applied_once_and_old_numbers_are_forgotten() {
        let mut d = Dedup::default();
        assert!(d.first_time(1, 5, 0, Position(5)));
        assert!(d.first_time(1, 7, 0, Position(7)), "numbers may arrive out of order");
        assert!(!d.first_time(1, 5, 0, Position(5)), "a retry of 5");
        assert!(d.first_time(1, 6, 0, Position(6)));
        assert!(d.first_time(2, 5, 0, Position(5)), "another writer's 5");
        // The writer settled everything below 8: 5..7 are forgotten.
        assert!(d.first_time(1, 8, 8, Position(8)));
        assert!(!d.first_time(1, 6, 8, Position(6)), "below the floor: settled");
        assert_eq!(d.writers(), 2);
    }
}
