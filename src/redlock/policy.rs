//! The retry policy: after each attempt, what to do next. Pure (no I/O, no clock of its
//! own), so that every decision is unit-tested without a server; `retry.rs` drives it.
//!
//! In the spirit of tower's `Policy`: [`Policy`] holds the settings of one acquisition,
//! [`State`] what has happened so far, and [`Policy::next`] maps an attempt's outcome to
//! a [`Step`].

use std::time::{Duration, Instant};

use crate::quorum::{self, Tally};

/// Immediate re-rounds with a raised fencing candidate after a round in which no node
/// set anything and every "no" was a stale counter. Such a round only taught this
/// client the counter its cache was behind on (a fresh manager's first lock of a
/// resource always does): it could not have granted the lock, so it is not an attempt
/// and does not count against `retry_count`. A round in which some node did set the key
/// is an attempt like any other. The cap keeps two clients that keep outbidding each
/// other from spinning.
pub(crate) const STALE_REROUNDS: u32 = 3;

/// What one attempt came to, as far as the policy needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AttemptOutcome {
    Won,
    Lost {
        tally: Tally,
        /// The highest fencing counter a node reported, when one was stale.
        stale: Option<u64>,
        /// How many nodes found a key held by another owner.
        locked: usize,
        /// Which key the nodes found held most often.
        conflict: usize,
    },
    /// A quorum agreed, with less than the minimum validity left.
    Expired,
}

/// Which error a lost acquisition reports: the last attempt decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loss {
    /// More nodes said "held by another owner" than failed.
    Conflict,
    /// Too few nodes answered usefully.
    NoQuorum,
    /// A quorum agreed too late.
    Expired,
}

/// What to do after an attempt.
/// Where a waiter joins a wait queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Place {
    /// Behind everyone already waiting (by the node's clock).
    Arrival,
    /// At the front: it was woken, but another contender beat it to the lock.
    Front,
}

impl Place {
    /// The front for a waiter that was woken (and beaten), else arrival order.
    pub(crate) fn after(woken: bool) -> Self {
        if woken {
            Self::Front
        } else {
            Self::Arrival
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The lock is held.
    Won,
    /// Run the round again at once with [`State::candidate`]: it only taught the counter.
    Reround,
    /// Pause, ended early by a wake-up when waiting on a key. With `join`, join that
    /// key's queue beside the pause, at that [`Place`].
    ///
    /// Every failed attempt that is retried pauses: `retry_delay` is the pause between
    /// attempts (API.md, "Retry timing"). Joining the queue never takes an attempt of
    /// its own; a single-key attempt made while waiting joins atomically with failing.
    Sleep {
        pause: Duration,
        wait_on: Option<usize>,
        join: Option<Place>,
    },
    /// Stop; the loss names the error.
    GiveUp(Loss),
}

/// The settings of one acquisition.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    /// Attempts after the first one.
    pub(crate) retries: u32,
    /// No attempt starts after this.
    pub(crate) deadline: Option<Instant>,
    pub(crate) delay: Duration,
    pub(crate) jitter: Duration,
    /// Wait for releases (wake-ups) instead of the timer alone.
    pub(crate) wake: bool,
    /// One unfenced key: the queue join can be part of the attempt.
    pub(crate) single: bool,
}

/// What happened so far in one acquisition.
#[derive(Debug, Clone, Default)]
pub(crate) struct State {
    attempts: u32,
    rerounds: u32,
    candidate: Option<u64>,
    waiting_on: Option<usize>,
    woken: bool,
}

impl State {
    /// A fresh acquisition; with fencing, `cached` is the highest counter this manager
    /// has seen for the resources, and the first candidate is one above it.
    pub(crate) fn new(cached: Option<u64>) -> Self {
        Self {
            candidate: cached.map(|c| c.saturating_add(1)),
            ..Self::default()
        }
    }

    /// Notes that an attempt starts; returns how many have been made, this one included.
    pub(crate) fn begin(&mut self) -> u32 {
        self.attempts = self.attempts.saturating_add(1);
        self.attempts
    }

    /// Attempts made so far.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The fencing candidate of the next round, with fencing.
    pub(crate) fn candidate(&self) -> Option<u64> {
        self.candidate
    }

    /// Whether the last pause ended with a wake-up (the next join goes to the front).
    pub(crate) fn woken(&self) -> bool {
        self.woken
    }

