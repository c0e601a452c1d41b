//! Checkers for replicated objects and transactions (naxos-tango), over the
//! same histories: the bank (every snapshot of the accounts, once they
//! exist, holds the total they were opened with, and no balance goes below
//! zero: transfers check the balance in the same transaction, so a lost
//! update shows as money made, lost or overdrawn), and the counter (every
//! read lies between the adds acknowledged before it began and every add
//! invoked before it ended, unknown ones included: a lost update reads too
//! low, one applied twice too high), and the register (the successful
//! compare-and-sets form one chain of versions: no two took the register
//! from the same value, each took it from the initial value or from one
//! some compare-and-set wrote).

use std::collections::HashMap;

use crate::invariant::{BANK, COUNTER, REGISTER};
use crate::violation::sorted;
use crate::{History, Op, Outcome, Violation};

/// Bank: snapshots conserve the total and hold no negative balance.
pub fn check_bank(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    for (i, e) in history.events.iter().enumerate() {
        let (Op::Balances { total }, Outcome::Accounts { balances }) = (&e.op, &e.outcome) else { continue };
        if balances.is_empty() {
            continue;
        }
        let sum: i64 = balances.iter().map(|(_, b)| b).sum();
        if sum != *total {
            violations.push(Violation::new(
                BANK,
                format!("a snapshot of the accounts holds {sum}, not the {total} they were opened with: {balances:?}"),
                vec![i],
            ));
        }
        if let Some((a, b)) = balances.iter().find(|(_, b)| *b < 0) {
            violations.push(Violation::new(BANK, format!("account {a} is overdrawn ({b}) in a snapshot"), vec![i]));
        }
    }
    sorted(violations)
}

/// Counter: no lost and no doubled update.
pub fn check_counter(history: &History) -> Vec<Violation> {
    // Per counter: adds as (start, end, delta, acknowledged).
    let mut adds: HashMap<&str, Vec<(u64, u64, i64, bool)>> = HashMap::new();
    for e in &history.events {
        if let Op::CounterAdd { counter, delta } = &e.op {
            let acked = matches!(e.outcome, Outcome::Done);
            adds.entry(counter).or_default().push((e.start, e.end, *delta, acked));
        }
    }
    let mut violations = Vec::new();
    for (i, e) in history.events.iter().enumerate() {
        let (Op::CounterRead { counter }, Outcome::Value { value }) = (&e.op, &e.outcome) else { continue };
        let list = adds.get(counter.as_str()).map(Vec::as_slice).unwrap_or(&[]);
        // Acknowledged before the read began: must be in it.
        let floor: i64 = list.iter().filter(|a| a.3 && a.1 < e.start).map(|a| a.2).sum();
        // Invoked before the read ended (acknowledged or not): may be in it.
        let ceiling: i64 = list.iter().filter(|a| a.0 <= e.end).map(|a| a.2).sum();
        if *value < floor {
            violations.push(Violation::new(
                COUNTER,
                format!(
                    "counter {counter} reads {value}, below the {floor} acknowledged before the read (a lost update)"
                ),
                vec![i],
            ));
        } else if *value > ceiling {
            violations.push(Violation::new(
                COUNTER,
                format!(
                    "counter {counter} reads {value}, above the {ceiling} of every add invoked before it ended (an update applied twice)"
                ),
                vec![i],
            ));
        }
    }
    sorted(violations)
}

