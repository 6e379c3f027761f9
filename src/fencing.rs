//! Helpers for the storage a lock protects: refuse writes that carry a stale fencing token.
//!
//! A lock alone cannot stop a holder that was paused past its validity (a GC pause, a
//! stopped VM) from writing afterwards. Fencing tokens can, if the storage checks them:
//! it remembers the highest token it has seen per resource (its high-water mark) and
//! refuses anything lower. [`FenceGate`] does that in memory; [`FENCE_CHECK_LUA`] does it
//! inside a Redis script, atomically with the write it guards.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::sync::lock;

/// A write or read carried a token lower than one the storage has already seen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "stale fencing token {token} for `{resource}`: {high_water} was already seen; \
     this holder lost its lock and must stop"
)]
#[non_exhaustive]
pub struct StaleToken {
    /// The resource the token was for.
    pub resource: String,
    /// The token that was refused.
    pub token: u64,
    /// The highest token seen for the resource.
    pub high_water: u64,
}

/// An in-memory fencing check: one high-water mark per resource.
///
/// [`check`](Self::check) accepts a token at least as high as the mark and raises the
/// mark to it, so that once a newer holder has touched the resource, an older one is
/// refused. Use it on reads as well as writes: a holder that read under an old token
/// must not act on what it read.
///
/// # Example
/// ```
/// use tokio_redlock::FenceGate;
///
/// let gate = FenceGate::new();
/// assert!(gate.check("payment:1", 7).is_ok());
/// assert!(gate.check("payment:1", 7).is_ok());   // the same holder again
/// assert!(gate.check("payment:1", 9).is_ok());   // a newer holder
/// let err = gate.check("payment:1", 7).unwrap_err(); // the old one is refused
/// assert_eq!(err.high_water, 9);
/// assert_eq!(gate.refusals(), 1);
/// ```
#[derive(Default)]
pub struct FenceGate {
    marks: Mutex<HashMap<String, u64>>,
    refusals: AtomicU64,
}

impl fmt::Debug for FenceGate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resources = lock(&self.marks).len();
        f.debug_struct("FenceGate")
            .field("resources", &resources)
            .field("refusals", &self.refusals())
            .finish()
    }
}

impl FenceGate {
    /// An empty gate: no marks, no refusals.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accepts `token` for `resource` if it is at least the high-water mark, and raises
    /// the mark to it.
    ///
    /// # Errors
    /// [`StaleToken`] if a higher token was seen before; the refusal is counted.
    ///
    /// ```
    /// # let gate = tokio_redlock::FenceGate::new();
    /// # let token = 1;
    /// // Before each read or write of the protected resource:
    /// if let Err(stale) = gate.check("payment:1", token) {
    ///     eprintln!("{stale}"); // refuse the request
    /// }
    /// ```
    pub fn check(&self, resource: &str, token: u64) -> Result<(), StaleToken> {
        let mut marks = lock(&self.marks);
        let mark = marks.entry(resource.to_owned()).or_insert(0);
        if token < *mark {
            self.refusals.fetch_add(1, Ordering::Relaxed);
            return Err(StaleToken {
                resource: resource.to_owned(),
                token,
                high_water: *mark,
            });
        }
        *mark = token;
        Ok(())
    }

    /// The high-water mark of `resource`, if any token was seen for it.
    ///
    /// ```
    /// let gate = tokio_redlock::FenceGate::new();
    /// gate.check("payment:1", 4).unwrap();
    /// assert_eq!(gate.high_water("payment:1"), Some(4));
    /// assert_eq!(gate.high_water("payment:2"), None);
    /// ```
    pub fn high_water(&self, resource: &str) -> Option<u64> {
        lock(&self.marks).get(resource).copied()
    }

    /// How many checks were refused.
    pub fn refusals(&self) -> u64 {
        self.refusals.load(Ordering::Relaxed)
    }
}

/// The fencing check as a Lua prologue, for storage that lives in Redis.
///
/// Put it first in your own script. It expects the high-water key in `KEYS[1]` and the
/// token in `ARGV[1]`; if the token is lower than the mark it returns `{0, mark}` and
/// the rest of your script does not run; otherwise it raises the mark and falls
/// through. Your script should then end with a reply of its own that starts with 1.
///
/// ```no_run
/// use tokio_redlock::FENCE_CHECK_LUA;
///
/// # async fn run(
/// #     conn: &mut redis::aio::MultiplexedConnection,
/// #     token: u64,
/// # ) -> redis::RedisResult<()> {
/// // A fenced "set the payment's status": KEYS[2] = the status key, ARGV[2] = the status.
/// let set_status = redis::Script::new(&format!(
///     "{FENCE_CHECK_LUA}\nredis.call('SET', KEYS[2], ARGV[2])\nreturn {{1, tonumber(ARGV[1])}}"
/// ));
/// let (applied, mark): (u8, u64) = set_status
///     .key("payment:42:fence")
///     .key("payment:42:status")
///     .arg(token)
///     .arg("paid")
///     .invoke_async(conn)
///     .await?;
/// if applied == 0 {
///     eprintln!("refused: token {token} is older than {mark}; this holder lost the lock");
/// }
/// # Ok(())
/// # }
/// ```
pub const FENCE_CHECK_LUA: &str = r"
local fence_token = tonumber(ARGV[1])
local fence_mark = tonumber(redis.call('GET', KEYS[1]) or '0')
if fence_token < fence_mark then return {0, fence_mark} end
redis.call('SET', KEYS[1], ARGV[1])
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_accepts_equal_or_higher_and_refuses_lower() {
        let gate = FenceGate::new();
        assert_eq!(gate.high_water("r"), None);
        gate.check("r", 3).unwrap();
        gate.check("r", 3).unwrap();
        assert_eq!(gate.high_water("r"), Some(3));
        assert_eq!(
            gate.check("r", 2),
            Err(StaleToken {
                resource: "r".into(),
                token: 2,
                high_water: 3
            })
        );
        // A refusal leaves the mark where it was.
        assert_eq!(gate.high_water("r"), Some(3));
        // Resources are independent.
        gate.check("other", 1).unwrap();
        assert_eq!(gate.refusals(), 1);
    }
}

mod cache;
#[cfg(test)]
mod model;
mod shared;

pub(crate) use cache::FenceCache;
pub(crate) use shared::SharedCounters;
