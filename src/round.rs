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

use futures::future::{join_all, JoinAll};
use futures::FutureExt;
use redis::Value;

use crate::clock::instant_after;
use crate::error::{Error, NodeError, NodeErrors};
use crate::metrics;
use crate::node::{Node, Request, SetTicket};
use crate::quorum::{Tally, Vote};
use crate::scripts;
use crate::sync::lock;
use crate::wake;

/// What a request does to its owner value on each node, so that each node runs a
/// release or undo of a value after every earlier request that may set it.
pub(crate) enum Order {
    /// Neither sets nor removes an owner value (extend, queue upkeep).
    Free,
    /// May set this value (every acquire).
    Sets(Arc<str>),
    /// Removes this value (release, undo): waits, per node, for its setters.
    Clears(Arc<str>),
}

/// A request to run on every node, shared by the per-node futures.
pub(crate) struct Op {
    body: Body,
    order: Order,
}

enum Body {
    Script(scripts::Call),
    /// An extension that heals, and the plain one for a node in restart quarantine.
    Heal(scripts::Call, scripts::Call),
    /// A plain `SET NX` (the script that replaces it when it is sent again is built
    /// from it then: `scripts::acquire_one_for`).
    Set(redis::Cmd),
}

impl Op {
    fn request(&self) -> Request<'_> {
        match &self.body {
            Body::Script(call) => Request::Script(call),
            Body::Set(cmd) => Request::Set(cmd),
            Body::Heal(heal, plain) => Request::Heal { heal, plain },
        }
    }

    /// A script request that may set `value`.
    pub(crate) fn setting(call: scripts::Call, value: &Arc<str>) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// `SET key value NX PX ttl`: the uncontended single-key acquire, one command.
    pub(crate) fn set_nx(key: &str, value: &Arc<str>, ttl_ms: u64) -> Self {
        Self {
            body: Body::Set(scripts::set_nx(key, value, ttl_ms)),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// Compare-and-delete of `keys` held with `value`; with `notify`, waiters on the
    /// released keys are woken.
    pub(crate) fn release(keys: &[String], value: &Arc<str>, notify: bool) -> Self {
        let wake = notify.then_some(wake::CHANNEL_PREFIX);
        Self::clearing(scripts::release(keys, value, wake), value)
    }

    /// The release of a lock held at least for a period: `keys` held with `value` expire
    /// in `left_ms` instead of now. Ordered like a release, and like a release it ends
    /// the owner's hold, so a late copy can only keep the released value until then.
    pub(crate) fn hold_release(keys: &[String], value: &Arc<str>, left_ms: u64) -> Self {
        Self::clearing(scripts::hold_release(keys, value, left_ms), value)
    }

    /// An extension that also re-sets `value` where a key is missing (`heal_on_extend`),
    /// and the plain [`extend`](Self::extend) for a node in restart quarantine. It may
    /// set the value, so releases wait for it on each node, as for an acquisition.
    pub(crate) fn extend_healing(keys: &[String], value: &Arc<str>, ttl_ms: u64) -> Self {
        Self {
            body: Body::Heal(
                scripts::extend_heal(keys, value, ttl_ms),
                scripts::extend(keys, value, ttl_ms),
            ),
            order: Order::Sets(Arc::clone(value)),
        }
    }

    /// Compare-and-pexpire of `keys` held with `value`. Unordered: sent again after a
    /// release, it finds the value gone and touches nothing.
    pub(crate) fn extend(keys: &[String], value: &str, ttl_ms: u64) -> Self {
        Self::free(scripts::extend(keys, value, ttl_ms))
    }
}

/// The requests of the reader-writer lock and the semaphore (`scripts/rwlock.rs`,
/// `scripts/semaphore.rs`).
impl Op {
    /// A script request that neither sets nor removes an owner value.
    pub(crate) fn free(call: scripts::Call) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Free,
        }
    }

    /// A script request that removes `value`: runs on each node after every earlier
    /// request that may set it.
    pub(crate) fn clearing(call: scripts::Call, value: &Arc<str>) -> Self {
        Self {
            body: Body::Script(call),
            order: Order::Clears(Arc::clone(value)),
        }
    }

    /// A reader leaves the reader set `readers` (also the undo of a read attempt); the last reader
    /// out removes the readers marker from the lock key. With `notify`, the waiting
    /// writer and the oldest exclusive waiter are told when the last reader is gone.
    pub(crate) fn read_release(readers: &str, value: &Arc<str>, notify: bool) -> Self {
        let call = scripts::read_release(readers, value, wake::prefix(notify));
        Self::clearing(call, value)
    }

    /// A writer releases `key`: the readers that waited for it get the next turn
    /// and, with `notify`, are told (and the oldest exclusive waiter, as
    /// [`Op::release`]).
    pub(crate) fn write_release(key: &str, value: &Arc<str>, notify: bool) -> Self {
        let call = scripts::write_release(key, value, wake::prefix(notify));
        Self::clearing(call, value)
    }

    /// A reader's expiry becomes `ttl_ms` from now, if it is still a reader and that is
    /// later than its expiry (the readers marker in the lock key follows). Unordered,
    /// like [`Op::extend`]: sent after a release, it finds the reader gone; landing after
    /// a newer, longer extension, it lowers nothing.
    pub(crate) fn read_extend(readers: &str, value: &str, ttl_ms: u64) -> Self {
        Self::free(scripts::read_extend(readers, value, ttl_ms))
    }
}

