//! What a guard or lease believes is true on the nodes: regression tests for the ways a
//! review found to break that (shorter extensions, keep-alive off the runtime, extreme
//! durations, minimum validity). The liveness holes around it are tested in
//! `attempts.rs` (ghost locks after a connection flap, attempts past `retry_count`) and
//! `waiters.rs` (stalls behind a silent node, waiting for the wrong key, auxiliary key
//! collisions).
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_redlock::{Error, LeaseOptions};

use crate::support::*;

/// Which nodes (directly, past the proxies) hold `key`, and with which value.
async fn holders(cluster: &tokio_redlock_harness::Cluster, key: &str) -> Vec<Option<String>> {
    let mut conns = direct(cluster).await;
    values(&mut conns, key).await
}

/// Issue 11, item 1: a failed shorter extension must not leave the guard believing in
/// the old, later expiry. Since issue 21 the nodes never apply a shorter expiry (a late
/// copy of one could take back a newer promise), so the belief is lowered by the rule,
/// not by the nodes: the guard says what its last call asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_shorter_extension_lowers_the_belief_before_anything_is_sent() {
    let cluster = cluster(5).await;
    let redlock = builder(&cluster).build().unwrap();
    warm(&redlock).await;
    let mut guard = bounded(redlock.acquire("belief:short", Duration::from_secs(30)))
        .await
        .unwrap();
    for node in cluster.nodes() {
        node.set_latency(Duration::from_millis(6)).await.unwrap();
    }
    let asked = Instant::now();
    // 4 ms cannot survive a 12 ms round trip: a quorum answers too late (Expired), or
    // the guard's lowered belief has run out before the answers (LockLost).
    let result = bounded(guard.extend(Duration::from_millis(4))).await;
    assert!(
        result.is_err(),
        "a 4 ms extension over 12 ms round trips succeeded"
    );
    assert!(
        guard.valid_until() <= asked + Duration::from_millis(4),
        "the guard still believes in {:?} after a failed 4 ms extension",
        guard.remaining_validity()
    );
    assert!(
        !guard.is_valid(),
        "the guard says valid after its 4 ms ran out"
    );
    for node in cluster.nodes() {
        node.set_latency(Duration::ZERO).await.unwrap();
    }
    // The nodes kept the longer expiry: a shorter extension never lowers one.
    let mut conns = direct(&cluster).await;
    let kept = pttls(&mut conns, "belief:short").await;
    assert!(
        kept.iter().filter(|&&t| t > 20_000).count() >= redlock.quorum(),
        "a shorter extension lowered the nodes' expiry: {kept:?}"
    );
    // Released (it reports the loss: its validity had ended), the key goes and another
    // client may take it.
    let released = bounded(guard.release()).await;
    assert!(
        matches!(released, Err(Error::LockLost { .. })),
        "{released:?}"
    );
    eventually_gone(&cluster, "belief:short").await;
    let other = redlock
        .try_acquire("belief:short", Duration::from_secs(5))
        .await;
    assert!(other.is_ok(), "{other:?}");
}

/// Item 1, cancellation: an extension dropped after its first poll keeps the lowered
/// belief, since the nodes may apply it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_shorter_extension_keeps_the_lowered_belief() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    warm(&redlock).await;
    let mut guard = bounded(redlock.acquire("belief:cancel", Duration::from_secs(30)))
        .await
        .unwrap();
    let asked = Instant::now();
    // One poll sends nothing back yet; the future is then dropped.
    assert!(guard
        .extend(Duration::from_millis(500))
        .now_or_never()
        .is_none());
    assert!(
        guard.valid_until() <= asked + Duration::from_millis(500),
        "belief after a cancelled 500 ms extension: {:?}",
        guard.remaining_validity()
    );
    // A longer extension afterwards works and raises it again.
    bounded(guard.extend(Duration::from_secs(10)))
        .await
        .unwrap();
    assert!(guard.remaining_validity() > Duration::from_secs(5));
    guard.release().await.unwrap();
}

