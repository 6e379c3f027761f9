//! Health checks: [`Redlock::diagnose`], the [`Report`] it returns, and the opt-in
//! [`CheckMode`] that runs it before locking.
//!
//! Redlock is only as safe as the nodes under it: a node that evicts keys, fails over to
//! a replica, restarts without its data, or is listed twice silently breaks mutual
//! exclusion. These checks make such a setup loud.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::Value;

use crate::error::{Error, NodeError};
use crate::node::{Node, Request};
use crate::redlock::Redlock;

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
    /// [`Error::Unhealthy`] while a configuration error is found. An unreachable node
    /// alone does not refuse: that is what the quorum is for.
    Strict,
}

/// How serious a [`Finding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Severity {
    /// Weakens a guarantee in some failure, or could not be checked.
    Warning,
    /// Breaks mutual exclusion (or the quorum arithmetic) in ordinary operation.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// What a [`Finding`] is about.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FindingKind {
    /// The node did not answer, or not as Redis would.
    Unreachable(NodeError),
    /// This node is the same server (same `run_id`) as an earlier one.
    SameServer {
        /// The earlier node's index.
        first: usize,
    },
    /// The node is a replica.
    Replica,
    /// The node runs in Redis Cluster mode.
    ClusterMode,
    /// `maxmemory-policy` is not `noeviction`.
    Eviction {
        /// The policy found.
        policy: String,
    },
    /// Writes are not fsynced before they are acknowledged.
    NoFsyncAlways {
        /// Whether AOF is on.
        aof_enabled: bool,
        /// The `appendfsync` setting, when it could be read.
        appendfsync: Option<String>,
    },
    /// A setting could not be read (e.g. `CONFIG` denied by an ACL).
    Unchecked {
        /// What could not be checked.
        what: &'static str,
        /// Why.
        cause: NodeError,
    },
    /// Fewer than 3 nodes.
    TooFewNodes(usize),
    /// An even number of nodes.
    EvenNodes(usize),
    /// `node_timeout` is long compared with typical lock TTLs.
    SlowNodeTimeout(Duration),
}

/// One problem found by [`Redlock::diagnose`]: [`Display`](fmt::Display) says what is
/// wrong, why it matters and what to change.
///
/// ```no_run
/// # async fn run(redlock: tokio_redlock::Redlock) {
/// use tokio_redlock::Severity;
/// for finding in redlock.diagnose().await.findings() {
///     if finding.severity() == Severity::Error {
///         eprintln!("{finding}");
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Finding {
    severity: Severity,
    node: Option<(usize, Arc<str>)>,
    kind: FindingKind,
    fencing: bool,
}

impl Finding {
    fn new(severity: Severity, node: Option<&NodeReport>, kind: FindingKind) -> Self {
        Self {
            severity,
            node: node.map(|n| (n.index, n.endpoint.clone())),
            kind,
            fencing: false,
        }
    }

    /// How serious it is.
    pub fn severity(&self) -> Severity {
        self.severity
    }

    /// The index of the node it is about, or `None` for the node set as a whole.
    pub fn node(&self) -> Option<usize> {
        self.node.as_ref().map(|(i, _)| *i)
    }

    /// What it is about.
    pub fn kind(&self) -> &FindingKind {
        &self.kind
    }

