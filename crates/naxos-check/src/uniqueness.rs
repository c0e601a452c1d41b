//! Uniqueness: an append lands at most once, so its payload sits at one
//! position. A failed append may have landed, but still only once.

use std::collections::HashMap;

use crate::index::{observations, Value};
use crate::invariant::UNIQUENESS;
use crate::violation::sorted;
use crate::{short_payload, History, Violation};

/// Distinct positions remembered per payload; more is reported as "and more".
const POSITIONS_PER_PAYLOAD_MAX: usize = 8;

/// The distinct positions a payload was seen at, each with the first event that saw it there,
/// and whether there were more than [`POSITIONS_PER_PAYLOAD_MAX`].
#[derive(Default)]
struct SeenAt {
    positions: Vec<(u64, usize)>,
    more: bool,
}

/// No payload is seen at two positions, counting acknowledged appends, `Data` reads and stream entries.
pub fn check_uniqueness(history: &History) -> Vec<Violation> {
    let mut at: HashMap<&[u8], SeenAt> = HashMap::new();
    for o in observations(history) {
        let Value::Data(payload) = o.value else { continue };
        let SeenAt { positions, more } = at.entry(payload).or_default();
        if !positions.iter().any(|(p, _)| *p == o.position) {
            if positions.len() < POSITIONS_PER_PAYLOAD_MAX {
                positions.push((o.position, o.event));
            } else {
                *more = true;
            }
        }
    }
    let mut violations = Vec::new();
    for (payload, SeenAt { positions, more }) in &at {
        if positions.len() > 1 {
            let listed: Vec<String> = positions.iter().map(|(p, i)| format!("{p} (event {i})")).collect();
            let more = if *more { " and more" } else { "" };
            violations.push(Violation::new(
                UNIQUENESS,
                format!(
                    "payload {} sits at {} positions: {}{more}",
                    short_payload(payload),
                    positions.len(),
                    listed.join(", ")
                ),
                positions.iter().map(|(_, i)| *i).collect(),
            ));
        }
    }
    sorted(violations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Outcome;

    #[test]
    fn each_payload_at_one_position_passes() {
        let mut b = Builder::new();
        b.append(1, 0, 1, "a", &[1], 0);
        b.append(1, 2, 3, "b", &[1], 1);
        b.read(2, 4, 5, 0, data("a"));
        b.read(2, 4, 5, 1, data("b"));
        b.stream_read(2, 6, 7, 1, 0, 2, &[(0, "a"), (1, "b")]);
        assert_clean(&check_uniqueness(&b.h));
    }

    #[test]
    fn duplicate_payload_at_two_positions_is_a_violation() {
        let mut b = Builder::new();
        let append = b.append(1, 0, 1, "a", &[], 0);
        let dup = b.read(2, 4, 5, 7, data("a"));
        assert_found(&check_uniqueness(&b.h), UNIQUENESS, &[append, dup]);
    }

    #[test]
    fn failed_append_that_landed_twice_is_a_violation() {
        let mut b = Builder::new();
        b.append_failed(1, 0, 10, "a", &[3]);
        let one = b.read(2, 11, 12, 4, data("a"));
        let two = b.stream_read(2, 11, 12, 3, 0, 9, &[(6, "a")]);
        assert_found(&check_uniqueness(&b.h), UNIQUENESS, &[one, two]);
    }

    #[test]
    fn failed_append_whose_payload_shows_up_once_is_not_a_violation() {
        let mut b = Builder::new();
        b.append_failed(1, 0, 10, "a", &[3]);
        b.read(2, 11, 12, 4, data("a"));
        b.read(3, 13, 14, 4, data("a"));
        b.stream_read(2, 11, 12, 3, 0, 9, &[(4, "a")]);
        b.read(2, 11, 12, 5, Outcome::Hole);
        assert_clean(&check_uniqueness(&b.h));
    }
}
