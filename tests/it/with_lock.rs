//! The two ways `with_lock` treats the work when the lock is lost, each pattern of its
//! docs run against real servers: by default the work is dropped before it can react;
//! with `drop_work_on_loss(false)` the work sees the loss (through `lost()`, the
//! cancellation token and `is_held()`), stops where it chooses, and `with_lock` returns
//! `LockLost` only after the work returned.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_redlock::{Error, Lease, LeaseOptions, LostReason, WorkOutcome};
use tokio_redlock_harness::Cluster;

use crate::support::*;

/// Long enough that a loaded 2-core box does not starve two extensions in a row.
const TTL: Duration = Duration::from_millis(800);
/// How long one simulated batch or job takes.
const STEP: Duration = Duration::from_millis(30);

/// What the work did, seen from outside it.
#[derive(Default)]
struct Trace {
    steps_started: AtomicUsize,
    steps_finished: AtomicUsize,
    lost_branch_ran: AtomicBool,
    /// Set after an await inside the lost branch: the work was not dropped there.
    cleanup_finished: AtomicBool,
    committed: AtomicBool,
    returned_at: Mutex<Option<Instant>>,
    dropped: AtomicBool,
}

/// Marks the trace when the work's future is dropped (run to its end or not).
struct DropFlag(Arc<Trace>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.dropped.store(true, Ordering::SeqCst);
    }
}

/// Waits for the lease's first extension, then cuts a majority of the 3 nodes off
/// (paused or partitioned), so that no further extension can succeed.
async fn lose_majority_after_first_extension(cluster: &Cluster, lease: &Lease, pause: bool) {
    eventually("a first extension", || {
        let n = lease.extensions();
        async move { n >= 1 }
    })
    .await;
    for i in 0..2 {
        if pause {
            cluster.node(i).pause().await.unwrap();
        } else {
            cluster.node(i).partition().await.unwrap();
        }
    }
}

async fn undo_faults(cluster: &Cluster) {
    cluster.clear_faults().await.unwrap();
}

fn assert_lost_by_failed_extensions<T: std::fmt::Debug>(result: &Result<T, Error>) {
    match result {
        Err(Error::LockLost { reason, .. }) => {
            assert_eq!(*reason, LostReason::ExtensionFailed, "{result:?}")
        }
        other => panic!("expected LockLost, got {other:?}"),
    }
}

/// The job-queue work of the `Lease` docs: waits for jobs in a `select!` with
/// `lease.lost()`, processes each outside it. On a loss it runs a cleanup step that
/// itself awaits.
async fn job_worker(lease: Lease, mut jobs: mpsc::Receiver<u32>, trace: Arc<Trace>) -> usize {
    let _flag = DropFlag(Arc::clone(&trace));
    let mut processed = 0;
    loop {
        let job = tokio::select! {
            biased;
            _ = lease.lost() => {
                trace.lost_branch_ran.store(true, Ordering::SeqCst);
                tokio::time::sleep(STEP).await;
                trace.cleanup_finished.store(true, Ordering::SeqCst);
                *trace.returned_at.lock().unwrap() = Some(Instant::now());
                return processed;
            }
            job = jobs.recv() => job,
        };
        match job {
            Some(_) if lease.is_held() => {
                trace.steps_started.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(STEP).await;
                trace.steps_finished.fetch_add(1, Ordering::SeqCst);
                processed += 1;
            }
            _ => return processed,
        }
    }
}

