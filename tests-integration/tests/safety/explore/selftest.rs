//! The oracles themselves, against real servers: each flags what it must and nothing the
//! nodes do hold. Beliefs here are made up; no lock manager is involved.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::oracle::{Belief, Kind, Oracle};
use crate::support::{bounded, cluster, direct, set_on};

/// How long the tests give the sampler to look (a round takes a few ms).
const LOOK: Duration = Duration::from_millis(150);

struct Sampling {
    oracle: Arc<Oracle>,
    stop: CancellationToken,
}

impl Sampling {
    fn start(urls: Vec<String>, nodes: usize) -> Self {
        let oracle = Oracle::new(nodes, Duration::from_millis(50));
        let stop = CancellationToken::new();
        tokio::spawn(oracle.clone().sample(urls, stop.clone()));
        Self { oracle, stop }
    }

    fn kinds(&self) -> Vec<Kind> {
        self.oracle.violations().iter().map(|v| v.kind).collect()
    }

    /// Waits until a violation of `kind` is flagged.
    async fn flagged(&self, kind: Kind) {
        bounded(async {
            while !self.kinds().contains(&kind) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }
}

impl Drop for Sampling {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn belief(left: Duration) -> Belief {
    Belief::Guard(Instant::now() + left)
}

#[tokio::test]
async fn belief_holds_while_a_quorum_stores_the_value_and_fails_when_it_does_not() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    for c in &mut conns[..2] {
        set_on(c, "k", "v", 3_000).await;
    }
    let s = Sampling::start(cluster.direct_urls(), 3);
    let id = s.oracle.open(
        0,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(2)),
    );
    tokio::time::sleep(LOOK).await;
    assert!(s.kinds().is_empty(), "{:?}", s.oracle.violations());
    // One of the two copies goes: no quorum stores the bound value any more.
    let _: () = redis::cmd("DEL")
        .arg("k")
        .query_async(&mut conns[1])
        .await
        .unwrap();
    s.flagged(Kind::Belief).await;
    s.oracle.close(id, "released");
}

#[tokio::test]
async fn an_expiry_shorter_than_the_belief_fails_it() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        set_on(c, "k", "v", 400).await;
    }
    let s = Sampling::start(cluster.direct_urls(), 3);
    s.oracle.open(
        0,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(2)),
    );
    s.flagged(Kind::Belief).await;
}

#[tokio::test]
async fn paused_nodes_count_as_unknown() {
    let cluster = cluster(3).await;
    cluster.node(1).pause().await.unwrap();
    cluster.node(2).pause().await.unwrap();
    let s = Sampling::start(cluster.direct_urls(), 3);
    // Nothing stored on the one node that answers; the two paused ones might hold it.
    s.oracle.open(
        0,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(3)),
    );
    tokio::time::sleep(LOOK * 2).await;
    assert!(s.kinds().is_empty(), "{:?}", s.oracle.violations());
    cluster.node(1).resume().await.unwrap();
    cluster.node(2).resume().await.unwrap();
    s.flagged(Kind::Belief).await;
}

#[tokio::test]
async fn two_holdings_bound_to_one_value_are_flagged() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        set_on(c, "k", "v", 5_000).await;
    }
    let s = Sampling::start(cluster.direct_urls(), 3);
    s.oracle.open(
        0,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(3)),
    );
    tokio::time::sleep(LOOK).await;
    assert!(s.kinds().is_empty(), "{:?}", s.oracle.violations());
    s.oracle.open(
        1,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(3)),
    );
    s.flagged(Kind::SharedValue).await;
}

#[tokio::test]
async fn a_released_value_that_comes_back_is_a_ghost() {
    let cluster = cluster(3).await;
    let mut conns = direct(&cluster).await;
    for c in &mut conns {
        set_on(c, "k", "v", 5_000).await;
    }
    let s = Sampling::start(cluster.direct_urls(), 3);
    let id = s.oracle.open(
        0,
        1,
        "k".into(),
        false,
        vec!["k".into()],
        belief(Duration::from_secs(3)),
    );
    tokio::time::sleep(LOOK).await;
    s.oracle.close(id, "released");
    for c in &mut conns {
        let _: () = redis::cmd("DEL").arg("k").query_async(c).await.unwrap();
    }
    // Gone for longer than the grace: then back on one node.
    tokio::time::sleep(LOOK).await;
    assert!(s.kinds().is_empty(), "{:?}", s.oracle.violations());
    set_on(&mut conns[2], "k", "v", 5_000).await;
    s.flagged(Kind::Ghost).await;
}
