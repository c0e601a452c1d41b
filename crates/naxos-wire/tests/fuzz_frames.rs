//! Fuzzing the bytes a peer can send: arbitrary byte streams through
//! `try_split` and `FrameReader` (whole, and in chunks of arbitrary sizes
//! through a small `tokio::io::duplex` pipe), under a small frame limit, then
//! decoded as `Request` and `Response`. Whatever the bytes, nothing panics,
//! nothing hangs (the work is bounded by the input's size), and every outcome
//! is the one a plain reference parser predicts: the same frames, then a clean
//! end, `Truncated`, or `TooLarge`. Valid frames round-trip however the stream
//! is cut, and a message with a bad field is an error, never a value.
//!
//! Case counts are small so the suite takes a couple of seconds; for a long
//! run: `PROPTEST_CASES=100000 cargo test --release -p naxos-wire --test fuzz_frames`
//! (proptest lets the variable override the counts set here).

use bytes::{Bytes, BytesMut};
use naxos_wire::frame::{self, FrameReader, HEADER_BYTES};
use naxos_wire::proto::{self, request, response};
use naxos_wire::{Request, Response};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::Index;
use prost::Message;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Frame limit used for arbitrary streams: small, so announced lengths both
/// fit and exceed it often.
const MAX_SMALL: usize = 64;
/// Longest anything here may take; a reader that needs longer is hung.
const HANG: Duration = Duration::from_secs(10);

/// How a stream of frames ends, as the reference parser sees it.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// Every byte belonged to a whole frame.
    Clean,
    /// The bytes stop inside a header or a body.
    Truncated,
    /// A header announces more than the limit.
    TooLarge { len: usize },
}

/// The reference parser: whole frames in order, and how the stream ends.
fn reference(input: &[u8], max: usize) -> (Vec<&[u8]>, End, usize) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.is_empty() {
            return (frames, End::Clean, at);
        }
        if rest.len() < HEADER_BYTES {
            return (frames, End::Truncated, at);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len > max {
            return (frames, End::TooLarge { len }, at);
        }
        if rest.len() < HEADER_BYTES + len {
            return (frames, End::Truncated, at);
        }
        frames.push(&rest[HEADER_BYTES..HEADER_BYTES + len]);
        at += HEADER_BYTES + len;
    }
}

/// Byte streams that are partly well framed: frames with a plausible length
/// (some past the limit, some with too few body bytes) mixed with raw junk, so
/// that the fuzzer reaches every branch instead of mostly `TooLarge`.
fn stream_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        vec(any::<u8>(), 0..24),
        (0u32..(MAX_SMALL as u32 + 8), vec(any::<u8>(), 0..(MAX_SMALL + 8))).prop_map(|(len, mut body)| {
            body.truncate(len as usize);
            let mut out = len.to_be_bytes().to_vec();
            out.extend(body);
            out
        }),
        any::<u32>().prop_map(|len| len.to_be_bytes().to_vec()),
    ];
    vec(piece, 0..10).prop_map(|pieces| pieces.concat())
}

/// Runs `f` on a fresh single-threaded runtime with timers.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime always builds")
        .block_on(f)
}

/// Cuts `bytes` at the given points (in any order, repeats allowed).
fn chunks(bytes: &[u8], cuts: &[Index]) -> Vec<Bytes> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
    at.push(0);
    at.push(bytes.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2).map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]])).collect()
}

/// What a `FrameReader` produced: the frames, then how it stopped.
#[derive(Debug)]
struct Read {
    frames: Vec<Bytes>,
    end: Result<(), frame::Error>,
    calls: usize,
}

/// Reads frames until the reader reports the end or an error.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(mut reader: FrameReader<R>) -> Read {
    let mut frames = Vec::new();
    let mut calls = 0;
    loop {
        calls += 1;
        match reader.next_frame().await {
            Ok(Some(f)) => frames.push(f),
            Ok(None) => return Read { frames, end: Ok(()), calls },
            Err(e) => return Read { frames, end: Err(e), calls },
        }
    }
}

/// Writes `chunks` into a `duplex` pipe of `capacity` bytes (so the reader
/// sees partial reads) and reads frames from the other end.
async fn read_through_duplex(chunks: Vec<Bytes>, capacity: usize, max: usize) -> Read {
    let (mut tx, rx) = tokio::io::duplex(capacity);
    let writer = tokio::spawn(async move {
        for c in chunks {
            if tx.write_all(&c).await.is_err() {
                return; // the reader stopped early (an error): fine
            }
            tokio::task::yield_now().await;
        }
        // Dropping `tx` is the end of the stream.
    });
    let read = read_all(FrameReader::new(rx, max)).await;
    writer.abort();
    read
}

