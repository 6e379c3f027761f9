//! A whole Redis Cluster as one vote (feature `cluster`): its connection, and the keys
//! its requests are rewritten to (`keys.rs`).
//!
//! Redlock needs independent votes; a Redis Cluster is one system (one failover
//! protocol, one operator), so it counts once, however many masters it has. Each lock
//! key lives on its slot's master, and every script keeps all its keys in that slot
//! (see [`keys`]). The node layer (`node.rs`) treats a cluster vote like any node: one
//! shared connection made lazily, each request bounded by the node timeout, the same
//! per-value ordering of releases after setters. What differs is here: the key
//! rewrite, the routing of checks to every master, and the script reload on the one
//! master that answered NOSCRIPT.

use std::fmt;
use std::time::Duration;

use futures::FutureExt;
use redis::cluster::ClusterClient;
pub(crate) use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Arg, Client, Cmd, ErrorKind, RedisError, RedisFuture, RedisResult, ServerErrorKind};
use redis::{Pipeline, Value};

use crate::node::request::Request;

pub(crate) mod keys;

pub(crate) use keys::KeyMap;

/// Retries of one request inside the cluster client (a MOVED or ASK after a slot moved,
/// a connection re-made to a master): a few, because the node timeout bounds the whole
/// request anyway and a master that is down should fail its vote within it.
const CLIENT_RETRIES: u32 = 2;
/// The cluster client's waits between those retries, in ms: short, for the same reason.
const RETRY_WAIT_MS: (u64, u64) = (5, 20);

/// One Redis Cluster standing as one vote.
pub(crate) struct ClusterVote {
    client: ClusterClient,
    /// A plain client per seed, for the pub/sub connection of wake-ups: a classic
    /// `PUBLISH` reaches every node of the cluster, so any one of them will do.
    seeds: Vec<Client>,
    keys: KeyMap,
}

impl fmt::Debug for ClusterVote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not the clients: their connection info would print the password.
        f.debug_struct("ClusterVote")
            .field("seeds", &self.seeds.len())
            .finish_non_exhaustive()
    }
}

impl ClusterVote {
    /// A vote from the seed nodes' clients (credentials are the first seed's, TLS too),
    /// with `configure` adding what the manager's builder has (certificates).
    pub(crate) fn new(
        seeds: Vec<Client>,
        fence_suffix: &str,
        connect_timeout: Duration,
        configure: impl FnOnce(ClusterClientBuilder) -> ClusterClientBuilder,
    ) -> RedisResult<Self> {
        let infos = seeds.iter().map(|c| c.get_connection_info().clone());
        let builder = ClusterClientBuilder::new(infos)
            .connection_timeout(connect_timeout)
            .retries(CLIENT_RETRIES)
            .min_retry_wait(RETRY_WAIT_MS.0)
            .max_retry_wait(RETRY_WAIT_MS.1);
        let client = configure(builder).build()?;
        Ok(Self {
            client,
            seeds,
            keys: KeyMap::new(fence_suffix),
        })
    }

    /// `cluster(host:port,host:port)`: the seeds, never the credentials.
    pub(crate) fn endpoint(&self) -> String {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|c| c.get_connection_info().addr().to_string())
            .collect();
        format!("cluster({})", seeds.join(","))
    }

    pub(crate) fn seeds(&self) -> &[Client] {
        &self.seeds
    }

    pub(crate) async fn connect(&self) -> RedisResult<ClusterConnection> {
        self.client.get_async_connection().await
    }

    /// Runs `request` with its keys moved to their slots (see [`keys`]).
    pub(crate) async fn run(
        &self,
        conn: &mut ClusterConnection,
        request: Request<'_>,
    ) -> RedisResult<Value> {
        match request {
            Request::Cmd(cmd) if is_check(cmd) => {
                // INFO and CONFIG GET describe one server: ask every master, and let
                // the health check judge each (`{address: reply}`).
                let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                conn.route_command(cmd.clone(), all).await
            }
            Request::Cmd(cmd) => self.keys.map_cmd(cmd).query_async(conn).await,
            // Never a plain `SET NX` here: the cluster client re-sends a request by itself
            // after a broken connection or a redirect, and a `SET NX` whose first try had
            // landed would then answer "not set" for this owner's own value, a refusal
            // that nothing undoes. The script that replaces it counts its own value as set.
            Request::Set(set) => {
                let call = crate::scripts::acquire_one_for(set);
                self.run_script(conn, &call).await
            }
            // A cluster vote has no restart quarantine (its failover is its own), so an
            // extension heals there.
            Request::Script(call) | Request::Heal { heal: call, .. } => {
                self.run_script(conn, call).await
            }
        }
    }

    /// Runs `call`, loading its script where a master answers NOSCRIPT.
    async fn run_script(
        &self,
        conn: &mut ClusterConnection,
        call: &crate::scripts::Call,
    ) -> RedisResult<Value> {
        let cmd = self.keys.map_cmd(&call.cmd);
        match cmd.query_async::<Value>(conn).await {
            // NOSCRIPT (a master restarted, or failed over): load the script on
            // the master that said so, not on every node (`SCRIPT LOAD`'s
            // default route): the others have it or will ask, and a master
            // that is down or paused is not waited for.
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                let Some(route) = script_route(&cmd) else {
                    return Err(e);
                };
                call.script.load_async(&mut Pinned { conn, route }).await?;
                cmd.query_async(conn).await
            }
            other => other,
        }
    }
}

