//! One lock node: a lazily made, shared, multiplexed connection and bounded requests.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, ErrorKind, RedisError, ServerErrorKind, Value};

use crate::error::{NodeError, NodeErrorKind};
use crate::sync::lock;

pub(crate) mod request;
mod restart;
mod setters;

pub(crate) use request::Request;
pub(crate) use restart::{Restarts, MARKER_NAME};
pub(crate) use setters::SetTicket;
use setters::Setters;

/// After this many timeouts in a row the connection is presumed dead (a half-open TCP
/// connection never reports an error) and is made anew. Three keeps a merely slow node
/// from reconnecting on every hiccup.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

/// A request that removes an owner value (a release, an undo) gets this many node
/// timeouts to land, where every other request gets one. It is a compare-and-delete,
/// harmless however late it runs, and dropping it leaves the key to its ttl: on a node
/// that is slow for a moment (a saturated machine, a reconnect) the longer deadline is
/// what removes the key within seconds rather than the ttl. Callers still wait at most
/// two node timeouts (`round::clear_patience`); the rest runs in the background.
pub(crate) const CLEAR_TIMEOUTS: u32 = 4;

type ConnectFuture = Shared<BoxFuture<'static, Result<Conn, Arc<RedisError>>>>;

enum ConnState {
    Idle,
    /// A connection attempt is under way in its own task; requests wait on it.
    Connecting(ConnectFuture, u64),
    Ready(Conn, u64),
}

/// What a node is: one server, or (feature `cluster`) a whole Redis Cluster voting once.
// One per node, made once: the size difference costs nothing, and a boxed client would
// only add a pointer hop.
#[allow(clippy::large_enum_variant)]
enum Target {
    Server(Client),
    #[cfg(feature = "cluster")]
    Cluster(Arc<crate::cluster::ClusterVote>),
}

/// A node's shared connection, of its target's kind.
#[derive(Clone)]
enum Conn {
    Server(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(
        redis::cluster_async::ClusterConnection,
        Arc<crate::cluster::ClusterVote>,
    ),
}

pub(crate) struct Node {
    pub(crate) index: usize,
    /// `host:port[/db]`, never with credentials: this is what logs and errors show.
    pub(crate) endpoint: Arc<str>,
    target: Target,
    timeout: Duration,
    connect_timeout: Duration,
    conn: Mutex<ConnState>,
    generation: AtomicU32,
    timeouts_in_a_row: AtomicU32,
    /// With a restart quarantine: what this manager knows of the node's restarts, and
    /// until when its votes do not count (judged on each new connection).
    restarts: Option<Arc<Restarts>>,
    setters: Arc<Setters>,
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the client: its connection info would print the password.
        f.debug_struct("Node")
            .field("index", &self.index)
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Node {
    pub(crate) fn new(
        index: usize,
        client: Client,
        timeout: Duration,
        connect_timeout: Duration,
        restarts: Option<Restarts>,
    ) -> Self {
        let info = client.get_connection_info();
        let db = info.redis_settings().db();
        let endpoint = if db == 0 {
            info.addr().to_string()
        } else {
            format!("{}/{db}", info.addr())
        };
        Self::with_target(
            index,
            endpoint,
            Target::Server(client),
            timeout,
            connect_timeout,
            restarts,
        )
    }

    /// A whole Redis Cluster as node `index`. No restart quarantine: it reads one
    /// server's uptime, and a cluster vote's masters restart one by one (see
    /// docs/operations.md).
    #[cfg(feature = "cluster")]
    pub(crate) fn cluster(
        index: usize,
        vote: crate::cluster::ClusterVote,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Self {
        let endpoint = vote.endpoint();
        let target = Target::Cluster(Arc::new(vote));
        Self::with_target(index, endpoint, target, timeout, connect_timeout, None)
    }

    fn with_target(
        index: usize,
        endpoint: String,
        target: Target,
        timeout: Duration,
        connect_timeout: Duration,
        restarts: Option<Restarts>,
    ) -> Self {
        Self {
            index,
            endpoint: endpoint.into(),
            target,
            timeout,
            connect_timeout,
            conn: Mutex::new(ConnState::Idle),
            generation: AtomicU32::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
            restarts: restarts.map(Arc::new),
            setters: Arc::default(),
        }
    }

    /// The deadline of one request to this node.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The deadline of a request that removes an owner value (see [`CLEAR_TIMEOUTS`]).
    pub(crate) fn clear_timeout(&self) -> Duration {
        self.timeout.saturating_mul(CLEAR_TIMEOUTS)
    }

    /// The clients to try, in order, for connections of another kind (pub/sub): the
    /// server's, or a cluster vote's seeds (a classic `PUBLISH` reaches every node of a
    /// cluster, so any one of them hears the vote's wake-ups).
    pub(crate) fn pubsub_clients(&self) -> &[Client] {
        match &self.target {
            Target::Server(client) => std::slice::from_ref(client),
            #[cfg(feature = "cluster")]
            Target::Cluster(vote) => vote.seeds(),
        }
    }

    /// Whether this node is a whole Redis Cluster (one vote).
    #[cfg(feature = "cluster")]
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// The lock key a released key published by this node stands for: a cluster vote
    /// publishes its own form of the key (`{key}`, see `cluster/keys.rs`).
    pub(crate) fn lock_key_of<'k>(&self, published: &'k str) -> &'k str {
        match &self.target {
            Target::Server(_) => published,
            #[cfg(feature = "cluster")]
            Target::Cluster(_) => crate::cluster::keys::untagged(published),
        }
    }

