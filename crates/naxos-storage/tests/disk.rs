//! Behaviour of the on-disk store that the in-memory one does not have:
//! reopening, crash recovery, corruption handling, index files, trim deleting
//! files, group commit.

use naxos_storage::conformance::{data, hole};
use naxos_storage::{DiskStore, Error, Meta, Options, Store, StripeFilter, SyncPolicy};
use naxos_wire::proto::{Entry, EntryKind};
use naxos_wire::{Epoch, NodeId, Position, StreamId};
use std::fs;
use std::path::{Path, PathBuf};

fn p(n: u64) -> Position {
    Position(n)
}

fn options(segment_positions: u64) -> Options {
    Options { segment_positions, ..Options::default() }
}

fn open(dir: &Path, segment_positions: u64) -> DiskStore {
    DiskStore::open(dir, options(segment_positions)).expect("open the store")
}

fn seg_path(dir: &Path, first: u64, ext: &str) -> PathBuf {
    dir.join(format!("seg-{first:020}.{ext}"))
}

/// A payload that occurs once in the files: `tag` repeated.
fn payload(tag: u8) -> Vec<u8> {
    vec![tag; 32]
}

/// The offset of `needle` in the file, which must hold it once.
fn find(path: &Path, needle: &[u8]) -> usize {
    let bytes = fs::read(path).expect("read file");
    let hits: Vec<usize> =
        bytes.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect();
    assert_eq!(hits.len(), 1, "the needle occurs once");
    hits[0]
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = fs::read(path).expect("read file");
    bytes[offset] ^= 0xFF;
    fs::write(path, bytes).expect("write file");
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("stat").len()
}

fn assert_corrupted<T: std::fmt::Debug>(result: naxos_storage::Result<T>, at: u64) {
    match result {
        Err(Error::Corrupted { position, .. }) => assert_eq!(position, p(at)),
        other => panic!("expected Corrupted at {at}, got {other:?}"),
    }
}

/// Writes data entries with the given tags at positions `0..tags.len()` and syncs.
fn write_tagged(store: &mut DiskStore, from: u64, tags: &[u8]) {
    for (i, tag) in tags.iter().enumerate() {
        store.write(p(from + i as u64), &data(&payload(*tag), &[])).expect("write");
    }
    store.sync().expect("sync");
}

#[test]
fn reopen_after_sync_keeps_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a = StreamId::from_name("a");
    let b = StreamId::from_name("b");
    let mut written: Vec<(u64, Entry)> = Vec::new();
    let meta = Meta {
        cluster_id: "c1".into(),
        node_id: NodeId(9),
        sealed_epoch: Epoch(5),
        trim_mark: p(0),
        token_ceiling: 0,
        token_ceiling_by: NodeId(0),
    };
    {
        let mut store = open(dir.path(), 4);
        for i in 0..14u64 {
            let entry = match i % 3 {
                0 => hole(),
                1 => data(&[i as u8; 5], &[a]),
                _ => {
                    let mut e = data(&[i as u8; 7], &[a, b]);
                    e.backpointers = vec![i - 1, u64::MAX];
                    e
                }
            };
            store.write(p(i), &entry).expect("write");
            written.push((i, entry));
        }
        store.write(p(20), &data(b"far", &[b])).expect("write 20");
        written.push((20, data(b"far", &[b])));
        store.set_meta(meta.clone()).expect("set_meta");
        store.trim(p(5)).expect("trim");
        store.sync().expect("sync");
        store.close().expect("close");
    }
    for round in 0..2 {
        let mut store = open(dir.path(), 4);
        assert_eq!(store.meta(), &Meta { trim_mark: p(5), ..meta.clone() }, "round {round}");
        assert_eq!(store.tail(), p(21));
        for (i, entry) in &written {
            if *i < 5 {
                assert!(matches!(store.read(p(*i)), Err(Error::Trimmed { .. })));
            } else {
                assert_eq!(store.read(p(*i)).expect("read").as_ref(), Some(entry), "position {i}, round {round}");
            }
        }
        assert_eq!(store.read(p(15)).expect("read"), None);
        assert_eq!(store.stream_last(a), Some(p(13)));
        assert_eq!(store.stream_last(b), Some(p(20)));
        let q = store.stream_query(b, p(5), p(30), StripeFilter::ALL, 100).expect("query");
        assert_eq!(q.positions, vec![p(5), p(8), p(11), p(20)]);
        assert_eq!(q.unwritten, (14..20).map(p).collect::<Vec<_>>());
        assert!(store.corruptions().is_empty());
        if round == 0 {
            // The second round opens after a crash: no index written on the way out.
            store.simulate_crash();
        }
    }
}

#[test]
fn synced_writes_survive_a_crash_and_unsynced_ones_may_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 8);
    write_tagged(&mut store, 0, &[1, 2, 3]);
    store.write(p(3), &data(b"unsynced", &[])).expect("write");
    store.simulate_crash();
    let mut store = open(dir.path(), 8);
    for i in 0..3u8 {
        assert_eq!(store.read(p(u64::from(i))).expect("read"), Some(data(&payload(i + 1), &[])));
    }
    assert_eq!(store.read(p(3)).expect("read"), None, "an unsynced write was buffered in memory only");
    assert_eq!(store.tail(), p(3));
    store.write(p(3), &data(b"again", &[])).expect("the position is free again");
}

