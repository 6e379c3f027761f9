//! Shrinking a failing schedule: a simple delta-debugging pass over the episodes, then
//! whole clients and the fault list, then single operations and faults, keeping every cut
//! after which a run still shows a violation of the same kind. Runs are real (timing
//! varies), so a cut that loses the failure is simply not kept.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock::harness::Cluster;

use super::driver::{self, Outcome};
use super::oracle::Kind;
use super::schedule::{Episode, Schedule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Item {
    Fault(usize),
    Step(usize, usize),
}

fn items(e: &Episode) -> Vec<Item> {
    let mut out: Vec<Item> = (0..e.faults.len()).map(Item::Fault).collect();
    for (c, steps) in e.steps.iter().enumerate() {
        out.extend((0..steps.len()).map(|i| Item::Step(c, i)));
    }
    out
}

fn without(e: &Episode, cut: &BTreeSet<Item>) -> Episode {
    Episode {
        faults: e
            .faults
            .iter()
            .enumerate()
            .filter(|(i, _)| !cut.contains(&Item::Fault(*i)))
            .map(|(_, f)| f.clone())
            .collect(),
        steps: e
            .steps
            .iter()
            .enumerate()
            .map(|(c, steps)| {
                steps
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !cut.contains(&Item::Step(c, *i)))
                    .map(|(_, s)| s.clone())
                    .collect()
            })
            .collect(),
    }
}

pub struct Shrunk {
    pub schedule: Schedule,
    pub outcome: Option<Outcome>,
    pub runs: usize,
}

/// Shrinks `sched`, which failed with violations of `kinds`, within `budget`.
pub async fn shrink(
    cluster: Arc<Cluster>,
    sched: &Schedule,
    kinds: &BTreeSet<Kind>,
    first_episode: usize,
    budget: Duration,
) -> Shrunk {
    let deadline = Instant::now() + budget;
    let mut runs = 0;
    let mut best = sched.clone();
    let mut best_outcome = None;
    let fails = |o: &Outcome| o.violations.iter().any(|v| kinds.contains(&v.kind));
    // 1. The episode of the first violation alone.
    if sched.episodes.len() > 1 {
        let mut one = sched.clone();
        one.episodes = vec![sched.episodes[first_episode.min(sched.episodes.len() - 1)].clone()];
        runs += 1;
        let o = driver::run(cluster.clone(), &one).await;
        if fails(&o) {
            best = one;
            best_outcome = Some(o);
        }
    }
    if best.episodes.len() != 1 {
        return Shrunk {
            schedule: best,
            outcome: best_outcome,
            runs,
        };
    }
    // 2. Delta debugging over the episode's faults and steps: groups first (all faults,
    // each client), then halves, quarters, ... down to single items.
    let episode = best.episodes[0].clone();
    let mut kept: Vec<Item> = items(&episode);
    let mut groups: Vec<Vec<Item>> = Vec::new();
    groups.push(
        kept.iter()
            .copied()
            .filter(|i| matches!(i, Item::Fault(_)))
            .collect(),
    );
    for c in 0..episode.steps.len() {
        groups.push(
            kept.iter()
                .copied()
                .filter(|i| matches!(i, Item::Step(cc, _) if *cc == c))
                .collect(),
        );
    }
    let mut cut: BTreeSet<Item> = BTreeSet::new();
    let mut chunk = kept.len().div_ceil(2).max(1);
    let mut first_pass = true;
    loop {
        let candidates: Vec<Vec<Item>> = if first_pass {
            groups.clone()
        } else {
            kept.chunks(chunk).map(<[Item]>::to_vec).collect()
        };
        let mut progressed = false;
        for group in candidates {
            if Instant::now() >= deadline {
                break;
            }
            if group.is_empty() || group.iter().all(|i| cut.contains(i)) {
                continue;
            }
            let mut trial = cut.clone();
            trial.extend(group.iter().copied());
            let mut cand = best.clone();
            cand.episodes = vec![without(&episode, &trial)];
            runs += 1;
            let o = driver::run(cluster.clone(), &cand).await;
            if fails(&o) {
                cut = trial;
                best_outcome = Some(o);
                progressed = true;
            }
        }
        kept.retain(|i| !cut.contains(i));
        if Instant::now() >= deadline || kept.is_empty() {
            break;
        }
        if first_pass {
            first_pass = false;
            chunk = kept.len().div_ceil(2).max(1);
            continue;
        }
        if !progressed {
            if chunk == 1 {
                break;
            }
            chunk = chunk.div_ceil(2);
        }
    }
    best.episodes = vec![without(&episode, &cut)];
    Shrunk {
        schedule: best,
        outcome: best_outcome,
        runs,
    }
}
