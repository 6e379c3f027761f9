//! The safety suite: workloads under faults, checked by the harness checkers (C1-C4), and
//! known-unsafe runs and crate mutants that the checkers must flag.
//!
//! Each test prints one row of the summary table (run with `-- --nocapture` to see it):
//! scenario, seed, acquisitions, faults, violations C1/C2/C3/C4, expected.
//! `REDLOCK_SEED` replays a seed; `REDLOCK_SOAK_SECS` lengthens every workload and draws
//! random seeds. See docs/safety-suite.md.

use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock_harness::checker::{Check, Report};
use tokio_redlock_harness::history::{now_ns, Recorder};
use tokio_redlock_harness::{Cluster, Persistence};

use crate::support;
use crate::workload::{self, Plan, Store};

/// The workload length of the default (short) run: enough for hundreds of acquisitions
/// and a handful of faults, short enough for the whole suite to stay near a minute.
const RUN: Duration = Duration::from_secs(6);
/// Clients per workload: 8, each with its own managers and connections.
const CLIENTS: u32 = 8;

/// The proxy delay of the slow-replies fault: beyond the longest TTL.
const SLOW_REPLY: Duration = Duration::from_millis(1200);

#[derive(Clone, Copy, Debug)]
enum Fault {
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

/// Injects `fault` on random minorities until `run` has passed; returns the number of
/// faults and when each was healed.
async fn inject(cluster: &Cluster, fault: Fault, seed: u64, run: Duration) -> (usize, Vec<u64>) {
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
// Known-unsafe runs: the named checker must flag them (a clean result fails the test).

const LONG_TTL: Duration = Duration::from_secs(5);

fn plain_report(rec: &Recorder, counters: std::collections::HashMap<String, u64>) -> Report {
    let h = rec.history();
    let mut live = workload::liveness(Vec::new(), now_ns(), Vec::new(), Duration::ZERO);
    // Step-by-step scenarios use patient managers (10 retries, 300 ms node timeout);
    // here C4 only guards against a hang.
    live.attempt_within = Duration::from_secs(30);
    Report::run(&h, &counters, &live)
}

/// Non-persistent nodes restarted right after a holder acquired: a second holder gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_restart_without_persistence() {
    let cluster = cluster(3, Persistence::Memory).await;
    let rec = Recorder::new();
    let (a, b) = (
        workload::patient(&cluster, false),
        workload::patient(&cluster, false),
    );
    let held = workload::acquire(&rec, (1, 1), &a, "r", LONG_TTL, false).await;
    assert!(held.is_some(), "the first holder acquires");
    // Its requests must have landed everywhere before the restarts: one still on its
    // way would be sent again on the new connection (within its deadline) and set the
    // key on the restarted node, which is the acquisition doing its job (seen in CI).
    crate::support::on_every_node(&cluster, "r").await;
    for i in 0..2 {
        cluster.node(i).restart().await.expect("restart");
    }
    workload::acquire(&rec, (2, 1), &b, "r", LONG_TTL, true).await;
    let report = plain_report(&rec, Default::default());
    workload::verdict(
        "unsafe_restart_without_persistence",
        0,
        &rec.history(),
        2,
        &report,
        &[Check::Claim],
    );
}

/// Lock keys evicted under `maxmemory` with `allkeys-lru`: a second holder gets in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_eviction() {
    // volatile-ttl evicts keys with a TTL, shortest first: the filler gets a long one,
    // so the lock key (5 s) goes first. allkeys-lru evicts anything.
    for (policy, filler_ttl_ms) in [("allkeys-lru", None), ("volatile-ttl", Some(3_600_000u64))] {
        let cluster = cluster(3, Persistence::Memory).await;
        config_set(&cluster, &[0, 1, 2], "maxmemory-policy", policy).await;
        config_set(&cluster, &[0, 1, 2], "maxmemory", "4mb").await;
        let rec = Recorder::new();
        let (a, b) = (
            workload::patient(&cluster, false),
            workload::patient(&cluster, false),
        );
        assert!(workload::acquire(&rec, (1, 1), &a, "r", LONG_TTL, false)
            .await
            .is_some());
        // Fill every node with other keys until the lock key is gone (bounded).
        let mut conns = support::direct(&cluster).await;
        let filler = "x".repeat(10_000);
        for round in 0..200 {
            if support::values(&mut conns, "r")
                .await
                .iter()
                .all(Option::is_none)
            {
                break;
            }
            for c in &mut conns {
                let mut pipe = redis::pipe();
                for k in 0..100 {
                    let set = pipe
                        .cmd("SET")
                        .arg(format!("fill:{round}:{k}"))
                        .arg(&filler);
                    if let Some(ttl) = filler_ttl_ms {
                        set.arg("PX").arg(ttl);
                    }
                    set.ignore();
                }
                // Under volatile-ttl a full node may refuse writes it cannot make room
                // for; what matters is that the lock key was evicted.
                let _: redis::RedisResult<()> = pipe.query_async(c).await;
            }
        }
        workload::acquire(&rec, (2, 1), &b, "r", LONG_TTL, true).await;
        let report = plain_report(&rec, Default::default());
        workload::verdict(
            &format!("unsafe_eviction_{}", policy.replace('-', "_")),
            0,
            &rec.history(),
            1,
            &report,
            &[Check::Claim],
        );
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
    }
}

