//! Runs a [`Schedule`] against a cluster: client tasks doing the drawn operations, the
//! drawn faults, the sampler, one or two client processes per episode (`procs.rs`), and
//! after each episode the ghost check.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_redlock::Redlock;
use tokio_redlock_harness::checker;
use tokio_redlock_harness::history::{now_ns, History};
use tokio_redlock_harness::Cluster;
use tokio_util::sync::CancellationToken;

use super::client::{Client, Holding};
use super::direct::Direct;
use super::oracle::{HoldBar, Kind, Oracle, Violation};
use super::procs;
use super::schedule::{ms, How, MgrSpec, Op, Schedule, Step, RESOURCES};

// An episode's operations and faults (`run_episode`), and the end of its tail: the flap
// probe and the ghost check (`flap_probe`, `ghosts`), which names
// `super::rw_and_permits` from there.
mod episode;
mod tail;
use super::rw_and_permits;
use episode::run_episode;
use tail::{flap_probe, ghosts};

/// Extra wait after the longest node timeout before the ghost check (the "+ slack").
pub const GHOST_SLACK: Duration = Duration::from_millis(200);
/// A key found by the ghost check counts only if it is still there this much later
/// (or after a release's own deadline, if that is longer).
pub const GHOST_RECHECK: Duration = Duration::from_millis(500);
/// A release or undo may take this many node timeouts to land, after waiting at most
/// one for its value's earlier requests (docs/design.md, "Releases and undos").
const CLEAR_TIMEOUTS: u32 = 4;
/// Longest a request can sit in a proxy (the largest drawn latency or spike), plus margin.
const MAX_PROXY_HOLD: Duration = Duration::from_millis(600);

