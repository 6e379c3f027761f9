//! The pure core: quorum arithmetic, validity, drift, backoff and the vote tally.
//!
//! Nothing here does I/O, so every rule of the algorithm is unit-tested on its own,
//! against naive oracles where there is one.

use std::time::Duration;

/// Redis' own clock granularity and the time a key takes to be set on a node: the
/// Redlock paper adds 2 ms to the drift for it, and so do node-redlock and redsync.
pub(crate) const DRIFT_FLOOR: Duration = Duration::from_millis(2);

/// The number of votes that makes a majority of `n` nodes.
pub(crate) const fn quorum(n: usize) -> usize {
    if crate::mutants::QUORUM_HALF {
        return n / 2;
    }
    n / 2 + 1
}

/// The clock drift allowed for a lock of `ttl`: `ttl × factor + 2 ms`.
pub(crate) fn drift(ttl: Duration, factor: f64) -> Duration {
    // `factor` is validated to [0, 1) by the builder, so the product is finite and
    // smaller than `ttl`; `from_secs_f64` cannot panic on it.
    ttl.mul_f64(factor) + DRIFT_FLOOR
}

/// `ttl` in whole milliseconds, as `PX` and `PEXPIRE` take it, or why it cannot be used:
/// it must leave validity after the drift floor and fit Redis's signed 64-bit ms.
///
/// Validity is then computed from the ttl the nodes are actually given, never from a
/// finer one they cannot honour.
pub(crate) fn ttl_ms(ttl: Duration) -> Result<u64, String> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    let floor = DRIFT_FLOOR.as_millis() as u64;
    if ms <= floor {
        return Err(format!(
            "it leaves no validity after the {floor} ms drift floor; use a ttl of at least a \
             few times the nodes' round trip"
        ));
    }
    if ms > i64::MAX as u64 {
        return Err("it is too long for Redis (at most i64::MAX ms)".into());
    }
    Ok(ms)
}

/// What is left of `ttl` after `elapsed` and `drift`, or `None` when nothing is.
///
/// Saturating: a long `elapsed` or a short `ttl` never underflows.
pub(crate) fn validity(ttl: Duration, elapsed: Duration, drift: Duration) -> Option<Duration> {
    ttl.checked_sub(elapsed)
        .and_then(|left| left.checked_sub(drift))
        .filter(|left| !left.is_zero())
}

/// The pause before the next attempt: `delay` plus a uniform random part in `0..=jitter`.
pub(crate) fn backoff(delay: Duration, jitter: Duration, rng: &mut impl rand::Rng) -> Duration {
    if jitter.is_zero() {
        return delay;
    }
    // Nanosecond resolution is more than enough; u64 nanoseconds cover 584 years.
    let max = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX);
    delay.saturating_add(Duration::from_nanos(rng.random_range(0..=max)))
}

/// One node's answer to a request of an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Vote {
    /// The node did what was asked (set, extended, released).
    Yes,
    /// The node answered, and someone else holds the key (or it is gone, for extend).
    No,
    /// The node did not answer usefully: timeout, connection error, error reply.
    Failed,
}

/// The decision of a tally, once it is certain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// A quorum said yes.
    Won,
    /// So many said no or failed that a quorum is impossible.
    Lost,
}

/// Counts the votes of one round and decides as soon as the outcome is certain.
///
/// This is `vote_result` of a majority configuration, as in raft-rs: a round is won
/// at `quorum` yes votes and lost as soon as the yes votes plus the nodes still to be
/// heard from cannot reach it, so the caller never waits for stragglers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) nodes: usize,
    pub(crate) quorum: usize,
    pub(crate) yes: usize,
    pub(crate) no: usize,
    pub(crate) failed: usize,
}

impl Tally {
    pub(crate) fn new(nodes: usize) -> Self {
        Self {
            nodes,
            quorum: quorum(nodes),
            yes: 0,
            no: 0,
            failed: 0,
        }
    }

    pub(crate) fn record(&mut self, vote: Vote) {
        match vote {
            Vote::Yes => self.yes += 1,
            Vote::No => self.no += 1,
            Vote::Failed => self.failed += 1,
        }
    }

