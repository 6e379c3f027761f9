//! One attempt, the Redlock steps in order, for every kind of lock ([`Claim`]): take the
//! time, send the request to every node at once, count the votes until the outcome is
//! certain, check what validity is left, and undo on every node what a failed attempt
//! may have set.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use std::future::Future;

use redis::Value;

use super::claim::{best_slot, Answer, Claim, Try, UndoPlan};
use super::policy::AttemptOutcome;
use super::Redlock;
use crate::guard::{Held, LockGuard};
use crate::mutants;
use crate::node::Node;
use crate::quorum::{self, Outcome, Tally, Vote};
use crate::round::{self, fan_out, fan_out_where, Collecting, Count, NodeSet, Round};

/// What one attempt came to.
// `Won` is the common case and lives for one step: boxing the guard would cost an
// allocation per acquisition to save stack space that is freed at once.
#[allow(clippy::large_enum_variant)]
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

/// Undoes an attempt if the attempt's future is dropped before it decided: a cancelled
/// acquisition cleans up after itself in the background instead of leaving keys to
/// the TTL. Made before the first request is sent, with the runtime it will release on
/// (none outside a runtime: the TTL frees the keys); `disarm` takes it.
///
/// It holds how to build the undo request rather than the request itself: most
/// attempts win and never send it, and building it costs a script command's buffers.
pub(super) struct Undo {
    plan: Option<(Arc<[Node]>, UndoPlan, Arc<str>)>,
    handle: Option<tokio::runtime::Handle>,
}

impl Undo {
    fn new(nodes: Arc<[Node]>, plan: UndoPlan, value: Arc<str>) -> Self {
        Self {
            plan: Some((nodes, plan, value)),
            handle: tokio::runtime::Handle::try_current().ok(),
        }
    }

    fn disarm(&mut self) -> Option<(Arc<[Node]>, UndoPlan, Arc<str>)> {
        self.plan.take()
    }
}

impl Drop for Undo {
    fn drop(&mut self) {
        if let (Some((nodes, plan, value)), Some(handle)) = (self.plan.take(), &self.handle) {
            round::release_in_background(handle, nodes, plan.op(&value), "cancelled acquire");
        }
    }
}

