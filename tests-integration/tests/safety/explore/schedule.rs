//! What a run does, drawn from a seed: managers per client, per episode each client's
//! operations and the faults, all fixed before the run starts so a seed replays.

use std::fmt;
use std::time::Duration;

use tokio_redlock_harness::Persistence;

// Drawing a schedule from its seed (`Schedule::generate`), which names
// `super::rw_and_permits` from there.
mod draw;
use super::rw_and_permits;

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

impl MgrSpec {
    /// A manager of the probes (the flap probe, the late-delivery probe): one attempt,
    /// no pause, no fencing, wake-ups on, with this node timeout.
    pub fn one_attempt(node_timeout_ms: u64) -> Self {
        Self {
            fencing: false,
            retry_count: 0,
            retry_delay_ms: 0,
            jitter_ms: 0,
            drift: 0.01,
            node_timeout_ms,
            wake: true,
        }
    }
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
