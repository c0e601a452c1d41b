//! A sequential model of a CORFU log that produces valid histories: each step
//! takes effect at its own linearization point, and its recorded start and end
//! are widened around that point by up to a window, so operations overlap as
//! they would from concurrent clients. Whatever the steps, the history is
//! linearizable by construction, so no checker may report anything.
#![allow(dead_code)] // each test binary uses a different part

use std::collections::BTreeSet;

use naxos_check::{History, Op, Outcome};

/// Streams the model appends to: 1..=STREAMS.
pub const STREAMS: u128 = 3;

/// Time between two linearization points, in nanoseconds.
pub const SPACING_NS: u64 = 100;

/// One step of the workload; the model interprets every field modulo what it needs.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    /// Which operation: 0..40 append, 40..70 read, 70..82 tail, 82..97 stream read, 97..100 trim.
    pub kind: u8,
    /// The operation's argument (stream mask, position, ...).
    pub arg: u64,
    /// The invoking client.
    pub client: u8,
    /// How long before its linearization point the operation started.
    pub before_ns: u16,
    /// How long after its linearization point the operation ended.
    pub after_ns: u16,
    /// Failure roll, 0..100: low values make the operation fail in various ways.
    pub fail: u8,
}

/// What a position holds in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// A token was handed out, nothing written yet (a writer that failed).
    Reserved,
    /// Written by the append with this payload number.
    Data(u64),
    /// Filled with a hole by a reader.
    Hole,
}

/// The log, plus the history recorded so far.
pub struct Model {
    slots: Vec<Slot>,
    /// The streams of each payload number.
    payload_streams: Vec<Vec<u128>>,
    /// For each stream, the positions of its written entries, increasing.
    stream_positions: Vec<Vec<u64>>,
    reserved: BTreeSet<u64>,
    trim: u64,
    now: u64,
    /// How far back from the tail a stream read starts, at most (bounds its entries).
    pub stream_span: u64,
    /// How far one trim moves the trim mark, at most.
    pub trim_step_max: u64,
    pub history: History,
}

fn payload(n: u64) -> Vec<u8> {
    format!("p{n}").into_bytes()
}

impl Default for Model {
    fn default() -> Self {
        Self::new()
    }
}

impl Model {
    pub fn new() -> Self {
        Model {
            slots: Vec::new(),
            payload_streams: Vec::new(),
            stream_positions: vec![Vec::new(); STREAMS as usize + 1],
            reserved: BTreeSet::new(),
            trim: 0,
            now: 1 << 20,
            stream_span: u64::MAX,
            trim_step_max: u64::MAX,
            history: History::new(),
        }
    }

    fn tail(&self) -> u64 {
        self.slots.len() as u64
    }

    /// The value at `p` (below the tail and not trimmed), filling a hole if nobody wrote it.
    fn read_slot(&mut self, p: u64) -> Outcome {
        let slot = &mut self.slots[p as usize];
        if *slot == Slot::Reserved {
            *slot = Slot::Hole;
            self.reserved.remove(&p);
        }
        match *slot {
            Slot::Data(n) => Outcome::Data { payload: payload(n) },
            _ => Outcome::Hole,
        }
    }

    fn write(&mut self, n: u64, streams: &[u128]) -> u64 {
        let p = self.tail();
        self.slots.push(Slot::Data(n));
        for &s in streams {
            self.stream_positions[s as usize].push(p);
        }
        p
    }

