//! [`Redlock`]: the lock manager. The attempt (the Redlock steps) is in `attempt.rs`,
//! the loop of attempts in `retry.rs`, per-call options in `request.rs`.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::config::Config;
use crate::error::Error;
use crate::guard::LockGuard;
use crate::kind::Mode;
use crate::local::{LocalQueues, Turn};
use crate::metrics;
use crate::node::Node;
use crate::quorum;
use crate::shared::Inner;
use crate::wake;

mod attempt;
mod available;
mod claim;
mod health;
mod inspect;
pub(crate) mod policy;
mod request;
mod retry;

pub use inspect::{Holder, LockInfo};
pub use request::LockRequest;
pub(crate) use retry::Want;

/// Lua numbers are doubles: a candidate must stay below 2^53 to be exact.
pub(crate) const MAX_FENCING_TOKEN: u64 = (1 << 53) - 1;
/// Resource names longer than this are refused: keys are sent on every request and
/// stored on every node, and 64 KiB is far beyond any real name.
pub(crate) const MAX_RESOURCE_LEN: usize = 64 * 1024;

/// The Redlock manager: acquires, extends and releases locks on N independent Redis nodes.
///
/// A lock is held when a quorum (N/2 + 1) of the nodes agreed to it and its validity,
/// `ttl − elapsed − drift`, has not run out. `Redlock` is cheap to clone: clones share
/// the nodes' connections and settings.
///
/// # Example
/// ```no_run
/// use std::time::Duration;
/// use tokio_redlock::Redlock;
///
/// # async fn run() -> Result<(), tokio_redlock::Error> {
/// let redlock = Redlock::builder()
///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
///     .build()?;
/// let guard = redlock.acquire("payment:42", Duration::from_secs(5)).await?;
/// // ... charge the payment, within guard.remaining_validity() ...
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Redlock {
    pub(crate) inner: Arc<Inner>,
    /// Tasks of this manager queued for the same key (in-process hand-over).
    local: Arc<LocalQueues<LockGuard>>,
}

impl fmt::Debug for Redlock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let endpoints: Vec<&str> = self.inner.nodes.iter().map(|n| &*n.endpoint).collect();
        f.debug_struct("Redlock")
            .field("nodes", &endpoints)
            .field("config", &self.inner.config)
            .finish()
    }
}

