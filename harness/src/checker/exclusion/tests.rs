//! C5 and C6 on hand-made histories.

use super::*;

fn h(text: &str) -> History {
    History::parse(text).unwrap()
}

/// Clients 1-9 read, clients 10 and up write.
fn writer(hold: &Hold) -> bool {
    hold.client >= 10
}

#[test]
fn overlapping_readers_are_clean() {
    let hist = h("10 1 0 r start\n20 1 0 r ok 100 -\n\
                  15 2 0 r start\n30 2 0 r ok 100 -\n50 1 0 r release\n60 2 0 r release\n");
    assert!(read_write(&hist, writer).is_empty());
}

#[test]
fn a_writer_overlapping_a_reader_is_flagged() {
    let hist = h("10 1 0 r start\n20 1 0 r ok 100 -\n\
                  15 10 0 r start\n30 10 0 r ok 100 -\n50 1 0 r release\n60 10 0 r release\n");
    let v = read_write(&hist, writer);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].check, Check::ReadWrite);
    assert!(v[0].what.contains("read claim"), "{}", v[0].what);
}

#[test]
fn overlapping_writers_are_flagged_once() {
    let hist = h("10 10 0 r start\n20 10 0 r ok 100 -\n\
                  15 11 0 r start\n30 11 0 r ok 100 -\n");
    let v = read_write(&hist, writer);
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].what.contains("write claim"), "{}", v[0].what);
}

#[test]
fn claims_that_only_touch_do_not_overlap() {
    // The writer releases at 40; the reader's success is at 40.
    let hist = h("10 10 0 r start\n20 10 0 r ok 100 -\n40 10 0 r release\n\
                  30 1 0 r start\n40 1 0 r ok 100 -\n");
    assert!(read_write(&hist, writer).is_empty());
}

#[test]
fn an_expired_claim_ends_at_its_validity() {
    // The writer never released, but its claim ended at 50.
    let after = h("10 10 0 r start\n20 10 0 r ok 50 -\n55 1 0 r start\n60 1 0 r ok 100 -\n");
    assert!(read_write(&after, writer).is_empty());
    let during = h("10 10 0 r start\n20 10 0 r ok 50 -\n40 1 0 r start\n45 1 0 r ok 100 -\n");
    assert_eq!(read_write(&during, writer).len(), 1);
}

#[test]
fn resources_are_checked_apart() {
    let hist = h("10 10 0 a start\n20 10 0 a ok 100 -\n15 1 0 b start\n30 1 0 b ok 100 -\n");
    assert!(read_write(&hist, writer).is_empty());
}

#[test]
fn a_grant_with_no_validity_claims_nothing() {
    let hist = h("10 10 0 r start\n20 10 0 r ok 20 -\n15 1 0 r start\n20 1 0 r ok 100 -\n");
    assert!(read_write(&hist, writer).is_empty());
}

/// Holders of `s`: three claims, the third overlapping the first two in [30, 40].
const THREE: &str = "10 1 0 s start\n10 1 0 s ok 40 -\n\
                     10 2 0 s start\n20 2 0 s ok 100 -\n\
                     10 3 0 s start\n30 3 0 s ok 100 -\n";

#[test]
fn more_claims_than_permits_are_flagged_at_the_peak() {
    let v = permits(&h(THREE), &["s"], 2);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].check, Check::Permits);
    assert!(v[0].what.contains("3 claims at 30"), "{}", v[0].what);
    assert!(permits(&h(THREE), &["s"], 3).is_empty());
    // Not a semaphore: not checked.
    assert!(permits(&h(THREE), &["other"], 1).is_empty());
}

#[test]
fn each_stretch_over_the_bound_is_one_violation() {
    let text = format!(
        "{THREE}200 4 0 s start\n200 4 0 s ok 300 -\n200 5 0 s start\n210 5 0 s ok 300 -\n"
    );
    // On one permit: claims 1-3 overlap within [20, 100], claims 4 and 5 within [210, 300].
    let v = permits(&h(&text), &["s"], 1);
    assert_eq!(v.len(), 2, "{v:?}");
}

#[test]
fn touching_permit_claims_do_not_count_together() {
    let hist = h("10 1 0 s start\n10 1 0 s ok 100 -\n50 1 0 s release\n\
                  40 2 0 s start\n50 2 0 s ok 100 -\n");
    assert!(permits(&hist, &["s"], 1).is_empty());
}

/// A naive oracle: the most claims alive at any claim's start.
#[test]
fn the_bound_matches_a_naive_count() {
    let mut text = String::new();
    // Twelve claims with staggered starts and lengths.
    for c in 0..12u64 {
        let start = 10 + c * 7 % 50;
        let end = start + 5 + (c * 13) % 40;
        text.push_str(&format!(
            "{start} {c} 0 s start\n{start} {c} 0 s ok {end} -\n"
        ));
    }
    let hist = h(&text);
    let all = holds(&hist);
    let most = all
        .iter()
        .map(|a| {
            all.iter()
                .filter(|b| b.success_ns <= a.success_ns && a.success_ns < b.end_ns)
                .count()
        })
        .max()
        .unwrap();
    assert!(!permits(&hist, &["s"], most - 1).is_empty());
    assert!(permits(&hist, &["s"], most).is_empty());
}
