//! tokio-redlock: the Redlock distributed lock on N independent Redis nodes, for tokio.
//!
//! (Crate documentation is filled in as the crate grows.)
#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod builder;
mod diagnose;
mod error;
mod fencing;
mod guard;
mod lease;
mod node;
mod quorum;
mod redlock;
mod scripts;

#[cfg(feature = "harness")]
#[cfg_attr(docsrs, doc(cfg(feature = "harness")))]
pub mod harness;

pub use builder::RedlockBuilder;
pub use diagnose::{CheckMode, Finding, FindingKind, NodeReport, Report, Severity};
pub use error::{Error, LostReason, NodeError, NodeErrorKind, NodeErrors};
pub use fencing::{FenceGate, StaleToken, FENCE_CHECK_LUA};
pub use guard::{LockGuard, ReleaseReport};
pub use lease::{KeptGuard, Lease, LeaseOptions};
pub use redlock::Redlock;
