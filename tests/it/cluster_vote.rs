//! A whole Redis Cluster as one vote (`cluster_node`, feature `cluster`), against real
//! servers: a 3-master cluster started by `harness::RedisCluster` beside standalone
//! nodes started by `harness::Cluster`. This file: locking, extending and releasing
//! through the vote, fencing, read/write locks and permits, inspect and diagnose,
//! wake-ups and keep-alive; and the helpers `cluster_faults.rs` (the vote under faults)
//! and `cluster_slots.rs` (every script's keys in one slot) share.

use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio_redlock::diagnose::FindingKind;
use tokio_redlock::{Error, LockKind, Redlock, RedlockBuilder};
use tokio_redlock_harness::{Cluster, RedisCluster};

use crate::support::{self, WAIT};

pub(crate) const TTL: Duration = Duration::from_secs(10);
/// Generous for a loaded 2-core machine; the "nothing hangs" bounds are a few of these.
pub(crate) const NODE_TIMEOUT: Duration = Duration::from_millis(250);

/// `standalone` independent nodes and one 3-master Redis Cluster, started together.
pub(crate) async fn deployment(standalone: usize) -> (Cluster, RedisCluster) {
    tokio::join!(support::cluster(standalone), redis_cluster())
}

/// A 3-master Redis Cluster, its start bounded.
pub(crate) async fn redis_cluster() -> RedisCluster {
    tokio::time::timeout(Duration::from_secs(30), RedisCluster::start())
        .await
        .expect("redis cluster start timed out")
        .expect("redis cluster starts")
}

/// The standalone nodes, then the cluster vote (the last node), with test timings.
pub(crate) fn builder(nodes: &Cluster, redis_cluster: &RedisCluster) -> RedlockBuilder {
    Redlock::builder()
        .nodes(nodes.urls())
        .cluster_node(redis_cluster.seed_urls())
        .retry_count(2)
        .retry_delay(Duration::from_millis(20))
        .retry_jitter(Duration::from_millis(20))
        .node_timeout(NODE_TIMEOUT)
}

/// Waits (bounded) until the cluster vote (the last node) answers, so that its
/// connection, made on first use, is there before a test looks at what it stores.
pub(crate) async fn warm_cluster_vote(redlock: &Redlock) {
    support::eventually("the cluster vote answers", || async {
        let report = redlock.diagnose().await;
        report.nodes().last().is_some_and(|n| n.reachable)
    })
    .await;
}

/// The cluster vote alone (one vote: it decides every lock by itself).
pub(crate) fn cluster_only(redis_cluster: &RedisCluster) -> Redlock {
    Redlock::builder()
        .cluster_node(redis_cluster.seed_urls())
        .retry_count(0)
        .node_timeout(NODE_TIMEOUT)
        .build()
        .expect("valid config")
}

pub(crate) async fn master(redis_cluster: &RedisCluster, key: &str) -> MultiplexedConnection {
    let url = redis_cluster.master_url(redis_cluster.master_of(key));
    let client = redis::Client::open(url).expect("url");
    client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the master")
}

/// What the cluster stores under `key` (asked of the master that serves it).
pub(crate) async fn cluster_get(redis_cluster: &RedisCluster, key: &str) -> Option<String> {
    let mut conn = master(redis_cluster, key).await;
    redis::cmd("GET")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("GET")
}

