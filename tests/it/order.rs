//! Order cannot matter: requests that reach a node late — after their client gave up on
//! them, on a connection since dropped, after everything the client sent later on a new
//! one — never take back what a newer request's success promised. The harness's
//! late-delivery fault (`Node::hold_requests` / `deliver_held`) makes that order happen.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::Duration;

use tokio_redlock::{LockGuard, Redlock};
use tokio_redlock_harness::Cluster;

use crate::support::*;

/// Node timeout of these tests: short, so that the client gives up on a held connection
/// (three timeouts in a row) and reconnects within a fraction of the shorter ttl.
const NODE_TIMEOUT: Duration = Duration::from_millis(200);
/// The shorter extension whose copies land late, and the longer one they must not undo.
const SHORT: Duration = Duration::from_secs(2);
const LONG: Duration = Duration::from_secs(10);

fn manager(cluster: &Cluster) -> Redlock {
    builder(cluster)
        .node_timeout(NODE_TIMEOUT)
        .retry_count(0)
        .build()
        .expect("valid config")
}

/// How many nodes store `value` under `key` with at least `left` to live, read past
/// the proxies.
async fn nodes_holding_for(cluster: &Cluster, key: &str, value: &str, left: Duration) -> usize {
    let mut conns = direct(cluster).await;
    let vals = values(&mut conns, key).await;
    let ttls = pttls(&mut conns, key).await;
    vals.iter()
        .zip(&ttls)
        .filter(|(v, ttl)| {
            v.as_deref() == Some(value)
                && u128::try_from(**ttl).is_ok_and(|t| t >= left.as_millis())
        })
        .count()
}

/// Extends until one extension succeeds, bounded: the first ones may still meet the held
/// connection, which the client drops after three timeouts in a row.
async fn extend_until_ok(guard: &mut LockGuard, ttl: Duration) {
    bounded(async {
        loop {
            match guard.extend(ttl).await {
                Ok(()) => return,
                Err(e) => assert!(guard.is_valid(), "lost before it could extend: {e}"),
            }
        }
    })
    .await;
}

/// The issue-21 scenario: a newer, longer extension succeeds through a fresh connection
/// to node 1, then the older, shorter extensions that were already on their way to
/// node 1 over the connection the client dropped land after it. Before the extension
/// was made monotone, node 1 took the short ttl, so only node 0 kept the value as long
/// as the guard believed, and a second owner got the lock once node 2's copy expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_extension_landing_late_never_shortens_a_newer_one() {
    let cluster = cluster(3).await;
    let redlock = manager(&cluster);
    warm(&redlock).await;
    let key = "order:extend";
    let mut guard = bounded(redlock.acquire(key, LONG)).await.unwrap();
    bounded(guard.extend(LONG)).await.unwrap();
    let value = {
        let mut conns = direct(&cluster).await;
        values(&mut conns, key).await[0]
            .clone()
            .expect("node 0 holds it")
    };

    // Node 1's requests are held from here on: the short extensions win through nodes
    // 0 and 2, and their copies to node 1 wait in the proxy while the client times out.
    cluster.node(1).hold_requests().await.unwrap();
    for _ in 0..5 {
        bounded(guard.extend(SHORT)).await.unwrap();
    }
    assert!(guard.remaining_validity() <= SHORT);
    // The client gives up on each copy to node 1 after its node timeout, and on the
    // connection after three in a row. Nothing outside the client shows that moment (the
    // proxy still holds the connection's bytes), so this waits past the timeouts; any
    // request sent before it would be held behind the short ones and land after them.
    tokio::time::sleep(NODE_TIMEOUT * 3).await;

    // The newer, longer extension: through node 0 and a new connection to node 1.
    cluster.node(2).partition().await.unwrap();
    extend_until_ok(&mut guard, LONG).await;
    // The old connection's requests land now, after it.
    assert!(cluster.node(1).held_connections() > 0, "nothing was held");
    cluster.node(1).deliver_held().await.unwrap();

    let believed = guard.remaining_validity();
    assert!(believed > SHORT, "the guard believes {believed:?}");
    let holding = nodes_holding_for(&cluster, key, &value, believed).await;
    assert!(
        holding >= redlock.quorum(),
        "the guard believes {believed:?} more, but only {holding} node(s) keep its value \
         that long"
    );

    // And so nobody else gets the lock while the guard believes it holds it. Node 2's
    // copy goes (before the fix, the short extensions had left it to expire soon), and
    // the wait runs past the ttl the late copies would have left on node 1.
    let delivered = std::time::Instant::now();
    cluster.node(2).heal().await.unwrap();
    let mut conns = direct(&cluster).await;
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conns[2])
        .await
        .unwrap();
    tokio::time::sleep_until((delivered + SHORT + Duration::from_millis(100)).into()).await;
    let other = manager(&cluster);
    let stolen = bounded(other.try_acquire(key, LONG)).await;
    assert!(guard.is_valid());
    assert!(
        stolen.is_err(),
        "a second holder while the guard believes {:?} more",
        guard.remaining_validity()
    );
    bounded(guard.release()).await.unwrap();
}

