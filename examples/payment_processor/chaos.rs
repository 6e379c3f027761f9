//! `--chaos`: faults injected into the local lock nodes (and one worker) while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio_redlock_harness::Cluster;

use super::worker::{self, Keys};

/// `--chaos`: how long a lock node stays paused, and partitioned. Long enough that many
/// acquisitions meet the fault, short enough for a run of a few seconds.
const PAUSE_FOR: Duration = Duration::from_millis(400);
const PARTITION_FOR: Duration = Duration::from_millis(400);
/// `--chaos`: a killed lock node comes back empty (memory only), so it stays down for
/// longer than any lock it held could still be valid: Redlock's delayed restart.
const KILL_FOR: Duration = Duration::from_millis(worker::LOCK_TTL.as_millis() as u64 + 200);

/// Waits until `done` payments are completed; false if the run ended first.
async fn reached(rx: &mut watch::Receiver<usize>, done: usize) -> bool {
    rx.wait_for(|&d| d >= done).await.is_ok()
}

/// What `--chaos` works on.
pub(crate) struct Chaos<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) store: MultiplexedConnection,
    pub(crate) keys: &'a Keys,
    pub(crate) faults: &'a AtomicU64,
    pub(crate) verbose: bool,
}

/// `--chaos`: at 10%, 20% and 30% of the payments, pause lock node 0, kill lock node 1
/// and partition lock node 2; each fault is undone after its own time. Up to three
/// nodes of five can be out at once, which leaves no quorum for a moment: workers then
/// wait. At 40%, one worker is made to stall past its lock's ttl between reading a
/// payment and recording its charge: another worker takes the payment over, and the
/// store refuses the stalled worker's write by its fencing token. The run still ends
/// with every payment charged once.
pub(crate) async fn chaos(
    ctx: Chaos<'_>,
    payments: usize,
    progress: watch::Receiver<usize>,
) -> Result<(), String> {
    let Chaos {
        cluster,
        mut store,
        keys,
        faults,
        verbose,
    } = ctx;
    let say = |msg: String| {
        if verbose {
            eprintln!("chaos: {msg}");
        }
    };
    let injected = || faults.fetch_add(1, Ordering::Relaxed);
    let err = |what: &str, e: tokio_redlock_harness::HarnessError| format!("{what}: {e}");
    let (mut rx0, mut rx1, mut rx2, mut rx3) = (
        progress.clone(),
        progress.clone(),
        progress.clone(),
        progress,
    );
    let pause = async {
        if reached(&mut rx0, payments / 10).await {
            let node = cluster.node(0);
            node.pause().await.map_err(|e| err("pause node 0", e))?;
            injected();
            say(format!("paused lock node 0 for {PAUSE_FOR:?}"));
            tokio::time::sleep(PAUSE_FOR).await;
            node.resume().await.map_err(|e| err("resume node 0", e))?;
            say("resumed lock node 0".into());
        }
        Ok::<_, String>(())
    };
    let kill = async {
        if reached(&mut rx1, payments / 5).await {
            let node = cluster.node(1);
            node.kill().await.map_err(|e| err("kill node 1", e))?;
            injected();
            say(format!("killed lock node 1; restart in {KILL_FOR:?}"));
            tokio::time::sleep(KILL_FOR).await;
            node.restart().await.map_err(|e| err("restart node 1", e))?;
            say("restarted lock node 1 (empty)".into());
        }
        Ok(())
    };
    let partition = async {
        if reached(&mut rx2, payments * 3 / 10).await {
            let node = cluster.node(2);
            node.partition()
                .await
                .map_err(|e| err("partition node 2", e))?;
            injected();
            say(format!("partitioned lock node 2 for {PARTITION_FOR:?}"));
            tokio::time::sleep(PARTITION_FOR).await;
            node.heal().await.map_err(|e| err("heal node 2", e))?;
            say("healed lock node 2".into());
        }
        Ok(())
    };
    let stall = async {
        if reached(&mut rx3, payments * 2 / 5).await {
            let _: () = redis::cmd("SET")
                .arg(keys.stall())
                .arg(1)
                .query_async(&mut store)
                .await
                .map_err(|e| format!("arming the stall: {e}"))?;
            injected();
            say("the next worker to read a payment stalls past its lock's ttl".into());
        }
        Ok(())
    };
    tokio::try_join!(pause, kill, partition, stall).map(|_| ())
}
