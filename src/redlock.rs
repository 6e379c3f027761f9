//! [`Redlock`]: the lock manager and its attempt loop.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use futures::FutureExt;
use rand::Rng;
use redis::Value;
use tracing::Instrument;

use crate::builder::{Config, RedlockBuilder};
use crate::error::{Error, NodeError, NodeErrorKind, NodeErrors};
use crate::guard::{Held, LockGuard};
use crate::metrics;
use crate::node::{Node, Request};
use crate::quorum::{self, Outcome, Tally, Vote};
use crate::scripts;
use crate::wake::{self, Waiter, Wakeups};

/// Immediate re-attempts with a raised fencing candidate, before a stale round counts as
/// a failed attempt. A stale reply only means this client's cached counter was behind;
/// one more round with the counter the nodes reported normally succeeds, and a small
/// cap keeps two clients that keep outbidding each other from spinning.
const STALE_REROUNDS: u32 = 3;
/// Fencing counters cached per manager before the cache is cleared. A missing entry only
/// costs one extra round trip (a stale reply teaches the counter), so a crude bound is fine.
const FENCE_CACHE_LIMIT: usize = 10_000;
/// How long a key this manager found held counts as contended: long enough to span a
/// worker's loop around a short critical section, short enough that a key that went
/// quiet is soon locked with a plain `SET NX` again.
const CONTENDED_MEMORY: Duration = Duration::from_secs(1);
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
}

pub(crate) struct Inner {
    pub(crate) nodes: Arc<[Node]>,
    pub(crate) config: Config,
    wakeups: Wakeups,
    /// What this manager learnt of a key's contention (one lock, one lookup per
    /// acquisition).
    hints: Mutex<HashMap<String, KeyHint>>,
    /// The highest fencing counter this manager has seen per resource key.
    fences: Mutex<HashMap<String, u64>>,
    /// State of the `check_on_connect` health checks.
    pub(crate) health: crate::diagnose::HealthState,
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

/// A request to run on every node, shared by the per-node futures.
pub(crate) enum Op {
    Cmd(redis::Cmd),
    Script(scripts::Call),
}

impl Op {
    fn request(&self) -> Request<'_> {
        match self {
            Self::Cmd(cmd) => Request::Cmd(cmd),
            Self::Script(inv) => Request::Script(inv),
        }
    }

    /// Compare-and-delete of `keys` held with `value`; with `notify`, waiters on the
    /// released keys are woken.
    pub(crate) fn release(keys: &[String], value: &str, notify: bool) -> Self {
        let call = if notify {
            let queues = keys.iter().map(|k| format!("{k}{}", wake::QUEUE_SUFFIX));
            let all: Vec<String> = keys.iter().cloned().chain(queues).collect();
            let mut call = scripts::Call::new(&scripts::RELEASE, &all);
            call.arg(value).arg(wake::CHANNEL_PREFIX);
            call
        } else {
            let mut call = scripts::Call::new(&scripts::RELEASE, keys);
            call.arg(value).arg("");
            call
        };
        Self::Script(call)
    }

    /// Compare-and-pexpire of `keys` held with `value`.
    pub(crate) fn extend(keys: &[String], value: &str, ttl_ms: u64) -> Self {
        let mut call = scripts::Call::new(&scripts::EXTEND, keys);
        call.arg(value).arg(ttl_ms);
        Self::Script(call)
    }
}

pub(crate) type Reply = (usize, Result<Value, NodeError>);
pub(crate) type Replies = FuturesUnordered<BoxFuture<'static, Reply>>;

/// Sends `op` to every node at once. Each reply comes back with its node's index.
///
/// The futures own what they use, so the caller can stop listening at any time and
/// hand the stragglers to [`finish_in_background`].
pub(crate) fn fan_out(inner: &Arc<Inner>, op: Arc<Op>) -> Replies {
    fan_out_where(inner, op, |_| true)
}

