//! The harness under the crate name it keeps once it moves out of the library: the same
//! types as `tokio_redlock::harness`, driving real `redis-server` processes.
#![cfg(unix)]

use std::time::Duration;

use tokio_redlock::Redlock;
use tokio_redlock_harness::{Cluster, Persistence};

#[tokio::test]
async fn the_harness_crate_names_the_same_cluster() {
    let bound = Duration::from_secs(30);
    let cluster: tokio_redlock::harness::Cluster = tokio::time::timeout(
        bound,
        Cluster::builder()
            .nodes(1)
            .persistence(Persistence::Memory)
            .start(),
    )
    .await
    .expect("cluster start timed out")
    .expect("cluster starts");
    let redlock = Redlock::builder().nodes(cluster.urls()).build().unwrap();
    let guard = tokio::time::timeout(
        bound,
        redlock.acquire("harness:crate", Duration::from_secs(5)),
    )
    .await
    .unwrap()
    .unwrap();
    tokio::time::timeout(bound, guard.release())
        .await
        .unwrap()
        .unwrap();
}
