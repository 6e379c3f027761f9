//! One lock client as its own OS process, for the safety suite.
//!
//! **Once** (`tests/safety/process.rs`; the test can SIGSTOP it like a GC pause while it
//! acquires or holds a lock): it acquires `--resource` once (fenced, with the manager's
//! retries), holds it for `--hold-ms`, releases, and writes its history
//! (`tokio_redlock_harness::history` format, one shared machine-wide clock) to `--history`. It prints
//! `attempting` before the acquisition and `acquired <token>` or `failed <reason>` after,
//! so the test can time its signals.
//!
//! ```text
//! safety_client --nodes redis://127.0.0.1:1,redis://127.0.0.1:2,redis://127.0.0.1:3 \
//!   --resource r --ttl-ms 500 --hold-ms 1000 --client 7 --history /tmp/h7.txt
//! ```
//!
//! **In a loop** (`--rounds N`; the explorer's out-of-process clients,
//! `tests/safety/explore/procs.rs`): up to N rounds, each drawn from `--seed`: a pause of up
//! to `--think-ms`, `acquire` or `try_acquire` of one of `--resources` with a ttl from
//! 100 ms to `--ttl-ms`, a hold of 1 ms to `--hold-ms` with sometimes an `extend` (30 % to
//! 200 % of what is left) in it, and a release. It prints `ready` once its manager is
//! built. On SIGTERM, or after `--max-ms`, it finishes the call under way (each is bounded
//! by the manager's settings), cuts a hold short, releases what it holds, gives the
//! library's background clean-up twice the node timeout to finish, writes its whole
//! history and prints `done <acquisitions> <failed releases>`.
//!
//! ```text
//! safety_client --nodes ... --rounds 100000 --resources a,b,c --seed 7 --think-ms 5 \
//!   --ttl-ms 2000 --hold-ms 20 --fencing on --node-timeout-ms 100 --retry-count 2 \
//!   --retry-delay-ms 20 --label explore-p7 --max-ms 60000 --client 1007 --history /tmp/h.txt
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock::{LockGuard, Redlock};
use tokio_redlock_harness::history::{instant_ns, EventKind, Recorder};

/// The shortest ttl drawn in loop mode: long enough that a loaded machine still gets a
/// guard with validity left, short enough that locks change hands often.
const MIN_TTL_MS: u64 = 100;

struct Args {
    nodes: Vec<String>,
    resource: String,
    ttl: Duration,
    hold: Duration,
    client: u32,
    history: PathBuf,
    /// Loop mode when set.
    rounds: Option<u64>,
    resources: Vec<String>,
    seed: u64,
    think_ms: u64,
    fencing: bool,
    node_timeout: Duration,
    retry_count: u32,
    retry_delay: Duration,
    label: Option<String>,
    max: Duration,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        nodes: Vec::new(),
        resource: "r".to_owned(),
        ttl: Duration::from_millis(500),
        hold: Duration::from_millis(100),
        client: 1,
        history: PathBuf::new(),
        rounds: None,
        resources: Vec::new(),
        seed: 0,
        think_ms: 0,
        fencing: true,
        node_timeout: Duration::from_secs(2),
        retry_count: 5,
        retry_delay: Duration::from_millis(50),
        label: None,
        // A process nobody stops ends by itself after this long.
        max: Duration::from_secs(600),
    };
    let (mut nodes, mut history) = (false, false);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let num = |v: &str| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        let ms = |v: &str| num(v).map(Duration::from_millis);
        let list = |v: &str| v.split(',').map(str::to_owned).collect::<Vec<_>>();
        match flag.as_str() {
            "--nodes" => (a.nodes, nodes) = (list(&value), true),
            "--resource" => a.resource = value,
            "--ttl-ms" => a.ttl = ms(&value)?,
            "--hold-ms" => a.hold = ms(&value)?,
            "--client" => a.client = value.parse().map_err(|e| format!("{flag}: {e}"))?,
            "--history" => (a.history, history) = (PathBuf::from(value), true),
            "--rounds" => a.rounds = Some(num(&value)?),
            "--resources" => a.resources = list(&value),
            "--seed" => a.seed = num(&value)?,
            "--think-ms" => a.think_ms = num(&value)?,
            "--fencing" => a.fencing = value == "on",
            "--node-timeout-ms" => a.node_timeout = ms(&value)?,
            "--retry-count" => a.retry_count = value.parse().map_err(|e| format!("{e}"))?,
            "--retry-delay-ms" => a.retry_delay = ms(&value)?,
            "--label" => a.label = Some(value),
            "--max-ms" => a.max = ms(&value)?,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if !nodes || !history {
        return Err("--nodes and --history are required".into());
    }
    if a.rounds.is_some() && a.resources.is_empty() {
        return Err("--rounds needs --resources".into());
    }
    Ok(a)
}

fn say(line: &str) {
    println!("{line}");
    let _ = std::io::stdout().flush();
}

