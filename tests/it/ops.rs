//! Operations against real servers: `diagnose`, `health_check`, least-privilege ACL
//! users, secrets never shown, TLS, and resource names.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio_redlock::diagnose::{FindingKind, HealthReport, Severity};
use tokio_redlock::{CheckMode, Error, Redlock};
use tokio_redlock_harness::{Cluster, Persistence};

use crate::support::*;

const TTL: Duration = Duration::from_secs(10);

/// The least-privilege rule documented in docs/operations.md, minus the user name and
/// password. Keep the two in step.
const LOCKER_RULE: &str = "~* resetchannels &tokio-redlock:wake:* -@all +set +get +del +pexpire \
                           +exists +evalsha +script|load +zadd +zpopmin +zrem +time +publish \
                           +subscribe +ping +info +config|get";

async fn cmd(conn: &mut MultiplexedConnection, args: &[&str]) -> redis::Value {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(conn).await.expect(args[0])
}

fn kinds(report: &HealthReport) -> Vec<(Option<usize>, String)> {
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
async fn acl_user(cluster: &Cluster, user: &str, password: &str, rule: &str) {
    for mut conn in direct(cluster).await {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER").arg(user).arg("reset").arg("on");
        c.arg(format!(">{password}"));
        for part in rule.split_whitespace() {
            c.arg(part);
        }
        let _: () = c.query_async(&mut conn).await.expect("ACL SETUSER");
    }
}

fn urls_as(cluster: &Cluster, user: &str, password: &str) -> Vec<String> {
    cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", &format!("redis://{user}:{password}@")))
        .collect()
}

fn full_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(" | ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// `Redlock::inspect` needs `+pttl` beyond the locker's rule, as docs/operations.md says:
/// without it every node is unknown, with the permission error; with it the holder shows.
#[tokio::test]
async fn inspect_needs_pttl_beyond_the_locker_rule() {
    let cluster = cluster(3).await;
    acl_user(&cluster, "locker", "pw-locker-1", LOCKER_RULE).await;
    acl_user(
        &cluster,
        "operator",
        "pw-operator-1",
        &format!("{LOCKER_RULE} +pttl"),
    )
    .await;
    let as_user = |user: &str, pw: &str| {
        Redlock::builder()
            .nodes(urls_as(&cluster, user, pw))
            .owner_label("acl-test")
            .node_timeout(Duration::from_millis(250))
            .build()
            .unwrap()
    };
    let locker = as_user("locker", "pw-locker-1");
    let guard = bounded(locker.acquire("inspected", TTL)).await.unwrap();

    let denied = bounded(locker.inspect("inspected")).await.unwrap();
    assert_eq!(denied.unknown_nodes(), 3, "{denied}");
    assert!(denied.holders().is_empty(), "{denied}");
    // Refused by the server (the script may not run PTTL), not a timeout.
    assert!(denied.errors().iter().all(|e| !e.is_timeout()), "{denied}");

    let info = bounded(as_user("operator", "pw-operator-1").inspect("inspected"))
        .await
        .unwrap();
    assert!(info.held_by_quorum(), "{info}");
    assert_eq!(info.holders()[0].label(), Some("acl-test"), "{info}");
    guard.release().await.unwrap();
}

#[tokio::test]
async fn least_privilege_acl_user_does_everything() {
    let cluster = cluster(3).await;
    acl_user(&cluster, "locker", "pw-locker-1", LOCKER_RULE).await;
    let make = |fencing: bool| {
        Redlock::builder()
            .nodes(urls_as(&cluster, "locker", "pw-locker-1"))
            .node_timeout(Duration::from_millis(250))
            .retry_count(1)
            .fencing(fencing)
            .build()
            .unwrap()
    };
    let redlock = make(false);
    let mut g = bounded(redlock.acquire("acl:one", TTL)).await.unwrap();
    bounded(g.extend(TTL)).await.unwrap();
    bounded(g.release()).await.unwrap();
    let g = bounded(redlock.acquire_many(&["acl:a", "acl:b"], TTL))
        .await
        .unwrap();
    bounded(g.release()).await.unwrap();
    let fenced = make(true);
    let g = bounded(fenced.acquire("acl:fenced", TTL)).await.unwrap();
    assert!(g.fencing_token().is_some());
    bounded(g.release()).await.unwrap();
    let kept = bounded(redlock.with_lock("acl:lease", TTL, |lease| async move { lease.is_held() }))
        .await
        .unwrap();
    assert!(kept);
    // After SCRIPT FLUSH the scripts are loaded again (SCRIPT LOAD is granted).
    for mut c in direct(&cluster).await {
        cmd(&mut c, &["SCRIPT", "FLUSH"]).await;
    }
    let g = bounded(redlock.acquire_many(&["acl:a", "acl:b"], TTL))
        .await
        .unwrap();
    bounded(g.release()).await.unwrap();
    // diagnose can read everything it needs.
    let report = bounded(redlock.diagnose()).await;
    assert!(
        !kinds(&report)
            .iter()
            .any(|(_, k)| k == "Unchecked" || k == "Unreachable"),
        "{report}"
    );
    assert!(report.nodes().iter().all(|n| n.appendfsync.is_some()));
    // Release wake-ups work for this user too: a waiter queues, the release wakes it.
    let waiter = Redlock::builder()
        .nodes(urls_as(&cluster, "locker", "pw-locker-1"))
        .node_timeout(Duration::from_secs(2))
        .retry_count(5)
        .retry_delay(Duration::from_secs(20))
        .retry_jitter(Duration::ZERO)
        .build()
        .unwrap();
    let held = bounded(redlock.acquire("acl:wake", TTL)).await.unwrap();
    let task = tokio::spawn(async move { waiter.acquire("acl:wake", TTL).await });
    let conns = direct(&cluster).await;
    eventually("the waiter listens and queued on every node", || {
        let conns = conns.clone();
        async move {
            queue_lengths(&conns, "acl:wake")
                .await
                .iter()
                .all(|n| *n == 1)
                && wake_listeners(&conns).await.iter().all(|n| *n == 1)
        }
    })
    .await;
    let report = bounded(held.release_with_report()).await.unwrap();
    assert!(report.woken >= 1, "{report:?}");
    bounded(task)
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// Without the wake-up commands a user still locks and releases (the scripts run that
/// part under pcall); waiters fall back to their retry delay.
#[tokio::test]
async fn a_user_without_wake_up_commands_still_locks() {
    let cluster = cluster(3).await;
    let rule = LOCKER_RULE
        .replace("+zadd ", "")
        .replace("+zpopmin ", "")
        .replace("+zrem ", "")
        .replace("+time ", "")
        .replace("+publish ", "")
        .replace("+subscribe ", "");
    assert!(
        !rule.contains("zadd") && !rule.contains("publish"),
        "{rule}"
    );
    acl_user(&cluster, "plain", "pw-plain-3", &rule).await;
    let make = || {
        Redlock::builder()
            .nodes(urls_as(&cluster, "plain", "pw-plain-3"))
            .node_timeout(Duration::from_millis(500))
            .retry_count(20)
            .retry_delay(Duration::from_millis(20))
            .build()
            .unwrap()
    };
    let (a, b) = (make(), make());
    let held = bounded(a.acquire("plain:r", TTL)).await.unwrap();
    let task = tokio::spawn(async move { b.acquire("plain:r", TTL).await });
    // b finds it held and makes its queueing attempt: every node logs a command the
    // script was denied (TIME or ZADD, run under pcall, so the attempt itself is an
    // ordinary "held" answer).
    let conns = direct(&cluster).await;
    eventually("every node denied b's queueing in a script", || {
        let conns = conns.clone();
        async move {
            let mut all = true;
            for mut c in conns {
                let log: redis::Value = redis::cmd("ACL")
                    .arg("LOG")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                let text = flatten(&log);
                all &= text.contains("lua") && text.contains("plain");
            }
            all
        }
    })
    .await;
    // While the key is held, such a user's queueing attempts are plain "held" answers:
    // the error is a conflict, not a node failure with a denied command.
    let c = Redlock::builder()
        .nodes(urls_as(&cluster, "plain", "pw-plain-3"))
        .node_timeout(Duration::from_millis(500))
        .retry_count(2)
        .retry_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let err = bounded(c.acquire("plain:r", TTL)).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    let report = bounded(held.release_with_report()).await.unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    bounded(task)
        .await
        .unwrap()
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_permission_is_named() {
    let cluster = cluster(3).await;
    let no_evalsha = LOCKER_RULE.replace("+evalsha ", "");
    acl_user(&cluster, "nolua", "pw-nolua-2", &no_evalsha).await;
    let redlock = Redlock::builder()
        .nodes(urls_as(&cluster, "nolua", "pw-nolua-2"))
        .node_timeout(Duration::from_millis(250))
        .retry_count(0)
        .build()
        .unwrap();
    let err = bounded(redlock.acquire_many(&["p:a", "p:b"], TTL))
        .await
        .unwrap_err();
    assert!(err.is_no_quorum(), "{err}");
    let chain = full_chain(&err);
    assert!(chain.contains("permission denied"), "{chain}");
    assert!(chain.to_lowercase().contains("evalsha"), "{chain}");
    assert!(chain.contains("docs/operations.md"), "{chain}");
    assert!(!chain.contains("pw-nolua-2"), "{chain}");
    for cause in err.node_errors() {
        assert!(cause.to_string().contains("permission denied"), "{cause}");
    }
    // CONFIG denied: diagnose says it could not check, and does not fail.
    let no_config = LOCKER_RULE.replace(" +config|get", "");
    acl_user(&cluster, "noconf", "pw-noconf-3", &no_config).await;
    let redlock = Redlock::builder()
        .nodes(urls_as(&cluster, "noconf", "pw-noconf-3"))
        .node_timeout(Duration::from_millis(250))
        .build()
        .unwrap();
    let report = bounded(redlock.diagnose()).await;
    let unchecked: Vec<_> = report
        .findings()
        .iter()
        .filter(|f| matches!(f.kind(), FindingKind::Unchecked { .. }))
        .collect();
    // Memory-only nodes have AOF off, where appendfsync does not matter.
    assert!(unchecked.is_empty(), "{report}");
    for mut c in direct(&cluster).await {
        cmd(&mut c, &["CONFIG", "SET", "appendonly", "yes"]).await;
    }
    let report = bounded(redlock.diagnose()).await;
    let text = report.to_string();
    assert_eq!(
        report
            .findings()
            .iter()
            .filter(|f| matches!(f.kind(), FindingKind::Unchecked { .. }))
            .count(),
        3,
        "{text}"
    );
    assert!(
        text.contains("CONFIG GET") && text.contains("permission denied"),
        "{text}"
    );
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

#[tokio::test]
async fn passwords_never_show() {
    let cluster = cluster(3).await;
    acl_user(&cluster, "locker", "pw-right-4", LOCKER_RULE).await;
    let secret = "pw-wrong-5";
    let mut urls = urls_as(&cluster, "locker", secret);
    // And one that cannot be reached at all.
    urls.push(format!("redis://locker:{secret}@127.0.0.1:1"));
    urls.push(format!("redis://:{secret}@127.0.0.1:2/3"));
    let builder = Redlock::builder()
        .nodes(&urls)
        .node_timeout(Duration::from_millis(250))
        .retry_count(1)
        .retry_delay(Duration::from_millis(5));
    assert!(!format!("{builder:?}").contains(secret));
    let redlock = builder.build().unwrap();
    assert!(!format!("{redlock:?}").contains(secret));
    let err = bounded(redlock.acquire("secret", TTL)).await.unwrap_err();
    assert!(err.is_no_quorum(), "{err}");
    let chain = full_chain(&err);
    // redis-rs reports WRONGPASS as an authentication failure.
    assert!(
        chain.contains("authentication failed"),
        "the cause is reported: {chain}"
    );
    for text in [chain, format!("{err:?}"), format!("{err:#?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    let report = bounded(redlock.diagnose()).await;
    for text in [report.to_string(), format!("{report:?}")] {
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("authentication failed"), "{text}");
    }
    let bad = Redlock::builder()
        .node(format!("redis://locker:{secret}@[::1"))
        .build()
        .unwrap_err();
    assert!(!format!("{bad} {bad:?}").contains(secret), "{bad}");
}

#[tokio::test]
async fn resource_names_may_be_any_bytes_up_to_the_limit() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    for name in ["ключ:🔒", "with space\r\nand\0nul", "*?[glob]", "{tag}x"] {
        let g = bounded(redlock.acquire(name, TTL)).await.unwrap();
        assert!(
            values(&mut conns, name).await.iter().any(Option::is_some),
            "{name:?}"
        );
        g.release().await.unwrap();
    }
    let err = redlock.acquire("", TTL).await.unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("empty"),
        "{err}"
    );
    let longest = "x".repeat(64 * 1024);
    let g = bounded(redlock.acquire(&longest, TTL)).await.unwrap();
    g.release().await.unwrap();
    let err = redlock
        .acquire(&format!("{longest}x"), TTL)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("65536-byte limit"), "{err}");
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    struct Pki {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tokio-redlock test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, "tokio-redlock test");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca_cert.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    #[tokio::test]
    async fn locks_over_tls_with_a_private_ca_and_client_certificates() {
        // The crate installs no crypto provider (src/tls.rs): the application does, as
        // here. Ignoring the result: another TLS test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = pki();
        let cluster = bounded(
            Cluster::builder()
                .nodes(3)
                .tls(&pki.server_cert, &pki.server_key, &pki.ca)
                .start(),
        )
        .await
        .expect("TLS cluster starts");
        let urls: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| n.tls_url().unwrap())
            .collect();
        assert!(urls.iter().all(|u| u.starts_with("rediss://")));
        let base = || {
            Redlock::builder()
                .nodes(&urls)
                // Generous: a first TLS handshake in a debug build on a loaded 2-core
                // machine can take a good part of a second, and a timeout would hide
                // the certificate error this test looks for.
                .node_timeout(Duration::from_secs(3))
                .connect_timeout(Duration::from_secs(3))
                .retry_count(0)
        };
        let redlock = base().tls_root_ca(pki.ca.as_bytes()).build().unwrap();
        let mut g = bounded(redlock.acquire("tls:one", TTL)).await.unwrap();
        bounded(g.extend(TTL)).await.unwrap();
        bounded(g.release()).await.unwrap();
        let report = bounded(redlock.diagnose()).await;
        assert!(report.nodes().iter().all(|n| n.reachable), "{report}");

        // Without the private CA the server is not trusted: a failed vote, with the cause.
        let untrusting = base().build().unwrap();
        let err = bounded(untrusting.acquire("tls:two", TTL))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
        // The attempt ends as soon as no quorum is possible: 2 of the 3 causes or more.
        assert!(err.node_errors().len() >= 2, "{err}");
        let chain = full_chain(&err);
        assert!(chain.to_lowercase().contains("certificate"), "{chain}");

        // Servers that require client certificates accept ours.
        for mut c in direct(&cluster).await {
            cmd(&mut c, &["CONFIG", "SET", "tls-auth-clients", "yes"]).await;
        }
        let mutual = base()
            .tls_root_ca(pki.ca.as_bytes())
            .tls_client_cert(pki.client_cert.as_bytes(), pki.client_key.as_bytes())
            .build()
            .unwrap();
        assert!(!format!("{mutual:?}").contains("PRIVATE KEY"));
        bounded(mutual.acquire("tls:three", TTL))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let anonymous = base().tls_root_ca(pki.ca.as_bytes()).build().unwrap();
        let err = bounded(anonymous.acquire("tls:four", TTL))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
    }
}

/// The strings of a reply, joined: enough to search an `ACL LOG`.
fn flatten(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(flatten).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", flatten(k), flatten(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}
