//! What a manager remembers of a key's contention between acquisitions: whether it found
//! the key held moments ago (then its next attempt queues for wake-ups at once), and the
//! head start it owes a waiter its own release just woke.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::clock::instant_after;
use crate::sync::lock;

/// How long a key this manager found held counts as contended: long enough to span a
/// worker's loop around a short critical section, short enough that a key that went
/// quiet is soon locked with a plain `SET NX` again.
const CONTENDED_MEMORY: Duration = Duration::from_secs(1);
/// Keys remembered before the map is cleared. A forgotten hint costs at most one
/// unqueued attempt or a lost head start, so a crude bound is fine.
const HINT_LIMIT: usize = 10_000;

#[derive(Debug, Default)]
struct KeyHint {
    /// Until when it lets a waiter it woke go first (see [`Hints::yield_to`]).
    yield_until: Option<Instant>,
    /// When it last found the key held by another owner.
    contended_at: Option<Instant>,
}

/// Per-key contention hints of one manager: one lock, one lookup per acquisition.
#[derive(Debug, Default)]
pub(crate) struct Hints(Mutex<HashMap<String, KeyHint>>);

impl Hints {
    fn update(&self, key: &str, change: impl FnOnce(&mut KeyHint)) {
        let mut hints = lock(&self.0);
        if hints.len() >= HINT_LIMIT && !hints.contains_key(key) {
            hints.clear();
        }
        change(hints.entry(key.to_owned()).or_default());
    }

    /// Notes that an attempt found `key` held by another owner.
    pub(crate) fn contended(&self, key: &str) {
        let now = Instant::now();
        self.update(key, |h| h.contended_at = Some(now));
    }

    /// The head start owed to a woken waiter (taken: it is owed once), and whether the
    /// key was found held recently.
    pub(crate) fn take(&self, key: &str) -> (Option<Instant>, bool) {
        let mut hints = lock(&self.0);
        let Some(hint) = hints.get_mut(key) else {
            return (None, false);
        };
        let contended = hint
            .contended_at
            .is_some_and(|at| at.elapsed() < CONTENDED_MEMORY);
        (hint.yield_until.take(), contended)
    }

    /// After a release of `key` that woke a waiter, this manager's next acquisition of
    /// `key` waits `head_start` first, so that the woken waiter, which hears of the
    /// release about when this manager does, wins the race instead of the releaser.
    pub(crate) fn yield_to(&self, key: &str, head_start: Duration) {
        let until = instant_after(head_start);
        self.update(key, |h| h.yield_until = Some(until));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_start_is_owed_once_and_contention_is_remembered_briefly() {
        let hints = Hints::default();
        assert_eq!(hints.take("k"), (None, false));
        hints.contended("k");
        hints.yield_to("k", Duration::from_millis(5));
        let (until, contended) = hints.take("k");
        assert!(contended && until.is_some());
        assert_eq!(hints.take("k").0, None, "owed once");
        assert!(hints.take("k").1);
    }

    #[test]
    fn the_map_stays_bounded() {
        let hints = Hints::default();
        for i in 0..(HINT_LIMIT + 10) {
            hints.contended(&format!("k{i}"));
        }
        assert!(lock(&hints.0).len() <= HINT_LIMIT);
    }
}
