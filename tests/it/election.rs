//! Leader election (`Redlock::election`): one leader at a time, resignation hands over
//! at once through the wake-up queue, terms grow, the loss is signalled, and `observe`
//! follows who leads.
//!
//! Every test runs against real `redis-server` processes behind the harness's proxies.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_redlock::Redlock;
use tokio_redlock_harness::Cluster;

use crate::support::*;

/// A candidate whose retries are 3 s apart: only a resignation's wake-up makes it lead
/// sooner.
fn candidate(cluster: &Cluster, label: &str) -> Redlock {
    builder(cluster)
        .owner_label(label)
        .fencing(true)
        .retry_delay(Duration::from_secs(3))
        .retry_jitter(Duration::ZERO)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_resign_hands_over_at_once_and_terms_grow() {
    let cluster = cluster(3).await;
    let (a, b) = (candidate(&cluster, "cand-a"), candidate(&cluster, "cand-b"));
    let observer = a.election("scheduler").ttl(Duration::from_secs(2));
    let mut leaders = Box::pin(observer.observe());
    assert_eq!(
        bounded(leaders.next()).await,
        Some(None),
        "nobody leads yet"
    );

    let first = bounded(a.election("scheduler").campaign()).await.unwrap();
    assert!(first.is_leader());
    assert_eq!(bounded(leaders.next()).await, Some(Some("cand-a".into())));
    // b waits in line while a leads.
    let second = tokio::spawn({
        let b = b.clone();
        async move { b.election("scheduler").campaign().await }
    });
    eventually("b is queued", || {
        let conns = direct(&cluster);
        async move {
            queue_lengths(&conns.await, "scheduler")
                .await
                .iter()
                .any(|n| *n > 0)
        }
    })
    .await;
    assert!(!second.is_finished(), "two leaders");
    let term_a = first.term().expect("fencing gives a term");
    let resigned = Instant::now();
    bounded(first.resign()).await.unwrap();
    let second = bounded(second).await.unwrap().unwrap();
    assert!(
        resigned.elapsed() < Duration::from_secs(2),
        "b led only after {:?}: not woken by the resignation",
        resigned.elapsed()
    );
    assert!(second.is_leader());
    assert!(second.term().unwrap() > term_a, "terms grow");
    assert_eq!(bounded(leaders.next()).await, Some(Some("cand-b".into())));
    bounded(second.resign()).await.unwrap();
    assert_eq!(bounded(leaders.next()).await, Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_a_majority_is_told_it_lost() {
    let cluster = cluster(3).await;
    let a = candidate(&cluster, "cand-a");
    let leader = bounded(a.election("cut").ttl(Duration::from_millis(600)).campaign())
        .await
        .unwrap();
    let token = leader.cancellation_token();
    for i in 0..2 {
        cluster.node(i).partition().await.unwrap();
    }
    bounded(leader.lost()).await;
    assert!(!leader.is_leader());
    assert!(token.is_cancelled());
    cluster.clear_faults().await.unwrap();
}
