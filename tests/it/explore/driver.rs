//! Runs a [`Schedule`] against a cluster: client tasks doing the drawn operations, the
//! drawn faults, the sampler, and after each episode the ghost check.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_redlock::harness::checker;
use tokio_redlock::harness::history::{instant_ns, now_ns, EventKind, History, Recorder};
use tokio_redlock::harness::Cluster;
use tokio_redlock::{Error, KeptGuard, LockGuard, Redlock};
use tokio_util::sync::CancellationToken;

use super::oracle::{Belief, Direct, HoldBar, Kind, Oracle, Violation};
use super::schedule::{
    ms, Episode, ExtendTtl, FaultKind, How, MgrSpec, Op, Schedule, Step, EPISODE, RESOURCES,
};

/// Allowance on top of a call's documented bound, for a loaded 2-core machine.
const CALL_SLACK: Duration = Duration::from_millis(1_500);
/// A client still busy this long after its episode's end is reported stuck.
const STUCK_AFTER: Duration = Duration::from_secs(30);
/// Extra wait after the longest node timeout before the ghost check (the "+ slack").
const GHOST_SLACK: Duration = Duration::from_millis(200);
/// Longest a request can sit in a proxy (the largest drawn latency or spike), plus margin.
const MAX_PROXY_HOLD: Duration = Duration::from_millis(600);
/// `STALE_REROUNDS` in the crate: immediate re-rounds of a fenced attempt.
const FENCED_ROUNDS: u32 = 4;

/// The least node timeout of a manager the tail acquires with.
const TAIL_MIN_NODE_TIMEOUT_MS: u64 = 20;

/// How a holding released in the fault-free tail ends; the ghost check knows it.
const TAIL_RELEASED: &str = "released in the tail";

/// A fault as the timeline draws it.
#[derive(Debug, Clone)]
pub struct FaultBar {
    pub node: usize,
    pub kind: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// What a run did and found.
pub struct Outcome {
    pub acquisitions: u64,
    pub faults: u64,
    pub violations: Vec<Violation>,
    /// Per violation, the episode it was found in.
    pub violation_episodes: Vec<usize>,
    pub bars: Vec<HoldBar>,
    pub fault_bars: Vec<FaultBar>,
    pub history: History,
    pub start_ns: u64,
    pub end_ns: u64,
    pub samples: u64,
}

/// Distinct key names per run, so nothing of an earlier run (a background task) interferes.
static RUN: AtomicU64 = AtomicU64::new(0);

fn build(urls: &[String], s: &MgrSpec) -> Option<Redlock> {
    Redlock::builder()
        .nodes(urls.iter().cloned())
        .fencing(s.fencing)
        .retry_count(s.retry_count)
        .retry_delay(ms(s.retry_delay_ms))
        .retry_jitter(ms(s.jitter_ms))
        .drift_factor(s.drift)
        .node_timeout(ms(s.node_timeout_ms))
        .wake_on_release(s.wake)
        .build()
        .ok()
}

fn round_bound(s: &MgrSpec) -> Duration {
    ms(s.node_timeout_ms)
        .saturating_mul(3)
        .saturating_add(Duration::from_millis(50))
}

/// The documented bound of an acquisition with `retries`: each attempt costs at most its
/// requests and its undo (node timeout each) and the wake-up bookkeeping, each pause the
/// delay plus the jitter. `None` when that is beyond any test's patience.
fn acquire_bound(s: &MgrSpec, retries: u32) -> Option<Duration> {
    let rounds = (retries + 1) * if s.fencing { FENCED_ROUNDS } else { 1 };
    let pauses = ms(s.retry_delay_ms)
        .saturating_add(ms(s.jitter_ms))
        .saturating_mul(retries);
    let b = round_bound(s)
        .saturating_mul(rounds)
        .saturating_add(pauses)
        .saturating_add(Duration::from_millis(20))
        .saturating_add(CALL_SLACK);
    (b < Duration::from_secs(60)).then_some(b)
}

enum Holding {
    Guard {
        guard: LockGuard,
        id: u64,
        mgr: usize,
        was_invalid: bool,
    },
    Kept {
        kept: KeptGuard,
        id: u64,
        mgr: usize,
    },
}

struct Client {
    id: u32,
    mgrs: Arc<[Option<Redlock>; 2]>,
    specs: [MgrSpec; 2],
    oracle: Arc<Oracle>,
    rec: Recorder,
    acquisitions: Arc<AtomicU64>,
    prefix: String,
    op: u64,
    holding: Option<Holding>,
    /// In the fault-free tail: releases then must remove the key everywhere.
    tail: bool,
}

/// Sends `value` to a plain thread (no tokio runtime there) and gets `f(value)` back.
async fn on_plain_thread<T: Send + 'static, U: Send + 'static>(
    value: T,
    f: impl FnOnce(T) -> U + Send + 'static,
) -> Option<U> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f(value));
    });
    rx.await.ok()
}

