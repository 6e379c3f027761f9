//! `redlock diagnose` and `redlock inspect`, as text and JSON.

use serde_json::Value;

use crate::support::{self, file_appears, finish, output, sh, status, stderr, stdout};

/// A memory-only harness cluster: no error, so exit 0; a warning per node about its
/// missing `appendfsync always`, in text and JSON. A killed node makes it unhealthy: 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_reports_health_and_exits_by_it() {
    let cluster = support::cluster(3).await;
    let out = output(support::redlock(&cluster).arg("diagnose")).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("node 0 "), "{text}");
    assert!(text.contains("appendfsync always"), "{text}");
    assert!(text.trim_end().ends_with("healthy"), "{text}");

    let out = output(support::redlock(&cluster).args(["diagnose", "--json"])).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(
        report["nodes"].as_array().map(Vec::len),
        Some(3),
        "{report}"
    );
    assert_eq!(report["nodes"][0]["reachable"], true, "{report}");
    let kinds: Vec<&str> = report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter_map(|f| f["kind"].as_str())
        .collect();
    assert!(kinds.contains(&"no_fsync_always"), "{report}");

    cluster.node(2).kill().await.expect("kill node 2");
    let out = output(support::redlock(&cluster).args(["diagnose", "--json"])).await;
    assert_eq!(status(&out), 1, "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["healthy"], false, "{report}");
    assert_eq!(report["nodes"][2]["reachable"], false, "{report}");
}

/// While a tool holds a lock, inspect shows its label on every node, held by a quorum,
/// with a ttl left; after it, no holder.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspect_shows_who_holds_the_lock() {
    let cluster = support::cluster(3).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready = dir.path().join("ready");
    let done = dir.path().join("done");
    let holder = support::redlock(&cluster)
        .args([
            "--owner-label",
            "backup-7",
            "run",
            "--ttl",
            "20s",
            "backup",
            "--",
        ])
        .args(sh(&format!(
            "touch '{}'; {}",
            ready.display(),
            support::idle_until_exists(&done)
        )))
        .spawn()
        .expect("start the holder");
    file_appears(&ready).await;

    let out = output(support::redlock(&cluster).args(["inspect", "backup", "--json"])).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["held_by_quorum"], true, "{info}");
    assert_eq!(info["resource"], "backup", "{info}");
    assert_eq!(info["quorum"], 2, "{info}");
    let holder_json = &info["holders"][0];
    assert_eq!(holder_json["label"], "backup-7", "{info}");
    assert_eq!(holder_json["node_count"], 3, "{info}");
    let ttl = holder_json["min_ttl_ms"].as_u64().expect("a ttl");
    assert!(ttl > 0 && ttl <= 20_000, "{info}");

    let out = output(support::redlock(&cluster).args(["inspect", "backup"])).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("held by a quorum") && text.contains("backup-7"),
        "{text}"
    );

    std::fs::write(&done, "").expect("end the holder");
    let out = finish(holder).await;
    assert_eq!(status(&out), 0, "{}", stderr(&out));
    let out = output(support::redlock(&cluster).args(["inspect", "backup", "--json"])).await;
    let info: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(info["holders"], serde_json::json!([]), "{info}");
    assert_eq!(info["held_by_quorum"], false, "{info}");
}
