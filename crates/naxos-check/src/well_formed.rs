//! Well-formedness of the history itself: a recorder bug (an outcome that does
//! not fit its operation, time running backwards, a workload that reused a
//! payload) would otherwise make the other checkers quietly skip events.

use std::collections::HashMap;

use crate::invariant::WELL_FORMED;
use crate::violation::sorted;
use crate::{History, Op, Outcome, Violation};

/// Every event ends no earlier than it starts, its outcome fits its op, and no two appends share a payload.
pub fn check_well_formed(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut payloads: HashMap<&[u8], usize> = HashMap::new();
    for (i, e) in history.events.iter().enumerate() {
        if e.end < e.start {
            violations.push(Violation::new(
                WELL_FORMED,
                format!("event ends at {} before it starts at {}", e.end, e.start),
                vec![i],
            ));
        }
        let fits = matches!(
            (&e.op, &e.outcome),
            (_, Outcome::Unknown { .. })
                | (Op::Append { .. }, Outcome::Appended { .. })
                | (Op::Read { .. }, Outcome::Data { .. } | Outcome::Hole | Outcome::Unwritten | Outcome::Trimmed)
                | (Op::Tail, Outcome::Tail { .. })
                | (Op::StreamRead { .. }, Outcome::Stream { .. } | Outcome::Trimmed)
                | (Op::StreamTail { .. }, Outcome::StreamLast { .. })
                | (Op::Trim { .. }, Outcome::Done)
                | (Op::Transfer { .. }, Outcome::Committed | Outcome::Aborted { .. })
                | (Op::Balances { .. }, Outcome::Accounts { .. })
                | (Op::CounterAdd { .. }, Outcome::Done)
                | (Op::CounterRead { .. }, Outcome::Value { .. })
                | (Op::RegisterCas { .. }, Outcome::Committed | Outcome::Aborted { .. })
                | (Op::ListTxn { .. }, Outcome::Lists { .. } | Outcome::Aborted { .. })
        );
        if !fits {
            violations.push(Violation::new(
                WELL_FORMED,
                format!("outcome '{}' does not fit op '{}'", e.outcome, e.op),
                vec![i],
            ));
        }
        if let Op::Append { payload, .. } = &e.op {
            if let Some(&first) = payloads.get(payload.as_slice()) {
                violations.push(Violation::new(
                    WELL_FORMED,
                    format!(
                        "payload {} is appended twice (payloads must be unique per history)",
                        crate::short_payload(payload)
                    ),
                    vec![first, i],
                ));
            } else {
                payloads.insert(payload, i);
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
    fn history_of_fitting_outcomes_is_well_formed() {
        let mut b = Builder::new();
        b.append(0, 0, 1, "a", &[], 0);
        b.append_failed(0, 0, 1, "b", &[]);
        b.read(0, 2, 3, 0, data("a"));
        b.read(0, 2, 3, 1, Outcome::Hole);
        b.read(0, 2, 3, 9, Outcome::Unwritten);
        b.tail(0, 4, 4, 2);
        b.stream_read(0, 5, 6, 1, 0, 2, &[]);
        b.stream_read_with(0, 5, 6, 1, 0, Outcome::Trimmed);
        b.trim(0, 7, 8, 1, Outcome::Done);
        assert_clean(&check_well_formed(&b.h));
    }

    #[test]
    fn event_ending_before_it_starts_is_malformed() {
        let mut b = Builder::new();
        let bad = b.tail(0, 10, 9, 0);
        assert_found(&check_well_formed(&b.h), WELL_FORMED, &[bad]);
    }

    #[test]
    fn outcome_not_fitting_its_op_is_malformed() {
        let mut b = Builder::new();
        let bad = b.read(0, 1, 2, 0, Outcome::Appended { position: 0 });
        let bad_too = b.stream_read_with(0, 1, 2, 1, 0, Outcome::Hole);
        let v = check_well_formed(&b.h);
        assert_found(&v, WELL_FORMED, &[bad]);
        assert_found(&v, WELL_FORMED, &[bad_too]);
    }

    #[test]
    fn payload_appended_twice_is_malformed() {
        let mut b = Builder::new();
        let first = b.append(0, 0, 1, "same", &[], 0);
        let second = b.append_failed(1, 0, 1, "same", &[]);
        assert_found(&check_well_formed(&b.h), WELL_FORMED, &[first, second]);
    }
}
