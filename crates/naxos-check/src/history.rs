//! The history model: one [`Event`] per operation a client invoked, with the
//! times it started and ended and what it returned, and its JSON-lines form.

use std::fmt;
use std::io::{BufRead, Write};

use serde::{Deserialize, Serialize};

use crate::Error;

/// Every operation of one test run, in any order (checkers sort what they need).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// The operations; a [`Violation`](crate::Violation) names them by index here.
    pub events: Vec<Event>,
}

/// One operation: who invoked it, when it started and ended, and its result.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Event {
    /// The client (process or simulated node) that invoked the operation.
    pub client: u32,
    /// When the operation was invoked, in nanoseconds of a clock shared by all clients.
    pub start: u64,
    /// When the operation returned (or was given up), in the same clock; `end >= start`.
    pub end: u64,
    /// What was asked.
    pub op: Op,
    /// What came back.
    pub outcome: Outcome,
}

/// An operation on the log, as the client invoked it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Append `payload` to the log and to each of `streams`; payloads are unique per history.
    Append {
        /// The entry's bytes (unique in the history, so they identify the append).
        #[serde(with = "hex_bytes")]
        payload: Vec<u8>,
        /// The streams the entry belongs to.
        streams: Vec<u128>,
    },
    /// Read one position of the log.
    Read {
        /// The position read.
        position: u64,
    },
    /// Ask for the tail: the first position not yet handed out.
    Tail,
    /// Read a stream's entries from `from` up to the tail the reader takes.
    StreamRead {
        /// The stream read.
        stream: u128,
        /// The first log position of interest.
        from: u64,
    },
    /// Ask for a stream's last position (the sequencer's stream tail).
    StreamTail {
        /// The stream asked about.
        stream: u128,
    },
    /// Trim the log: positions below `position` may be discarded.
    Trim {
        /// The new trim mark.
        position: u64,
    },
    /// Objects (naxos-tango): move `amount` from account `from` to `to` in
    /// one transaction, if `from` holds at least `amount`.
    Transfer {
        /// The account debited.
        from: String,
        /// The account credited.
        to: String,
        /// How much.
        amount: i64,
    },
    /// Objects: read every account in one snapshot; they must hold `total`
    /// between them (once any account exists).
    Balances {
        /// The total the accounts were opened with.
        total: i64,
    },
    /// Objects: add `delta` (> 0) to a counter, exactly once.
    CounterAdd {
        /// The counter.
        counter: String,
        /// How much.
        delta: i64,
    },
    /// Objects: read a counter.
    CounterRead {
        /// The counter.
        counter: String,
    },
    /// Objects: one transaction of list appends and list reads (Elle's
    /// list-append workload); `Committed` with what it read, or `Aborted`.
    ListTxn {
        /// The micro-operations, in order.
        ops: Vec<ListOp>,
    },
    /// Objects: set a register to `new` if it holds `expected` (`None`:
    /// empty); `Committed` if it did, `Aborted` if the value differed.
    RegisterCas {
        /// The register.
        register: String,
        /// The value it must hold.
        expected: Option<String>,
        /// The value it gets (unique in the history).
        new: String,
    },
}

/// One micro-operation of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListOp {
    /// Append `value` (unique per key in the history) to the list at `key`.
    Append {
        /// The key.
        key: String,
        /// The value.
        value: u64,
    },
    /// Read the list at `key`.
    Read {
        /// The key.
        key: String,
    },
}

/// What an operation returned.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// An `Append` was acknowledged at `position`.
    Appended {
        /// Where the entry now is.
        position: u64,
    },
    /// A `Read` found this entry.
    Data {
        /// The entry's bytes.
        #[serde(with = "hex_bytes")]
        payload: Vec<u8>,
    },
    /// A `Read` found a hole (junk filled in for an append that never completed).
    Hole,
    /// A `Read` found nothing: the position is at or above the tail.
    Unwritten,
    /// A `Read` or `StreamRead` hit the trimmed prefix of the log.
    Trimmed,
    /// A `Tail` returned `tail`.
    Tail {
        /// The first position not yet handed out.
        tail: u64,
    },
    /// A `StreamRead` returned the stream's entries in `[from, to)`.
    Stream {
        /// The tail the reader used: the end (exclusive) of the range read.
        to: u64,
        /// `(position, payload)` of each entry of the stream in the range, in log order.
        #[serde(with = "hex_entries")]
        entries: Vec<(u64, Vec<u8>)>,
    },
    /// A `StreamTail` returned the stream's last position (`None`: it has no entry).
    StreamLast {
        /// The position of the stream's last entry.
        last: Option<u64>,
    },
    /// A `Trim` or `CounterAdd` succeeded.
    Done,
    /// A `Transfer` committed.
    Committed,
    /// A `Transfer` aborted: nothing of it was applied.
    Aborted {
        /// Why.
        cause: String,
    },
    /// A `Balances` read: each account's balance in one snapshot.
    Accounts {
        /// (account, balance), in account order.
        balances: Vec<(String, i64)>,
    },
    /// A `ListTxn` committed; what each of its reads returned, in order.
    Lists {
        /// (key, the list read), one per `Read` micro-operation.
        reads: Vec<(String, Vec<u64>)>,
    },
    /// A `CounterRead` returned `value`.
    Value {
        /// The counter's value.
        value: i64,
    },
    /// The operation failed or timed out: it may or may not have taken effect.
    Unknown {
        /// What the client saw, for the trace.
        error: String,
    },
}

