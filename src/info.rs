//! What a node says about itself: the `INFO` fields and the `CONFIG GET appendfsync`
//! value that this crate reads, asked and parsed one way for both readers, the restart
//! quarantine (`node/restart.rs`, on every new connection) and the health checks (`diagnose/`).

use std::collections::HashMap;
use std::time::Duration;

use redis::Value;

/// Plain `INFO`: its default sections hold every field read here (server, persistence,
/// replication, memory, cluster), and Redis before 7.0 takes no list of sections.
pub(crate) fn info_cmd() -> redis::Cmd {
    redis::cmd("INFO")
}

/// `CONFIG GET appendfsync`: whether the node fsyncs every write before acknowledging
/// it, which only `CONFIG` tells (`INFO` has `aof_enabled`, not the fsync policy).
pub(crate) fn appendfsync_cmd() -> redis::Cmd {
    let mut cmd = redis::cmd("CONFIG");
    cmd.arg("GET").arg("appendfsync");
    cmd
}

/// The `appendfsync` value in a reply to [`appendfsync_cmd`]: `always`, `everysec` or
/// `no`, or `None` for a reply that holds none.
pub(crate) fn appendfsync(reply: &Value) -> Option<String> {
    config_value(reply, "appendfsync")
}

/// The fields of an `INFO` reply this crate reads; `None` where the node did not say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ServerInfo {
    /// `server_name` (Valkey says `valkey`), else `redis`.
    pub(crate) server: String,
    /// `valkey_version`, else `redis_version`.
    pub(crate) version: Option<String>,
    /// `master` or `slave`.
    pub(crate) role: Option<String>,
    /// New at every start of the server.
    pub(crate) run_id: Option<String>,
    pub(crate) maxmemory_policy: Option<String>,
    pub(crate) aof_enabled: Option<bool>,
    /// Whole seconds, rounded down.
    pub(crate) uptime: Option<Duration>,
    pub(crate) cluster_enabled: Option<bool>,
}

impl ServerInfo {
    /// Parses a reply to [`info_cmd`], or `None` if it is no text.
    pub(crate) fn from_reply(reply: &Value) -> Option<Self> {
        text(reply).map(|info| Self::parse(&info))
    }

    /// Parses the text of an `INFO` reply: `key:value` lines; section headers (`# Server`)
    /// and blank lines are skipped.
    pub(crate) fn parse(info: &str) -> Self {
        let fields: HashMap<&str, &str> = info
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .collect();
        let get = |k: &str| fields.get(k).map(|v| (*v).to_owned());
        let flag = |k: &str| fields.get(k).map(|v| *v == "1");
        Self {
            server: get("server_name").unwrap_or_else(|| "redis".to_owned()),
            version: get("valkey_version").or_else(|| get("redis_version")),
            role: get("role"),
            run_id: get("run_id"),
            maxmemory_policy: get("maxmemory_policy"),
            aof_enabled: flag("aof_enabled"),
            uptime: fields
                .get("uptime_in_seconds")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_secs),
            cluster_enabled: flag("cluster_enabled"),
        }
    }
}

/// The text of a string reply, in any of RESP2's and RESP3's string forms.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

/// The value of `name` in a `CONFIG GET name` reply (an array of pairs, or a map in RESP3).
fn config_value(value: &Value, name: &str) -> Option<String> {
    match value {
        Value::Array(items) => items
            .chunks(2)
            .find(|pair| pair.len() == 2 && text(&pair[0]).as_deref() == Some(name))
            .and_then(|pair| text(&pair[1])),
        Value::Map(pairs) => pairs
            .iter()
            .find(|(k, _)| text(k).as_deref() == Some(name))
            .and_then(|(_, v)| text(v)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn info_fields_parse_and_headers_are_skipped() {
        let info =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.0.1\r\n\
                    run_id:abc\r\nuptime_in_seconds:12\r\n\r\n# Replication\r\nrole:master\r\n\
                    maxmemory_policy:allkeys-lru\r\naof_enabled:0\r\ncluster_enabled:1\r\n";
        let parsed = ServerInfo::from_reply(&bulk(info)).expect("a bulk string is text");
        assert_eq!(
            parsed,
            ServerInfo {
                server: "valkey".into(),
                version: Some("8.0.1".into()),
                role: Some("master".into()),
                run_id: Some("abc".into()),
                maxmemory_policy: Some("allkeys-lru".into()),
                aof_enabled: Some(false),
                uptime: Some(Duration::from_secs(12)),
                cluster_enabled: Some(true),
            }
        );
    }

    #[test]
    fn plain_redis_info_defaults_the_server_and_misses_nothing_else() {
        let parsed = ServerInfo::parse("redis_version:6.0.16\naof_enabled:1\n");
        assert_eq!(parsed.server, "redis");
        assert_eq!(parsed.version.as_deref(), Some("6.0.16"));
        assert_eq!(parsed.aof_enabled, Some(true));
        assert_eq!((parsed.uptime, parsed.role), (None, None));
        assert_eq!(ServerInfo::from_reply(&Value::Int(1)), None);
    }

    #[test]
    fn appendfsync_is_read_from_resp2_pairs_and_resp3_maps() {
        let pairs = Value::Array(vec![bulk("appendfsync"), bulk("everysec")]);
        assert_eq!(appendfsync(&pairs).as_deref(), Some("everysec"));
        let map = Value::Map(vec![(bulk("appendfsync"), bulk("always"))]);
        assert_eq!(appendfsync(&map).as_deref(), Some("always"));
        assert_eq!(appendfsync(&Value::Array(vec![])), None);
        let other = Value::Array(vec![bulk("save"), bulk("")]);
        assert_eq!(appendfsync(&other), None);
    }
}
