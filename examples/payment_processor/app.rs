//! The payment processor's logic, apart from `main`: command line, the coordinator that
//! sets up servers and payments, runs the workers (here or in worker processes), injects
//! faults, and the summary. The integration tests include this file and run it in-process.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio_redlock_harness::{Cluster, Persistence};
use tokio_util::sync::CancellationToken;

#[path = "worker.rs"]
pub(crate) mod worker;

use worker::{Keys, WorkerSpec};

/// Lock nodes started when no `--nodes` are given: 5 tolerates 2 faulty nodes, enough
/// for `--chaos` to have up to three faults in flight and still make progress.
const LOCAL_NODES: usize = 5;
/// How often the coordinator looks at the queue (for chaos triggers and progress).
const POLL: Duration = Duration::from_millis(100);
/// How often a progress line is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long worker processes get to finish their payment after being told to stop.
const CHILD_GRACE: Duration = Duration::from_secs(10);
/// How long a local cluster may take to start on a loaded machine.
const CLUSTER_START: Duration = Duration::from_secs(30);

#[path = "chaos.rs"]
mod chaos;
#[path = "cli.rs"]
mod cli;

use chaos::{chaos, Chaos};
pub(crate) use cli::{parse, worker_args, Command, USAGE};

/// A run's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Config {
    pub(crate) payments: usize,
    pub(crate) workers: usize,
    pub(crate) processes: usize,
    pub(crate) chaos: bool,
    pub(crate) lock: bool,
    /// Lock node URLs; empty means: start a local cluster.
    pub(crate) nodes: Vec<String>,
    /// The store; `None` means: start a local server.
    pub(crate) store_url: Option<String>,
    pub(crate) timeout: Duration,
    pub(crate) progress: bool,
    /// The binary run as worker process; `None` means this one.
    pub(crate) worker_exe: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            payments: 200,
            workers: 8,
            processes: 1,
            chaos: false,
            lock: true,
            nodes: Vec::new(),
            store_url: None,
            // Well under the minute the README promises, with room for a slow start.
            timeout: Duration::from_secs(45),
            progress: true,
            worker_exe: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The queue is empty.
    Finished,
    /// Ctrl-C (or the caller's stop token).
    Interrupted,
    /// `--timeout` ran out.
    TimedOut,
}

/// What a run did, read back from the store.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    pub(crate) lock: bool,
    pub(crate) ending: Ending,
    pub(crate) payments: usize,
    pub(crate) completed: usize,
    pub(crate) charges: usize,
    /// Payments with more than one charge in the ledger.
    pub(crate) double_charges: usize,
    /// Charges beyond the first, summed over all payments.
    pub(crate) extra_charges: usize,
    pub(crate) stats: HashMap<String, u64>,
    pub(crate) latency_p50: Option<Duration>,
    pub(crate) latency_p99: Option<Duration>,
    pub(crate) faults: u64,
    pub(crate) elapsed: Duration,
    pub(crate) warnings: Vec<String>,
    /// The first lock failure other than a conflict, with each node's cause.
    pub(crate) first_lock_failure: Option<String>,
}

