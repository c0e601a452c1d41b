//! The conformance suite of the [`Store`] contract, run against every
//! implementation (`MemStore` and `DiskStore` in this crate's tests; a future
//! simulated store in its own). Each check takes a fresh store from `make`.
//!
//! The stores under test must use an entry limit of at most
//! [`naxos_wire::DEFAULT_ENTRY_BYTES_MAX`] (the defaults do).

use crate::{Error, Meta, Store, StreamQuery, StripeFilter, POSITION_MAX};
use bytes::Bytes;
use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::{Epoch, NodeId, Position, StreamId, DEFAULT_ENTRY_BYTES_MAX, NO_BACKPOINTER};

/// Runs every check of the suite, each on a fresh store from `make`.
pub fn run_all<S: Store>(mut make: impl FnMut() -> S) {
    write_then_read_round_trips(make());
    write_once_holds_before_and_after_sync(make());
    unwritten_positions_read_as_none(make());
    tail_is_one_past_the_highest_write(make());
    trim_hides_and_refuses_positions_below_the_mark(make());
    trim_above_the_tail_raises_the_tail(make());
    stream_index_tracks_the_last_positions(make());
    stream_query_reports_positions_and_unwritten_gaps(make());
    stream_query_respects_stripes_and_limits(make());
    read_range_respects_max_bytes(make());
    meta_round_trips_and_keeps_the_trim_mark(make());
    invalid_entries_are_refused_and_leave_the_position_free(make());
}

/// A data entry with `payload`, in `streams`, with no back-pointers.
pub fn data(payload: &[u8], streams: &[StreamId]) -> Entry {
    Entry {
        kind: EntryKind::Data as i32,
        payload: Bytes::copy_from_slice(payload),
        streams: streams.iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect(),
        backpointers: Vec::new(),
    }
}

/// A hole (junk fill): no payload, no streams.
pub fn hole() -> Entry {
    Entry { kind: EntryKind::Hole as i32, payload: Bytes::new(), streams: Vec::new(), backpointers: Vec::new() }
}

fn p(n: u64) -> Position {
    Position(n)
}

fn ps(ns: &[u64]) -> Vec<Position> {
    ns.iter().map(|n| Position(*n)).collect()
}

fn expect_overwritten<S: Store>(store: &mut S, at: u64, entry: &Entry, held: EntryKind) {
    match store.write(p(at), entry) {
        Err(Error::Overwritten { position, kind }) => {
            assert_eq!(position, p(at), "Overwritten names the position");
            assert_eq!(kind, held, "Overwritten says what position {at} holds");
        }
        other => panic!("second write at {at} must fail with Overwritten({held:?}), got {other:?}"),
    }
}

fn expect_trimmed<T: std::fmt::Debug>(result: crate::Result<T>, at: u64, at_mark: u64) {
    match result {
        Err(Error::Trimmed { position, mark }) => {
            assert_eq!((position, mark), (p(at), p(at_mark)), "Trimmed names the position and the mark");
        }
        other => panic!("expected Trimmed at {at} (mark {at_mark}), got {other:?}"),
    }
}

/// Data (with streams and back-pointers) and holes read back exactly as
/// written, before and after `sync`.
pub fn write_then_read_round_trips<S: Store>(mut store: S) {
    let a = StreamId::from_name("a");
    let b = StreamId::from_name("b");
    let mut with_bp = data(b"hello", &[a, b]);
    with_bp.backpointers = vec![NO_BACKPOINTER, 3];
    let plain = data(b"", &[]);
    store.write(p(0), &with_bp).expect("write 0");
    store.write(p(1), &hole()).expect("write hole 1");
    store.write(p(2), &plain).expect("write empty data 2");
    for round in ["before sync", "after sync"] {
        assert_eq!(store.read(p(0)).expect("read 0").as_ref(), Some(&with_bp), "{round}");
        assert_eq!(store.read(p(1)).expect("read 1").as_ref(), Some(&hole()), "{round}");
        assert_eq!(store.read(p(2)).expect("read 2").as_ref(), Some(&plain), "{round}");
        store.sync().expect("sync");
    }
    store.sync().expect("a sync with nothing buffered succeeds");
    assert!(store.corruptions().is_empty(), "a healthy store reports no corruption");
}

