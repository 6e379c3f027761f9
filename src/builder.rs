//! [`RedlockBuilder`]: every setting, its default and its validation.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::diagnose::CheckMode;
use crate::error::Error;
use crate::node::Node;
use crate::redlock::Redlock;
#[cfg(feature = "tls")]
use crate::tls::TlsSettings;

mod checks;

/// Default attempts after the first one (node-redlock's default too).
pub(crate) const DEFAULT_RETRY_COUNT: u32 = 10;
/// Default pause between attempts: long enough for a holder's short critical section
/// to finish, short enough that a waiter is not left idle for long.
pub(crate) const DEFAULT_RETRY_DELAY: Duration = Duration::from_millis(200);
/// Default random extra pause, so that contenders that failed together do not retry
/// in lock step.
pub(crate) const DEFAULT_RETRY_JITTER: Duration = Duration::from_millis(200);
/// Default clock drift factor (the Redlock paper's and node-redlock's 1 %).
pub(crate) const DEFAULT_DRIFT_FACTOR: f64 = 0.01;
/// Default bound on one request to one node. A healthy node on a LAN answers in well
/// under a millisecond and an `appendfsync always` write in a few; 50 ms leaves room for
/// a slow disk or a busy server while costing a lock on a sick node at most 50 ms, a
/// small part of any sensible TTL.
pub(crate) const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_millis(50);
/// Default bound on making a connection. Connecting runs in the background, so this does
/// not slow any request beyond `node_timeout`; it only bounds how long a hanging connect
/// keeps the node from trying again.
pub(crate) const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default least validity a grant must leave to count as won: enough that a caller can
/// at least look at the guard before it runs out, far below any sensible ttl. Larger
/// values belong to callers who know how long their critical section takes.
pub(crate) const DEFAULT_MIN_VALIDITY: Duration = Duration::from_millis(1);
/// Default suffix of the fencing counter key beside each lock key.
pub(crate) const DEFAULT_FENCE_SUFFIX: &str = ":fence";

/// The validated settings shared by every clone of a [`Redlock`].
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) retry_count: u32,
    pub(crate) retry_delay: Duration,
    pub(crate) retry_jitter: Duration,
    pub(crate) drift_factor: f64,
    pub(crate) node_timeout: Duration,
    pub(crate) key_prefix: String,
    pub(crate) fencing: bool,
    pub(crate) fence_suffix: String,
    pub(crate) wake_on_release: bool,
    pub(crate) check_on_connect: CheckMode,
    pub(crate) min_validity: Duration,
    /// Where validity is measured (suspend-aware; a manual one in tests).
    pub(crate) clock: Clock,
}

/// Builds a [`Redlock`]. Get one with [`Redlock::builder`].
///
/// Every setting has a default; only the nodes must be given. `build()` checks the
/// whole configuration and returns [`Error::Config`] naming the setting that is wrong.
///
/// # Example
/// ```
/// use std::time::Duration;
/// use tokio_redlock::Redlock;
///
/// let redlock = Redlock::builder()
///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
///     .retry_count(5)
///     .node_timeout(Duration::from_millis(30))
///     .build()?;
/// assert_eq!(redlock.quorum(), 2);
/// # Ok::<(), tokio_redlock::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct RedlockBuilder {
    nodes: Vec<String>,
    retry_count: u32,
    retry_delay: Duration,
    retry_jitter: Duration,
    drift_factor: f64,
    node_timeout: Duration,
    connect_timeout: Duration,
    key_prefix: String,
    fencing: bool,
    fence_suffix: String,
    wake_on_release: bool,
    restart_quarantine: Option<Duration>,
    check_on_connect: CheckMode,
    min_validity: Duration,
    clock: Clock,
    #[cfg(feature = "tls")]
    tls: TlsSettings,
}

