//! Scenario 6: a read-heavy resource, 16 readers and 1 writer, each client with its own
//! tokio-redlock manager. Once with `read()`/`write()`, once with every client taking
//! the plain exclusive lock, to show what sharing buys. (rslock has no reader-writer lock.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock::Redlock;

use crate::measure::percentile;

/// Readers of scenario 6, as the issue names them, beside one writer.
pub(crate) const READERS: usize = 16;
/// How long each holder stays in: a short read or write of the protected data.
const SECTION: Duration = Duration::from_millis(1);
/// Lock ttl: only matters for a holder cut off at the round's end.
const TTL: Duration = Duration::from_secs(2);

/// What one round of scenario 6 did.
#[derive(Debug, Default)]
pub(crate) struct ReadHeavy {
    pub(crate) elapsed: Duration,
    pub(crate) reads: u64,
    pub(crate) writes: u64,
    pub(crate) read_waits_us: Vec<u64>,
    pub(crate) write_waits_us: Vec<u64>,
    /// Times a writer was inside while anyone else was, or a reader while a writer was.
    /// Must be zero.
    pub(crate) overlaps: u64,
    pub(crate) errors: u64,
}

#[derive(Default)]
struct Inside {
    readers: AtomicU64,
    writers: AtomicU64,
    overlaps: AtomicU64,
}

/// Runs the readers and the writer on `key` for `dur`; with `shared` false every client
/// takes the exclusive lock instead.
pub(crate) async fn round(
    managers: &[Redlock],
    key: &str,
    shared: bool,
    dur: Duration,
) -> ReadHeavy {
    let inside = Arc::new(Inside::default());
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + dur);
    let tasks: Vec<_> = managers
        .iter()
        .enumerate()
        .map(|(i, lock)| {
            let (lock, key, inside) = (lock.clone(), key.to_owned(), Arc::clone(&inside));
            // The last client writes; the others read.
            let writer = i == managers.len() - 1;
            tokio::spawn(async move {
                let (mut waits, mut errors) = (Vec::new(), 0u64);
                while tokio::time::Instant::now() < deadline {
                    let first = Instant::now();
                    let request = lock.lock(&key).ttl(TTL).wait(dur);
                    let request = match (shared, writer) {
                        (false, _) => request,
                        (true, true) => request.write(),
                        (true, false) => request.read(),
                    };
                    let got = tokio::select! {
                        g = request.acquire() => g,
                        _ = tokio::time::sleep_until(deadline) => break,
                    };
                    let Ok(guard) = got else {
                        errors += 1;
                        continue;
                    };
                    waits.push(first.elapsed().as_micros() as u64);
                    let (mine, other) = if writer {
                        (&inside.writers, &inside.readers)
                    } else {
                        (&inside.readers, &inside.writers)
                    };
                    let before = mine.fetch_add(1, Ordering::SeqCst);
                    // Shared: a writer meets nobody, a reader meets no writer. Exclusive:
                    // nobody meets anybody.
                    let crowded = (writer || !shared) && before > 0;
                    if crowded || other.load(Ordering::SeqCst) > 0 {
                        inside.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(SECTION).await;
                    mine.fetch_sub(1, Ordering::SeqCst);
                    let _ = guard.release().await;
                }
                (writer, waits, errors)
            })
        })
        .collect();
    let mut out = ReadHeavy::default();
    for task in tasks {
        let Ok((writer, waits, errors)) = task.await else {
            continue;
        };
        out.errors += errors;
        if writer {
            out.writes += waits.len() as u64;
            out.write_waits_us.extend(waits);
        } else {
            out.reads += waits.len() as u64;
            out.read_waits_us.extend(waits);
        }
    }
    out.elapsed = start.elapsed();
    out.overlaps = inside.overlaps.load(Ordering::SeqCst);
    out
}

/// Prints scenario 6's table: one row per mode, the rounds pooled.
pub(crate) fn report(title: &str, rows: &[(&str, Vec<ReadHeavy>)]) {
    println!("### {title}");
    println!();
    println!("| mode | reads/s | writes/s | read wait p50 µs | read wait p99 µs | write wait p50 µs | write wait p99 µs | write wait max µs | overlaps | failed acquire calls |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (mode, rounds) in rows {
        let secs: f64 = rounds.iter().map(|r| r.elapsed.as_secs_f64()).sum();
        let reads: u64 = rounds.iter().map(|r| r.reads).sum();
        let writes: u64 = rounds.iter().map(|r| r.writes).sum();
        let rw: Vec<u64> = rounds
            .iter()
            .flat_map(|r| r.read_waits_us.clone())
            .collect();
        let ww: Vec<u64> = rounds
            .iter()
            .flat_map(|r| r.write_waits_us.clone())
            .collect();
        println!(
            "| {mode} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
            reads as f64 / secs.max(1e-9),
            writes as f64 / secs.max(1e-9),
            percentile(&rw, 50.0),
            percentile(&rw, 99.0),
            percentile(&ww, 50.0),
            percentile(&ww, 99.0),
            percentile(&ww, 100.0),
            rounds.iter().map(|r| r.overlaps).sum::<u64>(),
            rounds.iter().map(|r| r.errors).sum::<u64>(),
        );
    }
    println!();
}
