//! The benchmark behind `docs/benchmarks.md`: tokio-redlock, rslock and two redis-rs
//! floors, interleaved round by round, on a harness cluster of five memory-only nodes.
//!
//! Run it with `cargo bench -p redlock-bench` (or `cargo run --release -p redlock-bench`).
//! `REDLOCK_BENCH_SCALE=0.2` shortens every round (for a smoke run), and
//! `REDLOCK_BENCH_ROUNDS=n` sets the number of rounds (default 5).
//! `REDLOCK_BENCH_PROFILE=secs` runs only one subject in one scenario, for a profiler
//! (see `profile.rs`).

mod charts;
mod contended;
mod measure;
mod profile;
mod read_heavy;
mod report;
mod subjects;

use std::future::Future;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_redlock_harness::{Cluster, HarnessError, Persistence};

use measure::{client_cpu_ns, Round, Summary, CLIENT_THREAD};
use subjects::{Async, Kind, SyncFloor};

/// Five nodes, as in the Redlock paper and the targets.
const NODES: usize = 5;
/// The node made sick in scenarios 4 and 5.
const SICK: usize = NODES - 1;
/// TTL of the uncontended and parallel locks: long enough never to expire during an
/// operation, even one stuck behind rslock's 500 ms response timeout.
const TTL: Duration = Duration::from_secs(10);
/// TTL of the contended lock: only matters for a client cut off at a round's end while
/// holding it; each round uses its own key, so a left-over key stalls nobody.
const CONTENDED_TTL: Duration = Duration::from_secs(2);
/// Cap on one lock + unlock, so a client that hangs on a sick node never hangs the
/// benchmark; operations that reach it are counted as cut off and timed at the cap.
const OP_CAP: Duration = Duration::from_secs(2);
/// Tasks of scenario 2 and clients of scenario 3, as the issue names them.
const PARALLEL_TASKS: usize = 32;
const CONTENDERS: usize = 16;

/// Round lengths and counts; `REDLOCK_BENCH_SCALE` multiplies every length.
struct Settings {
    rounds: usize,
    scale: f64,
}

impl Settings {
    fn from_env() -> Self {
        let scale = std::env::var("REDLOCK_BENCH_SCALE")
            .ok()
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|s| *s > 0.0)
            .unwrap_or(1.0);
        let rounds = std::env::var("REDLOCK_BENCH_ROUNDS")
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|r| *r > 0)
            .unwrap_or(5);
        Self { rounds, scale }
    }

    fn secs(&self, s: f64) -> Duration {
        Duration::from_secs_f64(s * self.scale)
    }
}

