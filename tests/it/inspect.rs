//! Nodes given as URL, connection info and client; owner labels in the stored values;
//! `Redlock::inspect` of a held lock, a free key, a split and a node that is down.
//! Against real servers.

use std::time::Duration;

use redis::IntoConnectionInfo;
use tokio_redlock::{Error, Redlock};

use crate::support::*;

const TTL: Duration = Duration::from_secs(10);

/// The settings of `support::builder`, without its nodes.
fn timings(b: tokio_redlock::RedlockBuilder) -> tokio_redlock::RedlockBuilder {
    b.retry_count(3)
        .retry_delay(Duration::from_millis(20))
        .retry_jitter(Duration::from_millis(20))
        .node_timeout(Duration::from_millis(250))
}

/// Item 1: a cluster whose nodes are given as a URL, a `ConnectionInfo` and a
/// `redis::Client` locks like one given as URLs, and excludes a manager that has them
/// as URLs (same keys, same servers).
#[tokio::test]
async fn nodes_given_as_url_connection_info_and_client_lock_together() {
    let cluster = cluster(3).await;
    let urls = cluster.urls();
    let info = urls[1].as_str().into_connection_info().unwrap();
    let client = redis::Client::open(urls[2].as_str()).unwrap();
    let mixed = timings(
        Redlock::builder()
            .node(urls[0].as_str())
            .node(info)
            .node(client),
    )
    .build()
    .unwrap();
    assert_eq!(mixed.node_count(), 3);
    let by_urls = redlock(&cluster);

    let guard = bounded(mixed.acquire("mixed", TTL)).await.unwrap();
    let mut conns = direct(&cluster).await;
    let c = conns.clone();
    eventually("the value on every node", || {
        let mut c = c.clone();
        async move { values(&mut c, "mixed").await.iter().all(Option::is_some) }
    })
    .await;
    let vals = values(&mut conns, "mixed").await;
    assert!(vals.iter().all(|v| v == &vals[0]), "{vals:?}");

    let err = bounded(by_urls.try_acquire("mixed", TTL))
        .await
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    guard.release().await.unwrap();
    eventually_gone(&cluster, "mixed").await;
    let other = bounded(by_urls.try_acquire("mixed", TTL)).await.unwrap();
    // And the other way round.
    let err = bounded(mixed.try_acquire("mixed", TTL)).await.unwrap_err();
    assert!(err.is_conflict(), "{err}");
    other.release().await.unwrap();
}

/// Item 6: with a label, an operator's `GET` shows `<label>:<uuid v4>`, and `inspect`
/// reads the label back; without one the value stays 32 hex digits.
#[tokio::test]
async fn owner_label_shows_in_get_and_in_inspect() {
    let cluster = cluster(3).await;
    let labelled = builder(&cluster)
        .owner_label("billing-worker-7")
        .build()
        .unwrap();
    let mut conns = direct(&cluster).await;

    let guard = bounded(labelled.acquire("payment:42", TTL)).await.unwrap();
    let c = conns.clone();
    eventually("the value on every node", || {
        let mut c = c.clone();
        async move {
            values(&mut c, "payment:42")
                .await
                .iter()
                .all(Option::is_some)
        }
    })
    .await;
    for value in values(&mut conns, "payment:42").await {
        let value = value.unwrap();
        let (label, random) = value.split_once(':').expect("label:uuid");
        assert_eq!(label, "billing-worker-7");
        let uuid = uuid::Uuid::try_parse(random).expect("a UUID");
        assert_eq!(uuid.get_version_num(), 4, "{value}");
        assert_eq!(random, uuid.simple().to_string(), "simple form: {value}");
    }

    // Any manager on the same nodes can inspect, labelled or not.
    let info = bounded(redlock(&cluster).inspect("payment:42"))
        .await
        .unwrap();
    assert!(info.held_by_quorum(), "{info}");
    assert_eq!(info.holders().len(), 1, "{info}");
    let holder = &info.holders()[0];
    assert_eq!(holder.label(), Some("billing-worker-7"));
    assert_eq!(holder.node_count(), 3);
    assert!(
        holder.min_ttl() <= TTL && holder.min_ttl() > TTL / 2,
        "{info}"
    );
    let text = info.to_string();
    assert!(text.contains("billing-worker-7: on 3 node(s)"), "{text}");
    guard.release().await.unwrap();

    // Without a label: plain 128-bit hex, no label in inspect.
    let plain = redlock(&cluster);
    let guard = bounded(plain.acquire("payment:43", TTL)).await.unwrap();
    let info = bounded(plain.inspect("payment:43")).await.unwrap();
    let stored = values(&mut conns, "payment:43").await;
    guard.release().await.unwrap();
    assert!(info.held_by_quorum(), "{info}");
    assert_eq!(info.holders()[0].label(), None, "{info}");
    for value in stored.into_iter().flatten() {
        assert!(
            value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()),
            "{value}"
        );
    }
}

