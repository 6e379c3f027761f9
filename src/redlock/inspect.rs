//! [`Redlock::inspect`]: who holds a lock, as the nodes see it at one moment. For
//! operators; never a lock check.

use std::fmt;
use std::sync::LazyLock;
use std::time::Duration;

use redis::{Script, Value};

use super::{Redlock, MAX_RESOURCE_LEN};
use crate::builder::label_of;
use crate::error::{Error, NodeError};
use crate::node::{Node, Request};
use crate::scripts::{Call, READERS_MARKER};

/// The value of the key and its remaining expiry, read atomically on one node in one
/// round trip: `{value or nil, pttl}`. A key of another type fails the script with
/// Redis's `WRONGTYPE` error, which is reported as that node's failure.
static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new("return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}")
});

/// What the nodes store for one resource, read once from every node: a snapshot for
/// operators, returned by [`Redlock::inspect`].
///
/// It is racy by nature and **never a lock check**: each node was read at a slightly
/// different moment, the lock may be taken, extended, released or expire while the
/// reads travel and at any time after, and a node that did not answer may hold anything.
/// Use it to see who holds a lock that seems stuck, or to watch a split; to know whether
/// you hold a lock, keep its [`LockGuard`](crate::LockGuard) and ask it.
///
/// Its `Display` is a few lines for a log or a terminal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockInfo {
    resource: String,
    key: String,
    holders: Vec<Holder>,
    free: Vec<usize>,
    errors: Vec<NodeError>,
    node_count: usize,
    quorum: usize,
}

/// One distinct value stored for a resource, and the nodes that store it (see
/// [`LockInfo::holders`]). Two holders are two owners (or two attempts of one owner).
/// The readers of a reader-writer lock show as one holder, [`is_readers`](Self::is_readers):
/// while any reader holds the resource, its key holds a marker that keeps exclusive
/// acquirers out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    label: Option<String>,
    nodes: Vec<usize>,
    min_ttl: Duration,
    readers: bool,
}

impl Holder {
    /// The owner label the holder's manager was built with
    /// ([`RedlockBuilder::owner_label`](crate::RedlockBuilder::owner_label)), read from
    /// the stored value; `None` for a value without one (no label, or another client).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// How many nodes store this value.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The indices of the nodes that store this value, in the order the nodes were
    /// given to the builder.
    pub fn nodes(&self) -> &[usize] {
        &self.nodes
    }

    /// The shortest remaining expiry (`PTTL`) among the nodes that store this value, as
    /// each node reported it. `Duration::MAX` if no node gave it an expiry (a value this
    /// crate did not write).
    pub fn min_ttl(&self) -> Duration {
        self.min_ttl
    }

    /// Whether this is the readers marker, not an owner's value: one or more readers
    /// (`lock(r).read()`) hold the resource on these nodes, until at least
    /// [`min_ttl`](Self::min_ttl) from the read (the longest reader's expiry on each
    /// node). Its [`label`](Self::label) is `None`.
    pub fn is_readers(&self) -> bool {
        self.readers
    }
}

impl LockInfo {
    /// The resource inspected.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The Redis key that was read (see [`Redlock::key_of`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// One entry per distinct stored value, the value stored on most nodes first.
    /// Empty when no node that answered stores the key.
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }

    /// Whether one value was stored on at least a quorum of the nodes when they were
    /// read. A snapshot: the lock may have expired or been released since.
    pub fn held_by_quorum(&self) -> bool {
        self.holders
            .first()
            .is_some_and(|h| h.node_count() >= self.quorum)
    }

    /// The indices of the nodes that answered and do not store the key.
    pub fn free_nodes(&self) -> &[usize] {
        &self.free
    }

    /// How many nodes did not answer (down, timed out, refused the read): what they
    /// store is unknown. Their errors are in [`errors`](Self::errors).
    pub fn unknown_nodes(&self) -> usize {
        self.errors.len()
    }

    /// Why each unknown node did not answer.
    pub fn errors(&self) -> &[NodeError] {
        &self.errors
    }

    /// The number of nodes (N).
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The number of nodes a lock needs: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.quorum
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.held_by_quorum() {
            "held by a quorum"
        } else if self.holders.is_empty() && self.errors.is_empty() {
            "free"
        } else {
            "not held by a quorum"
        };
        write!(
            f,
            "`{}` (key `{}`): {state} ({} of {} nodes needed)",
            self.resource, self.key, self.quorum, self.node_count
        )?;
        for h in &self.holders {
            let ttl = if h.min_ttl == Duration::MAX {
                "no expiry".to_owned()
            } else {
                format!("expires in {:?} or later", h.min_ttl)
            };
            let who = match &h.label {
                _ if h.readers => "readers",
                Some(label) => label.as_str(),
                None => "(no label)",
            };
            write!(
                f,
                "\n  {who}: on {} node(s) {:?}, {ttl}",
                h.node_count(),
                h.nodes
            )?;
        }
        if !self.free.is_empty() {
            write!(f, "\n  free on {} node(s) {:?}", self.free.len(), self.free)?;
        }
        for e in &self.errors {
            write!(f, "\n  unknown: {e}")?;
        }
        Ok(())
    }
}