pub(crate) type Reply = (usize, Result<Value, NodeError>);

/// What the requests of one round share: the request, and the replies that came in and
/// were not read yet, in the order they came.
struct Shared {
    op: Op,
    replies: Mutex<Arrivals>,
}

/// The replies of a round in the order they came: each node's request leaves exactly
/// one, so a slot per node is enough, kept inline for up to 8 nodes.
struct Arrivals {
    slots: PerNode<Reply>,
    /// The next slot to read, and the next to fill.
    read: usize,
    filled: usize,
}

impl Arrivals {
    fn push(&mut self, reply: Reply) {
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
/// each reply with its node's index as it comes.
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
}

impl<F: Future<Output = ()>> Round<F> {
    /// The next reply, or `None` once every node's reply was read.
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
        // never after `JoinAll` completed. What it yields is `()` per node: the replies
        // went to the queue.
        let _ = Pin::new(&mut self.requests).poll(cx);
        match self.take() {
            Some(reply) => Poll::Ready(Some(reply)),
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
pub(crate) fn fan_out_where(
    nodes: &Arc<[Node]>,
    op: Op,
    to: impl Fn(usize) -> bool,
) -> Round<impl Future<Output = ()> + Send + 'static> {
    let picked = (0..nodes.len()).filter(|i| to(*i)).count();
    let shared = Arc::new(Shared {
        op,
        replies: Mutex::new(Arrivals {
            slots: PerNode::empty(picked),
            read: 0,
            filled: 0,
        }),
    });
    let requests = (0..nodes.len()).filter(|i| to(*i)).map(|i| {
        // Registered now, not at the first poll: a release started after this
        // returns must see every request of this round.
        let ticket = match &shared.op.order {
            Order::Sets(value) => Some(nodes[i].setting(value)),
            _ => None,
        };
        request_on(Arc::clone(nodes), Arc::clone(&shared), i, ticket)
    });
    Round {
        // Sized exactly: `join_all` collects into one boxed slice of the futures.
        requests: join_all(Exactly::new(requests, picked)),
        shared,
        remaining: picked,
    }
}

/// The request of a round to node `i`, which leaves its reply in the round's queue;
/// `ticket` keeps the node's releases of the value after it.
async fn request_on(nodes: Arc<[Node]>, shared: Arc<Shared>, i: usize, ticket: Option<SetTicket>) {
    let op = &shared.op;
    let timeout = match &op.order {
        Order::Clears(value) => {
            if !crate::mutants::UNORDERED_RELEASE {
                nodes[i].settled(value).await;
            }
            nodes[i].clear_timeout()
        }
        _ => nodes[i].timeout(),
    };
    let reply = nodes[i].run_within(op.request(), timeout).await;
    drop(ticket);
    lock(&shared.replies).push((i, reply));
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
    until: Option<tokio::time::Instant>,
}

impl<F: Future<Output = ()> + Send + 'static> Collecting<F> {
    pub(crate) fn new(replies: Round<F>, what: &'static str) -> Self {
        Self {
            replies: Some(replies),
            what,
            until: None,
        }
    }

