//! The Redlock core against real servers, after the acquisition: release and extend act
//! on the owner's value only, extend refreshes the ttl until the lock expired, dropping
//! a guard releases it in the background (without a runtime too), and a cancelled
//! acquisition leaves nothing held.

use std::time::Duration;

use futures::FutureExt;
use tokio_redlock::{Error, LostReason};

use crate::core::TTL;
use crate::support::*;

#[tokio::test]
async fn release_and_extend_never_touch_a_foreign_value() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    let mut guard = redlock.acquire("foreign", TTL).await.unwrap();
    let conns2 = conns.clone();
    eventually("set everywhere", || {
        let mut c = conns2.clone();
        async move { values(&mut c, "foreign").await.iter().all(Option::is_some) }
    })
    .await;
    // Our lock "expired" and another owner took the key everywhere.
    for c in conns.iter_mut() {
        set_on(c, "foreign", "other-owner", 30_000).await;
    }
    let err = guard.extend(TTL).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LockLost {
                reason: LostReason::NotHeld {
                    held: 0,
                    needed: 2,
                    ..
                },
                ..
            }
        ),
        "{err:?}"
    );
    for pttl in pttls(&mut conns, "foreign").await {
        assert!(
            pttl <= 30_000 && pttl > 20_000,
            "extend touched the other owner's ttl: {pttl}"
        );
    }
    let report = guard.release_with_report().await.unwrap();
    assert_eq!(report.released, 0);
    assert!(report.not_held >= 2);
    assert_eq!(
        values(&mut conns, "foreign").await,
        vec![Some("other-owner".to_owned()); 3]
    );
}

#[tokio::test]
async fn extend_refreshes_ttl_and_fails_after_expiry() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let conns = direct(&cluster).await;
    let mut guard = redlock
        .acquire("extend", Duration::from_secs(2))
        .await
        .unwrap();
    let before = guard.valid_until();
    guard.extend(Duration::from_secs(30)).await.unwrap();
    assert!(guard.valid_until() > before + Duration::from_secs(20));
    assert_eq!(guard.ttl(), Duration::from_secs(30));
    let conns2 = conns.clone();
    eventually("extended everywhere", || {
        let mut c = conns2.clone();
        async move { pttls(&mut c, "extend").await.iter().all(|p| *p > 20_000) }
    })
    .await;
    guard.release().await.unwrap();
    eventually_gone(&cluster, "extend").await;

    // A lock whose validity ran out cannot be extended, even if the keys linger.
    let mut short = redlock
        .acquire("extend", Duration::from_millis(60))
        .await
        .unwrap();
    // Waiting for the validity to run out is the behaviour under test, not a sync.
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(!short.is_valid());
    assert_eq!(short.remaining_validity(), Duration::ZERO);
    let err = short.extend(TTL).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::LockLost {
                reason: LostReason::ValidityEnded,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn dropping_the_guard_releases_in_the_background() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let guard = redlock.acquire("dropped", TTL).await.unwrap();
    drop(guard);
    eventually_gone(&cluster, "dropped").await;
    redlock
        .try_acquire("dropped", TTL)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[test]
fn dropping_a_guard_without_a_runtime_does_not_panic() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (cluster, guard) = rt.block_on(async {
        let cluster = cluster(1).await;
        let guard = redlock(&cluster).acquire("no-runtime", TTL).await.unwrap();
        (cluster, guard)
    });
    drop(rt);
    // No runtime any more: Drop must neither panic nor block.
    drop(guard);
    drop(cluster);
}

/// A cancelled acquisition leaves nothing held: whatever it set is undone in the
/// background (and would expire with the ttl anyway).
#[tokio::test]
async fn dropped_acquire_future_leaves_nothing_held() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    warm(&redlock).await;
    // Cut the future at its first poll: requests are out, no reply is read.
    assert!(redlock.acquire("cut", TTL).now_or_never().is_none());
    eventually_gone(&cluster, "cut").await;
    // Cut it at a range of later points, including after some replies came in.
    for micros in [50u64, 150, 300, 600, 1_200, 5_000] {
        let _ =
            tokio::time::timeout(Duration::from_micros(micros), redlock.acquire("cut", TTL)).await;
        eventually_gone(&cluster, "cut").await;
    }
    // Cut while two of three nodes hang, so the attempt is surely mid-flight: node 0
    // has set the key, the paused nodes have the SET queued on their connections.
    cluster.node(1).pause().await.unwrap();
    cluster.node(2).pause().await.unwrap();
    let slow = builder(&cluster)
        .node_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let result = tokio::time::timeout(Duration::from_millis(200), slow.acquire("mid", TTL)).await;
    assert!(
        result.is_err(),
        "the attempt cannot decide while two nodes hang"
    );
    // When they wake up, the queued SET runs first and the background undo after it.
    cluster.node(1).resume().await.unwrap();
    cluster.node(2).resume().await.unwrap();
    eventually_gone(&cluster, "mid").await;
}