/// Like [`fan_out`], to the nodes `to` picks.
pub(crate) fn fan_out_where(
    inner: &Arc<Inner>,
    op: Arc<Op>,
    to: impl Fn(usize) -> bool,
) -> Replies {
    (0..inner.nodes.len())
        .filter(|i| to(*i))
        .map(|i| {
            let inner = Arc::clone(inner);
            let op = Arc::clone(&op);
            async move {
                let reply = inner.nodes[i].run(op.request()).await;
                (i, reply)
            }
            .boxed()
        })
        .collect()
}

/// Lets requests that were already sent finish without anyone waiting for them, and
/// logs their failures.
pub(crate) fn finish_in_background(mut rest: Replies, what: &'static str) {
    // Replies that are in already need no task: on a healthy cluster the stragglers
    // usually are, and a spawn per operation is most of what this would cost.
    while let Some(Some((node, reply))) = rest.next().now_or_never() {
        if let Err(e) = reply {
            tracing::debug!(node, error = %e, "{what}: late request failed");
        }
    }
    if rest.is_empty() {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        while let Some((node, reply)) = rest.next().await {
            if let Err(e) = reply {
                tracing::debug!(node, error = %e, "{what}: late request failed");
            }
        }
    });
}

/// Releases `keys` held with `value` on every node, in a task of its own, and logs
/// what failed. Used by `Drop` and by cancelled acquisitions; never blocks.
pub(crate) fn release_in_background(
    handle: &tokio::runtime::Handle,
    inner: Arc<Inner>,
    keys: Arc<[String]>,
    value: Arc<str>,
    what: &'static str,
) {
    metrics::background_release(what);
    handle.spawn(async move {
        let notify = inner.config.wake_on_release;
        let mut replies = fan_out(&inner, Arc::new(Op::release(&keys, &value, notify)));
        let mut failed = 0usize;
        while let Some((node, reply)) = replies.next().await {
            if let Err(e) = reply {
                failed += 1;
                tracing::warn!(node, error = %e, "{what}: release failed on a node; its key expires with the ttl");
            }
        }
        tracing::debug!(failed, "{what}: background release done");
    });
}

/// Undoes an attempt if the attempt's future is dropped before it decided: a cancelled
/// acquisition cleans up after itself in the background instead of leaving keys to
/// the TTL. Armed before the first request is sent.
struct Undo {
    inner: Arc<Inner>,
    keys: Arc<[String]>,
    value: Arc<str>,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // Outside a runtime nothing can be sent; the TTL frees the keys.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            release_in_background(
                &handle,
                Arc::clone(&self.inner),
                Arc::clone(&self.keys),
                Arc::clone(&self.value),
                "cancelled acquire",
            );
        }
    }
}

/// What one attempt came to.
enum Attempt {
    Won(LockGuard),
    Lost {
        tally: Tally,
        causes: Vec<NodeError>,
        /// The highest fencing counter a node reported, when one was stale.
        stale: Option<u64>,
        /// How many nodes found the key held by another owner.
        locked: usize,
    },
    Expired(Duration),
}

impl Redlock {
    /// Starts a builder; see [`RedlockBuilder`] for every setting and its default.
    ///
    /// ```
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .build()?;
    /// assert_eq!(redlock.node_count(), 1);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }

