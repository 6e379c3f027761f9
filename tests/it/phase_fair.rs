//! Phase-fair admission of the reader-writer lock against real servers: a
//! stream of writers, one always waiting, does not starve readers; the readers that
//! waited for a writer go before the next writer, readers that come after a waiting
//! writer wait for it; and a writer does not starve behind a stream of readers.
//!
//! The clients use the default retry pause (200 ms plus up to 200 ms of jitter), so that
//! a bound below what polling could give shows the wake-ups and the reader turn at work.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock::{LockKind, Redlock};
use tokio_redlock_harness::checker;
use tokio_redlock_harness::history::Recorder;
use tokio_redlock_harness::Cluster;

use crate::support::{self, bounded, cluster, direct, eventually, WAIT};

/// How long any reader may wait for its turn while writers keep coming: one writer's
/// critical section, the readers already in, and one wake-up, with room for a loaded
/// machine. Polling alone (the pause is 200–400 ms, and the writer takes the lock again
/// within a round trip of releasing it) gave a p99 of 1.7 s.
const READ_BOUND: Duration = Duration::from_secs(1);
/// How long the writer may wait while readers keep coming: the readers already in and
/// those whose turn it is (each holds `HOLD`), a lapsed turn's patience (about 0.5 s
/// with these settings) and one pause, with room for a loaded machine.
const WRITE_BOUND: Duration = Duration::from_secs(2);
/// A short critical section.
const HOLD: Duration = Duration::from_millis(10);
const TTL: Duration = Duration::from_secs(5);

/// A client of its own, with the default retry pause and a wait budget per acquisition.
fn client(cluster: &Cluster) -> Redlock {
    support::builder(cluster)
        .retry_delay(Duration::from_millis(200))
        .retry_jitter(Duration::from_millis(200))
        .build()
        .expect("config")
}

/// Writes in a loop on `doc` until `stop`, each right after the last (so a writer is
/// always waiting), recording each hold as client `id` and counting it in `written`.
fn writer(
    cluster: &Cluster,
    rec: &Recorder,
    id: u32,
    stop: &Arc<AtomicBool>,
    written: &Arc<AtomicU64>,
) -> WriterTask {
    let (lock, rec, stop) = (client(cluster), rec.clone(), Arc::clone(stop));
    let written = Arc::clone(written);
    tokio::spawn(async move {
        let mut op = 0;
        while !stop.load(Ordering::SeqCst) {
            let request = lock.lock("doc").write().ttl(TTL).wait(WAIT);
            let guard = crate::support::recorded(&rec, (id, op), "doc", request.acquire()).await;
            if let Some(guard) = guard {
                tokio::time::sleep(HOLD).await;
                crate::support::release(&rec, (id, op), guard).await;
                written.fetch_add(1, Ordering::SeqCst);
            }
            op += 1;
        }
    })
}

type WriterTask = tokio::task::JoinHandle<()>;

/// Writers are clients 100 and up.
fn is_writer(hold: &checker::Hold) -> bool {
    hold.client >= 100
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_writers_does_not_starve_readers() {
    let cluster = cluster(3).await;
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writers: Vec<WriterTask> = (100..102)
        .map(|id| writer(&cluster, &rec, id, &stop, &written))
        .collect();
    let longest = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..4u32)
        .map(|id| {
            let (lock, rec, longest) = (client(&cluster), rec.clone(), Arc::clone(&longest));
            let written = Arc::clone(&written);
            tokio::spawn(async move {
                // At least READS reads each, and on until the writers have written
                // WRITES times (a loaded machine slows them more than the readers), so
                // that every bound below was measured beside a stream of writers.
                for op in 0..MAX_READS {
                    if op >= READS && written.load(Ordering::SeqCst) >= WRITES {
                        break;
                    }
                    let started = Instant::now();
                    let request = lock.lock("doc").read().ttl(TTL).wait(WAIT);
                    let guard = crate::support::recorded(&rec, (id, op), "doc", request.acquire())
                        .await
                        .expect("a reader gets in while writers keep coming");
                    let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                    longest.fetch_max(waited, Ordering::SeqCst);
                    tokio::time::sleep(HOLD).await;
                    crate::support::release(&rec, (id, op), guard).await;
                    // Readers come back a little later than writers: a reader is never
                    // the one always waiting.
                    tokio::time::sleep(Duration::from_millis(30)).await;
                }
            })
        })
        .collect();
    for r in readers {
        bounded(r).await.expect("reader task");
    }
    let writes = written.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for w in writers {
        bounded(w).await.expect("writer task");
    }
    let longest = Duration::from_micros(longest.load(Ordering::SeqCst));
    println!("phase_fair: longest read wait {longest:?}; {writes} writes meanwhile");
    assert!(
        longest < READ_BOUND,
        "a reader waited {longest:?}, over the bound of {READ_BOUND:?}"
    );
    assert!(
        writes >= WRITES,
        "the writers kept writing meanwhile: {writes} in {MAX_READS} reads of each reader"
    );
    let violations = checker::read_write(&rec.history(), is_writer);
    assert!(violations.is_empty(), "C5: {violations:?}");
}