impl fmt::Debug for RedlockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            nodes,
            retry_count,
            retry_delay,
            retry_jitter,
            drift_factor,
            node_timeout,
            connect_timeout,
            key_prefix,
            fencing,
            fence_suffix,
            wake_on_release,
            restart_quarantine,
            check_on_connect,
            min_validity,
            clock,
            #[cfg(feature = "tls")]
            tls,
        } = self;
        let nodes: Vec<String> = nodes.iter().map(|u| redact_url(u)).collect();
        let mut f = f.debug_struct("RedlockBuilder");
        f.field("nodes", &nodes)
            .field("retry_count", retry_count)
            .field("retry_delay", retry_delay)
            .field("retry_jitter", retry_jitter)
            .field("drift_factor", drift_factor)
            .field("node_timeout", node_timeout)
            .field("connect_timeout", connect_timeout)
            .field("key_prefix", key_prefix)
            .field("fencing", fencing)
            .field("fence_suffix", fence_suffix)
            .field("wake_on_release", wake_on_release)
            .field("restart_quarantine", restart_quarantine)
            .field("check_on_connect", check_on_connect)
            .field("min_validity", min_validity)
            .field("clock", clock);
        #[cfg(feature = "tls")]
        {
            let set = |o: bool| if o { "set" } else { "unset" };
            f.field("tls_root_ca", &set(tls.root_ca.is_some()))
                .field("tls_client_cert", &set(tls.client.is_some()));
        }
        f.finish()
    }
}

impl Default for RedlockBuilder {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            retry_count: DEFAULT_RETRY_COUNT,
            retry_delay: DEFAULT_RETRY_DELAY,
            retry_jitter: DEFAULT_RETRY_JITTER,
            drift_factor: DEFAULT_DRIFT_FACTOR,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            key_prefix: String::new(),
            fencing: false,
            fence_suffix: DEFAULT_FENCE_SUFFIX.to_owned(),
            wake_on_release: true,
            restart_quarantine: None,
            check_on_connect: CheckMode::Off,
            min_validity: DEFAULT_MIN_VALIDITY,
            clock: Clock::system(),
            #[cfg(feature = "tls")]
            tls: TlsSettings::default(),
        }
    }
}

