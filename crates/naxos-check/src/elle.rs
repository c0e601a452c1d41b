//! An Elle-style checker of list-append transactions (Kingsbury & Alvaro,
//! VLDB 2020): each transaction appends unique values to lists and reads
//! lists. From what was read it infers each list's order of versions (the
//! longest list read; every other read must be a prefix of it), then the
//! dependencies between committed transactions: write-write (one appended the
//! value right after the other's), write-read (one read a list whose last
//! value the other appended) and read-write (one read a list the other
//! appended the next value to). A cycle of write-write edges is G0, one of
//! write-write and write-read edges G1c, any other cycle G2; a read of a
//! value an aborted transaction appended is G1a. Each is a violation of
//! serializability. A transaction whose outcome is unknown counts as
//! committed once a value it appended was read.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::invariant::LIST_APPEND;
use crate::violation::sorted;
use crate::{History, ListOp, Op, Outcome, Violation};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
enum Edge {
    Ww,
    Wr,
    Rw,
}

/// Serializability of list-append transactions (see the module doc).
pub fn check_list_append(history: &History) -> Vec<Violation> {
    let mut violations = Vec::new();
    // Who appended each (key, value), and whether that transaction aborted.
    let mut writer: HashMap<(&str, u64), (usize, bool)> = HashMap::new();
    // Committed reads: (reader, key, list).
    let mut reads: Vec<(usize, &str, &[u64])> = Vec::new();
    for (i, e) in history.events.iter().enumerate() {
        let Op::ListTxn { ops } = &e.op else { continue };
        let aborted = matches!(e.outcome, Outcome::Aborted { .. });
        for op in ops {
            if let ListOp::Append { key, value } = op {
                writer.insert((key.as_str(), *value), (i, aborted));
            }
        }
        if let Outcome::Lists { reads: got } = &e.outcome {
            reads.extend(got.iter().map(|(k, l)| (i, k.as_str(), l.as_slice())));
        }
    }
    // G1a, and values nobody appended.
    for &(reader, key, list) in &reads {
        for v in list {
            match writer.get(&(key, *v)) {
                Some(&(w, true)) => violations.push(Violation::new(
                    LIST_APPEND,
                    format!("G1a (aborted read): a read of {key} saw {v}, appended by a transaction that aborted"),
                    vec![reader, w],
                )),
                None => violations.push(Violation::new(
                    LIST_APPEND,
                    format!("a read of {key} saw {v}, which no transaction appended"),
                    vec![reader],
                )),
                _ => {}
            }
        }
    }
    // Each key's version order: the longest read; every read a prefix of it.
    let mut order: BTreeMap<&str, (&[u64], usize)> = BTreeMap::new();
    for &(reader, key, list) in &reads {
        let best = order.entry(key).or_insert((list, reader));
        if list.len() > best.0.len() {
            *best = (list, reader);
        }
    }
    for &(reader, key, list) in &reads {
        let (longest, by) = order[key];
        if !longest.starts_with(list) {
            violations.push(Violation::new(
                LIST_APPEND,
                format!("two reads of {key} disagree on its order: {list:?} is not a prefix of {longest:?}"),
                vec![reader, by],
            ));
        }
    }
    // Dependencies between transactions.
    let mut edges: HashSet<(usize, usize, Edge)> = HashSet::new();
    let mut add = |a: usize, b: usize, kind: Edge| {
        if a != b {
            edges.insert((a, b, kind));
        }
    };
    for (key, (longest, _)) in &order {
        for pair in longest.windows(2) {
            if let (Some(&(a, _)), Some(&(b, _))) = (writer.get(&(*key, pair[0])), writer.get(&(*key, pair[1]))) {
                add(a, b, Edge::Ww);
            }
        }
    }
    for &(reader, key, list) in &reads {
        if let Some(&(w, _)) = list.last().and_then(|v| writer.get(&(key, *v))) {
            add(w, reader, Edge::Wr);
        }
        let (longest, _) = order[key];
        if longest.starts_with(list) {
            if let Some(&(w, _)) = longest.get(list.len()).and_then(|v| writer.get(&(key, *v))) {
                add(reader, w, Edge::Rw);
            }
        }
    }
    // Cycles: each strongly connected component of two or more
    // transactions, named by the strongest anomaly it holds.
    let all: Vec<(usize, usize, Edge)> = edges.into_iter().collect();
    for component in components(&all, &[Edge::Ww, Edge::Wr, Edge::Rw]) {
        let inside: Vec<(usize, usize, Edge)> =
            all.iter().copied().filter(|(a, b, _)| component.contains(a) && component.contains(b)).collect();
        let name = if !components(&inside, &[Edge::Ww]).is_empty() {
            "G0 (write cycle)"
        } else if !components(&inside, &[Edge::Ww, Edge::Wr]).is_empty() {
            "G1c (circular information flow)"
        } else {
            "G2 (anti-dependency cycle)"
        };
        let mut events: Vec<usize> = component.iter().copied().collect();
        events.sort_unstable();
        violations.push(Violation::new(
            LIST_APPEND,
            format!("{name} among {} transactions: not serializable", events.len()),
            events,
        ));
    }
    sorted(violations)
}

