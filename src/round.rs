//! One round of requests: the request every node runs, the fan-out to all nodes, and
//! the requests left to finish in the background once the caller has decided.
//!
//! Below both the manager (acquire) and the guard (extend, release); it knows nodes and
//! scripts, never the manager.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{join_all, Either, JoinAll};
use futures::FutureExt;
use redis::Value;
use tokio::time::Instant;

use crate::clock::tokio_instant_after;
use crate::error::NodeError;
use crate::metrics;
use crate::node::{Node, SetTicket};
use crate::sync::lock;

mod op;
#[cfg(test)]
mod tests;
mod votes;

pub(crate) use op::{Op, Order};
pub(crate) use votes::{collect, no_quorum, Count, NodeSet, Votes};

pub(crate) type Reply = (usize, Result<Value, NodeError>);

/// What the requests of one round share: the request, its deadline, and the replies
/// that came in and were not read yet, in the order they came.
struct Shared {
    op: Op,
    /// When the round gives up on every request still out (see [`fan_out_where`]).
    deadline: Instant,
    replies: Mutex<Arrivals>,
}

/// The replies of a round in the order they came: each node's request leaves exactly
/// one, so a slot per node is enough, kept inline for up to 8 nodes.
struct Arrivals {
    slots: PerNode<Reply>,
    /// The next slot to read, and the next to fill.
    read: usize,
    filled: usize,
    /// Nodes that left their reply, or were not asked: a reply that comes after the
    /// round gave up on its node is not counted twice.
    ended: NodeSet,
    /// Per node, the ticket that keeps the node's releases of the value after its
    /// request (requests that may set a value): given up when the request ends, or when
    /// the round gives up on it. A request the round gave up on is never polled again,
    /// so it can no longer be sent or re-sent.
    tickets: PerNode<SetTicket>,
    /// Until when the caller waits (`Collecting::until`), and whether that has passed.
    patience: Option<Instant>,
    patience_over: bool,
}

impl Arrivals {
    /// Leaves node `reply.0`'s reply (or timeout), unless it has one, and gives up
    /// its ticket.
    fn push(&mut self, reply: Reply) {
        if self.ended.contains(reply.0) {
            return;
        }
        self.ended.set(reply.0, true);
        if let Some(ticket) = self.tickets.get_mut(reply.0) {
            drop(ticket.take());
        }
        // Never full: one reply per node of the round.
        if let Some(slot) = self.slots.get_mut(self.filled) {
            *slot = Some(reply);
            self.filled += 1;
        }
    }

    fn pop(&mut self) -> Option<Reply> {
        let reply = self.slots.get_mut(self.read)?.take()?;
        self.read += 1;
        Some(reply)
    }
}

/// Nodes a round keeps a slot for in place; more take a vector. Redlocks run on 3, 5
/// or 7 nodes.
const INLINE_NODES: usize = 8;

/// One slot per node of a round, in place for up to [`INLINE_NODES`] nodes: a round
/// of every operation keeps its replies and its answers so, with no allocation.
pub(crate) enum PerNode<T> {
    Inline([Option<T>; INLINE_NODES], usize),
    Heap(Vec<Option<T>>),
}

impl<T> PerNode<T> {
    /// `n` empty slots.
    pub(crate) fn empty(n: usize) -> Self {
        if n <= INLINE_NODES {
            Self::Inline([const { None }; INLINE_NODES], n)
        } else {
            Self::Heap((0..n).map(|_| None).collect())
        }
    }
}

impl<T> std::ops::Deref for PerNode<T> {
    type Target = [Option<T>];

    fn deref(&self) -> &[Option<T>] {
        match self {
            Self::Inline(slots, n) => slots.get(..*n).unwrap_or_default(),
            Self::Heap(slots) => slots,
        }
    }
}

impl<T> std::ops::DerefMut for PerNode<T> {
    fn deref_mut(&mut self) -> &mut [Option<T>] {
        match self {
            Self::Inline(slots, n) => slots.get_mut(..*n).unwrap_or_default(),
            Self::Heap(slots) => slots,
        }
    }
}

/// The requests of one round, sent to each node at once; [`next`](Self::next) gives
/// each reply with its node's index as it comes, and a timeout for each node still out
/// at the round's deadline.
///
/// One future per node, all of one type, kept unboxed side by side (`join_all`, which
/// polls each of up to 30 futures in one allocation); each leaves its reply in the
/// round's shared queue as it ends (in place for up to 8 nodes). A `FuturesUnordered`
/// of boxed futures cost a box and a task node per node per round, 20 of the 110
/// allocations of an uncontended lock + unlock on 5 nodes. The price is that a wake-up
/// polls every request still out, not only the one that was woken: a handful of polls
/// on the few nodes of a Redlock.
///
/// The futures own what they use, so the caller can stop listening at any time and
/// hand the stragglers to [`finish_in_background`], where the same round goes on in a
/// task of its own.
pub(crate) struct Round<F: Future<Output = ()>> {
    requests: JoinAll<F>,
    shared: Arc<Shared>,
    /// Replies not read yet (still out, or in the queue).
    remaining: usize,
    /// Whether `next` ends when the caller's patience does (`Collecting::until`); off
    /// once the round goes on in the background.
    patient: bool,
}

