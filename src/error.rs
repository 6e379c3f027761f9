//! The crate's one error type and the per-node causes it carries.

use std::fmt;
use std::time::Duration;

use crate::diagnose::report::Finding;

pub(crate) mod node;

pub use node::{NodeError, NodeErrorKind, NodeErrors};

/// Everything that can go wrong when locking, extending or releasing.
///
/// Messages are short, say what happened and what to do. Per-node causes are kept
/// as [`NodeError`]s (see [`Error::node_errors`]), which are also the error's
/// [`source`](std::error::Error::source) (as [`NodeErrors`]), so nothing is flattened
/// into a string.
///
/// # Example
/// ```
/// use tokio_redlock::{Error, Redlock};
///
/// let err = Redlock::builder().build().unwrap_err();
/// assert!(matches!(err, Error::Config(_)));
/// assert!(err.to_string().contains("nodes"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to [`RedlockBuilder`](crate::RedlockBuilder) (or to a
    /// method such as `acquire`) is impossible; the message names the setting.
    #[error("invalid configuration: {0}")]
    Config(String),

    /// The lock is held by another owner on so many nodes that no quorum was possible
    /// (for a read lock: by a writer, or a writer waits first; for a permit: every slot
    /// is taken; `reason` says which).
    #[error(
        "`{resource}` {reason} ({held_elsewhere} of {nodes} nodes) after {attempts} \
         attempt(s); retry later, or wait longer: lock(r).wait(d) or .retries(n) for this \
         call, retry_count/retry_delay for the manager"
    )]
    #[non_exhaustive]
    Conflict {
        /// What holds the lock against this acquisition.
        reason: ConflictReason,
        /// The (first) resource that was asked for.
        resource: String,
        /// How many attempts were made.
        attempts: u32,
        /// On how many nodes the last attempt found another owner's value.
        held_elsewhere: usize,
        /// How many nodes the manager talks to.
        nodes: usize,
    },

    /// Simultaneous attempts split the nodes: this one did not get a quorum, and no
    /// other owner holds one either (read from every node after the last attempt).
    /// Nobody holds the lock; a short random pause and one more attempt usually settle
    /// it, as with a split vote in Raft. A contender whose requests were still on their
    /// way during that read may win just after it; the attempt after the pause then
    /// meets it as a [`Error::Conflict`], which keeps meaning "held by another owner".
    /// The same is reported when the nodes that refused held a lock whose keys expired
    /// between the attempt and that read: it is free now, and the advice holds.
    #[error(
        "`{resource}` is held by no one: simultaneous attempts split the nodes ({held_elsewhere} \
         of {nodes} held by others at the last of {attempts} attempt(s)); try again after a \
         short random pause"
    )]
    #[non_exhaustive]
    SplitVote {
        /// The resource that was asked for.
        resource: String,
        /// How many attempts were made.
        attempts: u32,
        /// On how many nodes the last attempt found other owners' values.
        held_elsewhere: usize,
        /// How many nodes the manager talks to.
        nodes: usize,
    },

    /// Too few nodes answered (down, hanging, erroring) for a quorum.
    ///
    /// The message gives the counts, the nodes neither agreeing nor failing (locked by
    /// another owner, or not awaited once the quorum was out of reach), and the first
    /// node's failure; its [`source`](std::error::Error::source) is `causes`, every
    /// failed node with its cause.
    #[error(
        "no quorum for `{resource}`: {ok} of {nodes} nodes agreed, {needed} needed; \
         {failed} failed{}, after {attempts} attempt(s){}; check that a majority of the \
         nodes is up and reachable within node_timeout",
        not_counted(*.nodes, *.ok, *.failed),
        first_failure(.causes)
    )]
    #[non_exhaustive]
    NoQuorum {
        /// The (first) resource that was asked for.
        resource: String,
        /// How many attempts were made.
        attempts: u32,
        /// How many nodes agreed in the last attempt.
        ok: usize,
        /// How many failed (timed out, unreachable, answered with an error).
        failed: usize,
        /// The quorum.
        needed: usize,
        /// How many nodes the manager talks to.
        nodes: usize,
        /// Why each failed node failed, in the last attempt.
        #[source]
        causes: NodeErrors,
    },

    /// A quorum agreed, but so late that no validity time was left.
    #[error(
        "`{resource}` was granted by a quorum only after {elapsed:?}, which leaves no validity \
         of the {ttl:?} ttl ({attempts} attempt(s)); use a longer ttl or faster nodes"
    )]
    #[non_exhaustive]
    Expired {
        /// The (first) resource that was asked for.
        resource: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long the last attempt took.
        elapsed: Duration,
        /// The ttl asked for.
        ttl: Duration,
    },

    /// The lock is no longer held by this owner on a quorum, or its validity ran out.
    #[error("lock on `{resource}` lost: {reason}; stop the work it protected")]
    #[non_exhaustive]
    LockLost {
        /// The (first) resource of the lock.
        resource: String,
        /// What happened.
        reason: LostReason,
    },

    /// The health check of [`CheckMode::Strict`](crate::CheckMode::Strict) found a
    /// configuration that breaks mutual exclusion, so no lock is taken.
    #[error(
        "refusing to lock: the health check found {} configuration error(s), first: {}; fix \
         the nodes' configuration (see docs/operations.md), or use CheckMode::Warn to lock anyway",
        findings.len(),
        findings.first().map(ToString::to_string).unwrap_or_default()
    )]
    #[non_exhaustive]
    Unhealthy {
        /// The error-severity findings, each saying what to change.
        findings: Vec<Finding>,
    },
}

