//! What an attempt leaves on the nodes and how many are made: regression tests (of the
//! same review as `belief.rs`; the items are those of issue 11) for ghost locks after a
//! connection flap, the undo of a failed first attempt, and attempts past `retry_count`.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::Duration;

use tokio_redlock::Redlock;

use crate::support::*;

/// A free loopback port with nothing listening on it: connecting is refused at once.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

/// Item 6: a request swallowed by a partition and sent again after the heal must not
/// land after the same owner's release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_lock_after_a_partition_heals_within_the_node_timeout() {
    let cluster = cluster(5).await;
    let timeout = Duration::from_millis(800);
    let redlock = builder(&cluster).node_timeout(timeout).build().unwrap();
    warm(&redlock).await;
    for round in 0..3 {
        cluster.node(3).partition().await.unwrap();
        cluster.node(4).partition().await.unwrap();
        for i in 0..2 {
            let key = format!("belief:flap:{round}:{i}");
            let guard = bounded(redlock.acquire(&key, Duration::from_secs(60)))
                .await
                .unwrap();
            guard.release().await.unwrap();
        }
        // Well within the node timeout: the swallowed requests are sent again.
        cluster.node(3).heal().await.unwrap();
        cluster.node(4).heal().await.unwrap();
        for i in 0..2 {
            let key = format!("belief:flap:{round}:{i}");
            // Released: gone from every node once the re-sent requests are done (node
            // timeout + slack), not after the 60 s ttl.
            assert_gone_within(&cluster, &key, timeout * 2 + Duration::from_secs(1)).await;
        }
    }
    // And with two other nodes cut off, the healed ones vote for a new owner.
    cluster.node(0).partition().await.unwrap();
    cluster.node(1).partition().await.unwrap();
    let guard = bounded(redlock.try_acquire("belief:flap:0:0", Duration::from_secs(5))).await;
    assert!(guard.is_ok(), "{guard:?}");
    cluster.clear_faults().await.unwrap();
}

/// Item 6, without any fault: the undo of a failed first attempt must not overtake the
/// SET still waiting for the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_attempt_leaves_nothing_on_the_real_nodes() {
    let cluster = cluster(2).await;
    for run in 0..6 {
        // 3 of 5 nodes refuse connections: every attempt fails fast, while the SETs to
        // the two real nodes still wait for their first connection.
        let mut urls = cluster.urls();
        urls.extend((0..3).map(|_| refused_url()));
        let fresh = Redlock::builder()
            .nodes(urls)
            .retry_count(0)
            .node_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let key = format!("belief:fresh:{run}");
        let err = bounded(fresh.acquire(&key, Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
        assert_gone_within(&cluster, &key, Duration::from_secs(2)).await;
    }
}

/// How many attempts on `key` reached node 0 since the last call: the distinct owner
/// values in the acquire requests of the slow log, which logs every command (a script's
/// own commands too), and each attempt has a fresh value.
async fn attempts_on_node0(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> usize {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10_000)
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    let mut values = std::collections::HashSet::new();
    for entry in &log {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let Some(redis::Value::Array(args)) = fields.get(3) else {
            continue;
        };
        let args: Vec<String> = args.iter().map(text).collect();
        let at = |i: usize| args.get(i).map(String::as_str);
        match at(0).map(str::to_ascii_uppercase).as_deref() {
            // SET key value NX PX ttl (alone, or inside a script)
            Some("SET") if at(1) == Some(key) && at(3) == Some("NX") => {
                values.insert(args[2].clone());
            }
            _ => {}
        }
    }
    values.len()
}

/// Item 7: `retry_count` is a promise, also with wake-ups and the queue join: counted
/// on the node, not only in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_count_bounds_the_attempts_made_and_reported() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let guard = bounded(holder.acquire("belief:retries", Duration::from_secs(60)))
        .await
        .unwrap();
    let mut node0 = direct(&cluster).await.remove(0);
    for (k, v) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "10000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut node0)
            .await
            .unwrap();
    }
    let waiter = |retries| {
        builder(&cluster)
            .retry_count(retries)
            .retry_delay(Duration::from_millis(5))
            .retry_jitter(Duration::ZERO)
            .build()
            .unwrap()
    };
    // Loads the scripts first: a NOSCRIPT answer and its re-send would count twice.
    let _ = bounded(waiter(1).acquire("belief:retries", Duration::from_secs(5))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    attempts_on_node0(&mut node0, "belief:retries").await;
    for retries in [0u32, 1, 2, 5] {
        let err = bounded(waiter(retries).acquire("belief:retries", Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert_eq!(
            err.attempts(),
            Some(retries + 1),
            "retry_count({retries}): {err}"
        );
        // Stragglers of the last attempt may still be on their way to node 0.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let made = attempts_on_node0(&mut node0, "belief:retries").await;
        assert_eq!(
            made,
            retries as usize + 1,
            "retry_count({retries}) made {made} attempts"
        );
    }
    // The per-call form keeps the same promise (from another manager: the holder's own
    // tasks would wait for it locally, see tests/it/local.rs).
    let err = bounded(waiter(10).lock("belief:retries").retries(2).acquire())
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), Some(3), "{err}");
    guard.release().await.unwrap();
}

/// Item 7: a fenced manager with a cold counter cache learns the counter without
/// spending an attempt on it: `try_acquire` of a free lock still succeeds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_round_does_not_spend_the_attempt_budget() {
    let cluster = cluster(3).await;
    let first = builder(&cluster).fencing(true).build().unwrap();
    for _ in 0..3 {
        bounded(first.acquire("belief:fenced", Duration::from_secs(5)))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let cold = builder(&cluster).fencing(true).build().unwrap();
    let guard = bounded(cold.try_acquire("belief:fenced", Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(guard.attempts(), 1);
    assert!(
        guard.fencing_token() > Some(3),
        "{:?}",
        guard.fencing_token()
    );
    guard.release().await.unwrap();
}
