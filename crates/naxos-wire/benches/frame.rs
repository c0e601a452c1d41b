//! Micro-benchmarks of the framing hot path: encoding a `Write` request (one
//! stream, one back-pointer, a 128 B or 4 KiB payload) as a frame into a reused
//! `BytesMut` (`frame::encode`), splitting and decoding it again
//! (`frame::try_split` then `Request::decode`), and the same for a batch of 64
//! frames coalesced in one buffer, as the writer and reader of a connection see
//! them. Run with `cargo bench -p naxos-wire --bench frame`; results are in
//! `docs/performance.md`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use naxos_wire::frame::{encode, try_split};
use naxos_wire::proto::{request, Write};
use naxos_wire::{Entry, EntryKind, Request, StreamId, DEFAULT_FRAME_BYTES_MAX};
use prost::Message;
use std::hint::black_box;

/// Frames per coalesced batch: what one write syscall carries under load.
const BATCH_FRAMES: usize = 64;

/// The payload sizes measured: a small record and a page.
const PAYLOAD_SIZES: [(usize, &str); 2] = [(128, "128B"), (4096, "4KiB")];

/// A client's `Write` of `payload_bytes` at `position`, as a chain head receives it.
fn write_request(position: u64, payload_bytes: usize) -> Request {
    let stream = Bytes::copy_from_slice(&StreamId::from_name("bench").to_bytes());
    Request {
        id: position,
        cluster_id: "bench-cluster".into(),
        epoch: 1,
        body: Some(request::Body::Write(Write {
            position,
            entry: Some(Entry {
                kind: EntryKind::Data as i32,
                payload: Bytes::from(vec![0xa5; payload_bytes]),
                streams: vec![stream],
                backpointers: vec![position.saturating_sub(1)],
            }),
            repair: false,
        })),
    }
}

fn encode_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/encode");
    for (size, name) in PAYLOAD_SIZES {
        let req = write_request(1_000_000, size);
        g.throughput(Throughput::Bytes(size as u64));
        let mut buf = BytesMut::with_capacity(64 * 1024);
        g.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                encode(black_box(&req), &mut buf);
                black_box(buf.len())
            })
        });
    }
    g.finish();
}

fn decode_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/split_decode");
    for (size, name) in PAYLOAD_SIZES {
        let mut frame = BytesMut::new();
        encode(&write_request(1_000_000, size), &mut frame);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(name, |b| {
            b.iter_batched(
                // The copy into a fresh buffer stands for the socket read; it is not timed.
                || BytesMut::from(&frame[..]),
                |mut buf| {
                    let body = try_split(&mut buf, DEFAULT_FRAME_BYTES_MAX)
                        .expect("the frame is below the limit")
                        .expect("the buffer holds one whole frame");
                    Request::decode(body).expect("the frame was encoded above")
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn batch(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame/batch64");
    g.throughput(Throughput::Elements(BATCH_FRAMES as u64));
    for (size, name) in PAYLOAD_SIZES {
        let reqs: Vec<Request> = (0..BATCH_FRAMES as u64).map(|p| write_request(1_000_000 + p, size)).collect();
        let mut buf = BytesMut::with_capacity(BATCH_FRAMES * (size + 128));
        g.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                for req in &reqs {
                    encode(black_box(req), &mut buf);
                }
                black_box(buf.len())
            })
        });
        let mut coalesced = BytesMut::new();
        for req in &reqs {
            encode(req, &mut coalesced);
        }
        g.bench_function(format!("split_decode/{name}"), |b| {
            b.iter_batched(
                || BytesMut::from(&coalesced[..]),
                |mut buf| {
                    let mut out = Vec::with_capacity(BATCH_FRAMES);
                    while let Some(body) = try_split(&mut buf, DEFAULT_FRAME_BYTES_MAX).expect("frames are small") {
                        out.push(Request::decode(body).expect("the frames were encoded above"));
                    }
                    debug_assert_eq!(out.len(), BATCH_FRAMES);
                    out
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, encode_one, decode_one, batch);
criterion_main!(benches);
