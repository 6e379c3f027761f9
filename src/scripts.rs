//! The Lua scripts every node runs. Each one is atomic on its node, and each compares
//! the owner's random value before it touches a key, so only the owner can release or
//! extend what it holds.
//!
//! They run with EVALSHA; `redis::Script` loads them again after NOSCRIPT (a node that
//! restarted or ran `SCRIPT FLUSH`), once per request.

use std::sync::LazyLock;

use redis::{Script, ToRedisArgs};

use crate::mutants;

/// The Lua function `wake_oldest(queue, key, prefix)`: pops the oldest members of the
/// wait queue `queue` and publishes `key` to their channels (`prefix` .. member) until
/// one live listener was reached; returns 1 if one was, else 0. Under `pcall`, so a user
/// whose ACL denies it still releases. At most 64 pops: a queue of dead members costs a
/// bounded amount, and the rest expire with the queue.
macro_rules! wake_oldest {
    () => {
        r"
local function wake_oldest(queue, key, prefix)
  for _ = 1, 64 do
    local top = redis.pcall('ZPOPMIN', queue)
    if type(top) ~= 'table' or #top == 0 then return 0 end
    local heard = redis.pcall('PUBLISH', prefix .. top[1], key)
    if type(heard) == 'number' and heard > 0 then return 1 end
  end
  return 0
end
"
    };
}

/// The Lua function `raise(key, ms)`: the key's expiry becomes `ms` from now if that is
/// later, never earlier (`PEXPIRE … GT`, Redis 7.0 and Valkey, the same ACL permission as
/// `PEXPIRE`; where the server refuses the option, a `PTTL` comparison on the node's one
/// clock). The monotone step of every extension.
macro_rules! raise_expiry {
    () => {
        r"
local function raise(key, ms)
  local raised = redis.pcall('PEXPIRE', key, ms, 'GT')
  if type(raised) == 'table' and raised.err then
    if redis.call('PTTL', key) < tonumber(ms) then redis.call('PEXPIRE', key, ms) end
  end
end
"
    };
}

mod rwlock;
mod semaphore;

pub(crate) use rwlock::{
    INTENT_CLEAR, READERS_MARKER, READ_ACQUIRE, READ_EXTEND, READ_RELEASE, READ_WAIT_CLEAR,
    WRITE_ACQUIRE, WRITE_RELEASE,
};
pub(crate) use semaphore::{PERMIT_ACQUIRE, PERMIT_ACQUIRE_LUA, PERMIT_TAKEN};

/// One script request, packed once and sent to every node as `EVALSHA`; a node that
/// answers NOSCRIPT (restarted, or flushed) gets `SCRIPT LOAD` and the same request again.
/// (`redis::ScriptInvocation` would rebuild the command for each node.)
pub(crate) struct Call {
    pub(crate) script: &'static Script,
    pub(crate) cmd: redis::Cmd,
}

/// Room made up front for the arguments after the keys: no script takes more than five
/// (owner value, ttl, member, front flag, queue ttl).
const ARGS_ROOM: usize = 6;
/// Bytes made up front for those arguments: an owner value (32 hex digits, or a label and
/// a UUID) and a few numbers and flags fit without growing the buffer.
const ARG_BYTES_ROOM: usize = 96;

impl Call {
    /// `EVALSHA <sha> <number of keys> <keys...>`; the arguments follow with [`arg`](Self::arg).
    ///
    /// Both of the command's buffers are sized once for the whole request: built
    /// argument by argument they would grow (and be copied) four or five times, on
    /// every acquisition and release.
    pub(crate) fn new<K: AsRef<str>>(script: &'static Script, keys: &[K]) -> Self {
        let sha = script.get_hash();
        let key_bytes: usize = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut cmd = redis::Cmd::with_capacity(
            3 + keys.len() + ARGS_ROOM,
            "EVALSHA".len() + sha.len() + 4 + key_bytes + ARG_BYTES_ROOM,
        );
        cmd.arg("EVALSHA").arg(sha).arg(keys.len());
        for key in keys {
            cmd.arg(key.as_ref());
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
pub(crate) static EXTEND_HEAL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
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
    ))
});

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

/// Reply codes of [`FENCED_ACQUIRE`].
pub(crate) const FENCE_STALE: i64 = 0;
pub(crate) const FENCE_LOCKED: i64 = 1;
pub(crate) const FENCE_OK: i64 = 2;

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
pub(crate) const FENCED_ACQUIRE_LUA: &str = r"
local m = #KEYS / 2
local t = tonumber(ARGV[3])
local done = 0
for i = 1, m do
  if redis.pcall('GET', KEYS[i]) == ARGV[1] and tonumber(redis.pcall('GET', KEYS[m + i])) == t then
    done = done + 1
  end
end
if done == m then return {2, t} end
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
  if v and v ~= ARGV[1] then return {1, max, i} end
end
for i = 1, m do
  redis.call('SET', KEYS[i], ARGV[1], 'PX', ARGV[2])
  redis.call('SET', KEYS[m + i], ARGV[3])
end
return {2, t}
";

#[cfg(all(test, unix))]
mod tests {
    use redis::Value;

    use super::*;
    use tokio_redlock_harness::Cluster;

    async fn one_node() -> (Cluster, redis::aio::MultiplexedConnection) {
        let cluster = Cluster::builder().nodes(1).start().await.expect("cluster");
        let client = redis::Client::open(cluster.node(0).direct_url()).expect("url");
        let conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        (cluster, conn)
    }

