//! One lock node: a lazily made, shared, multiplexed connection and bounded requests.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Client, RedisError, Value};

use crate::error::{NodeError, NodeErrorKind};

/// After this many timeouts in a row the connection is presumed dead (a half-open TCP
/// connection never reports an error) and is made anew. Three keeps a merely slow node
/// from reconnecting on every hiccup.
const TIMEOUTS_BEFORE_RECONNECT: u32 = 3;

type ConnectFuture = Shared<BoxFuture<'static, Result<MultiplexedConnection, Arc<RedisError>>>>;

enum Slot {
    Idle,
    /// A connection attempt is under way in its own task; requests wait on it.
    Connecting(ConnectFuture, u64),
    Ready(MultiplexedConnection, u64),
}

/// A request that one node should run.
#[derive(Clone, Copy)]
pub(crate) enum Request<'a> {
    Cmd(&'a redis::Cmd),
    Script(&'a redis::ScriptInvocation<'a>),
}

pub(crate) struct Node {
    pub(crate) index: usize,
    /// `host:port[/db]`, never with credentials: this is what logs and errors show.
    pub(crate) endpoint: Arc<str>,
    client: Client,
    timeout: Duration,
    connect_timeout: Duration,
    slot: Mutex<Slot>,
    generation: AtomicU32,
    timeouts_in_a_row: AtomicU32,
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
    ) -> Self {
        let info = client.get_connection_info();
        let db = info.redis_settings().db();
        let endpoint = if db == 0 {
            info.addr().to_string()
        } else {
            format!("{}/{db}", info.addr())
        };
        Self {
            index,
            endpoint: endpoint.into(),
            client,
            timeout,
            connect_timeout,
            slot: Mutex::new(Slot::Idle),
            generation: AtomicU32::new(0),
            timeouts_in_a_row: AtomicU32::new(0),
        }
    }

    /// The node's client, for connections of another kind (pub/sub).
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    fn error(&self, kind: NodeErrorKind) -> NodeError {
        NodeError::new(self.index, self.endpoint.clone(), kind)
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
            Ok(Ok(value)) => {
                self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                Ok(value)
            }
            Ok(Err((e, generation))) => {
                if e.is_io_error() || e.is_connection_dropped() || e.is_unrecoverable_error() {
                    self.reset(generation);
                }
                Err(self.error(NodeErrorKind::Redis(Arc::new(e))))
            }
            Err(_) => {
                let n = self.timeouts_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= TIMEOUTS_BEFORE_RECONNECT {
                    self.timeouts_in_a_row.store(0, Ordering::Relaxed);
                    self.reset(None);
                }
                Err(self.error(NodeErrorKind::Timeout(timeout)))
            }
        }
    }

    async fn run_unbounded(
        &self,
        request: Request<'_>,
    ) -> Result<Value, (RedisError, Option<u64>)> {
        let (mut conn, generation) = self.connection().await.map_err(|e| {
            // A failed connect already cleared its slot.
            ((*e).clone(), None)
        })?;
        let reply = match request {
            Request::Cmd(cmd) => cmd.query_async::<Value>(&mut conn).await,
            // EVALSHA first; on NOSCRIPT (a restarted or flushed node) the script is
            // loaded and run again, once.
            Request::Script(inv) => inv.invoke_async::<Value>(&mut conn).await,
        };
        reply.map_err(|e| (e, Some(generation)))
    }

    /// The shared connection, made on first use and again after it broke.
    async fn connection(&self) -> Result<(MultiplexedConnection, u64), Arc<RedisError>> {
        let (connecting, generation) = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            match &*slot {
                Slot::Ready(conn, g) => return Ok((conn.clone(), *g)),
                Slot::Connecting(fut, g) => (fut.clone(), *g),
                Slot::Idle => {
                    let g = u64::from(self.generation.fetch_add(1, Ordering::Relaxed)) + 1;
                    let fut = self.spawn_connect();
                    *slot = Slot::Connecting(fut.clone(), g);
                    (fut, g)
                }
            }
        };
        let result = connecting.await;
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let current = matches!(&*slot, Slot::Connecting(_, g) if *g == generation);
        match result {
            Ok(conn) => {
                if current {
                    *slot = Slot::Ready(conn.clone(), generation);
                }
                Ok((conn, generation))
            }
            Err(e) => {
                if current {
                    *slot = Slot::Idle;
                }
                Err(e)
            }
        }
    }

    /// Connects in a task of its own, so that a request that times out while waiting
    /// does not cancel the connection attempt the next request will want.
    fn spawn_connect(&self) -> ConnectFuture {
        let client = self.client.clone();
        // Our own timeout bounds each request; the driver's response timeout would only
        // add a second, different clock.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(None);
        let task = tokio::spawn(async move {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        });
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

    /// Forgets the connection of `generation` (or any connection, for `None`), so that
    /// the next request connects again.
    fn reset(&self, generation: Option<u64>) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let matches = match (&*slot, generation) {
            (Slot::Ready(_, g), Some(want)) => *g == want,
            (Slot::Ready(..), None) => true,
            _ => false,
        };
        if matches {
            tracing::debug!(node = self.index, endpoint = %self.endpoint, "dropping connection");
            *slot = Slot::Idle;
        }
    }
}
