//! The safety suite: workloads under faults, checked by the harness checkers (C1-C4), and
//! known-unsafe runs (`safety/unsafe_runs.rs`) and crate mutants that the checkers must
//! flag. The faults of the workloads and their injection are in `safety/faults.rs`.
//!
//! Each test prints one row of the summary table (run with `-- --nocapture` to see it):
//! scenario, seed, acquisitions, faults, violations C1/C2/C3/C4, expected.
//! `REDLOCK_SEED` replays a seed; `REDLOCK_SOAK_SECS` lengthens every workload and draws
//! random seeds. See docs/safety-suite.md.

use std::time::Duration;

use tokio_redlock_harness::checker::{Check, Report};
use tokio_redlock_harness::history::{now_ns, Recorder};
use tokio_redlock_harness::{Cluster, Persistence};

use crate::support;
use crate::workload::{self, Plan};

mod faults;
mod unsafe_runs;

use faults::{inject, Fault};

/// The workload length of the default (short) run: enough for hundreds of acquisitions
/// and a handful of faults, short enough for the whole suite to stay near a minute.
const RUN: Duration = Duration::from_secs(6);
/// Clients per workload: 8, each with its own managers and connections.
const CLIENTS: u32 = 8;

/// The proxy delay of the slow-replies fault: beyond the longest TTL.
const SLOW_REPLY: Duration = Duration::from_millis(1200);

async fn cluster(n: usize, persistence: Persistence) -> Cluster {
    support::cluster_with(n, persistence).await
}

async fn config_set(cluster: &Cluster, nodes: &[usize], key: &str, value: &str) {
    let mut conns = support::direct(cluster).await;
    for &i in nodes {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut conns[i])
            .await
            .expect("CONFIG SET");
    }
}

/// A safe scenario: 8 clients on 5 nodes under `fault`; every check must be clean
/// (C2 on the fenced resources).
async fn safe(name: &str, fault: Fault, persistence: Persistence, pauser: bool, default_seed: u64) {
    safe_with(name, fault, persistence, pauser, default_seed, false).await;
}

