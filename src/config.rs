//! [`Config`]: the validated settings of one manager, and their defaults. A leaf: the
//! builder makes it, everything else reads it, and it imports nothing that does.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::diagnose::CheckMode;

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
    /// Fencing counters shared by the resources of a namespace.
    pub(crate) shared_counters: crate::fencing::SharedCounters,
    pub(crate) wake_on_release: bool,
    pub(crate) heal_on_extend: bool,
    pub(crate) metrics_class: crate::metrics::ClassOf,
    pub(crate) health_check: CheckMode,
    pub(crate) min_validity: Duration,
    /// Put in front of every owner value (see [`RedlockBuilder::owner_label`]).
    pub(crate) owner_label: Option<Arc<str>>,
    pub(crate) local_handover: bool,
    /// Where validity is measured (suspend-aware; a manual one in tests).
    pub(crate) clock: Clock,
}
