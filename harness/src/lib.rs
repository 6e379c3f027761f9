//! The multi-node test harness of [tokio-redlock](https://docs.rs/tokio-redlock): real
//! `redis-server` processes on free loopback ports, each behind an in-process fault proxy
//! (pause, kill, restart, partition one way or both, latency, connection resets, late
//! delivery), plus operation histories and the safety checkers.
//!
//! Today this crate re-exports `tokio_redlock::harness` (the library's `harness`
//! feature), under the name the harness will keep once it moves here: depend on it in
//! your tests now and nothing changes for you when it does.
//!
//! ```no_run
//! use std::time::Duration;
//! use tokio_redlock_harness::Cluster;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::builder().nodes(3).start().await?;
//! cluster.node(0).pause().await?;
//! cluster.node(0).resume().await?;
//! cluster.node(1).set_latency(Duration::from_millis(20)).await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub use tokio_redlock::harness::*;