    /// Stops collecting after the caller has waited `patience`: the replies still out
    /// go on in the background when this is dropped. For releases and undos, whose
    /// requests may run longer than their callers should wait (see
    /// `node::CLEAR_TIMEOUTS`).
    pub(crate) fn until(mut self, patience: Duration) -> Self {
        self.until = Some(tokio::time::Instant::from_std(instant_after(patience)));
        self
    }

    /// The next reply, or `None` when every node answered (or the caller's patience
    /// ran out).
    pub(crate) async fn next(&mut self) -> Option<Reply> {
        let replies = self.replies.as_mut()?;
        match self.until {
            Some(until) => tokio::time::timeout_at(until, replies.next())
                .await
                .ok()
                .flatten(),
            None => replies.next().await,
        }
    }

    /// The replies not read yet, for the caller to finish its own way.
    pub(crate) fn into_rest(mut self) -> Option<Round<F>> {
        self.replies.take()
    }
}

impl<F: Future<Output = ()> + Send + 'static> Drop for Collecting<F> {
    fn drop(&mut self) {
        if let Some(rest) = self.replies.take() {
            finish_in_background(rest, self.what);
        }
    }
}

/// What a round of replies came to.
pub(crate) struct Votes<T> {
    pub(crate) tally: Tally,
    /// Why the failed votes failed, in the order they came.
    pub(crate) causes: Vec<NodeError>,
    /// Per node, what it answered (`None`: not heard from, failed, or not counted).
    pub(crate) answers: PerNode<T>,
    /// The nodes from which a reply came (so their request ran there).
    pub(crate) heard: NodeSet,
    /// The nodes whose request ended, with a reply or a failure.
    pub(crate) ended: NodeSet,
}

/// A set of node indexes: the bits of one word for up to 64 nodes, with no allocation
/// (a round of every operation has two), a vector beyond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum NodeSet {
    Bits(u64),
    Many(Vec<bool>),
}

impl NodeSet {
    /// The empty set of nodes `0..n`.
    pub(crate) fn new(n: usize) -> Self {
        if n <= 64 {
            Self::Bits(0)
        } else {
            Self::Many(vec![false; n])
        }
    }

    /// Puts node `i` in the set (`in_set`) or takes it out.
    pub(crate) fn set(&mut self, i: usize, in_set: bool) {
        match self {
            Self::Bits(bits) => {
                let bit = u32::try_from(i).ok().and_then(|i| 1u64.checked_shl(i));
                if let Some(bit) = bit {
                    if in_set {
                        *bits |= bit;
                    } else {
                        *bits &= !bit;
                    }
                }
            }
            Self::Many(v) => {
                if let Some(slot) = v.get_mut(i) {
                    *slot = in_set;
                }
            }
        }
    }

    /// Whether node `i` is in the set.
    pub(crate) fn contains(&self, i: usize) -> bool {
        match self {
            Self::Bits(bits) => u32::try_from(i)
                .ok()
                .and_then(|i| bits.checked_shr(i))
                .is_some_and(|b| b & 1 == 1),
            Self::Many(v) => v.get(i).copied().unwrap_or(false),
        }
    }
}

/// Whose replies count: every answer, or only the votes of nodes not in restart
/// quarantine (whose replies are then failed votes, with that cause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Count {
    Answers,
    Votes,
}

