//! The object handles users hold: `Map`, `Counter`, `Register`, `Queue`.
//! Each names one object (its stream is `KIND/NAME`); reads sync the
//! runtime to the log's tail first (linearizable) or read at a position;
//! updates are appends; compare-and-set and pop are transactions.

use crate::object::{Kind, State, QUEUE_HEAD, QUEUE_TAIL};
use crate::record::{Empty, KeyValue, Op, RegisterValue, Update};
use crate::{Error, Runtime};
use bytes::Bytes;
use naxos_client::{conflict_key, Position, StreamId};

/// The stream id of object `name` of `kind`.
pub fn stream_of(kind: Kind, name: &str) -> StreamId {
    StreamId::from_name(&format!("{}/{name}", kind.name()))
}

/// One update to the object `stream`.
pub(crate) fn update(stream: StreamId, op: Op) -> Update {
    Update { object: Bytes::copy_from_slice(&stream.to_bytes()), op: Some(op) }
}

macro_rules! handle {
    ($name:ident, $kind:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone)]
        pub struct $name {
            rt: Runtime,
            stream: StreamId,
            name: String,
        }

        impl $name {
            pub(crate) fn new(rt: Runtime, name: &str) -> $name {
                $name { rt, stream: stream_of($kind, name), name: name.to_string() }
            }

            /// The object's name.
            pub fn name(&self) -> &str {
                &self.name
            }

            /// The stream that backs it.
            pub fn stream(&self) -> StreamId {
                self.stream
            }

            /// Writes a checkpoint of it: its whole state as of the returned
            /// position, from which a runtime that opens it starts (and the
            /// log may be trimmed below it once every object has one there).
            pub async fn checkpoint(&self) -> Result<Position, Error> {
                self.rt.checkpoint(self.stream, $kind).await
            }

            /// Its state now (after syncing to the tail), through `read`.
            async fn now<T>(&self, read: impl FnOnce(&State) -> T) -> Result<T, Error> {
                let stream = self.stream;
                self.rt
                    .read_synced(&[(stream, $kind)], |o, _| {
                        read(&o.hosted.get(&stream).expect("hosted by read_synced").state)
                    })
                    .await
            }

            /// Its state as of `position` (everything below it), through `read`.
            async fn at<T>(&self, position: Position, read: impl FnOnce(&State) -> T) -> Result<T, Error> {
                self.rt.read_at(self.stream, $kind, position, |h| read(&h.state)).await
            }

            /// Appends one update, with the conflict keys it writes.
            async fn write(&self, op: Op, keys: &[(&[u8], bool)]) -> Result<Position, Error> {
                let writes = keys.iter().map(|(k, whole)| conflict_key(self.stream, k, *whole)).collect();
                self.rt.update(vec![update(self.stream, op)], writes).await
            }
        }
    };
}

handle!(Map, Kind::Map, "A replicated map from bytes to bytes (see [`Runtime::map`]).");
handle!(Counter, Kind::Counter, "A replicated signed 64-bit counter (see [`Runtime::counter`]).");
handle!(Register, Kind::Register, "A replicated register: one value or none (see [`Runtime::register`]).");
handle!(Queue, Kind::Queue, "A replicated FIFO queue (see [`Runtime::queue`]).");

/// A map's live entries, in key order.
pub(crate) fn map_entries(state: &State) -> Vec<(Bytes, Bytes)> {
    match state {
        State::Map { entries, .. } => {
            let mut live: Vec<(Bytes, Bytes)> =
                entries.iter().filter_map(|(k, v)| v.value.clone().map(|v| (k.clone(), v))).collect();
            live.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            live
        }
        _ => Vec::new(),
    }
}

/// A map key's value.
pub(crate) fn map_get(state: &State, key: &[u8]) -> Option<Bytes> {
    match state {
        State::Map { entries, .. } => entries.get(key).and_then(|v| v.value.clone()),
        _ => None,
    }
}

