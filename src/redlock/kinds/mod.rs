//! Read, write and permit acquisitions: the loop of attempts, driven by the same pure
//! retry policy as exclusive locks, on the timer alone (these kinds have no release
//! wake-ups yet). One attempt is in `attempt.rs`, the racy `available()` snapshot of a
//! semaphore in `available.rs`.

use std::sync::Arc;
use std::time::Instant;

use super::attempt::Attempt;
use super::policy::{loss_of, AttemptOutcome, Policy, State, Step};
use super::retry::{error_of, Want};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::instant_after;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::kind::{self, Mode, WRITER_SUFFIX};
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
        super::metered(span, self.run_kind(resource, mode, ttl_ms, &want)).await
    }

    /// Attempts until one wins or the retries or the wait budget are spent, pausing
    /// `retry_delay` plus jitter between them (no wake-ups for these kinds yet).
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
        let intent = super::new_value(None);
        let result = loop {
            let attempts = state.begin();
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
                    break Err(error_of(attempt, loss, resource, state.attempts(), ttl_ms));
                }
                // With wake-ups off the policy never queues; should it, attempt at once.
                Step::Reround | Step::Queue(_) => continue,
                Step::Sleep { pause, .. } => pause,
            };
            tokio::time::sleep(pause).await;
            if policy.deadline.is_some_and(|d| Instant::now() >= d) {
                let loss = match outcome {
                    AttemptOutcome::Lost { tally, .. } => loss_of(&tally),
                    _ => super::policy::Loss::Expired,
                };
                break Err(error_of(attempt, loss, resource, state.attempts(), ttl_ms));
            }
        };
        if mode == Mode::Write {
            // A writer that gives up stops keeping readers out now, not at its ttl.
            self.withdraw_intent(&key, &intent, None);
        }
        result
    }

    /// Deletes the writer intent `intent` of `key` on every node, in the background;
    /// `after` an attempt's value, on each node after that attempt's request.
    fn withdraw_intent(&self, key: &str, intent: &str, after: Option<&Arc<str>>) {
        let mut call = Call::new(&scripts::INTENT_CLEAR, &[format!("{key}{WRITER_SUFFIX}")]);
        call.arg(intent);
        let op = match after {
            Some(value) => Op::clearing(call, value),
            None => Op::free(call),
        };
        let replies = fan_out(&self.inner.nodes, Arc::new(op));
        round::finish_in_background(replies, "withdraw writer intent");
    }
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
