//! Unit tests of the error texts and the `source()` chain.

use std::sync::Arc;

use super::*;

#[test]
fn error_is_send_sync_static() {
    fn check<T: std::error::Error + Send + Sync + 'static>() {}
    check::<Error>();
    check::<NodeError>();
}

#[test]
fn no_quorum_keeps_node_causes_as_sources() {
    let causes = NodeErrors(vec![NodeError::new(
        1,
        "127.0.0.1:1".into(),
        NodeErrorKind::Timeout(Duration::from_millis(50)),
    )]);
    let err = Error::NoQuorum {
        resource: "r".into(),
        attempts: 3,
        ok: 1,
        failed: 2,
        needed: 2,
        nodes: 3,
        causes,
    };
    let source = std::error::Error::source(&err).expect("has a source");
    assert!(source.to_string().contains("no answer within 50ms"));
    assert!(source.downcast_ref::<NodeErrors>().is_some());
    assert!(err.is_timeout());
    assert_eq!(err.attempts(), Some(3));
    assert!(err.to_string().starts_with("no quorum for `r`"));
}

fn node_error(node: usize, kind: NodeErrorKind) -> NodeError {
    NodeError::new(node, format!("10.0.0.{node}:6379").into(), kind)
}

fn no_quorum(nodes: usize, ok: usize, causes: Vec<NodeError>) -> Error {
    Error::NoQuorum {
        resource: "job:1".into(),
        attempts: 11,
        ok,
        failed: causes.len(),
        needed: nodes / 2 + 1,
        nodes,
        causes: NodeErrors(causes),
    }
}

/// Every message in the `source()` chain, top first.
fn chain(err: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![err.to_string()];
    let mut next = err.source();
    while let Some(e) = next {
        out.push(e.to_string());
        next = e.source();
    }
    out
}

#[test]
fn no_quorum_names_the_first_cause_and_the_nodes_not_awaited() {
    let timeout = |n| node_error(n, NodeErrorKind::Timeout(Duration::from_millis(50)));
    let msg = no_quorum(3, 0, vec![timeout(0), timeout(2)]).to_string();
    assert!(msg.contains("0 of 3 nodes agreed, 2 needed"), "{msg}");
    assert!(
        msg.contains("2 failed, 1 locked elsewhere or not awaited"),
        "{msg}"
    );
    assert!(
        msg.contains("first failure: node 0 (10.0.0.0:6379): no answer within 50ms"),
        "{msg}"
    );
    assert!(msg.contains("after 11 attempt(s)"), "{msg}");
    // Every node accounted for: nothing said of nodes that do not exist.
    let all = no_quorum(3, 1, vec![timeout(0), timeout(2)]).to_string();
    assert!(!all.contains("not awaited"), "{all}");
    // No cause, no "first failure".
    let none = no_quorum(3, 1, Vec::new()).to_string();
    assert!(!none.contains("first failure"), "{none}");
}

#[test]
fn node_errors_group_nodes_with_the_same_cause() {
    let timeout = |n| node_error(n, NodeErrorKind::Timeout(Duration::from_millis(50)));
    let bad = node_error(1, NodeErrorKind::Protocol("OK".into()));
    let errors = NodeErrors(vec![timeout(0), bad, timeout(2), timeout(3)]);
    assert_eq!(
        errors.to_string(),
        "node 0 (10.0.0.0:6379), node 2 (10.0.0.2:6379) and node 3 (10.0.0.3:6379): \
         no answer within 50ms; node 1 (10.0.0.1:6379): unexpected reply: OK"
    );
}

