//! The scripts of the reader-writer lock and the counting semaphore. As with the
//! exclusive lock's scripts, each is atomic on its node, compares the owner's value
//! before it touches anything of the owner's, and counts finding its own value (an
//! earlier send of the same request that landed) as success.
//!
//! Time on a node is the node's own `TIME`, in ms, the clock its key expiries run on.

use std::sync::LazyLock;

use redis::Script;

/// The node's time in ms (`now`), and Lua helpers on sets scored by expiry on that
/// clock: `prune(set)` removes the members whose expiry has passed (every script that
/// reads a set prunes it first, so expired members go on every touch); `fit(set)` sets
/// the set's own expiry to its longest member's, so a set never outlives its members
/// and never expires before one of them; `promote(waiting, turn)` moves every waiting
/// reader into the reader turn, keeping its expiry (the phase-fair step, see
/// `WRITE_ACQUIRE`); `manager_of(id)` is the manager named by a wait or intent id;
/// `tell_readers(turn, key, prefix)` publishes `key` once to each manager with a reader
/// in the turn (under `pcall`, so an ACL without PUBLISH only costs the wake-up) and
/// says how many listened.
macro_rules! node_time {
    () => {
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
"
    };
}

/// A reader joins: `KEYS` = lock key, reader set, writer intent, waiting readers, reader
/// turn; `ARGV` = value, ttl ms, the reader's wait id (one per acquisition, kept across
/// its attempts), patience ms.
///
/// - the value already a live reader (a re-sent request that landed): admitted (1);
/// - the lock key held (a writer or an exclusive owner): refused (0);
/// - a live writer intent, and the wait id not in the reader turn: refused;
/// - else added to the reader set with score `now + ttl`, its wait id removed from the
///   waiting readers and the turn: admitted.
///
/// A refused reader keeps its place: its wait id is (re)scored `now + patience` in the
/// turn if it is there, else in the waiting readers. Nothing else is written.
pub(crate) static READ_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        node_time!(),
        r"
prune(KEYS[2])
prune(KEYS[4])
prune(KEYS[5])
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
local turn = redis.call('ZSCORE', KEYS[5], ARGV[3])
if redis.call('EXISTS', KEYS[1]) == 1 or (not turn and redis.call('EXISTS', KEYS[3]) == 1) then
  local place = KEYS[4]
  if turn then place = KEYS[5] end
  redis.call('ZADD', place, now + tonumber(ARGV[4]), ARGV[3])
  fit(place)
  return 0
end
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
fit(KEYS[2])
return 1
",
    ))
});

/// A reader extends: `KEYS[1]` = reader set; `ARGV` = value, ttl ms. If the value is a
/// live reader, its expiry becomes `now + ttl` (`ZADD XX`) and 1 is returned; else 0,
/// nothing added.
pub(crate) static READ_EXTEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        node_time!(),
        r"
prune(KEYS[1])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
fit(KEYS[1])
return 1
",
    ))
});

/// A reader leaves: `KEYS` = reader set, lock key, writer intent, reader turn; `ARGV` =
/// value, channel prefix (empty: no wake-up). Returns `{removed, woken}`, the shape of
/// the exclusive release's reply; an expired reader counts as not held. When it was the
/// last reader and no reader's turn is pending, the waiting writer (the manager named in
/// its intent id) is told, under `pcall`.
pub(crate) static READ_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        node_time!(),
        r"
prune(KEYS[1])
prune(KEYS[4])
local n = redis.call('ZREM', KEYS[1], ARGV[1])
local prefix = ARGV[2] or ''
if n == 0 or prefix == '' then return {n, 0} end
if redis.call('ZCARD', KEYS[1]) > 0 or redis.call('ZCARD', KEYS[4]) > 0 then return {n, 0} end
local writer = manager_of(redis.call('GET', KEYS[3]))
if not writer then return {n, 0} end
local heard = redis.pcall('PUBLISH', prefix .. writer, KEYS[2])
if type(heard) == 'number' and heard > 0 then return {n, 1} end
return {n, 0}
",
    ))
});

