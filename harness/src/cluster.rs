//! `Cluster`, its builder, and `Node`: a server plus the fault proxy in front of it.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::proxy::{Direction, Proxy};
use super::server::{self, Server, ServerConfig, TlsPem};
use super::{HarnessError, Persistence};

mod late;
mod wipe;

/// Default bound on a server becoming ready. Generous: AOF loading or a loaded CI machine can
/// take seconds; a healthy start takes milliseconds, and readiness is polled, not slept for.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between failed health checks in [`Cluster::wait_healthy`].
const HEALTH_RETRY: Duration = Duration::from_millis(20);
/// Per-attempt bound inside [`Cluster::wait_healthy`], so one hung attempt cannot use it all.
const HEALTH_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// Builds a [`Cluster`]. Created by [`Cluster::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until start() is awaited"]
pub struct ClusterBuilder {
    nodes: usize,
    persistence: Persistence,
    extra_args: Vec<String>,
    redis_server: Option<PathBuf>,
    ready_timeout: Duration,
    tls: Option<TlsPem>,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 3,
            persistence: Persistence::Memory,
            extra_args: Vec::new(),
            redis_server: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            tls: None,
        }
    }
}

impl ClusterBuilder {
    /// The number of independent nodes. Defaults to 3. Zero is rejected by [`start`](Self::start).
    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// How every server keeps its data. Defaults to [`Persistence::Memory`].
    pub fn persistence(mut self, p: Persistence) -> Self {
        self.persistence = p;
        self
    }

    /// Extra command-line arguments for every server, appended after the harness's own (so
    /// they win), e.g. `["--maxmemory", "1mb"]`. Defaults to none.
    pub fn extra_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// One config directive for every server, passed as `--key value`
    /// (e.g. `.config("maxmemory-policy", "allkeys-lru")`). Defaults to none.
    pub fn config(mut self, key: impl AsRef<str>, value: impl Into<String>) -> Self {
        let key = key.as_ref().trim_start_matches('-');
        self.extra_args.push(format!("--{key}"));
        self.extra_args.push(value.into());
        self
    }

    /// The `redis-server` binary. Defaults to `$REDIS_SERVER`, else `redis-server` on `PATH`.
    pub fn redis_server(mut self, path: impl Into<PathBuf>) -> Self {
        self.redis_server = Some(path.into());
        self
    }

    /// How long each server may take to answer `PING` after a start or restart.
    /// Defaults to 10 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Makes every server also listen for TLS on a port of its own (see
    /// [`Node::tls_url`]), with this certificate chain and key (PEM), checking client
    /// certificates against `ca_pem` when a client presents one (`tls-auth-clients
    /// optional`). The plain port and its proxy stay as they are. Defaults to no TLS.
    ///
    /// The server must be built with TLS (Debian's and most packaged builds are).
    pub fn tls(
        mut self,
        cert_pem: impl Into<String>,
        key_pem: impl Into<String>,
        ca_pem: impl Into<String>,
    ) -> Self {
        self.tls = Some(TlsPem {
            cert: cert_pem.into(),
            key: key_pem.into(),
            ca: ca_pem.into(),
        });
        self
    }

    /// Starts every server and its proxy, concurrently, and waits until each answers `PING`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::ServerNotFound`] when there is no binary; [`HarnessError::Config`] for
    /// zero nodes; [`HarnessError::NotReady`], [`HarnessError::Exited`] or
    /// [`HarnessError::Spawn`] when a server does not come up. Whatever was started is stopped
    /// again before the error is returned.
    ///
    /// # Panics
    ///
    /// Panics when called outside a tokio runtime (the proxies are spawned tasks).
    pub async fn start(self) -> Result<Cluster, HarnessError> {
        if self.nodes == 0 {
            return Err(HarnessError::Config(
                "nodes must be at least 1; call .nodes(n) with n >= 1".into(),
            ));
        }
        let config = ServerConfig {
            binary: server::find_binary(self.redis_server.as_deref())?,
            persistence: self.persistence,
            extra_args: self.extra_args,
            ready_timeout: self.ready_timeout,
            tls: self.tls,
            cluster: false,
        };
        let starts = (0..self.nodes).map(|i| Node::start(i, config.clone()));
        // On an error the `Ok` nodes in the vector are dropped, which stops them.
        let nodes = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cluster { nodes })
    }
}