/// The harness's late-delivery fault on a real server: a command held on an old
/// connection lands after a newer one sent on a new connection, also after the old
/// connection's client gave up and closed it.
#[tokio::test]
async fn the_late_delivery_fault_lands_held_requests_after_newer_ones() {
    let cluster = cluster(1).await;
    let node = cluster.node(0);
    let connect = || async {
        let client = redis::Client::open(node.url()).expect("url");
        client
            .get_multiplexed_async_connection()
            .await
            .expect("connect through the proxy")
    };
    let mut old = connect().await;
    set_on(&mut old, "late", "first", 60_000).await;
    node.hold_requests().await.unwrap();
    let held = tokio::time::timeout(NODE_TIMEOUT, async {
        let mut old = old.clone();
        set_on(&mut old, "late", "older", 60_000).await;
    })
    .await;
    assert!(held.is_err(), "a held request was answered");
    assert_eq!(node.held_connections(), 1);
    drop(old);
    // A new connection flows: the newer write lands first.
    let mut new = connect().await;
    set_on(&mut new, "late", "newer", 60_000).await;
    let mut conns = direct(&cluster).await;
    assert_eq!(values(&mut conns, "late").await, [Some("newer".into())]);
    node.deliver_held().await.unwrap();
    assert_eq!(node.held_connections(), 0);
    eventually("the held write lands", || {
        let mut conns = conns.clone();
        async move { values(&mut conns, "late").await == [Some("older".to_owned())] }
    })
    .await;
}

/// A lost attempt whose `SET` lands on a slow node after the round gave up on it (its
/// reply comes past the node timeout) is undone there at once: the round's deadline
/// gives up the request's setter ticket, so the undo that waits for its value's setters
/// on that node goes out then, after the `SET`, instead of waiting for the round it is
/// part of to end (which waits for the undo: the undo would run out unsent and leave the
/// key for its whole ttl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_attempt_is_undone_on_a_node_whose_reply_came_too_late() {
    let cluster = cluster(3).await;
    let redlock = manager(&cluster);
    warm(&redlock).await;
    let mut conns = direct(&cluster).await;
    // Another owner holds nodes 0 and 1: the attempt is lost as soon as they refuse.
    for conn in &mut conns[..2] {
        set_on(conn, "undo:late", "other-owner", 60_000).await;
    }
    // Node 2 is free but slow: the `SET` lands after 150 ms, its reply would come back
    // after 300 ms, past the 200 ms node timeout.
    cluster
        .node(2)
        .set_latency(Duration::from_millis(150))
        .await
        .unwrap();
    let err = bounded(redlock.try_acquire("undo:late", Duration::from_secs(60)))
        .await
        .expect_err("two of three nodes are held by another owner");
    assert!(err.is_conflict(), "{err}");
    // The attempt's value lands on node 2 ...
    let node2 = conns[2].clone();
    eventually("the late SET on node 2", || {
        let mut c = [node2.clone()];
        async move { values(&mut c, "undo:late").await[0].is_some() }
    })
    .await;
    // ... and the undo, sent at the round's deadline, removes it well within its ttl.
    assert_gone_on(&node2, "undo:late", Duration::from_secs(3)).await;
    // The other owner's keys are untouched.
    let vals = values(&mut conns, "undo:late").await;
    assert_eq!(
        vals[..2],
        [
            Some("other-owner".to_owned()),
            Some("other-owner".to_owned())
        ]
    );
    cluster.clear_faults().await.unwrap();
}

/// Waits up to `within` for `key` to be gone from the node `conn` reads, directly.
async fn assert_gone_on(conn: &redis::aio::MultiplexedConnection, key: &str, within: Duration) {
    let gone = tokio::time::timeout(within, async {
        loop {
            let mut c = [conn.clone()];
            if values(&mut c, key).await[0].is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "`{key}` still on the node after {within:?}");
}