    pub(crate) fn from_parts(nodes: Arc<[Node]>, config: Config) -> Self {
        Self {
            inner: Arc::new(Inner {
                wakeups: Wakeups::new(nodes.len()),
                hints: Mutex::new(HashMap::new()),
                nodes,
                config,
                fences: Mutex::new(HashMap::new()),
                health: Default::default(),
            }),
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
    /// [`RedlockBuilder::node_timeout`]).
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

    /// The Redis key of the fencing counter of `resource` (used with `fencing(true)`).
    ///
    /// ```
    /// # let redlock = tokio_redlock::Redlock::builder().node("redis://127.0.0.1:7001").build()?;
    /// assert_eq!(redlock.fence_key_of("payment:42"), "payment:42:fence");
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn fence_key_of(&self, resource: &str) -> String {
        format!(
            "{}{resource}{}",
            self.inner.config.key_prefix, self.inner.config.fence_suffix
        )
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
    /// [`Error::NoQuorum`] when too few nodes answered, [`Error::Expired`] when a quorum
    /// agreed too late; the last attempt decides which. [`Error::Config`] for an empty or
    /// over-long resource name or a ttl under 3 ms or over `i64::MAX` ms.
    ///
    /// # Cancel safety
    /// Dropping the future at any await point leaves nothing held: keys an unfinished
    /// attempt may have set are released by a background task (and expire with `ttl`
    /// anyway, also without a runtime).
    pub async fn acquire(&self, resource: &str, ttl: Duration) -> Result<LockGuard, Error> {
        self.lock(&[resource], ttl, self.inner.config.retry_count)
            .await
    }

    /// Like [`acquire`](Self::acquire), but makes exactly one attempt.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// match redlock.try_acquire("report:daily", Duration::from_secs(60)).await {
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
        self.lock(&[resource], ttl, 0).await
    }

    /// Acquires all of `resources` together, or none: on each node one script sets every
    /// key only if none of them exists. Retries like [`acquire`](Self::acquire).
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
        self.lock(&names, ttl, self.inner.config.retry_count).await
    }

    /// Checks a lock request before anything is sent; returns the ttl in whole ms.
    fn check_request(&self, resources: &[&str], ttl: Duration) -> Result<u64, Error> {
        if resources.is_empty() {
            return Err(Error::Config("no resources: name at least one".into()));
        }
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
        }
        // PX takes whole milliseconds, so the validity is computed from the ttl the
        // nodes are actually given, never from a finer one they cannot honour.
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let floor = quorum::DRIFT_FLOOR.as_millis() as u64;
        if ttl_ms <= floor {
            return Err(Error::Config(format!(
                "ttl {ttl:?} leaves no validity after the {floor} ms drift floor; use a ttl of \
                 at least a few times the nodes' round trip"
            )));
        }
        if ttl_ms > i64::MAX as u64 {
            return Err(Error::Config(format!("ttl {ttl:?} is too long for Redis")));
        }
        Ok(ttl_ms)
    }

    pub(crate) async fn lock(
        &self,
        resources: &[&str],
        ttl: Duration,
        retries: u32,
    ) -> Result<LockGuard, Error> {
        let ttl_ms = self.check_request(resources, ttl)?;
        if self.inner.config.check_on_connect != crate::diagnose::CheckMode::Off {
            self.health_gate().await?;
        }
        let span = tracing::debug_span!("acquire", resource = resources[0], ttl_ms);
        let start = Instant::now();
        let result = self
            .lock_checked(resources, ttl_ms, retries)
            .instrument(span)
            .await;
        let attempts = match &result {
            Ok(guard) => guard.attempts(),
            Err(e) => e.attempts().unwrap_or(1),
        };
        metrics::acquired(result.as_ref().map(|_| ()), attempts, start.elapsed());
        result
    }

