//! Restart quarantine: a node that restarted without its data does not vote until the
//! quarantine has passed since it started, unless it proves its data survived (AOF with
//! `appendfsync always` and the restart marker still there).

use std::time::{Duration, Instant};

use tokio_redlock::NodeErrorKind;
use tokio_redlock_harness::Persistence;

use crate::support::*;

const TTL: Duration = Duration::from_secs(30);

/// The unsafe run that motivates the quarantine: two nodes of three restart empty right
/// after a holder acquired, and a second client wins a quorum of them.
#[tokio::test]
async fn without_quarantine_an_immediate_restart_lets_a_second_owner_in() {
    let cluster = cluster(3).await;
    let first = redlock(&cluster);
    let held = first.acquire("restart", TTL).await.unwrap();
    // Its requests landed everywhere first: one still on its way would be sent again
    // on the new connection after the restart and set the key there (seen under load).
    on_every_node(&cluster, "restart").await;
    for i in 0..2 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    let second = redlock(&cluster);
    let also = bounded(second.try_acquire("restart", TTL)).await;
    assert!(
        also.is_ok() && held.is_valid(),
        "two owners at once is the known-unsafe outcome: {also:?}"
    );
}

#[tokio::test]
async fn quarantined_nodes_do_not_vote_until_it_passes() {
    let period = Duration::from_secs(2);
    let cluster = cluster(3).await;
    // Let the cluster age past the quarantine (uptime is counted in whole seconds), so
    // that only the nodes restarted below are young.
    tokio::time::sleep(period + Duration::from_secs(1)).await;
    let first = redlock(&cluster);
    let held = first.acquire("restart", TTL).await.unwrap();
    for i in 0..2 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    let careful = builder(&cluster)
        .restart_quarantine(Some(period))
        .retry_count(0)
        .build()
        .unwrap();
    let err = bounded(careful.try_acquire("restart", TTL))
        .await
        .unwrap_err();
    let quarantined = err
        .node_errors()
        .iter()
        .filter(|e| matches!(e.kind(), NodeErrorKind::Quarantined(_)))
        .count();
    assert!(err.is_no_quorum(), "{err}");
    assert!(held.is_valid(), "the first owner still holds");
    // The attempt decides as soon as a quorum is out of reach, so it may have heard
    // from only one of the two quarantined nodes.
    assert!(quarantined >= 1, "{err}");
    assert!(err.node_errors()[0].to_string().contains("votes again"));
    // Once the period has passed since the restart, the nodes vote again. Waiting out
    // the quarantine is the behaviour under test.
    let start = Instant::now();
    // The two restarted nodes forgot the key. The release returns once a quorum
    // answered: if that was both of them, it reports the lock lost; if one of them and
    // the node that kept it, it cannot tell, and says held. Anything else is wrong.
    match held.release().await {
        Ok(()) => {}
        Err(e) => assert!(e.is_lock_lost(), "{e}"),
    }
    eventually("quarantine over", || {
        let careful = careful.clone();
        async move {
            match careful.try_acquire("restart2", TTL).await {
                Ok(g) => g.release().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(start.elapsed() < period + Duration::from_secs(3));
}

#[tokio::test]
async fn nodes_that_prove_persistence_vote_at_once() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let first = redlock(&cluster);
    let held = first.acquire("durable", TTL).await.unwrap();
    for i in 0..2 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    let careful = builder(&cluster)
        .restart_quarantine(Some(Duration::from_secs(600)))
        .retry_count(0)
        .build()
        .unwrap();
    // The lock survived the restart, so the second owner is refused by the nodes
    // themselves, not by a quarantine.
    let err = bounded(careful.try_acquire("durable", TTL))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    held.release().await.unwrap();
    bounded(careful.try_acquire("durable", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// The restart marker's key (no key prefix): written once per node, without ttl.
const MARKER: &str = "tokio-redlock:restart-marker";

/// Issue 21, item 1: a node that runs `appendfsync always` but came back on an empty
/// volume (a replaced disk, a rescheduled pod) has lost every key, whatever its
/// configuration says. A manager that knew the node before notices (a new `run_id`, no
/// restart marker) and keeps it out of the vote for the quarantine period, so a second
/// owner cannot win the lock through it.
#[tokio::test]
async fn a_node_restarted_on_an_empty_volume_sits_out_the_quarantine() {
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let first = redlock(&cluster);
    let careful = builder(&cluster)
        .restart_quarantine(Some(Duration::from_secs(60)))
        .retry_count(0)
        .build()
        .unwrap();
    // The second manager knows every node before the disks are lost.
    warm(&careful).await;
    let held = first.acquire("wiped", TTL).await.unwrap();
    for i in 0..2 {
        cluster.node(i).restart_empty().await.unwrap();
    }
    let err = bounded(careful.try_acquire("wiped", TTL))
        .await
        .expect_err("two owners at once: a node that lost its data voted at once");
    assert!(err.is_no_quorum(), "{err}");
    assert!(
        err.node_errors()
            .iter()
            .any(|e| matches!(e.kind(), NodeErrorKind::Quarantined(_))),
        "{err}"
    );
    assert!(held.is_valid(), "the first owner still holds");
}

/// The other half of item 1: once the marker is written, a node that restarts with its
/// data (AOF, `appendfsync always`) proves it by the marker and votes at once.
#[tokio::test]
async fn a_node_restarted_with_its_data_keeps_its_marker_and_votes_at_once() {
    let period = Duration::from_secs(2);
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let careful = builder(&cluster)
        .restart_quarantine(Some(period))
        .retry_count(0)
        .build()
        .unwrap();
    warm(&careful).await;
    // The marker is written once the node has been up for the period (then nothing it
    // may have lost before can still be a live lock).
    let mut conns = direct(&cluster).await;
    bounded(async {
        while values(&mut conns, MARKER).await.iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        pttls(&mut conns, MARKER).await.iter().all(|t| *t == -1),
        "the marker has no ttl"
    );
    let first = redlock(&cluster);
    let held = first.acquire("durable2", TTL).await.unwrap();
    for i in 0..2 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    let restarted = Instant::now();
    let err = bounded(careful.try_acquire("durable2", TTL))
        .await
        .unwrap_err();
    assert!(
        err.is_conflict(),
        "refused by the nodes, not a quarantine: {err}"
    );
    held.release().await.unwrap();
    let guard = bounded(careful.try_acquire("durable2", TTL)).await.unwrap();
    assert!(
        restarted.elapsed() < period,
        "the restarted nodes voted before a quarantine could have ended"
    );
    guard.release().await.unwrap();
}

/// An operator's `FLUSHALL` loses every lock as a lost disk does. The node keeps its
/// `run_id`, so a manager notices at its next connection (here: the operator also drops
/// the clients' connections, as docs/operations.md advises) by the marker it saw before
/// being gone, and the node sits out a whole period from then.
#[tokio::test]
async fn a_flushed_node_sits_out_the_quarantine_after_a_reconnect() {
    let period = Duration::from_secs(2);
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    let careful = builder(&cluster)
        .restart_quarantine(Some(period))
        .retry_count(0)
        .build()
        .unwrap();
    warm(&careful).await;
    let mut conns = direct(&cluster).await;
    bounded(async {
        while values(&mut conns, MARKER).await.iter().any(Option::is_none) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // The marker is seen on a connection made after it was written.
    for i in 0..3 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    warm(&careful).await;
    let first = redlock(&cluster);
    let held = first.acquire("flushed", TTL).await.unwrap();
    let mut conns = direct(&cluster).await;
    for conn in &mut conns[..2] {
        let _: () = redis::cmd("FLUSHALL").query_async(conn).await.unwrap();
        let _: i64 = redis::cmd("CLIENT")
            .arg(&["KILL", "TYPE", "normal", "SKIPME", "yes"])
            .query_async(conn)
            .await
            .unwrap();
    }
    let err = bounded(careful.try_acquire("flushed", TTL))
        .await
        .expect_err("two owners at once: a flushed node voted");
    assert!(err.is_no_quorum(), "{err}");
    assert!(
        err.node_errors()
            .iter()
            .any(|e| matches!(e.kind(), NodeErrorKind::Quarantined(_))),
        "{err}"
    );
    assert!(held.is_valid());
}

/// Sets user `marker-ro` on every node: everything the crate needs on `app:*`, and the
/// restart marker readable but not writable (a read-only user for that key).
async fn read_only_marker_user(cluster: &tokio_redlock_harness::Cluster) {
    let rule = "~app:* %R~tokio-redlock:restart-marker resetchannels &tokio-redlock:wake:* \
                -@all +set +get +del +pexpire +exists +evalsha +script|load +zadd +zpopmin \
                +zrem +time +publish +subscribe +ping +info +config|get";
    for mut conn in direct(cluster).await {
        let mut c = redis::cmd("ACL");
        c.arg("SETUSER")
            .arg("marker-ro")
            .arg("reset")
            .arg("on")
            .arg(">pw-ro");
        for part in rule.split_whitespace() {
            c.arg(part);
        }
        let _: () = c.query_async(&mut conn).await.unwrap();
    }
}

/// Item 1's degradation: where the marker cannot be written, its absence proves
/// nothing. The crate warns and judges the node by its configuration, as before the
/// marker existed: an `appendfsync always` node that restarts votes at once.
#[tokio::test]
async fn an_unwritable_marker_degrades_to_the_configuration() {
    let period = Duration::from_secs(1);
    let cluster = cluster_with(3, Persistence::AofAlways).await;
    read_only_marker_user(&cluster).await;
    let urls: Vec<String> = cluster
        .urls()
        .iter()
        .map(|u| u.replace("redis://", "redis://marker-ro:pw-ro@"))
        .collect();
    let careful = tokio_redlock::Redlock::builder()
        .nodes(urls)
        .node_timeout(Duration::from_millis(250))
        .restart_quarantine(Some(period))
        .retry_count(0)
        .build()
        .unwrap();
    let warm = bounded(careful.acquire("app:warm", TTL)).await.unwrap();
    warm.release().await.unwrap();
    // Once the nodes are up for the period the crate tries to write the marker, and
    // every node refuses it.
    let conns = direct(&cluster).await;
    eventually("every node denied the marker's write", || {
        let conns = conns.clone();
        async move {
            let mut all = true;
            for mut c in conns {
                let log: redis::Value = redis::cmd("ACL")
                    .arg("LOG")
                    .query_async(&mut c)
                    .await
                    .unwrap();
                all &= format!("{log:?}").contains("restart-marker");
            }
            all
        }
    })
    .await;
    let first = redlock(&cluster);
    let held = first.acquire("app:durable", TTL).await.unwrap();
    for i in 0..2 {
        cluster.node(i).kill().await.unwrap();
        cluster.node(i).restart().await.unwrap();
    }
    // A restart forgets users made at run time.
    read_only_marker_user(&cluster).await;
    let err = bounded(careful.try_acquire("app:durable", TTL))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "judged by its configuration: {err}");
    held.release().await.unwrap();
    bounded(careful.try_acquire("app:durable", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}
