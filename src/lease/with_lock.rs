//! [`Redlock::with_lock`]: scoped work under a lock kept alive in the background.

use std::future::Future;
use std::time::Duration;

use super::{Lease, LeaseOptions};
use crate::error::Error;
use crate::guard::LockGuard;
use crate::redlock::Redlock;

impl Redlock {
    /// Runs `work` while holding the lock on `resource`, kept alive in the background,
    /// and releases it when `work` ends.
    ///
    /// The lock is acquired with the manager's retries and extended each time a third
    /// of `ttl` has passed (see [`LockRequest::lease_options`](crate::LockRequest::lease_options)); each extension
    /// counts its validity from its own start. It is released when `work` finishes, when
    /// it panics, and when this future is dropped.
    ///
    /// # When the lock is lost
    /// The loss is declared when no extension succeeded before the validity ended, or
    /// the nodes said the lock is gone; no later than the last [`Lease::valid_until`] up
    /// to scheduling delay. What happens to `work` then is
    /// [`LeaseOptions::drop_work_on_loss`]'s choice:
    ///
    /// - By default (`true`), `work` is **dropped** and this returns [`Error::LockLost`]
    ///   at once. Dropping a future is cancellation *at the `.await` it is suspended
    ///   on*: nothing interrupts code that is running between two awaits, so a step that
    ///   started while the lock was held runs on to its next await, and whatever state
    ///   it left half done stays that way. A long CPU-bound stretch or a blocking call is
    ///   not stopped at all. The work does not get to react to the loss: this call
    ///   sees it first and drops the work, so a branch of the work that waits for
    ///   [`Lease::lost`] runs at most up to its first await, if at all.
    /// - With `drop_work_on_loss(false)` (through [`LockRequest::lease_options`](crate::LockRequest::lease_options)),
    ///   [`Lease::lost`] resolves and [`Lease::cancellation_token`] is cancelled, `work`
    ///   runs on until it returns, and then this returns [`Error::LockLost`] (the output
    ///   is discarded). Work that must stop at a point of its own choosing watches the
    ///   loss with `tokio::select!` and checks [`Lease::is_held`] before each
    ///   irreversible step, as below.
    ///
    /// Either way, storage that must refuse a paused holder should check the fencing
    /// token (see [`FenceGate`](crate::FenceGate)): a check of `is_held` can be stale by
    /// the time the step lands.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn charge(_: Option<u64>) -> u64 { 7 }
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// // Dropped if the lock is lost: fine for a step that is all or nothing.
    /// let receipt = redlock
    ///     .with_lock("payment:42", Duration::from_secs(5), |lease| async move {
    ///         charge(lease.fencing_token()).await
    ///     })
    ///     .await?;
    /// println!("charged, receipt {receipt}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// Work that stops between batches and commits only while the lock is held:
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn copy_batch(_: usize) {}
    /// # async fn commit(_: Option<u64>) {}
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// use tokio_redlock::LeaseOptions;
    ///
    /// // Let the work see the loss instead of being dropped.
    /// let opts = LeaseOptions::default().drop_work_on_loss(false);
    /// let copied = redlock
    ///     .lock("import:daily")
    ///     .ttl(Duration::from_secs(5))
    ///     .lease_options(opts)
    ///     .with(|lease| async move {
    ///         let mut done = 0;
    ///         for batch in 0..1_000 {
    ///             // Stop between batches, never inside one: a batch that started ends.
    ///             if !lease.is_held() {
    ///                 break;
    ///             }
    ///             copy_batch(batch).await;
    ///             done += 1;
    ///         }
    ///         if lease.is_held() {
    ///             commit(lease.fencing_token()).await;
    ///         }
    ///         done
    ///     })
    ///     .await?; // Err(LockLost) after the work returned, if the lock was lost
    /// println!("{copied} batches copied and committed");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// What [`acquire`](Self::acquire) returns; [`Error::LockLost`] when the lock was lost
    /// while `work` ran, or found lost by the release at the end (see
    /// [`LockGuard::release`](crate::LockGuard::release)). Any other failure of that
    /// release is logged, not returned: the work is done, and the lock expires with its
    /// TTL.
    ///
    /// # Panics
    /// Never itself. If `work` panics, the panic goes on to the caller (to the
    /// `JoinHandle` when this runs in a spawned task) and, while it unwinds, the
    /// keep-alive is stopped and the lock released in the background.
    ///
    /// # Cancel safety
    /// Dropping this future (a `timeout`, a `select!` that took another branch, an
    /// aborted task) drops `work`, stops the keep-alive and releases the lock in the
    /// background; while it is still acquiring, what the attempt set is undone.
    pub async fn with_lock<F, Fut, T>(
        &self,
        resource: &str,
        ttl: Duration,
        work: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(resource, ttl).await?;
        run_kept(guard, LeaseOptions::default(), work).await
    }

