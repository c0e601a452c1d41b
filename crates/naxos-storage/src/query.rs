//! Logic shared by every store: stripe arithmetic, the merge of a stream
//! query's two sorted lists, the read-range budget and the argument checks, so
//! that the in-memory and the on-disk store cannot drift apart.

use crate::{Error, Result, StreamQuery, StripeFilter, POSITION_MAX, RANGE_ENTRIES_MAX};
use naxos_wire::Position;

/// The first position at or after `p` that belongs to the stripe, if any.
pub(crate) fn stripe_at_or_after(stripe: StripeFilter, p: u64) -> Option<u64> {
    let count = u64::from(stripe.count.max(1));
    let index = u64::from(stripe.index);
    if index >= count {
        // A stripe index outside the segment's stripes owns no position.
        return None;
    }
    let start = stripe.segment_start.0;
    let base = p.max(start);
    let off = (base - start) % count;
    let delta = if off <= index { index - off } else { count - off + index };
    base.checked_add(delta)
}

/// The distance between two positions of the same stripe.
pub(crate) fn stripe_step(stripe: StripeFilter) -> u64 {
    u64::from(stripe.count.max(1))
}

/// Merges the stream's positions and the unwritten positions (both ascending,
/// each holding at least every member below the `limit`-th of the merge) into
/// at most `limit` results; `next` is one past the last result if the limit was
/// reached, else `to`.
pub(crate) fn merge(
    stream: impl IntoIterator<Item = u64>,
    unwritten: Vec<u64>,
    to: Position,
    limit: usize,
) -> StreamQuery {
    let mut stream = stream.into_iter().peekable();
    let mut unwritten = unwritten.into_iter().peekable();
    let mut answer = StreamQuery { positions: Vec::new(), unwritten: Vec::new(), next: to };
    let mut taken = 0;
    while taken < limit {
        let last = match (stream.peek().copied(), unwritten.peek().copied()) {
            (None, None) => return answer,
            (Some(s), Some(u)) if u < s => {
                unwritten.next();
                answer.unwritten.push(Position(u));
                u
            }
            (Some(s), _) => {
                stream.next();
                answer.positions.push(Position(s));
                s
            }
            (None, Some(u)) => {
                unwritten.next();
                answer.unwritten.push(Position(u));
                u
            }
        };
        taken += 1;
        if taken == limit {
            answer.next = Position(last + 1);
        }
    }
    answer
}

/// Checks the start of a range read or query: `Ok(false)` for an empty range
/// (nothing to do), `Trimmed` if it starts below the trim mark.
pub(crate) fn check_range(from: Position, to: Position, mark: Position) -> Result<bool> {
    if from >= to {
        return Ok(false);
    }
    if from < mark {
        return Err(Error::Trimmed { position: from, mark });
    }
    Ok(true)
}

/// Checks that `position` can be written at all (not the reserved `u64::MAX`).
pub(crate) fn check_position(position: Position) -> Result<()> {
    if position > POSITION_MAX {
        return Err(Error::Invalid(format!("position {position} is reserved (highest usable: {POSITION_MAX})")));
    }
    Ok(())
}

/// How much a range read may still gather.
pub(crate) struct Budget {
    bytes_max: usize,
    bytes: usize,
    entries: usize,
}

impl Budget {
    /// A budget of `bytes_max` payload bytes (and at most `RANGE_ENTRIES_MAX` entries).
    pub(crate) fn new(bytes_max: usize) -> Budget {
        Budget { bytes_max, bytes: 0, entries: 0 }
    }

    /// Whether an entry with `payload_bytes` fits; takes it if so. The first
    /// entry always fits, so a range read always makes progress.
    pub(crate) fn take(&mut self, payload_bytes: usize) -> bool {
        if self.entries > 0
            && (self.entries >= RANGE_ENTRIES_MAX || self.bytes.saturating_add(payload_bytes) > self.bytes_max)
        {
            return false;
        }
        self.entries += 1;
        self.bytes = self.bytes.saturating_add(payload_bytes);
        true
    }

    /// Whether `record_bytes` more bytes of records could still fit (records
    /// are larger than their payloads, so this errs on the side of less).
    pub(crate) fn allows(&self, record_bytes: u64) -> bool {
        self.entries < RANGE_ENTRIES_MAX && (self.bytes as u64).saturating_add(record_bytes) <= self.bytes_max as u64
    }

    /// Whether anything was taken yet.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stripe(start: u64, count: u32, index: u32) -> StripeFilter {
        StripeFilter { segment_start: Position(start), count, index }
    }

    #[test]
    fn stripe_at_or_after_finds_the_next_member() {
        let s = stripe(10, 3, 1);
        assert_eq!(stripe_at_or_after(s, 0), Some(11));
        assert_eq!(stripe_at_or_after(s, 11), Some(11));
        assert_eq!(stripe_at_or_after(s, 12), Some(14));
        assert_eq!(stripe_at_or_after(s, 13), Some(14));
        for p in 0..40 {
            let next = stripe_at_or_after(s, p).unwrap();
            assert!(s.contains(Position(next)) && next >= p);
            assert!((p..next).all(|q| !s.contains(Position(q))));
        }
        assert_eq!(stripe_at_or_after(stripe(0, 2, 5), 0), None);
        assert_eq!(stripe_at_or_after(StripeFilter::ALL, 7), Some(7));
    }

    #[test]
    fn merge_stops_at_the_limit_and_says_where() {
        let q = merge(vec![1, 5, 9], vec![2, 3, 7], Position(20), 4);
        assert_eq!(q.positions, vec![Position(1), Position(5)]);
        assert_eq!(q.unwritten, vec![Position(2), Position(3)]);
        assert_eq!(q.next, Position(6));
        let q = merge(vec![1], vec![2], Position(20), 5);
        assert_eq!(q.next, Position(20));
        let q = merge(vec![1], vec![2], Position(20), 0);
        assert!(q.positions.is_empty() && q.unwritten.is_empty());
    }

    #[test]
    fn budget_always_admits_the_first_entry() {
        let mut b = Budget::new(10);
        assert!(b.take(100));
        assert!(!b.take(0), "nothing more once the budget is spent");
        let mut b = Budget::new(10);
        assert!(b.take(4));
        assert!(b.take(6));
        assert!(!b.take(1));
    }
}