/// What held a lock against an acquisition that ended in [`Error::Conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConflictReason {
    /// Another owner holds it (an exclusive lock, or a writer).
    Owner,
    /// A read lock: a writer holds the resource, or waits for the readers in it and goes
    /// first (phase-fair admission).
    WriterFirst,
    /// A write lock: readers hold the resource, or another writer does.
    ReadersOrWriter,
    /// A semaphore: every one of its permits is taken.
    PermitsTaken {
        /// How many permits the semaphore has.
        permits: usize,
    },
}

impl fmt::Display for ConflictReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Owner => f.write_str("is locked by another owner"),
            Self::WriterFirst => f.write_str("is held by a writer, or a writer is waiting"),
            Self::ReadersOrWriter => f.write_str("is held by readers or another writer"),
            Self::PermitsTaken { permits } => write!(f, "has all {permits} permits taken"),
        }
    }
}

/// Why a lock counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The lock's validity ran out before the operation could complete. (Not
    /// [`Error::Expired`], a grant that came too late to leave any validity.)
    ValidityEnded,
    /// Too many nodes reported that the key is gone or belongs to someone else.
    #[non_exhaustive]
    NotHeld {
        /// How many nodes still hold this owner's value.
        held: usize,
        /// The quorum.
        needed: usize,
    },
    /// Extensions failed (nodes did not answer) until the validity ran out.
    ExtensionFailed,
    /// The configured cap on hold time or extensions was reached.
    CapReached,
}

impl LostReason {
    /// The former name of [`LostReason::ValidityEnded`], kept so that code written
    /// against it (also in patterns) still compiles: "expired" now names only
    /// [`Error::Expired`].
    #[doc(hidden)]
    #[allow(non_upper_case_globals)]
    pub const Expired: LostReason = LostReason::ValidityEnded;
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ValidityEnded => f.write_str("its validity ended"),
            Self::NotHeld { held, needed } => {
                write!(f, "held on only {held} nodes, {needed} needed")
            }
            Self::ExtensionFailed => f.write_str("extensions failed until its validity ended"),
            Self::CapReached => {
                f.write_str("the configured hold time or extension cap was reached")
            }
        }
    }
}

/// ", N locked elsewhere or not awaited" for the nodes that neither agreed nor failed.
fn not_counted(nodes: usize, ok: usize, failed: usize) -> String {
    match nodes.saturating_sub(ok + failed) {
        0 => String::new(),
        rest => format!(", {rest} locked elsewhere or not awaited"),
    }
}

/// "; first failure: node 0 (host:port): cause", or nothing without a cause.
fn first_failure(causes: &NodeErrors) -> String {
    causes
        .0
        .first()
        .map(|e| format!("; first failure: {e}"))
        .unwrap_or_default()
}

impl Error {
    /// The per-node causes behind this error (empty for errors that have none).
    ///
    /// ```
    /// # use tokio_redlock::Error;
    /// # fn show(err: &Error) {
    /// for cause in err.node_errors() {
    ///     eprintln!("{cause}");
    /// }
    /// # }
    /// ```
    pub fn node_errors(&self) -> &[NodeError] {
        match self {
            Self::NoQuorum { causes, .. } => &causes.0,
            _ => &[],
        }
    }

    /// True when the lock could not be taken because another owner holds it.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True when the configuration (of the manager, or of one call) is impossible:
    /// nothing was sent, and retrying the same call fails the same way.
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert!(err.is_config());
    /// ```
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_))
    }

    /// True when a quorum granted the lock but too late to leave any validity
    /// ([`Error::Expired`]): the nodes were slow, or the ttl too short. Not a lost lock
    /// (that is [`is_lock_lost`](Self::is_lock_lost), with
    /// [`LostReason::ValidityEnded`] when its validity ran out).
    pub fn is_expired(&self) -> bool {
        matches!(self, Self::Expired { .. })
    }

    /// True when the strict health check refused to lock ([`Error::Unhealthy`]).
    pub fn is_unhealthy(&self) -> bool {
        matches!(self, Self::Unhealthy { .. })
    }

    /// True when simultaneous attempts split the nodes and nobody holds the lock
    /// ([`Error::SplitVote`]): worth one more attempt after a short random pause.
    pub fn is_split_vote(&self) -> bool {
        matches!(self, Self::SplitVote { .. })
    }

    /// True when too few nodes answered.
    pub fn is_no_quorum(&self) -> bool {
        matches!(self, Self::NoQuorum { .. })
    }

    /// True when a held lock was lost.
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Self::LockLost { .. })
    }

    /// True when every node cause is a timeout (and there is at least one).
    pub fn is_timeout(&self) -> bool {
        let causes = self.node_errors();
        !causes.is_empty() && causes.iter().all(NodeError::is_timeout)
    }

    /// How many attempts were made, for errors that come from acquisition.
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Self::Conflict { attempts, .. }
            | Self::SplitVote { attempts, .. }
            | Self::NoQuorum { attempts, .. }
            | Self::Expired { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
