//! The lock manager from the command line's settings.

use tokio_redlock::Redlock;

use crate::args::ManagerArgs;
use crate::status::{self, Failure};

/// Builds the manager. Apart from the node timeout (see
/// [`DEFAULT_NODE_TIMEOUT`](crate::args::DEFAULT_NODE_TIMEOUT)), only the settings given
/// on the command line are passed on, so that the library's defaults (and their
/// documentation) stay the one source.
///
/// # Errors
/// A usage failure when no node is given or the library refuses a setting.
pub(crate) fn build(args: &ManagerArgs, default_label: Option<String>) -> Result<Redlock, Failure> {
    let nodes: Vec<&str> = args
        .nodes
        .iter()
        .map(|n| n.trim())
        .filter(|n| !n.is_empty())
        .collect();
    if nodes.is_empty() {
        return Err(Failure::usage(
            "no lock nodes given; pass --nodes redis://host:port,... or set REDLOCK_NODES",
        ));
    }
    let mut builder = Redlock::builder()
        .nodes(nodes)
        .fencing(args.fencing)
        .node_timeout(args.node_timeout);
    if let Some(t) = args.connect_timeout {
        builder = builder.connect_timeout(t);
    }
    if let Some(n) = args.retry_count {
        builder = builder.retry_count(n);
    }
    if let Some(d) = args.retry_delay {
        builder = builder.retry_delay(d);
    }
    if let Some(d) = args.retry_jitter {
        builder = builder.retry_jitter(d);
    }
    if let Some(f) = args.drift_factor {
        builder = builder.drift_factor(f);
    }
    if let Some(p) = &args.key_prefix {
        builder = builder.key_prefix(p.clone());
    }
    if let Some(label) = args.owner_label.clone().or(default_label) {
        builder = builder.owner_label(label);
    }
    builder.build().map_err(|e| {
        Failure::usage(format!(
            "{}; check --nodes/REDLOCK_NODES and the settings",
            status::one_line(&e.to_string())
        ))
    })
}

/// The owner label `run` uses when none is given: `redlock@<host>/<pid>`, which tells an
/// operator running `inspect` which machine and process holds the lock. Characters a
/// label may not use become `-`, and it is cut to the library's 64 bytes.
pub(crate) fn default_label() -> String {
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "unknown-host".into());
    label_from(&host, std::process::id())
}

/// Longest owner label the library accepts.
const MAX_LABEL_LEN: usize = 64;

fn label_from(host: &str, pid: u32) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let tail = format!("/{pid}");
    let room = MAX_LABEL_LEN - "redlock@".len() - tail.len();
    let host = if host.len() > room {
        &host[..room]
    } else {
        &host[..]
    };
    format!("redlock@{host}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_follow_the_library_rule() {
        for host in ["web-1.example.com", "höst:name", "", &"x".repeat(200)] {
            let label = label_from(host, u32::MAX);
            let built = Redlock::builder()
                .node("redis://127.0.0.1:1")
                .owner_label(label.clone())
                .build();
            assert!(built.is_ok(), "{label}: {:?}", built.err());
        }
        assert_eq!(label_from("web-1", 42), "redlock@web-1/42");
        assert!(default_label().starts_with("redlock@"));
    }
}
