//! Wake-ups for waiters, in order of arrival.
//!
//! A manager that lost an attempt to another owner joins a per-resource wait queue on
//! every node (a sorted set beside the lock key, `<key>:waiters`, ordered by the node's
//! clock) and listens on its own channel (`tokio-redlock:wake:<manager id>`, one
//! subscription per node for the manager's lifetime). A release pops the queue's head on
//! each node and publishes the released key to the head's channel, skipping members that
//! are no longer listening, until it has reached one live listener. So a release wakes
//! one waiting manager per node, the oldest, instead of all of them: no thundering herd,
//! and service in order of arrival.
//!
//! Subscribing runs in the background, beside the attempts: a node that accepts
//! connections but never answers must not hold up a waiter's next attempt.
//!
//! Correctness never depends on any of this: a woken waiter still needs a quorum, and a
//! missed message (a release by another client library, a subscriber connection down)
//! only means the waiter falls back to its retry delay.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::Rng;
use redis::aio::PubSubSink;
use tokio::sync::Notify;

use crate::node::{Node, Request};
use crate::scripts;
use crate::sync::lock;

mod hints;

pub(crate) use hints::Hints;

/// A release publishes on this prefix followed by the waiting manager's id.
pub(crate) const CHANNEL_PREFIX: &str = "tokio-redlock:wake:";
/// The channel prefix a script publishes wake-ups on, or none (empty) without them.
pub(crate) fn prefix(notify: bool) -> &'static str {
    if notify {
        CHANNEL_PREFIX
    } else {
        ""
    }
}

/// The wait queue of a lock key is this key followed by this suffix.
pub(crate) use crate::kind::QUEUE_SUFFIX;
/// A wait queue nobody joined for this long expires: members of crashed clients do not
/// pile up, and a live waiter joins again after every failed attempt anyway.
pub(crate) const QUEUE_TTL_MS: u64 = 60_000;
/// Bound on making a subscriber connection and subscribing. It runs in the background,
/// so it delays nobody; 2 s lets a loaded machine connect, where giving up would leave
/// the waiter to its retry delay.
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

/// One node's subscriber connection: its sink and its reader task. The reader is aborted
/// with the manager, since dropping a sink does not close its connection.
type Subscription = Option<(PubSubSink, tokio::task::AbortHandle)>;

/// A manager's wake-up machinery: its id, its subscriber connections, its waiters, and
/// what it learnt of each key's contention.
pub(crate) struct Wakeups {
    state: Arc<State>,
    pub(crate) hints: Hints,
}

struct State {
    id: String,
    registry: Registry,
    /// Per node: the subscription, once made.
    subs: Vec<Mutex<Subscription>>,
    /// Per node: a subscribe task is under way.
    listening: Vec<AtomicBool>,
    /// Per node: not before when to try listening again after a failure.
    retry_at: Vec<Mutex<Option<Instant>>>,
}

impl fmt::Debug for Wakeups {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys = lock(&self.state.registry).len();
        f.debug_struct("Wakeups")
            .field("waited_keys", &keys)
            .finish()
    }
}

