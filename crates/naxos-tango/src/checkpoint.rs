//! Checkpoints: an object's whole state (values, versions, and what each
//! writer had applied) as of a position S, written to the object's
//! checkpoint stream (`checkpoint/<object stream>`) in chunks and closed by an
//! end record that lists them. A runtime that opens the object starts from
//! its latest complete checkpoint and replays only the object's stream from
//! S; one that falls behind a trim reloads from it. Positions below the
//! oldest latest checkpoint of every object may then be trimmed.

use crate::object::{Dedup, Kind, State, Versioned};
use bytes::{Bytes, BytesMut};
use naxos_client::{Client, Position, StreamId, Value};
use prost::Message;
use std::collections::{HashMap, VecDeque};

/// Marks a checkpoint record ("NXC1").
const MAGIC: u32 = 0x4e58_4331;
/// Most state bytes per chunk (within the default entry limit of 1 MiB).
pub const CHUNK_BYTES: usize = 512 << 10;
/// Most records walked back from the end of a checkpoint stream to find a
/// complete checkpoint (an interrupted one leaves chunks without an end).
const WALK_MAX: usize = 4096;
/// End records compared to find the newest state (see [`latest`]).
const ENDS_COMPARED: usize = 8;

/// One record of a checkpoint stream.
#[derive(Clone, PartialEq, Message)]
pub struct CheckpointRecord {
    /// [`MAGIC`].
    #[prost(fixed32, tag = "1")]
    pub magic: u32,
    /// The position the state is as of (everything below it applied).
    #[prost(uint64, tag = "2")]
    pub snapshot: u64,
    /// A chunk: its index and its bytes of the encoded image.
    #[prost(uint32, tag = "3")]
    pub index: u32,
    #[prost(bytes = "bytes", tag = "4")]
    pub data: Bytes,
    /// The end record: the chunks' positions, in order (empty in a chunk).
    #[prost(uint64, repeated, tag = "5")]
    pub chunks: Vec<u64>,
    /// The end record: the image's size and CRC-32C.
    #[prost(uint64, tag = "6")]
    pub bytes: u64,
    #[prost(fixed32, tag = "7")]
    pub crc32c: u32,
    /// Whether this is the end record.
    #[prost(bool, tag = "8")]
    pub end: bool,
}

/// An object's state, encoded.
#[derive(Clone, PartialEq, Message)]
struct Image {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<ImageEntry>,
    #[prost(sint64, tag = "2")]
    counter: i64,
    #[prost(bytes = "bytes", optional, tag = "3")]
    register: Option<Bytes>,
    #[prost(bytes = "bytes", repeated, tag = "4")]
    queue: Vec<Bytes>,
    /// Versions, each position + 1 (0: none): counter/register, queue head,
    /// queue tail, map's any-key.
    #[prost(uint64, tag = "5")]
    version: u64,
    #[prost(uint64, tag = "6")]
    head: u64,
    #[prost(uint64, tag = "7")]
    tail: u64,
    #[prost(uint64, tag = "8")]
    any: u64,
    #[prost(message, repeated, tag = "9")]
    writers: Vec<ImageWriter>,
}

#[derive(Clone, PartialEq, Message)]
struct ImageEntry {
    #[prost(bytes = "bytes", tag = "1")]
    key: Bytes,
    #[prost(bytes = "bytes", optional, tag = "2")]
    value: Option<Bytes>,
    #[prost(uint64, tag = "3")]
    version: u64,
}

#[derive(Clone, PartialEq, Message)]
struct ImageWriter {
    #[prost(bytes = "bytes", tag = "1")]
    client: Bytes,
    #[prost(uint64, tag = "2")]
    floor: u64,
    #[prost(uint64, repeated, tag = "3")]
    seqs: Vec<u64>,
    #[prost(uint64, repeated, tag = "4")]
    positions: Vec<u64>,
}

fn code(p: Option<Position>) -> u64 {
    p.map_or(0, |p| p.0 + 1)
}

fn decode_version(v: u64) -> Option<Position> {
    v.checked_sub(1).map(Position)
}

