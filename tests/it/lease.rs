//! Keep-alive leases against real servers: `with_lock` extends past many TTLs while others
//! are refused, releases on every way out (end, panic, cancellation), gives up and drops
//! the work no later than the last validity when a majority of nodes is lost, honours its
//! caps, and the guard-level `keep_alive` does the same.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio_redlock::{Error, Lease, LeaseOptions, LostReason, Redlock};
use tokio_redlock_harness::Cluster;

use crate::support::*;

/// The ttl of the other client's probing attempts (they never succeed while the lock is kept).
const SHORT_TTL: Duration = Duration::from_millis(300);
/// A ttl far longer than any test waits: a key gone before it was released, not expired.
const LONG_TTL: Duration = Duration::from_secs(10);
/// How late after the promised instant a dropped future may be observed, beyond the
/// lateness of a probe timer on the same runtime (see [`probe_final_validity`]): tokio's
/// timer ticks in whole milliseconds, and the keep-alive and `with_lock` tasks run one
/// after the other. Quiet, the work is dropped about 1 ms *before* `valid_until`.
const TIMER_SLACK: Duration = Duration::from_millis(5);
/// A ttl for the tests that must keep a lock through several ttls: long enough that a
/// load spike on a shared 2-core CI box does not starve two extensions in a row.
const KEPT_TTL: Duration = Duration::from_millis(800);

/// Records the instant it is dropped: put inside the user's future, it tells when
/// `with_lock` dropped that future.
struct DropClock(Arc<Mutex<Option<Instant>>>);

impl Drop for DropClock {
    fn drop(&mut self) {
        *self.0.lock().unwrap() = Some(Instant::now());
    }
}

/// Whether a quorum of nodes holds `key` (read straight from the servers).
async fn held_on_quorum(cluster: &Cluster, key: &str) -> bool {
    let mut conns = direct(cluster).await;
    let held = values(&mut conns, key)
        .await
        .iter()
        .filter(|v| v.is_some())
        .count();
    held > cluster.len() / 2
}

/// A second client, patient enough to get an answer from every node under load: its
/// answer must be a conflict, not a timeout.
fn other_client(cluster: &Cluster) -> Redlock {
    builder(cluster)
        .node_timeout(Duration::from_secs(1))
        .build()
        .expect("valid config")
}

/// Asserts that `other` is refused with a conflict for `resource`, right now.
async fn assert_refused(other: &Redlock, resource: &str) {
    match bounded(other.try_acquire(resource, SHORT_TTL)).await {
        Err(e) if e.is_conflict() => {}
        Err(e) => panic!("expected a conflict, got: {e}"),
        Ok(_) => panic!("another client acquired `{resource}` while it was kept alive"),
    }
}

#[tokio::test]
async fn with_lock_extends_past_several_ttls_while_others_are_refused() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let other = other_client(&cluster);
    let work = KEPT_TTL * 3;
    let (leases_tx, leases_rx) = oneshot::channel::<Lease>();
    let other2 = other.clone();
    let refusals = bounded(
        redlock.with_lock("lease:extend", KEPT_TTL, |lease| async move {
            let end = Instant::now() + work;
            let mut refusals = 0;
            // The "work": for 3 ttls, keep checking that nobody else gets in.
            while Instant::now() < end {
                assert!(lease.is_held(), "lease dropped while the nodes are healthy");
                assert_refused(&other2, "lease:extend").await;
                refusals += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            leases_tx.send(lease).unwrap();
            refusals
        }),
    )
    .await
    .expect("with_lock ends with the work's output");
    let lease = leases_rx.await.unwrap();
    // 3 ttls of work: without extensions the lock would have run out after one;
    // extending every third of the ttl makes at least 3 (about 8).
    assert!(lease.extensions() >= 3, "{} extensions", lease.extensions());
    assert!(refusals >= 10, "only {refusals} checks were made");
    // Released when the work ended, not left to expire.
    assert_gone_within(&cluster, "lease:extend", KEPT_TTL / 2).await;
    assert!(!lease.is_held());
    assert_eq!(lease.lost_reason(), None);
    // And it is free for the next holder.
    let next = bounded(other.try_acquire("lease:extend", SHORT_TTL))
        .await
        .unwrap();
    bounded(next.release()).await.unwrap();
}

