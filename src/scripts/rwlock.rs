//! The scripts of the reader-writer lock (docs/safety.md section 6). As with the
//! exclusive lock's scripts, each is atomic on its node, compares the owner's value
//! before it touches anything of the owner's, and counts finding its own value (an
//! earlier send of the same request that landed) as success.
//!
//! Time on a node is the node's own `TIME`, in ms, the clock its key expiries run on.

use std::sync::LazyLock;

use redis::Script;

use super::Call;
use crate::kind::{
    QUEUE_SUFFIX, READERS_SUFFIX, READ_TURN_SUFFIX, READ_WAIT_SUFFIX, WRITER_SUFFIX,
};
use crate::mutants;

/// The value readers keep in the lock key while any of them is live (see `mark` in
/// `node_time!`): not an owner value (those are random hex, after an optional label and
/// `:`), so no owner's compare-and-delete or extend ever matches it, and every exclusive
/// acquisition (`SET NX`, ours or a peer's) finds the key held.
macro_rules! readers_marker {
    () => {
        "tokio-redlock:readers"
    };
}

/// The lock key's value while readers hold the resource (the readers marker).
pub(crate) const READERS_MARKER: &str = readers_marker!();

/// The node's time in ms (`now`), and Lua helpers on sets scored by expiry on that
/// clock: `prune(set)` removes the members whose expiry has passed (every script that
/// reads a set prunes it first, so expired members go on every touch); `fit(set)` sets
/// the set's own expiry to its longest member's, so a set never outlives its members
/// and never expires before one of them; `promote(waiting, turn)` moves every waiting
/// reader into the reader turn, keeping its expiry (the phase-fair step, see
/// `WRITE_ACQUIRE`); `manager_of(id)` is the manager named by a wait or intent id;
/// `tell_readers(turn, key, prefix)` publishes `key` once to each manager with a reader
/// in the turn (under `pcall`, so an ACL without PUBLISH only costs the wake-up) and
/// says how many listened; `mark(key, set)` makes the lock key mirror the reader set:
/// while the set has members the key holds the readers marker with the set's expiry
/// (its longest member's), once it has none a marker is deleted; a key that holds
/// anything else is never touched.
macro_rules! node_time {
    () => {
        concat!(
            "local MARKER = '",
            readers_marker!(),
            "'",
            r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function prune(set) redis.call('ZREMRANGEBYSCORE', set, '-inf', now) end
local function fit(set)
  local top = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if top[2] then redis.call('PEXPIRE', set, math.max(1, math.ceil(tonumber(top[2]) - now))) end
end
local function promote(waiting, turn)
  if redis.call('EXISTS', waiting) == 0 then return end
  redis.call('ZUNIONSTORE', turn, 2, turn, waiting, 'AGGREGATE', 'MAX')
  redis.call('DEL', waiting)
  fit(turn)
end
local function manager_of(id)
  if not id then return nil end
  return string.match(id, '^([^|]+)|')
end
local function tell_readers(turn, key, prefix)
  if prefix == '' then return 0 end
  local told, heard = {}, 0
  for _, id in ipairs(redis.call('ZRANGE', turn, 0, -1)) do
    local m = manager_of(id)
    if m and not told[m] then
      told[m] = true
      local n = redis.pcall('PUBLISH', prefix .. m, key)
      if type(n) == 'number' and n > 0 then heard = heard + 1 end
    end
  end
  return heard
end
local function mark(key, set)
  local held = redis.call('GET', key)
  if held and held ~= MARKER then return end
  local top = redis.call('ZRANGE', set, -1, -1, 'WITHSCORES')
  if top[2] then
    redis.call('SET', key, MARKER, 'PX', math.max(1, math.ceil(tonumber(top[2]) - now)))
  elseif held then
    redis.call('DEL', key)
  end
end
"
        )
    };
}

/// A reader joins: `KEYS` = lock key, reader set, writer intent, waiting readers, reader
/// turn; `ARGV` = value, ttl ms, the reader's wait id (one per acquisition, kept across
/// its attempts), patience ms.
///
/// - the value already a live reader (a re-sent request that landed): admitted (1),
///   nothing written (it creates nothing, so it needs no check);
/// - the lock key held by a writer or an exclusive owner (anything but the readers
///   marker): refused (0);
/// - a live writer intent, and the wait id not in the reader turn: refused;
/// - else added to the reader set with score `now + ttl`, and the lock key made to
///   hold the readers marker with the set's expiry: admitted.
///
/// A refused reader keeps its place: its wait id is (re)scored `now + patience` in the
/// turn if it is there, else in the waiting readers. An admitted reader keeps its place
/// too (rescored where it is, never added): the attempt may still fail on the other
/// nodes, and its undo must not cost the reader its turn. The client withdraws the place
/// once it won on a quorum (`READ_WAIT_CLEAR`).
pub(crate) static READ_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(mutants::read_acquire_script().unwrap_or(READ_ACQUIRE_LUA)));
/// The text of [`READ_ACQUIRE`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const READ_ACQUIRE_LUA: &str = concat!(
    node_time!(),
    r"
