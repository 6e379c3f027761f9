//! The workers and the payments store they share.
//!
//! The store is one Redis (not a lock node) that stands in for the payments database:
//! a status per payment, a ledger of charges, and the counters the summary is made of.
//! Everything a worker learns goes there, so workers in separate processes add up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use tokio_redlock::{Redlock, FENCE_CHECK_LUA};
use tokio_util::sync::CancellationToken;

/// The longest the worker stalled by `--chaos` waits, between reading a payment and
/// recording its charge (like a GC pause or a provider call that hangs), for another
/// worker to take the payment over after its lock ran out. The takeover normally
/// comes right after the 1 s ttl; 10 s covers a moment without quorum under chaos on
/// a loaded machine.
const STALL_MAX: Duration = Duration::from_secs(10);
/// How often the stalled worker looks whether a successor has read the payment.
const STALL_POLL: Duration = Duration::from_millis(20);
/// How long a worker holds `lock:payment:<id>`. The work under it is one status read,
/// a provider call of at most 50 ms and one script: a 1 s ttl leaves a wide margin on a
/// loaded 2-core machine, and is short enough that a node killed by `--chaos` can stay
/// down for longer than any lock it held (Redlock's delayed restart) without slowing
/// the run much.
pub(crate) const LOCK_TTL: Duration = Duration::from_secs(1);
/// Bound on each request to one lock node. Loopback answers in well under a millisecond;
/// 100 ms absorbs scheduling hiccups, and a paused or partitioned node costs no more.
const NODE_TIMEOUT: Duration = Duration::from_millis(100);
/// Bound on each request to the store, so that a dead store stops the run with an error
/// instead of a hang.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// The simulated provider's latency range, in ms: long enough that two workers that
/// read `pending` at nearly the same time both get to charge when nothing stops them.
const PROVIDER_MS: std::ops::RangeInclusive<u64> = 5..=50;
/// Pause after a conflict (random up to this, in ms), so that workers contending for
/// the last payments do not hammer the lock nodes.
const CONFLICT_PAUSE_MS: u64 = 5;
/// Pause after an attempt without quorum or a store error: a fault is in progress and
/// retrying at once would only fail again.
const FAULT_PAUSE: Duration = Duration::from_millis(50);

/// Keys of one run in the store, all under one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
        }
    }
    /// Hash: payment id -> `pending` | `completed`.
    pub(crate) fn status(&self) -> String {
        format!("{}:status", self.prefix)
    }
    /// Sorted set of the pending payment ids, scored by id: the queue.
    pub(crate) fn pending(&self) -> String {
        format!("{}:pending", self.prefix)
    }
    /// List of charges: `<id> <worker> <amount> <token>`.
    pub(crate) fn ledger(&self) -> String {
        format!("{}:ledger", self.prefix)
    }
    /// Hash: payment id -> number of charges recorded.
    pub(crate) fn charges(&self) -> String {
        format!("{}:charges", self.prefix)
    }
    /// Hash: counter name -> value, summed over all workers.
    pub(crate) fn stats(&self) -> String {
        format!("{}:stats", self.prefix)
    }
    /// List of successful lock latencies, in microseconds.
    pub(crate) fn latencies(&self) -> String {
        format!("{}:latency_us", self.prefix)
    }
    /// Hash: payment id -> amount in cents.
    pub(crate) fn amounts(&self) -> String {
        format!("{}:amount", self.prefix)
    }
    /// Set by `--chaos` to make the next worker that reads it stall past its lock's ttl.
    pub(crate) fn stall(&self) -> String {
        format!("{}:stall", self.prefix)
    }
    /// String: the first lock failure other than a conflict, with each node's cause
    /// (set once per run, by whichever worker process fails first).
    pub(crate) fn first_lock_failure(&self) -> String {
        format!("{}:first_lock_failure", self.prefix)
    }
    /// The store's fencing high-water mark for one payment.
    fn fence(&self, id: u64) -> String {
        format!("{}:fence:{id}", self.prefix)
    }
    fn all_fixed(&self) -> [String; 9] {
        [
            self.status(),
            self.pending(),
            self.ledger(),
            self.charges(),
            self.stats(),
            self.latencies(),
            self.amounts(),
            self.stall(),
            self.first_lock_failure(),
        ]
    }
}

/// Records one charge: appends it to the ledger, counts it for the payment, marks the
/// payment completed and takes it off the queue, all in one atomic step.
/// KEYS: fence, status, ledger, charges, pending, stats. ARGV: token, id, worker, amount.
const RECORD_BODY: &str = r"
redis.call('RPUSH', KEYS[3], ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4] .. ' ' .. ARGV[1])
local n = redis.call('HINCRBY', KEYS[4], ARGV[2], 1)
redis.call('HSET', KEYS[2], ARGV[2], 'completed')
redis.call('ZREM', KEYS[5], ARGV[2])
return {1, n}
";

