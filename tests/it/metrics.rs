//! The `metrics` feature: what an operator's dashboard would read.
#![cfg(feature = "metrics")]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::CompositeKey;

use crate::support::*;

const TTL: Duration = Duration::from_secs(10);

type Entries = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// Everything recorded so far. (A snapshot resets the counters it reads, so the test
/// takes one and asks it everything.)
fn take(snap: &Snapshotter) -> Entries {
    snap.snapshot().into_vec()
}

fn counter(entries: &Entries, name: &str, label: (&str, &str)) -> u64 {
    entries
        .iter()
        .filter(|(key, ..)| {
            key.key().name() == name
                && key
                    .key()
                    .labels()
                    .any(|l| l.key() == label.0 && l.value() == label.1)
        })
        .map(|(.., value)| match value {
            DebugValue::Counter(n) => *n,
            _ => 0,
        })
        .sum()
}

// One thread, so that the thread-local recorder sees the spawned tasks too.
#[tokio::test(flavor = "current_thread")]
async fn acquisitions_conflicts_releases_and_node_errors_are_counted() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);

    let cluster = cluster(3).await;
    let a = redlock(&cluster);
    let b = builder(&cluster).retry_count(0).build().unwrap();
    let held = a.acquire("m", TTL).await.unwrap();
    assert!(b.acquire("m", TTL).await.unwrap_err().is_conflict());
    held.release().await.unwrap();
    cluster.node(0).kill().await.unwrap();
    b.acquire("m", TTL).await.unwrap().release().await.unwrap();

    let entries = take(&snap);
    assert_eq!(
        counter(&entries, "redlock_acquisitions_total", ("outcome", "ok")),
        2
    );
    assert_eq!(
        counter(
            &entries,
            "redlock_acquisitions_total",
            ("outcome", "conflict")
        ),
        1
    );
    assert_eq!(
        counter(&entries, "redlock_releases_total", ("outcome", "ok")),
        2
    );
    // The killed node's requests fail in the background, after the quorum answered.
    let mut entries = entries;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while counter(&entries, "redlock_node_errors_total", ("node", "0")) == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        entries = take(&snap);
    }
    assert!(counter(&entries, "redlock_node_errors_total", ("node", "0")) >= 1);
    let histograms = entries
        .iter()
        .filter(|(k, ..)| k.key().name() == "redlock_acquire_seconds")
        .count();
    assert!(histograms >= 2, "wait histograms per outcome");
}

/// Gauges and hold-time samples by (name, class), summed over snapshots: a snapshot of
/// the debugging recorder hands out what changed since the last one.
#[derive(Default)]
struct Seen {
    gauges: std::collections::BTreeMap<(String, String), f64>,
    held_times: usize,
}

impl Seen {
    fn take(&mut self, snap: &Snapshotter) -> &mut Self {
        for (key, .., value) in take(snap) {
            let class = key
                .key()
                .labels()
                .find(|l| l.key() == "class")
                .map(|l| l.value().to_owned());
            let Some(class) = class else { continue };
            match value {
                DebugValue::Gauge(v) => {
                    *self
                        .gauges
                        .entry((key.key().name().to_owned(), class))
                        .or_default() += v.into_inner();
                }
                DebugValue::Histogram(samples)
                    if key.key().name() == "redlock_held_seconds" && class == "payment" =>
                {
                    self.held_times += samples.len();
                }
                _ => {}
            }
        }
        self
    }

    fn gauge(&self, name: &str, class: &str) -> f64 {
        self.gauges
            .get(&(name.to_owned(), class.to_owned()))
            .copied()
            .unwrap_or_default()
    }
}

/// Issue 25, item 5: locks held now, tasks waiting now, and how long locks were held,
/// by a resource class the user bounds (never the resource name).
#[tokio::test(flavor = "current_thread")]
async fn held_locks_waiting_tasks_and_hold_times_by_class() {
    let recorder = DebuggingRecorder::new();
    let snap = recorder.snapshotter();
    let _guard = metrics::set_default_local_recorder(&recorder);
    let mut seen = Seen::default();

    let cluster = cluster(3).await;
    let redlock = builder(&cluster)
        .metrics_class(|r| {
            if r.starts_with("payment:") {
                "payment"
            } else {
                "other"
            }
        })
        .build()
        .unwrap();
    let first = redlock.acquire("payment:1", TTL).await.unwrap();
    let second = redlock.acquire("payment:2", TTL).await.unwrap();
    let report = redlock.acquire("report", TTL).await.unwrap();
    seen.take(&snap);
    assert_eq!(seen.gauge("redlock_guards_held", "payment"), 2.0);
    assert_eq!(seen.gauge("redlock_guards_held", "other"), 1.0);
    assert!(seen.gauges.keys().all(|(_, class)| class != "payment:1"));

    // A task waiting for payment:1 counts as waiting until it has the lock.
    let waiter = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .lock("payment:1")
                .ttl(TTL)
                .wait(Duration::from_secs(5))
                .acquire()
                .await
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while seen.take(&snap).gauge("redlock_waiting_tasks", "payment") < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never counted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.release().await.unwrap();
    let third = bounded(waiter).await.unwrap().unwrap();
    seen.take(&snap);
    assert_eq!(seen.gauge("redlock_waiting_tasks", "payment"), 0.0);
    assert_eq!(seen.gauge("redlock_guards_held", "payment"), 2.0);
    for g in [second, third] {
        g.release().await.unwrap();
    }
    drop(report);
    seen.take(&snap);
    assert_eq!(seen.gauge("redlock_guards_held", "payment"), 0.0);
    assert_eq!(seen.gauge("redlock_guards_held", "other"), 0.0);
    // payment:1 was handed on to the waiting task (same process, no round trip): one
    // hold from the first acquisition to the waiter's release; payment:2 the other.
    assert_eq!(seen.held_times, 2, "hold times recorded");
}
