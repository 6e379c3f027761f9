//! Known-unsafe runs: the named checker must flag them (a clean result fails the test);
//! and the restart quarantine that makes the first of them safe.

use std::path::Path;
use std::time::Duration;

use tokio_redlock_harness::checker::Check;
use tokio_redlock_harness::history::Recorder;
use tokio_redlock_harness::Persistence;

use super::{cluster, config_set, plain_report, LONG_TTL};
use crate::support;
use crate::workload::{self, Store};

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
    // Its requests must have landed (or be over) before the restarts: one still on
    // its way would be sent again on the new connection (within its deadline) and set
    // the key on the restarted node, which is the acquisition doing its job (seen in CI).
    crate::support::landed_or_abandoned(&cluster, &a, "r", workload::PATIENT_NODE_TIMEOUT).await;
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
    // Its requests must all have landed (or be over) before the power goes: one in flight to
    // a node being restored (the round decides at a quorum) would be re-sent to the old
    // data and raise its counter, and the retry of the next holder would then get a
    // fresh token instead of the one handed out twice.
    support::landed_or_abandoned(&cluster, &a, "r", workload::PATIENT_NODE_TIMEOUT).await;
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
