//! In-process hand-over: tasks of one manager queue locally for a key, one of
//! them competes on the nodes, and a release hands the lock to the next without going
//! to the nodes. Checked against real servers: exclusion, belief, fairness, the bound
//! that lets other managers in, cancellation, and where it must not apply.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock::{LockGuard, Redlock};

use crate::support::*;

const TTL: Duration = Duration::from_secs(5);

fn patient(cluster: &tokio_redlock_harness::Cluster) -> Redlock {
    builder(cluster)
        .retry_count(1_000)
        .retry_delay(Duration::from_millis(50))
        .node_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
}

/// A quorum of nodes stores one value with at least the guard's remaining validity left
/// (its belief), read directly past the proxies; 5 ms slack for the PTTL's rounding.
async fn held_as_believed(
    conns: &mut [redis::aio::MultiplexedConnection],
    key: &str,
    guard: &LockGuard,
) -> bool {
    let vals = values(conns, key).await;
    let ttls = pttls(conns, key).await;
    // Read after the nodes: what they held then lasts at least this long from now.
    let remaining = guard.remaining_validity();
    let mut counts = std::collections::HashMap::new();
    for (v, ttl) in vals.iter().zip(&ttls) {
        if let (Some(v), Ok(ttl)) = (v, u128::try_from(*ttl)) {
            if ttl + 5 >= remaining.as_millis() {
                *counts.entry(v.clone()).or_insert(0usize) += 1;
            }
        }
    }
    counts.values().any(|n| *n * 2 > conns.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_manager_hand_the_lock_over_and_never_overlap() {
    let cluster = cluster(3).await;
    let redlock = patient(&cluster);
    warm(&redlock).await;
    let inside = Arc::new(AtomicBool::new(false));
    let handed = Arc::new(AtomicUsize::new(0));
    let per_task = 15;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (redlock, inside, handed) = (redlock.clone(), inside.clone(), handed.clone());
        let mut conns = direct(&cluster).await;
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            for _ in 0..per_task {
                let guard = redlock.acquire("local:one", TTL).await.expect("acquire");
                assert!(
                    !inside.swap(true, Ordering::SeqCst),
                    "two tasks inside at once"
                );
                assert!(
                    held_as_believed(&mut conns, "local:one", &guard).await,
                    "the guard says held, a quorum disagrees"
                );
                tokio::task::yield_now().await;
                inside.store(false, Ordering::SeqCst);
                let report = guard.release_with_report().await.expect("release");
                assert!(report.held_until_released(), "{report:?}");
                if report.handed_over {
                    handed.fetch_add(1, Ordering::Relaxed);
                }
                done += 1;
            }
            done
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        counts.push(bounded(t).await.unwrap());
    }
    assert!(counts.iter().all(|c| *c == per_task), "{counts:?}");
    let handed = handed.load(Ordering::Relaxed);
    assert!(handed > 0, "no release was handed over");
    eventually_gone(&cluster, "local:one").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_keeps_its_value_and_validity() {
    let cluster = cluster(3).await;
    let redlock = patient(&cluster);
    let first = bounded(redlock.acquire("local:same", TTL)).await.unwrap();
    let promised = first.valid_until();
    let value = {
        let mut conns = direct(&cluster).await;
        values(&mut conns, "local:same").await[0].clone()
    };
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move { redlock.acquire("local:same", TTL).await }
    });
    // The waiter is queued locally (it sends nothing): give it the moment to queue.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let report = first.release_with_report().await.unwrap();
    assert!(report.handed_over, "{report:?}");
    let second = bounded(waiter).await.unwrap().unwrap();
    assert_eq!(
        second.attempts(),
        0,
        "a hand-over makes no attempt on the nodes"
    );
    // More than half the ttl was left: no extension, the same promise.
    assert_eq!(second.valid_until(), promised);
    let mut conns = direct(&cluster).await;
    assert_eq!(values(&mut conns, "local:same").await[0], value);
    second.release().await.unwrap();
    eventually_gone(&cluster, "local:same").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_remainder_is_extended_before_the_hand_over_completes() {
    let cluster = cluster(3).await;
    let redlock = patient(&cluster);
    let first = bounded(redlock.acquire("local:extend", Duration::from_millis(600)))
        .await
        .unwrap();
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .acquire("local:extend", Duration::from_secs(10))
                .await
        }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    first.release().await.unwrap();
    let second = bounded(waiter).await.unwrap().unwrap();
    // 600 ms was less than half the receiver's 10 s: it extended first.
    assert!(second.remaining_validity() > Duration::from_secs(5));
    let mut conns = direct(&cluster).await;
    assert!(held_as_believed(&mut conns, "local:extend", &second).await);
    second.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_manager_gets_in_after_a_bounded_run_of_hand_overs() {
    let cluster = cluster(3).await;
    let busy = patient(&cluster);
    let other = patient(&cluster);
    warm(&busy).await;
    warm(&other).await;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (busy, stop) = (busy.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let g = busy.acquire("local:fair", TTL).await.expect("acquire");
                tokio::time::sleep(Duration::from_millis(5)).await;
                g.release().await.expect("release");
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Four tasks keep the lock busy in one process; the other process still gets it
    // within a few critical sections, not after the busy ones stop.
    let started = Instant::now();
    let g = bounded(other.acquire("local:fair", TTL)).await.unwrap();
    let waited = started.elapsed();
    g.release().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        bounded(t).await.unwrap();
    }
    assert!(
        waited < Duration::from_secs(2),
        "the other manager waited {waited:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_local_waiter_does_not_stall_the_queue() {
    let cluster = cluster(3).await;
    let redlock = patient(&cluster);
    let first = bounded(redlock.acquire("local:cancel", TTL)).await.unwrap();
    // Waiters cut short while queued locally, and one that stays.
    for ms in [1u64, 5, 20] {
        let r = tokio::time::timeout(
            Duration::from_millis(ms),
            redlock.acquire("local:cancel", TTL),
        )
        .await;
        assert!(r.is_err(), "acquired while held");
    }
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move { redlock.acquire("local:cancel", TTL).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(first);
    let second = bounded(waiter).await.unwrap().unwrap();
    assert!(second.is_valid());
    second.release().await.unwrap();
    // And with nobody waiting, the key is free for anyone at once.
    let third = bounded(redlock.try_acquire("local:cancel", TTL))
        .await
        .unwrap();
    third.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fenced_or_opted_out_managers_never_hand_over() {
    let cluster = cluster(3).await;
    for redlock in [
        builder(&cluster)
            .fencing(true)
            .retry_count(100)
            .build()
            .unwrap(),
        builder(&cluster)
            .local_handover(false)
            .retry_count(100)
            .build()
            .unwrap(),
    ] {
        let first = bounded(redlock.acquire("local:never", TTL)).await.unwrap();
        let first_token = first.fencing_token();
        let waiter = tokio::spawn({
            let redlock = redlock.clone();
            async move { redlock.acquire("local:never", TTL).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let report = first.release_with_report().await.unwrap();
        assert!(!report.handed_over, "{report:?}");
        let second = bounded(waiter).await.unwrap().unwrap();
        assert!(second.attempts() >= 1);
        // A fenced holder's successor got its token from the nodes: a greater one.
        if let Some(a) = first_token {
            assert!(
                second.fencing_token() > Some(a),
                "{:?} after {a}",
                second.fencing_token()
            );
        }
        second.release().await.unwrap();
    }
}

/// Issue 21, item 3: a lock handed over to a request with its own `min_validity` `d`
/// is extended against `d`, not the manager's floor. `latency` (each way, on every
/// node) makes the adoption's extension leave less than `d`, or, at zero, more.
/// Returns what the waiter got, whether the lock was handed over, and the cluster.
async fn hand_over_to_a_waiter_with_min_validity(
    key: &'static str,
    latency: Duration,
) -> (
    Result<LockGuard, tokio_redlock::Error>,
    bool,
    tokio_redlock_harness::Cluster,
) {
    let cluster = cluster(3).await;
    // A node timeout that outlasts the slowed extension (its script is loaded first:
    // three round trips), so that it is won, only with too little left.
    let redlock = builder(&cluster)
        .node_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let ttl = Duration::from_millis(1_000);
    let first = bounded(redlock.acquire(key, ttl)).await.unwrap();
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .lock(key)
                .ttl(ttl)
                .min_validity(MIN_VALIDITY)
                .retries(2)
                .acquire()
                .await
        }
    });
    // The waiter queues locally (it sends nothing); meanwhile the remainder drops
    // below its 900 ms floor, so the hand-over must extend.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..3 {
        cluster.node(i).set_latency(latency).await.unwrap();
    }
    let report = first.release_with_report().await.unwrap();
    (bounded(waiter).await.unwrap(), report.handed_over, cluster)
}

const MIN_VALIDITY: Duration = Duration::from_millis(900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_never_has_less_than_the_waiters_min_validity() {
    // 50 ms each way: any round takes 100 ms, so no grant and no extension of a 1 s
    // ttl can leave 900 ms; the waiter fails as a fresh acquisition would.
    let (got, handed_over, _cluster) =
        hand_over_to_a_waiter_with_min_validity("local:minval:slow", Duration::from_millis(50))
            .await;
    assert!(handed_over, "the lock was not handed over");
    match got {
        Ok(guard) => panic!(
            "the waiter asked for at least {MIN_VALIDITY:?} and got a guard with {:?} left",
            guard.remaining_validity()
        ),
        Err(e) => assert!(!matches!(e, tokio_redlock::Error::Config(_)), "{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_is_extended_to_the_waiters_min_validity() {
    let (got, handed_over, _cluster) =
        hand_over_to_a_waiter_with_min_validity("local:minval:fast", Duration::ZERO).await;
    assert!(handed_over, "the lock was not handed over");
    // Extended in place (attempts() == 0), or, on a machine so loaded that even the
    // fast extension left too little, acquired afresh: either way with enough left.
    let guard = got.expect("a fast extension leaves enough");
    // 20 ms slack for the time since the grant.
    assert!(
        guard.remaining_validity() + Duration::from_millis(20) >= MIN_VALIDITY,
        "{:?} left",
        guard.remaining_validity()
    );
    guard.release().await.unwrap();
}