impl Redlock {
    pub(crate) fn from_parts(nodes: Arc<[Node]>, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner::new(nodes, config)),
            local: Arc::default(),
        }
    }

    /// The number of nodes that must agree: N/2 + 1.
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder()
    /// #     .nodes((1..=5).map(|p| format!("redis://127.0.0.1:700{p}"))).build()?;
    /// assert_eq!(redlock.quorum(), 3);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn quorum(&self) -> usize {
        quorum::quorum(self.inner.nodes.len())
    }

    /// The number of nodes (N).
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder()
    /// #     .nodes((1..=5).map(|p| format!("redis://127.0.0.1:700{p}"))).build()?;
    /// assert_eq!(redlock.node_count(), 5);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn node_count(&self) -> usize {
        self.inner.nodes.len()
    }

    /// The bound on each request to one node (see
    /// [`RedlockBuilder::node_timeout`](crate::RedlockBuilder::node_timeout)).
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder().node("redis://127.0.0.1:7001").build()?;
    /// assert_eq!(redlock.node_timeout(), std::time::Duration::from_millis(50));
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn node_timeout(&self) -> Duration {
        self.inner.config.node_timeout
    }

    /// The Redis key that holds the lock of `resource`: the key prefix (none by default)
    /// followed by the resource name.
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder().node("redis://127.0.0.1:7001").build()?;
    /// assert_eq!(redlock.key_of("payment:42"), "payment:42");
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn key_of(&self, resource: &str) -> String {
        format!("{}{resource}", self.inner.config.key_prefix)
    }

    /// The Redis key of the fencing counter of `resource` (used with `fencing(true)`):
    /// its own, `<key prefix><resource><fence suffix>`, or the shared counter's key
    /// when a [`shared_fencing_counter`](crate::RedlockBuilder::shared_fencing_counter)
    /// rule covers it.
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder().node("redis://127.0.0.1:7001").build()?;
    /// assert_eq!(redlock.fence_key_of("payment:42"), "payment:42:fence");
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn fence_key_of(&self, resource: &str) -> String {
        let config = &self.inner.config;
        // A resource covered by a shared counter draws from it, whoever locks it.
        let counter = config
            .shared_counters
            .counter_for(resource)
            .unwrap_or(resource);
        format!("{}{counter}{}", config.key_prefix, config.fence_suffix)
    }

    /// Acquires the lock on `resource` for `ttl`, retrying up to `retry_count` times.
    ///
    /// Each attempt sets the key with a fresh random value on all nodes at once and
    /// succeeds when a quorum agreed and validity is left; a failed attempt removes what
    /// it set, on every node, before the next one.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("payment:42", Duration::from_secs(5)).await?;
    /// assert!(guard.is_valid());
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Conflict`] when another owner holds it on too many nodes,
    /// [`Error::SplitVote`] when the last attempt lost to simultaneous attempts that
    /// left no owner on a quorum (one resource; told by one read after the last attempt),
    /// [`Error::NoQuorum`] when too few nodes answered, [`Error::Expired`] when a quorum
    /// agreed too late; the last attempt decides which. [`Error::Config`] for an empty or
    /// over-long resource name or a ttl under 3 ms or over `i64::MAX` ms.
    ///
    /// # Cancel safety
    /// Dropping the future at any await point leaves nothing held: keys an unfinished
    /// attempt may have set are released by a background task (and expire with `ttl`
    /// anyway, also without a runtime).
    pub async fn acquire(&self, resource: &str, ttl: Duration) -> Result<LockGuard, Error> {
        self.acquire_with(&[resource], Mode::Exclusive, self.want(ttl))
            .await
    }

    /// Like [`acquire`](Self::acquire), but makes exactly one attempt.
    ///
    /// Attempts that start at the same moment (a job on every pod at midnight) can
    /// split the nodes so that none of them wins: that is [`Error::SplitVote`], not
    /// [`Error::Conflict`], and nobody runs the job. The crate does not retry a
    /// `try_acquire` by itself; what it recommends is what Raft does with a split vote:
    /// a short random pause and one more attempt.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let ttl = Duration::from_secs(60);
    /// let mut result = redlock.try_acquire("report:daily", ttl).await;
    /// if matches!(&result, Err(e) if e.is_split_vote()) {
    ///     // Nobody holds it: pause a random few ms (rand::random_range(0..50) in real code).
    ///     tokio::time::sleep(Duration::from_millis(17)).await;
    ///     result = redlock.try_acquire("report:daily", ttl).await;
    /// }
    /// match result {
    ///     Ok(guard) => { /* we run the report */ guard.release().await?; }
    ///     Err(e) if e.is_conflict() => { /* someone else runs it */ }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As for [`acquire`](Self::acquire), with one attempt.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn try_acquire(&self, resource: &str, ttl: Duration) -> Result<LockGuard, Error> {
        let want = Want {
            retries: 0,
            ..self.want(ttl)
        };
        self.acquire_with(&[resource], Mode::Exclusive, want).await
    }

    /// Acquires all of `resources` together, or none: on each node one script sets every
    /// key only if none of them exists. Retries like [`acquire`](Self::acquire), waiting
    /// for the release of whichever key the nodes found held.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock
    ///     .acquire_many(&["account:1", "account:2"], Duration::from_secs(5))
    ///     .await?;
    /// assert_eq!(guard.resources().len(), 2);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// As for [`acquire`](Self::acquire); also [`Error::Config`] for an empty list or a
    /// resource listed twice.
    ///
    /// # Cancel safety
    /// As for [`acquire`](Self::acquire).
    pub async fn acquire_many<S: AsRef<str>>(
        &self,
        resources: &[S],
        ttl: Duration,
    ) -> Result<LockGuard, Error> {
        let names: Vec<&str> = resources.iter().map(AsRef::as_ref).collect();
        self.acquire_with(&names, Mode::Exclusive, self.want(ttl))
            .await
    }

    /// Starts a lock request on `resource` with per-call options (ttl, wait budget,
    /// retries, minimum validity), sharing this manager's connections and wake-ups.
    /// `acquire(resource, ttl)` is `lock(resource).ttl(ttl).acquire()`.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock
    ///     .lock("payment:42")
    ///     .ttl(Duration::from_secs(5))
    ///     .wait(Duration::from_secs(2))
    ///     .min_validity(Duration::from_millis(500))
    ///     .acquire()
    ///     .await?;
    /// # guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(&self, resource: &str) -> LockRequest<'_> {
        LockRequest::new(self, resource)
    }

    /// The manager's own settings for an acquisition of `ttl`.
    pub(crate) fn want(&self, ttl: Duration) -> Want {
        let config = &self.inner.config;
        Want {
            ttl,
            retries: config.retry_count,
            wait: None,
            min_validity: config.min_validity,
        }
    }

    /// Checks a lock request before anything is sent; returns the ttl in whole ms.
    pub(crate) fn check_request(&self, resources: &[&str], want: &Want) -> Result<u64, Error> {
        if resources.is_empty() {
            return Err(Error::Config("no resources: name at least one".into()));
        }
        let config = &self.inner.config;
        for (i, r) in resources.iter().enumerate() {
            if r.is_empty() {
                return Err(Error::Config(
                    "empty resource name: name what you lock".into(),
                ));
            }
            if r.len() > MAX_RESOURCE_LEN {
                return Err(Error::Config(format!(
                    "resource name of {} bytes is over the {MAX_RESOURCE_LEN}-byte limit; \
                     lock a short id or a hash of it",
                    r.len()
                )));
            }
            if resources[..i].contains(r) {
                return Err(Error::Config(format!("resource `{r}` is listed twice")));
            }
            // The auxiliary keys beside each lock key are `<key>:waiters` and
            // `<key><fence suffix>`; a resource whose name ends so would share its key
            // with another resource's queue or counter. (The builder makes sure neither
            // suffix ends with the other, so no two auxiliary keys can meet either.)
            for suffix in [wake::QUEUE_SUFFIX, config.fence_suffix.as_str()] {
                if r.ends_with(suffix) {
                    return Err(Error::Config(format!(
                        "resource `{r}` ends with `{suffix}`, the suffix of the keys kept beside \
                         each lock key; its key could be another resource's. Rename it"
                    )));
                }
            }
            // Likewise `<key>:readers`, `:writer`, `:rwait`, `:rturn` and `:permit:<i>`.
            if let Some(suffix) = crate::kind::aux_suffix(r) {
                return Err(Error::Config(format!(
                    "resource `{r}` ends with `{suffix}`, the suffix of the keys kept beside \
                     each read/write lock or semaphore key; its key could be another \
                     resource's. Rename it"
                )));
            }
        }
        #[cfg(feature = "cluster")]
        if resources.len() > 1 && self.inner.nodes.iter().any(crate::node::Node::is_cluster) {
            let keys = resources.iter().map(|r| (*r, self.key_of(r)));
            crate::cluster::one_slot(keys)?;
        }
        let ttl = want.ttl;
        let ttl_ms =
            quorum::ttl_ms(ttl).map_err(|why| Error::Config(format!("ttl {ttl:?}: {why}")))?;
        let exact = Duration::from_millis(ttl_ms);
        let most = exact.saturating_sub(quorum::drift(exact, config.drift_factor));
        if want.min_validity >= most {
            return Err(Error::Config(format!(
                "min_validity {:?} is not below what a ttl of {ttl:?} can ever leave ({most:?}, \
                 after the drift): every grant would count as failed; use a longer ttl or a \
                 smaller min_validity",
                want.min_validity
            )));
        }
        Ok(ttl_ms)
    }

    /// Acquires, queueing behind this manager's own tasks for the same key first when
    /// local hand-over applies (see [`RedlockBuilder::local_handover`](crate::RedlockBuilder::local_handover)): at most one of
    /// them competes on the nodes, and a release hands the lock to the next.
    async fn take_turn(
        &self,
        resources: &[&str],
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let config = &self.inner.config;
        let local =
            config.local_handover && !config.fencing && resources.len() == 1 && want.retries > 0;
        if !local {
            return self.run_exclusive(resources, ttl_ms, want).await;
        }
        // One allocation for the turn's key, shared with the local queues' entry.
        let key: Arc<str> = if config.key_prefix.is_empty() {
            Arc::from(resources[0])
        } else {
            Arc::from(self.key_of(resources[0]))
        };
        let turn = match self.local.enter(key) {
            Ok(turn) => Some(turn),
            Err(waiting) => {
                // As long as the retries could have waited on the nodes, or the budget.
                let per_try = config.retry_delay.saturating_add(config.retry_jitter);
                let budget = want.wait.unwrap_or_else(|| {
                    per_try
                        .saturating_mul(want.retries.saturating_add(1))
                        .saturating_add(config.node_timeout)
                });
                match tokio::time::timeout(budget, waiting).await {
                    Ok(Ok(Turn::Handed(mut guard, turn))) => {
                        guard.set_local(turn);
                        return self.adopt(guard, resources, ttl_ms, want).await;
                    }
                    Ok(Ok(Turn::Compete(turn))) => Some(turn),
                    // Out of time in the local queue: one attempt of its own, which
                    // fails while another task of this manager holds the lock.
                    Ok(Err(_)) | Err(_) => {
                        let last = Want {
                            retries: 0,
                            wait: None,
                            ..*want
                        };
                        return self.run_exclusive(resources, ttl_ms, &last).await;
                    }
                }
            }
        };
        let mut guard = self.run_exclusive(resources, ttl_ms, want).await?;
        if let Some(turn) = turn {
            guard.set_local(turn);
        }
        Ok(guard)
    }

    /// Takes a lock handed over by another task of this manager: extended first when
    /// less than half of this request's ttl or less than its `min_validity` is left,
    /// and given up (released, then competed for on the nodes) if that extension fails
    /// or leaves less than the request's `min_validity`, as a fresh grant would be.
    async fn adopt(
        &self,
        mut guard: LockGuard,
        resources: &[&str],
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        if guard.remaining_validity() >= want.ttl / 2
            && guard.remaining_validity() >= want.min_validity
        {
            return Ok(guard);
        }
        // The request's own floor, not the manager's: a fresh acquisition of this
        // request would count a grant with less left as failed.
        let extended = guard
            .extend_at_least(Duration::from_millis(ttl_ms), want.min_validity)
            .await;
        match extended {
            Ok(()) => Ok(guard),
            Err(e) => {
                tracing::debug!(error = %e, "a handed-over lock could not be extended; competing for it");
                let turn = guard.take_local();
                drop(guard);
                let mut guard = self.run_exclusive(resources, ttl_ms, want).await?;
                if let Some(turn) = turn {
                    guard.set_local(turn);
                }
                Ok(guard)
            }
        }
    }

    /// The loop of attempts of an exclusive lock of `resources`.
    async fn run_exclusive(
        &self,
        resources: &[&str],
        ttl_ms: u64,
        want: &Want,
    ) -> Result<LockGuard, Error> {
        let claim = claim::Exclusive::new(self, resources);
        self.run_attempts(&claim, ttl_ms, want).await
    }

    /// Every acquisition of every kind goes through here: checks, the health gate, the
    /// local hand-over (exclusive locks), the loop of attempts, metrics.
    pub(crate) async fn acquire_with(
        &self,
        resources: &[&str],
        mode: Mode,
        want: Want,
    ) -> Result<LockGuard, Error> {
        let ttl_ms = self.check_request(resources, &want)?;
        if let Mode::Permits(n) = mode {
            claim::check_permits(n)?;
        }
        self.health_gate().await?;
        let span = tracing::debug_span!("acquire", resource = resources[0], ?mode, ttl_ms);
        let class = self.inner.config.metrics_class.of(resources[0]);
        let acquisition = async {
            match mode {
                Mode::Exclusive => self.take_turn(resources, ttl_ms, &want).await,
                Mode::Read | Mode::Write => {
                    let claim = claim::ReadWrite::new(self, resources[0], mode == Mode::Write);
                    self.run_attempts(&claim, ttl_ms, &want).await
                }
                Mode::Permits(n) => {
                    let claim = claim::Semaphore::new(self, resources[0], n);
                    self.run_attempts(&claim, ttl_ms, &want).await
                }
            }
        };
        metered(span, class, acquisition).await
    }
}

/// Runs an acquisition in its span and records its outcome, attempts and wait in the
/// metrics: the one tail of every kind of acquisition.
async fn metered(
    span: tracing::Span,
    class: &'static str,
    acquisition: impl std::future::Future<Output = Result<LockGuard, Error>>,
) -> Result<LockGuard, Error> {
    let _waiting = metrics::Waiting::start(class);
    let start = Instant::now();
    let result = acquisition.instrument(span).await;
    let attempts = match &result {
        Ok(guard) => guard.attempts(),
        Err(e) => e.attempts().unwrap_or(1),
    };
    metrics::acquired(result.as_ref().map(|_| ()), attempts, start.elapsed());
    result
}
