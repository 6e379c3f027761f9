//! [`Redlock`]'s two doors to the health checks: [`Redlock::diagnose`] and the check
//! before each lock. Each hands the manager's nodes and settings to `diagnose`, which
//! knows nothing of the manager.

use super::Redlock;
use crate::diagnose::{self, HealthReport, Settings};
use crate::error::Error;

impl Redlock {
    /// Checks every node's configuration and the node set as a whole, concurrently,
    /// each request bounded by `node_timeout`. Never fails as a whole: a node that
    /// cannot be checked becomes a finding.
    ///
    /// Per node: `PING` (reachability, latency), `INFO` (server, version, role, run_id,
    /// maxmemory-policy, AOF, uptime, cluster mode) and `CONFIG GET appendfsync`.
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) {
    /// let report = redlock.diagnose().await;
    /// if !report.is_healthy() {
    ///     for finding in report.findings() {
    ///         eprintln!("{finding}");
    ///     }
    /// }
    /// # }
    /// ```
    ///
    /// # Cancel safety
    /// Read-only: dropping the future leaves nothing behind.
    pub async fn diagnose(&self) -> HealthReport {
        diagnose::check(&self.inner.nodes, self.health_settings()).await
    }

    /// Runs the configured [`CheckMode`](crate::CheckMode) before a lock; `Err` refuses it.
    pub(crate) async fn health_gate(&self) -> Result<(), Error> {
        let mode = self.inner.config.health_check;
        if mode == crate::CheckMode::Off {
            // Costs nothing when off: no settings built, nothing awaited.
            return Ok(());
        }
        let settings = self.health_settings();
        self.inner
            .health
            .gate(mode, &self.inner.nodes, settings)
            .await
    }

    fn health_settings(&self) -> Settings {
        Settings {
            node_timeout: self.inner.config.node_timeout,
            fencing: self.inner.config.fencing,
        }
    }
}
