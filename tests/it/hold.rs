//! Holding a lock at least for a period (`LockRequest::hold_at_least`): a release, a
//! drop or the end of `with`'s work before the period ends leaves the lock on the nodes
//! for the rest of it, so a scheduled job does not run again elsewhere meanwhile.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::{Duration, Instant};

use tokio_redlock_harness::Cluster;

use crate::support::*;

const PERIOD: Duration = Duration::from_millis(1_500);
const TTL: Duration = Duration::from_secs(10);

/// The nodes keeping `key` with at most `period` left, on a quorum.
async fn kept_for_the_period(cluster: &Cluster, key: &str, quorum: usize) {
    let mut conns = direct(cluster).await;
    let ttls = pttls(&mut conns, key).await;
    let kept = ttls
        .iter()
        .filter(|t| **t > 0 && **t <= PERIOD.as_millis() as i64)
        .count();
    assert!(kept >= quorum, "not shortened to the period: {ttls:?}");
}

#[tokio::test]
async fn a_release_within_the_period_keeps_the_lock_until_it_ends() {
    let cluster = cluster(3).await;
    let (redlock, other) = (redlock(&cluster), redlock(&cluster));
    let acquired = Instant::now();
    let guard = bounded(
        redlock
            .lock("nightly")
            .ttl(TTL)
            .hold_at_least(PERIOD)
            .try_acquire(),
    )
    .await
    .unwrap();
    bounded(guard.release()).await.unwrap();
    kept_for_the_period(&cluster, "nightly", redlock.quorum()).await;
    let again = bounded(other.try_acquire("nightly", TTL)).await;
    assert!(again.is_err(), "another host ran the job within the period");
    eventually_gone(&cluster, "nightly").await;
    assert!(acquired.elapsed() >= PERIOD - Duration::from_millis(50));
    let after = bounded(other.try_acquire("nightly", TTL)).await.unwrap();
    bounded(after.release()).await.unwrap();
}

#[tokio::test]
async fn a_dropped_guard_and_with_keep_the_period_too() {
    let cluster = cluster(3).await;
    let (redlock, other) = (redlock(&cluster), redlock(&cluster));
    let guard = bounded(
        redlock
            .lock("job:a")
            .ttl(TTL)
            .hold_at_least(PERIOD)
            .acquire(),
    )
    .await
    .unwrap();
    drop(guard);
    eventually("the drop's release shortened the lock", || {
        let cluster = &cluster;
        async move {
            let mut conns = direct(cluster).await;
            pttls(&mut conns, "job:a")
                .await
                .iter()
                .all(|t| *t > 0 && *t <= PERIOD.as_millis() as i64)
        }
    })
    .await;
    let ran = bounded(
        redlock
            .lock("job:b")
            .ttl(TTL)
            .hold_at_least(PERIOD)
            .with(|_| async { "done" }),
    )
    .await
    .unwrap();
    assert_eq!(ran, "done");
    kept_for_the_period(&cluster, "job:b", redlock.quorum()).await;
    assert!(bounded(other.try_acquire("job:b", TTL)).await.is_err());
}

#[tokio::test]
async fn a_release_after_the_period_deletes_and_readers_cannot_hold() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let guard = bounded(
        redlock
            .lock("short")
            .ttl(TTL)
            .hold_at_least(Duration::from_millis(20))
            .acquire(),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(40)).await;
    bounded(guard.release()).await.unwrap();
    eventually_gone(&cluster, "short").await;
    let read = bounded(redlock.lock("doc").read().hold_at_least(PERIOD).acquire()).await;
    assert!(matches!(&read, Err(e) if e.is_config()), "{read:?}");
}