/// The one vote collector of acquire, extend and release: reads `replies` until
/// `done(&tally)` (or every node replied), each reply through `classify`; a reply no
/// Redis running our scripts would give is a failed vote with its cause. What is not
/// read stays in `replies`, for its owner to finish in the background.
pub(crate) async fn collect<T, F: Future<Output = ()> + Send + 'static>(
    replies: &mut Collecting<F>,
    nodes: &[Node],
    count: Count,
    classify: impl Fn(&Value) -> Result<(Vote, T), String>,
    done: impl Fn(&Tally) -> bool,
) -> Votes<T> {
    let n = nodes.len();
    let mut votes = Votes {
        tally: Tally::new(n),
        causes: Vec::new(),
        answers: PerNode::empty(n),
        heard: NodeSet::new(n),
        ended: NodeSet::new(n),
    };
    while let Some((node, reply)) = replies.next().await {
        votes.heard.set(node, reply.is_ok());
        votes.ended.set(node, true);
        let reply = match count {
            Count::Votes => nodes[node].counted(reply),
            Count::Answers => reply,
        };
        let vote = match reply
            .and_then(|value| classify(&value).map_err(|what| nodes[node].protocol_error(what)))
        {
            Ok((vote, answer)) => {
                votes.answers[node] = Some(answer);
                vote
            }
            Err(e) => {
                votes.causes.push(e);
                Vote::Failed
            }
        };
        tracing::debug!(node, ?vote, "vote");
        votes.tally.record(vote);
        if done(&votes.tally) {
            break;
        }
    }
    votes
}

/// `Error::NoQuorum` for `resource` after `attempts`, from a round's tally, with `ok`
/// the nodes that did what was asked.
pub(crate) fn no_quorum(
    resource: &str,
    attempts: u32,
    ok: usize,
    tally: &Tally,
    causes: Vec<NodeError>,
) -> Error {
    Error::NoQuorum {
        resource: resource.to_owned(),
        attempts,
        ok,
        failed: tally.failed,
        needed: tally.quorum,
        nodes: tally.nodes,
        causes: NodeErrors(causes),
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

#[cfg(test)]
mod tests {
    use super::{Arrivals, NodeSet, PerNode};
    use crate::error::{NodeError, NodeErrorKind};

    /// The replies of a round come out in the order they went in, in place for up to
    /// 8 nodes and in a vector beyond, and a full round takes no more.
    #[test]
    fn arrivals_come_out_in_the_order_they_came() {
        for n in [1, 5, 8, 9, 20] {
            let mut arrivals = Arrivals {
                slots: PerNode::empty(n),
                read: 0,
                filled: 0,
            };
            assert_eq!(matches!(arrivals.slots, PerNode::Inline(..)), n <= 8);
            assert_eq!(arrivals.slots.len(), n);
            let order: Vec<usize> = (0..n).rev().collect();
            for (k, node) in order.iter().enumerate() {
                arrivals.push((*node, Ok(redis::Value::Int(k as i64))));
                if k % 2 == 1 {
                    let (got, _) = arrivals.pop().expect("a reply is in");
                    assert_eq!(got, order[k / 2]);
                }
            }
            let err = NodeError::new(0, "x:1".into(), NodeErrorKind::Protocol("full".into()));
            arrivals.push((n, Err(err)));
            let rest: Vec<usize> = std::iter::from_fn(|| arrivals.pop()).map(|r| r.0).collect();
            assert_eq!(rest, order[n / 2..], "n {n}");
        }
    }

    /// Against the naive oracle, a vector of flags, in both forms (64 nodes and fewer
    /// in one word, more in a vector), at the edges of the word.
    #[test]
    fn a_node_set_is_a_vector_of_flags() {
        for n in [1, 5, 63, 64, 65, 130] {
            let mut set = NodeSet::new(n);
            let mut oracle = vec![false; n];
            assert_eq!(matches!(set, NodeSet::Bits(_)), n <= 64);
            for (step, i) in [0, n - 1, n / 2, 0, n - 1].into_iter().enumerate() {
                let on = step != 3;
                set.set(i, on);
                oracle[i] = on;
                for (j, flag) in oracle.iter().enumerate() {
                    assert_eq!(set.contains(j), *flag, "n {n}, node {j} after step {step}");
                }
            }
            // Out of range: never in the set, and setting it changes nothing.
            set.set(n + 64, true);
            assert!(!set.contains(n + 64));
            assert!((0..n).all(|j| set.contains(j) == oracle[j]));
        }
    }
}
