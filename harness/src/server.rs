//! One `redis-server` process: spawn on a free port, await readiness, signal, kill, restart.

use std::ffi::OsString;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::{HarnessError, Persistence};
use crate::sync::lock;

/// How often readiness is polled. Short: a fresh `redis-server` is up within a few ms, and
/// each poll is one loopback connect.
const READY_POLL: Duration = Duration::from_millis(5);
/// Bound on one readiness probe, so a probe against a stuck socket cannot eat the deadline.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);
/// How many fresh ports a first start tries before giving up (each failure is a port
/// taken between choosing it and the server binding it, a race with parallel tests).
const START_ATTEMPTS: u32 = 8;
/// How many times a restart retries its fixed port, and how long it waits between tries.
const RESTART_ATTEMPTS: u32 = 5;
const RESTART_BACKOFF: Duration = Duration::from_millis(50);
/// Bound on reaping a killed server in `Drop` (SIGKILL is delivered even to stopped processes,
/// so this normally takes well under a millisecond).
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on waiting for `/proc` to show that SIGSTOP / SIGCONT took effect.
const SIGNAL_SETTLE_TIMEOUT: Duration = Duration::from_secs(1);

/// What is passed to every server, fixed at build time.
#[derive(Debug, Clone)]
pub(crate) struct ServerConfig {
    pub(crate) binary: PathBuf,
    pub(crate) persistence: Persistence,
    pub(crate) extra_args: Vec<String>,
    pub(crate) ready_timeout: Duration,
    /// When set, the server also listens for TLS on a port of its own.
    pub(crate) tls: Option<TlsPem>,
    /// Cluster mode: the server gets a cluster bus port of its own (not `port + 10000`,
    /// which may be taken, or above 65535 for a high free port).
    pub(crate) cluster: bool,
}

/// The PEM files of a TLS server: its certificate chain, its key, and the CA that client
/// certificates are checked against.
#[derive(Clone)]
pub(crate) struct TlsPem {
    pub(crate) cert: String,
    pub(crate) key: String,
    pub(crate) ca: String,
}

impl std::fmt::Debug for TlsPem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key is a secret.
        f.write_str("TlsPem { .. }")
    }
}

/// A `redis-server` process owned by the harness. Dropping it kills and reaps the process, then
/// removes its directory.
#[derive(Debug)]
pub(crate) struct Server {
    index: usize,
    port: u16,
    tls_port: Option<u16>,
    bus_port: Option<u16>,
    config: ServerConfig,
    // `None` once killed. A std mutex: never held across an `.await`.
    child: Mutex<Option<Child>>,
    paused: AtomicBool,
    // Serialises pause/resume/kill/restart so two of them never interleave.
    op: tokio::sync::Mutex<()>,
    // Declared last so it is removed after the process is gone (explicit `Drop` runs first anyway).
    dir: TempDir,
}

enum Launch {
    Ready(Child),
    PortInUse(String),
}

