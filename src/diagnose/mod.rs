//! Health checks of the nodes: what [`Redlock::diagnose`](crate::Redlock::diagnose)
//! returns ([`HealthReport`], one [`NodeReport`] per node, [`Finding`]s of a
//! [`Severity`] and a [`FindingKind`]), and the opt-in [`CheckMode`] that runs the check
//! before locking ([`RedlockBuilder::health_check`](crate::RedlockBuilder::health_check)).
//!
//! Redlock is only as safe as the nodes under it: a node that evicts keys, fails over to
//! a replica, restarts without its data, or is listed twice silently breaks mutual
//! exclusion. These checks make such a setup loud.
//!
//! ```no_run
//! use tokio_redlock::diagnose::Severity;
//!
//! # async fn run(redlock: tokio_redlock::Redlock) {
//! let report = redlock.diagnose().await;
//! for finding in report.findings() {
//!     if finding.severity() == Severity::Error {
//!         eprintln!("fix before locking: {finding}");
//!     }
//! }
//! # }
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::Value;

use crate::error::node::{NodeError, NodeErrorKind};
use crate::error::Error;
use crate::info::{appendfsync, appendfsync_cmd, info_cmd, ServerInfo};
use crate::node::{Node, Request};
use crate::sync::lock;

#[cfg(feature = "cluster")]
mod cluster;
mod judge;
pub(crate) mod report;

use judge::judge;
pub use report::{Finding, FindingKind, HealthReport, NodeReport, Severity};

/// How long a strict-mode verdict is reused before the nodes are checked again. A few
/// seconds: a misconfiguration found is refused quickly, a fixed one is let through
/// quickly, and a busy client does not send INFO to every node on every acquisition.
pub(crate) const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// Whether [`Redlock`](crate::Redlock) checks the nodes on its own, and what it does with
/// what it finds; set with
/// [`RedlockBuilder::health_check`](crate::RedlockBuilder::health_check).
///
/// Despite the setting's name, nothing is checked when the manager is built or when a
/// node connects ([`build`](crate::RedlockBuilder::build) connects to nothing). The check
/// runs at the start of an acquisition (`acquire`, `try_acquire`, `acquire_many`,
/// `lock(…)`, `with_lock`), after the request's own checks and before its first attempt.
/// Extending or releasing a lock that is held never runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckMode {
    /// Never check on its own; call [`Redlock::diagnose`](crate::Redlock::diagnose)
    /// yourself. Costs nothing.
    #[default]
    Off,
    /// At the first acquisition, check the nodes once, in the background, and log every
    /// finding with `tracing::warn!`. Locking is never delayed or refused.
    Warn,
    /// Before every acquisition, check the nodes (reusing a verdict younger than 5 s, so
    /// a busy client checks at most every 5 s) and refuse to lock with
    /// [`Error::Unhealthy`] while a configuration error is found; an acquisition that
    /// finds no fresh verdict waits for the check. Fails closed: a node that answers but refuses `INFO` or
    /// `CONFIG GET` cannot be shown to be safe, and is refused
    /// ([`FindingKind::Unverifiable`]); with [`fencing`](crate::RedlockBuilder::fencing)
    /// on, so is a node without `appendfsync always`. An unreachable node alone does not
    /// refuse: it cannot vote now, and tolerating that is what the quorum is for.
    Strict,
}

/// The settings a health check judges besides the nodes' answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Settings {
    /// Flagged when long next to typical lock TTLs.
    pub(crate) node_timeout: Duration,
    /// With fencing on, a node that may lose acknowledged writes is an error.
    pub(crate) fencing: bool,
}

/// Checks every node's configuration and the node set as a whole, concurrently, each
/// request bounded by the node timeout. Never fails as a whole: a node that cannot be
/// checked becomes a finding. See [`Redlock::diagnose`](crate::Redlock::diagnose).
pub(crate) async fn check(nodes: &[Node], settings: Settings) -> HealthReport {
    let reports = futures::future::join_all(nodes.iter().map(check_node)).await;
    let mut findings = judge(&reports, settings.node_timeout, settings.fencing);
    for f in &mut findings {
        f.fencing = settings.fencing;
    }
    findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), f.node()));
    HealthReport {
        nodes: reports,
        findings,
    }
}

/// The strict-mode verdict cache, and the once-flag of warn mode.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    warned: AtomicBool,
    verdict: Mutex<Option<(Instant, Arc<[Finding]>)>>,
    /// Held while a check runs, so concurrent acquisitions wait for one check instead of
    /// each sending their own.
    checking: tokio::sync::Mutex<()>,
}