/// Reads a payment's status. KEYS: fence, status, stats. ARGV: token, id.
const READ_BODY: &str = r"
return {1, redis.call('HGET', KEYS[2], ARGV[2]) or ''}
";

/// `body` behind the crate's fencing check: a token lower than the highest one the
/// store has seen for this payment is refused, and the refusal counted in the stats
/// hash (`KEYS[stats_key]`) under `counter`, before anything else runs. The check is
/// wrapped in a function so that its early `return` comes back here.
fn fenced(body: &str, stats_key: usize, counter: &str) -> String {
    format!(
        "local function fence_check()\n{FENCE_CHECK_LUA}\nreturn nil\nend\n\
         local refused = fence_check()\n\
         if refused then redis.call('HINCRBY', KEYS[{stats_key}], '{counter}', 1) return refused end\n\
         {body}"
    )
}

/// Opens a connection to the store with bounded requests.
pub(crate) async fn connect_store(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("store url `{url}`: {e}"))?;
    let cfg = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(STORE_TIMEOUT))
        .set_response_timeout(Some(STORE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&cfg)
        .await
        .map_err(|e| format!("cannot reach the store at {url}: {e}"))
}

/// Clears the run's keys and queues `payments` payments as `pending`.
pub(crate) async fn seed(
    conn: &mut MultiplexedConnection,
    keys: &Keys,
    payments: usize,
) -> redis::RedisResult<()> {
    let mut rng = rand::rng();
    let mut pipe = redis::pipe();
    pipe.atomic().del(&keys.all_fixed()[..]).ignore();
    for id in 1..=payments as u64 {
        pipe.hset(keys.status(), id, "pending").ignore();
        pipe.zadd(keys.pending(), id, id).ignore();
        // Amounts in cents, only there to make the ledger look like one.
        pipe.hset(keys.amounts(), id, rng.random_range(100..=50_000u32))
            .ignore();
        pipe.del(keys.fence(id)).ignore();
    }
    pipe.query_async(conn).await
}

/// What a group of workers is to do; also what a worker process gets on its command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkerSpec {
    /// Lock node URLs.
    pub(crate) nodes: Vec<String>,
    /// The payments store.
    pub(crate) store_url: String,
    /// Key prefix of the run in the store.
    pub(crate) prefix: String,
    /// Take the lock (and fence reads and writes) or not.
    pub(crate) lock: bool,
    /// `--chaos`: one worker may be told (through the store) to stall past its ttl.
    pub(crate) chaos: bool,
    /// How many workers to run.
    pub(crate) workers: usize,
    /// Workers pick among this many payments at the head of the queue: the number of
    /// workers in the whole run, over all processes.
    pub(crate) pick_among: usize,
    /// The process's number, for worker names.
    pub(crate) process: usize,
}

/// One worker's counters, added to the store's when it stops.
#[derive(Debug, Default)]
struct Stats {
    acquisitions: u64,
    conflicts: u64,
    no_quorum: u64,
    lock_errors: u64,
    already_done: u64,
    provider_calls: u64,
    store_errors: u64,
    latencies_us: Vec<u64>,
}

/// What all workers of a process share: the store and its scripts.
struct Shared {
    spec: WorkerSpec,
    keys: Keys,
    store: MultiplexedConnection,
    read: redis::Script,
    record: redis::Script,
    /// Whether a worker of this process has recorded its first lock failure.
    failure_recorded: AtomicBool,
}

/// Runs `spec.workers` workers until the queue is empty or `stop` is cancelled. Each
/// worker finishes the payment it is on before it stops, and releases its lock.
pub(crate) async fn run_workers(spec: WorkerSpec, stop: CancellationToken) -> Result<(), String> {
    let store = connect_store(&spec.store_url).await?;
    // Both steps are fenced with the lock: the read raises the store's mark to this
    // holder's token at once, so a holder whose lock ran out is refused even if it
    // writes before its successor does.
    let (read, record) = if spec.lock {
        (
            redis::Script::new(&fenced(READ_BODY, 3, "refused_reads")),
            redis::Script::new(&fenced(RECORD_BODY, 6, "refused")),
        )
    } else {
        (
            redis::Script::new(READ_BODY),
            redis::Script::new(RECORD_BODY),
        )
    };
    let shared = Arc::new(Shared {
        keys: Keys::new(&spec.prefix),
        spec,
        store,
        read,
        record,
        failure_recorded: AtomicBool::new(false),
    });
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..shared.spec.workers {
        // Each worker gets its own manager, as a separate pod would have.
        let redlock = if shared.spec.lock {
            let r = Redlock::builder()
                .nodes(&shared.spec.nodes)
                .node_timeout(NODE_TIMEOUT)
                .fencing(true)
                .build()
                .map_err(|e| e.to_string())?;
            Some(r)
        } else {
            None
        };
        let name = format!("p{}w{w}", shared.spec.process);
        tasks.spawn(worker(shared.clone(), redlock, name, stop.clone()));
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            result = Err(format!("a worker task failed: {e}"));
        }
    }
    result
}

