//! Agreement: a position holds one value for every client, forever. Acknowledged
//! appends, reads and stream entries are all observations of a position's value.

use std::collections::HashMap;

use crate::index::{observations, Source, Value};
use crate::invariant::AGREEMENT;
use crate::violation::sorted;
use crate::{History, Op, Outcome, Violation};

/// Distinct values remembered per position; more than this is reported as "and more".
const VALUES_PER_POSITION_MAX: usize = 8;

#[derive(Default)]
struct Seen<'a> {
    /// Each distinct value seen, with the first event that saw it.
    values: Vec<(Value<'a>, usize)>,
    /// Whether more distinct values were seen than `values` holds.
    more: bool,
    /// The earliest end time of a read (or stream read) that saw a value, and that event.
    first_read_end: Option<(u64, usize)>,
}

/// No two observations of a position differ (`Data` with other bytes, or `Data`
/// against `Hole`), whatever their times; an acknowledged append counts as an
/// observation of its position even before the acknowledgement. And no read
/// returns `Unwritten` for a position that a read which ended before it
/// started saw a value at (a written position never becomes unwritten).
pub fn check_agreement(history: &History) -> Vec<Violation> {
    let mut seen: HashMap<u64, Seen<'_>> = HashMap::new();
    for o in observations(history) {
        let s = seen.entry(o.position).or_default();
        if !s.values.iter().any(|(v, _)| *v == o.value) {
            if s.values.len() < VALUES_PER_POSITION_MAX {
                s.values.push((o.value, o.event));
            } else {
                s.more = true;
            }
        }
        if o.source != Source::Ack {
            let end = history.events[o.event].end;
            if s.first_read_end.is_none_or(|(t, _)| end < t) {
                s.first_read_end = Some((end, o.event));
            }
        }
    }

    let mut violations = Vec::new();
    for (position, s) in &seen {
        if s.values.len() > 1 {
            let listed: Vec<String> = s.values.iter().map(|(v, i)| format!("{v} (event {i})")).collect();
            let more = if s.more { " and more" } else { "" };
            violations.push(Violation::new(
                AGREEMENT,
                format!("position {position} holds {} values: {}{more}", s.values.len(), listed.join(", ")),
                s.values.iter().map(|(_, i)| *i).collect(),
            ));
        }
    }
    for (i, e) in history.events.iter().enumerate() {
        let (Op::Read { position }, Outcome::Unwritten) = (&e.op, &e.outcome) else { continue };
        let Some((end, seer)) = seen.get(position).and_then(|s| s.first_read_end) else { continue };
        if end < e.start {
            violations.push(Violation::new(
                AGREEMENT,
                format!(
                    "read of {position} returned unwritten at {}, after event {seer} had read a value there by {end}",
                    e.start
                ),
                vec![i, seer],
            ));
        }
    }
    sorted(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn reads_of_one_position_agree_across_clients_and_stream_reads() {
        let mut b = Builder::new();
        b.read(2, 0, 1, 0, Outcome::Unwritten);
        b.append(1, 0, 10, "a", &[7], 0);
        b.read(2, 5, 6, 0, data("a")); // before the ack: fine, it is the same value
        b.read(3, 11, 12, 0, data("a"));
        b.stream_read(3, 13, 14, 7, 0, 2, &[(0, "a")]);
        b.read(2, 15, 16, 1, Outcome::Hole);
        b.read(3, 17, 18, 1, Outcome::Hole);
        assert_clean(&check_agreement(&b.h));
    }

    #[test]
    fn two_values_at_one_position_is_a_violation() {
        let mut b = Builder::new();
        let first = b.read(1, 0, 1, 4, data("a"));
        let second = b.read(2, 100, 101, 4, data("b"));
        let v = check_agreement(&b.h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_found(&v, AGREEMENT, &[first, second]);
    }

    #[test]
    fn hole_read_at_an_acknowledged_position_is_a_violation_even_before_the_ack() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 100, "a", &[], 3);
        let hole = b.read(2, 10, 20, 3, Outcome::Hole);
        assert_found(&check_agreement(&b.h), AGREEMENT, &[append, hole]);
    }

    #[test]
    fn stream_entry_disagreeing_with_a_read_is_a_violation() {
        let mut b = Builder::new();
        let read = b.read(1, 0, 1, 2, data("x"));
        let stream = b.stream_read(2, 5, 6, 9, 0, 5, &[(2, "y")]);
        assert_found(&check_agreement(&b.h), AGREEMENT, &[read, stream]);
    }

    #[test]
    fn unwritten_after_a_value_was_read_is_a_violation() {
        let mut b = Builder::new();
        let seer = b.read(1, 0, 10, 6, Outcome::Hole);
        let later = b.read(2, 11, 12, 6, Outcome::Unwritten);
        assert_found(&check_agreement(&b.h), AGREEMENT, &[later, seer]);
    }

    #[test]
    fn unwritten_concurrent_with_a_read_of_a_value_is_not_a_violation() {
        let mut b = Builder::new();
        b.read(1, 0, 10, 6, data("a"));
        b.read(2, 10, 12, 6, Outcome::Unwritten);
        b.read(2, 5, 8, 6, Outcome::Unwritten);
        assert_clean(&check_agreement(&b.h));
    }

    #[test]
    fn timed_out_reads_and_failed_appends_are_not_observations() {
        let mut b = Builder::new();
        b.append(1, 0, 1, "a", &[], 0);
        b.append_failed(2, 0, 1, "b", &[]);
        b.read(3, 2, 3, 0, unknown());
        b.read(3, 4, 5, 0, data("a"));
        assert_clean(&check_agreement(&b.h));
    }
}