/// A fault as the timeline draws it.
#[derive(Debug, Clone)]
pub struct FaultBar {
    pub node: usize,
    pub kind: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What a run did and found.
pub struct Outcome {
    /// In-process and client processes' together.
    pub acquisitions: u64,
    /// Of the acquisitions, those of client processes.
    pub proc_acquisitions: u64,
    /// The client processes, one line each, for the script.
    pub procs: Vec<String>,
    pub faults: u64,
    pub violations: Vec<Violation>,
    /// Per violation, the episode it was found in.
    pub violation_episodes: Vec<usize>,
    pub bars: Vec<HoldBar>,
    pub fault_bars: Vec<FaultBar>,
    pub history: History,
    pub start_ns: u64,
    pub end_ns: u64,
    pub samples: u64,
}

/// Distinct key names per run, so nothing of an earlier run (a background task) interferes.
static RUN: AtomicU64 = AtomicU64::new(0);

pub fn build(urls: &[String], s: &MgrSpec) -> Option<Redlock> {
    Redlock::builder()
        .nodes(urls.iter().cloned())
        .fencing(s.fencing)
        .retry_count(s.retry_count)
        .retry_delay(ms(s.retry_delay_ms))
        .retry_jitter(ms(s.jitter_ms))
        .drift_factor(s.drift)
        .node_timeout(ms(s.node_timeout_ms))
        .wake_on_release(s.wake)
        .build()
        .ok()
}

/// Every key on every node, with its value (strings) or its type.
pub async fn snapshot(conns: &mut [Direct]) -> BTreeSet<(usize, String, String)> {
    let mut out = BTreeSet::new();
    for (i, d) in conns.iter_mut().enumerate() {
        let Some(mut con) = d.connection().await else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        for k in keys {
            let t: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap_or_default();
            let v = if t == "string" {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<String>>(&mut con)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            } else {
                format!("<{t}>")
            };
            out.insert((i, k, v));
        }
    }
    out
}

/// Runs `sched` on `cluster` (which must be healthy and empty), with client processes
/// drawn from its seed beside the in-process clients.
pub async fn run(cluster: Arc<Cluster>, sched: &Schedule) -> Outcome {
    let plan = match procs::enabled() {
        true => procs::plan(sched.seed, sched.workload, sched.episodes.len()),
        false => Vec::new(),
    };
    run_with(cluster, sched, plan).await
}

/// Runs `sched` with its in-process clients only (for the shrinker).
pub async fn run_in_process(cluster: Arc<Cluster>, sched: &Schedule) -> Outcome {
    run_with(cluster, sched, Vec::new()).await
}

/// Keeps of `found` what is still there [`GHOST_RECHECK`] later: a straggler delayed by a
/// loaded machine is gone by then, a ghost lives on until its ttl.
pub async fn recheck(
    direct: &mut [Direct],
    mut found: Vec<((usize, String, String), String)>,
    patience: Duration,
) -> Vec<((usize, String, String), String)> {
    if !found.is_empty() {
        tokio::time::sleep(patience).await;
        let again = snapshot(direct).await;
        found.retain(|(entry, _)| again.contains(entry));
    }
    found
}

async fn run_with(cluster: Arc<Cluster>, sched: &Schedule, plan: Vec<Vec<procs::Spec>>) -> Outcome {
    let run_id = RUN.fetch_add(1, Ordering::Relaxed);
    super::panics::install_panic_hook();
    super::panics::take_panics();
    let urls = cluster.urls();
    let max_nt = sched
        .managers
        .iter()
        .flat_map(|m| m.iter())
        .map(|s| ms(s.node_timeout_ms))
        .chain(plan.iter().flatten().map(|p| ms(p.node_timeout_ms)))
        .max()
        .unwrap_or_default();
    let oracle = Oracle::new(cluster.len(), max_nt + MAX_PROXY_HOLD + GHOST_SLACK);
    let rec = oracle.recorder().clone();
    let acquisitions = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(oracle.clone().sample(cluster.direct_urls(), stop.clone()));
    let mut direct: Vec<Direct> = cluster.direct_urls().into_iter().map(Direct::new).collect();
    let start_ns = now_ns();
    let mut fault_bars = Vec::new();
    let mut faults = 0;
    let mut violation_episodes = Vec::new();
    let mut ops: Vec<u64> = vec![0; sched.managers.len()];
    let (mut proc_histories, mut proc_reported, mut proc_lines) = (Vec::new(), 0, Vec::new());
    for (e, episode) in sched.episodes.iter().enumerate() {
        let prefix = format!("x{run_id}e{e}");
        // Fresh managers every episode: first connections and first subscriptions are
        // made under the episode's faults (a wait must not hang on a silent node's
        // subscription, nor a release overtake a request waiting for a connection).
        let mut managers: Vec<Arc<[Option<Redlock>; 2]>> = Vec::new();
        for (c, [a, b]) in sched.managers.iter().enumerate() {
            let shared = c > 0 && sched.shared.get(c).copied().unwrap_or(false);
            let own = || Arc::new([build(&urls, a), build(&urls, b)]);
            managers.push(if shared { managers[0].clone() } else { own() });
        }
        let make = |c: usize, op: u64, holding: Option<Holding>, tail: bool| Client {
            id: c as u32,
            mgrs: managers[c].clone(),
            specs: sched.managers[c].clone(),
            oracle: oracle.clone(),
            rec: rec.clone(),
            acquisitions: acquisitions.clone(),
            // Clients contend within a group of resources (one group unless a soak).
            prefix: format!("{prefix}g{}", c / sched.workload.contending()),
            op,
            holding,
            tail,
        };
        let before = oracle.violations().len();
        let specs = plan.get(e).map_or(&[][..], Vec::as_slice);
        proc_lines.extend(specs.iter().map(|p| format!("episode {e}: {p}")));
        let running = procs::start(specs, &urls, &procs::resources(&prefix, sched.workload)).await;
        let (holdings, bars) = run_episode(&cluster, episode, &make, &mut ops, &oracle).await;
        faults += episode.faults.len() as u64;
        fault_bars.extend(bars);
        // Heal everything, let the last requests land, then see what the nodes hold.
        if let Err(e) = cluster.clear_faults().await {
            eprintln!("explore: clearing faults failed: {e}");
        }
        let _ = cluster.wait_healthy(Duration::from_secs(10)).await;
        tokio::time::sleep(max_nt + MAX_PROXY_HOLD).await;
        // Whatever was sent under the faults has landed: the processes stop now.
        let stopped = running.finish(&mut direct, &oracle, cluster.len()).await;
        proc_reported += stopped.reported;
        proc_histories.extend(stopped.histories);
        let before_tail = snapshot(&mut direct).await;
        // The tail: everyone releases, then takes and releases a contended lock twice.
        let mut tail = JoinSet::new();
        for (c, holding) in holdings.into_iter().enumerate() {
            let mut client = make(c, ops[c], holding, true);
            let tail_mgr = sched.tail_manager(c);
            tail.spawn(async move {
                let mut steps = vec![Step {
                    think_ms: 0,
                    op: Op::Release { budget_ms: None },
                }];
                let mgr = tail_mgr;
                for _ in 0..mgr.map_or(0, |_| 2) {
                    let mgr = mgr.unwrap_or(0);
                    let res = (c % RESOURCES as usize) as u8;
                    let ttl_ms = 2_000;
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Acquire {
                            mgr,
                            res,
                            how: How::TryAcquire,
                            ttl_ms,
                            budget_ms: None,
                        },
                    });
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Hold { ms: 2 },
                    });
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Release { budget_ms: None },
                    });
                }
                client.run(&steps, None).await;
                (c, client.op)
            });
        }
        while let Some(joined) = tail.join_next().await {
            match joined {
                Ok((c, op)) => ops[c] = op,
                Err(e) => oracle.flag(
                    Kind::Panic,
                    None,
                    format!("a client panicked in the tail: {e}"),
                ),
            }
        }
        let probe = flap_probe(
            &cluster,
            &urls,
            &prefix,
            &oracle,
            &rec,
            &acquisitions,
            sched,
            e,
        );
        faults += probe.await;
        faults += super::late::late_probe(
            &cluster,
            &urls,
            &prefix,
            &oracle,
            &rec,
            &acquisitions,
            sched,
            e,
        )
        .await;
        tokio::time::sleep(max_nt + GHOST_SLACK).await;
        let after = snapshot(&mut direct).await;
        let found = ghosts(&oracle, &before_tail, &after, &prefix);
        let patience = GHOST_RECHECK.max(max_nt * CLEAR_TIMEOUTS);
        for ((node, key, value), what) in recheck(&mut direct, found, patience).await {
            // When it was set, told by what is left of its ttl.
            let mut pttl = None;
            if let Some(mut con) = direct[node].connection().await {
                pttl = redis::cmd("PTTL")
                    .arg(&key)
                    .query_async::<i64>(&mut con)
                    .await
                    .ok();
            }
            let value: String = value.chars().take(12).collect();
            oracle.flag(
                Kind::Ghost,
                None,
                format!("{what} (value {value}…, pttl {pttl:?} ms)"),
            );
        }
        for d in direct.iter_mut() {
            if let Some(mut con) = d.connection().await {
                let _: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut con).await;
            }
        }
        let now = oracle.violations().len();
        violation_episodes.extend(std::iter::repeat_n(e, now - before));
    }
    stop.cancel();
    let _ = sampler.await;
    let history = procs::merge(rec.history(), proc_histories, proc_reported);
    let proc_acquisitions = procs::acquisitions(&history);
    let before = oracle.violations().len();
    for v in checker::claims(&procs::claims_input(&history)) {
        oracle.flag(Kind::Claim, None, v.what);
    }
    for v in checker::fencing(&history) {
        oracle.flag(Kind::Fencing, None, v.what);
    }
    super::rw_and_permits::check(&history, &oracle);
    for p in super::panics::take_panics() {
        oracle.flag(Kind::Panic, None, format!("library code panicked: {p}"));
    }
    let last = sched.episodes.len().saturating_sub(1);
    violation_episodes.extend(std::iter::repeat_n(
        last,
        oracle.violations().len() - before,
    ));
    let mut bars = oracle.bars();
    bars.extend(procs::bars(&history));
    Outcome {
        acquisitions: acquisitions.load(Ordering::Relaxed) + proc_acquisitions,
        proc_acquisitions,
        procs: proc_lines,
        faults,
        violations: oracle.violations(),
        violation_episodes,
        bars,
        fault_bars,
        history,
        start_ns,
        end_ns: now_ns(),
        samples: oracle.samples.load(Ordering::Relaxed),
    }
}