impl Drop for State {
    fn drop(&mut self) {
        for slot in &mut self.subs {
            if let Some((_, reader)) = slot.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
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

    /// The lock key waited for.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// Notes that this manager joined the nodes' queues for the key (so that the last
    /// local waiter to leave takes it out again).
    pub(crate) fn mark_queued(&self) {
        if let Some(entry) = lock(&self.registry).get_mut(&self.key) {
            entry.queued = true;
        }
    }

    /// Joins the nodes' queues: at the front when this waiter was just woken (the
    /// release popped it, and it was the oldest), else in arrival order (a no-op for a
    /// member already queued). Bounded by the node timeout.
    pub(crate) async fn join(&self, front: bool) {
        self.mark_queued();
        join_queues(&self.nodes, &self.key, &self.member, front).await;
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut registry = lock(&self.registry);
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

/// Passes a wake-up for `key` that found no waiter in this manager on to the next
/// waiter in `node`'s queue (see `WAKE_NEXT`).
async fn pass_on(node: &Node, key: &str, member: &str) {
    let queue = format!("{key}{QUEUE_SUFFIX}");
    let call = scripts::wake_next(key, &queue, member, CHANNEL_PREFIX);
    if let Err(e) = node.run(Request::Script(&call)).await {
        tracing::debug!(error = %e, "could not pass a wake-up on; the next waiter's retry delay applies");
    }
}

/// Adds `member` to the wait queue of `key` on every node, bounded by the node timeout.
async fn join_queues(nodes: &[Node], key: &str, member: &str, front: bool) {
    let inv = scripts::wait_join(&format!("{key}{QUEUE_SUFFIX}"), member, front, QUEUE_TTL_MS);
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
            state: Arc::new(State {
                id: format!("{:016x}", rand::rng().random::<u64>()),
                registry: Arc::new(Mutex::new(HashMap::new())),
                subs: (0..nodes).map(|_| Mutex::new(None)).collect(),
                listening: (0..nodes).map(|_| AtomicBool::new(false)).collect(),
                retry_at: (0..nodes).map(|_| Mutex::new(None)).collect(),
            }),
            hints: Hints::default(),
        }
    }

    /// This manager's id: its channel is [`CHANNEL_PREFIX`] followed by it.
    pub(crate) fn id(&self) -> &str {
        &self.state.id
    }

    /// Starts waiting for releases of `key`: registers a local waiter and starts
    /// listening on this manager's channel where it does not yet (in the background).
    /// Never fails and never waits: a node that cannot be listened on is skipped, and
    /// the retry delay covers it. The caller joins the nodes' queues, atomically with
    /// its next attempt (see `ACQUIRE_OR_QUEUE`) or with [`Waiter::join`].
    ///
    /// Nothing here awaits, so a caller cancelled at any point either holds the
    /// [`Waiter`], whose drop undoes the registration, or never registered.
    pub(crate) fn wait_for(&self, nodes: &Arc<[Node]>, key: &str) -> Waiter {
        let state = &self.state;
        let notify = {
            let mut registry = lock(&state.registry);
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
        let waiter = Waiter {
            key: key.to_owned(),
            notify,
            registry: Arc::clone(&state.registry),
            nodes: Arc::clone(nodes),
            member: state.id.clone(),
        };
        if !crate::mutants::STALLED_SUBSCRIPTION {
            self.listen(nodes);
        }
        waiter
    }

    /// Makes sure this manager's channel is subscribed on every node that answers:
    /// starts, in the background, a subscription where there is none (or its connection
    /// closed) and none is being made, unless the node failed less than
    /// [`LISTEN_RETRY`] ago. Cheap when every node is listened on; never waits.
    pub(crate) fn listen(&self, nodes: &Arc<[Node]>) {
        let state = &self.state;
        for i in 0..nodes.len().min(state.subs.len()) {
            if !state.claim_listening(i) {
                continue;
            }
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                state.listening[i].store(false, Ordering::Release);
                return;
            };
            handle.spawn(subscribe(Arc::downgrade(state), Arc::clone(nodes), i));
        }
    }
}

impl Wakeups {
    /// The `stalled_subscription` mutant's [`Wakeups::listen`]: makes the missing
    /// subscriptions itself, one node after the other, and only then returns.
    pub(crate) async fn listen_in_line(&self, nodes: &Arc<[Node]>) {
        let state = &self.state;
        for i in 0..nodes.len().min(state.subs.len()) {
            if state.claim_listening(i) {
                subscribe(Arc::downgrade(state), Arc::clone(nodes), i).await;
            }
        }
    }
}

impl State {
    /// Whether node `i` needs a subscription and this caller is now the one to make it:
    /// none is live there, none is being made, and the last failure is old enough.
    fn claim_listening(&self, i: usize) -> bool {
        let live = lock(&self.subs[i])
            .as_ref()
            .is_some_and(|(_, reader)| !reader.is_finished());
        let not_yet = lock(&self.retry_at[i]).is_some_and(|at| Instant::now() < at);
        !(live || not_yet || self.listening[i].swap(true, Ordering::AcqRel))
    }
}

/// Subscribes this manager's channel on node `i` and keeps the subscription in `state`,
/// unless the manager is gone by then.
async fn subscribe(state: Weak<State>, nodes: Arc<[Node]>, i: usize) {
    let Some(channel) = state.upgrade().map(|s| format!("{CHANNEL_PREFIX}{}", s.id)) else {
        return;
    };
    let result = tokio::time::timeout(SUBSCRIBE_TIMEOUT, async {
        // The first client that connects: one, except for a cluster vote's seeds.
        let mut last = None;
        for client in nodes[i].pubsub_clients() {
            match client.get_async_pubsub().await {
                Ok(pubsub) => {
                    let (mut sink, stream) = pubsub.split();
                    sink.subscribe(channel).await?;
                    return Ok((sink, stream));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from(std::io::Error::other("no address to subscribe at"))
        }))
    })
    .await;
    // The manager went away meanwhile: dropping the connection here is all there is to do.
    let Some(state) = state.upgrade() else {
        return;
    };
    let failed = match result {
        Ok(Ok((sink, mut stream))) => {
            let registry = Arc::clone(&state.registry);
            let member = state.id.clone();
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
                    // A cluster vote publishes its own form of the key (`{key}`), which
                    // reads back to one lock key (`cluster/keys.rs`).
                    let key = nodes[i].lock_key_of(key);
                    let waiting = {
                        let registry = lock(&registry);
                        registry.get(key).map(|e| Arc::clone(&e.notify))
                    };
                    match waiting {
                        Some(notify) => notify.notify_one(),
                        // Nobody here waits for it (a cancelled waiter's queue entry
                        // outlived it): hand the wake-up to the next in line on this
                        // node, or it would be lost to a live waiter elsewhere.
                        None => {
                            let nodes = Arc::clone(&nodes);
                            let (key, member) = (key.to_owned(), member.clone());
                            tokio::spawn(async move { pass_on(&nodes[i], &key, &member).await });
                        }
                    }
                }
            });
            let old = lock(&state.subs[i]).replace((sink, reader.abort_handle()));
            if let Some((_, old_reader)) = old {
                old_reader.abort();
            }
            None
        }
        Ok(Err(e)) => Some(e.to_string()),
        Err(_) => Some("timed out".to_owned()),
    };
    if let Some(error) = failed {
        *lock(&state.retry_at[i]) = Some(crate::clock::instant_after(LISTEN_RETRY));
        tracing::debug!(node = i, %error, "no wake-ups from this node");
    }
    state.listening[i].store(false, Ordering::Release);
}
