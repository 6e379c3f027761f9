//! `rediss://` nodes through rustls, with the crypto provider the application chose.
//!
//! redis-rs 1.x builds the `rustls::ClientConfig` of each connection itself, with
//! `ClientConfig::builder()`: that takes the process-wide default `CryptoProvider`, and
//! redis-rs offers no way to pass a provider or a config instead (no `TlsCertificates`
//! field, no connection option). Installing a default from here was rejected: the choice
//! belongs to the application, and an application that installs its own afterwards gets
//! an `Err` from rustls, which it usually `expect`s. Left alone, rustls would pick a
//! provider by itself at the first connection when exactly one is compiled in (installing
//! it process-wide all the same), and panic inside redis-rs when two are. So
//! [`require_crypto_provider`] makes a missing provider a configuration error at
//! `build()`, whose message says how to install one.

use redis::{ConnectionAddr, RedisResult};

use crate::error::Error;

/// PEM bytes for `rediss://` nodes. Never printed.
#[derive(Clone, Default)]
pub(crate) struct TlsSettings {
    pub(crate) root_ca: Option<Vec<u8>>,
    pub(crate) client: Option<(Vec<u8>, Vec<u8>)>,
}

impl TlsSettings {
    /// A client for `info`: with these certificates when it is a TLS address and any
    /// are set, else as given (system roots for TLS, or the parameters it carries).
    pub(crate) fn client(&self, info: redis::ConnectionInfo) -> RedisResult<redis::Client> {
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        match self.certificates() {
            Some(certificates) if tls => redis::Client::build_with_tls(info, certificates),
            _ => redis::Client::open(info),
        }
    }

    /// The certificates to use instead of the system roots, if any are set.
    pub(crate) fn certificates(&self) -> Option<redis::TlsCertificates> {
        let Self { root_ca, client } = self;
        if root_ca.is_none() && client.is_none() {
            return None;
        }
        Some(redis::TlsCertificates {
            client_tls: client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: root_ca.clone(),
        })
    }
}

/// `Err(Error::Config)` when node `index` connects over TLS and the process has no rustls
/// crypto provider installed; installs none itself (see the module docs).
pub(crate) fn require_crypto_provider(index: usize, client: &redis::Client) -> Result<(), Error> {
    let tls = matches!(
        client.get_connection_info().addr(),
        ConnectionAddr::TcpTls { .. }
    );
    if tls && rustls::crypto::CryptoProvider::get_default().is_none() {
        return Err(Error::Config(format!(
            "node {index} uses TLS, and no rustls crypto provider is installed in this \
             process: install one before build(), e.g. \
             `rustls::crypto::ring::default_provider().install_default()` (or aws_lc_rs) \
             at the start of main; this crate never installs one for you"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use rustls::crypto::CryptoProvider;

    use crate::{Error, Redlock};

    /// The whole sequence in one test: the provider is process-wide, and no other unit
    /// test connects over TLS, so none is installed when it starts.
    #[test]
    fn build_asks_the_application_for_a_provider_and_installs_none() {
        assert!(
            CryptoProvider::get_default().is_none(),
            "another unit test installed a crypto provider; this test needs a process without one"
        );
        let tls = || {
            Redlock::builder().nodes([
                "redis://127.0.0.1:1",
                "rediss://127.0.0.1:2",
                "rediss://127.0.0.1:3",
            ])
        };
        match tls().build() {
            Err(Error::Config(msg)) => {
                assert!(msg.starts_with("node 1 uses TLS"), "{msg}");
                assert!(msg.contains("install_default()"), "{msg}");
            }
            other => panic!("expected a config error, got {other:?}"),
        }
        assert!(
            CryptoProvider::get_default().is_none(),
            "build() installed a provider"
        );
        // Plain nodes need no provider.
        Redlock::builder()
            .node("redis://127.0.0.1:1")
            .build()
            .expect("no TLS, no provider needed");
        // The application installs its own after all that, without an error (an
        // `expect` here is what used to panic), and build() then uses it.
        rustls::crypto::ring::default_provider()
            .install_default()
            .expect("nothing was installed before the application's own provider");
        tls()
            .tls_root_ca(b"not checked until the first connection".to_vec())
            .build()
            .expect("a provider is installed");
    }
}
