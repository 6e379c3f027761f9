//! Drawing a run's schedule from its seed: managers, each episode's operations (the soak
//! workload's own mix too) and faults, late delivery last so that a seed replays.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

impl Schedule {
    pub fn generate(seed: u64, workload: Workload) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut managers: Vec<[MgrSpec; 2]> = (0..workload.clients())
            .map(|_| [mgr_spec(&mut rng, false), mgr_spec(&mut rng, true)])
            .collect();
        let episodes = (0..workload.episodes())
            .map(|_| episode(&mut rng, workload))
            .collect();
        // Drawn last, so that the rest of a seed's schedule does not depend on it.
        let shared: Vec<bool> = (0..workload.clients())
            .map(|c| c > 0 && rng.random_bool(0.3))
            .collect();
        for (c, s) in shared.iter().enumerate() {
            if *s {
                managers[c] = managers[0].clone();
            }
        }
        // Late delivery came after the rest: drawn last too, so the rest of a seed's
        // schedule is what it was before.
        let mut episodes: Vec<Episode> = episodes;
        if workload != Workload::Soak {
            for e in &mut episodes {
                late_faults(&mut rng, e, workload.nodes());
            }
        }
        Self {
            seed,
            workload,
            managers,
            shared,
            episodes,
        }
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn mgr_spec(rng: &mut StdRng, fencing: bool) -> MgrSpec {
    // One manager in four is drawn at the extremes of the legal range.
    let extreme = rng.random_bool(0.25);
    if extreme {
        MgrSpec {
            fencing,
            retry_count: pick(rng, &[0, 0, 1, 20]),
            retry_delay_ms: pick(rng, &[0, 1, 300]),
            jitter_ms: pick(rng, &[0, 1, 200]),
            drift: pick(rng, &[0.0, 0.5, 0.99]),
            node_timeout_ms: pick(rng, &[1, 2, 1_000]),
            wake: rng.random_bool(0.5),
        }
    } else {
        MgrSpec {
            fencing,
            retry_count: rng.random_range(0..=4),
            retry_delay_ms: rng.random_range(0..=40),
            jitter_ms: rng.random_range(0..=40),
            drift: pick(rng, &[0.0, 0.01, 0.01, 0.05]),
            node_timeout_ms: pick(rng, &[20, 50, 100, 250]),
            wake: rng.random_bool(0.8),
        }
    }
}

fn ttl(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..20) {
        0 => pick(rng, &[0, 1, 3, 4, u64::MAX]),
        1..=3 => rng.random_range(5..=60),
        _ => rng.random_range(100..=2_500),
    }
}

fn small_budget(rng: &mut StdRng) -> Option<u64> {
    // A cancellation at a random point: a few ms cut most calls short somewhere inside.
    rng.random_bool(0.15).then(|| rng.random_range(0..=25))
}

fn opts(rng: &mut StdRng) -> Opts {
    Opts {
        extend_after: pick(rng, &[0.0, 0.05, 1.0 / 3.0, 0.5, 0.9, 1.0, f64::NAN]),
        max_hold_ms: pick(
            rng,
            &[None, None, Some(0), Some(50), Some(400), Some(u64::MAX)],
        ),
        max_extensions: pick(
            rng,
            &[None, None, Some(0), Some(1), Some(3), Some(u32::MAX)],
        ),
    }
}

