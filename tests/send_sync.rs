//! Every public future and handle can cross threads: a compile-time check. Each
//! function below is only type-checked (never run): if a future or handle stopped being
//! `Send` (or `Sync` where the docs promise it), this test target would not build.

use std::future::Future;
use std::time::Duration;

use futures::Stream;
use tokio_redlock::diagnose::HealthReport;
use tokio_redlock::{
    CancellationToken, Election, Error, FenceGate, KeptGuard, Leadership, Lease, LeaseOptions,
    LockGuard, LockInfo, LockKind, LockRequest, Redlock, RedlockBuilder, ReleaseReport,
    WorkOutcome,
};

fn send<T: Send>() {}

fn send_sync<T: Send + Sync>() {}

/// Checks `f` and drops it unpolled.
fn send_future<F: Future + Send>(f: F) {
    drop(f);
}

/// Handles: the manager, its builder and requests, guards, leases, elections, errors.
#[test]
fn every_public_handle_is_send_and_the_shared_ones_sync() {
    send_sync::<Redlock>();
    send::<RedlockBuilder>();
    send::<LockRequest<'static>>();
    send_sync::<LockGuard>();
    send_sync::<KeptGuard>();
    send_sync::<Lease>();
    send_sync::<Election>();
    send_sync::<Leadership>();
    send_sync::<Error>();
    send_sync::<LockInfo>();
    send_sync::<HealthReport>();
    send_sync::<ReleaseReport>();
    send_sync::<FenceGate>();
    send_sync::<LockKind>();
    send_sync::<LeaseOptions>();
    send_sync::<CancellationToken>();
    send::<WorkOutcome<u32>>();
}

/// Futures of the manager, each as a `tokio::spawn` would need it.
fn manager_futures(r: &Redlock) {
    let ttl = Duration::from_secs(1);
    send_future(r.acquire("a", ttl));
    send_future(r.try_acquire("a", ttl));
    send_future(r.acquire_many(&["a", "b"], ttl));
    send_future(r.inspect("a"));
    send_future(r.diagnose());
    send_future(r.with_lock("a", ttl, |lease| async move { lease.is_held() }));
    send_future(r.lock("a").acquire());
    send_future(r.lock("a").try_acquire());
    send_future(r.lock("a").read().acquire());
    send_future(r.lock("a").write().acquire());
    send_future(r.lock("a").permits(2).acquire());
    send_future(r.lock("a").permits(2).available());
    send_future(r.lock("a").permits(2).inspect_permits());
    send_future(
        r.lock("a")
            .with(|lease| async move { lease.fencing_token() }),
    );
    send_future(
        r.lock("a")
            .with_outcome(|lease| async move { lease.is_held() }),
    );
}

/// Futures of guards, leases and elections.
async fn handle_futures(mut g: LockGuard, k: KeptGuard, l: Lease, e: Election, lead: Leadership) {
    send_future(g.extend(Duration::from_secs(1)));
    send_future(g.release());
    send_future(k.release());
    send_future(l.lost());
    send_future(e.campaign());
    drop(observe_is_a_send_stream(&e));
    send_future(lead.lost());
    send_future(lead.resign());
}

/// The leaders' stream is a `Stream` that can be polled from any thread.
fn observe_is_a_send_stream(e: &Election) -> impl Stream<Item = Option<String>> + Send {
    e.observe()
}

#[test]
fn every_public_future_is_send() {
    // The checks are `manager_futures` and `handle_futures`, type-checked when this
    // target builds (a future that stopped being `Send` fails the build).
    let _ = (manager_futures, handle_futures);
}
