//! Bad usage and configuration: status 2 and one line on stderr saying what to do.

use crate::support::{self, output, status, stderr};

async fn assert_usage_error(args: &[&str], env_nodes: Option<&str>, mentions: &str) {
    let mut cmd = support::bare();
    cmd.args(args);
    if let Some(nodes) = env_nodes {
        cmd.env("REDLOCK_NODES", nodes);
    }
    let out = output(&mut cmd).await;
    let message = stderr(&out);
    assert_eq!(status(&out), 2, "{args:?}: {message}");
    assert_eq!(message.lines().count(), 1, "{args:?}: {message}");
    assert!(message.starts_with("redlock: "), "{args:?}: {message}");
    assert!(message.contains(mentions), "{args:?}: {message}");
    assert!(out.stdout.is_empty(), "{args:?}");
}

const NODES: &str = "redis://127.0.0.1:1,redis://127.0.0.1:2,redis://127.0.0.1:3";

/// clap's usage errors and the tool's own checks all exit 2 with one line; nothing runs.
#[tokio::test]
async fn bad_usage_exits_2_with_one_line() {
    // clap's: unknown flag, missing command, bad duration, --wait with --no-wait.
    assert_usage_error(&["--bogus"], None, "--bogus").await;
    assert_usage_error(&["run", "r"], Some(NODES), "CMD").await;
    assert_usage_error(
        &["run", "--ttl", "30", "r", "--", "true"],
        Some(NODES),
        "30s",
    )
    .await;
    assert_usage_error(
        &["run", "--wait", "1s", "--no-wait", "r", "--", "true"],
        Some(NODES),
        "--no-wait",
    )
    .await;
    assert_usage_error(&["inspect"], Some(NODES), "RESOURCE").await;
    // The tool's: no nodes, a URL or setting the library refuses, a bad owner label.
    assert_usage_error(&["run", "r", "--", "true"], None, "REDLOCK_NODES").await;
    assert_usage_error(&["--nodes", "not-a-url", "diagnose"], None, "redis://").await;
    assert_usage_error(&["diagnose", "--drift-factor", "2"], Some(NODES), "drift").await;
    assert_usage_error(
        &["run", "--owner-label", "a:b", "r", "--", "true"],
        Some(NODES),
        "owner_label",
    )
    .await;
    assert_usage_error(&["inspect", ""], Some(NODES), "empty resource").await;
}

/// Help and version go to stdout with status 0.
#[tokio::test]
async fn help_and_version_exit_0() {
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let out = output(support::bare().args(args)).await;
        assert_eq!(status(&out), 0, "{args:?}: {}", stderr(&out));
        assert!(!out.stdout.is_empty());
    }
    let out = output(support::bare().args(["run", "--help"])).await;
    assert!(
        support::stdout(&out).contains("76"),
        "the exit statuses are in the help"
    );
}
