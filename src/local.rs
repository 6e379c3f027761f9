//! In-process coalescing: tasks of one manager that want the same key queue here, first
//! come first served, and at most one of them competes on the nodes at a time. When a
//! task releases with local waiters, the lock passes to the next one inside the process,
//! without a release and a new acquisition: same owner value on the nodes, validity
//! counted from the original grant.
//!
//! Safety: a hand-over moves the one guard that holds the lock from one task to the next
//! (the giver's guard is consumed by `release` or its drop), so two tasks never hold it at
//! once, and the receiver believes exactly what the giver did (the same deadline), which
//! is what the nodes hold. Fenced managers never hand over (each holder must get a fresh,
//! greater token, which needs the nodes anyway; see docs/design.md).

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::sync::lock;

/// Local hand-overs in a row before the lock goes back to the nodes: a real release then
/// wakes the oldest waiter of another manager, if there is one, and this manager's next
/// task competes (queued on the nodes) like everyone else. Small enough that other
/// processes wait at most a few critical sections longer; large enough that a busy
/// process skips most releases and re-acquisitions.
pub(crate) const MAX_LOCAL_HANDOVERS: u32 = 4;

/// What a waiting task is given when its turn comes; `T` is what holds the lock (a
/// guard), which this module moves from task to task and never looks into.
// The guard is moved once through a oneshot channel, never stored in bulk: boxing it
// would cost an allocation on every hand-over, the in-process fast path.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Turn<T> {
    /// Compete on the nodes (the previous task gave up, or released for real).
    Compete(LocalTurn<T>),
    /// The lock itself, handed over by the previous holder, with the turn that now
    /// covers it (the receiver keeps the two together).
    Handed(T, LocalTurn<T>),
}

struct Local<T> {
    waiters: VecDeque<oneshot::Sender<Turn<T>>>,
    /// Hand-overs since the lock last came from the nodes.
    handovers: u32,
}

impl<T> Default for Local<T> {
    fn default() -> Self {
        Self {
            waiters: VecDeque::new(),
            handovers: 0,
        }
    }
}

/// Per key, whether a task of this manager holds or competes for it (an entry exists),
/// and who waits behind it.
pub(crate) struct LocalQueues<T>(Mutex<HashMap<Arc<str>, Local<T>>>);

impl<T> Default for LocalQueues<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T> fmt::Debug for LocalQueues<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalQueues")
            .field("keys", &lock(&self.0).len())
            .finish()
    }
}

impl<T> LocalQueues<T> {
    /// The key's turn at once when no task of this manager holds or competes for it;
    /// else a place at the end of its queue.
    pub(crate) fn enter(
        self: &Arc<Self>,
        key: Arc<str>,
    ) -> Result<LocalTurn<T>, oneshot::Receiver<Turn<T>>> {
        let mut map = lock(&self.0);
        match map.get_mut(&*key) {
            None => {
                map.insert(Arc::clone(&key), Local::default());
                Ok(LocalTurn::new(self, key))
            }
            Some(local) => {
                let (tx, rx) = oneshot::channel();
                local.waiters.push_back(tx);
                Err(rx)
            }
        }
    }

    /// Gives the turn to the next waiter that still waits, or frees the key.
    fn pass_on(self: &Arc<Self>, key: &Arc<str>) {
        loop {
            let next = {
                let mut map = lock(&self.0);
                let Some(local) = map.get_mut(&**key) else {
                    return;
                };
                local.handovers = 0;
                match local.waiters.pop_front() {
                    Some(next) => next,
                    None => {
                        map.remove(&**key);
                        return;
                    }
                }
            };
            match next.send(Turn::Compete(LocalTurn::new(self, Arc::clone(key)))) {
                Ok(()) => return,
                // That waiter was cancelled: the turn comes back, unused; try the next.
                Err(Turn::Compete(turn)) => turn.disarm(),
                Err(Turn::Handed(..)) => return,
            }
        }
    }

    /// Whether a hand-over of `key` could happen now: a waiter is queued and the bound
    /// allows one more. Checked before a release builds the guard to hand over, so a
    /// release with nobody waiting (the common case) pays one lock and nothing else.
    fn can_hand_over(&self, key: &str) -> bool {
        lock(&self.0)
            .get(key)
            .is_some_and(|l| l.handovers < MAX_LOCAL_HANDOVERS && !l.waiters.is_empty())
    }

    /// Hands `held` to the next waiter, if there is one and the hand-over bound allows;
    /// gives it back otherwise (to be released on the nodes).
    fn give_to_next(self: &Arc<Self>, key: &Arc<str>, held: T) -> Result<(), T> {
        let mut held = held;
        loop {
            let next = {
                let mut map = lock(&self.0);
                let Some(local) = map.get_mut(&**key) else {
                    return Err(held);
                };
                if local.handovers >= MAX_LOCAL_HANDOVERS || local.waiters.is_empty() {
                    return Err(held);
                }
                local.handovers += 1;
                local.waiters.pop_front()
            };
            let Some(next) = next else {
                return Err(held);
            };
            match next.send(Turn::Handed(held, LocalTurn::new(self, Arc::clone(key)))) {
                Ok(()) => return Ok(()),
                Err(Turn::Handed(back, turn)) => {
                    // Cancelled meanwhile: the lock comes back; its turn is ours again.
                    turn.disarm();
                    held = back;
                }
                Err(Turn::Compete(turn)) => {
                    turn.disarm();
                    return Ok(());
                }
            }
        }
    }
}

/// The key's turn in this manager: held by the task that competes for or holds the lock.
/// Dropping it passes the turn to the next local waiter (who then competes on the nodes).
pub(crate) struct LocalTurn<T> {
    queues: Arc<LocalQueues<T>>,
    /// Shared with the queues' map entry: one allocation per turn.
    key: Arc<str>,
    armed: bool,
}

impl<T> fmt::Debug for LocalTurn<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalTurn").field("key", &self.key).finish()
    }
}

impl<T> LocalTurn<T> {
    fn new(queues: &Arc<LocalQueues<T>>, key: Arc<str>) -> Self {
        Self {
            queues: Arc::clone(queues),
            key,
            armed: true,
        }
    }

    /// Forgets the turn without passing it on (it was handed back unused).
    fn disarm(mut self) {
        self.armed = false;
    }

    /// Whether a task of this manager waits for the key and may take it now.
    pub(crate) fn can_hand_over(&self) -> bool {
        self.queues.can_hand_over(&self.key)
    }

    /// Hands `held`, whose lock this turn covers, to the next local waiter; gives it
    /// back with the turn when there is none (or the bound says the nodes come first).
    /// On success the turn ended here; the receiver got one of its own.
    pub(crate) fn hand_over(mut self, held: T) -> Result<(), Box<(T, Self)>> {
        match self.queues.give_to_next(&self.key, held) {
            Ok(()) => {
                self.armed = false;
                Ok(())
            }
            Err(held) => Err(Box::new((held, self))),
        }
    }
}

impl<T> Drop for LocalTurn<T> {
    fn drop(&mut self) {
        if self.armed {
            self.queues.pass_on(&self.key);
        }
    }
}
