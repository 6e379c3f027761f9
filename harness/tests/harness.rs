//! The test harness itself: every fault is observable and its undo restores service,
//! dropping a cluster leaves nothing behind, and parallel clusters do not collide.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::AsyncCommands;
use tokio::time::timeout;
use tokio_redlock_harness::{Cluster, HarnessError, Persistence};

/// Client timeout for a check that is expected to hang: short, so the tests stay fast.
const SHORT: Duration = Duration::from_millis(300);
/// Outer bound on anything expected to succeed.
const LONG: Duration = Duration::from_secs(15);

async fn connect(url: &str) -> redis::RedisResult<MultiplexedConnection> {
    let cfg = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(SHORT))
        .set_response_timeout(Some(SHORT));
    redis::Client::open(url)?
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
}

/// One PING on an existing connection, bounded.
async fn ping(con: &mut MultiplexedConnection) -> Result<(), String> {
    match timeout(SHORT * 2, redis::cmd("PING").query_async::<String>(con)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("outer timeout".into()),
    }
}

async fn start(nodes: usize, persistence: Persistence) -> Cluster {
    timeout(
        LONG,
        Cluster::builder()
            .nodes(nodes)
            .persistence(persistence)
            .start(),
    )
    .await
    .expect("cluster start timed out")
    .expect("cluster start failed")
}

#[test]
fn public_types_are_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Cluster>();
    assert_send_sync::<tokio_redlock_harness::Node>();
    assert_send_sync::<HarnessError>();
}

