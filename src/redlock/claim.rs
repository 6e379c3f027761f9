//! What differs between the kinds of lock in one attempt, behind one trait: the request
//! and its undo, how a node's reply votes, and what a win holds. The attempt
//! (`attempt.rs`) and the loop of attempts (`retry.rs`) are written once, over
//! [`Claim`]; the exclusive lock, the reader-writer lock and the semaphore implement it
//! in `claim/`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::policy::Place;
use super::Redlock;
use crate::config::Config;
use crate::error::ConflictReason;
use crate::kind::LockKind;
use crate::round::Op;
use crate::scripts;

mod exclusive;
mod rwlock;
mod semaphore;

pub(super) use exclusive::Exclusive;
pub(super) use rwlock::ReadWrite;
pub(super) use semaphore::{check_permits, Semaphore};

/// A node's answer to an acquire request of any kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// The lock is set for this attempt's value (with the counter a fenced script wrote).
    Set(Option<u64>),
    /// This permit slot was taken for this attempt's value.
    Slot(usize),
    /// Refused: key number `.0` (0 when the reply does not say) is held by another
    /// owner, readers, a writer's intent, or every permit slot is taken.
    Held(usize),
    /// The fencing counter is at `.0`, not below the candidate.
    Stale(u64),
}

impl Answer {
    /// The node set nothing of this attempt's: there is nothing to undo there.
    pub(super) fn refuses(self) -> bool {
        matches!(self, Self::Held(_) | Self::Stale(_))
    }
}

/// How the replies of one attempt read. Owned and `Send`: replies that come after the
/// attempt decided are read in the background, to skip the undo where a node refused.
#[derive(Debug, Clone)]
pub(super) enum Reading {
    /// `SET NX`, `ACQUIRE_ONE`, `ACQUIRE_OR_QUEUE`, `ACQUIRE_MANY` or, fenced,
    /// `FENCED_ACQUIRE`, over this many keys.
    Exclusive { fenced: bool, keys: usize },
    /// `READ_ACQUIRE` or `WRITE_ACQUIRE` (a fenced writer's answers `FENCED_ACQUIRE`'s).
    ReadWrite { fenced: bool },
    /// `PERMIT_ACQUIRE`, which answers a 1-based position in `order`, the slots in the
    /// order this attempt sent them.
    Permits { order: Arc<[usize]> },
}

impl Reading {
    /// A node's reply as an [`Answer`]; `Err` for a reply that no Redis running our
    /// scripts would give.
    pub(super) fn classify(&self, value: &Value) -> Result<Answer, String> {
        match (self, value) {
            (Self::Exclusive { fenced: true, keys }, _) => fenced_answer(value, *keys),
            (Self::ReadWrite { fenced: true }, _) => fenced_answer(value, 1),
            (Self::Exclusive { keys, .. }, value) => match value {
                Value::Okay => Ok(Answer::Set(None)),
                Value::SimpleString(s) if s == "OK" => Ok(Answer::Set(None)),
                Value::Int(1) => Ok(Answer::Set(None)),
                Value::Nil | Value::Int(0) => Ok(Answer::Held(0)),
                // ACQUIRE_MANY: the first key found held, 1-based, negated.
                Value::Int(i) if *i < 0 => Ok(Answer::Held(key_index(-*i, *keys))),
                other => Err(format!("acquire answered {other:?}")),
            },
            (Self::ReadWrite { .. }, Value::Int(1)) => Ok(Answer::Set(None)),
            (Self::ReadWrite { .. }, Value::Int(0)) => Ok(Answer::Held(0)),
            (Self::Permits { .. }, Value::Int(0)) => Ok(Answer::Held(0)),
            (Self::Permits { order }, Value::Int(i)) => usize::try_from(*i - 1)
                .ok()
                .and_then(|i| order.get(i))
                .map(|slot| Answer::Slot(*slot))
                .ok_or_else(|| format!("permit acquire answered slot {i}")),
            (_, other) => Err(format!("{self:?} acquire answered {other:?}")),
        }
    }

    /// How many permit slots the attempt counts votes for (0: not a semaphore).
    pub(super) fn slots(&self) -> usize {
        match self {
            Self::Permits { order } => order.len(),
            _ => 0,
        }
    }
}