impl Summary {
    /// A counter summed over all workers (0 when none counted it).
    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.stats.get(name).copied().unwrap_or(0)
    }

    /// Whether the run failed its promise: with the lock, no payment is charged twice
    /// and none is left. Without the lock, double charges are the expected lesson.
    pub(crate) fn failed(&self) -> bool {
        self.lock && (self.double_charges > 0 || self.completed < self.payments)
    }

    /// The process exit status for this summary.
    pub(crate) fn exit_code(&self) -> i32 {
        match self.ending {
            Ending::Interrupted => 130,
            _ if self.failed() => 1,
            _ => 0,
        }
    }

    /// The summary as printed; the last line is `double charges: N`.
    pub(crate) fn render(&self) -> String {
        let ms = |d: Option<Duration>| {
            d.map_or_else(
                || "-".to_owned(),
                |d| format!("{:.1} ms", d.as_secs_f64() * 1e3),
            )
        };
        let mut out = String::new();
        let ending = match self.ending {
            Ending::Finished => "finished",
            Ending::Interrupted => "interrupted by Ctrl-C",
            Ending::TimedOut => "stopped by --timeout",
        };
        out += &format!(
            "== summary ({}, {ending})\n",
            if self.lock { "locks on" } else { "NO LOCK" }
        );
        let rows: [(&str, String); 12] = [
            (
                "payments completed",
                format!("{} / {}", self.completed, self.payments),
            ),
            ("charges made", self.charges.to_string()),
            ("provider calls", self.stat("provider_calls").to_string()),
            ("lock acquisitions", self.stat("acquisitions").to_string()),
            ("lock conflicts", self.stat("conflicts").to_string()),
            ("no quorum (retried)", self.stat("no_quorum").to_string()),
            (
                "lock latency",
                format!("p50 {}, p99 {}", ms(self.latency_p50), ms(self.latency_p99)),
            ),
            ("stale writes refused", self.stat("refused").to_string()),
            (
                "stale reads refused",
                self.stat("refused_reads").to_string(),
            ),
            ("faults injected", self.faults.to_string()),
            ("store errors", self.stat("store_errors").to_string()),
            ("elapsed", format!("{:.2} s", self.elapsed.as_secs_f64())),
        ];
        for (name, value) in rows {
            out += &format!("{name:<22}{value}\n");
        }
        for w in &self.warnings {
            out += &format!("warning: {w}\n");
        }
        if self.double_charges > 0 {
            out += &format!(
                "{} payments were charged more than once ({} extra charges){}\n",
                self.double_charges,
                self.extra_charges,
                if self.lock {
                    ""
                } else {
                    ": this is what the lock prevents"
                }
            );
        }
        if self.lock && self.completed < self.payments {
            out += &format!(
                "{} payments were left unprocessed\n",
                self.payments - self.completed
            );
            if let Some(failure) = &self.first_lock_failure {
                out += &format!("the first lock failure, with each node's cause:\n  {failure}\n");
            }
        }
        out += &format!("double charges: {}", self.double_charges);
        out
    }
}

/// The `p`-th percentile (0..=100) of sorted `values`, nearest rank.
pub(crate) fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn local_cluster(nodes: usize) -> Result<Cluster, String> {
    let start = Cluster::builder()
        .nodes(nodes)
        .persistence(Persistence::Memory)
        .start();
    match tokio::time::timeout(CLUSTER_START, start).await {
        Ok(Ok(c)) => Ok(c),
        Ok(Err(e)) => Err(format!("could not start local redis-server processes: {e}")),
        Err(_) => Err(format!(
            "local redis-server processes not up within {CLUSTER_START:?}"
        )),
    }
}