#[test]
fn many_writes_are_buffered_until_one_sync() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = StreamId::from_name("s");
    let mut store = open(dir.path(), 1024);
    for i in 0..3000u64 {
        let entry = if i % 10 == 9 { hole() } else { data(&i.to_le_bytes(), &[s]) };
        store.write(p(i), &entry).expect("write");
    }
    for first in [0, 1024, 2048] {
        assert_eq!(file_len(&seg_path(dir.path(), first, "log")), 0, "nothing reaches the file before sync");
    }
    assert_eq!(store.read(p(1500)).expect("read a buffered record"), Some(data(&1500u64.to_le_bytes(), &[s])));
    store.sync().expect("one sync");
    for first in [0, 1024, 2048] {
        assert!(file_len(&seg_path(dir.path(), first, "log")) > 0, "sync wrote segment {first}");
    }
    drop(store);
    let mut store = open(dir.path(), 1024);
    let (entries, next) = store.read_range(p(0), p(3000), usize::MAX).expect("read all");
    assert_eq!(entries.len(), 3000);
    assert_eq!(next, p(3000));
    for (pos, entry) in entries {
        let i = pos.0;
        let want = if i % 10 == 9 { hole() } else { data(&i.to_le_bytes(), &[s]) };
        assert_eq!(entry, want);
    }
    assert_eq!(store.stream_last(s), Some(p(2998)));
}

#[test]
fn torn_tail_is_truncated_on_recovery() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2]);
    let good_len = file_len(&log);
    // A third record whose write was cut short: copy the start of a real record.
    store.write(p(2), &data(&payload(3), &[])).expect("write");
    store.sync().expect("sync");
    store.simulate_crash();
    let full = fs::read(&log).expect("read");
    fs::write(&log, &full[..full.len() - 10]).expect("cut the last record short");

    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), good_len, "the partial record is cut off");
    assert!(store.corruptions().is_empty(), "a torn tail is not corruption");
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert_eq!(store.read(p(2)).expect("read"), None, "the torn write never happened");
    assert_eq!(store.tail(), p(2));
    store.write(p(2), &data(b"new", &[])).expect("write over the torn position");
    store.write(p(5), &data(b"five", &[])).expect("write a new position");
    store.sync().expect("sync");
    store.simulate_crash();

    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(2)).expect("read"), Some(data(b"new", &[])));
    assert_eq!(store.read(p(5)).expect("read"), Some(data(b"five", &[])));
    assert_eq!(store.read(p(0)).expect("read"), Some(data(&payload(1), &[])));
}

#[test]
fn garbage_after_the_last_record_is_truncated_and_zeros_kept_as_spare_space() {
    for tail in [vec![0u8; 100], vec![0x5A; 7], b"\x40\x00\x00\x00garbage that is no record".to_vec()] {
        let zeros = tail.iter().all(|b| *b == 0);
        let dir = tempfile::tempdir().expect("temp dir");
        let log = seg_path(dir.path(), 0, "log");
        let mut store = open(dir.path(), 16);
        write_tagged(&mut store, 0, &[1, 2]);
        store.simulate_crash();
        let good_len = file_len(&log);
        let mut bytes = fs::read(&log).expect("read");
        bytes.extend_from_slice(&tail);
        fs::write(&log, bytes).expect("append");
        let mut store = open(dir.path(), 16);
        if zeros {
            assert_eq!(file_len(&log), good_len + 100, "zeros are preallocated space, kept");
        } else {
            assert_eq!(file_len(&log), good_len, "the tail {tail:?} is cut off");
        }
        assert!(store.corruptions().is_empty());
        assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
        // The next record goes right after the last one, zeros or not.
        write_tagged(&mut store, 2, &[3]);
        store.simulate_crash();
        let mut store = open(dir.path(), 16);
        assert!(store.corruptions().is_empty());
        assert_eq!(store.read(p(2)).expect("read"), Some(data(&payload(3), &[])));
        assert_eq!(store.tail(), p(3));
    }
}

fn preallocating(segment_positions: u64) -> Options {
    Options { segment_positions, preallocate_bytes: 4096, ..Options::default() }
}

#[test]
fn preallocated_space_takes_records_without_growing_and_survives_crashes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = DiskStore::open(dir.path(), preallocating(64)).expect("open");
    write_tagged(&mut store, 0, &[1, 2]);
    let data_len = file_len(&log);
    assert!(store.maintain().expect("upkeep"), "an idle store preallocates");
    assert_eq!(file_len(&log), data_len + 4096, "zeros follow the records");
    assert!(!store.maintain().expect("upkeep"), "one step ahead is enough");
    write_tagged(&mut store, 2, &[3]);
    assert_eq!(file_len(&log), data_len + 4096, "a record in preallocated space does not grow the file");
    store.simulate_crash();

    let mut store = DiskStore::open(dir.path(), preallocating(64)).expect("reopen");
    assert!(store.corruptions().is_empty(), "zeros past the records are not damage");
    assert_eq!(store.tail(), p(3));
    for (i, tag) in [1u8, 2, 3].into_iter().enumerate() {
        assert_eq!(store.read(p(i as u64)).expect("read"), Some(data(&payload(tag), &[])));
    }
    assert_eq!(store.read(p(3)).expect("read"), None);
    write_tagged(&mut store, 3, &[4]);
    assert_eq!(file_len(&log), data_len + 4096, "the record after a restart lands after the last one");
    store.simulate_crash();
    let mut store = DiskStore::open(dir.path(), preallocating(64)).expect("reopen");
    assert_eq!(store.read(p(3)).expect("read"), Some(data(&payload(4), &[])));
    assert_eq!(store.read(p(2)).expect("read"), Some(data(&payload(3), &[])));
}

