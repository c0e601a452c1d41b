//! Length-prefixed framing: a 4-byte big-endian length, then one protobuf
//! message. The reader enforces the frame size limit before it buffers a frame;
//! the writer coalesces every frame that is ready into one write syscall.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Bytes of the length prefix.
pub const HEADER_BYTES: usize = 4;
/// Most bytes the writer gathers before one write syscall.
pub const COALESCE_BYTES_MAX: usize = 1 << 20;

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The length prefix exceeds the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The announced length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is not a valid message.
    #[error("malformed frame body: {0}")]
    Decode(#[from] prost::DecodeError),
    /// The connection ended inside a frame.
    #[error("connection closed in the middle of a frame")]
    Truncated,
    /// Part of a frame arrived, then nothing for the stall time-out.
    #[error("a frame stalled: nothing more of it arrived for {0:?}")]
    Stalled(std::time::Duration),
    /// The socket failed.
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Appends `msg` as one frame to `buf`.
pub fn encode<M: Message>(msg: &M, buf: &mut BytesMut) {
    let len = msg.encoded_len();
    buf.reserve(HEADER_BYTES + len);
    buf.put_u32(len as u32);
    msg.encode(buf).expect("buffer was reserved large enough, so encoding cannot fail");
}

/// Takes one whole frame's body off the front of `buf`, if `buf` holds one.
pub fn try_split(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Error> {
    if buf.len() < HEADER_BYTES {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len > max {
        return Err(Error::TooLarge { len, max });
    }
    if buf.len() < HEADER_BYTES + len {
        return Ok(None);
    }
    buf.advance(HEADER_BYTES);
    Ok(Some(buf.split_to(len).freeze()))
}

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
    buf: BytesMut,
    max: usize,
    /// How long a frame that has begun may go without more bytes.
    stall: Option<std::time::Duration>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader that refuses frames larger than `max` bytes.
    pub fn new(inner: R, max: usize) -> Self {
        FrameReader { inner, buf: BytesMut::with_capacity(64 * 1024), max, stall: None }
    }

    /// Fails a frame (`Error::Stalled`) when, once it has begun, nothing
    /// more of it arrives for `stall` (a waiting peer between frames is not
    /// stalled).
    pub fn with_stall_timeout(mut self, stall: std::time::Duration) -> Self {
        self.stall = Some(stall);
        self
    }

    /// The next frame's body, `None` at a clean end of stream.
    pub async fn next_frame(&mut self) -> Result<Option<Bytes>, Error> {
        loop {
            if let Some(frame) = try_split(&mut self.buf, self.max)? {
                return Ok(Some(frame));
            }
            self.make_room();
            let read = match self.stall.filter(|_| !self.buf.is_empty()) {
                Some(stall) => match tokio::time::timeout(stall, self.inner.read_buf(&mut self.buf)).await {
                    Ok(read) => read?,
                    Err(_) => return Err(Error::Stalled(stall)),
                },
                None => self.inner.read_buf(&mut self.buf).await?,
            };
            if read == 0 {
                return if self.buf.is_empty() { Ok(None) } else { Err(Error::Truncated) };
            }
        }
    }

    /// Whether part of a frame has arrived and the rest has not.
    pub fn in_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Room for the next read. The buffer grows with the bytes that have
    /// arrived (doubling, up to what the frame being read still needs), not
    /// with the length a frame announces: a peer that announces 64 MiB and
    /// sends one byte costs 64 KiB, not 64 MiB.
    fn make_room(&mut self) {
        let free = self.buf.capacity() - self.buf.len();
        if free >= 4096 {
            return;
        }
        let wanted = if self.buf.len() >= HEADER_BYTES {
            let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
            (HEADER_BYTES + len).saturating_sub(self.buf.len())
        } else {
            0
        };
        let grow = self.buf.len().max(64 * 1024).min(wanted.max(64 * 1024));
        self.buf.reserve(grow);
    }

    /// The next frame decoded as `M`.
    pub async fn next<M: Message + Default>(&mut self) -> Result<Option<M>, Error> {
        match self.next_frame().await? {
            Some(body) => Ok(Some(M::decode(body)?)),
            None => Ok(None),
        }
    }
}

/// Writes every message received on `rx` as frames, coalescing all that are
/// ready into one write; returns when `rx` closes or the socket fails.
pub async fn write_loop<M: Message, W: AsyncWrite + Unpin>(
    w: W,
    mut rx: mpsc::UnboundedReceiver<M>,
) -> std::io::Result<()> {
    write_loop_with(w, &mut rx, |m, buf| encode(m, buf), |_| {}).await
}

/// `write_loop` for queued items of any kind: `encode_one` frames an item
/// into the buffer, and `done` gets the items of each socket write once it
/// was made (written, or failed: the socket is then given up).
pub async fn write_loop_with<T, W: AsyncWrite + Unpin>(
    mut w: W,
    rx: &mut mpsc::UnboundedReceiver<T>,
    mut encode_one: impl FnMut(&T, &mut BytesMut),
    mut done: impl FnMut(&[T]),
) -> std::io::Result<()> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        encode_one(&first, &mut buf);
        batch.push(first);
        while buf.len() < COALESCE_BYTES_MAX {
            match rx.try_recv() {
                Ok(m) => {
                    encode_one(&m, &mut buf);
                    batch.push(m);
                }
                Err(_) => break,
            }
        }
        let wrote = async {
            w.write_all(&buf).await?;
            w.flush().await
        }
        .await;
        done(&batch);
        batch.clear();
        wrote?;
        buf.clear();
    }
    w.shutdown().await.ok();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{request, Read, Request};

    #[test]
    fn frames_split_only_when_whole() {
        let req = Request { id: 9, body: Some(request::Body::Read(Read { position: 3 })), ..Default::default() };
        let mut buf = BytesMut::new();
        encode(&req, &mut buf);
        encode(&req, &mut buf);
        let total = buf.len();
        let mut partial = BytesMut::from(&buf[..total / 2 - 1]);
        assert!(try_split(&mut partial, 1024).unwrap().is_none());
        let a = try_split(&mut buf, 1024).unwrap().unwrap();
        assert_eq!(Request::decode(a).unwrap(), req);
        assert!(try_split(&mut buf, 1024).unwrap().is_some());
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1][..]);
        assert!(matches!(try_split(&mut buf, 1024), Err(Error::TooLarge { .. })));
    }
}