/// The stream an object's checkpoints go to.
pub fn stream_of(object: StreamId) -> StreamId {
    StreamId::from_name(&format!("checkpoint/{object}"))
}

/// Encodes `state` and `dedup`.
pub(crate) fn encode(state: &State, dedup: &Dedup) -> Bytes {
    let mut image = Image::default();
    match state {
        State::Map { entries, any } => {
            image.entries = entries
                .iter()
                .map(|(k, v)| ImageEntry { key: k.clone(), value: v.value.clone(), version: v.version.0 + 1 })
                .collect();
            // In key order: the same state makes the same image.
            image.entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
            image.any = code(*any);
        }
        State::Counter { value, version } => {
            image.counter = *value;
            image.version = code(*version);
        }
        State::Register { value, version } => {
            image.register = value.clone();
            image.version = code(*version);
        }
        State::Queue { items, head, tail } => {
            image.queue = items.iter().cloned().collect();
            image.head = code(*head);
            image.tail = code(*tail);
        }
    }
    image.writers = dedup
        .export()
        .into_iter()
        .map(|w| ImageWriter {
            client: Bytes::copy_from_slice(&w.client.to_be_bytes()),
            floor: w.floor,
            seqs: w.applied.iter().map(|(s, _)| *s).collect(),
            positions: w.applied.iter().map(|(_, p)| p.0).collect(),
        })
        .collect();
    image.encode_to_vec().into()
}

/// Decodes an image of an object of `kind`.
pub(crate) fn decode(kind: Kind, raw: &[u8]) -> Option<(State, Dedup)> {
    let image = Image::decode(raw).ok()?;
    let state = match kind {
        Kind::Map => State::Map {
            entries: image
                .entries
                .into_iter()
                .map(|e| Some((e.key, Versioned { value: e.value, version: decode_version(e.version)? })))
                .collect::<Option<HashMap<_, _>>>()?,
            any: decode_version(image.any),
        },
        Kind::Counter => State::Counter { value: image.counter, version: decode_version(image.version) },
        Kind::Register => State::Register { value: image.register, version: decode_version(image.version) },
        Kind::Queue => State::Queue {
            items: image.queue.into_iter().collect::<VecDeque<_>>(),
            head: decode_version(image.head),
            tail: decode_version(image.tail),
        },
    };
    let mut writers = Vec::new();
    for w in image.writers {
        let client = u128::from_be_bytes(w.client.as_ref().try_into().ok()?);
        let applied = w.seqs.into_iter().zip(w.positions.into_iter().map(Position)).collect();
        writers.push(crate::object::WriterSeen { client, floor: w.floor, applied });
    }
    Some((state, Dedup::import(writers)))
}

/// Writes a checkpoint of an object (`image`, as of `snapshot`) to its
/// checkpoint stream: the chunks, then the end record. Returns the end
/// record's position.
pub(crate) async fn write(
    client: &Client,
    object: StreamId,
    snapshot: Position,
    image: Bytes,
) -> Result<Position, naxos_client::Error> {
    let stream = stream_of(object);
    let mut chunks = Vec::new();
    for (index, part) in image.chunks(CHUNK_BYTES).enumerate() {
        let rec = CheckpointRecord {
            magic: MAGIC,
            snapshot: snapshot.0,
            index: index as u32,
            data: Bytes::copy_from_slice(part),
            ..CheckpointRecord::default()
        };
        chunks.push(client.append_to(&[stream], rec.encode_to_vec().into()).await?.0);
    }
    let end = CheckpointRecord {
        magic: MAGIC,
        snapshot: snapshot.0,
        chunks,
        bytes: image.len() as u64,
        crc32c: crc32c::crc32c(&image),
        end: true,
        ..CheckpointRecord::default()
    };
    client.append_to(&[stream], end.encode_to_vec().into()).await
}