#[test]
fn a_torn_record_inside_preallocated_space_is_cut_off() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = DiskStore::open(dir.path(), preallocating(64)).expect("open");
    write_tagged(&mut store, 0, &[1, 2]);
    let good_len = file_len(&log);
    store.maintain().expect("upkeep");
    write_tagged(&mut store, 2, &[3]);
    store.simulate_crash();
    // The last record's write was cut short: its end never reached the disk.
    let at = find(&log, &payload(3));
    let mut bytes = fs::read(&log).expect("read");
    bytes[at + 8..at + 32].fill(0);
    fs::write(&log, bytes).expect("write");

    let mut store = DiskStore::open(dir.path(), preallocating(64)).expect("reopen");
    assert!(store.corruptions().is_empty(), "a torn tail is not corruption");
    assert_eq!(file_len(&log), good_len, "cut off at the torn record");
    assert_eq!(store.read(p(2)).expect("read"), None, "the torn write never happened");
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert_eq!(store.tail(), p(2));
}

#[test]
fn older_segments_give_their_spare_space_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let first = seg_path(dir.path(), 0, "log");
    let mut store = DiskStore::open(dir.path(), preallocating(4)).expect("open");
    write_tagged(&mut store, 0, &[1, 2]);
    let data_len = file_len(&first);
    store.maintain().expect("upkeep");
    assert_eq!(file_len(&first), data_len + 4096);
    write_tagged(&mut store, 4, &[5]);
    store.maintain().expect("upkeep");
    assert_eq!(file_len(&first), data_len, "no longer the newest: zeros given back");
    // Both files start with their 4 KiB sync header.
    let header = 4096;
    assert_eq!(
        file_len(&seg_path(dir.path(), 4, "log")),
        header + (file_len(&first) - header) / 2 + 4096,
        "the newest has spare space"
    );
    store.close().expect("close");
    let mut store = DiskStore::open(dir.path(), preallocating(4)).expect("reopen");
    assert_eq!(store.read(p(4)).expect("read"), Some(data(&payload(5), &[])));
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
}

#[test]
fn checksum_failure_of_the_very_last_record_past_the_header_claim_is_a_torn_tail() {
    // The batch's own sync is not claimed by the header yet (the claim goes
    // with the next batch or the next idle moment): a crash right after it
    // cannot tell a flipped record there from a torn write.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3]);
    store.simulate_crash();
    let len = file_len(&log);
    flip_byte(&log, find(&log, &payload(3)) + 5);
    let mut store = open(dir.path(), 16);
    assert!(file_len(&log) < len, "the last record is cut off");
    assert_eq!(store.read(p(2)).expect("read"), None);
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
}

#[test]
fn corrupted_middle_record_is_reported_and_not_served() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let a = StreamId::from_name("a");
    let mut store = open(dir.path(), 16);
    for i in 0..4u8 {
        store.write(p(u64::from(i)), &data(&payload(i + 1), &[a])).expect("write");
    }
    store.sync().expect("sync");
    store.simulate_crash(); // no index file: start-up scans the records
    let len = file_len(&log);
    let at = find(&log, &payload(2)) + 3;
    flip_byte(&log, at);

    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), len, "a corrupted record in the middle is not truncated");
    let found = store.corruptions();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].position, Some(p(1)));
    assert!(found[0].file.ends_with("seg-00000000000000000000.log"));
    assert!(found[0].offset < at as u64);
    assert_corrupted(store.read(p(1)), 1);
    for i in [0u64, 2, 3] {
        assert_eq!(store.read(p(i)).expect("read"), Some(data(&payload(i as u8 + 1), &[a])), "position {i}");
    }
    assert_corrupted(store.write(p(1), &hole()), 1);
    assert_eq!(store.tail(), p(4));
    let q = store.stream_query(a, p(0), p(10), StripeFilter::ALL, 10).expect("query");
    // Its streams are unknown: listed for a stream reader to read it (a
    // read answers Corrupted, never unwritten, so nobody fills it).
    assert_eq!(q.unwritten, vec![p(1)], "a corrupted position is listed, never skipped: {q:?}");
    let (entries, next) = store.read_range(p(0), p(4), usize::MAX).expect("range up to the corruption");
    assert_eq!((entries.len(), next), (1, p(1)));
    assert_corrupted(store.read_range(p(1), p(4), usize::MAX), 1);
    let (entries, _) = store.read_range(p(2), p(4), usize::MAX).expect("range after it");
    assert_eq!(entries.len(), 2);

    // Closed with an index: the corrupted position stays corrupted and reported.
    store.write(p(4), &data(b"after", &[])).expect("write after");
    store.close().expect("close");
    let mut store = open(dir.path(), 16);
    assert_eq!(store.corruptions().len(), 1);
    assert_corrupted(store.read(p(1)), 1);
    assert_eq!(store.read(p(4)).expect("read"), Some(data(b"after", &[])));
}

