//! [`LeaseOptions`]: how a keep-alive extends its lock, and what `with_lock` does on a loss.

use std::time::Duration;

/// How a keep-alive extends its lock, and what
/// [`LockRequest::with`](crate::LockRequest::with) does with the work when the lock
/// is lost ([`LockRequest::lease_options`](crate::LockRequest::lease_options)).
///
/// ```no_run
/// use std::time::Duration;
/// use tokio_redlock::LeaseOptions;
///
/// # async fn build_report(_: Option<u64>) {}
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// let opts = LeaseOptions::default()
///     .extend_after(0.5)                          // extend when half the ttl has passed
///     .max_hold(Some(Duration::from_secs(600)));  // never hold longer than 10 minutes
/// redlock
///     .lock("report:daily")
///     .ttl(Duration::from_secs(30))
///     .lease_options(opts)
///     .with(|lease| async move {
///         build_report(lease.fencing_token()).await
///     })
///     .await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub struct LeaseOptions {
    pub(super) extend_after: f64,
    pub(super) max_hold: Option<Duration>,
    pub(super) max_extensions: Option<u32>,
    pub(super) drop_work_on_loss: bool,
}

impl Default for LeaseOptions {
    fn default() -> Self {
        Self {
            // A third of the ttl: two more tries fit before the validity ends.
            extend_after: 1.0 / 3.0,
            max_hold: None,
            max_extensions: None,
            drop_work_on_loss: true,
        }
    }
}

impl LeaseOptions {
    /// Extend once this fraction of the ttl has passed since the last successful
    /// acquisition or extension. Clamped to `[0.05, 0.9]`. Defaults to 1/3.
    pub fn extend_after(mut self, fraction: f64) -> Self {
        self.extend_after = if fraction.is_nan() {
            1.0 / 3.0
        } else {
            fraction.clamp(0.05, 0.9)
        };
        self
    }

    /// Stop extending once the lock has been held this long in all; the lease is then
    /// lost when its validity ends ([`LostReason::CapReached`](crate::LostReason::CapReached)).
    /// Redlock's liveness argument assumes holders do not keep a lock forever. Defaults
    /// to unlimited.
    pub fn max_hold(mut self, cap: Option<Duration>) -> Self {
        self.max_hold = cap;
        self
    }

    /// Stop after this many extensions (see [`max_hold`](Self::max_hold)). Defaults to
    /// unlimited.
    pub fn max_extensions(mut self, cap: Option<u32>) -> Self {
        self.max_extensions = cap;
        self
    }

    /// Whether [`LockRequest::with`](crate::LockRequest::with) drops the work the
    /// moment the lock is lost. Defaults to `true`.
    ///
    /// - `true`: the work is dropped (cancelled at the `.await` it is suspended on) and
    ///   `with` returns [`Error::LockLost`](crate::Error::LockLost) at once.
    ///   The work does not get to react to the loss: a branch of it that waits for
    ///   [`Lease::lost`](crate::Lease::lost) runs at most up to its first await, if at
    ///   all. The safe default for work that leaves nothing half done across awaits.
    /// - `false`: on a loss, [`Lease::lost`](crate::Lease::lost) resolves and
    ///   [`Lease::cancellation_token`](crate::Lease::cancellation_token) is cancelled,
    ///   and the work runs on until it returns, so that it can stop at a point of its
    ///   own choosing (between two batches, before a commit); `with` then
    ///   returns [`Error::LockLost`](crate::Error::LockLost) and the work's output is
    ///   discarded. The work must watch the lease: whatever it does after the loss is
    ///   not protected by the lock.
    ///
    /// [`KeptGuard`](crate::KeptGuard) has no work to drop; this setting does not
    /// change it.
    pub fn drop_work_on_loss(mut self, drop: bool) -> Self {
        self.drop_work_on_loss = drop;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_default_to_a_third_no_cap_and_dropping_the_work() {
        let o = LeaseOptions::default();
        assert!((o.extend_after - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(o.max_hold, None);
        assert_eq!(o.max_extensions, None);
        assert!(o.drop_work_on_loss);
        assert!(!o.drop_work_on_loss(false).drop_work_on_loss);
    }

    #[test]
    fn extend_after_is_clamped_and_nan_means_default() {
        assert_eq!(LeaseOptions::default().extend_after(0.0).extend_after, 0.05);
        assert_eq!(LeaseOptions::default().extend_after(2.0).extend_after, 0.9);
        assert_eq!(LeaseOptions::default().extend_after(0.5).extend_after, 0.5);
        let nan = LeaseOptions::default().extend_after(f64::NAN).extend_after;
        assert!((nan - 1.0 / 3.0).abs() < 1e-12);
    }
}