/// Checks a reader's output against the reference parser.
fn assert_matches_reference(read: &Read, input: &[u8], max: usize) -> Result<(), TestCaseError> {
    let (frames, end, _) = reference(input, max);
    let got: Vec<&[u8]> = read.frames.iter().map(|f| &f[..]).collect();
    prop_assert_eq!(&got, &frames);
    match (&read.end, &end) {
        (Ok(()), End::Clean) | (Err(frame::Error::Truncated), End::Truncated) => {}
        (Err(frame::Error::TooLarge { len, max: m }), End::TooLarge { len: want }) => {
            prop_assert_eq!((*len, *m), (*want, max));
        }
        (got, want) => return Err(TestCaseError::fail(format!("reader ended with {got:?}, reference says {want:?}"))),
    }
    // Bounded work: one call per frame plus the one that ends the stream.
    prop_assert_eq!(read.calls, frames.len() + 1);
    Ok(())
}

/// Decodes a body both ways; must not panic, and must agree with decoding
/// through `FrameReader::next`.
fn decode_both(body: &[u8]) -> (Result<Request, prost::DecodeError>, Result<Response, prost::DecodeError>) {
    (Request::decode(body), Response::decode(body))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// `try_split` on a buffer that holds the whole input: exactly the
    /// reference's frames, then `None` with the rest left in place, or
    /// `TooLarge` with the announced length.
    #[test]
    fn try_split_takes_exactly_the_whole_frames(input in prop_oneof![stream_bytes(), vec(any::<u8>(), 0..512)], max in 0usize..=MAX_SMALL) {
        let (frames, end, consumed) = reference(&input, max);
        let mut buf = BytesMut::from(&input[..]);
        let mut got = Vec::new();
        // Each frame takes at least a header off the buffer: this bounds the loop.
        for _ in 0..=input.len() / HEADER_BYTES + 1 {
            match frame::try_split(&mut buf, max) {
                Ok(Some(f)) => {
                    prop_assert!(f.len() <= max, "a frame of {} bytes passed the limit {max}", f.len());
                    got.push(f);
                }
                Ok(None) => {
                    prop_assert!(!matches!(end, End::TooLarge { .. }), "None where the reference says {end:?}");
                    prop_assert_eq!(&buf[..], &input[consumed..], "the incomplete rest stays buffered");
                    break;
                }
                Err(frame::Error::TooLarge { len, max: m }) => {
                    prop_assert_eq!(&end, &End::TooLarge { len });
                    prop_assert_eq!(m, max);
                    break;
                }
                Err(other) => return Err(TestCaseError::fail(format!("try_split failed with {other:?}"))),
            }
        }
        let got: Vec<&[u8]> = got.iter().map(|f| &f[..]).collect();
        prop_assert_eq!(got, frames);
    }

    /// `FrameReader` over the whole input at once (`&[u8]`) and over a small
    /// duplex pipe fed in arbitrary chunks: the same frames and the same end
    /// as the reference, within a bounded time and number of calls.
    #[test]
    fn frame_reader_agrees_with_the_reference_however_bytes_arrive(
        input in prop_oneof![stream_bytes(), vec(any::<u8>(), 0..512)],
        max in 0usize..=MAX_SMALL,
        cuts in vec(any::<Index>(), 0..12),
        capacity in 1usize..48,
    ) {
        let pieces = chunks(&input, &cuts);
        let (whole, piecewise) = block_on(async {
            let whole = tokio::time::timeout(HANG, read_all(FrameReader::new(&input[..], max))).await;
            let piecewise = tokio::time::timeout(HANG, read_through_duplex(pieces, capacity, max)).await;
            (whole, piecewise)
        });
        let whole = whole.map_err(|_| TestCaseError::fail("FrameReader over &[u8] hung"))?;
        let piecewise = piecewise.map_err(|_| TestCaseError::fail("FrameReader over a duplex pipe hung"))?;
        assert_matches_reference(&whole, &input, max)?;
        assert_matches_reference(&piecewise, &input, max)?;
    }

    /// Every frame body, whatever its bytes, decodes as `Request` and as
    /// `Response` without panicking, and `FrameReader::next` gives the same
    /// message, or `Decode` exactly when plain decoding fails.
    #[test]
    fn arbitrary_bodies_decode_or_fail_cleanly(
        input in prop_oneof![stream_bytes(), vec(any::<u8>(), 0..512)],
        bodies in vec(vec(any::<u8>(), 0..64), 0..8),
    ) {
        for body in &bodies {
            let _ = decode_both(body);
        }
        let (frames, _, _) = reference(&input, MAX_SMALL);
        let expected: Vec<Result<Request, prost::DecodeError>> = frames.iter().map(|f| Request::decode(*f)).collect();
        let got = block_on(async {
            tokio::time::timeout(HANG, async {
                let mut reader = FrameReader::new(&input[..], MAX_SMALL);
                let mut got = Vec::new();
                for _ in 0..=frames.len() {
                    match reader.next::<Request>().await {
                        Ok(Some(m)) => got.push(Ok(m)),
                        Ok(None) => break,
                        Err(frame::Error::Decode(e)) => {
                            got.push(Err(e));
                            break;
                        }
                        Err(_) => break, // framing errors: covered above
                    }
                }
                got
            })
            .await
        })
        .map_err(|_| TestCaseError::fail("FrameReader::next hung"))?;
        for (i, g) in got.iter().enumerate() {
            match (g, &expected[i]) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (g, e) => return Err(TestCaseError::fail(format!("frame {i}: reader gave {g:?}, decode gave {e:?}"))),
            }
            let _ = decode_both(frames[i]);
        }
        // The reader stops at the first bad body and not before.
        let first_bad = expected.iter().position(|r| r.is_err()).map_or(expected.len(), |i| i + 1);
        prop_assert_eq!(got.len(), first_bad);
    }

    /// A valid message followed by a bad field (a reserved wire type, a
    /// truncated varint, a length past the end, a string that is not UTF-8)
    /// is a decode error, never a message.
    #[test]
    fn a_bad_field_after_a_valid_message_is_an_error(req in request(), resp in response(), bad in 0usize..BAD_SUFFIXES.len()) {
        let mut bytes = req.encode_to_vec();
        bytes.extend_from_slice(BAD_SUFFIXES[bad]);
        prop_assert!(Request::decode(&bytes[..]).is_err(), "request + {:?} decoded", BAD_SUFFIXES[bad]);
        let mut bytes = resp.encode_to_vec();
        bytes.extend_from_slice(BAD_RESPONSE_SUFFIXES[bad % BAD_RESPONSE_SUFFIXES.len()]);
        prop_assert!(Response::decode(&bytes[..]).is_err(), "response + {:?} decoded", BAD_RESPONSE_SUFFIXES[bad % BAD_RESPONSE_SUFFIXES.len()]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Valid frames of requests and responses come back equal however the
    /// stream is cut, through `try_split` on a growing buffer and through
    /// `FrameReader` on a duplex pipe, with the limit set to the largest
    /// frame (a frame exactly at the limit passes); one byte less and the
    /// reader refuses the largest frame after yielding the ones before it.
    #[test]
    fn valid_frames_round_trip_split_at_arbitrary_boundaries(
        reqs in vec(request(), 1..6),
        resps in vec(response(), 1..6),
        cuts in vec(any::<Index>(), 0..20),
        capacity in 1usize..256,
    ) {
        round_trip(&reqs, &cuts, capacity)?;
        round_trip(&resps, &cuts, capacity)?;
    }
}

fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(
    msgs: &[M],
    cuts: &[Index],
    capacity: usize,
) -> Result<(), TestCaseError> {
    let mut stream = BytesMut::new();
    for m in msgs {
        frame::encode(m, &mut stream);
    }
    let max = msgs.iter().map(|m| m.encoded_len()).max().expect("at least one message");
    let pieces = chunks(&stream, cuts);

    // try_split, fed one chunk at a time.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for piece in &pieces {
        buf.extend_from_slice(piece);
        while let Some(f) = frame::try_split(&mut buf, max).map_err(|e| TestCaseError::fail(e.to_string()))? {
            got.push(M::decode(f).map_err(|e| TestCaseError::fail(e.to_string()))?);
        }
    }
    prop_assert!(buf.is_empty(), "{} bytes left after the last frame", buf.len());
    prop_assert_eq!(&got[..], msgs);

    // FrameReader, on a pipe smaller than most frames.
    let read = block_on(async { tokio::time::timeout(HANG, read_through_duplex(pieces.clone(), capacity, max)).await })
        .map_err(|_| TestCaseError::fail("FrameReader hung on valid frames"))?;
    prop_assert!(read.end.is_ok(), "valid frames ended with {:?}", read.end);
    let decoded: Vec<M> =
        read.frames.iter().map(|f| M::decode(f.clone()).expect("a frame we encoded decodes")).collect();
    prop_assert_eq!(&decoded[..], msgs);

    // One byte under the largest frame: everything before it, then TooLarge.
    if max > 0 {
        let read = block_on(async { tokio::time::timeout(HANG, read_through_duplex(pieces, capacity, max - 1)).await })
            .map_err(|_| TestCaseError::fail("FrameReader hung on an oversized frame"))?;
        let first_big = msgs.iter().position(|m| m.encoded_len() == max).expect("the largest is among them");
        prop_assert_eq!(read.frames.len(), first_big);
        prop_assert!(
            matches!(read.end, Err(frame::Error::TooLarge { len, max: m }) if len == max && m == max - 1),
            "expected TooLarge, got {:?}",
            read.end
        );
    }
    Ok(())
}

