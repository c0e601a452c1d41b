//! The `Store` conformance suite against both implementations.

use naxos_storage::{conformance, DiskStore, MemStore, Options};

#[test]
fn mem_store_conforms() {
    conformance::run_all(MemStore::new);
}

#[test]
fn disk_store_conforms() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        DiskStore::open(&root.path().join(format!("store-{n}")), Options::default()).expect("open")
    });
}

#[test]
fn disk_store_with_tiny_segments_conforms() {
    let root = tempfile::tempdir().expect("temp dir");
    let mut n = 0;
    conformance::run_all(|| {
        n += 1;
        // One resident segment: the others are evicted and reloaded as the suite uses them.
        let options = Options { segment_positions: 3, resident_segments_max: 1, ..Options::default() };
        DiskStore::open(&root.path().join(format!("store-{n}")), options).expect("open")
    });
}