#[test]
fn adjacent_corrupted_records_are_each_reported_and_the_scan_goes_on() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5]);
    store.simulate_crash();
    flip_byte(&log, find(&log, &payload(2)) + 1);
    flip_byte(&log, find(&log, &payload(3)) + 1);
    let mut store = open(dir.path(), 16);
    let mut reported: Vec<Option<Position>> = store.corruptions().iter().map(|c| c.position).collect();
    reported.sort();
    assert_eq!(reported, vec![Some(p(1)), Some(p(2))]);
    assert_corrupted(store.read(p(1)), 1);
    assert_corrupted(store.read(p(2)), 2);
    for i in [0u64, 3, 4] {
        assert_eq!(store.read(p(i)).expect("read"), Some(data(&payload(i as u8 + 1), &[])));
    }
    store.write(p(5), &hole()).expect("the segment still takes writes");
}

#[test]
fn a_damaged_length_field_loses_only_its_record_and_the_scan_resumes_after_it() {
    // Records are checksummed with the file's random salt (its sync header),
    // so the scan may look for the next record after damage: a payload
    // cannot pass for one. Only the damaged record is lost; since which
    // position it held is unknown, the positions the segment does not hold
    // read as corrupted, never as unwritten.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3, 4]);
    store.simulate_crash();
    let len = file_len(&log);
    // Break the length field of the record at position 1.
    let record_1 = find(&log, &payload(2)) - 24;
    flip_byte(&log, record_1 + 1);

    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), len, "acknowledged records after the damage are not cut off");
    let found = store.corruptions();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].offset, record_1 as u64);
    assert!(found[0].reason.contains("records resume at"), "{found:?}");
    assert_eq!(store.read(p(0)).expect("read before the damage"), Some(data(&payload(1), &[])));
    assert_corrupted(store.read(p(1)), 1);
    assert_eq!(store.read(p(2)).expect("read after the damage"), Some(data(&payload(3), &[])));
    assert_eq!(store.read(p(3)).expect("read after the damage"), Some(data(&payload(4), &[])));
    for i in 4..16 {
        assert_corrupted(store.read(p(i)), i);
    }
    assert_corrupted(store.write(p(9), &hole()), 9);
    assert_eq!(store.tail(), p(16), "what the damaged segment held is unknown, so the tail covers all of it");
    let q = store.stream_query(StreamId(1), p(0), p(16), StripeFilter::ALL, 100).expect("query");
    assert!(q.unwritten.is_empty(), "unknown positions are not unwritten");
    // Other segments are unaffected.
    store.write(p(16), &data(b"next segment", &[])).expect("write elsewhere");
    store.sync().expect("sync");
    assert_eq!(store.read(p(16)).expect("read"), Some(data(b"next segment", &[])));
}

#[test]
fn a_damaged_sync_header_makes_every_position_of_its_segment_corrupted_not_unwritten() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3]);
    store.close().expect("close");
    let len = file_len(&log);
    // Both slots (at 0 and 2048): the file's salt is lost with them.
    flip_byte(&log, 20);
    flip_byte(&log, 2048 + 20);
    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), len, "nothing is cut");
    assert!(store.corruptions().iter().any(|c| c.reason.contains("sync header is damaged")));
    for i in 0..16 {
        assert_corrupted(store.read(p(i)), i);
    }
    assert_eq!(store.tail(), p(16));
}

#[test]
fn index_files_are_used_at_start_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3]);
    store.close().expect("close writes the index");
    assert!(seg_path(dir.path(), 0, "idx").exists());
    flip_byte(&log, find(&log, &payload(2)) + 3);

    let mut store = open(dir.path(), 16);
    assert!(store.corruptions().is_empty(), "an indexed record is not re-read at start-up");
    assert_corrupted(store.read(p(1)), 1);
    let found = store.corruptions();
    assert_eq!(found.len(), 1, "the failed read is recorded");
    assert_eq!(found[0].position, Some(p(1)));
    assert_corrupted(store.read(p(1)), 1);
    assert_eq!(store.corruptions().len(), 1, "one record, one report");
    assert_eq!(store.read(p(2)).expect("read"), Some(data(&payload(3), &[])));
}

#[test]
fn bytes_after_the_indexed_prefix_are_scanned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = StreamId::from_name("s");
    let mut store = open(dir.path(), 16);
    store.write(p(0), &data(b"zero", &[s])).expect("write");
    store.close().expect("close writes the index");
    let mut store = open(dir.path(), 16);
    store.write(p(1), &data(b"one", &[s])).expect("write");
    store.sync().expect("sync");
    store.simulate_crash(); // the index still covers only the first record
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(0)).expect("read"), Some(data(b"zero", &[s])));
    assert_eq!(store.read(p(1)).expect("read"), Some(data(b"one", &[s])));
    assert_eq!(store.stream_last(s), Some(p(1)));
}

#[test]
fn invalid_index_file_is_ignored_and_the_segment_scanned() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = StreamId::from_name("s");
    let mut store = open(dir.path(), 16);
    for i in 0..5u64 {
        store.write(p(i), &data(&payload(i as u8), &[s])).expect("write");
    }
    store.close().expect("close");
    let idx = seg_path(dir.path(), 0, "idx");
    flip_byte(&idx, 50);
    let mut store = open(dir.path(), 16);
    for i in 0..5u64 {
        assert_eq!(store.read(p(i)).expect("read"), Some(data(&payload(i as u8), &[s])));
    }
    assert_eq!(store.stream_last(s), Some(p(4)));
    fs::write(&idx, b"short").expect("replace the index");
    drop(store);
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(4)).expect("read"), Some(data(&payload(4), &[s])));
}

