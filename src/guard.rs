//! [`LockGuard`]: a held lock, released on drop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::{Clock, Deadline};

use redis::Value;
use tracing::Instrument;

use crate::error::{Error, LostReason};
use crate::kind::LockKind;
use crate::lease::options::LeaseOptions;
use crate::local::LocalTurn;
use crate::metrics;
use crate::quorum::{self, Outcome, Vote};
use crate::round::{self, fan_out, Collecting, Count, Op};
use crate::shared::Inner;

mod release;

pub use release::ReleaseReport;

/// What a guard must give back: the keys it set and the value that proves it owns them.
pub(crate) struct Held {
    pub(crate) inner: Arc<Inner>,
    pub(crate) keys: Arc<[String]>,
    pub(crate) value: Arc<str>,
    /// The runtime the lock was taken on; `Drop` releases there.
    pub(crate) handle: Option<tokio::runtime::Handle>,
    /// What is held, which picks the release and extend scripts: for
    /// [`LockKind::Read`], `keys` is the reader set; for a permit, its slot key.
    pub(crate) kind: LockKind,
    /// Hold at least until then ([`LockRequest::hold_at_least`](crate::LockRequest::hold_at_least)):
    /// a release before it shortens the lock to what is left instead of deleting it.
    pub(crate) hold: Option<Deadline>,
    /// This process holds it, for the metrics (`redlock_guards_held`, `redlock_held_seconds`).
    pub(crate) _holding: crate::metrics::Holding,
}

/// A lock held on a quorum of nodes, until [`valid_until`](Self::valid_until).
///
/// Dropping the guard releases the lock in the background, on the tokio runtime it was
/// acquired on; it never blocks and never panics. If that runtime is gone, dropping does
/// nothing and the lock expires with its TTL. Call [`release`](Self::release) to know
/// how the release went.
///
/// The guard promises nothing past `valid_until`: check
/// [`remaining_validity`](Self::remaining_validity) before an action that must not run
/// unprotected, extend it with [`extend`](Self::extend), or use
/// [`Redlock::with_lock`](crate::Redlock::with_lock), which extends for you.
///
/// # Example
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// let mut guard = redlock.acquire("invoice:7", Duration::from_secs(2)).await?;
/// assert_eq!(guard.resource(), "invoice:7");
/// // ... a first part of the work ...
/// guard.extend(Duration::from_secs(2)).await?;
/// // ... the rest ...
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[must_use = "dropping the guard releases the lock at once"]
#[clippy::has_significant_drop]
pub struct LockGuard {
    resources: Arc<[String]>,
    /// The end of the validity, on the suspend-aware clock. Only ever lowered before a
    /// request is sent, so that it never says more than the nodes hold.
    valid_until: Deadline,
    clock: Clock,
    ttl: Duration,
    token: Option<u64>,
    attempts: u32,
    kind: LockKind,
    /// `Some` until `release` takes it; `Drop` releases only what is still here.
    held: Option<Held>,
    /// This manager's turn on the key, when tasks of it queue locally for the lock: on
    /// release the lock goes to the next of them (see `local.rs`).
    local: Option<LocalTurn<LockGuard>>,
    /// How [`keep_alive`](Self::keep_alive) keeps it: the request's
    /// [`lease_options`](crate::LockRequest::lease_options), or (`None`) the defaults.
    /// Boxed: most guards have none, and every guard is moved around.
    options: Option<Box<LeaseOptions>>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value: it is the proof of ownership.
        f.debug_struct("LockGuard")
            .field("resources", &self.resources)
            .field("remaining_validity", &self.remaining_validity())
            .field("kind", &self.kind)
            .field("fencing_token", &self.token)
            .field("held", &self.held.is_some())
            .finish()
    }
}

/// What [`LockGuard::pass_locally`] did.
pub(crate) enum HandOver {
    /// The lock went to the next task of this manager.
    Handed,
    /// The lock stays with this guard, to be released on the nodes; this manager's turn
    /// (if it had one) comes back, to be passed on after that release.
    Kept(Option<LocalTurn<LockGuard>>),
}

impl LockGuard {
    pub(crate) fn new(
        resources: Arc<[String]>,
        valid_until: Deadline,
        ttl: Duration,
        token: Option<u64>,
        held: Held,
    ) -> Self {
        Self {
            resources,
            valid_until,
            clock: held.inner.config.clock.clone(),
            ttl,
            token,
            attempts: 1,
            kind: held.kind,
            held: Some(held),
            local: None,
            options: None,
        }
    }

