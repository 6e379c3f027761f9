//! `redlock run`: mutual exclusion between tools, the command's environment and exit
//! status, a busy lock, forwarded signals, and nodes that fail.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio_redlock_harness::Cluster;

use crate::support::{self, file_appears, finish, output, sh, status, stderr, stdout};

/// A command that records its start and end in `log` with a pause between, so that two
/// overlapping runs would interleave their lines.
fn critical_section(log: &Path) -> String {
    format!(
        "echo \"start $$\" >> '{0}'; sleep 0.2; echo \"end $$\" >> '{0}'",
        log.display()
    )
}

/// Checks that the log is `start p` / `end p` pairs, never interleaved, `runs` of them.
fn assert_never_overlapped(log: &Path, runs: usize) {
    let text = std::fs::read_to_string(log).expect("read the shared log");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2 * runs, "every run logged twice:\n{text}");
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ");
        let end = pair[1].strip_prefix("end ");
        assert!(
            start.is_some() && start == end,
            "two commands ran at once:\n{text}"
        );
    }
}

/// `tools` tools at once, each running the critical section `runs` times in a row, on
/// one resource; then checks that the commands never overlapped.
async fn contend(cluster: &Cluster, log: &Path, tools: usize, runs: usize) {
    let script = critical_section(log);
    let urls = cluster.urls();
    let mut tasks = Vec::new();
    for _ in 0..tools {
        let (script, urls) = (script.clone(), urls.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..runs {
                let out = output(
                    support::redlock_on(&urls)
                        .args(["run", "--ttl", "5s", "--wait", "25s", "shared", "--"])
                        .args(sh(&script)),
                )
                .await;
                assert_eq!(status(&out), 0, "{}", stderr(&out));
            }
        }));
    }
    for task in tasks {
        task.await.expect("a tool failed");
    }
    assert_never_overlapped(log, tools * runs);
}

/// Two tools, three runs each, on one resource: their commands never run at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tools_never_run_their_commands_at_once() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    contend(&cluster, &dir.path().join("log"), 2, 3).await;
}

/// The same with one node of five paused (SIGSTOP: it hangs, every request to it times
/// out) and another killed: the three left are a quorum, and exclusion holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclusion_holds_with_a_node_paused_and_one_killed() {
    let cluster = support::cluster(5).await;
    cluster.node(0).pause().await.expect("pause node 0");
    cluster.node(3).kill().await.expect("kill node 3");
    let dir = tempfile::tempdir().expect("tempdir");
    contend(&cluster, &dir.path().join("log"), 2, 2).await;
    cluster.node(0).resume().await.expect("resume node 0");
}

/// The command sees the resource, the holder's owner label and, with --fencing, a
/// token that grows from one run to the next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_sees_resource_value_and_token() {
    let cluster = support::cluster(3).await;
    let script = "echo \"$REDLOCK_RESOURCE|$REDLOCK_VALUE|${REDLOCK_TOKEN-unset}\"";
    let mut tokens = Vec::new();
    for _ in 0..2 {
        let out = output(
            support::redlock(&cluster)
                .args([
                    "--owner-label",
                    "nightly-job",
                    "run",
                    "--fencing",
                    "report",
                    "--",
                ])
                .args(sh(script)),
        )
        .await;
        assert_eq!(status(&out), 0, "{}", stderr(&out));
        let line = stdout(&out);
        let fields: Vec<&str> = line.trim().split('|').collect();
        assert_eq!(fields[0], "report", "{line}");
        // The stored value: the label, then a UUID.
        let (label, uuid) = fields[1].split_once(':').expect("<label>:<uuid>");
        assert_eq!((label, uuid.len()), ("nightly-job", 32), "{line}");
        tokens.push(fields[2].parse::<u64>().expect("a numeric token"));
    }
    assert!(tokens[1] > tokens[0], "{tokens:?}");

    // Without --fencing there is no token, also when the caller's environment has one;
    // the default owner label names this host and the tool's pid.
    let out = output(
        support::redlock(&cluster)
            .env("REDLOCK_TOKEN", "7")
            .args(["run", "report", "--"])
            .args(sh(script)),
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let line = stdout(&out);
    assert!(line.starts_with("report|redlock@"), "{line}");
    assert!(line.trim().ends_with("|unset"), "{line}");
}

/// The command's exit status passes through: its code, 128 + n when signal n ended it,
/// 127 when it does not exist; and each time the lock is released (the next
/// `--no-wait` run gets it at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_commands_exit_status_passes_through() {
    let cluster = support::cluster(3).await;
    let cases: [(&[&str], i32); 4] = [
        (&sh("exit 7"), 7),
        (&sh("exit 0"), 0),
        (&sh("kill -TERM $$"), 143),
        (&["/nonexistent/command"], 127),
    ];
    for (command, expected) in cases {
        let out = output(
            support::redlock(&cluster)
                .args(["run", "--no-wait", "status", "--"])
                .args(command),
        )
        .await;
        assert_eq!(status(&out), expected, "{command:?}: {}", stderr(&out));
    }
}