/// A writer's acquire: `KEYS` = lock key, reader set, writer intent, waiting readers,
/// reader turn, and with fencing the counter key; `ARGV` = value, ttl ms, the writer's
/// intent id (one per acquisition, kept across its attempts), the wake-up channel prefix
/// (empty: none), and with fencing the candidate token.
///
/// - the lock key holds the value (and the counter is the candidate): granted, nothing
///   written;
/// - with fencing, a counter at or above the candidate: stale, nothing written;
/// - the lock key held by another owner: refused, nothing written;
/// - no writer intent is live: the waiting readers are promoted to the reader turn
///   (they were waiting before this writer, so they go first) and, if there were any,
///   their managers are told;
/// - live readers, or a live reader turn: refused, and the intent is set to the id (with
///   the ttl) unless another writer's intent is live, so that new readers are kept out;
/// - else the lock key is set (value, PX ttl), the counter to the candidate, and the
///   writer's own intent deleted: granted.
///
/// Unfenced it returns 1 (granted) or 0 (refused); fenced, `{code, counter}` with the
/// codes of `FENCED_ACQUIRE` (0 stale, 1 refused, 2 granted).
pub(crate) static WRITE_ACQUIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        r"
local fenced = #KEYS == 6
local cand = tonumber(ARGV[5])
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
  if code == 2 then return 1 end
  return 0
end
if redis.call('GET', KEYS[1]) == ARGV[1] and (not fenced or counter == cand) then
  return answer(2)
end
if fenced and counter >= cand then return answer(0) end
if redis.call('EXISTS', KEYS[1]) == 1 then return answer(1) end
",
        node_time!(),
        r"
prune(KEYS[2])
prune(KEYS[4])
prune(KEYS[5])
local w = redis.call('GET', KEYS[3])
if not w and redis.call('EXISTS', KEYS[4]) == 1 then
  promote(KEYS[4], KEYS[5])
  tell_readers(KEYS[5], KEYS[1], ARGV[4])
end
if redis.call('ZCARD', KEYS[2]) > 0 or redis.call('ZCARD', KEYS[5]) > 0 then
  if not w or w == ARGV[3] then redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[2]) end
  return answer(1)
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if fenced then
  redis.call('SET', KEYS[6], ARGV[5])
  counter = cand
end
if w == ARGV[3] then redis.call('DEL', KEYS[3]) end
return answer(2)
",
    ))
});

/// A writer releases: `KEYS` = lock key, its wait queue (exclusive waiters), waiting
/// readers, reader turn; `ARGV` = value, channel prefix (empty: no wake-ups). If the lock
/// key holds the value it is deleted, the waiting readers are promoted to the reader turn
/// (they go before the next writer), and, with a prefix, every manager with a reader in
/// the turn is told (once each), and the oldest exclusive waiter as `RELEASE` does.
/// Returns `{deleted, managers told}`.
pub(crate) static WRITE_RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
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

/// A reader that gives up (or won on a quorum) gives up its place: removes the wait id
/// `ARGV[1]` from the waiting readers `KEYS[1]` and the reader turn `KEYS[2]`. Returns
/// how many it removed.
pub(crate) static READ_WAIT_CLEAR: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
return redis.call('ZREM', KEYS[1], ARGV[1]) + redis.call('ZREM', KEYS[2], ARGV[1])
",
    )
});

/// A permit: `KEYS` = the semaphore's slot keys in the order this attempt tries them
/// (a random rotation); `ARGV` = value, ttl ms. Returns the 1-based position in `KEYS`
/// of the slot that holds the value (an earlier send of this request landed), else of
/// the first free slot, now set to the value with the ttl; 0 when every slot is held.
pub(crate) static PERMIT_ACQUIRE: LazyLock<Script> =
    LazyLock::new(|| Script::new(PERMIT_ACQUIRE_LUA));
/// The text of [`PERMIT_ACQUIRE`], kept apart so that `script_source` can hand it to the
/// crate's model checker.
pub(crate) const PERMIT_ACQUIRE_LUA: &str = r"
for i, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then return i end
end
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then return i end
end
return 0
";

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

#[cfg(all(test, feature = "harness"))]
mod tests {
    use redis::aio::MultiplexedConnection;
    use redis::Value;

    use super::*;
    use crate::harness::Cluster;

    async fn run(
        conn: &MultiplexedConnection,
        script: &Script,
        keys: &[&str],
        args: &[&str],
    ) -> Value {
        let mut inv = script.prepare_invoke();
        for k in keys {
            inv.key(*k);
        }
        for a in args {
            inv.arg(*a);
        }
        inv.invoke_async(&mut conn.clone()).await.expect("script")
    }

    async fn ints(conn: &MultiplexedConnection, cmd: &str, key: &str) -> i64 {
        redis::cmd(cmd)
            .arg(key)
            .query_async(&mut conn.clone())
            .await
            .expect(cmd)
    }

    /// Lock key, reader set, writer intent, waiting readers, reader turn.
    const RW: [&str; 5] = ["d", "d:readers", "d:writer", "d:rwait", "d:rturn"];
    /// The keys of `READ_RELEASE`: reader set, lock key, writer intent, reader turn.
    const LEAVE: [&str; 4] = ["d:readers", "d", "d:writer", "d:rturn"];
    /// The keys of `WRITE_RELEASE`: lock key, exclusive waiters, waiting readers, turn.
    const DONE: [&str; 4] = ["d", "d:waiters", "d:rwait", "d:rturn"];