    /// Keeps the lock at least `d` from now (see
    /// [`LockRequest::hold_at_least`](crate::LockRequest::hold_at_least)).
    pub(crate) fn hold_at_least(&mut self, d: Duration) {
        let until = self.clock.stamp().after(d);
        if let Some(held) = &mut self.held {
            held.hold = Some(until);
        }
    }

    /// The lease options [`keep_alive`](Self::keep_alive) will use.
    pub(crate) fn set_options(&mut self, options: LeaseOptions) {
        self.options = (options != LeaseOptions::default()).then(|| Box::new(options));
    }

    pub(crate) fn options(&self) -> LeaseOptions {
        self.options.as_deref().copied().unwrap_or_default()
    }

    pub(crate) fn set_local(&mut self, turn: LocalTurn<LockGuard>) {
        self.local = Some(turn);
    }

    pub(crate) fn take_local(&mut self) -> Option<LocalTurn<LockGuard>> {
        self.local.take()
    }

    /// Gives the lock to the next task of this manager waiting for it, if there is one
    /// and the validity has not ended: nothing is sent to the nodes, and the receiver
    /// believes what this guard did. If it was not handed over, this manager's turn (if
    /// any) comes back, to be passed on after the real release.
    pub(crate) fn pass_locally(&mut self) -> HandOver {
        let Some(turn) = self.local.take() else {
            return HandOver::Kept(None);
        };
        // A lock held at least for a period is not given on within the process either:
        // the period is for everyone.
        if self.held.as_ref().is_some_and(|h| h.hold.is_some()) {
            return HandOver::Kept(Some(turn));
        }
        if !self.is_valid() || !turn.can_hand_over() {
            return HandOver::Kept(Some(turn));
        }
        let Some(held) = self.held.take() else {
            return HandOver::Kept(Some(turn));
        };
        let handed = Self {
            kind: self.kind,
            resources: Arc::clone(&self.resources),
            valid_until: self.valid_until,
            clock: self.clock.clone(),
            ttl: self.ttl,
            token: self.token,
            attempts: 0,
            held: Some(held),
            local: None,
            options: self.options.take(),
        };
        match turn.hand_over(handed) {
            Ok(()) => HandOver::Handed,
            Err(back) => {
                let (mut back, turn) = *back;
                self.held = back.held.take();
                HandOver::Kept(Some(turn))
            }
        }
    }