async fn worker(
    shared: Arc<Shared>,
    redlock: Option<Redlock>,
    name: String,
    stop: CancellationToken,
) {
    let mut stats = Stats::default();
    let mut conn = shared.store.clone();
    // Every worker looks at the same head of the queue and picks one of its first few
    // entries at random, as naive pods polling one table do: this is what makes them
    // collide, and the lock is what keeps the collisions harmless.
    let head = shared.spec.pick_among.max(2) as isize;
    while !stop.is_cancelled() {
        let candidates: Vec<u64> = match redis::cmd("ZRANGE")
            .arg(shared.keys.pending())
            .arg(0)
            .arg(head - 1)
            .query_async(&mut conn)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                stats.store_errors += 1;
                tracing::warn!(worker = %name, error = %e, "reading the queue failed");
                tokio::time::sleep(FAULT_PAUSE).await;
                continue;
            }
        };
        if candidates.is_empty() {
            break;
        }
        let id = candidates[rand::rng().random_range(0..candidates.len())];
        match &redlock {
            Some(redlock) => locked(&shared, &mut conn, redlock, &name, id, &mut stats).await,
            None => unlocked(&shared, &mut conn, &name, id, &mut stats).await,
        }
    }
    if let Err(e) = flush(&shared, &mut conn, &stats).await {
        tracing::warn!(worker = %name, error = %e, "could not record the worker's counters");
    }
}

/// One payment under `lock:payment:<id>`.
async fn locked(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    redlock: &Redlock,
    name: &str,
    id: u64,
    stats: &mut Stats,
) {
    let started = Instant::now();
    // One attempt: a payment someone else holds is their business; this worker moves on.
    let guard = match redlock
        .try_acquire(&format!("lock:payment:{id}"), LOCK_TTL)
        .await
    {
        Ok(guard) => guard,
        Err(e) => {
            // Held by another worker, or split between simultaneous attempts (nobody
            // holds it): either way a short random pause, and the payment comes back.
            if e.is_conflict() || e.is_split_vote() {
                stats.conflicts += 1;
                let ms = rand::rng().random_range(0..=CONFLICT_PAUSE_MS);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            } else {
                if e.is_no_quorum() {
                    stats.no_quorum += 1;
                } else {
                    stats.lock_errors += 1;
                }
                tracing::debug!(worker = %name, error = %e, "no lock");
                // Counted, the failures say nothing of their cause: an unreachable node
                // and a wrong password look alike. The first one is kept, with each
                // node's cause, for the coordinator to show.
                if !shared.failure_recorded.swap(true, Ordering::Relaxed) {
                    record_first_failure(shared, conn, &e).await;
                }
                tokio::time::sleep(FAULT_PAUSE).await;
            }
            return;
        }
    };
    stats.acquisitions += 1;
    stats
        .latencies_us
        .push(started.elapsed().as_micros() as u64);
    let Some(token) = guard.fencing_token() else {
        // Cannot happen with `.fencing(true)`; refusing to charge is the safe answer.
        stats.lock_errors += 1;
        return;
    };
    // Re-read under the lock: whoever held it before may have completed the payment.
    charge_if_pending(shared, conn, name, id, token, stats).await;
    // A failed release is not a double charge: the lock expires with its ttl.
    if let Err(e) = guard.release().await {
        tracing::debug!(worker = %name, error = %e, "release failed");
    }
}

/// Stores `e` (once per run: the first process to fail wins) as its message followed by
/// one indented line per node cause.
async fn record_first_failure(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    e: &tokio_redlock::Error,
) {
    let mut text = e.to_string();
    for cause in e.node_errors() {
        text.push_str(&format!("\n  {cause}"));
    }
    let set: redis::RedisResult<()> = redis::cmd("SET")
        .arg(shared.keys.first_lock_failure())
        .arg(text)
        .arg("NX")
        .query_async(conn)
        .await;
    if let Err(e) = set {
        tracing::warn!(error = %e, "could not record the first lock failure");
    }
}