/// A written position refuses every later write and says what it holds,
/// whether or not the first write was synced; the first value stays.
pub fn write_once_holds_before_and_after_sync<S: Store>(mut store: S) {
    let first = data(b"first", &[]);
    let second = data(b"second", &[]);
    store.write(p(10), &first).expect("write 10");
    store.write(p(11), &hole()).expect("write hole 11");
    // Unsynced: data then data, data then hole, hole then data, hole then hole.
    expect_overwritten(&mut store, 10, &second, EntryKind::Data);
    expect_overwritten(&mut store, 10, &hole(), EntryKind::Data);
    expect_overwritten(&mut store, 11, &second, EntryKind::Hole);
    expect_overwritten(&mut store, 11, &hole(), EntryKind::Hole);
    store.sync().expect("sync");
    expect_overwritten(&mut store, 10, &second, EntryKind::Data);
    expect_overwritten(&mut store, 10, &hole(), EntryKind::Data);
    expect_overwritten(&mut store, 11, &second, EntryKind::Hole);
    store.sync().expect("sync");
    assert_eq!(store.read(p(10)).expect("read 10"), Some(first), "the first write wins");
    assert_eq!(store.read(p(11)).expect("read 11"), Some(hole()), "the hole stays");
}

/// Positions never written read as `None`, below and above the tail; a range
/// read skips them.
pub fn unwritten_positions_read_as_none<S: Store>(mut store: S) {
    assert_eq!(store.read(p(0)).expect("read"), None);
    store.write(p(3), &data(b"x", &[])).expect("write 3");
    store.write(p(6), &hole()).expect("write 6");
    assert_eq!(store.read(p(2)).expect("read"), None, "below the tail");
    assert_eq!(store.read(p(5)).expect("read"), None, "between writes");
    assert_eq!(store.read(p(100)).expect("read"), None, "above the tail");
    let (entries, next) = store.read_range(p(0), p(10), usize::MAX).expect("read_range");
    assert_eq!(entries.iter().map(|(q, _)| *q).collect::<Vec<_>>(), ps(&[3, 6]));
    assert_eq!(next, p(10), "the whole range was examined");
    let (entries, next) = store.read_range(p(4), p(6), usize::MAX).expect("read_range");
    assert!(entries.is_empty());
    assert_eq!(next, p(6));
    let (entries, next) = store.read_range(p(8), p(8), usize::MAX).expect("empty range");
    assert!(entries.is_empty());
    assert_eq!(next, p(8), "an empty range returns next = from");
}

/// `tail` is one past the highest position written (data or hole, synced or
/// not) and does not move for writes below it.
pub fn tail_is_one_past_the_highest_write<S: Store>(mut store: S) {
    assert_eq!(store.tail(), p(0), "an empty store's tail is 0");
    store.write(p(5), &data(b"x", &[])).expect("write 5");
    assert_eq!(store.tail(), p(6));
    store.write(p(2), &data(b"y", &[])).expect("write 2");
    assert_eq!(store.tail(), p(6), "a write below the tail does not move it");
    store.write(p(9), &hole()).expect("write hole 9");
    assert_eq!(store.tail(), p(10), "holes count");
    store.sync().expect("sync");
    assert_eq!(store.tail(), p(10));
    expect_overwritten(&mut store, 9, &data(b"z", &[]), EntryKind::Hole);
    assert_eq!(store.tail(), p(10), "a refused write does not move the tail");
}

/// Below the trim mark reads, writes, range reads and stream queries fail with
/// `Trimmed`; the mark never goes down; stream positions below it are gone.
pub fn trim_hides_and_refuses_positions_below_the_mark<S: Store>(mut store: S) {
    let s = StreamId::from_name("trimmed");
    for i in 0..10 {
        store.write(p(i), &data(&[i as u8], &[s])).expect("write");
    }
    store.sync().expect("sync");
    store.trim(p(5)).expect("trim 5");
    assert_eq!(store.meta().trim_mark, p(5));
    for i in 0..5 {
        expect_trimmed(store.read(p(i)), i, 5);
        expect_trimmed(store.write(p(i), &hole()), i, 5);
    }
    expect_trimmed(store.read_range(p(3), p(8), usize::MAX), 3, 5);
    expect_trimmed(store.stream_query(s, p(0), p(10), StripeFilter::ALL, 100), 0, 5);
    for i in 5..10 {
        assert_eq!(store.read(p(i)).expect("read above the mark"), Some(data(&[i as u8], &[s])));
    }
    let (entries, next) = store.read_range(p(5), p(10), usize::MAX).expect("read_range at the mark");
    assert_eq!(entries.len(), 5);
    assert_eq!(next, p(10));
    assert_eq!(store.tail(), p(10), "trim below the tail leaves the tail");
    let q = store.stream_query(s, p(5), p(10), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q.positions, ps(&[5, 6, 7, 8, 9]));
    store.trim(p(3)).expect("a lower trim is a no-op");
    assert_eq!(store.meta().trim_mark, p(5), "the mark never goes down");
    expect_trimmed(store.read(p(4)), 4, 5);
    store.trim(p(10)).expect("trim everything");
    assert_eq!(store.stream_last(s), None, "stream positions below the mark are dropped");
    assert!(store.streams_last().is_empty());
    assert_eq!(store.tail(), p(10), "the tail is never below the mark");
}

