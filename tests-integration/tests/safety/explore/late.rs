//! The late-delivery probe at the end of each tail: the order of issue 21, made on
//! purpose, judged by the oracle like everything else.
//!
//! A fresh manager takes a lock and extends it long; one node then holds back what the
//! manager sends on its connection while the manager extends it short a few times; once
//! the manager has given up on that connection (three node timeouts), a minority of the
//! other nodes is cut off and the manager extends long again, through the held node's
//! new connection; then the held short extensions land, after the long one. The long
//! extension's promise rests on a bare quorum that includes the held node, so an
//! extension that lowers an expiry (mutant `lower_extend`) leaves the guard believing in
//! a lock that only a minority keeps: a belief violation the sampler sees at once.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use tokio_redlock_harness::history::Recorder;
use tokio_redlock_harness::Cluster;

use super::client::Client;
use super::driver::build;
use super::oracle::Oracle;
use super::schedule::{ExtendTtl, How, MgrSpec, Op, Schedule, Step, RESOURCES};

/// The probe manager's node timeout: the client gives up on the held connection after
/// three of them, and reconnects, well within the short extension's ttl.
const NODE_TIMEOUT_MS: u64 = 100;
/// The long ttl (acquire and the extensions the late copies must not undo) and the
/// short one whose copies land late.
const LONG_MS: u64 = 10_000;
const SHORT_MS: u64 = 1_500;
/// Short extensions sent while the node holds: each times out there, and three in a row
/// make the client drop that connection.
const SHORT_EXTENSIONS: usize = 3;

fn spec() -> MgrSpec {
    MgrSpec::one_attempt(NODE_TIMEOUT_MS)
}

fn step(op: Op) -> Step {
    Step { think_ms: 0, op }
}

fn extend(ms: u64) -> Step {
    step(Op::Extend {
        ttl: ExtendTtl::Ms(ms),
        budget_ms: None,
    })
}

/// Runs the probe once; returns the faults made (the hold and the cut nodes).
#[allow(clippy::too_many_arguments)]
pub async fn late_probe(
    cluster: &Arc<Cluster>,
    urls: &[String],
    prefix: &str,
    oracle: &Arc<Oracle>,
    rec: &Recorder,
    acquisitions: &Arc<AtomicU64>,
    sched: &Schedule,
    episode: usize,
) -> u64 {
    let mut rng = rand::rngs::StdRng::seed_from_u64(
        sched.seed ^ (episode as u64 + 1).wrapping_mul(0x51_7cc1_b727_220a),
    );
    let n = cluster.len();
    let quorum = n / 2 + 1;
    let held = rng.random_range(0..n);
    // A minority of the others, so that the long extension wins on a bare quorum.
    let mut others: Vec<usize> = (0..n).filter(|&i| i != held).collect();
    for i in (1..others.len()).rev() {
        others.swap(i, rng.random_range(0..=i));
    }
    let cut: Vec<usize> = others.into_iter().take(n - quorum).collect();
    let spec = spec();
    let mut client = Client {
        id: sched.managers.len() as u32 + 1,
        mgrs: Arc::new([build(urls, &spec), None]),
        specs: [spec.clone(), spec],
        oracle: oracle.clone(),
        rec: rec.clone(),
        acquisitions: acquisitions.clone(),
        prefix: format!("{prefix}l"),
        op: 0,
        holding: None,
        tail: true,
    };
    let res = rng.random_range(0..RESOURCES);
    let acquire = step(Op::Acquire {
        mgr: 0,
        res,
        how: How::TryAcquire,
        ttl_ms: LONG_MS,
        budget_ms: None,
    });
    client.run(&[acquire, extend(LONG_MS)], None).await;
    let mut faults = 1 + cut.len() as u64;
    let result = async {
        cluster.node(held).hold_requests().await?;
        client
            .run(&vec![extend(SHORT_MS); SHORT_EXTENSIONS], None)
            .await;
        // The held copies time out in the client; nothing outside it shows when it has
        // dropped the connection, so wait past the timeouts.
        tokio::time::sleep(Duration::from_millis(NODE_TIMEOUT_MS * 4)).await;
        for &c in &cut {
            cluster.node(c).partition().await?;
        }
        client.run(&[extend(LONG_MS)], None).await;
        cluster.node(held).deliver_held().await?;
        for &c in &cut {
            cluster.node(c).heal().await?;
        }
        Ok::<(), tokio_redlock_harness::HarnessError>(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("explore: the late probe's faults failed: {e}");
        faults = 0;
    }
    // Held long enough for the sampler to look, then released.
    let rest = [
        step(Op::Hold { ms: 60 }),
        step(Op::Release { budget_ms: None }),
    ];
    client.run(&rest, None).await;
    if let Err(e) = cluster.clear_faults().await {
        eprintln!("explore: clearing faults after the late probe failed: {e}");
    }
    faults
}