prune(KEYS[2])
prune(KEYS[4])
prune(KEYS[5])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
local held = redis.call('GET', KEYS[1])
local turn = redis.call('ZSCORE', KEYS[5], ARGV[3])
local place = KEYS[4]
if turn then place = KEYS[5] end
if (held and held ~= MARKER) or (not turn and redis.call('EXISTS', KEYS[3]) == 1) then
  redis.call('ZADD', place, now + tonumber(ARGV[4]), ARGV[3])
  fit(place)
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
fit(KEYS[2])
mark(KEYS[1], KEYS[2])
if redis.call('ZADD', place, 'XX', 'CH', now + tonumber(ARGV[4]), ARGV[3]) == 1 then fit(place) end
return 1
",
);

/// A reader extends: `KEYS` = reader set, and the lock key; `ARGV` = value, ttl ms. If
/// the value is a live reader, its expiry becomes the later of its expiry and
/// `now + ttl` (never lower: a late, older extension of a shorter ttl must not undo a
/// newer, longer one), the set's and the readers marker's expiries follow the longest
/// reader, and 1 is returned; else 0, nothing added.
pub(crate) static READ_EXTEND: LazyLock<Script> = LazyLock::new(|| Script::new(READ_EXTEND_LUA));
/// The text of [`READ_EXTEND`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const READ_EXTEND_LUA: &str = concat!(
    node_time!(),
    r"
prune(KEYS[1])
local old = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not old then return 0 end
local score = math.max(tonumber(old), now + tonumber(ARGV[2]))
redis.call('ZADD', KEYS[1], 'XX', score, ARGV[1])
fit(KEYS[1])
if KEYS[2] then mark(KEYS[2], KEYS[1]) end
return 1
",
);

/// A reader leaves: `KEYS` = reader set, lock key, writer intent, reader turn, and the
/// lock key's wait queue (exclusive waiters); `ARGV` = value, channel prefix (empty: no
/// wake-up). Returns `{removed, woken}`, the shape of the exclusive release's reply; an
/// expired reader counts as not held. The lock key is left mirroring the remaining
/// readers (`mark`): the last reader out deletes the readers marker, and then wakes the
/// oldest exclusive waiter as `RELEASE` does; with no reader's turn pending, it tells the
/// waiting writer (the manager named in its intent id), under `pcall`.
pub(crate) static READ_RELEASE: LazyLock<Script> = LazyLock::new(|| Script::new(READ_RELEASE_LUA));
/// The text of [`READ_RELEASE`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const READ_RELEASE_LUA: &str = concat!(
    wake_oldest!(),
    node_time!(),
    r"
prune(KEYS[1])
prune(KEYS[4])
local n = redis.call('ZREM', KEYS[1], ARGV[1])
fit(KEYS[1])
mark(KEYS[2], KEYS[1])
local prefix = ARGV[2] or ''
if n == 0 or prefix == '' then return {n, 0} end
if redis.call('ZCARD', KEYS[1]) > 0 then return {n, 0} end
local heard = 0
if KEYS[5] and redis.call('EXISTS', KEYS[2]) == 0 then
  heard = wake_oldest(KEYS[5], KEYS[2], prefix)
end
if redis.call('ZCARD', KEYS[4]) > 0 then return {n, heard} end
local writer = manager_of(redis.call('GET', KEYS[3]))
if not writer then return {n, heard} end
local told = redis.pcall('PUBLISH', prefix .. writer, KEYS[2])
if type(told) == 'number' and told > 0 then heard = heard + 1 end
return {n, heard}
",
);

