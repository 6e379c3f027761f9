//! Keep-alive: [`Lease`], [`KeptGuard`] and [`Redlock::with_lock`](crate::Redlock::with_lock).
//!
//! A background task owns the [`LockGuard`] and extends it before it runs out. Each
//! extension counts its validity from its own start; none is sent once the local
//! validity has ended; a failed extension never deletes the lock; and when no extension
//! succeeded in time the lease is declared lost no later than its last known validity.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::Instrument;

use crate::clock::{Clock, Deadline};
use crate::error::{Error, LostReason};
use crate::guard::LockGuard;
use crate::kind::LockKind;
use crate::sync::lock;

pub(crate) mod options;
mod with_lock;

pub use options::LeaseOptions;
pub use with_lock::WorkOutcome;
pub(crate) use with_lock::{run_kept, run_kept_outcome};

/// The least pause between two extension tries after a failure: the node timeout is
/// tens of ms, so retrying faster would only pile requests on a sick node.
const MIN_RETRY_PAUSE: Duration = Duration::from_millis(10);
/// How long before `valid_until` the keep-alive gives up and declares the lock lost.
/// tokio's timer rounds a deadline up to its next 1 ms tick and the woken task still has
/// to be scheduled, so waking exactly at `valid_until` would declare the loss a little
/// after it; waking 2 ms early keeps the promise "lost no later than `valid_until`"
/// up to scheduling delay, and costs nothing but 2 ms of a lock that is being lost anyway.
const LOSS_MARGIN: Duration = Duration::from_millis(2);

struct LeaseState {
    resource: String,
    token: Option<u64>,
    kind: LockKind,
    clock: Clock,
    /// Never later than the guard's own belief (see [`LockGuard::extend`]).
    valid_until: Mutex<Deadline>,
    lost: CancellationToken,
    reason: Mutex<Option<LostReason>>,
    extensions: Mutex<u32>,
}

/// A handle on a lock kept alive in the background: its fencing token, whether it is
/// still held, and the loss signal, as a future ([`lost`](Self::lost)) and as a
/// [`CancellationToken`] ([`cancellation_token`](Self::cancellation_token)).
///
/// Cheap to clone; every clone sees the same lock. Dropping a `Lease` changes nothing:
/// the lock is owned by the [`KeptGuard`] or the `with_lock` call that made it.
///
/// # Example: stop waiting for jobs when the lock is lost
/// [`with_lock`](crate::Redlock::with_lock) drops the work on a loss by default, before
/// the work could see it; [`LeaseOptions::drop_work_on_loss`]`(false)` lets the work
/// watch the loss and stop by itself. Here it stops while waiting for the next job
/// (abandoning a wait loses nothing); a job that started is finished, outside the
/// `select!`, and checked against the lease first.
/// ```no_run
/// # use std::time::Duration;
/// # async fn next_job() -> Option<u32> { None }
/// # async fn process(_: u32, _: Option<u64>) {}
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// use tokio_redlock::LeaseOptions;
///
/// let opts = LeaseOptions::default().drop_work_on_loss(false);
/// redlock
///     .lock("queue:exports")
///     .ttl(Duration::from_secs(10))
///     .lease_options(opts)
///     .with(|lease| async move {
///         loop {
///             let job = tokio::select! {
///                 biased;
///                 _ = lease.lost() => return,
///                 job = next_job() => job,
///             };
///             match job {
///                 Some(job) if lease.is_held() => process(job, lease.fencing_token()).await,
///                 _ => return,
///             }
///         }
///     })
///     .await?; // Err(LockLost) once the work returned, if the lock was lost
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Lease {
    shared: Arc<LeaseState>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("resource", &self.shared.resource)
            .field("fencing_token", &self.shared.token)
            .field("is_held", &self.is_held())
            .field("extensions", &self.extensions())
            .finish()
    }
}

impl Lease {
    /// The resource (the first one, for several).
    pub fn resource(&self) -> &str {
        &self.shared.resource
    }

    /// The fencing token of the acquisition; extensions keep it.
    pub fn fencing_token(&self) -> Option<u64> {
        self.shared.token
    }

