//! The oracles that judge a run while it goes on: what each live guard or lease believes,
//! against what the nodes store, read over the sampler's own direct connections.
//!
//! The owner's value is private to a guard, so each holding is *bound* to a value: the
//! first time the sampler sees the holding believe with more than [`SLACK`] left, the one
//! value stored on a quorum of the nodes (with an expiry no earlier than the belief, less
//! the slack) becomes its value, and no other holding may ever be bound to it. From then
//! on, every sample must find that value on a quorum, with such an expiry. Paused or
//! unreachable nodes count as unknown: they can only help the holder.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio_redlock::Lease;
use tokio_redlock_harness::history::{instant_ns, now_ns, EventKind, Recorder};

use super::direct::READ_TIMEOUT;

// The sampler: its rounds over the nodes, the judging of beliefs, released values
// watched for coming back, and the binding of values to holdings.
mod sample;

/// What the sampler allows between a belief and the nodes: Redis keeps expiries in whole
/// milliseconds (its clock and `PTTL` each truncate, up to 1 ms each), and reads the wall
/// clock where the client reads the monotonic one; on one machine these agree to well
/// under a millisecond over a run. A guard's own drift allowance (at least 2 ms) is on top.
pub const SLACK: Duration = Duration::from_millis(5);
/// Pause between sampling rounds; each round reads every node once.
const SAMPLE_EVERY: Duration = Duration::from_millis(3);
/// Before a belief violation is reported, the holding is looked at again this much later:
/// a release or drop that began during the read closes it first.
const CONFIRM_AFTER: Duration = Duration::from_millis(3);

/// Which promise a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// A guard or lease believes in a lock a quorum of the nodes does not store.
    Belief,
    /// Two holdings were bound to one stored value.
    SharedValue,
    /// A released or lost guard or lease reported valid again.
    Revived,
    /// A call took longer than its documented bound.
    CallBound,
    /// More attempts than `retry_count + 1`, or a miscount.
    Attempts,
    /// A client task panicked (the library panicked in it).
    Panic,
    /// Keys left after heal, release and node timeout + slack.
    Ghost,
    /// Fencing tokens out of order.
    Fencing,
    /// C1 over the history, client processes included: two claims of one resource overlap.
    Claim,
    /// A write claim overlapping another claim of its resource (C5), or more permit
    /// claims than permits (C6).
    Exclusion,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Belief => "belief",
            Self::SharedValue => "shared-value",
            Self::Revived => "revived",
            Self::CallBound => "call-bound",
            Self::Attempts => "attempts",
            Self::Panic => "panic",
            Self::Ghost => "ghost",
            Self::Fencing => "fencing",
            Self::Claim => "claim",
            Self::Exclusion => "exclusion",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Violation {
    pub t_ns: u64,
    pub kind: Kind,
    pub client: Option<u32>,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.client {
            Some(c) => write!(f, "[{}] client {c}: {}", self.kind, self.what),
            None => write!(f, "[{}] {}", self.kind, self.what),
        }
    }
}

/// What a holding believes right now, as far as the sampler may look.
#[derive(Clone)]
pub enum Belief {
    /// A guard, valid until then. Its belief changes only inside calls, which set
    /// `InFlight` first.
    Guard(Instant),
    /// A kept lock or `with_lock`: the lease is asked at each sample.
    Lease(Lease),
    /// A call on the guard is under way: not judged until it returns.
    InFlight,
    /// Released, dropped or given up: not judged any more.
    Closed,
}

/// One acquisition, from success to its end, as the timeline draws it.
#[derive(Debug, Clone)]
pub struct HoldBar {
    pub client: u32,
    pub label: String,
    pub fenced: bool,
    pub acquired_ns: u64,
    pub end_ns: Option<u64>,
    /// Validity ends believed over time (one per change).
    pub marks: Vec<u64>,
    pub end_how: String,
}

struct Entry {
    client: u32,
    op: u64,
    keys: Vec<String>,
    belief: Belief,
    gen: u64,
    bound: Vec<Option<String>>,
    seen_not_held: bool,
    flagged: bool,
    /// What was done with the holding, for the violation's text.
    story: Vec<String>,
    bar: HoldBar,
    opened_ns: u64,
    closed_at: Option<Instant>,
    /// After its close plus this, no request carrying the holding's value can still land.
    grace: Duration,
    /// Per key and node: the value was seen gone after the close plus the grace.
    gone: Vec<Vec<bool>>,
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The shared table of holdings, the bindings and the violations.
pub struct Oracle {
    quorum: usize,
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
    owners: Mutex<HashMap<(String, String), u64>>,
    violations: Mutex<Vec<Violation>>,
    /// Per node, when a pause or kill last ended ([`ONGOING`] while one lasts).
    disturbed: Vec<AtomicU64>,
    grace: Duration,
    rec: Recorder,
    pub samples: AtomicU64,
}

/// A released holding to watch: its id, keys and bound values.
type Watch = (u64, Vec<String>, Vec<Option<String>>);

/// A pause or kill is under way on the node.
const ONGOING: u64 = u64::MAX;
/// How long after its close a holding's value is watched for coming back.
const WATCH: Duration = Duration::from_secs(4);

impl Oracle {
    /// An oracle for `nodes` nodes; `grace` is how long after a release a request that
    /// carries the released value may still land (the longest node timeout plus the
    /// longest time a proxy holds a request).
    pub fn new(nodes: usize, grace: Duration) -> Arc<Self> {
        Arc::new(Self {
            grace,
            quorum: nodes / 2 + 1,
            next: AtomicU64::new(0),
            entries: Mutex::new(BTreeMap::new()),
            owners: Mutex::new(HashMap::new()),
            violations: Mutex::new(Vec::new()),
            disturbed: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            samples: AtomicU64::new(0),
            rec: Recorder::new(),
        })
    }