    fn error(&self, kind: NodeErrorKind) -> NodeError {
        NodeError::new(self.index, self.endpoint.clone(), kind)
    }

    /// A reply that no Redis running this crate's scripts would give.
    pub(crate) fn protocol_error(&self, what: String) -> NodeError {
        self.error(NodeErrorKind::Protocol(what))
    }

    /// Runs `request`, connecting first if needed, all within the node timeout.
    ///
    /// # Cancel safety
    /// Dropping the future abandons the reply; the request itself may still run on the
    /// server, which is why callers treat an unknown outcome as "maybe applied".
    pub(crate) async fn run(&self, request: Request<'_>) -> Result<Value, NodeError> {
        self.run_within(request, self.timeout).await
    }

    pub(crate) async fn run_within(
        &self,
        request: Request<'_>,
        timeout: Duration,
    ) -> Result<Value, NodeError> {
        match tokio::time::timeout(timeout, self.run_unbounded(request)).await {
            Ok(reply) => self.answered(reply),
            Err(_) => Err(self.timed_out(timeout)),
        }
    }

    /// Runs `request` of a round, with no deadline of its own: the round has one for
    /// all its requests (`round::fan_out_where`) and calls
    /// [`timed_out`](Self::timed_out) for each it gave up on.
    pub(crate) async fn run_in_round(&self, request: Request<'_>) -> Result<Value, NodeError> {
        let reply = self.run_unbounded(request).await;
        self.answered(reply)
    }