/// A trim above the tail raises the tail to the mark; writes go on from there.
pub fn trim_above_the_tail_raises_the_tail<S: Store>(mut store: S) {
    store.write(p(1), &data(b"a", &[])).expect("write 1");
    store.trim(p(20)).expect("trim above the tail");
    assert_eq!(store.tail(), p(20));
    expect_trimmed(store.write(p(15), &data(b"b", &[])), 15, 20);
    expect_trimmed(store.read(p(1)), 1, 20);
    store.write(p(20), &data(b"c", &[])).expect("write at the mark");
    store.sync().expect("sync");
    assert_eq!(store.tail(), p(21));
    assert_eq!(store.read(p(20)).expect("read 20"), Some(data(b"c", &[])));
}

/// The stream index knows each stream's last position; holes belong to none.
pub fn stream_index_tracks_the_last_positions<S: Store>(mut store: S) {
    let a = StreamId::from_name("a");
    let b = StreamId::from_name("b");
    let c = StreamId::from_name("never");
    assert!(store.streams_last().is_empty());
    store.write(p(0), &data(b"0", &[a])).expect("write");
    store.write(p(4), &data(b"4", &[a, b])).expect("write");
    store.write(p(2), &data(b"2", &[b])).expect("write");
    store.write(p(7), &hole()).expect("write");
    assert_eq!(store.stream_last(a), Some(p(4)));
    assert_eq!(store.stream_last(b), Some(p(4)));
    assert_eq!(store.stream_last(c), None);
    store.write(p(9), &data(b"9", &[b])).expect("write");
    store.sync().expect("sync");
    assert_eq!(store.stream_last(b), Some(p(9)));
    let mut last = store.streams_last();
    last.sort();
    let mut want = vec![(a, p(4)), (b, p(9))];
    want.sort();
    assert_eq!(last, want);
}

/// A stream query returns the stream's positions in the range and the
/// positions below the tail that hold nothing yet.
pub fn stream_query_reports_positions_and_unwritten_gaps<S: Store>(mut store: S) {
    let a = StreamId::from_name("a");
    let b = StreamId::from_name("b");
    store.write(p(1), &data(b"1", &[a])).expect("write");
    store.write(p(2), &data(b"2", &[b])).expect("write");
    store.write(p(4), &hole()).expect("write");
    store.write(p(6), &data(b"6", &[a, b])).expect("write");
    // Unwritten: 0, 3, 5 (7 and above are at or past the tail).
    let q = store.stream_query(a, p(0), p(20), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q, StreamQuery { positions: ps(&[1, 6]), unwritten: ps(&[0, 3, 5]), next: p(20) });
    let q = store.stream_query(b, p(2), p(6), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q, StreamQuery { positions: ps(&[2]), unwritten: ps(&[3, 5]), next: p(6) });
    store.sync().expect("sync");
    store.write(p(3), &hole()).expect("fill 3");
    let q = store.stream_query(a, p(0), p(20), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q.unwritten, ps(&[0, 5]), "a hole is not unwritten");
    let q = store.stream_query(a, p(9), p(4), StripeFilter::ALL, 100).expect("empty range");
    assert_eq!(q, StreamQuery { positions: vec![], unwritten: vec![], next: p(9) });
}

/// Unwritten positions are limited to the stripe; `limit` caps both lists
/// together and `next` says where to go on.
pub fn stream_query_respects_stripes_and_limits<S: Store>(mut store: S) {
    let a = StreamId::from_name("a");
    // Segment starting at 10 with 3 stripes; stripe 1 owns 11, 14, 17, 20, ...
    let stripe = StripeFilter { segment_start: p(10), count: 3, index: 1 };
    for n in [11, 12, 13, 17, 22] {
        store.write(p(n), &data(&[n as u8], &[a])).expect("write");
    }
    store.write(p(24), &hole()).expect("write");
    let q = store.stream_query(a, p(0), p(30), stripe, 100).expect("query");
    assert_eq!(q.positions, ps(&[11, 12, 13, 17, 22]), "stream positions are not filtered by the stripe");
    assert_eq!(q.unwritten, ps(&[14, 20, 23]), "only the stripe's free positions below the tail");
    assert_eq!(q.next, p(30));
    let q = store.stream_query(a, p(0), p(30), stripe, 4).expect("query with a limit");
    assert_eq!(q, StreamQuery { positions: ps(&[11, 12, 13]), unwritten: ps(&[14]), next: p(15) });
    let q = store.stream_query(a, q.next, p(30), stripe, 4).expect("continue");
    assert_eq!(q, StreamQuery { positions: ps(&[17, 22]), unwritten: ps(&[20, 23]), next: p(24) });
    let q = store.stream_query(a, q.next, p(30), stripe, 4).expect("continue");
    assert_eq!(q, StreamQuery { positions: vec![], unwritten: vec![], next: p(30) });
    let q = store.stream_query(a, p(0), p(30), stripe, 0).expect("limit 0");
    assert_eq!(q.next, p(0), "nothing examined with limit 0");
    let q = store.stream_query(a, p(0), p(16), stripe, 100).expect("query");
    assert_eq!(q.unwritten, ps(&[14]), "the range's end bounds the unwritten positions");
}

