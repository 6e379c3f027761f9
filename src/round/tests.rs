use super::{Arrivals, NodeSet, PerNode};
use crate::error::{NodeError, NodeErrorKind};

/// The replies of a round come out in the order they went in, in place for up to
/// 8 nodes and in a vector beyond, and a full round takes no more.
#[test]
fn arrivals_come_out_in_the_order_they_came() {
    for n in [1, 5, 8, 9, 20] {
        let mut arrivals = Arrivals {
            slots: PerNode::empty(n),
            read: 0,
            filled: 0,
            ended: NodeSet::new(n + 1),
            tickets: PerNode::empty(n),
            patience: None,
            patience_over: false,
        };
        assert_eq!(matches!(arrivals.slots, PerNode::Inline(..)), n <= 8);
        assert_eq!(arrivals.slots.len(), n);
        let order: Vec<usize> = (0..n).rev().collect();
        for (k, node) in order.iter().enumerate() {
            arrivals.push((*node, Ok(redis::Value::Int(k as i64))));
            if k % 2 == 1 {
                let (got, _) = arrivals.pop().expect("a reply is in");
                assert_eq!(got, order[k / 2]);
            }
        }
        let err = NodeError::new(0, "x:1".into(), NodeErrorKind::Protocol("full".into()));
        arrivals.push((n, Err(err)));
        // A second reply of a node the round already has (its request ended after
        // the round gave up on it) is not taken either.
        arrivals.push((order[0], Ok(redis::Value::Nil)));
        let rest: Vec<usize> = std::iter::from_fn(|| arrivals.pop()).map(|r| r.0).collect();
        assert_eq!(rest, order[n / 2..], "n {n}");
    }
}

/// Against the naive oracle, a vector of flags, in both forms (64 nodes and fewer
/// in one word, more in a vector), at the edges of the word.
#[test]
fn a_node_set_is_a_vector_of_flags() {
    for n in [1, 5, 63, 64, 65, 130] {
        let mut set = NodeSet::new(n);
        let mut oracle = vec![false; n];
        assert_eq!(matches!(set, NodeSet::Bits(_)), n <= 64);
        for (step, i) in [0, n - 1, n / 2, 0, n - 1].into_iter().enumerate() {
            let on = step != 3;
            set.set(i, on);
            oracle[i] = on;
            for (j, flag) in oracle.iter().enumerate() {
                assert_eq!(set.contains(j), *flag, "n {n}, node {j} after step {step}");
            }
        }
        // Out of range: never in the set, and setting it changes nothing.
        set.set(n + 64, true);
        assert!(!set.contains(n + 64));
        assert!((0..n).all(|j| set.contains(j) == oracle[j]));
    }
}