/// Item 1: `LockLost { NotHeld }` makes the guard invalid at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extension_that_finds_the_lock_gone_invalidates_the_guard() {
    let cluster = cluster(3).await;
    // Without healing: an extension that heals would set the lost keys again (a fresh
    // vote on those nodes); this is about a guard that only refreshes what is there.
    let redlock = builder(&cluster).heal_on_extend(false).build().unwrap();
    let mut guard = bounded(redlock.acquire("belief:gone", Duration::from_secs(30)))
        .await
        .unwrap();
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        let _: () = redis::cmd("DEL")
            .arg("belief:gone")
            .query_async(c)
            .await
            .unwrap();
    }
    let err = bounded(guard.extend(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining_validity(), Duration::ZERO);
}

/// Issue 21, item 1: on 4 nodes, 2 that lost the key and 2 that fail leave no quorum
/// that can hold the value: the extension is `LockLost` and the guard stops saying
/// valid. `faulty` makes nodes 2 and 3 fail (partitioned: they time out, after the
/// "not held" replies; killed: they fail at once, before them, behind a little latency).
async fn extension_with_two_gone_and_two_failing(key: &str, kill: bool) {
    let cluster = cluster(4).await;
    // Without healing, which would set the two lost keys again (see
    // `an_extension_heals_nodes_that_lost_the_key` in tests/it/heal.rs).
    let redlock = builder(&cluster).heal_on_extend(false).build().unwrap();
    let mut guard = bounded(redlock.acquire(key, Duration::from_secs(30)))
        .await
        .unwrap();
    let mut conns = direct(&cluster).await;
    for c in &mut conns[..2] {
        let _: () = redis::cmd("DEL").arg(key).query_async(c).await.unwrap();
    }
    for i in 2..4 {
        if kill {
            cluster.node(i).kill().await.unwrap();
        } else {
            cluster.node(i).partition().await.unwrap();
        }
    }
    if kill {
        // The "not held" replies come after the failures, so a collector that stops
        // at the first certain outcome has seen only the failures. (20 ms each way:
        // the first extension also loads its script, three round trips in all, well
        // within the node timeout.)
        for i in 0..2 {
            cluster
                .node(i)
                .set_latency(Duration::from_millis(20))
                .await
                .unwrap();
        }
    }
    let err = bounded(guard.extend(Duration::from_secs(30)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::LockLost { .. }),
        "two of four nodes lost the key and two failed: {err:?}"
    );
    assert!(!guard.is_valid());
    assert_eq!(guard.remaining_validity(), Duration::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_two_gone_two_partitioned_is_lock_lost() {
    extension_with_two_gone_and_two_failing("belief:even:partitioned", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_nodes_two_gone_two_failing_first_is_lock_lost() {
    extension_with_two_gone_and_two_failing("belief:even:killed", true).await;
}

/// Item 2: `keep_alive()` called where no runtime is current runs on the runtime the
/// lock was taken on, so the lease and the nodes agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_started_off_the_runtime_keeps_the_lock_it_reports() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let ttl = Duration::from_millis(600);
    let guard = bounded(redlock.acquire("belief:thread", ttl))
        .await
        .unwrap();
    let kept = std::thread::spawn(move || guard.keep_alive())
        .join()
        .expect("keep_alive on a plain thread");
    let lease = kept.lease().clone();
    // Three ttls later the lease says held, so the nodes must hold it too.
    tokio::time::sleep(ttl * 3).await;
    assert!(lease.is_held(), "lost: {:?}", lease.lost_reason());
    assert!(lease.extensions() >= 2, "{} extensions", lease.extensions());
    let vals = holders(&cluster, "belief:thread").await;
    let held = vals.iter().filter(|v| v.is_some()).count();
    assert!(
        held >= redlock.quorum(),
        "the lease says held, the nodes: {vals:?}"
    );
    bounded(kept.release()).await.unwrap();
    eventually_gone(&cluster, "belief:thread").await;
}

/// Item 3: the longest hold cap there is must not overflow in the keep-alive (a panic
/// there dropped the guard, and the lock, while the lease still said held).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_with_extreme_caps_extends_and_never_panics() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let ttl = Duration::from_millis(400);
    for options in [
        LeaseOptions::default().max_hold(Some(Duration::MAX)),
        LeaseOptions::default()
            .max_hold(Some(Duration::from_secs(u64::MAX)))
            .max_extensions(Some(u32::MAX))
            .extend_after(f64::INFINITY),
        LeaseOptions::default().extend_after(f64::NEG_INFINITY),
    ] {
        let request = redlock.lock("belief:caps").ttl(ttl).lease_options(options);
        let kept = bounded(request.acquire()).await.unwrap().keep_alive();
        let lease = kept.lease().clone();
        tokio::time::sleep(ttl * 2).await;
        assert!(lease.is_held(), "{options:?}: {:?}", lease.lost_reason());
        let vals = holders(&cluster, "belief:caps").await;
        assert!(
            vals.iter().filter(|v| v.is_some()).count() >= redlock.quorum(),
            "{options:?}: the lease says held, the nodes: {vals:?}"
        );
        bounded(kept.release()).await.unwrap();
    }
}

/// Item 3: extreme settings that build must lock and give up without a panic, within
/// the bound their own settings imply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extreme_settings_lock_or_refuse_but_never_panic() {
    let cluster = cluster(3).await;
    let huge = [
        Duration::MAX,
        Duration::from_secs(u64::MAX),
        Duration::from_millis(u64::MAX),
    ];
    for d in huge {
        let redlock = builder(&cluster)
            .node_timeout(d)
            .connect_timeout(d)
            .restart_quarantine(Some(Duration::ZERO))
            .retry_delay(d)
            .retry_jitter(d)
            .retry_count(0)
            .build()
            .expect("huge timeouts saturate");
        let guard = bounded(redlock.acquire("belief:extreme", Duration::from_secs(2)))
            .await
            .unwrap();
        let err = bounded(redlock.try_acquire("belief:extreme", Duration::from_secs(2)))
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        guard.release().await.unwrap();
        // The longest ttl Redis takes, and a quarantine of centuries that only counts
        // for nodes without proof of persistence (these have none, but are up).
        let long = builder(&cluster)
            .restart_quarantine(Some(d))
            .build()
            .unwrap();
        let r = bounded(long.try_acquire("belief:extreme", Duration::from_millis(i64::MAX as u64)))
            .await;
        assert!(
            matches!(&r, Err(e) if e.is_no_quorum()),
            "a node quarantined for centuries voted: {r:?}"
        );
        let err = bounded(redlock.acquire("belief:extreme", d))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
}

/// Item 5: a grant with less than `min_validity` left is a failed attempt, undone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_with_less_than_min_validity_left_is_undone_and_retried() {
    let cluster = cluster(3).await;
    let redlock = builder(&cluster).retry_count(1).build().unwrap();
    warm(&redlock).await;
    for node in cluster.nodes() {
        node.set_latency(Duration::from_millis(25)).await.unwrap();
    }
    // 50+ ms per round trip: a 2 s ttl leaves at most ~1928 ms (2 s − 50 ms − 22 ms drift).
    let err = bounded(
        redlock
            .lock("belief:min")
            .ttl(Duration::from_secs(2))
            .min_validity(Duration::from_millis(1950))
            .acquire(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::Expired { attempts: 2, .. }), "{err}");
    // Undone on every node, long before the 2 s ttl would have freed it.
    assert_gone_within(&cluster, "belief:min", Duration::from_millis(500)).await;
    // With a smaller minimum the same grant is a success.
    let guard = bounded(
        redlock
            .lock("belief:min")
            .ttl(Duration::from_millis(200))
            .min_validity(Duration::from_millis(20))
            .acquire(),
    )
    .await
    .unwrap();
    assert!(guard.remaining_validity() >= Duration::from_millis(20) || !guard.is_valid());
    drop(guard);
    for node in cluster.nodes() {
        node.set_latency(Duration::ZERO).await.unwrap();
    }
    // A minimum no grant of the ttl could leave is refused before anything is sent.
    let err = redlock
        .lock("belief:min")
        .ttl(Duration::from_millis(100))
        .min_validity(Duration::from_millis(99))
        .acquire()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("min_validity")),
        "{err}"
    );
    let strict = builder(&cluster)
        .min_validity(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = strict
        .acquire("belief:min", Duration::from_millis(500))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Config(m) if m.contains("min_validity")),
        "{err}"
    );
}