fn op(rng: &mut StdRng) -> Op {
    let mgr = rng.random_range(0..2);
    let res = rng.random_range(0..RESOURCES);
    match rng.random_range(0..100) {
        0..=17 => Op::Acquire {
            mgr,
            res,
            how: super::rw_and_permits::draw(rng, How::Acquire),
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        18..=25 => Op::Acquire {
            mgr,
            res,
            how: super::rw_and_permits::draw(rng, How::TryAcquire),
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        26..=30 => Op::Acquire {
            mgr,
            res,
            how: How::Many,
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        31..=46 => Op::Extend {
            ttl: if rng.random_bool(0.8) {
                ExtendTtl::OfLeft(rng.random_range(0.02..2.5))
            } else {
                ExtendTtl::Ms(pick(rng, &[0, 1, 3, 4, 10, u64::MAX]))
            },
            budget_ms: small_budget(rng),
        },
        47..=58 => Op::Release {
            budget_ms: small_budget(rng),
        },
        59..=62 => Op::Drop,
        63..=65 => Op::DropOnThread,
        66..=73 => Op::KeepAlive {
            opts: opts(rng),
            on_thread: rng.random_bool(0.4),
        },
        74..=89 => Op::Hold {
            ms: rng.random_range(1..=400),
        },
        _ => Op::WithLock {
            mgr,
            res,
            ttl_ms: ttl(rng),
            opts: opts(rng),
            work_ms: rng.random_range(0..=800),
            budget_ms: small_budget(rng).map(|b| b * 10),
        },
    }
}

/// Quick operations for long runs: mostly acquire, extend and release, short holds.
fn soak_op(rng: &mut StdRng) -> Op {
    let mgr = rng.random_range(0..2);
    let res = rng.random_range(0..RESOURCES);
    let ttl_ms = rng.random_range(100..=2_000);
    let budget_ms = rng.random_bool(0.05).then(|| rng.random_range(0..=10));
    match rng.random_range(0..100) {
        0..=29 => Op::Acquire {
            mgr,
            res,
            how: How::Acquire,
            ttl_ms,
            budget_ms,
        },
        30..=44 => Op::Acquire {
            mgr,
            res,
            how: How::TryAcquire,
            ttl_ms,
            budget_ms,
        },
        45..=49 => Op::Acquire {
            mgr,
            res,
            how: How::Many,
            ttl_ms,
            budget_ms,
        },
        50..=62 => Op::Extend {
            ttl: ExtendTtl::OfLeft(rng.random_range(0.3..2.0)),
            budget_ms,
        },
        63..=84 => Op::Release { budget_ms },
        85..=87 => Op::Drop,
        88..=89 => Op::KeepAlive {
            opts: opts(rng),
            on_thread: rng.random_bool(0.3),
        },
        90..=94 => Op::Hold {
            ms: rng.random_range(1..=20),
        },
        _ => Op::WithLock {
            mgr,
            res,
            ttl_ms,
            opts: opts(rng),
            work_ms: rng.random_range(0..=50),
            budget_ms: None,
        },
    }
}

fn episode(rng: &mut StdRng, workload: Workload) -> Episode {
    let span = EPISODE.as_millis() as u64;
    let steps = (0..workload.clients())
        .map(|_| {
            let mut steps = Vec::new();
            let mut t = 0;
            while t < span {
                let (think_ms, op) = if workload == Workload::Soak {
                    let think_ms = pick(rng, &[0, 0, 1, 2, 5]);
                    t += think_ms + 8;
                    (think_ms, soak_op(rng))
                } else {
                    let think_ms = pick(rng, &[0, 0, 1, 5, 20, 60]);
                    t += think_ms + 40;
                    (think_ms, op(rng))
                };
                steps.push(Step { think_ms, op });
            }
            steps
        })
        .collect();
    let n = workload.nodes();
    let minority = (n - 1) / 2;
    let mut faults = Vec::new();
    let mut busy_until = vec![0u64; n];
    let mut t = rng.random_range(0..200);
    // Half the episodes open with a node silent for seconds: every manager is fresh at
    // an episode's start, so its first waits need subscriptions, and one to a silent
    // node must not hold a wait up.
    if workload != Workload::Soak && rng.random_bool(0.5) {
        let node = rng.random_range(0..n);
        let dur_ms = rng.random_range(2_200..=2_600);
        faults.push(FaultStep {
            at_ms: rng.random_range(0..100),
            node,
            kind: FaultKind::Pause,
            dur_ms,
        });
        busy_until[node] = dur_ms + 150;
    }
    while t < span - 200 {
        let node = rng.random_range(0..n);
        let dur_ms = rng.random_range(30..=600);
        let faulted = busy_until.iter().filter(|&&b| b > t).count();
        // Mostly a minority at a time; sometimes a majority, which must only fail safely.
        let allow = faulted < minority || rng.random_bool(0.1);
        if busy_until[node] <= t && allow {
            let kind = fault_kind(rng, workload);
            // A flap heals within the node timeout of most managers; one pause in four
            // is a node silent for seconds (it accepts connections and answers
            // nothing), longer than a subscription may take to give up.
            let dur_ms = match kind {
                FaultKind::Flap => rng.random_range(5..=80),
                FaultKind::Pause if rng.random_bool(0.25) => rng.random_range(2_200..=2_600),
                _ => dur_ms,
            };
            faults.push(FaultStep {
                at_ms: t,
                node,
                kind,
                dur_ms,
            });
            busy_until[node] = t + dur_ms + 50;
        }
        t += if workload == Workload::Soak {
            rng.random_range(300..1_200)
        } else {
            rng.random_range(50..400)
        };
    }
    Episode { steps, faults }
}

/// Up to two late-delivery faults in `e`, each on a node with no other fault around it,
/// long enough for a client to give up on the held connection (three node timeouts) and
/// go on on a new one. Inserted in time order without moving the other faults.
fn late_faults(rng: &mut StdRng, e: &mut Episode, nodes: usize) {
    let span = EPISODE.as_millis() as u64;
    for _ in 0..rng.random_range(0..=2) {
        let node = rng.random_range(0..nodes);
        let at_ms = rng.random_range(0..span - 900);
        let dur_ms = rng.random_range(300..=900);
        let clear = e
            .faults
            .iter()
            .filter(|f| f.node == node)
            .all(|f| f.at_ms + f.dur_ms + 50 < at_ms || at_ms + dur_ms + 50 < f.at_ms);
        if !clear {
            continue;
        }
        let at = e
            .faults
            .iter()
            .position(|f| f.at_ms > at_ms)
            .unwrap_or(e.faults.len());
        e.faults.insert(
            at,
            FaultStep {
                at_ms,
                node,
                kind: FaultKind::Late,
                dur_ms,
            },
        );
    }
}

fn fault_kind(rng: &mut StdRng, workload: Workload) -> FaultKind {
    loop {
        let kind = match rng.random_range(0..11) {
            0 => FaultKind::Pause,
            1 => FaultKind::KillRestart,
            2 => FaultKind::Partition,
            3 => FaultKind::DropRequests,
            4 => FaultKind::DropReplies,
            5 => FaultKind::Resets(pick(rng, &[1, 2, 5, u32::MAX])),
            6 | 7 => FaultKind::Flap,
            8 => FaultKind::Latency(rng.random_range(5..=150)),
            9 => FaultKind::Spike(rng.random_range(20..=400)),
            _ => FaultKind::ScriptFlush,
        };
        let ok = match workload {
            Workload::Api | Workload::Soak => kind != FaultKind::KillRestart,
            Workload::Crash => !matches!(kind, FaultKind::ScriptFlush),
        };
        if ok {
            return kind;
        }
    }
}
