//! Validity: a read returns only what some client appended, never bytes that
//! were corrupted, invented or taken from elsewhere. (Stream entries are
//! checked by the streams checker, which also checks their stream.)

use crate::index::appends_by_payload;
use crate::invariant::VALIDITY;
use crate::violation::sorted;
use crate::{short_payload, History, Op, Outcome, Violation};

/// Every `Data` a read returns is the payload of some `Append` in the history (acknowledged or not).
pub fn check_validity(history: &History) -> Vec<Violation> {
    let appended = appends_by_payload(history);
    let mut violations = Vec::new();
    for (i, e) in history.events.iter().enumerate() {
        if let (Op::Read { position }, Outcome::Data { payload }) = (&e.op, &e.outcome) {
            if !appended.contains_key(payload.as_slice()) {
                violations.push(Violation::new(
                    VALIDITY,
                    format!("read of {position} returned {}, which no append carried", short_payload(payload)),
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
    fn reads_of_appended_payloads_pass_even_if_the_append_failed() {
        let mut b = Builder::new();
        b.append(1, 0, 1, "a", &[], 0);
        b.append_failed(1, 0, 1, "b", &[]);
        b.read(2, 0, 5, 0, data("a"));
        b.read(2, 0, 5, 1, data("b"));
        assert_clean(&check_validity(&b.h));
    }

    #[test]
    fn read_of_a_payload_never_appended_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 1, "a", &[], 0);
        let bad = b.read(2, 0, 5, 0, data("a\u{0}corrupted"));
        assert_found(&check_validity(&b.h), VALIDITY, &[bad]);
    }
}