impl RedlockBuilder {
    /// Adds the node URLs: `redis://[user:password@]host:port[/db]`, or `rediss://`
    /// with the `tls` feature. Each must be an independent master. Defaults to none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.nodes
            .extend(urls.into_iter().map(|u| u.as_ref().to_owned()));
        self
    }

    /// Adds one node URL (see [`nodes`](Self::nodes)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://10.0.0.1:6379")
    ///     .node("redis://app:secret@10.0.0.2:6379/1")
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn node(mut self, url: impl AsRef<str>) -> Self {
        self.nodes.push(url.as_ref().to_owned());
        self
    }

    /// Attempts after the first one, for [`Redlock::acquire`], each after `retry_delay`
    /// plus jitter (or sooner, when woken by the release; see
    /// [`wake_on_release`](Self::wake_on_release)). A promise: at most `count + 1`
    /// attempts are made, the immediate one that joins the wait queue included, and
    /// the error reports how many were. A fencing round that only taught the client a
    /// newer counter (no node set anything) is not an attempt. Defaults to 10.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").retry_count(3).build()?;
    /// # drop(redlock);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn retry_count(mut self, count: u32) -> Self {
        self.retry_count = count;
        self
    }

    /// Pause between attempts. Defaults to 200 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .retry_delay(Duration::from_millis(50))
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Upper bound of a uniform random pause added to each `retry_delay`. Defaults to 200 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .retry_jitter(Duration::from_millis(50))
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.retry_jitter = jitter;
        self
    }

    /// Clock drift allowed, as a fraction of the TTL: validity is
    /// `ttl − elapsed − (ttl × factor + 2 ms)`. Must be in `[0, 1)`. Defaults to 0.01.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").drift_factor(0.02).build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// Bound on each request to one node, connecting included. A node that does not
    /// answer within it counts as failed for that request. Defaults to 50 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .node_timeout(Duration::from_millis(20))
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Bound on making a connection to one node. Connections are made in the background
    /// and requests never wait longer than `node_timeout` for one. Defaults to 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .connect_timeout(Duration::from_millis(300))
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A prefix put before every resource name to make its key. Defaults to none: the
    /// key is the resource name, as node-redlock and redsync use it, so locks taken by
    /// those clients and by this crate exclude each other.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").key_prefix("locks:").build()?;
    /// assert_eq!(redlock.key_of("payment:42"), "locks:payment:42");
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Hand out fencing tokens with every acquisition (see
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token) and `docs/safety.md`).
    /// Defaults to off.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").fencing(true).build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn fencing(mut self, enabled: bool) -> Self {
        self.fencing = enabled;
        self
    }

    /// The suffix of the fencing counter key kept beside each lock key
    /// (`<key><suffix>`). Defaults to `":fence"`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .fencing(true)
    ///     .fence_suffix(":token")
    ///     .build()?;
    /// assert_eq!(redlock.fence_key_of("job"), "job:token");
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn fence_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.fence_suffix = suffix.into();
        self
    }

    /// Wake waiting acquisitions when a lock is released, oldest waiter first. A manager
    /// that found the lock held joins a wait queue on each node (`<key>:waiters`, a
    /// sorted set) and listens on its own channel (`tokio-redlock:wake:<id>`); a release
    /// pops the oldest live waiter and publishes to it, and that waiter retries at once
    /// instead of sleeping out `retry_delay`. Correctness never depends on it: a woken
    /// waiter still needs a quorum, and a missed message only means the retry delay
    /// applies. Defaults to on.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").wake_on_release(false).build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn wake_on_release(mut self, enabled: bool) -> Self {
        self.wake_on_release = enabled;
        self
    }

    /// The least validity a grant must leave to count as won: an attempt that reaches a
    /// quorum with less left (a slow round, a long pause) is undone and retried like a
    /// failed one, and an extension that leaves less fails with
    /// [`Error::Expired`](crate::Error::Expired). Set it to how long your critical
    /// section needs at the least; per call with
    /// [`LockRequest::min_validity`](crate::LockRequest::min_validity). A request whose
    /// ttl can never leave this much is refused with [`Error::Config`]. Defaults to 1 ms.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .min_validity(Duration::from_millis(200))
    ///     .build()?;
    /// # drop(redlock);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn min_validity(mut self, least: Duration) -> Self {
        self.min_validity = least;
        self
    }

    /// Measures validity on `clock` instead of the system's (tests only).
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keep a node that restarted recently out of every quorum until `period` has passed
    /// since it started, unless it proves its data survives restarts (AOF with
    /// `appendfsync always`). Set `period` to at least the longest TTL you lock with.
    ///
    /// A node that restarts without its data forgets the locks it held, and a second
    /// owner can then win a quorum with it: the most common way Redlock loses safety in
    /// practice (Debian's packaged service restarts at once, without AOF). The Redlock
    /// remedy is a delayed restart; this lets the client enforce it. Each new connection
    /// reads the node's uptime and persistence (`INFO`, `CONFIG GET appendfsync`; what
    /// cannot be read counts as unproven).
    ///
    /// Defaults to off, so that a fresh set of nodes without persistence (a first run,
    /// a test) can be locked on at once; turn it on in production unless every node
    /// runs `appendfsync always`. A quarantined node's vote is a failure whose cause is
    /// [`NodeErrorKind::Quarantined`](crate::NodeErrorKind::Quarantined).
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .restart_quarantine(Some(Duration::from_secs(60)))
    ///     .build()?;
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn restart_quarantine(mut self, period: Option<Duration>) -> Self {
        self.restart_quarantine = period;
        self
    }

    /// Runs [`Redlock::diagnose`] when locking starts: [`CheckMode::Warn`] logs what it
    /// finds, [`CheckMode::Strict`] refuses to lock with
    /// [`Error::Unhealthy`] while a configuration error is found (checked again at most
    /// every 5 s). Defaults to [`CheckMode::Off`], which costs nothing.
    ///
    /// ```
    /// use tokio_redlock::{CheckMode, Redlock};
    /// let redlock = Redlock::builder()
    ///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
    ///     .check_on_connect(CheckMode::Strict)
    ///     .build()?;
    /// # let _ = redlock;
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn check_on_connect(mut self, mode: CheckMode) -> Self {
        self.check_on_connect = mode;
        self
    }

    /// Trusts only these CA certificates (PEM, one or more) for `rediss://` nodes,
    /// instead of the system's roots: for a private CA. Defaults to the system's roots.
    ///
    /// ```no_run
    /// let ca = std::fs::read("/etc/redis/tls/ca.crt")?;
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .nodes(["rediss://redis-a:6380", "rediss://redis-b:6380", "rediss://redis-c:6380"])
    ///     .tls_root_ca(ca)
    ///     .build()?;
    /// # let _ = redlock;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_root_ca(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls.root_ca = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and private key (PEM) to `rediss://`
    /// nodes, for servers that require client certificates (`tls-auth-clients yes`,
    /// Redis's default). Defaults to none.
    ///
    /// ```no_run
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .nodes(["rediss://redis-a:6380", "rediss://redis-b:6380", "rediss://redis-c:6380"])
    ///     .tls_root_ca(std::fs::read("ca.crt")?)
    ///     .tls_client_cert(std::fs::read("client.crt")?, std::fs::read("client.key")?)
    ///     .build()?;
    /// # let _ = redlock;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls_client_cert(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls.client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Checks the configuration and makes the manager. No connection is made here:
    /// each node connects on first use, and again after a failure, so a node that is
    /// down now is not an error.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty node list, a URL without a scheme (`host:port`
    /// instead of `redis://host:port`) or that does not parse (or needs a feature that
    /// is off), the same node listed twice, a drift factor outside `[0, 1)`, a zero
    /// `node_timeout` or `connect_timeout`, or a fence suffix that ends like the wait
    /// queue's; with the `tls` feature, for a `rediss://` node when the application has
    /// installed no rustls crypto provider (the crate installs none; see the crate docs'
    /// features).
    ///
    /// A node list that works but weakens the quorum is logged once, as a `tracing`
    /// warning: 2 nodes or another even count, and one server written two ways
    /// (`127.0.0.1:7001` and `localhost:7001`, or two databases of one server).
    /// [`Redlock::diagnose`] checks these and more against the servers themselves.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").build()?;
    /// assert!(Redlock::builder().build().is_err());
    /// # let _ = (redlock, Duration::ZERO);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn build(self) -> Result<Redlock, Error> {
        if self.nodes.is_empty() {
            return Err(Error::Config(
                "no nodes: add the lock nodes' URLs with nodes() or node()".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.drift_factor) {
            return Err(Error::Config(format!(
                "drift_factor {} is outside [0, 1): use a small fraction such as 0.01",
                self.drift_factor
            )));
        }
        if self.node_timeout.is_zero() {
            return Err(Error::Config(
                "node_timeout is zero: every request would time out; use a few tens of ms".into(),
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::Config(
                "connect_timeout is zero: no connection could ever be made".into(),
            ));
        }
        if self.fence_suffix.is_empty() {
            return Err(Error::Config(
                "fence_suffix is empty: the counter key would be the lock key itself".into(),
            ));
        }
        let queue = crate::wake::QUEUE_SUFFIX;
        if queue.ends_with(&self.fence_suffix) || self.fence_suffix.ends_with(queue) {
            return Err(Error::Config(format!(
                "fence_suffix `{}` and the wait-queue suffix `{queue}` end alike, so a counter \
                 key could be a queue key; choose another suffix such as `:fence`",
                self.fence_suffix
            )));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (index, url) in self.nodes.iter().enumerate() {
            if let Some(problem) = checks::missing_scheme(url) {
                return Err(Error::Config(format!("node {index}: {problem}")));
            }
            let client = self.client(url).map_err(|e| {
                Error::Config(format!(
                    "node {index}: cannot use `{}`: {e}; expected redis://[user:password@]host:port[/db]{}",
                    redact_url(url),
                    if url.starts_with("rediss://") && !cfg!(feature = "tls") {
                        " (rediss:// needs the `tls` feature)"
                    } else {
                        ""
                    }
                ))
            })?;
            #[cfg(feature = "tls")]
            crate::tls::require_crypto_provider(index, &client)?;
            let node = Node::new(
                index,
                client,
                self.node_timeout,
                self.connect_timeout,
                self.restart_quarantine,
            );
            if let Some(first) = nodes
                .iter()
                .position(|n: &Node| n.endpoint == node.endpoint)
            {
                return Err(Error::Config(format!(
                    "node {index} ({}) is node {first} again: each node must be listed once, \
                     or the quorum would count it twice",
                    node.endpoint
                )));
            }
            nodes.push(node);
        }
        // Once per manager: a mistake in the node list, not in any one lock.
        for warning in checks::layout_warnings(nodes.iter().map(|n| &*n.endpoint)) {
            tracing::warn!("{warning}");
        }
        let config = Config {
            retry_count: self.retry_count,
            retry_delay: self.retry_delay,
            retry_jitter: self.retry_jitter,
            drift_factor: self.drift_factor,
            node_timeout: self.node_timeout,
            key_prefix: self.key_prefix,
            fencing: self.fencing,
            fence_suffix: self.fence_suffix,
            wake_on_release: self.wake_on_release,
            check_on_connect: self.check_on_connect,
            min_validity: self.min_validity,
            clock: self.clock,
        };
        Ok(Redlock::from_parts(Arc::from(nodes), config))
    }
}

impl RedlockBuilder {
    #[cfg(not(feature = "tls"))]
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        redis::Client::open(url)
    }

    #[cfg(feature = "tls")]
    fn client(&self, url: &str) -> redis::RedisResult<redis::Client> {
        self.tls.client(url)
    }
}

/// `scheme://user:secret@host` → `scheme://user:***@host`; anything else unchanged.
pub(crate) fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_owned();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split(':').next().unwrap_or("");
    let hidden = if userinfo.contains(':') {
        format!("{user}:***")
    } else {
        "***".to_owned()
    };
    format!("{}{hidden}{}", &url[..scheme_end + 3], &rest[at..])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn config_err(b: RedlockBuilder) -> String {
        match b.build() {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn rejects_impossible_settings_naming_them() {
        assert!(config_err(Redlock::builder()).contains("no nodes"));
        let one = || Redlock::builder().node("redis://127.0.0.1:1");
        assert!(config_err(one().drift_factor(1.0)).contains("drift_factor"));
        assert!(config_err(one().drift_factor(-0.1)).contains("drift_factor"));
        assert!(config_err(one().drift_factor(f64::NAN)).contains("drift_factor"));
        assert!(config_err(one().node_timeout(Duration::ZERO)).contains("node_timeout"));
        assert!(config_err(one().connect_timeout(Duration::ZERO)).contains("connect_timeout"));
        assert!(config_err(one().fencing(true).fence_suffix("")).contains("fence_suffix"));
        assert!(config_err(one().fence_suffix("ers")).contains("fence_suffix"));
        assert!(config_err(one().fence_suffix(":q:waiters")).contains("fence_suffix"));
        assert!(config_err(Redlock::builder().node("http://x")).contains("node 0"));
        let dup = config_err(one().node("redis://127.0.0.1:1/"));
        assert!(dup.contains("node 1") && dup.contains("twice"), "{dup}");
    }

    /// Durations at the edges of what `Duration` and Redis can take, and random ones.
    pub(crate) fn extreme(rng: &mut impl rand::Rng) -> Duration {
        const EDGES: [Duration; 12] = [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(999),
            Duration::from_millis(1),
            Duration::from_millis(2),
            Duration::from_millis(3),
            Duration::from_secs(1),
            Duration::from_secs(86_400 * 365 * 300),
            Duration::from_millis(i64::MAX as u64),
            Duration::from_millis(u64::MAX),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ];
        match rng.random_range(0..4) {
            0 => Duration::from_nanos(rng.random()),
            1 => Duration::new(rng.random(), rng.random_range(0..1_000_000_000)),
            _ => EDGES[rng.random_range(0..EDGES.len())],
        }
    }

    /// Issue 11, item 3: every public duration is refused with `Error::Config` or
    /// saturates; nothing derived from it panics (checked requests, backoff, deadlines).
    #[test]
    fn every_duration_setting_is_refused_or_saturates() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for _ in 0..3_000 {
            let quarantine = rng.random_bool(0.5).then(|| extreme(&mut rng));
            let b = Redlock::builder()
                .node("redis://127.0.0.1:1")
                .retry_delay(extreme(&mut rng))
                .retry_jitter(extreme(&mut rng))
                .node_timeout(extreme(&mut rng))
                .connect_timeout(extreme(&mut rng))
                .restart_quarantine(quarantine)
                .min_validity(extreme(&mut rng));
            let settings = format!("{b:?}");
            let redlock = match b.build() {
                Ok(r) => r,
                Err(Error::Config(_)) => continue,
                Err(e) => panic!("{settings}: not a config error: {e}"),
            };
            let config = &redlock.inner.config;
            let want = crate::redlock::Want {
                ttl: extreme(&mut rng),
                retries: rng.random(),
                wait: rng.random_bool(0.5).then(|| extreme(&mut rng)),
                min_validity: config.min_validity,
            };
            match redlock.check_request(&["r"], &want) {
                Ok(ms) => assert!(ms > 2 && ms <= i64::MAX as u64, "{settings}: {ms}"),
                Err(Error::Config(_)) => {}
                Err(e) => panic!("{settings}: {e}"),
            }
            let pause = crate::quorum::backoff(config.retry_delay, config.retry_jitter, &mut rng);
            assert!(pause >= config.retry_delay);
            let _ = crate::clock::instant_after(pause);
            let d = config
                .clock
                .stamp()
                .after(want.ttl)
                .before(extreme(&mut rng));
            let _ = (config.clock.left(d), config.clock.instant(d));
            let _ = want.wait.map(crate::clock::instant_after);
        }
    }

    #[test]
    fn defaults_are_documented_values() {
        let b = RedlockBuilder::default();
        assert_eq!(b.retry_count, 10);
        assert_eq!(b.retry_delay, Duration::from_millis(200));
        assert_eq!(b.retry_jitter, Duration::from_millis(200));
        assert_eq!(b.drift_factor, 0.01);
        assert_eq!(b.node_timeout, Duration::from_millis(50));
    }

    #[test]
    fn secrets_never_show() {
        assert_eq!(
            redact_url("redis://app:s3cret@h:6379/2"),
            "redis://app:***@h:6379/2"
        );
        assert_eq!(redact_url("redis://:s3cret@h:6379"), "redis://:***@h:6379");
        assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
        let b = Redlock::builder().node("redis://app:s3cret@127.0.0.1:1");
        assert!(!format!("{b:?}").contains("s3cret"));
        let bad = config_err(Redlock::builder().node("redis://app:s3cret@[bad"));
        assert!(!bad.contains("s3cret"), "{bad}");
        let r = Redlock::builder()
            .node("redis://app:s3cret@127.0.0.1:1")
            .build()
            .unwrap();
        assert!(!format!("{r:?}").contains("s3cret"));
    }
}
