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
