//! Health checks against real servers: `diagnose` on healthy and misconfigured nodes,
//! and `health_check`'s three modes (off sends nothing, warn logs, strict refuses).

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio_redlock::diagnose::{HealthReport, Severity};
use tokio_redlock::{CheckMode, Error, Redlock};
use tokio_redlock_harness::Persistence;

use crate::acl::{acl_user, urls_as, LOCKER_RULE};
use crate::support::*;

pub(crate) const TTL: Duration = Duration::from_secs(10);

pub(crate) async fn cmd(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.expect(args[0])
}

pub(crate) fn kinds(report: &HealthReport) -> Vec<(Option<usize>, String)> {
    report
        .findings()
        .iter()
        .map(|f| {
            let kind = format!("{:?}", f.kind());
            let name = kind.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
            (f.node(), name)
        })
        .collect()
}

#[tokio::test]
async fn diagnose_reports_a_well_run_cluster_as_healthy() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let redlock = redlock(&cluster);
    let report = bounded(redlock.diagnose()).await;
    assert!(report.is_healthy(), "{report}");
    assert!(report.findings().is_empty(), "{report}");
    assert_eq!(report.to_string(), "healthy: no findings");
    let mut run_ids = std::collections::HashSet::new();
    for (i, node) in report.nodes().iter().enumerate() {
        assert_eq!(node.index, i);
        assert!(node.reachable && node.error.is_none(), "{node:?}");
        assert!(node.latency.is_some());
        assert_eq!(node.server.as_deref(), Some("redis"));
        assert!(node.version.as_deref().is_some_and(|v| v.contains('.')));
        assert_eq!(node.role.as_deref(), Some("master"));
        assert_eq!(node.maxmemory_policy.as_deref(), Some("noeviction"));
        assert_eq!(node.aof_enabled, Some(true));
        assert_eq!(node.appendfsync.as_deref(), Some("always"));
        assert_eq!(node.cluster_enabled, Some(false));
        assert!(node.uptime.is_some());
        run_ids.insert(node.run_id.clone().expect("run_id"));
    }
    assert_eq!(run_ids.len(), 3);
}

#[tokio::test]
async fn diagnose_names_every_misconfiguration() {
    let cluster = cluster(4).await;
    let mut conns = direct(&cluster).await;
    // Cluster node 1 evicts by TTL; node 2 replicates node 1; node 3 is down.
    cmd(
        &mut conns[1],
        &["CONFIG", "SET", "maxmemory-policy", "volatile-ttl"],
    )
    .await;
    let port1 = cluster.node(1).server_port().to_string();
    cmd(&mut conns[2], &["REPLICAOF", "127.0.0.1", &port1]).await;
    cluster.node(3).kill().await.unwrap();
    // Node 0 twice: once through its proxy, once directly.
    let urls = cluster.urls();
    let redlock = Redlock::builder()
        .node(&urls[0])
        .node(&cluster.direct_urls()[0])
        .nodes(&urls[1..])
        .node_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let report = bounded(redlock.diagnose()).await;
    assert!(!report.is_healthy());
    let found = kinds(&report);
    let has = |node: Option<usize>, kind: &str| found.contains(&(node, kind.to_owned()));
    assert!(has(Some(1), "SameServer"), "{found:?}");
    assert!(has(Some(2), "Eviction"), "{found:?}");
    assert!(has(Some(3), "Replica"), "{found:?}");
    assert!(has(Some(4), "Unreachable"), "{found:?}");
    assert!(has(None, "SlowNodeTimeout"), "{found:?}");
    // 5 nodes: odd and enough, so no count warning.
    assert!(
        !has(None, "EvenNodes") && !has(None, "TooFewNodes"),
        "{found:?}"
    );
    // Memory-only nodes: a warning each, for the reachable ones.
    for node in 0..4 {
        assert!(has(Some(node), "NoFsyncAlways"), "{found:?}");
    }
    // Errors come first; each finding says what to change.
    let first_warning = report
        .findings()
        .iter()
        .position(|f| f.severity() == Severity::Warning)
        .unwrap();
    assert!(report.findings()[..first_warning]
        .iter()
        .all(|f| f.severity() == Severity::Error));
    let text = report.to_string();
    assert!(text.contains("same server as node 0"), "{text}");
    assert!(
        text.contains("volatile-ttl") && text.contains("maxmemory-policy noeviction"),
        "{text}"
    );
    assert!(text.contains("replica"), "{text}");
    assert!(text.contains("appendfsync always"), "{text}");
    let replica = &report.nodes()[3];
    assert_eq!(replica.role.as_deref(), Some("slave"));
    assert!(!report.nodes()[4].reachable);
    let even = Redlock::builder()
        .nodes(&urls[..2])
        .build()
        .unwrap()
        .diagnose()
        .await;
    assert!(
        kinds(&even).contains(&(None, "TooFewNodes".to_owned())),
        "{even}"
    );
}