/// N independent `redis-server` processes, each behind its own fault proxy.
///
/// Dropping the cluster kills every server it started (paused ones too) with `SIGKILL`, reaps
/// them, aborts the proxies' tasks and removes the temporary directories. The reaping is a
/// short synchronous wait (bounded at 2 s per node), so dropping is safe both inside and
/// outside a runtime.
#[derive(Debug)]
pub struct Cluster {
    nodes: Vec<Node>,
}

impl Cluster {
    /// A builder with the defaults: 3 nodes, [`Persistence::Memory`].
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether there are no nodes (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Node `i`.
    ///
    /// # Panics
    ///
    /// Panics when `i >= self.len()`; see [`try_node`](Self::try_node).
    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    /// Node `i`, or `None` when out of range.
    pub fn try_node(&self, i: usize) -> Option<&Node> {
        self.nodes.get(i)
    }

    /// All nodes, in index order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// `redis://127.0.0.1:<proxy port>` for every node: traffic that the faults apply to.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::url).collect()
    }

    /// `redis://127.0.0.1:<server port>` for every node, bypassing the proxies.
    pub fn direct_urls(&self) -> Vec<String> {
        self.nodes.iter().map(Node::direct_url).collect()
    }

    /// Waits until every node answers `PING` through its proxy.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`] naming the first node still failing when `timeout` runs out.
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<(), HarnessError> {
        let deadline = Instant::now() + timeout;
        let waits = self.nodes.iter().map(|n| n.wait_healthy(deadline, timeout));
        futures::future::join_all(waits)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()
            .map(drop)
    }

    /// Undoes every fault: resumes paused nodes, restarts killed ones, heals partitions (of
    /// both kinds), sets latency to zero, disarms resets and delivers held requests. A convenience built from the per-node undos.
    ///
    /// # Errors
    ///
    /// The first error of any undo.
    pub async fn clear_faults(&self) -> Result<(), HarnessError> {
        for n in &self.nodes {
            if !n.is_running() {
                n.restart().await?;
            } else if n.is_paused() {
                n.resume().await?;
            }
            n.heal().await?;
            n.set_latency(Duration::ZERO).await?;
            n.stop_resets().await?;
            n.deliver_held().await?;
        }
        Ok(())
    }
}

/// One node: a `redis-server` process and the fault proxy in front of it.
///
/// Borrowed from a [`Cluster`]; fault methods take `&self` and are serialised per node.
/// Dropping it (with its cluster) kills the server and removes its directory.
#[derive(Debug)]
pub struct Node {
    index: usize,
    server: Server,
    proxy: Proxy,
}

impl Node {
    async fn start(index: usize, config: ServerConfig) -> Result<Self, HarnessError> {
        let server = Server::start(index, config).await?;
        let proxy = Proxy::start(server.port()).await?;
        Ok(Self {
            index,
            server,
            proxy,
        })
    }

    /// The node's index in its cluster.
    pub fn index(&self) -> usize {
        self.index
    }

