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

    const RW: [&str; 3] = ["d", "d:readers", "d:writer"];

    /// Each request sent twice (its first reply lost) is a success both times, and the
    /// scripts admit readers xor a writer on one node.
    #[tokio::test]
    async fn reader_writer_scripts_on_one_node() {
        let cluster = Cluster::builder().nodes(1).start().await.expect("cluster");
        let client = redis::Client::open(cluster.node(0).direct_url()).expect("url");
        let c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let one = Value::Int(1);
        let zero = Value::Int(0);
        // Two readers; each re-sent request counts as admitted.
        for r in ["r1", "r1", "r2"] {
            assert_eq!(run(&c, &READ_ACQUIRE, &RW, &[r, "60000"]).await, one);
        }
        assert_eq!(ints(&c, "ZCARD", RW[1]).await, 2);
        let pttl = ints(&c, "PTTL", RW[1]).await;
        assert!(pttl > 59_000 && pttl <= 60_000, "{pttl}");
        // A writer is refused and leaves its intent, which refuses new readers.
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &RW, &["w", "5000", "i"]).await,
            zero
        );
        assert_eq!(ints(&c, "EXISTS", RW[0]).await, 0);
        assert!(ints(&c, "PTTL", RW[2]).await > 4_000);
        assert_eq!(run(&c, &READ_ACQUIRE, &RW, &["r3", "60000"]).await, zero);
        // Extending a reader rescores it; one that left cannot be extended.
        assert_eq!(
            run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
            one
        );
        assert!(ints(&c, "PTTL", RW[1]).await > 89_000);
        let released = Value::Array(vec![one.clone(), zero.clone()]);
        assert_eq!(run(&c, &READ_RELEASE, &RW[1..2], &["r1"]).await, released);
        assert_eq!(
            run(&c, &READ_EXTEND, &RW[1..2], &["r1", "90000"]).await,
            zero
        );
        let not_held = Value::Array(vec![zero.clone(), zero.clone()]);
        assert_eq!(run(&c, &READ_RELEASE, &RW[1..2], &["r1"]).await, not_held);
        // A reader that expires is gone at the next touch: the writer gets in, twice.
        assert_eq!(run(&c, &READ_EXTEND, &RW[1..2], &["r2", "1"]).await, one);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        for _ in 0..2 {
            assert_eq!(run(&c, &WRITE_ACQUIRE, &RW, &["w", "5000", "i"]).await, one);
        }
        assert_eq!(
            ints(&c, "EXISTS", RW[2]).await,
            0,
            "the winner's intent is gone"
        );
        assert_eq!(run(&c, &READ_ACQUIRE, &RW, &["r4", "60000"]).await, zero);
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &RW, &["w2", "5000", "j"]).await,
            zero
        );
        // Fenced: the candidate must beat the counter; a re-send is granted again.
        let f = ["e", "e:readers", "e:writer", "e:fence"];
        let code = |v: &[i64]| Value::Array(v.iter().map(|i| Value::Int(*i)).collect());
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &f, &["w", "5000", "i", "4"]).await,
            code(&[2, 4])
        );
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &f, &["w", "5000", "i", "4"]).await,
            code(&[2, 4])
        );
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &f, &["x", "5000", "j", "4"]).await,
            code(&[0, 4])
        );
        assert_eq!(
            run(&c, &WRITE_ACQUIRE, &f, &["x", "5000", "j", "5"]).await,
            code(&[1, 4])
        );
        // Withdrawing an intent only deletes one's own.
        assert_eq!(
            run(&c, &INTENT_CLEAR, &["d:writer"], &["nobody"]).await,
            zero
        );
    }

    #[tokio::test]
    async fn permit_scripts_on_one_node() {
        let cluster = Cluster::builder().nodes(1).start().await.expect("cluster");
        let client = redis::Client::open(cluster.node(0).direct_url()).expect("url");
        let c = client
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
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
