//! The exclusive lock (one or several resources): `SET NX`, or the script that also
//! joins the wait queue, or the fenced script.

use std::sync::Arc;

use super::{Answer, Claim, Reading, Try, UndoPlan, Wait, Win};
use crate::config::Config;
use crate::error::ConflictReason;
use crate::kind::LockKind;
use crate::redlock::policy::Place;
use crate::redlock::Redlock;
use crate::round::Op;
use crate::scripts;
use crate::wake;

/// An exclusive lock of `names`.
pub(in crate::redlock) struct Exclusive {
    names: Arc<[String]>,
    keys: Arc<[String]>,
    fences: Option<Vec<String>>,
}

impl Exclusive {
    pub(in crate::redlock) fn new(redlock: &Redlock, resources: &[&str]) -> Self {
        let fencing = redlock.inner.config.fencing;
        Self {
            names: resources.iter().map(|r| (*r).to_owned()).collect(),
            keys: resources.iter().map(|r| redlock.key_of(r)).collect(),
            fences: fencing.then(|| resources.iter().map(|r| redlock.fence_key_of(r)).collect()),
        }
    }
}

impl Claim for Exclusive {
    fn names(&self) -> &Arc<[String]> {
        &self.names
    }

    fn key(&self) -> &str {
        &self.keys[0]
    }

    fn keys(&self) -> &[String] {
        &self.keys
    }

    fn fences(&self) -> Option<&[String]> {
        self.fences.as_deref()
    }

    fn wait(&self, config: &Config) -> Wait {
        if config.wake_on_release {
            Wait::Queue
        } else {
            Wait::Timer
        }
    }

    fn request(&self, value: &Arc<str>, try_: &Try<'_>) -> (Op, Reading) {
        let keys = &self.keys;
        let op = match (&self.fences, try_.candidate, try_.queue) {
            (None, _, Some((member, place))) if keys.len() == 1 => {
                let queue = format!("{}{}", keys[0], wake::QUEUE_SUFFIX);
                let call = scripts::acquire_or_queue(
                    &keys[0],
                    &queue,
                    value,
                    try_.ttl_ms,
                    member,
                    place == Place::Front,
                    wake::QUEUE_TTL_MS,
                );
                Op::setting(call, value)
            }
            (Some(fences), Some(t), _) => Op::setting(
                scripts::fenced_acquire(keys, fences, value, try_.ttl_ms, t),
                value,
            ),
            _ if keys.len() == 1 => Op::set_nx(&keys[0], value, try_.ttl_ms),
            _ => Op::setting(scripts::acquire_many(keys, value, try_.ttl_ms), value),
        };
        let reading = Reading::Exclusive {
            fenced: self.fences.is_some() && try_.candidate.is_some(),
            keys: keys.len(),
        };
        (op, reading)
    }

    fn undo(&self) -> UndoPlan {
        UndoPlan::Release(Arc::clone(&self.keys))
    }

    fn won(&self, _: &Redlock, _: &Arc<str>, _: &[Option<Answer>], _: usize, _: &Try<'_>) -> Win {
        Win {
            keys: Arc::clone(&self.keys),
            kind: LockKind::Exclusive,
        }
    }

    fn conflict(&self) -> ConflictReason {
        ConflictReason::Owner
    }

    fn gave_up(&self, _: &Redlock) {}
}