    pub(crate) fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
    }

    /// What this guard holds: an exclusive lock, a read or write lock, or a permit.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.lock("doc:1").read().acquire().await?;
    /// assert_eq!(guard.kind(), tokio_redlock::LockKind::Read);
    /// # Ok(())
    /// # }
    /// ```
    pub fn kind(&self) -> LockKind {
        self.kind
    }

    /// The owner value stored on the nodes for this lock (`<label>:<uuid>` with an owner
    /// label, else 32 hex digits); `None` once released. It is the proof of ownership:
    /// whoever knows it can extend or release the lock, so hand it only to what acts for
    /// this owner (a child process doing the work, as `redlock run` does with
    /// `REDLOCK_VALUE`), never to logs or other clients.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(5)).await?;
    /// assert_eq!(guard.owner_value().map(str::len), Some(32));
    /// # Ok(())
    /// # }
    /// ```
    pub fn owner_value(&self) -> Option<&str> {
        self.held.as_ref().map(|h| &*h.value)
    }

    /// Which permit slot (`0..n`) this guard holds, if it is a semaphore's permit.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let permit = redlock.lock("gpu").permits(4).acquire().await?;
    /// assert!(permit.permit().is_some_and(|slot| slot < 4));
    /// # Ok(())
    /// # }
    /// ```
    pub fn permit(&self) -> Option<usize> {
        match self.kind {
            LockKind::Permit(slot) => Some(slot),
            _ => None,
        }
    }

    /// How many attempts the acquisition took.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.attempts() >= 1);
    /// # Ok(())
    /// # }
    /// ```
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The first (or only) resource.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert_eq!(guard.resource(), "job:1");
    /// # Ok(())
    /// # }
    /// ```
    pub fn resource(&self) -> &str {
        self.resources.first().map_or("", String::as_str)
    }

    /// Every resource this guard holds, in the order they were asked for.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire_many(&["a", "b"], std::time::Duration::from_secs(1)).await?;
    /// assert_eq!(guard.resources(), ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The instant until which the lock is guaranteed: the start of the winning attempt
    /// (or of the last extension) plus `ttl − drift`.
    ///
    /// Validity is measured on a clock that counts through suspend (`CLOCK_BOOTTIME` on
    /// Linux); the `Instant` returned is now plus what is left on it, so after the
    /// machine was suspended it is earlier than before (or already past).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.valid_until() > std::time::Instant::now());
    /// # Ok(())
    /// # }
    /// ```
    pub fn valid_until(&self) -> Instant {
        self.clock.instant(self.valid_until)
    }

    /// The end of the validity on the crate's own clock.
    pub(crate) fn deadline(&self) -> Deadline {
        self.valid_until
    }

    /// The runtime the lock was acquired on, where its drop releases it.
    pub(crate) fn runtime(&self) -> Option<tokio::runtime::Handle> {
        self.held.as_ref().and_then(|h| h.handle.clone())
    }

    /// The clock the validity is measured on.
    pub(crate) fn clock(&self) -> &Clock {
        &self.clock
    }

    /// How much of the validity is left; zero once it has run out.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.remaining_validity() <= std::time::Duration::from_secs(1));
    /// # Ok(())
    /// # }
    /// ```
    pub fn remaining_validity(&self) -> Duration {
        self.clock.left(self.valid_until)
    }

    /// Whether the validity has not run out yet.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.is_valid());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_valid(&self) -> bool {
        !self.clock.left(self.valid_until).is_zero()
    }

    /// The fencing token of this acquisition, when the manager was built with
    /// `fencing(true)`: greater than every token handed out before for the resource.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// if let Some(token) = guard.fencing_token() {
    ///     // pass `token` along with every write to the protected storage
    /// #   let _ = token;
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn fencing_token(&self) -> Option<u64> {
        self.token
    }

    /// The ttl the lock was taken (or last extended) with.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(2)).await?;
    /// assert_eq!(guard.ttl(), std::time::Duration::from_secs(2));
    /// # Ok(())
    /// # }
    /// ```
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Makes the lock live at least `ttl` from now on every node that still holds it
    /// with this owner's value, and succeeds when a quorum did so with validity left (at
    /// least the manager's [`min_validity`](crate::RedlockBuilder::min_validity)). The
    /// validity is counted from the start of this extension. The fencing token stays.
    ///
    /// A node's expiry is only ever raised, never lowered: a `ttl` shorter than what a
    /// node has left leaves that node as it is. So a copy of an older, shorter extension
    /// that reaches a node late (after this one, on a connection since dropped) cannot
    /// take back what this one promised (docs/safety.md, "Order cannot matter"). To give
    /// a lock up early, [`release`](Self::release) it.
    ///
    /// Before anything is sent, the guard's belief becomes the earlier of its old
    /// `valid_until` and `start + ttl − drift`: after a shorter extension the guard
    /// promises no more than the shorter ttl, even when the call fails or is dropped.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let mut guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// guard.extend(std::time::Duration::from_secs(5)).await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::LockLost`] when the validity had already run out, or too many nodes no
    /// longer hold this owner's value (the guard is then invalid); [`Error::NoQuorum`]
    /// when too few nodes answered, and [`Error::Expired`] when a quorum answered too
    /// late: the lock stays valid until the (possibly lowered) `valid_until`, and you may
    /// try again; [`Error::Config`] for a ttl under 3 ms. A failed extension never
    /// deletes the lock.
    ///
    /// # Cancel safety
    /// Dropping the future keeps the belief set before the first request (never later
    /// than it was); nodes that already extended keep the key longer, which is still
    /// this owner's and is released with it.
    pub async fn extend(&mut self, ttl: Duration) -> Result<(), Error> {
        let least = match &self.held {
            Some(held) => held.inner.config.min_validity,
            None => Duration::ZERO,
        };
        self.extend_at_least(ttl, least).await
    }

    /// [`extend`](Self::extend) that counts as won only with at least `least` validity
    /// left: a request's own `min_validity`, where the manager's is not the one asked
    /// for (the extension of a lock handed over between tasks).
    pub(crate) async fn extend_at_least(
        &mut self,
        ttl: Duration,
        least: Duration,
    ) -> Result<(), Error> {
        let result = self.extend_inner(ttl, least).await;
        metrics::extended(result.as_ref().map(|_| ()));
        result
    }

    async fn extend_inner(&mut self, ttl: Duration, least: Duration) -> Result<(), Error> {
        let resource = self.resource().to_owned();
        let lost = |reason| Error::LockLost {
            resource: resource.clone(),
            reason,
        };
        let Some(held) = &self.held else {
            return Err(lost(LostReason::ValidityEnded));
        };
        if !self.is_valid() {
            return Err(lost(LostReason::ValidityEnded));
        }
        let ttl_ms = quorum::ttl_ms(ttl)
            .map_err(|why| Error::Config(format!("extend ttl {ttl:?} is out of range: {why}")))?;
        let ttl = Duration::from_millis(ttl_ms);
        let inner = Arc::clone(&held.inner);
        let op = held.extend_op(ttl_ms);
        let span = tracing::debug_span!("extend", resource = %resource, ttl_ms);
        let drift = quorum::drift(ttl, inner.config.drift_factor);
        let start = self.clock.stamp();
        // The belief first: it follows the newest call, also a shorter one, whatever
        // comes of it. (The nodes keep the later expiry; they never lower one.)
        let promised = start.after(ttl.saturating_sub(drift));
        if !crate::mutants::OLD_BELIEF {
            self.valid_until = self.valid_until.min(promised);
        }
        // The stragglers extend too (when `replies` is dropped), so the key lives as long
        // on every healthy node.
        let mut replies = Collecting::new(fan_out(&inner.nodes, op), "extend");
        let votes = round::collect(
            &mut replies,
            &inner.nodes,
            Count::Votes,
            |value| match value {
                Value::Int(1) => Ok((Vote::Yes, ())),
                Value::Int(0) => Ok((Vote::No, ())),
                other => Err(format!("extend answered {other:?}")),
            },
            // Won: done. Lost: keep listening until the value is certainly gone from
            // every quorum or every node answered, so that "not held" votes arriving
            // after fast failures still end the guard's belief (issue 21, item 1); the
            // wait is bounded by the node timeout and only paid on a failed extension.
            |tally| {
                tally.outcome() == Some(Outcome::Won) || tally.value_lost() || tally.pending() == 0
            },
        )
        .instrument(span)
        .await;
        let tally = votes.tally;
        let elapsed = self.clock.since(start);
        let enough = quorum::validity(ttl, elapsed, drift).is_some_and(|left| left >= least);
        match tally.outcome() {
            Some(Outcome::Won) if enough => {
                self.valid_until = promised;
                self.ttl = ttl;
                Ok(())
            }
            _ if !self.is_valid() => Err(lost(LostReason::ValidityEnded)),
            Some(Outcome::Won) => Err(Error::Expired {
                resource,
                attempts: 1,
                elapsed,
                ttl,
            }),
            _ if tally.value_lost() => {
                // A quorum no longer holds this owner's value: nothing is promised now.
                self.valid_until = self.valid_until.min(self.clock.stamp());
                Err(lost(LostReason::NotHeld {
                    held: tally.yes,
                    needed: tally.quorum,
                }))
            }
            _ => Err(round::no_quorum(
                &resource,
                1,
                tally.yes,
                &tally,
                votes.causes,
            )),
        }
    }
}

