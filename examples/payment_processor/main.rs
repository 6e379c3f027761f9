//! A payment processor whose workers race for the same payments: the Redlock lock (with
//! fencing tokens checked by the payments store) makes each payment charged exactly once.
//!
//! ```sh
//! cargo run --example payment_processor                      # 5 local lock nodes + a store
//! cargo run --example payment_processor -- --chaos           # with node faults
//! cargo run --example payment_processor -- --processes 4     # workers in 4 OS processes
//! cargo run --example payment_processor -- --no-lock         # shows the double charges
//! cargo run --example payment_processor -- --help
//! ```
//!
//! Local servers need `redis-server` on `PATH` (or `REDIS_SERVER`); see
//! `docs/payment-example.md` for the design and for running it against real nodes.

use std::io::Read;

use tokio_util::sync::CancellationToken;

mod app;

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // `rediss://` nodes (with the `tls` feature): the crate installs no crypto provider,
    // the application does.
    #[cfg(feature = "tls")]
    let _ = rustls::crypto::ring::default_provider().install_default();
    let env_nodes = std::env::var("REDLOCK_NODES").ok();
    let command = match app::parse(std::env::args().skip(1), env_nodes) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    };
    let code = match command {
        app::Command::Help => {
            println!("{}", app::USAGE);
            0
        }
        app::Command::Worker(spec) => worker_process(spec).await,
        app::Command::Run(cfg) => coordinate(cfg).await,
    };
    std::process::exit(code);
}

/// The coordinator: runs everything, prints the summary, and turns it into the exit status.
async fn coordinate(cfg: app::Config) -> i32 {
    let stop = CancellationToken::new();
    let on_ctrl_c = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("Ctrl-C: letting the workers finish their payment and release their locks");
            on_ctrl_c.cancel();
        }
    });
    // `run` stops the local servers before it returns (the clusters are dropped).
    match app::run(cfg, stop).await {
        Ok(summary) => {
            println!("{}", summary.render());
            summary.exit_code()
        }
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

/// One of the `--processes K` worker processes. It stops on Ctrl-C, or when the
/// coordinator closes its stdin (it asks so, or it died).
async fn worker_process(spec: app::worker::WorkerSpec) -> i32 {
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let on_eof = stop.clone();
    // A plain thread: a blocking read of tokio's stdin would hold up the runtime's
    // shutdown, while this thread simply ends with the process.
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        let mut stdin = std::io::stdin();
        while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
        on_eof.cancel();
    });
    match app::worker::run_workers(spec, stop).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("worker process: {e}");
            1
        }
    }
}