    /// `redis://127.0.0.1:<proxy port>`: the URL clients should use.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.proxy.port())
    }

    /// `redis://127.0.0.1:<server port>`: the server itself, bypassing the proxy's faults.
    pub fn direct_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.server.port())
    }

    /// `rediss://127.0.0.1:<tls port>`, straight to the server (the proxies carry plain
    /// TCP only), when the cluster was built with [`ClusterBuilder::tls`].
    pub fn tls_url(&self) -> Option<String> {
        self.server
            .tls_port()
            .map(|p| format!("rediss://127.0.0.1:{p}"))
    }

    /// The port the proxy listens on.
    pub fn proxy_port(&self) -> u16 {
        self.proxy.port()
    }

    /// The port the server listens on (the same across restarts).
    pub fn server_port(&self) -> u16 {
        self.server.port()
    }

    /// The server's process id, or `None` while it is killed.
    pub fn pid(&self) -> Option<u32> {
        self.server.pid()
    }

    /// Whether the server process exists (a paused one does).
    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Whether the server is paused with [`pause`](Self::pause).
    pub fn is_paused(&self) -> bool {
        self.server.is_paused()
    }

    /// Whether the proxy is partitioned (both directions dropped).
    pub fn is_partitioned(&self) -> bool {
        self.proxy.is_partitioned()
    }

    /// The proxy's current latency per direction.
    pub fn latency(&self) -> Duration {
        self.proxy.latency()
    }

    /// The server's working directory (AOF files, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.server.dir()
    }

    /// The last `lines` lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        self.server.log_tail(lines)
    }

    /// Stops the server process with `SIGSTOP`; it keeps its connections but answers nothing.
    /// Returns once the process is stopped.
    ///
    /// # Errors
    ///
    /// [`HarnessError::NotRunning`] when killed; [`HarnessError::Signal`] when the signal fails.
    pub async fn pause(&self) -> Result<(), HarnessError> {
        self.server.pause().await
    }

    /// Continues a paused server with `SIGCONT`. Resuming a running server is harmless.
    ///
    /// # Errors
    ///
    /// As for [`pause`](Self::pause).
    pub async fn resume(&self) -> Result<(), HarnessError> {
        self.server.resume().await
    }

    /// Kills the server with `SIGKILL` and waits for it to exit. Killing a killed node does
    /// nothing. The proxy stays up and closes new connections at once.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Io`] when the process cannot be reaped.
    ///
    /// # Cancel safety
    ///
    /// If cancelled, the server has still been sent `SIGKILL` and is reaped in the background.
    pub async fn kill(&self) -> Result<(), HarnessError> {
        self.server.kill().await
    }

    /// Starts the server again on the same port and directory (killing it first if it runs)
    /// and waits until it answers `PING`. With [`Persistence::AofAlways`] its data survives;
    /// with [`Persistence::Memory`] it comes back empty.
    ///
    /// # Errors
    ///
    /// As for [`ClusterBuilder::start`], plus [`HarnessError::PortTaken`] when another process
    /// took the port meanwhile.
    pub async fn restart(&self) -> Result<(), HarnessError> {
        self.server.restart().await
    }

    /// Makes the proxy a black hole in both directions: bytes are dropped, connections stay
    /// open, new connections are accepted but get nothing. Clients see timeouts, not errors.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn partition(&self) -> Result<(), HarnessError> {
        self.proxy.partition();
        Ok(())
    }

    /// Ends a partition, one-way ([`drop_requests`](Self::drop_requests),
    /// [`drop_replies`](Self::drop_replies)) or both ways. Connections that lived through it
    /// are closed (bytes of theirs were lost, so replies would no longer line up with
    /// requests); this returns once they are, and new connections are forwarded. Healing an
    /// unpartitioned node does nothing.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`] when the old connections do not close within 2 s.
    pub async fn heal(&self) -> Result<(), HarnessError> {
        self.proxy.heal().await
    }

    /// Delays every chunk by `latency` in each direction, keeping order, so a round trip costs
    /// at least `2 * latency`. `Duration::ZERO` undoes it.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn set_latency(&self, latency: Duration) -> Result<(), HarnessError> {
        self.proxy.set_latency(latency);
        Ok(())
    }

    /// Whether the proxy drops what clients send (by [`drop_requests`](Self::drop_requests)
    /// or [`partition`](Self::partition)).
    pub fn is_dropping_requests(&self) -> bool {
        self.proxy.is_dropping(Direction::Requests)
    }

    /// Whether the proxy drops what the server answers (by
    /// [`drop_replies`](Self::drop_replies) or [`partition`](Self::partition)).
    pub fn is_dropping_replies(&self) -> bool {
        self.proxy.is_dropping(Direction::Replies)
    }

    /// A one-way partition: the proxy drops every byte clients send; what the server sends
    /// still reaches them. The server sees nothing new; clients see timeouts. New
    /// connections are dialled but their requests are dropped too. Undo with
    /// [`heal`](Self::heal), which closes every connection that lived through it.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn drop_requests(&self) -> Result<(), HarnessError> {
        self.proxy.drop(Direction::Requests);
        Ok(())
    }

    /// A one-way partition the other way: requests reach the server and are applied, but
    /// every byte of its replies is dropped, so clients time out on requests that took
    /// effect. Undo with [`heal`](Self::heal), which closes every connection that lived
    /// through it.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn drop_replies(&self) -> Result<(), HarnessError> {
        self.proxy.drop(Direction::Replies);
        Ok(())
    }

    /// Arms `n` connection resets: each of the next `n` chunks a client sends (a request,
    /// or a pipeline of them) is forwarded to the server, and then, before any reply is
    /// passed back, that client's connection is reset (the client sees `ECONNRESET`). The
    /// server applies the request; the client does not learn it did. `u32::MAX` resets
    /// after every request until [`stop_resets`](Self::stop_resets).
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn reset_after_requests(&self, n: u32) -> Result<(), HarnessError> {
        self.proxy.set_resets(n);
        Ok(())
    }

    /// Disarms the resets still armed by [`reset_after_requests`](Self::reset_after_requests).
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    pub async fn stop_resets(&self) -> Result<(), HarnessError> {
        self.proxy.set_resets(0);
        Ok(())
    }

    /// How many resets armed by [`reset_after_requests`](Self::reset_after_requests) have
    /// not happened yet.
    pub fn pending_resets(&self) -> u32 {
        self.proxy.resets()
    }

    /// A short partition: [`partition`](Self::partition), wait `duration`, then
    /// [`heal`](Self::heal); returns after the heal. With `duration` below a client's
    /// request timeout, a request caught by the flap may still be answered on a new
    /// connection in time, which is what makes a flap different from a partition.
    ///
    /// # Errors
    ///
    /// As for [`heal`](Self::heal).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future during the wait leaves the node partitioned; call `heal`.
    pub async fn flap(&self, duration: Duration) -> Result<(), HarnessError> {
        self.partition().await?;
        tokio::time::sleep(duration).await;
        self.heal().await
    }

    /// A latency spike: the proxy delays each chunk by `latency` (as
    /// [`set_latency`](Self::set_latency)) for `duration`, then goes back to the latency it
    /// had before; returns after that. Chunks read during the spike keep their delay.
    ///
    /// # Errors
    ///
    /// None today; the `Result` leaves room for faults that can fail.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future during the spike leaves the spike's latency in place; call
    /// `set_latency` to undo it.
    pub async fn latency_spike(
        &self,
        latency: Duration,
        duration: Duration,
    ) -> Result<(), HarnessError> {
        let before = self.proxy.latency();
        self.proxy.set_latency(latency);
        tokio::time::sleep(duration).await;
        self.proxy.set_latency(before);
        Ok(())
    }

    /// Opens a fresh connection through the proxy and sends `PING`; returns the `PING`'s round
    /// trip time. The whole check, connecting included, is bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// [`HarnessError::Timeout`] or [`HarnessError::Redis`].
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, HarnessError> {
        ping(&self.url(), timeout).await
    }

    /// Like [`ping`](Self::ping), but straight to the server, bypassing the proxy.
    ///
    /// # Errors
    ///
    /// As for [`ping`](Self::ping).
    pub async fn ping_direct(&self, timeout: Duration) -> Result<Duration, HarnessError> {
        ping(&self.direct_url(), timeout).await
    }

    async fn wait_healthy(&self, deadline: Instant, timeout: Duration) -> Result<(), HarnessError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(HarnessError::Timeout {
                    what: format!("node {} becoming healthy", self.index),
                    timeout,
                });
            }
            if self.ping(left.min(HEALTH_ATTEMPT_TIMEOUT)).await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(HEALTH_RETRY.min(left)).await;
        }
    }
}

async fn ping(url: &str, timeout: Duration) -> Result<Duration, HarnessError> {
    let what = || format!("PING {url}");
    let attempt = async {
        let client = redis::Client::open(url).map_err(|source| HarnessError::Redis {
            what: what(),
            source,
        })?;
        let cfg = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let mut con = client
            .get_multiplexed_async_connection_with_config(&cfg)
            .await
            .map_err(|source| HarnessError::Redis {
                what: what(),
                source,
            })?;
        let start = Instant::now();
        let _: String = redis::cmd("PING")
            .query_async(&mut con)
            .await
            .map_err(|source| HarnessError::Redis {
                what: what(),
                source,
            })?;
        Ok(start.elapsed())
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(HarnessError::Timeout {
                what: what(),
                timeout,
            })
        })
}