    /// Whether strict mode refuses to lock because of it: errors, except an unreachable
    /// node (which the quorum tolerates; it is checked again when it is back).
    pub(crate) fn blocks(&self) -> bool {
        self.severity == Severity::Error && !matches!(self.kind, FindingKind::Unreachable(_))
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.severity)?;
        if let Some((i, endpoint)) = &self.node {
            write!(f, "node {i} ({endpoint}) ")?;
        }
        match &self.kind {
            FindingKind::Unreachable(e) => write!(
                f,
                "did not answer the health check ({e}); it cannot vote, so fewer failures \
                 are tolerated: bring it back or check its address and credentials"
            ),
            FindingKind::SameServer { first } => write!(
                f,
                "is the same server as node {first} (same run_id); its votes count twice and \
                 the quorum is wrong: list each independent server once"
            ),
            FindingKind::Replica => f.write_str(
                "is a replica; writes fail there, and if it is promoted after a failover it \
                 may lack locks that were granted: use independent masters only",
            ),
            FindingKind::ClusterMode => f.write_str(
                "runs in cluster mode; a failover to a replica can lose locks (replication is \
                 asynchronous): use standalone masters, or accept that risk knowingly",
            ),
            FindingKind::Eviction { policy } => write!(
                f,
                "has maxmemory-policy {policy}; every policy but noeviction can evict lock \
                 keys (they all carry a TTL, so volatile-* can too, and volatile-ttl takes \
                 them first), silently freeing held locks: set `maxmemory-policy noeviction`"
            ),
            FindingKind::NoFsyncAlways {
                aof_enabled,
                appendfsync,
            } => {
                if *aof_enabled {
                    write!(
                        f,
                        "fsyncs its AOF with appendfsync {}, not always; a crash can lose \
                         acknowledged locks",
                        appendfsync.as_deref().unwrap_or("(unknown)")
                    )?;
                } else {
                    f.write_str(
                        "has no AOF; a restart loses every lock it granted (Debian's packaged \
                         service restarts at once without AOF)",
                    )?;
                }
                if self.fencing {
                    f.write_str(
                        ", and fencing counters too, so tokens could repeat: set \
                         `appendonly yes` and `appendfsync always`",
                    )
                } else {
                    f.write_str(
                        ": set `appendonly yes` and `appendfsync always`, or delay restarts \
                         beyond the longest lock TTL",
                    )
                }
            }
            FindingKind::Unchecked { what, cause } => write!(
                f,
                "could not be checked for {what} ({cause}); grant the user `CONFIG GET` \
                 (see docs/operations.md) or check it by hand"
            ),
            FindingKind::TooFewNodes(n) => write!(
                f,
                "{n} node(s): with fewer than 3, one node failing stops all locking, and a \
                 single node is a single point of failure: use 3 or 5 independent nodes"
            ),
            FindingKind::EvenNodes(n) => write!(
                f,
                "{n} nodes: an even count tolerates no more failures than one node fewer, \
                 and costs a node: use an odd number"
            ),
            FindingKind::SlowNodeTimeout(t) => write!(
                f,
                "node_timeout is {t:?}; a request to a sick node may take that long, which \
                 eats into every lock's validity: keep it to tens of milliseconds, far below \
                 the TTL"
            ),
        }
    }
}

/// What [`Redlock::diagnose`] learned about one node. Fields are `None` where the node
/// did not say (unreachable, or the setting could not be read).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeReport {
    /// The node's index in the order given to the builder.
    pub index: usize,
    /// `host:port[/db]`, without credentials.
    pub endpoint: Arc<str>,
    /// Whether it answered `PING`.
    pub reachable: bool,
    /// The `PING` round trip.
    pub latency: Option<Duration>,
    /// `redis` or `valkey` (INFO `server_name`, else `redis`).
    pub server: Option<String>,
    /// The server's version.
    pub version: Option<String>,
    /// `master` or `slave`.
    pub role: Option<String>,
    /// The server's `run_id`: new at every start.
    pub run_id: Option<String>,
    /// `maxmemory-policy`.
    pub maxmemory_policy: Option<String>,
    /// Whether AOF is on.
    pub aof_enabled: Option<bool>,
    /// `appendfsync` (`always`, `everysec`, `no`).
    pub appendfsync: Option<String>,
    /// How long the server has been up.
    pub uptime: Option<Duration>,
    /// Whether it runs in cluster mode.
    pub cluster_enabled: Option<bool>,
    /// Why it could not be checked, when it could not.
    pub error: Option<NodeError>,
}

impl NodeReport {
    fn empty(node: &Node) -> Self {
        Self {
            index: node.index,
            endpoint: node.endpoint.clone(),
            reachable: false,
            latency: None,
            server: None,
            version: None,
            role: None,
            run_id: None,
            maxmemory_policy: None,
            aof_enabled: None,
            appendfsync: None,
            uptime: None,
            cluster_enabled: None,
            error: None,
        }
    }
}

