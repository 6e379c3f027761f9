//! [`collect`]: the one vote collector, and what a round of replies came to ([`Votes`]).

use std::future::Future;

use redis::Value;

use super::{Collecting, PerNode};
use crate::error::{Error, NodeError, NodeErrors};
use crate::node::Node;
use crate::quorum::{Tally, Vote};

/// What a round of replies came to.
pub(crate) struct Votes<T> {
    pub(crate) tally: Tally,
    /// Why the failed votes failed, in the order they came.
    pub(crate) causes: Vec<NodeError>,
    /// Per node, what it answered (`None`: not heard from, failed, or not counted).
    pub(crate) answers: PerNode<T>,
    /// The nodes from which a reply came (so their request ran there).
    pub(crate) heard: NodeSet,
    /// The nodes whose request ended, with a reply or a failure.
    pub(crate) ended: NodeSet,
}

/// A set of node indexes: the bits of one word for up to 64 nodes, with no allocation
/// (a round of every operation has two), a vector beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeSet {
    Bits(u64),
    Many(Vec<bool>),
}

impl NodeSet {
    /// The empty set of nodes `0..n`.
    pub(crate) fn new(n: usize) -> Self {
        if n <= 64 {
            Self::Bits(0)
        } else {
            Self::Many(vec![false; n])
        }
    }

    /// Puts node `i` in the set (`in_set`) or takes it out.
    pub(crate) fn set(&mut self, i: usize, in_set: bool) {
        match self {
            Self::Bits(bits) => {
                let bit = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i));
                if let Some(bit) = bit {
                    if in_set {
                        *bits |= bit;
                    } else {
                        *bits &= !bit;
                    }
                }
            }
            Self::Many(v) => {
                if let Some(slot) = v.get_mut(i) {
                    *slot = in_set;
                }
            }
        }
    }

    /// Whether node `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        match self {
            Self::Bits(bits) => u32::try_from(i)
                .ok()
                .and_then(|i| bits.checked_shr(i))
                .is_some_and(|b| b & 1 == 1),
            Self::Many(v) => v.get(i).copied().unwrap_or(false),
        }
    }
}

/// Whose replies count: every answer, or only the votes of nodes not in restart
/// quarantine (whose replies are then failed votes, with that cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Answers,
    Votes,
}

/// The one vote collector of acquire, extend and release: reads `replies` until
/// `done(&tally)` (or every node replied), each reply through `classify`; a reply no
/// Redis running our scripts would give is a failed vote with its cause. What is not
/// read stays in `replies`, for its owner to finish in the background.
pub(crate) async fn collect<T, F: Future<Output = ()> + Send + 'static>(
    replies: &mut Collecting<F>,
    nodes: &[Node],
    count: Count,
    classify: impl Fn(&Value) -> Result<(Vote, T), String>,
    done: impl Fn(&Tally) -> bool,
) -> Votes<T> {
    let n = nodes.len();
    let mut votes = Votes {
        tally: Tally::new(n),
        causes: Vec::new(),
        answers: PerNode::empty(n),
        heard: NodeSet::new(n),
        ended: NodeSet::new(n),
    };
    while let Some((node, reply)) = replies.next().await {
        votes.heard.set(node, reply.is_ok());
        votes.ended.set(node, true);
        let reply = match count {
            Count::Votes => nodes[node].counted(reply),
            Count::Answers => reply,
        };
        let vote = match reply
            .and_then(|value| classify(&value).map_err(|what| nodes[node].protocol_error(what)))
        {
            Ok((vote, answer)) => {
                votes.answers[node] = Some(answer);
                vote
            }
            Err(e) => {
                votes.causes.push(e);
                Vote::Failed
            }
        };
        tracing::debug!(node, ?vote, "vote");
        votes.tally.record(vote);
        if done(&votes.tally) {
            break;
        }
    }
    votes
}

/// `Error::NoQuorum` for `resource` after `attempts`, from a round's tally, with `ok`
/// the nodes that did what was asked.
pub(crate) fn no_quorum(
    resource: &str,
    attempts: u32,
    ok: usize,
    tally: &Tally,
    causes: Vec<NodeError>,
) -> Error {
    Error::NoQuorum {
        resource: resource.to_owned(),
        attempts,
        ok,
        failed: tally.failed,
        needed: tally.quorum,
        nodes: tally.nodes,
        causes: NodeErrors(causes),
    }
}
