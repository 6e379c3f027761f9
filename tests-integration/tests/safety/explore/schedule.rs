//! What a run does, drawn from a seed: managers per client, per episode each client's
//! operations and the faults, all fixed before the run starts so a seed replays.

use std::fmt;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock_harness::Persistence;

/// How long the operations of one episode run, about (clients stop at the deadline).
pub const EPISODE: Duration = Duration::from_millis(3_000);
/// The least node timeout of a manager that the ghost check holds to cleaning up: with
/// less, on a loaded 2-core machine, an undo's own deadline can pass before it is sent
/// (seen at 20 ms during a soak), and the key then lives until its ttl.
pub const TAIL_MIN_NODE_TIMEOUT_MS: u64 = 50;
/// Resources per episode that the clients contend for.
pub const RESOURCES: u8 = 3;

/// A cluster shape and the faults that are safe on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// 5 memory-only nodes: every proxy fault, pauses, `SCRIPT FLUSH`; no restarts (a
    /// memory node restarted empty may legitimately forget a lock).
    Api,
    /// 3 nodes with `appendfsync always`: kill -9 and immediate restart, pauses, partitions.
    Crash,
    /// For long runs: the `api` faults, fewer of them, and quick operations (mostly
    /// acquire, extend, release) by 8 clients contending in pairs over 4 groups of
    /// resources. Not part of the default run.
    Soak,
}

impl Workload {
    pub const ALL: [Workload; 2] = [Workload::Api, Workload::Crash];

    pub fn name(self) -> &'static str {
        match self {
            Self::Api => "api",
            Self::Crash => "crash",
            Self::Soak => "soak",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Api, Self::Crash, Self::Soak]
            .into_iter()
            .find(|w| w.name() == s)
    }

    /// Clients `c` and `c'` contend when `c / pair == c' / pair`.
    pub fn contending(self) -> usize {
        match self {
            Self::Soak => 2,
            _ => usize::MAX,
        }
    }

    pub fn nodes(self) -> usize {
        match self {
            Self::Api | Self::Soak => 5,
            Self::Crash => 3,
        }
    }

    pub fn persistence(self) -> Persistence {
        match self {
            Self::Api | Self::Soak => Persistence::Memory,
            Self::Crash => Persistence::AofAlways,
        }
    }

    pub fn clients(self) -> usize {
        match self {
            Self::Api => 6,
            Self::Crash => 4,
            Self::Soak => 8,
        }
    }

    pub fn episodes(self) -> usize {
        match self {
            Self::Api | Self::Soak => 6,
            Self::Crash => 4,
        }
    }
}

/// Milliseconds, where `u64::MAX` stands for `Duration::MAX` (the extreme end).
pub fn ms(v: u64) -> Duration {
    if v == u64::MAX {
        Duration::MAX
    } else {
        Duration::from_millis(v)
    }
}

fn show_ms(v: u64) -> String {
    if v == u64::MAX {
        "MAX".into()
    } else {
        format!("{v}ms")
    }
}

/// The settings of one manager.
#[derive(Debug, Clone, PartialEq)]
pub struct MgrSpec {
    pub fencing: bool,
    pub retry_count: u32,
    pub retry_delay_ms: u64,
    pub jitter_ms: u64,
    pub drift: f64,
    pub node_timeout_ms: u64,
    pub wake: bool,
}

impl fmt::Display for MgrSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fencing({}) retry_count({}) retry_delay({}) retry_jitter({}) drift_factor({}) node_timeout({}) wake_on_release({})",
            self.fencing,
            self.retry_count,
            show_ms(self.retry_delay_ms),
            show_ms(self.jitter_ms),
            self.drift,
            show_ms(self.node_timeout_ms),
            self.wake
        )
    }
}

/// Lease options, as drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Opts {
    pub extend_after: f64,
    pub max_hold_ms: Option<u64>,
    pub max_extensions: Option<u32>,
}

impl Opts {
    pub fn options(self) -> tokio_redlock::LeaseOptions {
        tokio_redlock::LeaseOptions::default()
            .extend_after(self.extend_after)
            .max_hold(self.max_hold_ms.map(ms))
            .max_extensions(self.max_extensions)
    }
}

impl fmt::Display for Opts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "extend_after({}) max_hold({}) max_extensions({:?})",
            self.extend_after,
            self.max_hold_ms.map_or("None".into(), show_ms),
            self.max_extensions
        )
    }
}

/// How an acquisition is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    Acquire,
    TryAcquire,
    /// `acquire_many` of the resource and the next one.
    Many,
    /// A read, write or permit acquisition (`explore/rw_and_permits.rs`).
    Kind(super::rw_and_permits::Ask),
}

