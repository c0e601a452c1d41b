//! Streams: a stream read returns, in log order, exactly the entries of its
//! stream in the range it read, missing none that was acknowledged before it
//! started (unless trimmed). Missing entries are counted per stream read with
//! an offline sweep over acknowledgement times and a Fenwick tree over
//! positions, so a history with many long stream reads stays O(n log n).

use std::collections::HashMap;

use crate::index::{appends_by_payload, Trims};
use crate::invariant::STREAMS;
use crate::violation::sorted;
use crate::{short_payload, History, Op, Outcome, Violation};

/// Missing entries named in one violation; the message gives the total.
const MISSING_NAMED_MAX: usize = 3;

/// Every `StreamRead` that returned entries lists them in strictly increasing
/// position order, inside `[from, to)`, each from an `Append` that listed the
/// stream; it contains every append listing the stream, acknowledged before the
/// read started, at a position in `[from, to)` not below a trim invoked before
/// the read ended; and its `to` is above every such acknowledged position at or
/// above `from` (a stale tail would hide entries). A `StreamRead` that returned
/// `Trimmed` had a trim above `from` invoked before it ended.
pub fn check_streams(history: &History) -> Vec<Violation> {
    let events = &history.events;
    let trims = Trims::new(history);
    let appended = appends_by_payload(history);
    let mut violations = Vec::new();
    let mut per_stream: HashMap<u128, Work> = HashMap::new();

    for (i, e) in events.iter().enumerate() {
        match (&e.op, &e.outcome) {
            (Op::Append { streams, .. }, Outcome::Appended { position }) => {
                let mut streams = streams.clone();
                streams.sort_unstable();
                streams.dedup();
                for s in streams {
                    per_stream.entry(s).or_default().points.push((e.end, *position, i));
                }
            }
            (Op::StreamRead { stream, from }, Outcome::Stream { to, entries }) => {
                per_stream.entry(*stream).or_default().reads.push((e.start, i));
                let (s, from, to) = (*stream, *from, *to);
                if let Some(w) = entries.windows(2).find(|w| w[0].0 >= w[1].0) {
                    violations.push(Violation::new(
                        STREAMS,
                        format!(
                            "stream read of {s} lists position {} before position {}: not in log order",
                            w[0].0, w[1].0
                        ),
                        vec![i],
                    ));
                }
                if let Some((p, _)) = entries.iter().find(|(p, _)| *p < from || *p >= to) {
                    violations.push(Violation::new(
                        STREAMS,
                        format!("stream read of {s} lists position {p}, outside the range [{from}, {to}) it read"),
                        vec![i],
                    ));
                }
                let mut foreign = entries.iter().filter_map(|(p, v)| match appended.get(v.as_slice()) {
                    None => Some((p, v, None)),
                    Some(&(a, streams)) if !streams.contains(&s) => Some((p, v, Some(a))),
                    Some(_) => None,
                });
                if let Some((p, v, origin)) = foreign.next() {
                    let others = foreign.count();
                    let why = match origin {
                        None => "no append carried it".to_string(),
                        Some(a) => format!("its append (event {a}) did not list stream {s}"),
                    };
                    let more = if others > 0 { format!(" ({others} more foreign entries)") } else { String::new() };
                    violations.push(Violation::new(
                        STREAMS,
                        format!("stream read of {s} lists {} at {p}, but {why}{more}", short_payload(v)),
                        std::iter::once(i).chain(origin).collect(),
                    ));
                }
            }
            (Op::StreamRead { stream, from }, Outcome::Trimmed) if trims.covering(*from, e.end).is_none() => {
                violations.push(Violation::new(
                    STREAMS,
                    format!(
                        "stream read of {stream} from {from} returned trimmed, but no trim above {from} was invoked by its end at {}",
                        e.end
                    ),
                    vec![i],
                ));
            }
            (Op::StreamTail { stream }, Outcome::StreamLast { last }) => {
                per_stream.entry(*stream).or_default().lasts.push((e.start, e.end, *last, i));
            }
            _ => {}
        }
    }

    for (&stream, work) in &mut per_stream {
        work.sweep(history, stream, &trims, &appended, &mut violations);
        work.check_lasts(stream, &trims, &mut violations);
    }
    sorted(violations)
}