impl Event {
    /// An event from its parts.
    pub fn new(client: u32, start: u64, end: u64, op: Op, outcome: Outcome) -> Self {
        Event { client, start, end, op, outcome }
    }

    /// The event as one line of JSON (no trailing newline), as [`History::from_json_lines`] reads it.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).expect("an Event always serializes: it holds only strings, integers and lists")
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        History::default()
    }

    /// Adds an event and returns its index.
    pub fn push(&mut self, event: Event) -> usize {
        self.events.push(event);
        self.events.len() - 1
    }

    /// Adds an event from its parts and returns its index.
    pub fn record(&mut self, client: u32, start: u64, end: u64, op: Op, outcome: Outcome) -> usize {
        self.push(Event::new(client, start, end, op, outcome))
    }

    /// The number of events.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether there are no events.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// One history from several (one per client process), ordered by start, end and client.
    ///
    /// The order makes event indices, and so reports, the same whatever order
    /// the parts come in; it needs the clients' clocks to be one clock (e.g.
    /// `CLOCK_MONOTONIC` of one machine).
    pub fn merge(parts: impl IntoIterator<Item = History>) -> History {
        let mut events: Vec<Event> = parts.into_iter().flat_map(|h| h.events).collect();
        // Ties (same times, same client) are broken by content, so the order is total.
        events.sort_by(|a, b| (a.start, a.end, a.client).cmp(&(b.start, b.end, b.client)).then_with(|| a.cmp(b)));
        History { events }
    }

    /// The history as JSON lines: one [`Event`] per line, each line ending in `\n`.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            out.push_str(&event.to_json_line());
            out.push('\n');
        }
        out
    }

    /// Writes the history as JSON lines to `writer`.
    pub fn write_json_lines<W: Write>(&self, mut writer: W) -> Result<(), Error> {
        for event in &self.events {
            writer.write_all(event.to_json_line().as_bytes())?;
            writer.write_all(b"\n")?;
        }
        writer.flush()?;
        Ok(())
    }

    /// Parses JSON lines (blank lines are skipped); the error names the first bad line.
    pub fn from_json_lines(text: &str) -> Result<History, Error> {
        let mut history = History::new();
        for (index, line) in text.lines().enumerate() {
            push_json_line(&mut history, index + 1, line)?;
        }
        Ok(history)
    }

    /// Reads JSON lines from `reader`, as [`History::from_json_lines`] does.
    pub fn read_json_lines<R: BufRead>(reader: R) -> Result<History, Error> {
        let mut history = History::new();
        for (index, line) in reader.lines().enumerate() {
            push_json_line(&mut history, index + 1, &line?)?;
        }
        Ok(history)
    }
}

fn push_json_line(history: &mut History, line: usize, text: &str) -> Result<(), Error> {
    if text.trim().is_empty() {
        return Ok(());
    }
    let event = serde_json::from_str(text).map_err(|source| Error::Json { line, source })?;
    history.push(event);
    Ok(())
}

impl From<Vec<Event>> for History {
    fn from(events: Vec<Event>) -> Self {
        History { events }
    }
}

impl FromIterator<Event> for History {
    fn from_iter<I: IntoIterator<Item = Event>>(iter: I) -> Self {
        History { events: iter.into_iter().collect() }
    }
}

/// Longest payload shown whole in traces; longer ones are cut.
const PAYLOAD_SHOWN_MAX: usize = 16;