async fn within<F: std::future::Future>(budget: Option<u64>, f: F) -> Option<F::Output> {
    match budget {
        Some(b) => tokio::time::timeout(Duration::from_millis(b), f).await.ok(),
        None => Some(f.await),
    }
}

impl Client {
    fn res(&self, r: u8) -> String {
        format!("{}r{}", self.prefix, r % RESOURCES)
    }

    /// How a release ends a holding: in the tail, with a lock still held and a manager
    /// whose node timeout leaves room to send the release, it must remove every key.
    fn release_label(&self, mgr: usize, held: bool) -> &'static str {
        let sane = self.specs[mgr].node_timeout_ms >= TAIL_MIN_NODE_TIMEOUT_MS;
        if self.tail && held && sane {
            TAIL_RELEASED
        } else {
            "released"
        }
    }

    fn flag(&self, kind: Kind, what: String) {
        self.oracle.flag(kind, Some(self.id), what);
    }

    fn check_bound(&self, what: &str, took: Duration, bound: Option<Duration>) {
        if let Some(b) = bound {
            if took > b {
                self.flag(
                    Kind::CallBound,
                    format!("op {}: {what} took {took:?}, bound {b:?}", self.op),
                );
            }
        }
    }

    fn check_attempts(&self, what: &str, made: Option<u32>, retries: u32) {
        if let Some(a) = made {
            if a == 0 || a > retries + 1 {
                self.flag(
                    Kind::Attempts,
                    format!(
                        "op {}: {what} reports {a} attempt(s) with retry_count {retries}",
                        self.op
                    ),
                );
            }
        }
    }

    async fn run(&mut self, steps: &[Step], deadline: Option<Instant>) {
        for step in steps {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            if step.think_ms > 0 {
                tokio::time::sleep(Duration::from_millis(step.think_ms)).await;
            }
            self.op += 1;
            let before = self.holding.as_ref().map(holding_id);
            let result = self.step(&step.op).await;
            if let Some(id) = before {
                self.oracle
                    .note(id, format!("op {} {}{result}", self.op, step.op));
            }
            if let Some(Holding::Guard {
                guard,
                was_invalid,
                id,
                ..
            }) = &mut self.holding
            {
                if *was_invalid && guard.is_valid() {
                    let what =
                        format!("op {}: guard {id} is valid again after it was not", self.op);
                    self.oracle.flag(Kind::Revived, Some(self.id), what);
                }
                *was_invalid |= !guard.is_valid();
            }
        }
    }

    /// Does one operation; says how it went when that matters for a holding's story.
    async fn step(&mut self, op: &Op) -> String {
        match op.clone() {
            Op::Acquire {
                mgr,
                res,
                how,
                ttl_ms,
                budget_ms,
            } => self.acquire(mgr, res, how, ttl_ms, budget_ms).await,
            Op::Extend { ttl, budget_ms } => return self.extend(ttl, budget_ms).await,
            Op::Release { budget_ms } => match self.holding.take() {
                Some(Holding::Guard { guard, id, mgr, .. }) => {
                    self.oracle.close(id, self.release_label(mgr, true));
                    let started = Instant::now();
                    let done = within(budget_ms, guard.release()).await;
                    if done.is_some() {
                        let b = round_bound(&self.specs[mgr]).saturating_add(CALL_SLACK);
                        self.check_bound("release", started.elapsed(), Some(b));
                    }
                }
                Some(Holding::Kept { kept, id, mgr }) => {
                    let held = kept.lease().is_held();
                    self.oracle.close(id, self.release_label(mgr, held));
                    let _ = within(budget_ms, kept.release()).await;
                }
                None => {}
            },
            Op::Drop => {
                if let Some(h) = self.holding.take() {
                    self.oracle.close(holding_id(&h), "dropped");
                    drop(h);
                }
            }
            Op::DropOnThread => {
                if let Some(h) = self.holding.take() {
                    self.oracle.close(holding_id(&h), "dropped on a thread");
                    on_plain_thread(h, drop).await;
                }
            }
            Op::KeepAlive { opts, on_thread } => {
                if let Some(Holding::Guard { guard, id, mgr, .. }) = self.holding.take() {
                    self.oracle.set(id, Belief::InFlight);
                    let options = opts.options();
                    let kept = if on_thread {
                        on_plain_thread(guard, move |g| g.keep_alive_with(options)).await
                    } else {
                        Some(guard.keep_alive_with(options))
                    };
                    if let Some(kept) = kept {
                        self.oracle.set(id, Belief::Lease(kept.lease().clone()));
                        self.holding = Some(Holding::Kept { kept, id, mgr });
                    }
                }
            }
            Op::Hold { ms } => tokio::time::sleep(Duration::from_millis(ms)).await,
            Op::WithLock {
                mgr,
                res,
                ttl_ms,
                opts,
                work_ms,
                budget_ms,
            } => {
                if self.holding.is_some() {
                    return String::new();
                }
                self.with_lock(mgr, res, ttl_ms, opts, work_ms, budget_ms)
                    .await;
            }
        }
        String::new()
    }

    async fn acquire(
        &mut self,
        mgr: usize,
        res: u8,
        how: How,
        ttl_ms: u64,
        budget_ms: Option<u64>,
    ) {
        if self.holding.is_some() {
            return;
        }
        let mgrs = self.mgrs.clone();
        let Some(redlock) = &mgrs[mgr] else { return };
        let spec = &self.specs[mgr];
        let names = match how {
            How::Many => vec![self.res(res), self.res(res + 1)],
            _ => vec![self.res(res)],
        };
        let ttl = ms(ttl_ms);
        let label = names.join("+");
        let retries = if how == How::TryAcquire {
            0
        } else {
            spec.retry_count
        };
        self.rec.record(self.id, self.op, &label, EventKind::Start);
        let started = Instant::now();
        let call = async {
            match how {
                How::Acquire => redlock.acquire(&names[0], ttl).await,
                How::TryAcquire => redlock.try_acquire(&names[0], ttl).await,
                How::Many => redlock.acquire_many(&names, ttl).await,
            }
        };
        let Some(result) = within(budget_ms, call).await else {
            self.rec.record(
                self.id,
                self.op,
                &label,
                EventKind::Failed {
                    reason: "cancelled".into(),
                },
            );
            return;
        };
        let took = started.elapsed();
        self.check_bound(
            &format!("{how:?} of {label}"),
            took,
            acquire_bound(spec, retries),
        );
        match result {
            Ok(guard) => {
                self.check_attempts("the guard", Some(guard.attempts()), retries);
                self.acquisitions.fetch_add(1, Ordering::Relaxed);
                self.rec.record(
                    self.id,
                    self.op,
                    &label,
                    EventKind::Acquired {
                        valid_until_ns: instant_ns(guard.valid_until()),
                        token: guard.fencing_token(),
                    },
                );
                let keys = names.iter().map(|n| redlock.key_of(n)).collect();
                let id = self.oracle.open(
                    self.id,
                    self.op,
                    label,
                    spec.fencing,
                    keys,
                    Belief::Guard(guard.valid_until()),
                );
                let story = format!(
                    "op {} m{mgr}.{how:?}(ttl {ttl:?}) with {spec} -> valid for {:?} after {} attempt(s) in {took:?}",
                    self.op,
                    guard.remaining_validity(),
                    guard.attempts()
                );
                self.oracle.note(id, story);
                let was_invalid = !guard.is_valid();
                self.holding = Some(Holding::Guard {
                    guard,
                    id,
                    mgr,
                    was_invalid,
                });
            }
            Err(e) => {
                self.check_attempts(&format!("error `{e}`"), e.attempts(), retries);
                let reason = e.to_string().replace('\n', " ");
                self.rec
                    .record(self.id, self.op, &label, EventKind::Failed { reason });
            }
        }
    }

    async fn extend(&mut self, ttl: ExtendTtl, budget_ms: Option<u64>) -> String {
        let op = self.op;
        let Some(Holding::Guard {
            guard,
            id,
            mgr,
            was_invalid,
        }) = &mut self.holding
        else {
            return String::new();
        };
        let left_before = guard.remaining_validity();
        let ttl = match ttl {
            ExtendTtl::OfLeft(x) => guard.remaining_validity().mul_f64(x),
            ExtendTtl::Ms(v) => ms(v),
        };
        *was_invalid |= !guard.is_valid();
        self.oracle.set(*id, Belief::InFlight);
        let started = Instant::now();
        let result = within(budget_ms, guard.extend(ttl)).await;
        let took = started.elapsed();
        self.oracle.set(*id, Belief::Guard(guard.valid_until()));
        let label = guard.resources().join("+");
        self.rec.record(
            self.id,
            op,
            &label,
            EventKind::Extended {
                valid_until_ns: instant_ns(guard.valid_until()),
            },
        );
        if let Some(result) = &result {
            let b = round_bound(&self.specs[*mgr]).saturating_add(CALL_SLACK);
            if took > b {
                let what = format!("op {op}: extend({ttl:?}) took {took:?}, bound {b:?}");
                self.oracle.flag(Kind::CallBound, Some(self.id), what);
            }
            if let Err(e @ Error::LockLost { .. }) = result {
                if guard.is_valid() {
                    let what =
                        format!("op {op}: extend({ttl:?}) said `{e}` and the guard is still valid");
                    self.oracle.flag(Kind::Revived, Some(self.id), what);
                }
            }
        }
        let outcome = match &result {
            None => "cancelled".to_owned(),
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => format!("`{e}`"),
        };
        format!(
            " = extend({ttl:?}) with {left_before:?} left -> {outcome} in {took:?}, now {:?} left",
            guard.remaining_validity()
        )
    }

    async fn with_lock(
        &mut self,
        mgr: usize,
        res: u8,
        ttl_ms: u64,
        opts: super::schedule::Opts,
        work_ms: u64,
        budget_ms: Option<u64>,
    ) {
        let mgrs = self.mgrs.clone();
        let Some(redlock) = &mgrs[mgr] else { return };
        let spec = &self.specs[mgr];
        let name = self.res(res);
        let key = redlock.key_of(&name);
        let (client, op, oracle, rec) = (self.id, self.op, self.oracle.clone(), self.rec.clone());
        let acquisitions = self.acquisitions.clone();
        let fenced = spec.fencing;
        rec.record(client, op, &name, EventKind::Start);
        let started = Instant::now();
        let label = name.clone();
        let ttl = ms(ttl_ms);
        let call = redlock.with_lock_opts(&name, ms(ttl_ms), opts.options(), move |lease| async move {
            acquisitions.fetch_add(1, Ordering::Relaxed);
            rec.record(client, op, &label, EventKind::Acquired { valid_until_ns: instant_ns(lease.valid_until()), token: lease.fencing_token() });
            let id = oracle.open(client, op, label, fenced, vec![key], Belief::Lease(lease.clone()));
            oracle.note(id, format!("op {op} with_lock(ttl {ttl:?}, {opts}, work {work_ms}ms) -> valid for {:?}", lease.remaining_validity()));
            let _close = CloseOnDrop { oracle, id };
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        });
        let result = within(budget_ms, call).await;
        if let Some(result) = result {
            let b = acquire_bound(spec, spec.retry_count)
                .map(|b| b + Duration::from_millis(work_ms) + round_bound(spec));
            self.check_bound("with_lock", started.elapsed(), b);
            if let Err(e) = result {
                self.check_attempts(
                    &format!("with_lock error `{e}`"),
                    e.attempts(),
                    spec.retry_count,
                );
            }
        }
    }
}

