//! A multi-node test harness for Redlock (and anything else that talks to several
//! independent Redis servers): real `redis-server` processes behind in-process fault proxies,
//! plus operation histories and the safety checkers of
//! [tokio-redlock](https://docs.rs/tokio-redlock).
//!
//! A [`Cluster`] starts N independent `redis-server` processes on free loopback ports, each in
//! its own temporary directory with its own log file, and puts a small TCP proxy in front of
//! each one. Clients connect to the proxies ([`Cluster::urls`]); tests then inject faults
//! per node through [`Node`]:
//!
//! | fault                     | undo                   | how                                       |
//! |---------------------------|------------------------|-------------------------------------------|
//! | [`Node::pause`]           | [`Node::resume`]       | `SIGSTOP` / `SIGCONT` of the server       |
//! | [`Node::kill`]            | [`Node::restart`]      | `SIGKILL` + reap; start on same port/dir  |
//! | [`Node::partition`]       | [`Node::heal`]         | the proxy black-holes every byte          |
//! | [`Node::set_latency`]`(d)`| `set_latency(ZERO)`    | the proxy delays each chunk by `d`        |
//! | [`Node::drop_requests`]   | [`Node::heal`]         | only client-to-server bytes are dropped   |
//! | [`Node::drop_replies`]    | [`Node::heal`]         | only server-to-client bytes are dropped   |
//! | [`Node::reset_after_requests`]`(n)` | [`Node::stop_resets`] | forward a request, then reset before its reply |
//! | [`Node::flap`]`(d)`       | (heals itself)         | partition, heal after `d`                 |
//! | [`Node::latency_spike`]`(l, d)` | (ends itself)    | latency `l` for `d`, then as before       |
//! | [`Node::hold_requests`]   | [`Node::deliver_held`] | requests on open connections wait, then land after newer ones (late delivery) |
//!
//! A [`RedisCluster`] is another thing: one real Redis Cluster of N masters (its servers
//! know each other, so no proxies), to stand as a single vote beside standalone nodes
//! (tokio-redlock's `RedlockBuilder::cluster_node`, feature `cluster`).
//!
//! [`history`] records what each client did and when, on one machine-wide clock (also across
//! processes); [`checker`] states the lock's promises as properties of such a history.
//!
//! # Use it in your own tests
//!
//! A dev-dependency, beside the lock library, in your `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! tokio-redlock = "0.1"
//!
//! [dev-dependencies]
//! tokio-redlock-harness = "0.1"
//! ```
//!
//! Never in `[dependencies]`: the harness starts and signals processes, and brings `nix`
//! and `tempfile`, which your production build does not need. Each `Cluster` starts its
//! own servers on free ports, so tests can run in parallel; `redis-server` must be
//! installed (see below).
//!
//! A complete test, as `tests/lock.rs` of your crate (`cargo test` runs it):
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_redlock_harness::Cluster;
//! use tokio_redlock::Redlock;
//!
//! #[tokio::test]
//! async fn the_lock_holds_with_a_node_paused() -> Result<(), Box<dyn std::error::Error>> {
//!     let cluster = Cluster::builder().nodes(3).start().await?;
//!     let redlock = Redlock::builder().nodes(cluster.urls()).build()?;
//!     let other = Redlock::builder().nodes(cluster.urls()).retry_count(0).build()?;
//!
//!     let guard = redlock.acquire("job:1", Duration::from_secs(5)).await?;
//!     cluster.node(0).pause().await?; // SIGSTOP: node 0 stops answering
//!     // The two others still refuse a second owner ...
//!     let err = other.try_acquire("job:1", Duration::from_secs(5)).await.unwrap_err();
//!     assert!(err.is_conflict(), "{err}");
//!     // ... and let the holder release.
//!     guard.release().await?;
//!     cluster.node(0).resume().await?;
//!     Ok(())
//! }
//! # fn main() {}
//! ```
//!
//! # Example: one node partitioned away
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_redlock_harness::{Cluster, Persistence};
//! # async fn demo() -> Result<(), tokio_redlock_harness::HarnessError> {
//! let cluster = Cluster::builder()
//!     .nodes(5)
//!     .persistence(Persistence::AofAlways)
//!     .start()
//!     .await?;
//! cluster.node(2).partition().await?;
//! assert!(cluster.node(2).ping(Duration::from_millis(200)).await.is_err());
//! cluster.node(2).heal().await?;
//! cluster.wait_healthy(Duration::from_secs(5)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Finding `redis-server`
//!
//! The binary is taken from [`ClusterBuilder::redis_server`], else from the `REDIS_SERVER`
//! environment variable, else from `PATH`. When none is found, [`ClusterBuilder::start`] fails
//! with [`HarnessError::ServerNotFound`], whose message says how to install it.
//!
//! # Cleanup
//!
//! Dropping a [`Cluster`] sends `SIGKILL` to every process it started (paused ones included),
//! reaps them, stops the proxies and removes the directories. This also happens when a test
//! panics. Processes are spawned with `kill_on_drop(true)` as a backstop. A test binary that is
//! itself killed with `SIGKILL` cannot clean up; its servers are then left running.
//!
//! # Limits
//!
//! Unix only (signals, `/proc`): on other targets the crate compiles, but empty. Latency
//! applies to both directions at once; partitions can be one-way.

