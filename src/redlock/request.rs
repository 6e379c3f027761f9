//! [`LockRequest`]: one acquisition with its own options, on the manager's connections.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use super::{LockInfo, Redlock, Want};
use crate::error::Error;
use crate::guard::LockGuard;
use crate::kind::Mode;
use crate::lease::{Lease, LeaseOptions, WorkOutcome};

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
    /// Exclusive (the default), read, write, or a permit of a semaphore.
    mode: Mode,
    /// Two different kinds asked of one request (`.read().permits(2)`): refused with
    /// [`Error::Config`] where the chain ends, rather than the last call silently winning.
    clash: Option<(Mode, Mode)>,
    /// Keep the lock at least this long after it was acquired, even if released sooner.
    hold: Option<Duration>,
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
            .field("mode", &self.mode)
            .field("clash", &self.clash)
            .field("hold_at_least", &self.hold)
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
            mode: Mode::Exclusive,
            clash: None,
            hold: None,
        }
    }

    /// Asks for `mode`; a different kind asked before is a clash.
    fn ask(mut self, mode: Mode) -> Self {
        if self.mode != Mode::Exclusive && self.mode != mode && self.clash.is_none() {
            self.clash = Some((self.mode, mode));
        }
        self.mode = mode;
        self
    }

    /// [`Error::Config`] if two kinds were asked of this request.
    fn one_kind(&self) -> Result<(), Error> {
        let Some((first, then)) = self.clash else {
            return Ok(());
        };
        let call = |m: Mode| match m {
            Mode::Exclusive => "an exclusive lock".to_owned(),
            Mode::Read => "read()".to_owned(),
            Mode::Write => "write()".to_owned(),
            Mode::Permits(n) => format!("permits({n})"),
        };
        Err(Error::Config(format!(
            "the request for `{}` asks for both {} and {}: a request takes one kind, so \
             call only one of read(), write() and permits(n)",
            self.resource,
            call(first),
            call(then)
        )))
    }

    /// Asks for a read lock: shared with other readers, never held while a writer (or
    /// an exclusive lock) holds the resource. Admission is phase-fair: a reader that
    /// comes while a writer waits for readers to leave waits for that writer, so writers
    /// do not starve; readers that were waiting when a writer released (or when the next
    /// writer arrived) go before the next writer, so readers do not starve either. The
    /// guard's [`kind`](LockGuard::kind) is [`LockKind::Read`](crate::LockKind::Read);
    /// it has no fencing token. A waiting reader is woken when its turn comes (with
    /// [`wake_on_release`](crate::RedlockBuilder::wake_on_release)), else retries on
    /// the timer.
    ///
    /// **Readers hold the resource**: while a reader is live, an exclusive acquisition
    /// of the same resource ([`Redlock::acquire`](crate::Redlock::acquire), or another
    /// client's plain `SET key value NX PX`) is refused, as a writer is. On each node the
    /// resource's key holds a readers marker that expires with the longest reader and is
    /// removed by the last one to leave. A plain exclusive lock of the same resource
    /// keeps new readers out; unlike [`write`](Self::write) it does not wait in line
    /// (it retries, and is refused while readers hold).
    ///
    /// One kind per request: with another of `read()`, `write()` and `permits(n)` as
    /// well, the request ends in [`Error::Config`].
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let a = redlock.lock("doc:1").read().acquire().await?;
    /// let b = redlock.lock("doc:1").read().acquire().await?; // readers share
    /// # drop((a, b));
    /// # Ok(())
    /// # }
    /// ```
    pub fn read(self) -> Self {
        self.ask(Mode::Read)
    }

    /// Asks for a write lock: an exclusive lock of the resource's key that is only
    /// granted once no reader holds it and the readers that were waiting before it have
    /// had their turn. While it waits it keeps new readers out (until shortly after
    /// its last attempt once it gave up, was cancelled or died: one retry pause plus two
    /// node timeouts and 50 ms). Writers exclude each other and plain exclusive locks
    /// of the same resource, and with fencing on take their tokens from the same
    /// counter. A waiting writer is woken when the last reader leaves (with
    /// [`wake_on_release`](crate::RedlockBuilder::wake_on_release)), else retries on
    /// the timer.
    ///
    /// One kind per request: with another of `read()`, `write()` and `permits(n)` as
    /// well, the request ends in [`Error::Config`].
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let w = redlock.lock("doc:1").write().acquire().await?;
    /// assert_eq!(w.kind(), tokio_redlock::LockKind::Write);
    /// # Ok(())
    /// # }
    /// ```
    pub fn write(self) -> Self {
        self.ask(Mode::Write)
    }

    /// Asks for one of `permits` permits of a counting semaphore: at most `permits`
    /// holders at any instant. Each permit is a slot, an ordinary lock on the key
    /// `<resource>:permit:<i>`; the guard's [`permit`](LockGuard::permit) says which.
    /// Every request of one semaphore must name the same `permits`. No fencing token;
    /// waiting contenders retry on the timer.
    ///
    /// One kind per request: with another of `read()`, `write()` and `permits(n)` as
    /// well, the request ends in [`Error::Config`].
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let p = redlock.lock("gpu").permits(4).acquire().await?;
    /// println!("using GPU slot {:?}", p.permit());
    /// # Ok(())
    /// # }
    /// ```
    pub fn permits(self, permits: usize) -> Self {
        self.ask(Mode::Permits(permits))
    }

    /// How many of the semaphore's permits are free now on enough nodes to be
    /// granted: a snapshot for operators and dashboards, racy by nature (permits come
    /// and go while it is read), never a way to decide whether to acquire.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let free = redlock.lock("gpu").permits(4).available().await?;
    /// println!("{free} of 4 GPU slots free");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when the request is not a semaphore's
    /// ([`permits`](Self::permits) not called, or 0); [`Error::NoQuorum`] when fewer
    /// than a quorum of nodes answered.
    pub async fn available(self) -> Result<usize, Error> {
        self.one_kind()?;
        let Mode::Permits(n) = self.mode else {
            return Err(Error::Config(
                "available() counts a semaphore's free permits: call permits(n) first".into(),
            ));
        };
        self.redlock.check_request(&[&self.resource], &self.want)?;
        self.redlock.available_permits(&self.resource, n).await
    }

    /// Who holds each permit of the semaphore: one [`LockInfo`] per slot `0..n`, in
    /// slot order, each as [`Redlock::inspect`] reads a lock (holders with labels, node
    /// counts and expiries). A snapshot for operators, never a way to decide whether to
    /// acquire.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// for (slot, info) in redlock.lock("gpu").permits(4).inspect_permits().await?.iter().enumerate() {
    ///     let who = info.holders().first().map(|h| h.label().unwrap_or("(no label)"));
    ///     println!("GPU {slot}: {}", who.unwrap_or("free"));
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when the request is not a semaphore's (as for
    /// [`available`](Self::available)). Nodes that do not answer are unknown in each
    /// slot's [`LockInfo`], not an error.
    pub async fn inspect_permits(self) -> Result<Vec<LockInfo>, Error> {
        self.one_kind()?;
        let Mode::Permits(n) = self.mode else {
            return Err(Error::Config(
                "inspect_permits() reads a semaphore's slots: call permits(n) first".into(),
            ));
        };
        self.redlock.check_request(&[&self.resource], &self.want)?;
        Ok(self.redlock.inspect_slots(&self.resource, n).await)
    }

    /// Every chain ends here: the exclusive path, or the one of the other kinds.
    async fn acquire_mode(&self) -> Result<LockGuard, Error> {
        self.one_kind()?;
        let hold = self.hold.filter(|d| !d.is_zero());
        if hold.is_some() && self.mode == Mode::Read {
            return Err(Error::Config(format!(
                "hold_at_least is for exclusive, write and permit locks, not readers of `{}`: \
                 a reader that stays after its release would keep writers out",
                self.resource
            )));
        }
        let mut guard = self
            .redlock
            .acquire_with(&[&self.resource], self.mode, self.want)
            .await?;
        if let Some(d) = hold {
            guard.hold_at_least(d);
        }
        guard.set_options(self.options);
        Ok(guard)
    }

    /// Keeps the lock until at least `period` after it was acquired, also when it is
    /// released (or its guard dropped, or `with`'s work ends) sooner: the release then
    /// shortens the lock on the nodes to what is left of the period instead of deleting
    /// it. A scheduled job that ran in 2 s on one host does not run again on another
    /// within the period (ShedLock's "lock at least for"). Waiters are not woken by such
    /// a release; they get the lock when the period ends. Within this process the lock
    /// is not handed on to a waiting task either. A lock that is neither kept alive nor
    /// extended still expires at its ttl; to hold it for a period longer than the ttl,
    /// use [`with`](Self::with) (kept alive while the work runs). Defaults to none;
    /// `Duration::ZERO` is none.
    ///
    /// For exclusive, write and permit locks; asked of a read lock it is
    /// [`Error::Config`] (a reader staying after it left would keep writers out).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn build_report() {}
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// // Every pod tries at 02:00; whoever wins runs it, and nobody runs it again for an hour.
    /// let guard = redlock
    ///     .lock("nightly-report")
    ///     .ttl(Duration::from_secs(3600))
    ///     .hold_at_least(Duration::from_secs(3600))
    ///     .try_acquire()
    ///     .await?;
    /// build_report().await;
    /// guard.release().await?; // the key stays until an hour after the acquisition
    /// # Ok(())
    /// # }
    /// ```
    pub fn hold_at_least(mut self, period: Duration) -> Self {
        self.hold = Some(period);
        self
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

    /// Attempts after the first one: at most `retries + 1` are made, consecutive ones at
    /// least [`retry_delay`](crate::RedlockBuilder::retry_delay) (plus jitter) apart
    /// unless a release wakes the waiter. Defaults to the manager's
    /// [`retry_count`](crate::RedlockBuilder::retry_count).
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
    /// grant of this ttl could leave, and for a request asked for two kinds
    /// ([`read`](Self::read), [`write`](Self::write) and [`permits`](Self::permits)
    /// exclude each other: `.read().permits(2)` is refused, not read as a permit).
    ///
    /// # Cancel safety
    /// As for [`Redlock::acquire`].
    pub async fn acquire(self) -> Result<LockGuard, Error> {
        self.acquire_mode().await
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
    /// background, as [`Redlock::with_lock`] does, with these [`lease_options`](Self::lease_options).
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
        let guard = self.acquire_mode().await?;
        crate::lease::run_kept(guard, self.options, work).await
    }

    /// Like [`with`](Self::with), and keeps the work's output beside a loss: with
    /// [`LeaseOptions::drop_work_on_loss`]`(false)` the work runs to its end after the
    /// lock was lost, and its output comes back in [`WorkOutcome::Lost`] instead of being
    /// thrown away (a loss found by the release at the end likewise).
    ///
    /// ```no_run
    /// # async fn copy_batches(_: &tokio_redlock::Lease) -> usize { 0 }
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// use tokio_redlock::{LeaseOptions, WorkOutcome};
    ///
    /// let outcome = redlock
    ///     .lock("import:daily")
    ///     .lease_options(LeaseOptions::default().drop_work_on_loss(false))
    ///     .with_outcome(|lease| async move { copy_batches(&lease).await })
    ///     .await?;
    /// match outcome {
    ///     WorkOutcome::Done(copied) => println!("{copied} batches, under the lock"),
    ///     WorkOutcome::Lost { output, error } => {
    ///         println!("{error}; {output:?} batches copied, the last ones unprotected")
    ///     }
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// What [`acquire`](Self::acquire) returns: the lock was never taken and `work` never
    /// ran. A loss after that is an `Ok(`[`WorkOutcome::Lost`]`)`.
    ///
    /// # Cancel safety
    /// As for [`Redlock::with_lock`].
    pub async fn with_outcome<F, Fut, T>(self, work: F) -> Result<WorkOutcome<T>, Error>
    where
        F: FnOnce(Lease) -> Fut,
        Fut: Future<Output = T>,
    {
        let guard = self.acquire_mode().await?;
        Ok(crate::lease::run_kept_outcome(guard, self.options, work).await)
    }
}