fn exit_with(e: impl std::fmt::Display) -> ! {
    eprintln!("safety_client: {e}");
    std::process::exit(2);
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = parse().unwrap_or_else(|e| exit_with(e));
    let mut builder = Redlock::builder()
        .nodes(&args.nodes)
        .fencing(args.fencing)
        .retry_count(args.retry_count)
        .retry_delay(args.retry_delay)
        .node_timeout(args.node_timeout);
    if let Some(label) = &args.label {
        builder = builder.owner_label(label);
    }
    let redlock = builder.build().unwrap_or_else(|e| exit_with(e));
    let rec = Recorder::new();
    match args.rounds {
        Some(rounds) => run_loop(&args, &redlock, &rec, rounds).await,
        None => once(&args, &redlock, &rec).await,
    }
    if let Err(e) = rec.history().write_file(&args.history) {
        eprintln!(
            "safety_client: cannot write {}: {e}",
            args.history.display()
        );
        std::process::exit(1);
    }
}

async fn once(args: &Args, redlock: &Redlock, rec: &Recorder) {
    let (client, op, resource) = (args.client, 1, args.resource.as_str());
    say("attempting");
    rec.record(client, op, resource, EventKind::Start);
    match redlock.acquire(resource, args.ttl).await {
        Ok(guard) => {
            record_acquired(rec, client, op, &guard);
            say(&format!("acquired {}", guard.fencing_token().unwrap_or(0)));
            // The critical section; the test may stop the process in here.
            tokio::time::sleep(args.hold).await;
            rec.record(client, op, resource, EventKind::Released);
            let _ = guard.release().await;
        }
        Err(e) => {
            let reason = e.to_string();
            rec.record(client, op, resource, EventKind::Failed { reason });
            say(&format!("failed {e}"));
        }
    }
}

fn record_acquired(rec: &Recorder, client: u32, op: u64, guard: &LockGuard) {
    let kind = EventKind::Acquired {
        valid_until_ns: instant_ns(guard.valid_until()),
        token: guard.fencing_token(),
    };
    rec.record(client, op, guard.resource(), kind);
}

/// The loop mode. The stop (SIGTERM or `--max-ms`) is looked at between calls and
/// during holds only: cancelling an acquisition would be cancel-safe, but its keys may
/// then live until their ttl, and the explorer's ghost check holds these processes to
/// node timeout + slack after their release.
async fn run_loop(args: &Args, redlock: &Redlock, rec: &Recorder, rounds: u64) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => exit_with(format!("cannot handle SIGTERM: {e}")),
    };
    let deadline = tokio::time::Instant::now() + args.max;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            () = tokio::time::sleep_until(deadline) => {}
        }
    };
    tokio::pin!(stop);
    let mut rng = StdRng::seed_from_u64(args.seed);
    let client = args.client;
    let (mut acquisitions, mut release_errors) = (0u64, 0u64);
    say("ready");
    for op in 1..=rounds {
        let think = Duration::from_millis(rng.random_range(0..=args.think_ms));
        let resource = &args.resources[rng.random_range(0..args.resources.len())];
        let ttl_max = args.ttl.as_millis().max(u128::from(MIN_TTL_MS)) as u64;
        let ttl = Duration::from_millis(rng.random_range(MIN_TTL_MS..=ttl_max));
        let hold_max = args.hold.as_millis().max(1) as u64;
        let hold = Duration::from_millis(rng.random_range(1..=hold_max));
        let try_once = rng.random_bool(0.5);
        let extend = rng.random_bool(0.3).then(|| rng.random_range(0.3..2.0));
        tokio::select! {
            () = &mut stop => break,
            () = tokio::time::sleep(think) => {}
        }
        rec.record(client, op, resource, EventKind::Start);
        let result = if try_once {
            redlock.try_acquire(resource, ttl).await
        } else {
            redlock.acquire(resource, ttl).await
        };
        let mut guard = match result {
            Ok(guard) => guard,
            Err(e) => {
                let reason = e.to_string();
                rec.record(client, op, resource, EventKind::Failed { reason });
                continue;
            }
        };
        acquisitions += 1;
        record_acquired(rec, client, op, &guard);
        let mut stopped = tokio::select! {
            () = &mut stop => true,
            () = tokio::time::sleep(hold / 2) => false,
        };
        if let (Some(fraction), false) = (extend, stopped) {
            // The extension's ttl is a share of what is left: shorter and longer ones.
            let _ = guard
                .extend(guard.remaining_validity().mul_f64(fraction))
                .await;
            let valid_until_ns = instant_ns(guard.valid_until());
            rec.record(client, op, resource, EventKind::Extended { valid_until_ns });
        }
        if !stopped {
            stopped = tokio::select! {
                () = &mut stop => true,
                () = tokio::time::sleep(hold - hold / 2) => false,
            };
        }
        // From here on it claims nothing, whatever the release returns.
        rec.record(client, op, resource, EventKind::Released);
        if guard.release().await.is_err() {
            release_errors += 1;
        }
        if stopped {
            break;
        }
    }
    // A failed attempt's undo and requests to slow nodes finish in the background, on
    // this runtime: exiting at once would cut them short and leave keys until their ttl.
    // Each is bounded by the node timeout (a request, then its undo), plus scheduling.
    tokio::time::sleep(args.node_timeout * 2 + Duration::from_millis(50)).await;
    say(&format!("done {acquisitions} {release_errors}"));
}
