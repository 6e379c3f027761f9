//! One attempt, the Redlock steps in order: take the time, set the key on every node at
//! once, count the votes until the outcome is certain, check what validity is left, and
//! undo on every node what a failed attempt may have set.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::policy::AttemptOutcome;
use super::Redlock;
use crate::guard::{Held, LockGuard};
use crate::mutants;
use crate::node::Node;
use crate::quorum::{self, Outcome, Tally, Vote};
use futures::StreamExt;

use crate::round::{self, fan_out, fan_out_where, Collecting, Count, Op, Replies};
use crate::scripts;
use crate::wake;

/// What one attempt came to.
pub(super) enum Attempt {
    Won(LockGuard),
    Lost {
        tally: Tally,
        causes: Vec<crate::error::NodeError>,
        /// The highest fencing counter a node reported, when one was stale.
        stale: Option<u64>,
        /// How many nodes found a key held by another owner.
        locked: usize,
        /// Which of the keys the nodes found held most often (for `acquire_many`).
        conflict: usize,
    },
    /// A quorum agreed, with less than `min_validity` left after this long.
    Expired(Duration),
}

impl Attempt {
    /// What the retry policy needs to know of it.
    pub(super) fn outcome(&self) -> AttemptOutcome {
        match self {
            Self::Won(_) => AttemptOutcome::Won,
            Self::Lost {
                tally,
                stale,
                locked,
                conflict,
                ..
            } => AttemptOutcome::Lost {
                tally: *tally,
                stale: *stale,
                locked: *locked,
                conflict: *conflict,
            },
            Self::Expired(_) => AttemptOutcome::Expired,
        }
    }
}

/// What one attempt asks of the nodes.
pub(super) struct Ask<'a> {
    pub(super) names: &'a Arc<[String]>,
    pub(super) keys: &'a Arc<[String]>,
    pub(super) fence_keys: Option<&'a [String]>,
    pub(super) ttl_ms: u64,
    pub(super) min_validity: Duration,
    pub(super) candidate: Option<u64>,
    /// Join the wait queue as this member (at the front if `true`) if the key is held.
    pub(super) queue: Option<(&'a str, bool)>,
}

/// A node's answer to an acquire request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// The key holds this attempt's value (with the counter the fenced script wrote).
    Set(Option<u64>),
    /// Another owner holds key number `.0` (0 when the reply does not say).
    Held(usize),
    /// The fencing counter is at `.0`, not below the candidate.
    Stale(u64),
}

/// Undoes an attempt if the attempt's future is dropped before it decided: a cancelled
/// acquisition cleans up after itself in the background instead of leaving keys to
/// the TTL. Made before the first request is sent, with the runtime it will release on
/// (none outside a runtime: the TTL frees the keys); `disarm` takes it.
///
/// It holds how to build the undo request rather than the request itself: most
/// attempts win and never send it, and building it costs a script command's buffers.
pub(super) struct Undo<F: FnOnce() -> Op>(Option<(Arc<[Node]>, F)>, Option<tokio::runtime::Handle>);

impl<F: FnOnce() -> Op> Undo<F> {
    pub(super) fn new(nodes: Arc<[Node]>, undo_op: F) -> Self {
        Self(
            Some((nodes, undo_op)),
            tokio::runtime::Handle::try_current().ok(),
        )
    }

    pub(super) fn disarm(&mut self) -> Option<(Arc<[Node]>, F)> {
        self.0.take()
    }
}

impl<F: FnOnce() -> Op> Drop for Undo<F> {
    fn drop(&mut self) {
        if let (Some((nodes, undo_op)), Some(handle)) = (self.0.take(), &self.1) {
            round::release_in_background(handle, nodes, undo_op(), "cancelled acquire");
        }
    }
}

