//! Micro-benchmarks of the storage engine's hot paths: a group commit on
//! `DiskStore` (64 writes of 128 B or 4 KiB entries, one stream each, then one
//! `sync`) with the default durable policy and with `SyncPolicy::UnsafeNoSync`
//! (the difference is the fdatasync), the same 64 writes into `MemStore`,
//! `read` of a random written position, `read_range` of 1024 entries, and
//! CRC32C (`crc32c::crc32c`, what every record write and read computes) over
//! 128 B, 4 KiB and 1 MiB. Write throughput is per entry
//! (`Throughput::Elements`). The disk stores live in a temporary directory
//! (`$TMPDIR`, else `/tmp`): point it at the disk you mean to measure. Run with
//! `cargo bench -p naxos-storage --bench store`; results are in
//! `docs/performance.md`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use naxos_storage::{DiskStore, MemStore, Options, Store, SyncPolicy};
use naxos_wire::{Entry, EntryKind, Position, StreamId, DEFAULT_FRAME_BYTES_MAX};
use std::hint::black_box;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// Writes per group commit: what one log unit batch carries under load.
const BATCH_ENTRIES: u64 = 64;
/// Positions written into one store before the benchmark starts a fresh one:
/// one segment of the default options, so the disk use stays bounded (256 MiB
/// of 4 KiB entries) and segment creation is paid as often as in a real log.
const STORE_POSITIONS: u64 = 1 << 16;
/// Entries written before the read benchmarks.
const READ_ENTRIES: u64 = 16 * 1024;
/// Entries per `read_range`.
const RANGE_ENTRIES: u64 = 1024;

/// The payload sizes measured: a small record and a page.
const PAYLOAD_SIZES: [(usize, &str); 2] = [(128, "128B"), (4096, "4KiB")];

fn entry(payload_bytes: usize) -> Entry {
    Entry {
        kind: EntryKind::Data as i32,
        payload: Bytes::from(vec![0xa5; payload_bytes]),
        streams: vec![Bytes::copy_from_slice(&StreamId::from_name("bench").to_bytes())],
        backpointers: vec![0],
    }
}

/// A disk store in its own temporary directory and the next position to write.
struct Rig {
    // Dropped before the directory that holds it.
    store: DiskStore,
    _dir: TempDir,
    next: u64,
}

impl Rig {
    fn new(sync: SyncPolicy) -> Rig {
        let dir = tempfile::tempdir().expect("the temporary directory is writable");
        let store = DiskStore::open(dir.path(), Options { sync, ..Options::default() }).expect("a new directory opens");
        Rig { store, _dir: dir, next: 0 }
    }

    /// Writes `count` entries at the next positions.
    fn write(&mut self, count: u64, entry: &Entry) {
        for p in self.next..self.next + count {
            self.store.write(Position(p), entry).expect("the position is fresh");
        }
        self.next += count;
    }
}

/// A cheap deterministic generator (xorshift64) for random positions.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn group_commit(c: &mut Criterion) {
    for (sync, group) in
        [(SyncPolicy::Durable, "store/disk_commit64"), (SyncPolicy::UnsafeNoSync, "store/disk_nosync64")]
    {
        let mut g = c.benchmark_group(group);
        g.throughput(Throughput::Elements(BATCH_ENTRIES));
        // An fdatasync takes about half a millisecond here: fewer, longer samples.
        g.sample_size(20);
        for (size, name) in PAYLOAD_SIZES {
            let e = entry(size);
            let mut rig = Rig::new(sync);
            g.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        if rig.next + BATCH_ENTRIES > STORE_POSITIONS {
                            // Not timed: a new directory, so the disk use stays bounded.
                            rig = Rig::new(sync);
                        }
                        let start = Instant::now();
                        rig.write(BATCH_ENTRIES, &e);
                        rig.store.sync().expect("the temporary directory's disk works");
                        total += start.elapsed();
                    }
                    total
                })
            });
        }
        g.finish();
    }
}

fn mem_write(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/mem_write64");
    g.throughput(Throughput::Elements(BATCH_ENTRIES));
    for (size, name) in PAYLOAD_SIZES {
        let e = entry(size);
        let mut store = MemStore::new();
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    if next + BATCH_ENTRIES > STORE_POSITIONS {
                        // Not timed: bounded memory, and the same map sizes as the disk rig.
                        store = MemStore::new();
                        next = 0;
                    }
                    let start = Instant::now();
                    for p in next..next + BATCH_ENTRIES {
                        store.write(Position(p), &e).expect("the position is fresh");
                    }
                    store.sync().expect("a memory store's sync cannot fail");
                    total += start.elapsed();
                    next += BATCH_ENTRIES;
                }
                total
            })
        });
    }
    g.finish();
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("store/disk_read");
    for (size, name) in PAYLOAD_SIZES {
        let mut rig = Rig::new(SyncPolicy::Durable);
        rig.write(READ_ENTRIES, &entry(size));
        rig.store.sync().expect("the temporary directory's disk works");
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

        g.throughput(Throughput::Elements(1));
        g.bench_function(format!("read/{name}"), |b| {
            b.iter(|| {
                let p = Position(rng.below(READ_ENTRIES));
                rig.store.read(black_box(p)).expect("the record is intact").expect("every position was written")
            })
        });

        g.throughput(Throughput::Elements(RANGE_ENTRIES));
        g.bench_function(format!("read_range1024/{name}"), |b| {
            b.iter(|| {
                let from = rng.below(READ_ENTRIES - RANGE_ENTRIES);
                let (entries, next) = rig
                    .store
                    .read_range(Position(from), Position(from + RANGE_ENTRIES), DEFAULT_FRAME_BYTES_MAX)
                    .expect("the records are intact");
                debug_assert_eq!((entries.len() as u64, next), (RANGE_ENTRIES, Position(from + RANGE_ENTRIES)));
                entries
            })
        });
    }
    g.finish();
}

fn crc(c: &mut Criterion) {
    let mut g = c.benchmark_group("crc32c");
    for (size, name) in [(128, "128B"), (4096, "4KiB"), (1 << 20, "1MiB")] {
        let data = vec![0xa5u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| b.iter(|| crc32c::crc32c(black_box(&data))));
    }
    g.finish();
}

criterion_group!(benches, crc, group_commit, mem_write, reads);
criterion_main!(benches);
