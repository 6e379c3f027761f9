//! Shared helpers of the integration tests: clusters, managers with test timings,
//! direct (proxy-bypassing) looks at what each node holds, and recorded acquisitions for
//! the harness's checkers. The safety suite (tests-integration/) includes this file too.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio_redlock::{LockGuard, Redlock, RedlockBuilder};
use tokio_redlock_harness::history::{instant_ns, EventKind, Recorder};
use tokio_redlock_harness::{Cluster, Persistence};

/// Every wait in the tests is bounded by this, so a hang fails instead of stalling CI.
pub const WAIT: Duration = Duration::from_secs(10);

/// Starts an `n`-node memory-only cluster.
pub async fn cluster(n: usize) -> Cluster {
    cluster_with(n, Persistence::Memory).await
}

pub async fn cluster_with(n: usize, persistence: Persistence) -> Cluster {
    tokio::time::timeout(
        Duration::from_secs(30),
        Cluster::builder().nodes(n).persistence(persistence).start(),
    )
    .await
    .expect("cluster start timed out")
    .expect("cluster starts")
}

/// A builder on the cluster's proxied URLs with test timings: quick retries and a node
/// timeout generous enough for a loaded 2-core CI machine.
pub fn builder(cluster: &Cluster) -> RedlockBuilder {
    Redlock::builder()
        .nodes(cluster.urls())
        .retry_count(3)
        .retry_delay(Duration::from_millis(20))
        .retry_jitter(Duration::from_millis(20))
        .node_timeout(Duration::from_millis(250))
}

pub fn redlock(cluster: &Cluster) -> Redlock {
    builder(cluster).build().expect("valid config")
}

/// One connection per node, straight to the server (not through its proxy).
pub async fn direct(cluster: &Cluster) -> Vec<MultiplexedConnection> {
    let mut conns = Vec::new();
    for url in cluster.direct_urls() {
        let client = redis::Client::open(url.as_str()).expect("url");
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)));
        conns.push(
            client
                .get_multiplexed_async_connection_with_config(&cfg)
                .await
                .expect("direct connection"),
        );
    }
    conns
}

/// The value of `key` on each node (None where it is absent).
pub async fn values(conns: &mut [MultiplexedConnection], key: &str) -> Vec<Option<String>> {
    let mut out = Vec::new();
    for c in conns.iter_mut() {
        let v: Option<String> = redis::cmd("GET")
            .arg(key)
            .query_async(c)
            .await
            .expect("GET");
        out.push(v);
    }
    out
}

/// The PTTL of `key` on each node (-2 absent, -1 no expiry).
pub async fn pttls(conns: &mut [MultiplexedConnection], key: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for c in conns.iter_mut() {
        let v: i64 = redis::cmd("PTTL")
            .arg(key)
            .query_async(c)
            .await
            .expect("PTTL");
        out.push(v);
    }
    out
}

pub async fn set_on(conn: &mut MultiplexedConnection, key: &str, value: &str, ttl_ms: u64) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("PX")
        .arg(ttl_ms)
        .query_async(conn)
        .await
        .expect("SET");
}

/// Polls `check` every 10 ms until it holds, failing after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `key` is absent on every node reachable directly.
pub async fn eventually_gone(cluster: &Cluster, key: &str) {
    assert_gone_within(cluster, key, WAIT).await;
}

