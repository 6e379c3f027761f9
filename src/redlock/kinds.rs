//! Read, write and permit acquisitions: one attempt of each kind (the Redlock steps
//! with the kind's own script and undo) and the loop of attempts around it, driven by
//! the same pure retry policy as exclusive locks, on the timer alone (these kinds have
//! no release wake-ups yet). Also the racy `available()` snapshot of a semaphore.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::Value;
use tracing::Instrument;

use super::attempt::{undo_failed, Attempt, Undo};
use super::policy::{loss_of, AttemptOutcome, Policy, State, Step};
use super::retry::{error_of, Want};
use super::{Redlock, MAX_FENCING_TOKEN};
use crate::clock::instant_after;
use crate::error::Error;
use crate::guard::{Held, LockGuard};
use crate::kind::{self, LockKind, Mode, READERS_SUFFIX, WRITER_SUFFIX};
use crate::metrics;
use crate::mutants;
use crate::quorum::{self, Outcome, Tally, Vote};
use crate::round::{self, fan_out, fan_out_where, Collecting, Count, Op};
use crate::scripts::{self, Call};

/// The most permits a semaphore may have: each attempt sends every slot key to every
/// node, and a node's script may look at each of them twice.
pub(crate) const MAX_PERMITS: usize = 1024;

/// A node's answer to a read, write or permit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Admitted (a writer's with the counter the fenced script wrote).
    Set(Option<u64>),
    /// This permit slot was taken.
    Slot(usize),
    /// Refused: held by a writer, readers, a writer's intent, or every slot taken.
    Held,
    /// The fencing counter is at `.0`, not below the candidate.
    Stale(u64),
}

/// What one attempt of a kind asks of the nodes.
struct Ask<'a> {
    names: &'a Arc<[String]>,
    key: &'a str,
    mode: Mode,
    /// Every slot key of a semaphore, by slot number.
    slots: &'a [String],
    fence_keys: Option<&'a [String]>,
    ttl_ms: u64,
    min_validity: Duration,
    candidate: Option<u64>,
    /// The writer's intent id, the same for all its attempts.
    intent: &'a str,
}

/// Turns a node's reply into an [`Answer`]; `order` maps a permit script's 1-based
/// position to a slot. `Err` for a reply no Redis running our scripts would give.
fn classify(value: &Value, mode: Mode, fenced: bool, order: &[usize]) -> Result<Answer, String> {
    match (mode, value) {
        (Mode::Permits(_), Value::Int(0)) => Ok(Answer::Held),
        (Mode::Permits(_), Value::Int(i)) => usize::try_from(*i - 1)
            .ok()
            .and_then(|i| order.get(i))
            .map(|slot| Answer::Slot(*slot))
            .ok_or_else(|| format!("permit acquire answered slot {i}")),
        (Mode::Write, Value::Array(items)) if fenced => match items.as_slice() {
            [Value::Int(code), Value::Int(counter)] => {
                let counter = u64::try_from(*counter).map_err(|_| "negative counter".to_owned())?;
                match *code {
                    scripts::FENCE_OK => Ok(Answer::Set(Some(counter))),
                    scripts::FENCE_LOCKED => Ok(Answer::Held),
                    scripts::FENCE_STALE => Ok(Answer::Stale(counter)),
                    other => Err(format!("fenced write answered code {other}")),
                }
            }
            _ => Err(format!("fenced write answered {value:?}")),
        },
        (Mode::Read | Mode::Write, Value::Int(1)) if !fenced => Ok(Answer::Set(None)),
        (Mode::Read | Mode::Write, Value::Int(0)) if !fenced => Ok(Answer::Held),
        (_, other) => Err(format!("{mode:?} acquire answered {other:?}")),
    }
}

