//! The loop of attempts: runs an attempt, asks the pure policy (`policy.rs`) what next,
//! and does it: waits, joins queues, or builds the error the caller gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::{Ask, Attempt};
use super::policy::{loss_of, Loss, Policy, State, Step};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::instant_after;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::round;
use crate::wake::Waiter;

/// What one acquisition asks for: the manager's settings, or a request's own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    pub(crate) ttl: Duration,
    /// Attempts after the first one.
    pub(crate) retries: u32,
    /// Give up once this much time has passed (no attempt starts after it).
    pub(crate) wait: Option<Duration>,
    pub(crate) min_validity: Duration,
}

impl Redlock {
    /// Attempts until one wins, `want.retries` are spent, or `want.wait` is over. At most
    /// `retries + 1` attempts are made, queue joins included, and the error says how
    /// many were.
    pub(super) async fn run_attempts(
        &self,
        resources: &[&str],
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let inner = &self.inner;
        let config = &inner.config;
        let names: Arc<[String]> = resources.iter().map(|r| (*r).to_owned()).collect();
        let keys: Arc<[String]> = resources.iter().map(|r| self.key_of(r)).collect();
        let fence_keys: Option<Vec<String>> = config
            .fencing
            .then(|| resources.iter().map(|r| self.fence_key_of(r)).collect());
        let policy = Policy {
            retries: want.retries,
            deadline: want.wait.map(instant_after),
            delay: config.retry_delay,
            jitter: config.retry_jitter,
            wake: config.wake_on_release,
            single: keys.len() == 1 && fence_keys.is_none(),
        };
        let mut state = State::new(fence_keys.as_deref().map(|f| inner.fences.highest(f)));
        let mut waiter: Option<Waiter> = None;
        let (yield_until, contended) = inner.wakeups.hints.take(&keys[0]);
        // A release by this manager just woke a waiter: let it go first.
        if let Some(until) = yield_until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        // A key this manager found held moments ago is likely held now: make even the
        // first attempt one that queues if it fails (a plain SET NX when the key is
        // free), saving a failed round per contended acquisition.
        if policy.single && policy.wake && want.retries > 0 && contended {
            state.wait_on(0);
            waiter = Some(inner.wakeups.wait_for(&inner.nodes, &keys[0]));
        }
        loop {
            let attempts = state.begin();
            // The start of each attempt, for whoever checks the pauses between them.
            tracing::trace!(attempts, "attempt starts");
            if let Some(t) = state.candidate().filter(|t| *t > MAX_FENCING_TOKEN) {
                return Err(Error::Config(format!(
                    "fencing counter of `{}` reached {t}, past 2^53, the largest token Lua can \
                     count exactly; reset the counter keys",
                    names[0]
                )));
            }
            let queue = waiter
                .as_ref()
                .filter(|_| policy.single)
                .map(|w| (w.member(), state.woken()));
            let ask = Ask {
                names: &names,
                keys: &keys,
                fence_keys: fence_keys.as_deref(),
                ttl_ms,
                min_validity: want.min_validity,
                candidate: state.candidate(),
                queue,
            };
            let attempt = self.attempt(&ask).await;
            if let (Some(w), true) = (&waiter, queue.is_some()) {
                // A queued attempt that failed joined the queue wherever the key was held.
                w.mark_queued();
            }
            let outcome = attempt.outcome();
            if let Attempt::Lost { tally, stale, .. } = &attempt {
                if let (Some(seen), Some(fences)) = (stale, &fence_keys) {
                    inner.fences.remember(fences, *seen);
                }
                if loss_of(tally) == Loss::Conflict {
                    inner.wakeups.hints.contended(&keys[0]);
                }
            }
            let step = policy.next(&mut state, &outcome, Instant::now(), &mut rand::rng());
            tracing::trace!(attempts, ?step, "after attempt");
            let (pause, wait_on, join) = match step {
                Step::Won | Step::GiveUp(_) => {
                    // The policy says won exactly when the attempt won.
                    if let Attempt::Won(mut guard) = attempt {
                        tracing::debug!(attempts, "acquired");
                        guard.set_attempts(state.attempts());
                        return Ok(guard);
                    }
                    let loss = match step {
                        Step::GiveUp(loss) => loss,
                        _ => Loss::Expired,
                    };
                    let err = error_of(attempt, loss, &names[0], state.attempts(), ttl_ms);
                    let err = self.split_or_conflict(err, &names).await;
                    tracing::debug!(attempts, error = %err, "giving up");
                    return Err(err);
                }
                Step::Reround => continue,
                Step::Sleep {
                    pause,
                    wait_on,
                    join,
                } => (pause, wait_on, join),
            };
            if let Some(key) = wait_on {
                if waiter.as_ref().is_none_or(|w| w.key() != keys[key]) {
                    waiter = Some(inner.wakeups.wait_for(&inner.nodes, &keys[key]));
                }
            }
            let mut woken = false;
            match &waiter {
                Some(w) => {
                    // Listening (re)starts in the background where it broke or was never
                    // made; joining runs beside the pause: a node that hangs must not eat
                    // into the wait, nor delay the next attempt.
                    if crate::mutants::STALLED_SUBSCRIPTION {
                        inner.wakeups.listen_in_line(&inner.nodes).await;
                    } else {
                        inner.wakeups.listen(&inner.nodes);
                    }
                    let joining = async {
                        if let Some(front) = join {
                            w.join(front).await;
                        }
                    };
                    let sleep = tokio::time::sleep(pause);
                    tokio::pin!(joining, sleep);
                    let mut joined = false;
                    loop {
                        tokio::select! {
                            _ = &mut joining, if !joined => joined = true,
                            _ = w.woken() => {
                                woken = true;
                                break;
                            }
                            _ = &mut sleep => break,
                        }
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
            state.set_woken(woken);
            if !woken && policy.deadline.is_some_and(|d| Instant::now() >= d) {
                let loss = match attempt.outcome() {
                    super::policy::AttemptOutcome::Lost { tally, .. } => loss_of(&tally),
                    _ => Loss::Expired,
                };
                let err = error_of(attempt, loss, &names[0], state.attempts(), ttl_ms);
                let err = self.split_or_conflict(err, &names).await;
                tracing::debug!(attempts, error = %err, "wait budget spent");
                return Err(err);
            }
        }
    }
}

impl Redlock {
    /// A [`Conflict`](Error::Conflict) of one resource becomes a
    /// [`SplitVote`](Error::SplitVote) when no owner holds a quorum after all: the
    /// attempt's "no" votes came from simultaneous attempts (each holding a minority),
    /// not from a holder. Told by one read of every node ([`Redlock::inspect`]) after
    /// the last attempt, on this error path only: the acquisition's own requests carry
    /// no values. A holder counts while it could still reach a quorum with the nodes
    /// that did not answer the read; a read that fails keeps the conflict.
    async fn split_or_conflict(&self, err: Error, names: &[String]) -> Error {
        let Error::Conflict {
            attempts,
            held_elsewhere,
            nodes,
            ..
        } = err
        else {
            return err;
        };
        let [resource] = names else {
            return err;
        };
        let Ok(info) = self.inspect(resource).await else {
            return err;
        };
        // Held while the largest holder could have a quorum with the nodes that did not
        // answer the read (all of them unknown, e.g. an ACL without PTTL: held).
        let largest = info.holders().iter().map(|h| h.node_count()).max();
        if largest.unwrap_or(0) + info.unknown_nodes() >= self.quorum() {
            return err;
        }
        Error::SplitVote {
            resource: resource.clone(),
            attempts,
            held_elsewhere,
            nodes,
        }
    }
}

/// The error of an acquisition that gave up after `attempt`, its last.
pub(super) fn error_of(
    attempt: Attempt,
    loss: Loss,
    resource: &str,
    attempts: u32,
    ttl_ms: u64,
) -> Error {
    match attempt {
        Attempt::Lost {
            tally,
            causes,
            locked,
            ..
        } => match loss {
            Loss::Conflict => Error::Conflict {
                reason: crate::error::ConflictReason::Owner,
                resource: resource.to_owned(),
                attempts,
                held_elsewhere: locked,
                nodes: tally.nodes,
            },
            _ => round::no_quorum(resource, attempts, tally.yes, &tally, causes),
        },
        Attempt::Expired(elapsed) => Error::Expired {
            resource: resource.to_owned(),
            attempts,
            elapsed,
            ttl: Duration::from_millis(ttl_ms),
        },
        // A won attempt is never given up on; should it be, nothing is lost by saying so.
        Attempt::Won(_) => Error::Expired {
            resource: resource.to_owned(),
            attempts,
            elapsed: Duration::ZERO,
            ttl: Duration::from_millis(ttl_ms),
        },
    }
}
