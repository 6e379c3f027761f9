//! Unit tests of the checkers C1-C4 on hand-made histories.

use super::*;

fn h(text: &str) -> History {
    History::parse(text).unwrap()
}

#[test]
fn disjoint_claims_are_clean() {
    // Client 1 holds [20, 40] (released at 40), client 2 then holds [50, 90].
    let hist = h("10 1 0 r start\n20 1 0 r ok 100 -\n40 1 0 r release\n\
                  30 2 0 r start\n50 2 0 r ok 90 -\n60 2 0 r release\n");
    assert_eq!(claims(&History::merge([hist])), []);
}

#[test]
fn a_claim_ends_at_validity_even_without_release() {
    // Client 1 never released but its validity ended at 45; client 2 got it at 50.
    let hist = h("20 1 0 r ok 45 -\n50 2 0 r ok 90 -\n");
    assert_eq!(claims(&hist), []);
}

#[test]
fn overlapping_claims_are_flagged() {
    let hist = h("20 1 0 r ok 100 -\n50 2 0 r ok 90 -\n95 2 0 r release\n");
    let v = claims(&hist);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].check, Check::Claim);
}

#[test]
fn an_extension_lengthens_the_claim() {
    let hist = h("20 1 0 r ok 45 -\n40 1 0 r extend 80\n50 2 0 r ok 90 -\n");
    assert_eq!(claims(&hist).len(), 1);
    // Extended after the claim had lapsed: the gap stays open for client 2.
    let lapsed = h("20 1 0 r ok 45 -\n60 1 0 r extend 80\n50 2 0 r ok 55 -\n");
    assert_eq!(claims(&History::merge([lapsed])), []);
}

#[test]
fn resources_are_independent_and_a_far_claim_still_counts() {
    // A long claim on r spans two later ones: both overlap it.
    let hist = h("10 1 0 r ok 100 -\n10 9 0 s ok 100 -\n20 2 0 r ok 30 -\n\
                  40 3 0 r ok 50 -\n");
    assert_eq!(claims(&hist).len(), 2);
}

#[test]
fn success_without_validity_is_flagged() {
    assert_eq!(claims(&h("20 1 0 r ok 20 -\n")).len(), 1);
}

fn counters(pairs: &[(&str, u64)]) -> HashMap<String, u64> {
    pairs.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()
}

#[test]
fn use_is_clean_when_counts_match_and_sections_are_disjoint() {
    let hist = h(
        "10 1 0 r enter\n20 1 0 r exit 1\n30 2 0 r enter\n40 2 0 r exit 1\n\
                  35 3 0 r enter\n45 3 0 r exit 0\n",
    );
    // Client 3's write was refused (exit 0): its overlap does not count.
    assert_eq!(uses(&History::merge([hist]), &counters(&[("r", 2)])), []);
}

#[test]
fn a_lost_update_and_an_overlap_are_flagged() {
    let hist = h("10 1 0 r enter\n20 2 0 r enter\n30 2 0 r exit 1\n40 1 0 r exit 1\n");
    let v = uses(&hist, &counters(&[("r", 1)]));
    assert_eq!(v.len(), 2, "{v:?}");
    assert!(v.iter().all(|v| v.check == Check::Use));
    // Not asked about: not checked.
    assert_eq!(uses(&hist, &counters(&[])), []);
}

#[test]
fn increasing_tokens_are_clean() {
    let hist = h(
        "10 1 0 r start\n20 1 0 r ok 30 5\n25 2 0 r start\n35 2 0 r ok 60 6\n\
                  40 3 0 s start\n41 3 0 s ok 60 1\n",
    );
    assert_eq!(fencing(&hist), []);
}

#[test]
fn concurrent_attempts_may_get_tokens_in_either_order() {
    // Client 2 started before client 1 succeeded: no order is required.
    let hist = h("10 1 0 r start\n12 2 0 r start\n20 1 0 r ok 30 6\n35 2 0 r ok 60 5\n");
    assert_eq!(fencing(&hist), []);
}

#[test]
fn a_repeated_or_backward_token_is_flagged() {
    let dup = h("10 1 0 r start\n20 1 0 r ok 30 5\n25 2 0 r start\n35 2 0 r ok 60 5\n");
    let v = fencing(&dup);
    // Both: not unique, and not greater than an earlier success.
    assert_eq!(v.len(), 2, "{v:?}");
    let back = h("10 1 0 r start\n20 1 0 r ok 30 5\n25 2 0 r start\n35 2 0 r ok 60 4\n");
    assert_eq!(fencing(&back).len(), 1);
}

/// The naive oracle for the order part of C3: compare every pair.
fn naive_order_violations(holds: &[Hold]) -> usize {
    holds
        .iter()
        .filter(|b| {
            holds.iter().any(|a| {
                a.resource == b.resource
                    && a.success_ns < b.start_ns
                    && a.token.unwrap_or(0) >= b.token.unwrap_or(0)
            })
        })
        .count()
}

#[test]
fn token_order_matches_the_naive_oracle() {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..500 {
        let mut text = String::new();
        let mut token = 100u64;
        for i in 0..12u64 {
            let start = rng.random_range(0..1000u64);
            let success = start + rng.random_range(1..100u64);
            // Mostly increasing tokens, sometimes repeated or lower.
            token = match rng.random_range(0..10) {
                0 => token.saturating_sub(rng.random_range(1..5)),
                _ => token + rng.random_range(1..5),
            };
            // Unique tokens here: only the order part is compared.
            let t = token * 100 + i;
            text.push_str(&format!(
                "{start} {i} 0 r start\n{success} {i} 0 r ok {} {t}\n",
                success + 10
            ));
        }
        let hist = History::merge([h(&text)]);
        let expected = naive_order_violations(&holds(&hist));
        assert_eq!(fencing(&hist).len(), expected, "{text}");
    }
}

fn spec(heals: &[u64], end: u64) -> LivenessSpec {
    LivenessSpec {
        heals_ns: heals.to_vec(),
        faults_ns: Vec::new(),
        progress_within: Duration::from_nanos(50),
        attempt_within: Duration::from_nanos(30),
        end_ns: end,
        leftover_keys: Vec::new(),
    }
}

#[test]
fn progress_after_a_heal_is_clean() {
    let hist = h("100 1 0 r start\n110 1 0 r fail busy\n120 2 0 r start\n130 2 0 r ok 200 -\n");
    assert_eq!(liveness(&hist, &spec(&[100], 300)), []);
}

#[test]
fn no_progress_a_hang_a_slow_attempt_and_a_leftover_are_flagged() {
    let hist = h("100 1 0 r start\n140 1 0 r fail timeout\n150 2 0 r start\n");
    let mut s = spec(&[100], 300);
    s.leftover_keys.push("r".into());
    let v = liveness(&hist, &s);
    // Slow (40 > 30), hung (client 2), no acquisition of r in [100, 150], leftover.
    assert_eq!(v.len(), 4, "{v:?}");
    assert!(v.iter().all(|v| v.check == Check::Liveness));
}

#[test]
fn a_heal_followed_by_a_fault_is_not_judged() {
    let hist = h("100 1 0 r start\n110 1 0 r fail down\n");
    let mut s = spec(&[100], 300);
    s.faults_ns.push(120);
    assert_eq!(liveness(&hist, &s), []);
}

#[test]
fn report_counts_per_check() {
    let hist = h("20 1 0 r ok 100 -\n50 2 0 r ok 90 -\n");
    let r = Report::run(&hist, &HashMap::new(), &spec(&[], 100));
    assert_eq!(r.count(Check::Claim), 1);
    assert_eq!(r.flagged(), [Check::Claim]);
}