impl Redlock {
    /// One round: set on all nodes, decide at the earliest certain moment, undo on loss.
    pub(super) async fn attempt(&self, ask: &Ask<'_>) -> Attempt {
        let inner = &self.inner;
        let keys = ask.keys;
        let value = super::new_shared_value(inner.config.owner_label.as_deref());
        let op = match (ask.fence_keys, ask.candidate, ask.queue) {
            (None, _, Some((member, front))) if keys.len() == 1 => {
                let queue_key = format!("{}{}", keys[0], wake::QUEUE_SUFFIX);
                let mut call =
                    scripts::Call::new(&scripts::ACQUIRE_OR_QUEUE, &[&*keys[0], &queue_key]);
                call.arg(&*value)
                    .arg(ask.ttl_ms)
                    .arg(member)
                    .arg(if front { "1" } else { "0" })
                    .arg(wake::QUEUE_TTL_MS);
                Op::setting(call, &value)
            }
            (Some(fences), Some(t), _) => {
                let all: Vec<&str> = keys.iter().chain(fences).map(String::as_str).collect();
                let mut call = scripts::Call::new(&scripts::FENCED_ACQUIRE, &all);
                call.arg(&*value).arg(ask.ttl_ms).arg(t);
                Op::setting(call, &value)
            }
            _ if keys.len() == 1 => Op::set_nx(&keys[0], &value, ask.ttl_ms),
            _ => {
                let mut call = scripts::Call::new(&scripts::ACQUIRE_MANY, keys);
                call.arg(&*value).arg(ask.ttl_ms);
                Op::setting(call, &value)
            }
        };
        let notify = false; // an undo wakes nobody: whoever beat this attempt still holds it
        let undo_op = {
            let (keys, value) = (Arc::clone(keys), Arc::clone(&value));
            move || Op::release(&keys, &value, notify)
        };
        // The clock starts before the first request is sent (the Redlock paper, step 1).
        let clock = &inner.config.clock;
        let start = clock.stamp();
        let mut undo = Undo::new(Arc::clone(&inner.nodes), undo_op);
        // Won or lost, the stragglers' requests still go out when this is dropped: a
        // won lock then stands on every healthy node, not a bare quorum (their keys go
        // with the release), and a queued acquire must reach every node's wait queue.
        // Whatever a lost attempt's stragglers set is undone below, after them on each
        // node (see `Node::settled`).
        let mut replies = Collecting::new(fan_out(&inner.nodes, Arc::new(op)), "acquire");
        let fenced = ask.candidate.is_some();
        let votes = round::collect(
            &mut replies,
            &inner.nodes,
            Count::Votes,
            |value| {
                let answer = classify(value, fenced, keys.len())?;
                let vote = if matches!(answer, Answer::Set(_)) {
                    Vote::Yes
                } else {
                    Vote::No
                };
                Ok((vote, answer))
            },
            |tally| tally.outcome().is_some(),
        )
        .await;
        let outcome = votes.tally.outcome();
        // Nodes that answered "not set" hold nothing of this attempt to undo.
        let refused: Vec<bool> = votes
            .answers
            .iter()
            .map(|a| matches!(a, Some(Answer::Held(_) | Answer::Stale(_))))
            .collect();
        let keys_n = keys.len();
        let refuses = move |value: &Value| {
            matches!(
                classify(value, fenced, keys_n),
                Ok(Answer::Held(_) | Answer::Stale(_))
            )
        };
        if outcome == Some(Outcome::Won) {
            let elapsed = clock.since(start);
            let ttl = Duration::from_millis(ask.ttl_ms);
            let drift = quorum::drift(ttl, inner.config.drift_factor);
            let left = quorum::validity(ttl, elapsed, drift);
            if left.is_some_and(|left| left >= ask.min_validity) || mutants::SKIP_VALIDITY {
                undo.disarm();
                drop(replies);
                // validity = ttl − elapsed − drift, counted from `start`, so the lock is
                // promised until start + ttl − drift and not a moment longer.
                let valid_until = start.after(ttl.saturating_sub(drift));
                let candidate = mutants::token(ask.candidate, &votes.answers, |a| match a {
                    Answer::Set(counter) => *counter,
                    _ => None,
                });
                let guard = LockGuard::new(
                    Arc::clone(ask.names),
                    valid_until,
                    ttl,
                    candidate.filter(|_| ask.fence_keys.is_some()),
                    Held {
                        inner: Arc::clone(inner),
                        keys: Arc::clone(keys),
                        value,
                        handle: tokio::runtime::Handle::try_current().ok(),
                        kind: crate::LockKind::Exclusive,
                        hold: None,
                        _holding: crate::metrics::Holding::start(
                            inner.config.metrics_class.of(&ask.names[0]),
                        ),
                    },
                );
                if let (Some(fences), Some(t)) = (ask.fence_keys, candidate) {
                    inner.fences.remember(fences, t);
                }
                return Attempt::Won(guard);
            }
            undo_failed(&mut undo, &votes, &refused, replies.into_rest(), refuses).await;
            return Attempt::Expired(elapsed);
        }
        undo_failed(&mut undo, &votes, &refused, replies.into_rest(), refuses).await;
        let mut held_at = vec![0usize; keys.len()];
        let mut stale: Option<u64> = None;
        for answer in votes.answers.iter().flatten() {
            match *answer {
                Answer::Held(key) => held_at[key.min(keys.len() - 1)] += 1,
                Answer::Stale(counter) => stale = stale.max(Some(counter)),
                Answer::Set(_) => {}
            }
        }
        let locked = held_at.iter().sum();
        let conflict = (0..keys.len()).max_by_key(|i| held_at[*i]).unwrap_or(0);
        Attempt::Lost {
            tally: votes.tally,
            causes: votes.causes,
            stale,
            locked,
            conflict,
        }
    }
}

