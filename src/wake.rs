//! Wake-ups for waiters, in order of arrival.
//!
//! A manager that lost an attempt to another owner joins a per-resource wait queue on
//! every node (a sorted set beside the lock key, `<key>:waiters`, ordered by the node's
//! clock) and listens on its own channel (`tokio-redlock:wake:<manager id>`, one
//! subscription per node for the manager's lifetime). A release pops the queue's head on
//! each node and publishes the released key to the head's channel, skipping members that
//! are no longer listening, and waking at most two live ones. So a release wakes one or
//! two waiters, the oldest, instead of all of them: no thundering herd, and service in
//! order of arrival.
//!
//! Correctness never depends on any of this: a woken waiter still needs a quorum, and a
//! missed message (a release by another client library, a subscriber connection down)
//! only means the waiter falls back to its retry delay.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use crate::node::{Node, Request};
use crate::scripts;

/// A release publishes on this prefix followed by the waiting manager's id.
pub(crate) const CHANNEL_PREFIX: &str = "tokio-redlock:wake:";
/// The wait queue of a lock key is this key followed by this suffix.
pub(crate) const QUEUE_SUFFIX: &str = ":waiters";
/// A wait queue nobody joined for this long expires: members of crashed clients do not
/// pile up, and a live waiter joins again after every failed attempt anyway.
pub(crate) const QUEUE_TTL_MS: u64 = 60_000;
/// Bound on making a subscriber connection and subscribing. Only a manager that is
/// already waiting pays it, once per node for its lifetime (and a node that refuses
/// connections costs nothing); 2 s lets a loaded machine connect, where giving up
/// would leave the waiter to its retry delay.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a node could not be listened on (down, hanging, or an ACL without SUBSCRIBE),
/// it is not tried again for this long: waiters re-listen before every wait, and a
/// connection attempt per wait would only load a node that cannot help.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

/// The local waiters of one key.
struct KeyWaiters {
    notify: Arc<Notify>,
    waiters: usize,
    /// Whether this manager may be in the nodes' queues for the key: if it never
    /// joined, leaving costs no requests.
    queued: bool,
}

type Registry = Arc<Mutex<HashMap<String, KeyWaiters>>>;

/// A manager's wake-up machinery: its id, its subscriber connections, its waiters.
pub(crate) struct Wakeups {
    id: String,
    registry: Registry,
    /// Per node: the subscriber connection's sink and its reader task. The reader is
    /// aborted with the manager, since dropping a sink does not close its connection.
    sinks: Vec<tokio::sync::Mutex<Option<(PubSubSink, tokio::task::AbortHandle)>>>,
    /// Per node: not before when to try listening again after a failure.
    retry_at: Vec<Mutex<Option<Instant>>>,
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = self
            .registry
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("Wakeups")
            .field("waited_keys", &keys)
            .finish()
    }
}

impl Drop for Wakeups {
    fn drop(&mut self) {
        for slot in &mut self.sinks {
            if let Some((_, reader)) = slot.get_mut().take() {
                reader.abort();
            }
        }
    }
}

/// A waiter's place: in the nodes' queues and among the manager's local waiters.
/// Dropping it leaves the queues (in the background) once no local waiter is left.
pub(crate) struct Waiter {
    key: String,
    notify: Arc<Notify>,
    registry: Registry,
    nodes: Arc<[Node]>,
    member: String,
}

impl Waiter {
    /// Resolves when a release of the key names this manager. A wake-up that came while
    /// nobody waited is kept (one permit), so none is lost between attempt and wait.
    ///
    /// # Cancel safety
    /// Cancel safe.
    pub(crate) async fn woken(&self) {
        self.notify.notified().await;
    }

    /// This manager's member name in the queues.
    pub(crate) fn member(&self) -> &str {
        &self.member
    }

    /// Notes that this manager joined the nodes' queues for the key (so that the last
    /// local waiter to leave takes it out again).
    pub(crate) fn mark_queued(&self) {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = registry.get_mut(&self.key) {
            entry.queued = true;
        }
    }

    /// Joins the queue again after an attempt failed: at the front when this waiter was
    /// just woken (the release popped it, and it was the oldest), else in arrival order
    /// (a no-op for a member already queued).
    pub(crate) async fn rejoin(&self, front: bool) {
        self.mark_queued();
        join_queues(&self.nodes, &self.key, &self.member, front).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = registry.get_mut(&self.key) else {
            return;
        };
        entry.waiters = entry.waiters.saturating_sub(1);
        if entry.waiters > 0 {
            return;
        }
        let queued = entry.queued;
        registry.remove(&self.key);
        drop(registry);
        if !queued {
            return;
        }
        // Leave the queues, so that a release does not spend its wake-up on us.
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let queue = format!("{}{QUEUE_SUFFIX}", self.key);
        let (nodes, member) = (Arc::clone(&self.nodes), std::mem::take(&mut self.member));
        handle.spawn(async move {
            let mut cmd = redis::cmd("ZREM");
            cmd.arg(&queue).arg(&member);
            let leaves = nodes.iter().map(|n| n.run(Request::Cmd(&cmd)));
            futures::future::join_all(leaves).await;
        });
    }
}

