//! The explorer: random API calls and faults against real servers, judged by oracles
//! that compare what guards and leases believe with what the nodes store
//! (docs/safety-suite.md, "The explorer").
//!
//! `cargo test --all-features --test safety explore -- --nocapture` runs a fixed seed on
//! each workload and ends with `explore: A acquisitions, F faults, V violations, seed S`.
//! - `REDLOCK_EXPLORE_SECS=n`: random seeds for `n` seconds per workload.
//! - `REDLOCK_EXPLORE_SEED=s`, `REDLOCK_EXPLORE_WORKLOAD=api|crash`: replay one run.
//! - `REDLOCK_EXPLORE_SHRINK_SECS=n`: time for shrinking a failure (default 50 s in all).
//! - `REDLOCK_EXPLORE_PROCS=0`: no client processes (one or two per episode otherwise).
//! - `REDLOCK_EXPLORE_STRICT=0`: report violations without failing the test (it fails
//!   on any violation otherwise).

mod client;
mod direct;
mod driver;
mod late;
mod oracle;
mod panics;
mod procs;
mod rw_and_permits;
mod schedule;
mod selftest;
mod shrink;
mod timeline;
mod traced;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock_harness::Cluster;

use driver::Outcome;
use oracle::Kind;
use schedule::{Schedule, Workload};

/// The seed of the CI run.
const FIXED_SEED: u64 = 20_261_130;
/// Shrinking time for all failures of one test run together, unless set.
const DEFAULT_SHRINK: Duration = Duration::from_secs(50);

fn env<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("explore");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// Writes the timeline, history and script of a run; returns the timeline's path.
fn write_artifacts(name: &str, sched: &Schedule, out: &Outcome) -> PathBuf {
    let dir = out_dir();
    let title = format!(
        "{name}: {} acquisitions, {} faults, {} violations",
        out.acquisitions,
        out.faults,
        out.violations.len()
    );
    let svg = dir.join(format!("{name}.svg"));
    let _ = std::fs::write(&svg, timeline::svg(out, sched.workload.nodes(), &title));
    let _ = out.history.write_file(&dir.join(format!("{name}.history")));
    let mut script = sched.to_string();
    for line in &out.procs {
        script.push_str(&format!("# {line}\n"));
    }
    for v in &out.violations {
        script.push_str(&format!("# violation: {v}\n"));
    }
    let _ = std::fs::write(dir.join(format!("{name}.script")), script);
    svg
}

struct Totals {
    acquisitions: u64,
    faults: u64,
    violations: usize,
    shrink_left: Duration,
    failing_seed: Option<u64>,
}

async fn start(w: Workload) -> Arc<Cluster> {
    let cluster = tokio::time::timeout(
        Duration::from_secs(30),
        Cluster::builder()
            .nodes(w.nodes())
            .persistence(w.persistence())
            .start(),
    )
    .await
    .expect("cluster start timed out")
    .expect("cluster starts");
    Arc::new(cluster)
}

