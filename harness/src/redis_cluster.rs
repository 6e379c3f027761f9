//! [`RedisCluster`]: a real Redis Cluster of N masters (no replicas), made without any
//! external tool, to stand as one vote (`RedlockBuilder::cluster_node`, feature
//! `cluster`).
//!
//! Unlike [`Cluster`](super::Cluster) (N *independent* servers behind fault proxies),
//! its servers know each other: each announces its own port and cluster bus port, so a
//! proxy in front of one would be bypassed by the redirects and by the bus. Faults are
//! therefore whole-process ones: [`RedisCluster::pause_master`] and
//! [`RedisCluster::kill_master`].

use std::time::Duration;

use tokio::time::Instant;

use super::server::{self, Server, ServerConfig};
use super::{HarnessError, Persistence};

/// How many hash slots a Redis Cluster has.
const SLOTS: u16 = 16384;
/// Default bound on the whole start, joining and agreement included: a fresh cluster
/// of three agrees within a second or two on a loaded machine.
const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How often the join is checked (`CLUSTER INFO` on each master). Short: it is a
/// loopback round trip, and the gossip that ends the wait runs every 100 ms.
const STATE_POLL: Duration = Duration::from_millis(20);
/// `cluster-node-timeout`: after this long without an answer the other masters mark a
/// master as failing. Short, so that a killed master is noticed within a test; only a
/// few times the gossip period, so a loaded machine may still flag a live one briefly.
const NODE_TIMEOUT_MS: u64 = 2000;

/// Builds a [`RedisCluster`]; see [`RedisCluster::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), tokio_redlock_harness::HarnessError> {
/// use tokio_redlock_harness::{Persistence, RedisCluster};
///
/// let redis_cluster = RedisCluster::builder()
///     .masters(5)
///     .persistence(Persistence::AofAlways)
///     .start()
///     .await?;
/// assert_eq!(redis_cluster.masters(), 5);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct RedisClusterBuilder {
    masters: usize,
    redis_server: Option<std::path::PathBuf>,
    ready_timeout: Duration,
    persistence: Persistence,
}

impl RedisClusterBuilder {
    /// The number of masters, each serving an equal share of the slots. Defaults to 3,
    /// the smallest cluster Redis recommends; [`start`](Self::start) refuses 0.
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n;
        self
    }

    /// The `redis-server` binary. Defaults to `REDIS_SERVER`, then `PATH`.
    pub fn redis_server(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.redis_server = Some(path.into());
        self
    }

    /// Bound on starting every server and on the cluster's agreement. Defaults to 20 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// How each master keeps its data. Defaults to [`Persistence::Memory`].
    pub fn persistence(mut self, persistence: Persistence) -> Self {
        self.persistence = persistence;
        self
    }

    /// Starts the servers, gives each its share of the slots (`CLUSTER ADDSLOTSRANGE`),
    /// joins them (`CLUSTER MEET`) and waits until every master says `cluster_state:ok`
    /// and knows all the others and every slot's owner.
    ///
    /// # Errors
    /// [`HarnessError::Config`] for 0 masters; the errors of starting a server (see
    /// [`ClusterBuilder::start`](super::ClusterBuilder::start)); [`HarnessError::Redis`]
    /// when a cluster command fails; [`HarnessError::Timeout`] when the cluster did not
    /// agree within the ready timeout.
    pub async fn start(self) -> Result<RedisCluster, HarnessError> {
        if self.masters == 0 || self.masters > usize::from(SLOTS) {
            return Err(HarnessError::Config(format!(
                "masters must be 1..={SLOTS}, not {}",
                self.masters
            )));
        }
        let deadline = Instant::now() + self.ready_timeout;
        let config = ServerConfig {
            binary: server::find_binary(self.redis_server.as_deref())?,
            persistence: self.persistence,
            extra_args: [
                "--cluster-node-timeout",
                &NODE_TIMEOUT_MS.to_string(),
                // A master that is down takes only its own slots with it: the others
                // keep answering for theirs (the default stops the whole cluster).
                "--cluster-require-full-coverage",
                "no",
            ]
            .map(str::to_owned)
            .to_vec(),
            ready_timeout: self.ready_timeout,
            tls: None,
            cluster: true,
        };
        let starts = (0..self.masters).map(|i| Server::start(i, config.clone()));
        // On an error the servers already started are dropped, which stops them.
        let servers = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let cluster = RedisCluster { servers };
        cluster.join().await?;
        cluster.wait_agreed(deadline, self.ready_timeout).await?;
        Ok(cluster)
    }
}

