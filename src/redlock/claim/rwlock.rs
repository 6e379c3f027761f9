//! The reader-writer lock: `READ_ACQUIRE` and `WRITE_ACQUIRE` (`scripts/rwlock.rs`), the
//! places a refused reader or writer keeps on the nodes, and their withdrawal.

use std::sync::Arc;
use std::time::Duration;

use super::{Answer, Claim, Reading, Try, UndoPlan, Wait, Win};
use crate::config::Config;
use crate::error::ConflictReason;
use crate::kind::LockKind;
use crate::redlock::Redlock;
use crate::round::{self, fan_out, Op};
use crate::scripts::{self, RwKeys};

/// A read lock (`write == false`) or a write lock of one resource. Its keys are named
/// once for all its attempts.
pub(in crate::redlock) struct ReadWrite {
    names: Arc<[String]>,
    /// The lock key, as the guard of a writer holds it.
    key: Arc<[String]>,
    /// The reader set, as the guard of a reader holds it.
    readers: Arc<str>,
    rw: RwKeys,
    write: bool,
    /// A writer's fencing counter (readers take no token).
    fences: Option<Vec<String>>,
    /// The writer's intent id or the reader's wait id, the same for all its attempts:
    /// this manager's id, `|`, a random value (the scripts wake the manager it names).
    intent: String,
    /// How long a refused reader's place, or a refused writer's intent, lasts on a node
    /// after an attempt.
    patience_ms: u64,
    notify: bool,
}

impl ReadWrite {
    pub(in crate::redlock) fn new(redlock: &Redlock, resource: &str, write: bool) -> Self {
        let inner = &redlock.inner;
        let config = &inner.config;
        let key = redlock.key_of(resource);
        let rw = RwKeys::of(&key);
        Self {
            names: Arc::from([resource.to_owned()]),
            readers: Arc::from(rw.readers.as_str()),
            rw,
            key: Arc::from([key]),
            write,
            // Writers take tokens from the exclusive lock's counter.
            fences: (config.fencing && write).then(|| vec![redlock.fence_key_of(resource)]),
            // The manager's id first: the release scripts wake the manager it names.
            intent: format!("{}|{}", inner.wakeups.id(), crate::value::new_value(None)),
            patience_ms: patience(config.retry_delay, config.retry_jitter, config.node_timeout),
            notify: config.wake_on_release,
        }
    }

    /// Deletes the writer intent, or the reader's place among the waiting readers and in
    /// the reader turn, on every node, in the background; `after` an attempt's value, on
    /// each node after that attempt's request.
    fn withdraw(&self, redlock: &Redlock, after: Option<&Arc<str>>) {
        let call = if self.write {
            scripts::intent_clear(&self.rw, &self.intent)
        } else {
            scripts::read_wait_clear(&self.rw, &self.intent)
        };
        let op = match after {
            Some(value) => Op::clearing(call, value),
            None => Op::free(call),
        };
        let replies = fan_out(&redlock.inner.nodes, op);
        round::finish_in_background(replies, "withdraw a waiting reader or writer");
    }
}

impl Claim for ReadWrite {
    fn names(&self) -> &Arc<[String]> {
        &self.names
    }

    fn key(&self) -> &str {
        &self.key[0]
    }

    fn keys(&self) -> &[String] {
        &self.key
    }

    fn fences(&self) -> Option<&[String]> {
        self.fences.as_deref()
    }

    fn wait(&self, config: &Config) -> Wait {
        // A writer's release wakes the readers whose turn it gave, the last reader out
        // wakes the waiting writer.
        if config.wake_on_release {
            Wait::Listen
        } else {
            Wait::Timer
        }
    }

    fn request(&self, value: &Arc<str>, try_: &Try<'_>) -> (Op, Reading) {
        let call = if self.write {
            let fence = self.fences.as_ref().zip(try_.candidate);
            scripts::write_acquire(
                &self.rw,
                value,
                try_.ttl_ms,
                &self.intent,
                crate::wake::prefix(self.notify),
                self.patience_ms,
                fence.map(|(f, t)| (f[0].as_str(), t)),
            )
        } else {
            scripts::read_acquire(&self.rw, value, try_.ttl_ms, &self.intent, self.patience_ms)
        };
        let reading = Reading::ReadWrite {
            fenced: self.fences.is_some(),
        };
        (Op::setting(call, value), reading)
    }

    fn undo(&self) -> UndoPlan {
        if self.write {
            UndoPlan::Release(Arc::clone(&self.key))
        } else {
            UndoPlan::ReadRelease {
                readers: Arc::clone(&self.readers),
                notify: self.notify,
            }
        }
    }

    fn won(
        &self,
        redlock: &Redlock,
        value: &Arc<str>,
        answers: &[Option<Answer>],
        _: usize,
        try_: &Try<'_>,
    ) -> Win {
        if self.write {
            // The nodes that granted it deleted its intent; a node that refused (a
            // reader still there) would keep readers out with it until its patience
            // ran out.
            self.withdraw(redlock, Some(value));
            return Win {
                keys: Arc::clone(&self.key),
                kind: LockKind::Write,
            };
        }
        // A node that refused it, now or before, keeps its place (an admission keeps one
        // an earlier refusal made, so that a failed attempt does not cost the reader its
        // turn), which would hold writers back there until it lapses. (A node that has
        // not answered yet rarely refuses a reader a quorum admitted; its place would
        // lapse within the patience.)
        let refused = answers.iter().flatten().any(|a| a.refuses());
        if try_.waited || refused {
            self.withdraw(redlock, Some(value));
        }
        Win {
            keys: Arc::from([self.readers.to_string()]),
            kind: LockKind::Read,
        }
    }

    fn conflict(&self) -> ConflictReason {
        if self.write {
            ConflictReason::ReadersOrWriter
        } else {
            ConflictReason::WriterFirst
        }
    }

    fn gave_up(&self, redlock: &Redlock) {
        // A writer that gives up stops keeping readers out now, not at the end of its
        // patience; a reader gives up its place (its turn would hold writers back).
        self.withdraw(redlock, None);
    }
}

/// How long a refused reader keeps its place (among the waiting readers, or in the
/// reader turn), and a refused writer its intent, on a node after its last attempt (a
/// late copy of a request renews either for no longer): its longest pause between
/// attempts (delay plus jitter), a node timeout for each of the two requests around it,
/// and 50 ms for a loaded client. Long enough that a reader whose wake-up was lost still
/// comes back in time; short enough that a reader that died holds a writer back no
/// longer than one missed attempt would.
pub(in crate::redlock) fn patience(
    delay: Duration,
    jitter: Duration,
    node_timeout: Duration,
) -> u64 {
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
