//! The retry loop around attempts: how many, how long between them, when to wait for a
//! release instead of a timer, and which error the caller gets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::{Ask, Attempt};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::tokio_after;
use crate::error::{Error, NodeErrors};
use crate::guard::LockGuard;
use crate::quorum;
use crate::wake::Waiter;

/// Immediate re-rounds with a raised fencing candidate after a round in which no node
/// set anything and every "no" was a stale counter. Such a round only taught this
/// client the counter its cache was behind on (a fresh manager's first lock of a
/// resource always does): it could not have granted the lock, so it is not an attempt
/// and does not count against `retry_count`. A round in which some node did set the key
/// is an attempt like any other. The cap keeps two clients that keep outbidding each
/// other from spinning.
const STALE_REROUNDS: u32 = 3;

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
    /// `retries + 1` attempts are made, fencing re-rounds and queue joins included, and
    /// the error says how many were.
    pub(super) async fn lock_checked(
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
        let mut candidate = fence_keys
            .as_ref()
            .map(|f| self.cached_fence(f).saturating_add(1));
        let deadline = want.wait.map(tokio_after);
        let mut attempts: u32 = 0;
        let mut rerounds: u32 = 0;
        let mut waiter: Option<Waiter> = None;
        let mut woken = false;
        // A single unfenced key joins the wait queue atomically with its next attempt.
        let single = keys.len() == 1 && fence_keys.is_none();
        let (yield_until, contended) = inner.take_hint(&keys[0]);
        // A release by this manager just woke a waiter: let it go first.
        if let Some(until) = yield_until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        // A key this manager found held moments ago is likely held now: make even the
        // first attempt one that queues if it fails (a plain SET NX when the key is
        // free), saving a failed round per contended acquisition.
        if single && config.wake_on_release && want.retries > 0 && contended {
            waiter = Some(inner.wakeups.wait_for(&inner.nodes, &keys[0]));
        }
        loop {
            attempts = attempts.saturating_add(1);
            if let Some(t) = candidate.filter(|t| *t > MAX_FENCING_TOKEN) {
                return Err(Error::Config(format!(
                    "fencing counter of `{}` reached {t}, past 2^53, the largest token Lua can \
                     count exactly; reset the counter keys",
                    names[0]
                )));
            }
            let queue = waiter
                .as_ref()
                .filter(|_| single)
                .map(|w| (w.member(), woken));
            let ask = Ask {
                names: &names,
                keys: &keys,
                fence_keys: fence_keys.as_deref(),
                ttl_ms,
                min_validity: want.min_validity,
                candidate,
                queue,
            };
            let outcome = self.attempt(&ask).await;
            if let (Some(w), true) = (&waiter, queue.is_some()) {
                // A queued attempt that failed joined the queue wherever the key was held.
                w.mark_queued();
            }
            let (err, counter_only, conflict) = match outcome {
                Attempt::Won(mut guard) => {
                    tracing::debug!(attempts, "acquired");
                    guard.set_attempts(attempts);
                    return Ok(guard);
                }
                Attempt::Lost {
                    tally,
                    causes,
                    stale,
                    locked,
                    conflict,
                } => {
                    let mut counter_only = false;
                    if let (Some(seen), Some(fences)) = (stale, &fence_keys) {
                        self.remember_fence(fences, seen);
                        candidate = Some(seen.saturating_add(1));
                        let failures_alone_lose = tally.failed > tally.nodes - tally.quorum;
                        counter_only = tally.yes == 0 && locked == 0 && !failures_alone_lose;
                    }
                    let err = if tally.lost_to_owner() {
                        Error::Conflict {
                            resource: names[0].clone(),
                            attempts,
                            held_elsewhere: locked,
                            nodes: tally.nodes,
                        }
                    } else {
                        Error::NoQuorum {
                            resource: names[0].clone(),
                            attempts,
                            ok: tally.yes,
                            failed: tally.failed,
                            needed: tally.quorum,
                            nodes: tally.nodes,
                            causes: NodeErrors(causes),
                        }
                    };
                    let conflict = (locked > 0).then_some(conflict);
                    (err, counter_only, conflict)
                }
                Attempt::Expired(elapsed) => (
                    Error::Expired {
                        resource: names[0].clone(),
                        attempts,
                        elapsed,
                        ttl: Duration::from_millis(ttl_ms),
                    },
                    false,
                    None,
                ),
            };
            // Only the counter was learnt: try at once with what the nodes just told us,
            // in the same attempt.
            if counter_only && rerounds < STALE_REROUNDS {
                rerounds += 1;
                attempts -= 1;
                continue;
            }
            rerounds = 0;
            let out_of_time = deadline.is_some_and(|d| tokio::time::Instant::now() >= d);
            if attempts > want.retries || out_of_time {
                tracing::debug!(attempts, error = %err, "giving up");
                return Err(err);
            }
            if err.is_conflict() {
                inner.hint(&keys[0], |h| h.contended_at = Some(Instant::now()));
            }
            // Held by another owner: wait for its release in the nodes' queues, so that
            // the wait ends when the lock is free (and in order of arrival) rather than
            // when the timer says.
            let mut join = None;
            if let (Some(i), true, true) = (conflict, err.is_conflict(), config.wake_on_release) {
                let key = &keys[i];
                if waiter.as_ref().is_none_or(|w| w.key() != key) {
                    waiter = Some(inner.wakeups.wait_for(&inner.nodes, key));
                    woken = false;
                    if single {
                        // The next attempt joins the queue atomically with failing, and
                        // is made at once: a release between this failed attempt and a
                        // separate join would otherwise go unheard.
                        continue;
                    }
                    join = Some(false);
                } else if !single {
                    // A waiter that was woken but beaten goes back to the front.
                    join = Some(woken);
                }
            }
            woken = false;
            let mut pause =
                quorum::backoff(config.retry_delay, config.retry_jitter, &mut rand::rng());
            if let Some(d) = deadline {
                pause = pause.min(d.saturating_duration_since(tokio::time::Instant::now()));
            }
            tracing::trace!(?pause, "retrying");
            match &waiter {
                Some(w) => {
                    // Listening (re)starts in the background where it broke or was never
                    // made; joining runs beside the pause: a node that hangs must not eat
                    // into the wait, nor delay the next attempt.
                    inner.wakeups.listen(&inner.nodes);
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
            if !woken && deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                tracing::debug!(attempts, error = %err, "wait budget spent");
                return Err(err);
            }
        }
    }
}