/// A payload as a trace shows it: quoted if printable, else hex; long ones cut, with their length.
pub fn short_payload(payload: &[u8]) -> String {
    let printable = payload.iter().all(|b| (0x20..0x7f).contains(b) && *b != b'\'');
    let shown = &payload[..payload.len().min(PAYLOAD_SHOWN_MAX)];
    let mut out = if printable {
        format!("'{}'", String::from_utf8_lossy(shown))
    } else {
        format!("0x{}", hex_bytes::encode(&shown[..shown.len().min(PAYLOAD_SHOWN_MAX / 2)]))
    };
    let shown_bytes = if printable { shown.len() } else { shown.len().min(PAYLOAD_SHOWN_MAX / 2) };
    if shown_bytes < payload.len() {
        out.push_str(&format!("..({}B)", payload.len()));
    }
    out
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Append { payload, streams } if streams.is_empty() => write!(f, "append {}", short_payload(payload)),
            Op::Append { payload, streams } => write!(f, "append {} streams {:?}", short_payload(payload), streams),
            Op::Read { position } => write!(f, "read {position}"),
            Op::Tail => write!(f, "tail"),
            Op::StreamRead { stream, from } => write!(f, "stream-read {stream} from {from}"),
            Op::StreamTail { stream } => write!(f, "stream-tail {stream}"),
            Op::Trim { position } => write!(f, "trim {position}"),
            Op::Transfer { from, to, amount } => write!(f, "transfer {amount} {from} -> {to}"),
            Op::Balances { total } => write!(f, "balances (total {total})"),
            Op::CounterAdd { counter, delta } => write!(f, "counter {counter} add {delta}"),
            Op::CounterRead { counter } => write!(f, "counter {counter} read"),
            Op::RegisterCas { register, expected, new } => write!(f, "register {register} cas {expected:?} -> {new}"),
            Op::ListTxn { ops } => {
                write!(f, "txn [")?;
                for (i, op) in ops.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    match op {
                        ListOp::Append { key, value } => write!(f, "{sep}append {key} {value}")?,
                        ListOp::Read { key } => write!(f, "{sep}read {key}")?,
                    }
                }
                write!(f, "]")
            }
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Appended { position } => write!(f, "appended at {position}"),
            Outcome::Data { payload } => write!(f, "data {}", short_payload(payload)),
            Outcome::Hole => write!(f, "hole"),
            Outcome::Unwritten => write!(f, "unwritten"),
            Outcome::Trimmed => write!(f, "trimmed"),
            Outcome::Tail { tail } => write!(f, "tail {tail}"),
            Outcome::Stream { to, entries } => {
                write!(f, "to {to}, {} entries [", entries.len())?;
                // A trace line stays short: the first few entries say enough.
                const ENTRIES_SHOWN_MAX: usize = 6;
                for (i, (position, payload)) in entries.iter().take(ENTRIES_SHOWN_MAX).enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{position}:{}", short_payload(payload))?;
                }
                if entries.len() > ENTRIES_SHOWN_MAX {
                    write!(f, ", ..")?;
                }
                write!(f, "]")
            }
            Outcome::StreamLast { last: Some(p) } => write!(f, "last {p}"),
            Outcome::StreamLast { last: None } => write!(f, "no entry"),
            Outcome::Done => write!(f, "done"),
            Outcome::Committed => write!(f, "committed"),
            Outcome::Aborted { cause } => write!(f, "aborted ({cause})"),
            Outcome::Accounts { balances } => {
                let sum: i64 = balances.iter().map(|(_, b)| b).sum();
                write!(f, "{} accounts, sum {sum}: {balances:?}", balances.len())
            }
            Outcome::Value { value } => write!(f, "value {value}"),
            Outcome::Lists { reads } => write!(f, "read {reads:?}"),
            Outcome::Unknown { error } => write!(f, "unknown ({error})"),
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t={}..{} client {}: {} -> {}", self.start, self.end, self.client, self.op, self.outcome)
    }
}

/// Payload bytes as a lower-case hex string in JSON: shorter and more readable than a list of numbers.
mod hex_bytes {
    use serde::{de::Error as _, Deserialize, Deserializer, Serializer};

    pub fn encode(bytes: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(DIGITS[usize::from(b >> 4)] as char);
            out.push(DIGITS[usize::from(b & 0xf)] as char);
        }
        out
    }

    pub fn decode(text: &str) -> Result<Vec<u8>, String> {
        fn digit(c: u8) -> Result<u8, String> {
            match c {
                b'0'..=b'9' => Ok(c - b'0'),
                b'a'..=b'f' => Ok(c - b'a' + 10),
                b'A'..=b'F' => Ok(c - b'A' + 10),
                _ => Err(format!("{:?} is not a hex digit", c as char)),
            }
        }
        let text = text.as_bytes();
        if !text.len().is_multiple_of(2) {
            return Err(format!("hex payload has an odd length ({})", text.len()));
        }
        text.chunks_exact(2).map(|pair| Ok(digit(pair[0])? << 4 | digit(pair[1])?)).collect()
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        decode(&text).map_err(D::Error::custom)
    }
}

