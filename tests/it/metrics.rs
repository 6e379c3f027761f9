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
