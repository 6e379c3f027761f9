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
        masters: None,
        error: None,
        config_error: None,
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
    assert!(judge(&r, Duration::from_millis(50), false).is_empty());
}

#[test]
fn node_count_and_timeout_warnings() {
    let one = [healthy(0, "a")];
    assert_eq!(
        kinds(&judge(&one, Duration::from_millis(50), false)),
        ["TooFewNodes"]
    );
    let four: Vec<_> = (0..4).map(|i| healthy(i, &format!("id{i}"))).collect();
    let f = judge(&four, Duration::from_secs(2), false);
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
    let f = judge(&r, Duration::from_millis(50), false);
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
    let f = judge(&r, Duration::from_millis(50), false);
    assert_eq!(kinds(&f), ["Unreachable"]);
    assert_eq!(f[0].severity(), Severity::Error);
    assert!(!f[0].blocks());
    assert!(
        f[0].to_string().contains("no answer within 50ms"),
        "{}",
        f[0]
    );
}

/// The error a node's ACL answers with when it denies `command`.
fn denied(index: usize, command: &str) -> NodeError {
    let reply =
        format!("-NOPERM User watcher has no permissions to run the '{command}' command\r\n");
    let err = redis::parse_redis_value(reply.as_bytes())
        .and_then(Value::extract_error)
        .unwrap_err();
    NodeError::new(
        index,
        format!("127.0.0.1:{}", 7000 + index).into(),
        NodeErrorKind::Redis(std::sync::Arc::new(err)),
    )
}

/// What `check_node` reports for a node that answers `PING` but whose ACL denies `INFO`
/// and `CONFIG GET`.
fn info_and_config_denied(index: usize) -> NodeReport {
    NodeReport {
        reachable: true,
        latency: Some(Duration::from_micros(100)),
        error: Some(denied(index, "info")),
        config_error: Some(denied(index, "config|get")),
        ..NodeReport::blank(index, format!("127.0.0.1:{}", 7000 + index).into())
    }
}

#[test]
fn a_node_that_denies_info_and_config_is_unverifiable_and_blocks() {
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[1] = info_and_config_denied(1);
    for fencing in [false, true] {
        let f = judge(&r, Duration::from_millis(50), fencing);
        assert_eq!(kinds(&f), ["Unverifiable"], "fencing {fencing}");
        assert_eq!(f[0].node(), Some(1));
        assert_eq!(f[0].severity(), Severity::Error);
        assert!(f[0].blocks(), "strict mode fails closed: {}", f[0]);
        match f[0].kind() {
            FindingKind::Unverifiable { denied, .. } => {
                assert_eq!(denied, &["INFO", "CONFIG GET appendfsync"]);
            }
            other => panic!("{other:?}"),
        }
        let text = f[0].to_string();
        for part in [
            "refused INFO and CONFIG GET appendfsync",
            "permission denied",
            "+info +config|get",
            "docs/operations.md",
        ] {
            assert!(text.contains(part), "{part:?} in {text}");
        }
        // It answers, and takes part in locking: nothing says it cannot vote.
        assert!(!text.contains("cannot vote"), "{text}");
    }
}

#[test]
fn a_node_that_denies_only_info_is_unverifiable() {
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[0] = NodeReport {
        appendfsync: Some("always".into()),
        config_error: None,
        ..info_and_config_denied(0)
    };
    let f = judge(&r, Duration::from_millis(50), false);
    assert_eq!(kinds(&f), ["Unverifiable"]);
    assert!(f[0].blocks());
    let text = f[0].to_string();
    assert!(
        text.contains("refused INFO (") && text.contains("`+info`"),
        "{text}"
    );
}

#[test]
fn a_check_that_times_out_is_unreachable_not_unverifiable() {
    // PING answered, then INFO got no answer: the node stopped answering, and cannot
    // vote now either; the quorum, not strict mode, deals with that.
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[2] = NodeReport {
        reachable: true,
        error: Some(NodeError::new(
            2,
            "h:1".into(),
            NodeErrorKind::Timeout(Duration::from_millis(50)),
        )),
        ..NodeReport::blank(2, "h:1".into())
    };
    let f = judge(&r, Duration::from_millis(50), true);
    assert_eq!(kinds(&f), ["Unreachable"]);
    assert!(!f[0].blocks());
    assert!(
        f[0].to_string()
            .contains("cannot vote while it does not answer"),
        "{}",
        f[0]
    );
}