#[test]
fn starting_a_newer_segment_indexes_the_older_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4]);
    assert!(!seg_path(dir.path(), 0, "idx").exists(), "the newest segment has no index yet");
    store.write(p(4), &data(b"four", &[])).expect("write into segment 1");
    store.sync().expect("sync");
    assert!(seg_path(dir.path(), 0, "idx").exists(), "the older segment is indexed after the rollover");
    assert!(!seg_path(dir.path(), 4, "idx").exists());
    store.simulate_crash();
    // Corrupt segment 0 under its index: start-up must not notice.
    let log0 = seg_path(dir.path(), 0, "log");
    flip_byte(&log0, find(&log0, &payload(3)) + 1);
    let mut store = open(dir.path(), 4);
    assert!(store.corruptions().is_empty());
    assert_corrupted(store.read(p(2)), 2);
    assert_eq!(store.read(p(4)).expect("read"), Some(data(b"four", &[])));
}

#[test]
fn trim_deletes_whole_segment_files_below_the_mark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let s = StreamId::from_name("s");
    let mut store = open(dir.path(), 4);
    for i in 0..14u64 {
        store.write(p(i), &data(&[i as u8], &[s])).expect("write");
    }
    store.sync().expect("sync");
    store.write(p(14), &data(b"unsynced", &[s])).expect("write");
    store.trim(p(9)).expect("trim");
    for first in [0, 4] {
        assert!(!seg_path(dir.path(), first, "log").exists(), "segment {first} lies below the mark");
        assert!(!seg_path(dir.path(), first, "idx").exists());
    }
    assert!(seg_path(dir.path(), 8, "log").exists(), "segment 8 holds positions at and above the mark");
    assert!(matches!(store.read(p(8)), Err(Error::Trimmed { .. })));
    assert_eq!(store.read(p(9)).expect("read"), Some(data(&[9], &[s])));
    assert_eq!(store.tail(), p(15));
    let q = store.stream_query(s, p(9), p(20), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q.positions, (9..15).map(p).collect::<Vec<_>>());
    store.close().expect("close");
    let mut store = open(dir.path(), 4);
    assert_eq!(store.meta().trim_mark, p(9));
    assert!(matches!(store.read(p(8)), Err(Error::Trimmed { .. })));
    assert_eq!(store.read(p(14)).expect("read"), Some(data(b"unsynced", &[s])));
    let q = store.stream_query(s, p(9), p(20), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q.positions, (9..15).map(p).collect::<Vec<_>>(), "stream positions below the mark stay gone");
}

#[test]
fn a_trim_interrupted_before_deleting_files_is_finished_at_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9]);
    store.close().expect("close");
    // The trim mark was persisted, then the process died.
    let meta_path = dir.path().join("meta.json");
    let mut meta: Meta = serde_json::from_slice(&fs::read(&meta_path).expect("read meta")).expect("parse meta");
    meta.trim_mark = p(8);
    fs::write(&meta_path, serde_json::to_vec(&meta).expect("encode")).expect("write meta");
    let mut store = open(dir.path(), 4);
    assert!(!seg_path(dir.path(), 0, "log").exists());
    assert!(!seg_path(dir.path(), 4, "log").exists());
    assert!(matches!(store.read(p(7)), Err(Error::Trimmed { .. })));
    assert_eq!(store.read(p(8)).expect("read"), Some(data(&payload(9), &[])));
}

#[test]
fn a_new_directory_gets_a_random_node_id_that_is_kept() {
    let one = tempfile::tempdir().expect("temp dir");
    let two = tempfile::tempdir().expect("temp dir");
    let id = open(one.path(), 4).meta().node_id;
    assert_ne!(id, open(two.path(), 4).meta().node_id);
    assert_ne!(id, NodeId(0));
    assert_eq!(open(one.path(), 4).meta().node_id, id, "reopening keeps the node id");
}

#[test]
fn an_existing_directory_keeps_its_segment_size() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6]);
    store.close().expect("close");
    let mut store = open(dir.path(), 1000);
    assert_eq!(store.options().segment_positions, 4);
    assert_eq!(store.read(p(5)).expect("read"), Some(data(&payload(6), &[])));
    store.write(p(9), &hole()).expect("write");
    store.close().expect("close");
    assert!(seg_path(dir.path(), 8, "log").exists());
}

#[test]
fn unusable_directories_and_options_get_clear_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(open(dir.path(), 4));
    fs::write(dir.path().join("meta.json"), b"{not json").expect("write");
    match DiskStore::open(dir.path(), options(4)) {
        Err(Error::Directory { reason, .. }) => assert!(reason.contains("meta.json"), "{reason}"),
        other => panic!("expected a directory error, got {other:?}"),
    }
    fs::write(dir.path().join("format.json"), br#"{"format_version":99,"segment_positions":4}"#).expect("write");
    match DiskStore::open(dir.path(), options(4)) {
        Err(Error::Directory { reason, .. }) => assert!(reason.contains("format version"), "{reason}"),
        other => panic!("expected a directory error, got {other:?}"),
    }
    let fresh = tempfile::tempdir().expect("temp dir");
    assert!(matches!(DiskStore::open(fresh.path(), options(0)), Err(Error::Invalid(_))));
    let huge = Options { entry_bytes_max: usize::MAX, ..Options::default() };
    assert!(matches!(DiskStore::open(fresh.path(), huge), Err(Error::Invalid(_))));
    let file = fresh.path().join("a-file");
    fs::write(&file, b"x").expect("write");
    assert!(matches!(DiskStore::open(&file, Options::default()), Err(Error::Io { .. })));
}