impl<F: Future<Output = ()>> Round<F> {
    /// The next reply, or `None` once every node's reply was read (or, for a caller
    /// with a patience, once it ran out).
    pub(crate) async fn next(&mut self) -> Option<Reply> {
        std::future::poll_fn(|cx| self.poll_reply(cx)).await
    }

    /// Whether every node's reply was read.
    pub(crate) fn is_empty(&self) -> bool {
        self.remaining == 0
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<Option<Reply>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        if let Some(reply) = self.take() {
            return Poll::Ready(Some(reply));
        }
        // Polled only while a request is still out (its reply is not in the queue), so
        // never after `JoinAll` completed (the deadline's future ends only once every
        // node has a reply). What it yields is `()` per future: the replies went to
        // the queue.
        let _ = Pin::new(&mut self.requests).poll(cx);
        match self.take() {
            Some(reply) => Poll::Ready(Some(reply)),
            None if self.patient && lock(&self.shared.replies).patience_over => Poll::Ready(None),
            None => Poll::Pending,
        }
    }

    fn take(&mut self) -> Option<Reply> {
        let reply = lock(&self.shared.replies).pop();
        if reply.is_some() {
            self.remaining -= 1;
        }
        reply
    }
}

/// How long a caller waits for a release or undo of its own value: the wait for the
/// value's earlier requests (at most one node timeout, counted from before the caller
/// started) and one node timeout for the request itself. The request may go on longer
/// in the background (`node::CLEAR_TIMEOUTS`).
pub(crate) fn clear_patience(nodes: &[Node]) -> Duration {
    let longest = nodes.iter().map(Node::timeout).max().unwrap_or_default();
    longest.saturating_mul(2)
}

/// Sends `op` to every node at once. Each reply comes back with its node's index.
///
/// The futures own what they use, so the caller can stop listening at any time and
/// hand the stragglers to [`finish_in_background`].
pub(crate) fn fan_out(
    nodes: &Arc<[Node]>,
    op: Op,
) -> Round<impl Future<Output = ()> + Send + 'static> {
    fan_out_where(nodes, op, |_| true)
}

/// Like [`fan_out`], to the nodes `to` picks.
///
/// The round has one deadline for all its requests, one node timeout from now (a
/// release or undo: the wait for its value's setters, at most one node timeout, and
/// [`Node::clear_timeout`]): a single timer beside the requests, where a timer per
/// request cost a timer entry per node per round. At the deadline each request still
/// out is reported as timed out and counted on its node.
pub(crate) fn fan_out_where(
    nodes: &Arc<[Node]>,
    op: Op,
    to: impl Fn(usize) -> bool,
) -> Round<impl Future<Output = ()> + Send + 'static> {
    let picked = (0..nodes.len()).filter(|i| to(*i)).count();
    let clears = matches!(op.order, Order::Clears(_));
    let longest = (0..nodes.len())
        .filter(|i| to(*i))
        .map(|i| request_timeout(&nodes[i], clears))
        .max()
        .unwrap_or_default();
    let mut ended = NodeSet::new(nodes.len());
    // Registered now, not at the first poll: a release started after this returns
    // must see every request of this round.
    let mut tickets = PerNode::empty(nodes.len());
    for i in 0..nodes.len() {
        if !to(i) {
            ended.set(i, true);
        } else if let (Order::Sets(value), Some(slot)) = (&op.order, tickets.get_mut(i)) {
            *slot = Some(nodes[i].setting(value));
        }
    }
    let shared = Arc::new(Shared {
        op,
        deadline: tokio_instant_after(longest),
        replies: Mutex::new(Arrivals {
            slots: PerNode::empty(picked),
            read: 0,
            filled: 0,
            ended,
            tickets,
            patience: None,
            patience_over: false,
        }),
    });
    let requests = (0..nodes.len())
        .filter(|i| to(*i))
        .map(|i| Either::Left(request_on(Arc::clone(nodes), Arc::clone(&shared), i)));
    let deadline = std::iter::once(Either::Right(expire(
        Arc::clone(nodes),
        Arc::clone(&shared),
    )));
    Round {
        // Sized exactly: `join_all` collects into one boxed slice of the futures.
        requests: join_all(Exactly::new(requests.chain(deadline), picked + 1)),
        shared,
        remaining: picked,
        patient: false,
    }
}

/// How long a request of a round to `node` may take.
fn request_timeout(node: &Node, clears: bool) -> Duration {
    if clears {
        node.timeout().saturating_add(node.clear_timeout())
    } else {
        node.timeout()
    }
}