/// Power loss simulated by restoring an older copy of the AOF on a majority: the lock
/// and the fencing counter go back in time. C1 sees two holders; C3 sees a token
/// handed out twice (the third node, which remembers, is cut off meanwhile).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_power_loss() {
    let cluster = cluster(3, Persistence::AofAlways).await;
    let rec = Recorder::new();
    let first = workload::patient(&cluster, true);
    let g = workload::acquire(&rec, (1, 1), &first, "r", LONG_TTL, false)
        .await
        .expect("first");
    workload::release(&rec, (1, 1), g).await;
    // The release returns at quorum; the backup must not catch a node before its
    // straggling release landed, or the "old" data would hold a lock of its own.
    support::eventually_gone(&cluster, "r").await;
    let backup = tempfile::tempdir().expect("tempdir");
    for i in 0..2 {
        let aof = cluster.node(i).dir().join("appendonlydir");
        copy_dir(&aof, &backup.path().join(i.to_string()));
    }
    let a = workload::patient(&cluster, true);
    let held = workload::acquire(&rec, (2, 1), &a, "r", LONG_TTL, false).await;
    assert!(held.is_some());
    // Its requests must all have landed before the power goes: one still in flight to
    // a node being restored (the round decides at a quorum) would be re-sent to the old
    // data and raise its counter, and the retry of the next holder would then get a
    // fresh token instead of the one handed out twice.
    support::on_every_node(&cluster, "r").await;
    for i in 0..2 {
        let node = cluster.node(i);
        node.kill().await.expect("kill");
        let aof = node.dir().join("appendonlydir");
        std::fs::remove_dir_all(&aof).expect("rm aof");
        copy_dir(&backup.path().join(i.to_string()), &aof);
        node.restart().await.expect("restart");
    }
    cluster.node(2).partition().await.expect("partition");
    let b = workload::patient(&cluster, true);
    // A few rounds of retries: on a loaded machine the restarted nodes can be slow to
    // answer at first (each round is recorded, and bounded by its retries).
    for op in 1..=5 {
        if workload::acquire(&rec, (3, op), &b, "r", LONG_TTL, true)
            .await
            .is_some()
        {
            break;
        }
    }
    let report = plain_report(&rec, Default::default());
    workload::verdict(
        "unsafe_power_loss",
        0,
        &rec.history(),
        3,
        &report,
        &[Check::Claim, Check::Fencing],
    );
    drop(held);
}