/// The result of [`Redlock::diagnose`]: one [`NodeReport`] per node and the
/// [`Finding`]s.
///
/// Displays as one line per finding (or "healthy").
#[derive(Debug, Clone)]
pub struct Report {
    nodes: Vec<NodeReport>,
    findings: Vec<Finding>,
}

impl Report {
    /// True when no finding has [`Severity::Error`].
    pub fn is_healthy(&self) -> bool {
        !self.findings.iter().any(|f| f.severity == Severity::Error)
    }

    /// Every finding, errors first, then by node.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// What each node reported, in node order.
    pub fn nodes(&self) -> &[NodeReport] {
        &self.nodes
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return f.write_str("healthy: no findings");
        }
        for (i, finding) in self.findings.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{finding}")?;
        }
        Ok(())
    }
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
        let results = futures::future::join_all(checks).await;
        let mut reports = Vec::with_capacity(nodes.len());
        let mut findings = Vec::new();
        for (report, unchecked) in results {
            if let Some(cause) = unchecked {
                findings.push(Finding::new(
                    Severity::Warning,
                    Some(&report),
                    FindingKind::Unchecked {
                        what: "appendfsync",
                        cause,
                    },
                ));
            }
            reports.push(report);
        }
        let config = &self.inner.config;
        findings.extend(judge(&reports, config.node_timeout));
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