    fn ints(v: &[i64]) -> Value {
        Value::Array(v.iter().map(|i| Value::Int(*i)).collect())
    }

    /// Issue 11, item 6: an acquire request that lands twice (its first reply lost) is a
    /// yes both times, so the undo never skips a node that holds the value.
    #[tokio::test]
    async fn every_acquire_request_is_idempotent_for_its_own_value() {
        let (_cluster, mut conn) = one_node().await;
        let run = |script: &'static Script, keys: Vec<&'static str>, args: Vec<String>| {
            let mut conn = conn.clone();
            async move {
                let mut inv = script.prepare_invoke();
                for k in keys {
                    inv.key(k);
                }
                for a in args {
                    inv.arg(a);
                }
                inv.invoke_async::<Value>(&mut conn).await.expect("script")
            }
        };
        let s = |v: &str| v.to_owned();
        let one = vec![s("v1"), s("60000")];
        assert_eq!(
            run(&ACQUIRE_ONE, vec!["k1"], one.clone()).await,
            Value::Int(1)
        );
        assert_eq!(run(&ACQUIRE_ONE, vec!["k1"], one).await, Value::Int(1));
        assert_eq!(
            run(&ACQUIRE_ONE, vec!["k1"], vec![s("v2"), s("60000")]).await,
            Value::Int(0)
        );

        let queued = vec![s("v1"), s("60000"), s("m"), s("0"), s("60000")];
        assert_eq!(
            run(&ACQUIRE_OR_QUEUE, vec!["k2", "k2:waiters"], queued.clone()).await,
            Value::Int(1)
        );
        assert_eq!(
            run(&ACQUIRE_OR_QUEUE, vec!["k2", "k2:waiters"], queued).await,
            Value::Int(1)
        );

        let many = vec![s("v1"), s("60000")];
        assert_eq!(
            run(&ACQUIRE_MANY, vec!["a", "b"], many.clone()).await,
            Value::Int(1)
        );
        assert_eq!(
            run(&ACQUIRE_MANY, vec!["a", "b"], many).await,
            Value::Int(1)
        );
        // Held by another value: the script names the first held key (1-based, negated).
        assert_eq!(
            run(&ACQUIRE_MANY, vec!["c", "b"], vec![s("v2"), s("60000")]).await,
            Value::Int(-2)
        );

        let fenced = vec![s("v1"), s("60000"), s("7")];
        assert_eq!(
            run(&FENCED_ACQUIRE, vec!["f", "f:fence"], fenced.clone()).await,
            ints(&[2, 7])
        );
        assert_eq!(
            run(&FENCED_ACQUIRE, vec!["f", "f:fence"], fenced).await,
            ints(&[2, 7])
        );
        assert_eq!(
            run(
                &FENCED_ACQUIRE,
                vec!["f", "f:fence"],
                vec![s("v2"), s("60000"), s("8")]
            )
            .await,
            ints(&[1, 7, 1])
        );
        let _: () = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .expect("ping");
    }

    /// Issue 21: an extension raises an expiry and never lowers one, so a late copy of
    /// an older, shorter extension cannot take back a newer one.
    #[tokio::test]
    async fn an_extension_never_lowers_an_expiry() {
        let (_cluster, mut conn) = one_node().await;
        let reader = conn.clone();
        let pttl = || {
            let mut conn = reader.clone();
            async move {
                redis::cmd("PTTL")
                    .arg("e")
                    .query_async::<i64>(&mut conn)
                    .await
                    .expect("PTTL")
            }
        };
        let writer = conn.clone();
        let extend = |value: &'static str, ttl: u64| {
            let mut conn = writer.clone();
            async move {
                EXTEND
                    .key("e")
                    .arg(value)
                    .arg(ttl)
                    .invoke_async::<i64>(&mut conn)
                    .await
                    .expect("script")
            }
        };
        let _: () = redis::cmd("SET")
            .arg("e")
            .arg("v")
            .arg("PX")
            .arg(60_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            extend("v", 1_000).await,
            1,
            "held: a yes, also when shorter"
        );
        assert!(pttl().await > 59_000, "a shorter extension lowered it");
        assert_eq!(extend("v", 90_000).await, 1);
        assert!(pttl().await > 89_000, "a longer one did not raise it");
        assert_eq!(extend("w", 120_000).await, 0, "another owner's value");
        assert!(pttl().await <= 90_000);
    }

    /// Issue 11, item 10: the queue join never changes a key of another type that sits
    /// where the queue would be.
    #[tokio::test]
    async fn the_queue_join_leaves_a_foreign_key_alone() {
        let (_cluster, mut conn) = one_node().await;
        let _: () = redis::cmd("SET")
            .arg("held")
            .arg("other")
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = redis::cmd("SET")
            .arg("held:waiters")
            .arg("a string")
            .arg("PX")
            .arg(100_000)
            .query_async(&mut conn)
            .await
            .unwrap();
        for front in ["0", "1"] {
            let got: i64 = ACQUIRE_OR_QUEUE
                .key("held")
                .key("held:waiters")
                .arg("v1")
                .arg(60_000)
                .arg("m")
                .arg(front)
                .arg(1_000)
                .invoke_async(&mut conn)
                .await
                .expect("script");
            assert_eq!(got, 0);
        }
        let ttl: i64 = redis::cmd("PTTL")
            .arg("held:waiters")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(ttl > 90_000, "expiry changed to {ttl} ms");
    }
}
