//! Unit tests of the findings logic and reply parsing.

use super::*;
use crate::error::NodeErrorKind;

fn healthy(index: usize, run_id: &str) -> NodeReport {
    NodeReport {
        index,
        endpoint: format!("127.0.0.1:{}", 7000 + index).into(),
        reachable: true,
        latency: Some(Duration::from_micros(100)),
        server: Some("redis".into()),
        version: Some("7.0.15".into()),
        role: Some("master".into()),
        run_id: Some(run_id.into()),
        maxmemory_policy: Some("noeviction".into()),
        aof_enabled: Some(true),
        appendfsync: Some("always".into()),
        uptime: Some(Duration::from_secs(60)),
        cluster_enabled: Some(false),
        error: None,
    }
}

fn kinds(findings: &[Finding]) -> Vec<String> {
    findings
        .iter()
        .map(|f| {
            format!("{:?}", f.kind())
                .split(['(', ' ', '{'])
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[test]
fn three_good_nodes_have_no_findings() {
    let r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    assert!(judge(&r, Duration::from_millis(50)).is_empty());
}

#[test]
fn node_count_and_timeout_warnings() {
    let one = [healthy(0, "a")];
    assert_eq!(
        kinds(&judge(&one, Duration::from_millis(50))),
        ["TooFewNodes"]
    );
    let four: Vec<_> = (0..4).map(|i| healthy(i, &format!("id{i}"))).collect();
    let f = judge(&four, Duration::from_secs(2));
    assert_eq!(kinds(&f), ["EvenNodes", "SlowNodeTimeout"]);
    assert!(f
        .iter()
        .all(|f| f.severity() == Severity::Warning && f.node().is_none()));
}

#[test]
fn each_misconfiguration_is_named() {
    let mut r: Vec<_> = (0..5).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[1].run_id = Some("id0".into());
    r[2].role = Some("slave".into());
    r[3].maxmemory_policy = Some("volatile-ttl".into());
    r[4].appendfsync = Some("everysec".into());
    let f = judge(&r, Duration::from_millis(50));
    assert_eq!(
        kinds(&f),
        ["SameServer", "Replica", "Eviction", "NoFsyncAlways"]
    );
    assert_eq!(
        f.iter().map(|f| f.node()).collect::<Vec<_>>(),
        [Some(1), Some(2), Some(3), Some(4)]
    );
    assert_eq!(f[0].severity(), Severity::Error);
    assert!(
        f[0].to_string().contains("same server as node 0"),
        "{}",
        f[0]
    );
    assert!(f[2].to_string().contains("noeviction"), "{}", f[2]);
    assert_eq!(f[3].severity(), Severity::Warning);
    assert!(f[0].blocks() && f[1].blocks() && f[2].blocks() && !f[3].blocks());
}

#[test]
fn unreachable_is_an_error_that_does_not_block() {
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[2] = NodeReport {
        reachable: false,
        error: Some(NodeError::new(
            2,
            "h:1".into(),
            NodeErrorKind::Timeout(Duration::from_millis(50)),
        )),
        ..NodeReport::blank(2, "h:1".into())
    };
    let f = judge(&r, Duration::from_millis(50));
    assert_eq!(kinds(&f), ["Unreachable"]);
    assert_eq!(f[0].severity(), Severity::Error);
    assert!(!f[0].blocks());
    assert!(
        f[0].to_string().contains("no answer within 50ms"),
        "{}",
        f[0]
    );
}

#[test]
fn info_and_config_replies_parse() {
    let info = "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n\
                run_id:abc\r\nuptime_in_seconds:12\r\n\r\n# Replication\r\nrole:master\r\n\
                maxmemory_policy:allkeys-lru\r\naof_enabled:0\r\ncluster_enabled:1\r\n";
    let mut r = healthy(0, "x");
    apply_info(&mut r, &parse_info(info));
    assert_eq!(r.server.as_deref(), Some("valkey"));
    assert_eq!(r.version.as_deref(), Some("8.0.1"));
    assert_eq!(r.run_id.as_deref(), Some("abc"));
    assert_eq!(r.uptime, Some(Duration::from_secs(12)));
    assert_eq!(r.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert_eq!(
        (r.aof_enabled, r.cluster_enabled),
        (Some(false), Some(true))
    );
    let reply = Value::Array(vec![
        Value::BulkString(b"appendfsync".to_vec()),
        Value::BulkString(b"everysec".to_vec()),
    ]);
    assert_eq!(
        config_value(&reply, "appendfsync").as_deref(),
        Some("everysec")
    );
    assert_eq!(config_value(&Value::Array(vec![]), "appendfsync"), None);
}
