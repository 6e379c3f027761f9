//! What a release says: `Ok(())` only when the lock was held until it was released.
//! A guard whose validity ended, or whose key a quorum no longer stores, releases with
//! `LockLost`, and never touches another owner's key; `release_with_report` keeps the
//! counts and says the same through `lost_reason()`.

use std::time::Duration;

use tokio_redlock::{Error, LockGuard, LostReason};

use crate::support::*;

/// Short, so that a test can wait for it to run out.
const SHORT_TTL: Duration = Duration::from_millis(150);

/// Waits until the guard's own validity has ended.
async fn outlive(guard: &LockGuard) {
    bounded(tokio::time::sleep_until(guard.valid_until().into())).await;
    assert!(!guard.is_valid());
}

fn assert_lost(result: Result<(), Error>, expected: LostReason) {
    match result {
        Err(Error::LockLost { reason, .. }) => assert_eq!(reason, expected),
        other => panic!("expected LockLost({expected:?}), got {other:?}"),
    }
}

#[tokio::test]
async fn a_release_in_time_is_ok_and_held_until_released() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let guard = bounded(redlock.acquire("rel:ok", Duration::from_secs(10)))
        .await
        .unwrap();
    let report = bounded(guard.release_with_report()).await.unwrap();
    assert!(report.held_until_released(), "{report:?}");
    assert!(!report.validity_ended);
    assert_eq!(report.lost_reason(), None);
    let guard = bounded(redlock.acquire("rel:ok", Duration::from_secs(10)))
        .await
        .unwrap();
    bounded(guard.release()).await.unwrap();
    eventually_gone(&cluster, "rel:ok").await;
}

#[tokio::test]
async fn releasing_after_the_validity_ended_is_lock_lost() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let guard = bounded(redlock.acquire("rel:expired", SHORT_TTL))
        .await
        .unwrap();
    outlive(&guard).await;
    // The keys may still be there (the drift margin), but nothing was promised since
    // `valid_until`: not "held until released".
    assert_lost(bounded(guard.release()).await, LostReason::ValidityEnded);
    eventually_gone(&cluster, "rel:expired").await;
}

#[tokio::test]
async fn releasing_after_another_owner_took_over_is_lock_lost_and_spares_its_lock() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let other = builder(&cluster).build().unwrap();
    let old = bounded(redlock.acquire("rel:takeover", SHORT_TTL))
        .await
        .unwrap();
    outlive(&old).await;
    eventually_gone(&cluster, "rel:takeover").await;
    let new = bounded(other.acquire("rel:takeover", Duration::from_secs(10)))
        .await
        .unwrap();
    let mut conns = direct(&cluster).await;
    let before = values(&mut conns, "rel:takeover").await;
    assert!(before.iter().all(Option::is_some), "{before:?}");

    // The report keeps the counts: every node that answered holds someone else's value.
    let report = bounded(old.release_with_report()).await.unwrap();
    assert_eq!(report.released, 0, "{report:?}");
    assert!(report.not_held >= 2, "{report:?}");
    assert!(report.validity_ended);
    assert_eq!(report.lost_reason(), Some(LostReason::ValidityEnded));
    assert!(!report.held_until_released());
    // The new owner's lock is untouched, and its own release is fine.
    assert_eq!(values(&mut conns, "rel:takeover").await, before);
    bounded(new.release()).await.unwrap();
}

#[tokio::test]
async fn releasing_a_valid_guard_whose_keys_a_quorum_lost_is_lock_lost() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let guard = bounded(redlock.acquire("rel:foreign", Duration::from_secs(10)))
        .await
        .unwrap();
    // As after the nodes lost their data and another client took the key: the guard is
    // still within its validity, but no node stores its value any more.
    let mut conns = direct(&cluster).await;
    for conn in conns.iter_mut() {
        set_on(conn, "rel:foreign", "someone-else", 10_000).await;
    }
    assert!(guard.is_valid());
    match bounded(guard.release()).await {
        Err(Error::LockLost {
            reason: LostReason::NotHeld { held, needed, .. },
            ..
        }) => assert_eq!((held, needed), (0, 2)),
        other => panic!("expected LockLost(NotHeld), got {other:?}"),
    }
    // Compare-and-delete: the other value stays on every node.
    let left = values(&mut conns, "rel:foreign").await;
    assert!(
        left.iter().all(|v| v.as_deref() == Some("someone-else")),
        "{left:?}"
    );
}

