//! Shared helpers of the integration tests: clusters, managers with test timings, and
//! direct (proxy-bypassing) looks at what each node holds.
#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio_redlock::harness::{Cluster, Persistence};
use tokio_redlock::{Redlock, RedlockBuilder};

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

/// An example's binary, built (or found up to date) by cargo in this test's target dir.
///
/// `cargo test` builds examples anyway, but `cargo test --test it` does not, and a binary
/// left from an earlier build could be stale; a no-op build costs well under a second.
pub async fn example_binary(name: &str, bound: Duration) -> std::path::PathBuf {
    // <target>/<profile>/deps/it-<hash>  ->  <target>/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    // The same features as this test build, so that the library is not rebuilt.
    let mut features = vec!["harness"];
    if cfg!(feature = "tls") {
        features.push("tls");
    }
    if cfg!(feature = "metrics") {
        features.push("metrics");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    // `cargo test` gives the test process the package's variables (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...). A build script that watches them (ring's) would see a
    // change against the outer build and rebuild the dependency tree (50-60 s here) at
    // every call, alternating with the outer build; the inner build runs without them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let package = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ];
        if name.starts_with("CARGO_PKG_") || package.contains(&name.as_ref()) {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "--example", name, "--features"])
        .arg(features.join(","))
        .arg("--target-dir")
        .arg(&target_dir)
        .kill_on_drop(true);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = tokio::time::timeout(bound, cmd.output())
        .await
        .expect("cargo build of the example timed out")
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
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
    ]
    .into_iter()
    .find(|(on, _)| *on)
    .map(|(_, name)| name)
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