    async fn lock_checked(
        &self,
        resources: &[&str],
        ttl_ms: u64,
        retries: u32,
    ) -> Result<LockGuard, Error> {
        let config = &self.inner.config;
        let names: Arc<[String]> = resources.iter().map(|r| (*r).to_owned()).collect();
        let keys: Arc<[String]> = resources.iter().map(|r| self.key_of(r)).collect();
        let fence_keys: Option<Vec<String>> = config
            .fencing
            .then(|| resources.iter().map(|r| self.fence_key_of(r)).collect());
        let mut candidate = fence_keys
            .as_ref()
            .map(|f| self.cached_fence(f).saturating_add(1));
        let mut attempts: u32 = 0;
        let mut failed_rounds: u32 = 0;
        let mut rerounds: u32 = 0;
        let mut waiter: Option<Waiter> = None;
        let mut woken = false;
        let queue_atomically = keys.len() == 1 && fence_keys.is_none();
        let (yield_until, contended) = self.inner.take_hint(&keys[0]);
        // A release by this manager just woke a waiter: let it go first.
        if let Some(until) = yield_until.filter(|u| *u > Instant::now()) {
            tokio::time::sleep_until(until.into()).await;
        }
        // A key this manager found held moments ago is likely held now: listen at once,
        // and make even the first attempt one that queues if it fails (a plain SET NX
        // when the key is free), saving a failed round per contended acquisition.
        if queue_atomically && config.wake_on_release && retries > 0 && contended {
            waiter = Some(
                self.inner
                    .wakeups
                    .wait_for(&self.inner.nodes, &keys[0], false)
                    .await,
            );
        }
        loop {
            attempts = attempts.saturating_add(1);
            if let Some(t) = candidate {
                if t > MAX_FENCING_TOKEN {
                    return Err(Error::Config(format!(
                        "fencing counter of `{}` reached 2^53, the largest token Lua can count \
                         exactly; reset the counter keys",
                        names[0]
                    )));
                }
            }
            let queue = waiter
                .as_ref()
                .filter(|_| queue_atomically)
                .map(|w| (w.member(), woken));
            let attempt = self
                .attempt(
                    &names,
                    &keys,
                    fence_keys.as_deref(),
                    ttl_ms,
                    candidate,
                    queue,
                )
                .await;
            let err = match attempt {
                Attempt::Won(mut guard) => {
                    tracing::debug!(attempts, "acquired");
                    guard.set_attempts(attempts);
                    return Ok(guard);
                }
                Attempt::Lost {
                    tally,
                    causes,
                    stale,
                    locked,
                } => {
                    if let (Some(seen), Some(fences)) = (stale, &fence_keys) {
                        self.remember_fence(fences, seen);
                        candidate = Some(seen.saturating_add(1));
                        // Only stale, not held elsewhere: try at once with the counter
                        // the nodes just told us.
                        let failures_alone_lose = tally.failed > tally.nodes - tally.quorum;
                        if locked == 0 && !failures_alone_lose && rerounds < STALE_REROUNDS {
                            rerounds += 1;
                            continue;
                        }
                    }
                    if tally.lost_to_owner() {
                        Error::Conflict {
                            resource: names[0].clone(),
                            attempts,
                            held_elsewhere: if fence_keys.is_some() {
                                locked
                            } else {
                                tally.no
                            },
                            nodes: tally.nodes,
                        }
                    } else {
                        Error::NoQuorum {
                            resource: names[0].clone(),
                            attempts,
                            ok: tally.yes,
                            failed: tally.failed,
                            needed: tally.quorum,
                            nodes: tally.nodes,
                            causes: NodeErrors(causes),
                        }
                    }
                }
                Attempt::Expired(elapsed) => Error::Expired {
                    resource: names[0].clone(),
                    attempts,
                    elapsed,
                    ttl: Duration::from_millis(ttl_ms),
                },
            };
            // Held by another owner and a retry to come: wait for its release in the
            // nodes' queues, so that the wait ends when the lock is free (and in order
            // of arrival) rather than when the timer says. A single-key acquire joins
            // the queue atomically with its next attempt, made at once: a release in
            // between the failed attempt and the join would otherwise go unheard.
            let wait = err.is_conflict() && config.wake_on_release;
            if err.is_conflict() {
                self.inner
                    .hint(&keys[0], |h| h.contended_at = Some(Instant::now()));
            }
            if let (true, Some(w)) = (queue_atomically, &waiter) {
                // A queued attempt just failed: it joined the queue wherever the key
                // was held.
                w.mark_queued();
            }
            if wait && waiter.is_none() && failed_rounds < retries {
                let w = self
                    .inner
                    .wakeups
                    .wait_for(&self.inner.nodes, &keys[0], !queue_atomically);
                waiter = Some(w.await);
                if queue_atomically {
                    continue;
                }
            }
            rerounds = 0;
            failed_rounds = failed_rounds.saturating_add(1);
            if failed_rounds > retries {
                tracing::debug!(attempts, error = %err, "giving up");
                return Err(err);
            }
            let pause = quorum::backoff(config.retry_delay, config.retry_jitter, &mut rand::rng());
            // A waiter that was woken but beaten goes back to the front.
            if let (true, Some(w), false) = (wait, &waiter, queue_atomically) {
                w.rejoin(woken).await;
            }
            woken = false;
            tracing::trace!(?pause, "retrying");
            match waiter.as_ref() {
                Some(w) => {
                    // Re-listen where a subscription broke or was never made, alongside
                    // the wait: a node that hangs must not eat into it.
                    let listen = self.inner.wakeups.listen(&self.inner.nodes);
                    let sleep = tokio::time::sleep(pause);
                    tokio::pin!(listen, sleep);
                    let mut listened = false;
                    loop {
                        tokio::select! {
                            _ = &mut listen, if !listened => listened = true,
                            _ = w.woken() => {
                                woken = true;
                                break;
                            }
                            _ = &mut sleep => break,
                        }
                    }
                }
                None => tokio::time::sleep(pause).await,
            }
        }
    }