impl Redlock {
    /// One round: send `claim`'s request to all nodes, decide at the earliest certain
    /// moment, undo on loss.
    pub(super) async fn attempt<C: Claim>(&self, claim: &C, try_: &Try<'_>) -> Attempt {
        let inner = &self.inner;
        let value = crate::value::new_shared_value(inner.config.owner_label.as_deref());
        let (op, reading) = claim.request(&value, try_);
        // The clock starts before the first request is sent (the Redlock paper, step 1).
        let clock = &inner.config.clock;
        let start = clock.stamp();
        let mut undo = Undo::new(Arc::clone(&inner.nodes), claim.undo(), Arc::clone(&value));
        // Won or lost, the stragglers' requests still go out when this is dropped: a
        // won lock then stands on every healthy node, not a bare quorum (their keys go
        // with the release), and a queued acquire must reach every node's wait queue.
        // Whatever a lost attempt's stragglers set is undone below, after them on each
        // node (see `Node::settled`).
        let mut replies = Collecting::new(fan_out(&inner.nodes, op), "acquire");
        // A semaphore's votes count per slot: a permit is won once one slot has a
        // quorum, lost once none can get one. (Counted per node, the mutant: any granted
        // slot is a yes.)
        let counts: Vec<AtomicUsize> = (0..reading.slots()).map(|_| AtomicUsize::new(0)).collect();
        let per_slot = !counts.is_empty() && !mutants::SEMAPHORE_COUNT;
        let quorum = quorum::quorum(inner.nodes.len());
        let votes = round::collect(
            &mut replies,
            &inner.nodes,
            Count::Votes,
            |reply| {
                let answer = reading.classify(reply)?;
                let vote = match answer {
                    Answer::Set(_) => Vote::Yes,
                    Answer::Slot(slot) => {
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                        Vote::Yes
                    }
                    Answer::Held(_) | Answer::Stale(_) => Vote::No,
                };
                Ok((vote, answer))
            },
            |tally| {
                if per_slot {
                    let (_, best) = best_slot(&counts);
                    best >= quorum || best + tally.pending() < quorum
                } else {
                    tally.outcome().is_some()
                }
            },
        )
        .await;
        let (slot, best) = best_slot(&counts);
        let won = if per_slot {
            best >= quorum
        } else {
            votes.tally.outcome() == Some(Outcome::Won)
        };
        // Nodes that answered "not set" hold nothing of this attempt to undo.
        let mut refused = NodeSet::new(votes.answers.len());
        for (node, answer) in votes.answers.iter().enumerate() {
            refused.set(node, answer.is_some_and(Answer::refuses));
        }
        let refuses = move |value: &Value| reading.classify(value).is_ok_and(Answer::refuses);
        if won {
            let elapsed = clock.since(start);
            let ttl = Duration::from_millis(try_.ttl_ms);
            let drift = quorum::drift(ttl, inner.config.drift_factor);
            let left = quorum::validity(ttl, elapsed, drift);
            if left.is_some_and(|left| left >= try_.min_validity) || mutants::SKIP_VALIDITY {
                undo.disarm();
                drop(replies);
                let token = mutants::token(try_.candidate, &votes.answers, |a| match a {
                    Answer::Set(counter) => *counter,
                    _ => None,
                })
                .filter(|_| claim.fences().is_some());
                let win = claim.won(self, &value, &votes.answers, slot, try_);
                let names = claim.names();
                // validity = ttl − elapsed − drift, counted from `start`, so the lock is
                // promised until start + ttl − drift and not a moment longer.
                let guard = LockGuard::new(
                    Arc::clone(names),
                    start.after(ttl.saturating_sub(drift)),
                    ttl,
                    token,
                    Held {
                        inner: Arc::clone(inner),
                        keys: win.keys,
                        value,
                        handle: tokio::runtime::Handle::try_current().ok(),
                        kind: win.kind,
                        hold: None,
                        _holding: crate::metrics::Holding::start(
                            inner.config.metrics_class.of(&names[0]),
                        ),
                    },
                );
                if let (Some(fences), Some(t)) = (claim.fences(), token) {
                    inner.fences.remember(fences, t);
                }
                return Attempt::Won(guard);
            }
            undo_failed(&mut undo, &votes, &refused, replies.into_rest(), refuses).await;
            return Attempt::Expired(elapsed);
        }
        undo_failed(&mut undo, &votes, &refused, replies.into_rest(), refuses).await;
        let mut tally = votes.tally;
        if per_slot {
            // Nodes that granted a slot other than the most granted one are, for this
            // attempt, nodes that said no: the error and the policy see a conflict.
            tally.no += tally.yes - best;
            tally.yes = best;
        }
        let keys = claim.keys().len();
        let mut held_at = vec![0usize; keys];
        let mut stale: Option<u64> = None;
        for answer in votes.answers.iter().flatten() {
            match *answer {
                Answer::Held(key) => held_at[key.min(keys - 1)] += 1,
                Answer::Stale(counter) => stale = stale.max(Some(counter)),
                Answer::Slot(s) if per_slot && s != slot => held_at[0] += 1,
                Answer::Set(_) | Answer::Slot(_) => {}
            }
        }
        Attempt::Lost {
            tally,
            causes: votes.causes,
            stale,
            locked: held_at.iter().sum(),
            conflict: (0..keys).max_by_key(|i| held_at[*i]).unwrap_or(0),
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
async fn undo_failed<T, F>(
    undo: &mut Undo,
    votes: &round::Votes<T>,
    refused: &NodeSet,
    pending: Option<Round<F>>,
    refuses: impl Fn(&Value) -> bool + Send + 'static,
) where
    F: Future<Output = ()> + Send + 'static,
{
    let Some((nodes, plan, value)) = undo.disarm() else {
        return;
    };
    if let (Some(mut rest), Ok(handle)) = (
        pending.filter(|r| !r.is_empty()),
        tokio::runtime::Handle::try_current(),
    ) {
        let (nodes, plan, value) = (Arc::clone(&nodes), plan.clone(), Arc::clone(&value));
        handle.spawn(async move {
            while let Some((node, reply)) = rest.next().await {
                if matches!(&reply, Ok(value) if refuses(value)) {
                    continue;
                }
                let mut undo = fan_out_where(&nodes, plan.op(&value), |i| i == node);
                if let Some((_, Err(e))) = undo.next().await {
                    tracing::debug!(node, error = %e, "undo failed on a node; its key expires with the ttl");
                }
            }
        });
    }
    let now = |i: usize| votes.ended.contains(i) && !refused.contains(i);
    if !(0..nodes.len()).any(now) {
        return;
    }
    // Dropped mid-way (the acquisition cancelled), the rest still goes out.
    let mut replies = Collecting::new(fan_out_where(&nodes, plan.op(&value), now), "undo")
        .until(round::clear_patience(&nodes));
    let mut waiting = (0..nodes.len())
        .filter(|i| votes.heard.contains(*i) && !refused.contains(*i))
        .count();
    while waiting > 0 {
        let Some((node, reply)) = replies.next().await else {
            break;
        };
        if votes.heard.contains(node) {
            waiting -= 1;
        }
        if let Err(e) = reply {
            tracing::debug!(node, error = %e, "undo failed on a node; its key expires with the ttl");
        }
    }
}