    /// What the lease keeps alive: an exclusive lock, a read or write lock, or a
    /// semaphore's permit, as [`LockGuard::kind`] says.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// redlock
    ///     .lock("doc:1")
    ///     .read()
    ///     .with(|lease| async move {
    ///         assert_eq!(lease.kind(), tokio_redlock::LockKind::Read);
    ///     })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn kind(&self) -> LockKind {
        self.shared.kind
    }

    /// Which permit slot (`0..n`) the lease keeps, if it is a semaphore's permit, as
    /// [`LockGuard::permit`] says.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// redlock
    ///     .lock("gpu")
    ///     .permits(4)
    ///     .with(|lease| async move { println!("on GPU {:?}", lease.permit()) })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn permit(&self) -> Option<usize> {
        match self.shared.kind {
            LockKind::Permit(slot) => Some(slot),
            _ => None,
        }
    }

    /// Whether the lock is still guaranteed: not declared lost, not released (by
    /// [`KeptGuard::release`] or its drop), and within its validity.
    pub fn is_held(&self) -> bool {
        !self.shared.lost.is_cancelled() && !self.remaining_validity().is_zero()
    }

    /// Until when the lock is guaranteed, as of the last successful extension.
    pub fn valid_until(&self) -> Instant {
        self.shared.clock.instant(*lock(&self.shared.valid_until))
    }

    /// How much of the validity is left; zero once it has run out.
    pub fn remaining_validity(&self) -> Duration {
        self.shared.clock.left(*lock(&self.shared.valid_until))
    }

    /// How many extensions have succeeded.
    pub fn extensions(&self) -> u32 {
        *lock(&self.shared.extensions)
    }

    /// Why the lock was lost, once it was; `None` while it is held and after a release.
    pub fn lost_reason(&self) -> Option<LostReason> {
        lock(&self.shared.reason).clone()
    }

    /// Resolves once the lock is no longer guaranteed: an extension found it gone, or no
    /// extension succeeded before the validity ended. The keep-alive gives up a couple
    /// of milliseconds before the last known [`valid_until`](Self::valid_until), so this
    /// resolves no later than it, up to the delay of scheduling the waiting task.
    ///
    /// It also resolves once the holder released the lock ([`KeptGuard::release`] or
    /// its drop, or the end of `with_lock`); [`lost_reason`](Self::lost_reason) then
    /// stays `None`.
    ///
    /// Use it with `tokio::select!` to stop work at a point of your choosing (see the
    /// example on [`Lease`]): in a task that watches a [`KeptGuard`], or in the work of
    /// [`LockRequest::with`](crate::LockRequest::with) with
    /// [`LeaseOptions::drop_work_on_loss`]`(false)`. Under the default of
    /// [`with_lock`](crate::Redlock::with_lock), the work is dropped as this resolves,
    /// so a branch of the work that waits for it never runs. Without a tokio runtime
    /// nothing keeps the lock alive and nothing resolves this; [`is_held`](Self::is_held)
    /// still turns false in time.
    ///
    /// # Cancel safety
    /// Cancel safe: dropping the future changes nothing.
    pub async fn lost(&self) {
        self.shared.lost.cancelled().await;
    }

    /// A token cancelled exactly when [`lost`](Self::lost) resolves: once the lock is
    /// lost, and also once it is released (then [`lost_reason`](Self::lost_reason) stays
    /// `None`), since in both cases nothing the token guards is protected any more.
    ///
    /// Each call returns a new child of the lease's own signal: cancelling it (or a
    /// child of it) stops only what listens to it, never the lease, which is still held
    /// and kept alive. Use it to stop tasks the work spawned, with
    /// [`CancellationToken::run_until_cancelled`], or to join it to a shutdown tree.
    ///
    /// ```no_run
    /// # async fn upload_chunks() {}
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let kept = redlock.acquire("sync:1", std::time::Duration::from_secs(3)).await?.keep_alive();
    /// let token = kept.lease().cancellation_token();
    /// // The upload stops at its next await once the lock is lost (or released).
    /// let upload = tokio::spawn(async move { token.run_until_cancelled(upload_chunks()).await });
    /// if upload.await.ok().flatten().is_none() {
    ///     eprintln!("upload stopped early: the lock was lost");
    /// }
    /// kept.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn cancellation_token(&self) -> CancellationToken {
        self.shared.lost.child_token()
    }

    fn declare_lost(&self, reason: LostReason) {
        {
            let mut slot = lock(&self.shared.reason);
            if slot.is_none() {
                *slot = Some(reason.clone());
            }
        }
        if !self.shared.lost.is_cancelled() {
            tracing::warn!(resource = %self.shared.resource, %reason, "lock lost");
            crate::metrics::lost(&reason);
        }
        self.shared.lost.cancel();
    }

    /// The holder gave the lock up: not held any more, and `lost()` waiters wake.
    fn mark_released(&self) {
        self.shared.lost.cancel();
    }

    fn lost_error(&self) -> Error {
        Error::LockLost {
            resource: self.shared.resource.clone(),
            reason: self.lost_reason().unwrap_or(LostReason::ValidityEnded),
        }
    }
}

