//! Waiting for a release: retries succeed when the holder releases, a release wakes a
//! waiter before its retry delay, waiters are woken in order of arrival and a dropped
//! manager closes its wake-up connections; and regression tests (of the same review as
//! `belief.rs`; the items are those of issue 11) for stalls behind a silent node,
//! cancelled waits absorbing wake-ups, waiting for the wrong key, and auxiliary key
//! collisions (the wait queue's key among them).
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::{Duration, Instant};

use tokio_redlock::{Error, Redlock};

use crate::core::TTL;
use crate::support::*;

/// A manager that waits 3 s between attempts: only a release wake-up gets it a lock
/// that was released sooner.
fn waits_3s(cluster: &tokio_redlock_harness::Cluster) -> Redlock {
    builder(cluster)
        .retry_count(5)
        .retry_delay(Duration::from_secs(3))
        .retry_jitter(Duration::ZERO)
        .build()
        .unwrap()
}

/// The acquisition won, sooner than the 3 s retry delay could have made it.
fn assert_woken(got: &Result<tokio_redlock::LockGuard, Error>, after: Duration) {
    assert!(got.is_ok(), "{got:?}");
    assert!(
        after < Duration::from_secs(3),
        "woken only by the retry delay: {after:?}"
    );
}

#[tokio::test]
async fn retries_succeed_when_the_holder_releases() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let waiter = builder(&cluster)
        .retry_count(200)
        .retry_delay(Duration::from_millis(10))
        .build()
        .unwrap();
    let held = holder.acquire("handoff", TTL).await.unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let _ = tx.send(());
        waiter.acquire("handoff", TTL).await
    });
    rx.await.unwrap();
    held.release().await.unwrap();
    let got = bounded(task).await.unwrap().unwrap();
    assert!(got.is_valid());
    got.release().await.unwrap();
}

/// A waiter that found the lock held is woken by the release instead of sleeping out its
/// retry delay; the wake-up only triggers an attempt, which still needs a quorum.
#[tokio::test]
async fn release_wakes_a_waiter_before_its_retry_delay() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let waiter = builder(&cluster)
        .retry_count(5)
        .retry_delay(Duration::from_secs(20))
        .retry_jitter(Duration::ZERO)
        // Generous: a timed-out vote under load would be NoQuorum, not a conflict to
        // wait out, and this test is about the wake-up.
        .node_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let held = holder.acquire("wake", TTL).await.unwrap();
    let task = tokio::spawn(async move {
        let start = Instant::now();
        let guard = waiter.acquire("wake", TTL).await;
        (guard, start.elapsed())
    });
    // Wait until the waiter queued up on every node.
    let conns = direct(&cluster).await;
    eventually("the waiter listens and queued on every node", || {
        let conns = conns.clone();
        async move {
            queue_lengths(&conns, "wake").await.iter().all(|n| *n == 1)
                && wake_listeners(&conns).await.iter().all(|n| *n == 1)
        }
    })
    .await;
    let report = held.release_with_report().await.unwrap();
    assert!(report.woken >= 1, "{report:?}");
    let (guard, waited) = bounded(task).await.unwrap();
    let guard = guard.unwrap();
    assert!(waited < Duration::from_secs(10), "woken after {waited:?}");
    guard.release().await.unwrap();
    // Woken waiters were popped; nobody is left queued.
    eventually("queues empty", || {
        let conns = conns.clone();
        async move { queue_lengths(&conns, "wake").await.iter().all(|n| *n == 0) }
    })
    .await;
}

/// Waiters are woken one (or two) at a time, oldest first, not all at once.
#[tokio::test]
async fn waiters_are_woken_in_order_of_arrival() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let mut held = holder.acquire("fifo", TTL).await.unwrap();
    let conns = direct(&cluster).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..4usize {
        let waiter = builder(&cluster)
            .retry_count(50)
            .retry_delay(Duration::from_secs(20))
            .retry_jitter(Duration::ZERO)
            .node_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            let g = waiter.acquire("fifo", TTL).await.unwrap();
            tx.send(i).unwrap();
            // Hold briefly, then hand over by releasing.
            g.release().await.unwrap();
        }));
        // Queue them up one after the other.
        let want = i as i64 + 1;
        eventually("the waiter listens and queued", || {
            let conns = conns.clone();
            async move {
                queue_lengths(&conns, "fifo")
                    .await
                    .iter()
                    .all(|n| *n == want)
                    && wake_listeners(&conns)
                        .await
                        .iter()
                        .all(|n| *n as i64 == want)
            }
        })
        .await;
    }
    held.extend(TTL).await.unwrap();
    held.release().await.unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        order.push(bounded(rx.recv()).await.unwrap());
    }
    for t in tasks {
        bounded(t).await.unwrap();
    }
    assert_eq!(order, vec![0, 1, 2, 3], "served in order of arrival");
}