/// Runs the whole demonstration and returns what happened. The local servers it started
/// are stopped when it returns. Cancelling `stop` lets every worker finish the payment it
/// is on, release its lock and stop; the summary then shows what was done.
pub(crate) async fn run(cfg: Config, stop: CancellationToken) -> Result<Summary, String> {
    let lock_cluster = match cfg.nodes.is_empty() {
        true => Some(local_cluster(LOCAL_NODES).await?),
        false => None,
    };
    let nodes = lock_cluster
        .as_ref()
        .map_or_else(|| cfg.nodes.clone(), Cluster::urls);
    // The store is its own server, apart from the lock nodes, reached directly: it is
    // the payments database, not part of the lock, and chaos does not touch it.
    let store_cluster = match cfg.store_url {
        None => Some(local_cluster(1).await?),
        Some(_) => None,
    };
    let store_url = match &store_cluster {
        Some(c) => c.node(0).direct_url(),
        None => cfg.store_url.clone().unwrap_or_default(),
    };
    let prefix = format!(
        "payments:{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis())
    );
    let keys = Keys::new(&prefix);
    let mut store = worker::connect_store(&store_url).await?;
    worker::seed(&mut store, &keys, cfg.payments)
        .await
        .map_err(|e| format!("seeding the store failed: {e}"))?;
    let spec = WorkerSpec {
        nodes,
        store_url,
        prefix,
        lock: cfg.lock,
        chaos: cfg.chaos,
        workers: cfg.workers,
        pick_among: cfg.workers,
        process: 0,
    };
    if cfg.progress {
        eprintln!(
            "{} payments pending; {} workers in {} process(es); {}; {} lock nodes ({}); store {}",
            cfg.payments,
            cfg.workers,
            cfg.processes,
            if cfg.lock {
                "lock + fencing on"
            } else {
                "NO LOCK"
            },
            spec.nodes.len(),
            if lock_cluster.is_some() {
                "local"
            } else {
                "given"
            },
            if store_cluster.is_some() {
                "local"
            } else {
                "given"
            },
        );
    }

    let started = Instant::now();
    let workers_stop = CancellationToken::new();
    let mut workers = if cfg.processes <= 1 {
        tokio::spawn(worker::run_workers(spec, workers_stop.clone()))
    } else {
        let exe = match &cfg.worker_exe {
            Some(p) => p.clone(),
            None => {
                std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?
            }
        };
        tokio::spawn(run_processes(
            exe,
            spec,
            cfg.processes,
            workers_stop.clone(),
        ))
    };

    let faults = AtomicU64::new(0);
    let (progress_tx, progress_rx) = watch::channel(0usize);
    let chaos = async {
        match (&lock_cluster, cfg.chaos) {
            (Some(cluster), true) => {
                let ctx = Chaos {
                    cluster,
                    store: store.clone(),
                    keys: &keys,
                    faults: &faults,
                    verbose: cfg.progress,
                };
                chaos(ctx, cfg.payments, progress_rx).await
            }
            _ => Ok(()),
        }
    };
    let monitor = async {
        let mut tick = tokio::time::interval(POLL);
        let mut last_line = Instant::now();
        let mut ending = Ending::Finished;
        let mut failure_shown = false;
        let mut conn = store.clone();
        let result = loop {
            tokio::select! {
                res = &mut workers => break res.map_err(|e| format!("workers failed: {e}")).and_then(|r| r),
                _ = stop.cancelled(), if ending == Ending::Finished => {
                    ending = Ending::Interrupted;
                    workers_stop.cancel();
                }
                _ = tick.tick() => {
                    let Ok((pending, charges, failure)) = queue_state(&mut conn, &keys).await else { continue };
                    let done = cfg.payments.saturating_sub(pending);
                    progress_tx.send_replace(done);
                    // Once, as soon as a lock attempt failed for a reason other than a
                    // conflict: with unreachable nodes, the only line saying why
                    // nothing gets done.
                    if let (Some(failure), false, true) = (failure, failure_shown, cfg.progress) {
                        failure_shown = true;
                        eprintln!(
                            "[{:5.1}s] a lock attempt failed (later failures are only counted):\n  {failure}",
                            started.elapsed().as_secs_f64(),
                        );
                    }
                    if cfg.progress && last_line.elapsed() >= PROGRESS_EVERY {
                        last_line = Instant::now();
                        eprintln!(
                            "[{:5.1}s] {done}/{} completed, {charges} charges, {} faults injected",
                            started.elapsed().as_secs_f64(),
                            cfg.payments,
                            faults.load(Ordering::Relaxed),
                        );
                    }
                    if started.elapsed() >= cfg.timeout && ending == Ending::Finished {
                        ending = Ending::TimedOut;
                        workers_stop.cancel();
                    }
                }
            }
        };
        let elapsed = started.elapsed();
        // Closing the channel tells chaos that the run is over: it injects no more
        // faults and only undoes the ones in flight.
        drop(progress_tx);
        (ending, elapsed, result)
    };
    let (chaos_result, (ending, elapsed, worker_result)) = tokio::join!(chaos, monitor);
    worker_result?;
    let mut summary = read_summary(&mut store, &keys, &cfg, ending, elapsed).await?;
    summary.faults = faults.load(Ordering::Relaxed);
    if let Err(e) = chaos_result {
        summary.warnings.push(format!("chaos: {e}"));
    }
    Ok(summary)
}

