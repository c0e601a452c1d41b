//! How many appends share token requests: entries without streams take
//! consecutive positions from one `Token`; an entry with streams (or a
//! conflict check) gets a `Token` of its own, so that its back-pointers are
//! its streams' own and its check is its own. The
//! client (coalesced batches) and the server (`Append`) group the same way.

use crate::proto::{Token, TokenConflict};
use bytes::Bytes;

/// The `Token`s for items given as (streams, positions wanted, conflict
/// check), in order, each with the indexes of the items it serves (their
/// positions follow each other from the token's start, in that order).
pub fn groups<'a>(
    items: impl IntoIterator<Item = (&'a [Bytes], u32, Option<&'a TokenConflict>)>,
) -> Vec<(Vec<usize>, Token)> {
    let mut groups: Vec<(Vec<usize>, Token)> = Vec::new();
    for (i, (streams, count, conflict)) in items.into_iter().enumerate() {
        let alone = !streams.is_empty() || conflict.is_some();
        match groups.last_mut() {
            Some((members, token)) if !alone && token.streams.is_empty() && token.conflict.is_none() => {
                members.push(i);
                token.count += count;
            }
            _ => groups.push((vec![i], Token { count, streams: streams.to_vec(), conflict: conflict.cloned() })),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_less_items_share_a_token_and_stream_items_get_their_own() {
        let s = Bytes::from_static(&[7; 16]);
        let none: &[Bytes] = &[];
        let one = std::slice::from_ref(&s);
        let check = TokenConflict { snapshot: 4, read_keys: vec![1], write_keys: vec![2] };
        let g = groups([
            (none, 1, None),
            (none, 3, None),
            (one, 1, None),
            (one, 1, None),
            (none, 2, None),
            (none, 1, Some(&check)),
            (none, 1, None),
        ]);
        let shape: Vec<(Vec<usize>, u32, usize)> =
            g.iter().map(|(m, t)| (m.clone(), t.count, t.streams.len())).collect();
        assert_eq!(
            shape,
            vec![
                (vec![0, 1], 4, 0),
                (vec![2], 1, 1),
                (vec![3], 1, 1),
                (vec![4], 2, 0),
                (vec![5], 1, 0),
                (vec![6], 1, 0)
            ]
        );
        assert_eq!(g[4].1.conflict.as_ref(), Some(&check));
    }
}
