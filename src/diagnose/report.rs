//! The types of a health check's result: [`HealthReport`], [`NodeReport`], and
//! [`Finding`] with its [`Display`](fmt::Display) that says what to change.
//!
//! Types only, below [`Error`](crate::Error), which carries findings in
//! [`Error::Unhealthy`](crate::Error::Unhealthy): this file imports nothing of the crate
//! but the node errors and the `INFO` fields.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::node::NodeError;
use crate::info::ServerInfo;

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
    /// The node did not answer, or not as Redis would: it cannot vote now.
    Unreachable(NodeError),
    /// The node answers, but would not let itself be checked: it refused `INFO` or
    /// `CONFIG GET` (e.g. an ACL denies them) or answered them with something unreadable.
    /// Its setup is unknown while it takes part in locking, so
    /// [`CheckMode::Strict`](crate::CheckMode::Strict) refuses it (fails closed).
    Unverifiable {
        /// The checks that were refused, e.g. `["INFO", "CONFIG GET appendfsync"]`.
        denied: Vec<&'static str>,
        /// Why the first of them failed.
        cause: NodeError,
    },
    /// This node is the same server (same `run_id`) as an earlier one.
    SameServer {
        /// The earlier node's index.
        first: usize,
    },
    /// The node is a replica.
    Replica,
    /// The node runs in Redis Cluster mode.
    ClusterMode,
    /// The node is a whole Redis Cluster voting once (feature `cluster`): its masters
    /// fail over to replicas asynchronously, so a failover can lose a lock it granted.
    /// A warning, always given for a cluster vote: the risk is the deployment's, not a
    /// setting's.
    ClusterVote {
        /// How many masters answered the check (0 when none did).
        masters: usize,
    },
    /// `maxmemory-policy` is not `noeviction`.
    Eviction {
        /// The policy found.
        policy: String,
    },
    /// Writes are not fsynced before they are acknowledged. A warning, and an error with
    /// fencing on: fencing tokens assume `appendfsync always`.
    NoFsyncAlways {
        /// Whether AOF is on.
        aof_enabled: bool,
        /// The `appendfsync` setting, when it could be read.
        appendfsync: Option<String>,
    },
    /// A setting that only a warning depends on could not be read (e.g. `CONFIG GET`
    /// denied by an ACL without fencing); see [`FindingKind::Unverifiable`] for the rest.
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

/// One problem found by [`Redlock::diagnose`](crate::Redlock::diagnose): [`Display`](fmt::Display) says what is
/// wrong, why it matters and what to change.
///
/// ```no_run
/// # async fn run(redlock: tokio_redlock::Redlock) {
/// use tokio_redlock::diagnose::Severity;
/// for finding in redlock.diagnose().await.findings() {
///     if finding.severity() == Severity::Error {
///         eprintln!("{finding}");
///     }
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct Finding {
    pub(super) severity: Severity,
    node: Option<(usize, Arc<str>)>,
    kind: FindingKind,
    /// Set for a fenced manager: the persistence advice then covers the counters.
    pub(super) fencing: bool,
}

impl Finding {
    pub(super) fn new(severity: Severity, node: Option<&NodeReport>, kind: FindingKind) -> Self {
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
    /// node (which the quorum tolerates; it is checked again when it is back). A node
    /// that answers but cannot be checked is an error, so strict mode fails closed.
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
                "did not answer the health check ({e}); it cannot vote while it does not \
                 answer, so fewer failures are tolerated: bring it back or check its address \
                 and credentials"
            ),
            FindingKind::Unverifiable { denied, cause } => {
                let info = denied.contains(&"INFO");
                write!(
                    f,
                    "answers but refused {} ({cause}), so ",
                    denied.join(" and ")
                )?;
                if info {
                    f.write_str(
                        "its role, eviction policy and persistence are unknown while it \
                         takes part in locking",
                    )?;
                } else {
                    f.write_str(
                        "whether it fsyncs every write before acknowledging it (fencing's \
                         one assumption) is unknown while it takes part in locking",
                    )?;
                }
                let mut grant = Vec::new();
                if info {
                    grant.push("+info");
                }
                if denied.iter().any(|d| d.starts_with("CONFIG")) {
                    grant.push("+config|get");
                }
                write!(
                    f,
                    ": let the client's user run them (`{}`, as in the ACL rule in \
                     docs/operations.md)",
                    grant.join(" ")
                )
            }
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
            FindingKind::ClusterVote { masters } => write!(
                f,
                "is a Redis Cluster ({masters} master(s) answered) counted as one vote; its \
                 replication is asynchronous, so a failover can promote a replica that never \
                 got a lock its master granted, and that vote then says yes to a second \
                 owner, as a replica would: the other votes must hold the quorum alone \
                 through such a failover, so prefer standalone masters for most votes, and \
                 see docs/operations.md (\"A Redis Cluster as a vote\") for `min-replicas-to-write` \
                 and the failover settings"
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
                        ", and fencing counters too, so tokens could repeat; fencing assumes \
                         every write is on disk before it is acknowledged: set \
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

/// What [`Redlock::diagnose`](crate::Redlock::diagnose) learned about one node. Fields
/// are `None` where the node did not say (unreachable, or the setting could not be read).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeReport {
    /// The node's index in the order given to the builder.
    pub index: usize,
    /// `host:port[/db]`, without credentials.
    pub endpoint: Arc<str>,
    /// Whether it answered `PING` (a refusal by an ACL counts as an answer).
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
    /// For a whole Redis Cluster voting once: how many masters answered `INFO` (the
    /// other fields then sum them up: the worst setting found on any master). `None`
    /// for a server.
    pub masters: Option<usize>,
    /// Why it could not be checked, when it could not.
    pub error: Option<NodeError>,
    /// Why `CONFIG GET appendfsync` failed, when it did.
    pub(super) config_error: Option<NodeError>,
}

impl NodeReport {
    /// Takes in what the node's `INFO` said.
    pub(super) fn apply(&mut self, info: ServerInfo) {
        self.server = Some(info.server);
        self.version = info.version;
        self.role = info.role;
        self.run_id = info.run_id;
        self.maxmemory_policy = info.maxmemory_policy;
        self.aof_enabled = info.aof_enabled;
        self.uptime = info.uptime;
        self.cluster_enabled = info.cluster_enabled;
    }

    /// Nothing known yet of node `index` at `endpoint`.
    pub(super) fn blank(index: usize, endpoint: Arc<str>) -> Self {
        Self {
            index,
            endpoint,
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
            masters: None,
            error: None,
            config_error: None,
        }
    }
}

/// The result of [`Redlock::diagnose`](crate::Redlock::diagnose): one [`NodeReport`] per
/// node and the [`Finding`]s.
///
/// Displays as one line per finding (or "healthy").
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub(super) nodes: Vec<NodeReport>,
    pub(super) findings: Vec<Finding>,
}

impl HealthReport {
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

impl fmt::Display for HealthReport {
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
