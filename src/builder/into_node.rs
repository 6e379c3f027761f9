//! [`IntoNode`]: what [`RedlockBuilder::node`](super::RedlockBuilder::node) takes, and
//! how each kind becomes a node's client at `build()`.
//!
//! URLs stay text until `build()`, so that their mistakes are reported there with the
//! node's index (a missing scheme, a parse error, `rediss://` without the `tls`
//! feature). Everything else is a [`redis::ConnectionInfo`] already: a `redis::Client`
//! is nothing more than one, so a client and its connection info make the same node.

use redis::{Client, ConnectionAddr, ConnectionInfo, IntoConnectionInfo};

use super::{checks, redact_url, RedlockBuilder};
use crate::error::Error;

/// A lock node as the application has it: a URL (`&str`, `String`, `&String`, `&&str`,
/// `Box<str>`, `Cow<str>`), a [`redis::ConnectionInfo`] (or a reference to one) or
/// [`redis::ConnectionAddr`], a `(host, port)` pair (host as `&str`, `String` or
/// `&String`), or a [`redis::Client`] (or a reference to one). Taken by [`RedlockBuilder::node`](super::RedlockBuilder::node).
///
/// The trait is sealed: these are the kinds a node can be given as. A client is used
/// for its connection info only (the address, credentials, database and TLS
/// parameters): the crate makes its own connections from it.
///
/// ```
/// use tokio_redlock::Redlock;
///
/// let redlock = Redlock::builder()
///     .node("redis://10.0.0.1:6379")
///     .node(("10.0.0.2", 6379))
///     .node(redis::Client::open("redis://10.0.0.3:6379")?)
///     .build()?;
/// assert_eq!(redlock.node_count(), 3);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait IntoNode: sealed::Sealed {}

pub(crate) mod sealed {
    /// Makes [`IntoNode`](super::IntoNode) a closed set; the conversion lives here so
    /// that it is not part of the public API.
    pub trait Sealed {
        /// The node, as the builder keeps it until `build()`.
        fn into_spec(self) -> super::NodeSpec;
    }
}

/// A node as given, kept until `build()` checks it.
#[derive(Clone)]
#[doc(hidden)]
pub enum NodeSpec {
    /// A URL, checked and parsed at `build()`.
    Url(String),
    /// A connection info, or a client's; `what` names the kind for error messages.
    Info {
        info: Box<ConnectionInfo>,
        what: &'static str,
    },
    /// A `(host, port)` or address that did not convert (redis-rs' conversion of these
    /// cannot fail today; kept so that one that does is reported at `build()`).
    Invalid { shown: String, error: String },
    /// A Redis Cluster's seed URLs: the whole cluster is one vote.
    #[cfg(feature = "cluster")]
    Cluster(Vec<String>),
}

impl std::fmt::Debug for NodeSpec {
    /// Never the password: a URL or connection info may carry one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown())
    }
}

impl NodeSpec {
    fn info(info: ConnectionInfo, what: &'static str) -> Self {
        Self::Info {
            info: Box::new(info),
            what,
        }
    }

    fn convert(value: impl IntoConnectionInfo, shown: String, what: &'static str) -> Self {
        match value.into_connection_info() {
            Ok(info) => Self::info(info, what),
            Err(e) => Self::Invalid {
                shown,
                error: e.to_string(),
            },
        }
    }

    /// The node as `Debug` and errors show it: a URL with its password hidden, or
    /// `host:port[/db]`.
    pub(super) fn shown(&self) -> String {
        match self {
            Self::Url(url) => redact_url(url),
            Self::Info { info, .. } => endpoint_of(info),
            Self::Invalid { shown, .. } => shown.clone(),
            #[cfg(feature = "cluster")]
            Self::Cluster(seeds) => {
                let seeds: Vec<String> = seeds.iter().map(|s| redact_url(s)).collect();
                format!("cluster({})", seeds.join(","))
            }
        }
    }
}

/// `host:port[/db]` (or a socket path), never the credentials.
fn endpoint_of(info: &ConnectionInfo) -> String {
    let db = info.redis_settings().db();
    if db == 0 {
        info.addr().to_string()
    } else {
        format!("{}/{db}", info.addr())
    }
}

fn is_tls(info: &ConnectionInfo) -> bool {
    matches!(info.addr(), ConnectionAddr::TcpTls { .. })
}

macro_rules! url_nodes {
    ($($t:ty),*) => {$(
        impl IntoNode for $t {}
        impl sealed::Sealed for $t {
            fn into_spec(self) -> NodeSpec {
                NodeSpec::Url(AsRef::<str>::as_ref(&self).to_owned())
            }
        }
    )*};
}
url_nodes!(
    &str,
    String,
    &String,
    &&str,
    Box<str>,
    std::borrow::Cow<'_, str>
);

impl IntoNode for ConnectionInfo {}
impl sealed::Sealed for ConnectionInfo {
    fn into_spec(self) -> NodeSpec {
        NodeSpec::info(self, "connection info")
    }
}

