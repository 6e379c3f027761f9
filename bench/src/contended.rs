//! Scenario 3: many clients, each with its own manager and connections, on one key.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::measure::Round;
use crate::subjects::Async;

/// What a won acquisition holds until it is released.
enum Held {
    TokioRedlock(tokio_redlock::LockGuard),
    Rslock(rslock::LockManager, rslock::Lock),
}

/// One acquisition attempt as the library's own `acquire` does it, retries included.
async fn acquire(client: &Async, key: &str, ttl: Duration) -> Result<Held, String> {
    match client {
        Async::TokioRedlock(rl) => rl
            .acquire(key, ttl)
            .await
            .map(Held::TokioRedlock)
            .map_err(|e| e.to_string()),
        // `lock` makes rslock's 3 tries with 0..200 ms pauses; its `acquire` is the same
        // call in an endless loop, which is what the caller below does.
        Async::Rslock(m) => m
            .lock(key.as_bytes(), ttl)
            .await
            .map(|l| Held::Rslock(m.clone(), l))
            .map_err(|e| e.to_string()),
        Async::Floor(_) => Err("the floors are not measured under contention".into()),
    }
}

async fn release(held: Held) {
    match held {
        Held::TokioRedlock(g) => {
            // A failed release leaves the key to its TTL; the next waits show it.
            let _ = g.release().await;
        }
        Held::Rslock(m, l) => m.unlock(&l).await,
    }
}

#[derive(Default)]
struct Shared {
    in_section: AtomicBool,
    overlaps: AtomicU64,
    retakes: AtomicU64,
    /// The client that held the lock last (`usize::MAX`: nobody yet).
    last: AtomicUsize,
    /// When the last release started, in ns since the round began (0: none yet).
    released_at: AtomicU64,
}

/// Runs `clients` against one `key` until `deadline`. Each client loops: acquire
/// (retrying until it wins), a short critical section, release. A wait still under way at
/// the deadline is abandoned, counted in `capped`, and enters the latencies at the time
/// it had waited.
pub(crate) async fn round(clients: &[Async], key: &str, ttl: Duration, dur: Duration) -> Round {
    let shared = Arc::new(Shared {
        last: AtomicUsize::new(usize::MAX),
        ..Shared::default()
    });
    let start = Instant::now();
    let deadline = tokio::time::Instant::from_std(start + dur);
    let tasks: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(me, client)| {
            let client = client.clone();
            let key = key.to_owned();
            let shared = Arc::clone(&shared);
            tokio::spawn(async move {
                let mut waits = Vec::new();
                let mut gaps = Vec::new();
                let (mut errors, mut cut) = (0u64, 0u64);
                'outer: while tokio::time::Instant::now() < deadline {
                    let first = Instant::now();
                    let held = loop {
                        tokio::select! {
                            r = acquire(&client, &key, ttl) => match r {
                                Ok(h) => break h,
                                // Out of retries: keep waiting, as a caller who must
                                // have the lock would; the wait goes on from `first`.
                                Err(_) => errors += 1,
                            },
                            _ = tokio::time::sleep_until(deadline) => {
                                // Counted at what it has waited so far: a lower bound,
                                // but leaving it out would hide starved clients.
                                waits.push(first.elapsed().as_micros() as u64);
                                cut += 1;
                                break 'outer;
                            }
                        }
                    };
                    waits.push(first.elapsed().as_micros() as u64);
                    // The hand-over: from the previous holder's release call to this win.
                    let since = start.elapsed().as_nanos() as u64;
                    let released = shared.released_at.load(Ordering::SeqCst);
                    if released > 0 {
                        gaps.push(since.saturating_sub(released) / 1000);
                    }
                    if shared.in_section.swap(true, Ordering::SeqCst) {
                        shared.overlaps.fetch_add(1, Ordering::SeqCst);
                    }
                    if shared.last.swap(me, Ordering::SeqCst) == me {
                        shared.retakes.fetch_add(1, Ordering::SeqCst);
                    }
                    // The short critical section: one trip through the scheduler.
                    tokio::task::yield_now().await;
                    shared.in_section.store(false, Ordering::SeqCst);
                    let now = start.elapsed().as_nanos() as u64;
                    shared.released_at.store(now.max(1), Ordering::SeqCst);
                    release(held).await;
                }
                (waits, gaps, errors, cut)
            })
        })
        .collect();
    let mut round = Round::default();
    for task in tasks {
        let Ok((waits, gaps, errors, cut)) = task.await else {
            continue;
        };
        round.handover_us.extend(gaps);
        let won = waits.len() as u64 - cut;
        round.per_client.push(won);
        round.ops += won;
        round.latencies_us.extend(waits);
        round.errors += errors;
        round.capped += cut;
    }
    round.elapsed = start.elapsed();
    round.retakes = shared.retakes.load(Ordering::SeqCst);
    round.overlaps = shared.overlaps.load(Ordering::SeqCst);
    round
}