impl Held {
    /// The release of what is held, by kind. Exclusive locks wake the waiters queued on
    /// their key; a write lock gives the readers that waited for it their turn and wakes
    /// them; the last reader out wakes the waiting writer; permits have no queue.
    pub(crate) fn release_op(&self) -> Op {
        let notify = self.inner.config.wake_on_release;
        if let Some(until) = self.hold {
            let left = self.inner.config.clock.left(until);
            let left_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX);
            if left_ms > 0 {
                return Op::hold_release(&self.keys, &self.value, left_ms);
            }
        }
        match self.kind {
            LockKind::Read => Op::read_release(&self.keys[0], &self.value, notify),
            LockKind::Write => Op::write_release(&self.keys[0], &self.value, notify),
            LockKind::Permit(_) => Op::release(&self.keys, &self.value, false),
            LockKind::Exclusive => Op::release(&self.keys, &self.value, notify),
        }
    }

    /// The extension of what is held to `ttl_ms` from now, by kind.
    pub(crate) fn extend_op(&self, ttl_ms: u64) -> Op {
        match self.kind {
            LockKind::Read => Op::read_extend(&self.keys[0], &self.value, ttl_ms),
            _ if self.inner.config.heal_on_extend => {
                Op::extend_healing(&self.keys, &self.value, ttl_ms)
            }
            _ => Op::extend(&self.keys, &self.value, ttl_ms),
        }
    }

    pub(crate) fn release_in_background(self, what: &'static str) {
        // Without the runtime the lock was taken on, nothing is sent: the TTL frees it.
        if let Some(handle) = &self.handle {
            let op = self.release_op();
            round::release_in_background(handle, Arc::clone(&self.inner.nodes), op, what);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let HandOver::Kept(turn) = self.pass_locally() {
            if let Some(held) = self.held.take() {
                held.release_in_background("dropped guard");
            }
            // The next local waiter, if any, competes once the release is on its way.
            drop(turn);
        }
    }
}
