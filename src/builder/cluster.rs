//! [`RedlockBuilder::cluster_node`] (feature `cluster`): a whole Redis Cluster as one of
//! the votes.

use super::into_node::NodeSpec;
use super::RedlockBuilder;
use redis::ConnectionAddr;

use crate::cluster::{ClusterClientBuilder, ClusterVote};
use crate::error::Error;
use crate::node::Node;

impl RedlockBuilder {
    /// Adds a whole Redis Cluster as **one** vote, given the URLs of some of its nodes
    /// (seeds; the rest are found from them). Each lock key goes to its slot's master;
    /// standalone nodes and clusters may be mixed, each counting once. Defaults to none.
    ///
    /// On a cluster vote the crate chooses the hash tags: the key of resource `K` is
    /// stored as `{K}` (unless `K` already has a non-empty hash tag, such as
    /// `acct:{7}`; names with braces that could meet another name's key are escaped,
    /// so every name keeps a key of its own), and every key kept beside it (`:waiters`, the fence counter,
    /// `:readers`, `:writer`, the permit slots) starts the same way, so each script's
    /// keys share one slot. Standalone nodes keep the plain keys. Resources locked
    /// together with [`Redlock::acquire_many`](crate::Redlock::acquire_many) must share
    /// a slot there: give them one hash tag (`{acct}:1`, `{acct}:2`), or the call is
    /// refused with [`Error::Config`].
    ///
    /// A Redis Cluster fails over to a replica asynchronously: a lock granted by a
    /// master just before it fails can be missing on its replica. Count such a vote
    /// knowingly ([`Redlock::diagnose`](crate::Redlock::diagnose) reports it; see
    /// `docs/operations.md`, "A Redis Cluster as a vote").
    ///
    /// ```no_run
    /// use tokio_redlock::Redlock;
    ///
    /// let redlock = Redlock::builder()
    ///     .node("redis://10.0.0.1:6379")
    ///     .node("redis://10.0.0.2:6379")
    ///     .cluster_node(["redis://10.0.1.1:7000", "redis://10.0.1.2:7000"])
    ///     .build()?;
    /// assert_eq!(redlock.node_count(), 3);
    /// # Ok::<(), tokio_redlock::Error>(())
    /// ```
    ///
    /// [`build`](Self::build) returns [`Error::Config`] for no seeds, a seed URL that
    /// does not parse, one with a database other than 0 (a cluster has only db 0), or a
    /// seed that is listed again (as a server, or in another cluster vote).
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_node<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let seeds = seeds.into_iter().map(|s| s.as_ref().to_owned()).collect();
        self.nodes.push(NodeSpec::Cluster(seeds));
        self
    }

    /// The node of the cluster vote `index` with these seeds.
    pub(super) fn cluster_of(&self, index: usize, seeds: &[String]) -> Result<Node, Error> {
        if seeds.is_empty() {
            return Err(Error::Config(format!(
                "node {index}: a cluster node without seed URLs: give at least one \
                 redis://host:port of the cluster"
            )));
        }
        let mut clients = Vec::with_capacity(seeds.len());
        for url in seeds {
            let client = self.client_of(index, &NodeSpec::Url(url.clone()))?;
            #[cfg(feature = "tls")]
            crate::tls::require_crypto_provider(index, &client)?;
            if client.get_connection_info().redis_settings().db() != 0 {
                return Err(Error::Config(format!(
                    "node {index}: cluster seed `{}` names a database; a Redis Cluster has \
                     only database 0: drop the /db from the URL",
                    super::redact_url(url)
                )));
            }
            clients.push(client);
        }
        let tls = clients.iter().any(|c| {
            matches!(
                c.get_connection_info().addr(),
                ConnectionAddr::TcpTls { .. }
            )
        });
        let configure = |builder| self.cluster_tls(builder, tls);
        let vote =
            ClusterVote::new(clients, &self.fence_suffix, self.connect_timeout, configure)
                .map_err(|e| Error::Config(format!("node {index}: cannot use the cluster: {e}")))?;
        Ok(Node::cluster(
            index,
            vote,
            self.node_timeout,
            self.connect_timeout,
        ))
    }
}

/// `Err(Error::Config)` when `node` and an earlier node share an address and one of
/// them is a cluster vote: a server that is also a cluster's seed would vote twice.
pub(super) fn check_disjoint(earlier: &[Node], node: &Node) -> Result<(), Error> {
    let addresses = |n: &Node| -> Vec<String> {
        n.pubsub_clients()
            .iter()
            .map(|c| c.get_connection_info().addr().to_string())
            .collect()
    };
    let mine = addresses(node);
    for other in earlier
        .iter()
        .filter(|o| o.is_cluster() || node.is_cluster())
    {
        if let Some(shared) = addresses(other).into_iter().find(|a| mine.contains(a)) {
            return Err(Error::Config(format!(
                "node {} ({}) and node {} ({}) both name {shared}: a Redis Cluster is one \
                 vote, and none of its nodes may be listed again, or the quorum would count \
                 it twice",
                other.index, other.endpoint, node.index, node.endpoint
            )));
        }
    }
    Ok(())
}

impl RedlockBuilder {
    /// With `rediss://` seeds, the builder's certificates (`tls_root_ca`,
    /// `tls_client_cert`) for every connection of the cluster client.
    #[cfg(feature = "tls")]
    fn cluster_tls(&self, builder: ClusterClientBuilder, tls: bool) -> ClusterClientBuilder {
        match self.tls.certificates() {
            Some(certificates) if tls => builder.certs(certificates),
            _ => builder,
        }
    }

    #[cfg(not(feature = "tls"))]
    fn cluster_tls(&self, builder: ClusterClientBuilder, _tls: bool) -> ClusterClientBuilder {
        builder
    }
}

#[cfg(test)]
mod tests {
    use crate::{Error, Redlock};

    #[test]
    fn a_cluster_vote_counts_once() {
        let redlock = Redlock::builder()
            .node("redis://127.0.0.1:7001")
            .cluster_node(["redis://127.0.0.1:7100", "redis://127.0.0.1:7101"])
            .node("redis://127.0.0.1:7002")
            .build()
            .expect("build");
        assert_eq!(redlock.node_count(), 3);
        assert_eq!(redlock.quorum(), 2);
    }

    #[test]
    fn impossible_cluster_nodes_are_refused() {
        let err = |b: crate::RedlockBuilder| match b.build() {
            Err(Error::Config(m)) => m,
            other => panic!("{other:?}"),
        };
        let none: [&str; 0] = [];
        let m = err(Redlock::builder().cluster_node(none));
        assert!(m.contains("without seed"), "{m}");
        let m = err(Redlock::builder().cluster_node(["127.0.0.1:7000"]));
        assert!(m.contains("redis://"), "{m}");
        let m = err(Redlock::builder().cluster_node(["redis://127.0.0.1:7000/2"]));
        assert!(m.contains("database 0"), "{m}");
        let m = err(Redlock::builder()
            .cluster_node(["redis://a:7000"])
            .cluster_node(["redis://a:7000"]));
        assert!(m.contains("listed once"), "{m}");
        // A seed listed again, as a server or in another cluster vote.
        let m = err(Redlock::builder()
            .node("redis://b:7001")
            .cluster_node(["redis://a:7000", "redis://b:7001"]));
        assert!(m.contains("both name b:7001"), "{m}");
        let m = err(Redlock::builder()
            .cluster_node(["redis://a:7000", "redis://b:7001"])
            .cluster_node(["redis://b:7001", "redis://c:7002"]));
        assert!(m.contains("both name b:7001"), "{m}");
    }
}