#![cfg(unix)]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

use std::io;
use std::time::Duration;

pub mod checker;
mod cluster;
pub mod history;
mod proxy;
mod redis_cluster;
mod server;
mod sync;

pub use cluster::{Cluster, ClusterBuilder, Node};
pub use redis_cluster::{RedisCluster, RedisClusterBuilder};

/// How each `redis-server` keeps its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Persistence {
    /// Memory only (`--save "" --appendonly no`): a killed and restarted node comes back empty.
    #[default]
    Memory,
    /// Append-only file with `appendfsync always`: every acknowledged write survives
    /// [`Node::kill`] + [`Node::restart`].
    AofAlways,
}

/// An error from the test harness.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// No `redis-server` binary was found.
    #[error(
        "redis-server not found ({searched}); install it with `apt-get install redis-server` \
         or set REDIS_SERVER=/path/to/redis-server"
    )]
    #[non_exhaustive]
    ServerNotFound {
        /// Where the harness looked.
        searched: String,
    },
    /// The server process could not be spawned.
    #[error("could not spawn {path}; check that it is an executable redis-server")]
    #[non_exhaustive]
    Spawn {
        /// The binary that was run.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The server did not answer `PING` before the deadline.
    #[error(
        "redis-server on port {port} not ready within {timeout:?}; raise ready_timeout() \
         or read its log:\n{log_tail}"
    )]
    #[non_exhaustive]
    NotReady {
        /// The server's port.
        port: u16,
        /// How long the harness waited.
        timeout: Duration,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// The server exited while starting.
    #[error("redis-server on port {port} exited while starting ({status}); check its arguments and log:\n{log_tail}")]
    #[non_exhaustive]
    Exited {
        /// The server's port.
        port: u16,
        /// The exit status.
        status: String,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// The server's port stayed taken by another process.
    #[error("port {port} is taken by another process after {attempts} attempts; stop whatever listens there:\n{log_tail}")]
    #[non_exhaustive]
    PortTaken {
        /// The last port tried.
        port: u16,
        /// How many starts were tried.
        attempts: u32,
        /// The last lines of the server's log.
        log_tail: String,
    },
    /// The operation needs a running server, and this node's is killed.
    #[error("node {index} is not running; call restart() first")]
    #[non_exhaustive]
    NotRunning {
        /// The node's index in the cluster.
        index: usize,
    },
    /// Sending a signal to the server failed.
    #[error("could not send {signal} to pid {pid}")]
    #[non_exhaustive]
    Signal {
        /// The process.
        pid: u32,
        /// The signal's name.
        signal: &'static str,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// An I/O operation of the harness failed.
    #[error("{context}")]
    #[non_exhaustive]
    Io {
        /// What the harness was doing.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A bounded wait ran out.
    #[error("{what} did not finish within {timeout:?}")]
    #[non_exhaustive]
    Timeout {
        /// What was waited for.
        what: String,
        /// The bound.
        timeout: Duration,
    },
    /// A Redis command sent by a health check failed.
    #[error("{what} failed; check the node's faults and log")]
    #[non_exhaustive]
    Redis {
        /// What the harness was doing.
        what: String,
        /// The cause.
        #[source]
        source: redis::RedisError,
    },
    /// The builder was given a setting that cannot work.
    #[error("invalid harness config: {0}")]
    Config(String),
}

impl HarnessError {
    /// Whether the error is a bounded wait that ran out (including a Redis timeout).
    pub fn is_timeout(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::NotReady { .. } => true,
            Self::Redis { source, .. } => source.is_timeout(),
            _ => false,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_is_send_sync_static() {
        fn assert_bounds<T: std::error::Error + Send + Sync + 'static>() {}
        assert_bounds::<HarnessError>();
    }

    #[test]
    fn not_found_says_how_to_install() {
        let e = HarnessError::ServerNotFound {
            searched: "PATH".into(),
        };
        let msg = e.to_string();
        assert!(msg.contains("apt-get install redis-server"), "{msg}");
        assert!(msg.contains("REDIS_SERVER="), "{msg}");
    }
}
