//! Retry timing (API.md, third round, "Retry timing"): at most n + 1
//! attempts, and when no release wakes the waiter, consecutive attempts start at least
//! `retry_delay` apart. A release still wakes a waiter at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_redlock::{Error, LockGuard, Redlock};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::support::*;

const TTL: Duration = Duration::from_secs(30);
const DELAY: Duration = Duration::from_millis(50);
const JITTER: Duration = Duration::from_millis(10);

/// Records when the crate's `attempt starts` events fire on this thread.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<Vec<Instant>>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Starts {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        if message.0 == "attempt starts" && event.metadata().target().starts_with("tokio_redlock") {
            self.0.lock().unwrap().push(Instant::now());
        }
    }
}

/// Runs `fut` with this thread's tracing going to a [`Starts`] (the tests run on a
/// current-thread runtime, so the acquisition's own events fire here); returns its
/// output, how long it took and when each attempt started.
async fn timed<T>(fut: impl std::future::Future<Output = T>) -> (T, Duration, Vec<Instant>) {
    let starts = Starts::default();
    let subscriber = tracing_subscriber::registry().with(starts.clone());
    let _default = tracing::subscriber::set_default(subscriber);
    let start = Instant::now();
    let out = bounded(fut).await;
    let took = start.elapsed();
    let seen = starts.0.lock().unwrap().clone();
    (out, took, seen)
}

/// The waiting manager: 2 retries, 50 ms apart, plus up to 10 ms of jitter.
fn patient(cluster: &tokio_redlock_harness::Cluster) -> Redlock {
    builder(cluster)
        .retry_count(2)
        .retry_delay(DELAY)
        .retry_jitter(JITTER)
        .build()
        .unwrap()
}

/// Three attempts, reported as three, at least two delays long, each start at least
/// `retry_delay` after the one before.
fn assert_spread(what: &str, result: Result<LockGuard, Error>, took: Duration, starts: &[Instant]) {
    let err = result.expect_err("the lock is held elsewhere");
    assert!(err.is_conflict(), "{what}: {err}");
    assert_eq!(err.attempts(), Some(3), "{what}: {err}");
    assert_eq!(starts.len(), 3, "{what}: attempts traced");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps.iter().all(|g| *g >= DELAY),
        "{what}: attempts must start at least {DELAY:?} apart: {gaps:?}"
    );
    assert!(took >= DELAY * 2, "{what}: took {took:?}");
}

#[tokio::test]
async fn exclusive_attempts_start_a_retry_delay_apart() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let _held = holder.acquire("busy", TTL).await.unwrap();
    let waiter = patient(&cluster);
    warm(&waiter).await;
    // The second call finds the key marked contended and queues on its first attempt:
    // both paths keep the pauses.
    for call in ["first", "contended"] {
        let (result, took, starts) = timed(waiter.acquire("busy", TTL)).await;
        assert_spread(call, result, took, &starts);
    }
    // Per-call retries follow the same rule.
    let (result, took, starts) = timed(waiter.lock("busy").ttl(TTL).retries(2).acquire()).await;
    assert_spread("retries(2)", result, took, &starts);
}

/// With a wait budget instead of retries: however many attempts fit, none follows the
/// one before sooner than the delay.
#[tokio::test]
async fn a_wait_budget_keeps_the_pauses() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let _held = holder.acquire("budget", TTL).await.unwrap();
    let waiter = patient(&cluster);
    warm(&waiter).await;
    let wait = Duration::from_millis(300);
    let (result, took, starts) = timed(waiter.lock("budget").ttl(TTL).wait(wait).acquire()).await;
    let err = result.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert!(took >= wait, "{took:?}");
    assert!(starts.len() >= 2, "{starts:?}");
    let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.iter().all(|g| *g >= DELAY), "{gaps:?}");
    assert_eq!(err.attempts(), u32::try_from(starts.len()).ok(), "{err}");
}

#[tokio::test]
async fn write_and_permit_attempts_start_a_retry_delay_apart() {
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let _writer = holder.lock("doc").ttl(TTL).write().acquire().await.unwrap();
    let _permit = holder
        .lock("gpu")
        .ttl(TTL)
        .permits(1)
        .acquire()
        .await
        .unwrap();
    let waiter = patient(&cluster);
    warm(&waiter).await;
    for call in ["first", "contended"] {
        let (result, took, starts) = timed(waiter.lock("doc").ttl(TTL).write().acquire()).await;
        assert_spread(&format!("write, {call}"), result, took, &starts);
    }
    let (result, took, starts) = timed(waiter.lock("gpu").ttl(TTL).permits(1).acquire()).await;
    assert_spread("permit", result, took, &starts);
}

/// The fast path stays: a release wakes the waiter at once, long before its delay.
#[tokio::test]
async fn a_release_wakes_the_waiter_before_the_delay() {
    let delay = Duration::from_secs(3);
    let cluster = cluster(3).await;
    let holder = redlock(&cluster);
    let held = holder.acquire("woken", TTL).await.unwrap();
    let waiter = builder(&cluster)
        .retry_count(3)
        .retry_delay(delay)
        .retry_jitter(Duration::ZERO)
        .build()
        .unwrap();
    warm(&waiter).await;
    let acquiring = tokio::spawn({
        let waiter = waiter.clone();
        async move { waiter.acquire("woken", TTL).await }
    });
    // The waiter is in line on every node once its first attempt failed.
    let conns = direct(&cluster).await;
    eventually("the waiter joined the queue", || {
        let conns = conns.clone();
        async move { queue_lengths(&conns, "woken").await.iter().all(|n| *n > 0) }
    })
    .await;
    let released = Instant::now();
    held.release().await.unwrap();
    let guard = bounded(acquiring).await.unwrap().unwrap();
    let woken_after = released.elapsed();
    assert!(
        woken_after < delay / 3,
        "woken {woken_after:?} after the release, with a delay of {delay:?}"
    );
    assert_eq!(guard.attempts(), 2);
    guard.release().await.unwrap();
}