/// One node's answer.
#[derive(Debug, PartialEq)]
enum Stored {
    Absent,
    Value { value: String, pttl: i64 },
}

fn parse(node: &Node, reply: Value) -> Result<Stored, NodeError> {
    let bad = |what: &str| node.protocol_error(format!("inspect answered {what}"));
    let Value::Array(items) = reply else {
        return Err(bad(&format!("{reply:?}")));
    };
    let [value, Value::Int(pttl)] = items.as_slice() else {
        return Err(bad(&format!("{items:?}")));
    };
    match value {
        Value::Nil => Ok(Stored::Absent),
        Value::BulkString(bytes) => Ok(Stored::Value {
            value: String::from_utf8_lossy(bytes).into_owned(),
            pttl: *pttl,
        }),
        other => Err(bad(&format!("{other:?} as the value"))),
    }
}

/// Groups the answers of the nodes by stored value.
fn tally(
    answers: Vec<(usize, Result<Stored, NodeError>)>,
) -> (Vec<Holder>, Vec<usize>, Vec<NodeError>) {
    let mut found: Vec<(String, Holder)> = Vec::new();
    let (mut free, mut errors) = (Vec::new(), Vec::new());
    for (node, answer) in answers {
        match answer {
            Ok(Stored::Absent) => free.push(node),
            Ok(Stored::Value { value, pttl }) => {
                // -1: no expiry; anything else negative cannot come with a value.
                let ttl = match u64::try_from(pttl) {
                    Ok(ms) => Duration::from_millis(ms),
                    Err(_) if pttl == -1 => Duration::MAX,
                    Err(_) => Duration::ZERO,
                };
                match found.iter_mut().find(|(v, _)| *v == value) {
                    Some((_, holder)) => {
                        holder.nodes.push(node);
                        holder.min_ttl = holder.min_ttl.min(ttl);
                    }
                    None => {
                        let readers = value == READERS_MARKER;
                        let label = label_of(&value).filter(|_| !readers).map(str::to_owned);
                        let holder = Holder {
                            label,
                            nodes: vec![node],
                            min_ttl: ttl,
                            readers,
                        };
                        found.push((value, holder));
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    let mut holders: Vec<Holder> = found.into_iter().map(|(_, h)| h).collect();
    // Most nodes first; ties by the earliest node, so the order is stable.
    holders.sort_by(|a, b| {
        b.node_count()
            .cmp(&a.node_count())
            .then(a.nodes.cmp(&b.nodes))
    });
    (holders, free, errors)
}

impl Redlock {
    /// Reads what every node stores for `resource` (`GET` and `PTTL` of its key, in one
    /// script per node, each bounded by the node timeout) and groups it by stored value:
    /// who holds the lock, on how many nodes, for how much longer, and whether one value
    /// is on a quorum of them.
    ///
    /// A **racy snapshot for operators, never a lock check**: see [`LockInfo`]. It
    /// changes nothing on the nodes. Nodes that do not answer are counted as unknown,
    /// not as an error of the whole call. Besides the lock commands, the Redis user
    /// needs `PTTL` (`+pttl` in an ACL).
    ///
    /// Right after a [`release`](crate::LockGuard::release) the slowest node may still
    /// show the released holder: a release returns at a quorum and finishes on the rest
    /// in the background (poll, with a bound, where a test needs every node clean).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let info = redlock.inspect("payment:42").await?;
    /// for h in info.holders() {
    ///     println!("{:?} on {} nodes, {:?} left", h.label(), h.node_count(), h.min_ttl());
    /// }
    /// println!("{info}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or over-long resource name.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, resource: &str) -> Result<LockInfo, Error> {
        if resource.is_empty() {
            return Err(Error::Config(
                "empty resource name: name the lock to inspect".into(),
            ));
        }
        if resource.len() > MAX_RESOURCE_LEN {
            return Err(Error::Config(format!(
                "resource name of {} bytes is over the {MAX_RESOURCE_LEN}-byte limit",
                resource.len()
            )));
        }
        let key = self.key_of(resource);
        let call = Call::new(&INSPECT, &[&key]);
        let nodes = &self.inner.nodes;
        let answers = futures::future::join_all(nodes.iter().map(|node| {
            let call = &call;
            async move {
                let answer = node
                    .run(Request::Script(call))
                    .await
                    .and_then(|reply| parse(node, reply));
                (node.index, answer)
            }
        }))
        .await;
        let (holders, free, errors) = tally(answers);
        Ok(LockInfo {
            resource: resource.to_owned(),
            key,
            holders,
            free,
            errors,
            node_count: nodes.len(),
            quorum: self.quorum(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(value: &str, pttl: i64) -> Result<Stored, NodeError> {
        Ok(Stored::Value {
            value: value.to_owned(),
            pttl,
        })
    }

    #[test]
    fn answers_are_grouped_by_value_most_nodes_first() {
        let a = format!("w-1:{:032x}", 1);
        let b = format!("{:032x}", 2);
        let (holders, free, errors) = tally(vec![
            (0, at(&b, 900)),
            (1, at(&a, 5_000)),
            (2, Ok(Stored::Absent)),
            (3, at(&a, 4_000)),
            (4, at(&a, 4_500)),
        ]);
        assert!(errors.is_empty());
        assert_eq!(free, [2]);
        assert_eq!(
            holders,
            [
                Holder {
                    label: Some("w-1".into()),
                    nodes: vec![1, 3, 4],
                    min_ttl: Duration::from_millis(4_000),
                    readers: false,
                },
                Holder {
                    label: None,
                    nodes: vec![0],
                    min_ttl: Duration::from_millis(900),
                    readers: false,
                },
            ]
        );
    }

    #[test]
    fn a_value_without_expiry_has_the_longest_ttl() {
        let (holders, ..) = tally(vec![(0, at("x", -1)), (1, at("x", -1))]);
        assert_eq!(holders[0].min_ttl(), Duration::MAX);
        let (holders, ..) = tally(vec![(0, at("x", -1)), (1, at("x", 7))]);
        assert_eq!(holders[0].min_ttl(), Duration::from_millis(7));
    }

    #[test]
    fn the_readers_marker_is_readers_not_an_owner() {
        let (holders, ..) = tally(vec![
            (0, at(READERS_MARKER, 800)),
            (1, at(READERS_MARKER, 900)),
        ]);
        assert!(holders[0].is_readers());
        assert_eq!((holders[0].label(), holders[0].node_count()), (None, 2));
        let (holders, ..) = tally(vec![(0, at(&format!("w-1:{:032x}", 1), 800))]);
        assert!(!holders[0].is_readers());
    }

    #[test]
    fn quorum_and_display() {
        let info = |holders: Vec<Holder>, free: Vec<usize>| LockInfo {
            resource: "r".into(),
            key: "p:r".into(),
            holders,
            free,
            errors: Vec::new(),
            node_count: 3,
            quorum: 2,
        };
        let two = Holder {
            label: Some("w".into()),
            nodes: vec![0, 2],
            min_ttl: Duration::from_secs(1),
            readers: false,
        };
        let held = info(vec![two.clone()], vec![1]);
        assert!(held.held_by_quorum());
        let text = held.to_string();
        assert!(
            text.starts_with("`r` (key `p:r`): held by a quorum (2 of 3 nodes needed)"),
            "{text}"
        );
        assert!(
            text.contains("\n  w: on 2 node(s) [0, 2], expires in 1s or later"),
            "{text}"
        );
        assert!(text.contains("\n  free on 1 node(s) [1]"), "{text}");
        let one = Holder {
            nodes: vec![0],
            ..two
        };
        assert!(!info(vec![one], vec![1, 2]).held_by_quorum());
        let free = info(Vec::new(), vec![0, 1, 2]);
        assert!(!free.held_by_quorum());
        assert!(free.to_string().contains(": free ("), "{free}");
    }
}