/// A real Redis Cluster of N masters without replicas, on free loopback ports, each
/// master in its own temporary directory. Made with `redis-server --cluster-enabled yes`
/// and the `CLUSTER` commands alone (no `redis-cli --cluster`).
///
/// Dropping it kills every server it started (paused ones too) with `SIGKILL`, reaps
/// them (bounded at 2 s each) and removes their directories.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use tokio_redlock_harness::RedisCluster;
///
/// let redis_cluster = RedisCluster::start().await?;
/// let urls: Vec<String> = redis_cluster.seed_urls();
/// // e.g. Redlock::builder().nodes(standalone).cluster_node(urls)
/// redis_cluster.kill_master(redis_cluster.master_of("payment:42")).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct RedisCluster {
    servers: Vec<Server>,
}

impl RedisCluster {
    /// A builder with the defaults: 3 masters, [`Persistence::Memory`].
    pub fn builder() -> RedisClusterBuilder {
        RedisClusterBuilder {
            masters: 3,
            redis_server: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            persistence: Persistence::Memory,
        }
    }

    /// Starts a cluster of 3 masters: `RedisCluster::builder().start()`.
    ///
    /// # Errors
    /// As for [`RedisClusterBuilder::start`].
    pub async fn start() -> Result<Self, HarnessError> {
        Self::builder().start().await
    }

    /// `redis://127.0.0.1:<port>` of every master: the seeds for `cluster_node`.
    pub fn seed_urls(&self) -> Vec<String> {
        (0..self.servers.len())
            .map(|i| self.master_url(i))
            .collect()
    }

    /// `redis://127.0.0.1:<port>` of master `i`.
    ///
    /// # Panics
    /// When `i >= self.masters()`.
    pub fn master_url(&self, i: usize) -> String {
        format!("redis://127.0.0.1:{}", self.servers[i].port())
    }

    /// The number of masters.
    pub fn masters(&self) -> usize {
        self.servers.len()
    }

    /// The master that serves `key` (a Redis key: on a cluster vote, the lock key of
    /// resource `r` is `{r}`, so `master_of("r")` and `master_of("{r}")` agree).
    pub fn master_of(&self, key: &str) -> usize {
        let slot = usize::from(slot_of(key.as_bytes()));
        // The inverse of `range`: master i serves [i * SLOTS / n, (i + 1) * SLOTS / n).
        let n = self.servers.len();
        (0..n)
            .find(|&i| range(i, n).1 >= slot)
            .unwrap_or(n.saturating_sub(1))
    }