#[tokio::test]
async fn with_lock_releases_when_the_work_panics() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .with_lock("lease:panic", LONG_TTL, |_lease| async move {
                    entered_tx.send(()).unwrap();
                    let _ = go_rx.await;
                    panic!("the work failed");
                })
                .await
        }
    });
    bounded(entered_rx).await.unwrap();
    assert!(held_on_quorum(&cluster, "lease:panic").await);
    go_tx.send(()).unwrap();
    let err = bounded(task)
        .await
        .expect_err("the panic reaches the JoinHandle");
    assert!(err.is_panic());
    // Far before the 10 s ttl: released, not expired.
    assert_gone_within(&cluster, "lease:panic", Duration::from_secs(2)).await;
}

#[tokio::test]
async fn with_lock_releases_when_cancelled() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let mut call = Box::pin(
        redlock.with_lock("lease:cancel", LONG_TTL, |_lease| async move {
            entered_tx.send(()).unwrap();
            std::future::pending::<()>().await;
        }),
    );
    tokio::select! {
        r = &mut call => panic!("with_lock ended on its own: {r:?}"),
        r = entered_rx => r.unwrap(),
    }
    assert!(held_on_quorum(&cluster, "lease:cancel").await);
    // A timeout around the call is the cancellation: it gives up and drops the future.
    let cut = tokio::time::timeout(Duration::from_millis(50), &mut call).await;
    assert!(cut.is_err(), "the work never ends on its own");
    drop(call);
    assert_gone_within(&cluster, "lease:cancel", Duration::from_secs(2)).await;
}

/// Sleeps until the lease's `valid_until` that turns out to be its last one, and returns
/// it with how late this timer woke. On a loaded machine the OS may not run the test's
/// thread for tens of ms; that lateness is the runtime's, not the crate's, and the same
/// thread runs the keep-alive, so it is added to the slack allowed to the crate.
async fn probe_final_validity(lease: Lease) -> (Instant, Duration) {
    loop {
        let until = lease.valid_until();
        tokio::time::sleep_until(until.into()).await;
        // No extension is made after the validity ends, so an unchanged value is final.
        if lease.valid_until() == until {
            return (until, Instant::now().saturating_duration_since(until));
        }
    }
}

/// What a `with_lock` whose nodes fail mid-work came to.
struct LostRun {
    result: Result<(), Error>,
    lease: Lease,
    dropped_at: Instant,
    fault_at: Instant,
    returned_at: Instant,
    lost_seen_at: Instant,
    /// The last `valid_until`, and how late a timer set for it woke.
    probe: (Instant, Duration),
}

/// Runs `with_lock` with a never-ending work on 5 nodes, and once it has extended, applies
/// `fault` to 3 of them.
async fn lose_majority_mid_work(cluster: &Cluster, resource: &str, partition: bool) -> LostRun {
    let redlock = redlock(cluster);
    let dropped = Arc::new(Mutex::new(None));
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let call = tokio::spawn({
        let dropped = Arc::clone(&dropped);
        let resource = resource.to_owned();
        async move {
            let r = redlock
                .with_lock(&resource, KEPT_TTL, |lease| async move {
                    let _clock = DropClock(dropped);
                    lease_tx.send(lease).unwrap();
                    std::future::pending::<()>().await;
                })
                .await;
            (r, Instant::now())
        }
    });
    let lease = bounded(lease_rx).await.unwrap();
    let watcher = tokio::spawn({
        let lease = lease.clone();
        async move {
            lease.lost().await;
            Instant::now()
        }
    });
    // Let it prove it can keep the lock before the fault.
    eventually("a first extension", || {
        let n = lease.extensions();
        async move { n >= 1 }
    })
    .await;
    let probe = tokio::spawn(probe_final_validity(lease.clone()));
    let fault_at = Instant::now();
    for i in 0..3 {
        if partition {
            cluster.node(i).partition().await.unwrap();
        } else {
            cluster.node(i).kill().await.unwrap();
        }
    }
    let (result, returned_at) = bounded(call).await.unwrap();
    let lost_seen_at = bounded(watcher).await.unwrap();
    let dropped_at = dropped.lock().unwrap().expect("the work was dropped");
    let probe = bounded(probe).await.unwrap();
    LostRun {
        probe,
        result,
        lease,
        dropped_at,
        fault_at,
        returned_at,
        lost_seen_at,
    }
}