    /// The outcome of a request that ended before its deadline.
    fn answered(
        &self,
        reply: Result<Value, (RedisError, Option<u64>)>,
    ) -> Result<Value, NodeError> {
        match reply {
            Ok(value) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Err((e, generation)) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.reset(generation);
                }
                let err = self.error(NodeErrorKind::Redis(Arc::new(e)));
                crate::metrics::node_error(&err);
                Err(err)
            }
        }
    }

    /// A request to this node ran out of `timeout`: counted (a connection that times
    /// out [`TIMEOUTS_BEFORE_RECONNECT`] times in a row is made anew), and the error.
    pub(crate) fn timed_out(&self, timeout: Duration) -> NodeError {
        let n = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= TIMEOUTS_BEFORE_RECONNECT {
            self.timeouts_in_a_row.store(0, Ordering::Relaxed);
            self.reset(None);
        }
        let err = self.error(NodeErrorKind::Timeout(timeout));
        crate::metrics::node_error(&err);
        err
    }

    /// Runs `request` again on a new connection whenever the one it went out on turned
    /// out to be dead (the node restarted, closed it, or a flap of the network broke
    /// it), until it gets an answer or its deadline (the caller's timeout) ends it:
    /// every request this crate sends is idempotent for its owner value, so another try
    /// cannot do harm. Without it the first request after every restart would fail, and
    /// a release caught by two breaks in a row would leave its key to the ttl on a node
    /// that is back within milliseconds. A connection that cannot be made ends it at
    /// once (the node is down: no point in hammering it), and so do new connections
    /// that keep breaking ([`MAX_BROKEN_HANDSHAKES`]).
    async fn run_unbounded(
        &self,
        request: Request<'_>,
    ) -> Result<Value, (RedisError, Option<u64>)> {
        let mut result = self.run_once(request).await;
        // What goes instead of a `SET NX` that must be sent again, made then.
        let mut resend = None;
        let mut tries = 1u32;
        let mut broken_handshakes = 0u32;
        loop {
            match result {
                Err((e, generation)) if broke(&e, generation.is_some()) => {
                    match generation {
                        Some(generation) => self.reset(Some(generation)),
                        // A node that keeps closing new connections (behind a proxy or
                        // a load balancer, a dead server looks like this) is down.
                        None if broken_handshakes >= MAX_BROKEN_HANDSHAKES => {
                            return Err((e, None))
                        }
                        None => broken_handshakes += 1,
                    }
                    if tries > 1 {
                        tokio::time::sleep(reconnect_pause(tries)).await;
                    }
                    tries = tries.saturating_add(1);
                    let again = match request {
                        Request::Set(set) => Request::Script(
                            resend.get_or_insert_with(|| crate::scripts::acquire_one_for(set)),
                        ),
                        other => other,
                    };
                    result = self.run_once(again).await;
                }
                other => return other,
            }
        }
    }

    async fn run_once(&self, request: Request<'_>) -> Result<Value, (RedisError, Option<u64>)> {
        let (conn, generation) = self.connection().await.map_err(|e| {
            // A failed connect already cleared its connection state.
            ((*e).clone(), None)
        })?;
        // Judged now: a new connection has just checked for a restart.
        let request = match request {
            Request::Heal { heal, plain } => {
                let quarantined = self
                    .restarts
                    .as_ref()
                    .is_some_and(|r| r.quarantined_until().is_some());
                Request::Script(if quarantined { plain } else { heal })
            }
            other => other,
        };
        // Without the `cluster` feature there is one kind of connection.
        #[cfg_attr(
            not(feature = "cluster"),
            allow(clippy::infallible_destructuring_match)
        )]
        let mut conn = match conn {
            Conn::Server(conn) => conn,
            #[cfg(feature = "cluster")]
            Conn::Cluster(mut conn, vote) => {
                let reply = vote.run(&mut conn, request).await;
                return reply.map_err(|e| (e, Some(generation)));
            }
        };
        let reply = match request {
            Request::Cmd(cmd) | Request::Set(cmd) => query(&mut conn, cmd).await,
            // EVALSHA first; on NOSCRIPT (a restarted or flushed node) the script is
            // loaded and run again, once.
            // (`Heal` was decided above; were it not, the plain extension is the safe one.)
            Request::Script(call) | Request::Heal { plain: call, .. } => {
                match query(&mut conn, &call.cmd).await {
                    Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                        match call.script.load_async(&mut conn).await {
                            Ok(_) => query(&mut conn, &call.cmd).await,
                            Err(e) => Err(e),
                        }
                    }
                    other => other,
                }
            }
        };
        reply.map_err(|e| (e, Some(generation)))
    }

    /// The shared connection, made on first use and again after it broke.
    async fn connection(&self) -> Result<(Conn, u64), Arc<RedisError>> {
        let (connecting, generation) = {
            let mut state = lock(&self.conn);
            match &*state {
                ConnState::Ready(conn, g) => return Ok((conn.clone(), *g)),
                ConnState::Connecting(fut, g) => (fut.clone(), *g),
                ConnState::Idle => {
                    let g = u64::from(self.generation.fetch_add(1, Ordering::Relaxed)) + 1;
                    let fut = self.spawn_connect();
                    *state = ConnState::Connecting(fut.clone(), g);
                    (fut, g)
                }
            }
        };
        let result = connecting.await;
        let mut state = lock(&self.conn);
        let current = matches!(&*state, ConnState::Connecting(_, g) if *g == generation);
        match result {
            Ok(conn) => {
                if current {
                    *state = ConnState::Ready(conn.clone(), generation);
                }
                Ok((conn, generation))
            }
            Err(e) => {
                if current {
                    *state = ConnState::Idle;
                }
                Err(e)
            }
        }
    }

    /// Connects in a task of its own, so that a request that times out while waiting
    /// does not cancel the connection attempt the next request will want.
    fn spawn_connect(&self) -> ConnectFuture {
        let client = match &self.target {
            Target::Server(client) => client.clone(),
            #[cfg(feature = "cluster")]
            Target::Cluster(vote) => {
                let vote = Arc::clone(vote);
                let task = tokio::spawn(async move {
                    let conn = vote.connect().await?;
                    Ok(Conn::Cluster(conn, vote))
                });
                return joined(task);
            }
        };
        // Our own timeout bounds each request; the driver's response timeout would only
        // add a second, different clock.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let restarts = self.restarts.clone();
        let (index, endpoint) = (self.index, Arc::clone(&self.endpoint));
        let task = tokio::spawn(async move {
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&config)
                .await?;
            if let Some(restarts) = restarts {
                // Judged on every new connection: a restart breaks the old one, so a
                // restarted node is always looked at again before it votes.
                restarts.check(&mut conn, index, &endpoint).await;
            }
            Ok(Conn::Server(conn))
        });
        joined(task)
    }

    /// The reply, if this node's vote counts now: a node in restart quarantine does not
    /// vote, whatever it answered (its reply becomes a failure whose cause says so; what
    /// it was sent is still undone or released as usual).
    pub(crate) fn counted(&self, reply: Result<Value, NodeError>) -> Result<Value, NodeError> {
        let until = self.restarts.as_ref().and_then(|r| r.quarantined_until());
        match (reply, until) {
            (Ok(_), Some(until)) => Err(self.error(NodeErrorKind::Quarantined(
                until.saturating_duration_since(Instant::now()),
            ))),
            (reply, _) => reply,
        }
    }

    /// Forgets the connection of `generation` (or any connection, for `None`), so that
    /// the next request connects again.
    fn reset(&self, generation: Option<u64>) {
        let mut state = lock(&self.conn);
        let matches = match (&*state, generation) {
            // A cluster connection re-makes its connection to each master on its own, and
            // a new one would first have to learn the slots again: it is kept.
            #[cfg(feature = "cluster")]
            (ConnState::Ready(Conn::Cluster(..), _), _) => false,
            (ConnState::Ready(_, g), Some(want)) => *g == want,
            (ConnState::Ready(..), None) => true,
            _ => false,
        };
        if matches {
            tracing::debug!(node = self.index, endpoint = %self.endpoint, "dropping connection");
            *state = ConnState::Idle;
        }
    }
}

