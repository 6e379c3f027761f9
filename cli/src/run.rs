//! `redlock run`: take the lock, run the command with the lock kept alive, release it
//! when the command exits; stop the command if the lock is lost.

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;
use tokio_redlock::{LockGuard, Redlock};

use crate::args::{RunArgs, DEFAULT_WAIT};
use crate::duration::show;
use crate::status::{self, Failure};

/// Runs the `run` subcommand; returns the exit status (the command's, or one of ours).
///
/// # Errors
/// A failure (one line and a status) when the lock was not obtained or the command
/// could not be started; the lock is released before.
pub(crate) async fn run(
    redlock: Redlock,
    args: RunArgs,
    label: &str,
    retry_count_given: bool,
) -> Result<u8, Failure> {
    let Some((program, rest)) = args.command.split_first() else {
        return Err(Failure::usage("no command given; put it after `--`"));
    };
    // Installed before the lock is taken: a signal while waiting ends the wait, and from
    // here on none of them kills this process before the lock is given back.
    let mut signals = Signals::install()?;
    let got = tokio::select! {
        biased;
        sig = signals.recv() => Err(sig),
        got = acquire(&redlock, &args, retry_count_given) => Ok(got),
    };
    // A failed or dropped attempt is undone by the library, on the nodes that had not
    // answered in the background: `settle` lets that finish before the process exits.
    let guard = match got {
        Ok(Ok(guard)) => guard,
        Ok(Err(failure)) => {
            settle(redlock).await;
            return Err(failure);
        }
        Err(sig) => {
            settle(redlock).await;
            eprintln!(
                "redlock: {} while waiting for `{}`; the command did not run",
                sig.as_str(),
                args.resource
            );
            return Ok(status::SIGNALLED.saturating_add(sig as u8));
        }
    };
    let token = guard.fencing_token();
    // The stored value, `<label>:<uuid>`: the command acts for this owner.
    let value = guard.owner_value().unwrap_or(label).to_owned();
    let kept = guard.keep_alive();
    let lease = kept.lease().clone();

    let mut command = Command::new(program);
    command
        .args(rest)
        .env("REDLOCK_RESOURCE", &args.resource)
        .env("REDLOCK_VALUE", &value);
    match token {
        Some(token) => command.env("REDLOCK_TOKEN", token.to_string()),
        None => command.env_remove("REDLOCK_TOKEN"),
    };
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            // Nothing ran under the lock: give it back before saying so.
            let _ = kept.release().await;
            settle(redlock).await;
            let status = match e.kind() {
                io::ErrorKind::NotFound => status::NOT_FOUND,
                _ => status::CANNOT_EXECUTE,
            };
            return Err(Failure::new(
                status,
                format!(
                    "cannot run `{}`: {e}; check the command's name, PATH and permissions",
                    program.to_string_lossy()
                ),
            ));
        }
    };

    let supervised = supervise(&mut child, &lease, &mut signals, args.kill_after).await;
    let exit = match supervised {
        Ok(exit) => exit,
        Err(e) => {
            // The command may still run, so the lock must not be released under it:
            // SIGKILL it, and leave the lock to expire with its ttl rather than
            // release it (forgetting the guard skips the release its drop would send).
            let _ = child.start_kill();
            std::mem::forget(kept);
            return Err(e);
        }
    };
    // A loss the keep-alive declared while the command ran, whether or not it got
    // around to stopping the command before it exited.
    let loss = match lease.lost_reason() {
        Some(reason) => Some(reason.to_string()),
        // Stopped on `lost()`, which only a loss resolves before the release.
        None if exit.stopped => Some("its validity ended".into()),
        None => None,
    };
    let released = match kept.release().await {
        Ok(()) => Released::Held,
        Err(e) if e.is_lock_lost() => Released::Lost(status::one_line(&e.to_string())),
        Err(e) => Released::Failed(status::one_line(&e.to_string())),
    };
    settle(redlock).await;
    match verdict(exit_status(exit.status), loss, released) {
        Verdict::Exit(code) => Ok(code),
        Verdict::ReleaseFailed(code, why) => {
            eprintln!(
                "redlock: warning: the release of `{}` failed ({why}); the lock expires \
                 within {}",
                args.resource,
                show(args.ttl)
            );
            Ok(code)
        }
        Verdict::Lost(reason) => {
            let what = if exit.stopped {
                "the command was stopped"
            } else {
                "the command finished, unprotected at its end"
            };
            Err(Failure::new(
                status::LOST,
                format!(
                    "lost the lock on `{}` while the command ran ({reason}); {what} \
                     (its status: {}); its work since the loss was not protected: check the \
                     nodes with `redlock diagnose`",
                    args.resource,
                    describe(exit.status)
                ),
            ))
        }
    }
}

