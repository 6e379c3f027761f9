//! [`Redlock::inspect`]: who holds a lock, as the nodes see it at one moment. For
//! operators; never a lock check.

use std::fmt;
use std::time::Duration;

use super::{Redlock, MAX_RESOURCE_LEN};
use crate::error::{Error, NodeError};
use crate::kind::{permit_key, READERS_SUFFIX, WRITER_SUFFIX};
use crate::node::Request;
use crate::scripts;

mod answers;

use answers::{parse, tally, Tally};

/// What the nodes store for one resource, read once from every node: a snapshot for
/// operators, returned by [`Redlock::inspect`].
///
/// It is racy by nature and **never a lock check**: each node was read at a slightly
/// different moment, the lock may be taken, extended, released or expire while the
/// reads travel and at any time after, and a node that did not answer may hold anything.
/// Use it to see who holds a lock that seems stuck, or to watch a split; to know whether
/// you hold a lock, keep its [`LockGuard`](crate::LockGuard) and ask it.
///
/// Its `Display` is a few lines for a log or a terminal.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LockInfo {
    resource: String,
    key: String,
    holders: Vec<Holder>,
    free: Vec<usize>,
    errors: Vec<NodeError>,
    node_count: usize,
    quorum: usize,
    readers: Vec<Holder>,
    writers: Vec<Holder>,
}

/// One distinct value stored for a resource, and the nodes that store it (see
/// [`LockInfo::holders`]). Two holders are two owners (or two attempts of one owner).
/// The readers of a reader-writer lock show as one holder, [`is_readers`](Self::is_readers):
/// while any reader holds the resource, its key holds a marker that keeps exclusive
/// acquirers out.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Holder {
    label: Option<String>,
    nodes: Vec<usize>,
    min_ttl: Duration,
    readers: bool,
}

impl Holder {
    /// The owner label the holder's manager was built with
    /// ([`RedlockBuilder::owner_label`](crate::RedlockBuilder::owner_label)), read from
    /// the stored value; `None` for a value without one (no label, or another client).
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    /// How many nodes store this value.
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// The indices of the nodes that store this value, in the order the nodes were
    /// given to the builder.
    pub fn nodes(&self) -> &[usize] {
        &self.nodes
    }

    /// The shortest remaining expiry (`PTTL`) among the nodes that store this value, as
    /// each node reported it. `Duration::MAX` if no node gave it an expiry (a value this
    /// crate did not write).
    pub fn min_ttl(&self) -> Duration {
        self.min_ttl
    }

    /// Whether this is the readers marker, not an owner's value: one or more readers
    /// (`lock(r).read()`) hold the resource on these nodes, until at least
    /// [`min_ttl`](Self::min_ttl) from the read (the longest reader's expiry on each
    /// node). Its [`label`](Self::label) is `None`.
    pub fn is_readers(&self) -> bool {
        self.readers
    }
}

impl LockInfo {
    /// The resource inspected.
    pub fn resource(&self) -> &str {
        &self.resource
    }

    /// The Redis key that was read (see [`Redlock::key_of`]).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// One entry per distinct stored value, the value stored on most nodes first.
    /// Empty when no node that answered stores the key.
    pub fn holders(&self) -> &[Holder] {
        &self.holders
    }

    /// Whether one value was stored on at least a quorum of the nodes when they were
    /// read. A snapshot: the lock may have expired or been released since.
    pub fn held_by_quorum(&self) -> bool {
        self.holders
            .first()
            .is_some_and(|h| h.node_count() >= self.quorum)
    }

    /// The indices of the nodes that answered and do not store the key.
    pub fn free_nodes(&self) -> &[usize] {
        &self.free
    }

    /// How many nodes did not answer (down, timed out, refused the read): what they
    /// store is unknown. Their errors are in [`errors`](Self::errors).
    pub fn unknown_nodes(&self) -> usize {
        self.errors.len()
    }

    /// Why each unknown node did not answer.
    pub fn errors(&self) -> &[NodeError] {
        &self.errors
    }

    /// The number of nodes (N).
    pub fn node_count(&self) -> usize {
        self.node_count
    }

    /// The number of nodes a lock needs: N/2 + 1.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// The live readers of a reader-writer lock (`lock(r).read()`), one entry per
    /// reader with the nodes that count it, its [`label`](Holder::label) and the
    /// shortest time it has left among them ([`min_ttl`](Holder::min_ttl)), most nodes
    /// first. Empty without readers (or where the user may not read the reader set).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let info = redlock.inspect("doc:1").await?;
    /// let soonest = info.readers().iter().map(|r| r.min_ttl()).min();
    /// println!("{} readers, the first leaves in {soonest:?}", info.readers().len());
    /// # Ok(())
    /// # }
    /// ```
    pub fn readers(&self) -> &[Holder] {
        &self.readers
    }

    /// A writer waiting for the readers to leave (its intent keeps new readers out),
    /// with the nodes that store its intent and how long the intent has left; `None`
    /// when no writer waits. Its label is `None` (an intent names a manager, not an
    /// owner).
    pub fn waiting_writer(&self) -> Option<&Holder> {
        self.writers.first()
    }
}