/// Runs `cmd` on `conn` as `Cmd::query_async::<Value>` would (a server's error reply,
/// also inside an array, is an `Err`), without the box that redis-rs's `ConnectionLike`
/// puts each request's future in: one allocation per request less.
async fn query(conn: &mut MultiplexedConnection, cmd: &redis::Cmd) -> Result<Value, RedisError> {
    conn.send_packed_command(cmd)
        .await
        .and_then(Value::extract_error)
}

/// New connections in a row that may break while being made before a request gives up:
/// a flapping network breaks one or two, a dead server behind a proxy breaks every one.
const MAX_BROKEN_HANDSHAKES: u32 = 3;

/// Whether `e` says a connection broke (worth another try on a new one) rather than
/// that the node cannot be reached. A connection being made (`established` false) that
/// breaks during its handshake counts as broken: a proxy or a node's network that
/// accepts and then drops it (a flap) is back in a moment. A refused, timed-out or
/// unresolvable connect is the node being down or unreachable: no point in hammering it.
fn broke(e: &RedisError, established: bool) -> bool {
    if established {
        e.is_connection_dropped() || e.is_io_error()
    } else {
        e.is_connection_dropped() && !e.is_connection_refusal()
    }
}

/// The pause before the `tries`-th try of a request whose connections kept breaking:
/// none before the second, then 1, 2, 4 .. ms, at most 16 ms.
fn reconnect_pause(tries: u32) -> Duration {
    Duration::from_millis(1u64 << tries.saturating_sub(2).min(4))
}

/// The connection a connecting task made, for every request that waits on it.
fn joined(task: tokio::task::JoinHandle<Result<Conn, RedisError>>) -> ConnectFuture {
    async move {
        match task.await {
            Ok(result) => result.map_err(Arc::new),
            Err(join) => Err(Arc::new(RedisError::from(std::io::Error::other(format!(
                "connection task ended: {join}"
            ))))),
        }
    }
    .boxed()
    .shared()
}

#[cfg(test)]
mod tests;