/// Suffixes that make any `Request` undecodable.
const BAD_SUFFIXES: [&[u8]; 6] = [
    &[0x0f],                   // field 1, wire type 7: no such wire type
    &[0x0e],                   // field 1, wire type 6: no such wire type
    &[0x80],                   // a tag whose varint never ends
    &[0x08, 0xff],             // field 1 (id, varint): the value's varint never ends
    &[0x12, 0x05, b'a'],       // field 2 (cluster_id): 5 bytes announced, 1 there
    &[0x12, 0x02, 0xc3, 0x28], // field 2 (cluster_id): not UTF-8
];

/// Suffixes that make any `Response` undecodable.
const BAD_RESPONSE_SUFFIXES: [&[u8]; 6] = [
    &[0x0f],
    &[0x0e],
    &[0x80],
    &[0x08, 0xff],
    &[0x12, 0x05, 0x08],                   // field 2 (error): 5 bytes announced, 1 there
    &[0x12, 0x04, 0x12, 0x02, 0xc3, 0x28], // error.message: not UTF-8
];

fn bytes_up_to(n: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..n).prop_map(Bytes::from)
}

fn stream_ids() -> impl Strategy<Value = Vec<Bytes>> {
    vec(vec(any::<u8>(), 16).prop_map(Bytes::from), 0..3)
}