    /// Nodes that have not answered yet.
    pub(crate) fn pending(&self) -> usize {
        self.nodes.saturating_sub(self.yes + self.no + self.failed)
    }

    /// `Some` once the result can no longer change.
    pub(crate) fn outcome(&self) -> Option<Outcome> {
        if self.yes >= self.quorum {
            Some(Outcome::Won)
        } else if self.yes + self.pending() < self.quorum {
            Some(Outcome::Lost)
        } else {
            None
        }
    }

    /// For a lost round: was it lost to another owner rather than to sick nodes?
    ///
    /// Another owner is blamed when more nodes said no than failed: with healthy nodes
    /// that is the usual contention, which a caller can wait out. A tie goes to the
    /// failures, whose causes the caller then gets to see.
    pub(crate) fn lost_to_owner(&self) -> bool {
        self.no > self.failed
    }

    /// For an extension (or a release): is this owner's value certainly gone from every
    /// quorum? It is once more nodes said "not held" than a quorum can spare, whatever
    /// the failed and silent nodes hold: `no > N − quorum`.
    ///
    /// Not `no > failed` ([`lost_to_owner`](Self::lost_to_owner), a guess at whom to
    /// blame): with 4 nodes, 2 "not held" and 2 failures leave at most 2 holders, short
    /// of the quorum of 3, yet that rule calls it a tie and keeps the guard valid.
    pub(crate) fn value_lost(&self) -> bool {
        value_lost(self.nodes, self.no)
    }
}