/// What the release after the command's exit found.
#[derive(Debug, Clone, PartialEq)]
enum Released {
    /// The lock was held until released.
    Held,
    /// The lock had been lost (its validity ended, or a quorum no longer held it).
    Lost(String),
    /// Held until the release, which did not reach a quorum (the rest expires).
    Failed(String),
}

/// How the tool exits.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    /// With the command's status.
    Exit(u8),
    /// With the command's status, after a warning: the lock was held throughout.
    ReleaseFailed(u8, String),
    /// With [`status::LOST`]: the command was not protected to its end.
    Lost(String),
}

/// The exit, from the command's status, a loss declared while it ran, and the release.
///
/// A loss wins over the command's own status, also for a command that finished on its
/// own: a caller testing `$?` must learn that its work was not protected throughout,
/// which the command's 0 would hide. A release that merely failed to reach a quorum
/// does not: the lock was held until then, and the rest of it expires with its ttl.
fn verdict(command: u8, loss: Option<String>, released: Released) -> Verdict {
    match (loss, released) {
        (Some(reason), _) | (None, Released::Lost(reason)) => Verdict::Lost(reason),
        (None, Released::Failed(why)) => Verdict::ReleaseFailed(command, why),
        (None, Released::Held) => Verdict::Exit(command),
    }
}

/// Lets the release reach the nodes that had not answered when it returned.
///
/// A release returns once a quorum answered and finishes on the other nodes in
/// background tasks; a process that exits at once cuts those off, and the lock's key
/// then stays on a slow node until its ttl. The library offers no handle on them, so
/// this drops the manager (its connections and their tasks end with it) and waits until
/// the runtime has no task left, at most two node timeouts (each background request is
/// bounded by one, and the library's undo waits two) plus a margin for scheduling.
async fn settle(redlock: Redlock) {
    let bound = redlock.node_timeout().saturating_mul(2) + SETTLE_MARGIN;
    drop(redlock);
    let metrics = tokio::runtime::Handle::current().metrics();
    let deadline = Instant::now() + bound;
    while metrics.num_alive_tasks() > 0 && Instant::now() < deadline {
        tokio::time::sleep(SETTLE_POLL).await;
    }
}

/// Scheduling slack on top of the node timeouts in [`settle`]: a loaded machine may take
/// a few ms to run a woken task.
const SETTLE_MARGIN: std::time::Duration = std::time::Duration::from_millis(100);
/// How often [`settle`] looks: short against a node timeout (tens of ms), so that the
/// tool exits soon after the last request ended.
const SETTLE_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// Takes the lock as the flags say: one attempt with --no-wait; else within --wait (10 s
/// by default), or by the manager's retry count when only --retry-count is given.
async fn acquire(
    redlock: &Redlock,
    args: &RunArgs,
    retry_count_given: bool,
) -> Result<LockGuard, Failure> {
    let request = redlock.lock(&args.resource).ttl(args.ttl);
    let got = if args.no_wait {
        request.try_acquire().await
    } else {
        let request = match (args.wait, retry_count_given) {
            (Some(wait), _) => request.wait(wait),
            (None, false) => request.wait(DEFAULT_WAIT),
            (None, true) => request,
        };
        request.acquire().await
    };
    got.map_err(|e| {
        let mut failure = Failure::from_lock_error(&e);
        if failure.status == status::NOT_OBTAINED {
            failure.message = format!(
                "lock not obtained, the command did not run: {}",
                failure.message
            );
        }
        failure
    })
}

/// How the command ended.
struct Exit {
    status: ExitStatus,
    /// Whether it was stopped because the lock was lost.
    stopped: bool,
}