fn entry() -> impl Strategy<Value = proto::Entry> {
    (0i32..3, bytes_up_to(64), stream_ids(), vec(any::<u64>(), 0..3))
        .prop_map(|(kind, payload, streams, backpointers)| proto::Entry { kind, payload, streams, backpointers })
}

fn layout() -> impl Strategy<Value = proto::Layout> {
    let chain = vec("[a-z0-9.:]{1,12}", 1..4).prop_map(|chain| proto::Stripe { chain });
    let segment = (any::<u64>(), proptest::option::of(any::<u64>()), vec(chain, 1..3))
        .prop_map(|(start, end, stripes)| proto::Segment { start, end, stripes, kind: 0 });
    let away = vec(("[a-z0-9.:]{1,12}", any::<bool>(), any::<u64>()), 0..2).prop_map(|v| {
        v.into_iter()
            .map(|(addr, sequencer, since_epoch)| proto::Away { addr, sequencer, since_epoch, stripes: vec![0] })
            .collect()
    });
    (
        ("[a-z0-9-]{0,12}", any::<u64>(), vec("[a-z0-9.:]{1,12}", 0..3), vec(segment, 0..3)),
        (any::<u32>(), any::<u32>(), away, vec((any::<u64>(), any::<u64>(), "[ -~]{0,20}"), 0..3), any::<u64>()),
    )
        .prop_map(
            |((cluster_id, epoch, servers, segments), (min_replicas, replication, away, history, tail_floor))| {
                proto::Layout {
                    cluster_id,
                    epoch,
                    layout_servers: servers.clone(),
                    sequencers: servers,
                    segments,
                    min_replicas,
                    replication,
                    away,
                    history: history
                        .into_iter()
                        .map(|(epoch, unix_ms, reason)| proto::Change { epoch, unix_ms, reason })
                        .collect(),
                    tail_floor,
                }
            },
        )
}

fn stream_tails() -> impl Strategy<Value = Vec<proto::StreamTail>> {
    vec(
        (vec(any::<u8>(), 16), any::<u64>()).prop_map(|(s, last)| proto::StreamTail { stream: Bytes::from(s), last }),
        0..3,
    )
}

