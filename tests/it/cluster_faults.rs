//! A whole Redis Cluster as one vote (see `cluster_vote.rs`) under faults: a standalone
//! node down, a killed or paused master, a dropped `RedisCluster`, a master that lost
//! its scripts.

use std::time::{Duration, Instant};

use tokio_redlock::Redlock;

use crate::cluster_vote::{
    builder, cluster_get, cluster_only, cluster_pttl, deployment, gone_from_cluster, master,
    one_per_master, redis_cluster, refused, NODE_TIMEOUT, TTL,
};
use crate::support::WAIT;

/// Locks and releases each of `resources` (one per master) once, so that the vote's
/// connection knows every master before a test takes one down.
async fn touch_every_master(redlock: &Redlock, resources: &[String]) {
    for r in resources {
        let guard = redlock.try_acquire(r, TTL).await.expect("lock");
        guard.release().await.expect("release");
    }
}

/// With one standalone node down, the cluster vote is needed for the quorum: locking
/// still works, and a second owner is still refused.
#[tokio::test]
async fn the_cluster_vote_completes_the_quorum_when_a_standalone_node_is_down() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc).build().expect("valid config");
    let other = builder(&nodes, &rc).build().expect("valid config");
    nodes.node(0).kill().await.expect("kill");

    let guard = redlock
        .try_acquire("job:7", TTL)
        .await
        .expect("lock with 2 of 3");
    let held = cluster_get(&rc, "{job:7}").await;
    assert!(held.is_some());
    // Refused: held on the two live votes (a no-quorum rather than a conflict, as one
    // vote failed outright), and the holder's value is untouched.
    let err = other.try_acquire("job:7", TTL).await.unwrap_err();
    assert!(refused(&err), "{err}");
    assert_eq!(cluster_get(&rc, "{job:7}").await, held);
    guard.release().await.expect("release");
    let again = other.try_acquire("job:7", TTL).await.expect("free again");
    again.release().await.expect("release");
}

/// A killed master takes only its own slots: the cluster vote still answers for keys on
/// the other masters, fails for keys on the dead one with a node error that names the
/// vote, within the node timeout, and the other votes carry the lock.
#[tokio::test]
async fn a_killed_master_fails_only_its_keys_and_nothing_hangs() {
    let (nodes, rc) = deployment(2).await;
    let redlock = builder(&nodes, &rc).build().expect("valid config");
    let alone = cluster_only(&rc);
    let resources = one_per_master(&rc);
    touch_every_master(&alone, &resources).await;
    let dead = &resources[0];
    let live = &resources[1];
    rc.kill_master(rc.master_of(&format!("{{{dead}}}")))
        .await
        .expect("kill");

    let started = Instant::now();
    let err = alone.try_acquire(dead, TTL).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_no_quorum(), "{err}");
    let causes = err.node_errors();
    assert_eq!(causes.len(), 1, "{err}");
    assert!(
        causes[0].endpoint().starts_with("cluster("),
        "{}",
        causes[0]
    );
    // One request, bounded by the node timeout, then the undo (also bounded).
    assert!(took < NODE_TIMEOUT * 4, "took {took:?}");

    alone
        .try_acquire(live, TTL)
        .await
        .expect("the other masters still answer")
        .release()
        .await
        .expect("release");

    let started = Instant::now();
    let guard = tokio::time::timeout(WAIT, redlock.try_acquire(dead, TTL))
        .await
        .expect("bounded")
        .expect("the standalone votes carry it");
    assert!(
        started.elapsed() < NODE_TIMEOUT * 4,
        "{:?}",
        started.elapsed()
    );
    guard.release().await.expect("release on the live votes");
}

/// A paused master (SIGSTOP: it holds its connections and answers nothing) costs the
/// cluster vote one node timeout for its keys, and nothing once it is resumed.
#[tokio::test]
async fn a_paused_master_costs_one_node_timeout() {
    let rc = redis_cluster().await;
    let alone = cluster_only(&rc);
    let resources = one_per_master(&rc);
    touch_every_master(&alone, &resources).await;
    let master = rc.master_of(&format!("{{{}}}", resources[0]));
    rc.pause_master(master).await.expect("pause");
    let started = Instant::now();
    let err = alone.try_acquire(&resources[0], TTL).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_no_quorum(), "{err}");
    assert!(err.node_errors()[0].is_timeout(), "{err}");
    assert!(took < NODE_TIMEOUT * 4, "took {took:?}");
    // The other masters answer meanwhile.
    alone
        .try_acquire(&resources[1], TTL)
        .await
        .expect("another master")
        .release()
        .await
        .expect("release");
    rc.resume_master(master).await.expect("resume");
    let guard = tokio::time::timeout(WAIT, alone.acquire(&resources[0], TTL))
        .await
        .expect("bounded")
        .expect("the resumed master answers again");
    guard.release().await.expect("release");
}

/// Dropping a `RedisCluster` stops every server it started, paused ones too.
#[tokio::test]
async fn dropping_the_redis_cluster_stops_every_server() {
    let rc = redis_cluster().await;
    let ports: Vec<u16> = rc
        .seed_urls()
        .iter()
        .map(|u| {
            u.rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port")
        })
        .collect();
    assert_eq!(ports.len(), 3);
    rc.pause_master(1).await.expect("pause");
    drop(rc);
    for port in ports {
        let refused =
            tokio::time::timeout(WAIT, tokio::net::TcpStream::connect(("127.0.0.1", port)))
                .await
                .expect("bounded");
        assert!(refused.is_err(), "port {port} still answers");
    }
}

/// A master that lost its scripts (restarted, failed over, `SCRIPT FLUSH`) gets them
/// again from the cluster vote (NOSCRIPT, load, run again), with another master down.
#[tokio::test]
async fn scripts_are_reloaded_on_the_master_that_lost_them() {
    let rc = redis_cluster().await;
    let alone = cluster_only(&rc);
    let resources = one_per_master(&rc);
    let mut guard = alone.try_acquire(&resources[0], TTL).await.expect("lock");
    let key = format!("{{{}}}", resources[0]);
    let other = (rc.master_of(&key) + 1) % rc.masters();
    rc.kill_master(other).await.expect("kill");
    let mut conn = master(&rc, &key).await;
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("SCRIPT FLUSH");
    guard
        .extend(Duration::from_secs(30))
        .await
        .expect("extend after NOSCRIPT");
    assert!(cluster_pttl(&rc, &key).await > 20_000);
    guard.release().await.expect("release");
    gone_from_cluster(&rc, &key).await;
}