/// Adds `member` to the wait queue of `key` on every node, bounded by the node timeout.
async fn join_queues(nodes: &[Node], key: &str, member: &str, front: bool) {
    let mut inv = scripts::Call::new(&scripts::WAIT_JOIN, &[format!("{key}{QUEUE_SUFFIX}")]);
    inv.arg(member)
        .arg(if front { "1" } else { "0" })
        .arg(QUEUE_TTL_MS);
    let joins = nodes.iter().map(|n| n.run(Request::Script(&inv)));
    for result in futures::future::join_all(joins).await {
        if let Err(e) = result {
            tracing::debug!(error = %e, "could not join a wait queue; the retry delay applies there");
        }
    }
}

impl Wakeups {
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            id: format!("{:016x}", rand::rng().random::<u64>()),
            registry: Arc::new(Mutex::new(HashMap::new())),
            sinks: (0..nodes).map(|_| tokio::sync::Mutex::new(None)).collect(),
            retry_at: (0..nodes).map(|_| Mutex::new(None)).collect(),
        }
    }

    /// Starts waiting for releases of `key`: listens on this manager's channel on every
    /// node (made once), registers a local waiter and joins the nodes' queues. Never
    /// fails: a node that cannot be reached is skipped, and the retry delay covers it.
    ///
    /// With `join` false the caller joins the queues itself (atomically with its next
    /// attempt, see `ACQUIRE_OR_QUEUE`).
    pub(crate) async fn wait_for(&self, nodes: &Arc<[Node]>, key: &str, join: bool) -> Waiter {
        let notify = {
            let mut registry = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
            let entry = registry
                .entry(key.to_owned())
                .or_insert_with(|| KeyWaiters {
                    notify: Arc::new(Notify::new()),
                    waiters: 0,
                    queued: false,
                });
            entry.waiters += 1;
            Arc::clone(&entry.notify)
        };
        self.listen(nodes).await;
        let waiter = Waiter {
            key: key.to_owned(),
            notify,
            registry: Arc::clone(&self.registry),
            nodes: Arc::clone(nodes),
            member: self.id.clone(),
        };
        if join {
            waiter.mark_queued();
            join_queues(nodes, key, &self.id, false).await;
        }
        waiter
    }

    /// Makes sure this manager's channel is subscribed on every node that answers: cheap
    /// when it is (a lock per node), and it makes again a subscription that broke or
    /// could not be made before, so a waiter that waits long heals its wake-ups.
    pub(crate) async fn listen(&self, nodes: &[Node]) {
        let listens = nodes
            .iter()
            .zip(self.sinks.iter().zip(&self.retry_at))
            .map(|(node, (sink, retry_at))| self.listen_on(node, sink, retry_at));
        futures::future::join_all(listens).await;
    }

    /// Makes sure this manager's channel is subscribed on `node`.
    async fn listen_on(
        &self,
        node: &Node,
        slot: &tokio::sync::Mutex<Option<(PubSubSink, tokio::task::AbortHandle)>>,
        retry_at: &Mutex<Option<Instant>>,
    ) {
        let not_yet = retry_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| Instant::now() < at);
        if not_yet {
            return;
        }
        let result = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
            let mut slot = slot.lock().await;
            // A reader that ended means the node closed the connection (a restart):
            // make a new one.
            if slot
                .as_ref()
                .is_some_and(|(_, reader)| !reader.is_finished())
            {
                return Ok(());
            }
            let pubsub = node.client().get_async_pubsub().await?;
            let (mut sink, mut stream) = pubsub.split();
            sink.subscribe(format!("{CHANNEL_PREFIX}{}", self.id))
                .await?;
            let registry = Arc::clone(&self.registry);
            // The reader lives as long as the connection, or the manager.
            let reader = tokio::spawn(async move {
                while let Some(msg) = stream.next().await {
                    // The payload is the released key. Every node that popped this
                    // manager sends one: the first wakes a waiter, the rest leave a
                    // permit, which gives a waiter that lost the race to a node not yet
                    // done with the release one more try at once.
                    let Ok(key) = std::str::from_utf8(msg.get_payload_bytes()) else {
                        continue;
                    };
                    let registry = registry.lock().unwrap_or_else(PoisonError::into_inner);
                    if let Some(entry) = registry.get(key) {
                        entry.notify.notify_one();
                    }
                }
            });
            *slot = Some((sink, reader.abort_handle()));
            Ok::<(), redis::RedisError>(())
        })
        .await;
        let failed = match result {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        *retry_at.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Instant::now() + LISTEN_RETRY);
        tracing::debug!(node = node.index, error = %failed, "no wake-ups from this node");
    }
}