/// Asks one node about itself. The second value is the cause when `CONFIG GET` failed
/// on an otherwise reachable node.
async fn check_node(node: &Node) -> (NodeReport, Option<NodeError>) {
    let mut report = NodeReport::empty(node);
    let start = Instant::now();
    match node.run(Request::Cmd(&redis::cmd("PING"))).await {
        Ok(Value::SimpleString(s)) if s == "PONG" => {}
        Ok(other) => {
            report.error = Some(node.protocol_error(format!("PING answered {other:?}")));
            return (report, None);
        }
        Err(e) => {
            report.error = Some(e);
            return (report, None);
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
    let unchecked = match node.run(Request::Cmd(&config_get)).await {
        Ok(value) => {
            report.appendfsync = config_value(&value, "appendfsync");
            None
        }
        // Only worth a finding when it matters: with AOF off, appendfsync is moot.
        Err(e) if report.aof_enabled != Some(false) => Some(e),
        Err(_) => None,
    };
    (report, unchecked)
}

/// The findings that follow from the node reports and the settings.
fn judge(reports: &[NodeReport], node_timeout: Duration) -> Vec<Finding> {
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
        if let Some(e) = &r.error {
            if !r.reachable || r.run_id.is_none() {
                findings.push(Finding::new(
                    Severity::Error,
                    Some(r),
                    FindingKind::Unreachable(e.clone()),
                ));
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
        if let Some(aof) = r.aof_enabled {
            if !aof || r.appendfsync.as_deref().is_some_and(|s| s != "always") {
                findings.push(Finding::new(
                    Severity::Warning,
                    Some(r),
                    FindingKind::NoFsyncAlways {
                        aof_enabled: aof,
                        appendfsync: r.appendfsync.clone(),
                    },
                ));
            }
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
mod tests {
    use super::*;
    use crate::error::NodeErrorKind;

    fn healthy(index: usize, run_id: &str) -> NodeReport {
        NodeReport {
            index,
            endpoint: format!("127.0.0.1:{}", 7000 + index).into(),
            reachable: true,
            latency: Some(Duration::from_micros(100)),
            server: Some("redis".into()),
            version: Some("7.0.15".into()),
            role: Some("master".into()),
            run_id: Some(run_id.into()),
            maxmemory_policy: Some("noeviction".into()),
            aof_enabled: Some(true),
            appendfsync: Some("always".into()),
            uptime: Some(Duration::from_secs(60)),
            cluster_enabled: Some(false),
            error: None,
        }
    }

    fn kinds(findings: &[Finding]) -> Vec<String> {
        findings
            .iter()
            .map(|f| {
                format!("{:?}", f.kind())
                    .split(['(', ' ', '{'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[test]
    fn three_good_nodes_have_no_findings() {
        let r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
        assert!(judge(&r, Duration::from_millis(50)).is_empty());
    }

    #[test]
    fn node_count_and_timeout_warnings() {
        let one = [healthy(0, "a")];
        assert_eq!(
            kinds(&judge(&one, Duration::from_millis(50))),
            ["TooFewNodes"]
        );
        let four: Vec<_> = (0..4).map(|i| healthy(i, &format!("id{i}"))).collect();
        let f = judge(&four, Duration::from_secs(2));
        assert_eq!(kinds(&f), ["EvenNodes", "SlowNodeTimeout"]);
        assert!(f
            .iter()
            .all(|f| f.severity() == Severity::Warning && f.node().is_none()));
    }

    #[test]
    fn each_misconfiguration_is_named() {
        let mut r: Vec<_> = (0..5).map(|i| healthy(i, &format!("id{i}"))).collect();
        r[1].run_id = Some("id0".into());
        r[2].role = Some("slave".into());
        r[3].maxmemory_policy = Some("volatile-ttl".into());
        r[4].appendfsync = Some("everysec".into());
        let f = judge(&r, Duration::from_millis(50));
        assert_eq!(
            kinds(&f),
            ["SameServer", "Replica", "Eviction", "NoFsyncAlways"]
        );
        assert_eq!(
            f.iter().map(|f| f.node()).collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(f[0].severity(), Severity::Error);
        assert!(
            f[0].to_string().contains("same server as node 0"),
            "{}",
            f[0]
        );
        assert!(f[2].to_string().contains("noeviction"), "{}", f[2]);
        assert_eq!(f[3].severity(), Severity::Warning);
        assert!(f[0].blocks() && f[1].blocks() && f[2].blocks() && !f[3].blocks());
    }

    #[test]
    fn unreachable_is_an_error_that_does_not_block() {
        let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
        r[2] = NodeReport {
            reachable: false,
            error: Some(NodeError::new(
                2,
                "h:1".into(),
                NodeErrorKind::Timeout(Duration::from_millis(50)),
            )),
            ..NodeReport {
                index: 2,
                endpoint: "h:1".into(),
                reachable: false,
                latency: None,
                server: None,
                version: None,
                role: None,
                run_id: None,
                maxmemory_policy: None,
                aof_enabled: None,
                appendfsync: None,
                uptime: None,
                cluster_enabled: None,
                error: None,
            }
        };
        let f = judge(&r, Duration::from_millis(50));
        assert_eq!(kinds(&f), ["Unreachable"]);
        assert_eq!(f[0].severity(), Severity::Error);
        assert!(!f[0].blocks());
        assert!(
            f[0].to_string().contains("no answer within 50ms"),
            "{}",
            f[0]
        );
    }

    #[test]
    fn info_and_config_replies_parse() {
        let info =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n\
                    run_id:abc\r\nuptime_in_seconds:12\r\n\r\n# Replication\r\nrole:master\r\n\
                    maxmemory_policy:allkeys-lru\r\naof_enabled:0\r\ncluster_enabled:1\r\n";
        let mut r = healthy(0, "x");
        apply_info(&mut r, &parse_info(info));
        assert_eq!(r.server.as_deref(), Some("valkey"));
        assert_eq!(r.version.as_deref(), Some("8.0.1"));
        assert_eq!(r.run_id.as_deref(), Some("abc"));
        assert_eq!(r.uptime, Some(Duration::from_secs(12)));
        assert_eq!(r.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(
            (r.aof_enabled, r.cluster_enabled),
            (Some(false), Some(true))
        );
        let reply = Value::Array(vec![
            Value::BulkString(b"appendfsync".to_vec()),
            Value::BulkString(b"everysec".to_vec()),
        ]);
        assert_eq!(
            config_value(&reply, "appendfsync").as_deref(),
            Some("everysec")
        );
        assert_eq!(config_value(&Value::Array(vec![]), "appendfsync"), None);
    }
}
