//! Markdown output: the machine, then one table per scenario.

use std::fs;
use std::process::Command;
use std::time::Duration;

use crate::measure::Summary;
use crate::subjects::Kind;
use crate::Settings;

fn num(x: f64) -> String {
    if x.is_nan() {
        "—".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_nan() || b.is_nan() || b == 0.0 {
        "—".into()
    } else {
        let r = a / b;
        if r < 0.1 {
            format!("{r:.4}")
        } else {
            format!("{r:.2}")
        }
    }
}

fn find(rows: &[(Kind, Summary)], kind: Kind) -> Option<&Summary> {
    rows.iter().find(|(k, _)| *k == kind).map(|(_, s)| s)
}

fn load() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// The machine, the date and the load, so a reader can judge the absolute figures.
pub(crate) fn machine(s: &Settings) {
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "?".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_owned())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let date = Command::new("date")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let redis =
        Command::new(std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into()))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default();
    println!("## Run");
    println!();
    println!("- date: {date}");
    println!("- machine: {cores} cores, {cpu}, {mem} RAM");
    println!("- load average at start (1, 5, 15 min): {}", load());
    println!("- {redis}");
    println!(
        "- rounds: {} per subject, interleaved; round length x{} (REDLOCK_BENCH_SCALE)",
        s.rounds, s.scale
    );
    println!();
}

pub(crate) fn footer(took: Duration) {
    println!("- load average at end (1, 5, 15 min): {}", load());
    println!("- whole run: {:.0} s", took.as_secs_f64());
}

/// Scenarios 1, 2, 4 and 5. With `healthy`, adds each subject's ratio to its own
/// healthy run.
pub(crate) fn table(title: &str, rows: &[(Kind, Summary)], healthy: Option<&[(Kind, Summary)]>) {
    println!("### {title}");
    println!();
    let floor = find(rows, Kind::AsyncFloor).map_or(f64::NAN, |s| s.p50_us);
    let sync = find(rows, Kind::SyncFloor).map_or(f64::NAN, |s| s.p50_us);
    let rs = find(rows, Kind::Rslock);
    let (rs_p50, rs_ops) = rs.map_or((f64::NAN, f64::NAN), |s| (s.p50_us, s.ops_per_sec));
    if healthy.is_some() {
        println!("| subject | ops/s | p50 µs | p99 µs | CPU µs/op | errors | cut at 2 s | p50 ÷ healthy | p99 ÷ healthy | p50 ÷ rslock |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    } else {
        println!("| subject | ops/s | p50 µs | p99 µs | CPU µs/op | errors | p50 ÷ async floor | p50 ÷ sync floor | p50 ÷ rslock | ops/s ÷ rslock |");
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    }
    for (kind, s) in rows {
        let head = format!(
            "| {} | {} | {} | {} | {} | {} |",
            kind.name(),
            num(s.ops_per_sec),
            num(s.p50_us),
            num(s.p99_us),
            num(s.cpu_us_per_op),
            s.errors
        );
        match healthy.map(|h| find(h, *kind)) {
            Some(h) => {
                let (hp50, hp99) = h.map_or((f64::NAN, f64::NAN), |h| (h.p50_us, h.p99_us));
                println!(
                    "{head} {} | {} | {} | {} |",
                    s.capped,
                    ratio(s.p50_us, hp50),
                    ratio(s.p99_us, hp99),
                    ratio(s.p50_us, rs_p50)
                );
            }
            None => println!(
                "{head} {} | {} | {} | {} |",
                ratio(s.p50_us, floor),
                ratio(s.p50_us, sync),
                ratio(s.p50_us, rs_p50),
                ratio(s.ops_per_sec, rs_ops)
            ),
        }
    }
    println!();
}

/// Scenario 3.
pub(crate) fn contended(title: &str, rows: &[(Kind, Summary)]) {
    println!("### {title}");
    println!();
    let rs = find(rows, Kind::Rslock);
    let (rs_ops, rs_p99) = rs.map_or((f64::NAN, f64::NAN), |s| (s.ops_per_sec, s.p99_us));
    println!("| subject | acq/s | wait p50 µs | wait p99 µs | longest wait µs | CPU µs/acq | least ÷ mean | most ÷ mean | re-take | overlaps | failed acquire calls | waits cut at round end | acq/s ÷ rslock | p99 ÷ rslock |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (kind, s) in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.0} % | {} | {} | {} | {} | {} |",
            kind.name(),
            num(s.ops_per_sec),
            num(s.p50_us),
            num(s.p99_us),
            num(s.max_us),
            num(s.cpu_us_per_success),
            s.fair_min,
            s.fair_max,
            s.retake * 100.0,
            s.overlaps,
            s.errors,
            s.capped,
            ratio(s.ops_per_sec, rs_ops),
            ratio(s.p99_us, rs_p99)
        );
    }
    println!();
}