/// A writer's acquire: `KEYS` = lock key, reader set, writer intent, waiting readers,
/// reader turn, and with fencing the counter key; `ARGV` = value, ttl ms, the writer's
/// intent id (one per acquisition, kept across its attempts), the wake-up channel prefix
/// (empty: none), the intent's patience ms, and with fencing the candidate token.
///
/// - the lock key holds the value (and the counter is the candidate): granted, nothing
///   written (it creates nothing, so it needs no check);
/// - with fencing, a counter at or above the candidate: stale, nothing written;
/// - the lock key held by another owner (anything but the readers marker): refused,
///   nothing written;
/// - a readers marker whose readers are all gone (expired, or removed without it): the
///   marker is deleted, and the script goes on as if the key were free;
/// - no writer intent is live: the waiting readers are promoted to the reader turn
///   (they were waiting before this writer, so they go first) and, if there were any,
///   their managers are told;
/// - live readers (the marker stays), or a live reader turn: refused, and the intent is
///   set to the id, expiring `patience` from now, unless another writer's intent is
///   live, so that new readers are kept out while the writer keeps asking; each attempt
///   renews it, and one that stops asking (gave up, cancelled, dead, or a late copy of
///   its request) keeps readers out at most `patience` longer;
/// - else the lock key is set (value, PX ttl), the counter to the candidate, and the
///   writer's own intent deleted: granted.
///
/// Unfenced it returns 1 (granted) or 0 (refused); fenced, `{code, counter}` with the
/// codes of `FENCED_ACQUIRE` (`FENCE_STALE`, `FENCE_LOCKED`, `FENCE_OK`).
pub(crate) static WRITE_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(mutants::write_acquire_script().unwrap_or(WRITE_ACQUIRE_LUA)));
/// The text of [`WRITE_ACQUIRE`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const WRITE_ACQUIRE_LUA: &str = concat!(
    fence_codes_lua!(),
    node_time!(),
    r"
local fenced = #KEYS == 6
local cand = tonumber(ARGV[6])
local counter = 0
if fenced then
  local raw = redis.call('GET', KEYS[6])
  if raw then
counter = tonumber(raw)
if not counter then
  return redis.error_reply('ERR fencing counter ' .. KEYS[6] .. ' is not a number')
end
  end
end
local function answer(code)
  if fenced then return {code, counter} end
  if code == FENCE_OK then return 1 end
  return 0
end
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] and (not fenced or counter == cand) then
  return answer(FENCE_OK)
end
if fenced and counter >= cand then return answer(FENCE_STALE) end
if held and held ~= MARKER then return answer(FENCE_LOCKED) end
prune(KEYS[2])
prune(KEYS[4])
prune(KEYS[5])
if held and redis.call('ZCARD', KEYS[2]) == 0 then redis.call('DEL', KEYS[1]) end
local w = redis.call('GET', KEYS[3])
if not w and redis.call('EXISTS', KEYS[4]) == 1 then
  promote(KEYS[4], KEYS[5])
  tell_readers(KEYS[5], KEYS[1], ARGV[4])
end
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[5]) > 0 then
  if not w or w == ARGV[3] then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[5]) end
  return answer(FENCE_LOCKED)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if fenced then
  redis.call('SET', KEYS[6], ARGV[6])
  counter = cand
end
if w == ARGV[3] then redis.call('DEL', KEYS[3]) end
return answer(FENCE_OK)
",
);

/// A writer releases: `KEYS` = lock key, its wait queue (exclusive waiters), waiting
/// readers, reader turn; `ARGV` = value, channel prefix (empty: no wake-ups). If the lock
/// key holds the value it is deleted, the waiting readers are promoted to the reader turn
/// (they go before the next writer), and, with a prefix, every manager with a reader in
/// the turn is told (once each), and the oldest exclusive waiter as `RELEASE` does.
/// Returns `{deleted, managers told}`.
pub(crate) static WRITE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(WRITE_RELEASE_LUA));
/// The text of [`WRITE_RELEASE`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const WRITE_RELEASE_LUA: &str = concat!(
    wake_oldest!(),
    node_time!(),
    r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return {0, 0} end
redis.call('DEL', KEYS[1])
prune(KEYS[3])
prune(KEYS[4])
promote(KEYS[3], KEYS[4])
local prefix = ARGV[2] or ''
if prefix == '' then return {1, 0} end
return {1, tell_readers(KEYS[4], KEYS[1], prefix) + wake_oldest(KEYS[2], KEYS[1], prefix)}
",
);

/// A writer that gives up withdraws its intent: deletes `KEYS[1]` if it holds
/// `ARGV[1]`. Returns 1 if it did.
pub(crate) static INTENT_CLEAR: LazyLock<Script> = LazyLock::new(|| Script::new(INTENT_CLEAR_LUA));
/// The text of [`INTENT_CLEAR`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const INTENT_CLEAR_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// A reader that gives up (or won on a quorum) gives up its place: removes the wait id
/// `ARGV[1]` from the waiting readers `KEYS[1]` and the reader turn `KEYS[2]`. Returns
/// how many it removed.
pub(crate) static READ_WAIT_CLEAR: LazyLock<Script> =
    LazyLock::new(|| Script::new(READ_WAIT_CLEAR_LUA));
/// The text of [`READ_WAIT_CLEAR`], kept apart so that `script_source` can hand it to the crate's
/// model checker.
pub(crate) const READ_WAIT_CLEAR_LUA: &str = r"
return redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
";