async fn run_seed(cluster: &Arc<Cluster>, w: Workload, seed: u64, totals: &mut Totals) {
    let sched = Schedule::generate(seed, w);
    let started = Instant::now();
    let out = driver::run(cluster.clone(), &sched).await;
    let name = format!("{}-{seed}", w.name());
    let svg = write_artifacts(&name, &sched, &out);
    println!(
        "explore: workload {} seed {seed}: {} ops, {} acquisitions ({} by {} client processes), {} faults, {} samples, {} violations in {:.1}s; timeline {}",
        w.name(),
        sched.ops(),
        out.acquisitions,
        out.proc_acquisitions,
        out.procs.len(),
        out.faults,
        out.samples,
        out.violations.len(),
        started.elapsed().as_secs_f64(),
        svg.display()
    );
    totals.acquisitions += out.acquisitions;
    totals.faults += out.faults;
    totals.violations += out.violations.len();
    if out.violations.is_empty() {
        return;
    }
    totals.failing_seed.get_or_insert(seed);
    let mut by_kind: std::collections::BTreeMap<Kind, Vec<&oracle::Violation>> = Default::default();
    for v in &out.violations {
        by_kind.entry(v.kind).or_default().push(v);
    }
    for (kind, list) in &by_kind {
        println!("  {} {kind} violation(s), e.g.:", list.len());
        for v in list.iter().take(3) {
            println!("    {v}");
        }
    }
    println!(
        "  replay: REDLOCK_EXPLORE_SEED={seed} REDLOCK_EXPLORE_WORKLOAD={} cargo test --all-features --test safety explore -- --nocapture",
        w.name()
    );
    // One shrink per kind found, the most serious first, sharing the time left.
    let mut kinds: Vec<Kind> = by_kind.keys().copied().collect();
    kinds.sort_by_key(|k| SERIOUS.iter().position(|s| s == k).unwrap_or(SERIOUS.len()));
    let count = kinds.len();
    for (i, kind) in kinds.into_iter().enumerate() {
        if totals.shrink_left.is_zero() {
            break;
        }
        let share = totals.shrink_left / u32::try_from(count - i).unwrap_or(1);
        let first = out
            .violations
            .iter()
            .position(|v| v.kind == kind)
            .and_then(|i| out.violation_episodes.get(i).copied())
            .unwrap_or(0);
        let began = Instant::now();
        let target = BTreeSet::from([kind]);
        let shrunk = shrink::shrink(cluster.clone(), &sched, &target, first, share).await;
        totals.shrink_left = totals.shrink_left.saturating_sub(began.elapsed());
        println!(
            "  {kind}: shrunk in {} runs ({:.0}s) to {} ops and {} faults{}",
            shrunk.runs,
            began.elapsed().as_secs_f64(),
            shrunk.schedule.ops(),
            shrunk.schedule.faults(),
            if shrunk.outcome.is_some() {
                ", still failing:"
            } else {
                " (no smaller run failed)"
            }
        );
        let Some(o) = &shrunk.outcome else { continue };
        for line in shrunk.schedule.to_string().lines() {
            println!("  | {line}");
        }
        for v in o.violations.iter().filter(|v| v.kind == kind).take(3) {
            println!("  | violation: {v}");
        }
        let svg = write_artifacts(&format!("{name}-{kind}-shrunk"), &shrunk.schedule, o);
        println!("  | timeline: {}", svg.display());
    }
}

/// The order in which found kinds are shrunk, while the shrinking time lasts.
const SERIOUS: [Kind; 10] = [
    Kind::Belief,
    Kind::Claim,
    Kind::Exclusion,
    Kind::SharedValue,
    Kind::Revived,
    Kind::Fencing,
    Kind::Ghost,
    Kind::Panic,
    Kind::Attempts,
    Kind::CallBound,
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explore() {
    let secs: Option<u64> = env("REDLOCK_EXPLORE_SECS");
    let seed: Option<u64> = env("REDLOCK_EXPLORE_SEED");
    let strict = std::env::var("REDLOCK_EXPLORE_STRICT").map_or(true, |v| v != "0");
    let workloads: Vec<Workload> = match std::env::var("REDLOCK_EXPLORE_WORKLOAD") {
        Ok(w) => vec![Workload::parse(&w).expect("REDLOCK_EXPLORE_WORKLOAD is api or crash")],
        Err(_) => Workload::ALL.to_vec(),
    };
    let mut totals = Totals {
        acquisitions: 0,
        faults: 0,
        violations: 0,
        shrink_left: env::<u64>("REDLOCK_EXPLORE_SHRINK_SECS")
            .map_or(DEFAULT_SHRINK, Duration::from_secs),
        failing_seed: None,
    };
    println!("explore: oracle {}", oracle::describe());
    println!(
        "explore: attempts counted from the crate's traces: {}",
        if traced::installed() {
            "yes"
        } else {
            "NO (another global tracing subscriber was installed first)"
        }
    );
    let base = seed.unwrap_or(FIXED_SEED);
    for w in workloads {
        let cluster = start(w).await;
        match (secs, seed) {
            (Some(secs), None) => {
                let until = Instant::now() + Duration::from_secs(secs);
                while Instant::now() < until {
                    run_seed(&cluster, w, rand::random(), &mut totals).await;
                }
            }
            _ => run_seed(&cluster, w, base, &mut totals).await,
        }
    }
    println!(
        "explore: {} attempts traced inside the explorer's calls",
        traced::total()
    );
    let shown = totals.failing_seed.unwrap_or(base);
    println!(
        "explore: {} acquisitions, {} faults, {} violations, seed {shown}",
        totals.acquisitions, totals.faults, totals.violations
    );
    if strict {
        assert_eq!(
            totals.violations, 0,
            "the explorer found violations (see above)"
        );
    }
}