/// A [`LockGuard`] kept alive by a background task; made by [`LockGuard::keep_alive`].
///
/// Dropping it stops the keep-alive and releases the lock in the background.
#[must_use = "dropping it releases the lock at once"]
pub struct KeptGuard {
    lease: Lease,
    stop: CancellationToken,
    task: Option<AbortOnDropHandle<Option<LockGuard>>>,
}

impl fmt::Debug for KeptGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeptGuard")
            .field("lease", &self.lease)
            .finish()
    }
}

impl KeptGuard {
    /// The lease: token, state, and the `lost()` signal.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let kept = redlock.acquire("job:1", std::time::Duration::from_secs(3)).await?.keep_alive();
    /// let lease = kept.lease().clone(); // hand it to whoever must watch the lock
    /// tokio::spawn(async move {
    ///     lease.lost().await;
    ///     eprintln!("`{}` is no longer held", lease.resource());
    /// });
    /// // ... the work ...
    /// kept.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// Stops the keep-alive and releases the lock.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let kept = redlock.acquire("job:1", std::time::Duration::from_secs(3)).await?.keep_alive();
    /// // ... the work ...
    /// kept.release().await?; // Err(LockLost) if it was lost meanwhile
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::LockLost`] if the lock had been lost before; otherwise as for
    /// [`LockGuard::release`].
    pub async fn release(mut self) -> Result<(), Error> {
        self.stop.cancel();
        let guard = match self.task.take() {
            Some(task) => task.await.ok().flatten(),
            None => None,
        };
        // From here on the lock is not guaranteed: the release is under way.
        self.lease.mark_released();
        match guard {
            Some(guard) => guard.release().await,
            None => Err(self.lease.lost_error()),
        }
    }
}

impl Drop for KeptGuard {
    fn drop(&mut self) {
        // Stop the task; it hands the guard back by dropping it, which releases in
        // the background. Aborting (by the handle's drop) does the same if it was
        // mid-extension.
        self.stop.cancel();
        self.lease.mark_released();
    }
}

impl LockGuard {
    /// Keeps this lock alive in the background with the default [`LeaseOptions`]
    /// until the returned guard is released or dropped.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn import(_: u32) {}
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let kept = redlock.acquire("import:1", Duration::from_secs(3)).await?.keep_alive();
    /// for batch in 0..100 {
    ///     // Checked before each irreversible step.
    ///     if !kept.lease().is_held() {
    ///         break;
    ///     }
    ///     import(batch).await;
    /// }
    /// kept.release().await?; // Err(LockLost) if it was lost meanwhile
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// The keep-alive runs on the runtime the lock was acquired on (where its drop also
    /// releases it), whether or not a runtime is current where this is called.
    ///
    /// # Panics
    /// Never; if that runtime is gone nothing is kept alive, nothing releases the lock
    /// either, and the lease is lost when the validity ends.
    pub fn keep_alive(self) -> KeptGuard {
        let options = self.options();
        self.keep_alive_as(options)
    }

    /// Like [`keep_alive`](Self::keep_alive), with options: what
    /// [`LockRequest::lease_options`](crate::LockRequest::lease_options) gives, the one
    /// documented way (`redlock.lock(r).lease_options(o).acquire().await?.keep_alive()`).
    #[doc(hidden)]
    #[deprecated(
        note = "pass the options with `lock(resource).lease_options(options)`, then `keep_alive()`"
    )]
    pub fn keep_alive_with(self, options: LeaseOptions) -> KeptGuard {
        self.keep_alive_as(options)
    }

    fn keep_alive_as(self, options: LeaseOptions) -> KeptGuard {
        let lease = Lease {
            shared: Arc::new(LeaseState {
                resource: self.resource().to_owned(),
                token: self.fencing_token(),
                kind: self.kind(),
                clock: self.clock().clone(),
                valid_until: Mutex::new(self.deadline()),
                lost: CancellationToken::new(),
                reason: Mutex::new(None),
                extensions: Mutex::new(0),
            }),
        };
        let stop = CancellationToken::new();
        // The runtime the lock was taken on: the guard's drop releases there, so the
        // keep-alive must run there too, or a lease could outlive its released lock.
        let handle = if crate::mutants::KEEP_ALIVE_HERE {
            tokio::runtime::Handle::try_current().ok()
        } else {
            self.runtime()
                .or_else(|| tokio::runtime::Handle::try_current().ok())
        };
        let task = match handle {
            Some(handle) => {
                let span = tracing::debug_span!("keep_alive", resource = %self.resource());
                let task = keep_alive_task(self, lease.clone(), options, stop.clone());
                Some(AbortOnDropHandle::new(handle.spawn(task.instrument(span))))
            }
            None => {
                // No runtime at all: the guard's own Drop sends nothing either, so the
                // lock stands until its validity ends, as the lease says.
                drop(self);
                None
            }
        };
        KeptGuard { lease, stop, task }
    }
}

/// Declares the lease lost if the keep-alive ends without handing the lock back or
/// declaring it lost itself (a panic in it, or its runtime shutting down): the guard it
/// owned is dropped then, and with it the lock.
struct LostUnlessDisarmed(Option<Lease>);

impl Drop for LostUnlessDisarmed {
    fn drop(&mut self) {
        if let Some(lease) = self.0.take() {
            // Released by its holder meanwhile: that is no loss.
            if !lease.shared.lost.is_cancelled() {
                lease.declare_lost(LostReason::ExtensionFailed);
            }
        }
    }
}

async fn keep_alive_task(
    guard: LockGuard,
    lease: Lease,
    options: LeaseOptions,
    stop: CancellationToken,
) -> Option<LockGuard> {
    let mut on_exit = LostUnlessDisarmed(Some(lease.clone()));
    let kept = keep_alive_loop(guard, &lease, options, stop).await;
    on_exit.0 = None;
    kept
}

async fn keep_alive_loop(
    mut guard: LockGuard,
    lease: &Lease,
    options: LeaseOptions,
    stop: CancellationToken,
) -> Option<LockGuard> {
    let clock = guard.clock().clone();
    let ttl = guard.ttl();
    // The acquisition started at `valid_until − (ttl − drift)`; `valid_until − ttl` is a
    // little earlier, so counting the hold time and the first extension from it errs on
    // the early side without needing the drift here.
    let acquired_at = guard.deadline().before(ttl);
    let every = ttl.mul_f64(options.extend_after);
    let mut next = acquired_at.after(every);
    let mut capped = false;
    loop {
        let give_up_at = give_up_at(&guard);
        // Wake to extend, to stop, or when the validity ends, whichever comes first.
        let wake = if capped {
            give_up_at
        } else {
            next.min(give_up_at)
        };
        // Timers run on tokio's (monotonic) clock and the validity on the suspend-aware
        // one: after a suspend the timer fires late, but `is_held()` reads the validity
        // clock and turns false in time.
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Some(guard),
            _ = tokio::time::sleep(clock.left(wake)) => {}
        }
        // No extension is sent once the local validity has (nearly) ended: a quorum
        // reached now could not be told from one that came too late.
        if clock.left(give_up_at).is_zero() {
            lease.declare_lost(if capped {
                LostReason::CapReached
            } else {
                LostReason::ExtensionFailed
            });
            return None;
        }
        if capped {
            continue;
        }
        let over_hold = options
            .max_hold
            .is_some_and(|cap| clock.stamp().after(ttl).is_after(acquired_at.after(cap)));
        let over_count = options
            .max_extensions
            .is_some_and(|cap| lease.extensions() >= cap);
        if over_hold || over_count {
            tracing::debug!("keep-alive cap reached; the lock runs out at its validity");
            capped = true;
            continue;
        }
        // Never past the local validity: the extension is abandoned when it ends, and
        // the lock declared lost. Abandoning never deletes: nodes that extended keep
        // this owner's key a little longer, and the guard's release removes it.
        let result = tokio::select! {
            biased;
            _ = stop.cancelled() => return Some(guard),
            r = tokio::time::timeout(clock.left(give_up_at), guard.extend(ttl)) => r,
        };
        // Whatever came of it, the lease believes no more than the guard now does.
        *lock(&lease.shared.valid_until) = guard.deadline();
        match result {
            Ok(Ok(())) => {
                next = clock.stamp().after(every);
                *lock(&lease.shared.extensions) += 1;
                tracing::debug!(remaining = ?guard.remaining_validity(), "extended");
            }
            Ok(Err(Error::LockLost { reason, .. })) => {
                lease.declare_lost(reason);
                return None;
            }
            Ok(Err(e)) => {
                // NoQuorum (nodes down or slow) or Expired (a quorum too late): the lock
                // may still stand, so nothing is deleted and the next try comes soon.
                tracing::warn!(error = %e, "extension failed; trying again before the validity ends");
                // Retry soon, a few times before the validity ends.
                let pause = (ttl / 10).max(MIN_RETRY_PAUSE);
                next = clock.stamp().after(pause);
            }
            Err(_elapsed) => {
                lease.declare_lost(LostReason::ExtensionFailed);
                return None;
            }
        }
    }
}

/// The moment the keep-alive treats as the end of `guard`'s validity (see [`LOSS_MARGIN`]).
fn give_up_at(guard: &LockGuard) -> Deadline {
    guard.deadline().before(LOSS_MARGIN)
}

#[cfg(test)]
mod tests;
