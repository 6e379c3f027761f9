//! Exit statuses, as cli/README.md documents them, and the one-line failure that
//! carries one to `main`.
//!
//! The numbers follow the conventions scripts already test for: 2 for usage (clap's
//! own, and getopt's), 75 `EX_TEMPFAIL` from sysexits.h for "try again later" (as
//! `flock -E` suggests for a busy lock), 125/126/127 as timeout(1) and env(1) use them,
//! 128 + n for a command ended by signal n, as shells report it.

use std::fmt;

/// `diagnose`: the health check found a finding of error severity.
pub(crate) const UNHEALTHY: u8 = 1;
/// Bad usage or configuration: unknown flag, bad duration, no nodes, a URL or setting
/// that the library refuses. Also clap's own usage errors.
pub(crate) const USAGE: u8 = 2;
/// The lock was not obtained: busy with `--no-wait`, `--wait` ran out, or too few nodes
/// answered. Nothing was run. `EX_TEMPFAIL`: trying again later may work.
pub(crate) const NOT_OBTAINED: u8 = 75;
/// The lock was lost while the command ran (a quorum of the nodes stopped holding it,
/// or extensions failed until its validity ended): the command was stopped with SIGTERM
/// (SIGKILL after `--kill-after`), or had just finished unprotected. Chosen next to 75,
/// outside the range of the shell's 126/127 and 128 + n.
pub(crate) const LOST: u8 = 76;
/// redlock itself failed (e.g. could not install its signal handlers or wait for the
/// command), as in timeout(1).
pub(crate) const INTERNAL: u8 = 125;
/// The command was found but could not be run (permission denied, not executable).
pub(crate) const CANNOT_EXECUTE: u8 = 126;
/// The command was not found.
pub(crate) const NOT_FOUND: u8 = 127;
/// Added to a signal's number when the command was ended by that signal.
pub(crate) const SIGNALLED: u8 = 128;

/// A failure of the tool: one line on stderr, `redlock: <what happened>; <what to do>`,
/// and an exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: u8,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: u8, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::new(USAGE, message)
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(INTERNAL, message)
    }

    /// An error of the library, with the status its kind calls for. Its messages
    /// already say what happened and what to do; they are joined into one line.
    pub(crate) fn from_lock_error(e: &tokio_redlock::Error) -> Self {
        use tokio_redlock::Error;
        let status = match e {
            Error::Config(_) | Error::Unhealthy { .. } => USAGE,
            Error::LockLost { .. } => LOST,
            // Busy (Conflict), too few nodes (NoQuorum), granted too late (Expired), and
            // whatever a later version adds for a failed acquisition (a split vote):
            // nothing ran, and trying again later may work.
            _ => NOT_OBTAINED,
        };
        Self::new(status, one_line(&e.to_string()))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "redlock: {}", self.message)
    }
}

/// Joins a message's lines, so that every failure is one line on stderr.
pub(crate) fn one_line(text: &str) -> String {
    text.split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_distinct() {
        let all = [
            UNHEALTHY,
            USAGE,
            NOT_OBTAINED,
            LOST,
            INTERNAL,
            CANNOT_EXECUTE,
            NOT_FOUND,
            SIGNALLED,
        ];
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn library_errors_map_to_statuses() {
        let config = tokio_redlock::Error::Config("bad".into());
        assert_eq!(Failure::from_lock_error(&config).status, USAGE);
        let built = tokio_redlock::Redlock::builder().build();
        let err = built.err().map(|e| Failure::from_lock_error(&e).status);
        assert_eq!(err, Some(USAGE));
    }

    #[test]
    fn one_line_joins() {
        assert_eq!(one_line("a\n  b\n\nc"), "a b c");
        assert_eq!(one_line("x"), "x");
    }
}