/// Waits for the command, forwarding signals; once the lock is lost, SIGTERM, then
/// SIGKILL after `kill_after`.
async fn supervise(
    child: &mut Child,
    lease: &tokio_redlock::Lease,
    signals: &mut Signals,
    kill_after: std::time::Duration,
) -> Result<Exit, Failure> {
    // Set once the lock is lost: when SIGKILL is due.
    let mut kill_at: Option<Instant> = None;
    let mut killed = false;
    loop {
        tokio::select! {
            // The command's exit first: a command that ended as the lock was lost ended.
            biased;
            status = child.wait() => {
                let status = status.map_err(|e| Failure::internal(format!(
                    "could not wait for the command: {e}; it may still be running"
                )))?;
                return Ok(Exit { status, stopped: kill_at.is_some() });
            }
            sig = signals.recv() => send(child, sig),
            () = lease.lost(), if kill_at.is_none() => {
                let reason = lease
                    .lost_reason()
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "its validity ended".into());
                eprintln!(
                    "redlock: lost the lock on `{}` ({reason}); stopping the command with \
                     SIGTERM, SIGKILL in {}",
                    lease.resource(),
                    show(kill_after)
                );
                send(child, Signal::SIGTERM);
                kill_at = Some(Instant::now() + kill_after);
            }
            () = sleep_until(kill_at), if kill_at.is_some() && !killed => {
                eprintln!(
                    "redlock: the command did not exit within {} of SIGTERM; sending SIGKILL",
                    show(kill_after)
                );
                // An error here means it has exited already; `wait` says how.
                let _ = child.start_kill();
                killed = true;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends `sig` to the command, if it still runs. Its pid stays ours until `wait` has
/// reaped it, so the signal cannot reach another process.
fn send(child: &Child, sig: Signal) {
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // ESRCH (exited, not yet reaped) is no failure: `wait` reports the exit.
    let _ = kill(Pid::from_raw(pid), sig);
}

/// The status to exit with for the command's: its code, or 128 + the signal that ended it.
fn exit_status(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        // Only the low 8 bits of a code reach a parent, as the shell reports it.
        (Some(code), _) => (code & 0xff) as u8,
        (None, Some(sig)) => status::SIGNALLED.saturating_add((sig & 0x7f) as u8),
        (None, None) => status::INTERNAL,
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        (None, None) => "unknown".into(),
    }
}

/// The signals forwarded to the command.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self, Failure> {
        let on = |kind: SignalKind| {
            signal(kind).map_err(|e| {
                Failure::internal(format!(
                    "could not install a signal handler: {e}; nothing was locked or run"
                ))
            })
        };
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
            quit: on(SignalKind::quit())?,
        })
    }

    /// The next signal received.
    ///
    /// # Cancel safety
    /// Cancel safe, as each `recv` is: a signal not taken now is taken by the next call.
    async fn recv(&mut self) -> Signal {
        // `None` (the driver is gone) cannot happen while the runtime runs; if it did,
        // pending forever is right: no signal came.
        let next = |s: Option<()>, sig| async move {
            match s {
                Some(()) => sig,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            s = self.int.recv() => next(s, Signal::SIGINT).await,
            s = self.term.recv() => next(s, Signal::SIGTERM).await,
            s = self.hup.recv() => next(s, Signal::SIGHUP).await,
            s = self.quit.recv() => next(s, Signal::SIGQUIT).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loss_wins_over_the_commands_status() {
        let lost = |r: &str| Verdict::Lost(r.into());
        assert_eq!(verdict(0, None, Released::Held), Verdict::Exit(0));
        assert_eq!(verdict(3, None, Released::Held), Verdict::Exit(3));
        assert_eq!(
            verdict(3, None, Released::Failed("f".into())),
            Verdict::ReleaseFailed(3, "f".into())
        );
        // Declared while running (the release then finds it lost too, or fails).
        for released in [
            Released::Held,
            Released::Lost("x".into()),
            Released::Failed("f".into()),
        ] {
            assert_eq!(verdict(0, Some("r".into()), released), lost("r"));
        }
        // Found only by the release: the command's end was not protected.
        assert_eq!(verdict(0, None, Released::Lost("x".into())), lost("x"));
    }

    #[test]
    fn statuses_of_the_command() {
        assert_eq!(exit_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_status(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_status(ExitStatus::from_raw(255 << 8)), 255);
        // Ended by SIGTERM (15) and SIGKILL (9), as a wait status.
        assert_eq!(exit_status(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_status(ExitStatus::from_raw(9)), 137);
        assert_eq!(describe(ExitStatus::from_raw(9)), "killed by SIGKILL");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit 3");
    }
}