impl Server {
    /// Starts a server on a fresh free port, retrying with a new port when it was taken.
    pub(crate) async fn start(index: usize, config: ServerConfig) -> Result<Self, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tokio-redlock-node{index}-"))
            .tempdir()
            .map_err(|e| HarnessError::io("could not create a temp dir for redis-server", e))?;
        if let Some(tls) = &config.tls {
            for (name, pem) in [
                ("tls.crt", &tls.cert),
                ("tls.key", &tls.key),
                ("ca.crt", &tls.ca),
            ] {
                std::fs::write(dir.path().join(name), pem)
                    .map_err(|e| HarnessError::io(format!("could not write {name}"), e))?;
            }
        }
        let mut last = (0, String::new());
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let tls_port = match config.tls {
                Some(_) => Some(free_port()?),
                None => None,
            };
            let bus_port = if config.cluster {
                Some(free_port()?)
            } else {
                None
            };
            let ports = Ports {
                port,
                tls_port,
                bus_port,
            };
            match launch(&config, dir.path(), ports).await? {
                Launch::Ready(child) => {
                    return Ok(Self {
                        index,
                        port,
                        tls_port,
                        bus_port,
                        config,
                        child: Mutex::new(Some(child)),
                        paused: AtomicBool::new(false),
                        op: tokio::sync::Mutex::new(()),
                        dir,
                    })
                }
                Launch::PortInUse(tail) => last = (port, tail),
            }
        }
        Err(HarnessError::PortTaken {
            port: last.0,
            attempts: START_ATTEMPTS,
            log_tail: last.1,
        })
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn bus_port(&self) -> Option<u16> {
        self.bus_port
    }

    pub(crate) fn tls_port(&self) -> Option<u16> {
        self.tls_port
    }

    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        lock(&self.child).as_ref().and_then(Child::id)
    }

    pub(crate) fn is_running(&self) -> bool {
        lock(&self.child)
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Acquire) && self.is_running()
    }

    pub(crate) fn log_tail(&self, lines: usize) -> String {
        log_tail(self.dir.path(), lines)
    }

    pub(crate) async fn pause(&self) -> Result<(), HarnessError> {
        let _op = self.op.lock().await;
        let pid = self.running_pid()?;
        send(pid, Signal::SIGSTOP)?;
        self.paused.store(true, Ordering::Release);
        wait_stopped(pid, true).await
    }

    pub(crate) async fn resume(&self) -> Result<(), HarnessError> {
        let _op = self.op.lock().await;
        let pid = self.running_pid()?;
        send(pid, Signal::SIGCONT)?;
        self.paused.store(false, Ordering::Release);
        wait_stopped(pid, false).await
    }

    /// Kills with SIGKILL and reaps. Killing a killed node is a no-op.
    pub(crate) async fn kill(&self) -> Result<(), HarnessError> {
        let _op = self.op.lock().await;
        self.kill_locked().await
    }

    pub(crate) async fn restart(&self) -> Result<(), HarnessError> {
        let _op = self.op.lock().await;
        self.kill_locked().await?;
        self.launch_again().await
    }

    /// Kills the server, deletes what it persisted (its AOF directory or files and any
    /// RDB snapshot, as a replaced disk would), and starts it again on the same port.
    /// Logs and TLS files stay.
    pub(crate) async fn restart_empty(&self) -> Result<(), HarnessError> {
        let _op = self.op.lock().await;
        self.kill_locked().await?;
        wipe_data(self.dir.path())?;
        self.launch_again().await
    }

    /// Starts the (killed) server again on its own ports and directory.
    async fn launch_again(&self) -> Result<(), HarnessError> {
        let mut tail = String::new();
        for attempt in 0..RESTART_ATTEMPTS {
            if attempt > 0 {
                // The old socket is closed once the process is reaped, so a clash here means a
                // foreign process grabbed the port; give it a moment to go away.
                tokio::time::sleep(RESTART_BACKOFF).await;
            }
            let ports = Ports {
                port: self.port,
                tls_port: self.tls_port,
                bus_port: self.bus_port,
            };
            match launch(&self.config, self.dir.path(), ports).await? {
                Launch::Ready(child) => {
                    *lock(&self.child) = Some(child);
                    return Ok(());
                }
                Launch::PortInUse(t) => tail = t,
            }
        }
        Err(HarnessError::PortTaken {
            port: self.port,
            attempts: RESTART_ATTEMPTS,
            log_tail: tail,
        })
    }

    async fn kill_locked(&self) -> Result<(), HarnessError> {
        self.paused.store(false, Ordering::Release);
        // Taken out before the first `.await`: if this future is cancelled, dropping the child
        // still kills it (`kill_on_drop`) and tokio reaps it in the background.
        let Some(mut child) = lock(&self.child).take() else {
            return Ok(());
        };
        // Fails only when the child was already reaped; `wait` then returns at once.
        let _ = child.start_kill();
        child
            .wait()
            .await
            .map_err(|e| HarnessError::io("could not reap the killed redis-server", e))?;
        Ok(())
    }

    fn running_pid(&self) -> Result<u32, HarnessError> {
        let mut guard = lock(&self.child);
        let child = guard.as_mut();
        child
            .and_then(|c| match c.try_wait() {
                Ok(None) => c.id(),
                _ => None,
            })
            .ok_or(HarnessError::NotRunning { index: self.index })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = lock(&self.child).take() else {
            return;
        };
        let _ = child.start_kill();
        // A synchronous, bounded reap: Drop may run on a runtime thread or after the runtime is
        // gone, so it cannot `.await`. SIGKILL takes effect at once, so this loop is short.
        let deadline = Instant::now() + DROP_REAP_TIMEOUT;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(None) => std::thread::sleep(Duration::from_millis(1)),
                Ok(Some(_)) | Err(_) => return,
            }
        }
        tracing::warn!(
            port = self.port,
            "redis-server not reaped within {DROP_REAP_TIMEOUT:?}"
        );
    }
}