/// Stream entries as `[[position, "hex"], ...]` in JSON.
mod hex_entries {
    use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(entries: &[(u64, Vec<u8>)], s: S) -> Result<S::Ok, S::Error> {
        let encoded: Vec<(u64, String)> = entries.iter().map(|(p, v)| (*p, super::hex_bytes::encode(v))).collect();
        encoded.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(u64, Vec<u8>)>, D::Error> {
        let encoded = Vec::<(u64, String)>::deserialize(d)?;
        encoded.into_iter().map(|(p, v)| Ok((p, super::hex_bytes::decode(&v).map_err(D::Error::custom)?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> History {
        let mut h = History::new();
        h.record(
            1,
            10,
            20,
            Op::Append { payload: b"a\x00\xff".to_vec(), streams: vec![u128::MAX, 7] },
            Outcome::Appended { position: u64::MAX },
        );
        h.record(2, 15, 25, Op::Read { position: 0 }, Outcome::Data { payload: b"xyz".to_vec() });
        h.record(2, 16, 26, Op::Read { position: 1 }, Outcome::Hole);
        h.record(2, 17, 27, Op::Read { position: 2 }, Outcome::Unwritten);
        h.record(2, 18, 28, Op::Read { position: 3 }, Outcome::Trimmed);
        h.record(3, 30, 31, Op::Tail, Outcome::Tail { tail: 9 });
        h.record(
            3,
            32,
            40,
            Op::StreamRead { stream: 1 << 100, from: 2 },
            Outcome::Stream { to: 9, entries: vec![(2, vec![]), (5, b"e5".to_vec())] },
        );
        h.record(4, 41, 42, Op::Trim { position: 3 }, Outcome::Done);
        h.record(4, 43, 44, Op::Trim { position: 4 }, Outcome::Unknown { error: "timed out \"x\"\n".into() });
        h
    }

    #[test]
    fn json_lines_round_trip_preserves_every_field() {
        let h = sample();
        let text = h.to_json_lines();
        assert_eq!(text.lines().count(), h.len());
        assert_eq!(History::from_json_lines(&text).expect("our own output parses"), h);
        let mut buf = Vec::new();
        h.write_json_lines(&mut buf).expect("writing to a Vec cannot fail");
        assert_eq!(History::read_json_lines(&buf[..]).expect("our own output parses"), h);
    }

    #[test]
    fn json_payloads_are_hex_strings() {
        let line = Event::new(0, 1, 2, Op::Append { payload: vec![0xab, 0x01], streams: vec![] }, Outcome::Hole)
            .to_json_line();
        assert!(line.contains("\"ab01\""), "{line}");
    }

    #[test]
    fn bad_json_line_is_reported_with_its_number() {
        let mut text = sample().to_json_lines();
        text.push_str("\n{\"client\": 1}\n");
        match History::from_json_lines(&text) {
            Err(Error::Json { line, .. }) => assert_eq!(line, sample().len() + 2),
            other => panic!("expected a JSON error, got {other:?}"),
        }
        let odd = r#"{"client":0,"start":0,"end":0,"op":"tail","outcome":{"data":{"payload":"abc"}}}"#;
        assert!(matches!(History::from_json_lines(odd), Err(Error::Json { line: 1, .. })));
    }

    #[test]
    fn merge_of_client_files_orders_by_time_whatever_the_part_order() {
        let h = sample();
        let (mut a, mut b) = (History::new(), History::new());
        for (i, e) in h.events.iter().enumerate() {
            if i % 2 == 0 {
                a.push(e.clone())
            } else {
                b.push(e.clone())
            };
        }
        let ab = History::merge([a.clone(), b.clone()]);
        let ba = History::merge([b, a]);
        assert_eq!(ab, ba);
        assert!(ab.events.windows(2).all(|w| w[0].start <= w[1].start));
        assert_eq!(ab.len(), h.len());
    }

    #[test]
    fn short_payload_cuts_long_and_binary_payloads() {
        assert_eq!(short_payload(b"abc"), "'abc'");
        assert_eq!(short_payload(b"0123456789abcdefXYZ"), "'0123456789abcdef'..(19B)");
        assert_eq!(short_payload(&[0, 1, 2]), "0x000102");
        assert_eq!(short_payload(&[0; 20]), "0x0000000000000000..(20B)");
    }
}
