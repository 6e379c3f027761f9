//! The Redlock core against real servers: acquire, conflict, quorum under node faults,
//! undo of failed attempts, acquire_many, hostile nodes, mutual exclusion under
//! contention and requests refused before anything is sent. What the owner's calls do
//! after the acquisition (release and extend, Drop, cancellation) is in `ownership.rs`;
//! retries and wake-ups of waiters are in `waiters.rs`.
//!
//! References are to the steps of the Redlock description at redis.io
//! ("Distributed Locks with Redis", section "The Redlock Algorithm").

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio_redlock::{Error, LockGuard, Redlock};

use crate::support::*;

/// The ttl of the core tests, shared with `ownership.rs` and `waiters.rs`.
pub(crate) const TTL: Duration = Duration::from_secs(10);

#[test]
fn public_types_are_send_sync() {
    fn manager<T: Clone + Send + Sync + 'static>() {}
    fn guard<T: Send + Sync>() {}
    manager::<Redlock>();
    guard::<LockGuard>();
    guard::<tokio_redlock::Lease>();
}

/// Step 2: the key is set on every node with the same random value and the ttl.
#[tokio::test]
async fn acquire_sets_value_and_ttl_on_every_node() {
    for n in [1usize, 3, 5] {
        let cluster = cluster(n).await;
        let redlock = redlock(&cluster);
        let mut conns = direct(&cluster).await;
        let guard = bounded(redlock.acquire("job:happy", TTL)).await.unwrap();
        assert_eq!(guard.resource(), "job:happy");
        assert!(guard.is_valid());
        assert!(guard.remaining_validity() <= TTL);
        assert_eq!(guard.fencing_token(), None);
        // The acquisition returns at quorum; give stragglers a moment to land.
        let conns2 = conns.clone();
        eventually("value on every node", || {
            let mut c = conns2.clone();
            async move {
                values(&mut c, "job:happy")
                    .await
                    .iter()
                    .all(Option::is_some)
            }
        })
        .await;
        let vals = values(&mut conns, "job:happy").await;
        let first = vals[0].clone().unwrap();
        assert_eq!(first.len(), 32, "128 random bits as hex");
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
        assert!(
            vals.iter().all(|v| v.as_deref() == Some(first.as_str())),
            "{vals:?}"
        );
        for pttl in pttls(&mut conns, "job:happy").await {
            assert!(pttl > 9_000 && pttl <= 10_000, "pttl {pttl} on {n} nodes");
        }
        let report = guard.release_with_report().await.unwrap();
        assert!(report.released >= redlock.quorum(), "{report:?}");
        // The release returns at quorum; the rest finish in the background.
        eventually_gone(&cluster, "job:happy").await;
    }
}

#[tokio::test]
async fn each_acquisition_gets_a_fresh_value() {
    let cluster = cluster(1).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let g = redlock.acquire("fresh", TTL).await.unwrap();
        seen.insert(values(&mut conns, "fresh").await[0].clone().unwrap());
        g.release().await.unwrap();
    }
    assert_eq!(seen.len(), 20);
}

#[tokio::test]
async fn conflict_when_held_elsewhere() {
    let cluster = cluster(3).await;
    let a = redlock(&cluster);
    let b = redlock(&cluster);
    let held = a.acquire("conflict", TTL).await.unwrap();
    let err = b.try_acquire("conflict", TTL).await.unwrap_err();
    match &err {
        Error::Conflict {
            attempts,
            held_elsewhere,
            nodes,
            ..
        } => {
            assert_eq!(*attempts, 1);
            assert!(*held_elsewhere >= 2, "{err}");
            assert_eq!(*nodes, 3);
        }
        other => panic!("expected Conflict, got {other:?}"),
    }
    assert!(
        err.to_string().contains("retry"),
        "message says what to do: {err}"
    );
    // With retries, the attempts are counted: the first and three retries. (`b` found
    // the key held a moment ago, so its first attempt already queues for wake-ups.)
    let err = b.acquire("conflict", TTL).await.unwrap_err();
    assert_eq!(err.attempts(), Some(4));
    // A manager that has not seen the key held starts queueing mid-acquisition, with an
    // immediate attempt that counts like any other: retry_count is a promise.
    let fresh = redlock(&cluster);
    let err = fresh.acquire("conflict", TTL).await.unwrap_err();
    assert_eq!(err.attempts(), Some(4));
    let quiet = builder(&cluster).wake_on_release(false).build().unwrap();
    let err = quiet.acquire("conflict", TTL).await.unwrap_err();
    assert_eq!(
        err.attempts(),
        Some(4),
        "without wake-ups: the first and three retries"
    );
    held.release().await.unwrap();
    b.try_acquire("conflict", TTL)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn minority_killed_still_locks_majority_killed_is_no_quorum() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster);
    cluster.node(0).kill().await.unwrap();
    cluster.node(1).kill().await.unwrap();
    let g = bounded(redlock.acquire("minority", TTL)).await.unwrap();
    g.release().await.unwrap();

    cluster.node(2).kill().await.unwrap();
    let err = bounded(redlock.try_acquire("majority", TTL))
        .await
        .unwrap_err();
    match &err {
        Error::NoQuorum {
            ok, failed, needed, ..
        } => {
            assert_eq!((*needed, *failed), (3, 3), "{err}");
            assert!(*ok <= 2);
        }
        other => panic!("expected NoQuorum, got {other:?}"),
    }
    // Each dead node's cause is kept, and reachable as a source.
    assert_eq!(err.node_errors().len(), 3);
    let source = std::error::Error::source(&err).expect("a node cause");
    assert!(source.to_string().starts_with("node "), "{source}");

    // Restarted nodes vote again (connections are made anew).
    for i in 0..3 {
        cluster.node(i).restart().await.unwrap();
    }
    bounded(redlock.acquire("majority", TTL))
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

