//! The highest fencing counter a manager has seen per counter key: the next fenced
//! attempt bids one above it, so that a manager that keeps a resource needs no stale
//! round to learn the counter.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::sync::lock;

/// Counter keys remembered before the cache is cleared. A missing entry only costs one
/// extra round trip (a stale reply teaches the counter), so a crude bound is fine.
const FENCE_CACHE_LIMIT: usize = 10_000;

/// Per counter key, the highest counter seen.
#[derive(Debug, Default)]
pub(crate) struct FenceCache(Mutex<HashMap<String, u64>>);

impl FenceCache {
    /// The highest counter seen for any of `keys` (0 when none is known).
    pub(crate) fn highest(&self, keys: &[String]) -> u64 {
        let cache = lock(&self.0);
        keys.iter()
            .filter_map(|k| cache.get(k).copied())
            .max()
            .unwrap_or(0)
    }

    /// Remembers that the counters of `keys` are at least `seen`.
    pub(crate) fn remember(&self, keys: &[String], seen: u64) {
        let mut cache = lock(&self.0);
        if cache.len() >= FENCE_CACHE_LIMIT {
            cache.clear();
        }
        for key in keys {
            let entry = cache.entry(key.clone()).or_insert(0);
            *entry = (*entry).max(seen);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_the_highest_and_never_goes_down() {
        let cache = FenceCache::default();
        let keys = ["a".to_owned(), "b".to_owned()];
        assert_eq!(cache.highest(&keys), 0);
        cache.remember(&keys[..1], 7);
        cache.remember(&keys[..1], 3);
        cache.remember(&keys[1..], 9);
        assert_eq!(cache.highest(&keys[..1]), 7);
        assert_eq!(cache.highest(&keys), 9);
    }
}
