//! A look at a request's bytes before they are decoded: protobuf's wire
//! format is walked without building anything, so that what decoding would
//! silently accept or pay dearly for is refused first: a request with two
//! bodies (protobuf keeps the last, so `Read` then `Trim` in one frame
//! would run the trim), a batch of more items than a connection may have in
//! flight (decoding a 64 MiB frame of empty items built gigabytes), and a
//! batch inside a batch.

/// The field numbers of `Request`'s `body` oneof start here (1 to 3 are
/// the id, the cluster id and the epoch).
const BODY_FIELDS_FROM: u64 = 10;
/// `Request.batch`.
const BATCH_FIELD: u64 = 50;
/// `Batch.requests`.
const BATCH_ITEM_FIELD: u64 = 1;
/// `Request.id`.
const ID_FIELD: u64 = 1;
/// `Request.token`, and its `count` (a `uint32`).
const TOKEN_FIELD: u64 = 20;
const TOKEN_COUNT_FIELD: u64 = 1;

/// What the walk found wrong.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The bytes are not protobuf.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// Two body fields in one request.
    #[error("a request holds two bodies (fields {0} and {1}); send one request per body")]
    TwoBodies(u64, u64),
    /// A batch of too many items.
    #[error("a batch holds more than {0} requests")]
    BatchTooLarge(usize),
    /// A batch inside a batch's item.
    #[error("a batch may not hold a batch")]
    NestedBatch,
    /// A `uint32` field whose value does not fit (protobuf would cut it).
    #[error("{0} {1} is out of range (at most {max})", max = u32::MAX)]
    OutOfRange(&'static str, u64),
}

fn varint(b: &[u8], at: &mut usize) -> Result<u64, Refusal> {
    let mut v: u64 = 0;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*at).ok_or(Refusal::Malformed("truncated varint"))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(Refusal::Malformed("varint longer than 10 bytes"))
}

/// One field of a message: its number, its wire type, and its value (a
/// varint's value; the bytes of a length-delimited field).
struct Field<'a> {
    number: u64,
    wire: u64,
    value: u64,
    payload: &'a [u8],
}

/// Calls `each` for every top-level field of `b`.
fn fields<'a>(b: &'a [u8], mut each: impl FnMut(Field<'a>) -> Result<(), Refusal>) -> Result<(), Refusal> {
    let mut at = 0;
    while at < b.len() {
        let key = varint(b, &mut at)?;
        let (number, wire) = (key >> 3, key & 7);
        let mut field = Field { number, wire, value: 0, payload: &[] };
        match wire {
            0 => field.value = varint(b, &mut at)?,
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                at = at.checked_add(n).filter(|e| *e <= b.len()).ok_or(Refusal::Malformed("truncated field"))?;
            }
            2 => {
                let len = usize::try_from(varint(b, &mut at)?).map_err(|_| Refusal::Malformed("length too large"))?;
                let end = at.checked_add(len).filter(|e| *e <= b.len()).ok_or(Refusal::Malformed("truncated field"))?;
                field.payload = &b[at..end];
                at = end;
            }
            _ => return Err(Refusal::Malformed("unknown wire type")),
        }
        each(field)?;
    }
    Ok(())
}

/// The request's id, if its bytes hold one (to answer a refused request);
/// 0 if they do not.
pub fn request_id(b: &[u8]) -> u64 {
    let mut id = 0;
    let _ = fields(b, |f| {
        if f.number == ID_FIELD && f.wire == 0 {
            id = f.value;
        }
        Ok(())
    });
    id
}

/// Checks a `Request`'s bytes: one body at most, a batch of at most
/// `batch_max` items, none of them a batch or with two bodies.
pub fn check_request(b: &[u8], batch_max: usize) -> Result<(), Refusal> {
    check(b, batch_max, false)
}

