//! The Lua scripts every node runs. Each one is atomic on its node, and each compares
//! the owner's random value before it touches a key, so only the owner can release or
//! extend what it holds.
//!
//! They run with EVALSHA; `redis::Script` loads them again after NOSCRIPT (a node that
//! restarted or ran `SCRIPT FLUSH`), once per request.

use std::sync::LazyLock;

use redis::{Script, ToRedisArgs};

/// One script request, packed once and sent to every node as `EVALSHA`; a node that
/// answers NOSCRIPT (restarted, or flushed) gets `SCRIPT LOAD` and the same request again.
/// (`redis::ScriptInvocation` would rebuild the command for each node.)
pub(crate) struct Call {
    pub(crate) script: &'static Script,
    pub(crate) cmd: redis::Cmd,
}

impl Call {
    /// `EVALSHA <sha> <number of keys> <keys...>`; the arguments follow with [`arg`](Self::arg).
    pub(crate) fn new<K: ToRedisArgs>(script: &'static Script, keys: &[K]) -> Self {
        let mut cmd = redis::cmd("EVALSHA");
        cmd.arg(script.get_hash()).arg(keys.len());
        for key in keys {
            cmd.arg(key);
        }
        Self { script, cmd }
    }

    pub(crate) fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

/// Deletes each lock key whose value is `ARGV[1]`; returns `{keys deleted, waiters woken}`.
///
/// Without wake-ups (`ARGV[2]` empty), `KEYS` are the lock keys. With them, `KEYS` are
/// m lock keys then their m wait queues and `ARGV[2]` the channel prefix: for each
/// deleted key the queue's oldest members are popped and the
/// key is published to their channels, until one live listener was reached. The
/// wake-up runs under `pcall`, so a user whose ACL denies it still releases.
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    // MUTANT (safety suite only): delete whoever holds the key.
    #[cfg(redlock_mutant = "plain_del")]
    return Script::new(
        "local m = #KEYS if ARGV[2] and ARGV[2] ~= '' then m = #KEYS / 2 end \
         local n = 0 for i = 1, m do n = n + redis.call('DEL', KEYS[i]) end return {n, 0}",
    );
    Script::new(
        r"
local prefix = ARGV[2]
local notify = prefix and prefix ~= ''
local m = #KEYS
if notify then m = #KEYS / 2 end
local n = 0
local woke = 0
for i = 1, m do
  local key = KEYS[i]
  if redis.call('GET', key) == ARGV[1] then
    n = n + redis.call('DEL', key)
    if notify then
      local live = 0
      for _ = 1, 64 do
        local top = redis.pcall('ZPOPMIN', KEYS[m + i])
        if type(top) ~= 'table' or #top == 0 then break end
        local heard = redis.pcall('PUBLISH', prefix .. top[1], key)
        if type(heard) == 'number' and heard > 0 then
          live = 1
          break
        end
      end
      woke = woke + live
    end
  end
end
return {n, woke}
",
    )
});

/// A single-key acquire that queues up when it fails: `SET KEYS[1] ARGV[1] NX PX ARGV[2]`,
/// and if the key is held, joins the wait queue `KEYS[2]` as `ARGV[3]` (at the front if
/// `ARGV[4]` is `1`) with expiry `ARGV[5]` ms. Returns 1 if set, 0 if not. Joining in
/// the same step as failing leaves no moment in which a release could miss the waiter.
/// The queueing runs under `pcall`: a user whose ACL denies it still locks.
pub(crate) static ACQUIRE_OR_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if ARGV[4] == '1' then
  redis.pcall('ZADD', KEYS[2], 0, ARGV[3])
else
  local t = redis.pcall('TIME')
  if type(t) == 'table' and t[1] then
    redis.pcall('ZADD', KEYS[2], 'NX', t[1] * 1000000 + t[2], ARGV[3])
  end
end
redis.pcall('PEXPIRE', KEYS[2], ARGV[5])
return 0
",
    )
});

/// Joins the wait queue `KEYS[1]` as member `ARGV[1]`: at the front if `ARGV[2]` is `1`,
/// else in arrival order by the node's clock (an existing member keeps its place);
/// the queue expires `ARGV[3]` ms after the last join.
pub(crate) static WAIT_JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[2] == '1' then
  redis.call('ZADD', KEYS[1], 0, ARGV[1])
else
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[1], 'NX', t[1] * 1000000 + t[2], ARGV[1])
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
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
