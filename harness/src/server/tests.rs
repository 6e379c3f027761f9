use super::*;

#[test]
fn log_tail_takes_last_lines() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("redis.log"), "a\nb\nc\n").unwrap();
    assert_eq!(log_tail(dir.path(), 2), "b\nc");
    assert_eq!(log_tail(dir.path(), 10), "a\nb\nc");
}

#[test]
fn log_tail_falls_back_to_stdio() {
    let dir = TempDir::new().unwrap();
    std::fs::write(dir.path().join("stdio.log"), "bad config\n").unwrap();
    assert_eq!(log_tail(dir.path(), 5), "bad config");
}

#[test]
fn explicit_missing_binary_is_not_found() {
    let e = find_binary(Some(Path::new("/nonexistent/redis-server"))).unwrap_err();
    assert!(matches!(e, HarnessError::ServerNotFound { .. }), "{e}");
}

#[test]
fn aof_args() {
    let config = ServerConfig {
        binary: "redis-server".into(),
        persistence: Persistence::AofAlways,
        extra_args: vec!["--maxmemory".into(), "1mb".into()],
        ready_timeout: Duration::from_secs(1),
        tls: None,
        cluster: false,
    };
    let ports = Ports {
        port: 7000,
        tls_port: None,
        bus_port: None,
    };
    let a = args(&config, Path::new("/d"), ports);
    let a: Vec<_> = a.iter().map(|s| s.to_string_lossy().into_owned()).collect();
    let joined = a.join(" ");
    assert!(joined.contains("--port 7000 --bind 127.0.0.1 --save  --daemonize no"));
    assert!(joined.contains("--appendonly yes --appendfsync always"));
    assert!(joined.ends_with("--logfile /d/redis.log --maxmemory 1mb"));
}

/// A port taken between choosing and binding is reported as such (so `start` retries
/// with a new port), not as a generic exit.
#[tokio::test]
async fn taken_port_is_detected() {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = ServerConfig {
        binary: find_binary(None).unwrap(),
        persistence: Persistence::Memory,
        extra_args: Vec::new(),
        ready_timeout: Duration::from_secs(10),
        tls: None,
        cluster: false,
    };
    let dir = TempDir::new().unwrap();
    let ports = Ports {
        port,
        tls_port: None,
        bus_port: None,
    };
    let launched = launch(&config, dir.path(), ports).await.unwrap();
    assert!(matches!(launched, Launch::PortInUse(ref t) if t.contains("in use")));
}