/// One stream's acknowledged appends and the stream reads to check against them.
#[derive(Default)]
struct Work {
    /// `(end, position, event)` of each acknowledged append listing the stream.
    points: Vec<(u64, u64, usize)>,
    /// `(start, event)` of each stream read of the stream that returned entries.
    reads: Vec<(u64, usize)>,
    /// `(start, end, last, event)` of each stream tail query of the stream.
    lasts: Vec<(u64, u64, Option<u64>, usize)>,
}

impl Work {
    /// A stream tail is at or above every append to the stream acknowledged
    /// before the query started (a new sequencer that took its stream tails
    /// from too few log units answers lower), unless a trim above it was
    /// invoked by the query's end (the units forget trimmed entries). Appends
    /// sorted by end, with a running maximum: O((appends + queries) log appends).
    fn check_lasts(&mut self, stream: u128, trims: &Trims, violations: &mut Vec<Violation>) {
        if self.lasts.is_empty() {
            return;
        }
        let mut by_end = self.points.clone();
        by_end.sort_unstable();
        let mut highest: Vec<(u64, usize)> = Vec::with_capacity(by_end.len());
        for &(_, position, event) in &by_end {
            let best = highest.last().copied().filter(|&(p, _)| p >= position).unwrap_or((position, event));
            highest.push(best);
        }
        for &(start, end, last, event) in &self.lasts {
            let before = by_end.partition_point(|&(end, _, _)| end < start);
            let Some(&(position, append)) = before.checked_sub(1).map(|k| &highest[k]) else { continue };
            if trims.covering(position, end).is_some() {
                continue; // the highest is trimmed, and so is every lower one
            }
            if last.is_none_or(|l| l < position) {
                let said = last.map_or("no entry".to_string(), |l| format!("last position {l}"));
                violations.push(Violation::new(
                    STREAMS,
                    format!(
                        "stream tail of {stream} said {said}, but an append to it was acknowledged at {position} before the query started"
                    ),
                    vec![event, append],
                ));
            }
        }
    }