#[test]
fn unsafe_no_sync_still_reads_back_after_a_clean_close() {
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = Options { segment_positions: 4, sync: SyncPolicy::UnsafeNoSync, ..Options::default() };
    let mut store = DiskStore::open(dir.path(), opts.clone()).expect("open");
    for i in 0..10u64 {
        store.write(p(i), &data(&[i as u8], &[])).expect("write");
    }
    store.sync().expect("sync writes the buffers");
    store.close().expect("close");
    let mut store = DiskStore::open(dir.path(), opts).expect("open");
    assert_eq!(store.read(p(9)).expect("read"), Some(data(&[9], &[])));
    assert!(matches!(store.write(p(9), &hole()), Err(Error::Overwritten { kind: EntryKind::Data, .. })));
}

#[test]
fn a_large_unsynced_batch_is_written_out_early_and_still_reads_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 64);
    let big = |i: u64| data(&vec![i as u8; 1 << 20], &[]);
    for i in 0..10u64 {
        store.write(p(i), &big(i)).expect("write 1 MiB");
    }
    assert!(file_len(&log) >= 8 << 20, "the pending buffer is bounded: most of the batch is in the file");
    for i in 0..10u64 {
        assert_eq!(store.read(p(i)).expect("read"), Some(big(i)), "position {i} (file or buffer)");
    }
    store.sync().expect("sync");
    store.simulate_crash();
    let mut store = open(dir.path(), 64);
    assert_eq!(store.read(p(9)).expect("read"), Some(big(9)));
    assert_eq!(store.tail(), p(10));
}

#[test]
fn a_directory_is_opened_by_one_store_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path(), 16);
    match DiskStore::open(dir.path(), options(16)) {
        Err(Error::Directory { reason, .. }) => assert!(reason.contains("in use"), "{reason}"),
        other => panic!("a second open must be refused, got {other:?}"),
    }
    drop(first);
    let _again = open(dir.path(), 16);
}

#[test]
fn only_a_bounded_number_of_segments_stay_in_memory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bounded = || Options { segment_positions: 4, resident_segments_max: 2, ..Options::default() };
    let mut store = DiskStore::open(dir.path(), bounded()).expect("open");
    // Ten segments, each with one position left empty (3 of 4 written).
    for n in 0..10u64 {
        for i in 0..3 {
            let at = n * 4 + i;
            store.write(p(at), &data(&[at as u8; 8], &[])).expect("write");
        }
        store.sync().expect("sync");
    }
    assert!(store.resident_segments() <= 2, "older segments were evicted: {}", store.resident_segments());
    for at in 0..40u64 {
        let want = (at % 4 != 3).then(|| data(&[at as u8; 8], &[]));
        assert_eq!(store.read(p(at)).expect("read"), want, "position {at}");
        assert!(store.resident_segments() <= 2);
    }
    let all = store.read_range(p(0), p(40), usize::MAX).expect("range").0;
    assert_eq!(all.len(), 30);
    // A write into an evicted segment loads it, and is kept.
    store.write(p(3), &data(b"late", &[])).expect("write into an old segment");
    assert!(matches!(store.write(p(1), &data(b"again", &[])), Err(Error::Overwritten { .. })));
    store.sync().expect("sync");
    store.close().expect("close");

    // An evicted segment whose index file is gone is scanned instead.
    let mut store = DiskStore::open(dir.path(), bounded()).expect("reopen");
    assert!(store.resident_segments() <= 2);
    fs::remove_file(seg_path(dir.path(), 16, "idx")).expect("remove an index file");
    assert_eq!(store.read(p(17)).expect("read"), Some(data(&[17; 8], &[])));
    assert_eq!(store.read(p(19)).expect("read"), None);
    assert_eq!(store.read(p(3)).expect("read"), Some(data(b"late", &[])));
    assert!(store.corruptions().is_empty());
    store.close().expect("close");
    assert!(seg_path(dir.path(), 16, "idx").exists(), "the scanned segment got its index file back");
}

/// The refusal of opening `dir` (which must fail with a directory error);
/// its message.
fn refused(dir: &Path) -> String {
    match DiskStore::open(dir, options(4)) {
        Err(e @ Error::Directory { .. }) => e.to_string(),
        Err(other) => panic!("expected a directory error, got {other:?}"),
        Ok(_) => panic!("the damaged directory was opened and would be served"),
    }
}

#[test]
fn a_missing_meta_json_next_to_segments_is_refused_not_reset() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6]);
    store.set_meta(Meta { sealed_epoch: Epoch(3), ..store.meta().clone() }).expect("seal");
    store.trim(p(2)).expect("trim");
    store.close().expect("close");
    fs::remove_file(dir.path().join("meta.json")).expect("delete meta.json");
    let why = refused(dir.path());
    assert!(why.contains("meta.json is missing next to 2 segment file(s)"), "{why}");
    assert!(why.contains("trim mark") && why.contains("replicas re-copy"), "{why}");
    // Still refused at the next try: nothing was reset meanwhile.
    assert!(!dir.path().join("meta.json").exists(), "the refusal wrote a fresh meta.json");
    refused(dir.path());
}