    /// One round: set on all nodes, decide at the earliest certain moment, undo on loss.
    async fn attempt(
        &self,
        names: &Arc<[String]>,
        keys: &Arc<[String]>,
        fence_keys: Option<&[String]>,
        ttl_ms: u64,
        candidate: Option<u64>,
        queue: Option<(&str, bool)>,
    ) -> Attempt {
        let inner = &self.inner;
        let value: Arc<str> = new_value().into();
        let op = match (fence_keys, candidate, queue) {
            (None, _, Some((member, front))) if keys.len() == 1 => {
                let queue_key = format!("{}{}", keys[0], wake::QUEUE_SUFFIX);
                let mut inv =
                    scripts::Call::new(&scripts::ACQUIRE_OR_QUEUE, &[&*keys[0], &queue_key]);
                inv.arg(&*value)
                    .arg(ttl_ms)
                    .arg(member)
                    .arg(if front { "1" } else { "0" })
                    .arg(wake::QUEUE_TTL_MS);
                Op::Script(inv)
            }
            (Some(fences), Some(t), _) => {
                let all: Vec<&str> = keys.iter().chain(fences).map(String::as_str).collect();
                let mut inv = scripts::Call::new(&scripts::FENCED_ACQUIRE, &all);
                inv.arg(&*value).arg(ttl_ms).arg(t);
                Op::Script(inv)
            }
            _ if keys.len() == 1 => {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&keys[0])
                    .arg(&*value)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms);
                Op::Cmd(cmd)
            }
            _ => {
                let mut inv = scripts::Call::new(&scripts::ACQUIRE_MANY, keys);
                inv.arg(&*value).arg(ttl_ms);
                Op::Script(inv)
            }
        };
        // The clock starts before the first request is sent (the Redlock paper, step 1).
        let start = Instant::now();
        let mut undo = Undo {
            inner: Arc::clone(inner),
            keys: Arc::clone(keys),
            value: Arc::clone(&value),
            armed: true,
        };
        let mut replies = fan_out(inner, Arc::new(op));
        let mut tally = Tally::new(inner.nodes.len());
        let mut causes = Vec::new();
        let mut answered = vec![false; inner.nodes.len()];
        // Nodes that answered "not set": nothing of this attempt is there to undo.
        let mut refused = vec![false; inner.nodes.len()];
        let mut stale: Option<u64> = None;
        let mut locked = 0usize;
        let mut outcome = None;
        #[cfg(redlock_mutant = "incr_max")]
        let mut incr_max: Option<u64> = None;
        while let Some((node, reply)) = replies.next().await {
            let vote = match inner.nodes[node].as_vote(reply) {
                Ok(value) => {
                    answered[node] = true;
                    match classify_acquire(&value, candidate.is_some()) {
                        Ok((vote, counter)) => {
                            refused[node] = vote == Vote::No;
                            match (vote, counter) {
                                #[cfg(redlock_mutant = "incr_max")]
                                (Vote::Yes, Some(c)) => incr_max = incr_max.max(Some(c)),
                                (Vote::No, Some(c)) => stale = Some(stale.map_or(c, |s| s.max(c))),
                                (Vote::No, None) => locked += 1,
                                _ => {}
                            }
                            vote
                        }
                        Err(what) => {
                            causes.push(inner.nodes[node].protocol_error(what));
                            Vote::Failed
                        }
                    }
                }
                Err(e) => {
                    causes.push(e);
                    Vote::Failed
                }
            };
            tracing::debug!(node, ?vote, "acquire vote");
            tally.record(vote);
            outcome = tally.outcome();
            if outcome.is_some() {
                break;
            }
        }
        if outcome == Some(Outcome::Won) {
            // The stragglers' SETs go on in the background: the lock then stands on every
            // healthy node, not on a bare quorum. (Dropping them would let the driver skip
            // requests nobody listens for.) Their keys are ours and go with the release.
            finish_in_background(replies, "acquire");
            let elapsed = start.elapsed();
            let ttl = Duration::from_millis(ttl_ms);
            let drift = quorum::drift(ttl, inner.config.drift_factor);
            // MUTANT (safety suite only): a round won too late still counts as won.
            let skip_validity = cfg!(redlock_mutant = "skip_validity");
            if quorum::validity(ttl, elapsed, drift).is_some() || skip_validity {
                undo.armed = false;
                // validity = ttl − elapsed − drift, counted from `start`, so the lock is
                // promised until start + ttl − drift and not a moment longer.
                let valid_until = start + ttl.saturating_sub(drift);
                // MUTANT (safety suite only): the token is the highest counter a
                // yes-voter reported after its own INCR.
                #[cfg(redlock_mutant = "incr_max")]
                let candidate = incr_max;
                let guard = LockGuard::new(
                    Arc::clone(names),
                    valid_until,
                    Duration::from_millis(ttl_ms),
                    candidate.filter(|_| fence_keys.is_some()),
                    Held {
                        inner: Arc::clone(inner),
                        keys: Arc::clone(keys),
                        value,
                        handle: tokio::runtime::Handle::try_current().ok(),
                    },
                );
                if let (Some(fences), Some(t)) = (fence_keys, candidate) {
                    self.remember_fence(fences, t);
                }
                return Attempt::Won(guard);
            }
            self.undo(&mut undo, &answered, &refused).await;
            return Attempt::Expired(elapsed);
        }
        // Lost: the stragglers' requests still go out (a queued acquire must reach every
        // node's wait queue), and whatever they set is undone below: the undo follows
        // them on each node's connection, so it runs after them.
        finish_in_background(replies, "failed attempt");
        self.undo(&mut undo, &answered, &refused).await;
        Attempt::Lost {
            tally,
            causes,
            stale,
            locked,
        }
    }

    /// Undoes a failed attempt on every node, before the next attempt. Nodes that answered
    /// the attempt are waited for (bounded by the node timeout); the silent ones get the
    /// same release, in the background, since their SET may still land or have landed.
    async fn undo(&self, undo: &mut Undo, answered: &[bool], refused: &[bool]) {
        undo.armed = false;
        // A node that answered "not set" holds nothing of this attempt: under contention
        // that is every node, and the undo costs nothing.
        if refused.iter().all(|r| *r) {
            return;
        }
        // No wake-ups: the resource is still held by whoever beat this attempt.
        let op = Op::release(&undo.keys, &undo.value, false);
        let mut replies = fan_out_where(&self.inner, Arc::new(op), |i| !refused[i]);
        let mut waiting = answered
            .iter()
            .zip(refused)
            .filter(|(a, r)| **a && !**r)
            .count();
        while waiting > 0 {
            let Some((node, reply)) = replies.next().await else {
                break;
            };
            if answered[node] {
                waiting -= 1;
            }
            if let Err(e) = reply {
                tracing::debug!(node, error = %e, "undo failed on a node; its key expires with the ttl");
            }
        }
        finish_in_background(replies, "undo");
    }

    fn cached_fence(&self, fence_keys: &[String]) -> u64 {
        let cache = self
            .inner
            .fences
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        fence_keys
            .iter()
            .filter_map(|k| cache.get(k).copied())
            .max()
            .unwrap_or(0)
    }

    fn remember_fence(&self, fence_keys: &[String], seen: u64) {
        let mut cache = self
            .inner
            .fences
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= FENCE_CACHE_LIMIT {
            cache.clear();
        }
        for key in fence_keys {
            let entry = cache.entry(key.clone()).or_insert(0);
            *entry = (*entry).max(seen);
        }
    }
}

