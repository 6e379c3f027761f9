//! The verdict: which findings follow from what the nodes said and the settings. Pure,
//! so every rule is unit-tested without a server.

use std::collections::HashMap;
use std::time::Duration;

use super::report::{Finding, FindingKind, NodeReport, Severity};
use crate::error::node::{NodeError, NodeErrorKind};

/// A `node_timeout` above this is flagged: a request to a sick node may take that long,
/// and lock TTLs are typically a few seconds, so a second spent waiting is a large part of
/// the validity, and keep-alive extensions may not fit in time.
const SLOW_NODE_TIMEOUT: Duration = Duration::from_secs(1);

/// The findings that follow from the node reports and the settings.
pub(super) fn judge(reports: &[NodeReport], node_timeout: Duration, fencing: bool) -> Vec<Finding> {
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
        if let Some(masters) = r.masters {
            findings.push(Finding::new(
                Severity::Warning,
                Some(r),
                FindingKind::ClusterVote { masters },
            ));
        }
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
        if r.cluster_enabled == Some(true) && r.masters.is_none() {
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