    async fn one_node() -> (Cluster, MultiplexedConnection) {
        let cluster = Cluster::builder().nodes(1).start().await.expect("cluster");
        let client = redis::Client::open(cluster.node(0).direct_url()).expect("url");
        let c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        (cluster, c)
    }

    /// A reader's request: value, ttl, wait id, patience.
    async fn read(c: &MultiplexedConnection, value: &str, id: &str) -> Value {
        run(c, &READ_ACQUIRE, &RW, &[value, "60000", id, "5000"]).await
    }

    async fn write(c: &MultiplexedConnection, value: &str, intent: &str) -> Value {
        run(c, &WRITE_ACQUIRE, &RW, &[value, "5000", intent, ""]).await
    }

    async fn members(c: &MultiplexedConnection, key: &str) -> Vec<String> {
        redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query_async(&mut c.clone())
            .await
            .expect("ZRANGE")
    }

    /// Each request sent twice (its first reply lost) is a success both times, and the
    /// scripts admit readers xor a writer on one node.
    #[tokio::test]
    async fn reader_writer_scripts_on_one_node() {
        let (_cluster, c) = one_node().await;
        let one = Value::Int(1);
        let zero = Value::Int(0);
        // Two readers; each re-sent request counts as admitted.
        for (r, id) in [("r1", "m|1"), ("r1", "m|1"), ("r2", "m|2")] {
            assert_eq!(read(&c, r, id).await, one);
        }
        assert_eq!(ints(&c, "ZCARD", RW[1]).await, 2);
        let pttl = ints(&c, "PTTL", RW[1]).await;
        assert!(pttl > 59_000 && pttl <= 60_000, "{pttl}");
        // A writer is refused and leaves its intent, which refuses new readers; they
        // keep a place among the waiting readers, which expires with them.
        assert_eq!(write(&c, "w", "m|i").await, zero);
        assert_eq!(ints(&c, "EXISTS", RW[0]).await, 0);
        assert!(ints(&c, "PTTL", RW[2]).await > 4_000);
        assert_eq!(read(&c, "r3", "m|3").await, zero);
        assert_eq!(members(&c, RW[3]).await, vec!["m|3"]);
        let pttl = ints(&c, "PTTL", RW[3]).await;
        assert!(pttl > 4_000 && pttl <= 5_000, "{pttl}");
        // Extending a reader rescores it; one that left cannot be extended.
        assert_eq!(
            run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
            one
        );
        assert!(ints(&c, "PTTL", RW[1]).await > 89_000);
        let released = Value::Array(vec![one.clone(), zero.clone()]);
        assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, released);
        assert_eq!(
            run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
            zero
        );
        let not_held = Value::Array(vec![zero.clone(), zero.clone()]);
        assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, not_held);
        // A reader that expires is gone at the next touch: the writer gets in, twice.
        assert_eq!(run(&c, &READ_EXTEND, &RW[1..2], &["r2", "1"]).await, one);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        for _ in 0..2 {
            assert_eq!(write(&c, "w", "m|i").await, one);
        }
        assert_eq!(
            ints(&c, "EXISTS", RW[2]).await,
            0,
            "the winner's intent is gone"
        );
        assert_eq!(read(&c, "r4", "m|4").await, zero);
        assert_eq!(write(&c, "w2", "m|j").await, zero);
        // Fenced: the candidate must beat the counter; a re-send is granted again.
        let f = [
            "e",
            "e:readers",
            "e:writer",
            "e:rwait",
            "e:rturn",
            "e:fence",
        ];
        let code = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        for (value, intent, cand, want) in [
            ("w", "i", "4", [2, 4]),
            ("w", "i", "4", [2, 4]),
            ("x", "j", "4", [0, 4]),
            ("x", "j", "5", [1, 4]),
        ] {
            let got = run(&c, &WRITE_ACQUIRE, &f, &[value, "5000", intent, "", cand]).await;
            assert_eq!(got, code(&want));
        }
        // Withdrawing an intent only deletes one's own.
        assert_eq!(
            run(&c, &INTENT_CLEAR, &["d:writer"], &["nobody"]).await,
            zero
        );
    }

    /// Phase-fair admission on one node: the readers that waited for a writer go before
    /// the next writer, and readers that come after a waiting writer wait for it.
    #[tokio::test]
    async fn readers_that_waited_go_before_the_next_writer() {
        let (_cluster, c) = one_node().await;
        let (one, zero) = (Value::Int(1), Value::Int(0));
        assert_eq!(write(&c, "w1", "a|w1").await, one);
        // r1 waits for the writer that holds the lock.
        assert_eq!(read(&c, "r1", "b|r1").await, zero);
        assert_eq!(members(&c, RW[3]).await, vec!["b|r1"]);
        // The release gives r1 the turn (no wake-ups asked for here).
        let done = run(&c, &WRITE_RELEASE, &DONE, &["w1", ""]).await;
        assert_eq!(done, Value::Array(vec![one.clone(), zero.clone()]));
        assert!(members(&c, RW[3]).await.is_empty());
        assert_eq!(members(&c, RW[4]).await, vec!["b|r1"]);
        assert!(ints(&c, "PTTL", RW[4]).await > 0, "the turn expires");
        // The next writer waits for r1's turn and sets its intent ...
        assert_eq!(write(&c, "w2", "a|w2").await, zero);
        assert_eq!(ints(&c, "EXISTS", RW[2]).await, 1);
        // ... which keeps a new reader out, but not r1, whose turn it is.
        assert_eq!(read(&c, "r2", "c|r2").await, zero);
        assert_eq!(read(&c, "r1", "b|r1").await, one);
        assert!(members(&c, RW[4]).await.is_empty(), "r1's turn is used");
        assert_eq!(write(&c, "w2", "a|w2").await, zero, "r1 is in");
        let left = Value::Array(vec![one.clone(), zero.clone()]);
        assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r1", ""]).await, left);
        // r2 came after w2's intent: w2 goes first, then r2's turn.
        assert_eq!(write(&c, "w2", "a|w2").await, one);
        assert_eq!(read(&c, "r2", "c|r2").await, zero);
        run(&c, &WRITE_RELEASE, &DONE, &["w2", ""]).await;
        assert_eq!(members(&c, RW[4]).await, vec!["c|r2"]);
        assert_eq!(read(&c, "r2", "c|r2").await, one);
        assert_eq!(run(&c, &READ_RELEASE, &LEAVE, &["r2", ""]).await, left);
        // A writer that finds no intent promotes the readers waiting before it: r3
        // waited for an exclusive owner (whose release gives no turn).
        let set = |v: &str| {
            redis::cmd("SET")
                .arg("d")
                .arg(v)
                .arg("PX")
                .arg(5000)
                .clone()
        };
        let () = set("x").query_async(&mut c.clone()).await.expect("SET");
        assert_eq!(read(&c, "r3", "e|r3").await, zero);
        let _: i64 = redis::cmd("DEL")
            .arg("d")
            .query_async(&mut c.clone())
            .await
            .expect("DEL");
        assert_eq!(write(&c, "w3", "a|w3").await, zero, "r3 goes first");
        assert_eq!(members(&c, RW[4]).await, vec!["e|r3"]);
        // A reader that gives up leaves its place; a turn nobody uses lapses.
        assert_eq!(run(&c, &READ_WAIT_CLEAR, &RW[3..5], &["e|r3"]).await, one);
        assert_eq!(write(&c, "w3", "a|w3").await, one);
        let short = run(&c, &READ_ACQUIRE, &RW, &["r5", "60000", "f|r5", "1"]).await;
        assert_eq!(short, zero);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        run(&c, &WRITE_RELEASE, &DONE, &["w3", ""]).await;
        assert!(members(&c, RW[4]).await.is_empty(), "r5's place lapsed");
        assert_eq!(write(&c, "w4", "a|w4").await, one);
    }

    #[tokio::test]
    async fn permit_scripts_on_one_node() {
        let (_cluster, c) = one_node().await;
        let slots = ["g:permit:1", "g:permit:0"];
        // The first free slot of the order; a re-send finds its own slot.
        assert_eq!(
            run(&c, &PERMIT_ACQUIRE, &slots, &["a", "60000"]).await,
            Value::Int(1)
        );
        assert_eq!(
            run(&c, &PERMIT_ACQUIRE, &slots, &["b", "60000"]).await,
            Value::Int(2)
        );
        assert_eq!(
            run(&c, &PERMIT_ACQUIRE, &slots, &["b", "60000"]).await,
            Value::Int(2)
        );
        assert_eq!(
            run(&c, &PERMIT_ACQUIRE, &slots, &["c", "60000"]).await,
            Value::Int(0)
        );
        let taken = Value::Array(vec![Value::Int(1), Value::Int(1), Value::Int(0)]);
        assert_eq!(
            run(
                &c,
                &PERMIT_TAKEN,
                &["g:permit:0", "g:permit:1", "g:permit:2"],
                &[]
            )
            .await,
            taken
        );
    }
}
