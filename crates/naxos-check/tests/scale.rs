//! The checkers stay O(n log n): a valid history of 10^5 operations is checked
//! in well under a second in release builds. Timings are printed, not
//! asserted. For 10^5 and 10^6 operations:
//! `cargo test --release -p naxos-check --test scale -- --ignored --nocapture`.

mod common;

use std::time::Instant;

use naxos_check::{
    check_agreement, check_all, check_durability, check_streams, check_tail, check_uniqueness, check_validity,
    check_well_formed, explain, History, Op, Outcome, Violation,
};

type Checker = fn(&History) -> Vec<Violation>;

const CHECKERS: [(&str, Checker); 7] = [
    ("well_formed", check_well_formed),
    ("agreement", check_agreement),
    ("durability", check_durability),
    ("uniqueness", check_uniqueness),
    ("validity", check_validity),
    ("tail", check_tail),
    ("streams", check_streams),
];

fn census(h: &History) -> String {
    let (mut appends, mut reads, mut tails, mut stream_reads, mut entries, mut trims, mut unknown) =
        (0, 0, 0, 0, 0, 0, 0);
    for e in &h.events {
        match e.op {
            Op::Append { .. } => appends += 1,
            Op::Read { .. } => reads += 1,
            Op::Tail | Op::StreamTail { .. } => tails += 1,
            Op::StreamRead { .. } => stream_reads += 1,
            Op::Trim { .. } => trims += 1,
            // The generated histories hold log operations only.
            Op::Transfer { .. }
            | Op::Balances { .. }
            | Op::CounterAdd { .. }
            | Op::CounterRead { .. }
            | Op::RegisterCas { .. }
            | Op::ListTxn { .. } => {}
        }
        match &e.outcome {
            Outcome::Stream { entries: list, .. } => entries += list.len(),
            Outcome::Unknown { .. } => unknown += 1,
            _ => {}
        }
    }
    format!(
        "{appends} appends, {reads} reads, {tails} tails, {stream_reads} stream reads ({entries} entries), {trims} trims; {unknown} unknown"
    )
}

/// Builds a valid history of about `ops` events, checks it, and prints the timings.
fn check_timed(ops: usize, per_checker: bool) {
    let built = Instant::now();
    let h = common::large_history(0x5eed, ops);
    eprintln!("{} events built in {:?}: {}", h.len(), built.elapsed(), census(&h));
    let started = Instant::now();
    let violations = check_all(&h);
    eprintln!("check_all on {} events: {:?}", h.len(), started.elapsed());
    if per_checker {
        for (name, check) in CHECKERS {
            let started = Instant::now();
            let found = check(&h).len();
            eprintln!("  {name:<12} {:?} ({found} violations)", started.elapsed());
        }
    }
    let shown: Vec<String> = violations.iter().take(5).map(|v| explain(&h, v, 2)).collect();
    assert!(violations.is_empty(), "{} violations, first:\n{}", violations.len(), shown.join("\n"));
}

#[test]
fn check_all_finds_nothing_in_a_valid_history_of_100_000_operations() {
    check_timed(100_000, false);
}

#[test]
#[ignore = "timing run: use --release --ignored --nocapture"]
fn timing_for_100_000_and_1_000_000_operations() {
    check_timed(100_000, true);
    check_timed(1_000_000, true);
}

/// A badly broken history (every append acknowledged at position 0, reads that
/// disagree and find payloads at two positions, stream reads that miss everything) must not make any checker go
/// quadratic: violations are capped per position and payload, and missing
/// stream entries are counted, not listed.
#[test]
fn check_all_stays_fast_on_a_badly_broken_history() {
    let mut h = History::new();
    let n: u64 = 20_000;
    for i in 0..n {
        let payload = format!("p{i}").into_bytes();
        h.record(1, i, i + 1, Op::Append { payload, streams: vec![1] }, Outcome::Appended { position: 0 });
    }
    for i in 0..n {
        let payload = format!("p{}", (i * 7919) % n).into_bytes();
        h.record(2, n + i, n + i + 1, Op::Read { position: i % 2 }, Outcome::Data { payload });
    }
    for i in 0..n / 4 {
        let op = Op::StreamRead { stream: 1, from: 0 };
        h.record(3, 2 * n + i, 2 * n + i + 1, op, Outcome::Stream { to: 1, entries: vec![] });
        h.record(3, 2 * n + i, 2 * n + i + 1, Op::Tail, Outcome::Tail { tail: 0 });
    }
    let started = Instant::now();
    let violations = check_all(&h);
    eprintln!("check_all on {} broken events: {:?}, {} violations", h.len(), started.elapsed(), violations.len());
    for invariant in ["agreement", "durability", "uniqueness", "tail", "streams"] {
        assert!(violations.iter().any(|v| v.invariant == invariant), "no {invariant} violation found");
    }
}
