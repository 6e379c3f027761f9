//! The exclusive lock's scripts (acquire, release, extend, and their fenced and
//! multi-key forms) and its wait queue's, each with the constructor that owns its
//! `KEYS`/`ARGV` layout.

use std::sync::LazyLock;

use redis::Script;

use super::Call;
use crate::kind::QUEUE_SUFFIX;
use crate::mutants;

/// `"1"`/`"0"`: a waiter's place in a wait queue, at the front (woken, then beaten) or
/// in arrival order.
fn front_flag(front: bool) -> &'static str {
    if front {
        "1"
    } else {
        "0"
    }
}

/// `SET key value NX PX ttl`: the uncontended single-key acquire, one command.
pub(crate) fn set_nx(key: &str, value: &str, ttl_ms: u64) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(6, 3 + 2 + 2 + 2 + key.len() + value.len() + 20);
    cmd.arg("SET")
        .arg(key)
        .arg(value)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms);
    cmd
}

/// [`ACQUIRE_ONE`] of `key` for `value`.
#[cfg(test)]
pub(crate) fn acquire_one(key: &str, value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&ACQUIRE_ONE, &[key]);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`ACQUIRE_ONE`] with the key, value and ttl of `set`, a command of [`set_nx`]: what
/// replaces it when it is sent again. Built only then, from the command itself: most
/// acquisitions never re-send, and building it with every `SET` cost two allocations.
pub(crate) fn acquire_one_for(set: &redis::Cmd) -> Call {
    // `SET key value NX PX ttl`: the words at 1, 2 and 5.
    let mut words: [&[u8]; 6] = [&[]; 6];
    for (word, arg) in words.iter_mut().zip(set.args_iter()) {
        if let redis::Arg::Simple(bytes) = arg {
            *word = bytes;
        }
    }
    let mut call = Call::new(&ACQUIRE_ONE, &[words[1]]);
    call.arg(words[2]).arg(words[5]);
    call
}

/// [`ACQUIRE_OR_QUEUE`]: `key` for `value`, or a place for `member` in `queue` (at the
/// `front`), which lives `queue_ttl_ms` after the last join.
pub(crate) fn acquire_or_queue(
    key: &str,
    queue: &str,
    value: &str,
    ttl_ms: u64,
    member: &str,
    front: bool,
    queue_ttl_ms: u64,
) -> Call {
    let mut call = Call::new(&ACQUIRE_OR_QUEUE, &[key, queue]);
    call.arg(value)
        .arg(ttl_ms)
        .arg(member)
        .arg(front_flag(front))
        .arg(queue_ttl_ms);
    call
}

/// [`ACQUIRE_MANY`]: every key of `keys` for `value`, or none.
pub(crate) fn acquire_many(keys: &[String], value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&ACQUIRE_MANY, keys);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`FENCED_ACQUIRE`]: `keys` for `value` with the fencing counters `fences` (one per
/// key, in the same order) raised to `candidate`.
pub(crate) fn fenced_acquire(
    keys: &[String],
    fences: &[String],
    value: &str,
    ttl_ms: u64,
    candidate: u64,
) -> Call {
    let all: Vec<&str> = keys.iter().chain(fences).map(String::as_str).collect();
    let mut call = Call::new(&FENCED_ACQUIRE, &all);
    call.arg(value).arg(ttl_ms).arg(candidate);
    call
}

/// [`RELEASE`] of `keys` held with `value`; with `wake`, the channel prefix, each
/// released key's wait queue (`<key>:waiters`) is woken.
pub(crate) fn release(keys: &[String], value: &str, wake: Option<&str>) -> Call {
    let mut call = match wake {
        Some(_) => Call::with_suffixed(&RELEASE, keys, QUEUE_SUFFIX),
        None => Call::new(&RELEASE, keys),
    };
    call.arg(value).arg(wake.unwrap_or(""));
    call
}

/// [`HOLD_RELEASE`]: `keys` held with `value` expire in `left_ms`.
pub(crate) fn hold_release(keys: &[String], value: &str, left_ms: u64) -> Call {
    let mut call = Call::new(&HOLD_RELEASE, keys);
    call.arg(value).arg(left_ms);
    call
}

/// [`EXTEND`]: `keys` held with `value` live at least `ttl_ms` more.
pub(crate) fn extend(keys: &[String], value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&EXTEND, keys);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`EXTEND_HEAL`]: as [`extend`], and a missing key of `keys` is set to `value` again.
pub(crate) fn extend_heal(keys: &[String], value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&EXTEND_HEAL, keys);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`WAKE_NEXT`]: `member`, woken in vain for `key`, leaves `queue` and passes the
/// wake-up on (channels `prefix` + member).
pub(crate) fn wake_next(key: &str, queue: &str, member: &str, prefix: &str) -> Call {
    let mut call = Call::new(&WAKE_NEXT, &[key, queue]);
    call.arg(member).arg(prefix);
    call
}