/// A busy lock: `--no-wait` exits 75 at once without running its command, and `--wait`
/// exits 75 once its time ran out. After the holder ends, the lock is free.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_lock_exits_75_and_the_command_does_not_run() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let done = dir.path().join("done");
    let ran = dir.path().join("ran");
    let holder = support::redlock(&cluster)
        .args(["run", "busy", "--"])
        .args(sh(&format!(
            "touch '{}'; {}",
            ready.display(),
            support::idle_until_exists(&done)
        )))
        .spawn()
        .expect("start the holder");
    file_appears(&ready).await;

    let touch = format!("touch '{}'", ran.display());
    let started = Instant::now();
    let out = output(
        support::redlock(&cluster)
            .args(["run", "--no-wait", "busy", "--"])
            .args(sh(&touch)),
    )
    .await;
    assert_eq!(status(&out), 75, "{}", stderr(&out));
    let message = stderr(&out);
    assert!(
        message.starts_with("redlock: lock not obtained"),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");

    let out = output(
        support::redlock(&cluster)
            .args(["run", "--wait", "500ms", "busy", "--"])
            .args(sh(&touch)),
    )
    .await;
    assert_eq!(status(&out), 75, "{}", stderr(&out));
    assert!(started.elapsed() >= Duration::from_millis(500));
    assert!(!ran.exists(), "a command ran without the lock");

    std::fs::write(&done, "").expect("end the holder");
    let out = finish(holder).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let out = output(
        support::redlock(&cluster)
            .args(["run", "--no-wait", "busy", "--"])
            .args(sh(&touch)),
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(ran.exists());
}

/// SIGTERM to the tool reaches the command; the command exits (here with 0 after its
/// trap), the tool releases the lock and exits with the command's status. The lock is
/// free at once after: inspect shows no holder and a `--no-wait` run gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_forwarded_and_the_lock_released() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let got = dir.path().join("got-term");
    let holder = support::redlock(&cluster)
        .args(["run", "--ttl", "1m", "forward", "--"])
        .args(sh(&format!(
            "trap 'echo term > \"{}\"; exit 0' TERM; touch '{}'; {}",
            got.display(),
            ready.display(),
            support::idle()
        )))
        .spawn()
        .expect("start the holder");
    file_appears(&ready).await;
    support::signal(&holder, Signal::SIGTERM);
    let out = finish(holder).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert!(got.exists(), "the command did not get the SIGTERM");

    // Released, not left to its one-minute ttl.
    let out = output(support::redlock(&cluster).args(["inspect", "forward", "--json"])).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["holders"], serde_json::json!([]), "{info}");
    let out =
        output(support::redlock(&cluster).args(["run", "--no-wait", "forward", "--", "true"]))
            .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}

/// A signal while the tool waits for a busy lock ends the wait at once, with 128 + n,
/// and the command never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_while_waiting_ends_the_wait() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let done = dir.path().join("done");
    let ran = dir.path().join("ran");
    let holder = support::redlock(&cluster)
        .args(["run", "held", "--"])
        .args(sh(&format!(
            "touch '{}'; {}",
            ready.display(),
            support::idle_until_exists(&done)
        )))
        .spawn()
        .expect("start the holder");
    file_appears(&ready).await;
    let waiter = support::redlock(&cluster)
        .args(["run", "--wait", "1m", "held", "--"])
        .args(sh(&format!("touch '{}'", ran.display())))
        .spawn()
        .expect("start the waiter");
    // The tool installs its handlers before its first attempt: once SIGINT is caught,
    // it is waiting or about to.
    support::handler_installed(&waiter, Signal::SIGINT).await;
    support::signal(&waiter, Signal::SIGINT);
    let out = finish(waiter).await;
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(!ran.exists(), "the command ran without the lock");
    std::fs::write(&done, "").expect("end the holder");
    let out = finish(holder).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}

/// The nodes may come from REDLOCK_NODES alone, and the node settings may follow the
/// subcommand.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_from_the_environment() {
    let cluster = support::cluster(3).await;
    let out = output(
        support::bare()
            .env("REDLOCK_NODES", cluster.urls().join(","))
            .args(["run", "--no-wait", "--retry-delay", "20ms", "env", "--"])
            .args(sh("echo \"$REDLOCK_RESOURCE\"")),
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "env");
}