/// Like [`eventually_gone`], but on failure says what each node still holds.
pub async fn assert_gone_within(cluster: &Cluster, key: &str, within: Duration) {
    let mut conns = direct(cluster).await;
    let deadline = Instant::now() + within;
    loop {
        let vals = values(&mut conns, key).await;
        if vals.iter().all(Option::is_none) {
            return;
        }
        if Instant::now() > deadline {
            let ttls = pttls(&mut conns, key).await;
            panic!("`{key}` still held: {vals:?}, pttl {ttls:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `fut` under [`WAIT`].
pub async fn bounded<T>(fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut)
        .await
        .expect("bounded wait timed out")
}

/// Records the start of an acquisition, runs it, and records how it ended.
pub async fn recorded(
    rec: &Recorder,
    (client, op): (u32, u64),
    resource: &str,
    acquisition: impl std::future::Future<Output = Result<LockGuard, tokio_redlock::Error>>,
) -> Option<LockGuard> {
    rec.record(client, op, resource, EventKind::Start);
    match acquisition.await {
        Ok(guard) => {
            let kind = EventKind::Acquired {
                valid_until_ns: instant_ns(guard.valid_until()),
                token: guard.fencing_token(),
            };
            rec.record(client, op, resource, kind);
            Some(guard)
        }
        Err(e) => {
            let reason = e.to_string();
            rec.record(client, op, resource, EventKind::Failed { reason });
            None
        }
    }
}

/// Records the release before it is sent: from then on the holder claims nothing.
pub async fn release(rec: &Recorder, (client, op): (u32, u64), guard: LockGuard) {
    rec.record(client, op, guard.resource(), EventKind::Released);
    let _ = guard.release().await;
}

/// How many members the wait queue of `key` has on each node.
pub async fn queue_lengths(conns: &[redis::aio::MultiplexedConnection], key: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for c in conns {
        let mut c = c.clone();
        let n: i64 = redis::cmd("ZCARD")
            .arg(format!("{key}:waiters"))
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(n);
    }
    out
}

/// How many wake-up channels (one per waiting manager) each node has subscribers on.
pub async fn wake_listeners(conns: &[redis::aio::MultiplexedConnection]) -> Vec<usize> {
    let mut out = Vec::new();
    for c in conns {
        let mut c = c.clone();
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg("tokio-redlock:wake:*")
            .query_async(&mut c)
            .await
            .unwrap();
        out.push(channels.len());
    }
    out
}

/// One lock and unlock, so that the manager's connections exist before a test's
/// measurement or fault.
pub async fn warm(redlock: &Redlock) {
    let guard = bounded(redlock.acquire("warm", Duration::from_secs(10)))
        .await
        .expect("warm-up acquire");
    guard.release().await.expect("warm-up release");
}

/// The test-only mutant this build was made with (`scripts/mutants.sh`), if any.
pub fn active_mutant() -> Option<&'static str> {
    [
        (cfg!(redlock_mutant = "skip_validity"), "skip_validity"),
        (cfg!(redlock_mutant = "plain_del"), "plain_del"),
        (cfg!(redlock_mutant = "constant_value"), "constant_value"),
        (cfg!(redlock_mutant = "quorum_half"), "quorum_half"),
        (cfg!(redlock_mutant = "incr_max"), "incr_max"),
        (cfg!(redlock_mutant = "semaphore_count"), "semaphore_count"),
        (cfg!(redlock_mutant = "old_belief"), "old_belief"),
        (cfg!(redlock_mutant = "keep_alive_here"), "keep_alive_here"),
        (
            cfg!(redlock_mutant = "unordered_release"),
            "unordered_release",
        ),
        (
            cfg!(redlock_mutant = "free_queue_attempt"),
            "free_queue_attempt",
        ),
        (
            cfg!(redlock_mutant = "stalled_subscription"),
            "stalled_subscription",
        ),
        (
            cfg!(redlock_mutant = "read_beside_writer"),
            "read_beside_writer",
        ),
        (
            cfg!(redlock_mutant = "write_beside_readers"),
            "write_beside_readers",
        ),
    ]
    .into_iter()
    .find(|(on, _)| *on)
    .map(|(_, name)| name)
}

/// Waits until no request of the acquisition of `key` that `redlock` just made can
/// still land: its deadline has passed (taken as three of its `node_timeout`s from now,
/// since each request ends within one after it was made, before the acquisition
/// returned), or every node stores `key` and every reply on `redlock`'s connections is
/// back. A request that ran out while its connection was still being made (a loaded
/// machine) was never sent and never lands, so waiting for the key on every node alone
/// can wait for ever (seen in a CI dry run). And a request that landed may still have
/// its reply on the way: were its connection broken then (a test restarting the node),
/// the request would be sent again on a new one, to the restarted node (seen under load).
/// A read through the same manager's connections comes back after every earlier reply
/// on them, so once every node answers it nothing of the acquisition is sent again.
pub async fn landed_or_abandoned(
    cluster: &Cluster,
    redlock: &Redlock,
    key: &str,
    node_timeout: Duration,
) {
    let abandoned_by = Instant::now() + node_timeout * 3;
    let conns = direct(cluster).await;
    eventually(
        &format!("`{key}` on every node, or its requests over"),
        || {
            let mut conns = conns.clone();
            async move {
                let everywhere = values(&mut conns, key).await.iter().all(Option::is_some);
                everywhere || Instant::now() >= abandoned_by
            }
        },
    )
    .await;
    let left = abandoned_by.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return;
    }
    match tokio::time::timeout(left, redlock.inspect(key)).await {
        Ok(Ok(info)) if info.unknown_nodes() == 0 => {}
        // A node did not answer: its replies cannot be known to be back; wait out the
        // requests' deadline.
        _ => tokio::time::sleep(abandoned_by.saturating_duration_since(Instant::now())).await,
    }
}

/// Waits until every node (read directly) stores `key`: an acquisition returns at a
/// quorum, and a request of it still on its way to a node that a test then restarts or
/// edits would land afterwards (re-sent on a new connection within its deadline).
pub async fn on_every_node(cluster: &Cluster, key: &str) {
    let conns = direct(cluster).await;
    eventually(&format!("`{key}` on every node"), || {
        let mut conns = conns.clone();
        async move { values(&mut conns, key).await.iter().all(Option::is_some) }
    })
    .await;
}