impl Map {
    /// The value of `key` now.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>, Error> {
        self.now(|s| map_get(s, key.as_ref())).await
    }

    /// The value of `key` as of `position`.
    pub async fn get_at(&self, key: impl AsRef<[u8]>, position: Position) -> Result<Option<Bytes>, Error> {
        self.at(position, |s| map_get(s, key.as_ref())).await
    }

    /// Every entry now, in key order: one consistent snapshot.
    pub async fn list(&self) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.now(map_entries).await
    }

    /// Every entry now, with the position the snapshot is as of.
    pub(crate) async fn list_with_position(&self) -> Result<(Vec<(Bytes, Bytes)>, Position), Error> {
        let stream = self.stream;
        self.rt
            .read_synced(&[(stream, Kind::Map)], |o, at| {
                (map_entries(&o.hosted.get(&stream).expect("hosted by read_synced").state), at)
            })
            .await
    }

    /// Every entry as of `position`, in key order.
    pub async fn list_at(&self, position: Position) -> Result<Vec<(Bytes, Bytes)>, Error> {
        self.at(position, map_entries).await
    }

    /// How many keys it holds now.
    pub async fn len(&self) -> Result<usize, Error> {
        self.now(|s| map_entries(s).len()).await
    }

    /// Whether it holds no key now.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// Sets `key` to `value`; returns the update's position.
    pub async fn put(&self, key: impl Into<Bytes>, value: impl Into<Bytes>) -> Result<Position, Error> {
        let (key, value) = (key.into(), value.into());
        let keys = [(&key[..], false), (&[][..], true)];
        self.write(Op::Put(KeyValue { key: key.clone(), value }), &keys).await
    }

    /// Removes `key`; returns the update's position.
    pub async fn delete(&self, key: impl Into<Bytes>) -> Result<Position, Error> {
        let key = key.into();
        let keys = [(&key[..], false), (&[][..], true)];
        self.write(Op::Delete(key.clone()), &keys).await
    }

    /// Sets `key` to `new` (`None`: removes it) only if its value is
    /// `expected` (`None`: absent), atomically; returns whether it did.
    pub async fn cas(&self, key: impl Into<Bytes>, expected: Option<&[u8]>, new: Option<Bytes>) -> Result<bool, Error> {
        let key = key.into();
        let done = self
            .rt
            .transaction(|tx| {
                if tx.get(self, &key)?.as_deref() != expected {
                    return Ok(false);
                }
                match &new {
                    Some(v) => tx.put(self, key.clone(), v.clone()),
                    None => tx.delete(self, key.clone()),
                }
                Ok(true)
            })
            .await?;
        Ok(done.value)
    }
}

impl Counter {
    /// Its value now.
    pub async fn get(&self) -> Result<i64, Error> {
        self.now(counter_value).await
    }

    /// Its value as of `position`.
    pub async fn get_at(&self, position: Position) -> Result<i64, Error> {
        self.at(position, counter_value).await
    }

    /// Adds `delta` (may be negative); returns the update's position.
    pub async fn add(&self, delta: i64) -> Result<Position, Error> {
        self.write(Op::Add(delta), &[(&[][..], false)]).await
    }
}

/// A counter's value.
pub(crate) fn counter_value(state: &State) -> i64 {
    match state {
        State::Counter { value, .. } => *value,
        _ => 0,
    }
}

impl Register {
    /// Its value now.
    pub async fn get(&self) -> Result<Option<Bytes>, Error> {
        self.now(register_value).await
    }

    /// Its value as of `position`.
    pub async fn get_at(&self, position: Position) -> Result<Option<Bytes>, Error> {
        self.at(position, register_value).await
    }

    /// Sets its value (`None`: clears it); returns the update's position.
    pub async fn set(&self, value: Option<Bytes>) -> Result<Position, Error> {
        self.write(Op::Set(RegisterValue { value }), &[(&[][..], false)]).await
    }

    /// Sets it to `new` only if it holds `expected`, atomically; returns whether it did.
    pub async fn cas(&self, expected: Option<&[u8]>, new: Option<Bytes>) -> Result<bool, Error> {
        let done = self
            .rt
            .transaction(|tx| {
                if tx.register(self)?.as_deref() != expected {
                    return Ok(false);
                }
                tx.set(self, new.clone());
                Ok(true)
            })
            .await?;
        Ok(done.value)
    }
}

/// A register's value.
pub(crate) fn register_value(state: &State) -> Option<Bytes> {
    match state {
        State::Register { value, .. } => value.clone(),
        _ => None,
    }
}

