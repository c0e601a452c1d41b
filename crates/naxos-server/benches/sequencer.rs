//! Micro-benchmarks of token issue in the sequencer's protocol logic, without
//! the task, the channel or the network around it: `Sequencer::token` for one
//! position with no stream, one stream and three streams (each stream costs a
//! back-pointer lookup and update), and `Sequencer::apply` on a prebuilt Token
//! `Request`, the path the server runs for every token request (it also parses
//! the stream ids). No durable ceiling is kept (`Sequencer::new`), so no file
//! is written. Run with `cargo bench -p naxos-server --bench sequencer`;
//! results are in `docs/performance.md`.

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use naxos_server::sequencer::Sequencer;
use naxos_wire::proto::{request, Token};
use naxos_wire::{Epoch, Request, StreamId};
use std::hint::black_box;

fn ready() -> Sequencer {
    let mut s = Sequencer::new();
    s.bootstrap(Epoch(0), 0, &[]).expect("a new sequencer accepts its first bootstrap");
    s
}

fn streams(n: usize) -> Vec<StreamId> {
    (0..n).map(|i| StreamId::from_name(&format!("stream-{i}"))).collect()
}

fn token(c: &mut Criterion) {
    let mut g = c.benchmark_group("sequencer/token");
    g.throughput(Throughput::Elements(1));
    for (n, name) in [(0, "streams0"), (1, "streams1"), (3, "streams3")] {
        let ids = streams(n);
        let mut s = ready();
        g.bench_function(name, |b| {
            b.iter(|| {
                s.token(black_box(Epoch(0)), black_box(1), black_box(&ids), None).expect("the sequencer is ready")
            })
        });
    }
    g.finish();
}

fn apply(c: &mut Criterion) {
    let mut g = c.benchmark_group("sequencer/apply");
    g.throughput(Throughput::Elements(1));
    for (n, name) in [(0, "streams0"), (1, "streams1"), (3, "streams3")] {
        let req = Request {
            id: 7,
            cluster_id: "bench-cluster".into(),
            epoch: 0,
            body: Some(request::Body::Token(Token {
                count: 1,
                streams: streams(n).iter().map(|s| Bytes::copy_from_slice(&s.to_bytes())).collect(),
                conflict: None,
            })),
        };
        let mut s = ready();
        g.bench_function(name, |b| b.iter(|| s.apply(black_box(&req)).expect("the sequencer is ready")));
    }
    g.finish();
}

criterion_group!(benches, token, apply);
criterion_main!(benches);
