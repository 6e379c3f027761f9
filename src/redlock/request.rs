//! [`LockRequest`]: one acquisition with its own options, on the manager's connections.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::{Redlock, Want};
use crate::error::Error;
use crate::guard::LockGuard;
use crate::lease::{Lease, LeaseOptions};

/// The ttl of a request that sets none: long enough for most jobs with a keep-alive
/// (`with`) extending it every few seconds, short enough that a crashed holder blocks
/// others for seconds, not minutes.
const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// A lock request with per-call options, made by [`Redlock::lock`]; it shares the
/// manager's connections and wake-ups, so no second manager is needed for a different
/// wait policy. [`acquire`](Self::acquire), [`try_acquire`](Self::try_acquire) and
/// [`with`](Self::with) end the chain; every option not set is the manager's.
///
/// ```no_run
/// # use std::time::Duration;
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// // One attempt inside with-lock style work: no second manager with retry_count(0).
/// let done = redlock
///     .lock("report:daily")
///     .ttl(Duration::from_secs(30))
///     .retries(0)
///     .with(|lease| async move { lease.fencing_token() })
///     .await?;
/// # let _ = done;
/// # Ok(())
/// # }
/// ```
#[must_use = "a lock request does nothing until acquire(), try_acquire() or with() is awaited"]
#[derive(Clone)]
pub struct LockRequest<'a> {
    redlock: &'a Redlock,
    resource: String,
    want: Want,
    /// Whether `retries` was set; with only `wait` set, retries are unbounded.
    retries_set: bool,
    options: LeaseOptions,
}

impl fmt::Debug for LockRequest<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockRequest")
            .field("resource", &self.resource)
            .field("ttl", &self.want.ttl)
            .field("retries", &self.want.retries)
            .field("wait", &self.want.wait)
            .field("min_validity", &self.want.min_validity)
            .field("options", &self.options)
            .finish()
    }
}

impl<'a> LockRequest<'a> {
    pub(super) fn new(redlock: &'a Redlock, resource: &str) -> Self {
        Self {
            redlock,
            resource: resource.to_owned(),
            want: redlock.want(DEFAULT_TTL),
            retries_set: false,
            options: LeaseOptions::default(),
        }
    }

    /// How long the nodes keep the lock (see [`Redlock::acquire`]). Defaults to 10 s.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.lock("job:1").ttl(std::time::Duration::from_secs(2)).acquire().await?;
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.want.ttl = ttl;
        self
    }

    /// Give up once this much time has passed: no attempt starts after it, and a wait
    /// for a release ends at it. Without [`retries`](Self::retries), attempts are then
    /// bounded by this budget alone. An attempt under way when the budget ends may
    /// finish up to one node timeout later. Defaults to none (the retries bound it).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock
    ///     .lock("job:1")
    ///     .ttl(Duration::from_secs(5))
    ///     .wait(Duration::from_secs(30))
    ///     .acquire()
    ///     .await?;
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn wait(mut self, budget: Duration) -> Self {
        self.want.wait = Some(budget);
        if !self.retries_set {
            self.want.retries = u32::MAX;
        }
        self
    }

    /// Attempts after the first one: at most `retries + 1` are made. Defaults to the
    /// manager's [`retry_count`](crate::RedlockBuilder::retry_count).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.lock("job:1").retries(3).acquire().await?;
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn retries(mut self, retries: u32) -> Self {
        self.want.retries = retries;
        self.retries_set = true;
        self
    }

    /// A grant with less validity left than this counts as a failed attempt: it is
    /// undone and retried. Defaults to the manager's
    /// [`min_validity`](crate::RedlockBuilder::min_validity).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// // The charge takes up to 300 ms: a lock with less left is no use.
    /// let guard = redlock
    ///     .lock("payment:42")
    ///     .ttl(Duration::from_secs(2))
    ///     .min_validity(Duration::from_millis(300))
    ///     .acquire()
    ///     .await?;
    /// # drop(guard);
    /// # Ok(())
    /// # }
    /// ```
    pub fn min_validity(mut self, least: Duration) -> Self {
        self.want.min_validity = least;
        self
    }

    /// How [`with`](Self::with) keeps the lock alive. Defaults to
    /// [`LeaseOptions::default`].
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use tokio_redlock::LeaseOptions;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// redlock
    ///     .lock("export")
    ///     .lease_options(LeaseOptions::default().max_hold(Some(Duration::from_secs(600))))
    ///     .with(|_lease| async move { /* ... */ })
    ///     .await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lease_options(mut self, options: LeaseOptions) -> Self {
        self.options = options;
        self
    }

    /// Acquires with these options.
    ///
    /// # Errors
    /// As for [`Redlock::acquire`]; [`Error::Config`] also for a `min_validity` that no
    /// grant of this ttl could leave.
    ///
    /// # Cancel safety
    /// As for [`Redlock::acquire`].
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        self.redlock
            .acquire_with(&[&self.resource], self.want)
            .await
    }

    /// Makes exactly one attempt with these options.
    ///
    /// # Errors
    /// As for [`acquire`](Self::acquire).
    ///
    /// # Cancel safety
    /// As for [`Redlock::acquire`].
    pub async fn try_acquire(mut self) -> Result<LockGuard, Error> {
        self.want.retries = 0;
        self.want.wait = None;
        self.acquire().await
    }

    /// Acquires with these options and runs `work` under the lock, kept alive in the
    /// background, exactly as [`Redlock::with_lock_opts`] does.
    ///
    /// # Errors
    /// As for [`Redlock::with_lock`].
    ///
    /// # Cancel safety
    /// As for [`Redlock::with_lock`].
    pub async fn with<F, Fut, T>(self, work: F) -> Result<T, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self
            .redlock
            .acquire_with(&[&self.resource], self.want)
            .await?;
        crate::lease::run_kept(guard, self.options, work).await
    }
}
