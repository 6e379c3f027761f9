//! Health checks: [`Redlock::diagnose`], the [`Report`] it returns, and the opt-in
//! [`CheckMode`] that runs it before locking.
//!
//! Redlock is only as safe as the nodes under it: a node that evicts keys, fails over to
//! a replica, restarts without its data, or is listed twice silently breaks mutual
//! exclusion. These checks make such a setup loud.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::Value;

use crate::error::{Error, NodeError, NodeErrorKind};
use crate::node::{Node, Request};
use crate::redlock::Redlock;

mod report;

pub use report::{Finding, FindingKind, NodeReport, Report, Severity};

/// A `node_timeout` above this is flagged: a request to a sick node may take that long,
/// and lock TTLs are typically a few seconds, so a second spent waiting is a large part of
/// the validity, and keep-alive extensions may not fit in time.
const SLOW_NODE_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a strict-mode verdict is reused before the nodes are checked again. A few
/// seconds: a misconfiguration found is refused quickly, a fixed one is let through
/// quickly, and a busy client does not send INFO to every node on every acquisition.
pub(crate) const RECHECK_AFTER: Duration = Duration::from_secs(5);

/// When [`RedlockBuilder::check_on_connect`](crate::RedlockBuilder::check_on_connect) runs
/// [`Redlock::diagnose`].
///
/// ```
/// use tokio_redlock::{CheckMode, Redlock};
///
/// let redlock = Redlock::builder()
///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
///     .check_on_connect(CheckMode::Warn)
///     .build()?;
/// # let _ = redlock;
/// # Ok::<(), tokio_redlock::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum CheckMode {
    /// Never check on its own; call [`Redlock::diagnose`] yourself. Costs nothing.
    #[default]
    Off,
    /// On first use, check the nodes in the background and log every finding with
    /// `tracing::warn!`. Locking is never refused.
    Warn,
    /// Check before locking (again at most every few seconds) and refuse to lock with
    /// [`Error::Unhealthy`] while a configuration error is found. Fails closed: a node
    /// that answers but refuses `INFO` or `CONFIG GET` cannot be shown to be safe, and is
    /// refused ([`FindingKind::Unverifiable`]); with
    /// [`fencing`](crate::RedlockBuilder::fencing) on, so is a node without
    /// `appendfsync always`. An unreachable node alone does not refuse: it cannot vote
    /// now, and tolerating that is what the quorum is for.
    Strict,
}

/// The strict-mode verdict cache, and the once-flag of warn mode.
#[derive(Debug, Default)]
pub(crate) struct HealthState {
    warned: std::sync::atomic::AtomicBool,
    verdict: Mutex<Option<(Instant, Arc<[Finding]>)>>,
    /// Held while a check runs, so concurrent acquisitions wait for one check instead of
    /// each sending their own.
    checking: tokio::sync::Mutex<()>,
}

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
    pub async fn diagnose(&self) -> Report {
        let nodes = &self.inner.nodes;
        let checks = nodes.iter().map(check_node);
        let reports = futures::future::join_all(checks).await;
        let config = &self.inner.config;
        let mut findings = judge(&reports, config.node_timeout, config.fencing);
        for f in &mut findings {
            f.fencing = config.fencing;
        }
        findings.sort_by_key(|f| (std::cmp::Reverse(f.severity), f.node()));
        Report {
            nodes: reports,
            findings,
        }
    }

    /// Runs the configured [`CheckMode`] before a lock; `Err` refuses it.
    pub(crate) async fn health_gate(&self) -> Result<(), Error> {
        let state = &self.inner.health;
        match self.inner.config.check_on_connect {
            CheckMode::Off => Ok(()),
            CheckMode::Warn => {
                if !state
                    .warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    // In the background: warn mode never delays a lock.
                    if let Ok(handle) = tokio::runtime::Handle::try_current() {
                        let this = self.clone();
                        handle.spawn(async move {
                            let report = this.diagnose().await;
                            for finding in report.findings() {
                                tracing::warn!(node = ?finding.node(), "redlock health check: {finding}");
                            }
                        });
                    }
                }
                Ok(())
            }
            CheckMode::Strict => {
                let findings = match fresh_verdict(state) {
                    Some(findings) => findings,
                    None => {
                        let _one_at_a_time = state.checking.lock().await;
                        match fresh_verdict(state) {
                            Some(findings) => findings,
                            None => {
                                let report = self.diagnose().await;
                                let blocking: Arc<[Finding]> = report
                                    .findings
                                    .into_iter()
                                    .filter(Finding::blocks)
                                    .collect();
                                for finding in blocking.iter() {
                                    tracing::warn!(node = ?finding.node(), "redlock health check: {finding}");
                                }
                                *state.verdict.lock().unwrap_or_else(PoisonError::into_inner) =
                                    Some((Instant::now(), Arc::clone(&blocking)));
                                blocking
                            }
                        }
                    }
                };
                if findings.is_empty() {
                    Ok(())
                } else {
                    Err(Error::Unhealthy {
                        findings: findings.to_vec(),
                    })
                }
            }
        }
    }
}