/// Runs [`job_worker`] under `lock(..).lease_options(..).with(..)`, feeds it two jobs, then loses the lock.
async fn run_job_worker(
    opts: LeaseOptions,
    resource: &str,
) -> (Result<usize, Error>, Instant, Arc<Trace>, Lease, Instant) {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let trace = Arc::new(Trace::default());
    let (jobs_tx, jobs_rx) = mpsc::channel(8);
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let call = tokio::spawn({
        let trace = Arc::clone(&trace);
        let resource = resource.to_owned();
        async move {
            let r = redlock
                .lock(&resource)
                .ttl(TTL)
                .lease_options(opts)
                .with(|lease| {
                    lease_tx.send(lease.clone()).unwrap();
                    job_worker(lease, jobs_rx, trace)
                })
                .await;
            (r, Instant::now())
        }
    });
    let lease = bounded(lease_rx).await.unwrap();
    // A child of the loss signal, watched by a task of its own as a user's would be.
    let token = lease.cancellation_token();
    let token_seen = tokio::spawn(async move {
        token.cancelled().await;
        Instant::now()
    });
    jobs_tx.send(1).await.unwrap();
    jobs_tx.send(2).await.unwrap();
    eventually("two jobs processed", || {
        let n = trace.steps_finished.load(Ordering::SeqCst);
        async move { n == 2 }
    })
    .await;
    lose_majority_after_first_extension(&cluster, &lease, false).await;
    let (result, returned_at) = bounded(call).await.unwrap();
    let token_cancelled_at = bounded(token_seen).await.unwrap();
    undo_faults(&cluster).await;
    // The senders outlive the call: the work never saw its queue close.
    drop(jobs_tx);
    (result, returned_at, trace, lease, token_cancelled_at)
}

#[tokio::test]
async fn by_default_the_work_is_dropped_before_its_lost_branch_runs() {
    let (result, _, trace, lease, _) = run_job_worker(LeaseOptions::default(), "wl:drop").await;
    assert_lost_by_failed_extensions(&result);
    assert!(trace.dropped.load(Ordering::SeqCst), "the work was dropped");
    // `with_lock` saw the loss first (it is polled before the work) and dropped the
    // work without letting it react: the doc's "never takes that branch".
    assert!(!trace.lost_branch_ran.load(Ordering::SeqCst));
    assert!(!trace.cleanup_finished.load(Ordering::SeqCst));
    assert_eq!(trace.steps_finished.load(Ordering::SeqCst), 2);
    assert_eq!(lease.lost_reason(), Some(LostReason::ExtensionFailed));
    // The token was cancelled by the loss (its watcher woke), and stays so.
    assert!(lease.cancellation_token().is_cancelled());
}

#[tokio::test]
async fn kept_work_takes_its_lost_branch_and_with_lock_waits_for_it() {
    let opts = LeaseOptions::default().drop_work_on_loss(false);
    let (result, returned_at, trace, lease, token_at) = run_job_worker(opts, "wl:keep").await;
    assert_lost_by_failed_extensions(&result);
    // The work saw the loss itself, ran its branch past an await, and returned.
    assert!(trace.lost_branch_ran.load(Ordering::SeqCst));
    assert!(trace.cleanup_finished.load(Ordering::SeqCst));
    let work_returned_at = trace
        .returned_at
        .lock()
        .unwrap()
        .expect("the work returned");
    assert!(returned_at >= work_returned_at, "with_lock returned first");
    // The token fired with `lost()`, before the work's cleanup ended.
    assert!(token_at <= work_returned_at);
    assert_eq!(trace.steps_finished.load(Ordering::SeqCst), 2);
    assert_eq!(lease.lost_reason(), Some(LostReason::ExtensionFailed));
    assert!(!lease.is_held());
}