/// Finds the binary: explicit path, then `REDIS_SERVER`, then `PATH`.
pub(crate) fn find_binary(explicit: Option<&Path>) -> Result<PathBuf, HarnessError> {
    if let Some(p) = explicit {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(HarnessError::ServerNotFound {
                searched: format!("redis_server({}) is not a file", p.display()),
            })
        };
    }
    if let Some(p) = std::env::var_os("REDIS_SERVER").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(HarnessError::ServerNotFound {
                searched: format!("REDIS_SERVER={} is not a file", p.display()),
            })
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| HarnessError::ServerNotFound {
            searched: "REDIS_SERVER unset and not on PATH".into(),
        })
}

/// A loopback port that was free a moment ago. The server may still lose it to a parallel
/// test before binding; callers detect that and retry.
fn free_port() -> Result<u16, HarnessError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| HarnessError::io("could not find a free loopback port", e))
}

/// The ports one server listens on.
#[derive(Debug, Clone, Copy)]
struct Ports {
    port: u16,
    tls_port: Option<u16>,
    bus_port: Option<u16>,
}

fn args(config: &ServerConfig, dir: &Path, ports: Ports) -> Vec<OsString> {
    let Ports {
        port,
        tls_port,
        bus_port,
    } = ports;
    let mut a: Vec<OsString> = Vec::new();
    let mut push = |s: &str| a.push(s.into());
    for s in [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--daemonize",
        "no",
        "--protected-mode",
        "no",
    ] {
        push(s);
    }
    match config.persistence {
        Persistence::Memory => ["--appendonly", "no"].into_iter().for_each(&mut push),
        Persistence::AofAlways => ["--appendonly", "yes", "--appendfsync", "always"]
            .into_iter()
            .for_each(&mut push),
    }
    if let Some(tls_port) = tls_port {
        a.push("--tls-port".into());
        a.push(tls_port.to_string().into());
        for (flag, name) in [
            ("--tls-cert-file", "tls.crt"),
            ("--tls-key-file", "tls.key"),
            ("--tls-ca-cert-file", "ca.crt"),
        ] {
            a.push(flag.into());
            a.push(dir.join(name).into());
        }
        // Client certificates are checked when presented, not required: tests can try both.
        a.push("--tls-auth-clients".into());
        a.push("optional".into());
    }
    if let Some(bus_port) = bus_port {
        // The cluster's own state file, in the server's dir (relative: the server
        // changes to `--dir` before it reads it).
        for s in [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ] {
            a.push(s.into());
        }
        a.push("--cluster-port".into());
        a.push(bus_port.to_string().into());
    }
    a.push("--dir".into());
    a.push(dir.into());
    a.push("--logfile".into());
    a.push(dir.join("redis.log").into());
    a.extend(config.extra_args.iter().map(OsString::from));
    a
}

