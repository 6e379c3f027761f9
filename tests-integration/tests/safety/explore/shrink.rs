//! Shrinking a failing schedule: a simple delta-debugging pass over the episodes, then
//! whole clients and the fault list, then single operations and faults, keeping every cut
//! after which a run still shows a violation of the same kind. Runs are real (timing
//! varies), so a cut that loses the failure is simply not kept. Candidates run without
//! the client processes (`driver::run_in_process`): their rounds are not in the script and
//! cannot be cut, so a failure that needs them does not shrink (its seed still replays).

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_redlock_harness::Cluster;

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

pub struct Shrunk<O> {
    pub schedule: Schedule,
    pub outcome: Option<O>,
    pub runs: usize,
}

/// Shrinks `sched`, which failed with violations of `kinds`, within `budget`.
pub async fn shrink(
    cluster: Arc<Cluster>,
    sched: &Schedule,
    kinds: &BTreeSet<Kind>,
    first_episode: usize,
    budget: Duration,
) -> Shrunk<Outcome> {
    shrink_by(sched, first_episode, budget, |cand: Schedule| {
        let cluster = cluster.clone();
        async move {
            let o = driver::run_in_process(cluster, &cand).await;
            o.violations
                .iter()
                .any(|v| kinds.contains(&v.kind))
                .then_some(o)
        }
    })
    .await
}

/// The shrinking itself: `still_fails` runs a candidate and returns `Some` when it fails.
pub async fn shrink_by<O, F, Fut>(
    sched: &Schedule,
    first_episode: usize,
    budget: Duration,
    mut still_fails: F,
) -> Shrunk<O>
where
    F: FnMut(Schedule) -> Fut,
    Fut: Future<Output = Option<O>>,
{
    let deadline = Instant::now() + budget;
    let mut runs = 0;
    let mut best = sched.clone();
    let mut best_outcome = None;
    // 1. The episode of the first violation alone.
    if sched.episodes.len() > 1 {
        let mut one = sched.clone();
        one.episodes = vec![sched.episodes[first_episode.min(sched.episodes.len() - 1)].clone()];
        runs += 1;
        if let Some(o) = still_fails(one.clone()).await {
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
            if let Some(o) = still_fails(cand).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explore::schedule::Workload;

    /// A failure that needs one particular fault and one particular step of client 2,
    /// in episode 1: the shrinker must find exactly those two.
    #[tokio::test]
    async fn shrinks_to_the_two_items_that_matter() {
        let sched = Schedule::generate(5, Workload::Api);
        let episode = &sched.episodes[1];
        let fault = episode.faults[episode.faults.len() / 2].clone();
        let step = episode.steps[2][3].clone();
        let (f, st) = (fault.clone(), step.clone());
        let shrunk = shrink_by(&sched, 1, Duration::from_secs(30), move |cand: Schedule| {
            let (f, st) = (f.clone(), st.clone());
            async move {
                let e = &cand.episodes[cand.episodes.len() - 1];
                let has = e.faults.contains(&f) && e.steps.get(2).is_some_and(|s| s.contains(&st));
                has.then_some(())
            }
        })
        .await;
        assert!(shrunk.outcome.is_some());
        assert_eq!(shrunk.schedule.episodes.len(), 1);
        let e = &shrunk.schedule.episodes[0];
        assert_eq!(e.faults, vec![fault]);
        let steps: Vec<_> = e.steps.iter().flatten().collect();
        assert_eq!(steps, vec![&step]);
    }

    #[tokio::test]
    async fn keeps_the_schedule_when_nothing_smaller_fails() {
        let sched = Schedule::generate(6, Workload::Crash);
        let full = sched.ops();
        let shrunk = shrink_by(
            &sched,
            0,
            Duration::from_secs(5),
            |cand: Schedule| async move { (cand.ops() == full).then_some(()) },
        )
        .await;
        assert!(shrunk.outcome.is_none());
        assert_eq!(shrunk.schedule.ops(), full);
    }
}
