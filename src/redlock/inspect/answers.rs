//! One node's answer to the inspect script, and the grouping of all nodes' answers by
//! stored value: the lock key's holders, the readers, and a waiting writer's intent.

use std::time::Duration;

use redis::Value;

use super::Holder;
use crate::builder::label_of;
use crate::error::NodeError;
use crate::node::Node;
use crate::scripts::READERS_MARKER;

/// What one node stores for a resource.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Stored {
    /// The lock key's value and `PTTL`, if the key exists.
    pub(super) value: Option<(String, i64)>,
    /// Each live reader's value and its remaining ms, on the node's clock.
    pub(super) readers: Vec<(String, i64)>,
    /// A waiting writer's intent id and its `PTTL`.
    pub(super) intent: Option<(String, i64)>,
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads `{value or nil, pttl, {reader, ms left, ...}, intent or nil, intent pttl}`; the
/// last three are missing where the node's user may not read them.
pub(super) fn parse(node: &Node, reply: Value) -> Result<Stored, NodeError> {
    let bad = |what: &str| node.protocol_error(format!("inspect answered {what}"));
    let Value::Array(items) = reply else {
        return Err(bad(&format!("{reply:?}")));
    };
    let (value, pttl) = match items.as_slice() {
        [value, Value::Int(pttl), ..] => (value, *pttl),
        _ => return Err(bad(&format!("{items:?}"))),
    };
    let mut stored = Stored::default();
    match value {
        Value::Nil => {}
        v => match text(v) {
            Some(v) => stored.value = Some((v, pttl)),
            None => return Err(bad(&format!("{v:?} as the value"))),
        },
    }
    if let Some(Value::Array(flat)) = items.get(2) {
        for pair in flat.chunks_exact(2) {
            if let (Some(reader), Value::Int(left)) = (text(&pair[0]), &pair[1]) {
                stored.readers.push((reader, *left));
            }
        }
    }
    if let (Some(id), Some(Value::Int(left))) = (items.get(3).and_then(text), items.get(4)) {
        stored.intent = Some((id, *left));
    }
    Ok(stored)
}

/// A node's `PTTL` as a duration: -1 (no expiry) is the longest, any other negative
/// cannot come with a value.
fn ttl_of(pttl: i64) -> Duration {
    match u64::try_from(pttl) {
        Ok(ms) => Duration::from_millis(ms),
        Err(_) if pttl == -1 => Duration::MAX,
        Err(_) => Duration::ZERO,
    }
}

/// Distinct values and the nodes that store each, most nodes first.
#[derive(Default)]
struct Groups(Vec<(String, Holder)>);

impl Groups {
    fn add(&mut self, node: usize, value: String, pttl: i64) {
        let ttl = ttl_of(pttl);
        match self.0.iter_mut().find(|(v, _)| *v == value) {
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
                self.0.push((value, holder));
            }
        }
    }

    fn sorted(self) -> Vec<Holder> {
        let mut holders: Vec<Holder> = self.0.into_iter().map(|(_, h)| h).collect();
        // Most nodes first; ties by the earliest node, so the order is stable.
        holders.sort_by(|a, b| {
            b.node_count()
                .cmp(&a.node_count())
                .then(a.nodes.cmp(&b.nodes))
        });
        holders
    }
}

/// Every node's answer, grouped.
pub(super) struct Tally {
    pub(super) holders: Vec<Holder>,
    pub(super) free: Vec<usize>,
    pub(super) errors: Vec<NodeError>,
    pub(super) readers: Vec<Holder>,
    pub(super) writers: Vec<Holder>,
}

/// Groups the answers of the nodes by stored value.
pub(super) fn tally(answers: Vec<(usize, Result<Stored, NodeError>)>) -> Tally {
    let (mut holders, mut readers, mut writers) =
        (Groups::default(), Groups::default(), Groups::default());
    let (mut free, mut errors) = (Vec::new(), Vec::new());
    for (node, answer) in answers {
        match answer {
            Ok(stored) => {
                match stored.value {
                    Some((value, pttl)) => holders.add(node, value, pttl),
                    None => free.push(node),
                }
                for (reader, left) in stored.readers {
                    readers.add(node, reader, left);
                }
                if let Some((id, pttl)) = stored.intent {
                    writers.add(node, id, pttl);
                }
            }
            Err(e) => errors.push(e),
        }
    }
    Tally {
        holders: holders.sorted(),
        free,
        errors,
        readers: readers.sorted(),
        writers: writers.sorted(),
    }
}
