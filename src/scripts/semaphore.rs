//! The scripts of the counting semaphore (docs/safety.md section 7): each atomic on its
//! node; an acquire counts finding its own value (an earlier send of the same request
//! that landed) as success.

use std::sync::LazyLock;

use redis::Script;

use super::Call;

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

/// [`PERMIT_ACQUIRE`]: a slot of `slots` (in the order to try them) for `value`.
pub(crate) fn permit_acquire(slots: &[&str], value: &str, ttl_ms: u64) -> Call {
    let mut call = Call::new(&PERMIT_ACQUIRE, slots);
    call.arg(value).arg(ttl_ms);
    call
}

/// [`PERMIT_TAKEN`]: which of `slots` are held.
pub(crate) fn permit_taken(slots: &[String]) -> Call {
    Call::new(&PERMIT_TAKEN, slots)
}

#[cfg(all(test, unix))]
mod tests {
    use redis::aio::MultiplexedConnection;
    use redis::Value;

    use super::*;
    use tokio_redlock_harness::Cluster;

    async fn run(
        c: &MultiplexedConnection,
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
        inv.invoke_async(&mut c.clone()).await.expect("script")
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
