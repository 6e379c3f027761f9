//! The one mutex helper of the harness.
//!
//! The harness's mutexes guard a child process handle and an event list, which every
//! critical section leaves whole; a test that panicked while holding one is no reason for
//! the cluster's cleanup to panic too.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, taking the data even if a holder panicked.
pub(crate) fn lock<T: ?Sized>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
