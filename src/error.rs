//! The crate's one error type and the per-node causes it carries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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

    /// The lock is held by another owner on so many nodes that no quorum was possible.
    #[error(
        "`{resource}` is locked by another owner ({held_elsewhere} of {nodes} nodes) after \
         {attempts} attempt(s); retry later, or raise retry_count/retry_delay to wait longer"
    )]
    #[non_exhaustive]
    Conflict {
        /// The (first) resource that was asked for.
        resource: String,
        /// How many attempts were made.
        attempts: u32,
        /// On how many nodes the last attempt found another owner's value.
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
        findings: Vec<crate::diagnose::Finding>,
    },
}

/// Why a lock counts as lost.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The validity ended before the operation could complete.
    Expired,
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

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Expired => f.write_str("its validity ended"),
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
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert!(!err.is_conflict());
    /// ```
    pub fn is_conflict(&self) -> bool {
        matches!(self, Self::Conflict { .. })
    }

    /// True when too few nodes answered.
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert!(!err.is_no_quorum());
    /// ```
    pub fn is_no_quorum(&self) -> bool {
        matches!(self, Self::NoQuorum { .. })
    }

    /// True when a held lock was lost.
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert!(!err.is_lock_lost());
    /// ```
    pub fn is_lock_lost(&self) -> bool {
        matches!(self, Self::LockLost { .. })
    }

    /// True when every node cause is a timeout (and there is at least one).
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert!(!err.is_timeout());
    /// ```
    pub fn is_timeout(&self) -> bool {
        let causes = self.node_errors();
        !causes.is_empty() && causes.iter().all(NodeError::is_timeout)
    }

    /// How many attempts were made, for errors that come from acquisition.
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// assert_eq!(err.attempts(), None);
    /// ```
    pub fn attempts(&self) -> Option<u32> {
        match self {
            Self::Conflict { attempts, .. }
            | Self::NoQuorum { attempts, .. }
            | Self::Expired { attempts, .. } => Some(*attempts),
            _ => None,
        }
    }
}

/// The per-node failures of one operation.
///
/// Displays every failed node with its cause, nodes with the same cause together
/// (`node 0 (a:1) and node 1 (b:1): Connection refused (os error 111)`), and groups
/// apart with `; `. It is the end of the [`source`](std::error::Error::source) chain:
/// the message already says everything below it, and each [`NodeError`] (with the Redis
/// error in its [`kind`](NodeError::kind)) is in [`as_slice`](Self::as_slice).
#[derive(Debug, Clone, Default)]
pub struct NodeErrors(pub(crate) Vec<NodeError>);

impl NodeErrors {
    /// The failures, one per failed node.
    ///
    /// ```
    /// let err = tokio_redlock::Redlock::builder().build().unwrap_err();
    /// let _ = err; // NoQuorum's `causes` field holds one of these
    /// ```
    pub fn as_slice(&self) -> &[NodeError] {
        &self.0
    }
}

impl fmt::Display for NodeErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Group by cause, in the order each cause first appears.
        let mut groups: Vec<(String, Vec<&NodeError>)> = Vec::new();
        for e in &self.0 {
            let cause = e.cause().to_string();
            match groups.iter_mut().find(|(c, _)| *c == cause) {
                Some((_, nodes)) => nodes.push(e),
                None => groups.push((cause, vec![e])),
            }
        }
        for (i, (cause, nodes)) in groups.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            for (j, e) in nodes.iter().enumerate() {
                match j {
                    0 => {}
                    _ if j + 1 == nodes.len() => f.write_str(" and ")?,
                    _ => f.write_str(", ")?,
                }
                write!(f, "node {} ({})", e.node, e.endpoint)?;
            }
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for NodeErrors {}

/// Why one node did not give a usable answer.
#[derive(Debug, Clone)]
pub struct NodeError {
    pub(crate) node: usize,
    pub(crate) endpoint: Arc<str>,
    pub(crate) kind: NodeErrorKind,
}