async fn queue_state(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
) -> redis::RedisResult<(usize, usize, Option<String>)> {
    redis::pipe()
        .zcard(keys.pending())
        .llen(keys.ledger())
        .get(keys.first_lock_failure())
        .query_async(conn)
        .await
}

async fn read_summary(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    cfg: &Config,
    ending: Ending,
    elapsed: Duration,
) -> Result<Summary, String> {
    #[allow(clippy::type_complexity)]
    let (statuses, charges, per_payment, stats, mut latencies, first_lock_failure): (
        Vec<String>,
        usize,
        Vec<u64>,
        HashMap<String, u64>,
        Vec<u64>,
        Option<String>,
    ) = redis::pipe()
        .hvals(keys.status())
        .llen(keys.ledger())
        .hvals(keys.charges())
        .hgetall(keys.stats())
        .lrange(keys.latencies(), 0, -1)
        .get(keys.first_lock_failure())
        .query_async(conn)
        .await
        .map_err(|e| format!("reading the results from the store failed: {e}"))?;
    latencies.sort_unstable();
    let us = |p| percentile(&latencies, p).map(Duration::from_micros);
    Ok(Summary {
        lock: cfg.lock,
        ending,
        payments: cfg.payments,
        completed: statuses.iter().filter(|s| *s == "completed").count(),
        charges,
        double_charges: per_payment.iter().filter(|&&n| n > 1).count(),
        extra_charges: per_payment
            .iter()
            .map(|&n| n.saturating_sub(1) as usize)
            .sum(),
        stats,
        latency_p50: us(50.0),
        latency_p99: us(99.0),
        faults: 0,
        elapsed,
        warnings: Vec::new(),
        first_lock_failure,
    })
}

/// Runs the workers as `processes` copies of `exe` in worker mode, and waits for them.
/// Cancelling `stop` closes their stdin, which tells them to stop.
async fn run_processes(
    exe: PathBuf,
    spec: WorkerSpec,
    processes: usize,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    for p in 0..processes {
        let share = spec.workers / processes + usize::from(p < spec.workers % processes);
        let spec = WorkerSpec {
            workers: share,
            process: p,
            ..spec.clone()
        };
        let mut child = tokio::process::Command::new(&exe)
            .args(worker_args(&spec))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker process {}: {e}", exe.display()))?;
        stdins.push(child.stdin.take());
        children.push(child);
    }
    let waits = futures::future::join_all(children.iter_mut().map(|c| c.wait()));
    tokio::pin!(waits);
    let statuses = tokio::select! {
        s = &mut waits => s,
        _ = stop.cancelled() => {
            stdins.clear();
            tokio::time::timeout(CHILD_GRACE, &mut waits)
                .await
                // Dropping the children kills the ones still running.
                .map_err(|_| format!("worker processes did not stop within {CHILD_GRACE:?}; killed"))?
        }
    };
    for (i, status) in statuses.into_iter().enumerate() {
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(format!("worker process {i} failed: {s}")),
            Err(e) => return Err(format!("waiting for worker process {i} failed: {e}")),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank_against_naive() {
        assert_eq!(percentile(&[], 50.0), None);
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 99.0), Some(7));
        // Naive oracle: the smallest value with at least p% of values at or below it.
        let w = [1, 3, 3, 8, 9, 20, 21];
        for p in [1.0, 10.0, 50.0, 75.0, 99.0] {
            let naive = *w
                .iter()
                .find(|&&x| {
                    w.iter().filter(|&&y| y <= x).count() as f64 >= p / 100.0 * w.len() as f64
                })
                .unwrap();
            assert_eq!(percentile(&w, p), Some(naive), "p{p}");
        }
    }
}