/// What a manager remembers of one key between acquisitions.
#[derive(Debug, Default)]
struct KeyHint {
    /// Until when it lets a waiter it woke go first (see [`Inner::yield_to`]).
    yield_until: Option<Instant>,
    /// When it last found the key held by another owner.
    contended_at: Option<Instant>,
}

impl Inner {
    fn hint(&self, key: &str, update: impl FnOnce(&mut KeyHint)) {
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        if hints.len() >= FENCE_CACHE_LIMIT && !hints.contains_key(key) {
            hints.clear();
        }
        update(hints.entry(key.to_owned()).or_default());
    }

    /// The head start owed to a woken waiter (taken: it is owed once), and whether the
    /// key was found held recently.
    fn take_hint(&self, key: &str) -> (Option<Instant>, bool) {
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(hint) = hints.get_mut(key) else {
            return (None, false);
        };
        let contended = hint
            .contended_at
            .is_some_and(|at| at.elapsed() < CONTENDED_MEMORY);
        (hint.yield_until.take(), contended)
    }

    /// After a release of `key` that woke a waiter, this manager's next acquisition of
    /// `key` waits `head_start` first, so that the woken waiter, which hears of the
    /// release about when this manager does, wins the race instead of the releaser.
    pub(crate) fn yield_to(&self, key: &str, head_start: Duration) {
        self.hint(key, |h| h.yield_until = Some(Instant::now() + head_start));
    }
}

