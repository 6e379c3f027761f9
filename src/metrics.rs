//! Metrics through the `metrics` facade (feature `metrics`); without the feature every
//! function here is empty and compiles away, its arguments unused.
//!
//! | name | kind | labels |
//! | --- | --- | --- |
//! | `redlock_acquisitions_total` | counter | `outcome`: ok, conflict, no_quorum, expired, invalid |
//! | `redlock_acquire_attempts` | histogram | `outcome` |
//! | `redlock_acquire_seconds` | histogram (wait from first attempt to result) | `outcome` |
//! | `redlock_extensions_total` | counter | `outcome`: ok, lost, no_quorum, expired |
//! | `redlock_locks_lost_total` | counter | `reason` |
//! | `redlock_releases_total` | counter | `outcome`: ok, no_quorum |
//! | `redlock_background_releases_total` | counter | `reason`: dropped guard, cancelled acquire, ... |
//! | `redlock_node_errors_total` | counter | `node` (index), `kind`: timeout, io, protocol, quarantined, or the server's error code |
//! | `redlock_held_seconds` | histogram (from the acquisition to the release or drop of the lock; a lock handed on to another task of the process holds on) | `class` |
//! | `redlock_guards_held` | gauge (locks this process holds now) | `class` |
//! | `redlock_waiting_tasks` | gauge (acquisitions under way now, waiting included) | `class` |
//!
//! `class` is what [`RedlockBuilder::metrics_class`](crate::RedlockBuilder::metrics_class)
//! makes of the resource name (`"all"` without it): a label whose values the user
//! bounds, never the resource name itself.
#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

use crate::error::{Error, LostReason, NodeError};

/// A function from a resource name to one of a few fixed label values.
type ClassFn = dyn Fn(&str) -> &'static str + Send + Sync;

/// The user's mapping of resource names to a bounded set of label values.
#[derive(Clone, Default)]
pub(crate) struct ClassOf(Option<Arc<ClassFn>>);

impl ClassOf {
    pub(crate) fn new(f: impl Fn(&str) -> &'static str + Send + Sync + 'static) -> Self {
        Self(Some(Arc::new(f)))
    }

    /// The class of `resource`: `"all"` without a mapping.
    pub(crate) fn of(&self, resource: &str) -> &'static str {
        self.0.as_ref().map_or("all", |f| f(resource))
    }
}

impl fmt::Debug for ClassOf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() { "set" } else { "unset" })
    }
}

/// One acquisition under way (`redlock_waiting_tasks`), until dropped: at its end,
/// also when its future is dropped.
pub(crate) struct Waiting {
    #[cfg(feature = "metrics")]
    class: &'static str,
}

impl Waiting {
    pub(crate) fn start(class: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!("redlock_waiting_tasks", "class" => class).increment(1.0);
            Self { class }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        metrics::gauge!("redlock_waiting_tasks", "class" => self.class).decrement(1.0);
    }
}

/// One lock held by this process (`redlock_guards_held`), from its acquisition until
/// dropped, when `redlock_held_seconds` records how long it was held.
pub(crate) struct Holding {
    #[cfg(feature = "metrics")]
    class: &'static str,
    #[cfg(feature = "metrics")]
    since: Instant,
}

impl Holding {
    pub(crate) fn start(class: &'static str) -> Self {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!("redlock_guards_held", "class" => class).increment(1.0);
            Self {
                class,
                since: Instant::now(),
            }
        }
        #[cfg(not(feature = "metrics"))]
        Self {}
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        {
            metrics::gauge!("redlock_guards_held", "class" => self.class).decrement(1.0);
            metrics::histogram!("redlock_held_seconds", "class" => self.class)
                .record(self.since.elapsed().as_secs_f64());
        }
    }
}

impl fmt::Debug for Holding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Holding")
    }
}

pub(crate) fn acquired(result: Result<(), &Error>, attempts: u32, wait: Duration) {
    #[cfg(feature = "metrics")]
    {
        let outcome = result.map_or_else(error_outcome, |()| "ok");
        metrics::counter!("redlock_acquisitions_total", "outcome" => outcome).increment(1);
        metrics::histogram!("redlock_acquire_attempts", "outcome" => outcome)
            .record(f64::from(attempts));
        metrics::histogram!("redlock_acquire_seconds", "outcome" => outcome)
            .record(wait.as_secs_f64());
    }
}

pub(crate) fn extended(result: Result<(), &Error>) {
    #[cfg(feature = "metrics")]
    {
        let outcome = result.map_or_else(error_outcome, |()| "ok");
        metrics::counter!("redlock_extensions_total", "outcome" => outcome).increment(1);
    }
}

pub(crate) fn lost(reason: &LostReason) {
    #[cfg(feature = "metrics")]
    {
        let reason = match reason {
            LostReason::ValidityEnded => "expired",
            LostReason::NotHeld { .. } => "not_held",
            LostReason::ExtensionFailed => "extension_failed",
            LostReason::CapReached => "cap_reached",
        };
        metrics::counter!("redlock_locks_lost_total", "reason" => reason).increment(1);
    }
}

pub(crate) fn released(ok: bool) {
    #[cfg(feature = "metrics")]
    {
        let outcome = if ok { "ok" } else { "no_quorum" };
        metrics::counter!("redlock_releases_total", "outcome" => outcome).increment(1);
    }
}

pub(crate) fn background_release(reason: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!("redlock_background_releases_total", "reason" => reason).increment(1);
}

pub(crate) fn node_error(err: &NodeError) {
    #[cfg(feature = "metrics")]
    {
        use crate::error::NodeErrorKind;

        let kind: String = match err.kind() {
            NodeErrorKind::Timeout(_) => "timeout".into(),
            NodeErrorKind::Redis(e) => match e.code() {
                Some(code) => code.to_owned(),
                None => "io".into(),
            },
            NodeErrorKind::Protocol(_) => "protocol".into(),
            NodeErrorKind::Quarantined(_) => "quarantined".into(),
        };
        metrics::counter!(
            "redlock_node_errors_total",
            "node" => err.node().to_string(),
            "kind" => kind
        )
        .increment(1);
    }
}

/// The `outcome` label of an acquisition or extension error.
#[cfg(feature = "metrics")]
fn error_outcome(err: &Error) -> &'static str {
    match err {
        Error::Conflict { .. } => "conflict",
        Error::SplitVote { .. } => "split_vote",
        Error::NoQuorum { .. } => "no_quorum",
        Error::Expired { .. } => "expired",
        Error::LockLost { .. } => "lost",
        _ => "invalid",
    }
}