    /// Checks every read of the stream for missing entries and a stale `to`,
    /// inserting appends into the tree in acknowledgement order as the reads'
    /// start times pass them.
    fn sweep(
        &mut self,
        history: &History,
        stream: u128,
        trims: &Trims,
        appended: &HashMap<&[u8], (usize, &[u128])>,
        violations: &mut Vec<Violation>,
    ) {
        let events = &history.events;
        if self.reads.is_empty() || self.points.is_empty() {
            return;
        }
        let mut positions: Vec<u64> = self.points.iter().map(|p| p.1).collect();
        positions.sort_unstable();
        positions.dedup();
        let rank = |position: u64| positions.partition_point(|&p| p < position);
        // The acknowledged appends at each position, by acknowledgement time.
        let mut at: Vec<Vec<(u64, usize)>> = vec![Vec::new(); positions.len()];
        for &(end, position, event) in &self.points {
            at[rank(position)].push((end, event));
        }
        for list in &mut at {
            list.sort_unstable();
        }
        self.points.sort_unstable();
        self.reads.sort_unstable();

        let mut tree = Fenwick::new(positions.len());
        let mut inserted = 0;
        let mut highest: Option<(u64, usize)> = None;
        for &(start, i) in &self.reads {
            while let Some(&(_, position, event)) = self.points.get(inserted).filter(|p| p.0 < start) {
                tree.add(rank(position));
                if highest.is_none_or(|(p, _)| position > p) {
                    highest = Some((position, event));
                }
                inserted += 1;
            }
            let e = &events[i];
            let (Op::StreamRead { from, .. }, Outcome::Stream { to, entries }) = (&e.op, &e.outcome) else {
                unreachable!("only stream reads that returned entries are queued")
            };
            let (from, to) = (*from, *to);

            if let Some((p, a)) = highest.filter(|&(p, _)| p >= from && p >= to) {
                violations.push(Violation::new(
                    STREAMS,
                    format!(
                        "stream read of {stream} started at {start} read up to {to}, but the append at {p} to the stream was acknowledged by {} before it started: a stale tail",
                        events[a].end
                    ),
                    vec![i, a],
                ));
            }

            let trimmed = trims.max_invoked_by(e.end).map_or(0, |(p, _)| p);
            let lo = from.max(trimmed);
            if lo >= to {
                continue;
            }
            let (lo_rank, hi_rank) = (rank(lo), rank(to));
            let required = tree.prefix(hi_rank) - tree.prefix(lo_rank);
            if required == 0 {
                continue;
            }
            // (rank, append event) of each entry that is a required append.
            let mut matched: Vec<(usize, usize)> = entries
                .iter()
                .filter(|(p, _)| (lo..to).contains(p))
                .filter_map(|(p, v)| {
                    let &(a, streams) = appended.get(v.as_slice())?;
                    let ack = &events[a];
                    let acked_here = matches!(ack.outcome, Outcome::Appended { position } if position == *p);
                    (acked_here && ack.end < start && streams.contains(&stream)).then(|| (rank(*p), a))
                })
                .collect();
            matched.sort_unstable();
            matched.dedup();
            if matched.len() >= required {
                continue;
            }

            let mut missing = Vec::new();
            let mut cursor = lo_rank;
            let mut k = 0;
            while cursor < hi_rank && missing.len() < MISSING_NAMED_MAX {
                let m = matched.get(k).map_or(hi_rank, |x| x.0);
                // Appends in the tree at ranks [cursor, m) are all missing.
                while missing.len() < MISSING_NAMED_MAX {
                    let Some(r) = tree.first_at_or_after(cursor).filter(|&r| r < m) else { break };
                    missing.extend(at[r].iter().take_while(|x| x.0 < start).map(|x| x.1).take(MISSING_NAMED_MAX));
                    cursor = r + 1;
                }
                if m >= hi_rank {
                    break;
                }
                // At rank m, more appends than entries matched (two acks at one position).
                let here = matched[k..].iter().take_while(|x| x.0 == m).count();
                if tree.prefix(m + 1) - tree.prefix(m) > here {
                    let found: Vec<usize> = matched[k..k + here].iter().map(|x| x.1).collect();
                    missing
                        .extend(at[m].iter().take_while(|x| x.0 < start).map(|x| x.1).filter(|a| !found.contains(a)));
                }
                k += here;
                cursor = m + 1;
            }
            missing.truncate(MISSING_NAMED_MAX);
            let named: Vec<String> = missing
                .iter()
                .map(|&a| {
                    let position = match events[a].outcome {
                        Outcome::Appended { position } => position,
                        _ => unreachable!("only acknowledged appends are in the tree"),
                    };
                    format!("{position} (event {a}, acknowledged by {})", events[a].end)
                })
                .collect();
            violations.push(Violation::new(
                STREAMS,
                format!(
                    "stream read of {stream} over [{lo}, {to}) started at {start} misses {} of the {required} entries acknowledged before it started: {}",
                    required - matched.len(),
                    named.join(", ")
                ),
                std::iter::once(i).chain(missing).collect(),
            ));
        }
    }
}

/// Counts per rank with prefix sums and "first non-empty rank" in O(log n).
struct Fenwick {
    tree: Vec<usize>,
}

impl Fenwick {
    fn new(len: usize) -> Self {
        Fenwick { tree: vec![0; len + 1] }
    }

    /// Adds one at `rank`.
    fn add(&mut self, rank: usize) {
        let mut i = rank + 1;
        while i < self.tree.len() {
            self.tree[i] += 1;
            i += i & i.wrapping_neg();
        }
    }

