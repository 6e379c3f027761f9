//! Least-privilege ACL users against real servers: the documented rule is enough for
//! every operation, a user without the wake-up commands still locks, and a missing
//! permission is named.

use std::time::Duration;

use tokio_redlock::diagnose::FindingKind;
use tokio_redlock::Redlock;
use tokio_redlock_harness::Cluster;

use crate::ops::{cmd, full_chain, kinds, TTL};
use crate::secrets::flatten;
use crate::support::*;

/// The least-privilege rule documented in docs/operations.md, minus the user name and
/// password. Keep the two in step.
pub(crate) const LOCKER_RULE: &str =
    "~* resetchannels &tokio-redlock:wake:* -@all +set +get +del +pexpire \
                           +exists +evalsha +script|load +zadd +zpopmin +zrem +time +publish \
                           +subscribe +ping +info +config|get";

pub(crate) async fn acl_user(cluster: &Cluster, user: &str, password: &str, rule: &str) {
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

pub(crate) fn urls_as(cluster: &Cluster, user: &str, password: &str) -> Vec<String> {
    cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", &format!("redis://{user}:{password}@")))
        .collect()
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
