//! Leader election on a lock: candidates [`campaign`](Election::campaign) for a name,
//! one at a time leads while its lock is kept alive, [`resign`](Leadership::resign)
//! hands leadership to the next candidate at once, and
//! [`observe`](Election::observe) follows who leads.
//!
//! The guarantee is the lock's, under the same assumptions (docs/safety.md): at most one
//! candidate believes it leads at any instant ([`Leadership::is_leader`]), and with
//! fencing on, each leadership's [`term`](Leadership::term) is greater than every
//! earlier one's, so storage can refuse a deposed leader that was paused.

use std::time::Duration;

use futures::Stream;
use tokio_util::sync::CancellationToken;

use crate::error::Error;
use crate::lease::{KeptGuard, Lease};
use crate::redlock::Redlock;

/// Default ttl of a leadership's lock: it is kept alive while the leader lives, so the
/// ttl is how long a leader that died silently keeps the others waiting.
const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// The shortest and longest pause between two looks of [`Election::observe`]: a tenth
/// of the ttl, so a change is seen well before a dead leader's lock expires, without
/// reading every node more than 50 times a second.
const OBSERVE_MIN: Duration = Duration::from_millis(20);
const OBSERVE_MAX: Duration = Duration::from_secs(1);

/// An election for one name (`redlock.election("scheduler")`): cheap to clone, every
/// clone campaigns for the same leadership.
///
/// ```no_run
/// # async fn schedule(_: Option<u64>) {}
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// let election = redlock.election("scheduler");
/// let leader = election.campaign().await?; // waits until this candidate leads
/// tokio::select! {
///     _ = leader.lost() => eprintln!("deposed: stop scheduling"),
///     _ = schedule(leader.term()) => leader.resign().await?, // the next candidate leads
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Election {
    redlock: Redlock,
    name: String,
    ttl: Duration,
}

impl Redlock {
    /// An election for `name`, on this manager's nodes and settings (fencing on gives
    /// each leadership a term). The lock's key is `name` (with the key prefix).
    pub fn election(&self, name: &str) -> Election {
        Election {
            redlock: self.clone(),
            name: name.to_owned(),
            ttl: DEFAULT_TTL,
        }
    }
}

impl Election {
    /// The ttl of the leadership's lock, kept alive while the leader lives: how long a
    /// leader that died without resigning keeps the others waiting. Defaults to 10 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The name campaigned for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits until this candidate leads, then keeps the leadership's lock alive in the
    /// background until [`Leadership::resign`], its drop, or its loss. Candidates lead
    /// in the order they started waiting (the release's wake-up queue), and a resigning
    /// leader wakes the next at once.
    ///
    /// # Errors
    /// [`Error::Config`] for an impossible name or ttl; otherwise it waits, through
    /// conflicts and node failures alike, as long as it is not dropped.
    ///
    /// # Cancel safety
    /// Dropping the future stops campaigning; whatever its last attempt set is undone.
    pub async fn campaign(&self) -> Result<Leadership, Error> {
        let guard = self
            .redlock
            .lock(&self.name)
            .ttl(self.ttl)
            .wait(Duration::MAX)
            .acquire()
            .await?;
        let kept = guard.keep_alive();
        let lease = kept.lease().clone();
        Ok(Leadership { kept, lease })
    }

    /// Who leads, now and whenever it changes: the leader's owner label (`"(no label)"`
    /// for a manager built without [`owner_label`](crate::RedlockBuilder::owner_label)),
    /// `None` while nobody leads. The first item is the state at the first look. Read
    /// with [`Redlock::inspect`] every tenth of the ttl (20 ms to 1 s): a snapshot, like
    /// any observation of a distributed state; looks that reach too few nodes are
    /// skipped. The stream never ends; drop it to stop.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) {
    /// use futures::StreamExt;
    ///
    /// let mut leaders = std::pin::pin!(redlock.election("scheduler").observe());
    /// while let Some(leader) = leaders.next().await {
    ///     println!("leader now: {leader:?}");
    /// }
    /// # }
    /// ```
    pub fn observe(&self) -> impl Stream<Item = Option<String>> + Send + 'static {
        let every = (self.ttl / 10).clamp(OBSERVE_MIN, OBSERVE_MAX);
        let state = (self.clone(), None::<Option<String>>, true);
        futures::stream::unfold(state, move |(election, last, first)| async move {
            let mut first = first;
            loop {
                if !first {
                    tokio::time::sleep(every).await;
                }
                first = false;
                let Some(now) = election.leader().await else {
                    continue;
                };
                if last.as_ref() != Some(&now) {
                    return Some((now.clone(), (election, Some(now), false)));
                }
            }
        })
    }

    /// The leader's label as the nodes show it now; `None` (the outer one) when too few
    /// nodes answered to tell.
    async fn leader(&self) -> Option<Option<String>> {
        let info = self.redlock.inspect(&self.name).await.ok()?;
        if let Some(h) = info.holders().first().filter(|_| info.held_by_quorum()) {
            return Some(Some(h.label().unwrap_or("(no label)").to_owned()));
        }
        let largest = info.holders().first().map_or(0, |h| h.node_count());
        (largest + info.unknown_nodes() < info.quorum()).then_some(None)
    }
}

/// This candidate's leadership: its lock, kept alive in the background.
///
/// Dropping it resigns in the background (the lock is released and the next candidate
/// woken); [`resign`](Self::resign) does it and says how it went.
#[derive(Debug)]
#[must_use = "dropping a Leadership resigns at once"]
pub struct Leadership {
    kept: KeptGuard,
    lease: Lease,
}

impl Leadership {
    /// Whether this candidate still leads: its lock is held and within its validity.
    /// Check it before each step that only the leader may take; with fencing, pass
    /// [`term`](Self::term) to storage that must refuse a deposed leader.
    pub fn is_leader(&self) -> bool {
        self.lease.is_held()
    }

    /// Resolves once the leadership is lost (its lock could not be kept alive).
    pub async fn lost(&self) {
        self.lease.lost().await;
    }

    /// Cancelled when the leadership is lost or resigned, for `select!` and shutdown
    /// trees.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.lease.cancellation_token()
    }

    /// The leadership's term: its lock's fencing token, greater than every earlier
    /// leadership's, when the manager was built with fencing; else `None`.
    pub fn term(&self) -> Option<u64> {
        self.lease.fencing_token()
    }

    /// The lease underneath, for what `Leadership` does not repeat.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Gives the leadership up: the lock is released and the next candidate (the oldest
    /// one waiting) is woken and leads at once.
    ///
    /// # Errors
    /// As for [`KeptGuard::release`]: [`Error::LockLost`] when the leadership had
    /// already been lost.
    pub async fn resign(self) -> Result<(), Error> {
        self.kept.release().await
    }
}