    /// Applies one step at the next linearization point and records it.
    pub fn step(&mut self, step: Step) {
        self.now += SPACING_NS;
        let lin = self.now;
        let unknown = |what: &str| Outcome::Unknown { error: format!("{what} timed out") };
        let tail = self.tail();
        let (op, outcome) = match step.kind % 100 {
            0..40 => {
                let n = self.payload_streams.len() as u64;
                let streams: Vec<u128> = (1..=STREAMS).filter(|s| step.arg >> s & 1 == 1).collect();
                self.payload_streams.push(streams.clone());
                let outcome = match step.fail {
                    0..4 => {
                        self.write(n, &streams);
                        unknown("append (written)")
                    }
                    4..8 => {
                        self.reserved.insert(tail);
                        self.slots.push(Slot::Reserved);
                        unknown("append (token taken)")
                    }
                    8..10 => unknown("append (never happened)"),
                    _ => Outcome::Appended { position: self.write(n, &streams) },
                };
                (Op::Append { payload: payload(n), streams }, outcome)
            }
            40..70 => {
                let position = step.arg % (tail + 2);
                let outcome = if position < self.trim {
                    Outcome::Trimmed
                } else if position >= tail {
                    Outcome::Unwritten
                } else {
                    self.read_slot(position)
                };
                let outcome = if step.fail < 4 { unknown("read") } else { outcome };
                (Op::Read { position }, outcome)
            }
            70..82 => {
                let outcome = if step.fail < 3 { unknown("tail") } else { Outcome::Tail { tail } };
                (Op::Tail, outcome)
            }
            82..97 => {
                let stream = 1 + u128::from(step.arg % STREAMS as u64);
                let from = tail.saturating_sub((step.arg >> 8) % (tail.min(self.stream_span) + 2));
                let outcome = if from < self.trim {
                    Outcome::Trimmed
                } else {
                    // The reader fills the holes in its range, then collects the stream's entries.
                    let holes: Vec<u64> = self.reserved.range(from..tail).copied().collect();
                    for p in holes {
                        self.read_slot(p);
                    }
                    let positions = &self.stream_positions[stream as usize];
                    let first = positions.partition_point(|&p| p < from);
                    let entries = positions[first..]
                        .iter()
                        .map(|&p| match self.slots[p as usize] {
                            Slot::Data(n) => (p, payload(n)),
                            other => unreachable!("stream index points at {other:?}"),
                        })
                        .collect();
                    Outcome::Stream { to: tail, entries }
                };
                let outcome = if step.fail < 3 { unknown("stream read") } else { outcome };
                (Op::StreamRead { stream, from }, outcome)
            }
            _ => {
                let position = self.trim + step.arg % ((tail - self.trim).min(self.trim_step_max) + 1);
                let happened = step.fail >= 3;
                if happened {
                    self.trim = self.trim.max(position);
                }
                let outcome = if step.fail < 6 { unknown("trim") } else { Outcome::Done };
                (Op::Trim { position }, outcome)
            }
        };
        let start = lin - u64::from(step.before_ns);
        let end = lin + u64::from(step.after_ns);
        self.history.record(u32::from(step.client), start, end, op, outcome);
    }

    /// Ends the workload as the real one does: once everything is over, a tail and a full scan.
    pub fn finish(mut self) -> History {
        self.now += 2 * u64::from(u16::MAX) + SPACING_NS;
        let at = self.now;
        let tail = self.tail();
        self.history.record(0, at, at + 1, Op::Tail, Outcome::Tail { tail });
        for position in self.trim..tail {
            let outcome = self.read_slot(position);
            self.history.record(0, at + 2, at + 3, Op::Read { position }, outcome);
        }
        self.history
    }

    /// Events in the history, plus those `finish` will add.
    pub fn projected_len(&self) -> usize {
        self.history.len() + 1 + (self.tail() - self.trim) as usize
    }
}

/// A valid history from `steps`.
pub fn history_of(steps: &[Step]) -> History {
    let mut model = Model::new();
    for &step in steps {
        model.step(step);
    }
    model.finish()
}

/// SplitMix64: a small deterministic generator for large histories.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A valid history of about `ops` events: ~36% appends, ~44% reads (most of
/// them the final scan), ~10% tails, ~10% stream reads of recent entries, and
/// rare trims.
pub fn large_history(seed: u64, ops: usize) -> History {
    let mut rng = Rng(seed);
    let mut model = Model::new();
    model.stream_span = 64;
    model.trim_step_max = 50;
    while model.projected_len() < ops {
        let roll = rng.below(1000);
        // With the final scan, this makes about 36% appends, 44% reads, 10% tails, 10% stream reads.
        let kind = match roll {
            0..560 => 0,    // append
            560..685 => 40, // read
            685..840 => 70, // tail
            840..998 => 82, // stream read
            _ => 97,        // trim
        };
        let window = 20 * SPACING_NS; // about 40 operations in flight
        model.step(Step {
            kind,
            arg: rng.next(),
            client: rng.below(32) as u8,
            before_ns: rng.below(window) as u16,
            after_ns: rng.below(window) as u16,
            fail: rng.below(100) as u8,
        });
    }
    model.finish()
}