/// [`WAIT_JOIN`]: `member` joins `queue` (at the `front`), which lives `queue_ttl_ms`
/// after the last join.
pub(crate) fn wait_join(queue: &str, member: &str, front: bool, queue_ttl_ms: u64) -> Call {
    let mut call = Call::new(&WAIT_JOIN, &[queue]);
    call.arg(member).arg(front_flag(front)).arg(queue_ttl_ms);
    call
}

/// Deletes each lock key whose value is `ARGV[1]`; returns `{keys deleted, waiters woken}`.
///
/// Without wake-ups (`ARGV[2]` empty), `KEYS` are the lock keys. With them, `KEYS` are
/// m lock keys then their m wait queues and `ARGV[2]` the channel prefix: for each
/// deleted key the queue's oldest members are popped and the
/// key is published to their channels, until one live listener was reached. The
/// wake-up runs under `pcall`, so a user whose ACL denies it still releases.
pub(crate) static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(mutants::release_script().unwrap_or(RELEASE_LUA)));
/// The text of [`RELEASE`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const RELEASE_LUA: &str = concat!(
    wake_oldest!(),
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
    if notify then woke = woke + wake_oldest(KEYS[m + i], key, prefix) end
  end
end
return {n, woke}
",
);

/// `SET KEYS[1] ARGV[1] NX PX ARGV[2]` that also counts finding its own value as set:
/// sent instead of the plain `SET NX` when that one must be sent again, since the first
/// may have been applied with its reply lost. Returns 1 if the key holds `ARGV[1]`, 0 if
/// another owner's value.
pub(crate) static ACQUIRE_ONE: LazyLock<Script> = LazyLock::new(|| Script::new(ACQUIRE_ONE_LUA));
/// The text of [`ACQUIRE_ONE`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const ACQUIRE_ONE_LUA: &str = r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return 1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
";

/// A single-key acquire that queues up when it fails: `SET KEYS[1] ARGV[1] NX PX ARGV[2]`,
/// and if the key is held, joins the wait queue `KEYS[2]` as `ARGV[3]` (at the front if
/// `ARGV[4]` is `1`) with expiry `ARGV[5]` ms. Returns 1 if the key holds `ARGV[1]` (set
/// now, or by an earlier send of this same request), 0 if not. Joining in the same step
/// as failing leaves no moment in which a release could miss the waiter.
/// The queueing runs under `pcall`: a user whose ACL denies it still locks; and the
/// queue's expiry is only set where the `ZADD` worked, so a key of another type under
/// the queue's name is never touched.
pub(crate) static ACQUIRE_OR_QUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.pcall('GET', KEYS[1]) == ARGV[1] then return 1 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
local added
if ARGV[4] == '1' then
  added = redis.pcall('ZADD', KEYS[2], 0, ARGV[3])
else
  local t = redis.pcall('TIME')
  if type(t) == 'table' and t[1] then
    added = redis.pcall('ZADD', KEYS[2], 'NX', t[1] * 1000000 + t[2], ARGV[3])
  end
end
if type(added) == 'number' then redis.pcall('PEXPIRE', KEYS[2], ARGV[5]) end
return 0
",
    )
});

/// Passes on a wake-up that reached a manager with nobody waiting there any more (its
/// waiter was cancelled while a request of it that joined the queue was still on its
/// way): `KEYS[1]` is the lock key, `KEYS[2]` its queue, `ARGV[1]` the member that was
/// woken in vain, `ARGV[2]` the channel prefix. Leaves the queue; unless the lock is held
/// again (its release will wake the next), pops the queue's oldest members and publishes
/// the lock key to them until one live listener was reached. Returns 1 if one was.
pub(crate) static WAKE_NEXT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        wake_oldest!(),
        r"
redis.pcall('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
return wake_oldest(KEYS[2], KEYS[1], ARGV[2])
",
    ))
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

/// If every key of `KEYS` holds `ARGV[1]`, makes each one live at least `ARGV[2]` ms more
/// and returns 1; otherwise touches nothing and returns 0. A failed extension never
/// deletes anything.
///
/// Monotone: an expiry is raised, never lowered. A copy of an older, shorter extension
/// that reaches the node after a newer, longer one (late on a connection since dropped,
/// or re-sent) then changes nothing, so no arrival order can take back what the newer
/// one's success promised. A shorter `extend` lowers the guard's belief only.
/// `PEXPIRE … GT` does it in one command (Redis 7.0 and later, Valkey; the same ACL
/// permission as `PEXPIRE`); where the server refuses the option, the script compares
/// `PTTL` with the new ttl itself, on the node's one clock.
pub(crate) static EXTEND: LazyLock<Script> =
    LazyLock::new(|| Script::new(mutants::extend_script().unwrap_or(EXTEND_LUA)));
