//! Reader-writer locks and counting semaphores against real servers, under contention:
//! n + 1 contenders on n permits (checked by C5/C6), faults of a minority of nodes
//! during use, and the per-node-counting semaphore mutant and the two reader-writer
//! mutants caught. What each kind promises on its own (readers share, a writer
//! excludes, expiry, fencing, leases) is tested in `rw_semantics.rs`.

use std::time::Duration;

use tokio_redlock::{LockGuard, LockRequest, Redlock};
use tokio_redlock_harness::checker::{self, Check, Violation};
use tokio_redlock_harness::history::{instant_ns, EventKind, Recorder};
use tokio_redlock_harness::Cluster;

use crate::support::{self, bounded, builder, cluster, WAIT};

/// The ttl of most locks here, shared with `rw_semantics.rs`.
pub(crate) const LONG: Duration = Duration::from_secs(10);

/// Records the attempt and its outcome around an acquisition of `request`.
async fn take(
    rec: &Recorder,
    id: (u32, u64),
    resource: &str,
    request: LockRequest<'_>,
) -> Option<LockGuard> {
    crate::support::recorded(rec, id, resource, request.acquire()).await
}

/// Records the release before it is sent: from then on the holder claims nothing.
async fn give_back(rec: &Recorder, id: (u32, u64), guard: LockGuard) {
    crate::support::release(rec, id, guard).await;
}

