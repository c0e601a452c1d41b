//! Property tests: random operation sequences give the same answers on the
//! on-disk store as on the in-memory reference (across reopens and crashes
//! after a sync), and arbitrary bytes in a segment file never panic start-up.

use naxos_storage::conformance::{data, hole};
use naxos_storage::{DiskStore, Error, MemStore, Meta, Options, Store, StripeFilter, SyncPolicy};
use naxos_wire::proto::Entry;
use naxos_wire::{Epoch, NodeId, Position, StreamId};
use proptest::prelude::*;
use std::path::Path;

const POSITIONS: u64 = 40;

#[derive(Clone, Debug)]
enum Op {
    Write(u64, Entry),
    Sync,
    Read(u64),
    ReadRange(u64, u64, usize),
    Trim(u64),
    Query {
        stream: u8,
        from: u64,
        to: u64,
        count: u32,
        index: u32,
        start: u64,
        limit: usize,
    },
    StreamsLast,
    SetEpoch(u64),
    /// Close cleanly (sync + index files) and open again.
    Reopen,
    /// Idle upkeep: preallocates zeros past the newest segment's records.
    Maintain,
    /// Sync, then drop the store as a crash would, and open again.
    CrashAfterSync,
}

fn stream(n: u8) -> StreamId {
    StreamId::from_name(&format!("stream-{n}"))
}

