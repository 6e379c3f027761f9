//! One attempt of a read, write or permit acquisition: the Redlock steps with the
//! kind's script, the per-slot vote count of a semaphore, and the kind's undo.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use redis::Value;

use super::super::attempt::{undo_failed, Attempt, Undo};
use super::super::Redlock;
use crate::guard::{Held, LockGuard};
use crate::kind::{
    LockKind, Mode, READERS_SUFFIX, READ_TURN_SUFFIX, READ_WAIT_SUFFIX, WRITER_SUFFIX,
};
use crate::mutants;
use crate::quorum::{self, Outcome, Vote};
use crate::round::{self, fan_out, fan_out_where, Collecting, Count, Op};
use crate::scripts::{self, Call};

/// A node's answer to a read, write or permit request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
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
pub(super) struct Ask<'a> {
    pub(super) names: &'a Arc<[String]>,
    pub(super) key: &'a str,
    pub(super) mode: Mode,
    /// Every slot key of a semaphore, by slot number.
    pub(super) slots: &'a [String],
    pub(super) fence_keys: Option<&'a [String]>,
    pub(super) ttl_ms: u64,
    pub(super) min_validity: Duration,
    pub(super) candidate: Option<u64>,
    /// The writer's intent id or the reader's wait id, the same for all its attempts:
    /// this manager's id, `|`, a random value (the scripts wake the manager it names).
    pub(super) intent: &'a str,
    /// How long a refused reader's place, or a refused writer's intent, lasts on a node
    /// after this attempt.
    pub(super) patience_ms: u64,
    /// An earlier attempt of this acquisition was refused: it may have left places.
    pub(super) waited: bool,
}

/// Turns a node's reply into an [`Answer`]; `order` maps a permit script's 1-based
/// position to a slot. `Err` for a reply no Redis running our scripts would give.
pub(super) fn classify(
    value: &Value,
    mode: Mode,
    fenced: bool,
    order: &[usize],
) -> Result<Answer, String> {
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
pub(super) fn best_slot(counts: &[AtomicUsize]) -> (usize, usize) {
    counts
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .enumerate()
        .max_by_key(|(_, c)| *c)
        .unwrap_or((0, 0))
}

impl Redlock {
    /// One attempt of a read, write or permit acquisition: the Redlock steps, with the
    /// kind's script, and the kind's undo of what a failed attempt may have set.
    pub(super) async fn attempt_kind(&self, ask: &Ask<'_>) -> Attempt {
        let inner = &self.inner;
        let value = super::super::new_shared_value(self.inner.config.owner_label.as_deref());
        let readers = format!("{}{READERS_SUFFIX}", ask.key);
        let writer = format!("{}{WRITER_SUFFIX}", ask.key);
        let waiting = format!("{}{READ_WAIT_SUFFIX}", ask.key);
        let turn = format!("{}{READ_TURN_SUFFIX}", ask.key);
        let notify = inner.config.wake_on_release;
        let mut order: Vec<usize> = Vec::new();
        let (op, undo_op) = match ask.mode {
            Mode::Read => {
                let keys = [ask.key, &readers, &writer, &waiting, &turn];
                let mut call = Call::new(&scripts::READ_ACQUIRE, &keys);
                call.arg(&*value)
                    .arg(ask.ttl_ms)
                    .arg(ask.intent)
                    .arg(ask.patience_ms);
                (
                    Op::setting(call, &value),
                    Op::read_release(&readers, &value, notify),
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
                let mut keys = vec![ask.key, &readers, &writer, &waiting, &turn];
                keys.extend(
                    ask.fence_keys
                        .iter()
                        .flat_map(|f| f.iter().map(String::as_str)),
                );
                let mut call = Call::new(&scripts::WRITE_ACQUIRE, &keys);
                call.arg(&*value)
                    .arg(ask.ttl_ms)
                    .arg(ask.intent)
                    .arg(crate::wake::prefix(notify))
                    .arg(ask.patience_ms);
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
        let mut undo = Undo::new(Arc::clone(&inner.nodes), move || undo_op);
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
                    Mode::Read => {
                        // A node that refused it, now or before, keeps its place (an
                        // admission keeps one an earlier refusal made, so that a failed
                        // attempt does not cost the reader its turn), which would hold
                        // writers back there until it lapses. (A node
                        // that has not answered yet rarely refuses a reader a quorum
                        // admitted; its place would lapse within the patience.)
                        let refused = votes.answers.contains(&Some(Answer::Held));
                        if ask.waited || refused {
                            self.withdraw_wait(ask.key, mode, ask.intent, Some(&value));
                        }
                        (Arc::from([readers]), LockKind::Read)
                    }
                    Mode::Permits(_) if !per_slot => (Arc::from(ask.slots), LockKind::Permit(slot)),
                    Mode::Permits(_) => {
                        self.trim_other_slots(ask.slots, slot, &value, &votes.answers);
                        (Arc::from([ask.slots[slot].clone()]), LockKind::Permit(slot))
                    }
                    Mode::Write | Mode::Exclusive => {
                        // The nodes that granted it deleted its intent; a node that
                        // refused (a reader still there) would keep readers out with it
                        // until its patience ran out.
                        self.withdraw_wait(ask.key, mode, ask.intent, Some(&value));
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
                        hold: None,
                        _holding: crate::metrics::Holding::start(
                            inner.config.metrics_class.of(&ask.names[0]),
                        ),
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
}