/// The request of a round to node `i`, which leaves its reply in the round's queue
/// and gives up its ticket (see `Arrivals::tickets`).
async fn request_on(nodes: Arc<[Node]>, shared: Arc<Shared>, i: usize) {
    let op = &shared.op;
    if let Order::Clears(value) = &op.order {
        if !crate::mutants::UNORDERED_RELEASE {
            nodes[i].settled(value).await;
        }
    }
    let reply = nodes[i].run_in_round(op.request()).await;
    lock(&shared.replies).push((i, reply));
}

/// The round's deadline: wakes the caller when its patience ends, then at the deadline
/// reports a timeout for every node still out (counted on the node, which makes its
/// connection anew after a few in a row).
async fn expire(nodes: Arc<[Node]>, shared: Arc<Shared>) {
    let patience = lock(&shared.replies).patience;
    if let Some(patience) = patience.filter(|p| *p < shared.deadline) {
        tokio::time::sleep_until(patience).await;
        lock(&shared.replies).patience_over = true;
    }
    tokio::time::sleep_until(shared.deadline).await;
    let clears = matches!(shared.op.order, Order::Clears(_));
    let mut arrivals = lock(&shared.replies);
    for (i, node) in nodes.iter().enumerate() {
        if !arrivals.ended.contains(i) {
            let timeout = request_timeout(node, clears);
            arrivals.push((i, Err(node.timed_out(timeout))));
        }
    }
}

/// An iterator that says how many items it has (`Filter` cannot), so that collecting it
/// allocates once.
struct Exactly<I> {
    inner: I,
    left: usize,
}

impl<I> Exactly<I> {
    fn new(inner: I, len: usize) -> Self {
        Self { inner, left: len }
    }
}

impl<I: Iterator> Iterator for Exactly<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

/// Lets requests that were already sent finish without anyone waiting for them, and
/// logs their failures.
pub(crate) fn finish_in_background<F>(mut rest: Round<F>, what: &'static str)
where
    F: Future<Output = ()> + Send + 'static,
{
    rest.patient = false;
    // Replies that are in already need no task: on a healthy cluster the stragglers
    // usually are, and a spawn per operation is most of what this would cost.
    while let Some(Some((node, reply))) = rest.next().now_or_never() {
        if let Err(e) = reply {
            tracing::debug!(node, error = %e, "{what}: late request failed");
        }
    }
    if rest.is_empty() {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    handle.spawn(async move {
        while let Some((node, reply)) = rest.next().await {
            if let Err(e) = reply {
                tracing::debug!(node, error = %e, "{what}: late request failed");
            }
        }
    });
}

/// Replies a caller is still collecting; whatever is left of them when it is dropped
/// (decided, or cancelled mid-way) goes on in the background.
pub(crate) struct Collecting<F: Future<Output = ()> + Send + 'static> {
    replies: Option<Round<F>>,
    what: &'static str,
}

impl<F: Future<Output = ()> + Send + 'static> Collecting<F> {
    pub(crate) fn new(replies: Round<F>, what: &'static str) -> Self {
        Self {
            replies: Some(replies),
            what,
        }
    }

    /// Stops collecting after the caller has waited `patience`: the replies still out
    /// go on in the background when this is dropped. For releases and undos, whose
    /// requests may run longer than their callers should wait (see
    /// `node::CLEAR_TIMEOUTS`). The round's own deadline timer wakes the caller then;
    /// call it before the first reply is awaited.
    pub(crate) fn until(mut self, patience: Duration) -> Self {
        if let Some(round) = self.replies.as_mut() {
            round.patient = true;
            lock(&round.shared.replies).patience = Some(tokio_instant_after(patience));
        }
        self
    }

    /// The next reply, or `None` when every node answered (or the caller's patience
    /// ran out).
    pub(crate) async fn next(&mut self) -> Option<Reply> {
        self.replies.as_mut()?.next().await
    }

    /// The replies not read yet, for the caller to finish its own way.
    pub(crate) fn into_rest(mut self) -> Option<Round<F>> {
        let mut rest = self.replies.take()?;
        rest.patient = false;
        Some(rest)
    }
}

impl<F: Future<Output = ()> + Send + 'static> Drop for Collecting<F> {
    fn drop(&mut self) {
        if let Some(rest) = self.replies.take() {
            finish_in_background(rest, self.what);
        }
    }
}

/// Releases `keys` held with `value` on every node, in a task of its own on `handle`,
/// and logs what failed. Used by `Drop` and by cancelled acquisitions; never blocks.
pub(crate) fn release_in_background(
    handle: &tokio::runtime::Handle,
    nodes: Arc<[Node]>,
    op: Op,
    what: &'static str,
) {
    metrics::background_release(what);
    handle.spawn(async move {
        let mut replies = fan_out(&nodes, op);
        let mut failed = 0usize;
        while let Some((node, reply)) = replies.next().await {
            if let Err(e) = reply {
                failed += 1;
                tracing::warn!(node, error = %e, "{what}: release failed on a node; its key expires with the ttl");
            }
        }
        tracing::debug!(failed, "{what}: background release done");
    });
}