/// Whether `cmd` is one of the health checks' questions about a server.
fn is_check(cmd: &Cmd) -> bool {
    let name = cmd.args_iter().next();
    matches!(name, Some(Arg::Simple(n)) if n.eq_ignore_ascii_case(b"INFO") || n.eq_ignore_ascii_case(b"CONFIG"))
}

/// The master of the first key of an `EVALSHA`, where its script must be loaded.
fn script_route(cmd: &Cmd) -> Option<RoutingInfo> {
    let key = match cmd.args_iter().nth(3)? {
        Arg::Simple(key) => key,
        _ => return None,
    };
    let route = Route::with_key(key, SlotAddr::Master);
    Some(RoutingInfo::SingleNode(
        SingleNodeRoutingInfo::SpecificNode(route),
    ))
}

/// A cluster connection that sends every command to one route: `Script::load_async`
/// through it loads a script on one master.
struct Pinned<'c> {
    conn: &'c mut ClusterConnection,
    route: RoutingInfo,
}

impl redis::aio::ConnectionLike for Pinned<'_> {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.conn
            .route_command(cmd.clone(), self.route.clone())
            .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        _pipeline: &'a Pipeline,
        _offset: usize,
        _count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        // Never called: only `SCRIPT LOAD` goes through here.
        async {
            Err(RedisError::from((
                ErrorKind::Client,
                "pipelines are not routed to one master",
            )))
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Checks that the lock keys of `(resource, key)` share one slot on a cluster vote, as
/// one atomic script needs: [`Error::Config`] names two that do not.
///
/// Why a refusal rather than one request per slot: the all-or-nothing of a
/// multi-resource acquire is one script on one server; split over masters, a vote
/// would need its own undo between slots and a fencing token agreed across them, and
/// a failure between the parts would leave the vote half-set. Redis Cluster's own rule
/// for multi-key commands is the same (CROSSSLOT), and its answer, a shared hash tag,
/// costs the application one pair of braces (docs/design.md).
pub(crate) fn one_slot<'r>(
    mut keys: impl Iterator<Item = (&'r str, String)>,
) -> Result<(), crate::Error> {
    let Some((first, key)) = keys.next() else {
        return Ok(());
    };
    let slot = keys::slot_of(&key);
    for (other, key) in keys {
        if keys::slot_of(&key) != slot {
            return Err(crate::Error::Config(format!(
                "resources `{first}` and `{other}` hash to different slots of a Redis Cluster \
                 vote, and one acquire_many must set all its keys in one atomic script: give \
                 them one hash tag (such as `{{acct}}:1` and `{{acct}}:2`), or lock them one at \
                 a time"
            )));
        }
    }
    Ok(())
}

/// The per-master replies of a check the cluster vote routed to every master
/// (`{address: reply}`), or `None` for a reply of another shape (a standalone node's).
pub(crate) fn per_master(reply: &Value) -> Option<Vec<(String, &Value)>> {
    let Value::Map(pairs) = reply else {
        return None;
    };
    Some(
        pairs
            .iter()
            .map(|(addr, value)| {
                let addr = match addr {
                    Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                    Value::SimpleString(s) => s.clone(),
                    other => format!("{other:?}"),
                };
                (addr, value)
            })
            .collect(),
    )
}