fn assert_clean(what: &str, violations: &[Violation]) {
    assert!(
        violations.is_empty(),
        "{what}: {}",
        violations
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// One client's rounds: acquire `request()` (waiting), hold `hold`, release.
async fn rounds(
    rec: Recorder,
    slots: Recorder,
    client: u32,
    rounds: u64,
    hold: Duration,
    request: impl Fn() -> LockRequest<'static>,
    resource: &'static str,
) -> u64 {
    let mut got = 0;
    for op in 0..rounds {
        if let Some(guard) = take(&rec, (client, op), resource, request()).await {
            got += 1;
            if let Some(slot) = guard.permit() {
                let kind = EventKind::Acquired {
                    valid_until_ns: instant_ns(guard.valid_until()),
                    token: None,
                };
                slots.record(client, op, &format!("{resource}#{slot}"), kind);
                tokio::time::sleep(hold).await;
                slots.record(
                    client,
                    op,
                    &format!("{resource}#{slot}"),
                    EventKind::Released,
                );
            } else {
                tokio::time::sleep(hold).await;
            }
            give_back(&rec, (client, op), guard).await;
        }
    }
    got
}

/// Managers leaked for `'static` requests in spawned tasks; a test's few are no burden.
/// Longer than the node timeout (250 ms) of [`manager`]'s requests (the support builder's).
const CUT_REQUESTS_ABANDONED: Duration = Duration::from_millis(600);

fn manager(cluster: &Cluster) -> &'static Redlock {
    Box::leak(Box::new(
        builder(cluster)
            .retry_delay(Duration::from_millis(5))
            .retry_jitter(Duration::from_millis(10))
            .build()
            .expect("config"),
    ))
}

/// Four contenders on three permits and three readers beside one writer, each client
/// with its own manager; with `faults`, a minority of nodes is partitioned, then killed,
/// during the run. Returns (history, per-slot history, acquisitions per client).
async fn contended(cluster: &Cluster, faults: bool) -> (Recorder, Recorder, Vec<u64>) {
    let (rec, slots) = (Recorder::new(), Recorder::new());
    let mut tasks = Vec::new();
    for client in 0..4u32 {
        let lock = manager(cluster);
        let request = move || lock.lock("gpu").permits(3).ttl(LONG).wait(WAIT);
        let (rec, slots) = (rec.clone(), slots.clone());
        tasks.push(tokio::spawn(rounds(
            rec,
            slots,
            client,
            8,
            Duration::from_millis(20),
            request,
            "gpu",
        )));
    }
    for client in 10..14u32 {
        let lock = manager(cluster);
        let write = client == 10;
        let request = move || {
            let r = lock.lock("doc").ttl(LONG).wait(WAIT);
            if write {
                r.write()
            } else {
                r.read()
            }
        };
        let (rec, slots) = (rec.clone(), slots.clone());
        tasks.push(tokio::spawn(rounds(
            rec,
            slots,
            client,
            8,
            Duration::from_millis(15),
            request,
            "doc",
        )));
    }
    if faults {
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.node(0).partition().await.expect("partition");
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.node(0).heal().await.expect("heal");
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.node(2).kill().await.expect("kill");
    }
    let mut got = Vec::new();
    for t in tasks {
        got.push(
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("clients finish")
                .expect("client task"),
        );
    }
    (rec, slots, got)
}

fn check_contended(rec: &Recorder, slots: &Recorder) {
    let h = rec.history();
    assert_clean("C6", &checker::permits(&h, &["gpu"], 3));
    assert_clean("C5", &checker::read_write(&h, |hold| hold.client == 10));
    // Each permit slot is an ordinary lock: its claims never overlap (C1).
    assert_clean("C1 per slot", &checker::claims(&slots.history()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contenders_never_exceed_the_permits_nor_overlap_a_writer() {
    let cluster = cluster(3).await;
    let (rec, slots, got) = contended(&cluster, false).await;
    check_contended(&rec, &slots);
    let failed: Vec<String> = rec
        .history()
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Failed { .. }))
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        got,
        vec![8; 8],
        "every round of every client got in: {failed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_partitioned_then_killed_during_use() {
    let cluster = cluster(3).await;
    let (rec, slots, got) = contended(&cluster, true).await;
    check_contended(&rec, &slots);
    assert!(
        got.iter().all(|g| *g > 0),
        "every client got in at least once: {got:?}"
    );
    // The survivors still serve every kind.
    let lock = support::redlock(&cluster);
    let mut r = bounded(lock.lock("after").read().try_acquire())
        .await
        .expect("reader");
    bounded(r.extend(LONG))
        .await
        .expect("reader extends on a quorum");
    drop(r);
    cluster.node(2).restart().await.expect("restart");
}

/// Issue 16's trap, built with partitions: on 3 nodes and 2 permits, A holds nodes
/// {0, 1}, B {1, 2}, and C asks {0, 2}, where each node holds one permit. Counting
/// holders per node lets C in (three holders); per-slot quorums do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_semaphore_count() {
    let cluster = cluster(3).await;
    let rec = Recorder::new();
    let (a, b, c) = (manager(&cluster), manager(&cluster), manager(&cluster));
    let permit =
        |lock: &'static Redlock, retries| lock.lock("gpu").permits(2).ttl(LONG).retries(retries);
    let mut held = Vec::new();
    // (cut-off node, client, retries): B may need a few rotations to agree on one slot.
    for (cut, client, retries) in [(2, (1, 0), 20), (0, (2, 0), 20), (1, (3, 0), 2)] {
        cluster.node(cut).partition().await.expect("partition");
        let lock = [a, b, c][client.0 as usize - 1];
        held.extend(take(&rec, client, "gpu", permit(lock, retries)).await);
        // Past the node timeout of every request the cut node swallowed: abandoned, they
        // are not sent again at the heal (one still within its deadline would be), so
        // the cut node never learns of this claim.
        tokio::time::sleep(CUT_REQUESTS_ABANDONED).await;
        cluster.node(cut).heal().await.expect("heal");
    }
    let found = checker::permits(&rec.history(), &["gpu"], 2);
    let flagged: Vec<Check> = found.iter().map(|v| v.check).take(1).collect();
    println!(
        "mutant_semaphore_count: {} holders, flagged {flagged:?}",
        held.len()
    );
    match crate::support::active_mutant() {
        None => {
            assert_clean("no mutant", &found);
            assert_eq!(held.len(), 2, "A and B hold, C is refused");
        }
        Some("semaphore_count") => assert_eq!(flagged, vec![Check::Permits], "C6 must catch it"),
        Some(other) => println!("under mutant {other}: not judged"),
    }
}

/// The writer (client 1) and the reader (client 2) of [`one_beside_the_other`].
const WRITER: u32 = 1;

/// `first` takes "doc", then `second` tries once (no wait) while `first` holds it; both
/// are released, the second first. Returns what C5 flags (the first violation) and
/// whether the second got in.
async fn one_beside_the_other(
    cluster: &Cluster,
    first: (u32, fn(LockRequest<'static>) -> LockRequest<'static>),
    second: (u32, fn(LockRequest<'static>) -> LockRequest<'static>),
) -> (Vec<Check>, bool) {
    let rec = Recorder::new();
    let (a, b) = (manager(cluster), manager(cluster));
    let held = take(
        &rec,
        (first.0, 0),
        "doc",
        (first.1)(a.lock("doc").ttl(LONG)),
    )
    .await;
    let held = held.expect("the first holder gets in on an idle resource");
    let beside = (second.1)(b.lock("doc").ttl(LONG)).try_acquire();
    let beside = crate::support::recorded(&rec, (second.0, 0), "doc", beside).await;
    let got_in = beside.is_some();
    if let Some(guard) = beside {
        give_back(&rec, (second.0, 0), guard).await;
    }
    give_back(&rec, (first.0, 0), held).await;
    let found = checker::read_write(&rec.history(), |hold| hold.client == WRITER);
    (found.iter().map(|v| v.check).take(1).collect(), got_in)
}

/// `read_beside_writer` (`READ_ACQUIRE` without its check of the lock key's holder), on
/// real servers: a reader asks while a writer holds the resource. The crate refuses
/// it; the mutant lets it in beside the writer, and C5 must say so. (The model checker
/// catches the same text: model/tests/model.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_read_beside_writer() {
    let cluster = cluster(3).await;
    let (flagged, got_in) = one_beside_the_other(
        &cluster,
        (WRITER, LockRequest::write),
        (2, LockRequest::read),
    )
    .await;
    judge_beside(
        "read_beside_writer",
        "a reader beside a writer",
        got_in,
        &flagged,
    );
}

/// `write_beside_readers` (`WRITE_ACQUIRE` without its count of the live readers), on
/// real servers: a writer asks while a reader holds the resource. The crate refuses it;
/// the mutant grants it beside the reader, and C5 must say so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutant_write_beside_readers() {
    let cluster = cluster(3).await;
    let (flagged, got_in) = one_beside_the_other(
        &cluster,
        (2, LockRequest::read),
        (WRITER, LockRequest::write),
    )
    .await;
    judge_beside(
        "write_beside_readers",
        "a writer beside a reader",
        got_in,
        &flagged,
    );
}

/// Without a mutant the second was refused and C5 is clean; under `mutant` (whose
/// scenario this is) C5 flags the overlap.
fn judge_beside(mutant: &str, what: &str, got_in: bool, flagged: &[Check]) {
    println!("mutant_{mutant}: {what} got in: {got_in}, flagged {flagged:?}");
    match crate::support::active_mutant() {
        None => {
            assert!(!got_in, "{what}: refused");
            assert!(flagged.is_empty(), "C5 clean: {flagged:?}");
        }
        Some(active) if active == mutant => {
            assert_eq!(flagged, [Check::ReadWrite], "C5 must catch {mutant}")
        }
        Some(other) => println!("under mutant {other}: not judged"),
    }
}