/// Waits (bounded) until the cluster stores `key`, and returns its value: a grant may
/// be decided by the standalone votes while the cluster vote's request is still on its
/// way (stragglers are not waited for), and a release likewise.
pub(crate) async fn on_cluster(redis_cluster: &RedisCluster, key: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = cluster_get(redis_cluster, key).await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "`{key}` never reached the cluster"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the cluster no longer stores `key`.
pub(crate) async fn gone_from_cluster(redis_cluster: &RedisCluster, key: &str) {
    support::eventually(&format!("`{key}` gone from the cluster"), || async {
        cluster_get(redis_cluster, key).await.is_none()
    })
    .await;
}

pub(crate) async fn cluster_pttl(redis_cluster: &RedisCluster, key: &str) -> i64 {
    let mut conn = master(redis_cluster, key).await;
    redis::cmd("PTTL")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("PTTL")
}

/// Resources whose lock keys live on distinct masters, one per master.
pub(crate) fn one_per_master(redis_cluster: &RedisCluster) -> Vec<String> {
    let mut found: Vec<Option<String>> = vec![None; redis_cluster.masters()];
    for i in 0.. {
        let r = format!("res:{i}");
        let m = redis_cluster.master_of(&format!("{{{r}}}"));
        found[m].get_or_insert(r);
        if found.iter().all(Option::is_some) {
            break;
        }
    }
    found.into_iter().flatten().collect()
}

/// A second owner refused: held elsewhere, on every vote that answered.
pub(crate) fn refused(err: &Error) -> bool {
    err.is_conflict() || (err.is_no_quorum() && err.node_errors().len() == 1)
}

#[tokio::test]
async fn lock_extend_release_across_standalone_and_cluster_votes() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc).build().expect("valid config");
    assert_eq!((redlock.node_count(), redlock.quorum()), (3, 2));
    warm_cluster_vote(&redlock).await;
    let mut guard = redlock.try_acquire("payment:42", TTL).await.expect("lock");

    // Standalone nodes keep the plain key; the cluster vote the tagged one.
    let mut conns = support::direct(&nodes).await;
    let stored = support::values(&mut conns, "payment:42").await;
    assert!(stored.iter().all(Option::is_some), "{stored:?}");
    assert_eq!(Some(on_cluster(&rc, "{payment:42}").await), stored[0]);
    assert_eq!(
        support::values(&mut conns, "{payment:42}").await,
        [None, None]
    );

    guard.extend(Duration::from_secs(30)).await.expect("extend");
    support::eventually("the extension on the cluster", || async {
        cluster_pttl(&rc, "{payment:42}").await > 20_000
    })
    .await;

    guard.release().await.expect("release");
    gone_from_cluster(&rc, "{payment:42}").await;
    support::eventually_gone(&nodes, "payment:42").await;
}

#[tokio::test]
async fn fencing_tokens_increase_across_holders_through_the_cluster_vote() {
    let (nodes, rc) = deployment(2).await;
    let a = builder(&nodes, &rc).fencing(true).build().expect("valid");
    let b = builder(&nodes, &rc).fencing(true).build().expect("valid");
    // The standalone node 0 is down: every token needs the cluster vote's counter.
    nodes.node(0).kill().await.expect("kill");
    let mut last = 0;
    for round in 0..3 {
        let manager = if round % 2 == 0 { &a } else { &b };
        let guard = manager.try_acquire("ledger", TTL).await.expect("lock");
        let token = guard.fencing_token().expect("fenced");
        assert!(token > last, "token {token} after {last}");
        last = token;
        guard.release().await.expect("release");
    }
    let counter = cluster_get(&rc, "{ledger}:fence").await.expect("counter");
    assert_eq!(counter.parse::<u64>().ok(), Some(last));
}

#[tokio::test]
async fn read_write_locks_and_permits_through_the_cluster_vote() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc).build().expect("valid config");
    // Node 0 down: each grant needs the cluster vote.
    nodes.node(0).kill().await.expect("kill");

    let r1 = redlock.lock("doc:1").ttl(TTL).read().try_acquire().await;
    let r2 = redlock.lock("doc:1").ttl(TTL).read().try_acquire().await;
    let (r1, r2) = (r1.expect("reader 1"), r2.expect("reader 2"));
    assert_eq!(r1.kind(), LockKind::Read);
    let mut conn = master(&rc, "{doc:1}").await;
    let readers: i64 = redis::cmd("ZCARD")
        .arg("{doc:1}:readers")
        .query_async(&mut conn)
        .await
        .expect("ZCARD");
    assert_eq!(readers, 2);
    let err = redlock
        .lock("doc:1")
        .ttl(TTL)
        .write()
        .try_acquire()
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");
    r1.release().await.expect("release");
    r2.release().await.expect("release");
    let w = redlock
        .lock("doc:1")
        .ttl(TTL)
        .write()
        .try_acquire()
        .await
        .expect("writer");
    assert!(cluster_get(&rc, "{doc:1}").await.is_some());
    w.release().await.expect("release");

    let p1 = redlock.lock("gpu").ttl(TTL).permits(2).try_acquire().await;
    let p2 = redlock.lock("gpu").ttl(TTL).permits(2).try_acquire().await;
    let (p1, p2) = (p1.expect("permit 1"), p2.expect("permit 2"));
    let mut taken = [p1.permit().expect("slot"), p2.permit().expect("slot")];
    taken.sort_unstable();
    assert_eq!(taken, [0, 1]);
    for slot in taken {
        let key = format!("{{gpu}}:permit:{slot}");
        assert!(cluster_get(&rc, &key).await.is_some(), "{key}");
    }
    let err = redlock
        .lock("gpu")
        .ttl(TTL)
        .permits(2)
        .try_acquire()
        .await
        .unwrap_err();
    assert!(refused(&err), "{err}");
    p1.release().await.expect("release");
    p2.release().await.expect("release");
}

