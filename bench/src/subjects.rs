//! The four subjects: tokio-redlock, rslock, and two floors written straight on redis-rs.

use std::time::Duration;

use futures::future::join_all;
use redis::aio::MultiplexedConnection;
use redis::{Script, Value};

/// Compare-and-delete, the release every Redlock client runs; the floors load it once.
const RELEASE_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
else
  return 0
end
";

/// The subjects measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TokioRedlock,
    Rslock,
    /// The least an async Redlock client on redis-rs can do.
    AsyncFloor,
    /// A synchronous, single-thread fan-out with no runtime.
    SyncFloor,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::TokioRedlock => "tokio-redlock",
            Self::Rslock => "rslock 0.10",
            Self::AsyncFloor => "async floor",
            Self::SyncFloor => "sync floor",
        }
    }

    /// A short tag for keys, so subjects never share a key.
    pub(crate) fn tag(self) -> &'static str {
        match self {
            Self::TokioRedlock => "tr",
            Self::Rslock => "rs",
            Self::AsyncFloor => "af",
            Self::SyncFloor => "sf",
        }
    }
}

/// A fresh 128-bit owner value, as every subject makes one per lock.
fn owner_value() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// An async subject, ready to lock and unlock.
#[derive(Clone)]
pub(crate) enum Async {
    TokioRedlock(tokio_redlock::Redlock),
    Rslock(rslock::LockManager),
    Floor(AsyncFloor),
}

impl Async {
    /// Builds `kind` on `urls`, with each library's defaults: tokio-redlock's 50 ms node
    /// timeout and 10 retries of 200 ms + 0..200 ms; rslock's 3 tries with 0..200 ms
    /// pauses and redis-rs's 500 ms response timeout.
    pub(crate) async fn connect(kind: Kind, urls: &[String]) -> Result<Self, String> {
        match kind {
            Kind::TokioRedlock => tokio_redlock::Redlock::builder()
                .nodes(urls)
                .build()
                .map(Self::TokioRedlock)
                .map_err(|e| e.to_string()),
            Kind::Rslock => Ok(Self::Rslock(rslock::LockManager::new(urls.to_vec()))),
            Kind::AsyncFloor => AsyncFloor::connect(urls).await.map(Self::Floor),
            Kind::SyncFloor => Err("the sync floor is not async".into()),
        }
    }

    /// One lock + unlock of `key`, with one attempt's worth of retries as the library
    /// does them.
    pub(crate) async fn lock_unlock(&self, key: &str, ttl: Duration) -> Result<(), String> {
        match self {
            Self::TokioRedlock(rl) => {
                let guard = rl.acquire(key, ttl).await.map_err(|e| e.to_string())?;
                guard.release().await.map_err(|e| e.to_string())
            }
            Self::Rslock(m) => {
                let lock = m
                    .lock(key.as_bytes(), ttl)
                    .await
                    .map_err(|e| e.to_string())?;
                m.unlock(&lock).await;
                Ok(())
            }
            Self::Floor(f) => f.lock_unlock(key, ttl).await,
        }
    }
}

/// One multiplexed connection per node; `SET NX PX` to all nodes at once, waiting for
/// all, then compare-and-delete `EVALSHA` to all at once. No retries, no validity
/// bookkeeping, no timeouts beyond the driver's: nothing a real client could leave out
/// and still be a Redlock client.
#[derive(Clone)]
pub(crate) struct AsyncFloor {
    conns: Vec<MultiplexedConnection>,
    sha: String,
}

impl AsyncFloor {
    async fn connect(urls: &[String]) -> Result<Self, String> {
        let script = Script::new(RELEASE_LUA);
        let mut conns = Vec::with_capacity(urls.len());
        for url in urls {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("{url}: {e}"))?;
            let _: String = script
                .prepare_invoke()
                .load_async(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
            conns.push(conn);
        }
        Ok(Self {
            conns,
            sha: script.get_hash().to_owned(),
        })
    }

    async fn lock_unlock(&self, key: &str, ttl: Duration) -> Result<(), String> {
        let value = owner_value();
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        let votes = join_all(self.conns.iter().map(|c| {
            let mut c = c.clone();
            let set = &set;
            async move { set.query_async::<Value>(&mut c).await }
        }))
        .await;
        let yes = votes
            .iter()
            .filter(|v| matches!(v, Ok(Value::Okay)))
            .count();
        let mut del = redis::cmd("EVALSHA");
        del.arg(&self.sha).arg(1).arg(key).arg(&value);
        join_all(self.conns.iter().map(|c| {
            let mut c = c.clone();
            let del = &del;
            async move { del.query_async::<Value>(&mut c).await }
        }))
        .await;
        if yes > self.conns.len() / 2 {
            Ok(())
        } else {
            Err(format!("{yes} of {} nodes set the key", self.conns.len()))
        }
    }
}

/// Synchronous connections, one per node, driven from one thread with no runtime: write
/// the request to every socket, then read every reply, so the requests are in flight
/// together. The least a Redlock fan-out can cost on this machine.
pub(crate) struct SyncFloor {
    conns: Vec<redis::Connection>,
    sha: String,
    buf: Vec<u8>,
}

impl SyncFloor {
    pub(crate) fn connect(urls: &[String]) -> Result<Self, String> {
        let script = Script::new(RELEASE_LUA);
        let mut conns = Vec::with_capacity(urls.len());
        for url in urls {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let mut conn = client.get_connection().map_err(|e| format!("{url}: {e}"))?;
            let _: String = script
                .prepare_invoke()
                .load(&mut conn)
                .map_err(|e| e.to_string())?;
            conns.push(conn);
        }
        Ok(Self {
            conns,
            sha: script.get_hash().to_owned(),
            buf: Vec::with_capacity(256),
        })
    }

    fn fan_out(&mut self, cmd: &redis::Cmd) -> Result<Vec<Value>, String> {
        self.buf.clear();
        cmd.write_packed_command(&mut self.buf);
        for c in &mut self.conns {
            c.send_packed_command(&self.buf)
                .map_err(|e| e.to_string())?;
        }
        self.conns
            .iter_mut()
            .map(|c| c.recv_response().map_err(|e| e.to_string()))
            .collect()
    }

    pub(crate) fn lock_unlock(&mut self, key: &str, ttl: Duration) -> Result<(), String> {
        let value = owner_value();
        let mut set = redis::cmd("SET");
        set.arg(key)
            .arg(&value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis() as u64);
        let votes = self.fan_out(&set)?;
        let yes = votes.iter().filter(|v| matches!(v, Value::Okay)).count();
        let mut del = redis::cmd("EVALSHA");
        del.arg(&self.sha).arg(1).arg(key).arg(&value);
        self.fan_out(&del)?;
        if yes > self.conns.len() / 2 {
            Ok(())
        } else {
            Err(format!("{yes} of {} nodes set the key", self.conns.len()))
        }
    }
}