    /// Like [`with_lock`](Self::with_lock), with [`LeaseOptions`]: the documented way is
    /// `redlock.lock(resource).ttl(ttl).lease_options(options).with(work)`
    /// ([`LockRequest::lease_options`](crate::LockRequest::lease_options)).
    #[doc(hidden)]
    #[deprecated(note = "use `lock(resource).ttl(ttl).lease_options(options).with(work)`")]
    pub async fn with_lock_opts<F, Fut, T>(
        &self,
        resource: &str,
        ttl: Duration,
        options: LeaseOptions,
        work: F,
    ) -> Result<T, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire(resource, ttl).await?;
        run_kept(guard, options, work).await
    }
}

/// How scoped work under a kept-alive lock ended
/// ([`LockRequest::with_outcome`](crate::LockRequest::with_outcome)).
///
/// Dropping it drops the output; the lock is released (or expired) either way.
#[derive(Debug)]
#[must_use = "the outcome says whether the work ran under the lock to its end"]
pub enum WorkOutcome<T> {
    /// The work returned while the lock was held, and the lock was held until released.
    Done(T),
    /// The lock was lost while the work ran, or found lost by the release at its end.
    Lost {
        /// The work's output, if it ran to its end: with
        /// [`LeaseOptions::drop_work_on_loss`]`(false)`, or when the loss was found only
        /// at the release. `None` when the work was dropped at the loss.
        output: Option<T>,
        /// The loss, an [`Error::LockLost`] saying why.
        error: Error,
    },
}

impl<T> WorkOutcome<T> {
    /// The output, whether the lock held to the end or not (`None` only when the work
    /// was dropped at a loss).
    pub fn output(self) -> Option<T> {
        match self {
            Self::Done(out) => Some(out),
            Self::Lost { output, .. } => output,
        }
    }

    /// Whether the lock was lost before the work's end was released.
    pub fn is_lost(&self) -> bool {
        matches!(self, Self::Lost { .. })
    }

    /// `Ok(output)` when the lock held to the end, else the loss: what
    /// [`with`](crate::LockRequest::with) returns.
    ///
    /// # Errors
    /// [`Error::LockLost`] when the lock was lost.
    pub fn into_result(self) -> Result<T, Error> {
        match self {
            Self::Done(out) => Ok(out),
            Self::Lost { error, .. } => Err(error),
        }
    }
}

/// Runs `work` under `guard`, kept alive with `options`, and releases it at the end: the
/// body of [`Redlock::with_lock`] and of `LockRequest::with`.
pub(crate) async fn run_kept<F, Fut, T>(
    guard: LockGuard,
    options: LeaseOptions,
    work: F,
) -> Result<T, Error>
where
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = T>,
{
    run_kept_outcome(guard, options, work).await.into_result()
}

/// Like [`run_kept`], with the output kept beside a loss.
pub(crate) async fn run_kept_outcome<F, Fut, T>(
    guard: LockGuard,
    options: LeaseOptions,
    work: F,
) -> WorkOutcome<T>
where
    F: FnOnce(Lease) -> Fut,
    Fut: Future<Output = T>,
{
    let mut guard = guard;
    guard.set_options(options);
    let kept = guard.keep_alive();
    let lease = kept.lease().clone();
    let work = work(lease.clone());
    let out = if options.drop_work_on_loss {
        tokio::select! {
            // The loss is checked first: a lock lost at the same moment the work ends
            // is reported as lost, since the work's end was not protected.
            biased;
            _ = lease.lost() => {
                return WorkOutcome::Lost { output: None, error: lease.lost_error() };
            }
            out = work => out,
        }
    } else {
        // The work sees the loss through the lease and decides when to stop.
        work.await
    };
    // Lost while the work ran (declared by the keep-alive; a release cannot have
    // happened yet, since `kept` is still here): the work's end was not protected.
    if lease.lost_reason().is_some() {
        return WorkOutcome::Lost {
            output: Some(out),
            error: lease.lost_error(),
        };
    }
    if let Err(e) = kept.release().await {
        if e.is_lock_lost() {
            return WorkOutcome::Lost {
                output: Some(out),
                error: e,
            };
        }
        tracing::warn!(error = %e, "release after with_lock failed; the lock expires with its ttl");
    }
    WorkOutcome::Done(out)
}
