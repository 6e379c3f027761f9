//! `redlock diagnose` and `redlock inspect`: the library's reports as text or JSON.
//!
//! The JSON is built here from the reports' public getters: the library's types do not
//! implement serde, and the field names below are this tool's interface, documented in
//! cli/README.md. Durations are whole milliseconds (`*_ms`).

use std::time::Duration;

use serde_json::{json, Value};
use tokio_redlock::diagnose::{FindingKind, HealthReport, NodeReport, Severity};
use tokio_redlock::{LockInfo, Redlock};

use crate::status::{self, Failure};

/// Prints the health report; returns 0 when healthy, 1 when not.
pub(crate) async fn diagnose(redlock: &Redlock, as_json: bool) -> u8 {
    let report = redlock.diagnose().await;
    if as_json {
        println!("{}", health_json(&report));
    } else {
        print!("{}", health_text(&report));
    }
    if report.is_healthy() {
        0
    } else {
        status::UNHEALTHY
    }
}

/// Prints who holds `resource`.
///
/// # Errors
/// A usage failure for a resource name the library refuses.
pub(crate) async fn inspect(
    redlock: &Redlock,
    resource: &str,
    as_json: bool,
) -> Result<u8, Failure> {
    let info = redlock
        .inspect(resource)
        .await
        .map_err(|e| Failure::from_lock_error(&e))?;
    if as_json {
        println!("{}", info_json(&info));
    } else {
        println!("{info}");
    }
    Ok(0)
}

fn health_text(report: &HealthReport) -> String {
    let mut out = String::new();
    for node in report.nodes() {
        out.push_str(&node_line(node));
        out.push('\n');
    }
    // One finding per line, each saying what to change (the library's Display; without
    // findings it says "healthy", which the last line below says already).
    if !report.findings().is_empty() {
        out.push_str(&report.to_string());
        out.push('\n');
    }
    out.push_str(if report.is_healthy() {
        "healthy\n"
    } else {
        "unhealthy: fix the errors above\n"
    });
    out
}

fn node_line(node: &NodeReport) -> String {
    let mut parts = Vec::new();
    if !node.reachable {
        parts.push("unreachable".to_owned());
    }
    if let Some(server) = &node.server {
        let version = node.version.as_deref().unwrap_or("?");
        parts.push(format!("{server} {version}"));
    }
    if let Some(role) = &node.role {
        parts.push(role.clone());
    }
    if let Some(latency) = node.latency {
        parts.push(format!("ping {:.1} ms", latency.as_secs_f64() * 1000.0));
    }
    if let Some(policy) = &node.maxmemory_policy {
        parts.push(format!("maxmemory-policy {policy}"));
    }
    match (node.aof_enabled, &node.appendfsync) {
        (Some(true), Some(fsync)) => parts.push(format!("aof on, appendfsync {fsync}")),
        (Some(true), None) => parts.push("aof on".into()),
        (Some(false), _) => parts.push("aof off".into()),
        (None, _) => {}
    }
    format!(
        "node {} {}: {}",
        node.index,
        node.endpoint,
        parts.join(", ")
    )
}

fn health_json(report: &HealthReport) -> Value {
    let findings: Vec<Value> = report
        .findings()
        .iter()
        .map(|f| {
            json!({
                "severity": severity(f.severity()),
                "node": f.node(),
                "kind": kind_name(f.kind()),
                "message": status::one_line(&f.to_string()),
            })
        })
        .collect();
    let nodes: Vec<Value> = report
        .nodes()
        .iter()
        .map(|n| {
            json!({
                "index": n.index,
                "endpoint": &*n.endpoint,
                "reachable": n.reachable,
                "latency_ms": n.latency.map(millis_f64),
                "server": n.server,
                "version": n.version,
                "role": n.role,
                "run_id": n.run_id,
                "maxmemory_policy": n.maxmemory_policy,
                "aof_enabled": n.aof_enabled,
                "appendfsync": n.appendfsync,
                "uptime_ms": n.uptime.map(millis),
                "cluster_enabled": n.cluster_enabled,
                "masters": n.masters,
                "error": n.error.as_ref().map(|e| status::one_line(&e.to_string())),
            })
        })
        .collect();
    json!({
        "healthy": report.is_healthy(),
        "findings": findings,
        "nodes": nodes,
    })
}

fn info_json(info: &LockInfo) -> Value {
    let holders: Vec<Value> = info
        .holders()
        .iter()
        .map(|h| {
            json!({
                "label": h.label(),
                "node_count": h.node_count(),
                "nodes": h.nodes(),
                // null: a value without an expiry (not written by a Redlock client).
                "min_ttl_ms": (h.min_ttl() != Duration::MAX).then(|| millis(h.min_ttl())),
            })
        })
        .collect();
    let errors: Vec<String> = info
        .errors()
        .iter()
        .map(|e| status::one_line(&e.to_string()))
        .collect();
    json!({
        "resource": info.resource(),
        "key": info.key(),
        "held_by_quorum": info.held_by_quorum(),
        "quorum": info.quorum(),
        "node_count": info.node_count(),
        "holders": holders,
        "free_nodes": info.free_nodes(),
        "unknown_nodes": info.unknown_nodes(),
        "errors": errors,
    })
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Error => "error",
        Severity::Warning => "warning",
        // A severity added by a later library version: its own Display.
        _ => "other",
    }
}

/// A stable name for what a finding is about, for scripts to match on.
fn kind_name(kind: &FindingKind) -> &'static str {
    match kind {
        FindingKind::Unreachable(_) => "unreachable",
        FindingKind::Unverifiable { .. } => "unverifiable",
        FindingKind::SameServer { .. } => "same_server",
        FindingKind::Replica => "replica",
        FindingKind::ClusterMode => "cluster_mode",
        FindingKind::ClusterVote { .. } => "cluster_vote",
        FindingKind::Eviction { .. } => "eviction",
        FindingKind::NoFsyncAlways { .. } => "no_fsync_always",
        FindingKind::Unchecked { .. } => "unchecked",
        FindingKind::TooFewNodes(_) => "too_few_nodes",
        FindingKind::EvenNodes(_) => "even_nodes",
        FindingKind::SlowNodeTimeout(_) => "slow_node_timeout",
        _ => "other",
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn millis_f64(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