#[test]
fn each_level_of_the_chain_adds_something() {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    let redis = |n| {
        node_error(
            n,
            NodeErrorKind::Redis(Arc::new(redis::RedisError::from(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused,
            )))),
        )
    };
    let timeout = node_error(1, NodeErrorKind::Timeout(Duration::from_millis(50)));
    let err = no_quorum(5, 0, vec![redis(0), timeout, redis(2)]);
    let levels = chain(&err);
    // The summary (with the first cause), then every node's failure; the Redis and
    // I/O errors below would only repeat the text.
    assert_eq!(levels.len(), 2, "{levels:#?}");
    for pair in levels.windows(2) {
        assert!(!pair[0].contains(&pair[1]), "{levels:#?}");
    }
    assert!(levels[1].contains("no answer within 50ms"), "{levels:#?}");
    assert_eq!(
        levels.join(" | ").matches(&refused.to_string()).count(),
        2,
        "{levels:#?}"
    );
    // A node's error alone says it all, once.
    assert_eq!(chain(&redis(0)).len(), 1);
}

/// A port nothing listens on: bound, then freed.
fn refused_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn a_refused_port_is_named_once_in_the_message_and_once_below() {
    let ports = [refused_port(), refused_port(), refused_port()];
    let redlock = crate::Redlock::builder()
        .nodes(ports.iter().map(|p| format!("redis://127.0.0.1:{p}")))
        .retry_count(0)
        .build()
        .unwrap();
    let err = redlock
        .acquire("job:1", Duration::from_secs(1))
        .await
        .unwrap_err();
    let levels = chain(&err);
    let text = levels.join(" | ");
    assert!(err.is_no_quorum(), "{text}");
    // Two refusals put the quorum out of reach; the third node is not awaited.
    assert!(
        levels[0].contains("2 failed, 1 locked elsewhere or not awaited"),
        "{text}"
    );
    assert!(levels[0].contains("first failure: node "), "{text}");
    assert!(levels[0].contains("Connection refused"), "{text}");
    // Once in the summary, once in the per-node list (both nodes in one group).
    assert_eq!(text.matches("Connection refused").count(), 2, "{text}");
    assert!(levels[1].contains(" and node "), "{text}");
}

#[tokio::test]
async fn an_unresolvable_host_is_named_once_in_the_message_and_once_below() {
    // `.invalid` never resolves (RFC 6761); without DNS the lookup fails too.
    let redlock = crate::Redlock::builder()
        .node("redis://no-such-host.invalid:6379")
        .retry_count(0)
        .connect_timeout(Duration::from_secs(5))
        .node_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let err = redlock
        .acquire("job:1", Duration::from_secs(1))
        .await
        .unwrap_err();
    let levels = chain(&err);
    let text = levels.join(" | ");
    let cause = err.node_errors()[0].to_string();
    let cause = cause.split_once("): ").map_or("", |(_, c)| c);
    assert!(!cause.is_empty() && !err.is_timeout(), "{text}");
    assert!(levels[0].contains(cause), "{text}");
    assert_eq!(text.matches(cause).count(), 2, "{text}");
}

#[test]
fn predicates_name_one_variant_each() {
    let config = Error::Config("x".into());
    assert!(config.is_config() && !config.is_expired() && !config.is_unhealthy());
    let expired = Error::Expired {
        resource: "r".into(),
        attempts: 1,
        elapsed: Duration::from_millis(5),
        ttl: Duration::from_millis(3),
    };
    assert!(expired.is_expired() && !expired.is_config() && !expired.is_lock_lost());
    let unhealthy = Error::Unhealthy {
        findings: Vec::new(),
    };
    assert!(unhealthy.is_unhealthy() && !unhealthy.is_config());
    let lost = Error::LockLost {
        resource: "r".into(),
        reason: LostReason::ValidityEnded,
    };
    assert!(!lost.is_expired(), "a lost lock is not a late grant");
}

/// "Expired" names one thing, a grant that came too late (`Error::Expired`); the lost
/// lock's reason is `ValidityEnded`, and its former name still matches it.
#[test]
fn the_former_name_of_validity_ended_still_matches() {
    let reason = LostReason::ValidityEnded;
    assert!(matches!(reason, LostReason::Expired));
    assert_eq!(LostReason::Expired, LostReason::ValidityEnded);
    assert_eq!(reason.to_string(), "its validity ended");
}
