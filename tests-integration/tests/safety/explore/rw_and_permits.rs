//! The reader-writer lock and the counting semaphore in the explorer (issue 16): drawn
//! as acquisitions like the exclusive ones (then extended, released, dropped, kept alive
//! or cancelled by the same drawn operations), on resources of their own, and judged by
//! the harness checkers C5 (no write claim overlaps another claim) and C6 (never more
//! claims than permits) on the run's history.
//!
//! What the belief oracle checks for them: a write guard's lock key and a permit's slot
//! key are ordinary lock keys, so they are sampled and bound like an exclusive lock's
//! (belief, shared value, values coming back, ghosts). A read guard's member lives in the
//! reader sorted set under a value the guard keeps private, so reads are judged by C5
//! alone (and their sets by the ghost check's "nothing new after the tail"). The waiting
//! readers and the reader turn are places with an expiry, not locks: a writer's release
//! in the tail may create a turn, so the ghost check leaves them out.

use std::collections::HashSet;
use std::fmt;
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio_redlock::{Error, LockGuard, Redlock};
use tokio_redlock_harness::checker;
use tokio_redlock_harness::history::History;

use super::oracle::{lock, Kind, Oracle};
use super::schedule::{How, RESOURCES};

/// Of the drawn single-resource acquisitions, the share that asks for a kind.
const KIND_SHARE: f64 = 0.4;
/// The permits of the semaphore. One semaphore per episode, of 2 permits: every client
/// of a semaphore must use the same count, and three holders of two permits (what
/// counting holders per node allows under a partition) need the permit holders to meet.
const PERMITS: usize = 2;

/// What kind of acquisition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Read,
    Write,
    /// A permit of the episode's one semaphore `sem`, of [`PERMITS`] permits.
    Permit,
}

/// A read, write or permit acquisition; `once` for `try_acquire`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub mode: Mode,
    pub once: bool,
}

impl Ask {
    /// The call as the schedule's script shows it, up to the ttl.
    pub fn call(self, res: u8) -> String {
        let r = res % RESOURCES;
        match self.mode {
            Mode::Read | Mode::Write => format!("{self}(rw{r}"),
            Mode::Permit => format!("{self}(sem"),
        }
    }
}

impl fmt::Display for Ask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.mode {
            Mode::Read => "read()",
            Mode::Write => "write()",
            Mode::Permit => "permits(2)",
        };
        let end = if self.once { "try_acquire" } else { "acquire" };
        write!(f, "{kind}.{end}")
    }
}

/// Turns some of the drawn `acquire`/`try_acquire` calls into a kind's.
pub fn draw(rng: &mut StdRng, how: How) -> How {
    let once = match how {
        How::Acquire => false,
        How::TryAcquire => true,
        _ => return how,
    };
    if !rng.random_bool(KIND_SHARE) {
        return how;
    }
    let mode = match rng.random_range(0..4) {
        0 | 1 => Mode::Read,
        2 => Mode::Write,
        _ => Mode::Permit,
    };
    How::Kind(Ask { mode, once })
}

/// The resource of a kind: readers and writers share `rw<res>`, permits take `sem`;
/// neither is ever locked exclusively (an exclusive lock does not wait for
/// readers, by design, so C5 would not hold between them).
/// Whether `resource` is one of [`resource`]'s names: a reader-writer or semaphore
/// resource, judged by C5/C6 rather than by C1 (readers and permits share by design).
pub fn is_kind_resource(resource: &str) -> bool {
    let stem = resource.trim_end_matches(|c: char| c.is_ascii_digit());
    stem.ends_with("rw") || resource.ends_with("sem")
}

pub fn resource(prefix: &str, res: u8, ask: Ask) -> String {
    let r = res % RESOURCES;
    match ask.mode {
        Mode::Read | Mode::Write => format!("{prefix}rw{r}"),
        Mode::Permit => format!("{prefix}sem"),
    }
}

/// The acquisition through the public API.
pub async fn acquire(
    redlock: &Redlock,
    name: &str,
    ttl: Duration,
    ask: Ask,
) -> Result<LockGuard, Error> {
    let request = redlock.lock(name).ttl(ttl);
    let request = match ask.mode {
        Mode::Read => request.read(),
        Mode::Write => request.write(),
        Mode::Permit => request.permits(PERMITS),
    };
    if ask.once {
        request.try_acquire().await
    } else {
        request.acquire().await
    }
}

/// The string keys the belief oracle samples for a won guard: the lock key of a writer,
/// the slot key of a permit (`<key>:permit:<slot>`, docs/safety.md section 7), none for a
/// reader.
pub fn oracle_keys(redlock: &Redlock, name: &str, guard: &LockGuard) -> Vec<String> {
    let key = redlock.key_of(name);
    match guard.kind() {
        tokio_redlock::LockKind::Read => Vec::new(),
        tokio_redlock::LockKind::Permit(slot) => vec![format!("{key}:permit:{slot}")],
        _ => vec![key],
    }
}

/// `(resource, client, op)` of every write acquisition started: C5 needs to know which
/// claims were writes. Resource names carry the run's number, so runs never mix.
static WRITES: LazyLock<Mutex<HashSet<(String, u32, u64)>>> = LazyLock::new(Default::default);

/// Notes an acquisition of a kind, before it starts.
pub fn note(name: &str, client: u32, op: u64, ask: Ask) {
    if ask.mode == Mode::Write {
        lock(&WRITES).insert((name.to_owned(), client, op));
    }
}

/// Whether a key is a waiting reader's place (the waiting readers or the reader turn):
/// it expires on its own and is not a lock, so the ghost check leaves it out.
pub fn is_waiting_place(key: &str) -> bool {
    key.ends_with(":rwait") || key.ends_with(":rturn")
}

/// C5 and C6 on a run's history, flagged as [`Kind::Exclusion`].
pub fn check(history: &History, oracle: &Oracle) {
    let writes = lock(&WRITES).clone();
    let is_write = |h: &checker::Hold| writes.contains(&(h.resource.clone(), h.client, h.op));
    let holds = checker::holds(history);
    let count = |part: &str| {
        let of = |h: &&checker::Hold| {
            let head = h.resource.trim_end_matches(|c: char| c.is_ascii_digit());
            head.ends_with(part)
        };
        let all = holds.iter().filter(of).count();
        (all, holds.iter().filter(of).filter(|h| is_write(h)).count())
    };
    let ((rw, w), (sem, _)) = (count("rw"), count("sem"));
    println!(
        "explore: kinds: {} read, {w} write, {sem} permit holds judged by C5/C6",
        rw - w
    );
    for v in checker::read_write(history, is_write) {
        oracle.flag(Kind::Exclusion, None, format!("C5: {}", v.what));
    }
    let semaphores: HashSet<String> = holds.into_iter().map(|h| h.resource).collect();
    for name in semaphores.iter().filter(|r| r.ends_with("sem")) {
        for v in checker::permits(history, &[name.as_str()], PERMITS) {
            let what = format!("C6 ({PERMITS} permits): {}", v.what);
            oracle.flag(Kind::Exclusion, None, what);
        }
    }
}
