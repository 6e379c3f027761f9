//! Clusters, the tool as a process, and bounded waits.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use tokio::process::{Child, Command};
use tokio_redlock_harness::Cluster;

/// Every wait in the tests is bounded by this, so a hang fails instead of stalling CI.
pub const WAIT: Duration = Duration::from_secs(30);

/// Starts an `n`-node memory-only cluster.
pub async fn cluster(n: usize) -> Cluster {
    tokio::time::timeout(WAIT, Cluster::builder().nodes(n).start())
        .await
        .expect("cluster start timed out")
        .expect("cluster starts")
}

/// `redlock` on the cluster's (proxied) nodes, with quick retries (and the tool's
/// default node timeout, 250 ms, generous enough for a loaded 2-core machine). Its stdin is closed,
/// its output captured; it is killed if the test drops it.
pub fn redlock(cluster: &Cluster) -> Command {
    redlock_on(&cluster.urls())
}

/// [`redlock`] on these node URLs (for tasks that cannot borrow the cluster).
pub fn redlock_on(urls: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlock"));
    cmd.env_remove("REDLOCK_NODES")
        .arg("--nodes")
        .arg(urls.join(","))
        .args([
            "--node-timeout",
            "250ms",
            "--retry-delay",
            "20ms",
            "--retry-jitter",
            "20ms",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// `redlock` without nodes, for usage errors.
pub fn bare() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_redlock"));
    cmd.env_remove("REDLOCK_NODES")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs `cmd` to its end (bounded).
pub async fn output(cmd: &mut Command) -> Output {
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("redlock did not exit in time")
        .expect("redlock runs")
}

/// Waits for a started tool's end (bounded).
pub async fn finish(child: Child) -> Output {
    tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("redlock did not exit in time")
        .expect("wait for redlock")
}

pub fn status(out: &Output) -> i32 {
    out.status.code().expect("exited, not killed by a signal")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Polls until `path` exists, failing after [`WAIT`].
pub async fn file_appears(path: &Path) {
    until(&format!("{} to appear", path.display()), || path.exists()).await;
}

/// Polls `check` every 10 ms until it holds, failing after [`WAIT`].
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Sends `signal` to a started tool.
pub fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = child.id().expect("redlock still runs");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid"));
    nix::sys::signal::kill(pid, signal).expect("signal redlock");
}

/// How many 20 ms naps a test's command takes at most while it idles: [`WAIT`], so
/// that a command left behind by a failed test (its tool killed) ends by itself.
const NAPS: u32 = (WAIT.as_millis() / 20) as u32;

/// Shell: idle until `path` exists (or [`WAIT`] passed).
pub fn idle_until_exists(path: &Path) -> String {
    format!(
        "i=0; while [ ! -e '{}' ] && [ $i -lt {NAPS} ]; do sleep 0.02; i=$((i+1)); done",
        path.display()
    )
}

/// Shell: idle for [`WAIT`], until a signal ends it.
pub fn idle() -> String {
    format!("i=0; while [ $i -lt {NAPS} ]; do sleep 0.02; i=$((i+1)); done")
}

/// A shell command for the tool to run.
pub fn sh(script: &str) -> [&str; 3] {
    ["sh", "-c", script]
}

/// Polls until the started tool catches `signal` (its handler is installed), as Linux
/// shows in /proc/<pid>/status (`SigCgt`, a hex mask with bit n - 1 for signal n).
pub async fn handler_installed(child: &Child, signal: nix::sys::signal::Signal) {
    let pid = child.id().expect("redlock still runs");
    let path = format!("/proc/{pid}/status");
    let bit = 1u64 << (signal as i32 - 1);
    until(&format!("redlock to catch {signal}"), || {
        std::fs::read_to_string(&path)
            .ok()
            .and_then(|status| {
                let mask = status.lines().find_map(|l| l.strip_prefix("SigCgt:"))?;
                u64::from_str_radix(mask.trim(), 16).ok()
            })
            .is_some_and(|mask| mask & bit != 0)
    })
    .await;
}