fn fresh_verdict(state: &HealthState) -> Option<Arc<[Finding]>> {
    let verdict = state.verdict.lock().unwrap_or_else(PoisonError::into_inner);
    match &*verdict {
        Some((at, findings)) if at.elapsed() < RECHECK_AFTER => Some(Arc::clone(findings)),
        _ => None,
    }
}

/// Asks one node about itself.
async fn check_node(node: &Node) -> NodeReport {
    let mut report = NodeReport::empty(node);
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
    match node.run(Request::Cmd(&redis::cmd("INFO"))).await {
        Ok(value) => match text(&value) {
            Some(info) => apply_info(&mut report, &parse_info(&info)),
            None => report.error = Some(node.protocol_error(format!("INFO answered {value:?}"))),
        },
        Err(e) => report.error = Some(e),
    }
    let mut config_get = redis::cmd("CONFIG");
    config_get.arg("GET").arg("appendfsync");
    match node.run(Request::Cmd(&config_get)).await {
        Ok(value) => match config_value(&value, "appendfsync") {
            Some(fsync) => report.appendfsync = Some(fsync),
            None => {
                report.config_error =
                    Some(node.protocol_error(format!("CONFIG GET appendfsync answered {value:?}")));
            }
        },
        Err(e) => report.config_error = Some(e),
    }
    report
}

/// Whether the node refused a command because of its ACL.
fn is_denied(e: &NodeError) -> bool {
    matches!(e.kind(), NodeErrorKind::Redis(r) if r.code() == Some("NOPERM"))
}

/// Whether a failed check was answered by the node (an error reply such as an ACL's
/// `NOPERM`, or a reply that makes no sense) rather than lost (no answer in time, a broken
/// connection). A node that answers takes part in locking, so what it does not say is
/// unknown, not absent; a node that stopped answering cannot vote now.
fn answered(e: &NodeError) -> bool {
    match e.kind() {
        NodeErrorKind::Redis(r) => r.code().is_some(),
        NodeErrorKind::Protocol(_) => true,
        NodeErrorKind::Timeout(_) | NodeErrorKind::Quarantined(_) => false,
    }
}

