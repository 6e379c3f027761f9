//! One episode of a run: the client tasks doing their drawn operations until the
//! episode's end, beside the drawn faults, each on its node at its time.

use std::time::Instant;

use super::super::schedule::{Episode, FaultKind, EPISODE};
use super::*;

/// A client still busy this long after its episode's end is reported stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);

async fn run_fault(
    cluster: &Cluster,
    oracle: &Oracle,
    node: usize,
    kind: FaultKind,
    dur: Duration,
) {
    let n = cluster.node(node);
    // Late delivery too: a held acquisition that lands after its release (on a new
    // connection) brings its value back until its ttl, the one thing a late copy may do
    // (docs/safety.md, "Late copies"); it is not judged as a ghost.
    let stops = matches!(
        kind,
        FaultKind::Pause | FaultKind::KillRestart | FaultKind::Late
    );
    if stops {
        oracle.disturb(node, true);
    }
    let result = match kind {
        FaultKind::Pause => {
            async {
                n.pause().await?;
                tokio::time::sleep(dur).await;
                n.resume().await
            }
            .await
        }
        FaultKind::KillRestart => {
            async {
                n.kill().await?;
                tokio::time::sleep(dur).await;
                n.restart().await
            }
            .await
        }
        FaultKind::Partition | FaultKind::DropRequests | FaultKind::DropReplies => {
            async {
                match kind {
                    FaultKind::Partition => n.partition().await?,
                    FaultKind::DropRequests => n.drop_requests().await?,
                    _ => n.drop_replies().await?,
                }
                tokio::time::sleep(dur).await;
                n.heal().await
            }
            .await
        }
        FaultKind::Resets(k) => {
            async {
                n.reset_after_requests(k).await?;
                tokio::time::sleep(dur).await;
                n.stop_resets().await
            }
            .await
        }
        FaultKind::Flap => n.flap(dur).await,
        FaultKind::Latency(l) => {
            async {
                n.set_latency(Duration::from_millis(l)).await?;
                tokio::time::sleep(dur).await;
                n.set_latency(Duration::ZERO).await
            }
            .await
        }
        FaultKind::Spike(l) => n.latency_spike(Duration::from_millis(l), dur).await,
        FaultKind::Late => {
            async {
                n.hold_requests().await?;
                tokio::time::sleep(dur).await;
                n.deliver_held().await
            }
            .await
        }
        FaultKind::ScriptFlush => {
            let mut d = Direct::new(n.direct_url());
            if let Some(mut con) = d.connection().await {
                let _: redis::RedisResult<()> = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut con)
                    .await;
            }
            Ok(())
        }
    };
    if stops {
        oracle.disturb(node, false);
    }
    if let Err(e) = result {
        eprintln!("explore: fault {kind} on node {node} failed: {e}");
    }
}

pub(super) async fn run_episode(
    cluster: &Arc<Cluster>,
    episode: &Episode,
    make: &impl Fn(usize, u64, Option<Holding>, bool) -> Client,
    ops: &mut [u64],
    oracle: &Arc<Oracle>,
) -> (Vec<Option<Holding>>, Vec<FaultBar>) {
    let started = Instant::now();
    let deadline = started + EPISODE;
    let mut clients = JoinSet::new();
    for (c, steps) in episode.steps.iter().enumerate() {
        let mut client = make(c, ops[c], None, false);
        let steps = steps.clone();
        clients.spawn(async move {
            client.run(&steps, Some(deadline)).await;
            (c, client.op, client.holding.take())
        });
    }
    let mut faults = JoinSet::new();
    let plan = episode.faults.clone();
    let cl = cluster.clone();
    let or = oracle.clone();
    let fault_driver = tokio::spawn(async move {
        let mut bars = Vec::new();
        let mut running = JoinSet::new();
        for f in plan {
            tokio::time::sleep_until((started + Duration::from_millis(f.at_ms)).into()).await;
            let (cl, or) = (cl.clone(), or.clone());
            let start_ns = now_ns();
            running.spawn(async move {
                run_fault(&cl, &or, f.node, f.kind, Duration::from_millis(f.dur_ms)).await;
                FaultBar {
                    node: f.node,
                    kind: f.kind.short().to_owned(),
                    start_ns,
                    end_ns: now_ns(),
                }
            });
        }
        while let Some(bar) = running.join_next().await {
            if let Ok(bar) = bar {
                bars.push(bar);
            }
        }
        bars
    });
    faults.spawn(async move { fault_driver.await.unwrap_or_default() });
    let mut holdings: Vec<Option<Holding>> = (0..episode.steps.len()).map(|_| None).collect();
    let stuck = tokio::time::sleep_until((deadline + STUCK_AFTER).into());
    tokio::pin!(stuck);
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(Ok((c, op, holding))) => {
                    ops[c] = op;
                    holdings[c] = holding;
                }
                Some(Err(e)) => oracle.flag(Kind::Panic, None, format!("a client task panicked: {e}")),
                None => break,
            },
            () = &mut stuck => {
                oracle.flag(Kind::CallBound, None, format!("{} client(s) still busy {STUCK_AFTER:?} after the episode's end", clients.len()));
                clients.abort_all();
                break;
            }
        }
    }
    let mut bars = Vec::new();
    while let Some(Ok(b)) = faults.join_next().await {
        bars.extend(b);
    }
    (holdings, bars)
}