/// A range read stops before the entry that would exceed `max_bytes`, but
/// always returns the first entry.
pub fn read_range_respects_max_bytes<S: Store>(mut store: S) {
    for i in 0..6u64 {
        store.write(p(i), &data(&[i as u8; 10], &[])).expect("write");
    }
    store.write(p(6), &hole()).expect("write");
    let (entries, next) = store.read_range(p(0), p(10), 25).expect("read_range");
    assert_eq!(entries.iter().map(|(q, _)| *q).collect::<Vec<_>>(), ps(&[0, 1]));
    assert_eq!(next, p(2), "next is the first entry not returned");
    assert_eq!(entries[1].1, data(&[1; 10], &[]));
    let (entries, next) = store.read_range(p(2), p(10), 0).expect("read_range");
    assert_eq!(entries.len(), 1, "the first entry comes even past the budget");
    assert_eq!(next, p(3));
    store.sync().expect("sync");
    let (entries, next) = store.read_range(p(4), p(10), 20).expect("read_range");
    assert_eq!(entries.iter().map(|(q, _)| *q).collect::<Vec<_>>(), ps(&[4, 5, 6]), "a hole costs no bytes");
    assert_eq!(next, p(10));
    let (entries, next) = store.read_range(p(7), p(10), 20).expect("read_range");
    assert!(entries.is_empty());
    assert_eq!(next, p(10));
}

/// `set_meta` replaces everything but the trim mark.
pub fn meta_round_trips_and_keeps_the_trim_mark<S: Store>(mut store: S) {
    store.trim(p(7)).expect("trim");
    let meta = Meta {
        cluster_id: "cluster-1".into(),
        node_id: NodeId(42),
        sealed_epoch: Epoch(3),
        trim_mark: p(1000),
        token_ceiling: 0,
        token_ceiling_by: NodeId(0),
    };
    store.set_meta(meta.clone()).expect("set_meta");
    assert_eq!(store.meta(), &Meta { trim_mark: p(7), ..meta }, "the trim mark moves only by trim");
    let later = Meta { sealed_epoch: Epoch(4), ..store.meta().clone() };
    store.set_meta(later.clone()).expect("set_meta");
    assert_eq!(store.meta(), &later);
}

/// Malformed entries fail with `Invalid` and do not take the position.
pub fn invalid_entries_are_refused_and_leave_the_position_free<S: Store>(mut store: S) {
    let a = StreamId::from_name("a");
    let many: Vec<StreamId> = (0..=crate::STREAMS_PER_ENTRY_MAX as u128).map(StreamId).collect();
    let bad = [
        Entry { kind: 0, ..data(b"x", &[]) },
        Entry { kind: 9, ..data(b"x", &[]) },
        Entry { payload: Bytes::from_static(b"junk"), ..hole() },
        Entry { streams: vec![Bytes::copy_from_slice(&a.to_bytes())], ..hole() },
        Entry { streams: vec![Bytes::from_static(&[1; 15])], ..data(b"x", &[]) },
        Entry { backpointers: vec![1, 2], ..data(b"x", &[a]) },
        data(&vec![0; DEFAULT_ENTRY_BYTES_MAX + 1], &[]),
        data(b"x", &many),
    ];
    for (i, entry) in bad.iter().enumerate() {
        match store.write(p(0), entry) {
            Err(Error::Invalid(_)) => {}
            other => panic!("bad entry #{i} must be Invalid, got {other:?}"),
        }
    }
    match store.write(POSITION_MAX.next(), &data(b"x", &[])) {
        Err(Error::Invalid(_)) => {}
        other => panic!("the reserved position must be Invalid, got {other:?}"),
    }
    assert_eq!(store.read(p(0)).expect("read"), None, "an invalid write takes nothing");
    assert_eq!(store.tail(), p(0));
    assert_eq!(store.stream_last(a), None);
    store.write(p(0), &data(b"ok", &[a])).expect("a valid write after invalid ones");
    store.write(POSITION_MAX, &hole()).expect("the highest usable position");
    assert_eq!(store.tail(), Position(u64::MAX));
    store.sync().expect("sync");
    assert_eq!(store.read(POSITION_MAX).expect("read"), Some(hole()));
}