/// Register: successful compare-and-sets form one chain of versions.
pub fn check_register(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Per register: the value each successful CAS took it from -> event.
    let mut from: HashMap<(&str, Option<&str>), usize> = HashMap::new();
    // Per register: every value a CAS may have written (acknowledged or not).
    let mut written: HashMap<&str, std::collections::HashSet<&str>> = HashMap::new();
    for e in &history.events {
        if let (Op::RegisterCas { register, new, .. }, outcome) = (&e.op, &e.outcome) {
            if !matches!(outcome, Outcome::Aborted { .. }) {
                written.entry(register).or_default().insert(new);
            }
        }
    }
    for (i, e) in history.events.iter().enumerate() {
        let (Op::RegisterCas { register, expected, new }, Outcome::Committed) = (&e.op, &e.outcome) else { continue };
        if let Some(&j) = from.get(&(register.as_str(), expected.as_deref())) {
            let prior = match &history.events[j].op {
                Op::RegisterCas { new, .. } => new.as_str(),
                _ => "?",
            };
            violations.push(Violation::new(
                REGISTER,
                format!(
                    "register {register}: two compare-and-sets both took it from {expected:?} (to {prior} and to {new}): one update was lost"
                ),
                vec![j, i],
            ));
        } else {
            from.insert((register.as_str(), expected.as_deref()), i);
        }
        if let Some(old) = expected {
            if !written.get(register.as_str()).is_some_and(|w| w.contains(old.as_str())) {
                violations.push(Violation::new(
                    REGISTER,
                    format!("register {register}: a compare-and-set took it from {old}, which nobody wrote"),
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
    use crate::Event;

    fn ev(start: u64, end: u64, op: Op, outcome: Outcome) -> Event {
        Event::new(0, start, end, op, outcome)
    }

    fn balances(b: &[i64]) -> Outcome {
        Outcome::Accounts { balances: b.iter().enumerate().map(|(i, v)| (format!("a{i}"), *v)).collect() }
    }

    #[test]
    fn the_bank_flags_money_made_and_overdrafts_only() {
        let h = History::from(vec![
            ev(0, 1, Op::Balances { total: 20 }, balances(&[])),
            ev(1, 2, Op::Balances { total: 20 }, balances(&[10, 10])),
            ev(2, 3, Op::Balances { total: 20 }, balances(&[12, 10])),
            ev(3, 4, Op::Balances { total: 20 }, balances(&[-1, 21])),
        ]);
        let v = check_bank(&h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert_eq!(v[0].events, vec![2]);
        assert!(v[1].message.contains("overdrawn"));
    }

    #[test]
    fn the_register_flags_two_successful_sets_from_one_value() {
        let cas = |e: Option<&str>, n: &str, ok: bool| {
            let outcome = if ok { Outcome::Committed } else { Outcome::Aborted { cause: "differs".into() } };
            ev(0, 1, Op::RegisterCas { register: "r".into(), expected: e.map(Into::into), new: n.into() }, outcome)
        };
        let h = History::from(vec![
            cas(None, "a", true),
            cas(None, "b", false),
            cas(Some("a"), "c", true),
            cas(Some("a"), "d", true), // c and d both from a: a lost update
            cas(Some("z"), "e", true), // z was never written
        ]);
        let v = check_register(&h);
        assert_eq!(v.iter().map(|v| v.events.clone()).collect::<Vec<_>>(), vec![vec![2, 3], vec![4]], "{v:?}");
    }

    #[test]
    fn the_counter_flags_lost_and_doubled_updates_and_allows_unknown_ones() {
        let add = |s, e, d, ok: bool| {
            let outcome = if ok { Outcome::Done } else { Outcome::Unknown { error: "timed out".into() } };
            ev(s, e, Op::CounterAdd { counter: "c".into(), delta: d }, outcome)
        };
        let read = |s, e, v| ev(s, e, Op::CounterRead { counter: "c".into() }, Outcome::Value { value: v });
        let h = History::from(vec![
            add(0, 1, 5, true),
            add(0, 9, 7, false),
            read(2, 3, 5),    // the unknown one not in yet: fine
            read(10, 11, 12), // in: fine
            read(10, 11, 4),  // lost the acknowledged 5
            read(10, 11, 17), // 5 twice
        ]);
        let v = check_counter(&h);
        assert_eq!(v.iter().map(|v| v.events[0]).collect::<Vec<_>>(), vec![4, 5], "{v:?}");
    }
}
