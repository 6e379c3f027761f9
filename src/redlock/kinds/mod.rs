//! Read, write and permit acquisitions: the loop of attempts, driven by the same pure
//! retry policy as exclusive locks. Readers and writers wait on the timer or a wake-up,
//! whichever comes first (a writer's release wakes the readers whose turn it gave, the
//! last reader out wakes the waiting writer); permits wait on the timer alone. One
//! attempt is in `attempt.rs`, the racy `available()` snapshot of a semaphore in
//! `available.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::attempt::Attempt;
use super::policy::{loss_of, AttemptOutcome, Policy, State, Step};
use super::retry::{error_of, Want};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::instant_after;
use crate::error::{ConflictReason, Error};
use crate::guard::LockGuard;
use crate::kind::{self, Mode, READ_TURN_SUFFIX, READ_WAIT_SUFFIX, WRITER_SUFFIX};
use crate::round::{self, fan_out, Op};
use crate::scripts::{self, Call};

/// The most permits a semaphore may have: each attempt sends every slot key to every
/// node, and a node's script may look at each of them twice.
pub(crate) const MAX_PERMITS: usize = 1024;

mod attempt;
mod available;

use attempt::Ask;

impl Redlock {
    /// Every read, write and permit acquisition goes through here: checks, the health
    /// gate, the loop of attempts, metrics.
    pub(crate) async fn acquire_kind(
        &self,
        resource: &str,
        mode: Mode,
        want: Want,
    ) -> Result<LockGuard, Error> {
        let ttl_ms = self.check_request(&[resource], &want)?;
        check_permits(mode)?;
        self.health_gate().await?;
        let span = tracing::debug_span!("acquire", resource, ?mode, ttl_ms);
        let class = self.inner.config.metrics_class.of(resource);
        super::metered(span, class, self.run_kind(resource, mode, ttl_ms, &want)).await
    }