struct CloseOnDrop {
    oracle: Arc<Oracle>,
    id: u64,
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        self.oracle.close(self.id, "with_lock ended");
    }
}

fn holding_id(h: &Holding) -> u64 {
    match h {
        Holding::Guard { id, .. } | Holding::Kept { id, .. } => *id,
    }
}

/// Every key on every node, with its value (strings) or its type.
async fn snapshot(conns: &mut [Direct]) -> BTreeSet<(usize, String, String)> {
    let mut out = BTreeSet::new();
    for (i, d) in conns.iter_mut().enumerate() {
        let Some(mut con) = d.connection().await else {
            continue;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("*")
            .query_async(&mut con)
            .await
            .unwrap_or_default();
        for k in keys {
            let t: String = redis::cmd("TYPE")
                .arg(&k)
                .query_async(&mut con)
                .await
                .unwrap_or_default();
            let v = if t == "string" {
                redis::cmd("GET")
                    .arg(&k)
                    .query_async::<Option<String>>(&mut con)
                    .await
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            } else {
                format!("<{t}>")
            };
            out.insert((i, k, v));
        }
    }
    out
}

async fn run_fault(
    cluster: &Cluster,
    oracle: &Oracle,
    node: usize,
    kind: FaultKind,
    dur: Duration,
) {
    let n = cluster.node(node);
    let stops = matches!(kind, FaultKind::Pause | FaultKind::KillRestart);
    if stops {
        oracle.disturb(node, true);
    }
    let result = match kind {
        FaultKind::Pause => {
            async {
                n.pause().await?;
                tokio::time::sleep(dur).await;
                n.resume().await
            }
            .await
        }
        FaultKind::KillRestart => {
            async {
                n.kill().await?;
                tokio::time::sleep(dur).await;
                n.restart().await
            }
            .await
        }
        FaultKind::Partition | FaultKind::DropRequests | FaultKind::DropReplies => {
            async {
                match kind {
                    FaultKind::Partition => n.partition().await?,
                    FaultKind::DropRequests => n.drop_requests().await?,
                    _ => n.drop_replies().await?,
                }
                tokio::time::sleep(dur).await;
                n.heal().await
            }
            .await
        }
        FaultKind::Resets(k) => {
            async {
                n.reset_after_requests(k).await?;
                tokio::time::sleep(dur).await;
                n.stop_resets().await
            }
            .await
        }
        FaultKind::Flap => n.flap(dur).await,
        FaultKind::Latency(l) => {
            async {
                n.set_latency(Duration::from_millis(l)).await?;
                tokio::time::sleep(dur).await;
                n.set_latency(Duration::ZERO).await
            }
            .await
        }
        FaultKind::Spike(l) => n.latency_spike(Duration::from_millis(l), dur).await,
        FaultKind::ScriptFlush => {
            let mut d = Direct::new(n.direct_url());
            if let Some(mut con) = d.connection().await {
                let _: redis::RedisResult<()> = redis::cmd("SCRIPT")
                    .arg("FLUSH")
                    .query_async(&mut con)
                    .await;
            }
            Ok(())
        }
    };
    if stops {
        oracle.disturb(node, false);
    }
    if let Err(e) = result {
        eprintln!("explore: fault {kind} on node {node} failed: {e}");
    }
}

/// Runs `sched` on `cluster` (which must be healthy and empty).
pub async fn run(cluster: Arc<Cluster>, sched: &Schedule) -> Outcome {
    let run_id = RUN.fetch_add(1, Ordering::Relaxed);
    super::oracle::install_panic_hook();
    super::oracle::take_panics();
    let urls = cluster.urls();
    let max_nt = sched
        .managers
        .iter()
        .flat_map(|m| m.iter())
        .map(|s| ms(s.node_timeout_ms))
        .max()
        .unwrap_or_default();
    let oracle = Oracle::new(cluster.len(), max_nt + MAX_PROXY_HOLD + GHOST_SLACK);
    let rec = Recorder::new();
    let acquisitions = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let sampler = tokio::spawn(oracle.clone().sample(cluster.direct_urls(), stop.clone()));
    let mut direct: Vec<Direct> = cluster.direct_urls().into_iter().map(Direct::new).collect();
    let mut managers: Vec<Arc<[Option<Redlock>; 2]>> = Vec::new();
    for (c, [a, b]) in sched.managers.iter().enumerate() {
        let shared = c > 0 && sched.shared.get(c).copied().unwrap_or(false);
        let own = || Arc::new([build(&urls, a), build(&urls, b)]);
        managers.push(if shared { managers[0].clone() } else { own() });
    }
    let start_ns = now_ns();
    let mut fault_bars = Vec::new();
    let mut faults = 0;
    let mut violation_episodes = Vec::new();
    let mut ops: Vec<u64> = vec![0; sched.managers.len()];
    for (e, episode) in sched.episodes.iter().enumerate() {
        let prefix = format!("x{run_id}e{e}");
        let make = |c: usize, op: u64, holding: Option<Holding>, tail: bool| Client {
            id: c as u32,
            mgrs: managers[c].clone(),
            specs: sched.managers[c].clone(),
            oracle: oracle.clone(),
            rec: rec.clone(),
            acquisitions: acquisitions.clone(),
            prefix: prefix.clone(),
            op,
            holding,
            tail,
        };
        let before = oracle.violations().len();
        let (holdings, bars) = run_episode(&cluster, episode, &make, &mut ops, &oracle).await;
        faults += episode.faults.len() as u64;
        fault_bars.extend(bars);
        // Heal everything, let the last requests land, then see what the nodes hold.
        if let Err(e) = cluster.clear_faults().await {
            eprintln!("explore: clearing faults failed: {e}");
        }
        let _ = cluster.wait_healthy(Duration::from_secs(10)).await;
        tokio::time::sleep(max_nt + MAX_PROXY_HOLD).await;
        let before_tail = snapshot(&mut direct).await;
        // The tail: everyone releases, then takes and releases a contended lock twice.
        let mut tail = JoinSet::new();
        for (c, holding) in holdings.into_iter().enumerate() {
            let mut client = make(c, ops[c], holding, true);
            tail.spawn(async move {
                let mut steps = vec![Step {
                    think_ms: 0,
                    op: Op::Release { budget_ms: None },
                }];
                // A manager whose node timeout leaves room to connect and to send the
                // undo: below that a failed attempt's key may legitimately outlive the
                // wait (its undo cannot be sent in time) and the check would judge the
                // setting, not the code.
                let mgr = client
                    .specs
                    .iter()
                    .position(|s| s.node_timeout_ms >= TAIL_MIN_NODE_TIMEOUT_MS);
                for _ in 0..mgr.map_or(0, |_| 2) {
                    let mgr = mgr.unwrap_or(0);
                    let res = (c % RESOURCES as usize) as u8;
                    let ttl_ms = 2_000;
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Acquire {
                            mgr,
                            res,
                            how: How::TryAcquire,
                            ttl_ms,
                            budget_ms: None,
                        },
                    });
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Hold { ms: 2 },
                    });
                    steps.push(Step {
                        think_ms: 0,
                        op: Op::Release { budget_ms: None },
                    });
                }
                client.run(&steps, None).await;
                (c, client.op)
            });
        }
        while let Some(joined) = tail.join_next().await {
            match joined {
                Ok((c, op)) => ops[c] = op,
                Err(e) => oracle.flag(
                    Kind::Panic,
                    None,
                    format!("a client panicked in the tail: {e}"),
                ),
            }
        }
        tokio::time::sleep(max_nt + GHOST_SLACK).await;
        let after = snapshot(&mut direct).await;
        ghosts(&oracle, &before_tail, &after, &prefix);
        for d in direct.iter_mut() {
            if let Some(mut con) = d.connection().await {
                let _: redis::RedisResult<()> = redis::cmd("FLUSHALL").query_async(&mut con).await;
            }
        }
        let now = oracle.violations().len();
        violation_episodes.extend(std::iter::repeat_n(e, now - before));
    }
    stop.cancel();
    let _ = sampler.await;
    let history = rec.history();
    let before = oracle.violations().len();
    for v in checker::fencing(&history) {
        oracle.flag(Kind::Fencing, None, v.what);
    }
    for p in super::oracle::take_panics() {
        oracle.flag(Kind::Panic, None, format!("library code panicked: {p}"));
    }
    let last = sched.episodes.len().saturating_sub(1);
    violation_episodes.extend(std::iter::repeat_n(
        last,
        oracle.violations().len() - before,
    ));
    Outcome {
        acquisitions: acquisitions.load(Ordering::Relaxed),
        faults,
        violations: oracle.violations(),
        violation_episodes,
        bars: oracle.bars(),
        fault_bars,
        history,
        start_ns,
        end_ns: now_ns(),
        samples: oracle.samples.load(Ordering::Relaxed),
    }
}

