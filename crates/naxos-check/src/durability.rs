//! Durability: an acknowledged append reads back with its bytes until it is
//! trimmed, and the history shows that it did.

use std::collections::HashMap;

use crate::index::{observations, Source, Trims, Value};
use crate::invariant::DURABILITY;
use crate::violation::sorted;
use crate::{short_payload, History, Op, Outcome, Violation};

/// The acknowledged appends at one position, by acknowledgement time.
struct Acked<'a> {
    /// `(end, event, payload)`, sorted by end.
    acks: Vec<(u64, usize, &'a [u8])>,
    /// The rank in `acks` of the first one whose payload differs from the first's.
    conflict: Option<usize>,
}

/// Every read of an acknowledged position that started after the
/// acknowledgement ended returns the acknowledged bytes, or `Trimmed` if a
/// trim above the position was invoked before the read ended (never `Hole`,
/// other bytes or `Unwritten`); no read returns `Trimmed` unless such a trim
/// was invoked; and every acknowledged append is read back by at least one read
/// or stream read that started after its acknowledgement, or lies below a trim
/// invoked at some point.
pub fn check_durability(history: &History) -> Vec<Violation> {
    let events = &history.events;
    let trims = Trims::new(history);
    let mut acked: HashMap<u64, Acked<'_>> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if let (Op::Append { payload, .. }, Outcome::Appended { position }) = (&e.op, &e.outcome) {
            acked.entry(*position).or_insert_with(|| Acked { acks: Vec::new(), conflict: None }).acks.push((
                e.end,
                i,
                payload.as_slice(),
            ));
        }
    }
    for a in acked.values_mut() {
        a.acks.sort_unstable();
        let first = a.acks[0].2;
        a.conflict = a.acks.iter().position(|ack| ack.2 != first);
    }

    let mut violations = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let Op::Read { position } = e.op else { continue };
        let p = position;
        let before: &[(u64, usize, &[u8])] = match acked.get(&p) {
            Some(a) => &a.acks[..a.acks.partition_point(|ack| ack.0 < e.start)],
            None => &[],
        };
        let first = before.first();
        let wrong = |what: String, ack: &(u64, usize, &[u8])| {
            Violation::new(
                DURABILITY,
                format!(
                    "read of {p} started at {} and returned {what}, but the append of {} was acknowledged there at {}",
                    e.start,
                    short_payload(ack.2),
                    ack.0
                ),
                vec![i, ack.1],
            )
        };
        match &e.outcome {
            Outcome::Trimmed if trims.covering(p, e.end).is_none() => {
                let mut involved = vec![i];
                involved.extend(first.map(|ack| ack.1));
                violations.push(Violation::new(
                    DURABILITY,
                    format!("read of {p} returned trimmed, but no trim above {p} was invoked by its end at {}", e.end),
                    involved,
                ));
            }
            Outcome::Data { payload } => {
                if let Some(ack) = first {
                    if ack.2 != payload.as_slice() {
                        violations.push(wrong(format!("data {}", short_payload(payload)), ack));
                    } else if let Some(c) = acked[&p].conflict.filter(|&c| c < before.len()) {
                        violations.push(wrong(format!("data {}", short_payload(payload)), &before[c]));
                    }
                }
            }
            Outcome::Hole => {
                if let Some(ack) = first {
                    violations.push(wrong("a hole".into(), ack));
                }
            }
            Outcome::Unwritten => {
                if let Some(ack) = first {
                    violations.push(wrong("unwritten".into(), ack));
                }
            }
            _ => {}
        }
    }

    // The latest start of a read that returned each (position, payload).
    let mut read_back: HashMap<(u64, &[u8]), u64> = HashMap::new();
    for o in observations(history) {
        if let (Source::Read | Source::StreamEntry, Value::Data(payload)) = (o.source, o.value) {
            let start = events[o.event].start;
            let latest = read_back.entry((o.position, payload)).or_insert(start);
            *latest = (*latest).max(start);
        }
    }
    let trimmed_ever = trims.max_ever().map_or(0, |(position, _)| position);
    for (&p, a) in &acked {
        for &(end, i, payload) in &a.acks {
            let read_after = read_back.get(&(p, payload)).is_some_and(|&start| start > end);
            if !read_after && p >= trimmed_ever {
                violations.push(Violation::new(
                    DURABILITY,
                    format!(
                        "append of {} acknowledged at {p} by {end} was never read back: no read of {p} started after the acknowledgement returned it",
                        short_payload(payload)
                    ),
                    vec![i],
                ));
            }
        }
    }
    sorted(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn acknowledged_appends_that_read_back_pass() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[], 0);
        b.append(2, 0, 12, "b", &[5], 1);
        b.read(3, 5, 15, 0, Outcome::Unwritten); // started before the ack ended
        b.read(3, 11, 20, 0, data("a"));
        b.stream_read(3, 13, 20, 5, 0, 2, &[(1, "b")]);
        assert_clean(&check_durability(&b.h));
    }

    #[test]
    fn lost_ack_that_is_never_read_back_is_a_violation() {
        let mut b = Builder::new();
        let lost = b.append(1, 0, 10, "a", &[], 0);
        b.read(2, 5, 20, 0, data("a")); // concurrent with the ack: does not count
        b.read(2, 30, 40, 1, Outcome::Unwritten); // the final scan stopped early
        let v = check_durability(&b.h);
        assert!(assert_found(&v, DURABILITY, &[lost]).message.contains("never read back"));
    }

    #[test]
    fn hole_after_ack_is_a_violation() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 10, "a", &[], 3);
        let hole = b.read(2, 11, 12, 3, Outcome::Hole);
        assert_found(&check_durability(&b.h), DURABILITY, &[hole, append]);
    }

    #[test]
    fn unwritten_or_other_data_after_ack_is_a_violation() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 10, "a", &[], 3);
        let gone = b.read(2, 11, 12, 3, Outcome::Unwritten);
        let other = b.read(2, 13, 14, 3, data("z"));
        b.read(2, 15, 16, 3, data("a"));
        let v = check_durability(&b.h);
        assert_found(&v, DURABILITY, &[gone, append]);
        assert_found(&v, DURABILITY, &[other, append]);
        assert_eq!(v.len(), 2, "{v:?}");
    }

    #[test]
    fn trimmed_read_without_an_invoked_trim_is_a_violation() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 10, "a", &[], 3);
        let read = b.read(2, 11, 12, 3, Outcome::Trimmed);
        b.trim(3, 13, 14, 4, Outcome::Done); // too late for that read
        assert_found(&check_durability(&b.h), DURABILITY, &[read, append]);
    }

    #[test]
    fn trimmed_read_after_an_invoked_trim_is_accepted_even_if_the_trim_failed() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[], 3);
        b.trim(3, 11, 30, 4, unknown());
        b.read(2, 12, 20, 3, Outcome::Trimmed);
        b.read(2, 21, 22, 3, data("a")); // trimming is lazy: data may still be there
        assert_clean(&check_durability(&b.h));
    }

    #[test]
    fn acknowledged_append_below_a_trim_needs_no_read_back() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[], 3);
        b.trim(3, 11, 12, 4, Outcome::Done);
        assert_clean(&check_durability(&b.h));
    }

    #[test]
    fn trim_at_the_position_does_not_excuse_it() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 10, "a", &[], 3);
        b.trim(3, 11, 12, 3, Outcome::Done); // discards positions below 3 only
        let read = b.read(2, 13, 14, 3, Outcome::Trimmed);
        let v = check_durability(&b.h);
        assert_found(&v, DURABILITY, &[read]);
        assert_found(&v, DURABILITY, &[append]);
    }

    #[test]
    fn failed_append_never_seen_and_timed_out_read_are_not_violations() {
        let mut b = Builder::new();
        b.append_failed(1, 0, 10, "a", &[]);
        b.append(1, 11, 20, "b", &[], 0);
        b.read(2, 21, 30, 0, unknown());
        b.read(2, 31, 32, 0, data("b"));
        b.read(2, 33, 34, 1, Outcome::Unwritten);
        assert_clean(&check_durability(&b.h));
    }
}