fn assert_lost_in_time(run: &LostRun) {
    match &run.result {
        Err(Error::LockLost { reason, .. }) => {
            assert_eq!(*reason, LostReason::ExtensionFailed, "{:?}", run.result)
        }
        other => panic!("expected LockLost, got {other:?}"),
    }
    let last_valid = run.lease.valid_until();
    let (probed, lateness) = run.probe;
    assert_eq!(probed, last_valid);
    let slack = TIMER_SLACK + lateness;
    // The work ran until the lock could no longer be kept, and not a moment past the
    // validity the crate had promised (up to the timer's slack and the OS's lateness).
    assert!(run.dropped_at > run.fault_at);
    assert!(
        run.dropped_at <= last_valid + slack,
        "work dropped {:?} after the last valid_until (runtime {lateness:?} late)",
        run.dropped_at.saturating_duration_since(last_valid)
    );
    assert!(run.lost_seen_at <= last_valid + slack);
    assert!(run.returned_at >= run.dropped_at);
    assert!(!run.lease.is_held());
    assert_eq!(run.lease.lost_reason(), Some(LostReason::ExtensionFailed));
}

#[tokio::test]
async fn killing_a_majority_mid_work_loses_the_lock_within_its_validity() {
    let cluster = cluster(5).await;
    let run = lose_majority_mid_work(&cluster, "lease:kill", false).await;
    assert_lost_in_time(&run);
}

#[tokio::test]
async fn partitioning_a_majority_mid_work_loses_the_lock_within_its_validity() {
    let cluster = cluster(5).await;
    let run = lose_majority_mid_work(&cluster, "lease:partition", true).await;
    assert_lost_in_time(&run);
    // The surviving minority's key goes with the background release.
    for i in 0..3 {
        cluster.node(i).heal().await.unwrap();
    }
    eventually_gone(&cluster, "lease:partition").await;
}

#[tokio::test]
async fn extension_cap_makes_the_lease_lost_at_its_validity() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let opts = LeaseOptions::default().max_extensions(Some(2));
    let result = bounded(
        redlock
            .lock("lease:cap-count")
            .ttl(KEPT_TTL)
            .lease_options(opts)
            .with(|lease| async move {
                lease_tx.send(lease).unwrap();
                std::future::pending::<()>().await;
            }),
    )
    .await;
    let lease = lease_rx.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::LockLost {
                reason: LostReason::CapReached,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(lease.extensions(), 2);
    assert_eq!(lease.lost_reason(), Some(LostReason::CapReached));
    eventually_gone(&cluster, "lease:cap-count").await;
}

