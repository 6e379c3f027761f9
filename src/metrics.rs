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
#![cfg_attr(not(feature = "metrics"), allow(unused_variables))]

use std::time::Duration;

use crate::error::{Error, LostReason, NodeError};

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
            LostReason::Expired => "expired",
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