/// The slot granted by the most nodes, and by how many.
fn best_slot(counts: &[AtomicUsize]) -> (usize, usize) {
    counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .enumerate()
        .max_by_key(|(_, c)| *c)
        .unwrap_or((0, 0))
}

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
        if self.inner.config.check_on_connect != crate::diagnose::CheckMode::Off {
            self.health_gate().await?;
        }
        let span = tracing::debug_span!("acquire", resource, ?mode, ttl_ms);
        let start = Instant::now();
        let result = self
            .run_kind(resource, mode, ttl_ms, &want)
            .instrument(span)
            .await;
        let attempts = match &result {
            Ok(guard) => guard.attempts(),
            Err(e) => e.attempts().unwrap_or(1),
        };
        metrics::acquired(result.as_ref().map(|_| ()), attempts, start.elapsed());
        result
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
        let intent = super::new_value();
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

    /// One attempt of a read, write or permit acquisition: the Redlock steps, with the
    /// kind's script, and the kind's undo of what a failed attempt may have set.
    async fn attempt_kind(&self, ask: &Ask<'_>) -> Attempt {
        let inner = &self.inner;
        let value: Arc<str> = super::new_value().into();
        let readers = format!("{}{READERS_SUFFIX}", ask.key);
        let writer = format!("{}{WRITER_SUFFIX}", ask.key);
        let mut order: Vec<usize> = Vec::new();
        let (op, undo_op) = match ask.mode {
            Mode::Read => {
                let mut call = Call::new(&scripts::READ_ACQUIRE, &[ask.key, &readers, &writer]);
                call.arg(&*value).arg(ask.ttl_ms);
                (
                    Op::setting(call, &value),
                    Op::read_release(&readers, &value),
                )
            }
            Mode::Permits(n) => {
                // A random rotation per attempt: contenders that start together mostly
                // try different slots first, so each node grants them alike.
                let first = rand::rng().random_range(0..n);
                order = (0..n).map(|i| (first + i) % n).collect();
                let keys: Vec<&str> = order.iter().map(|s| ask.slots[*s].as_str()).collect();
                let mut call = Call::new(&scripts::PERMIT_ACQUIRE, &keys);
                call.arg(&*value).arg(ask.ttl_ms);
                (
                    Op::setting(call, &value),
                    Op::release(ask.slots, &value, false),
                )
            }
            Mode::Write | Mode::Exclusive => {
                let mut keys = vec![ask.key, &readers, &writer];
                keys.extend(
                    ask.fence_keys
                        .iter()
                        .flat_map(|f| f.iter().map(String::as_str)),
                );
                let mut call = Call::new(&scripts::WRITE_ACQUIRE, &keys);
                call.arg(&*value).arg(ask.ttl_ms).arg(ask.intent);
                if let Some(t) = ask.candidate.filter(|_| ask.fence_keys.is_some()) {
                    call.arg(t);
                }
                let key = [ask.key.to_owned()];
                (Op::setting(call, &value), Op::release(&key, &value, false))
            }
        };
        let mode = ask.mode;
        let fenced = ask.fence_keys.is_some();
        let clock = &inner.config.clock;
        // The clock starts before the first request is sent (the Redlock paper, step 1).
        let start = clock.stamp();
        let mut undo = Undo::new(Arc::clone(&inner.nodes), undo_op);
        let mut replies = Collecting::new(fan_out(&inner.nodes, Arc::new(op)), "acquire");
        let slot_n = order.len();
        let counts: Vec<AtomicUsize> = (0..slot_n).map(|_| AtomicUsize::new(0)).collect();
        let quorum = quorum::quorum(inner.nodes.len());
        // Per-node counting (the mutant): any granted slot is a yes for the semaphore.
        let per_slot = slot_n > 0 && !mutants::SEMAPHORE_COUNT;
        let votes = round::collect(
            &mut replies,
            &inner.nodes,
            Count::Votes,
            |reply| {
                let answer = classify(reply, mode, fenced, &order)?;
                let vote = match answer {
                    Answer::Set(_) => Vote::Yes,
                    Answer::Slot(slot) => {
                        counts[slot].fetch_add(1, Ordering::Relaxed);
                        Vote::Yes
                    }
                    Answer::Held | Answer::Stale(_) => Vote::No,
                };
                Ok((vote, answer))
            },
            |tally| {
                if per_slot {
                    // Won once one slot has a quorum; lost once none can get one.
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
        let refused: Vec<bool> = votes
            .answers
            .iter()
            .map(|a| matches!(a, Some(Answer::Held | Answer::Stale(_))))
            .collect();
        let late_order = order.clone();
        let refuses = move |value: &Value| {
            matches!(
                classify(value, mode, fenced, &late_order),
                Ok(Answer::Held | Answer::Stale(_))
            )
        };
        if won {
            let elapsed = clock.since(start);
            let ttl = Duration::from_millis(ask.ttl_ms);
            let drift = quorum::drift(ttl, inner.config.drift_factor);
            let left = quorum::validity(ttl, elapsed, drift);
            if left.is_some_and(|left| left >= ask.min_validity) || mutants::SKIP_VALIDITY {
                undo.disarm();
                drop(replies);
                let (keys, kind): (Arc<[String]>, LockKind) = match mode {
                    Mode::Read => (Arc::from([readers]), LockKind::Read),
                    Mode::Permits(_) if !per_slot => (Arc::from(ask.slots), LockKind::Permit(slot)),
                    Mode::Permits(_) => {
                        self.trim_other_slots(ask.slots, slot, &value, &votes.answers);
                        (Arc::from([ask.slots[slot].clone()]), LockKind::Permit(slot))
                    }
                    Mode::Write | Mode::Exclusive => {
                        // The nodes that granted it deleted its intent; a node that
                        // refused (a reader still there) would keep readers out with it
                        // until its ttl.
                        self.withdraw_intent(ask.key, ask.intent, Some(&value));
                        (Arc::from([ask.key.to_owned()]), LockKind::Write)
                    }
                };
                let token = ask.candidate.filter(|_| fenced);
                let guard = LockGuard::new(
                    Arc::clone(ask.names),
                    start.after(ttl.saturating_sub(drift)),
                    ttl,
                    token,
                    Held {
                        inner: Arc::clone(inner),
                        keys,
                        value,
                        handle: tokio::runtime::Handle::try_current().ok(),
                        kind,
                    },
                );
                if let (Some(fences), Some(t)) = (ask.fence_keys, token) {
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
        let mut stale: Option<u64> = None;
        let mut locked = 0;
        for answer in votes.answers.iter().flatten() {
            match *answer {
                Answer::Held => locked += 1,
                Answer::Stale(counter) => stale = stale.max(Some(counter)),
                Answer::Slot(s) if per_slot && s != slot => locked += 1,
                _ => {}
            }
        }
        Attempt::Lost {
            tally,
            causes: votes.causes,
            stale,
            locked,
            conflict: 0,
        }
    }

    /// A won permit keeps slot `slot`: every other slot this attempt's value took, on
    /// nodes that granted another slot or have not answered (yet), is released, after
    /// the attempt's own request on each node.
    fn trim_other_slots(
        &self,
        slots: &[String],
        slot: usize,
        value: &Arc<str>,
        answers: &[Option<Answer>],
    ) {
        let others: Vec<String> = (0..slots.len())
            .filter(|s| *s != slot)
            .map(|s| slots[s].clone())
            .collect();
        if others.is_empty() {
            return;
        }
        let trim = |i: usize| {
            !matches!(answers[i], Some(Answer::Slot(s)) if s == slot)
                && !matches!(answers[i], Some(Answer::Held))
        };
        if !(0..answers.len()).any(trim) {
            return;
        }
        let op = Op::release(&others, value, false);
        round::finish_in_background(
            fan_out_where(&self.inner.nodes, Arc::new(op), trim),
            "release other permit slots",
        );
    }

    /// How many of the `permits` slots of `resource` a quorum of nodes reports free.
    pub(crate) async fn available_permits(
        &self,
        resource: &str,
        permits: usize,
    ) -> Result<usize, Error> {
        check_permits(Mode::Permits(permits))?;
        let key = self.key_of(resource);
        let slots: Vec<String> = (0..permits).map(|i| kind::permit_key(&key, i)).collect();
        let call = Call::new(&scripts::PERMIT_TAKEN, &slots);
        let mut replies = Collecting::new(
            fan_out(&self.inner.nodes, Arc::new(Op::free(call))),
            "available",
        );
        let votes = round::collect(
            &mut replies,
            &self.inner.nodes,
            Count::Answers,
            |reply| {
                let Value::Array(items) = reply else {
                    return Err(format!("slot check answered {reply:?}"));
                };
                let taken: Option<Vec<bool>> = items
                    .iter()
                    .map(|v| match v {
                        Value::Int(i) => Some(*i != 0),
                        _ => None,
                    })
                    .collect();
                match taken {
                    Some(t) if t.len() == permits => Ok((Vote::Yes, t)),
                    _ => Err(format!("slot check answered {reply:?}")),
                }
            },
            |_| false,
        )
        .await;
        let tally: Tally = votes.tally;
        if tally.yes < tally.quorum {
            return Err(round::no_quorum(
                resource,
                1,
                tally.yes,
                &tally,
                votes.causes,
            ));
        }
        // A slot is available when enough nodes have it free for a quorum to grant it.
        let free_on = |s: usize| {
            votes
                .answers
                .iter()
                .flatten()
                .filter(|taken| !taken[s])
                .count()
        };
        Ok((0..permits).filter(|s| free_on(*s) >= tally.quorum).count())
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
mod tests {
    use super::*;

    #[test]
    fn replies_become_answers() {
        let order = [2, 0, 1];
        let permits = Mode::Permits(3);
        assert_eq!(
            classify(&Value::Int(1), permits, false, &order),
            Ok(Answer::Slot(2))
        );
        assert_eq!(
            classify(&Value::Int(3), permits, false, &order),
            Ok(Answer::Slot(1))
        );
        assert_eq!(
            classify(&Value::Int(0), permits, false, &order),
            Ok(Answer::Held)
        );
        assert!(classify(&Value::Int(4), permits, false, &order).is_err());
        assert!(classify(&Value::Int(-1), permits, false, &order).is_err());
        assert_eq!(
            classify(&Value::Int(1), Mode::Read, false, &[]),
            Ok(Answer::Set(None))
        );
        assert_eq!(
            classify(&Value::Int(0), Mode::Write, false, &[]),
            Ok(Answer::Held)
        );
        assert!(classify(&Value::Nil, Mode::Read, false, &[]).is_err());
        let fenced = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert_eq!(
            classify(&fenced(&[2, 9]), Mode::Write, true, &[]),
            Ok(Answer::Set(Some(9)))
        );
        assert_eq!(
            classify(&fenced(&[1, 4]), Mode::Write, true, &[]),
            Ok(Answer::Held)
        );
        assert_eq!(
            classify(&fenced(&[0, 9]), Mode::Write, true, &[]),
            Ok(Answer::Stale(9))
        );
        assert!(classify(&fenced(&[7, 9]), Mode::Write, true, &[]).is_err());
        assert!(classify(&Value::Int(1), Mode::Write, true, &[]).is_err());
    }

    #[test]
    fn the_best_slot_is_the_most_granted() {
        let counts: Vec<AtomicUsize> = [1, 3, 2].into_iter().map(AtomicUsize::new).collect();
        assert_eq!(best_slot(&counts), (1, 3));
        assert_eq!(best_slot(&[]), (0, 0));
    }

    #[test]
    fn permit_counts_are_checked() {
        assert!(check_permits(Mode::Permits(0)).is_err());
        assert!(check_permits(Mode::Permits(MAX_PERMITS + 1)).is_err());
        assert!(check_permits(Mode::Permits(1)).is_ok());
        assert!(check_permits(Mode::Read).is_ok());
    }
}