impl fmt::Display for LockInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = if self.held_by_quorum() {
            "held by a quorum"
        } else if self.holders.is_empty() && self.errors.is_empty() {
            "free"
        } else {
            "not held by a quorum"
        };
        write!(
            f,
            "`{}` (key `{}`): {state} ({} of {} nodes needed)",
            self.resource, self.key, self.quorum, self.node_count
        )?;
        for h in &self.holders {
            let ttl = if h.min_ttl == Duration::MAX {
                "no expiry".to_owned()
            } else {
                format!("expires in {:?} or later", h.min_ttl)
            };
            let who = match &h.label {
                _ if h.readers => "readers",
                Some(label) => label.as_str(),
                None => "(no label)",
            };
            write!(
                f,
                "\n  {who}: on {} node(s) {:?}, {ttl}",
                h.node_count(),
                h.nodes
            )?;
        }
        if !self.free.is_empty() {
            write!(f, "\n  free on {} node(s) {:?}", self.free.len(), self.free)?;
        }
        for r in &self.readers {
            let who = r.label.as_deref().unwrap_or("(no label)");
            write!(
                f,
                "\n  reader {who}: on {} node(s) {:?}, leaves in {:?} or later",
                r.node_count(),
                r.nodes,
                r.min_ttl
            )?;
        }
        if let Some(w) = self.waiting_writer() {
            write!(
                f,
                "\n  a writer waits: on {} node(s) {:?}, for {:?} or less",
                w.node_count(),
                w.nodes,
                w.min_ttl
            )?;
        }
        for e in &self.errors {
            write!(f, "\n  unknown: {e}")?;
        }
        Ok(())
    }
}

impl Redlock {
    /// Reads what every node stores for `resource` (`GET` and `PTTL` of its key, in one
    /// script per node, each bounded by the node timeout) and groups it by stored value:
    /// who holds the lock, on how many nodes, for how much longer, and whether one value
    /// is on a quorum of them. For a reader-writer lock it also shows the readers
    /// ([`LockInfo::readers`]) and a waiting writer ([`LockInfo::waiting_writer`]); a
    /// semaphore's permits are seen with
    /// [`LockRequest::inspect_permits`](crate::LockRequest::inspect_permits).
    ///
    /// A **racy snapshot for operators, never a lock check**: see [`LockInfo`]. It
    /// changes nothing on the nodes. Nodes that do not answer are counted as unknown,
    /// not as an error of the whole call. Besides the lock commands, the Redis user
    /// needs `PTTL` (`+pttl` in an ACL).
    ///
    /// Right after a [`release`](crate::LockGuard::release) the slowest node may still
    /// show the released holder: a release returns at a quorum and finishes on the rest
    /// in the background (poll, with a bound, where a test needs every node clean).
    ///
    /// ```no_run
    /// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
    /// let info = redlock.inspect("payment:42").await?;
    /// for h in info.holders() {
    ///     println!("{:?} on {} nodes, {:?} left", h.label(), h.node_count(), h.min_ttl());
    /// }
    /// println!("{info}");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an empty or over-long resource name, and for the name of a
    /// key the crate keeps beside a lock (`doc:1:readers`, `doc:1:waiters`, …): inspect
    /// the lock (`doc:1`), which shows what they hold.
    ///
    /// # Cancel safety
    /// Cancel safe: it only reads.
    pub async fn inspect(&self, resource: &str) -> Result<LockInfo, Error> {
        if resource.is_empty() {
            return Err(Error::Config(
                "empty resource name: name the lock to inspect".into(),
            ));
        }
        if resource.len() > MAX_RESOURCE_LEN {
            return Err(Error::Config(format!(
                "resource name of {} bytes is over the {MAX_RESOURCE_LEN}-byte limit",
                resource.len()
            )));
        }
        // Permit slots (`gpu:permit:0`) are locks of their own and may be inspected.
        let beside = crate::kind::SET_SUFFIXES
            .into_iter()
            .chain([
                crate::wake::QUEUE_SUFFIX,
                self.inner.config.fence_suffix.as_str(),
            ])
            .find(|s| resource.ends_with(s));
        if let Some(suffix) = beside {
            let lock = &resource[..resource.len() - suffix.len()];
            return Err(Error::Config(format!(
                "`{resource}` is not a lock but a key kept beside the lock `{lock}` (its \
                 `{suffix}` key): inspect `{lock}`, which shows its holders, readers and a \
                 waiting writer"
            )));
        }
        let key = self.key_of(resource);
        Ok(self.inspect_key(resource, key).await)
    }

    /// Inspects each permit slot `0..permits` of the semaphore `resource`.
    pub(crate) async fn inspect_slots(&self, resource: &str, permits: usize) -> Vec<LockInfo> {
        let key = self.key_of(resource);
        let slots = (0..permits).map(|i| {
            let slot = permit_key(&key, i);
            let name = permit_key(resource, i);
            async move { self.inspect_key(&name, slot).await }
        });
        futures::future::join_all(slots).await
    }

    async fn inspect_key(&self, resource: &str, key: String) -> LockInfo {
        let readers = format!("{key}{READERS_SUFFIX}");
        let writer = format!("{key}{WRITER_SUFFIX}");
        let call = scripts::inspect(&key, &readers, &writer);
        let nodes = &self.inner.nodes;
        let answers = futures::future::join_all(nodes.iter().map(|node| {
            let call = &call;
            async move {
                let answer = node
                    .run(Request::Script(call))
                    .await
                    .and_then(|reply| parse(node, reply));
                (node.index, answer)
            }
        }))
        .await;
        let Tally {
            holders,
            free,
            errors,
            readers,
            writers,
        } = tally(answers);
        LockInfo {
            resource: resource.to_owned(),
            key,
            holders,
            free,
            errors,
            node_count: nodes.len(),
            quorum: self.quorum(),
            readers,
            writers,
        }
    }
}

#[cfg(test)]
mod tests;
