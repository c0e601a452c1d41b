//! A [`Violation`] of an invariant, and [`explain`], which turns one into a
//! short trace of the events around it.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use crate::History;

/// One breach of one invariant, naming the events that show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Which invariant: one of the names in [`crate::invariant`].
    pub invariant: &'static str,
    /// What is wrong, in words, with positions, payloads and times.
    pub message: String,
    /// Indices into [`History::events`] of the events involved, the most telling first.
    pub events: Vec<usize>,
}

impl Violation {
    /// A violation from its parts.
    pub fn new(invariant: &'static str, message: impl Into<String>, events: Vec<usize>) -> Self {
        Violation { invariant, message: message.into(), events }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (events {:?})", self.invariant, self.message, self.events)
    }
}

/// Sorts a checker's findings so that reports do not depend on hash order.
pub(crate) fn sorted(mut violations: Vec<Violation>) -> Vec<Violation> {
    violations.sort_by(|a, b| a.events.cmp(&b.events).then_with(|| a.message.cmp(&b.message)));
    violations
}

/// The violation and a trace: its events plus `context` events either side of each, in time order.
///
/// One line per event: index, start..end, client, operation and outcome, with
/// payloads cut short; the involved events are marked `*`. The trace depends
/// only on the history, not on the seed or run that produced it.
pub fn explain(history: &History, violation: &Violation, context: usize) -> String {
    let events = &history.events;
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| (events[i].start, events[i].end, i));
    let mut rank = vec![0usize; events.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i] = r;
    }
    let involved: BTreeSet<usize> = violation.events.iter().copied().filter(|&i| i < events.len()).collect();
    let mut shown = BTreeSet::new();
    for &i in &involved {
        let r = rank[i];
        let last = r.saturating_add(context).min(events.len().saturating_sub(1));
        shown.extend(r.saturating_sub(context)..=last);
    }
    let width = events.len().max(1).to_string().len();
    let mut out = format!("{violation}\n");
    let mut previous = None;
    for r in shown {
        if previous.is_some_and(|p: usize| p + 1 < r) {
            out.push_str("   ...\n");
        }
        previous = Some(r);
        let i = order[r];
        let mark = if involved.contains(&i) { '*' } else { ' ' };
        out.push_str(&format!("{mark} #{i:<width$} {}\n", events[i]));
    }
    for &i in &violation.events {
        if i >= events.len() {
            out.push_str(&format!("! event #{i} is not in this history ({} events)\n", events.len()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;
    use crate::Op;
    use crate::{check_all, invariant, Outcome};

    #[test]
    fn explain_prints_involved_events_with_context_in_time_order() {
        let mut b = Builder::new();
        for p in 0..10 {
            b.tail(9, 100 * p, 100 * p + 1, p);
        }
        let append = b.append(1, 250, 260, "payload-that-is-quite-long", &[], 20);
        let hole = b.read(2, 750, 760, 20, Outcome::Hole);
        let v = Violation::new(invariant::DURABILITY, "hole after ack", vec![hole, append]);
        let text = explain(&b.h, &v, 1);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("durability: hole after ack (events [{hole}, {append}])"));
        // Append at 250 with its neighbours (tails at 200 and 300), a gap, the hole at 750 with its neighbours.
        assert!(lines[1].contains("t=200..201"), "{text}");
        assert!(lines[2].starts_with("* #10"), "{text}");
        assert!(lines[2].contains("'payload-that-is-'..(26B)") && lines[2].contains("appended at 20"), "{text}");
        assert!(lines[3].contains("t=300..301"), "{text}");
        assert_eq!(lines[4], "   ...");
        assert!(lines[5].contains("t=700..701"), "{text}");
        assert!(lines[6].starts_with("* #11") && lines[6].contains("read 20 -> hole"), "{text}");
        assert!(lines[7].contains("t=800..801"), "{text}");
        assert_eq!(lines.len(), 8, "{text}");
    }

    #[test]
    fn explain_with_no_context_shows_only_the_involved_events() {
        let mut b = Builder::new();
        let high = b.tail(1, 0, 1, 7);
        b.tail(1, 2, 3, 7);
        let low = b.tail(2, 4, 5, 6);
        let violations = check_all(&b.h);
        assert_eq!(violations.len(), 1, "{violations:?}");
        let text = explain(&b.h, &violations[0], 0);
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(text.contains(&format!("* #{high} t=0..1 client 1: tail -> tail 7")), "{text}");
        assert!(text.contains(&format!("* #{low} t=4..5 client 2: tail -> tail 6")), "{text}");
    }

    #[test]
    fn check_all_runs_every_checker() {
        let mut b = Builder::new();
        b.tail(1, 10, 5, 0); // well_formed
        b.read(1, 0, 1, 0, data("a")); // agreement (with the hole below), validity
        b.read(1, 0, 1, 0, Outcome::Hole);
        b.append(1, 0, 1, "b", &[1], 3); // durability (never read back)
        b.read(1, 0, 1, 4, data("b")); // uniqueness
        b.tail(1, 2, 3, 1); // tail
        b.stream_read(1, 2, 3, 1, 5, 9, &[(5, "zz")]); // streams
        let accounts = Outcome::Accounts { balances: vec![("a".into(), 3)] };
        b.h.record(1, 4, 5, Op::Balances { total: 2 }, accounts); // bank
        b.h.record(1, 4, 5, Op::CounterRead { counter: "c".into() }, Outcome::Value { value: 1 }); // counter
        let cas = Op::RegisterCas { register: "r".into(), expected: Some("x".into()), new: "y".into() };
        b.h.record(1, 4, 5, cas, Outcome::Committed); // register
        let txn = Op::ListTxn { ops: vec![crate::ListOp::Read { key: "l".into() }] };
        b.h.record(1, 4, 5, txn, Outcome::Lists { reads: vec![("l".into(), vec![9])] }); // list_append (9 never appended)
        let found: std::collections::BTreeSet<&str> = check_all(&b.h).iter().map(|v| v.invariant).collect();
        assert_eq!(found, invariant::ALL.into_iter().collect());
    }
}