/// A hanging node must not hold the others up: the decision comes at quorum.
#[tokio::test]
async fn paused_node_does_not_slow_acquisition() {
    let cluster = cluster(5).await;
    // A long node timeout makes the point: acquisition does not wait for it.
    let redlock = builder(&cluster)
        .node_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    warm(&redlock).await;
    cluster.node(4).pause().await.unwrap();
    for _ in 0..5 {
        let start = Instant::now();
        let g = bounded(redlock.acquire("paused", TTL)).await.unwrap();
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "took {:?}, waiting for the paused node",
            start.elapsed()
        );
        let start = Instant::now();
        g.release().await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
    }
    cluster.node(4).resume().await.unwrap();
}

#[tokio::test]
async fn black_holed_node_costs_at_most_node_timeout_when_needed() {
    let cluster = cluster(3).await;
    let redlock = builder(&cluster)
        .node_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    warm(&redlock).await;
    cluster.node(0).partition().await.unwrap();
    cluster.node(1).partition().await.unwrap();
    let start = Instant::now();
    let err = bounded(redlock.try_acquire("holed", TTL))
        .await
        .unwrap_err();
    assert!(err.is_no_quorum() && err.is_timeout(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
}

/// Step 5: a failed attempt unlocks every node, also ones where it did set the key.
#[tokio::test]
async fn failed_attempts_leave_nothing_behind() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    // Another owner holds the key on nodes 0..3 only.
    for c in conns.iter_mut().take(3) {
        set_on(c, "partial", "someone-else", 60_000).await;
    }
    let err = redlock.acquire("partial", TTL).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(err.attempts(), Some(4));
    let vals = values(&mut conns, "partial").await;
    assert_eq!(vals[..3].to_vec(), vec![Some("someone-else".to_owned()); 3]);
    // Nodes 3 and 4 took our SET in each attempt; the undo removes it every time (for
    // a node that had not answered when the attempt was decided, right after, in the
    // background: on its connection the undo follows the SET).
    let conns2 = conns.clone();
    eventually("our SETs undone on nodes 3 and 4", || {
        let mut c = conns2.clone();
        async move {
            values(&mut c[3..], "partial")
                .await
                .iter()
                .all(Option::is_none)
        }
    })
    .await;
}

#[tokio::test]
async fn acquire_many_is_all_or_nothing() {
    let cluster = cluster(3).await;
    let a = redlock(&cluster);
    let b = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    let held = a.acquire("acct:2", TTL).await.unwrap();
    let err = b
        .acquire_many(&["acct:1", "acct:2"], TTL)
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(values(&mut conns, "acct:1")
        .await
        .iter()
        .all(Option::is_none));
    held.release().await.unwrap();

    let both = b.acquire_many(&["acct:1", "acct:2"], TTL).await.unwrap();
    assert_eq!(both.resources(), ["acct:1", "acct:2"]);
    // Both keys stand together on a quorum (a node still finishing the holder's
    // release may have refused the pair: all or nothing there too).
    let one = values(&mut conns, "acct:1").await;
    let two = values(&mut conns, "acct:2").await;
    let both_on = one
        .iter()
        .zip(&two)
        .filter(|(a, b)| a.is_some() && b.is_some())
        .count();
    assert!(both_on >= 2, "{one:?} {two:?}");
    assert!(
        one.iter()
            .zip(&two)
            .all(|(a, b)| a.is_some() == b.is_some()),
        "never one without the other: {one:?} {two:?}"
    );
    assert!(a
        .try_acquire("acct:1", TTL)
        .await
        .unwrap_err()
        .is_conflict());
    both.release().await.unwrap();
    eventually_gone(&cluster, "acct:1").await;
    eventually_gone(&cluster, "acct:2").await;

    let dup = b.acquire_many(&["x", "x"], TTL).await.unwrap_err();
    assert!(matches!(dup, Error::Config(_)), "{dup}");
}

/// Spawns a TCP server on loopback that answers every connection with `reply` and
/// then keeps it open; returns its URL.
async fn fake_node(reply: &'static [u8]) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                loop {
                    use tokio::io::AsyncReadExt;
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {
                            if sock.write_all(reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    format!("redis://127.0.0.1:{port}")
}

#[tokio::test]
async fn a_node_that_is_not_redis_is_a_failed_vote() {
    let cluster = cluster(3).await;
    let garbage = fake_node(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    // 3 real + 1 garbage: quorum 3 is still reachable.
    let redlock = builder(&cluster).node(&garbage).build().unwrap();
    let g = bounded(redlock.acquire("garbage", TTL)).await.unwrap();
    g.release().await.unwrap();
    // 1 real + 2 garbage: no quorum, and the causes say why.
    let other = fake_node(b"\x00\x01\x02garbage\r\n").await;
    let redlock = Redlock::builder()
        .node(&cluster.urls()[0])
        .node(&garbage)
        .node(&other)
        .retry_count(1)
        .retry_delay(Duration::from_millis(5))
        .node_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = bounded(redlock.acquire("garbage", TTL)).await.unwrap_err();
    assert!(err.is_no_quorum(), "{err}");
    assert_eq!(err.node_errors().len(), 2, "{err}");
}

/// Mutual exclusion under contention: 16 clients, one resource, a shared flag that
/// must never be seen set by a second holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_contending_clients_never_overlap() {
    let cluster = cluster(5).await;
    let inside = Arc::new(AtomicBool::new(false));
    let overlaps = Arc::new(AtomicUsize::new(0));
    let total = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let redlock = builder(&cluster)
            .retry_count(1_000)
            .retry_delay(Duration::from_millis(2))
            .retry_jitter(Duration::from_millis(8))
            .build()
            .unwrap();
        let (inside, overlaps, total) = (inside.clone(), overlaps.clone(), total.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = 0;
            while Instant::now() < deadline {
                let Ok(guard) = redlock.acquire("contended", Duration::from_secs(5)).await else {
                    continue;
                };
                if inside.swap(true, Ordering::SeqCst) {
                    overlaps.fetch_add(1, Ordering::SeqCst);
                }
                tokio::task::yield_now().await;
                assert!(guard.is_valid());
                inside.store(false, Ordering::SeqCst);
                if let Err(e) = guard.release().await {
                    panic!("release: {e}");
                }
                total.fetch_add(1, Ordering::SeqCst);
                mine += 1;
            }
            mine
        }));
    }
    for t in tasks {
        bounded(t).await.unwrap();
    }
    assert_eq!(overlaps.load(Ordering::SeqCst), 0);
    assert!(total.load(Ordering::SeqCst) >= 16, "the lock changed hands");
}

