//! [`NodeError`]: why one node did not give a usable answer, and [`NodeErrors`], the
//! failed nodes of one operation.
//!
//! A leaf: the node, the round, the health checks and [`Error`](crate::Error) all carry
//! these, so this module imports nothing of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tokio_redlock::{NodeErrorKind, Redlock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tokio_redlock::Error> {
/// // Nothing listens on port 1: the node fails, and the error says which and why.
/// let redlock = Redlock::builder().node("redis://127.0.0.1:1").retry_count(0).build()?;
/// let err = redlock.acquire("job", Duration::from_secs(1)).await.unwrap_err();
/// let cause = &err.node_errors()[0];
/// assert_eq!((cause.node(), cause.endpoint()), (0, "127.0.0.1:1"));
/// assert!(matches!(cause.kind(), NodeErrorKind::Redis(_)));
/// assert!(!cause.is_timeout());
/// # Ok(())
/// # }
/// ```
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
    pub fn node(&self) -> usize {
        self.node
    }

    /// The node's address, without credentials.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What went wrong.
    pub fn kind(&self) -> &NodeErrorKind {
        &self.kind
    }

    /// True when the node did not answer in time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.kind, NodeErrorKind::Timeout(_))
    }

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
                "may have lost its lock keys (restarted recently without appendfsync always, \
                 or without the restart marker, or flushed); it votes again in {left:?}"
            ),
        }
    }
}

/// No `source()`: the message already includes the Redis error's, which repeats its own
/// source's (an I/O error's) word for word; the Redis error itself is in
/// [`NodeError::kind`].
impl std::error::Error for NodeError {}