#[tokio::test]
async fn hold_time_cap_ends_the_lease_before_the_cap() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let cap = Duration::from_millis(2_000);
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let opts = LeaseOptions::default().max_hold(Some(cap));
    let started = Instant::now();
    let result = bounded(
        redlock
            .lock("lease:cap-hold")
            .ttl(KEPT_TTL)
            .lease_options(opts)
            .with(|lease| async move {
                lease_tx.send(lease).unwrap();
                std::future::pending::<()>().await;
            }),
    )
    .await;
    let ended = Instant::now();
    let lease = lease_rx.await.unwrap();
    assert!(
        matches!(
            result,
            Err(Error::LockLost {
                reason: LostReason::CapReached,
                ..
            })
        ),
        "{result:?}"
    );
    // It was kept alive past one ttl, and never promised past the cap.
    assert!(lease.extensions() >= 1);
    assert!(lease.valid_until() <= started + cap);
    // The promise never went past the cap (deterministic), and the lease ended with it:
    // one more extension would have run a whole ttl past it (on a loaded box the OS may
    // still delay the ending itself by some ms, so that is the margin allowed).
    assert!(
        ended < started + cap + KEPT_TTL / 2,
        "held {:?}",
        ended - started
    );
    eventually_gone(&cluster, "lease:cap-hold").await;
}

#[tokio::test]
async fn keep_alive_on_a_guard_extends_and_stops_after_release() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let other = other_client(&cluster);
    let guard = bounded(redlock.acquire("lease:guard", KEPT_TTL))
        .await
        .unwrap();
    let kept = guard.keep_alive();
    let lease = kept.lease().clone();
    // Kept alive for 3 ttls while the other client is refused throughout.
    let end = Instant::now() + KEPT_TTL * 3;
    while Instant::now() < end {
        assert!(lease.is_held());
        assert_refused(&other, "lease:guard").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(lease.extensions() >= 2, "{} extensions", lease.extensions());
    bounded(kept.release()).await.unwrap();
    assert!(!lease.is_held());
    // `lost()` wakes its waiters on release too, without a loss reason.
    bounded(lease.lost()).await;
    assert_eq!(lease.lost_reason(), None);
    assert_gone_within(&cluster, "lease:guard", KEPT_TTL / 2).await;
    let count = lease.extensions();
    // Watch for two ttls: a keep-alive still running would have extended (and re-set
    // nothing, but counted) at least twice by then.
    let mut conns = direct(&cluster).await;
    let watch_end = Instant::now() + KEPT_TTL * 2;
    while Instant::now() < watch_end {
        assert_eq!(lease.extensions(), count, "extended after release");
        assert!(values(&mut conns, "lease:guard")
            .await
            .iter()
            .all(Option::is_none));
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

#[tokio::test]
async fn keep_alive_on_a_guard_signals_loss() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let kept = bounded(redlock.acquire("lease:guard-lost", KEPT_TTL))
        .await
        .unwrap()
        .keep_alive();
    let lease = kept.lease().clone();
    eventually("a first extension", || {
        let n = lease.extensions();
        async move { n >= 1 }
    })
    .await;
    let probe = tokio::spawn(probe_final_validity(lease.clone()));
    cluster.node(0).kill().await.unwrap();
    cluster.node(1).kill().await.unwrap();
    bounded(lease.lost()).await;
    let seen = Instant::now();
    let (last_valid, lateness) = bounded(probe).await.unwrap();
    assert_eq!(last_valid, lease.valid_until());
    assert!(
        seen <= last_valid + TIMER_SLACK + lateness,
        "lost seen {:?} after the last valid_until (runtime {lateness:?} late)",
        seen.saturating_duration_since(last_valid)
    );
    assert!(!lease.is_held());
    assert_eq!(lease.lost_reason(), Some(LostReason::ExtensionFailed));
    let err = bounded(kept.release()).await.unwrap_err();
    assert!(err.is_lock_lost(), "{err}");
}

#[tokio::test]
async fn dropping_a_kept_guard_releases() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let kept = bounded(redlock.acquire("lease:guard-drop", LONG_TTL))
        .await
        .unwrap()
        .keep_alive();
    let lease = kept.lease().clone();
    assert!(held_on_quorum(&cluster, "lease:guard-drop").await);
    drop(kept);
    assert!(!lease.is_held());
    assert_gone_within(&cluster, "lease:guard-drop", Duration::from_secs(2)).await;
}