#[test]
fn a_deleted_segment_file_is_refused_not_served_as_holes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    store.close().expect("close");
    fs::remove_file(seg_path(dir.path(), 4, "log")).expect("delete a segment");
    let why = refused(dir.path());
    assert!(why.contains("seg-00000000000000000004.log (positions 4..8)"), "{why}");
    assert!(why.contains("missing"), "{why}");
    // The newest one too, and its index with it.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6]);
    store.close().expect("close");
    fs::remove_file(seg_path(dir.path(), 4, "log")).expect("delete the newest segment");
    let _ = fs::remove_file(seg_path(dir.path(), 4, "idx"));
    assert!(refused(dir.path()).contains("positions 4..8"));
}

#[test]
fn segment_files_a_trim_deleted_are_not_missing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    store.trim(p(8)).expect("trim");
    store.close().expect("close");
    let mut store = open(dir.path(), 4);
    assert_eq!(store.read(p(9)).expect("read"), Some(data(&payload(10), &[])));
}

#[test]
fn a_truncated_segment_whose_index_says_more_was_synced_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
    store.close().expect("close");
    let log = seg_path(dir.path(), 4, "log");
    assert!(seg_path(dir.path(), 4, "idx").exists(), "an older segment is indexed at close");
    let len = file_len(&log);
    fs::OpenOptions::new().write(true).open(&log).expect("open").set_len(len / 2).expect("truncate");
    let why = refused(dir.path());
    assert!(why.contains("seg-00000000000000000004.log was truncated"), "{why}");
    assert!(why.contains(&format!("{} bytes were synced", len)), "{why}");
}

#[test]
fn a_directory_from_before_the_manifest_gets_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = open(dir.path(), 4);
    write_tagged(&mut store, 0, &[1, 2, 3, 4, 5, 6]);
    store.close().expect("close");
    // meta.json as the store wrote it before it kept a manifest.
    let meta_path = dir.path().join("meta.json");
    let meta: Meta = serde_json::from_slice(&fs::read(&meta_path).expect("read meta")).expect("parse meta");
    fs::write(&meta_path, serde_json::to_vec(&meta).expect("encode")).expect("write meta");
    let store = open(dir.path(), 4);
    assert_eq!(store.tail(), p(6));
    drop(store);
    let text = String::from_utf8(fs::read(&meta_path).expect("read meta")).expect("utf-8");
    assert!(text.contains("\"segments\""), "{text}");
    fs::remove_file(seg_path(dir.path(), 0, "log")).expect("delete a segment");
    assert!(refused(dir.path()).contains("positions 0..4"));
}

/// Writes tagged entries, syncs, lets the store claim them in its idle
/// upkeep (the sync header), then crashes.
fn claimed_then_crashed(dir: &Path, tags: &[u8]) {
    let mut store = open(dir, 16);
    write_tagged(&mut store, 0, tags);
    assert!(store.claim_synced().expect("claim"), "the idle upkeep claims the synced batch");
    store.simulate_crash();
}

#[test]
fn a_flipped_last_record_the_header_claims_is_corruption_not_a_torn_tail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    claimed_then_crashed(dir.path(), &[1, 2, 3]);
    let len = file_len(&log);
    flip_byte(&log, find(&log, &payload(3)) + 5);
    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), len, "a synced record is never cut");
    assert_corrupted(store.read(p(2)), 2);
    let found = store.corruptions();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].reason.contains("a synced record"), "{found:?}");
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert_eq!(store.tail(), p(3), "the tail keeps the damaged position");
    // A garbled header of the last record: the same.
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    claimed_then_crashed(dir.path(), &[1, 2, 3]);
    let at = find(&log, &payload(3)) - 24;
    flip_byte(&log, at);
    let mut store = open(dir.path(), 16);
    assert_eq!(file_len(&log), len);
    assert_corrupted(store.read(p(2)), 2);
    assert_eq!(store.tail(), p(16), "what lies past unparseable synced bytes is unknown");
}

#[test]
fn a_truncated_newest_segment_is_refused_when_its_header_claims_more() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    claimed_then_crashed(dir.path(), &[1, 2, 3, 4]);
    assert!(!seg_path(dir.path(), 0, "idx").exists(), "no index file covers the newest segment after a crash");
    // Past the records: preallocated zeros, which the idle upkeep adds.
    let records_end = (find(&log, &payload(4)) + 32) as u64;
    fs::OpenOptions::new().write(true).open(&log).expect("open").set_len(records_end - 10).expect("truncate");
    let why = match DiskStore::open(dir.path(), options(16)) {
        Err(e @ Error::Directory { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    };
    assert!(why.contains("seg-00000000000000000000.log was truncated"), "{why}");
    assert!(why.contains(&format!("header says {records_end} bytes were synced")), "{why}");
}

#[test]
fn zeros_over_records_the_header_claims_are_damage_not_spare_space() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    claimed_then_crashed(dir.path(), &[1, 2, 3]);
    let at = find(&log, &payload(2)) - 24;
    let mut bytes = fs::read(&log).expect("read");
    bytes[at..].fill(0);
    fs::write(&log, bytes).expect("write");
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(0)).expect("read"), Some(data(&payload(1), &[])));
    assert_corrupted(store.read(p(1)), 1);
    assert_corrupted(store.read(p(2)), 2);
    assert!(store.corruptions().iter().any(|c| c.reason.contains("synced records are lost")));
}