fn check(b: &[u8], batch_max: usize, in_batch: bool) -> Result<(), Refusal> {
    let mut body: Option<u64> = None;
    fields(b, |f| {
        if f.number < BODY_FIELDS_FROM {
            return Ok(());
        }
        if let Some(first) = body {
            // Another body, or the same one twice (protobuf would merge them).
            return Err(Refusal::TwoBodies(first, f.number));
        }
        body = Some(f.number);
        if f.number == TOKEN_FIELD && f.wire == 2 {
            fields(f.payload, |t| {
                if t.number == TOKEN_COUNT_FIELD && t.wire == 0 && t.value > u64::from(u32::MAX) {
                    return Err(Refusal::OutOfRange("token count", t.value));
                }
                Ok(())
            })?;
        }
        if f.number == BATCH_FIELD && f.wire == 2 {
            if in_batch {
                return Err(Refusal::NestedBatch);
            }
            let mut items = 0usize;
            fields(f.payload, |item| {
                if item.number == BATCH_ITEM_FIELD && item.wire == 2 {
                    items += 1;
                    if items > batch_max {
                        return Err(Refusal::BatchTooLarge(batch_max));
                    }
                    check(item.payload, batch_max, true)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{request, Batch, Read, Request, Trim};
    use prost::Message;

    fn bytes(r: &Request) -> Vec<u8> {
        r.encode_to_vec()
    }

    #[test]
    fn one_body_passes_and_two_are_refused() {
        let read = Request { id: 7, body: Some(request::Body::Read(Read { position: 3 })), ..Default::default() };
        assert_eq!(check_request(&bytes(&read), 16), Ok(()));
        assert_eq!(request_id(&bytes(&read)), 7);
        let trim = Request { id: 7, body: Some(request::Body::Trim(Trim { position: 9 })), ..Default::default() };
        // Protobuf concatenation merges messages: Read then Trim in one frame.
        let mut both = bytes(&read);
        both.extend(bytes(&trim));
        assert_eq!(check_request(&both, 16), Err(Refusal::TwoBodies(11, 13)));
        // And decoding would have kept the trim.
        assert!(matches!(Request::decode(&both[..]).unwrap().body, Some(request::Body::Trim(_))));
    }

    #[test]
    fn batches_are_counted_before_they_are_built() {
        let item = Request { id: 1, body: Some(request::Body::Read(Read { position: 1 })), ..Default::default() };
        let batch = |n: usize| Request {
            id: 2,
            body: Some(request::Body::Batch(Batch { requests: vec![item.clone(); n] })),
            ..Default::default()
        };
        assert_eq!(check_request(&bytes(&batch(4)), 4), Ok(()));
        assert_eq!(check_request(&bytes(&batch(5)), 4), Err(Refusal::BatchTooLarge(4)));
        let nested = Request {
            id: 3,
            body: Some(request::Body::Batch(Batch { requests: vec![batch(1)] })),
            ..Default::default()
        };
        assert_eq!(check_request(&bytes(&nested), 4), Err(Refusal::NestedBatch));
        assert!(matches!(check_request(&[0x0a, 0xff], 4), Err(Refusal::Malformed(_))));
    }

    #[test]
    fn a_token_count_beyond_uint32_is_refused_not_cut() {
        use crate::proto::Token;
        let token = |count: u32| Request {
            id: 1,
            body: Some(request::Body::Token(Token { count, ..Default::default() })),
            ..Default::default()
        };
        assert_eq!(check_request(&bytes(&token(64)), 4), Ok(()));
        // The same request with a count of 2^32 + 5 written as a varint.
        let mut wide = bytes(&Request { id: 1, ..Default::default() });
        let mut inner = vec![0x08]; // field 1, varint
        let mut v: u64 = (1 << 32) + 5;
        while v >= 0x80 {
            inner.push((v as u8) | 0x80);
            v >>= 7;
        }
        inner.push(v as u8);
        // Field 20, length-delimited: key (20 << 3 | 2) = 162, a two-byte varint.
        wide.extend([0xa2, 0x01, inner.len() as u8]);
        wide.extend(&inner);
        assert_eq!(check_request(&wide, 4), Err(Refusal::OutOfRange("token count", (1 << 32) + 5)));
        // Decoding would have cut it to 5.
        match Request::decode(&wide[..]).unwrap().body {
            Some(request::Body::Token(t)) => assert_eq!(t.count, 5),
            other => panic!("{other:?}"),
        }
    }
}
