//! [`Inner`]: what every handle of one manager shares (its clones, its guards, their
//! background tasks). It sits below both the manager and the guard, so that neither
//! imports the other.

use std::sync::Arc;

use crate::config::Config;
use crate::diagnose::HealthState;
use crate::fencing::FenceCache;
use crate::node::Node;
use crate::wake::Wakeups;

/// The nodes, settings and per-manager state behind a [`Redlock`](crate::Redlock).
pub(crate) struct Inner {
    pub(crate) nodes: Arc<[Node]>,
    pub(crate) config: Config,
    /// Release wake-ups and per-key contention hints.
    pub(crate) wakeups: Wakeups,
    /// The highest fencing counter this manager has seen per counter key.
    pub(crate) fences: FenceCache,
    /// State of the health checks (`RedlockBuilder::health_check`).
    pub(crate) health: HealthState,
}

impl Inner {
    pub(crate) fn new(nodes: Arc<[Node]>, config: Config) -> Self {
        Self {
            wakeups: Wakeups::new(nodes.len()),
            nodes,
            config,
            fences: FenceCache::default(),
            health: HealthState::default(),
        }
    }
}