#[tokio::test]
async fn urls_go_through_proxies_and_nodes_are_independent() {
    let cluster = start(3, Persistence::Memory).await;
    assert_eq!(cluster.len(), 3);
    assert!(cluster.try_node(3).is_none());
    let urls = cluster.urls();
    let direct = cluster.direct_urls();
    for (i, node) in cluster.nodes().iter().enumerate() {
        assert_eq!(urls[i], format!("redis://127.0.0.1:{}", node.proxy_port()));
        assert_eq!(
            direct[i],
            format!("redis://127.0.0.1:{}", node.server_port())
        );
        assert_ne!(node.proxy_port(), node.server_port());
        assert!(node.is_running());
        assert!(node.pid().is_some());
    }
    // A write through node 0's proxy lands on node 0's server only.
    let mut c0 = connect(&urls[0]).await.unwrap();
    let _: () = c0.set("k", "v").await.unwrap();
    let mut d0 = connect(&direct[0]).await.unwrap();
    let mut c1 = connect(&urls[1]).await.unwrap();
    assert_eq!(
        d0.get::<_, Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(c1.get::<_, Option<String>>("k").await.unwrap(), None);
    timeout(LONG, cluster.wait_healthy(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn pause_then_resume() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut con = connect(&cluster.urls()[0]).await.unwrap();
    ping(&mut con).await.unwrap();

    timeout(LONG, node.pause()).await.unwrap().unwrap();
    assert!(node.is_paused() && node.is_running());
    let err = node.ping(SHORT).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    assert!(ping(&mut con).await.is_err());
    // The server itself hangs, not just the proxy.
    assert!(node.ping_direct(SHORT).await.is_err());

    timeout(LONG, node.resume()).await.unwrap().unwrap();
    assert!(!node.is_paused());
    node.ping(LONG).await.unwrap();
    let mut con = connect(&cluster.urls()[0]).await.unwrap();
    ping(&mut con).await.unwrap();
}

#[tokio::test]
async fn kill_then_restart_with_memory_loses_data() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut con = connect(&node.url()).await.unwrap();
    let _: () = con.set("k", "v").await.unwrap();
    let old_pid = node.pid().unwrap();
    let port = node.server_port();

    timeout(LONG, node.kill()).await.unwrap().unwrap();
    assert!(!node.is_running());
    assert_eq!(node.pid(), None);
    assert!(!PathBuf::from(format!("/proc/{old_pid}")).exists());
    let started = Instant::now();
    assert!(node.ping(SHORT).await.is_err());
    assert!(ping(&mut con).await.is_err());
    assert!(started.elapsed() < SHORT * 4);
    assert!(matches!(
        node.pause().await,
        Err(HarnessError::NotRunning { index: 0, .. })
    ));
    timeout(LONG, node.kill()).await.unwrap().unwrap(); // idempotent

    timeout(LONG, node.restart()).await.unwrap().unwrap();
    assert_eq!(node.server_port(), port);
    assert_ne!(node.pid(), Some(old_pid));
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(con.get::<_, Option<String>>("k").await.unwrap(), None);
}

#[tokio::test]
async fn kill_then_restart_with_aof_always_keeps_data() {
    let cluster = start(1, Persistence::AofAlways).await;
    let node = cluster.node(0);
    let mut con = connect(&node.url()).await.unwrap();
    let _: () = con.set("k", "v").await.unwrap();
    timeout(LONG, node.kill()).await.unwrap().unwrap();
    timeout(LONG, node.restart()).await.unwrap().unwrap();
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
    // Restarting a running node kills it first; the data is still there.
    timeout(LONG, node.restart()).await.unwrap().unwrap();
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("k").await.unwrap().as_deref(),
        Some("v")
    );
}

/// `restart_empty` is a lost disk: an `appendfsync always` node comes back without its
/// keys, on its port, still persisting (what it is sent afterwards survives a restart).
#[tokio::test]
async fn restart_empty_loses_the_data_of_an_aof_node() {
    let cluster = start(1, Persistence::AofAlways).await;
    let node = cluster.node(0);
    let mut con = connect(&node.url()).await.unwrap();
    let _: () = con.set("k", "v").await.unwrap();
    let port = node.server_port();
    timeout(LONG, node.restart_empty()).await.unwrap().unwrap();
    assert!(node.is_running());
    assert_eq!(node.server_port(), port);
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(con.get::<_, Option<String>>("k").await.unwrap(), None);
    let _: () = con.set("after", "v").await.unwrap();
    timeout(LONG, node.restart()).await.unwrap().unwrap();
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(
        con.get::<_, Option<String>>("after")
            .await
            .unwrap()
            .as_deref(),
        Some("v")
    );
    // A killed node can be restarted empty too.
    timeout(LONG, node.kill()).await.unwrap().unwrap();
    timeout(LONG, node.restart_empty()).await.unwrap().unwrap();
    let mut con = connect(&node.url()).await.unwrap();
    assert_eq!(con.get::<_, Option<String>>("after").await.unwrap(), None);
}

#[tokio::test]
async fn partition_then_heal() {
    let cluster = start(2, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut old = connect(&node.url()).await.unwrap();
    ping(&mut old).await.unwrap();

    node.partition().await.unwrap();
    assert!(node.is_partitioned());
    assert!(ping(&mut old).await.is_err());
    let err = node.ping(SHORT).await.unwrap_err();
    assert!(err.is_timeout(), "{err}");
    // Only the proxy is cut: the server and the other node are fine.
    node.ping_direct(LONG).await.unwrap();
    cluster.node(1).ping(LONG).await.unwrap();

    timeout(LONG, node.heal()).await.unwrap().unwrap();
    assert!(!node.is_partitioned());
    node.ping(LONG).await.unwrap();
    let mut fresh = connect(&node.url()).await.unwrap();
    ping(&mut fresh).await.unwrap();
    // The connection that lived through the partition was closed at heal.
    assert!(ping(&mut old).await.is_err());
}

#[tokio::test]
async fn latency_delays_each_direction() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let d = Duration::from_millis(50);
    let mut con = connect(&node.url()).await.unwrap();
    ping(&mut con).await.unwrap();

    node.set_latency(d).await.unwrap();
    assert_eq!(node.latency(), d);
    let started = Instant::now();
    ping(&mut con).await.unwrap();
    assert!(started.elapsed() >= 2 * d, "{:?}", started.elapsed());
    let rtt = node.ping(LONG).await.unwrap();
    assert!(rtt >= 2 * d, "{rtt:?}");

    node.set_latency(Duration::ZERO).await.unwrap();
    let rtt = node.ping(LONG).await.unwrap();
    assert!(rtt < d, "{rtt:?}");
    ping(&mut con).await.unwrap();
}

#[tokio::test]
async fn clear_faults_undoes_everything() {
    let cluster = start(3, Persistence::Memory).await;
    cluster.node(0).pause().await.unwrap();
    cluster.node(1).kill().await.unwrap();
    cluster.node(2).partition().await.unwrap();
    cluster.node(2).set_latency(SHORT).await.unwrap();
    timeout(LONG, cluster.clear_faults())
        .await
        .unwrap()
        .unwrap();
    timeout(LONG, cluster.wait_healthy(Duration::from_secs(5)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cluster.node(2).latency(), Duration::ZERO);
}

#[tokio::test]
async fn drop_leaves_no_process_and_no_dir() {
    let cluster = start(3, Persistence::AofAlways).await;
    cluster.node(0).pause().await.unwrap();
    let pids: Vec<u32> = cluster.nodes().iter().filter_map(|n| n.pid()).collect();
    let dirs: Vec<PathBuf> = cluster
        .nodes()
        .iter()
        .map(|n| n.dir().to_path_buf())
        .collect();
    let proxy = cluster.node(1).url();
    assert_eq!(pids.len(), 3);
    assert!(dirs.iter().all(|d| d.join("redis.log").exists()));

    drop(cluster);
    for pid in pids {
        assert!(
            !PathBuf::from(format!("/proc/{pid}")).exists(),
            "pid {pid} lives"
        );
    }
    for dir in dirs {
        assert!(!dir.exists(), "{} remains", dir.display());
    }
    // The proxy is gone too.
    assert!(connect(&proxy).await.is_err());
}

#[tokio::test]
async fn drop_on_panic_cleans_up() {
    let cluster = start(1, Persistence::Memory).await;
    let pid = cluster.node(0).pid().unwrap();
    let dir = cluster.node(0).dir().to_path_buf();
    let task = tokio::spawn(async move {
        let _cluster = cluster;
        panic!("test failure inside a task holding the cluster");
    });
    assert!(task.await.unwrap_err().is_panic());
    assert!(!PathBuf::from(format!("/proc/{pid}")).exists());
    assert!(!dir.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_clusters_start_concurrently() {
    let starts = (0..10).map(|_| Cluster::builder().nodes(3).start());
    let clusters = timeout(LONG, futures::future::join_all(starts))
        .await
        .expect("starting ten clusters timed out");
    let clusters: Vec<Cluster> = clusters.into_iter().map(Result::unwrap).collect();
    let mut ports: Vec<u16> = clusters
        .iter()
        .flat_map(|c| {
            c.nodes()
                .iter()
                .flat_map(|n| [n.proxy_port(), n.server_port()])
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 60);
    let pings = clusters
        .iter()
        .flat_map(|c| c.nodes())
        .map(|n| n.ping(Duration::from_secs(5)));
    for r in timeout(LONG, futures::future::join_all(pings))
        .await
        .unwrap()
    {
        r.unwrap();
    }
}

#[tokio::test]
async fn config_and_extra_args_reach_every_server() {
    let cluster = timeout(
        LONG,
        Cluster::builder()
            .nodes(2)
            .extra_args(["--maxmemory", "1mb"])
            .config("maxmemory-policy", "allkeys-lru")
            .start(),
    )
    .await
    .unwrap()
    .unwrap();
    for url in cluster.direct_urls() {
        let mut con = connect(&url).await.unwrap();
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(policy[1], "allkeys-lru");
        let mem: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(mem[1], "1048576");
    }
}

#[tokio::test]
async fn startup_errors_are_typed_and_say_what_to_do() {
    let err = Cluster::builder()
        .redis_server("/nonexistent/redis-server")
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, HarnessError::ServerNotFound { .. }), "{err}");
    assert!(err.to_string().contains("apt-get install redis-server"));

    let err = Cluster::builder().nodes(0).start().await.unwrap_err();
    assert!(matches!(err, HarnessError::Config(_)), "{err}");

    let err = timeout(
        LONG,
        Cluster::builder()
            .nodes(1)
            .config("no-such-directive", "1")
            .start(),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, HarnessError::Exited { .. }), "{err}");
    assert!(err.to_string().contains("no-such-directive"), "{err}");
}

/// `GET key` straight to the server, polled until it equals `want` (bounded by `LONG`).
async fn direct_value_becomes(node: &tokio_redlock_harness::Node, key: &str, want: Option<&str>) {
    let mut direct = connect(&node.direct_url()).await.unwrap();
    let deadline = Instant::now() + LONG;
    loop {
        let got: Option<String> = direct.get(key).await.unwrap();
        if got.as_deref() == want {
            return;
        }
        assert!(Instant::now() < deadline, "{key} is {got:?}, want {want:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) -> Result<(), String> {
    match timeout(SHORT * 2, con.set::<_, _, ()>(key, value)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("outer timeout".into()),
    }
}

#[tokio::test]
async fn drop_requests_loses_them_until_heal() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut old = connect(&node.url()).await.unwrap();
    ping(&mut old).await.unwrap();

    node.drop_requests().await.unwrap();
    assert!(node.is_dropping_requests() && !node.is_dropping_replies());
    assert!(!node.is_partitioned());
    let err = set(&mut old, "k", "v").await.unwrap_err();
    assert!(
        err.contains("timed out") || err.contains("outer timeout"),
        "{err}"
    );
    assert!(node.ping(SHORT).await.unwrap_err().is_timeout());
    // The request never reached the server.
    direct_value_becomes(node, "k", None).await;

    timeout(LONG, node.heal()).await.unwrap().unwrap();
    assert!(!node.is_dropping_requests());
    assert!(ping(&mut old).await.is_err(), "lived through it: closed");
    let mut fresh = connect(&node.url()).await.unwrap();
    set(&mut fresh, "k", "w").await.unwrap();
    direct_value_becomes(node, "k", Some("w")).await;
}

#[tokio::test]
async fn drop_replies_applies_requests_the_client_never_hears_of() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut old = connect(&node.url()).await.unwrap();
    ping(&mut old).await.unwrap();

    node.drop_replies().await.unwrap();
    assert!(node.is_dropping_replies() && !node.is_dropping_requests());
    let err = set(&mut old, "k", "v").await.unwrap_err();
    assert!(
        err.contains("timed out") || err.contains("outer timeout"),
        "{err}"
    );
    // Applied all the same.
    direct_value_becomes(node, "k", Some("v")).await;
    assert!(node.ping(SHORT).await.unwrap_err().is_timeout());

    timeout(LONG, node.heal()).await.unwrap().unwrap();
    assert!(!node.is_dropping_replies());
    assert!(ping(&mut old).await.is_err(), "lived through it: closed");
    node.ping(LONG).await.unwrap();
}

#[tokio::test]
async fn reset_after_request_applies_it_and_cuts_the_reply() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut con = connect(&node.url()).await.unwrap();
    ping(&mut con).await.unwrap();

    node.reset_after_requests(1).await.unwrap();
    assert_eq!(node.pending_resets(), 1);
    let started = Instant::now();
    let err = set(&mut con, "k", "v").await.unwrap_err();
    // An error at once (the reset), not a timeout.
    assert!(
        started.elapsed() < SHORT,
        "{err} after {:?}",
        started.elapsed()
    );
    assert!(!err.contains("outer timeout"), "{err}");
    direct_value_becomes(node, "k", Some("v")).await;
    assert_eq!(node.pending_resets(), 0);
    // Only one was armed: the next connection works.
    let mut fresh = connect(&node.url()).await.unwrap();
    set(&mut fresh, "k", "w").await.unwrap();

    // Every request, until the undo. A raw socket: a redis-rs handshake is a request too.
    node.reset_after_requests(u32::MAX).await.unwrap();
    for value in ["x", "y"] {
        let mut raw = tokio::net::TcpStream::connect(("127.0.0.1", node.proxy_port()))
            .await
            .unwrap();
        let cmd = format!("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n{value}\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut raw, cmd.as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let read = timeout(LONG, tokio::io::AsyncReadExt::read(&mut raw, &mut buf)).await;
        let err = read.unwrap().unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        direct_value_becomes(node, "k", Some(value)).await;
    }
    assert_eq!(node.pending_resets(), u32::MAX);
    node.stop_resets().await.unwrap();
    assert_eq!(node.pending_resets(), 0);
    let mut con = connect(&node.url()).await.unwrap();
    set(&mut con, "k", "z").await.unwrap();
}

#[tokio::test]
async fn flap_partitions_for_its_duration_then_heals() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let mut old = connect(&node.url()).await.unwrap();
    ping(&mut old).await.unwrap();
    let d = Duration::from_millis(250);
    let started = Instant::now();
    let during = async {
        // The flap partitions on its first poll, before this runs.
        assert!(node.is_partitioned());
        assert!(node.ping(Duration::from_millis(50)).await.is_err());
    };
    let (flapped, ()) = timeout(LONG, async { tokio::join!(node.flap(d), during) })
        .await
        .unwrap();
    flapped.unwrap();
    assert!(started.elapsed() >= d);
    assert!(!node.is_partitioned());
    node.ping(LONG).await.unwrap();
    assert!(ping(&mut old).await.is_err(), "lived through it: closed");
}

#[tokio::test]
async fn latency_spike_delays_then_restores_the_latency_before() {
    let cluster = start(1, Persistence::Memory).await;
    let node = cluster.node(0);
    let base = Duration::from_millis(2);
    let spike = Duration::from_millis(60);
    node.set_latency(base).await.unwrap();
    let during = async {
        assert_eq!(node.latency(), spike);
        let rtt = node.ping(LONG).await.unwrap();
        assert!(rtt >= 2 * spike, "{rtt:?}");
    };
    let (spiked, ()) = timeout(LONG, async {
        tokio::join!(
            node.latency_spike(spike, Duration::from_millis(400)),
            during
        )
    })
    .await
    .unwrap();
    spiked.unwrap();
    assert_eq!(node.latency(), base);
    let rtt = node.ping(LONG).await.unwrap();
    assert!(rtt < spike, "{rtt:?}");
}