/// Undoes a failed attempt wherever its value may be, and only there:
/// - nodes that answered "set" are undone now and waited for (two node timeouts at
///   most, `round::clear_patience`), so the next attempt starts with them clean; an
///   undo still out then goes on in the background until its own, longer deadline;
/// - nodes whose request failed (it may still have landed) are undone in the background;
/// - nodes still to answer are undone in the background once they do, unless they
///   answer "not set": under contention that is every node, and the undo costs nothing.
///
/// On each node the undo runs after this attempt's own request (see `Node::settled`).
pub(super) async fn undo_failed<T>(
    undo: &mut Undo<impl FnOnce() -> Op>,
    votes: &round::Votes<T>,
    refused: &[bool],
    pending: Option<Replies>,
    refuses: impl Fn(&Value) -> bool + Send + 'static,
) {
    let Some((nodes, undo_op)) = undo.disarm() else {
        return;
    };
    let op = Arc::new(undo_op());
    if let (Some(mut rest), Ok(handle)) = (
        pending.filter(|r| !r.is_empty()),
        tokio::runtime::Handle::try_current(),
    ) {
        let (nodes, op) = (Arc::clone(&nodes), Arc::clone(&op));
        handle.spawn(async move {
            while let Some((node, reply)) = rest.next().await {
                if matches!(&reply, Ok(value) if refuses(value)) {
                    continue;
                }
                let mut undo = fan_out_where(&nodes, Arc::clone(&op), |i| i == node);
                if let Some((_, Err(e))) = undo.next().await {
                    tracing::debug!(node, error = %e, "undo failed on a node; its key expires with the ttl");
                }
            }
        });
    }
    let now = |i: usize| votes.ended[i] && !refused[i];
    if !(0..nodes.len()).any(now) {
        return;
    }
    // Dropped mid-way (the acquisition cancelled), the rest still goes out.
    let mut replies = Collecting::new(fan_out_where(&nodes, op, now), "undo")
        .until(round::clear_patience(&nodes));
    let mut waiting = (0..nodes.len())
        .filter(|i| votes.heard[*i] && !refused[*i])
        .count();
    while waiting > 0 {
        let Some((node, reply)) = replies.next().await else {
            break;
        };
        if votes.heard[node] {
            waiting -= 1;
        }
        if let Err(e) = reply {
            tracing::debug!(node, error = %e, "undo failed on a node; its key expires with the ttl");
        }
    }
}

/// Turns a node's reply to an acquire request into an [`Answer`]. `Err` for a reply that
/// no Redis running our scripts would give.
fn classify(value: &Value, fenced: bool, keys: usize) -> Result<Answer, String> {
    if fenced {
        let Value::Array(items) = value else {
            return Err(format!("fenced acquire answered {value:?}"));
        };
        let int = |v: &Value| match v {
            Value::Int(i) => Some(*i),
            _ => None,
        };
        let ints: Option<Vec<i64>> = items.iter().map(int).collect();
        let (code, counter, key) = match ints.as_deref() {
            Some([code, counter]) => (*code, *counter, 1),
            Some([code, counter, key]) => (*code, *counter, *key),
            _ => return Err(format!("fenced acquire answered {value:?}")),
        };
        let counter = u64::try_from(counter).map_err(|_| "negative counter".to_owned())?;
        return match code {
            scripts::FENCE_OK => Ok(Answer::Set(Some(counter))),
            // Held by another owner: the counter is below our candidate, so it
            // teaches nothing.
            scripts::FENCE_LOCKED => Ok(Answer::Held(key_index(key, keys))),
            scripts::FENCE_STALE => Ok(Answer::Stale(counter)),
            other => Err(format!("fenced acquire answered code {other}")),
        };
    }
    match value {
        Value::Okay => Ok(Answer::Set(None)),
        Value::SimpleString(s) if s == "OK" => Ok(Answer::Set(None)),
        Value::Int(1) => Ok(Answer::Set(None)),
        Value::Nil | Value::Int(0) => Ok(Answer::Held(0)),
        // ACQUIRE_MANY: the first key found held, 1-based, negated.
        Value::Int(i) if *i < 0 => Ok(Answer::Held(key_index(-*i, keys))),
        other => Err(format!("acquire answered {other:?}")),
    }
}

/// A script's 1-based key number as an index into `keys` keys.
fn key_index(one_based: i64, keys: usize) -> usize {
    usize::try_from(one_based.saturating_sub(1))
        .unwrap_or(0)
        .min(keys.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_become_answers() {
        assert_eq!(classify(&Value::Okay, false, 1), Ok(Answer::Set(None)));
        assert_eq!(classify(&Value::Nil, false, 1), Ok(Answer::Held(0)));
        assert_eq!(classify(&Value::Int(1), false, 3), Ok(Answer::Set(None)));
        assert_eq!(classify(&Value::Int(-3), false, 3), Ok(Answer::Held(2)));
        // A key number out of range is clamped, never an index panic.
        assert_eq!(classify(&Value::Int(-9), false, 3), Ok(Answer::Held(2)));
        assert!(classify(&Value::Int(7), false, 1).is_err());
        let fenced = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert_eq!(
            classify(&fenced(&[2, 9]), true, 1),
            Ok(Answer::Set(Some(9)))
        );
        assert_eq!(classify(&fenced(&[0, 9]), true, 1), Ok(Answer::Stale(9)));
        assert_eq!(classify(&fenced(&[1, 4, 2]), true, 2), Ok(Answer::Held(1)));
        assert_eq!(classify(&fenced(&[1, 4]), true, 2), Ok(Answer::Held(0)));
        assert!(classify(&fenced(&[0, -1]), true, 1).is_err());
        assert!(classify(&fenced(&[5, 1]), true, 1).is_err());
    }
}
