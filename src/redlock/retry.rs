//! The loop of attempts, one for every kind of lock ([`Claim`]): runs an attempt, asks
//! the pure policy (`policy.rs`) what next, and does it: waits (on the wait queue, for a
//! wake-up, or on the timer), joins queues, or builds the error the caller gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::Attempt;
use super::claim::{Claim, Try, Wait};
use super::policy::{loss_of, AttemptOutcome, Loss, Place, Policy, State, Step};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::instant_after;
use crate::error::{ConflictReason, Error};
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
    /// many were. What the acquisition left waiting on the nodes is taken back when it
    /// gives up.
    pub(super) async fn run_attempts<C: Claim>(
        &self,
        claim: &C,
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let result = self.attempt_until_done(claim, ttl_ms, want).await;
        if result.is_err() {
            claim.gave_up(self);
        }
        result
    }

    async fn attempt_until_done<C: Claim>(
        &self,
        claim: &C,
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let inner = &self.inner;
        let config = &inner.config;
        let wait = claim.wait(config);
        let (key, fences) = (claim.key(), claim.fences());
        let policy = Policy {
            retries: want.retries,
            deadline: want.wait.map(instant_after),
            delay: config.retry_delay,
            jitter: config.retry_jitter,
            wake: wait == Wait::Queue,
            single: wait == Wait::Queue && claim.keys().len() == 1 && fences.is_none(),
        };
        let mut state = State::new(fences.map(|f| inner.fences.highest(f)));
        let mut waiter: Option<Waiter> = None;
        let (yield_until, contended) = inner.wakeups.hints.take(key);
        // A release by this manager just woke a waiter: let it go first.
        if let Some(until) = yield_until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        // A key this manager found held moments ago is likely held now. Queueing: make
        // even the first attempt one that queues if it fails (a plain SET NX when the key
        // is free), saving a failed round per contended acquisition. Listening: listen
        // before the first attempt, so that a release just after its refusal is not
        // missed.
        if contended && want.retries > 0 {
            let early = match wait {
                Wait::Queue => policy.single,
                Wait::Listen => true,
                Wait::Timer => false,
            };
            if early {
                if wait == Wait::Queue {
                    state.wait_on(0);
                }
                waiter = Some(inner.wakeups.wait_for(&inner.nodes, key));
            }
        }
        loop {
            let attempts = state.begin();
            // The start of each attempt, for whoever checks the pauses between them.
            tracing::trace!(attempts, "attempt starts");
            if let Some(t) = state.candidate().filter(|t| *t > MAX_FENCING_TOKEN) {
                return Err(Error::Config(format!(
                    "fencing counter of `{}` reached {t}, past 2^53, the largest token Lua can \
                     count exactly; reset the counter keys",
                    claim.names()[0]
                )));
            }
            let queue = waiter
                .as_ref()
                .filter(|_| policy.single)
                .map(|w| (w.member(), Place::after(state.woken())));
            let try_ = Try {
                ttl_ms,
                min_validity: want.min_validity,
                candidate: state.candidate(),
                queue,
                waited: attempts > 1,
            };
            let attempt = self.attempt(claim, &try_).await;
            if let (Some(w), true) = (&waiter, queue.is_some()) {
                // A queued attempt that failed joined the queue wherever the key was held.
                w.mark_queued();
            }
            let outcome = attempt.outcome();
            if let Attempt::Lost { tally, stale, .. } = &attempt {
                if let (Some(seen), Some(fences)) = (stale, fences) {
                    inner.fences.remember(fences, *seen);
                }
                if wait != Wait::Timer && loss_of(tally) == Loss::Conflict {
                    inner.wakeups.hints.contended(key);
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
                    let err = self
                        .give_up(claim, attempt, loss, state.attempts(), ttl_ms)
                        .await;
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
            if let Some(i) = wait_on {
                let keys = claim.keys();
                if waiter.as_ref().is_none_or(|w| w.key() != keys[i]) {
                    waiter = Some(inner.wakeups.wait_for(&inner.nodes, &keys[i]));
                }
            }
            // Registered before the pause, kept for the rest of the acquisition: a
            // wake-up that comes while an attempt is out leaves a permit, not a loss.
            if wait == Wait::Listen && waiter.is_none() {
                waiter = Some(inner.wakeups.wait_for(&inner.nodes, key));
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
                        if let Some(place) = join {
                            w.join(place == Place::Front).await;
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
                let loss = match outcome {
                    AttemptOutcome::Lost { tally, .. } => loss_of(&tally),
                    _ => Loss::Expired,
                };
                let err = self
                    .give_up(claim, attempt, loss, state.attempts(), ttl_ms)
                    .await;
                tracing::debug!(attempts, error = %err, "wait budget spent");
                return Err(err);
            }
        }
    }

    /// The error of an acquisition that gave up after `attempt`, its last: a conflict
    /// says what held the lock, and an exclusive one that no owner held on a quorum is
    /// a split vote.
    async fn give_up<C: Claim>(
        &self,
        claim: &C,
        attempt: Attempt,
        loss: Loss,
        attempts: u32,
        ttl_ms: u64,
    ) -> Error {
        let names = claim.names();
        let mut err = error_of(attempt, loss, &names[0], attempts, ttl_ms);
        match claim.conflict() {
            ConflictReason::Owner => self.split_or_conflict(err, names).await,
            held_by => {
                if let Error::Conflict { reason, .. } = &mut err {
                    *reason = held_by;
                }
                err
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
    async fn split_or_conflict(&self, err: Error, names: &Arc<[String]>) -> Error {
        let Error::Conflict {
            attempts,
            held_elsewhere,
            nodes,
            ..
        } = err
        else {
            return err;
        };
        let [resource] = &names[..] else {
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
fn error_of(attempt: Attempt, loss: Loss, resource: &str, attempts: u32, ttl_ms: u64) -> Error {
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
