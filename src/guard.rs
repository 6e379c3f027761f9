//! [`LockGuard`]: a held lock, released on drop.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use redis::Value;
use tracing::Instrument;

use crate::error::{Error, LostReason, NodeErrors};
use crate::metrics;
use crate::quorum::{self, Outcome, Tally, Vote};
use crate::redlock::{fan_out, finish_in_background, release_in_background, Inner, Op};

mod release;

pub use release::ReleaseReport;

/// What a guard must give back: the keys it set and the value that proves it owns them.
pub(crate) struct Held {
    pub(crate) inner: Arc<Inner>,
    pub(crate) keys: Arc<[String]>,
    pub(crate) value: Arc<str>,
    /// The runtime the lock was taken on; `Drop` releases there.
    pub(crate) handle: Option<tokio::runtime::Handle>,
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
    valid_until: Instant,
    ttl: Duration,
    token: Option<u64>,
    attempts: u32,
    /// `Some` until `release` takes it; `Drop` releases only what is still here.
    held: Option<Held>,
}

impl fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the value: it is the proof of ownership.
        f.debug_struct("LockGuard")
            .field("resources", &self.resources)
            .field("remaining_validity", &self.remaining_validity())
            .field("fencing_token", &self.token)
            .field("held", &self.held.is_some())
            .finish()
    }
}

impl LockGuard {
    pub(crate) fn new(
        resources: Arc<[String]>,
        valid_until: Instant,
        ttl: Duration,
        token: Option<u64>,
        held: Held,
    ) -> Self {
        Self {
            resources,
            valid_until,
            ttl,
            token,
            attempts: 1,
            held: Some(held),
        }
    }

    pub(crate) fn set_attempts(&mut self, attempts: u32) {
        self.attempts = attempts;
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
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let guard = redlock.acquire("job:1", std::time::Duration::from_secs(1)).await?;
    /// assert!(guard.valid_until() > std::time::Instant::now());
    /// # Ok(())
    /// # }
    /// ```
    pub fn valid_until(&self) -> Instant {
        self.valid_until
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
        self.valid_until.saturating_duration_since(Instant::now())
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
        Instant::now() < self.valid_until
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

    /// Sets the lock's expiry to `ttl` from now on every node that still holds it with
    /// this owner's value, and succeeds when a quorum did so with validity left. The
    /// validity is counted from the start of this extension. The fencing token stays.
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
    /// longer hold this owner's value; [`Error::NoQuorum`] when too few nodes answered
    /// (the lock stays valid until the old `valid_until`; you may try again);
    /// [`Error::Config`] for a ttl under 3 ms. A failed extension never deletes the lock.
    ///
    /// # Cancel safety
    /// Dropping the future leaves `valid_until` as it was; nodes that already extended
    /// keep the key longer, which is still this owner's and is released with it.
    pub async fn extend(&mut self, ttl: Duration) -> Result<(), Error> {
        let result = self.extend_inner(ttl).await;
        metrics::extended(result.as_ref().map(|_| ()));
        result
    }

    async fn extend_inner(&mut self, ttl: Duration) -> Result<(), Error> {
        let resource = self.resource().to_owned();
        let lost = |reason| Error::LockLost {
            resource: resource.clone(),
            reason,
        };
        let Some(held) = &self.held else {
            return Err(lost(LostReason::Expired));
        };
        if !self.is_valid() {
            return Err(lost(LostReason::Expired));
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        if ttl_ms <= quorum::DRIFT_FLOOR.as_millis() as u64 || ttl_ms > i64::MAX as u64 {
            return Err(Error::Config(format!(
                "extend ttl {ttl:?} is out of range: use at least a few ms"
            )));
        }
        let ttl = Duration::from_millis(ttl_ms);
        let inner = Arc::clone(&held.inner);
        let op = Op::extend(&held.keys, &held.value, ttl_ms);
        let span = tracing::debug_span!("extend", resource = %resource, ttl_ms);
        let start = Instant::now();
        let (tally, causes) = async {
            let mut replies = fan_out(&inner, Arc::new(op));
            let mut tally = Tally::new(inner.nodes.len());
            let mut causes = Vec::new();
            while let Some((node, reply)) = replies.next().await {
                let vote = match inner.nodes[node].as_vote(reply) {
                    Ok(Value::Int(1)) => Vote::Yes,
                    Ok(Value::Int(0)) => Vote::No,
                    Ok(other) => {
                        causes.push(
                            inner.nodes[node].protocol_error(format!("extend answered {other:?}")),
                        );
                        Vote::Failed
                    }
                    Err(e) => {
                        causes.push(e);
                        Vote::Failed
                    }
                };
                tracing::debug!(node, ?vote, "extend vote");
                tally.record(vote);
                if tally.outcome().is_some() {
                    break;
                }
            }
            // The stragglers extend too, so the key lives as long on every healthy node.
            finish_in_background(replies, "extend");
            (tally, causes)
        }
        .instrument(span)
        .await;
        let drift = quorum::drift(ttl, inner.config.drift_factor);
        match tally.outcome() {
            Some(Outcome::Won) if quorum::validity(ttl, start.elapsed(), drift).is_some() => {
                self.valid_until = start + ttl.saturating_sub(drift);
                self.ttl = ttl;
                Ok(())
            }
            _ if !self.is_valid() => Err(lost(LostReason::Expired)),
            Some(Outcome::Won) => Err(Error::Expired {
                resource,
                attempts: 1,
                elapsed: start.elapsed(),
                ttl,
            }),
            _ if tally.lost_to_owner() => Err(lost(LostReason::NotHeld {
                held: tally.yes,
                needed: tally.quorum,
            })),
            _ => Err(Error::NoQuorum {
                resource,
                attempts: 1,
                ok: tally.yes,
                failed: tally.failed,
                needed: tally.quorum,
                nodes: tally.nodes,
                causes: NodeErrors(causes),
            }),
        }
    }
}

impl Held {
    pub(crate) fn release_in_background(self, what: &'static str) {
        // Without the runtime the lock was taken on, nothing is sent: the TTL frees it.
        if let Some(handle) = &self.handle {
            release_in_background(handle, self.inner, self.keys, self.value, what);
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(held) = self.held.take() {
            held.release_in_background("dropped guard");
        }
    }
}