/// The ttl of an extension: a fraction of what is left, or an absolute value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ExtendTtl {
    OfLeft(f64),
    Ms(u64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Acquire {
        mgr: usize,
        res: u8,
        how: How,
        ttl_ms: u64,
        budget_ms: Option<u64>,
    },
    Extend {
        ttl: ExtendTtl,
        budget_ms: Option<u64>,
    },
    Release {
        budget_ms: Option<u64>,
    },
    Drop,
    DropOnThread,
    KeepAlive {
        opts: Opts,
        on_thread: bool,
    },
    Hold {
        ms: u64,
    },
    WithLock {
        mgr: usize,
        res: u8,
        ttl_ms: u64,
        opts: Opts,
        work_ms: u64,
        budget_ms: Option<u64>,
    },
}

fn budget(b: Option<u64>) -> String {
    b.map(|b| format!(" within {b}ms")).unwrap_or_default()
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Acquire {
                mgr,
                res,
                how,
                ttl_ms,
                budget_ms,
            } => {
                let call = match how {
                    How::Acquire => format!("acquire(r{res}"),
                    How::TryAcquire => format!("try_acquire(r{res}"),
                    How::Many => format!("acquire_many([r{res}, r{}]", (res + 1) % RESOURCES),
                    How::Kind(k) => k.call(*res),
                };
                write!(
                    f,
                    "m{mgr}.{call}, {}){}",
                    show_ms(*ttl_ms),
                    budget(*budget_ms)
                )
            }
            Op::Extend { ttl, budget_ms } => match ttl {
                ExtendTtl::OfLeft(x) => write!(f, "extend({x:.2} x left){}", budget(*budget_ms)),
                ExtendTtl::Ms(v) => write!(f, "extend({}){}", show_ms(*v), budget(*budget_ms)),
            },
            Op::Release { budget_ms } => write!(f, "release(){}", budget(*budget_ms)),
            Op::Drop => write!(f, "drop(guard)"),
            Op::DropOnThread => write!(f, "drop(guard) on a plain thread"),
            Op::KeepAlive { opts, on_thread } => write!(
                f,
                "keep_alive_with({opts}){}",
                if *on_thread { " on a plain thread" } else { "" }
            ),
            Op::Hold { ms } => write!(f, "hold {ms}ms"),
            Op::WithLock {
                mgr,
                res,
                ttl_ms,
                opts,
                work_ms,
                budget_ms,
            } => write!(
                f,
                "m{mgr}.with_lock_opts(r{res}, {}, {opts}, work {work_ms}ms){}",
                show_ms(*ttl_ms),
                budget(*budget_ms)
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub think_ms: u64,
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Pause,
    KillRestart,
    Partition,
    DropRequests,
    DropReplies,
    /// Reset after this many requests.
    Resets(u32),
    Flap,
    Latency(u64),
    Spike(u64),
    ScriptFlush,
    /// Late delivery: what clients send on the node's open connections is held and
    /// lands after what they sent since on new ones (`Node::hold_requests`).
    Late,
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pause => write!(f, "pause"),
            Self::KillRestart => write!(f, "kill -9 (restart after)"),
            Self::Partition => write!(f, "partition"),
            Self::DropRequests => write!(f, "drop_requests"),
            Self::DropReplies => write!(f, "drop_replies"),
            Self::Resets(n) => write!(f, "reset_after_requests({n})"),
            Self::Flap => write!(f, "flap"),
            Self::Latency(l) => write!(f, "set_latency({l}ms)"),
            Self::Spike(l) => write!(f, "latency_spike({l}ms)"),
            Self::ScriptFlush => write!(f, "SCRIPT FLUSH"),
            Self::Late => write!(f, "hold_requests (deliver_held after)"),
        }
    }
}