/// The keys of one resource's reader-writer lock: the lock key and the four kept beside
/// it, named once for all the requests that need them.
#[derive(Debug, Clone)]
pub(crate) struct RwKeys {
    /// The lock key: a writer's value, or the readers marker.
    pub(crate) key: String,
    /// The reader set.
    pub(crate) readers: String,
    /// The waiting writer's intent.
    pub(crate) writer: String,
    /// The waiting readers.
    pub(crate) waiting: String,
    /// The reader turn.
    pub(crate) turn: String,
}

impl RwKeys {
    /// The keys of the resource whose lock key is `key`.
    pub(crate) fn of(key: &str) -> Self {
        Self {
            key: key.to_owned(),
            readers: format!("{key}{READERS_SUFFIX}"),
            writer: format!("{key}{WRITER_SUFFIX}"),
            waiting: format!("{key}{READ_WAIT_SUFFIX}"),
            turn: format!("{key}{READ_TURN_SUFFIX}"),
        }
    }

    /// The five keys `READ_ACQUIRE` and `WRITE_ACQUIRE` take first.
    fn acquire_keys(&self) -> [&str; 5] {
        [
            &self.key,
            &self.readers,
            &self.writer,
            &self.waiting,
            &self.turn,
        ]
    }
}

/// [`READ_ACQUIRE`]: `value` joins the readers for `ttl_ms`; refused, the wait id `id`
/// keeps its place for `patience_ms`.
pub(crate) fn read_acquire(
    keys: &RwKeys,
    value: &str,
    ttl_ms: u64,
    id: &str,
    patience_ms: u64,
) -> Call {
    let mut call = Call::new(&READ_ACQUIRE, &keys.acquire_keys());
    call.arg(value).arg(ttl_ms).arg(id).arg(patience_ms);
    call
}

/// [`WRITE_ACQUIRE`]: `value` takes the lock key for `ttl_ms`; refused, the intent `id`
/// keeps readers out for `patience_ms`. `wake` is the channel prefix (empty: none);
/// `fence`, the counter key and the candidate token.
pub(crate) fn write_acquire(
    keys: &RwKeys,
    value: &str,
    ttl_ms: u64,
    id: &str,
    wake: &str,
    patience_ms: u64,
    fence: Option<(&str, u64)>,
) -> Call {
    let mut all: Vec<&str> = keys.acquire_keys().to_vec();
    all.extend(fence.map(|(counter, _)| counter));
    let mut call = Call::new(&WRITE_ACQUIRE, &all);
    call.arg(value)
        .arg(ttl_ms)
        .arg(id)
        .arg(wake)
        .arg(patience_ms);
    if let Some((_, candidate)) = fence {
        call.arg(candidate);
    }
    call
}

/// The lock key of the reader set `readers`.
fn lock_key_of(readers: &str) -> &str {
    readers.strip_suffix(READERS_SUFFIX).unwrap_or(readers)
}

/// [`READ_EXTEND`]: the reader `value` of the reader set `readers` lives at least
/// `ttl_ms` more.
pub(crate) fn read_extend(readers: &str, value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&READ_EXTEND, &[readers, lock_key_of(readers)]);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`READ_RELEASE`]: the reader `value` leaves the reader set `readers`; `wake` is the
/// channel prefix (empty: none).
pub(crate) fn read_release(readers: &str, value: &str, wake: &str) -> Call {
    let key = lock_key_of(readers);
    let writer = format!("{key}{WRITER_SUFFIX}");
    let turn = format!("{key}{READ_TURN_SUFFIX}");
    let queue = format!("{key}{QUEUE_SUFFIX}");
    let mut call = Call::new(&READ_RELEASE, &[readers, key, &writer, &turn, &queue]);
    call.arg(value).arg(wake);
    call
}

/// [`WRITE_RELEASE`]: the writer `value` releases the lock key `key`; `wake` is the
/// channel prefix (empty: none).
pub(crate) fn write_release(key: &str, value: &str, wake: &str) -> Call {
    let keys = [
        key.to_owned(),
        format!("{key}{QUEUE_SUFFIX}"),
        format!("{key}{READ_WAIT_SUFFIX}"),
        format!("{key}{READ_TURN_SUFFIX}"),
    ];
    let mut call = Call::new(&WRITE_RELEASE, &keys);
    call.arg(value).arg(wake);
    call
}

/// [`INTENT_CLEAR`]: the writer intent `id` is withdrawn.
pub(crate) fn intent_clear(keys: &RwKeys, id: &str) -> Call {
    let mut call = Call::new(&INTENT_CLEAR, &[&keys.writer]);
    call.arg(id);
    call
}

/// [`READ_WAIT_CLEAR`]: the reader's wait id `id` gives up its place.
pub(crate) fn read_wait_clear(keys: &RwKeys, id: &str) -> Call {
    let mut call = Call::new(&READ_WAIT_CLEAR, &[&keys.waiting, &keys.turn]);
    call.arg(id);
    call
}

#[cfg(all(test, unix))]
mod tests;