/// The text of [`EXTEND`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const EXTEND_LUA: &str = concat!(
    raise_expiry!(),
    r"
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  raise(key, ARGV[2])
end
return 1
",
);

/// [`EXTEND`] that also heals: a key of `KEYS` that is missing is set to `ARGV[1]` with
/// expiry `ARGV[2]` ms (`SET NX`), as a fresh vote would; keys that hold `ARGV[1]` are
/// raised as `EXTEND` does. If any key holds another value nothing is touched and 0 is
/// returned; else 1. Sent only to nodes out of restart quarantine (`heal_on_extend`).
/// A late copy can set the value again after its release (like a late acquisition:
/// until `ARGV[2]` ms after it lands); it never lowers an expiry and never touches
/// another owner's key.
pub(crate) static EXTEND_HEAL: LazyLock<Script> = LazyLock::new(|| Script::new(EXTEND_HEAL_LUA));
/// The text of [`EXTEND_HEAL`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const EXTEND_HEAL_LUA: &str = concat!(
    raise_expiry!(),
    r"
for _, key in ipairs(KEYS) do
  local v = redis.call('GET', key)
  if v and v ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  if not redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    raise(key, ARGV[2])
  end
end
return 1
",
);

/// The release of a lock held at least for a period (`hold_at_least`): each key of
/// `KEYS` that holds `ARGV[1]` expires in exactly `ARGV[2]` ms (what is left of the
/// period) instead of being deleted. Returns `{keys set, 0}`, the shape of `RELEASE`'s
/// reply. Not monotone, and need not be: it ends its owner's hold (the guard is gone),
/// so no promise rests on the value any more; a late copy can only keep the released
/// value until the end of the period.
pub(crate) static HOLD_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
    n = n + 1
  end
end
return {n, 0}
",
    )
});

/// All or none: if no key of `KEYS` exists, sets each to `ARGV[1]` with expiry `ARGV[2]` ms
/// and returns 1; if every key already holds `ARGV[1]` (an earlier send of this same
/// request landed), returns 1 too; otherwise sets nothing and returns `-i`, where `KEYS[i]`
/// is the first key found held by another owner (so the caller waits for that one).
pub(crate) static ACQUIRE_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local mine = 0
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    if redis.pcall('GET', key) ~= ARGV[1] then return -i end
    mine = mine + 1
  end
end
if mine == #KEYS then return 1 end
for _, key in ipairs(KEYS) do
  redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
end
return 1
",
    )
});

/// The fenced acquire: `KEYS` = m lock keys, then their m counter keys; `ARGV` = value,
/// ttl in ms, candidate token `t`.
///
/// - if every lock key already holds the value and every counter is t (an earlier send
///   of this same request landed): `{OK, t}`, nothing written;
/// - if any counter is >= t: `{STALE, max counter}`, nothing written;
/// - else if any lock key holds another value: `{LOCKED, max counter, i}` with `KEYS[i]`
///   the first such key, nothing written;
/// - else every lock key is set (value, PX ttl), every counter to t: `{OK, t}`.
///
/// Counters never get a TTL and nothing else writes them, so on each node they only
/// grow. Candidates stay below 2^53, where Lua's doubles are exact. A counter key may
/// be named more than once (resources of one shared counter): each copy reads and is
/// set alike.
pub(crate) static FENCED_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(mutants::fenced_acquire_script().unwrap_or(FENCED_ACQUIRE_LUA)));
/// The text of [`FENCED_ACQUIRE`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const FENCED_ACQUIRE_LUA: &str = concat!(
    fence_codes_lua!(),
    r"
local m = #KEYS / 2
local t = tonumber(ARGV[3])
local done = 0
for i = 1, m do
  if redis.pcall('GET', KEYS[i]) == ARGV[1] and tonumber(redis.pcall('GET', KEYS[m + i])) == t then
    done = done + 1
  end
end
if done == m then return {FENCE_OK, t} end
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
if max >= t then return {FENCE_STALE, max} end
for i = 1, m do
  local v = redis.call('GET', KEYS[i])
  if v and v ~= ARGV[1] then return {FENCE_LOCKED, max, i} end
end
for i = 1, m do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[m + i], ARGV[3])
end
return {FENCE_OK, t}
",
);
