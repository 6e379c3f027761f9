//! The operators' read of one resource on one node (`Redlock::inspect`).

use std::sync::LazyLock;

use redis::Script;

use super::Call;

/// What one node stores for a resource, read atomically in one round trip: the lock
/// key's value and `PTTL` (`KEYS[1]`), the live readers with the ms each has left
/// (`KEYS[2]`, the reader set, scored by expiry on the node's clock), and a waiting
/// writer's intent with its `PTTL` (`KEYS[3]`). The lock key's read must work (a key of
/// another type fails the script with `WRONGTYPE`, that node's failure); the reader and
/// writer reads are under `pcall`, so a user who may not run them still sees the lock.
pub(crate) static INSPECT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]), {}}
local t = redis.pcall('TIME')
local set = redis.pcall('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
if type(t) == 'table' and t[1] and type(set) == 'table' and not set.err then
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  for i = 1, #set, 2 do
    local left = math.floor(tonumber(set[i + 1]) - now)
    if left > 0 then
      out[3][#out[3] + 1] = set[i]
      out[3][#out[3] + 1] = left
    end
  end
end
local w = redis.pcall('GET', KEYS[3])
if type(w) == 'string' then
  out[4] = w
  out[5] = redis.pcall('PTTL', KEYS[3])
end
return out
",
    )
});

/// [`INSPECT`] of the lock key `key`, its reader set and its writer intent.
pub(crate) fn inspect(key: &str, readers: &str, writer: &str) -> Call {
    Call::new(&INSPECT, &[key, readers, writer])
}
