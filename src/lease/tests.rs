//! Unit tests of the keep-alive that need no server: extreme settings, suspend, no runtime.

use super::*;
use crate::redlock::Redlock;

/// A guard made from its parts, on a manager whose only node refuses connections:
/// every extension fails at once.
fn unreachable_guard(redlock: &Redlock, ttl: Duration, valid_for: Duration) -> LockGuard {
    LockGuard::new(
        Arc::from(vec!["r".to_owned()]),
        redlock.inner.config.clock.stamp().after(valid_for),
        ttl,
        None,
        crate::guard::Held {
            inner: Arc::clone(&redlock.inner),
            keys: Arc::from(vec!["r".to_owned()]),
            value: Arc::from("v"),
            handle: tokio::runtime::Handle::try_current().ok(),
            kind: crate::LockKind::Exclusive,
            hold: None,
            _holding: crate::metrics::Holding::start("all"),
        },
    )
}

/// Issue 11, item 3: the keep-alive runs over extreme ttls and options without a
/// panic, and a lease it cannot keep is declared lost in time, never left "held".
#[tokio::test]
async fn a_keep_alive_over_extreme_settings_never_panics_and_ends_lost() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let redlock = Redlock::builder()
        .node("redis://127.0.0.1:1")
        .node_timeout(Duration::from_millis(5))
        .build()
        .unwrap();
    let mut leases = Vec::new();
    for _ in 0..64 {
        let options = LeaseOptions::default()
            .extend_after(f64::from_bits(rng.random()))
            .max_hold(
                rng.random_bool(0.7)
                    .then(|| crate::builder::tests::extreme(&mut rng)),
            )
            .max_extensions(rng.random_bool(0.5).then(|| rng.random()));
        assert!((0.05..=0.9).contains(&options.extend_after), "{options:?}");
        let ttl = crate::builder::tests::extreme(&mut rng);
        let mut guard = unreachable_guard(&redlock, ttl, Duration::from_millis(30));
        guard.set_options(options);
        let kept = guard.keep_alive();
        leases.push((kept, options, ttl));
    }
    for (kept, options, ttl) in leases {
        let lease = kept.lease().clone();
        tokio::time::timeout(Duration::from_secs(5), lease.lost())
            .await
            .unwrap_or_else(|_| panic!("never lost: {options:?}, ttl {ttl:?}"));
        assert!(!lease.is_held());
        assert!(lease.lost_reason().is_some(), "{options:?}, ttl {ttl:?}");
        let err = kept.release().await.unwrap_err();
        assert!(err.is_lock_lost(), "{err}");
    }
}

/// Issue 11, item 4: a suspend shows on the guard and the lease at once, measured
/// on the injected clock that stands for `CLOCK_BOOTTIME`.
#[tokio::test]
async fn a_suspend_ends_the_validity_of_guard_and_lease() {
    let (clock, at) = crate::clock::Clock::manual();
    let redlock = Redlock::builder()
        .node("redis://127.0.0.1:1")
        .clock(clock)
        .build()
        .unwrap();
    let mut guard = unreachable_guard(&redlock, Duration::from_secs(30), Duration::from_secs(10));
    let promised = guard.valid_until();
    assert!(guard.is_valid());
    *crate::sync::lock(&at) += Duration::from_secs(4);
    assert!(guard.remaining_validity() <= Duration::from_secs(6));
    // (The manual clock stands still between reads; `Instant` does not.)
    let slack = Duration::from_millis(100);
    assert!(guard.valid_until() <= promised - Duration::from_secs(4) + slack);
    guard.set_options(LeaseOptions::default().max_extensions(Some(0)));
    let kept = guard.keep_alive();
    let lease = kept.lease().clone();
    assert!(lease.is_held());
    *crate::sync::lock(&at) += Duration::from_secs(7);
    // Instant moved on by microseconds; the boot clock by 11 s, past the 10 s.
    assert!(
        !lease.is_held(),
        "held after a suspend longer than its validity"
    );
    assert_eq!(lease.remaining_validity(), Duration::ZERO);
    assert!(lease.valid_until() <= Instant::now());
    drop(kept);
}

#[test]
fn keep_alive_without_a_runtime_neither_panics_nor_holds_past_validity() {
    // No server and no runtime: the guard is made straight from its parts.
    let redlock = Redlock::builder()
        .node("redis://127.0.0.1:1")
        .build()
        .unwrap();
    let guard = LockGuard::new(
        Arc::from(vec!["r".to_owned()]),
        redlock
            .inner
            .config
            .clock
            .stamp()
            .after(Duration::from_millis(20)),
        Duration::from_millis(30),
        None,
        crate::guard::Held {
            inner: Arc::clone(&redlock.inner),
            keys: Arc::from(vec!["r".to_owned()]),
            value: Arc::from("v"),
            handle: None,
            kind: crate::LockKind::Exclusive,
            hold: None,
            _holding: crate::metrics::Holding::start("all"),
        },
    );
    let kept = guard.keep_alive();
    let lease = kept.lease().clone();
    assert!(lease.is_held());
    std::thread::sleep(Duration::from_millis(25));
    assert!(
        !lease.is_held(),
        "held past its validity with nothing extending it"
    );
    drop(kept);
}
