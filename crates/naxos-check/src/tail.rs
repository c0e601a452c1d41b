//! Tail: the tail is monotonic and linearizable. Checked by one sweep over
//! the events sorted by time, keeping the highest position and the highest
//! tail known to have been reached.

use crate::index::observations;
use crate::invariant::TAIL;
use crate::violation::sorted;
use crate::{History, Op, Outcome, Violation};

/// A `Tail` that began after an event ended returns more than every position
/// that event saw taken (an acknowledged append, a `Data` or `Hole` read, a
/// stream entry), and at least every tail it returned (a `Tail`, or a stream
/// read's `to`).
pub fn check_tail(history: &History) -> Vec<Violation> {
    let events = &history.events;
    // (end, position, event): the position was known taken at `end`; one per event, its highest.
    let mut taken: Vec<(u64, u64, usize)> = Vec::new();
    for o in observations(history) {
        match taken.last_mut() {
            Some(last) if last.2 == o.event => last.1 = last.1.max(o.position),
            _ => taken.push((events[o.event].end, o.position, o.event)),
        }
    }
    // (end, tail, event): the tail was at least `tail` at `end`.
    let mut reached: Vec<(u64, u64, usize)> = Vec::new();
    // (start, tail, event): the tails to check.
    let mut tails: Vec<(u64, u64, usize)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        match (&e.op, &e.outcome) {
            (Op::Tail, Outcome::Tail { tail }) => {
                reached.push((e.end, *tail, i));
                tails.push((e.start, *tail, i));
            }
            (Op::StreamRead { .. }, Outcome::Stream { to, .. }) => reached.push((e.end, *to, i)),
            _ => {}
        }
    }
    taken.sort_unstable();
    reached.sort_unstable();
    tails.sort_unstable();

    let mut violations = Vec::new();
    let (mut next_taken, mut next_reached) = (0, 0);
    let mut max_taken: Option<(u64, u64, usize)> = None;
    let mut max_reached: Option<(u64, u64, usize)> = None;
    for &(start, tail, i) in &tails {
        while let Some(&fact) = taken.get(next_taken).filter(|f| f.0 < start) {
            if max_taken.is_none_or(|m| fact.1 > m.1) {
                max_taken = Some(fact);
            }
            next_taken += 1;
        }
        while let Some(&fact) = reached.get(next_reached).filter(|f| f.0 < start) {
            if max_reached.is_none_or(|m| fact.1 > m.1) {
                max_reached = Some(fact);
            }
            next_reached += 1;
        }
        if let Some((end, position, j)) = max_taken.filter(|m| tail <= m.1) {
            violations.push(Violation::new(
                TAIL,
                format!(
                    "tail started at {start} returned {tail}, but position {position} was taken (event {j}, '{}') by {end}",
                    events[j].outcome
                ),
                vec![i, j],
            ));
        }
        if let Some((end, earlier, j)) = max_reached.filter(|m| tail < m.1) {
            violations.push(Violation::new(
                TAIL,
                format!("tail went backwards: {tail} from a tail started at {start}, after event {j} saw {earlier} by {end}"),
                vec![i, j],
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
    fn monotonic_tail_above_every_acknowledged_append_passes() {
        let mut b = Builder::new();
        b.tail(1, 0, 1, 0);
        b.append(2, 2, 10, "a", &[], 0);
        b.tail(1, 5, 6, 0); // concurrent with the append
        b.tail(1, 11, 12, 1);
        b.tail(3, 11, 20, 1);
        b.tail(1, 13, 14, 5); // other appends (unknown to the history) may have taken tokens
        b.tail(3, 13, 25, 5);
        b.read(1, 30, 31, 4, Outcome::Hole);
        b.tail(1, 32, 33, 5);
        assert_clean(&check_tail(&b.h));
    }

    #[test]
    fn tail_going_backwards_is_a_violation() {
        let mut b = Builder::new();
        let high = b.tail(1, 0, 1, 7);
        let low = b.tail(2, 2, 3, 6);
        let v = check_tail(&b.h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_found(&v, TAIL, &[low, high]);
    }

    #[test]
    fn tail_below_an_acknowledged_append_is_a_violation() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 10, "a", &[], 4);
        let tail = b.tail(2, 11, 12, 4);
        assert_found(&check_tail(&b.h), TAIL, &[tail, append]);
    }

    #[test]
    fn tail_below_a_read_hole_or_a_stream_tail_is_a_violation() {
        let mut b = Builder::new();
        let hole = b.read(1, 0, 10, 8, Outcome::Hole);
        let stream = b.stream_read(1, 0, 10, 1, 0, 12, &[]);
        let tail = b.tail(2, 11, 12, 8);
        let v = check_tail(&b.h);
        assert_found(&v, TAIL, &[tail, hole]);
        assert_found(&v, TAIL, &[tail, stream]);
    }

    #[test]
    fn tail_concurrent_with_an_append_or_another_tail_may_miss_it() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[], 4);
        b.tail(2, 10, 12, 3);
        b.tail(3, 0, 11, 9);
        b.tail(2, 5, 13, 3);
        b.append_failed(1, 0, 10, "b", &[]);
        b.read(1, 0, 20, 0, unknown());
        assert_clean(&check_tail(&b.h));
    }
}