/// The strongly connected components of two or more nodes of the graph of
/// `edges` of the given kinds (Tarjan's algorithm, iterative).
fn components(edges: &[(usize, usize, Edge)], kinds: &[Edge]) -> Vec<HashSet<usize>> {
    let mut adj: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(a, b, k) in edges {
        if kinds.contains(&k) {
            adj.entry(a).or_default().push(b);
            adj.entry(b).or_default();
        }
    }
    let nodes: Vec<usize> = adj.keys().copied().collect();
    let mut index: HashMap<usize, usize> = HashMap::new();
    let mut low: HashMap<usize, usize> = HashMap::new();
    let mut on_stack: HashSet<usize> = HashSet::new();
    let mut stack: Vec<usize> = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for &root in &nodes {
        if index.contains_key(&root) {
            continue;
        }
        // (node, next child to visit)
        let mut work: Vec<(usize, usize)> = vec![(root, 0)];
        index.insert(root, next);
        low.insert(root, next);
        next += 1;
        stack.push(root);
        on_stack.insert(root);
        while let Some(&mut (v, ref mut child)) = work.last_mut() {
            let children = &adj[&v];
            if *child < children.len() {
                let w = children[*child];
                *child += 1;
                match index.get(&w).copied() {
                    None => {
                        index.insert(w, next);
                        low.insert(w, next);
                        next += 1;
                        stack.push(w);
                        on_stack.insert(w);
                        work.push((w, 0));
                    }
                    Some(iw) if on_stack.contains(&w) => {
                        let lw = iw.min(low[&v]);
                        low.insert(v, lw);
                    }
                    Some(_) => {}
                }
                continue;
            }
            work.pop();
            if let Some(&(parent, _)) = work.last() {
                let lp = low[&parent].min(low[&v]);
                low.insert(parent, lp);
            }
            if low[&v] == index[&v] {
                let mut component = HashSet::new();
                while let Some(w) = stack.pop() {
                    on_stack.remove(&w);
                    component.insert(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    out.push(component);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn txn(ops: Vec<ListOp>, outcome: Outcome) -> Event {
        Event::new(0, 0, 1, Op::ListTxn { ops }, outcome)
    }
    fn append(key: &str, value: u64) -> ListOp {
        ListOp::Append { key: key.into(), value }
    }
    fn read(key: &str) -> ListOp {
        ListOp::Read { key: key.into() }
    }
    fn lists(reads: &[(&str, &[u64])]) -> Outcome {
        Outcome::Lists { reads: reads.iter().map(|(k, l)| (k.to_string(), l.to_vec())).collect() }
    }

    #[test]
    fn a_serial_history_passes() {
        let h = History::from(vec![
            txn(vec![append("x", 1)], lists(&[])),
            txn(vec![read("x"), append("x", 2)], lists(&[("x", &[1])])),
            txn(vec![read("x")], lists(&[("x", &[1, 2])])),
        ]);
        assert_eq!(check_list_append(&h), vec![]);
    }

    #[test]
    fn a_lost_update_is_a_g2_cycle() {
        // Both read x = [1] and appended after it: each read-depends on the
        // other's append (the classic lost update of read-modify-write).
        let h = History::from(vec![
            txn(vec![append("x", 1)], lists(&[])),
            txn(vec![read("x"), append("x", 2)], lists(&[("x", &[1])])),
            txn(vec![read("x"), append("x", 3)], lists(&[("x", &[1])])),
            txn(vec![read("x")], lists(&[("x", &[1, 2, 3])])),
        ]);
        let v = check_list_append(&h);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].message.starts_with("G2"), "{v:?}");
        assert_eq!(v[0].events, vec![1, 2]);
    }

    #[test]
    fn write_cycles_circular_reads_and_aborted_reads_are_named() {
        // G1c: T1 read T2's append of y, T2 read T1's append of x.
        let g1c = History::from(vec![
            txn(vec![append("x", 1), read("y")], lists(&[("y", &[2])])),
            txn(vec![append("y", 2), read("x")], lists(&[("x", &[1])])),
        ]);
        let v = check_list_append(&g1c);
        assert!(v.iter().any(|v| v.message.starts_with("G1c")), "{v:?}");
        // G0: x orders T1 before T2, y orders T2 before T1.
        let g0 = History::from(vec![
            txn(vec![append("x", 1), append("y", 4)], lists(&[])),
            txn(vec![append("x", 2), append("y", 3)], lists(&[])),
            txn(vec![read("x"), read("y")], lists(&[("x", &[1, 2]), ("y", &[3, 4])])),
        ]);
        let v = check_list_append(&g0);
        assert!(v.iter().any(|v| v.message.starts_with("G0")), "{v:?}");
        // G1a: a read saw an aborted append.
        let g1a = History::from(vec![
            txn(vec![append("x", 1)], Outcome::Aborted { cause: "conflict".into() }),
            txn(vec![read("x")], lists(&[("x", &[1])])),
        ]);
        let v = check_list_append(&g1a);
        assert!(v.iter().any(|v| v.message.starts_with("G1a")), "{v:?}");
        // Reads that disagree on the order.
        let torn = History::from(vec![
            txn(vec![append("x", 1)], lists(&[])),
            txn(vec![append("x", 2)], lists(&[])),
            txn(vec![read("x")], lists(&[("x", &[1, 2])])),
            txn(vec![read("x")], lists(&[("x", &[2])])),
        ]);
        let v = check_list_append(&torn);
        assert!(v.iter().any(|v| v.message.contains("disagree")), "{v:?}");
    }
}
