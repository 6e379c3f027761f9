//! The scripts of the reader-writer lock and the counting semaphore. As with the
//! exclusive lock's scripts, each is atomic on its node, compares the owner's value
//! before it touches anything of the owner's, and counts finding its own value (an
//! earlier send of the same request that landed) as success.
//!
//! Time on a node is the node's own `TIME`, in ms, the clock its key expiries run on.

use std::sync::LazyLock;

use redis::Script;

/// The node's time in ms, and the removal of the readers whose expiry has passed.
/// Every reader script starts with it, so expired members go on every touch.
macro_rules! readers_prelude {
    ($readers:literal) => {
        concat!(
            "local t = redis.call('TIME')\n",
            "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n",
            "redis.call('ZREMRANGEBYSCORE', ",
            $readers,
            ", '-inf', now)\n",
        )
    };
}

/// The set's own expiry is set to its longest member's, so the set never outlives its
/// readers and never expires before one of them.
macro_rules! readers_expiry {
    ($readers:literal) => {
        concat!(
            "local top = redis.call('ZRANGE', ",
            $readers,
            ", -1, -1, 'WITHSCORES')\n",
            "if top[2] then redis.call('PEXPIRE', ",
            $readers,
            ", math.max(1, math.ceil(tonumber(top[2]) - now))) end\n",
        )
    };
}

/// A reader joins: `KEYS` = lock key, reader set, writer intent; `ARGV` = value, ttl ms.
/// Admitted (1) when the value is already a live reader, or when no writer (or
/// exclusive owner) holds the lock key and no writer's intent is live: then added with
/// score `now + ttl`. Else 0, nothing written.
pub(crate) static READ_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        readers_prelude!("KEYS[2]"),
        r"
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
",
        readers_expiry!("KEYS[2]"),
        "return 1\n",
    ))
});

/// A reader extends: `KEYS[1]` = reader set; `ARGV` = value, ttl ms. If the value is a
/// live reader, its expiry becomes `now + ttl` (`ZADD XX`) and 1 is returned; else 0,
/// nothing added.
pub(crate) static READ_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        readers_prelude!("KEYS[1]"),
        r"
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
",
        readers_expiry!("KEYS[1]"),
        "return 1\n",
    ))
});

/// A reader leaves: `KEYS[1]` = reader set; `ARGV[1]` = value. Returns `{removed, 0}`,
/// the shape of the exclusive release's reply; an expired reader counts as not held.
pub(crate) static READ_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        readers_prelude!("KEYS[1]"),
        "return {redis.call('ZREM', KEYS[1], ARGV[1]), 0}\n",
    ))
});

/// A writer's acquire: `KEYS` = lock key, reader set, writer intent, and with fencing
/// the counter key; `ARGV` = value, ttl ms, the writer's intent id (one per
/// acquisition, kept across its attempts), and with fencing the candidate token.
///
/// - the lock key holds the value (and the counter is the candidate): granted, nothing
///   written;
/// - with fencing, a counter at or above the candidate: stale, nothing written;
/// - the lock key held by another owner: refused, nothing written;
/// - live readers: refused, and the intent is set to the id (with the ttl) unless
///   another writer's intent is live, so that new readers are kept out;
/// - else the lock key is set (value, PX ttl), the counter to the candidate, and the
///   writer's own intent deleted: granted.
///
/// Unfenced it returns 1 (granted) or 0 (refused); fenced, `{code, counter}` with the
/// codes of `FENCED_ACQUIRE` (0 stale, 1 refused, 2 granted).
pub(crate) static WRITE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        r"
local fenced = #KEYS == 4
local cand = tonumber(ARGV[4])
local counter = 0
if fenced then
  local raw = redis.call('GET', KEYS[4])
  if raw then
    counter = tonumber(raw)
    if not counter then
      return redis.error_reply('ERR fencing counter ' .. KEYS[4] .. ' is not a number')
    end
  end
end
local function answer(code)
  if fenced then return {code, counter} end
  if code == 2 then return 1 end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] and (not fenced or counter == cand) then
  return answer(2)
end
if fenced and counter >= cand then return answer(0) end
if redis.call('EXISTS', KEYS[1]) == 1 then return answer(1) end
",
        readers_prelude!("KEYS[2]"),
        r"
if redis.call('ZCARD', KEYS[2]) > 0 then
  local w = redis.call('GET', KEYS[3])
  if not w or w == ARGV[3] then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2]) end
  return answer(1)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if fenced then
  redis.call('SET', KEYS[4], ARGV[4])
  counter = cand
end
if redis.call('GET', KEYS[3]) == ARGV[3] then redis.call('DEL', KEYS[3]) end
return answer(2)
",
    ))
});

/// A writer that gives up withdraws its intent: deletes `KEYS[1]` if it holds
/// `ARGV[1]`. Returns 1 if it did.
pub(crate) static INTENT_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
",
    )
});

/// A permit: `KEYS` = the semaphore's slot keys in the order this attempt tries them
/// (a random rotation); `ARGV` = value, ttl ms. Returns the 1-based position in `KEYS`
/// of the slot that holds the value (an earlier send of this request landed), else of
/// the first free slot, now set to the value with the ttl; 0 when every slot is held.
pub(crate) static PERMIT_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then return i end
end
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then return i end
end
return 0
",
    )
});

/// Which of `KEYS` exist (1) or not (0), in order: one node's view of a semaphore's
/// slots, for `available()`.
pub(crate) static PERMIT_TAKEN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('EXISTS', key) end
return out
",
    )
});
