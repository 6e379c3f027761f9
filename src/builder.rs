//! [`RedlockBuilder`]: every setting, its default and its validation.

use std::time::Duration;

use crate::clock::Clock;
use crate::diagnose::CheckMode;
use crate::error::Error;
use crate::node::Node;
use crate::redlock::Redlock;
#[cfg(feature = "tls")]
use crate::tls::TlsSettings;

mod build;
mod checks;
#[cfg(feature = "cluster")]
mod cluster;
mod debug;
mod into_node;
mod owner_label;

pub(crate) use build::redact_url;
pub(crate) use owner_label::label_of;

pub use into_node::IntoNode;
use into_node::NodeSpec;

use crate::config::*;

impl Redlock {
    /// Starts a builder; see [`RedlockBuilder`] for every setting and its default.
    ///
    /// ```
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .build()?;
    /// assert_eq!(redlock.node_count(), 1);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn builder() -> RedlockBuilder {
        RedlockBuilder::default()
    }
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
///     .node_timeout(Duration::from_millis(30))
///     .retry_count(5)
///     .retry_delay(Duration::from_millis(100))
///     .fencing(true)
///     .restart_quarantine(Some(Duration::from_secs(60)))
///     .build()?;
/// assert_eq!(redlock.quorum(), 2);
/// # Ok::<(), tokio_redlock::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct RedlockBuilder {
    nodes: Vec<NodeSpec>,
    retry_count: u32,
    retry_delay: Duration,
    retry_jitter: Duration,
    drift_factor: f64,
    node_timeout: Duration,
    connect_timeout: Duration,
    key_prefix: String,
    fencing: bool,
    fence_suffix: String,
    shared_counters: Vec<(String, String)>,
    wake_on_release: bool,
    heal_on_extend: bool,
    metrics_class: crate::metrics::ClassOf,
    restart_quarantine: Option<Duration>,
    health_check: CheckMode,
    min_validity: Duration,
    owner_label: Option<String>,
    local_handover: bool,
    clock: Clock,
    #[cfg(feature = "tls")]
    tls: TlsSettings,
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
            shared_counters: Vec::new(),
            wake_on_release: true,
            heal_on_extend: true,
            metrics_class: crate::metrics::ClassOf::default(),
            restart_quarantine: None,
            health_check: CheckMode::Off,
            min_validity: DEFAULT_MIN_VALIDITY,
            owner_label: None,
            local_handover: true,
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
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
    ///     .build()?;
    /// assert_eq!(redlock.node_count(), 3);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn nodes<I, S>(mut self, urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.nodes.extend(
            urls.into_iter()
                .map(|u| NodeSpec::Url(u.as_ref().to_owned())),
        );
        self
    }

    /// Adds one node: a URL (see [`nodes`](Self::nodes)), a [`redis::ConnectionInfo`], a
    /// `(host, port)` pair or a [`redis::Client`] the application already has (see
    /// [`IntoNode`]). A client is used for its connection info (address, credentials,
    /// database, TLS parameters); the crate makes its own connections from it.
    /// A password in a URL, connection info or client is used to log in and never
    /// shown: logs, errors and `Debug` name the node by `host:port[/db]`.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://10.0.0.1:6379")
    ///     .node("redis://app:secret@10.0.0.2:6379/1")
    ///     .node(redis::Client::open("redis://10.0.0.3:6379")?)
    ///     .build()?;
    /// assert!(!format!("{redlock:?}").contains("secret"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn node(mut self, node: impl IntoNode) -> Self {
        self.nodes.push(node.into_spec());
        self
    }

    /// Attempts after the first one, for [`Redlock::acquire`], each after `retry_delay`
    /// plus jitter (or sooner, when woken by the release; see
    /// [`wake_on_release`](Self::wake_on_release)). A promise: at most `count + 1`
    /// attempts are made, and the error reports how many were; unless a release wakes
    /// the waiter, consecutive attempts start at least `retry_delay` apart, so a busy
    /// lock is waited for about `count × retry_delay` (10 × 200 ms: ~2 s, plus jitter).
    /// Joining the wait queue never takes an attempt of its own. A fencing round that
    /// only taught the client a newer counter (no node set anything) is not an attempt.
    /// Defaults to 10.
    pub fn retry_count(mut self, count: u32) -> Self {
        self.retry_count = count;
        self
    }

    /// Pause between attempts: unless a release wakes the waiter, an attempt starts at
    /// least this long (plus jitter) after the one before, for every kind of lock.
    /// Defaults to 200 ms.
    pub fn retry_delay(mut self, delay: Duration) -> Self {
        self.retry_delay = delay;
        self
    }

    /// Upper bound of a uniform random pause added to each `retry_delay`. Defaults to 200 ms.
    pub fn retry_jitter(mut self, jitter: Duration) -> Self {
        self.retry_jitter = jitter;
        self
    }

    /// Clock drift allowed, as a fraction of the TTL: validity is
    /// `ttl − elapsed − (ttl × factor + 2 ms)`. Must be in `[0, 1)`. Defaults to 0.01.
    pub fn drift_factor(mut self, factor: f64) -> Self {
        self.drift_factor = factor;
        self
    }

    /// Bound on each request to one node, connecting included. A node that does not
    /// answer within it counts as failed for that request. Defaults to 50 ms.
    pub fn node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// Bound on making a connection to one node. Connections are made in the background
    /// and requests never wait longer than `node_timeout` for one. Defaults to 1 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// A prefix put before every resource name to make its key. Defaults to none: the
    /// key is the resource name, as node-redlock and redsync use it, so locks taken by
    /// those clients and by this crate exclude each other.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").key_prefix("locks:").build()?;
    /// assert_eq!(redlock.key_of("payment:42"), "locks:payment:42");
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Hand out fencing tokens with every acquisition (see
    /// [`LockGuard::fencing_token`](crate::LockGuard::fencing_token) and `docs/safety.md`).
    /// Defaults to off.
    pub fn fencing(mut self, enabled: bool) -> Self {
        self.fencing = enabled;
        self
    }

    /// The suffix of the fencing counter key kept beside each lock key
    /// (`<key><suffix>`). Defaults to `":fence"`.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://127.0.0.1:7001")
    ///     .fencing(true)
    ///     .fence_suffix(":token")
    ///     .build()?;
    /// assert_eq!(redlock.fence_key_of("job"), "job:token");
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn fence_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.fence_suffix = suffix.into();
        self
    }

    /// Every resource whose name starts with `resource_prefix` draws its fencing tokens
    /// from one counter, `counter`, kept on each node under `<key prefix><counter><fence
    /// suffix>`, instead of a counter key of its own. Defaults to none: one counter key
    /// per resource, kept forever.
    ///
    /// Counter keys have no ttl (a counter that expired could hand out a smaller token),
    /// so a lock per payment id leaves one key per payment on every node; a shared
    /// counter bounds that to one key per namespace. Tokens still strictly increase per
    /// resource: they strictly increase across all the namespace's acquisitions (see
    /// `docs/safety.md` §4). They grow faster, which storage does not mind.
    ///
    /// The longest matching prefix wins; an empty prefix covers every resource. Every
    /// client that locks these resources with fencing must use the same rules, or they
    /// draw from different counters. Not available with a Redis Cluster vote
    /// (`cluster_node`, feature `cluster`): one counter key lives in one slot, the
    /// resources in many, and a script's keys must share one; `build()` refuses it.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), tokio_redlock::Error> {
    /// use std::time::Duration;
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .nodes(["redis://10.0.0.1", "redis://10.0.0.2", "redis://10.0.0.3"])
    ///     .fencing(true)
    ///     .shared_fencing_counter("payment:", "payments")
    ///     .build()?;
    /// assert_eq!(redlock.fence_key_of("payment:42"), "payments:fence");
    /// let guard = redlock.acquire("payment:42", Duration::from_secs(5)).await?;
    /// let token = guard.fencing_token(); // above every earlier token of any payment
    /// # Ok(())
    /// # }
    /// ```
    pub fn shared_fencing_counter(
        mut self,
        resource_prefix: impl Into<String>,
        counter: impl Into<String>,
    ) -> Self {
        self.shared_counters
            .push((resource_prefix.into(), counter.into()));
        self
    }

    /// Wake waiting acquisitions when a lock is released, oldest waiter first. A manager
    /// that found the lock held joins a wait queue on each node (`<key>:waiters`, a
    /// sorted set) and listens on its own channel (`tokio-redlock:wake:<id>`); a release
    /// pops the oldest live waiter and publishes to it, and that waiter retries at once
    /// instead of sleeping out `retry_delay`. Correctness never depends on it: a woken
    /// waiter still needs a quorum, and a missed message only means the retry delay
    /// applies. Defaults to on.
    pub fn wake_on_release(mut self, enabled: bool) -> Self {
        self.wake_on_release = enabled;
        self
    }

    /// Let an extension also re-set the value where the key is missing (`SET NX` with the
    /// extension's ttl, in the same script), and count such a node as a yes. A lock kept
    /// alive for longer than its nodes stay up then does not fade as nodes restart
    /// without their data one after another. Never over another owner's value (`NX`; a
    /// node holding one is a "no") and never on a node in restart quarantine (see
    /// [`restart_quarantine`](Self::restart_quarantine)): there a missing key may be a
    /// lost one of someone else's, so the plain extension is sent. As safe as a fresh
    /// vote on that node (docs/safety.md, "Extensions that heal"). Defaults to on.
    ///
    /// ```
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
    ///     .heal_on_extend(false) // an extension only refreshes nodes that still hold it
    ///     .build()?;
    /// # drop(redlock);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn heal_on_extend(mut self, enabled: bool) -> Self {
        self.heal_on_extend = enabled;
        self
    }

    /// The `class` label of the per-resource metrics (`redlock_held_seconds`,
    /// `redlock_guards_held`, `redlock_waiting_tasks`; feature `metrics`): a function of
    /// the resource name returning one of a few fixed strings, so the label's values stay
    /// bounded however many resources there are (a lock per payment id must not make a
    /// series per payment). Defaults to `"all"` for every resource.
    ///
    /// ```
    /// let redlock = tokio_redlock::Redlock::builder()
    ///     .nodes(["redis://127.0.0.1:7001", "redis://127.0.0.1:7002", "redis://127.0.0.1:7003"])
    ///     .metrics_class(|resource| match resource.split(':').next() {
    ///         Some("payment") => "payment",
    ///         Some("report") => "report",
    ///         _ => "other",
    ///     })
    ///     .build()?;
    /// # drop(redlock);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn metrics_class(
        mut self,
        class: impl Fn(&str) -> &'static str + Send + Sync + 'static,
    ) -> Self {
        self.metrics_class = crate::metrics::ClassOf::new(class);
        self
    }

    /// The least validity a grant must leave to count as won: an attempt that reaches a
    /// quorum with less left (a slow round, a long pause) is undone and retried like a
    /// failed one, and an extension that leaves less fails with
    /// [`Error::Expired`](crate::Error::Expired). Set it to how long your critical
    /// section needs at the least; per call with
    /// [`LockRequest::min_validity`](crate::LockRequest::min_validity). A request whose
    /// ttl can never leave this much is refused with [`Error::Config`]. Defaults to 1 ms.
    pub fn min_validity(mut self, least: Duration) -> Self {
        self.min_validity = least;
        self
    }

    /// Let tasks of this manager that wait for the same key queue here, first come
    /// first served, with at most one of them competing on the nodes; a task that
    /// releases hands the lock straight to the next one, with the same owner value and
    /// the validity counted from the original grant (the receiver extends it first when
    /// less than half of its own ttl is left). After a few hand-overs in a row the lock
    /// goes back to the nodes, so that other processes waiting there get their turn.
    /// Applies to single-key acquisitions with retries, without fencing (a fenced
    /// holder needs a fresh token from the nodes). Defaults to on.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// // Every task competes on the nodes by itself, as separate processes would.
    /// let redlock = Redlock::builder().node("redis://127.0.0.1:7001").local_handover(false).build()?;
    /// # drop(redlock);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    pub fn local_handover(mut self, enabled: bool) -> Self {
        self.local_handover = enabled;
        self
    }

    /// Measures validity on `clock` instead of the system's (tests only).
    #[cfg(test)]
    pub(crate) fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Keep a node that restarted recently out of every quorum until `period` has passed
    /// since it started, unless it proves its data survived: AOF with `appendfsync
    /// always` *and* the restart marker still there. Set `period` to at least the longest
    /// TTL you lock with.
    ///
    /// A node that restarts without its data forgets the locks it held, and a second
    /// owner can then win a quorum with it: the most common way Redlock loses safety in
    /// practice (Debian's packaged service restarts at once, without AOF). The Redlock
    /// remedy is a delayed restart; this lets the client enforce it. Each new connection
    /// reads the node's `run_id`, uptime and persistence (`INFO`, `CONFIG GET
    /// appendfsync`; what cannot be read counts as unproven) and whether the restart
    /// marker exists (one `EXISTS`; nothing is added per acquisition).
    ///
    /// The restart marker is the key `<key prefix>tokio-redlock:restart-marker`, without
    /// ttl, written once per node (`SET NX`) when the node has been up for `period` and
    /// is out of quarantine. Configuration cannot tell a replaced disk from a kept one;
    /// the marker can: a node that comes back with a new `run_id` and no marker lost its
    /// data (an empty volume), whatever its settings, and sits out the rest of `period`
    /// since its start; a marker gone within one run (`FLUSHALL`) costs a whole `period`
    /// from the connection that notices. A manager that meets a node for the first time
    /// cannot compare, and trusts `appendfsync always` as before. Where the marker cannot
    /// be read or written (an ACL, a read-only user, a full node under `noeviction`), a
    /// warning is logged and the node is judged by its settings alone. See
    /// `docs/operations.md`, "Restart quarantine".
    ///
    /// Defaults to off, so that a fresh set of nodes without persistence (a first run,
    /// a test) can be locked on at once; turn it on in production unless every node
    /// runs `appendfsync always`. A quarantined node's vote is a failure whose cause is
    /// [`NodeErrorKind::Quarantined`](crate::NodeErrorKind::Quarantined).
    pub fn restart_quarantine(mut self, period: Option<Duration>) -> Self {
        self.restart_quarantine = period;
        self
    }

    /// Runs [`Redlock::diagnose`] before locking: [`CheckMode::Warn`] logs what it finds,
    /// [`CheckMode::Strict`] refuses to lock with [`Error::Unhealthy`] while a
    /// configuration error is found (checked again at most every 5 s). Defaults to
    /// [`CheckMode::Off`], which costs nothing.
    ///
    /// Nothing is checked at `build()` or when a node connects: the check runs at the start of an acquisition (`acquire`, `try_acquire`,
    /// `acquire_many`, `lock(…)`, `with_lock`), after the request's own checks and before
    /// its first attempt, so the first acquisition in strict mode waits for it. Extending
    /// or releasing a held lock never runs it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use tokio_redlock::{CheckMode, Error, Redlock};
    ///
    /// # async fn run() -> Result<(), Error> {
    /// let redlock = Redlock::builder()
    ///     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
    ///     .health_check(CheckMode::Strict)
    ///     .build()?; // nothing checked yet
    /// match redlock.acquire("job", Duration::from_secs(5)).await {
    ///     Ok(guard) => guard.release().await?,
    ///     Err(Error::Unhealthy { findings, .. }) => {
    ///         for finding in findings {
    ///             eprintln!("fix this first: {finding}");
    ///         }
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub fn health_check(mut self, mode: CheckMode) -> Self {
        self.health_check = mode;
        self
    }

    /// The former name of [`health_check`](Self::health_check) (nothing is checked on
    /// connect), kept so that code written against it compiles.
    #[doc(hidden)]
    #[deprecated(
        note = "renamed to `health_check`: the check runs before acquisitions, not on connect"
    )]
    pub fn check_on_connect(self, mode: CheckMode) -> Self {
        self.health_check(mode)
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
}

#[cfg(test)]
pub(crate) mod tests;
