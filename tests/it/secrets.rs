//! What operators must be able to trust: secrets never shown, resource names of any
//! bytes up to the limit, and TLS nodes, against real servers.

use std::time::Duration;

use tokio_redlock::{Error, Redlock};
use tokio_redlock_harness::Cluster;

use crate::acl::{acl_user, urls_as, LOCKER_RULE};
use crate::ops::{cmd, full_chain, TTL};
use crate::support::*;

#[tokio::test]
async fn passwords_never_show() {
    let cluster = cluster(3).await;
    acl_user(&cluster, "locker", "pw-right-4", LOCKER_RULE).await;
    let secret = "pw-wrong-5";
    let mut urls = urls_as(&cluster, "locker", secret);
    // And one that cannot be reached at all.
    urls.push(format!("redis://locker:{secret}@127.0.0.1:1"));
    urls.push(format!("redis://:{secret}@127.0.0.1:2/3"));
    let builder = Redlock::builder()
        .nodes(&urls)
        .node_timeout(Duration::from_millis(250))
        .retry_count(1)
        .retry_delay(Duration::from_millis(5));
    assert!(!format!("{builder:?}").contains(secret));
    let redlock = builder.build().unwrap();
    assert!(!format!("{redlock:?}").contains(secret));
    let err = bounded(redlock.acquire("secret", TTL)).await.unwrap_err();
    assert!(err.is_no_quorum(), "{err}");
    let chain = full_chain(&err);
    // redis-rs reports WRONGPASS as an authentication failure.
    assert!(
        chain.contains("authentication failed"),
        "the cause is reported: {chain}"
    );
    for text in [chain, format!("{err:?}"), format!("{err:#?}")] {
        assert!(!text.contains(secret), "{text}");
    }
    let report = bounded(redlock.diagnose()).await;
    for text in [report.to_string(), format!("{report:?}")] {
        assert!(!text.contains(secret), "{text}");
        assert!(text.contains("authentication failed"), "{text}");
    }
    let bad = Redlock::builder()
        .node(format!("redis://locker:{secret}@[::1"))
        .build()
        .unwrap_err();
    assert!(!format!("{bad} {bad:?}").contains(secret), "{bad}");
}

#[tokio::test]
async fn resource_names_may_be_any_bytes_up_to_the_limit() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    for name in ["ключ:🔒", "with space\r\nand\0nul", "*?[glob]", "{tag}x"] {
        let g = bounded(redlock.acquire(name, TTL)).await.unwrap();
        assert!(
            values(&mut conns, name).await.iter().any(Option::is_some),
            "{name:?}"
        );
        g.release().await.unwrap();
    }
    let err = redlock.acquire("", TTL).await.unwrap_err();
    assert!(
        matches!(err, Error::Config(_)) && err.to_string().contains("empty"),
        "{err}"
    );
    let longest = "x".repeat(64 * 1024);
    let g = bounded(redlock.acquire(&longest, TTL)).await.unwrap();
    g.release().await.unwrap();
    let err = redlock
        .acquire(&format!("{longest}x"), TTL)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("65536-byte limit"), "{err}");
}

#[cfg(feature = "tls")]
mod tls {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };

    struct Pki {
        ca: String,
        server_cert: String,
        server_key: String,
        client_cert: String,
        client_key: String,
    }

    fn pki() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "tokio-redlock test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().unwrap();
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name
                .push(DnType::CommonName, "tokio-redlock test");
            p.extended_key_usages = vec![usage];
            let cert = p.signed_by(&key, &issuer).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server_cert, server_key) = leaf(
            vec!["127.0.0.1".into(), "localhost".into()],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(vec![], ExtendedKeyUsagePurpose::ClientAuth);
        Pki {
            ca: ca_cert.pem(),
            server_cert,
            server_key,
            client_cert,
            client_key,
        }
    }

    #[tokio::test]
    async fn locks_over_tls_with_a_private_ca_and_client_certificates() {
        // The crate installs no crypto provider (src/tls.rs): the application does, as
        // here. Ignoring the result: another TLS test may have installed it already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let pki = pki();
        let cluster = bounded(
            Cluster::builder()
                .nodes(3)
                .tls(&pki.server_cert, &pki.server_key, &pki.ca)
                .start(),
        )
        .await
        .expect("TLS cluster starts");
        let urls: Vec<String> = cluster
            .nodes()
            .iter()
            .map(|n| n.tls_url().unwrap())
            .collect();
        assert!(urls.iter().all(|u| u.starts_with("rediss://")));
        let base = || {
            Redlock::builder()
                .nodes(&urls)
                // Generous: a first TLS handshake in a debug build on a loaded 2-core
                // machine can take a good part of a second, and a timeout would hide
                // the certificate error this test looks for.
                .node_timeout(Duration::from_secs(3))
                .connect_timeout(Duration::from_secs(3))
                .retry_count(0)
        };
        let redlock = base().tls_root_ca(pki.ca.as_bytes()).build().unwrap();
        let mut g = bounded(redlock.acquire("tls:one", TTL)).await.unwrap();
        bounded(g.extend(TTL)).await.unwrap();
        bounded(g.release()).await.unwrap();
        let report = bounded(redlock.diagnose()).await;
        assert!(report.nodes().iter().all(|n| n.reachable), "{report}");

        // Without the private CA the server is not trusted: a failed vote, with the cause.
        let untrusting = base().build().unwrap();
        let err = bounded(untrusting.acquire("tls:two", TTL))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
        // The attempt ends as soon as no quorum is possible: 2 of the 3 causes or more.
        assert!(err.node_errors().len() >= 2, "{err}");
        let chain = full_chain(&err);
        assert!(chain.to_lowercase().contains("certificate"), "{chain}");

        // Servers that require client certificates accept ours.
        for mut c in direct(&cluster).await {
            cmd(&mut c, &["CONFIG", "SET", "tls-auth-clients", "yes"]).await;
        }
        let mutual = base()
            .tls_root_ca(pki.ca.as_bytes())
            .tls_client_cert(pki.client_cert.as_bytes(), pki.client_key.as_bytes())
            .build()
            .unwrap();
        assert!(!format!("{mutual:?}").contains("PRIVATE KEY"));
        bounded(mutual.acquire("tls:three", TTL))
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
        let anonymous = base().tls_root_ca(pki.ca.as_bytes()).build().unwrap();
        let err = bounded(anonymous.acquire("tls:four", TTL))
            .await
            .unwrap_err();
        assert!(err.is_no_quorum(), "{err}");
    }
}

/// The strings of a reply, joined: enough to search an `ACL LOG`.
pub(crate) fn flatten(value: &redis::Value) -> String {
    match value {
        redis::Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        redis::Value::SimpleString(s) => s.clone(),
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().map(flatten).collect::<Vec<_>>().join(" ")
        }
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| format!("{} {}", flatten(k), flatten(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => format!("{other:?}"),
    }
}