/// Reads each reader makes at least, and at most, in the test above; and the writes
/// the writers must have made before the readers stop.
const READS: u64 = 5;
const MAX_READS: u64 = 40;
const WRITES: u64 = 5;

/// Whether the sorted set `key` has members on a quorum of the nodes.
async fn on_quorum(cluster: &Cluster, key: &str) -> bool {
    let mut n = 0;
    for mut c in direct(cluster).await {
        let card: i64 = redis::cmd("ZCARD")
            .arg(key)
            .query_async(&mut c)
            .await
            .expect("ZCARD");
        n += usize::from(card > 0);
    }
    n > cluster.urls().len() / 2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_that_waited_go_before_the_next_writer_and_later_ones_after_it() {
    let cluster = cluster(3).await;
    // A long retry pause: whoever gets in well within it was woken, not polling.
    let slow = |c: &Cluster| {
        support::builder(c)
            .retry_delay(Duration::from_secs(1))
            .retry_jitter(Duration::from_millis(200))
            .build()
            .expect("config")
    };
    let woken_within = Duration::from_millis(500);
    let (writer, early, late) = (slow(&cluster), slow(&cluster), slow(&cluster));
    let w1 = bounded(writer.lock("doc").write().ttl(TTL).try_acquire())
        .await
        .expect("first writer");
    // A reader waits for the writer that holds the lock.
    let early_reader =
        tokio::spawn(async move { early.lock("doc").read().ttl(TTL).wait(WAIT).acquire().await });
    eventually("the reader waits on a quorum", || {
        on_quorum(&cluster, "doc:rwait")
    })
    .await;
    // The writer releases and asks again at once, as an always-waiting writer does.
    let released = Instant::now();
    bounded(w1.release()).await.expect("held until released");
    let again = {
        let writer = writer.clone();
        tokio::spawn(async move {
            writer
                .lock("doc")
                .write()
                .ttl(TTL)
                .wait(WAIT)
                .acquire()
                .await
        })
    };
    // The release gave the waiting reader its turn and woke it: it gets in first.
    let r = bounded(early_reader)
        .await
        .expect("reader task")
        .expect("the reader that waited gets in");
    assert_eq!(r.kind(), LockKind::Read);
    let took = released.elapsed();
    assert!(took < woken_within, "woken, not polled: {took:?}");
    assert!(
        !again.is_finished(),
        "the writer waits for the reader's turn"
    );
    // The writer, refused, keeps readers that come after it out.
    let conns = direct(&cluster).await;
    eventually("the writer's intent is on a quorum", || {
        let mut conns = conns.clone();
        async move {
            let v = support::values(&mut conns, "doc:writer").await;
            v.iter().filter(|v| v.is_some()).count() >= 2
        }
    })
    .await;
    let refused = bounded(late.lock("doc").read().try_acquire()).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.is_conflict()),
        "{refused:?}"
    );
    // The last reader out wakes the writer.
    let left = Instant::now();
    bounded(r.release()).await.expect("held until released");
    let w2 = bounded(again)
        .await
        .expect("writer task")
        .expect("the writer gets in once the reader left");
    let took = left.elapsed();
    assert!(took < woken_within, "woken, not polled: {took:?}");
    bounded(w2.release()).await.expect("held until released");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_does_not_starve_behind_a_stream_of_readers() {
    let cluster = cluster(3).await;
    let rec = Recorder::new();
    let stop = Arc::new(AtomicBool::new(false));
    // Readers whose holds overlap: the reader set is never empty while they run.
    let readers: Vec<_> = (0..4u32)
        .map(|id| {
            let (lock, rec, stop) = (client(&cluster), rec.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut op = 0;
                while !stop.load(Ordering::SeqCst) {
                    let request = lock.lock("doc").read().ttl(TTL).wait(WAIT);
                    if let Some(g) =
                        crate::support::recorded(&rec, (id, op), "doc", request.acquire()).await
                    {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                        crate::support::release(&rec, (id, op), g).await;
                    }
                    op += 1;
                }
                op
            })
        })
        .collect();
    // Let the readers get going, then a writer asks, three times in a row.
    eventually("readers are in", || on_quorum(&cluster, "doc:readers")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lock = client(&cluster);
    for op in 0..3 {
        let started = Instant::now();
        let request = lock.lock("doc").write().ttl(TTL).wait(WAIT);
        let guard = crate::support::recorded(&rec, (100, op), "doc", request.acquire())
            .await
            .expect("the writer gets in while readers keep coming");
        let waited = started.elapsed();
        println!("phase_fair: write wait {waited:?} behind a stream of readers");
        assert!(
            waited < WRITE_BOUND,
            "the writer waited {waited:?}, over the bound of {WRITE_BOUND:?}"
        );
        tokio::time::sleep(HOLD).await;
        crate::support::release(&rec, (100, op), guard).await;
    }
    stop.store(true, Ordering::SeqCst);
    let mut reads = 0;
    for r in readers {
        reads += bounded(r).await.expect("reader task");
    }
    assert!(reads >= 8, "readers kept reading meanwhile: {reads}");
    let violations = checker::read_write(&rec.history(), is_writer);
    assert!(violations.is_empty(), "C5: {violations:?}");
}