    /// Starts waiting for releases of key `key` before the first attempt (a key found
    /// held moments ago is likely held now).
    pub(crate) fn wait_on(&mut self, key: usize) {
        self.waiting_on = Some(key);
    }

    /// Records how the last pause ended.
    pub(crate) fn set_woken(&mut self, woken: bool) {
        self.woken = woken;
    }
}

impl Policy {
    /// The next step after an attempt that came to `outcome`, at `now`.
    pub(crate) fn next(
        &self,
        state: &mut State,
        outcome: &AttemptOutcome,
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> Step {
        let (tally, stale, locked, conflict) = match *outcome {
            AttemptOutcome::Won => return Step::Won,
            AttemptOutcome::Expired => {
                return self.retry_or_give_up(state, Loss::Expired, None, now, rng);
            }
            AttemptOutcome::Lost {
                tally,
                stale,
                locked,
                conflict,
            } => (tally, stale, locked, conflict),
        };
        let mut counter_only = false;
        if let Some(seen) = stale {
            // A stale reply teaches the counter; the next round bids one above it.
            state.candidate = Some(seen.saturating_add(1));
            let failures_alone_lose = tally.failed > tally.nodes - tally.quorum;
            counter_only = tally.yes == 0 && locked == 0 && !failures_alone_lose;
        }
        if counter_only && state.rerounds < STALE_REROUNDS {
            state.rerounds += 1;
            // Not an attempt: it could not have granted the lock.
            state.attempts = state.attempts.saturating_sub(1);
            return Step::Reround;
        }
        state.rerounds = 0;
        let loss = loss_of(&tally);
        let held = (loss == Loss::Conflict && locked > 0).then_some(conflict);
        self.retry_or_give_up(state, loss, held, now, rng)
    }

    fn retry_or_give_up(
        &self,
        state: &mut State,
        loss: Loss,
        held: Option<usize>,
        now: Instant,
        rng: &mut impl rand::Rng,
    ) -> Step {
        let out_of_time = self.deadline.is_some_and(|d| now >= d);
        if state.attempts > self.retries || out_of_time {
            return Step::GiveUp(loss);
        }
        let woken = std::mem::take(&mut state.woken);
        let mut join = None;
        if let (Some(key), true) = (held, self.wake) {
            if state.waiting_on != Some(key) {
                // The first join runs beside the pause, not as an attempt at once: an
                // immediate queued attempt would shorten the first pause to nothing.
                // What it gives up: a release between this failure and the join (a
                // round trip) is unheard, and that waiter waits out its pause.
                state.waiting_on = Some(key);
                if self.single && crate::mutants::FREE_QUEUE_ATTEMPT {
                    state.attempts = state.attempts.saturating_sub(1);
                }
                join = Some(Place::Arrival);
            } else if !self.single {
                // Woken but beaten: back to the front.
                join = Some(Place::after(woken));
            }
        }
        let mut pause = quorum::backoff(self.delay, self.jitter, rng);
        if let Some(d) = self.deadline {
            pause = pause.min(d.saturating_duration_since(now));
        }
        Step::Sleep {
            pause,
            wait_on: state.waiting_on,
            join,
        }
    }
}

/// Conflict or no quorum, for a lost round: another owner is blamed when more nodes said
/// "held" than failed (contention, which a caller can wait out); a tie goes to the
/// failures, whose causes the caller then gets to see.
pub(crate) fn loss_of(tally: &Tally) -> Loss {
    if tally.lost_to_owner() {
        Loss::Conflict
    } else {
        Loss::NoQuorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quorum::Vote;
    use rand::SeedableRng;

    fn tally(yes: usize, no: usize, failed: usize) -> Tally {
        let mut t = Tally::new(yes + no + failed);
        for (n, v) in [(yes, Vote::Yes), (no, Vote::No), (failed, Vote::Failed)] {
            for _ in 0..n {
                t.record(v);
            }
        }
        t
    }

    fn held(conflict: usize) -> AttemptOutcome {
        AttemptOutcome::Lost {
            tally: tally(0, 3, 0),
            stale: None,
            locked: 3,
            conflict,
        }
    }

    fn down() -> AttemptOutcome {
        AttemptOutcome::Lost {
            tally: tally(1, 0, 2),
            stale: None,
            locked: 0,
            conflict: 0,
        }
    }

    fn stale(seen: u64, yes: usize) -> AttemptOutcome {
        AttemptOutcome::Lost {
            tally: tally(yes, 3 - yes, 0),
            stale: Some(seen),
            locked: 0,
            conflict: 0,
        }
    }

    fn policy(retries: u32, wake: bool, single: bool) -> Policy {
        Policy {
            retries,
            deadline: None,
            delay: Duration::from_millis(100),
            jitter: Duration::from_millis(50),
            wake,
            single,
        }
    }

    /// Runs attempts with outcomes from `next_outcome` until the policy stops; returns
    /// the attempts counted and the steps taken.
    fn drive(
        p: &Policy,
        state: &mut State,
        mut next_outcome: impl FnMut(u32) -> AttemptOutcome,
    ) -> (u32, Vec<Step>) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut steps = Vec::new();
        for round in 0..1_000 {
            state.begin();
            let step = p.next(state, &next_outcome(round), Instant::now(), &mut rng);
            steps.push(step);
            if matches!(step, Step::Won | Step::GiveUp(_)) {
                break;
            }
        }
        (state.attempts(), steps)
    }

    #[test]
    fn retry_count_is_a_promise_whatever_the_outcomes() {
        for retries in 0..6 {
            for (wake, single) in [(false, false), (true, false), (true, true), (false, true)] {
                for outcome in [held(0), down(), AttemptOutcome::Expired] {
                    let p = policy(retries, wake, single);
                    let (attempts, steps) = drive(&p, &mut State::new(None), |_| outcome);
                    assert_eq!(attempts, retries + 1, "{p:?} {outcome:?}: {steps:?}");
                    assert!(matches!(steps.last(), Some(Step::GiveUp(_))));
                }
            }
        }
    }

    /// Issue 21, item 2: the queue join rides beside the first pause; it is no
    /// immediate attempt of its own, and later attempts join atomically (no `join`).
    #[test]
    fn the_queue_join_runs_beside_the_first_pause() {
        let p = policy(2, true, true);
        let (attempts, steps) = drive(&p, &mut State::new(None), |_| held(0));
        assert_eq!(attempts, 3);
        assert!(
            matches!(
                steps[0],
                Step::Sleep {
                    wait_on: Some(0),
                    join: Some(Place::Arrival),
                    ..
                }
            ),
            "{steps:?}"
        );
        assert!(matches!(
            steps[1],
            Step::Sleep {
                wait_on: Some(0),
                join: None,
                ..
            }
        ));
        assert_eq!(steps[2], Step::GiveUp(Loss::Conflict));
    }

    /// "Retry timing" (API.md): between two attempts there is always a pause of at least
    /// `retry_delay` and at most `retry_delay + retry_jitter`, whatever the outcomes and
    /// settings (a stale-counter re-round is no attempt); only a deadline shortens it.
    #[test]
    fn every_retry_pauses_at_least_the_delay() {
        for retries in 0..5 {
            for (wake, single) in [(false, false), (true, false), (true, true), (false, true)] {
                for outcomes in [[held(0), held(0)], [held(0), down()], [down(), held(1)]] {
                    let p = policy(retries, wake, single);
                    let (_, steps) = drive(&p, &mut State::new(None), |r| {
                        outcomes[usize::from(r % 2 == 1)]
                    });
                    for step in &steps {
                        match step {
                            Step::Sleep { pause, .. } => assert!(
                                *pause >= p.delay && *pause <= p.delay + p.jitter,
                                "{p:?}: {steps:?}"
                            ),
                            Step::GiveUp(_) => {}
                            other => panic!("{p:?}: a retry without a pause: {other:?}"),
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn several_keys_join_beside_the_pause_and_follow_the_held_key() {
        let p = policy(5, true, false);
        let mut state = State::new(None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        state.begin();
        let s = p.next(&mut state, &held(1), Instant::now(), &mut rng);
        assert!(
            matches!(
                s,
                Step::Sleep {
                    wait_on: Some(1),
                    join: Some(Place::Arrival),
                    ..
                }
            ),
            "{s:?}"
        );
        // Woken, beaten: back to the front of the same key's queue.
        state.set_woken(true);
        state.begin();
        let s = p.next(&mut state, &held(1), Instant::now(), &mut rng);
        assert!(
            matches!(
                s,
                Step::Sleep {
                    wait_on: Some(1),
                    join: Some(Place::Front),
                    ..
                }
            ),
            "{s:?}"
        );
        // Now the other key is the one held: wait for that one instead.
        state.begin();
        let s = p.next(&mut state, &held(0), Instant::now(), &mut rng);
        assert!(
            matches!(
                s,
                Step::Sleep {
                    wait_on: Some(0),
                    join: Some(Place::Arrival),
                    ..
                }
            ),
            "{s:?}"
        );
    }

    #[test]
    fn without_wake_ups_or_a_conflict_nothing_waits_on_a_key() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for (p, outcome) in [
            (policy(3, false, true), held(0)),
            (policy(3, true, true), down()),
        ] {
            let mut state = State::new(None);
            state.begin();
            let s = p.next(&mut state, &outcome, Instant::now(), &mut rng);
            assert!(
                matches!(
                    s,
                    Step::Sleep {
                        wait_on: None,
                        join: None,
                        ..
                    }
                ),
                "{s:?}"
            );
        }
    }

    #[test]
    fn a_counter_only_round_is_not_an_attempt_but_is_capped() {
        let p = policy(0, true, false);
        let mut state = State::new(Some(4));
        assert_eq!(state.candidate(), Some(5));
        // Stale everywhere, nothing set: learnt the counter, bid above it, same attempt.
        let (attempts, steps) = drive(&p, &mut state, |round| {
            if round < 2 {
                stale(10 + u64::from(round), 0)
            } else {
                AttemptOutcome::Won
            }
        });
        assert_eq!(steps, [Step::Reround, Step::Reround, Step::Won]);
        assert_eq!(attempts, 1);
        assert_eq!(state.candidate(), Some(12));
        // Outbid forever: after the cap the round counts, and retry_count(0) ends it.
        let (attempts, steps) = drive(&p, &mut State::new(Some(1)), |r| {
            stale(100 + u64::from(r), 0)
        });
        assert_eq!(steps.len(), STALE_REROUNDS as usize + 1);
        assert_eq!(attempts, 1);
        // More nodes said no than failed: the loss reads as a conflict, as before.
        assert_eq!(steps.last(), Some(&Step::GiveUp(Loss::Conflict)));
    }

    #[test]
    fn a_stale_round_that_set_something_is_an_attempt() {
        let p = policy(0, true, false);
        let mut state = State::new(Some(1));
        let (attempts, steps) = drive(&p, &mut state, |_| stale(7, 1));
        assert_eq!(attempts, 1);
        assert_eq!(steps, [Step::GiveUp(Loss::Conflict)]);
        // The candidate still moved above what was seen, for the next acquisition.
        assert_eq!(state.candidate(), Some(8));
    }

    #[test]
    fn conflict_versus_no_quorum_follows_the_majority_of_reasons() {
        assert_eq!(loss_of(&tally(0, 2, 1)), Loss::Conflict);
        assert_eq!(loss_of(&tally(1, 1, 1)), Loss::NoQuorum);
        assert_eq!(loss_of(&tally(0, 1, 2)), Loss::NoQuorum);
        assert_eq!(loss_of(&tally(2, 3, 0)), Loss::Conflict);
        let p = policy(0, true, true);
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let mut state = State::new(None);
        state.begin();
        assert_eq!(
            p.next(&mut state, &down(), Instant::now(), &mut rng),
            Step::GiveUp(Loss::NoQuorum)
        );
        let mut state = State::new(None);
        state.begin();
        assert_eq!(
            p.next(
                &mut state,
                &AttemptOutcome::Expired,
                Instant::now(),
                &mut rng
            ),
            Step::GiveUp(Loss::Expired)
        );
    }

    #[test]
    fn the_wait_budget_ends_retries_and_bounds_the_pause() {
        let now = Instant::now();
        let p = Policy {
            deadline: Some(now + Duration::from_millis(30)),
            ..policy(u32::MAX, false, true)
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let mut state = State::new(None);
        state.begin();
        match p.next(&mut state, &down(), now, &mut rng) {
            Step::Sleep { pause, .. } => assert!(pause <= Duration::from_millis(30)),
            other => panic!("{other:?}"),
        }
        state.begin();
        let later = now + Duration::from_millis(30);
        assert_eq!(
            p.next(&mut state, &down(), later, &mut rng),
            Step::GiveUp(Loss::NoQuorum)
        );
    }

    #[test]
    fn pauses_stay_within_delay_and_jitter() {
        let p = policy(1_000, false, true);
        let mut rng = rand::rngs::StdRng::seed_from_u64(6);
        let mut state = State::new(None);
        for _ in 0..500 {
            state.begin();
            match p.next(&mut state, &down(), Instant::now(), &mut rng) {
                Step::Sleep { pause, .. } => {
                    assert!(pause >= p.delay && pause <= p.delay + p.jitter, "{pause:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