impl HealthState {
    /// Runs `mode`'s check before a lock on `nodes`; `Err` refuses the lock.
    pub(crate) async fn gate(
        &self,
        mode: CheckMode,
        nodes: &Arc<[Node]>,
        settings: Settings,
    ) -> Result<(), Error> {
        let blocking = match mode {
            CheckMode::Off => return Ok(()),
            CheckMode::Warn => {
                if !self.warned.swap(true, Ordering::Relaxed) {
                    warn_in_background(nodes, settings);
                }
                return Ok(());
            }
            CheckMode::Strict => self.strict_verdict(nodes, settings).await,
        };
        if blocking.is_empty() {
            Ok(())
        } else {
            Err(Error::Unhealthy {
                findings: blocking.to_vec(),
            })
        }
    }

    /// The findings that refuse a lock, from a verdict younger than [`RECHECK_AFTER`]
    /// or from a check made now (one at a time: the others wait for its verdict).
    async fn strict_verdict(&self, nodes: &[Node], settings: Settings) -> Arc<[Finding]> {
        if let Some(findings) = self.fresh_verdict() {
            return findings;
        }
        let _one_at_a_time = self.checking.lock().await;
        if let Some(findings) = self.fresh_verdict() {
            return findings;
        }
        let report = check(nodes, settings).await;
        let blocking: Arc<[Finding]> = report
            .findings
            .into_iter()
            .filter(Finding::blocks)
            .collect();
        for finding in blocking.iter() {
            tracing::warn!(node = ?finding.node(), "redlock health check: {finding}");
        }
        *lock(&self.verdict) = Some((Instant::now(), Arc::clone(&blocking)));
        blocking
    }

    fn fresh_verdict(&self) -> Option<Arc<[Finding]>> {
        match &*lock(&self.verdict) {
            Some((at, findings)) if at.elapsed() < RECHECK_AFTER => Some(Arc::clone(findings)),
            _ => None,
        }
    }
}

/// Checks the nodes in a task of its own, logging every finding: warn mode never delays
/// a lock. Without a runtime there is nothing to spawn on, and no check.
fn warn_in_background(nodes: &Arc<[Node]>, settings: Settings) {
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        let nodes = Arc::clone(nodes);
        handle.spawn(async move {
            for finding in check(&nodes, settings).await.findings() {
                tracing::warn!(node = ?finding.node(), "redlock health check: {finding}");
            }
        });
    }
}

/// Asks one node about itself.
async fn check_node(node: &Node) -> NodeReport {
    let mut report = NodeReport::blank(node.index, Arc::clone(&node.endpoint));
    #[cfg(feature = "cluster")]
    if node.is_cluster() {
        report.masters = Some(0);
    }
    let start = Instant::now();
    match node.run(Request::Cmd(&redis::cmd("PING"))).await {
        Ok(Value::SimpleString(s)) if s == "PONG" => {}
        // An ACL that denies PING still lets the node answer, and vote: go on, so that
        // what else it denies is found (and fails strict mode closed) instead of the node
        // passing as merely unreachable.
        Err(e) if is_denied(&e) => {}
        Ok(other) => {
            report.error = Some(node.protocol_error(format!("PING answered {other:?}")));
            return report;
        }
        Err(e) => {
            report.error = Some(e);
            return report;
        }
    }
    report.latency = Some(start.elapsed());
    report.reachable = true;
    match node.run(Request::Cmd(&info_cmd())).await {
        Ok(reply) => match server_info(node, &reply) {
            Some((info, masters)) => {
                report.apply(info);
                report.masters = masters;
            }
            None => report.error = Some(node.protocol_error(format!("INFO answered {reply:?}"))),
        },
        Err(e) => report.error = Some(e),
    }
    match node.run(Request::Cmd(&appendfsync_cmd())).await {
        Ok(reply) => match fsync_of(node, &reply) {
            Some(fsync) => report.appendfsync = Some(fsync),
            None => {
                report.config_error =
                    Some(node.protocol_error(format!("CONFIG GET appendfsync answered {reply:?}")));
            }
        },
        Err(e) => report.config_error = Some(e),
    }
    report
}
/// What a node's `INFO` reply says, and for a cluster vote how many masters said it.
fn server_info(node: &Node, reply: &Value) -> Option<(ServerInfo, Option<usize>)> {
    #[cfg(feature = "cluster")]
    if node.is_cluster() {
        return cluster::merged_info(reply).map(|(info, n)| (info, Some(n)));
    }
    let _ = node;
    ServerInfo::from_reply(reply).map(|info| (info, None))
}

/// What a node's `CONFIG GET appendfsync` reply says (for a cluster vote, its worst).
fn fsync_of(node: &Node, reply: &Value) -> Option<String> {
    #[cfg(feature = "cluster")]
    if node.is_cluster() {
        return cluster::merged_appendfsync(reply);
    }
    let _ = node;
    appendfsync(reply)
}

/// Whether the node refused a command because of its ACL.
fn is_denied(e: &NodeError) -> bool {
    matches!(e.kind(), NodeErrorKind::Redis(r) if r.code() == Some("NOPERM"))
}

#[cfg(test)]
mod tests;