    /// The history: the clients record starts, successes, extensions and failures, the
    /// oracle the end of each holding (as `Released`).
    pub fn recorder(&self) -> &Recorder {
        &self.rec
    }

    pub fn flag(&self, kind: Kind, client: Option<u32>, what: String) {
        lock(&self.violations).push(Violation {
            t_ns: now_ns(),
            kind,
            client,
            what,
        });
    }

    pub fn violations(&self) -> Vec<Violation> {
        lock(&self.violations).clone()
    }

    pub fn bars(&self) -> Vec<HoldBar> {
        lock(&self.entries)
            .values()
            .map(|e| e.bar.clone())
            .collect()
    }

    /// A new holding; `label` names its resources, `keys` their lock keys.
    pub fn open(
        &self,
        client: u32,
        op: u64,
        label: String,
        fenced: bool,
        keys: Vec<String>,
        belief: Belief,
    ) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut bar = HoldBar {
            client,
            label,
            fenced,
            acquired_ns: now_ns(),
            end_ns: None,
            marks: Vec::new(),
            end_how: String::new(),
        };
        if let Belief::Guard(v) = &belief {
            bar.marks.push(instant_ns(*v));
        }
        let n = keys.len();
        lock(&self.entries).insert(
            id,
            Entry {
                client,
                op,
                keys,
                belief,
                gen: 0,
                bound: vec![None; n],
                seen_not_held: false,
                flagged: false,
                story: Vec::new(),
                bar,
                opened_ns: now_ns(),
                closed_at: None,
                grace: self.grace,
                gone: Vec::new(),
            },
        );
        id
    }

    /// A pause or kill of `node` starts (`ongoing`) or ends. Requests queued in a stopped
    /// server's socket run in an order no client controls, so values coming back on such a
    /// node are not judged.
    pub fn disturb(&self, node: usize, ongoing: bool) {
        let v = if ongoing { ONGOING } else { now_ns() };
        if let Some(d) = self.disturbed.get(node) {
            d.store(v, Ordering::Relaxed);
        }
    }

    /// The op of the acquisition that opened holding `id`.
    pub fn op_of(&self, id: u64) -> Option<u64> {
        lock(&self.entries).get(&id).map(|e| e.op)
    }

    /// Adds what was just done to a holding to its story.
    pub fn note(&self, id: u64, what: String) {
        if let Some(e) = lock(&self.entries).get_mut(&id) {
            e.story.push(what);
        }
    }

    /// A new belief for a holding (a call starts or returns, a guard becomes a lease).
    pub fn set(&self, id: u64, belief: Belief) {
        if let Some(e) = lock(&self.entries).get_mut(&id) {
            if let Belief::Guard(v) = &belief {
                let ns = instant_ns(*v);
                if e.bar.marks.last() != Some(&ns) {
                    e.bar.marks.push(ns);
                }
            }
            e.belief = belief;
            e.gen += 1;
        }
    }

    /// A kept lease reported its lock lost: its claim ends in the history (as `Released`,
    /// under its acquisition's op), and the reason goes into its story. The holding stays
    /// open until its client lets go of it.
    pub fn lease_lost(&self, id: u64, reason: &str) {
        if let Some(e) = lock(&self.entries).get_mut(&id) {
            if e.bar.end_ns.is_none() {
                self.rec
                    .record(e.client, e.op, &e.bar.label, EventKind::Released);
                e.story
                    .push(format!("the lease reported the lock lost ({reason})"));
            }
        }
    }

    /// The holding ends (before the release or drop is started).
    pub fn close(&self, id: u64, how: &str) {
        if let Some(e) = lock(&self.entries).get_mut(&id) {
            e.belief = Belief::Closed;
            e.gen += 1;
            if e.bar.end_ns.is_none() {
                self.rec
                    .record(e.client, e.op, &e.bar.label, EventKind::Released);
                e.closed_at = Some(Instant::now());
                e.bar.end_ns = Some(now_ns());
                e.bar.end_how = how.to_owned();
            }
        }
    }

    /// The values bound to holdings of these keys that ended with `how` (for the ghost check).
    pub fn bound_values(&self) -> HashMap<(String, String), (u64, String, String)> {
        let entries = lock(&self.entries);
        let mut out = HashMap::new();
        for (key, id) in lock(&self.owners).iter() {
            if let Some(e) = entries.get(id) {
                out.insert(
                    key.clone(),
                    (*id, e.bar.end_how.clone(), e.story.join("; ")),
                );
            }
        }
        out
    }
}

/// The sampler's settings, for the report.
pub fn describe() -> String {
    format!("slack {SLACK:?}, read timeout {READ_TIMEOUT:?}, a round every {SAMPLE_EVERY:?}")
}