/// The latest complete checkpoint of `object`: (as of, image), if any.
/// "Latest" is the highest position a state is as of, among the last
/// [`ENDS_COMPARED`] end records: two checkpointers at once can write a
/// checkpoint of an older state after a newer one, and the log may already be
/// trimmed below the older one.
pub(crate) async fn latest(
    client: &Client,
    object: StreamId,
) -> Result<Option<(Position, Bytes)>, naxos_client::Error> {
    let stream = stream_of(object);
    let tails = client.tails(&[stream]).await?;
    let mut at = tails
        .streams
        .iter()
        .find(|t| StreamId::from_slice(&t.stream) == Some(stream))
        .map(|t| t.last)
        .filter(|&l| l != u64::MAX);
    let mut ends: Vec<CheckpointRecord> = Vec::new();
    let mut walked = 0;
    while let Some(p) = at {
        walked += 1;
        if walked > WALK_MAX || ends.len() >= ENDS_COMPARED {
            break;
        }
        let rec = match client.read(Position(p)).await {
            Ok(Value::Data(r)) => r,
            // A hole (a checkpoint writer that died after its token): its
            // back-pointers are gone; the index knows what lies below.
            Ok(Value::Hole) => {
                at = client.stream_last_below(stream, Position(p)).await?.map(|q| q.0);
                continue;
            }
            // Below the trim: nothing older is usable.
            Err(naxos_client::Error::Trimmed(_)) => break,
            Err(e) => return Err(e),
        };
        if let Ok(c) = CheckpointRecord::decode(rec.payload.as_ref()) {
            if c.magic == MAGIC && c.end {
                ends.push(c);
            }
        }
        at = match rec.backpointer(stream) {
            Some(b) => Some(b),
            // No back-pointer known (the sequencer that gave the token had
            // restarted): ask the index.
            None => client.stream_last_below(stream, Position(p)).await?.map(|q| q.0),
        };
    }
    // Newest state first; the first whose chunks are all there wins.
    ends.sort_by_key(|e| std::cmp::Reverse(e.snapshot));
    for end in ends {
        match read_chunks(client, &end).await {
            Ok(Some(image)) => return Ok(Some((Position(end.snapshot), image))),
            Ok(None) | Err(naxos_client::Error::Trimmed(_)) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// The image an end record lists, if every chunk is there and it checks out.
async fn read_chunks(client: &Client, end: &CheckpointRecord) -> Result<Option<Bytes>, naxos_client::Error> {
    let reads = futures::future::join_all(end.chunks.iter().map(|&p| client.read(Position(p)))).await;
    let mut image = BytesMut::with_capacity(end.bytes as usize);
    for (i, r) in reads.into_iter().enumerate() {
        let Value::Data(rec) = r? else { return Ok(None) };
        let Ok(c) = CheckpointRecord::decode(rec.payload.as_ref()) else { return Ok(None) };
        if c.magic != MAGIC || c.end || c.index as usize != i || c.snapshot != end.snapshot {
            return Ok(None);
        }
        image.extend_from_slice(&c.data);
    }
    let image = image.freeze();
    Ok((image.len() as u64 == end.bytes && crc32c::crc32c(&image) == end.crc32c).then_some(image))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{KeyValue, Op};

    #[test]
    fn an_image_round_trips_every_kind_with_its_writers() {
        let mut m = State::new(Kind::Map);
        m.apply(&Op::Put(KeyValue { key: "a".into(), value: "1".into() }), Position(3));
        m.apply(&Op::Delete("b".into()), Position(4));
        let mut d = Dedup::default();
        assert!(d.first_time(9, 2, 1, Position(3)));
        let (state, dedup) = decode(Kind::Map, &encode(&m, &d)).unwrap();
        assert_eq!((state, dedup), (m, d.clone()));
        let mut q = State::new(Kind::Queue);
        q.apply(&Op::Push("x".into()), Position(7));
        assert_eq!(decode(Kind::Queue, &encode(&q, &d)).unwrap().0, q);
        let mut c = State::new(Kind::Counter);
        c.apply(&Op::Add(-4), Position(1));
        assert_eq!(decode(Kind::Counter, &encode(&c, &d)).unwrap().0, c);
        assert!(decode(Kind::Map, b"\xff\xff not an image").is_none());
    }
}