#[tokio::test]
async fn inspect_and_diagnose_see_the_cluster_vote() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc)
        .owner_label("worker-1")
        .build()
        .expect("valid config");
    warm_cluster_vote(&redlock).await;
    let guard = redlock.try_acquire("report", TTL).await.expect("lock");
    on_cluster(&rc, "{report}").await;
    let info = redlock.inspect("report").await.expect("inspect");
    assert!(info.held_by_quorum());
    let holders = info.holders();
    assert_eq!(holders.len(), 1, "{info}");
    assert_eq!(holders[0].label(), Some("worker-1"));
    // Nodes 0 and 1 are standalone, node 2 the cluster vote.
    assert_eq!(holders[0].nodes(), [0, 1, 2]);
    guard.release().await.expect("release");

    let report = redlock.diagnose().await;
    let caveat = report
        .findings()
        .iter()
        .find(|f| matches!(f.kind(), FindingKind::ClusterVote { masters: 3 }))
        .unwrap_or_else(|| panic!("no cluster-vote finding in:\n{report}"));
    assert_eq!(caveat.node(), Some(2));
    let text = caveat.to_string();
    assert!(
        text.contains("failover") && text.contains("asynchronous"),
        "{text}"
    );
    // Not the standalone nodes' "runs in cluster mode" warning.
    assert!(!report
        .findings()
        .iter()
        .any(|f| matches!(f.kind(), FindingKind::ClusterMode)));
}

/// A release on the cluster vote wakes a waiter there (a classic PUBLISH reaches every
/// node of the cluster): the waiter gets the lock long before its retry delay.
#[tokio::test]
async fn a_release_on_the_cluster_vote_wakes_a_waiter() {
    let rc = redis_cluster().await;
    let holder = cluster_only(&rc);
    let waiter = Redlock::builder()
        .cluster_node(rc.seed_urls())
        .retry_count(3)
        .retry_delay(Duration::from_secs(5))
        .retry_jitter(Duration::ZERO)
        .node_timeout(NODE_TIMEOUT)
        .build()
        .expect("valid config");
    let guard = holder.try_acquire("queue:1", TTL).await.expect("lock");
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let got = waiter.acquire("queue:1", TTL).await;
        (got, started.elapsed(), waiter)
    });
    // The waiter is queued on the cluster vote once its first attempt failed.
    let mut conn = master(&rc, "{queue:1}").await;
    let deadline = Instant::now() + WAIT;
    loop {
        let queued: i64 = redis::cmd("ZCARD")
            .arg("{queue:1}:waiters")
            .query_async(&mut conn)
            .await
            .expect("ZCARD");
        if queued > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the waiter never queued");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    guard.release().await.expect("release");
    let (got, took, _waiter) = tokio::time::timeout(WAIT, waiting)
        .await
        .expect("bounded")
        .expect("task");
    got.expect("the waiter gets the lock")
        .release()
        .await
        .expect("release");
    assert!(
        took < Duration::from_secs(4),
        "woken only by its retry: {took:?}"
    );
}

/// `with_lock` keeps a lock alive through the cluster vote past its ttl.
#[tokio::test]
async fn keep_alive_extends_through_the_cluster_vote() {
    let rc = redis_cluster().await;
    let alone = cluster_only(&rc);
    let ttl = Duration::from_millis(900);
    let rc = &rc;
    let held = alone
        .with_lock("batch", ttl, |lease| async move {
            let first = on_cluster(rc, "{batch}").await;
            // Work that outlasts the ttl twice over.
            tokio::time::sleep(ttl * 2).await;
            assert!(lease.is_held());
            cluster_get(rc, "{batch}").await == Some(first)
        })
        .await
        .expect("kept alive");
    assert!(held, "the value changed or expired on the cluster");
    gone_from_cluster(rc, "{batch}").await;
}
