//! The one seam for test-only mutations of the crate, used by the safety suite
//! (`scripts/mutants.sh`) to prove that its checkers catch real defects.
//!
//! A mutant is selected at build time with `RUSTFLAGS='--cfg redlock_mutant="NAME"'` (a
//! cfg rather than a feature, so `--all-features` never turns one on). Without one,
//! every item here is the crate's real behaviour and compiles to it: a constant `false`,
//! `None`, or the identity. The code that uses them names the defect it would bring in.

use std::sync::LazyLock;

use crate::scripts;

/// `skip_validity`: a round won too late still counts as won.
pub(crate) const SKIP_VALIDITY: bool = cfg!(redlock_mutant = "skip_validity");

/// The defects of issue 11, for the explorer to catch (`scripts/mutants.sh`):
/// `old_belief`: a shorter extension leaves the guard's belief where it was.
pub(crate) const OLD_BELIEF: bool = cfg!(redlock_mutant = "old_belief");

/// `keep_alive_here`: a keep-alive starts on the current runtime only (none on a plain
/// thread), while the guard's drop still releases on its own.
pub(crate) const KEEP_ALIVE_HERE: bool = cfg!(redlock_mutant = "keep_alive_here");

/// `unordered_release`: a release or undo does not wait for the requests that may still
/// set its value on a node (a re-sent request can land after it).
pub(crate) const UNORDERED_RELEASE: bool = cfg!(redlock_mutant = "unordered_release");

/// `free_queue_attempt`: the attempt after which a single-key waiter joins the wait
/// queue is not counted, so more than `retry_count + 1` attempts are made.
pub(crate) const FREE_QUEUE_ATTEMPT: bool = cfg!(redlock_mutant = "free_queue_attempt");

/// `stalled_subscription`: a waiter makes its subscriptions before it waits, one node
/// after the other, so a node that accepts connections but never answers holds up
/// every wait that needs a subscription there (issue 11, item 8).
pub(crate) const STALLED_SUBSCRIPTION: bool = cfg!(redlock_mutant = "stalled_subscription");

/// `quorum_half`: half the nodes make a "quorum", which is no majority.
pub(crate) const QUORUM_HALF: bool = cfg!(redlock_mutant = "quorum_half");

/// `semaphore_count`: a permit is won when a quorum of nodes granted any slot, each
/// node counting its own holders (unsafe: see docs/safety.md, "Counting semaphore").
pub(crate) const SEMAPHORE_COUNT: bool = cfg!(redlock_mutant = "semaphore_count");

/// `constant_value`: every acquisition stores the same owner value.
pub(crate) fn constant_value() -> Option<String> {
    cfg!(redlock_mutant = "constant_value").then(|| "0".repeat(32))
}

/// The fencing token of a won round: the candidate, or, with `incr_max`, the highest
/// counter a yes-voter reported after its own `INCR` (not monotone; see docs/safety.md).
pub(crate) fn token<T>(
    candidate: Option<u64>,
    answers: &[Option<T>],
    counter: impl Fn(&T) -> Option<u64>,
) -> Option<u64> {
    if cfg!(redlock_mutant = "incr_max") {
        answers.iter().flatten().filter_map(counter).max()
    } else {
        candidate
    }
}

/// `plain_del`: a release that deletes whoever holds the key.
pub(crate) fn release_script() -> Option<&'static str> {
    cfg!(redlock_mutant = "plain_del").then_some(PLAIN_DEL_LUA)
}

/// The text of the `plain_del` release, also handed to the model checker (`script_source`).
pub(crate) const PLAIN_DEL_LUA: &str =
    "local m = #KEYS if ARGV[2] and ARGV[2] ~= '' then m = #KEYS / 2 end \
         local n = 0 for i = 1, m do n = n + redis.call('DEL', KEYS[i]) end return {n, 0}";

/// `incr_max`: no candidate; each node `INCR`s its own counter and answers it.
pub(crate) fn fenced_acquire_script() -> Option<&'static str> {
    cfg!(redlock_mutant = "incr_max").then_some(INCR_MAX_LUA)
}

/// The text of the `incr_max` fenced acquire, also handed to the model checker.
pub(crate) const INCR_MAX_LUA: &str = r"
local m = #KEYS / 2
for i = 1, m do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] then return {1, 0} end
end
local c = 0
for i = 1, m do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  c = math.max(c, redis.call('INCR', KEYS[m + i]))
end
return {2, c}
";

/// `lower_extend`: the extension before issue 21, a plain compare-and-pexpire that also
/// lowers an expiry, so a late copy of an older, shorter extension takes back what a
/// newer one promised.
pub(crate) fn extend_script() -> Option<&'static str> {
    cfg!(redlock_mutant = "lower_extend").then_some(LOWER_EXTEND_LUA)
}

/// The text of the `lower_extend` extension, also handed to the model checker.
pub(crate) const LOWER_EXTEND_LUA: &str = r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
";

/// `read_beside_writer`: a reader is admitted while a writer (or an exclusive owner) holds
/// the lock key; only a live writer intent still keeps it out.
pub(crate) fn read_acquire_script() -> Option<&'static str> {
    cfg!(redlock_mutant = "read_beside_writer").then(|| READ_BESIDE_WRITER_LUA.as_str())
}

/// The text of the `read_beside_writer` read acquire, also handed to the model checker:
/// the crate's `READ_ACQUIRE` without its check of the lock key's holder. Made from the
/// script's own text, so that it follows every other change to it (a unit test checks
/// that the cut still applies).
pub(crate) static READ_BESIDE_WRITER_LUA: LazyLock<String> =
    LazyLock::new(|| scripts::READ_ACQUIRE_LUA.replacen("(held and held ~= MARKER) or ", "", 1));

/// `write_beside_readers`: a writer is granted while readers hold the resource; only a
/// pending reader turn still keeps it out.
pub(crate) fn write_acquire_script() -> Option<&'static str> {
    cfg!(redlock_mutant = "write_beside_readers").then(|| WRITE_BESIDE_READERS_LUA.as_str())
}

/// The text of the `write_beside_readers` write acquire, also handed to the model
/// checker: the crate's `WRITE_ACQUIRE` without its count of the live readers, made from
/// the script's own text as above.
pub(crate) static WRITE_BESIDE_READERS_LUA: LazyLock<String> = LazyLock::new(|| {
    scripts::WRITE_ACQUIRE_LUA.replacen("redis.call('ZCARD', KEYS[2]) > 0 or ", "", 1)
});

#[cfg(test)]
mod tests {
    use super::*;

    /// A cut that no longer matches the script would make a mutant that is the script.
    #[test]
    fn the_reader_writer_mutants_differ_from_their_scripts() {
        assert_ne!(*READ_BESIDE_WRITER_LUA, scripts::READ_ACQUIRE_LUA);
        assert_ne!(*WRITE_BESIDE_READERS_LUA, scripts::WRITE_ACQUIRE_LUA);
    }
}
