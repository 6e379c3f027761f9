//! Pure parts of the read, write and permit acquisitions.

use std::sync::atomic::AtomicUsize;

use redis::Value;

use super::attempt::{best_slot, classify, Answer};
use super::*;

#[test]
fn replies_become_answers() {
    let order = [2, 0, 1];
    let permits = Mode::Permits(3);
    assert_eq!(
        classify(&Value::Int(1), permits, false, &order),
        Ok(Answer::Slot(2))
    );
    assert_eq!(
        classify(&Value::Int(3), permits, false, &order),
        Ok(Answer::Slot(1))
    );
    assert_eq!(
        classify(&Value::Int(0), permits, false, &order),
        Ok(Answer::Held)
    );
    assert!(classify(&Value::Int(4), permits, false, &order).is_err());
    assert!(classify(&Value::Int(-1), permits, false, &order).is_err());
    assert_eq!(
        classify(&Value::Int(1), Mode::Read, false, &[]),
        Ok(Answer::Set(None))
    );
    assert_eq!(
        classify(&Value::Int(0), Mode::Write, false, &[]),
        Ok(Answer::Held)
    );
    assert!(classify(&Value::Nil, Mode::Read, false, &[]).is_err());
    let fenced = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
    assert_eq!(
        classify(&fenced(&[2, 9]), Mode::Write, true, &[]),
        Ok(Answer::Set(Some(9)))
    );
    assert_eq!(
        classify(&fenced(&[1, 4]), Mode::Write, true, &[]),
        Ok(Answer::Held)
    );
    assert_eq!(
        classify(&fenced(&[0, 9]), Mode::Write, true, &[]),
        Ok(Answer::Stale(9))
    );
    assert!(classify(&fenced(&[7, 9]), Mode::Write, true, &[]).is_err());
    assert!(classify(&Value::Int(1), Mode::Write, true, &[]).is_err());
}

#[test]
fn the_best_slot_is_the_most_granted() {
    let counts: Vec<AtomicUsize> = [1, 3, 2].into_iter().map(AtomicUsize::new).collect();
    assert_eq!(best_slot(&counts), (1, 3));
    assert_eq!(best_slot(&[]), (0, 0));
}

#[test]
fn permit_counts_are_checked() {
    assert!(check_permits(Mode::Permits(0)).is_err());
    assert!(check_permits(Mode::Permits(MAX_PERMITS + 1)).is_err());
    assert!(check_permits(Mode::Permits(1)).is_ok());
    assert!(check_permits(Mode::Read).is_ok());
}

#[test]
fn patience_outlasts_a_pause_and_its_requests_and_stays_bounded() {
    let ms = Duration::from_millis;
    // The defaults: 200 ms delay, 200 ms jitter, 50 ms node timeout.
    assert_eq!(patience(ms(200), ms(200), ms(50)), 550);
    assert_eq!(patience(Duration::ZERO, Duration::ZERO, Duration::ZERO), 50);
    for (d, j, t) in [(0, 0, 1), (5, 10, 250), (300, 200, 1_000)] {
        let p = patience(ms(d), ms(j), ms(t));
        assert!(p > d + j + 2 * t, "{p} for {d} {j} {t}");
    }
    assert_eq!(
        patience(Duration::MAX, Duration::MAX, Duration::MAX),
        86_400_000
    );
}
