//! Client processes from start to stop: spawned with their settings, each waited for
//! until it prints `ready`; stopped with SIGTERM, waited for to release and exit, their
//! `done` lines and histories read, and the ghost rule applied once they are gone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use super::super::direct::Direct;
use super::super::driver::{recheck, snapshot, GHOST_RECHECK, GHOST_SLACK};
use super::super::oracle::{Kind, Oracle};
use super::*;

/// A process prints `ready` within this (exec, runtime, manager; connections are lazy).
const READY_BOUND: Duration = Duration::from_secs(10);
/// A stopped process finishes its call (bounded by its settings: at most 5 attempts of
/// 4 rounds of 3 × 250 ms + 40 ms pauses, about 16 s, far less once healed), releases
/// and writes its history within this; past it, it is killed and reported stuck.
const STOP_BOUND: Duration = Duration::from_secs(30);
/// A process not stopped by the driver (a test that panicked) ends by itself after this.
const MAX_LIFE: Duration = Duration::from_secs(300);

/// The client binary, built by cargo with this test (a binary target of this package).
fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_safety_client"))
}

struct Proc {
    spec: Spec,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    history: PathBuf,
}

/// The processes of one episode, running.
pub struct Running {
    procs: Vec<Proc>,
    _dir: tempfile::TempDir,
}

/// What the processes of an episode did.
#[derive(Default)]
pub struct Stopped {
    pub histories: Vec<History>,
    /// Acquisitions the processes reported, per their `done` line.
    pub reported: u64,
    /// Whatever went wrong with a process: stuck (a call past its bound), crashed or no
    /// history (a panic, as far as the run can tell).
    pub problems: Vec<(Kind, String)>,
}

/// Starts `specs` on `resources` through `urls`; each has printed `ready` on return.
pub async fn start(specs: &[Spec], urls: &[String], resources: &[String]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir for process histories");
    let mut procs = Vec::new();
    for spec in specs {
        let history = dir.path().join(format!("p{}.history", spec.client));
        let ms = |d: u64| d.to_string();
        let mut child = Command::new(binary())
            .arg("--nodes")
            .arg(urls.join(","))
            .arg("--resources")
            .arg(resources.join(","))
            .args(["--rounds", "1000000", "--seed", &spec.seed.to_string()])
            .args([
                "--think-ms",
                &ms(spec.think_ms),
                "--hold-ms",
                &ms(spec.hold_ms),
            ])
            .args(["--ttl-ms", &ms(spec.ttl_ms)])
            .args(["--fencing", if spec.fencing { "on" } else { "off" }])
            .args(["--node-timeout-ms", &ms(spec.node_timeout_ms)])
            .args(["--retry-count", &spec.retry_count.to_string()])
            .args(["--retry-delay-ms", &ms(spec.retry_delay_ms)])
            .args([
                "--label",
                &spec.label(),
                "--client",
                &spec.client.to_string(),
            ])
            .args(["--max-ms", &ms(MAX_LIFE.as_millis() as u64)])
            .arg("--history")
            .arg(&history)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn safety_client");
        let stdout = child.stdout.take().expect("piped stdout");
        procs.push(Proc {
            spec: spec.clone(),
            child,
            lines: BufReader::new(stdout).lines(),
            history,
        });
    }
    for p in &mut procs {
        let line = tokio::time::timeout(READY_BOUND, p.lines.next_line()).await;
        assert!(
            matches!(&line, Ok(Ok(Some(l))) if l == "ready"),
            "process client {} did not get ready: {line:?}",
            p.spec.client
        );
    }
    Running { procs, _dir: dir }
}

impl Running {
    /// Once the faults are healed and their requests landed: stops the processes,
    /// flags what went wrong with them, and after their node timeout + slack applies the
    /// [ghost rule](ghosts). Returns what they did.
    pub async fn finish(self, direct: &mut [Direct], oracle: &Oracle, nodes: usize) -> Stopped {
        let Some(nt) = self.procs.iter().map(|p| p.spec.node_timeout_ms).max() else {
            return Stopped::default();
        };
        let at_stop = snapshot(direct).await;
        let mut stopped = self.stop().await;
        for (kind, what) in stopped.problems.drain(..) {
            oracle.flag(kind, None, what);
        }
        tokio::time::sleep(Duration::from_millis(nt) + GHOST_SLACK).await;
        let now = snapshot(direct).await;
        let found = ghosts(&at_stop, &now, nodes / 2 + 1);
        let patience = GHOST_RECHECK.max(Duration::from_millis(nt) * 4);
        for (_, what) in recheck(direct, found, patience).await {
            oracle.flag(Kind::Ghost, None, what);
        }
        stopped
    }

    /// Stops every process (SIGTERM), waits for each to release and exit, and reads what
    /// it recorded.
    pub async fn stop(self) -> Stopped {
        let mut out = Stopped::default();
        for p in &self.procs {
            if let Some(pid) = p.child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
        }
        for mut p in self.procs {
            let who = format!("process client {}", p.spec.client);
            let done = tokio::time::timeout(STOP_BOUND, async {
                let mut last = None;
                while let Ok(Some(line)) = p.lines.next_line().await {
                    last = Some(line);
                }
                (last, p.child.wait().await)
            })
            .await;
            let (last, status) = match done {
                Ok(d) => d,
                Err(_) => {
                    let _ = p.child.kill().await;
                    out.problems.push((
                        Kind::CallBound,
                        format!("{who} still running {STOP_BOUND:?} after SIGTERM"),
                    ));
                    continue;
                }
            };
            let mut stderr = String::new();
            if let Some(mut e) = p.child.stderr.take() {
                let _ = e.read_to_string(&mut stderr).await;
            }
            let ok = status.as_ref().is_ok_and(|s| s.success());
            let reported = last
                .as_deref()
                .and_then(|l| l.strip_prefix("done "))
                .and_then(|l| l.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok());
            match (ok, reported) {
                (true, Some(n)) => out.reported += n,
                _ => out.problems.push((
                    Kind::Panic,
                    format!(
                        "{who} ended with {status:?} after `{}`: {}",
                        last.unwrap_or_default(),
                        stderr.trim()
                    ),
                )),
            }
            match History::read_file(&p.history) {
                Ok(h) => out.histories.push(h),
                Err(e) => out
                    .problems
                    .push((Kind::Panic, format!("{who}: history unreadable: {e}"))),
            }
        }
        out
    }
}
