//! What users of the newer locks trip over: requests that ask for two kinds, a lease
//! that must say which kind and permit it keeps, and the error helpers a caller
//! reaches for.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::Duration;

use tokio_redlock::{CancellationToken, Error, LockKind};

use crate::support::*;

/// `.read().permits(2)`, `.permits(2).read()` and `.read().write()` used to give the
/// last kind asked for, silently. A request takes one kind: two are a configuration
/// error, and nothing is taken.
#[tokio::test]
async fn a_request_for_two_kinds_is_a_config_error() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let ttl = Duration::from_secs(5);
    let clashes = [
        redlock.lock("mix").ttl(ttl).read().permits(2),
        redlock.lock("mix").ttl(ttl).permits(2).read(),
        redlock.lock("mix").ttl(ttl).read().write(),
        redlock.lock("mix").ttl(ttl).permits(2).permits(3),
    ];
    for request in clashes {
        let shown = format!("{request:?}");
        let got = bounded(request.try_acquire()).await;
        match got {
            Err(e) => {
                assert!(e.is_config(), "{shown}: {e}");
                assert!(e.to_string().contains("one kind"), "{e}");
            }
            Ok(g) => panic!("{shown} took a {:?} lock", g.kind()),
        }
    }
    let with = redlock
        .lock("mix")
        .write()
        .permits(2)
        .with(|_| async {})
        .await;
    assert!(matches!(with, Err(Error::Config(_))), "{with:?}");
    let available = redlock.lock("mix").read().permits(2).available().await;
    assert!(matches!(available, Err(Error::Config(_))), "{available:?}");
    // Nothing was set anywhere.
    let mut conns = direct(&cluster).await;
    for key in ["mix", "mix:permit:0", "mix:permit:1", "mix:readers"] {
        let vals = values(&mut conns, key).await;
        assert!(vals.iter().all(Option::is_none), "{key}: {vals:?}");
    }
    // The same kind twice is one kind.
    let g = bounded(redlock.lock("mix").ttl(ttl).read().read().try_acquire())
        .await
        .unwrap();
    assert_eq!(g.kind(), LockKind::Read);
    bounded(g.release()).await.unwrap();
}

/// A lease says what it keeps: `with` and `keep_alive` used to lose a semaphore's slot.
#[tokio::test]
async fn a_lease_says_its_kind_and_permit() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let (kind, permit, token): (LockKind, Option<usize>, CancellationToken) =
        bounded(redlock.lock("gpu").permits(2).with(|lease| async move {
            (lease.kind(), lease.permit(), lease.cancellation_token())
        }))
        .await
        .unwrap();
    let slot = permit.expect("a permit's lease names its slot");
    assert!(slot < 2);
    assert_eq!(kind, LockKind::Permit(slot));
    // The re-exported type is the lease's own: no direct tokio-util dependency needed.
    drop::<CancellationToken>(token);

    let guard = bounded(redlock.lock("doc").write().acquire())
        .await
        .unwrap();
    let kept = guard.keep_alive();
    assert_eq!(kept.lease().kind(), LockKind::Write);
    assert_eq!(kept.lease().permit(), None);
    bounded(kept.release()).await.unwrap();
}

/// Issue 26, item 2: a split vote (no owner on a quorum) was reported as "locked by
/// another owner", so a job whose pods all split ran nowhere. Deterministic first: each
/// node holds a different foreign value, as simultaneous attempts leave them.
#[tokio::test]
async fn a_split_vote_is_not_a_conflict() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let ttl = Duration::from_secs(5);
    let mut conns = direct(&cluster).await;
    for (i, conn) in conns.iter_mut().enumerate() {
        set_on(conn, "split", &format!("contender-{i}"), 5_000).await;
    }
    let split = bounded(redlock.try_acquire("split", ttl))
        .await
        .unwrap_err();
    assert!(split.is_split_vote(), "{split}");
    assert!(!split.is_conflict());
    assert_eq!(split.attempts(), Some(1));
    assert!(split.to_string().contains("held by no one"), "{split}");
    // One owner on a quorum is a conflict, as documented.
    set_on(&mut conns[1], "split", "contender-0", 5_000).await;
    let held = bounded(redlock.try_acquire("split", ttl))
        .await
        .unwrap_err();
    assert!(held.is_conflict(), "{held}");
}

/// Three managers try at the same moment, round after round: a loser is told "conflict"
/// exactly when a winner holds the lock, and "split vote" when the round had none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_attempts_are_told_split_or_conflict_truthfully() {
    let cluster = cluster(3).await;
    let managers: Vec<_> = (0..3).map(|_| redlock(&cluster)).collect();
    for m in &managers {
        warm(m).await;
    }
    let ttl = Duration::from_secs(5);
    let (mut splits, mut won) = (0, 0);
    for round in 0..40 {
        let key = format!("simul:{round}");
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(3));
        let tries = managers.iter().map(|m| {
            let (m, key, barrier) = (m.clone(), key.clone(), barrier.clone());
            async move {
                barrier.wait().await;
                m.try_acquire(&key, ttl).await
            }
        });
        let results = bounded(futures::future::join_all(tries)).await;
        let winners = results.iter().filter(|r| r.is_ok()).count();
        assert!(winners <= 1);
        for r in &results {
            if let Err(e) = r {
                if winners == 1 {
                    assert!(e.is_conflict(), "round {round}, a winner holds it: {e}");
                } else {
                    assert!(e.is_split_vote(), "round {round}, nobody holds it: {e}");
                }
            }
        }
        if winners == 0 {
            splits += 1;
        } else {
            won += 1;
        }
        for r in results.into_iter().flatten() {
            bounded(r.release()).await.unwrap();
        }
    }
    eprintln!("{won} rounds won, {splits} split");
}