    /// The count over ranks `[0, n)`.
    fn prefix(&self, n: usize) -> usize {
        let mut i = n.min(self.tree.len() - 1);
        let mut sum = 0;
        while i > 0 {
            sum += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }

    /// The smallest rank at or after `rank` with a non-zero count.
    fn first_at_or_after(&self, rank: usize) -> Option<usize> {
        let want = self.prefix(rank) + 1;
        // Descend to the largest n with prefix(n) < want; the answer is rank n.
        let len = self.tree.len() - 1;
        let mut n = 0;
        let mut below = 0;
        let mut step = len.checked_ilog2().map_or(0, |b| 1usize << b);
        while step > 0 {
            if n + step <= len && below + self.tree[n + step] < want {
                n += step;
                below += self.tree[n];
            }
            step >>= 1;
        }
        (n < len).then_some(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::*;

    #[test]
    fn stream_reads_with_every_entry_in_order_pass() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        b.append(1, 11, 20, "x", &[2], 1);
        b.append(1, 21, 30, "b", &[1, 2], 2);
        b.append(2, 25, 40, "c", &[1], 3); // concurrent with the read below: may be missed
        b.stream_read(3, 31, 50, 1, 0, 3, &[(0, "a"), (2, "b")]);
        b.stream_read(3, 31, 50, 2, 0, 4, &[(1, "x"), (2, "b")]);
        b.stream_read(3, 41, 50, 1, 1, 4, &[(2, "b"), (3, "c")]);
        b.stream_read(3, 41, 50, 1, 9, 4, &[]); // from above the tail
        assert_clean(&check_streams(&b.h));
    }

    #[test]
    fn a_stream_tail_below_an_acknowledged_append_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 4);
        let late = b.append(1, 11, 20, "b", &[1], 7);
        b.append(1, 30, 60, "c", &[1], 9); // concurrent with the queries: may be missed
        b.append(1, 0, 10, "x", &[2], 8);
        let ok = b.stream_tail(3, 31, 40, 1, Some(7));
        let low = b.stream_tail(3, 31, 40, 1, Some(4));
        let none = b.stream_tail(3, 31, 40, 1, None);
        b.stream_tail(3, 5, 40, 2, None); // before its append ended
        b.append(1, 0, 10, "y", &[4], 2);
        b.trim(2, 11, 12, 3, Outcome::Done);
        b.stream_tail(3, 13, 40, 4, None); // its only entry is trimmed
        let v = check_streams(&b.h);
        assert_eq!(v.len(), 2, "{v:?}");
        assert!(!v.iter().any(|x| x.events.contains(&ok)), "{v:?}");
        assert_found(&v, STREAMS, &[low, late]);
        assert_found(&v, STREAMS, &[none, late]);
    }

    #[test]
    fn stream_missing_an_entry_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        let lost = b.append(1, 11, 20, "b", &[1], 1);
        b.append(1, 21, 30, "c", &[1], 2);
        let read = b.stream_read(3, 31, 50, 1, 0, 3, &[(0, "a"), (2, "c")]);
        let v = check_streams(&b.h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_found(&v, STREAMS, &[read, lost]);
    }

