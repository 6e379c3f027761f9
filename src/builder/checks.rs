//! Mistakes in the node list that [`build`](super::RedlockBuilder::build) can see without
//! a connection: a URL with no scheme (an error), and a layout that weakens the quorum
//! (warnings, logged once at build; [`Redlock::diagnose`](crate::Redlock::diagnose)
//! checks the same and more against the live servers).

use super::redact_url;

/// Why `url` cannot be a node URL for want of a scheme, if that is the trouble:
/// `127.0.0.1:6379` would otherwise fail with redis-rs' "did not parse".
pub(super) fn missing_scheme(url: &str) -> Option<String> {
    if url.contains("://") {
        return None;
    }
    // Redacted as a URL would be: `user:secret@host` must not show the secret.
    let suggested = redact_url(&format!("redis://{url}"));
    let shown = suggested.trim_start_matches("redis://");
    Some(format!(
        "`{shown}` has no scheme: write it as `{suggested}` (or `rediss://` for TLS)"
    ))
}

/// The warnings for a node list of these endpoints (`host:port[/db]`, as nodes show
/// them), each a sentence that says what to change. An exact duplicate is an error of
/// `build` and not repeated here.
pub(super) fn layout_warnings<'a>(endpoints: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let endpoints: Vec<&str> = endpoints.into_iter().collect();
    let n = endpoints.len();
    let mut warnings = Vec::new();
    if n == 2 {
        warnings.push(
            "2 lock nodes: the quorum is both, so either node failing stops all locking; \
             that is less available than 1 node and no safer: use 3 or 5 independent nodes"
                .to_owned(),
        );
    } else if n >= 4 && n.is_multiple_of(2) {
        warnings.push(format!(
            "{n} lock nodes: an even count tolerates no more failures than {} nodes and \
             costs one more: use an odd number",
            n - 1
        ));
    }
    for (j, later) in endpoints.iter().enumerate() {
        let Some(server) = server_of(later) else {
            continue;
        };
        let first = endpoints[..j]
            .iter()
            .position(|earlier| server_of(earlier).as_ref() == Some(&server));
        if let Some(i) = first {
            warnings.push(format!(
                "node {j} ({later}) looks like the same server as node {i} ({}): one server \
                 votes twice, so two clients could hold a lock at once; list each server \
                 once (Redlock::diagnose checks by run_id)",
                endpoints[i]
            ));
        }
    }
    warnings
}

/// The server an endpoint reaches, as far as its text tells: the database is dropped
/// (two databases of one server are one server) and the names of this machine's
/// loopback interface are one name. No DNS lookup: `build` makes no I/O.
fn server_of(endpoint: &str) -> Option<(String, String)> {
    if endpoint.starts_with('/') {
        // A unix socket: its path is the server.
        return Some((endpoint.to_owned(), String::new()));
    }
    let addr = endpoint
        .split_once('/')
        .map_or(endpoint, |(addr, _db)| addr);
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = host.to_ascii_lowercase();
    let host = match host.as_str() {
        "localhost" | "127.0.0.1" | "::1" => "localhost".to_owned(),
        _ => host,
    };
    Some((host, port.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::{Error, Redlock};

    #[test]
    fn a_url_without_a_scheme_says_so_and_hides_the_password() {
        let msg = missing_scheme("127.0.0.1:6379").unwrap();
        assert!(msg.contains("has no scheme"), "{msg}");
        assert!(msg.contains("`redis://127.0.0.1:6379`"), "{msg}");
        let secret = missing_scheme("app:s3cret@10.0.0.1:6379").unwrap();
        assert!(!secret.contains("s3cret"), "{secret}");
        assert!(secret.contains("redis://app:***@10.0.0.1:6379"), "{secret}");
        assert_eq!(missing_scheme("redis://127.0.0.1:6379"), None);
        assert_eq!(missing_scheme("rediss://h:6380"), None);
    }

    #[test]
    fn build_rejects_a_url_without_a_scheme_naming_the_node() {
        let err = Redlock::builder()
            .node("redis://127.0.0.1:7001")
            .node("127.0.0.1:7002")
            .build()
            .unwrap_err();
        let Error::Config(msg) = err else {
            panic!("expected a config error, got {err:?}");
        };
        assert!(
            msg.starts_with("node 1: `127.0.0.1:7002` has no scheme"),
            "{msg}"
        );
    }

    fn warnings(endpoints: &[&str]) -> Vec<String> {
        layout_warnings(endpoints.iter().copied())
    }

    #[test]
    fn counts_that_weaken_the_quorum_are_warned_of() {
        assert!(warnings(&["a:1"]).is_empty());
        assert!(warnings(&["a:1", "b:1", "c:1"]).is_empty());
        assert!(warnings(&["a:1", "b:1", "c:1", "d:1", "e:1"]).is_empty());
        let two = warnings(&["a:1", "b:1"]);
        assert_eq!(two.len(), 1);
        assert!(two[0].starts_with("2 lock nodes"), "{two:?}");
        for n in [4, 6] {
            let names: Vec<String> = (0..n).map(|i| format!("h{i}:1")).collect();
            let w = layout_warnings(names.iter().map(String::as_str));
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].contains("even count"), "{w:?}");
        }
    }

    #[test]
    fn one_server_written_two_ways_is_warned_of() {
        let w = warnings(&["127.0.0.1:7001", "127.0.0.1:7002", "localhost:7001"]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "node 2 (localhost:7001) looks like the same server as node 0 (127.0.0.1:7001)"
            ),
            "{w:?}"
        );
        // IPv6 loopback, upper case, and another database of the same server.
        assert_eq!(warnings(&["LOCALHOST:1", "[::1]:2", "h:3"]).len(), 0);
        assert_eq!(warnings(&["LOCALHOST:1", "[::1]:1", "h:3"]).len(), 1);
        assert_eq!(warnings(&["h:1", "h:1/2", "g:1"]).len(), 1);
        // Different hosts or ports are different servers, as far as build can tell.
        assert!(warnings(&["a:1", "b:1", "a:2"]).is_empty());
        assert!(warnings(&["/tmp/a.sock", "/tmp/b.sock", "a:1"]).is_empty());
    }

    /// Collects what a subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn build_logs_each_warning_once() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let redlock = tracing::subscriber::with_default(subscriber, || {
            Redlock::builder()
                .nodes(["redis://127.0.0.1:7001", "redis://localhost:7001"])
                .build()
        });
        assert!(redlock.is_ok(), "warnings do not fail the build");
        let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.matches("WARN").count(), 2, "{log}");
        assert_eq!(log.matches("2 lock nodes").count(), 1, "{log}");
        assert_eq!(
            log.matches("looks like the same server").count(),
            1,
            "{log}"
        );
    }
}
