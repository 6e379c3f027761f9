//! Extensions that heal (`RedlockBuilder::heal_on_extend`, on by default): an extension
//! also sets the value again where the key is missing, never over another owner's
//! value and never on a node in restart quarantine, so a lease does not fade as nodes
//! restart without their data one after another.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::Duration;

use tokio_redlock::Redlock;
use tokio_redlock_harness::Cluster;

use crate::support::*;

const TTL: Duration = Duration::from_secs(10);

async fn del(cluster: &Cluster, node: usize, key: &str) {
    let mut conns = direct(cluster).await;
    let _: i64 = redis::cmd("DEL")
        .arg(key)
        .query_async(&mut conns[node])
        .await
        .unwrap();
}

#[tokio::test]
async fn an_extension_heals_nodes_that_lost_the_key_but_never_another_value() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let mut guard = bounded(redlock.acquire("heal:a", TTL)).await.unwrap();
    let mut conns = direct(&cluster).await;
    on_every_node(&cluster, "heal:a").await;
    let value = values(&mut conns, "heal:a").await[0].clone().unwrap();
    del(&cluster, 1, "heal:a").await;
    set_on(&mut conns[2], "heal:a", "someone-else", 60_000).await;
    bounded(guard.extend(Duration::from_secs(20)))
        .await
        .unwrap();
    eventually("node 1 healed", || {
        let mut conns = conns.clone();
        let value = value.clone();
        async move { values(&mut conns, "heal:a").await[1].as_deref() == Some(value.as_str()) }
    })
    .await;
    let got = values(&mut conns, "heal:a").await;
    assert_eq!(
        got[2].as_deref(),
        Some("someone-else"),
        "healed over another value"
    );
    let ttls = pttls(&mut conns, "heal:a").await;
    assert!(
        ttls[1] > 15_000,
        "healed with the extension's ttl: {ttls:?}"
    );
    bounded(guard.release()).await.unwrap();
    // Without healing the lost key stays lost.
    let plain = builder(&cluster).heal_on_extend(false).build().unwrap();
    let mut guard = bounded(plain.acquire("heal:b", TTL)).await.unwrap();
    on_every_node(&cluster, "heal:b").await;
    del(&cluster, 1, "heal:b").await;
    bounded(guard.extend(TTL)).await.unwrap();
    assert!(values(&mut conns, "heal:b").await[1].is_none());
}

/// Restarts each node in turn without its data while a lease is kept alive, waiting
/// for an extension after each restart; returns whether the lease still holds at the
/// end, when every node has restarted (longer than the ttl after the first restart),
/// and how many nodes then store its key.
async fn lease_through_restarts(redlock: Redlock, cluster: &Cluster, key: &str) -> (bool, usize) {
    let ttl = Duration::from_millis(900);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let name = key.to_owned();
    let work = tokio::spawn(async move {
        redlock
            .lock(&name)
            .ttl(ttl)
            .with(|lease| async move {
                tx.send(lease.clone()).unwrap();
                // Runs until told to stop, or until the lease is lost (dropped then).
                std::future::pending::<()>().await;
            })
            .await
    });
    let lease = bounded(rx).await.unwrap();
    for node in 0..cluster.len() {
        let n = cluster.node(node);
        n.kill().await.unwrap();
        n.restart().await.unwrap();
        let seen = lease.extensions();
        eventually("an extension after the restart", || {
            let lease = lease.clone();
            async move { lease.extensions() >= seen + 2 || !lease.is_held() }
        })
        .await;
        if !lease.is_held() {
            break;
        }
    }
    let held = lease.is_held();
    let mut conns = direct(cluster).await;
    let stored = values(&mut conns, key).await.iter().flatten().count();
    work.abort();
    (held, stored)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_outlives_every_node_restarting_without_its_data() {
    let cluster = cluster(3).await;
    let healing = builder(&cluster).build().unwrap();
    let (held, stored) = lease_through_restarts(healing, &cluster, "heal:lease").await;
    assert!(
        held,
        "the lease faded although every restarted node could be healed"
    );
    assert_eq!(stored, 3, "every restarted node holds the value again");
    // The same without healing: it fades once a quorum of nodes restarted.
    let plain = builder(&cluster).heal_on_extend(false).build().unwrap();
    let (held, _) = lease_through_restarts(plain, &cluster, "heal:plain").await;
    assert!(!held, "without healing the lease should have faded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_in_restart_quarantine_is_not_healed() {
    let period = Duration::from_secs(2);
    let cluster = cluster(3).await;
    // Let the nodes age past the quarantine (uptime is counted in whole seconds), so
    // that only the node restarted below is young.
    tokio::time::sleep(period + Duration::from_secs(1)).await;
    let redlock = builder(&cluster)
        .restart_quarantine(Some(period))
        .build()
        .unwrap();
    let mut guard = bounded(redlock.acquire("heal:q", TTL)).await.unwrap();
    // The acquisition returned at a quorum; its request to the third node must have
    // landed before the restart, or a re-send of it (on the new connection, within its
    // deadline) would set the key there, an acquisition's doing, not a heal's.
    on_every_node(&cluster, "heal:q").await;
    cluster.node(0).kill().await.unwrap();
    cluster.node(0).restart().await.unwrap();
    // The extension reconnects to node 0, finds it restarted without proof of its
    // data, and sends the plain extension there: nothing is set.
    bounded(guard.extend(TTL)).await.unwrap();
    let mut conns = direct(&cluster).await;
    let got = values(&mut conns, "heal:q").await;
    assert!(got[0].is_none(), "healed a node in quarantine: {got:?}");
    assert!(got[1].is_some() && got[2].is_some());
}
