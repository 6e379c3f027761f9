//! The payment-processor example (`examples/payment_processor/`), run in-process on its
//! own local servers: the lock keeps every payment charged exactly once, also under node
//! faults and across worker processes, and without it the same workers charge twice.
//!
//! The example's logic is included here as a module, so these tests run the very code
//! `cargo run --example payment_processor` runs. Only `--processes` needs the example's
//! binary (the worker processes are copies of it); that test has cargo build it first.

use std::path::PathBuf;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::support;

// The unit tests of app.rs and cli.rs run here too (payment::app::...). What only
// main.rs uses is unused here.
#[allow(dead_code, unused_imports)]
#[path = "../../examples/payment_processor/app.rs"]
mod app;

/// Runs are a few seconds; this bounds a hang (a cluster start included).
const RUN_BOUND: Duration = Duration::from_secs(90);
/// Building the example when it is missing or stale (only its own crate recompiles).
const BUILD_BOUND: Duration = Duration::from_secs(300);

/// Small runs: 40 payments for 8 workers collide often enough and finish in seconds.
fn config() -> app::Config {
    app::Config {
        payments: 40,
        workers: 8,
        progress: false,
        timeout: Duration::from_secs(60),
        ..app::Config::default()
    }
}

async fn run(cfg: app::Config) -> app::Summary {
    tokio::time::timeout(RUN_BOUND, app::run(cfg, CancellationToken::new()))
        .await
        .expect("the run did not end within its bound")
        .expect("the run completes")
}

/// What every run with the lock must show: each payment completed and charged once.
fn assert_each_charged_once(s: &app::Summary) {
    let text = s.render();
    assert_eq!(s.ending, app::Ending::Finished, "{text}");
    assert_eq!(s.completed, s.payments, "every payment completed:\n{text}");
    assert_eq!(s.charges, s.payments, "one charge per payment:\n{text}");
    assert_eq!(s.double_charges, 0, "{text}");
    assert!(s.stat("acquisitions") >= s.payments as u64, "{text}");
    assert!(
        s.latency_p50.is_some() && s.latency_p99 >= s.latency_p50,
        "{text}"
    );
    assert_eq!(s.exit_code(), 0, "{text}");
    assert!(text.ends_with("double charges: 0"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_lock_every_payment_is_charged_once() {
    let s = run(config()).await;
    assert_each_charged_once(&s);
    // The workers did race: they collided on payments and the lock turned them away.
    assert!(s.stat("conflicts") > 0, "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_pause_kill_partition_still_charges_each_once() {
    let s = run(app::Config {
        chaos: true,
        ..config()
    })
    .await;
    assert_each_charged_once(&s);
    assert_eq!(
        s.faults,
        4,
        "pause, kill, partition and a stalled worker all happened:\n{}",
        s.render()
    );
    // The stalled worker's charge came after its lock ran out and a successor had
    // taken the payment: the store refused it by its fencing token.
    assert_eq!(s.stat("refused"), 1, "{}", s.render());
    assert!(s.warnings.is_empty(), "{}", s.render());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_processes_share_the_store_and_charge_each_once() {
    let exe = example_binary().await;
    let s = run(app::Config {
        processes: 2,
        worker_exe: Some(exe),
        ..config()
    })
    .await;
    assert_each_charged_once(&s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_lock_payments_are_charged_twice() {
    let s = run(app::Config {
        lock: false,
        ..config()
    })
    .await;
    let text = s.render();
    assert_eq!(s.completed, s.payments, "{text}");
    assert!(s.double_charges > 0, "the race is real:\n{text}");
    assert!(s.charges > s.payments, "{text}");
    assert_eq!(s.stat("acquisitions"), 0, "{text}");
    assert!(
        text.ends_with(&format!("double charges: {}", s.double_charges)),
        "{text}"
    );
}

/// Lock nodes that never answer (all partitioned away): nothing is charged, and the run
/// says why, with each node's cause, instead of only counting failed attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_lock_nodes_are_explained_with_each_nodes_cause() {
    let cluster = support::cluster(3).await;
    for node in cluster.nodes() {
        support::bounded(node.partition()).await.unwrap();
    }
    let s = run(app::Config {
        nodes: cluster.urls(),
        payments: 5,
        // Long enough for many failed attempts (each bounded by the node timeout).
        timeout: Duration::from_secs(1),
        ..config()
    })
    .await;
    let text = s.render();
    assert_eq!(s.completed, 0, "{text}");
    assert!(s.stat("no_quorum") > 0, "{text}");
    let failure = s
        .first_lock_failure
        .as_deref()
        .expect("the failure is kept");
    assert!(
        failure.starts_with("no quorum for `lock:payment:"),
        "{failure}"
    );
    // The quorum of 3 is 2: the attempt ends once 2 nodes failed, each with its cause.
    let causes: Vec<&str> = failure.lines().skip(1).collect();
    assert!(causes.len() >= 2, "{failure}");
    let endpoints: Vec<String> = cluster
        .nodes()
        .iter()
        .map(|n| format!(":{})", n.proxy_port()))
        .collect();
    for cause in causes {
        assert!(cause.starts_with("  node "), "{failure}");
        assert!(endpoints.iter().any(|e| cause.contains(e)), "{failure}");
    }
    // The summary shows it too, since payments were left.
    assert!(
        text.contains(&format!("with each node's cause:\n  {failure}\n")),
        "{text}"
    );
    assert_eq!(s.exit_code(), 1, "{text}");
}

/// The example's binary, built (or found up to date) by cargo in this test's target dir.
///
/// `cargo test` builds examples anyway, but `cargo test --test it` does not, and a binary
/// left from an earlier build could be stale; a no-op build costs well under a second.
async fn example_binary() -> PathBuf {
    let name = "payment_processor";
    // <target>/<profile>/deps/it-<hash>  ->  <target>/<profile>
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary in <target>/<profile>/deps")
        .to_path_buf();
    let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
    // The same features as this test build, so that the library is not rebuilt.
    let mut features = vec![];
    if cfg!(feature = "tls") {
        features.push("tls");
    }
    if cfg!(feature = "metrics") {
        features.push("metrics");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = tokio::process::Command::new(cargo);
    // `cargo test` gives the test process the package's variables (CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR, ...). A build script that watches them (ring's) would see a
    // change against the outer build and rebuild the dependency tree (50-60 s here) at
    // every call, alternating with the outer build; the inner build runs without them.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let package = [
            "CARGO_MANIFEST_DIR",
            "CARGO_MANIFEST_PATH",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
            "CARGO_PRIMARY_PACKAGE",
        ];
        if name.starts_with("CARGO_PKG_") || package.contains(&name.as_ref()) {
            cmd.env_remove(name.as_ref());
        }
    }
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--quiet", "-p", "tokio-redlock", "--example", name])
        .args(["--features", &features.join(",")])
        .arg("--target-dir")
        .arg(&target_dir)
        .kill_on_drop(true);
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = tokio::time::timeout(BUILD_BOUND, cmd.output())
        .await
        .expect("cargo build of the example timed out")
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo build --example {name} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bin = profile_dir.join("examples").join(name);
    assert!(bin.is_file(), "{} missing after the build", bin.display());
    bin
}