/// Whether `not_held` of `nodes` nodes saying "not held" leaves no quorum that can hold
/// the value: the nodes that may hold it (all but those) are fewer than a quorum.
pub(crate) fn value_lost(nodes: usize, not_held: usize) -> bool {
    not_held > nodes.saturating_sub(quorum(nodes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn quorum_is_a_strict_majority() {
        for n in 1..=64usize {
            let q = quorum(n);
            // Naive oracle: the least q with 2q > n.
            let oracle = (1..=n).find(|q| 2 * q > n).unwrap();
            assert_eq!(q, oracle, "n = {n}");
            // Any two quorums intersect.
            assert!(2 * q > n);
        }
    }

    #[test]
    fn drift_is_factor_times_ttl_plus_two_ms() {
        assert_eq!(
            drift(Duration::from_secs(10), 0.01),
            Duration::from_millis(102)
        );
        assert_eq!(
            drift(Duration::from_secs(10), 0.0),
            Duration::from_millis(2)
        );
        assert_eq!(drift(Duration::ZERO, 0.5), Duration::from_millis(2));
    }

    #[test]
    fn validity_never_underflows() {
        let d = Duration::from_millis(2);
        assert_eq!(
            validity(Duration::from_millis(100), Duration::from_millis(10), d),
            Some(Duration::from_millis(88))
        );
        assert_eq!(
            validity(Duration::from_millis(12), Duration::from_millis(10), d),
            None
        );
        assert_eq!(
            validity(Duration::from_millis(1), Duration::from_secs(3600), d),
            None
        );
        assert_eq!(validity(Duration::ZERO, Duration::ZERO, d), None);
        assert_eq!(validity(Duration::MAX, Duration::MAX, Duration::ZERO), None);
    }

    #[test]
    fn validity_matches_a_signed_oracle() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let ttl = rng.random_range(0..5_000u64);
            let elapsed = rng.random_range(0..5_000u64);
            let drift = rng.random_range(0..100u64);
            let oracle = ttl as i64 - elapsed as i64 - drift as i64;
            let got = validity(
                Duration::from_millis(ttl),
                Duration::from_millis(elapsed),
                Duration::from_millis(drift),
            );
            if oracle > 0 {
                assert_eq!(got, Some(Duration::from_millis(oracle as u64)));
            } else {
                assert_eq!(got, None);
            }
        }
    }

    #[test]
    fn ttl_ms_takes_whole_ms_above_the_floor_and_below_i64() {
        assert!(ttl_ms(Duration::ZERO).is_err());
        assert!(ttl_ms(Duration::from_micros(2_999)).is_err());
        assert_eq!(ttl_ms(Duration::from_micros(3_999)), Ok(3));
        assert_eq!(
            ttl_ms(Duration::from_millis(i64::MAX as u64)),
            Ok(i64::MAX as u64)
        );
        assert!(ttl_ms(Duration::from_millis(i64::MAX as u64 + 1)).is_err());
        assert!(ttl_ms(Duration::MAX).is_err());
    }

    #[test]
    fn backoff_stays_within_delay_plus_jitter() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delay = Duration::from_millis(200);
        let jitter = Duration::from_millis(200);
        let (mut lo, mut hi) = (Duration::MAX, Duration::ZERO);
        for _ in 0..10_000 {
            let b = backoff(delay, jitter, &mut rng);
            assert!(b >= delay && b <= delay + jitter, "{b:?}");
            lo = lo.min(b);
            hi = hi.max(b);
        }
        // Uniform over the range: both ends are approached.
        assert!(lo < delay + Duration::from_millis(5));
        assert!(hi > delay + jitter - Duration::from_millis(5));
        assert_eq!(backoff(delay, Duration::ZERO, &mut rng), delay);
        assert_eq!(backoff(Duration::MAX, jitter, &mut rng), Duration::MAX);
    }

    /// The naive oracle: enumerate every way the pending nodes could still vote.
    fn oracle(t: &Tally) -> Option<Outcome> {
        let can_win = t.yes + t.pending() >= t.quorum;
        let must_win = t.yes >= t.quorum;
        match (must_win, can_win) {
            (true, _) => Some(Outcome::Won),
            (false, false) => Some(Outcome::Lost),
            (false, true) => None,
        }
    }

    #[test]
    fn tally_decides_exactly_when_the_outcome_is_certain() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20_000 {
            let n = rng.random_range(1..=9);
            let mut t = Tally::new(n);
            let mut decided = None;
            for _ in 0..n {
                let vote = match rng.random_range(0..3) {
                    0 => Vote::Yes,
                    1 => Vote::No,
                    _ => Vote::Failed,
                };
                t.record(vote);
                assert_eq!(t.outcome(), oracle(&t), "{t:?}");
                if let Some(o) = decided {
                    // Once decided, more votes never change the decision.
                    assert_eq!(t.outcome(), Some(o));
                }
                decided = decided.or(t.outcome());
            }
            // With every vote in, the round is always decided.
            assert!(t.outcome().is_some());
        }
    }

    /// Issue 21, item 1: the naive oracle enumerates every way the nodes that did not say
    /// "not held" (yes, failed, silent) could hold the value, and asks whether any puts it
    /// on a quorum.
    #[test]
    fn value_lost_exactly_when_no_quorum_can_hold_it() {
        for n in 1..=12usize {
            for yes in 0..=n {
                for no in 0..=n - yes {
                    for failed in 0..=n - yes - no {
                        let t = Tally {
                            nodes: n,
                            quorum: quorum(n),
                            yes,
                            no,
                            failed,
                        };
                        // Every set of holders among the other nodes, by size.
                        let can_hold = (0..=n - no).any(|holders| 2 * holders > n);
                        assert_eq!(t.value_lost(), !can_hold, "{t:?}");
                    }
                }
            }
        }
        // The case of the issue: 4 nodes, 2 not held, 2 failed.
        let mut t = Tally::new(4);
        for v in [Vote::No, Vote::No, Vote::Failed, Vote::Failed] {
            t.record(v);
        }
        assert!(t.value_lost());
        // A release report's rule and the tally's agree.
        assert!(value_lost(4, 2) && !value_lost(4, 1) && !value_lost(5, 2) && value_lost(5, 3));
    }

    #[test]
    fn five_nodes_decide_early() {
        let mut t = Tally::new(5);
        t.record(Vote::Yes);
        t.record(Vote::Yes);
        assert_eq!(t.outcome(), None);
        t.record(Vote::Yes);
        assert_eq!(t.outcome(), Some(Outcome::Won));

        let mut t = Tally::new(5);
        t.record(Vote::No);
        t.record(Vote::Failed);
        assert_eq!(t.outcome(), None);
        t.record(Vote::No);
        assert_eq!(t.outcome(), Some(Outcome::Lost));
        assert!(t.lost_to_owner());
    }
}