/// A manager that waited holds pub/sub connections; dropping it closes them.
#[tokio::test]
async fn dropping_a_manager_closes_its_wake_up_connections() {
    let cluster = cluster(3).await;
    let conns = direct(&cluster).await;
    let clients = |conns: Vec<redis::aio::MultiplexedConnection>| async move {
        let mut total = 0;
        for mut c in conns {
            let list: String = redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut c)
                .await
                .unwrap();
            total += list.lines().count();
        }
        total
    };
    let holder = redlock(&cluster);
    let held = holder.acquire("pubsub", TTL).await.unwrap();
    // The grant returns at a quorum: the holder's last connection may still be made.
    crate::support::on_every_node(&cluster, "pubsub").await;
    let baseline = clients(conns.clone()).await;
    let waiter = builder(&cluster).retry_count(1).build().unwrap();
    assert!(waiter
        .acquire("pubsub", TTL)
        .await
        .unwrap_err()
        .is_conflict());
    // One command connection and one pub/sub connection per node (the subscriptions
    // are made in the background, so a loaded machine may still be making one).
    eventually("the waiter's connections made", || {
        let conns = conns.clone();
        async move { clients(conns).await == baseline + 6 }
    })
    .await;
    drop(waiter);
    eventually("the manager's connections closed", || {
        let conns = conns.clone();
        async move { clients(conns).await == baseline }
    })
    .await;
    held.release().await.unwrap();
}