async fn safe_with(
    name: &str,
    fault: Fault,
    persistence: Persistence,
    pauser: bool,
    default_seed: u64,
    shared: bool,
) {
    let seed = workload::seed(default_seed);
    let run = workload::soak().unwrap_or(RUN);
    let cluster = cluster(5, persistence).await;
    let rec = Recorder::new();
    let plan = Plan {
        clients: CLIENTS,
        run,
        seed,
        pauser,
        shared,
    };
    let (done, (faults, heals)) = tokio::join!(
        workload::clients(&cluster, &plan, &rec),
        inject(&cluster, fault, seed, run)
    );
    let leftover = workload::leftover_keys(&cluster).await;
    // Replies slower than the TTL outlast their heal: a request already in the proxy
    // is still delivered late, and a failed attempt's SET that lands after its undo
    // (which went over a fresh connection once the node timed out twice) stands on that
    // node until its TTL. Progress is owed once those have landed and expired.
    let extra = match fault {
        Fault::SlowReplies => SLOW_REPLY + workload::MAX_TTL,
        _ => Duration::ZERO,
    };
    let live = workload::liveness(heals, done.end_ns, leftover, extra);
    let report = Report::run(
        &done.history,
        &workload::counters(&done.store, false),
        &live,
    );
    assert!(
        done.history.acquisitions() > 20,
        "scenario {name}: too few acquisitions to judge ({})",
        done.history.acquisitions()
    );
    workload::verdict(name, seed, &done.history, faults, &report, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baseline() {
    safe("baseline", Fault::None, Persistence::Memory, false, 1).await;
}

/// Issue 14: the clients are tasks of one manager pair, so the unfenced lock is handed
/// over in-process; every hand-over is a release and an acquisition for the checkers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_manager_hand_over_in_process() {
    safe_with(
        "tasks_of_one_manager",
        Fault::None,
        Persistence::Memory,
        false,
        21,
        true,
    )
    .await;
}

/// The same under minority partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_of_one_manager_under_minority_partitions() {
    safe_with(
        "tasks_of_one_manager_partitions",
        Fault::Partition,
        Persistence::Memory,
        false,
        22,
        true,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_pause() {
    safe(
        "minority_pause",
        Fault::Pause,
        Persistence::Memory,
        false,
        2,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_kill_restart_late() {
    safe(
        "minority_kill_restart_late",
        Fault::KillLate,
        Persistence::Memory,
        false,
        3,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_partition() {
    safe(
        "minority_partition",
        Fault::Partition,
        Persistence::Memory,
        false,
        4,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_latency() {
    safe(
        "minority_latency",
        Fault::Latency,
        Persistence::Memory,
        false,
        5,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_restart_aof_always() {
    safe(
        "kill_restart_aof_always",
        Fault::KillRestartAof,
        Persistence::AofAlways,
        false,
        6,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_slower_than_ttl() {
    safe(
        "replies_slower_than_ttl",
        Fault::SlowReplies,
        Persistence::Memory,
        false,
        7,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush() {
    safe(
        "script_flush",
        Fault::ScriptFlush,
        Persistence::Memory,
        false,
        8,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_error_replies() {
    safe(
        "oom_error_replies",
        Fault::Oom,
        Persistence::Memory,
        false,
        9,
    )
    .await;
}

/// A holder sleeps past its TTL before its critical section; fencing refuses its write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_pause_fenced() {
    safe(
        "client_pause_fenced",
        Fault::None,
        Persistence::Memory,
        true,
        10,
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// Step-by-step runs: the known-unsafe runs (safety/unsafe_runs.rs) and the mutants below.

const LONG_TTL: Duration = Duration::from_secs(5);

fn plain_report(rec: &Recorder, counters: std::collections::HashMap<String, u64>) -> Report {
    let h = rec.history();
    let mut live = workload::liveness(Vec::new(), now_ns(), Vec::new(), Duration::ZERO);
    // Step-by-step scenarios use patient managers (10 retries, 300 ms node timeout);
    // here C4 only guards against a hang.
    live.attempt_within = Duration::from_secs(30);
    Report::run(&h, &counters, &live)
}

// ---------------------------------------------------------------------------------------
// Mutants: `RUSTFLAGS='--cfg redlock_mutant="NAME"'` (scripts/mutants.sh). Under its own
// mutant each test must be flagged by the named checker; without any mutant it must be
// clean; under another mutant it only reports.

fn judge_mutant(mutant: &str, check: Check, rec: &Recorder) {
    let report = plain_report(rec, Default::default());
    let name = format!("mutant_{mutant}");
    match crate::support::active_mutant() {
        None => workload::verdict(&name, 0, &rec.history(), 0, &report, &[]),
        Some(m) if m == mutant => workload::verdict(&name, 0, &rec.history(), 0, &report, &[check]),
        Some(other) => println!(
            "{name} under mutant {other}: flagged {:?} (not judged)",
            report.flagged()
        ),
    }
}

/// Replies take longer than the TTL: the round is won too late to promise anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_skip_validity() {
    let cluster = cluster(3, Persistence::Memory).await;
    for i in 0..3 {
        // 150 ms each way: every reply comes 300 ms after its request, past the 200 ms TTL.
        cluster
            .node(i)
            .set_latency(Duration::from_millis(150))
            .await
            .expect("latency");
    }
    let rec = Recorder::new();
    let lock = tokio_redlock::Redlock::builder()
        .nodes(cluster.urls())
        .node_timeout(Duration::from_secs(2))
        .build()
        .expect("config");
    workload::acquire(&rec, (1, 1), &lock, "r", Duration::from_millis(200), false).await;
    judge_mutant("skip_validity", Check::Claim, &rec);
}

/// A holder whose lock expired releases late; a third client then tries to get in.
async fn late_release(mutant: &str) {
    let cluster = cluster(3, Persistence::Memory).await;
    let rec = Recorder::new();
    let (a, b, c) = (
        workload::patient(&cluster, false),
        workload::patient(&cluster, false),
        workload::patient(&cluster, false),
    );
    let ttl = Duration::from_millis(300);
    let ga = workload::acquire(&rec, (1, 1), &a, "r", ttl, false)
        .await
        .expect("a acquires");
    // Until A's key has expired on every node (bounded by the helper's wait).
    support::eventually_gone(&cluster, "r").await;
    let gb = workload::acquire(&rec, (2, 1), &b, "r", LONG_TTL, false)
        .await
        .expect("b acquires");
    // A's release, long after its TTL: it must not touch B's key.
    workload::release(&rec, (1, 1), ga).await;
    workload::acquire(&rec, (3, 1), &c, "r", LONG_TTL, false).await;
    judge_mutant(mutant, Check::Claim, &rec);
    drop(gb);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_plain_del() {
    late_release("plain_del").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_constant_value() {
    late_release("constant_value").await;
}

/// Five nodes: A reaches only two of them, then B reaches the other three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_quorum_half() {
    let cluster = cluster(5, Persistence::Memory).await;
    let rec = Recorder::new();
    let (a, b) = (
        workload::patient(&cluster, false),
        workload::patient(&cluster, false),
    );
    for i in 2..5 {
        cluster.node(i).partition().await.expect("partition");
    }
    let ga = workload::acquire(&rec, (1, 1), &a, "r", LONG_TTL, false).await;
    for i in 2..5 {
        cluster.node(i).heal().await.expect("heal");
    }
    for i in 0..2 {
        cluster.node(i).partition().await.expect("partition");
    }
    workload::acquire(&rec, (2, 1), &b, "r", LONG_TTL, false).await;
    judge_mutant("quorum_half", Check::Claim, &rec);
    drop(ga);
}

/// Counters that drifted apart: acquisitions through different majorities, one after
/// the other, each with a fresh manager (no cached counter to lean on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_incr_max() {
    let cluster = cluster(3, Persistence::Memory).await;
    let rec = Recorder::new();
    let mut op = 0;
    // (cut-off node, acquisitions while it is cut off)
    for (cut, times) in [(2, 3), (0, 1), (1, 1)] {
        cluster.node(cut).partition().await.expect("partition");
        for _ in 0..times {
            op += 1;
            let lock = workload::patient(&cluster, true);
            let g = workload::acquire(&rec, (1, op), &lock, "r", LONG_TTL, true)
                .await
                .expect("acquires");
            workload::release(&rec, (1, op), g).await;
        }
        // Past the node timeout (300 ms) of every request the cut node swallowed: they
        // were abandoned, so the heal does not send them again and the counters stay
        // apart (a request still within its deadline is re-sent on the new connection).
        tokio::time::sleep(Duration::from_millis(700)).await;
        cluster.node(cut).heal().await.expect("heal");
    }
    judge_mutant("incr_max", Check::Fencing, &rec);
}