#[tokio::test]
async fn bad_requests_are_config_errors() {
    let cluster = cluster(1).await;
    let redlock = redlock(&cluster);
    for (res, ttl) in [
        ("", TTL),
        ("x", Duration::from_millis(2)),
        ("x", Duration::ZERO),
    ] {
        let err = redlock.acquire(res, ttl).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err}");
    }
    let long = "r".repeat(70_000);
    assert!(matches!(
        redlock.acquire(&long, TTL).await,
        Err(Error::Config(_))
    ));
    // Any bytes that form a string are a fine name, and so is a long one under the limit.
    let odd = "payment:\u{0}:ünïcode:🔒";
    redlock
        .acquire(odd, TTL)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
    let big = "k".repeat(10_000);
    redlock
        .acquire(&big, TTL)
        .await
        .unwrap()
        .release()
        .await
        .unwrap();
}

#[tokio::test]
async fn nodes_down_at_build_time_are_fine() {
    // Nothing listens yet: build succeeds, acquisition fails with NoQuorum.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let redlock = Redlock::builder()
        .node(format!("redis://127.0.0.1:{port}"))
        .retry_count(0)
        .build()
        .unwrap();
    let err = redlock.acquire("down", TTL).await.unwrap_err();
    assert!(err.is_no_quorum(), "{err}");
    assert!(err.to_string().contains("reachable"), "{err}");
}
