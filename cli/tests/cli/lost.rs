//! A lost lock stops the command: SIGTERM, then SIGKILL after --kill-after, and the
//! tool exits 76.
//!
//! The loss is made as it happens in production: a majority of the nodes becomes
//! unreachable (partitioned by their proxies), so no extension reaches a quorum and
//! the lock's validity runs out.

use tokio_redlock_harness::Cluster;

use crate::support::{self, file_appears, finish, sh, status, stderr};

/// The lost status documented in cli/README.md.
const LOST: i32 = 76;

/// Partitions nodes 0 and 1 of three: a majority.
async fn partition_majority(cluster: &Cluster) {
    cluster.node(0).partition().await.expect("partition node 0");
    cluster.node(1).partition().await.expect("partition node 1");
}

/// The command gets SIGTERM when the lock is lost, may stop cleanly, and the tool exits
/// 76 (not the command's 0) with one line saying what happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_lock_stops_the_command_with_sigterm() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let got = dir.path().join("got-term");
    let tool = support::redlock(&cluster)
        .args(["run", "--ttl", "1s", "lease", "--"])
        .args(sh(&format!(
            "trap 'echo term > \"{}\"; exit 0' TERM; touch '{}'; {}",
            got.display(),
            ready.display(),
            support::idle()
        )))
        .spawn()
        .expect("start the tool");
    file_appears(&ready).await;
    partition_majority(&cluster).await;
    // A ttl of 1 s: the loss is declared within it, the command stops at once.
    let out = finish(tool).await;
    let message = stderr(&out);
    assert_eq!(status(&out), LOST, "{message}");
    assert!(got.exists(), "the command did not get SIGTERM");
    assert!(message.contains("lost the lock on `lease`"), "{message}");
    assert!(
        message.lines().all(|l| l.starts_with("redlock: ")),
        "{message}"
    );
}

/// A command that ignores SIGTERM is killed after --kill-after; the tool exits 76.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_ignores_sigterm_is_killed_after_kill_after() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let tool = support::redlock(&cluster)
        .args([
            "run",
            "--ttl",
            "1s",
            "--kill-after",
            "300ms",
            "stubborn",
            "--",
        ])
        .args(sh(&format!(
            "trap '' TERM; touch '{}'; {}",
            ready.display(),
            support::idle()
        )))
        .spawn()
        .expect("start the tool");
    file_appears(&ready).await;
    partition_majority(&cluster).await;
    let out = finish(tool).await;
    let message = stderr(&out);
    assert_eq!(status(&out), LOST, "{message}");
    assert!(message.contains("SIGKILL"), "{message}");
    assert!(message.contains("killed by SIGKILL"), "{message}");
    // Healed, the nodes serve the next holder once the lost lock's keys expired.
    cluster.node(0).heal().await.expect("heal");
    cluster.node(1).heal().await.expect("heal");
    let out = support::output(
        support::redlock(&cluster).args(["run", "--wait", "5s", "stubborn", "--", "true"]),
    )
    .await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
}
