//! A cluster vote's answers to the health checks (feature `cluster`): `INFO` and
//! `CONFIG GET` go to every master (`cluster/mod.rs`), and come back as
//! `{address: reply}`; the vote is judged by the worst of its masters, since a lock key
//! may live on any of them.

use redis::Value;

use crate::cluster::per_master;
use crate::info::{appendfsync, ServerInfo};

/// The masters' `INFO` replies summed up as one server's, and how many masters there
/// were; `None` if the reply is not per master or one of them is unreadable.
pub(super) fn merged_info(reply: &Value) -> Option<(ServerInfo, usize)> {
    let masters = per_master(reply)?;
    let mut merged: Option<ServerInfo> = None;
    for (_, reply) in &masters {
        let info = ServerInfo::from_reply(reply)?;
        let Some(all) = merged.as_mut() else {
            merged = Some(info);
            continue;
        };
        if info.role.as_deref() != Some("master") {
            all.role = info.role;
        }
        if info.maxmemory_policy.as_deref() != Some("noeviction") {
            all.maxmemory_policy = info.maxmemory_policy.or(all.maxmemory_policy.take());
        }
        all.aof_enabled = match (all.aof_enabled, info.aof_enabled) {
            (Some(a), Some(b)) => Some(a && b),
            _ => None,
        };
        all.uptime = all.uptime.min(info.uptime);
    }
    let mut merged = merged?;
    // Not one server: no run_id to compare with the other votes.
    merged.run_id = None;
    Some((merged, masters.len()))
}

/// The masters' `appendfsync`: `always` only if every master says so, else the first
/// other value; `None` if the reply is not per master or one is unreadable.
pub(super) fn merged_appendfsync(reply: &Value) -> Option<String> {
    let mut worst: Option<String> = None;
    for (_, reply) in per_master(reply)? {
        let fsync = appendfsync(reply)?;
        if worst.as_deref().is_none_or(|w| w == "always") {
            worst = Some(fsync);
        }
    }
    worst
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn masters(replies: &[Value]) -> Value {
        Value::Map(
            replies
                .iter()
                .enumerate()
                .map(|(i, r)| (bulk(&format!("127.0.0.1:{}", 7000 + i)), r.clone()))
                .collect(),
        )
    }

    fn info(policy: &str, aof: u8) -> Value {
        bulk(&format!(
            "# Server\r\nredis_version:7.0.15\r\nrun_id:abc\r\nuptime_in_seconds:9\r\n\
             # Replication\r\nrole:master\r\n# Memory\r\nmaxmemory_policy:{policy}\r\n\
             # Persistence\r\naof_enabled:{aof}\r\n# Cluster\r\ncluster_enabled:1\r\n"
        ))
    }

    #[test]
    fn the_worst_master_decides() {
        let reply = masters(&[info("noeviction", 1), info("allkeys-lru", 0)]);
        let (merged, n) = merged_info(&reply).expect("merged");
        assert_eq!(n, 2);
        assert_eq!(merged.maxmemory_policy.as_deref(), Some("allkeys-lru"));
        assert_eq!(merged.aof_enabled, Some(false));
        assert_eq!(merged.run_id, None);
        assert_eq!(merged.cluster_enabled, Some(true));
        let fsync = |v: &str| Value::Array(vec![bulk("appendfsync"), bulk(v)]);
        let reply = masters(&[fsync("always"), fsync("everysec"), fsync("always")]);
        assert_eq!(merged_appendfsync(&reply).as_deref(), Some("everysec"));
        let reply = masters(&[fsync("always"), fsync("always")]);
        assert_eq!(merged_appendfsync(&reply).as_deref(), Some("always"));
        // A single server's reply is not per master.
        assert!(merged_info(&info("noeviction", 1)).is_none());
    }
}