/// Keys present after the tail that were not there before it (made by the tail's own
/// fault-free calls, so every one must be gone), and values of holdings released in the
/// tail that are still there. Fencing counters live on by design.
fn ghosts(
    oracle: &Oracle,
    before: &BTreeSet<(usize, String, String)>,
    after: &BTreeSet<(usize, String, String)>,
    prefix: &str,
) {
    let bound = oracle.bound_values();
    for (node, key, value) in after {
        if key.ends_with(":fence") || !key.starts_with(prefix) {
            continue;
        }
        let owner = bound.get(&(key.clone(), value.clone()));
        if let Some((id, how, story)) = owner {
            if how == TAIL_RELEASED {
                oracle.flag(Kind::Ghost, None, format!("node {node} still holds `{key}` of holding {id}, released in the fault-free tail, after node timeout + slack; holding {id}: {story}"));
                continue;
            }
        }
        if !before.contains(&(*node, key.clone(), value.clone())) {
            let whose = match owner {
                Some((id, how, story)) => format!("the value of holding {id} ({how}): {story}"),
                None => "a value no holding was bound to (a failed or cancelled attempt's)".into(),
            };
            oracle.flag(Kind::Ghost, None, format!("node {node} holds `{key}` after heal, release and node timeout + slack, and did not at heal; {whose}"));
        }
    }
}

