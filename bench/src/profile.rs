//! `REDLOCK_BENCH_PROFILE=secs`: one subject, one scenario, alone, for a profiler
//! (valgrind's dhat or callgrind, `perf`). Take figures per operation as the difference
//! between a short and a long run, so start-up and warm-up cancel out.
//!
//! - `REDLOCK_BENCH_SUBJECT=rslock|async-floor|sync-floor` (default tokio-redlock);
//! - `REDLOCK_BENCH_PROFILE_SCENARIO=uncontended|tasks32|managers16` (default
//!   uncontended): scenario 1 (one task, fresh keys), 2 (32 tasks on one manager, each
//!   on its own keys) or 3 (16 clients, each its own manager, on one key).
//!
//! Besides the client's own figures it prints the commands the five servers ran
//! (`INFO commandstats`, summed over the nodes, commands called from Lua included), so
//! server work per operation can be read off the same runs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;

use crate::measure::{client_cpu_ns, percentile, Round};
use crate::subjects::{Async, Kind};
use crate::{connect, contended, run_round, CONTENDED_TTL, CONTENDERS, PARALLEL_TASKS};

/// The scenario profiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Uncontended,
    Tasks32,
    Managers16,
}

impl Scenario {
    fn from_env() -> Result<Self, String> {
        match std::env::var("REDLOCK_BENCH_PROFILE_SCENARIO").as_deref() {
            Err(_) | Ok("uncontended") => Ok(Self::Uncontended),
            Ok("tasks32") => Ok(Self::Tasks32),
            Ok("managers16") => Ok(Self::Managers16),
            Ok(other) => Err(format!(
                "REDLOCK_BENCH_PROFILE_SCENARIO={other}: say uncontended, tasks32 or managers16"
            )),
        }
    }
}

/// Calls per command, summed over the nodes at `urls`.
fn commandstats(urls: &[String]) -> Result<BTreeMap<String, u64>, String> {
    let mut calls = BTreeMap::new();
    for url in urls {
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let mut conn = client.get_connection().map_err(|e| format!("{url}: {e}"))?;
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut conn)
            .map_err(|e| e.to_string())?;
        // Lines such as `cmdstat_evalsha:calls=123,usec=...`.
        for line in info.lines() {
            let Some((name, rest)) = line
                .strip_prefix("cmdstat_")
                .and_then(|l| l.split_once(':'))
            else {
                continue;
            };
            let n = rest
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            *calls.entry(name.to_owned()).or_insert(0) += n;
        }
    }
    Ok(calls)
}

/// CPU time, in µs, used so far by this process's `redis-server` children (user and
/// system, from `/proc/<pid>/stat`, in clock ticks of 10 ms: read it over seconds).
fn servers_cpu_us() -> u64 {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0u64;
    for p in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ... utime stime ...`: fields after the comm's `)`.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        if !head.ends_with("(redis-server") {
            continue;
        }
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.get(1) != Some(&me.as_str()) {
            continue;
        }
        let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        ticks += n(11) + n(12);
    }
    // USER_HZ is 100 on Linux.
    ticks * 10_000
}

/// Runs the profiled scenario for `secs` after a short warm-up, and prints what it did.
pub(crate) fn run(rt: &Runtime, urls: &[String], secs: f64) -> Result<(), String> {
    let kind = match std::env::var("REDLOCK_BENCH_SUBJECT").as_deref() {
        Ok("rslock") => Kind::Rslock,
        Ok("async-floor") => Kind::AsyncFloor,
        Ok("sync-floor") => Kind::SyncFloor,
        _ => Kind::TokioRedlock,
    };
    let scenario = Scenario::from_env()?;
    let dur = Duration::from_secs_f64(secs);
    let warm = Duration::from_millis(200);
    let before;
    let servers;
    let round = match scenario {
        Scenario::Uncontended | Scenario::Tasks32 => {
            let tasks = if scenario == Scenario::Tasks32 {
                PARALLEL_TASKS
            } else {
                1
            };
            let mut subject = connect(rt, kind, urls)?;
            run_round(rt, &mut subject, "profile:warm", tasks, warm);
            before = commandstats(urls)?;
            servers = servers_cpu_us();
            run_round(rt, &mut subject, "profile", tasks, dur)
        }
        Scenario::Managers16 => {
            let mut clients = Vec::new();
            for _ in 0..CONTENDERS {
                clients.push(rt.block_on(Async::connect(kind, urls))?);
            }
            rt.block_on(contended::round(
                &clients,
                "profile:warm",
                CONTENDED_TTL,
                warm,
            ));
            before = commandstats(urls)?;
            servers = servers_cpu_us();
            let cpu = client_cpu_ns();
            let start = Instant::now();
            let mut round = rt.block_on(contended::round(&clients, "profile", CONTENDED_TTL, dur));
            round.elapsed = start.elapsed();
            round.cpu_ns = client_cpu_ns().saturating_sub(cpu);
            round
        }
    };
    let servers = servers_cpu_us().saturating_sub(servers);
    let after = commandstats(urls)?;
    print(kind, scenario, &round, &before, &after);
    println!(
        "servers' CPU (5 redis-server processes): {:.1} µs/op",
        servers as f64 / round.ops.max(1) as f64
    );
    if !round.handover_us.is_empty() {
        println!(
            "hand-over (release call to the next win): p50 {} µs, p90 {} µs, p99 {} µs",
            percentile(&round.handover_us, 50.0),
            percentile(&round.handover_us, 90.0),
            percentile(&round.handover_us, 99.0),
        );
    }
    Ok(())
}

fn print(
    kind: Kind,
    scenario: Scenario,
    round: &Round,
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) {
    let (fair_min, fair_max) = round.fairness();
    println!(
        "profile {} {scenario:?}: {} ops in {:.2} s, {} errors, {} cut, p50 {} µs, p99 {} µs, \
         CPU {:.1} µs/op, re-take {:.2}, fairness {fair_min:.2}..{fair_max:.2}, overlaps {}",
        kind.name(),
        round.ops,
        round.elapsed.as_secs_f64(),
        round.errors,
        round.capped,
        round.percentile_us(50.0),
        round.percentile_us(99.0),
        round.cpu_us_per_success(),
        round.retake_share(),
        round.overlaps,
    );
    let ops = round.ops.max(1) as f64;
    let mut total = 0u64;
    let mut line = String::new();
    for (name, n) in after {
        // The INFO calls and their connections' greetings are this count's, not the
        // subject's.
        let d = n.saturating_sub(before.get(name).copied().unwrap_or(0));
        if d == 0 || name == "info" || name.starts_with("client") || name == "hello" {
            continue;
        }
        total += d;
        line.push_str(&format!(" {name}={d} ({:.2}/op)", d as f64 / ops));
    }
    println!(
        "server commands (5 nodes): {total} ({:.2}/op):{line}",
        total as f64 / ops
    );
}