/// With CheckMode::Off (the default) acquiring sends no health-check command at all.
#[tokio::test]
async fn check_off_sends_no_health_commands() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    cmd(&mut conns[0], &["CONFIG", "RESETSTAT"]).await;
    let redlock = redlock(&cluster);
    let g = bounded(redlock.acquire("off", TTL)).await.unwrap();
    g.release().await.unwrap();
    let stats: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conns[0])
        .await
        .unwrap();
    assert!(stats.contains("cmdstat_set:"), "{stats}");
    assert!(!stats.contains("cmdstat_info:"), "{stats}");
    // (CONFIG RESETSTAT itself shows as cmdstat_config|resetstat.)
    assert!(!stats.contains("cmdstat_config|get"), "{stats}");
}

#[tokio::test]
async fn strict_refuses_a_misconfigured_node_set_until_fixed() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    cmd(
        &mut conns[2],
        &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"],
    )
    .await;
    let strict = builder(&cluster)
        .health_check(CheckMode::Strict)
        .build()
        .unwrap();
    let err = bounded(strict.acquire("strict", TTL)).await.unwrap_err();
    match &err {
        Error::Unhealthy { findings, .. } => {
            assert_eq!(findings.len(), 1, "{err}");
            assert_eq!(findings[0].node(), Some(2));
        }
        other => panic!("expected Unhealthy, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("noeviction") && msg.contains("CheckMode::Warn"),
        "{msg}"
    );
    // Nothing was locked.
    assert!(values(&mut conns, "strict")
        .await
        .iter()
        .all(Option::is_none));

    cmd(
        &mut conns[2],
        &["CONFIG", "SET", "maxmemory-policy", "noeviction"],
    )
    .await;
    // The verdict is cached for a few seconds; a fresh manager checks again at once.
    let strict = builder(&cluster)
        .health_check(CheckMode::Strict)
        .build()
        .unwrap();
    bounded(strict.acquire("strict", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // A node that is down is the quorum's business, not a reason to refuse.
    cluster.node(1).kill().await.unwrap();
    let strict = builder(&cluster)
        .health_check(CheckMode::Strict)
        .build()
        .unwrap();
    bounded(strict.acquire("strict", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn warn_logs_findings_once_and_still_locks() {
    let logs = Captured::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .finish();
    // Current-thread runtime: the background check runs on this thread, under this
    // subscriber.
    let _default = tracing::subscriber::set_default(subscriber);
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    cmd(
        &mut conns[0],
        &["CONFIG", "SET", "maxmemory-policy", "volatile-lru"],
    )
    .await;
    let redlock = builder(&cluster)
        .health_check(CheckMode::Warn)
        .build()
        .unwrap();
    for _ in 0..3 {
        bounded(redlock.acquire("warn", TTL))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let text = || String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    eventually("the eviction finding is logged", || {
        let t = text();
        async move { t.contains("volatile-lru") }
    })
    .await;
    // Give a second check (there must be none) time to show up, bounded.
    tokio::time::timeout(Duration::from_millis(300), std::future::pending::<()>())
        .await
        .ok();
    assert_eq!(text().matches("volatile-lru").count(), 1, "{}", text());
}

/// Makes `user` with `rule` and `password` on every node.
pub(crate) fn full_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(" | ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A strict manager on `urls`, with `fencing` as given.
fn strict_on(urls: Vec<String>, fencing: bool) -> Redlock {
    Redlock::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(250))
        .retry_count(1)
        .retry_delay(Duration::from_millis(20))
        .fencing(fencing)
        .health_check(CheckMode::Strict)
        .build()
        .unwrap()
}

/// The findings of an `Error::Unhealthy`, as (node, kind name); panics on any other result.
fn refused(
    result: Result<tokio_redlock::LockGuard, Error>,
) -> (Vec<(Option<usize>, String)>, String) {
    match result {
        Err(err @ Error::Unhealthy { .. }) => {
            let Error::Unhealthy { findings, .. } = &err else {
                unreachable!()
            };
            let found = findings
                .iter()
                .map(|f| {
                    let kind = format!("{:?}", f.kind());
                    let name = kind.split(['(', ' ', '{']).next().unwrap_or("").to_owned();
                    (f.node(), name)
                })
                .collect();
            (found, err.to_string())
        }
        Err(other) => panic!("expected Unhealthy, got {other}"),
        Ok(guard) => panic!("expected Unhealthy, but locked {:?}", guard.resources()),
    }
}

/// Strict mode fails closed: a node that answers but whose ACL denies `INFO` and
/// `CONFIG GET` cannot be shown to be safe, so it is refused as "unverifiable", not
/// tolerated as "unreachable" (it answers, and takes part in locking).
#[tokio::test]
async fn strict_refuses_a_node_that_denies_info_and_config() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    acl_user(&cluster, "watcher", "pw-watcher-6", LOCKER_RULE).await;
    let mut conns = direct(&cluster).await;
    let set_rule_on_node_1 = |rule: String| {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER")
            .arg("watcher")
            .arg("reset")
            .arg("on")
            .arg(">pw-watcher-6");
        for part in rule.split_whitespace() {
            c.arg(part);
        }
        c
    };
    let urls = urls_as(&cluster, "watcher", "pw-watcher-6");
    for (rule, what) in [
        (
            LOCKER_RULE.replace(" +info +config|get", ""),
            "INFO and CONFIG GET denied",
        ),
        (
            LOCKER_RULE.replace(" +ping +info +config|get", ""),
            "PING, INFO and CONFIG GET denied",
        ),
    ] {
        let _: () = set_rule_on_node_1(rule)
            .query_async(&mut conns[1])
            .await
            .unwrap();
        // The node still locks: the ACL lets every locking command through.
        let plain = Redlock::builder()
            .nodes(urls.clone())
            .node_timeout(Duration::from_millis(250))
            .build()
            .unwrap();
        let g = bounded(plain.acquire("unverified", TTL)).await.unwrap();
        // The acquisition returns at quorum; node 1's reply may still be on its way.
        let c = conns.clone();
        eventually(&format!("{what}: node 1 votes"), || {
            let mut c = c.clone();
            async move {
                values(&mut c, "unverified")
                    .await
                    .iter()
                    .all(Option::is_some)
            }
        })
        .await;
        bounded(g.release()).await.unwrap();
        // diagnose says what was denied, and does not call it unreachable.
        let report = bounded(plain.diagnose()).await;
        assert_eq!(
            kinds(&report),
            [(Some(1), "Unverifiable".to_owned())],
            "{what}: {report}"
        );
        assert!(report.nodes()[1].reachable, "{what}: {report}");
        let text = report.to_string();
        assert!(
            text.contains("refused INFO and CONFIG GET appendfsync")
                && text.contains("permission denied")
                && text.contains("+info +config|get")
                && !text.contains("cannot vote"),
            "{what}: {text}"
        );
        // Strict refuses to lock, naming the node.
        let (found, msg) =
            refused(bounded(strict_on(urls.clone(), false).acquire("unverified", TTL)).await);
        assert_eq!(
            found,
            [(Some(1), "Unverifiable".to_owned())],
            "{what}: {msg}"
        );
        assert!(
            msg.contains("node 1 (") && msg.contains("+info +config|get"),
            "{what}: {msg}"
        );
        assert!(
            values(&mut conns, "unverified")
                .await
                .iter()
                .all(Option::is_none),
            "{what}: nothing was locked"
        );
    }
    // Granted what it asked for, the node is checked and strict mode locks.
    let _: () = set_rule_on_node_1(LOCKER_RULE.to_owned())
        .query_async(&mut conns[1])
        .await
        .unwrap();
    let g = bounded(strict_on(urls, true).acquire("unverified", TTL))
        .await
        .unwrap();
    assert!(g.fencing_token().is_some());
    bounded(g.release()).await.unwrap();
}

/// Fencing tokens assume `appendfsync always`: with fencing on, strict mode refuses
/// nodes without it (memory-only, `everysec`), and nodes it cannot ask; without fencing
/// those stay warnings and it locks.
#[tokio::test]
async fn strict_with_fencing_refuses_nodes_without_fsync_always() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    let (found, msg) =
        refused(bounded(strict_on(cluster.urls(), true).acquire("fsync", TTL)).await);
    assert_eq!(
        found,
        (0..3)
            .map(|i| (Some(i), "NoFsyncAlways".to_owned()))
            .collect::<Vec<_>>(),
        "{msg}"
    );
    assert!(msg.contains("appendfsync always"), "{msg}");
    assert!(values(&mut conns, "fsync")
        .await
        .iter()
        .all(Option::is_none));
    // Without fencing, memory-only nodes are a warning: strict locks.
    bounded(strict_on(cluster.urls(), false).acquire("fsync", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    // AOF on every node, but node 2 fsyncs only every second: still refused, for node 2.
    for c in conns.iter_mut() {
        cmd(c, &["CONFIG", "SET", "appendonly", "yes"]).await;
        cmd(c, &["CONFIG", "SET", "appendfsync", "always"]).await;
    }
    cmd(&mut conns[2], &["CONFIG", "SET", "appendfsync", "everysec"]).await;
    let (found, msg) =
        refused(bounded(strict_on(cluster.urls(), true).acquire("fsync", TTL)).await);
    assert_eq!(found, [(Some(2), "NoFsyncAlways".to_owned())], "{msg}");
    assert!(
        msg.contains("everysec") && msg.contains("node 2 ("),
        "{msg}"
    );
}

/// With fencing on, every node running `appendfsync always` passes strict mode; one whose
/// ACL denies `CONFIG GET` cannot show it does, and is refused (without fencing, that is
/// only a warning).
#[tokio::test]
async fn strict_with_fencing_locks_on_aof_always_nodes() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let mut conns = direct(&cluster).await;
    let g = bounded(strict_on(cluster.urls(), true).acquire("aof", TTL))
        .await
        .unwrap();
    assert!(g.fencing_token().is_some());
    bounded(g.release()).await.unwrap();

    let no_config = LOCKER_RULE.replace(" +config|get", "");
    acl_user(&cluster, "noconf", "pw-noconf-7", &no_config).await;
    let urls = urls_as(&cluster, "noconf", "pw-noconf-7");
    let (found, msg) = refused(bounded(strict_on(urls.clone(), true).acquire("aof", TTL)).await);
    assert_eq!(
        found,
        (0..3)
            .map(|i| (Some(i), "Unverifiable".to_owned()))
            .collect::<Vec<_>>(),
        "{msg}"
    );
    assert!(
        msg.contains("+config|get") && msg.contains("fencing"),
        "{msg}"
    );
    assert!(values(&mut conns, "aof").await.iter().all(Option::is_none));
    bounded(strict_on(urls, false).acquire("aof", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}
