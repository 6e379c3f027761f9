//! The end of an episode's fault-free tail: the flap probe, one more client taking and
//! releasing a lock while minority nodes flap, and the ghost check of what the nodes
//! hold after it.

use super::super::client::TAIL_RELEASED;
use super::*;

/// Acquire-release cycles of the flap probe at the end of each tail.
const PROBE_CYCLES: usize = 12;

/// A manager that can carry a request through a short flap: its node timeout leaves
/// room to connect again and send a request once more, also on a loaded machine.
fn probe_spec() -> MgrSpec {
    MgrSpec::one_attempt(250)
}

/// The end of the tail: one more client, with a fresh manager, takes and releases a lock
/// again and again while minority nodes flap (a partition shorter than its node timeout,
/// whose heal closes the connections, so requests caught in it are sent again on a new
/// connection). A release that overtook its own acquisition's re-sent `SET` would leave
/// a ghost that the check after the tail finds (ttl 10 s, so it outlives the check).
/// Returns the flaps made.
#[allow(clippy::too_many_arguments)]
pub(super) async fn flap_probe(
    cluster: &Arc<Cluster>,
    urls: &[String],
    prefix: &str,
    oracle: &Arc<Oracle>,
    rec: &tokio_redlock_harness::history::Recorder,
    acquisitions: &Arc<AtomicU64>,
    sched: &Schedule,
    episode: usize,
) -> u64 {
    use rand::{Rng, SeedableRng};
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(sched.seed ^ (episode as u64).wrapping_mul(0x9e37_79b9));
    let spec = probe_spec();
    let mut client = Client {
        id: sched.managers.len() as u32,
        mgrs: Arc::new([build(urls, &spec), None]),
        specs: [spec.clone(), spec],
        oracle: oracle.clone(),
        rec: rec.clone(),
        acquisitions: acquisitions.clone(),
        prefix: format!("{prefix}p"),
        op: 0,
        holding: None,
        tail: true,
    };
    let mut steps = Vec::new();
    for _ in 0..PROBE_CYCLES {
        let res = rng.random_range(0..RESOURCES);
        let think_ms = rng.random_range(0..=8);
        steps.push(Step {
            think_ms,
            op: Op::Acquire {
                mgr: 0,
                res,
                how: How::TryAcquire,
                ttl_ms: 10_000,
                budget_ms: None,
            },
        });
        steps.push(Step {
            think_ms: rng.random_range(0..=3),
            op: Op::Release { budget_ms: None },
        });
    }
    let flaps: Vec<(usize, u64, u64)> = (0..PROBE_CYCLES)
        .map(|_| {
            (
                rng.random_range(0..cluster.len()),
                rng.random_range(3..=15),
                rng.random_range(0..=10),
            )
        })
        .collect();
    let done = CancellationToken::new();
    let flapper = {
        let (cluster, done) = (cluster.clone(), done.clone());
        tokio::spawn(async move {
            let mut made = 0;
            for (node, dur, pause) in flaps.into_iter().cycle() {
                if done.is_cancelled() {
                    break;
                }
                if cluster
                    .node(node)
                    .flap(Duration::from_millis(dur))
                    .await
                    .is_ok()
                {
                    made += 1;
                }
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            made
        })
    };
    client.run(&steps, None).await;
    done.cancel();
    let made = flapper.await.unwrap_or(0);
    if let Err(e) = cluster.clear_faults().await {
        eprintln!("explore: clearing faults after the probe failed: {e}");
    }
    made
}

/// Keys present after the tail that were not there before it (made by the tail's own
/// fault-free calls, so every one must be gone), and values of holdings released in the
/// tail that are still there. Fencing counters live on by design.
pub(super) fn ghosts(
    oracle: &Oracle,
    before: &BTreeSet<(usize, String, String)>,
    after: &BTreeSet<(usize, String, String)>,
    prefix: &str,
) -> Vec<((usize, String, String), String)> {
    let mut found = Vec::new();
    let bound = oracle.bound_values();
    for (node, key, value) in after {
        if key.ends_with(":fence")
            || !key.starts_with(prefix)
            || super::rw_and_permits::is_waiting_place(key)
        {
            continue;
        }
        let owner = bound.get(&(key.clone(), value.clone()));
        if let Some((id, how, story)) = owner {
            if how == TAIL_RELEASED {
                let what = format!("node {node} still holds `{key}` of holding {id}, released in the fault-free tail, after node timeout + slack; holding {id}: {story}");
                found.push(((*node, key.clone(), value.clone()), what));
                continue;
            }
        }
        if !before.contains(&(*node, key.clone(), value.clone())) {
            let whose = match owner {
                Some((id, how, story)) => format!("the value of holding {id} ({how}): {story}"),
                None => "a value no holding was bound to (a failed or cancelled attempt's)".into(),
            };
            let what = format!("node {node} holds `{key}` after heal, release and node timeout + slack, and did not at heal; {whose}");
            found.push(((*node, key.clone(), value.clone()), what));
        }
    }
    found
}
