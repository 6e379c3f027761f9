//! A mutex lock that shrugs off poisoning.
//!
//! Every mutex in this crate guards plain data that each critical section leaves
//! consistent at every point a panic could happen (a map insert, a counter, an
//! `Option`), so a panic elsewhere while holding one is no reason to fail every later
//! lock call. This one helper stands for `lock().unwrap_or_else(PoisonError::into_inner)`.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data even if a holder panicked.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