/// One payment with no lock: the same steps, nothing to stop a second worker.
async fn unlocked(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    name: &str,
    id: u64,
    stats: &mut Stats,
) {
    // Token 0 is never looked at: the unfenced script has no check.
    charge_if_pending(shared, conn, name, id, 0, stats).await;
}

/// Reads the status, calls the provider and records the charge if still pending.
async fn charge_if_pending(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    name: &str,
    id: u64,
    token: u64,
    stats: &mut Stats,
) {
    let keys = &shared.keys;
    let status: redis::RedisResult<(u64, String)> = shared
        .read
        .key(keys.fence(id))
        .key(keys.status())
        .key(keys.stats())
        .arg(token)
        .arg(id)
        .invoke_async(conn)
        .await;
    match status.as_ref().map(|(ok, s)| (*ok, s.as_str())) {
        Ok((1, "pending")) => {}
        Ok((1, _)) => {
            stats.already_done += 1;
            return;
        }
        Ok(_) => {
            // A successor already read this payment with a newer token; counted.
            tracing::info!(worker = %name, id, token, "stale read refused");
            return;
        }
        Err(e) => {
            stats.store_errors += 1;
            tracing::warn!(worker = %name, error = %e, "reading a status failed");
            return;
        }
    }
    if shared.spec.chaos && shared.spec.lock && take_stall(shared, conn).await {
        tracing::info!(worker = %name, id, "stalling past the lock's ttl (chaos)");
        stall_until_taken_over(shared, conn, id, token).await;
    }
    provider(stats).await;
    let amount: redis::RedisResult<u64> = redis::cmd("HGET")
        .arg(keys.amounts())
        .arg(id)
        .query_async(conn)
        .await;
    let written: redis::RedisResult<(u64, u64)> = shared
        .record
        .key(keys.fence(id))
        .key(keys.status())
        .key(keys.ledger())
        .key(keys.charges())
        .key(keys.pending())
        .key(keys.stats())
        .arg(token)
        .arg(id)
        .arg(name)
        .arg(amount.unwrap_or(0))
        .invoke_async(conn)
        .await;
    match written {
        Ok((1, _)) => {}
        Ok((_, mark)) => {
            // Counted by the store itself; nothing was written.
            tracing::info!(worker = %name, id, token, mark, "stale write refused");
        }
        Err(e) => {
            stats.store_errors += 1;
            tracing::warn!(worker = %name, error = %e, "recording a charge failed");
        }
    }
}

/// Whether this worker is the one `--chaos` asked to stall (at most one is).
async fn take_stall(shared: &Shared, conn: &mut MultiplexedConnection) -> bool {
    let taken: redis::RedisResult<Option<String>> = redis::cmd("GETDEL")
        .arg(shared.keys.stall())
        .query_async(conn)
        .await;
    matches!(taken, Ok(Some(_)))
}

/// Waits until the store has seen a newer token for payment `id` than ours, that is,
/// until a successor read it under a newer lock (or [`STALL_MAX`] passed). Waiting for
/// that event rather than a fixed time makes the stale write that follows certain to
/// be the one the store refuses.
async fn stall_until_taken_over(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    id: u64,
    token: u64,
) {
    let deadline = Instant::now() + STALL_MAX;
    while Instant::now() < deadline {
        tokio::time::sleep(STALL_POLL).await;
        let mark: redis::RedisResult<Option<u64>> = redis::cmd("GET")
            .arg(shared.keys.fence(id))
            .query_async(conn)
            .await;
        if matches!(mark, Ok(Some(m)) if m > token) {
            return;
        }
    }
}

/// The simulated payment provider: only its latency matters here. The charge itself
/// takes effect when it is recorded in the ledger (as with a provider that is told the
/// fencing token), so the ledger is where double charges are counted.
async fn provider(stats: &mut Stats) {
    stats.provider_calls += 1;
    let ms = rand::rng().random_range(PROVIDER_MS);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Adds a worker's counters to the run's.
async fn flush(
    shared: &Shared,
    conn: &mut MultiplexedConnection,
    stats: &Stats,
) -> redis::RedisResult<()> {
    let stats_key = shared.keys.stats();
    let mut pipe = redis::pipe();
    for (field, value) in [
        ("acquisitions", stats.acquisitions),
        ("conflicts", stats.conflicts),
        ("no_quorum", stats.no_quorum),
        ("lock_errors", stats.lock_errors),
        ("already_done", stats.already_done),
        ("provider_calls", stats.provider_calls),
        ("store_errors", stats.store_errors),
    ] {
        pipe.hincr(&stats_key, field, value).ignore();
    }
    if !stats.latencies_us.is_empty() {
        pipe.rpush(shared.keys.latencies(), &stats.latencies_us)
            .ignore();
    }
    pipe.query_async(conn).await
}