/// Spawns one server on `port` and waits until it answers, or reports that the port was taken.
async fn launch(config: &ServerConfig, dir: &Path, ports: Ports) -> Result<Launch, HarnessError> {
    let port = ports.port;
    // Truncated per attempt, so "Address already in use" from an earlier attempt is not
    // mistaken for this one's failure. Server output before the log file opens goes to stdio.log.
    File::create(dir.join("redis.log"))
        .map_err(|e| HarnessError::io("could not create redis.log", e))?;
    let stdio = File::create(dir.join("stdio.log"))
        .map_err(|e| HarnessError::io("could not create stdio.log", e))?;
    let stdio2 = stdio
        .try_clone()
        .map_err(|e| HarnessError::io("could not open stdio.log", e))?;
    let mut child = Command::new(&config.binary)
        .args(args(config, dir, ports))
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(stdio)
        .stderr(stdio2)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| HarnessError::Spawn {
            path: config.binary.clone(),
            source,
        })?;
    let pid = child.id();
    let deadline = tokio::time::Instant::now() + config.ready_timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                let tail = log_tail(dir, 20);
                return if tail.contains("Address already in use") {
                    Ok(Launch::PortInUse(tail))
                } else {
                    Err(HarnessError::Exited {
                        port,
                        status: status.to_string(),
                        log_tail: tail,
                    })
                };
            }
            Ok(None) => {}
            Err(e) => return Err(HarnessError::io("could not poll redis-server", e)),
        }
        match tokio::time::timeout(PROBE_TIMEOUT, probe(port)).await {
            Ok(Some(server_pid)) if Some(server_pid) == pid => return Ok(Launch::Ready(child)),
            // Someone else's server answers on our port: ours failed to bind and is about to
            // exit. Kill it now rather than wait for that.
            Ok(Some(_)) => {
                let _ = child.kill().await;
                return Ok(Launch::PortInUse(format!(
                    "another redis-server answered on port {port}"
                )));
            }
            Ok(None) | Err(_) => {}
        }
        if tokio::time::Instant::now() >= deadline {
            let _ = child.kill().await;
            return Err(HarnessError::NotReady {
                port,
                timeout: config.ready_timeout,
                log_tail: log_tail(dir, 20),
            });
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// Sends `PING`, and once it gets `+PONG` (not `-LOADING`), asks `INFO server` for the
/// server's pid. `None` when not ready yet.
async fn probe(port: u16) -> Option<u32> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    let mut stream = BufReader::new(stream);
    stream.get_mut().write_all(b"PING\r\n").await.ok()?;
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    if line.trim_end() != "+PONG" {
        return None;
    }
    stream
        .get_mut()
        .write_all(b"*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n")
        .await
        .ok()?;
    line.clear();
    stream.read_line(&mut line).await.ok()?;
    let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.ok()?;
    let body = String::from_utf8_lossy(&body);
    body.lines()
        .find_map(|l| l.strip_prefix("process_id:"))
        .and_then(|p| p.trim().parse().ok())
}

fn send(pid: u32, sig: Signal) -> Result<(), HarnessError> {
    let raw = i32::try_from(pid).map_err(|_| HarnessError::Signal {
        pid,
        signal: sig.as_str(),
        source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
    })?;
    signal::kill(Pid::from_raw(raw), sig).map_err(|errno| HarnessError::Signal {
        pid,
        signal: sig.as_str(),
        source: std::io::Error::from_raw_os_error(errno as i32),
    })
}

/// Waits until `/proc/<pid>/stat` shows the process stopped (or not), so a fault is in effect
/// when `pause()` returns. Where `/proc` cannot be read this returns at once.
async fn wait_stopped(pid: u32, stopped: bool) -> Result<(), HarnessError> {
    let path = format!("/proc/{pid}/stat");
    let deadline = Instant::now() + SIGNAL_SETTLE_TIMEOUT;
    loop {
        let Ok(stat) = std::fs::read_to_string(&path) else {
            return Ok(());
        };
        // The state is the first field after the parenthesised command name.
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next());
        if state.map(|s| s == 'T') == Some(stopped) || state.is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(HarnessError::Timeout {
                what: format!(
                    "{} of pid {pid}",
                    if stopped { "SIGSTOP" } else { "SIGCONT" }
                ),
                timeout: SIGNAL_SETTLE_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Deletes the data a server persisted in `dir`: the AOF directory (Redis 7), AOF files
/// (older versions) and RDB snapshots.
fn wipe_data(dir: &Path) -> Result<(), HarnessError> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| HarnessError::io("could not list the node's dir", e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        let removed = if name == "appendonlydir" {
            std::fs::remove_dir_all(&path)
        } else if name.ends_with(".aof") || name.ends_with(".rdb") {
            std::fs::remove_file(&path)
        } else {
            continue;
        };
        removed.map_err(|e| HarnessError::io(format!("could not delete {}", path.display()), e))?;
    }
    Ok(())
}

/// The last `lines` lines of the server's log, falling back to its stdout/stderr.
pub(crate) fn log_tail(dir: &Path, lines: usize) -> String {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    let mut text = read("redis.log");
    if text.trim().is_empty() {
        text = read("stdio.log");
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests;