/// The cluster, driven by a runtime on a thread of its own (named `harness`), so its
/// proxies' CPU is not charged to the clients.
struct Harness {
    cluster: Option<Arc<Cluster>>,
    handle: tokio::runtime::Handle,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Harness {
    fn start() -> Result<Self, String> {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("harness".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("harness")
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let started = rt.block_on(
                    Cluster::builder()
                        .nodes(NODES)
                        .persistence(Persistence::Memory)
                        .start(),
                );
                let cluster = match started {
                    Ok(c) => Arc::new(c),
                    Err(e) => {
                        let _ = ready_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok((Arc::clone(&cluster), rt.handle().clone())));
                // Drive the proxies until told to stop (or the benchmark is gone).
                rt.block_on(async {
                    let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
                });
                drop(cluster);
            })
            .map_err(|e| e.to_string())?;
        let (cluster, handle) = ready_rx
            .recv()
            .map_err(|_| "harness thread ended early".to_string())??;
        Ok(Self {
            cluster: Some(cluster),
            handle,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    fn cluster(&self) -> &Arc<Cluster> {
        self.cluster
            .as_ref()
            .expect("cluster lives as long as the harness")
    }

    /// Runs a fault (or its undo) on the harness runtime and waits for it.
    fn on_harness<F, Fut>(&self, rt: &Runtime, f: F) -> Result<(), String>
    where
        F: FnOnce(Arc<Cluster>) -> Fut,
        Fut: Future<Output = Result<(), HarnessError>> + Send + 'static,
    {
        let fut = f(Arc::clone(self.cluster()));
        match rt.block_on(self.handle.spawn(fut)) {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // The harness thread holds the last reference and stops the servers.
        self.cluster = None;
        self.stop = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A subject ready to run: async ones on the client runtime, the sync floor on this thread.
enum Subject {
    Async(Async),
    Sync(SyncFloor),
}

fn connect(rt: &Runtime, kind: Kind, urls: &[String]) -> Result<Subject, String> {
    match kind {
        Kind::SyncFloor => SyncFloor::connect(urls).map(Subject::Sync),
        _ => rt.block_on(Async::connect(kind, urls)).map(Subject::Async),
    }
}

/// One task locking and unlocking fresh keys `prefix:0`, `prefix:1`, ... until `dur` is up.
async fn sequential_task(subject: Async, prefix: String, dur: Duration) -> Round {
    let mut round = Round::default();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < dur {
        let key = format!("{prefix}:{i}");
        i += 1;
        let t = Instant::now();
        match tokio::time::timeout(OP_CAP, subject.lock_unlock(&key, TTL)).await {
            Ok(Ok(())) => round.ops += 1,
            Ok(Err(_)) => round.errors += 1,
            Err(_) => round.capped += 1,
        }
        round.latencies_us.push(t.elapsed().as_micros() as u64);
    }
    round.elapsed = start.elapsed();
    round
}

fn sequential_sync(floor: &mut SyncFloor, prefix: &str, dur: Duration) -> Round {
    let mut round = Round::default();
    let start = Instant::now();
    let mut i = 0u64;
    while start.elapsed() < dur {
        let key = format!("{prefix}:{i}");
        i += 1;
        let t = Instant::now();
        match floor.lock_unlock(&key, TTL) {
            Ok(()) => round.ops += 1,
            Err(_) => round.errors += 1,
        }
        round.latencies_us.push(t.elapsed().as_micros() as u64);
    }
    round.elapsed = start.elapsed();
    round
}

/// One round of `tasks` tasks (1 for the sequential scenarios), with the client CPU.
fn run_round(
    rt: &Runtime,
    subject: &mut Subject,
    prefix: &str,
    tasks: usize,
    dur: Duration,
) -> Round {
    let cpu = client_cpu_ns();
    let start = Instant::now();
    let mut round = match subject {
        Subject::Sync(floor) => sequential_sync(floor, prefix, dur),
        Subject::Async(a) => {
            let handles: Vec<_> = (0..tasks)
                .map(|t| rt.spawn(sequential_task(a.clone(), format!("{prefix}:{t}"), dur)))
                .collect();
            let mut total = Round::default();
            for h in handles {
                if let Ok(r) = rt.block_on(h) {
                    total.ops += r.ops;
                    total.errors += r.errors;
                    total.capped += r.capped;
                    total.latencies_us.extend(r.latencies_us);
                }
            }
            total
        }
    };
    round.elapsed = start.elapsed();
    round.cpu_ns = client_cpu_ns().saturating_sub(cpu);
    round
}

/// One scenario of lock + unlock loops, for [`interleaved`].
struct Phase<'a> {
    scenario: &'a str,
    kinds: &'a [Kind],
    urls: &'a [String],
    /// Tasks per subject: 1 for the sequential scenarios.
    tasks: usize,
    /// Length of one measured round.
    dur: Duration,
}

/// Runs the phase's subjects interleaved (A B C, B C A, ...) for `rounds` rounds after a
/// warm-up; with `fault`, makes a node sick between the warm-up and the rounds.
fn interleaved(
    rt: &Runtime,
    s: &Settings,
    phase: Phase<'_>,
    fault: Option<&dyn Fn() -> Result<(), String>>,
) -> Result<Vec<(Kind, Summary)>, String> {
    let Phase {
        scenario,
        kinds,
        urls,
        tasks,
        dur,
    } = phase;
    let mut subjects = Vec::new();
    for &kind in kinds {
        let mut subject = connect(rt, kind, urls)?;
        // Warm-up: connections made, scripts cached, code paths hot.
        run_round(
            rt,
            &mut subject,
            &format!("{scenario}:warm:{}", kind.tag()),
            tasks,
            s.secs(0.2),
        );
        subjects.push((kind, subject, Vec::new()));
    }
    if let Some(fault) = fault {
        // The node falls sick under clients that are already connected, as in
        // production; one more warm-up lets each client pass its first reaction to it.
        fault()?;
        for (kind, subject, _) in &mut subjects {
            run_round(
                rt,
                subject,
                &format!("{scenario}:sick:{}", kind.tag()),
                tasks,
                s.secs(0.2),
            );
        }
    }
    for r in 0..s.rounds {
        for j in 0..subjects.len() {
            let idx = (r + j) % subjects.len();
            let (kind, subject, rounds) = &mut subjects[idx];
            let prefix = format!("{scenario}:{}:{r}", kind.tag());
            rounds.push(run_round(rt, subject, &prefix, tasks, dur));
        }
    }
    Ok(subjects
        .into_iter()
        .map(|(kind, _, rounds)| (kind, Summary::of(&rounds)))
        .collect())
}

/// Scenario 3 (`shared` false: each contender has its own manager and connections) and
/// 3b (`shared` true: the contenders are tasks of ONE manager per subject, where the
/// in-process hand-over can pass the lock from task to task without the nodes).
fn contended(
    rt: &Runtime,
    s: &Settings,
    urls: &[String],
    shared: bool,
) -> Result<Vec<(Kind, Summary)>, String> {
    let kinds = [Kind::TokioRedlock, Kind::Rslock];
    let tag = if shared { "shared" } else { "contended" };
    let mut groups = Vec::new();
    for kind in kinds {
        let clients = if shared {
            vec![rt.block_on(Async::connect(kind, urls))?; CONTENDERS]
        } else {
            let mut clients = Vec::new();
            for _ in 0..CONTENDERS {
                clients.push(rt.block_on(Async::connect(kind, urls))?);
            }
            clients
        };
        let key = format!("{tag}:{}:warm", kind.tag());
        rt.block_on(contended::round(&clients, &key, CONTENDED_TTL, s.secs(0.5)));
        groups.push((kind, clients, Vec::new()));
    }
    for r in 0..s.rounds {
        for j in 0..groups.len() {
            let idx = (r + j) % groups.len();
            let (kind, clients, rounds) = &mut groups[idx];
            let key = format!("{tag}:{}:{r}", kind.tag());
            let cpu = client_cpu_ns();
            let mut round =
                rt.block_on(contended::round(clients, &key, CONTENDED_TTL, s.secs(2.0)));
            round.cpu_ns = client_cpu_ns().saturating_sub(cpu);
            rounds.push(round);
        }
    }
    Ok(groups
        .into_iter()
        .map(|(kind, _, rounds)| (kind, Summary::of(&rounds)))
        .collect())
}

/// Scenario 2 and its table.
fn parallel_scenario(rt: &Runtime, s: &Settings, direct: &[String]) -> Result<(), String> {
    eprintln!("scenario 2: 32 tasks, direct");
    let par = [Kind::TokioRedlock, Kind::Rslock, Kind::AsyncFloor];
    let s2 = interleaved(
        rt,
        s,
        Phase {
            scenario: "s2",
            kinds: &par,
            urls: direct,
            tasks: PARALLEL_TASKS,
            dur: s.secs(1.0),
        },
        None,
    )?;
    report::table(
        "2. Parallel: 32 tasks on one manager, each on its own keys (direct)",
        &s2,
        None,
    );

    Ok(())
}

/// Scenarios 3 and 3b, their tables and their charts.
fn contention_scenarios(rt: &Runtime, s: &Settings, direct: &[String]) -> Result<(), String> {
    for (tag, title, shared) in [
        (
            "s3",
            "3. Contended: 16 clients, each its own manager, one key (direct)",
            false,
        ),
        (
            "s3b",
            "3b. Contended: 16 tasks sharing one manager, one key (direct)",
            true,
        ),
    ] {
        eprintln!("scenario {tag}");
        let groups = contended(rt, s, direct, shared)?;
        report::contended(title, &groups);
        let series: Vec<(&str, &[u64], &[u64])> = groups
            .iter()
            .map(|(kind, sum)| (kind.name(), &sum.all_us[..], &sum.per_client[..]))
            .collect();
        charts::write_contended(tag, title, &series);
    }
    Ok(())
}

/// Scenario 6: the same 17 clients with `read()`/`write()`, then all exclusive,
/// interleaved round by round, each round on its own resource.
fn read_heavy(
    rt: &Runtime,
    s: &Settings,
    urls: &[String],
) -> Result<Vec<(&'static str, Vec<read_heavy::ReadHeavy>)>, String> {
    let mut managers = Vec::new();
    for _ in 0..=read_heavy::READERS {
        managers.push(
            tokio_redlock::Redlock::builder()
                .nodes(urls)
                .build()
                .map_err(|e| e.to_string())?,
        );
    }
    rt.block_on(read_heavy::round(&managers, "rw:warm", true, s.secs(0.5)));
    let mut rows = vec![("read/write", Vec::new()), ("all exclusive", Vec::new())];
    for r in 0..s.rounds {
        for (j, (_, rounds)) in rows.iter_mut().enumerate() {
            let key = format!("rw:{j}:{r}");
            rounds.push(rt.block_on(read_heavy::round(&managers, &key, j == 0, s.secs(2.0))));
        }
    }
    Ok(rows)
}

/// Runs every scenario and prints the tables (Markdown, as pasted into the docs).
pub fn run() {
    if let Err(e) = try_run() {
        eprintln!("redlock-bench: {e}");
        std::process::exit(1);
    }
}

fn try_run() -> Result<(), String> {
    let s = Settings::from_env();
    let began = Instant::now();
    report::machine(&s);
    let harness = Harness::start()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name(CLIENT_THREAD)
        .build()
        .map_err(|e| e.to_string())?;
    let direct = harness.cluster().direct_urls();
    let proxied = harness.cluster().urls();
    let all = [
        Kind::TokioRedlock,
        Kind::Rslock,
        Kind::AsyncFloor,
        Kind::SyncFloor,
    ];

    if let Some(secs) = std::env::var("REDLOCK_BENCH_PROFILE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
    {
        return profile::run(&rt, &direct, secs);
    }

    // REDLOCK_BENCH_READ_HEAVY=1: only scenario 6.
    if std::env::var_os("REDLOCK_BENCH_READ_HEAVY").is_some() {
        let s6 = read_heavy(&rt, &s, &direct)?;
        read_heavy::report(
            "6. Read-heavy: 16 readers and 1 writer, each its own manager, one resource (direct)",
            &s6,
        );
        return Ok(());
    }
    // REDLOCK_BENCH_PARALLEL=1: only scenario 2.
    if std::env::var_os("REDLOCK_BENCH_PARALLEL").is_some() {
        parallel_scenario(&rt, &s, &direct)?;
        return Ok(());
    }
    // REDLOCK_BENCH_CONTENDED=1: only the two contention scenarios (3 and 3b).
    if std::env::var_os("REDLOCK_BENCH_CONTENDED").is_some() {
        contention_scenarios(&rt, &s, &direct)?;
        return Ok(());
    }

    // One task on the direct URLs, every subject, on `rt`.
    let uncontended = |rt: &Runtime, scenario: &str| {
        let phase = Phase {
            scenario,
            kinds: &all,
            urls: &direct,
            tasks: 1,
            dur: s.secs(1.0),
        };
        interleaved(rt, &s, phase, None)
    };
    eprintln!("scenario 1: uncontended, direct");
    let s1 = uncontended(&rt, "s1")?;
    report::table(
        "1. Uncontended: one task, lock + unlock of fresh keys (direct to the nodes)",
        &s1,
        None,
    );

    // The same on a current-thread runtime: one task needs no second worker, and a
    // multi-thread runtime's wake-ups of its idle worker (futex, eventfd) are part of
    // scenario 1's figures for every async subject. Informative; the targets are on 1.
    eprintln!("scenario 1c: uncontended, direct, current-thread runtime");
    let rt1 = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let s1c = uncontended(&rt1, "s1c")?;
    drop(rt1);
    report::table(
        "1c. Uncontended as in 1, every async subject on a current-thread runtime",
        &s1c,
        None,
    );

    parallel_scenario(&rt, &s, &direct)?;
    contention_scenarios(&rt, &s, &direct)?;

    eprintln!("scenario 6: read-heavy, 16 readers and 1 writer, direct");
    let s6 = read_heavy(&rt, &s, &direct)?;
    read_heavy::report(
        "6. Read-heavy: 16 readers and 1 writer, each its own manager, one resource (direct)",
        &s6,
    );

    eprintln!("scenario 1p: uncontended, through the proxies");
    let s1p = interleaved(
        &rt,
        &s,
        Phase {
            scenario: "s1p",
            kinds: &all,
            urls: &proxied,
            tasks: 1,
            dur: s.secs(1.0),
        },
        None,
    )?;
    report::table(
        "1p. Uncontended through the fault proxies, all nodes healthy (baseline of 4 and 5)",
        &s1p,
        None,
    );

    let sick = [Kind::TokioRedlock, Kind::Rslock];
    eprintln!("scenario 4: node {SICK} paused");
    let pause = || harness.on_harness(&rt, |c| async move { c.node(SICK).pause().await });
    let s4 = interleaved(
        &rt,
        &s,
        Phase {
            scenario: "s4",
            kinds: &sick,
            urls: &proxied,
            tasks: 1,
            dur: s.secs(3.0),
        },
        Some(&pause),
    );
    harness.on_harness(&rt, |c| async move { c.node(SICK).resume().await })?;
    harness.on_harness(&rt, |c| async move {
        c.wait_healthy(Duration::from_secs(10)).await
    })?;
    report::table(
        "4. One node SIGSTOPped: scenario 1 through the proxies",
        &s4?,
        Some(&s1p),
    );

    eprintln!("scenario 5: node {SICK} black-holed");
    let partition = || harness.on_harness(&rt, |c| async move { c.node(SICK).partition().await });
    let s5 = interleaved(
        &rt,
        &s,
        Phase {
            scenario: "s5",
            kinds: &sick,
            urls: &proxied,
            tasks: 1,
            dur: s.secs(3.0),
        },
        Some(&partition),
    );
    harness.on_harness(&rt, |c| async move { c.node(SICK).heal().await })?;
    report::table(
        "5. One node black-holed by its proxy: scenario 1 through the proxies",
        &s5?,
        Some(&s1p),
    );

    report::footer(began.elapsed());
    drop(rt);
    drop(harness);
    Ok(())
}