#[test]
fn config_denied_is_a_warning_without_fencing_and_blocks_with_it() {
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[2].appendfsync = None;
    r[2].config_error = Some(denied(2, "config|get"));
    let f = judge(&r, Duration::from_millis(50), false);
    assert_eq!(kinds(&f), ["Unchecked"]);
    assert_eq!(f[0].severity(), Severity::Warning);
    assert!(!f[0].blocks());
    let f = judge(&r, Duration::from_millis(50), true);
    assert_eq!(kinds(&f), ["Unverifiable"]);
    assert_eq!(f[0].severity(), Severity::Error);
    assert!(f[0].blocks());
    let text = f[0].to_string();
    assert!(
        text.contains("fencing's one assumption") && text.contains("`+config|get`"),
        "{text}"
    );
    // With AOF off, appendfsync is moot: no AOF is the finding, whatever CONFIG says.
    r[2].aof_enabled = Some(false);
    let f = judge(&r, Duration::from_millis(50), true);
    assert_eq!(kinds(&f), ["NoFsyncAlways"]);
}

#[test]
fn with_fencing_no_fsync_always_is_an_error_that_blocks() {
    let mut r: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[0].aof_enabled = Some(false);
    r[0].appendfsync = Some("everysec".into());
    r[1].appendfsync = Some("everysec".into());
    let f = judge(&r, Duration::from_millis(50), false);
    assert_eq!(kinds(&f), ["NoFsyncAlways", "NoFsyncAlways"]);
    assert!(f
        .iter()
        .all(|f| f.severity() == Severity::Warning && !f.blocks()));
    let f = judge(&r, Duration::from_millis(50), true);
    assert_eq!(kinds(&f), ["NoFsyncAlways", "NoFsyncAlways"]);
    assert_eq!(
        f.iter().map(|f| f.node()).collect::<Vec<_>>(),
        [Some(0), Some(1)]
    );
    assert!(f
        .iter()
        .all(|f| f.severity() == Severity::Error && f.blocks()));
    // Every node with `appendfsync always`: nothing to refuse.
    let good: Vec<_> = (0..3).map(|i| healthy(i, &format!("id{i}"))).collect();
    assert!(judge(&good, Duration::from_millis(50), true).is_empty());
}

#[test]
fn only_a_node_that_does_not_answer_is_said_not_to_vote() {
    // Every finding about a node that answers (and so votes) must not claim otherwise.
    let mut r: Vec<_> = (0..5).map(|i| healthy(i, &format!("id{i}"))).collect();
    r[0] = info_and_config_denied(0);
    r[1].aof_enabled = Some(false);
    r[2].appendfsync = None;
    r[2].config_error = Some(denied(2, "config|get"));
    r[3].maxmemory_policy = Some("allkeys-lru".into());
    r[4].appendfsync = Some("no".into());
    for fencing in [false, true] {
        for mut finding in judge(&r, Duration::from_secs(2), fencing) {
            finding.fencing = fencing;
            let text = finding.to_string();
            assert!(!text.contains("vote"), "{text}");
        }
    }
}

#[test]
fn info_fills_the_node_report() {
    let info = "server_name:valkey\r\nvalkey_version:8.0.1\r\nrun_id:abc\r\nuptime_in_seconds:12\r\n\
                role:master\r\nmaxmemory_policy:allkeys-lru\r\naof_enabled:0\r\ncluster_enabled:1\r\n";
    let mut r = healthy(0, "x");
    r.apply(ServerInfo::parse(info));
    assert_eq!(r.server.as_deref(), Some("valkey"));
    assert_eq!(r.version.as_deref(), Some("8.0.1"));
    assert_eq!(r.run_id.as_deref(), Some("abc"));
    assert_eq!(r.uptime, Some(Duration::from_secs(12)));
    assert_eq!(r.maxmemory_policy.as_deref(), Some("allkeys-lru"));
    assert_eq!(
        (r.aof_enabled, r.cluster_enabled),
        (Some(false), Some(true))
    );
}

/// Code written against the crate-root paths still compiles: they name the types of
/// `diagnose`.
#[test]
fn the_crate_root_names_the_diagnose_types() {
    fn same<T>(_: Option<T>, _: Option<T>) {}
    same::<crate::HealthReport>(None::<super::HealthReport>, None);
    same::<crate::Severity>(None::<super::Severity>, None);
}
