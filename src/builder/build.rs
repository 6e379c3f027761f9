//! `RedlockBuilder::build`: the whole configuration checked once, the nodes made.

use std::sync::Arc;

use super::*;
use crate::node::{Restarts, MARKER_NAME};

impl RedlockBuilder {
    /// Checks the configuration and makes the manager. No connection is made here:
    /// each node connects on first use, and again after a failure, so a node that is
    /// down now is not an error.
    ///
    /// # Errors
    /// [`Error::Config`] for an empty node list, a URL without a scheme (`host:port`
    /// instead of `redis://host:port`) or that does not parse (or needs a feature that
    /// is off), the same node listed twice, a drift factor outside `[0, 1)`, a zero
    /// `node_timeout` or `connect_timeout`, a fence suffix that ends like the wait
    /// queue's, or an [`owner_label`](Self::owner_label) that breaks its rule (the
    /// message names the rule). With the `tls` feature, for a TLS node when the
    /// application has installed no rustls crypto provider (the crate installs none; see
    /// the crate docs' features), and for a node given as a client or connection info
    /// with TLS certificates of its own while `tls_root_ca` or `tls_client_cert` is set:
    /// one set would replace the other.
    /// With the `cluster` feature, for a cluster node that breaks a rule of
    /// `cluster_node` (no seeds, a seed with a database, a seed listed again).
    ///
    /// A node list that works but weakens the quorum is logged once, as a `tracing`
    /// warning: 2 nodes or another even count, and one server written two ways
    /// (`127.0.0.1:7001` and `localhost:7001`, or two databases of one server).
    /// [`Redlock::diagnose`] checks these and more against the servers themselves.
    ///
    /// ```
    /// use tokio_redlock::Redlock;
    ///
    /// let err = Redlock::builder().node("localhost:6379").build().unwrap_err();
    /// assert!(err.to_string().contains("redis://"), "{err}");
    /// assert!(Redlock::builder().node("redis://localhost:6379").build().is_ok());
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
        if let Some(label) = &self.owner_label {
            owner_label::check(label).map_err(Error::Config)?;
        }
        if crate::kind::clashes_with_fence_suffix(&self.fence_suffix) {
            return Err(Error::Config(format!(
                "fence_suffix `{}` ends like a key kept for read/write locks or permits \
                 (`:readers`, `:writer`, `:rwait`, `:rturn`, `:permit:<n>`), so a counter key \
                 could be one of them; choose another suffix such as `:fence`",
                self.fence_suffix
            )));
        }
        let shared_counters =
            crate::fencing::SharedCounters::new(&self.shared_counters).map_err(Error::Config)?;
        #[cfg(feature = "cluster")]
        if !shared_counters.is_empty()
            && self.nodes.iter().any(|n| matches!(n, NodeSpec::Cluster(_)))
        {
            return Err(Error::Config(
                "shared_fencing_counter cannot be used with a Redis Cluster vote: the fenced \
                 acquire must name the lock key and its counter in one slot, and one shared \
                 counter key cannot be in the slot of every resource; drop the shared \
                 counters (each resource keeps its own) or the cluster vote"
                    .into(),
            ));
        }
        let mut nodes = Vec::with_capacity(self.nodes.len());
        for (index, spec) in self.nodes.iter().enumerate() {
            let node = match spec {
                #[cfg(feature = "cluster")]
                NodeSpec::Cluster(seeds) => self.cluster_of(index, seeds)?,
                _ => self.server_of(index, spec)?,
            };
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
            #[cfg(feature = "cluster")]
            super::cluster::check_disjoint(&nodes, &node)?;
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
            shared_counters,
            wake_on_release: self.wake_on_release,
            heal_on_extend: self.heal_on_extend,
            metrics_class: self.metrics_class.clone(),
            health_check: self.health_check,
            min_validity: self.min_validity,
            owner_label: self.owner_label.map(Arc::from),
            local_handover: self.local_handover,
            clock: self.clock,
        };
        Ok(Redlock::from_parts(Arc::from(nodes), config))
    }
}

impl RedlockBuilder {
    /// The node of server `index`.
    fn server_of(&self, index: usize, spec: &NodeSpec) -> Result<Node, Error> {
        let client = self.client_of(index, spec)?;
        #[cfg(feature = "tls")]
        crate::tls::require_crypto_provider(index, &client)?;
        Ok(Node::new(
            index,
            client,
            self.node_timeout,
            self.connect_timeout,
            self.restart_quarantine
                .map(|period| Restarts::new(period, format!("{}{MARKER_NAME}", self.key_prefix))),
        ))
    }

    #[cfg(not(feature = "tls"))]
    pub(super) fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        redis::Client::open(info)
    }

    #[cfg(feature = "tls")]
    pub(super) fn client(&self, info: redis::ConnectionInfo) -> redis::RedisResult<redis::Client> {
        self.tls.client(info)
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
