use super::*;

fn io(kind: std::io::ErrorKind) -> RedisError {
    RedisError::from(std::io::Error::new(kind, "test"))
}

#[test]
fn a_broken_connection_is_tried_again_a_refused_or_silent_one_is_not() {
    use std::io::ErrorKind::*;
    for kind in [
        BrokenPipe,
        ConnectionReset,
        ConnectionAborted,
        UnexpectedEof,
    ] {
        assert!(broke(&io(kind), true), "{kind:?} on a connection in use");
        assert!(broke(&io(kind), false), "{kind:?} while connecting");
    }
    // The node is down or unreachable: connecting again at once cannot help.
    for kind in [ConnectionRefused, TimedOut, NotFound, Other] {
        assert!(!broke(&io(kind), false), "{kind:?} while connecting");
    }
    // A reply the server gave is no broken connection.
    let server = RedisError::from((ErrorKind::Server(ServerErrorKind::ResponseError), "ERR x"));
    assert!(!broke(&server, true));
}

#[test]
fn the_pause_between_tries_grows_to_a_cap() {
    let pauses: Vec<u64> = (2..=12)
        .map(|t| reconnect_pause(t).as_millis() as u64)
        .collect();
    assert_eq!(pauses, [1, 2, 4, 8, 16, 16, 16, 16, 16, 16, 16]);
    assert_eq!(reconnect_pause(u32::MAX), Duration::from_millis(16));
}

fn unconnected_node() -> Node {
    let client = Client::open("redis://127.0.0.1:1").expect("url");
    let second = Duration::from_secs(1);
    Node::new(0, client, second, second, None)
}

/// A release of a value waits for every request that may still set it on the node, and
/// for no other value's.
#[tokio::test]
async fn settled_waits_for_the_values_own_setters_only() {
    use futures::FutureExt;
    let node = unconnected_node();
    let (a, b): (Arc<str>, Arc<str>) = ("a".into(), "b".into());
    assert!(
        node.settled(&a).now_or_never().is_some(),
        "no setter: settled"
    );
    let first = node.setting(&a);
    let second = node.setting(&a);
    let other = node.setting(&b);
    let settled = node.settled(&a);
    tokio::pin!(settled);
    assert!(settled.as_mut().now_or_never().is_none());
    drop(first);
    drop(other);
    assert!(
        settled.as_mut().now_or_never().is_none(),
        "one setter still out"
    );
    drop(second);
    assert!(settled.as_mut().now_or_never().is_some());
    assert!(lock(&node.setters.counts).is_empty(), "counts forgotten");
}