/// A holder paused past its TTL writes without fencing: a lost update (C2), though the
/// lock itself (C1) kept its promise. The same with fencing is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_pause_unfenced() {
    for fenced in [false, true] {
        let cluster = cluster(3, Persistence::Memory).await;
        let rec = Recorder::new();
        let store = std::sync::Arc::new(Store::default());
        let a = workload::patient(&cluster, fenced);
        let ttl = Duration::from_millis(300);
        let ga = workload::acquire(&rec, (1, 1), &a, "r", ttl, false)
            .await
            .expect("a acquires");
        let token_a = ga.fencing_token();
        let paused = {
            let (rec, store) = (rec.clone(), std::sync::Arc::clone(&store));
            // A reads, then "pauses" for longer than its TTL before writing.
            tokio::spawn(async move {
                store
                    .increment(&rec, (1, 1), "r", token_a, ttl + Duration::from_millis(400))
                    .await
            })
        };
        // B waits out A's TTL (acquire retries), then does a whole increment.
        let b_lock = workload::patient(&cluster, fenced);
        let mut gb = None;
        for op in 1..=20 {
            gb = workload::acquire(&rec, (2, op), &b_lock, "r", LONG_TTL, true).await;
            if gb.is_some() {
                break;
            }
        }
        let gb = gb.expect("b acquires once a's ttl ran out");
        let token_b = gb.fencing_token();
        // The op of B's success is the last one recorded for client 2.
        let op_b = rec
            .history()
            .events
            .iter()
            .filter(|e| e.client == 2)
            .map(|e| e.op)
            .max()
            .unwrap_or(1);
        store
            .increment(&rec, (2, op_b), "r", token_b, Duration::from_millis(1))
            .await;
        support::bounded(paused).await.expect("paused client");
        workload::release(&rec, (2, op_b), gb).await;
        workload::release(&rec, (1, 1), ga).await;
        let counters = [("r".to_owned(), store.value("r"))].into_iter().collect();
        let report = plain_report(&rec, counters);
        let (name, expected) = if fenced {
            ("pause_fenced_counterpart", &[][..])
        } else {
            ("unsafe_pause_unfenced", &[Check::Use][..])
        };
        workload::verdict(name, 0, &rec.history(), 1, &report, expected);
    }
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

/// The same immediate restart, with the restart quarantine on (issue 8): the restarted
/// nodes do not vote until the quarantine (at least the ttl) has passed since they
/// started, so the second holder gets in only after the first one's validity ended, and
/// C1 is clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_without_persistence_with_quarantine() {
    let ttl = Duration::from_secs(2);
    let cluster = cluster(3, Persistence::Memory).await;
    // Let the nodes age past the quarantine (uptime counts whole seconds), so that only
    // the restarted ones are young.
    tokio::time::sleep(ttl + Duration::from_secs(1)).await;
    let rec = Recorder::new();
    let a = workload::patient(&cluster, false);
    let b = tokio_redlock::Redlock::builder()
        .nodes(cluster.urls())
        .retry_count(60)
        .retry_delay(Duration::from_millis(100))
        .retry_jitter(Duration::from_millis(20))
        .node_timeout(Duration::from_millis(300))
        .restart_quarantine(Some(ttl))
        .build()
        .expect("valid config");
    let held = workload::acquire(&rec, (1, 1), &a, "r", ttl, false).await;
    assert!(held.is_some(), "the first holder acquires");
    for i in 0..2 {
        cluster.node(i).restart().await.expect("restart");
    }
    let second = workload::acquire(&rec, (2, 1), &b, "r", ttl, true).await;
    assert!(
        second.is_some(),
        "the second holder gets in once the quarantine is over"
    );
    let report = plain_report(&rec, Default::default());
    workload::verdict(
        "restart_with_quarantine",
        0,
        &rec.history(),
        2,
        &report,
        &[],
    );
}