/// `FENCED_ACQUIRE`'s `{code, counter[, key]}`.
fn fenced_answer(value: &Value, keys: usize) -> Result<Answer, String> {
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
    match code {
        scripts::FENCE_OK => Ok(Answer::Set(Some(counter))),
        // Held by another owner: the counter is below our candidate, so it teaches
        // nothing.
        scripts::FENCE_LOCKED => Ok(Answer::Held(key_index(key, keys))),
        scripts::FENCE_STALE => Ok(Answer::Stale(counter)),
        other => Err(format!("fenced acquire answered code {other}")),
    }
}

/// A script's 1-based key number as an index into `keys` keys.
fn key_index(one_based: i64, keys: usize) -> usize {
    usize::try_from(one_based.saturating_sub(1))
        .unwrap_or(0)
        .min(keys.saturating_sub(1))
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

/// What undoes a failed attempt, made into a request only when one is sent: most
/// attempts win and never send it.
#[derive(Clone)]
pub(super) enum UndoPlan {
    /// Compare-and-delete of these keys (lock keys, or a semaphore's slot keys).
    Release(Arc<[String]>),
    /// The reader leaves this reader set.
    ReadRelease { readers: Arc<str>, notify: bool },
}

impl UndoPlan {
    pub(super) fn op(&self, value: &Arc<str>) -> Op {
        // An undo wakes nobody: whoever beat this attempt still holds it.
        match self {
            Self::Release(keys) => Op::release(keys, value, false),
            Self::ReadRelease { readers, notify } => Op::read_release(readers, value, *notify),
        }
    }
}

/// One attempt's part of what the loop of attempts decides.
pub(super) struct Try<'a> {
    pub(super) ttl_ms: u64,
    /// A grant with less validity left counts as failed.
    pub(super) min_validity: Duration,
    pub(super) candidate: Option<u64>,
    /// Join the wait queue as this member, at this place, where the key is held (an
    /// unfenced single-key exclusive lock only).
    pub(super) queue: Option<(&'a str, Place)>,
    /// An earlier attempt of this acquisition was refused: it may have left places.
    pub(super) waited: bool,
}

/// How the loop of attempts waits between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// On the key's wait queue: woken, first come first served, by a release.
    Queue,
    /// Listening for a release's wake-up, without a queue (readers and writers: the
    /// scripts keep their places).
    Listen,
    /// On the timer alone.
    Timer,
}

/// What a won attempt holds.
pub(super) struct Win {
    pub(super) keys: Arc<[String]>,
    pub(super) kind: LockKind,
}

/// One kind of lock, as the attempt and the loop of attempts see it.
pub(super) trait Claim {
    /// The resources asked for, as the guard names them.
    fn names(&self) -> &Arc<[String]>;
    /// The lock key of the (first) resource: where wake-ups and hints are kept.
    fn key(&self) -> &str;
    /// The lock keys, by resource (one but for `acquire_many`).
    fn keys(&self) -> &[String];
    /// The fencing counter keys, when this acquisition takes a token.
    fn fences(&self) -> Option<&[String]>;
    /// How the loop waits between attempts.
    fn wait(&self, config: &Config) -> Wait;
    /// The request of an attempt whose owner value is `value`, and how its replies read.
    fn request(&self, value: &Arc<str>, try_: &Try<'_>) -> (Op, Reading);
    /// What undoes an attempt of this claim.
    fn undo(&self) -> UndoPlan;
    /// What a won attempt holds; `slot` is the permit slot a quorum granted. Tidies
    /// what the win leaves on the nodes (places, intents, other slots) in the background.
    fn won(
        &self,
        redlock: &Redlock,
        value: &Arc<str>,
        answers: &[Option<Answer>],
        slot: usize,
        try_: &Try<'_>,
    ) -> Win;
    /// What a conflict of this kind reports as the holder.
    fn conflict(&self) -> ConflictReason;
    /// The acquisition gave up: take back what it left waiting on the nodes.
    fn gave_up(&self, redlock: &Redlock);
}

#[cfg(test)]
mod tests;
