//! What a guard or lease believes is true on the nodes: regression tests for the ways a
//! review found to break that (shorter extensions, keep-alive off the runtime, extreme
//! durations, minimum validity), and for the liveness holes around it (ghost locks after
//! a connection flap, attempts past `retry_count`, stalls behind a silent node, waiting
//! for the wrong key, auxiliary key collisions).
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio_redlock::{Error, LeaseOptions, Redlock};

use crate::support::*;

/// A free loopback port with nothing listening on it: connecting is refused at once.
fn refused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    format!("redis://127.0.0.1:{port}")
}

/// Which nodes (directly, past the proxies) hold `key`, and with which value.
async fn holders(cluster: &tokio_redlock_harness::Cluster, key: &str) -> Vec<Option<String>> {
    let mut conns = direct(cluster).await;
    values(&mut conns, key).await
}

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

/// Item 6: a request swallowed by a partition and sent again after the heal must not
/// land after the same owner's release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ghost_lock_after_a_partition_heals_within_the_node_timeout() {
    let cluster = cluster(5).await;
    let timeout = Duration::from_millis(800);
    let redlock = builder(&cluster).node_timeout(timeout).build().unwrap();
    warm(&redlock).await;
    for round in 0..3 {
        cluster.node(3).partition().await.unwrap();
        cluster.node(4).partition().await.unwrap();
        for i in 0..2 {
            let key = format!("belief:flap:{round}:{i}");
            let guard = bounded(redlock.acquire(&key, Duration::from_secs(60)))
                .await
                .unwrap();
            guard.release().await.unwrap();
        }
        // Well within the node timeout: the swallowed requests are sent again.
        cluster.node(3).heal().await.unwrap();
        cluster.node(4).heal().await.unwrap();
        for i in 0..2 {
            let key = format!("belief:flap:{round}:{i}");
            // Released: gone from every node once the re-sent requests are done (node
            // timeout + slack), not after the 60 s ttl.
            assert_gone_within(&cluster, &key, timeout * 2 + Duration::from_secs(1)).await;
        }
    }
    // And with two other nodes cut off, the healed ones vote for a new owner.
    cluster.node(0).partition().await.unwrap();
    cluster.node(1).partition().await.unwrap();
    let guard = bounded(redlock.try_acquire("belief:flap:0:0", Duration::from_secs(5))).await;
    assert!(guard.is_ok(), "{guard:?}");
    cluster.clear_faults().await.unwrap();
}

/// Item 6, without any fault: the undo of a failed first attempt must not overtake the
/// SET still waiting for the new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_attempt_leaves_nothing_on_the_real_nodes() {
    let cluster = cluster(2).await;
    for run in 0..6 {
        // 3 of 5 nodes refuse connections: every attempt fails fast, while the SETs to
        // the two real nodes still wait for their first connection.
        let mut urls = cluster.urls();
        urls.extend((0..3).map(|_| refused_url()));
        let fresh = Redlock::builder()
            .nodes(urls)
            .retry_count(0)
            .node_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        let key = format!("belief:fresh:{run}");
        let err = bounded(fresh.acquire(&key, Duration::from_secs(30)))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
        assert_gone_within(&cluster, &key, Duration::from_secs(2)).await;
    }
}

/// How many attempts on `key` reached node 0 since the last call: the distinct owner
/// values in the acquire requests of the slow log, which logs every command (a script's
/// own commands too), and each attempt has a fresh value.
async fn attempts_on_node0(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> usize {
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(10_000)
        .query_async(conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(conn)
        .await
        .unwrap();
    let text = |v: &redis::Value| match v {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        other => format!("{other:?}"),
    };
    let mut values = std::collections::HashSet::new();
    for entry in &log {
        let redis::Value::Array(fields) = entry else {
            continue;
        };
        let Some(redis::Value::Array(args)) = fields.get(3) else {
            continue;
        };
        let args: Vec<String> = args.iter().map(text).collect();
        let at = |i: usize| args.get(i).map(String::as_str);
        match at(0).map(str::to_ascii_uppercase).as_deref() {
            // SET key value NX PX ttl (alone, or inside a script)
            Some("SET") if at(1) == Some(key) && at(3) == Some("NX") => {
                values.insert(args[2].clone());
            }
            _ => {}
        }
    }
    values.len()
}

/// Item 7: `retry_count` is a promise, also with wake-ups and the queue join: counted
/// on the node, not only in the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_count_bounds_the_attempts_made_and_reported() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let guard = bounded(holder.acquire("belief:retries", Duration::from_secs(60)))
        .await
        .unwrap();
    let mut node0 = direct(&cluster).await.remove(0);
    for (k, v) in [
        ("slowlog-log-slower-than", "0"),
        ("slowlog-max-len", "10000"),
    ] {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(k)
            .arg(v)
            .query_async(&mut node0)
            .await
            .unwrap();
    }
    let waiter = |retries| {
        builder(&cluster)
            .retry_count(retries)
            .retry_delay(Duration::from_millis(5))
            .retry_jitter(Duration::ZERO)
            .build()
            .unwrap()
    };
    // Loads the scripts first: a NOSCRIPT answer and its re-send would count twice.
    let _ = bounded(waiter(1).acquire("belief:retries", Duration::from_secs(5))).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    attempts_on_node0(&mut node0, "belief:retries").await;
    for retries in [0u32, 1, 2, 5] {
        let err = bounded(waiter(retries).acquire("belief:retries", Duration::from_secs(5)))
            .await
            .unwrap_err();
        assert!(err.is_conflict(), "{err}");
        assert_eq!(
            err.attempts(),
            Some(retries + 1),
            "retry_count({retries}): {err}"
        );
        // Stragglers of the last attempt may still be on their way to node 0.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let made = attempts_on_node0(&mut node0, "belief:retries").await;
        assert_eq!(
            made,
            retries as usize + 1,
            "retry_count({retries}) made {made} attempts"
        );
    }
    // The per-call form keeps the same promise (from another manager: the holder's own
    // tasks would wait for it locally, see tests/it/local.rs).
    let err = bounded(waiter(10).lock("belief:retries").retries(2).acquire())
        .await
        .unwrap_err();
    assert_eq!(err.attempts(), Some(3), "{err}");
    guard.release().await.unwrap();
}

/// Item 7: a fenced manager with a cold counter cache learns the counter without
/// spending an attempt on it: `try_acquire` of a free lock still succeeds at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_fencing_round_does_not_spend_the_attempt_budget() {
    let cluster = cluster(3).await;
    let first = builder(&cluster).fencing(true).build().unwrap();
    for _ in 0..3 {
        bounded(first.acquire("belief:fenced", Duration::from_secs(5)))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let cold = builder(&cluster).fencing(true).build().unwrap();
    let guard = bounded(cold.try_acquire("belief:fenced", Duration::from_secs(5)))
        .await
        .unwrap();
    assert_eq!(guard.attempts(), 1);
    assert!(
        guard.fencing_token() > Some(3),
        "{:?}",
        guard.fencing_token()
    );
    guard.release().await.unwrap();
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
