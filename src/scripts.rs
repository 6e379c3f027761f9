//! The Lua scripts every node runs. Each one is atomic on its node, and each compares
//! the owner's random value before it touches a key, so only the owner can release or
//! extend what it holds.
//!
//! They run with EVALSHA; `redis::Script` loads them again after NOSCRIPT (a node that
//! restarted or ran `SCRIPT FLUSH`), once per request.

use redis::{Script, ToRedisArgs};

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

/// The reply codes of the fenced acquire (`FENCED_ACQUIRE`, and `WRITE_ACQUIRE` with
/// fencing), written once: as Rust constants for the client, and as Lua locals
/// (`fence_codes_lua!()`, put in front of each script that answers them) for the scripts.
macro_rules! fence_codes {
    ($($(#[$doc:meta])* $name:ident = $code:literal;)*) => {
        $($(#[$doc])* pub(crate) const $name: i64 = $code;)*
        macro_rules! fence_codes_lua {
            () => {
                concat!($("local ", stringify!($name), " = ", $code, "\n"),*)
            };
        }
    };
}

fence_codes! {
    /// Not written: a fencing counter is at or above the candidate.
    FENCE_STALE = 0;
    /// Not written: a lock key is held by another owner.
    FENCE_LOCKED = 1;
    /// Granted: every lock key holds the value, every counter the candidate.
    FENCE_OK = 2;
}

mod exclusive;
mod inspect;
#[cfg(test)]
mod layout;
mod rwlock;
mod semaphore;

#[cfg(test)]
pub(crate) use exclusive::acquire_one;
pub(crate) use exclusive::{
    acquire_many, acquire_one_for, acquire_or_queue, extend, extend_heal, fenced_acquire,
    hold_release, release, set_nx, wait_join, wake_next, ACQUIRE_ONE_LUA, EXTEND_HEAL_LUA,
    EXTEND_LUA, FENCED_ACQUIRE_LUA, RELEASE_LUA,
};
pub(crate) use inspect::inspect;

pub(crate) use rwlock::{
    intent_clear, read_acquire, read_extend, read_release, read_wait_clear, write_acquire,
    write_release, RwKeys, INTENT_CLEAR_LUA, READERS_MARKER, READ_ACQUIRE_LUA, READ_EXTEND_LUA,
    READ_RELEASE_LUA, READ_WAIT_CLEAR_LUA, WRITE_ACQUIRE_LUA, WRITE_RELEASE_LUA,
};
pub(crate) use semaphore::{permit_acquire, permit_taken, PERMIT_ACQUIRE_LUA};

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
    /// Private to `scripts`: each script's constructor below owns its `KEYS`/`ARGV`
    /// layout.
    ///
    /// Both of the command's buffers are sized once for the whole request: built
    /// argument by argument they would grow (and be copied) four or five times, on
    /// every acquisition and release.
    fn new<K: AsRef<[u8]>>(script: &'static Script, keys: &[K]) -> Self {
        let key_bytes: usize = keys.iter().map(|k| k.as_ref().len()).sum();
        let mut call = Self::sized(script, keys.len(), key_bytes);
        for key in keys {
            call.cmd.arg(key.as_ref());
        }
        call
    }

    /// Like [`new`](Self::new) with `keys`, then each of them again with `suffix` (a
    /// lock key's auxiliary key, such as its wait queue), written straight into the
    /// command rather than made as strings first.
    fn with_suffixed(script: &'static Script, keys: &[String], suffix: &str) -> Self {
        let key_bytes: usize = keys.iter().map(|k| 2 * k.len() + suffix.len()).sum();
        let mut call = Self::sized(script, 2 * keys.len(), key_bytes);
        for key in keys {
            call.cmd.arg(key.as_str());
        }
        for key in keys {
            call.cmd.arg(Joined(key, suffix));
        }
        call
    }

    /// `EVALSHA <sha> <keys>`, with room for `keys` keys of `key_bytes` bytes in all and
    /// the arguments.
    fn sized(script: &'static Script, keys: usize, key_bytes: usize) -> Self {
        let sha = script.get_hash();
        let mut cmd = redis::Cmd::with_capacity(
            3 + keys + ARGS_ROOM,
            "EVALSHA".len() + sha.len() + 4 + key_bytes + ARG_BYTES_ROOM,
        );
        cmd.arg("EVALSHA").arg(sha).arg(keys);
        Self { script, cmd }
    }

    fn arg(&mut self, arg: impl ToRedisArgs) -> &mut Self {
        self.cmd.arg(arg);
        self
    }
}

/// Two strings written as one argument.
struct Joined<'a>(&'a str, &'a str);

impl ToRedisArgs for Joined<'_> {
    fn write_redis_args<W: ?Sized + redis::RedisWrite>(&self, out: &mut W) {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Into a command's own buffer, which cannot fail.
        let _ = arg.write_all(self.0.as_bytes());
        let _ = arg.write_all(self.1.as_bytes());
    }
}

#[cfg(all(test, unix))]
mod tests {
    use redis::Value;

    use super::exclusive::*;
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