fn entry() -> impl Strategy<Value = Entry> {
    prop_oneof![
        1 => Just(hole()),
        4 => (proptest::collection::vec(any::<u8>(), 0..24), proptest::collection::btree_set(0u8..3, 0..3), any::<bool>())
            .prop_map(|(payload, streams, with_bp)| {
                let ids: Vec<StreamId> = streams.into_iter().map(stream).collect();
                let mut e = data(&payload, &ids);
                if with_bp {
                    e.backpointers = (0..ids.len() as u64).collect();
                }
                e
            }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => (0..POSITIONS, entry()).prop_map(|(p, e)| Op::Write(p, e)),
        3 => Just(Op::Sync),
        4 => (0..POSITIONS + 2).prop_map(Op::Read),
        2 => (0..POSITIONS, 0..POSITIONS + 5, 0usize..64).prop_map(|(f, t, m)| Op::ReadRange(f, t, m)),
        2 => (0..POSITIONS).prop_map(Op::Trim),
        3 => (0u8..3, 0..POSITIONS, 0..POSITIONS + 5, 1u32..4, 0u32..4, 0u64..8, 0usize..12)
            .prop_map(|(stream, from, to, count, index, start, limit)| Op::Query { stream, from, to, count, index, start, limit }),
        1 => Just(Op::StreamsLast),
        1 => (0u64..5).prop_map(Op::SetEpoch),
        1 => Just(Op::Reopen),
        1 => Just(Op::CrashAfterSync),
        2 => Just(Op::Maintain),
    ]
}

/// An answer with the errors reduced to what the contract fixes.
fn norm<T: std::fmt::Debug>(r: naxos_storage::Result<T>) -> Result<T, String> {
    r.map_err(|e| match e {
        Error::Overwritten { position, kind } => format!("overwritten {position} {kind:?}"),
        Error::Trimmed { position, mark } => format!("trimmed {position} {mark}"),
        Error::Invalid(_) => "invalid".to_owned(),
        other => panic!("unexpected error {other:?}"),
    })
}

fn open(dir: &Path, segment_positions: u64) -> DiskStore {
    // The behaviour compared does not depend on fsync; skipping it keeps the cases fast.
    // Small preallocation steps, so records land both in and past the zeros.
    // One resident segment: every other one is evicted and reloaded as it is used.
    let options = Options {
        segment_positions,
        sync: SyncPolicy::UnsafeNoSync,
        preallocate_bytes: 64,
        resident_segments_max: 1,
        ..Options::default()
    };
    DiskStore::open(dir, options).expect("open")
}

fn run(ops: Vec<Op>, segment_positions: u64) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut mem = MemStore::new();
    let mut disk = Some(open(dir.path(), segment_positions));
    let meta = Meta {
        cluster_id: "model".into(),
        node_id: NodeId(1),
        sealed_epoch: Epoch(0),
        trim_mark: Position(0),
        token_ceiling: 0,
        token_ceiling_by: NodeId(0),
    };
    mem.set_meta(meta.clone()).expect("set_meta");
    disk.as_mut().expect("open").set_meta(meta).expect("set_meta");
    for (step, op) in ops.into_iter().enumerate() {
        let d = disk.as_mut().expect("the store is open between steps");
        match op.clone() {
            Op::Write(at, e) => prop_assert_eq!(
                norm(mem.write(Position(at), &e)),
                norm(d.write(Position(at), &e)),
                "step {} {:?}",
                step,
                op
            ),
            Op::Sync => prop_assert_eq!(norm(mem.sync()), norm(d.sync())),
            Op::Read(at) => {
                prop_assert_eq!(norm(mem.read(Position(at))), norm(d.read(Position(at))), "step {} {:?}", step, op)
            }
            Op::ReadRange(from, to, max) => prop_assert_eq!(
                norm(mem.read_range(Position(from), Position(to), max)),
                norm(d.read_range(Position(from), Position(to), max)),
                "step {} {:?}",
                step,
                op
            ),
            Op::Trim(at) => prop_assert_eq!(norm(mem.trim(Position(at))), norm(d.trim(Position(at)))),
            Op::Query { stream: s, from, to, count, index, start, limit } => {
                let stripe = StripeFilter { segment_start: Position(start), count, index };
                prop_assert_eq!(
                    norm(mem.stream_query(stream(s), Position(from), Position(to), stripe, limit)),
                    norm(d.stream_query(stream(s), Position(from), Position(to), stripe, limit)),
                    "step {} {:?}",
                    step,
                    op
                );
            }
            Op::StreamsLast => {
                let (mut a, mut b) = (mem.streams_last(), d.streams_last());
                a.sort();
                b.sort();
                prop_assert_eq!(a, b);
                for n in 0..3 {
                    prop_assert_eq!(mem.stream_last(stream(n)), d.stream_last(stream(n)));
                }
            }
            Op::SetEpoch(e) => {
                let meta = Meta { sealed_epoch: Epoch(e), ..mem.meta().clone() };
                prop_assert_eq!(norm(mem.set_meta(meta.clone())), norm(d.set_meta(meta)));
            }
            Op::Maintain => {
                d.maintain().expect("upkeep");
            }
            Op::Reopen => {
                disk.take().expect("open").close().expect("close");
                disk = Some(open(dir.path(), segment_positions));
            }
            Op::CrashAfterSync => {
                let mut d = disk.take().expect("open");
                d.sync().expect("sync");
                d.simulate_crash();
                disk = Some(open(dir.path(), segment_positions));
            }
        }
        let d = disk.as_ref().expect("open");
        prop_assert_eq!(mem.tail(), d.tail(), "tail after step {} {:?}", step, op);
        prop_assert_eq!(mem.meta(), d.meta());
        prop_assert!(d.corruptions().is_empty(), "no corruption without damage: {:?}", d.corruptions());
    }
    // Finally everything reads the same, position by position and stream by
    // stream, before and after one more reopen.
    for round in 0..2 {
        let d = disk.as_mut().expect("open");
        for at in 0..POSITIONS + 2 {
            prop_assert_eq!(
                norm(mem.read(Position(at))),
                norm(d.read(Position(at))),
                "final read of {} (round {})",
                at,
                round
            );
        }
        let (mut a, mut b) = (mem.streams_last(), d.streams_last());
        a.sort();
        b.sort();
        prop_assert_eq!(a, b, "final streams_last (round {})", round);
        let from = mem.meta().trim_mark;
        for n in 0..3 {
            prop_assert_eq!(
                norm(mem.stream_query(stream(n), from, Position(POSITIONS + 5), StripeFilter::ALL, 1000)),
                norm(d.stream_query(stream(n), from, Position(POSITIONS + 5), StripeFilter::ALL, 1000)),
                "final query of stream {} (round {})",
                n,
                round
            );
        }
        disk.take().expect("open").close().expect("close");
        disk = Some(open(dir.path(), segment_positions));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn disk_store_answers_like_the_memory_store(ops in proptest::collection::vec(op(), 1..80), segment_positions in 1u64..9) {
        run(ops, segment_positions)?;
    }
}

fn scan_everything(dir: &Path) {
    if let Ok(mut store) = DiskStore::open(dir, Options { segment_positions: 16, ..Options::default() }) {
        for at in 0..20 {
            let _ = store.read(Position(at));
            let _ = store.write(Position(at), &data(b"after", &[stream(0)]));
        }
        let _ = store.read_range(Position(0), Position(20), usize::MAX);
        let _ = store.stream_query(stream(0), Position(0), Position(20), StripeFilter::ALL, 100);
        let _ = store.sync();
        let _ = store.corruptions();
        let _ = store.close();
        // Whatever start-up made of the bytes, a second start-up accepts its own result.
        DiskStore::open(dir, Options { segment_positions: 16, ..Options::default() }).expect("reopen after recovery");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_segment_bytes_never_panic_start_up(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let dir = tempfile::tempdir().expect("temp dir");
        drop(DiskStore::open(dir.path(), Options { segment_positions: 16, ..Options::default() }).expect("create"));
        std::fs::write(dir.path().join(format!("seg-{:020}.log", 0)), &bytes).expect("write segment");
        scan_everything(dir.path());
    }

    #[test]
    fn damaged_real_segments_never_panic_start_up(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
        with_index in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut store = DiskStore::open(dir.path(), Options { segment_positions: 16, ..Options::default() }).expect("create");
        for at in 0..10u64 {
            let e = if at % 4 == 3 { hole() } else { data(&[at as u8; 9], &[stream((at % 3) as u8)]) };
            store.write(Position(at), &e).expect("write");
        }
        if with_index { store.close().expect("close") } else { store.sync().expect("sync"); store.simulate_crash() }
        let log = dir.path().join(format!("seg-{:020}.log", 0));
        let mut bytes = std::fs::read(&log).expect("read");
        for (at, x) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.truncate(bytes.len() - cut.index(bytes.len() / 4 + 1));
        std::fs::write(&log, &bytes).expect("write");
        scan_everything(dir.path());
    }
}

#[test]
fn a_damaged_record_is_never_served_as_data() {
    // Every single-byte flip of a record's bytes either makes that record
    // unreadable (Corrupted or, for the last record, truncated away) or leaves the
    // bytes served unchanged; it never turns into other data.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store =
        DiskStore::open(dir.path(), Options { segment_positions: 16, ..Options::default() }).expect("create");
    let entries: Vec<Entry> = (0..3u8).map(|i| data(&[i + 10; 12], &[stream(i)])).collect();
    for (i, e) in entries.iter().enumerate() {
        store.write(Position(i as u64), e).expect("write");
    }
    store.sync().expect("sync");
    store.simulate_crash();
    let log = dir.path().join(format!("seg-{:020}.log", 0));
    let clean = std::fs::read(&log).expect("read");
    for i in 0..clean.len() {
        let mut bytes = clean.clone();
        bytes[i] ^= 0x01;
        std::fs::write(&log, &bytes).expect("write");
        let _ = std::fs::remove_file(dir.path().join(format!("seg-{:020}.idx", 0)));
        let mut store =
            DiskStore::open(dir.path(), Options { segment_positions: 16, ..Options::default() }).expect("open");
        for (at, e) in entries.iter().enumerate() {
            match store.read(Position(at as u64)) {
                Ok(Some(got)) => assert_eq!(&got, e, "flip of byte {i} served other data at {at}"),
                Ok(None) | Err(Error::Corrupted { .. }) => {}
                Err(other) => panic!("flip of byte {i}: unexpected error {other:?}"),
            }
        }
        store.simulate_crash();
        std::fs::write(&log, &clean).expect("restore");
    }
}