impl FaultKind {
    pub fn short(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::KillRestart => "kill",
            Self::Partition => "partition",
            Self::DropRequests => "drop_requests",
            Self::DropReplies => "drop_replies",
            Self::Resets(_) => "resets",
            Self::Flap => "flap",
            Self::Latency(_) => "latency",
            Self::Spike(_) => "spike",
            Self::ScriptFlush => "script_flush",
            Self::Late => "late",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct FaultStep {
    pub at_ms: u64,
    pub node: usize,
    pub kind: FaultKind,
    pub dur_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Episode {
    pub steps: Vec<Vec<Step>>,
    pub faults: Vec<FaultStep>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub seed: u64,
    pub workload: Workload,
    /// Two managers per client: `[unfenced, fenced]`.
    pub managers: Vec<[MgrSpec; 2]>,
    /// Clients that use client 0's managers (tasks of one manager) instead of their own.
    pub shared: Vec<bool>,
    pub episodes: Vec<Episode>,
}

impl Schedule {
    pub fn generate(seed: u64, workload: Workload) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut managers: Vec<[MgrSpec; 2]> = (0..workload.clients())
            .map(|_| [mgr_spec(&mut rng, false), mgr_spec(&mut rng, true)])
            .collect();
        let episodes = (0..workload.episodes())
            .map(|_| episode(&mut rng, workload))
            .collect();
        // Drawn last, so that the rest of a seed's schedule does not depend on it.
        let shared: Vec<bool> = (0..workload.clients())
            .map(|c| c > 0 && rng.random_bool(0.3))
            .collect();
        for (c, s) in shared.iter().enumerate() {
            if *s {
                managers[c] = managers[0].clone();
            }
        }
        // Late delivery came after the rest: drawn last too, so the rest of a seed's
        // schedule is what it was before.
        let mut episodes: Vec<Episode> = episodes;
        if workload != Workload::Soak {
            for e in &mut episodes {
                late_faults(&mut rng, e, workload.nodes());
            }
        }
        Self {
            seed,
            workload,
            managers,
            shared,
            episodes,
        }
    }

    /// The manager client `c` uses in each episode's fault-free tail: the first whose node
    /// timeout leaves room to connect and to send an undo (with 1 or 2 ms an undo or
    /// release may itself time out before it is sent, and a key outliving the tail would
    /// judge the setting, not the code).
    pub fn tail_manager(&self, c: usize) -> Option<usize> {
        self.managers
            .get(c)?
            .iter()
            .position(|s| s.node_timeout_ms >= TAIL_MIN_NODE_TIMEOUT_MS)
    }

    pub fn ops(&self) -> usize {
        self.episodes
            .iter()
            .flat_map(|e| &e.steps)
            .map(Vec::len)
            .sum()
    }

    pub fn faults(&self) -> usize {
        self.episodes.iter().map(|e| e.faults.len()).sum()
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "# workload {}, seed {}", self.workload.name(), self.seed)?;
        for (c, mgrs) in self.managers.iter().enumerate() {
            let tail = self
                .tail_manager(c)
                .map_or("none".to_owned(), |m| format!("m{m}"));
            if self.shared.get(c).copied().unwrap_or(false) {
                writeln!(f, "client {c}: uses client 0's managers; tail: {tail}")?;
                continue;
            }
            for (m, spec) in mgrs.iter().enumerate() {
                writeln!(f, "client {c}: m{m} = {spec}")?;
            }
            writeln!(f, "client {c}: tail: {tail}")?;
        }
        for (i, e) in self.episodes.iter().enumerate() {
            writeln!(f, "episode {i}:")?;
            for fault in &e.faults {
                writeln!(
                    f,
                    "  at {:>5}ms  node {}  {} for {}ms",
                    fault.at_ms, fault.node, fault.kind, fault.dur_ms
                )?;
            }
            for (c, steps) in e.steps.iter().enumerate() {
                for s in steps {
                    writeln!(f, "  client {c}: after {:>4}ms  {}", s.think_ms, s.op)?;
                }
            }
        }
        Ok(())
    }
}

fn pick<T: Copy>(rng: &mut StdRng, items: &[T]) -> T {
    items[rng.random_range(0..items.len())]
}

fn mgr_spec(rng: &mut StdRng, fencing: bool) -> MgrSpec {
    // One manager in four is drawn at the extremes of the legal range.
    let extreme = rng.random_bool(0.25);
    if extreme {
        MgrSpec {
            fencing,
            retry_count: pick(rng, &[0, 0, 1, 20]),
            retry_delay_ms: pick(rng, &[0, 1, 300]),
            jitter_ms: pick(rng, &[0, 1, 200]),
            drift: pick(rng, &[0.0, 0.5, 0.99]),
            node_timeout_ms: pick(rng, &[1, 2, 1_000]),
            wake: rng.random_bool(0.5),
        }
    } else {
        MgrSpec {
            fencing,
            retry_count: rng.random_range(0..=4),
            retry_delay_ms: rng.random_range(0..=40),
            jitter_ms: rng.random_range(0..=40),
            drift: pick(rng, &[0.0, 0.01, 0.01, 0.05]),
            node_timeout_ms: pick(rng, &[20, 50, 100, 250]),
            wake: rng.random_bool(0.8),
        }
    }
}

fn ttl(rng: &mut StdRng) -> u64 {
    match rng.random_range(0..20) {
        0 => pick(rng, &[0, 1, 3, 4, u64::MAX]),
        1..=3 => rng.random_range(5..=60),
        _ => rng.random_range(100..=2_500),
    }
}

fn small_budget(rng: &mut StdRng) -> Option<u64> {
    // A cancellation at a random point: a few ms cut most calls short somewhere inside.
    rng.random_bool(0.15).then(|| rng.random_range(0..=25))
}

fn opts(rng: &mut StdRng) -> Opts {
    Opts {
        extend_after: pick(rng, &[0.0, 0.05, 1.0 / 3.0, 0.5, 0.9, 1.0, f64::NAN]),
        max_hold_ms: pick(
            rng,
            &[None, None, Some(0), Some(50), Some(400), Some(u64::MAX)],
        ),
        max_extensions: pick(
            rng,
            &[None, None, Some(0), Some(1), Some(3), Some(u32::MAX)],
        ),
    }
}

fn op(rng: &mut StdRng) -> Op {
    let mgr = rng.random_range(0..2);
    let res = rng.random_range(0..RESOURCES);
    match rng.random_range(0..100) {
        0..=17 => Op::Acquire {
            mgr,
            res,
            how: super::rw_and_permits::draw(rng, How::Acquire),
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        18..=25 => Op::Acquire {
            mgr,
            res,
            how: super::rw_and_permits::draw(rng, How::TryAcquire),
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        26..=30 => Op::Acquire {
            mgr,
            res,
            how: How::Many,
            ttl_ms: ttl(rng),
            budget_ms: small_budget(rng),
        },
        31..=46 => Op::Extend {
            ttl: if rng.random_bool(0.8) {
                ExtendTtl::OfLeft(rng.random_range(0.02..2.5))
            } else {
                ExtendTtl::Ms(pick(rng, &[0, 1, 3, 4, 10, u64::MAX]))
            },
            budget_ms: small_budget(rng),
        },
        47..=58 => Op::Release {
            budget_ms: small_budget(rng),
        },
        59..=62 => Op::Drop,
        63..=65 => Op::DropOnThread,
        66..=73 => Op::KeepAlive {
            opts: opts(rng),
            on_thread: rng.random_bool(0.4),
        },
        74..=89 => Op::Hold {
            ms: rng.random_range(1..=400),
        },
        _ => Op::WithLock {
            mgr,
            res,
            ttl_ms: ttl(rng),
            opts: opts(rng),
            work_ms: rng.random_range(0..=800),
            budget_ms: small_budget(rng).map(|b| b * 10),
        },
    }
}

/// Quick operations for long runs: mostly acquire, extend and release, short holds.
fn soak_op(rng: &mut StdRng) -> Op {
    let mgr = rng.random_range(0..2);
    let res = rng.random_range(0..RESOURCES);
    let ttl_ms = rng.random_range(100..=2_000);
    let budget_ms = rng.random_bool(0.05).then(|| rng.random_range(0..=10));
    match rng.random_range(0..100) {
        0..=29 => Op::Acquire {
            mgr,
            res,
            how: How::Acquire,
            ttl_ms,
            budget_ms,
        },
        30..=44 => Op::Acquire {
            mgr,
            res,
            how: How::TryAcquire,
            ttl_ms,
            budget_ms,
        },
        45..=49 => Op::Acquire {
            mgr,
            res,
            how: How::Many,
            ttl_ms,
            budget_ms,
        },
        50..=62 => Op::Extend {
            ttl: ExtendTtl::OfLeft(rng.random_range(0.3..2.0)),
            budget_ms,
        },
        63..=84 => Op::Release { budget_ms },
        85..=87 => Op::Drop,
        88..=89 => Op::KeepAlive {
            opts: opts(rng),
            on_thread: rng.random_bool(0.3),
        },
        90..=94 => Op::Hold {
            ms: rng.random_range(1..=20),
        },
        _ => Op::WithLock {
            mgr,
            res,
            ttl_ms,
            opts: opts(rng),
            work_ms: rng.random_range(0..=50),
            budget_ms: None,
        },
    }
}

fn episode(rng: &mut StdRng, workload: Workload) -> Episode {
    let span = EPISODE.as_millis() as u64;
    let steps = (0..workload.clients())
        .map(|_| {
            let mut steps = Vec::new();
            let mut t = 0;
            while t < span {
                let (think_ms, op) = if workload == Workload::Soak {
                    let think_ms = pick(rng, &[0, 0, 1, 2, 5]);
                    t += think_ms + 8;
                    (think_ms, soak_op(rng))
                } else {
                    let think_ms = pick(rng, &[0, 0, 1, 5, 20, 60]);
                    t += think_ms + 40;
                    (think_ms, op(rng))
                };
                steps.push(Step { think_ms, op });
            }
            steps
        })
        .collect();
    let n = workload.nodes();
    let minority = (n - 1) / 2;
    let mut faults = Vec::new();
    let mut busy_until = vec![0u64; n];
    let mut t = rng.random_range(0..200);
    // Half the episodes open with a node silent for seconds: every manager is fresh at
    // an episode's start, so its first waits need subscriptions, and one to a silent
    // node must not hold a wait up.
    if workload != Workload::Soak && rng.random_bool(0.5) {
        let node = rng.random_range(0..n);
        let dur_ms = rng.random_range(2_200..=2_600);
        faults.push(FaultStep {
            at_ms: rng.random_range(0..100),
            node,
            kind: FaultKind::Pause,
            dur_ms,
        });
        busy_until[node] = dur_ms + 150;
    }
    while t < span - 200 {
        let node = rng.random_range(0..n);
        let dur_ms = rng.random_range(30..=600);
        let faulted = busy_until.iter().filter(|&&b| b > t).count();
        // Mostly a minority at a time; sometimes a majority, which must only fail safely.
        let allow = faulted < minority || rng.random_bool(0.1);
        if busy_until[node] <= t && allow {
            let kind = fault_kind(rng, workload);
            // A flap heals within the node timeout of most managers; one pause in four
            // is a node silent for seconds (it accepts connections and answers
            // nothing), longer than a subscription may take to give up.
            let dur_ms = match kind {
                FaultKind::Flap => rng.random_range(5..=80),
                FaultKind::Pause if rng.random_bool(0.25) => rng.random_range(2_200..=2_600),
                _ => dur_ms,
            };
            faults.push(FaultStep {
                at_ms: t,
                node,
                kind,
                dur_ms,
            });
            busy_until[node] = t + dur_ms + 50;
        }
        t += if workload == Workload::Soak {
            rng.random_range(300..1_200)
        } else {
            rng.random_range(50..400)
        };
    }
    Episode { steps, faults }
}

/// Up to two late-delivery faults in `e`, each on a node with no other fault around it,
/// long enough for a client to give up on the held connection (three node timeouts) and
/// go on on a new one. Inserted in time order without moving the other faults.
fn late_faults(rng: &mut StdRng, e: &mut Episode, nodes: usize) {
    let span = EPISODE.as_millis() as u64;
    for _ in 0..rng.random_range(0..=2) {
        let node = rng.random_range(0..nodes);
        let at_ms = rng.random_range(0..span - 900);
        let dur_ms = rng.random_range(300..=900);
        let clear = e
            .faults
            .iter()
            .filter(|f| f.node == node)
            .all(|f| f.at_ms + f.dur_ms + 50 < at_ms || at_ms + dur_ms + 50 < f.at_ms);
        if !clear {
            continue;
        }
        let at = e
            .faults
            .iter()
            .position(|f| f.at_ms > at_ms)
            .unwrap_or(e.faults.len());
        e.faults.insert(
            at,
            FaultStep {
                at_ms,
                node,
                kind: FaultKind::Late,
                dur_ms,
            },
        );
    }
}

fn fault_kind(rng: &mut StdRng, workload: Workload) -> FaultKind {
    loop {
        let kind = match rng.random_range(0..11) {
            0 => FaultKind::Pause,
            1 => FaultKind::KillRestart,
            2 => FaultKind::Partition,
            3 => FaultKind::DropRequests,
            4 => FaultKind::DropReplies,
            5 => FaultKind::Resets(pick(rng, &[1, 2, 5, u32::MAX])),
            6 | 7 => FaultKind::Flap,
            8 => FaultKind::Latency(rng.random_range(5..=150)),
            9 => FaultKind::Spike(rng.random_range(20..=400)),
            _ => FaultKind::ScriptFlush,
        };
        let ok = match workload {
            Workload::Api | Workload::Soak => kind != FaultKind::KillRestart,
            Workload::Crash => !matches!(kind, FaultKind::ScriptFlush),
        };
        if ok {
            return kind;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule() {
        for w in Workload::ALL {
            // Compared as scripts: NaN options are not equal to themselves.
            let script = |seed| Schedule::generate(seed, w).to_string();
            assert_eq!(script(7), script(7));
            assert_ne!(script(7), script(8));
        }
    }
}
