//! Unit tests of the builder: validation, defaults, secrets, extreme durations.

use super::*;

fn config_err(b: RedlockBuilder) -> String {
    match b.build() {
        Err(Error::Config(msg)) => msg,
        other => panic!("expected a config error, got {other:?}"),
    }
}

#[test]
fn rejects_impossible_settings_naming_them() {
    assert!(config_err(Redlock::builder()).contains("no nodes"));
    let one = || Redlock::builder().node("redis://127.0.0.1:1");
    assert!(config_err(one().drift_factor(1.0)).contains("drift_factor"));
    assert!(config_err(one().drift_factor(-0.1)).contains("drift_factor"));
    assert!(config_err(one().drift_factor(f64::NAN)).contains("drift_factor"));
    assert!(config_err(one().node_timeout(Duration::ZERO)).contains("node_timeout"));
    assert!(config_err(one().connect_timeout(Duration::ZERO)).contains("connect_timeout"));
    assert!(config_err(one().fencing(true).fence_suffix("")).contains("fence_suffix"));
    assert!(config_err(one().fence_suffix("ers")).contains("fence_suffix"));
    assert!(config_err(one().fence_suffix(":q:waiters")).contains("fence_suffix"));
    for clash in [":readers", "ers", ":x:writer", ":permit:3", "it:12", "7"] {
        assert!(
            config_err(one().fence_suffix(clash)).contains("fence_suffix"),
            "{clash}"
        );
    }
    assert!(config_err(Redlock::builder().node("http://x")).contains("node 0"));
    let dup = config_err(one().node("redis://127.0.0.1:1/"));
    assert!(dup.contains("node 1") && dup.contains("twice"), "{dup}");
}

/// Issue 21, item 4: shared fencing counters map resources to one key, refuse
/// contradictions, and are refused beside a cluster vote (one key, one slot).
#[test]
fn shared_fencing_counters_map_resources_or_are_refused() {
    let one = || Redlock::builder().node("redis://127.0.0.1:1").fencing(true);
    let r = one()
        .key_prefix("app:")
        .shared_fencing_counter("payment:", "payments")
        .build()
        .unwrap();
    assert_eq!(r.fence_key_of("payment:42"), "app:payments:fence");
    assert_eq!(r.fence_key_of("order:42"), "app:order:42:fence");
    let both = one()
        .shared_fencing_counter("p:", "a")
        .shared_fencing_counter("p:", "b");
    assert!(config_err(both).contains("both"));
    assert!(config_err(one().shared_fencing_counter("p:", "")).contains("empty counter"));
    #[cfg(feature = "cluster")]
    {
        let with_cluster = one()
            .cluster_node(["redis://127.0.0.1:2"])
            .shared_fencing_counter("p:", "p");
        assert!(config_err(with_cluster).contains("Redis Cluster vote"));
    }
}

/// Durations at the edges of what `Duration` and Redis can take, and random ones.
pub(crate) fn extreme(rng: &mut impl rand::Rng) -> Duration {
    const EDGES: [Duration; 12] = [
        Duration::ZERO,
        Duration::from_nanos(1),
        Duration::from_micros(999),
        Duration::from_millis(1),
        Duration::from_millis(2),
        Duration::from_millis(3),
        Duration::from_secs(1),
        Duration::from_secs(86_400 * 365 * 300),
        Duration::from_millis(i64::MAX as u64),
        Duration::from_millis(u64::MAX),
        Duration::from_secs(u64::MAX),
        Duration::MAX,
    ];
    match rng.random_range(0..4) {
        0 => Duration::from_nanos(rng.random()),
        1 => Duration::new(rng.random(), rng.random_range(0..1_000_000_000)),
        _ => EDGES[rng.random_range(0..EDGES.len())],
    }
}

/// Issue 11, item 3: every public duration is refused with `Error::Config` or
/// saturates; nothing derived from it panics (checked requests, backoff, deadlines).
#[test]
fn every_duration_setting_is_refused_or_saturates() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..3_000 {
        let quarantine = rng.random_bool(0.5).then(|| extreme(&mut rng));
        let b = Redlock::builder()
            .node("redis://127.0.0.1:1")
            .retry_delay(extreme(&mut rng))
            .retry_jitter(extreme(&mut rng))
            .node_timeout(extreme(&mut rng))
            .connect_timeout(extreme(&mut rng))
            .restart_quarantine(quarantine)
            .min_validity(extreme(&mut rng));
        let settings = format!("{b:?}");
        let redlock = match b.build() {
            Ok(r) => r,
            Err(Error::Config(_)) => continue,
            Err(e) => panic!("{settings}: not a config error: {e}"),
        };
        let config = &redlock.inner.config;
        let want = crate::redlock::Want {
            ttl: extreme(&mut rng),
            retries: rng.random(),
            wait: rng.random_bool(0.5).then(|| extreme(&mut rng)),
            min_validity: config.min_validity,
        };
        match redlock.check_request(&["r"], &want) {
            Ok(ms) => assert!(ms > 2 && ms <= i64::MAX as u64, "{settings}: {ms}"),
            Err(Error::Config(_)) => {}
            Err(e) => panic!("{settings}: {e}"),
        }
        let pause = crate::quorum::backoff(config.retry_delay, config.retry_jitter, &mut rng);
        assert!(pause >= config.retry_delay);
        let _ = crate::clock::instant_after(pause);
        let d = config
            .clock
            .stamp()
            .after(want.ttl)
            .before(extreme(&mut rng));
        let _ = (config.clock.left(d), config.clock.instant(d));
        let _ = want.wait.map(crate::clock::instant_after);
    }
}

#[test]
fn defaults_are_documented_values() {
    let b = RedlockBuilder::default();
    assert_eq!(b.retry_count, 10);
    assert_eq!(b.retry_delay, Duration::from_millis(200));
    assert_eq!(b.retry_jitter, Duration::from_millis(200));
    assert_eq!(b.drift_factor, 0.01);
    assert_eq!(b.node_timeout, Duration::from_millis(50));
}

#[test]
fn secrets_never_show() {
    assert_eq!(
        redact_url("redis://app:s3cret@h:6379/2"),
        "redis://app:***@h:6379/2"
    );
    assert_eq!(redact_url("redis://:s3cret@h:6379"), "redis://:***@h:6379");
    assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
    let b = Redlock::builder().node("redis://app:s3cret@127.0.0.1:1");
    assert!(!format!("{b:?}").contains("s3cret"));
    let bad = config_err(Redlock::builder().node("redis://app:s3cret@[bad"));
    assert!(!bad.contains("s3cret"), "{bad}");
    let r = Redlock::builder()
        .node("redis://app:s3cret@127.0.0.1:1")
        .build()
        .unwrap();
    assert!(!format!("{r:?}").contains("s3cret"));
}