/// Item 6: build() refuses labels that break the rule, naming the rule.
#[tokio::test]
async fn bad_owner_labels_are_refused_at_build() {
    let cluster = cluster(1).await;
    for (label, rule) in [
        ("", "empty"),
        ("worker:7", "separates the label"),
        ("two words", "only ASCII letters, digits and `-_.@/`"),
        (&"w".repeat(65), "64-byte limit"),
    ] {
        match builder(&cluster).owner_label(label).build() {
            Err(Error::Config(msg)) => assert!(msg.contains(rule), "{label:?}: {msg}"),
            other => panic!("{label:?}: expected a config error, got {other:?}"),
        }
    }
}

/// Item 5: a key no node stores is free everywhere.
#[tokio::test]
async fn inspect_a_free_key() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    let info = bounded(redlock.inspect("nobody")).await.unwrap();
    assert!(!info.held_by_quorum());
    assert!(info.holders().is_empty(), "{info}");
    assert_eq!(info.free_nodes(), [0, 1, 2]);
    assert_eq!(info.unknown_nodes(), 0);
    assert_eq!((info.node_count(), info.quorum()), (3, 2));
    assert!(info.to_string().contains("free"), "{info}");
    // A read changes nothing.
    let mut conns = direct(&cluster).await;
    assert!(values(&mut conns, "nobody")
        .await
        .iter()
        .all(Option::is_none));

    // A key of another type (someone else's data under the lock's name) is that node's
    // failure, with Redis's reason, not a holder.
    let _: i64 = redis::cmd("LPUSH")
        .arg("a-list")
        .arg("x")
        .query_async(&mut conns[1])
        .await
        .unwrap();
    let info = bounded(redlock.inspect("a-list")).await.unwrap();
    assert!(info.holders().is_empty(), "{info}");
    assert_eq!(info.free_nodes(), [0, 2]);
    assert_eq!(info.errors().len(), 1, "{info}");
    assert_eq!(info.errors()[0].node(), 1);
    assert!(info.errors()[0].to_string().contains("WRONGTYPE"), "{info}");
}

/// Item 5: two values on different nodes, set directly (as after a crash or by two
/// clients): two holders, no quorum, each with its own nodes and ttl.
#[tokio::test]
async fn inspect_a_split() {
    let cluster = cluster(5).await;
    let redlock = redlock(&cluster);
    let mut conns = direct(&cluster).await;
    let a = "worker-a:4f1c0b6e2a4d4c7f8e3b5a6d7c8e9f0a";
    let b = "0123456789abcdef0123456789abcdef";
    set_on(&mut conns[0], "split", a, 60_000).await;
    set_on(&mut conns[3], "split", a, 30_000).await;
    set_on(&mut conns[1], "split", b, 20_000).await;
    set_on(&mut conns[2], "split", b, 50_000).await;

    let info = bounded(redlock.inspect("split")).await.unwrap();
    assert!(!info.held_by_quorum(), "{info}");
    assert_eq!(info.holders().len(), 2, "{info}");
    assert_eq!(info.free_nodes(), [4]);
    let by_label = |l: Option<&str>| info.holders().iter().find(|h| h.label() == l).unwrap();
    let ha = by_label(Some("worker-a"));
    assert_eq!(ha.nodes(), [0, 3]);
    assert!(ha.min_ttl() <= Duration::from_secs(30) && ha.min_ttl() > Duration::from_secs(25));
    let hb = by_label(None);
    assert_eq!(hb.nodes(), [1, 2]);
    assert!(hb.min_ttl() <= Duration::from_secs(20) && hb.min_ttl() > Duration::from_secs(15));

    // One more node with `a` makes it a quorum (3 of 5).
    set_on(&mut conns[4], "split", a, 40_000).await;
    let info = bounded(redlock.inspect("split")).await.unwrap();
    assert!(info.held_by_quorum(), "{info}");
    assert_eq!(info.holders()[0].nodes(), [0, 3, 4]);
    assert!(info.free_nodes().is_empty());
}

/// Item 5: a node that is down is unknown, with its error, and the others still
/// report; the call itself succeeds within the node timeout.
#[tokio::test]
async fn inspect_with_a_node_down() {
    let cluster = cluster(3).await;
    let redlock = redlock(&cluster);
    warm(&redlock).await;
    let guard = bounded(redlock.acquire("down", TTL)).await.unwrap();
    let c = direct(&cluster).await;
    eventually("the value on every node", || {
        let mut c = c.clone();
        async move { values(&mut c, "down").await.iter().all(Option::is_some) }
    })
    .await;
    cluster.node(2).kill().await.unwrap();

    let start = std::time::Instant::now();
    let info = bounded(redlock.inspect("down")).await.unwrap();
    // Bounded by the node timeout (250 ms here), with room for a loaded machine.
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(info.unknown_nodes(), 1, "{info}");
    assert_eq!(info.errors()[0].node(), 2);
    assert!(info.held_by_quorum(), "{info}");
    assert_eq!(info.holders().len(), 1);
    assert_eq!(info.holders()[0].nodes(), [0, 1]);
    assert!(info.to_string().contains("unknown: "), "{info}");
    guard.release().await.unwrap();
}
