//! The counting semaphore: `PERMIT_ACQUIRE` over every slot key (`scripts/semaphore.rs`),
//! votes counted per slot, and the other slots a win leaves to release.

use std::sync::Arc;

use rand::Rng;

use super::{Answer, Claim, Reading, Try, UndoPlan, Wait, Win};
use crate::config::Config;
use crate::error::{ConflictReason, Error};
use crate::kind::{self, LockKind};
use crate::mutants;
use crate::redlock::Redlock;
use crate::round::{self, fan_out_where, Op};
use crate::scripts;

/// The most permits a semaphore may have: each attempt sends every slot key to every
/// node, and a node's script may look at each of them twice.
pub(crate) const MAX_PERMITS: usize = 1024;

/// A permit of the semaphore `names[0]` of `slots.len()` permits.
pub(in crate::redlock) struct Semaphore {
    names: Arc<[String]>,
    key: String,
    /// Every slot key, by slot number.
    slots: Arc<[String]>,
}

impl Semaphore {
    pub(in crate::redlock) fn new(redlock: &Redlock, resource: &str, permits: usize) -> Self {
        let key = redlock.key_of(resource);
        Self {
            names: Arc::from([resource.to_owned()]),
            slots: (0..permits).map(|i| kind::permit_key(&key, i)).collect(),
            key,
        }
    }

    /// A won permit keeps slot `slot`: every other slot this attempt's value took, on
    /// nodes that granted another slot or have not answered (yet), is released, after
    /// the attempt's own request on each node.
    fn trim_other_slots(
        &self,
        redlock: &Redlock,
        slot: usize,
        value: &Arc<str>,
        answers: &[Option<Answer>],
    ) {
        let others: Vec<String> = (0..self.slots.len())
            .filter(|s| *s != slot)
            .map(|s| self.slots[s].clone())
            .collect();
        if others.is_empty() {
            return;
        }
        let trim = |i: usize| {
            !matches!(answers[i], Some(Answer::Slot(s)) if s == slot)
                && !matches!(answers[i], Some(Answer::Held(_)))
        };
        if !(0..answers.len()).any(trim) {
            return;
        }
        let op = Op::release(&others, value, false);
        round::finish_in_background(
            fan_out_where(&redlock.inner.nodes, op, trim),
            "release other permit slots",
        );
    }
}

impl Claim for Semaphore {
    fn names(&self) -> &Arc<[String]> {
        &self.names
    }

    fn key(&self) -> &str {
        &self.key
    }

    fn keys(&self) -> &[String] {
        std::slice::from_ref(&self.key)
    }

    fn fences(&self) -> Option<&[String]> {
        None
    }

    fn wait(&self, _: &Config) -> Wait {
        Wait::Timer
    }

    fn request(&self, value: &Arc<str>, try_: &Try<'_>) -> (Op, Reading) {
        let n = self.slots.len();
        // A random rotation per attempt: contenders that start together mostly try
        // different slots first, so each node grants them alike.
        let first = rand::rng().random_range(0..n);
        let order: Arc<[usize]> = (0..n).map(|i| (first + i) % n).collect();
        let keys: Vec<&str> = order.iter().map(|s| self.slots[*s].as_str()).collect();
        let call = scripts::permit_acquire(&keys, value, try_.ttl_ms);
        (Op::setting(call, value), Reading::Permits { order })
    }

    fn undo(&self) -> UndoPlan {
        UndoPlan::Release(Arc::clone(&self.slots))
    }

    fn won(
        &self,
        redlock: &Redlock,
        value: &Arc<str>,
        answers: &[Option<Answer>],
        slot: usize,
        _: &Try<'_>,
    ) -> Win {
        let kind = LockKind::Permit(slot);
        if mutants::SEMAPHORE_COUNT {
            return Win {
                keys: Arc::clone(&self.slots),
                kind,
            };
        }
        self.trim_other_slots(redlock, slot, value, answers);
        Win {
            keys: Arc::from([self.slots[slot].clone()]),
            kind,
        }
    }

    fn conflict(&self) -> ConflictReason {
        ConflictReason::PermitsTaken {
            permits: self.slots.len(),
        }
    }

    fn gave_up(&self, _: &Redlock) {}
}

/// `Error::Config` for a semaphore of no permits or of more than [`MAX_PERMITS`].
pub(crate) fn check_permits(permits: usize) -> Result<(), Error> {
    match permits {
        0 => Err(Error::Config(
            "a semaphore of 0 permits can never be acquired: ask for permits(n) with n >= 1".into(),
        )),
        n if n > MAX_PERMITS => Err(Error::Config(format!(
            "{n} permits is over the limit of {MAX_PERMITS}: every attempt sends each slot key \
             to every node; use fewer permits"
        ))),
        _ => Ok(()),
    }
}