    /// Stops master `i` with `SIGSTOP`: it keeps its connections and answers nothing.
    ///
    /// # Errors
    /// [`HarnessError::NotRunning`] when killed; [`HarnessError::Signal`] when the signal
    /// fails.
    ///
    /// # Panics
    /// When `i >= self.masters()`.
    pub async fn pause_master(&self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].pause().await
    }

    /// Continues a paused master with `SIGCONT`.
    ///
    /// # Errors
    /// As for [`pause_master`](Self::pause_master).
    ///
    /// # Panics
    /// When `i >= self.masters()`.
    pub async fn resume_master(&self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].resume().await
    }

    /// Kills master `i` with `SIGKILL` and reaps it; its slots have no replica to fail
    /// over to, so keys there are unreachable until the cluster is dropped.
    ///
    /// # Errors
    /// [`HarnessError::Io`] when the process cannot be reaped.
    ///
    /// # Panics
    /// When `i >= self.masters()`.
    pub async fn kill_master(&self, i: usize) -> Result<(), HarnessError> {
        self.servers[i].kill().await
    }

    /// Gives each master its slots and introduces every master to the first.
    async fn join(&self) -> Result<(), HarnessError> {
        let n = self.servers.len();
        let first = self.connect(0).await?;
        for (i, server) in self.servers.iter().enumerate() {
            let mut conn = self.connect(i).await?;
            let (from, to) = range(i, n);
            let mut epoch = redis::cmd("CLUSTER");
            // Distinct epochs up front, so the masters need not settle collisions.
            epoch.arg("SET-CONFIG-EPOCH").arg(i + 1);
            run(&mut conn, &epoch, "CLUSTER SET-CONFIG-EPOCH").await?;
            let mut add = redis::cmd("CLUSTER");
            add.arg("ADDSLOTSRANGE").arg(from).arg(to);
            run(&mut conn, &add, "CLUSTER ADDSLOTSRANGE").await?;
            if i > 0 {
                let mut meet = redis::cmd("CLUSTER");
                meet.arg("MEET").arg("127.0.0.1").arg(server.port());
                meet.arg(
                    server
                        .bus_port()
                        .unwrap_or(server.port().wrapping_add(10000)),
                );
                run(&mut first.clone(), &meet, "CLUSTER MEET").await?;
            }
        }
        Ok(())
    }

    /// Waits until every master says `cluster_state:ok`, knows all the masters and the
    /// owner of every slot. (With `cluster-require-full-coverage no` the state is `ok`
    /// before a master has heard who owns the others' slots; it answers "hash slot not
    /// served" for them until then.)
    async fn wait_agreed(&self, deadline: Instant, bound: Duration) -> Result<(), HarnessError> {
        let want = [
            format!("cluster_known_nodes:{}", self.servers.len()),
            format!("cluster_slots_ok:{SLOTS}"),
            "cluster_state:ok".to_owned(),
        ];
        for i in 0..self.servers.len() {
            let mut conn = self.connect(i).await?;
            loop {
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut conn)
                    .await
                    .map_err(|source| HarnessError::Redis {
                        what: "CLUSTER INFO".into(),
                        source,
                    })?;
                if want.iter().all(|w| info.contains(w.as_str())) {
                    break;
                }
                if Instant::now() >= deadline {
                    return Err(HarnessError::Timeout {
                        what: format!("the Redis Cluster's agreement (master {i}: {info:?})"),
                        timeout: bound,
                    });
                }
                tokio::time::sleep(STATE_POLL).await;
            }
        }
        Ok(())
    }

    async fn connect(&self, i: usize) -> Result<redis::aio::MultiplexedConnection, HarnessError> {
        let client =
            redis::Client::open(self.master_url(i)).map_err(|source| HarnessError::Redis {
                what: format!("opening master {i}"),
                source,
            })?;
        client
            .get_multiplexed_async_connection()
            .await
            .map_err(|source| HarnessError::Redis {
                what: format!("connecting to master {i}"),
                source,
            })
    }
}

async fn run(
    conn: &mut redis::aio::MultiplexedConnection,
    cmd: &redis::Cmd,
    what: &str,
) -> Result<(), HarnessError> {
    cmd.query_async::<redis::Value>(conn)
        .await
        .map(drop)
        .map_err(|source| HarnessError::Redis {
            what: what.into(),
            source,
        })
}

/// The slots of master `i` of `n`, first and last included.
fn range(i: usize, n: usize) -> (usize, usize) {
    let slots = usize::from(SLOTS);
    (i * slots / n, (i + 1) * slots / n - 1)
}

/// The hash slot of a Redis key: CRC16 (XMODEM) of its hash tag, or of the whole key
/// when it has none (or an empty one), modulo 16384.
fn slot_of(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            let close = rest.iter().position(|&b| b == b'}')?;
            (close > 0).then(|| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS
}

/// CRC16-CCITT (XMODEM), the checksum Redis Cluster hashes keys with.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in bytes {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_as_redis_computes_them() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(slot_of(b"{user1000}.following"), slot_of(b"user1000"));
        // An empty tag is no tag: the whole key is hashed.
        assert_eq!(slot_of(b"foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
    }

    #[test]
    fn the_masters_share_every_slot() {
        for n in [1, 2, 3, 5] {
            assert_eq!(range(0, n).0, 0);
            assert_eq!(range(n - 1, n).1, usize::from(SLOTS) - 1);
            for i in 1..n {
                assert_eq!(range(i, n).0, range(i - 1, n).1 + 1);
            }
        }
    }
}