#[test]
fn a_corrupted_record_is_repaired_from_a_replicas_copy_and_stays_repaired() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    claimed_then_crashed(dir.path(), &[1, 2, 3]);
    flip_byte(&log, find(&log, &payload(2)) + 5);
    let mut store = open(dir.path(), 16);
    assert_corrupted(store.read(p(1)), 1);
    assert_eq!(store.corrupted_positions(10), vec![p(1)]);
    // Only a lost record takes a repair.
    assert!(matches!(store.repair(p(0), &data(&payload(1), &[])), Err(Error::Overwritten { .. })));
    assert!(matches!(store.repair(p(5), &data(b"x", &[])), Err(Error::Invalid(_))));
    // Which streams the lost entry was in is unknown: a stream query lists
    // the position for the reader to read (elsewhere) and find out.
    let q = store.stream_query(StreamId(1), p(0), p(3), StripeFilter::ALL, 100).expect("query");
    assert_eq!(q.unwritten, vec![p(1)], "a corrupted position is listed, never skipped");
    store.repair(p(1), &data(&payload(2), &[])).expect("repair");
    store.sync().expect("sync");
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert!(store.corrupted_positions(10).is_empty());
    let q = store.stream_query(StreamId(1), p(0), p(3), StripeFilter::ALL, 100).expect("query");
    assert!(q.unwritten.is_empty(), "repaired: {q:?}");
    assert!(store.corruptions().is_empty(), "{:?}", store.corruptions());
    assert!(matches!(store.write(p(1), &hole()), Err(Error::Overwritten { .. })), "write-once holds");
    assert!(matches!(store.repair(p(1), &hole()), Err(Error::Overwritten { .. })), "a repair is made once");
    // After a crash, the scan lets the valid later record win over the damaged one.
    store.simulate_crash();
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(1)).expect("read after a crash"), Some(data(&payload(2), &[])));
    assert!(store.corrupted_positions(10).is_empty());
    // And after a clean close, through the index file.
    store.close().expect("close");
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(1)).expect("read after a close"), Some(data(&payload(2), &[])));
    assert_eq!(store.read(p(2)).expect("read"), Some(data(&payload(3), &[])));
    assert_eq!(store.tail(), p(3));
}

#[test]
fn a_record_that_rots_under_its_index_file_is_repaired_and_found_again_after_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3]);
    store.close().expect("close");
    assert!(seg_path(dir.path(), 0, "idx").exists());
    flip_byte(&log, find(&log, &payload(2)) + 5);
    let mut store = open(dir.path(), 16);
    // The index file says data; the read finds the damage.
    assert_corrupted(store.read(p(1)), 1);
    assert_eq!(store.corrupted_positions(10), vec![p(1)]);
    store.repair(p(1), &data(&payload(2), &[])).expect("repair");
    store.sync().expect("sync");
    store.simulate_crash();
    // The stale index file still names the damaged record; the scan past it
    // finds the repair and checks the record the index names.
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert!(store.corruptions().is_empty(), "{:?}", store.corruptions());
}

#[test]
fn the_unknown_positions_of_a_damaged_segment_take_repairs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = seg_path(dir.path(), 0, "log");
    let mut store = open(dir.path(), 16);
    write_tagged(&mut store, 0, &[1, 2, 3, 4]);
    store.simulate_crash();
    flip_byte(&log, find(&log, &payload(2)) - 24 + 1);
    let mut store = open(dir.path(), 16);
    assert_corrupted(store.read(p(1)), 1);
    let lost = store.corrupted_positions(100);
    assert!(lost.contains(&p(1)) && !lost.contains(&p(0)) && !lost.contains(&p(2)), "{lost:?}");
    assert_eq!(store.corrupted_positions(3).len(), 3, "the limit bounds the answer");
    store.repair(p(1), &data(&payload(2), &[])).expect("repair");
    store.sync().expect("sync");
    store.simulate_crash();
    let mut store = open(dir.path(), 16);
    assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    assert_eq!(store.read(p(2)).expect("read"), Some(data(&payload(3), &[])));
    assert!(!store.corrupted_positions(100).contains(&p(1)));
}

#[test]
fn with_strict_sync_the_last_batch_before_a_crash_is_claimed_and_its_damage_reported() {
    // The same crash and the same flipped last record: without strict sync
    // the batch's claim rides with the next batch, so the record looks like
    // an unfinished write and is cut; with it, it is damage.
    for strict in [false, true] {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = seg_path(dir.path(), 0, "log");
        let sync = if strict { SyncPolicy::Strict } else { SyncPolicy::Durable };
        let mut store = DiskStore::open(dir.path(), Options { sync, ..options(16) }).expect("open");
        write_tagged(&mut store, 0, &[1]);
        write_tagged(&mut store, 1, &[2, 3]);
        store.simulate_crash();
        flip_byte(&log, find(&log, &payload(3)) + 5);
        let mut store = open(dir.path(), 16);
        if strict {
            assert_corrupted(store.read(p(2)), 2);
            assert_eq!(store.tail(), p(3));
        } else {
            assert_eq!(store.read(p(2)).expect("read"), None, "cut as a torn tail");
            assert_eq!(store.tail(), p(2));
        }
        assert_eq!(store.read(p(1)).expect("read"), Some(data(&payload(2), &[])));
    }
}
