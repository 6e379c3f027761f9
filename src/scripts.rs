//! The Lua scripts every node runs. Each one is atomic on its node, and each compares
//! the owner's random value before it touches a key, so only the owner can release or
//! extend what it holds.
//!
//! They run with EVALSHA; `redis::Script` loads them again after NOSCRIPT (a node that
//! restarted or ran `SCRIPT FLUSH`), once per request.

use std::sync::LazyLock;

use redis::Script;

/// Deletes each key of `KEYS` whose value is `ARGV[1]`; returns how many it deleted.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    // MUTANT (safety suite only): delete whoever holds the key.
    #[cfg(redlock_mutant = "plain_del")]
    return Script::new(
        "local n = 0 for _, k in ipairs(KEYS) do n = n + redis.call('DEL', k) end return n",
    );
    Script::new(
        r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    n = n + redis.call('DEL', key)
  end
end
return n
",
    )
});

/// If every key of `KEYS` holds `ARGV[1]`, sets their expiry to `ARGV[2]` ms and returns 1;
/// otherwise touches nothing and returns 0. A failed extension never deletes anything.
pub(crate) static EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('PEXPIRE', key, ARGV[2])
end
return 1
",
    )
});

/// All or none: if no key of `KEYS` exists, sets each to `ARGV[1]` with expiry `ARGV[2]` ms
/// and returns 1; otherwise sets nothing and returns 0.
pub(crate) static ACQUIRE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return 1
",
    )
});

/// Reply codes of [`FENCED_ACQUIRE`].
pub(crate) const FENCE_STALE: i64 = 0;
pub(crate) const FENCE_LOCKED: i64 = 1;
pub(crate) const FENCE_OK: i64 = 2;

/// The fenced acquire: `KEYS` = m lock keys, then their m counter keys; `ARGV` = value,
/// ttl in ms, candidate token `t`.
///
/// - if any counter is >= t: `{STALE, max counter}`, nothing written;
/// - else if any lock key holds another value: `{LOCKED, max counter}`, nothing written;
/// - else every lock key is set (value, PX ttl), every counter to t: `{OK, t}`.
///
/// Counters never get a TTL and nothing else writes them, so on each node they only
/// grow. Candidates stay below 2^53, where Lua's doubles are exact.
pub(crate) static FENCED_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    // MUTANT (safety suite only): no candidate; each node INCRs its own counter and the
    // client takes the highest reply as its token.
    #[cfg(redlock_mutant = "incr_max")]
    return Script::new(
        r"
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
",
    );
    Script::new(
        r"
local m = #KEYS / 2
local t = tonumber(ARGV[3])
local max = 0
for i = 1, m do
  local raw = redis.call('GET', KEYS[m + i])
  if raw then
    local c = tonumber(raw)
    if not c then
      return redis.error_reply('ERR fencing counter ' .. KEYS[m + i] .. ' is not a number')
    end
    if c > max then max = c end
  end
end
if max >= t then return {0, max} end
for i = 1, m do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] then return {1, max} end
end
for i = 1, m do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[m + i], ARGV[3])
end
return {2, t}
",
    )
});