impl IntoNode for &ConnectionInfo {}
impl sealed::Sealed for &ConnectionInfo {
    fn into_spec(self) -> NodeSpec {
        NodeSpec::info(self.clone(), "connection info")
    }
}

impl IntoNode for ConnectionAddr {}
impl sealed::Sealed for ConnectionAddr {
    fn into_spec(self) -> NodeSpec {
        let shown = self.to_string();
        NodeSpec::convert(self, shown, "connection info")
    }
}

impl IntoNode for Client {}
impl sealed::Sealed for Client {
    fn into_spec(self) -> NodeSpec {
        NodeSpec::info(self.get_connection_info().clone(), "redis::Client")
    }
}

impl IntoNode for &Client {}
impl sealed::Sealed for &Client {
    fn into_spec(self) -> NodeSpec {
        NodeSpec::info(self.get_connection_info().clone(), "redis::Client")
    }
}

macro_rules! host_port_nodes {
    ($($t:ty),*) => {$(
        impl IntoNode for ($t, u16) {}
        impl sealed::Sealed for ($t, u16) {
            fn into_spec(self) -> NodeSpec {
                let shown = format!("{}:{}", self.0, self.1);
                NodeSpec::convert((String::from(self.0), self.1), shown, "(host, port)")
            }
        }
    )*};
}
host_port_nodes!(&str, String, &String);

impl RedlockBuilder {
    /// The client of node `index`, or the [`Error::Config`] that says what is wrong
    /// with it.
    pub(super) fn client_of(&self, index: usize, spec: &NodeSpec) -> Result<Client, Error> {
        match spec {
            NodeSpec::Url(url) => {
                if let Some(problem) = checks::missing_scheme(url) {
                    return Err(Error::Config(format!("node {index}: {problem}")));
                }
                url.as_str()
                    .into_connection_info()
                    .and_then(|info| self.client(info))
                    .map_err(|e| {
                        Error::Config(format!(
                            "node {index}: cannot use `{}`: {e}; expected \
                             redis://[user:password@]host:port[/db]{}",
                            redact_url(url),
                            if url.starts_with("rediss://") && !cfg!(feature = "tls") {
                                " (rediss:// needs the `tls` feature)"
                            } else {
                                ""
                            }
                        ))
                    })
            }
            NodeSpec::Info { info, what } => {
                let shown = endpoint_of(info);
                if is_tls(info) && !cfg!(feature = "tls") {
                    return Err(Error::Config(format!(
                        "node {index}: the {what} for `{shown}` is a TLS address, which needs \
                         the crate's `tls` feature"
                    )));
                }
                if self.tls_conflict(info) {
                    return Err(Error::Config(format!(
                        "node {index}: the {what} for `{shown}` carries its own TLS \
                         certificates, and tls_root_ca or tls_client_cert is set too: give \
                         the certificates one way, either in the client or to the builder"
                    )));
                }
                self.client((**info).clone()).map_err(|e| {
                    Error::Config(format!(
                        "node {index}: cannot use the {what} for `{shown}`: {e}"
                    ))
                })
            }
            NodeSpec::Invalid { shown, error } => Err(Error::Config(format!(
                "node {index}: cannot use `{shown}`: {error}"
            ))),
            #[cfg(feature = "cluster")]
            NodeSpec::Cluster(_) => Err(Error::Config(format!(
                "node {index} is a Redis Cluster, not one server"
            ))),
        }
    }

    /// Whether `info` brings TLS parameters of its own while the builder has some too:
    /// one set would silently replace the other.
    #[cfg(feature = "tls")]
    fn tls_conflict(&self, info: &ConnectionInfo) -> bool {
        let own = matches!(
            info.addr(),
            ConnectionAddr::TcpTls {
                tls_params: Some(_),
                ..
            }
        );
        own && (self.tls.root_ca.is_some() || self.tls.client.is_some())
    }

    #[cfg(not(feature = "tls"))]
    fn tls_conflict(&self, _info: &ConnectionInfo) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Redlock;