/// A release gets longer than one node timeout to land (it is a compare-and-delete,
/// harmless when late), while its caller waits at most two node timeouts: on nodes a
/// little slower than the node timeout the release is still seen through, and on nodes
/// far slower the caller returns in time and the key still goes, long before its ttl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_outlasts_the_node_timeout_but_its_caller_does_not_wait_for_it() {
    let cluster = cluster(3).await;
    let timeout = Duration::from_millis(100);
    let redlock = builder(&cluster).node_timeout(timeout).build().unwrap();
    warm(&redlock).await;
    let set_latency = |each_way: Duration| {
        let cluster = &cluster;
        async move {
            for node in cluster.nodes() {
                node.set_latency(each_way).await.unwrap();
            }
        }
    };

    // Round trips of 120 ms and more: past the node timeout, within the release's own.
    let guard = bounded(redlock.acquire("rel:slow", Duration::from_secs(60)))
        .await
        .unwrap();
    set_latency(Duration::from_millis(60)).await;
    let report = bounded(guard.release_with_report()).await.unwrap();
    // A quorum answered "released" (the caller stops there), none timed out.
    assert!(
        report.held_until_released() && report.released >= 2,
        "{report:?}"
    );
    assert_eq!(report.failed, 0, "{report:?}");
    // The node the caller did not wait for is released too.
    assert_gone_within(&cluster, "rel:slow", Duration::from_secs(5)).await;
    set_latency(Duration::ZERO).await;

    // Round trips of 600 ms: the caller gives up after two node timeouts, the requests
    // it sent still remove the key.
    let guard = bounded(redlock.acquire("rel:slow", Duration::from_secs(60)))
        .await
        .unwrap();
    // Every SET of the acquisition landed before the network slows down (the third
    // node's may still be on the way when the quorum has answered).
    let mut conns = direct(&cluster).await;
    let landed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let vals = values(&mut conns, "rel:slow").await;
            if vals.iter().all(|v| v.is_some() && *v == vals[0]) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        landed.is_ok(),
        "the acquisition's SETs did not all land: {:?}",
        values(&mut conns, "rel:slow").await
    );
    set_latency(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let result = bounded(guard.release_with_report()).await;
    let took = started.elapsed();
    assert!(result.is_err(), "no node can answer in time: {result:?}");
    assert!(
        took < timeout * 2 + Duration::from_millis(150),
        "the caller waited {took:?}"
    );
    assert_gone_within(&cluster, "rel:slow", Duration::from_secs(5)).await;
    set_latency(Duration::ZERO).await;
}

/// A release whose connection breaks, and whose next connection breaks again while it
/// is being made (a network that flaps twice), still lands: it tries again until its
/// deadline. Before, the second break ended it and the key stayed until its ttl on a
/// node that was back within milliseconds (found by the explorer's flap probe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_release_outlasts_a_connection_that_breaks_while_it_is_made() {
    let cluster = cluster(3).await;
    let redlock = builder(&cluster)
        .node_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    warm(&redlock).await;
    let guard = bounded(redlock.acquire("rel:flap", Duration::from_secs(60)))
        .await
        .unwrap();
    // Returned at a quorum: the third node's copy may still be on its way.
    on_every_node(&cluster, "rel:flap").await;
    // The release to node 0 goes into a black hole; the other two answer it.
    cluster.node(0).partition().await.unwrap();
    let report = bounded(guard.release_with_report()).await.unwrap();
    assert_eq!(report.released, 2, "{report:?}");
    // The first request on the next connection (its handshake, or the release itself)
    // is forwarded and then the connection is reset; the heal breaks the old one.
    cluster.node(0).reset_after_requests(1).await.unwrap();
    cluster.node(0).heal().await.unwrap();
    assert_gone_within(&cluster, "rel:flap", Duration::from_secs(3)).await;
    cluster.clear_faults().await.unwrap();
}
