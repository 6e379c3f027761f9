//! A scheduled job that runs once per period across many hosts: every "pod" tries at
//! each tick, whoever wins runs the job, and the lock is held at least for the period,
//! so a job that finished in milliseconds does not run again elsewhere until the next
//! period (`hold_at_least`, ShedLock's "lock at least for").
//!
//! ```sh
//! cargo run --example scheduled_job
//! ```
//!
//! It starts three local `redis-server` processes with the harness crate.

use std::time::Duration;

use rand::Rng;
use tokio_redlock::{Error, LockGuard, Redlock};
use tokio_redlock_harness::Cluster;

/// How often the job should run, at most: here 1 s, so that the example is short.
const PERIOD: Duration = Duration::from_secs(1);

/// One attempt at this tick; a split vote (every pod tried at once and nobody won) gets
/// one more after a short random pause, as the crate recommends.
async fn try_once(pod: &Redlock) -> Result<Option<LockGuard>, Error> {
    let request = || {
        pod.lock("nightly-report")
            .ttl(PERIOD)
            .hold_at_least(PERIOD)
            .try_acquire()
    };
    let mut result = request().await;
    if matches!(&result, Err(e) if e.is_split_vote()) {
        let pause = rand::rng().random_range(1..=30);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        result = request().await;
    }
    match result {
        Ok(guard) => Ok(Some(guard)),
        Err(e) if e.is_conflict() || e.is_split_vote() => Ok(None),
        Err(e) => Err(e),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cluster = Cluster::builder().nodes(3).start().await?;
    let pods: Vec<Redlock> = (0..3)
        .map(|i| {
            Redlock::builder()
                .nodes(cluster.urls())
                .owner_label(format!("pod-{i}"))
                .build()
        })
        .collect::<Result<_, _>>()?;
    let mut runs = 0;
    // Four ticks an eighth of the period apart, then one after the period: the job runs at the
    // first tick and again at the last, never in between.
    for tick in 0..5 {
        if tick == 4 {
            tokio::time::sleep(PERIOD).await;
        }
        let tries = pods.iter().map(try_once);
        for (pod, won) in futures::future::join_all(tries)
            .await
            .into_iter()
            .enumerate()
        {
            if let Some(guard) = won? {
                runs += 1;
                println!("tick {tick}: pod-{pod} runs the report (run {runs})");
                // The job is quick; the release keeps the lock for the rest of the period.
                guard.release().await?;
            }
        }
        tokio::time::sleep(PERIOD / 8).await;
    }
    assert_eq!(runs, 2, "once in the first period, once after it");
    println!("ran {runs} times in 5 ticks over two periods");
    Ok(())
}