    #[test]
    fn stream_missing_an_entry_at_a_position_acknowledged_twice_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        let twin = b.append(2, 0, 10, "a2", &[1], 0);
        let read = b.stream_read(3, 31, 50, 1, 0, 3, &[(0, "a")]);
        assert_found(&check_streams(&b.h), STREAMS, &[read, twin]);
    }

    #[test]
    fn stream_missing_every_entry_names_the_first_few() {
        let mut b = Builder::new();
        let appends: Vec<usize> = (0..10).map(|p| b.append(1, p * 10, p * 10 + 5, &format!("e{p}"), &[1], p)).collect();
        let read = b.stream_read(3, 200, 210, 1, 2, 10, &[(5, "e5")]);
        let v = check_streams(&b.h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].events, vec![read, appends[2], appends[3], appends[4]]);
        assert!(v[0].message.contains("misses 7 of the 8"), "{}", v[0].message);
    }

    #[test]
    fn stream_out_of_order_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        b.append(1, 11, 20, "b", &[1], 1);
        let read = b.stream_read(3, 31, 50, 1, 0, 2, &[(1, "b"), (0, "a")]);
        let repeated = b.stream_read(3, 31, 50, 1, 0, 2, &[(0, "a"), (0, "a"), (1, "b")]);
        let v = check_streams(&b.h);
        assert!(assert_found(&v, STREAMS, &[read]).message.contains("log order"));
        assert!(assert_found(&v, STREAMS, &[repeated]).message.contains("log order"));
    }

    #[test]
    fn foreign_stream_entry_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        let other = b.append(1, 11, 20, "b", &[2], 1);
        let read = b.stream_read(3, 31, 50, 1, 0, 2, &[(0, "a"), (1, "b")]);
        assert_found(&check_streams(&b.h), STREAMS, &[read, other]);
    }

    #[test]
    fn stream_entry_never_appended_is_foreign() {
        let mut b = Builder::new();
        let read = b.stream_read(3, 31, 50, 1, 0, 2, &[(1, "ghost")]);
        assert!(assert_found(&check_streams(&b.h), STREAMS, &[read]).message.contains("no append carried it"));
    }

    #[test]
    fn stream_entry_outside_the_range_read_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        b.append(1, 0, 10, "b", &[1], 5);
        let read = b.stream_read(3, 31, 50, 1, 1, 5, &[(0, "a")]);
        let v = check_streams(&b.h);
        assert!(assert_found(&v, STREAMS, &[read]).message.contains("outside"));
    }

    #[test]
    fn stream_read_with_a_stale_tail_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        let late = b.append(1, 11, 20, "b", &[1], 6);
        let read = b.stream_read(3, 31, 50, 1, 0, 5, &[(0, "a")]);
        assert!(assert_found(&check_streams(&b.h), STREAMS, &[read, late]).message.contains("stale"));
    }

    #[test]
    fn stream_may_miss_entries_below_an_invoked_trim_or_report_trimmed() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        b.append(1, 11, 20, "b", &[1], 1);
        b.append(1, 21, 30, "c", &[1], 2);
        b.trim(2, 31, 90, 2, unknown());
        b.stream_read(3, 35, 50, 1, 0, 3, &[(2, "c")]);
        b.stream_read(3, 35, 50, 1, 0, 3, &[(1, "b"), (2, "c")]);
        b.stream_read_with(3, 35, 50, 1, 0, Outcome::Trimmed);
        b.stream_read_with(3, 35, 50, 1, 1, unknown());
        assert_clean(&check_streams(&b.h));
    }

    #[test]
    fn stream_trimmed_without_an_invoked_trim_is_a_violation() {
        let mut b = Builder::new();
        b.append(1, 0, 10, "a", &[1], 0);
        let read = b.stream_read_with(3, 11, 20, 1, 0, Outcome::Trimmed);
        b.trim(2, 21, 30, 1, Outcome::Done);
        let low = b.trim(2, 0, 5, 0, Outcome::Done); // trims nothing below 0
        let read_too = b.stream_read_with(3, 6, 7, 1, 0, Outcome::Trimmed);
        let v = check_streams(&b.h);
        assert_found(&v, STREAMS, &[read]);
        assert_found(&v, STREAMS, &[read_too]);
        assert!(!v.iter().any(|x| x.events.contains(&low)));
    }

    #[test]
    fn stream_entry_of_a_failed_append_to_that_stream_is_accepted() {
        let mut b = Builder::new();
        b.append_failed(1, 0, 10, "a", &[1, 2]);
        b.append(1, 11, 20, "b", &[2], 1);
        b.stream_read(3, 21, 30, 1, 0, 2, &[(0, "a")]);
        b.stream_read(3, 21, 30, 2, 0, 2, &[(0, "a"), (1, "b")]);
        b.stream_read(3, 21, 30, 2, 0, 2, &[(1, "b")]); // the failed one need not show up
        assert_clean(&check_streams(&b.h));
    }

    #[test]
    fn fenwick_finds_the_first_non_empty_rank() {
        let mut f = Fenwick::new(10);
        assert_eq!(f.first_at_or_after(0), None);
        f.add(3);
        f.add(7);
        f.add(7);
        assert_eq!(f.first_at_or_after(0), Some(3));
        assert_eq!(f.first_at_or_after(3), Some(3));
        assert_eq!(f.first_at_or_after(4), Some(7));
        assert_eq!(f.first_at_or_after(8), None);
        assert_eq!(f.prefix(8) - f.prefix(7), 2);
        assert_eq!(f.prefix(100), 3);
    }
}