/// The kind of a [`NodeError`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum NodeErrorKind {
    /// No answer within `node_timeout`.
    Timeout(Duration),
    /// The connection could not be made, broke, or the server answered with an error.
    Redis(Arc<redis::RedisError>),
    /// The node answered, but not as Redis would (wrong type or shape).
    Protocol(String),
    /// The node restarted recently without proof that its data survived (see
    /// [`RedlockBuilder::restart_quarantine`](crate::RedlockBuilder::restart_quarantine));
    /// its votes count again after this long.
    Quarantined(Duration),
}

impl NodeError {
    pub(crate) fn new(node: usize, endpoint: Arc<str>, kind: NodeErrorKind) -> Self {
        Self {
            node,
            endpoint,
            kind,
        }
    }

    /// The index of the node in the order given to the builder.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: the node fails, and says why.
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:1")
    ///     .retry_count(0)
    ///     .build()
    ///     .unwrap();
    /// let err = redlock.acquire("job", std::time::Duration::from_secs(1)).await.unwrap_err();
    /// let cause = &err.node_errors()[0];
    /// assert_eq!(cause.node(), 0);
    /// # }
    /// ```
    pub fn node(&self) -> usize {
        self.node
    }

    /// The node's address, without credentials.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: the node fails, and says why.
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:1")
    ///     .retry_count(0)
    ///     .build()
    ///     .unwrap();
    /// let err = redlock.acquire("job", std::time::Duration::from_secs(1)).await.unwrap_err();
    /// let cause = &err.node_errors()[0];
    /// assert_eq!(cause.endpoint(), "127.0.0.1:1");
    /// # }
    /// ```
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What went wrong.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: the node fails, and says why.
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:1")
    ///     .retry_count(0)
    ///     .build()
    ///     .unwrap();
    /// let err = redlock.acquire("job", std::time::Duration::from_secs(1)).await.unwrap_err();
    /// let cause = &err.node_errors()[0];
    /// assert!(matches!(cause.kind(), tokio_redlock::NodeErrorKind::Redis(_)));
    /// # }
    /// ```
    pub fn kind(&self) -> &NodeErrorKind {
        &self.kind
    }

    /// True when the node did not answer in time.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: the node fails, and says why.
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:1")
    ///     .retry_count(0)
    ///     .build()
    ///     .unwrap();
    /// let err = redlock.acquire("job", std::time::Duration::from_secs(1)).await.unwrap_err();
    /// let cause = &err.node_errors()[0];
    /// assert!(!cause.is_timeout());
    /// # }
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, NodeErrorKind::Timeout(_))
    }
}

impl NodeError {
    /// What went wrong, without the node: the message after `node i (endpoint): `.
    fn cause(&self) -> Cause<'_> {
        Cause(&self.kind)
    }
}

struct Cause<'a>(&'a NodeErrorKind);

impl fmt::Display for NodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} ({}): {}",
            self.node,
            self.endpoint,
            self.cause()
        )
    }
}

impl fmt::Display for Cause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            NodeErrorKind::Timeout(d) => write!(f, "no answer within {d:?}"),
            NodeErrorKind::Redis(e) => {
                if let Some(code) = e.code() {
                    if code == "NOPERM" {
                        return write!(
                            f,
                            "permission denied ({e}); grant the user the commands in docs/operations.md"
                        );
                    }
                }
                write!(f, "{e}")
            }
            NodeErrorKind::Protocol(what) => write!(f, "unexpected reply: {what}"),
            NodeErrorKind::Quarantined(left) => write!(
                f,
                "restarted recently without appendfsync always, so it may have lost lock \
                 keys; it votes again in {left:?}"
            ),
        }
    }
}

/// No `source()`: the message already includes the Redis error's, which repeats its own
/// source's (an I/O error's) word for word; the Redis error itself is in
/// [`NodeError::kind`].
impl std::error::Error for NodeError {}

#[cfg(test)]
mod tests;