impl Queue {
    /// Appends `value` at the back; returns the update's position.
    pub async fn push(&self, value: impl Into<Bytes>) -> Result<Position, Error> {
        self.write(Op::Push(value.into()), &[(QUEUE_TAIL, false)]).await
    }

    /// Takes the front value (`None` if empty), in a transaction: two
    /// concurrent pops never take the same value.
    pub async fn pop(&self) -> Result<Option<Bytes>, Error> {
        Ok(self.rt.transaction(|tx| tx.pop(self)).await?.value)
    }

    /// How many values it holds now.
    pub async fn len(&self) -> Result<usize, Error> {
        self.now(|s| queue_items(s).len()).await
    }

    /// Whether it is empty now.
    pub async fn is_empty(&self) -> Result<bool, Error> {
        Ok(self.len().await? == 0)
    }

    /// Its values now, front first.
    pub async fn list(&self) -> Result<Vec<Bytes>, Error> {
        self.now(queue_items).await
    }

    /// Its values as of `position`, front first.
    pub async fn list_at(&self, position: Position) -> Result<Vec<Bytes>, Error> {
        self.at(position, queue_items).await
    }
}

/// A queue's values, front first.
pub(crate) fn queue_items(state: &State) -> Vec<Bytes> {
    match state {
        State::Queue { items, .. } => items.iter().cloned().collect(),
        _ => Vec::new(),
    }
}

/// The version key a pop reads.
pub(crate) const POP_KEY: &[u8] = QUEUE_HEAD;

impl Map {
    pub(crate) fn id(&self) -> (StreamId, Kind) {
        (self.stream, Kind::Map)
    }
}
impl Counter {
    pub(crate) fn id(&self) -> (StreamId, Kind) {
        (self.stream, Kind::Counter)
    }
}
impl Register {
    pub(crate) fn id(&self) -> (StreamId, Kind) {
        (self.stream, Kind::Register)
    }
}
impl Queue {
    pub(crate) fn id(&self) -> (StreamId, Kind) {
        (self.stream, Kind::Queue)
    }
}

/// The update that pops a queue's front value.
pub(crate) fn pop_op() -> Op {
    Op::Pop(Empty {})
}

/// A [`Map`] with typed keys and values, each stored as its JSON encoding
/// (see [`Map::typed`]).
pub struct TypedMap<K, V> {
    map: Map,
    types: std::marker::PhantomData<fn() -> (K, V)>,
}

impl Map {
    /// This map with keys of type `K` and values of type `V` (through serde,
    /// as JSON): `rt.map("users").typed::<u64, User>()`.
    pub fn typed<K, V>(&self) -> TypedMap<K, V> {
        TypedMap { map: self.clone(), types: std::marker::PhantomData }
    }
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(v).map(Bytes::from).map_err(|e| Error::Decode(e.to_string()))
}

fn from_json<T: serde::de::DeserializeOwned>(raw: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(raw).map_err(|e| Error::Decode(e.to_string()))
}

impl<K: serde::Serialize + serde::de::DeserializeOwned, V: serde::Serialize + serde::de::DeserializeOwned>
    TypedMap<K, V>
{
    /// The untyped map underneath.
    pub fn untyped(&self) -> &Map {
        &self.map
    }

    /// The value of `key` now.
    pub async fn get(&self, key: &K) -> Result<Option<V>, Error> {
        self.map.get(to_json(key)?).await?.map(|v| from_json(&v)).transpose()
    }

    /// Sets `key` to `value`; returns the update's position.
    pub async fn put(&self, key: &K, value: &V) -> Result<Position, Error> {
        self.map.put(to_json(key)?, to_json(value)?).await
    }

    /// Removes `key`; returns the update's position.
    pub async fn delete(&self, key: &K) -> Result<Position, Error> {
        self.map.delete(to_json(key)?).await
    }

    /// Every entry now, in the order of the keys' encodings.
    pub async fn list(&self) -> Result<Vec<(K, V)>, Error> {
        self.map.list().await?.iter().map(|(k, v)| Ok((from_json(k)?, from_json(v)?))).collect()
    }
}
