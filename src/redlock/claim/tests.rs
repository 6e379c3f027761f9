//! The pure parts of every kind's attempt: how replies read, the best permit slot, the
//! permit count check and a waiting reader's or writer's patience.

use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use redis::Value;

use super::rwlock::patience;
use super::semaphore::MAX_PERMITS;
use super::*;

fn exclusive(fenced: bool, keys: usize) -> Reading {
    Reading::Exclusive { fenced, keys }
}

fn fenced(v: &[i64]) -> Value {
    Value::Array(v.iter().map(|i| Value::Int(*i)).collect())
}

#[test]
fn exclusive_replies_become_answers() {
    let one = exclusive(false, 1);
    assert_eq!(one.classify(&Value::Okay), Ok(Answer::Set(None)));
    assert_eq!(one.classify(&Value::Nil), Ok(Answer::Held(0)));
    assert_eq!(
        exclusive(false, 3).classify(&Value::Int(1)),
        Ok(Answer::Set(None))
    );
    assert_eq!(
        exclusive(false, 3).classify(&Value::Int(-3)),
        Ok(Answer::Held(2))
    );
    // A key number out of range is clamped, never an index panic.
    assert_eq!(
        exclusive(false, 3).classify(&Value::Int(-9)),
        Ok(Answer::Held(2))
    );
    assert!(one.classify(&Value::Int(7)).is_err());
    let f = exclusive(true, 1);
    assert_eq!(f.classify(&fenced(&[2, 9])), Ok(Answer::Set(Some(9))));
    assert_eq!(f.classify(&fenced(&[0, 9])), Ok(Answer::Stale(9)));
    assert_eq!(
        exclusive(true, 2).classify(&fenced(&[1, 4, 2])),
        Ok(Answer::Held(1))
    );
    assert_eq!(
        exclusive(true, 2).classify(&fenced(&[1, 4])),
        Ok(Answer::Held(0))
    );
    assert!(f.classify(&fenced(&[0, -1])).is_err());
    assert!(f.classify(&fenced(&[5, 1])).is_err());
}

#[test]
fn read_write_and_permit_replies_become_answers() {
    let permits = Reading::Permits {
        order: Arc::from([2, 0, 1]),
    };
    assert_eq!(permits.classify(&Value::Int(1)), Ok(Answer::Slot(2)));
    assert_eq!(permits.classify(&Value::Int(3)), Ok(Answer::Slot(1)));
    assert_eq!(permits.classify(&Value::Int(0)), Ok(Answer::Held(0)));
    assert!(permits.classify(&Value::Int(4)).is_err());
    assert!(permits.classify(&Value::Int(-1)).is_err());
    assert_eq!(permits.slots(), 3);
    let plain = Reading::ReadWrite { fenced: false };
    assert_eq!(plain.classify(&Value::Int(1)), Ok(Answer::Set(None)));
    assert_eq!(plain.classify(&Value::Int(0)), Ok(Answer::Held(0)));
    assert!(plain.classify(&Value::Nil).is_err());
    assert_eq!(plain.slots(), 0);
    let writer = Reading::ReadWrite { fenced: true };
    assert_eq!(writer.classify(&fenced(&[2, 9])), Ok(Answer::Set(Some(9))));
    assert_eq!(writer.classify(&fenced(&[1, 4])), Ok(Answer::Held(0)));
    assert_eq!(writer.classify(&fenced(&[0, 9])), Ok(Answer::Stale(9)));
    assert!(writer.classify(&fenced(&[7, 9])).is_err());
    assert!(writer.classify(&Value::Int(1)).is_err());
}

#[test]
fn only_a_refusal_leaves_nothing_to_undo() {
    assert!(Answer::Held(0).refuses());
    assert!(Answer::Stale(3).refuses());
    assert!(!Answer::Set(None).refuses());
    assert!(!Answer::Slot(1).refuses());
}

#[test]
fn the_best_slot_is_the_most_granted() {
    let counts: Vec<AtomicUsize> = [1, 3, 2].into_iter().map(AtomicUsize::new).collect();
    assert_eq!(best_slot(&counts), (1, 3));
    assert_eq!(best_slot(&[]), (0, 0));
}

#[test]
fn permit_counts_are_checked() {
    assert!(check_permits(0).is_err());
    assert!(check_permits(MAX_PERMITS + 1).is_err());
    assert!(check_permits(1).is_ok());
    assert!(check_permits(MAX_PERMITS).is_ok());
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
