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
use tokio_util::sync::CancellationToken;

use super::direct::{Direct, NodeRead, READ_TIMEOUT};

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

    /// Samples until `stop` is cancelled.
    pub async fn sample(self: Arc<Self>, urls: Vec<String>, stop: CancellationToken) {
        let mut nodes: Vec<Direct> = urls.into_iter().map(Direct::new).collect();
        while !stop.is_cancelled() {
            self.round(&mut nodes).await;
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(SAMPLE_EVERY) => {}
            }
        }
    }

    async fn round(&self, nodes: &mut [Direct]) {
        struct Look {
            id: u64,
            gen: u64,
            client: u32,
            op: u64,
            keys: Vec<String>,
            bound: Vec<Option<String>>,
            until: Instant,
        }
        let mut looks = Vec::new();
        let mut watches: Vec<Watch> = Vec::new();
        {
            let mut entries = lock(&self.entries);
            for (id, e) in entries.iter_mut() {
                if let Some(closed) = e.closed_at {
                    if closed.elapsed() < WATCH && e.bound.iter().any(Option::is_some) {
                        watches.push((*id, e.keys.clone(), e.bound.clone()));
                    }
                }
                let until = match &e.belief {
                    Belief::Guard(v) => *v,
                    Belief::Lease(l) => {
                        if !l.is_held() {
                            if !e.seen_not_held {
                                // The claim (for C5/C6) ends when the lease says lost.
                                self.rec
                                    .record(e.client, e.op, &e.bar.label, EventKind::Released);
                            }
                            e.seen_not_held = true;
                            continue;
                        }
                        if e.seen_not_held {
                            e.seen_not_held = false;
                            let what = format!(
                                "op {}: {} lease reports held again after it reported not held",
                                e.op, e.bar.label
                            );
                            lock(&self.violations).push(Violation {
                                t_ns: now_ns(),
                                kind: Kind::Revived,
                                client: Some(e.client),
                                what,
                            });
                        }
                        let v = l.valid_until();
                        let ns = instant_ns(v);
                        if e.bar
                            .marks
                            .last()
                            .is_none_or(|m| m.abs_diff(ns) > 1_000_000)
                        {
                            e.bar.marks.push(ns);
                            // What the lease believes now lengthens the claim (C5/C6).
                            let kind = EventKind::Extended { valid_until_ns: ns };
                            self.rec.record(e.client, e.op, &e.bar.label, kind);
                        }
                        v
                    }
                    Belief::InFlight | Belief::Closed => continue,
                };
                if e.flagged || until.saturating_duration_since(Instant::now()) <= SLACK * 2 {
                    continue;
                }
                looks.push(Look {
                    id: *id,
                    gen: e.gen,
                    client: e.client,
                    op: e.op,
                    keys: e.keys.clone(),
                    bound: e.bound.clone(),
                    until,
                });
            }
        }
        if looks.is_empty() && watches.is_empty() {
            return;
        }
        let mut keys: Vec<String> = looks
            .iter()
            .flat_map(|l| l.keys.clone())
            .chain(watches.iter().flat_map(|w| w.1.clone()))
            .collect();
        keys.sort();
        keys.dedup();
        let reads = futures::future::join_all(nodes.iter_mut().map(|n| n.read(&keys))).await;
        let t_e = Instant::now();
        self.samples.fetch_add(1, Ordering::Relaxed);
        let index: HashMap<&str, usize> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.as_str(), i))
            .collect();
        self.watch(&watches, &index, &reads);
        // Only holdings whose state did not change while the nodes were read are judged
        // (or bound): a holding released, dropped, in a call or lost meanwhile may have
        // seen its key go and another holder's come.
        let unchanged: Vec<bool> = {
            let entries = lock(&self.entries);
            looks
                .iter()
                .map(|l| {
                    entries.get(&l.id).is_some_and(|e| {
                        e.gen == l.gen
                            && match &e.belief {
                                Belief::Guard(_) => true,
                                Belief::Lease(lease) => lease.is_held(),
                                Belief::InFlight | Belief::Closed => false,
                            }
                    })
                })
                .collect()
        };
        let mut suspects = Vec::new();
        for (look, unchanged) in looks.iter().zip(unchanged) {
            if !unchanged {
                continue;
            }
            let left = look.until.saturating_duration_since(t_e);
            if left <= SLACK {
                continue;
            }
            // A node supports a value if its expiry, at the latest `t_e + pttl + 1 ms`, is
            // no earlier than the belief's end less the slack.
            let need_ms = (left - SLACK).as_millis() as i64 - 1;
            for (k, key) in look.keys.iter().enumerate() {
                let i = index[key.as_str()];
                let mut unknown = 0;
                let mut support: HashMap<&str, usize> = HashMap::new();
                let mut seen = Vec::new();
                for r in &reads {
                    match r {
                        None => {
                            unknown += 1;
                            seen.push("?".to_string());
                        }
                        Some(vals) => {
                            let (v, pttl) = &vals[i];
                            match v {
                                Some(v) if *pttl == -1 || *pttl >= need_ms => {
                                    *support.entry(v.as_str()).or_default() += 1;
                                    seen.push(format!(
                                        "{} {}ms",
                                        short(v, look.bound[k].as_deref()),
                                        pttl
                                    ));
                                }
                                Some(v) => seen.push(format!(
                                    "{} {}ms (short)",
                                    short(v, look.bound[k].as_deref()),
                                    pttl
                                )),
                                None => seen.push("absent".into()),
                            }
                        }
                    }
                }
                let detail = || {
                    format!(
                        "op {} key {key} believes {}ms left; nodes: [{}]",
                        look.op,
                        left.as_millis(),
                        seen.join(", ")
                    )
                };
                match &look.bound[k] {
                    Some(v) => {
                        if support.get(v.as_str()).copied().unwrap_or(0) + unknown < self.quorum {
                            suspects.push((look.id, look.gen, look.client, Kind::Belief, detail()));
                        }
                    }
                    None => {
                        let best = support
                            .iter()
                            .max_by_key(|(_, c)| **c)
                            .map(|(v, c)| ((*v).to_owned(), *c));
                        match best {
                            Some((v, c)) if c >= self.quorum => {
                                if let Some(other) = self.bind(look.id, k, key, v) {
                                    let what =
                                        format!("{}; the value is holding {other}'s", detail());
                                    suspects.push((
                                        look.id,
                                        look.gen,
                                        look.client,
                                        Kind::SharedValue,
                                        what,
                                    ));
                                }
                            }
                            Some((_, c)) if c + unknown >= self.quorum => {}
                            None if unknown >= self.quorum => {}
                            _ => suspects.push((
                                look.id,
                                look.gen,
                                look.client,
                                Kind::Belief,
                                detail(),
                            )),
                        }
                    }
                }
            }
        }
        if suspects.is_empty() {
            return;
        }
        tokio::time::sleep(CONFIRM_AFTER).await;
        let mut entries = lock(&self.entries);
        for (id, gen, client, kind, what) in suspects {
            if let Some(e) = entries.get_mut(&id) {
                if e.gen == gen
                    && !matches!(e.belief, Belief::Closed | Belief::InFlight)
                    && !e.flagged
                {
                    e.flagged = true;
                    let what = format!("{what}; holding {id}: {}", e.story.join("; "));
                    lock(&self.violations).push(Violation {
                        t_ns: now_ns(),
                        kind,
                        client: Some(client),
                        what,
                    });
                }
            }
        }
    }

    /// Values of released holdings that come back: once a value was seen gone from a node
    /// after its holding's close plus the grace, it must never be seen there again.
    fn watch(&self, watches: &[Watch], index: &HashMap<&str, usize>, reads: &[Option<NodeRead>]) {
        let mut entries = lock(&self.entries);
        for (id, keys, bound) in watches {
            let Some(e) = entries.get_mut(id) else {
                continue;
            };
            let Some(closed) = e.closed_at else { continue };
            let settled = closed.elapsed() > e.grace;
            e.gone.resize(keys.len(), vec![false; reads.len()]);
            for (k, key) in keys.iter().enumerate() {
                let Some(value) = &bound[k] else { continue };
                for (node, read) in reads.iter().enumerate() {
                    let Some(vals) = read else { continue };
                    let d = self.disturbed[node].load(Ordering::Relaxed);
                    if d == ONGOING || d >= e.opened_ns {
                        continue;
                    }
                    let present = vals[index[key.as_str()]].0.as_deref() == Some(value.as_str());
                    if !present && settled {
                        e.gone[k][node] = true;
                    } else if present && e.gone[k][node] && !e.flagged {
                        e.flagged = true;
                        let what = format!(
                            "op {} key {key}: the value of holding {id} ({}) is back on node {node} {:?} after the holding ended, after it had been gone; holding {id}: {}",
                            e.op,
                            e.bar.end_how,
                            closed.elapsed(),
                            e.story.join("; ")
                        );
                        let v = Violation {
                            t_ns: now_ns(),
                            kind: Kind::Ghost,
                            client: Some(e.client),
                            what,
                        };
                        lock(&self.violations).push(v);
                    }
                }
            }
        }
    }

    /// Binds `value` to holding `id`; if another holding has it, says which (client, op,
    /// state and story) and binds nothing.
    fn bind(&self, id: u64, k: usize, key: &str, value: String) -> Option<String> {
        let owner = *lock(&self.owners)
            .entry((key.to_owned(), value.clone()))
            .or_insert(id);
        let mut entries = lock(&self.entries);
        if owner != id {
            let other = entries.get(&owner)?;
            // A holding that ended may have handed its lock, value and all, to a task
            // of the same manager (in-process hand-over): the value moves on with it.
            // So may a lease that says it no longer holds (a keep-alive that gave up
            // drops its guard, which hands the lock over while the client still has
            // the lost lease; `revived` checks that it never says held again).
            let ended = match &other.belief {
                Belief::Closed => true,
                Belief::Lease(l) => !l.is_held(),
                _ => false,
            };
            if ended {
                lock(&self.owners).insert((key.to_owned(), value.clone()), id);
                if let Some(e) = entries.get_mut(&id) {
                    e.bound[k] = Some(value);
                }
                return None;
            }
            let state = match &other.belief {
                Belief::Guard(v) => format!(
                    "a guard believing {:?} more",
                    v.saturating_duration_since(Instant::now())
                ),
                Belief::Lease(l) => format!(
                    "a lease, held: {}, {:?} more",
                    l.is_held(),
                    l.remaining_validity()
                ),
                Belief::InFlight => "a guard in a call".into(),
                Belief::Closed => format!("ended ({})", other.bar.end_how),
            };
            return Some(format!(
                "{owner} (client {} op {}, {state}): {}",
                other.client,
                other.op,
                other.story.join("; ")
            ));
        }
        if let Some(e) = entries.get_mut(&id) {
            e.bound[k] = Some(value);
        }
        None
    }
}

fn short(v: &str, mine: Option<&str>) -> String {
    if Some(v) == mine {
        "mine".into()
    } else {
        format!("other:{}", &v[..v.len().min(6)])
    }
}

/// The sampler's settings, for the report.
pub fn describe() -> String {
    format!("slack {SLACK:?}, read timeout {READ_TIMEOUT:?}, a round every {SAMPLE_EVERY:?}")
}
