//! The faults of the safety suite's workloads and their injection on random minorities
//! of the nodes (`safety.rs`'s safe scenarios).

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock_harness::history::now_ns;
use tokio_redlock_harness::Cluster;

use super::{config_set, SLOW_REPLY};
use crate::{support, workload};

#[derive(Clone, Copy, Debug)]
pub(super) enum Fault {
    None,
    Pause,
    /// Kill, then restart (empty: no persistence) only after the longest TTL has passed.
    KillLate,
    Partition,
    Latency,
    /// Kill and restart at once, on nodes with `appendfsync always`.
    KillRestartAof,
    /// Replies slower than the longest TTL.
    SlowReplies,
    ScriptFlush,
    /// `maxmemory 1` with `noeviction`: writes are answered with OOM errors.
    Oom,
}

/// Injects `fault` on random minorities until `run` has passed; returns the number of
/// faults and when each was healed.
pub(super) async fn inject(
    cluster: &Cluster,
    fault: Fault,
    seed: u64,
    run: Duration,
) -> (usize, Vec<u64>) {
    let mut rng = StdRng::seed_from_u64(seed.rotate_left(17));
    let deadline = Instant::now() + run;
    let n = cluster.len();
    let (mut faults, mut heals) = (0, Vec::new());
    if matches!(fault, Fault::None) {
        return (faults, heals);
    }
    // The run ends fault-free for two TTLs and a bit: a release that a faulty node
    // missed (or a write a slow proxy still delivers) leaves a key there until its TTL,
    // which is by design, and the leftover-key check must not blame it.
    let tail = workload::MAX_TTL * 2 + Duration::from_millis(500);
    let longest = match fault {
        Fault::KillLate => workload::MAX_TTL + Duration::from_millis(500),
        _ => Duration::from_millis(900),
    };
    // Gaps and holds of a few hundred ms: several faults per run, each long enough
    // for many attempts to meet it.
    while Instant::now() + longest + tail < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=300))).await;
        let nodes = workload::minority(&mut rng, n);
        let hold = Duration::from_millis(rng.random_range(200..=600));
        match fault {
            Fault::None => {}
            Fault::Pause => {
                for &i in &nodes {
                    cluster.node(i).pause().await.expect("pause");
                }
                tokio::time::sleep(hold).await;
                for &i in &nodes {
                    cluster.node(i).resume().await.expect("resume");
                }
            }
            Fault::KillLate => {
                for &i in &nodes {
                    cluster.node(i).kill().await.expect("kill");
                }
                // Longer than any TTL: whatever the node held has expired everywhere.
                tokio::time::sleep(workload::MAX_TTL + Duration::from_millis(200)).await;
                for &i in &nodes {
                    cluster.node(i).restart().await.expect("restart");
                }
            }
            Fault::Partition => {
                for &i in &nodes {
                    cluster.node(i).partition().await.expect("partition");
                }
                tokio::time::sleep(hold).await;
                for &i in &nodes {
                    cluster.node(i).heal().await.expect("heal");
                }
            }
            Fault::Latency | Fault::SlowReplies => {
                let d = match fault {
                    // Below the node timeout or around it: some replies make it, some not.
                    Fault::Latency => Duration::from_millis(rng.random_range(20..=120)),
                    _ => SLOW_REPLY,
                };
                for &i in &nodes {
                    cluster.node(i).set_latency(d).await.expect("latency");
                }
                tokio::time::sleep(hold).await;
                for &i in &nodes {
                    cluster
                        .node(i)
                        .set_latency(Duration::ZERO)
                        .await
                        .expect("latency");
                }
            }
            Fault::KillRestartAof => {
                for &i in &nodes {
                    cluster.node(i).restart().await.expect("restart");
                }
            }
            Fault::ScriptFlush => {
                let mut conns = support::direct(cluster).await;
                for c in &mut conns {
                    let _: () = redis::cmd("SCRIPT")
                        .arg("FLUSH")
                        .query_async(c)
                        .await
                        .expect("SCRIPT FLUSH");
                }
            }
            Fault::Oom => {
                config_set(cluster, &nodes, "maxmemory", "1").await;
                tokio::time::sleep(hold).await;
                config_set(cluster, &nodes, "maxmemory", "0").await;
            }
        }
        faults += 1;
        heals.push(now_ns());
    }
    (faults, heals)
}