#[tokio::test]
async fn kept_work_stops_between_batches_and_skips_its_commit() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let trace = Arc::new(Trace::default());
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let opts = LeaseOptions::default().drop_work_on_loss(false);
    // The batch pattern of the `with_lock` docs, with more batches than the lock lasts.
    let call = tokio::spawn({
        let trace = Arc::clone(&trace);
        async move {
            let r = redlock
                .lock("wl:batches")
                .ttl(TTL)
                .lease_options(opts)
                .with(|lease| async move {
                    let _flag = DropFlag(Arc::clone(&trace));
                    lease_tx.send(lease.clone()).unwrap();
                    let mut done = 0;
                    for _batch in 0..100_000 {
                        if !lease.is_held() {
                            break;
                        }
                        trace.steps_started.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(STEP).await;
                        trace.steps_finished.fetch_add(1, Ordering::SeqCst);
                        done += 1;
                    }
                    if lease.is_held() {
                        trace.committed.store(true, Ordering::SeqCst);
                    }
                    *trace.returned_at.lock().unwrap() = Some(Instant::now());
                    done
                })
                .await;
            (r, Instant::now())
        }
    });
    let lease = bounded(lease_rx).await.unwrap();
    lose_majority_after_first_extension(&cluster, &lease, true).await;
    let (result, returned_at) = bounded(call).await.unwrap();
    assert_lost_by_failed_extensions(&result);
    let started = trace.steps_started.load(Ordering::SeqCst);
    let finished = trace.steps_finished.load(Ordering::SeqCst);
    // Every batch that started ended: the work stopped between two of them.
    assert_eq!(started, finished);
    assert!(finished >= 2, "{finished} batches before the loss");
    assert!(
        !trace.committed.load(Ordering::SeqCst),
        "committed after the loss"
    );
    let work_returned_at = trace
        .returned_at
        .lock()
        .unwrap()
        .expect("the work returned");
    assert!(returned_at >= work_returned_at);
    assert!(!lease.is_held());
    undo_faults(&cluster).await;
}

#[tokio::test]
async fn kept_work_that_keeps_the_lock_returns_its_output_and_releases() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let opts = LeaseOptions::default().drop_work_on_loss(false);
    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let out = bounded(redlock.lock("wl:ok").ttl(TTL).lease_options(opts).with(
        |lease| async move {
            // A user's child token: cancelling it stops only its listeners.
            let mine = lease.cancellation_token();
            mine.cancel();
            assert!(lease.is_held(), "cancelling a child token ended the lease");
            assert!(!lease.cancellation_token().is_cancelled());
            // Kept past one ttl by extensions.
            tokio::time::sleep(TTL + TTL / 2).await;
            assert!(lease.is_held());
            lease_tx.send(lease).unwrap();
            42
        },
    ))
    .await
    .expect("the lock was kept");
    assert_eq!(out, 42);
    let lease = lease_rx.await.unwrap();
    assert!(lease.extensions() >= 1);
    // The release ends the lease too: the token is cancelled, with no loss reason.
    assert!(lease.cancellation_token().is_cancelled());
    assert_eq!(lease.lost_reason(), None);
    assert_gone_within(&cluster, "wl:ok", TTL / 2).await;
}

/// Issue 26, item 6: with `drop_work_on_loss(false)` the work runs to its end after a
/// loss, and `with_outcome` gives its output back beside the loss (`with` throws it
/// away and returns `LockLost`).
#[tokio::test]
async fn with_outcome_keeps_the_output_beside_the_loss() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let done = bounded(
        redlock
            .lock("wl:done")
            .ttl(TTL)
            .with_outcome(|_| async { 7 }),
    )
    .await
    .unwrap();
    assert!(matches!(done, WorkOutcome::Done(7)), "{done:?}");

    let (lease_tx, lease_rx) = oneshot::channel::<Lease>();
    let call = tokio::spawn({
        let redlock = redlock.clone();
        async move {
            redlock
                .lock("wl:outcome")
                .ttl(TTL)
                .lease_options(LeaseOptions::default().drop_work_on_loss(false))
                .with_outcome(|lease| async move {
                    lease_tx.send(lease.clone()).unwrap();
                    lease.lost().await;
                    42usize
                })
                .await
        }
    });
    let lease = bounded(lease_rx).await.unwrap();
    lose_majority_after_first_extension(&cluster, &lease, false).await;
    let outcome = bounded(call).await.unwrap().unwrap();
    assert!(outcome.is_lost());
    match outcome {
        WorkOutcome::Lost {
            output: Some(42),
            error,
        } => assert!(error.is_lock_lost(), "{error}"),
        other => panic!("{other:?}"),
    }
    undo_faults(&cluster).await;
}