    fn config_err(b: RedlockBuilder) -> String {
        match b.build() {
            Err(Error::Config(msg)) => msg,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    fn endpoints(b: RedlockBuilder) -> Vec<String> {
        let redlock = b.build().expect("valid nodes");
        redlock
            .inner
            .nodes
            .iter()
            .map(|n| n.endpoint.to_string())
            .collect()
    }

    #[test]
    fn urls_as_str_string_and_ref_string() {
        let owned = String::from("redis://127.0.0.1:7002");
        let b = Redlock::builder()
            .node("redis://127.0.0.1:7001")
            .node(&owned)
            .node(String::from("redis://127.0.0.1:7003/2"));
        assert_eq!(
            endpoints(b),
            ["127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003/2"]
        );
        // What `impl AsRef<str>` took before: references from iterating a list, boxes.
        let mut b = Redlock::builder();
        for url in &["redis://127.0.0.1:7001", "redis://127.0.0.1:7002"] {
            b = b.node(url);
        }
        let b = b
            .node(Box::<str>::from("redis://127.0.0.1:7003"))
            .node(std::borrow::Cow::Borrowed("redis://127.0.0.1:7004"));
        assert_eq!(endpoints(b).len(), 4);
    }

    #[test]
    fn host_port_pairs() {
        let host = String::from("10.0.0.2");
        let b = Redlock::builder()
            .node(("10.0.0.1", 6379))
            .node((host.clone(), 6380))
            .node((&host, 6381));
        assert_eq!(
            endpoints(b),
            ["10.0.0.1:6379", "10.0.0.2:6380", "10.0.0.2:6381"]
        );
    }

    #[test]
    fn connection_info_and_addr() {
        let info = "redis://app:s3cret@10.0.0.1:6379/3"
            .into_connection_info()
            .unwrap();
        let other = ("10.0.0.3", 6379).into_connection_info().unwrap();
        let b = Redlock::builder()
            .node(info)
            .node(ConnectionAddr::Tcp("10.0.0.2".into(), 6379))
            .node(&other);
        let shown = format!("{b:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("10.0.0.1:6379/3"), "{shown}");
        assert_eq!(
            endpoints(b),
            ["10.0.0.1:6379/3", "10.0.0.2:6379", "10.0.0.3:6379"]
        );
    }

    #[test]
    fn clients_keep_their_credentials_and_database() {
        let client = Client::open("redis://app:s3cret@10.0.0.1:6379/4").unwrap();
        let b = Redlock::builder()
            .node(&client)
            .node(Client::open("redis://10.0.0.2").unwrap());
        assert!(!format!("{b:?}").contains("s3cret"));
        let redlock = b.build().unwrap();
        let node = &redlock.inner.nodes[0];
        assert_eq!(&*node.endpoint, "10.0.0.1:6379/4");
        let settings = node.pubsub_clients()[0]
            .get_connection_info()
            .redis_settings();
        assert_eq!(settings.username(), Some("app"));
        assert_eq!(settings.password(), Some("s3cret"));
        assert_eq!(&*redlock.inner.nodes[1].endpoint, "10.0.0.2:6379");
        assert!(!format!("{redlock:?}").contains("s3cret"));
    }

    #[test]
    fn one_server_given_two_ways_is_refused_as_a_duplicate() {
        let msg = config_err(
            Redlock::builder()
                .node("redis://127.0.0.1:7001")
                .node(("127.0.0.1", 7002))
                .node(Client::open(("127.0.0.1", 7001)).unwrap()),
        );
        assert!(msg.contains("node 2") && msg.contains("node 0"), "{msg}");
        assert!(msg.contains("twice"), "{msg}");
    }

    #[test]
    fn url_checks_still_name_the_node() {
        let msg = config_err(
            Redlock::builder()
                .node(("127.0.0.1", 7001))
                .node("127.0.0.1:7002"),
        );
        assert!(
            msg.starts_with("node 1: `127.0.0.1:7002` has no scheme"),
            "{msg}"
        );
        let msg = config_err(Redlock::builder().node(String::from("redis://[bad")));
        assert!(
            msg.starts_with("node 0: cannot use `redis://[bad`"),
            "{msg}"
        );
    }

    #[cfg(feature = "tls")]
    #[test]
    fn tls_certificates_are_given_one_way() {
        use super::sealed::Sealed as _;
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap().pem();
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(ca.clone().into_bytes()),
        };
        let client = Client::build_with_tls("rediss://127.0.0.1:6380", certs).unwrap();
        let has_params = |c: &Client| {
            matches!(
                c.get_connection_info().addr(),
                ConnectionAddr::TcpTls {
                    tls_params: Some(_),
                    ..
                }
            )
        };
        // client_of, not build(): build() also wants a crypto provider installed, and
        // unit tests must not install one (see tls.rs).
        let plain = Redlock::builder();
        // A client's own certificates serve when the builder has none ...
        let made = plain.client_of(0, &(&client).into_spec()).unwrap();
        assert!(has_params(&made));
        // ... but not both: one would silently replace the other.
        let msg = config_err(Redlock::builder().node(client).tls_root_ca(ca.clone()));
        assert!(
            msg.starts_with("node 0: the redis::Client for `127.0.0.1:6380`"),
            "{msg}"
        );
        assert!(msg.contains("its own TLS certificates"), "{msg}");
        // A TLS address without certificates takes the builder's.
        let info = "rediss://127.0.0.1:6381".into_connection_info().unwrap();
        let with_ca = Redlock::builder().tls_root_ca(ca);
        assert!(has_params(
            &with_ca.client_of(0, &info.into_spec()).unwrap()
        ));
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn a_tls_address_without_the_feature_is_refused() {
        let addr = ConnectionAddr::TcpTls {
            host: "h".into(),
            port: 6380,
            insecure: false,
            tls_params: None,
        };
        let msg = config_err(Redlock::builder().node(addr));
        assert!(
            msg.contains("`tls` feature") && msg.starts_with("node 0"),
            "{msg}"
        );
    }
}