    /// Attempts until one wins or the retries or the wait budget are spent, pausing
    /// `retry_delay` plus jitter between them; a reader's or writer's pause ends early
    /// when a release tells this manager (with `wake_on_release`).
    async fn run_kind(
        &self,
        resource: &str,
        mode: Mode,
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let inner = &self.inner;
        let config = &inner.config;
        let names: Arc<[String]> = Arc::from([resource.to_owned()]);
        let key = self.key_of(resource);
        let slots: Vec<String> = match mode {
            Mode::Permits(n) => (0..n).map(|i| kind::permit_key(&key, i)).collect(),
            _ => Vec::new(),
        };
        // Writers take tokens from the exclusive lock's counter; readers and permits none.
        let fence_keys: Option<Vec<String>> =
            (config.fencing && mode == Mode::Write).then(|| vec![self.fence_key_of(resource)]);
        let policy = Policy {
            retries: want.retries,
            deadline: want.wait.map(instant_after),
            delay: config.retry_delay,
            jitter: config.retry_jitter,
            wake: false,
            single: false,
        };
        let mut state = State::new(fence_keys.as_deref().map(|f| inner.fences.highest(f)));
        // The manager's id first: the release scripts wake the manager a waiting
        // reader's or writer's id names.
        let intent = format!("{}|{}", inner.wakeups.id(), super::new_value(None));
        let patience_ms = patience(config.retry_delay, config.retry_jitter, config.node_timeout);
        let wakes = config.wake_on_release && matches!(mode, Mode::Read | Mode::Write);
        let mut waiter: Option<crate::wake::Waiter> = None;
        // A key this manager found held moments ago is likely held now: listen before
        // the first attempt, so that a release just after its refusal is not missed.
        if wakes && inner.wakeups.hints.take(&key).1 {
            waiter = Some(inner.wakeups.wait_for(&inner.nodes, &key));
        }
        let result = loop {
            let attempts = state.begin();
            // The start of each attempt, for whoever checks the pauses between them.
            tracing::trace!(attempts, "attempt starts");
            if let Some(t) = state.candidate().filter(|t| *t > MAX_FENCING_TOKEN) {
                break Err(Error::Config(format!(
                    "fencing counter of `{resource}` reached {t}, past 2^53, the largest token \
                     Lua can count exactly; reset the counter keys"
                )));
            }
            let ask = Ask {
                names: &names,
                key: &key,
                mode,
                slots: &slots,
                fence_keys: fence_keys.as_deref(),
                ttl_ms,
                min_validity: want.min_validity,
                candidate: state.candidate(),
                intent: &intent,
                patience_ms,
                waited: attempts > 1,
            };
            let attempt = self.attempt_kind(&ask).await;
            if let (
                Attempt::Lost {
                    stale: Some(seen), ..
                },
                Some(fences),
            ) = (&attempt, &fence_keys)
            {
                inner.fences.remember(fences, *seen);
            }
            let outcome = attempt.outcome();
            if let AttemptOutcome::Lost { tally, .. } = &outcome {
                if wakes && loss_of(tally) == super::policy::Loss::Conflict {
                    inner.wakeups.hints.contended(&key);
                }
            }
            let step = policy.next(&mut state, &outcome, Instant::now(), &mut rand::rng());
            tracing::trace!(attempts, ?step, "after attempt");
            let pause = match step {
                Step::Won | Step::GiveUp(_) => {
                    if let Attempt::Won(mut guard) = attempt {
                        guard.set_attempts(state.attempts());
                        return Ok(guard);
                    }
                    let loss = match step {
                        Step::GiveUp(loss) => loss,
                        _ => super::policy::Loss::Expired,
                    };
                    let err = error_of(attempt, loss, resource, state.attempts(), ttl_ms);
                    break Err(conflict_of(err, mode));
                }
                Step::Reround => continue,
                Step::Sleep { pause, .. } => pause,
            };
            // Registered before the pause, kept for the rest of the acquisition: a
            // wake-up that comes while an attempt is out leaves a permit, not a loss.
            if wakes && waiter.is_none() {
                waiter = Some(inner.wakeups.wait_for(&inner.nodes, &key));
            }
            match &waiter {
                Some(w) => {
                    inner.wakeups.listen(&inner.nodes);
                    tokio::select! {
                        () = w.woken() => tracing::trace!("woken"),
                        () = tokio::time::sleep(pause) => {}
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
            if policy.deadline.is_some_and(|d| Instant::now() >= d) {
                let loss = match outcome {
                    AttemptOutcome::Lost { tally, .. } => loss_of(&tally),
                    _ => super::policy::Loss::Expired,
                };
                let err = error_of(attempt, loss, resource, state.attempts(), ttl_ms);
                break Err(conflict_of(err, mode));
            }
        };
        if matches!(mode, Mode::Read | Mode::Write) {
            // A writer that gives up stops keeping readers out now, not at the end of
            // its patience; a reader gives up its place (its turn would hold writers
            // back).
            self.withdraw_wait(&key, mode, &intent, None);
        }
        result
    }

    /// Deletes the writer intent, or the reader's place among the waiting readers and
    /// in the reader turn, `id` of `key` on every node, in the background; `after` an
    /// attempt's value, on each node after that attempt's request.
    fn withdraw_wait(&self, key: &str, mode: Mode, id: &str, after: Option<&Arc<str>>) {
        let mut call = match mode {
            Mode::Read => Call::new(
                &scripts::READ_WAIT_CLEAR,
                &[
                    format!("{key}{READ_WAIT_SUFFIX}"),
                    format!("{key}{READ_TURN_SUFFIX}"),
                ],
            ),
            _ => Call::new(&scripts::INTENT_CLEAR, &[format!("{key}{WRITER_SUFFIX}")]),
        };
        call.arg(id);
        let op = match after {
            Some(value) => Op::clearing(call, value),
            None => Op::free(call),
        };
        let replies = fan_out(&self.inner.nodes, Arc::new(op));
        round::finish_in_background(replies, "withdraw a waiting reader or writer");
    }
}

/// A conflict of a read, write or permit acquisition says what held it.
fn conflict_of(mut err: Error, mode: Mode) -> Error {
    if let Error::Conflict { reason, .. } = &mut err {
        *reason = match mode {
            Mode::Read => ConflictReason::WriterFirst,
            Mode::Write => ConflictReason::ReadersOrWriter,
            Mode::Permits(permits) => ConflictReason::PermitsTaken { permits },
            Mode::Exclusive => ConflictReason::Owner,
        };
    }
    err
}

/// How long a refused reader keeps its place (among the waiting readers, or in the
/// reader turn), and a refused writer its intent, on a node after its last attempt (a
/// late copy of a request renews either for no longer): its longest pause between attempts
/// (delay plus jitter), a node timeout for each of the two requests around it, and
/// 50 ms for a loaded client. Long enough that a reader whose wake-up was lost still
/// comes back in time; short enough that a reader that died holds a writer back no
/// longer than one missed attempt would.
fn patience(delay: Duration, jitter: Duration, node_timeout: Duration) -> u64 {
    let slack = Duration::from_millis(50);
    let patience = delay
        .saturating_add(jitter)
        .saturating_add(node_timeout.saturating_mul(2))
        .saturating_add(slack);
    // A day bounds what the node is asked to add to its clock, whatever the settings.
    let day = 86_400_000;
    u64::try_from(patience.as_millis())
        .unwrap_or(day)
        .clamp(1, day)
}

/// `Error::Config` for a semaphore of no permits or of more than [`MAX_PERMITS`].
fn check_permits(mode: Mode) -> Result<(), Error> {
    match mode {
        Mode::Permits(0) => Err(Error::Config(
            "a semaphore of 0 permits can never be acquired: ask for permits(n) with n >= 1".into(),
        )),
        Mode::Permits(n) if n > MAX_PERMITS => Err(Error::Config(format!(
            "{n} permits is over the limit of {MAX_PERMITS}: every attempt sends each slot key \
             to every node; use fewer permits"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
