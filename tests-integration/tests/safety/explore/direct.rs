//! The sampler's own connections, straight to each server (not through its proxy).

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;

/// Bound on one direct read of one node: past it the node counts as unknown (paused).
pub const READ_TIMEOUT: Duration = Duration::from_millis(80);

/// What one node stores under each key read: value (if a string) and `PTTL`.
pub type NodeRead = Vec<(Option<String>, i64)>;

/// A direct connection to one node, re-made after errors.
pub struct Direct {
    url: String,
    con: Option<MultiplexedConnection>,
}

/// Reads value and PTTL of every key in one atomic step.
const READ_LUA: &str = r"
local r = {}
for _, k in ipairs(KEYS) do
  if redis.call('TYPE', k)['ok'] == 'string' then
    r[#r + 1] = redis.call('GET', k)
  else
    r[#r + 1] = false
  end
  r[#r + 1] = redis.call('PTTL', k)
end
return r
";

impl Direct {
    pub fn new(url: String) -> Self {
        Self { url, con: None }
    }

    pub async fn connection(&mut self) -> Option<MultiplexedConnection> {
        if self.con.is_none() {
            let client = redis::Client::open(self.url.as_str()).ok()?;
            let cfg = redis::AsyncConnectionConfig::new()
                .set_connection_timeout(Some(READ_TIMEOUT))
                .set_response_timeout(None);
            let con = tokio::time::timeout(
                READ_TIMEOUT,
                client.get_multiplexed_async_connection_with_config(&cfg),
            )
            .await;
            self.con = con.ok()?.ok();
        }
        self.con.clone()
    }

    /// `(value, pttl)` per key, or `None` when the node did not answer in time (unknown).
    pub async fn read(&mut self, keys: &[String]) -> Option<NodeRead> {
        let mut con = self.connection().await?;
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(READ_LUA).arg(keys.len());
        for k in keys {
            cmd.arg(k);
        }
        let reply: Value = match tokio::time::timeout(READ_TIMEOUT, cmd.query_async(&mut con)).await
        {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => {
                self.con = None;
                return None;
            }
            Err(_) => return None,
        };
        let Value::Array(items) = reply else {
            return None;
        };
        let mut out = Vec::with_capacity(keys.len());
        for pair in items.chunks(2) {
            let v = match &pair[0] {
                Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                _ => None,
            };
            let t = match pair.get(1) {
                Some(Value::Int(t)) => *t,
                _ => -2,
            };
            out.push((v, t));
        }
        (out.len() == keys.len()).then_some(out)
    }
}