/// The findings that follow from the node reports and the settings.
fn judge(reports: &[NodeReport], node_timeout: Duration, fencing: bool) -> Vec<Finding> {
    let mut findings = Vec::new();
    let n = reports.len();
    if n < 3 {
        findings.push(Finding::new(
            Severity::Warning,
            None,
            FindingKind::TooFewNodes(n),
        ));
    } else if n.is_multiple_of(2) {
        findings.push(Finding::new(
            Severity::Warning,
            None,
            FindingKind::EvenNodes(n),
        ));
    }
    if node_timeout > SLOW_NODE_TIMEOUT {
        findings.push(Finding::new(
            Severity::Warning,
            None,
            FindingKind::SlowNodeTimeout(node_timeout),
        ));
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for r in reports {
        if !r.reachable || r.run_id.is_none() {
            if let Some(e) = &r.error {
                let finding = if r.reachable && answered(e) {
                    // It answers (and so votes) but would not say what it is: unknown,
                    // which strict mode refuses, never the "unreachable" it tolerates.
                    let mut denied = vec!["INFO"];
                    if r.config_error.is_some() {
                        denied.push("CONFIG GET appendfsync");
                    }
                    FindingKind::Unverifiable {
                        denied,
                        cause: e.clone(),
                    }
                } else {
                    FindingKind::Unreachable(e.clone())
                };
                findings.push(Finding::new(Severity::Error, Some(r), finding));
                continue;
            }
        }
        if let Some(id) = r.run_id.as_deref() {
            if let Some(first) = seen.get(id) {
                findings.push(Finding::new(
                    Severity::Error,
                    Some(r),
                    FindingKind::SameServer { first: *first },
                ));
            } else {
                seen.insert(id, r.index);
            }
        }
        if r.role.as_deref().is_some_and(|role| role != "master") {
            findings.push(Finding::new(Severity::Error, Some(r), FindingKind::Replica));
        }
        if r.cluster_enabled == Some(true) {
            findings.push(Finding::new(
                Severity::Warning,
                Some(r),
                FindingKind::ClusterMode,
            ));
        }
        if let Some(policy) = r.maxmemory_policy.as_deref() {
            if policy != "noeviction" {
                findings.push(Finding::new(
                    Severity::Error,
                    Some(r),
                    FindingKind::Eviction {
                        policy: policy.to_owned(),
                    },
                ));
            }
        }
        // Fencing tokens assume every write is on disk before it is acknowledged; without
        // fencing, persistence only narrows the crash window, so it is a warning.
        let fsync_severity = if fencing {
            Severity::Error
        } else {
            Severity::Warning
        };
        match (r.aof_enabled, r.appendfsync.as_deref(), &r.config_error) {
            (Some(true), None, Some(cause)) => {
                let kind = if fencing {
                    FindingKind::Unverifiable {
                        denied: vec!["CONFIG GET appendfsync"],
                        cause: cause.clone(),
                    }
                } else {
                    FindingKind::Unchecked {
                        what: "appendfsync",
                        cause: cause.clone(),
                    }
                };
                findings.push(Finding::new(fsync_severity, Some(r), kind));
            }
            (Some(aof), fsync, _) if !aof || fsync.is_some_and(|s| s != "always") => {
                findings.push(Finding::new(
                    fsync_severity,
                    Some(r),
                    FindingKind::NoFsyncAlways {
                        aof_enabled: aof,
                        appendfsync: r.appendfsync.clone(),
                    },
                ));
            }
            _ => {}
        }
    }
    findings
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The value of `name` in a `CONFIG GET name` reply (an array of pairs, or a map in RESP3).
fn config_value(value: &Value, name: &str) -> Option<String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.len() == 2 && text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| text(&pair[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

/// `key:value` lines of an INFO reply; section headers and blank lines are skipped.
fn parse_info(info: &str) -> HashMap<&str, &str> {
    info.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim(), v.trim()))
        .collect()
}

fn apply_info(report: &mut NodeReport, info: &HashMap<&str, &str>) {
    let get = |k: &str| info.get(k).map(|v| (*v).to_owned());
    report.server = Some(get("server_name").unwrap_or_else(|| "redis".to_owned()));
    report.version = get("valkey_version").or_else(|| get("redis_version"));
    report.role = get("role");
    report.run_id = get("run_id");
    report.maxmemory_policy = get("maxmemory_policy");
    report.aof_enabled = info.get("aof_enabled").map(|v| *v == "1");
    report.uptime = info
        .get("uptime_in_seconds")
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs);
    report.cluster_enabled = info.get("cluster_enabled").map(|v| *v == "1");
}

#[cfg(test)]
mod tests;