async fn run_episode(
    cluster: &Arc<Cluster>,
    episode: &Episode,
    make: &impl Fn(usize, u64, Option<Holding>, bool) -> Client,
    ops: &mut [u64],
    oracle: &Arc<Oracle>,
) -> (Vec<Option<Holding>>, Vec<FaultBar>) {
    let started = Instant::now();
    let deadline = started + EPISODE;
    let mut clients = JoinSet::new();
    for (c, steps) in episode.steps.iter().enumerate() {
        let mut client = make(c, ops[c], None, false);
        let steps = steps.clone();
        clients.spawn(async move {
            client.run(&steps, Some(deadline)).await;
            (c, client.op, client.holding.take())
        });
    }
    let mut faults = JoinSet::new();
    let plan = episode.faults.clone();
    let cl = cluster.clone();
    let or = oracle.clone();
    let fault_driver = tokio::spawn(async move {
        let mut bars = Vec::new();
        let mut running = JoinSet::new();
        for f in plan {
            tokio::time::sleep_until((started + Duration::from_millis(f.at_ms)).into()).await;
            let (cl, or) = (cl.clone(), or.clone());
            let start_ns = now_ns();
            running.spawn(async move {
                run_fault(&cl, &or, f.node, f.kind, Duration::from_millis(f.dur_ms)).await;
                FaultBar {
                    node: f.node,
                    kind: f.kind.short().to_owned(),
                    start_ns,
                    end_ns: now_ns(),
                }
            });
        }
        while let Some(bar) = running.join_next().await {
            if let Ok(bar) = bar {
                bars.push(bar);
            }
        }
        bars
    });
    faults.spawn(async move { fault_driver.await.unwrap_or_default() });
    let mut holdings: Vec<Option<Holding>> = (0..episode.steps.len()).map(|_| None).collect();
    let stuck = tokio::time::sleep_until((deadline + STUCK_AFTER).into());
    tokio::pin!(stuck);
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(Ok((c, op, holding))) => {
                    ops[c] = op;
                    holdings[c] = holding;
                }
                Some(Err(e)) => oracle.flag(Kind::Panic, None, format!("a client task panicked: {e}")),
                None => break,
            },
            () = &mut stuck => {
                oracle.flag(Kind::CallBound, None, format!("{} client(s) still busy {STUCK_AFTER:?} after the episode's end", clients.len()));
                clients.abort_all();
                break;
            }
        }
    }
    let mut bars = Vec::new();
    while let Some(Ok(b)) = faults.join_next().await {
        bars.extend(b);
    }
    (holdings, bars)
}
