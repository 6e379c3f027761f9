//! [`LockKind`]: what a guard holds (an exclusive lock, a read or write lock, a permit),
//! and the keys each kind keeps beside the lock key.

/// The suffix of a lock key's wait queue (`wake`): a sorted set of waiting managers,
/// oldest first, beside the lock key of every kind that waits.
pub(crate) const QUEUE_SUFFIX: &str = ":waiters";

/// The suffix of a resource's reader set: a sorted set of reader values scored by their
/// expiry on the node's clock.
pub(crate) const READERS_SUFFIX: &str = ":readers";
/// The suffix of a resource's writer intent: the id of a writer that waits for readers
/// to leave, expiring the writer's patience after its last attempt, so that new readers
/// are refused meanwhile.
pub(crate) const WRITER_SUFFIX: &str = ":writer";
/// The suffix of a resource's waiting readers: a sorted set of the wait ids of readers a
/// writer (holding or waiting) refused, scored by when their place lapses on the node's
/// clock. A writer's release or a newly waiting writer moves them to the reader turn.
pub(crate) const READ_WAIT_SUFFIX: &str = ":rwait";
/// The suffix of a resource's reader turn: the waiting readers that go before the next
/// writer (phase-fair admission), scored like the waiting readers.
pub(crate) const READ_TURN_SUFFIX: &str = ":rturn";
/// Between a semaphore's key and a permit slot's number: slot `i` of `gpu` is
/// `gpu:permit:i`, an ordinary lock key.
pub(crate) const PERMIT_INFIX: &str = ":permit:";

/// What a [`LockGuard`](crate::LockGuard) holds.
///
/// ```no_run
/// # async fn run(redlock: tokio_redlock::Redlock) -> Result<(), tokio_redlock::Error> {
/// use tokio_redlock::LockKind;
/// let guard = redlock.lock("gpu").permits(4).acquire().await?;
/// assert!(matches!(guard.kind(), LockKind::Permit(i) if i < 4));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LockKind {
    /// An exclusive lock ([`Redlock::acquire`](crate::Redlock::acquire) and friends).
    Exclusive,
    /// A read lock: shared with other readers, never with a writer.
    Read,
    /// A write lock: excludes readers, writers and exclusive locks of the same resource.
    Write,
    /// A permit of a counting semaphore: `.0` is the index of the slot this guard holds
    /// (`0..n`), not a count; [`LockRequest::permits`](crate::LockRequest::permits)`(n)`
    /// takes the count. The same index as [`LockGuard::permit`](crate::LockGuard::permit).
    Permit(usize),
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exclusive,
    Read,
    Write,
    /// A permit of a semaphore with this many.
    Permits(usize),
}

/// The key of permit slot `slot` of the semaphore whose key is `key`.
pub(crate) fn permit_key(key: &str, slot: usize) -> String {
    format!("{key}{PERMIT_INFIX}{slot}")
}

/// Every fixed suffix of a key the reader-writer lock keeps beside its lock key (the
/// permit slots, `:permit:<n>`, are the other kind): one list for the name checks and
/// for the cluster vote's key mapping.
pub(crate) const SET_SUFFIXES: [&str; 4] = [
    READERS_SUFFIX,
    WRITER_SUFFIX,
    READ_WAIT_SUFFIX,
    READ_TURN_SUFFIX,
];

/// Whether `name` ends like a key this crate keeps beside a lock key for the new kinds
/// (`:readers`, `:writer`, `:rwait`, `:rturn`, `:permit:<digits>`), so that it could be
/// another resource's.
pub(crate) fn aux_suffix(name: &str) -> Option<&'static str> {
    if let Some(suffix) = SET_SUFFIXES.into_iter().find(|s| name.ends_with(s)) {
        return Some(suffix);
    }
    let digits = name.trim_end_matches(|c: char| c.is_ascii_digit());
    (digits.len() < name.len() && digits.ends_with(PERMIT_INFIX)).then_some(":permit:<n>")
}

/// Whether a fence suffix could make a counter key that is also a reader set, a writer
/// intent or a permit slot key of some resource (or the other way round).
pub(crate) fn clashes_with_fence_suffix(fence: &str) -> bool {
    let ends_alike = |s: &str| s.ends_with(fence) || fence.ends_with(s);
    if SET_SUFFIXES.into_iter().any(ends_alike) {
        return true;
    }
    // `<resource><fence>` ends with `:permit:<digits>` for some resource.
    let head = fence.trim_end_matches(|c: char| c.is_ascii_digit());
    head.len() < fence.len() && (head.ends_with(PERMIT_INFIX) || PERMIT_INFIX.ends_with(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auxiliary_suffixes_are_recognised() {
        assert_eq!(aux_suffix("doc:readers"), Some(READERS_SUFFIX));
        assert_eq!(aux_suffix("doc:writer"), Some(WRITER_SUFFIX));
        assert_eq!(aux_suffix("doc:rwait"), Some(READ_WAIT_SUFFIX));
        assert_eq!(aux_suffix("doc:rturn"), Some(READ_TURN_SUFFIX));
        assert!(clashes_with_fence_suffix("turn"));
        assert_eq!(aux_suffix("gpu:permit:12"), Some(":permit:<n>"));
        assert_eq!(aux_suffix("gpu:permit:"), None);
        assert_eq!(aux_suffix("gpu:permit:x1"), None);
        assert_eq!(aux_suffix("gpu12"), None);
        assert_eq!(aux_suffix("readers"), None);
        assert_eq!(permit_key("gpu", 3), "gpu:permit:3");
        assert_eq!(aux_suffix(&permit_key("gpu", 3)), Some(":permit:<n>"));
        assert!(!clashes_with_fence_suffix(":fence"));
        assert!(!clashes_with_fence_suffix(":fence2"));
        assert!(clashes_with_fence_suffix("rs"));
        assert!(clashes_with_fence_suffix("mit:4"));
    }
}