fn request() -> impl Strategy<Value = Request> {
    let body = prop_oneof![
        (any::<u64>(), entry()).prop_map(|(position, e)| request::Body::Write(proto::Write {
            position,
            entry: Some(e),
            repair: false
        })),
        any::<u64>().prop_map(|position| request::Body::Read(proto::Read { position })),
        (any::<u64>(), any::<u64>(), any::<u64>())
            .prop_map(|(from, to, max_bytes)| request::Body::ReadRange(proto::ReadRange { from, to, max_bytes })),
        any::<u64>().prop_map(|position| request::Body::Trim(proto::Trim { position })),
        any::<u64>().prop_map(|epoch| request::Body::Seal(proto::Seal { epoch })),
        (stream_ids(), any::<bool>())
            .prop_map(|(streams, all_streams)| request::Body::UnitTail(proto::UnitTail { streams, all_streams })),
        (vec(any::<u8>(), 16), any::<u64>(), any::<u64>(), any::<u64>(), any::<u32>(), any::<u32>(), any::<u32>())
            .prop_map(|(s, from, to, segment_start, stripe_count, stripe_index, limit)| {
                request::Body::StreamQuery(proto::StreamQuery {
                    stream: Bytes::from(s),
                    from,
                    to,
                    segment_start,
                    stripe_count,
                    stripe_index,
                    limit,
                })
            }),
        (any::<u32>(), stream_ids()).prop_map(|(count, streams)| request::Body::Token(proto::Token {
            count,
            streams,
            conflict: None
        })),
        (stream_ids(), any::<u64>(), any::<u32>()).prop_map(|(streams, wait_from, wait_ms)| {
            request::Body::SeqTail(proto::SeqTail { streams, wait_from, wait_ms })
        }),
        (any::<u64>(), stream_tails())
            .prop_map(|(tail, streams)| request::Body::SeqBootstrap(proto::SeqBootstrap { tail, streams })),
        Just(request::Body::GetLayout(proto::GetLayout {})),
        layout().prop_map(|l| request::Body::Bootstrap(proto::Bootstrap { layout: Some(Box::new(l)) })),
        Just(request::Body::Status(proto::Status {})),
    ];
    (any::<u64>(), "[a-z0-9-]{0,12}", any::<u64>(), proptest::option::of(body))
        .prop_map(|(id, cluster_id, epoch, body)| Request { id, cluster_id, epoch, body })
}

fn response() -> impl Strategy<Value = Response> {
    let body = prop_oneof![
        (0i32..15, ".{0,16}", any::<u64>(), any::<u64>(), 0i32..3).prop_map(
            |(code, message, epoch, position, kind)| {
                response::Body::Error(proto::Error { code, message, epoch, position, kind, abort: 0 })
            }
        ),
        Just(response::Body::Ok(proto::Empty {})),
        proptest::option::of(entry()).prop_map(|entry| response::Body::Read(proto::ReadOk { entry })),
        (vec((any::<u64>(), entry()), 0..3), any::<u64>()).prop_map(|(entries, next)| {
            response::Body::ReadRange(proto::ReadRangeOk {
                entries: entries
                    .into_iter()
                    .map(|(position, e)| proto::PositionedEntry { position, entry: Some(e) })
                    .collect(),
                next,
            })
        }),
        any::<u64>().prop_map(|tail| response::Body::Seal(proto::SealOk { tail, sequencer_next: None })),
        (any::<u64>(), stream_tails()).prop_map(|(tail, streams)| response::Body::Tail(proto::TailOk {
            tail,
            streams,
            token_ceiling: 0,
            token_ceiling_by: 0
        })),
        (vec(any::<u64>(), 0..4), vec(any::<u64>(), 0..4), any::<u64>(), any::<u64>()).prop_map(
            |(positions, unwritten, next, tail)| {
                response::Body::StreamQuery(proto::StreamQueryOk { positions, unwritten, next, tail })
            }
        ),
        (any::<u64>(), any::<u32>(), vec(any::<u64>(), 0..3)).prop_map(|(start, count, backpointers)| {
            response::Body::Token(proto::TokenOk { start, count, backpointers })
        }),
        proptest::option::of(layout()).prop_map(|layout| response::Body::Layout(proto::LayoutOk { layout })),
        (any::<u64>(), vec("[a-z]{1,10}", 0..3), any::<u64>(), any::<bool>(), proptest::option::of(any::<u64>()))
            .prop_map(|(node_id, roles, epoch, bootstrapped, tail)| {
                response::Body::Status(proto::StatusOk {
                    node_id,
                    roles,
                    epoch,
                    bootstrapped,
                    cluster_id: "c".into(),
                    tail,
                    sequencer_ready: bootstrapped,
                    version: "0.1.0".into(),
                    entries_read: epoch,
                })
            }),
    ];
    (any::<u64>(), proptest::option::of(body)).prop_map(|(id, body)| Response { id, body })
}