/// Item 8: a node that accepts connections but never answers must not hold up the
/// waiter: it is woken by the release, not after the subscription to the silent node
/// gave up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_does_not_stall_a_woken_waiter() {
    let cluster = cluster(5).await;
    let holder = redlock(&cluster);
    warm(&holder).await;
    let guard = bounded(holder.acquire("belief:silent", Duration::from_secs(30)))
        .await
        .unwrap();
    cluster.node(4).partition().await.unwrap();
    // A fresh manager: its subscriptions are made while it waits. Its retry delay is
    // long, so only a wake-up gets it the lock soon after the release.
    let waiter = waits_3s(&cluster);
    let started = Instant::now();
    let wait = tokio::spawn(async move {
        let g = waiter
            .acquire("belief:silent", Duration::from_secs(5))
            .await;
        (g, started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    guard.release().await.unwrap();
    let (got, after) = bounded(wait).await.unwrap();
    assert!(got.is_ok(), "{got:?}");
    assert!(
        after < Duration::from_millis(1500),
        "released 150 ms in, acquired after {after:?}"
    );
    cluster.clear_faults().await.unwrap();
}

/// Item 8: a wait cancelled at any point leaves no registration behind, and a queue
/// entry that outlived its waiter (a request of it still on the way when it was
/// cancelled) does not absorb the wake-up meant for the next live waiter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_wait_does_not_absorb_wake_ups() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let patient = |delay| {
        builder(&cluster)
            .retry_count(10)
            .retry_delay(delay)
            .retry_jitter(Duration::ZERO)
            .node_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    let cancelled = patient(Duration::from_millis(20));
    warm(&cancelled).await;
    let guard = bounded(holder.acquire("belief:absorb", Duration::from_secs(30)))
        .await
        .unwrap();
    // Waits cut short at many points of their life.
    for ms in [0u64, 1, 2, 5, 10, 30, 60] {
        let _ = tokio::time::timeout(
            Duration::from_millis(ms),
            cancelled.acquire("belief:absorb", Duration::from_secs(5)),
        )
        .await;
    }
    let conns = direct(&cluster).await;
    eventually("cancelled waiters left the queues", || {
        let conns = conns.clone();
        async move {
            queue_lengths(&conns, "belief:absorb")
                .await
                .iter()
                .all(|n| *n == 0)
        }
    })
    .await;
    // The worst case on purpose: the cancelled manager's entry back at the head of
    // every queue, as a late queue join would leave it. Its id is its channel's name.
    let mut c0 = conns[0].clone();
    let channels: Vec<String> = redis::cmd("PUBSUB")
        .arg("CHANNELS")
        .arg("tokio-redlock:wake:*")
        .query_async(&mut c0)
        .await
        .unwrap();
    assert_eq!(channels.len(), 1, "{channels:?}");
    let member = channels[0]
        .trim_start_matches("tokio-redlock:wake:")
        .to_owned();
    for c in &conns {
        let mut c = c.clone();
        let _: i64 = redis::cmd("ZADD")
            .arg("belief:absorb:waiters")
            .arg(0)
            .arg(&member)
            .query_async(&mut c)
            .await
            .unwrap();
    }
    // A live waiter of another manager queues behind it; only a wake-up gets it the
    // lock before its 3 s retry delay.
    let live_manager = patient(Duration::from_secs(3));
    let live = tokio::spawn(async move {
        let started = Instant::now();
        let g = live_manager
            .acquire("belief:absorb", Duration::from_secs(5))
            .await;
        (g, started.elapsed())
    });
    eventually("the live waiter queued behind it on a quorum", || {
        let conns = conns.clone();
        async move {
            let q = queue_lengths(&conns, "belief:absorb").await;
            q.iter().filter(|n| **n == 2).count() >= 2
        }
    })
    .await;
    guard.release().await.unwrap();
    let (got, after) = bounded(live).await.unwrap();
    assert_woken(&got, after);
}

/// Item 9: `acquire_many` waits for the release of the key that actually conflicted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_many_waits_for_the_key_that_conflicted() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let waiter = waits_3s(&cluster);
    warm(&waiter).await;
    let guard = bounded(holder.acquire("belief:many:b", Duration::from_secs(30)))
        .await
        .unwrap();
    let started = Instant::now();
    let wait = tokio::spawn(async move {
        let g = waiter
            .acquire_many(&["belief:many:a", "belief:many:b"], Duration::from_secs(5))
            .await;
        (g, started.elapsed())
    });
    let conns = direct(&cluster).await;
    eventually("the waiter queued on the held key", || {
        let conns = conns.clone();
        async move {
            queue_lengths(&conns, "belief:many:b")
                .await
                .iter()
                .all(|n| *n == 1)
        }
    })
    .await;
    guard.release().await.unwrap();
    let (got, after) = bounded(wait).await.unwrap();
    assert_woken(&got, after);
}

/// Item 10: no resource's key can be another's auxiliary key, and the queue join never
/// touches a key of another type under the queue's name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auxiliary_keys_never_collide_nor_touch_foreign_keys() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    for name in ["job:waiters", "job:fence"] {
        let err = redlock
            .acquire(name, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("suffix")),
            "{name}: {err}"
        );
    }
    let custom = builder(&cluster)
        .fencing(true)
        .fence_suffix(":token")
        .build()
        .unwrap();
    assert!(custom
        .acquire("job:token", Duration::from_secs(1))
        .await
        .is_err());
    for suffix in [":waiters", "waiters", "s", ":x:waiters"] {
        let err = builder(&cluster).fence_suffix(suffix).build().unwrap_err();
        assert!(
            matches!(&err, Error::Config(m) if m.contains("fence_suffix")),
            "{suffix}: {err}"
        );
    }
    // Someone else's string under the queue's name, with a long expiry.
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        set_on(c, "foreign:waiters", "not a queue", 100_000).await;
    }
    let guard = bounded(redlock.acquire("foreign", Duration::from_secs(30)))
        .await
        .unwrap();
    // A contended waiter: its queued attempts find the string where the queue would be.
    let waiter = builder(&cluster).retry_count(3).build().unwrap();
    let err = bounded(waiter.acquire("foreign", Duration::from_secs(5)))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    for ttl in pttls(&mut conns, "foreign:waiters").await {
        assert!(
            ttl > 90_000,
            "the foreign key's expiry was changed to {ttl} ms"
        );
    }
    assert!(values(&mut conns, "foreign:waiters")
        .await
        .iter()
        .all(|v| v.as_deref() == Some("not a queue")));
    guard.release().await.unwrap();
}