impl Node {
    pub(crate) fn protocol_error(&self, what: String) -> NodeError {
        NodeError::new(
            self.index,
            self.endpoint.clone(),
            NodeErrorKind::Protocol(what),
        )
    }
}

/// A fresh owner value: 128 bits from the thread's CSPRNG, as 32 hex digits.
pub(crate) fn new_value() -> String {
    // MUTANT (safety suite only): every acquisition gets the same value.
    #[cfg(redlock_mutant = "constant_value")]
    return "0".repeat(32);
    format!("{:032x}", rand::rng().random::<u128>())
}

/// Turns a node's reply to an acquire request into a vote (and, for the fenced script,
/// the counter it reported). `Err` for a reply that no Redis would give.
fn classify_acquire(value: &Value, fenced: bool) -> Result<(Vote, Option<u64>), String> {
    if fenced {
        let Value::Array(items) = value else {
            return Err(format!("fenced acquire answered {value:?}"));
        };
        return match items.as_slice() {
            [Value::Int(code), Value::Int(counter)] => {
                let counter = u64::try_from(*counter).map_err(|_| "negative counter".to_owned())?;
                match *code {
                    scripts::FENCE_OK => Ok((Vote::Yes, Some(counter))),
                    // Held by another owner: the counter is below our candidate,
                    // so it teaches nothing.
                    scripts::FENCE_LOCKED => Ok((Vote::No, None)),
                    scripts::FENCE_STALE => Ok((Vote::No, Some(counter))),
                    other => Err(format!("fenced acquire answered code {other}")),
                }
            }
            _ => Err(format!("fenced acquire answered {value:?}")),
        };
    }
    match value {
        Value::Okay => Ok((Vote::Yes, None)),
        Value::SimpleString(s) if s == "OK" => Ok((Vote::Yes, None)),
        Value::Nil => Ok((Vote::No, None)),
        Value::Int(1) => Ok((Vote::Yes, None)),
        Value::Int(0) => Ok((Vote::No, None)),
        other => Err(format!("acquire answered {other:?}")),
    }
}
