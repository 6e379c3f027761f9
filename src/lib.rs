//! The Redlock distributed lock on N independent Redis (or Valkey) nodes, for tokio.
//!
//! A lock taken with this crate is held only while a majority of N independent Redis
//! nodes agreed to it within its validity time. Use it where workers in several
//! processes or pods must not do the same job twice, such as charging a payment.
//!
//! - [`Redlock::acquire`] sets the key with a fresh 128-bit random value on all nodes at
//!   once (`SET key value NX PX ttl`), each request bounded by a node timeout, and
//!   decides as soon as the outcome is certain: success at a quorum (N/2 + 1) with
//!   validity left, `ttl − elapsed − (ttl × drift_factor + 2 ms)`; failure as soon as a
//!   quorum is out of reach. A failed attempt is undone on every node: before the next
//!   attempt where the node answered, in the background where it did not.
//! - [`LockGuard`] releases on drop, in the background; [`LockGuard::release`] and
//!   [`LockGuard::extend`] compare the owner's value in Lua before touching a key.
//! - [`Redlock::with_lock`] keeps the lock alive while a future runs and drops the future
//!   if the lock is lost; with [`LeaseOptions::drop_work_on_loss`]`(false)` the future
//!   hears of the loss instead ([`Lease::lost`], [`Lease::cancellation_token`]) and stops
//!   on its own terms.
//! - With [`RedlockBuilder::fencing`], every acquisition carries a fencing token that is
//!   strictly greater than every earlier one for the resource; [`FenceGate`] and
//!   [`FENCE_CHECK_LUA`] let the protected storage refuse a stale holder.
//! - Nodes come as URLs, [`redis::ConnectionInfo`], `(host, port)` or the
//!   [`redis::Client`]s you have ([`IntoNode`]); with [`RedlockBuilder::owner_label`] a
//!   node's `GET` shows who holds a lock, and [`Redlock::inspect`] reports it per stored
//!   value (a snapshot for operators, never a lock check).
//! - The companion crate [tokio-redlock-harness](https://docs.rs/tokio-redlock-harness)
//!   starts real `redis-server` processes behind fault proxies, for your own tests: add it
//!   under `[dev-dependencies]`; its crate docs have a complete test.
//!
//! # Example: a guard around a critical section
//! ```no_run
//! use std::time::Duration;
//! use tokio_redlock::{Error, Redlock};
//!
//! # async fn charge(_: &str) {}
//! # async fn run() -> Result<(), Error> {
//! let redlock = Redlock::builder()
//!     .nodes(["redis://10.0.0.1:6379", "redis://10.0.0.2:6379", "redis://10.0.0.3:6379"])
//!     .build()?;
//! match redlock.acquire("payment:42", Duration::from_secs(5)).await {
//!     Ok(guard) => {
//!         charge("payment:42").await;
//!         guard.release().await?;
//!     }
//!     Err(e) if e.is_conflict() => println!("another worker has it"),
//!     Err(e) => return Err(e),
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # Example: long work, kept alive, with a fencing token
//! ```no_run
//! use std::time::Duration;
//! use tokio_redlock::Redlock;
//!
//! # async fn write_with_token(_: Option<u64>) {}
//! # async fn run(redlock: Redlock) -> Result<(), tokio_redlock::Error> {
//! redlock
//!     .with_lock("report:2026-11", Duration::from_secs(10), |lease| async move {
//!         // Extended every ~3 s in the background; dropped if the lock is lost.
//!         write_with_token(lease.fencing_token()).await;
//!     })
//!     .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//! - `tls`: `rediss://` node URLs through rustls (off by default). The crate never
//!   installs a process-wide rustls crypto provider: the application installs one (ring
//!   or aws-lc-rs) before [`RedlockBuilder::build`], which otherwise fails with
//!   [`Error::Config`] for a `rediss://` node (see `docs/operations.md`, "TLS").
//! - `metrics`: counters and histograms through the `metrics` facade (off by default;
//!   the names are listed in `docs/operations.md`).
//! - `cluster`: a whole Redis Cluster as one of the N votes,
//!   `RedlockBuilder::cluster_node`, through redis-rs's async cluster client (off by
//!   default; see `docs/operations.md`, "A Redis Cluster as a vote").
//!
//! # What the lock does and does not promise
//! A lock is guaranteed until [`LockGuard::valid_until`] and not a moment longer, and
//! only if the nodes are independent masters that keep their data across restarts (or
//! restart later than the longest TTL), never evict keys (`maxmemory-policy noeviction`),
//! and have clocks that are slewed, never stepped. A holder that is paused past its
//! validity (a GC pause, a stopped VM) cannot know it lost the lock; only storage that
//! checks fencing tokens can refuse it. `docs/safety.md` states the guarantees and their
//! assumptions precisely, and `docs/design.md` explains the algorithm and its timing
//! constants.
//!
//! # Public dependency: redis-rs
//! The API exposes one type of [redis-rs](https://docs.rs/redis/1) 1.x (`redis = "1.8"`):
//! [`redis::RedisError`], the cause inside [`NodeErrorKind::Redis`] (reached through
//! [`NodeError::kind`], for each node of [`Error::node_errors`]) and inside the harness
//! crate's `HarnessError::Redis`. The crate is re-exported as [`tokio_redlock::redis`](redis), so
//! you can name its types without a `redis` dependency of your own; one of your own must
//! be a 1.x version, or its types are distinct from these. A new major version of redis-rs
//! will come with a new major version of this crate.
//!
//! # Stability
//! [`Error`] and the enums that may grow are `#[non_exhaustive]`, and so is every error
//! variant with named fields (match them with `..`) and every struct that reports or
//! checks and may gain fields ([`StaleToken`]; so too the harness crate's checker and
//! history types: build its `LivenessSpec` with `LivenessSpec::new`). [`Error::Config`]
//! stays a plain tuple variant: match it as `Error::Config(message)`.

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod clock;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
pub mod diagnose;
mod election;
mod error;
mod fencing;
mod guard;
mod info;
mod kind;
mod lease;
mod local;
mod metrics;
mod mutants;
mod node;
mod quorum;
mod redlock;
mod round;
mod scripts;
mod shared;
// For the crate's own model checker (`model/`); not part of the API.
#[doc(hidden)]
pub mod script_source;
mod sync;
#[cfg(feature = "tls")]
mod tls;
mod value;
mod wake;

/// The redis-rs crate this one is built on, for naming its types (see "Public
/// dependency: redis-rs" above).
pub use redis;

pub use builder::{IntoNode, RedlockBuilder};
pub use diagnose::CheckMode;
// The report's types live in `diagnose`; these paths are kept for code written before.
#[doc(hidden)]
pub use diagnose::{Finding, FindingKind, HealthReport, NodeReport, Severity};
pub use election::{Election, Leadership};
pub use error::{ConflictReason, Error, LostReason, NodeError, NodeErrorKind, NodeErrors};
pub use fencing::{FenceGate, StaleToken, FENCE_CHECK_LUA};
pub use guard::{LockGuard, ReleaseReport};
pub use kind::LockKind;
pub use lease::{KeptGuard, Lease, LeaseOptions, WorkOutcome};
pub use redlock::{Holder, LockInfo, LockRequest, Redlock};
/// The token a [`Lease`] cancels when its lock is lost
/// ([`Lease::cancellation_token`]), re-exported so that storing or passing one needs no
/// direct dependency on `tokio-util`.
pub use tokio_util::sync::CancellationToken;

/// Compiles the README's examples as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
