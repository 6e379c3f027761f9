//! Clients as separate OS processes, stopped with SIGSTOP like a long GC pause or a
//! stopped VM: once after acquiring, for longer than the TTL, and once in the middle of
//! an acquisition. Each process writes its own history on the machine-wide clock; the
//! test merges them with its own and runs the checkers. Expected: C1 (no two holders
//! within their validity) and C3 (tokens increase) clean in both.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio_redlock::Redlock;
use tokio_redlock_harness::checker::{claims, fencing};
use tokio_redlock_harness::history::{instant_ns, EventKind, History, Recorder};
use tokio_redlock_harness::Cluster;

use crate::support::{self, bounded};

const TTL: Duration = Duration::from_millis(500);

struct Client {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Client {
    async fn spawn(bin: &Path, cluster: &Cluster, id: u32, hold: Duration, history: &Path) -> Self {
        let mut child = Command::new(bin)
            .arg("--nodes")
            .arg(cluster.urls().join(","))
            .args(["--resource", "r", "--ttl-ms"])
            .arg(TTL.as_millis().to_string())
            .arg("--hold-ms")
            .arg(hold.as_millis().to_string())
            .arg("--client")
            .arg(id.to_string())
            .arg("--history")
            .arg(history)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn safety_client");
        let stdout = child.stdout.take().expect("piped stdout");
        Self {
            child,
            lines: BufReader::new(stdout).lines(),
        }
    }

    /// The next line the client prints (bounded).
    async fn line(&mut self) -> String {
        bounded(self.lines.next_line())
            .await
            .expect("read the client's output")
            .expect("the client printed a line")
    }

    fn signal(&self, signal: Signal) {
        let pid = self.child.id().expect("running client") as i32;
        kill(Pid::from_raw(pid), signal).expect("signal the client");
    }

    async fn finish(mut self) {
        let status = bounded(self.child.wait())
            .await
            .expect("wait for the client");
        assert!(status.success(), "client exited with {status}");
    }
}

/// The test's own client: acquires with retries and records it.
async fn acquire_here(rec: &Recorder, cluster: &Cluster) -> Option<u64> {
    let redlock = Redlock::builder()
        .nodes(cluster.urls())
        .fencing(true)
        .retry_count(100)
        .retry_delay(Duration::from_millis(20))
        .node_timeout(Duration::from_secs(2))
        .build()
        .expect("valid config");
    rec.record(99, 1, "r", EventKind::Start);
    let guard = bounded(redlock.acquire("r", TTL)).await.ok()?;
    rec.record(
        99,
        1,
        "r",
        EventKind::Acquired {
            valid_until_ns: instant_ns(guard.valid_until()),
            token: guard.fencing_token(),
        },
    );
    let token = guard.fencing_token();
    rec.record(99, 1, "r", EventKind::Released);
    guard.release().await.ok()?;
    token
}

fn check(name: &str, histories: Vec<History>) -> History {
    let merged = History::merge(histories);
    let c1 = claims(&merged);
    let c3 = fencing(&merged);
    println!(
        "| {name:<28} | acquisitions {} | C1 {} | C3 {} |",
        merged.acquisitions(),
        c1.len(),
        c3.len()
    );
    assert!(c1.is_empty() && c3.is_empty(), "{name}: {c1:?} {c3:?}");
    merged
}

/// A client process stopped after it acquired, for three TTLs: another client gets the
/// lock once the first one's validity ended, never before, with a greater token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_process_stopped_while_holding() {
    let bin = Path::new(env!("CARGO_BIN_EXE_safety_client"));
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client-1.txt");
    let mut client = Client::spawn(bin, &cluster, 1, Duration::from_millis(200), &path).await;
    assert_eq!(client.line().await, "attempting");
    let acquired = client.line().await;
    assert!(acquired.starts_with("acquired "), "{acquired}");
    client.signal(Signal::SIGSTOP);
    let rec = Recorder::new();
    // The stopped holder's key expires with its TTL; the test's client waits for it.
    let token = acquire_here(&rec, &cluster).await;
    // A pause of three TTLs in all, then the holder wakes up and finishes.
    tokio::time::sleep(TTL * 2).await;
    client.signal(Signal::SIGCONT);
    client.finish().await;
    let first: u64 = acquired["acquired ".len()..].parse().expect("token");
    assert!(token.expect("the second client acquires") > first);
    let merged = check(
        "process_stopped_holding",
        vec![History::read_file(&path).expect("history"), rec.history()],
    );
    assert_eq!(merged.acquisitions(), 2);
}

/// A client process stopped in the middle of its acquisition, while its requests are
/// slowed by the network, for longer than the TTL: when it resumes, its attempt has taken
/// longer than the TTL and must not count as acquired while another client holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_process_stopped_mid_acquisition() {
    let bin = Path::new(env!("CARGO_BIN_EXE_safety_client"));
    let cluster = support::cluster(3).await;
    for node in cluster.nodes() {
        node.set_latency(Duration::from_millis(100))
            .await
            .expect("latency");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("client-2.txt");
    let mut client = Client::spawn(bin, &cluster, 2, Duration::from_millis(50), &path).await;
    assert_eq!(client.line().await, "attempting");
    // Its requests take >= 200 ms each way round; stop it while they are out.
    tokio::time::sleep(Duration::from_millis(50)).await;
    client.signal(Signal::SIGSTOP);
    let rec = Recorder::new();
    let token = acquire_here(&rec, &cluster).await;
    assert!(token.is_some(), "the test's client acquires meanwhile");
    tokio::time::sleep(TTL * 2).await;
    client.signal(Signal::SIGCONT);
    let outcome = client.line().await;
    client.finish().await;
    for node in cluster.nodes() {
        node.set_latency(Duration::ZERO).await.expect("latency off");
    }
    println!("stopped client: {outcome}");
    check(
        "process_stopped_acquiring",
        vec![History::read_file(&path).expect("history"), rec.history()],
    );
}
