//! Checkers over a [`History`]: the lock's promises, stated as properties of what happened.
//!
//! | check | property |
//! |-------|----------|
//! | [`Check::Claim`] (C1) | per resource, no two intervals `[success, min(valid_until, release)]` overlap, and no success comes with no validity left |
//! | [`Check::Use`] (C2) | per protected resource, the counter equals the acknowledged increments, and no two acknowledged critical sections overlap |
//! | [`Check::Fencing`] (C3) | per resource, tokens are unique, and if A succeeded before B started, `token(A) < token(B)` |
//! | [`Check::Liveness`] (C4) | every attempt ends within a bound, and after each heal someone acquires each contended resource within a bound |
//! | [`Check::ReadWrite`] (C5) | per resource, no write claim overlaps any other claim (read claims may overlap each other) |
//! | [`Check::Permits`] (C6) | per semaphore of n permits, never more than n claims at one instant |
//!
//! Everything here is pure: the workload driver gathers what only it can see (the final
//! counters, keys left on nodes) and passes it in.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use super::history::{EventKind, History};

mod exclusion;

pub use exclusion::{permits, read_write};

/// Which promise a violation breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Check {
    /// C1: no two holders' claims overlap.
    Claim,
    /// C2: the protected resource saw no lost update and no overlapping use.
    Use,
    /// C3: fencing tokens are unique and follow real-time order.
    Fencing,
    /// C4: progress after faults heal; no hang; no leaked keys.
    Liveness,
    /// C5: no writer's claim overlaps another holder's.
    ReadWrite,
    /// C6: never more holders of a semaphore than it has permits.
    Permits,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Claim => "C1 claim",
            Self::Use => "C2 use",
            Self::Fencing => "C3 fencing",
            Self::Liveness => "C4 liveness",
            Self::ReadWrite => "C5 read-write",
            Self::Permits => "C6 permits",
        })
    }
}

/// One broken promise, with enough detail to find it in the history.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Violation {
    /// The check that found it.
    pub check: Check,
    /// What was seen.
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.what)
    }
}

fn violation(check: Check, what: String) -> Violation {
    Violation { check, what }
}

/// One successful acquisition, as the history tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Hold {
    /// The client.
    pub client: u32,
    /// The acquisition of that client.
    pub op: u64,
    /// The resource.
    pub resource: String,
    /// When the attempt started.
    pub start_ns: u64,
    /// When it succeeded.
    pub success_ns: u64,
    /// The claim's end: the last validity end, or the release if earlier.
    pub end_ns: u64,
    /// The fencing token, if any.
    pub token: Option<u64>,
}

/// Pairs the events of each acquisition into [`Hold`]s. A hold that was never released
/// claims until its last validity end.
pub fn holds(h: &History) -> Vec<Hold> {
    let mut starts: HashMap<(u32, u64, &str), u64> = HashMap::new();
    let mut open: BTreeMap<(u32, u64, &str), Hold> = BTreeMap::new();
    for e in &h.events {
        let id = (e.client, e.op, e.resource.as_str());
        match &e.kind {
            EventKind::Start => {
                starts.insert(id, e.t_ns);
            }
            EventKind::Acquired {
                valid_until_ns,
                token,
            } => {
                open.insert(
                    id,
                    Hold {
                        client: e.client,
                        op: e.op,
                        resource: e.resource.clone(),
                        start_ns: starts.get(&id).copied().unwrap_or(e.t_ns),
                        success_ns: e.t_ns,
                        end_ns: *valid_until_ns,
                        token: *token,
                    },
                );
            }
            EventKind::Extended { valid_until_ns } => {
                if let Some(hold) = open.get_mut(&id) {
                    // An extension made after the claim had lapsed does not close the gap:
                    // the claim is the first unbroken stretch only.
                    if e.t_ns <= hold.end_ns {
                        hold.end_ns = hold.end_ns.max(*valid_until_ns);
                    }
                }
            }
            EventKind::Released => {
                if let Some(hold) = open.get_mut(&id) {
                    hold.end_ns = hold.end_ns.min(e.t_ns);
                }
            }
            _ => {}
        }
    }
    let mut out: Vec<Hold> = open.into_values().collect();
    out.sort_by_key(|h| h.success_ns);
    out
}

/// C1: per resource, no two claims overlap, and no success comes without validity.
pub fn claims(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_resource: BTreeMap<&str, Vec<&Hold>> = BTreeMap::new();
    let all = holds(h);
    for hold in &all {
        if hold.end_ns <= hold.success_ns {
            out.push(violation(
                Check::Claim,
                format!(
                    "client {} op {} acquired `{}` at {} with no validity left (valid until {})",
                    hold.client, hold.op, hold.resource, hold.success_ns, hold.end_ns
                ),
            ));
            continue;
        }
        by_resource.entry(&hold.resource).or_default().push(hold);
    }
    for (resource, list) in by_resource {
        // Sorted by success; compare each claim with the one reaching furthest so far.
        let mut reach: Option<&Hold> = None;
        for hold in list {
            if let Some(prev) = reach {
                if hold.success_ns < prev.end_ns {
                    out.push(violation(
                        Check::Claim,
                        format!(
                            "`{resource}`: client {} op {} claims [{}, {}] while client {} op {} claims [{}, {}]",
                            hold.client, hold.op, hold.success_ns, hold.end_ns,
                            prev.client, prev.op, prev.success_ns, prev.end_ns
                        ),
                    ));
                }
            }
            if reach.is_none_or(|p| hold.end_ns > p.end_ns) {
                reach = Some(hold);
            }
        }
    }
    out
}

/// C2: for each resource in `final_counters`, the counter equals the acknowledged
/// increments, and no two acknowledged critical sections overlap.
///
/// Resources not in `final_counters` are not checked (for instance, unfenced ones in a
/// run that pauses holders past their validity, where C2 is expected to fail).
pub fn uses(h: &History, final_counters: &HashMap<String, u64>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut entered: HashMap<(u32, u64, &str), u64> = HashMap::new();
    let mut sections: BTreeMap<&str, Vec<(u64, u64, u32, u64)>> = BTreeMap::new();
    let mut acked: HashMap<&str, u64> = HashMap::new();
    for e in &h.events {
        let id = (e.client, e.op, e.resource.as_str());
        match e.kind {
            EventKind::Enter => {
                entered.insert(id, e.t_ns);
            }
            EventKind::Exit { acked: true } => {
                *acked.entry(&e.resource).or_default() += 1;
                let enter = entered.get(&id).copied().unwrap_or(e.t_ns);
                sections
                    .entry(&e.resource)
                    .or_default()
                    .push((enter, e.t_ns, e.client, e.op));
            }
            _ => {}
        }
    }
    let mut checked: Vec<(&String, &u64)> = final_counters.iter().collect();
    checked.sort();
    for (resource, counter) in checked {
        let n = acked.get(resource.as_str()).copied().unwrap_or(0);
        if *counter != n {
            out.push(violation(
                Check::Use,
                format!("`{resource}`: counter is {counter} after {n} acknowledged increments"),
            ));
        }
        let Some(list) = sections.get_mut(resource.as_str()) else {
            continue;
        };
        list.sort();
        let mut reach: Option<(u64, u64, u32, u64)> = None;
        for s in list.iter() {
            if let Some(p) = reach {
                if s.0 < p.1 {
                    out.push(violation(
                        Check::Use,
                        format!(
                            "`{resource}`: client {} op {} used it in [{}, {}] while client {} op {} did in [{}, {}]",
                            s.2, s.3, s.0, s.1, p.2, p.3, p.0, p.1
                        ),
                    ));
                }
            }
            if reach.is_none_or(|p| s.1 > p.1) {
                reach = Some(*s);
            }
        }
    }
    out
}

/// C3: per resource, tokens are unique, and an acquisition that started after another
/// succeeded has the higher token. Acquisitions without a token are ignored.
pub fn fencing(h: &History) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut by_resource: BTreeMap<String, Vec<Hold>> = BTreeMap::new();
    for hold in holds(h) {
        if hold.token.is_some() {
            by_resource
                .entry(hold.resource.clone())
                .or_default()
                .push(hold);
        }
    }
    for (resource, list) in by_resource {
        let mut seen: HashMap<u64, &Hold> = HashMap::new();
        for hold in &list {
            let t = hold.token.unwrap_or(0);
            if let Some(other) = seen.insert(t, hold) {
                out.push(violation(
                    Check::Fencing,
                    format!(
                        "`{resource}`: token {t} handed to client {} op {} and to client {} op {}",
                        other.client, other.op, hold.client, hold.op
                    ),
                ));
            }
        }
        // `list` is sorted by success. For each B, the highest token of any A that
        // succeeded before B started must be below B's token.
        let succ: Vec<u64> = list.iter().map(|h| h.success_ns).collect();
        let mut prefix_max: Vec<(u64, usize)> = Vec::with_capacity(list.len());
        for (i, hold) in list.iter().enumerate() {
            let t = hold.token.unwrap_or(0);
            let best = match prefix_max.last() {
                Some(&(m, j)) if m >= t => (m, j),
                _ => (t, i),
            };
            prefix_max.push(best);
        }
        for b in &list {
            let before = succ.partition_point(|&s| s < b.start_ns);
            if before == 0 {
                continue;
            }
            let (max, j) = prefix_max[before - 1];
            let tb = b.token.unwrap_or(0);
            if max >= tb && (list[j].client, list[j].op) != (b.client, b.op) {
                let a = &list[j];
                out.push(violation(
                    Check::Fencing,
                    format!(
                        "`{resource}`: client {} op {} got token {tb} after client {} op {} had succeeded with token {max}",
                        b.client, b.op, a.client, a.op
                    ),
                ));
            }
        }
    }
    out
}

/// The bounds [`liveness`] holds a run to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LivenessSpec {
    /// When each fault was healed (in [`now_ns`](super::history::now_ns) time). A heal
    /// followed by another fault within `progress_within` is not judged.
    pub heals_ns: Vec<u64>,
    /// When faults were injected; progress is not required while one is active.
    pub faults_ns: Vec<u64>,
    /// Someone must acquire a contended resource this soon after a heal: the longest
    /// TTL plus the longest backoff, plus slack for a loaded machine.
    pub progress_within: Duration,
    /// Every attempt must end this soon after it started.
    pub attempt_within: Duration,
    /// When the run ended: attempts still open then are judged against it.
    pub end_ns: u64,
    /// Keys the driver found on reachable nodes after every client had stopped and
    /// released (lock keys that nobody holds).
    pub leftover_keys: Vec<String>,
}

impl LivenessSpec {
    /// Bounds with no faults, no heals and no leftover keys; set those fields as the run
    /// tells them.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tokio_redlock_harness::checker::LivenessSpec;
    ///
    /// let mut spec = LivenessSpec::new(Duration::from_secs(2), Duration::from_secs(5), 0);
    /// spec.heals_ns.push(1_000);
    /// ```
    pub fn new(progress_within: Duration, attempt_within: Duration, end_ns: u64) -> Self {
        Self {
            heals_ns: Vec::new(),
            faults_ns: Vec::new(),
            progress_within,
            attempt_within,
            end_ns,
            leftover_keys: Vec::new(),
        }
    }
}

/// C4: every attempt ends in time; after each heal every resource that someone tried
/// to lock is acquired in time; no keys are left behind.
pub fn liveness(h: &History, spec: &LivenessSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    let within = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let attempt_ns = within(spec.attempt_within);
    let progress_ns = within(spec.progress_within);
    let mut starts: HashMap<(u32, u64, &str), u64> = HashMap::new();
    for e in &h.events {
        let id = (e.client, e.op, e.resource.as_str());
        match e.kind {
            EventKind::Start => {
                starts.insert(id, e.t_ns);
            }
            EventKind::Acquired { .. } | EventKind::Failed { .. } => {
                if let Some(s) = starts.remove(&id) {
                    if e.t_ns.saturating_sub(s) > attempt_ns {
                        out.push(violation(
                            Check::Liveness,
                            format!(
                                "client {} op {} on `{}` took {} ms to decide (bound {:?})",
                                e.client,
                                e.op,
                                e.resource,
                                (e.t_ns - s) / 1_000_000,
                                spec.attempt_within
                            ),
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    let mut hung: Vec<_> = starts.into_iter().collect();
    hung.sort();
    for ((client, op, resource), s) in hung {
        if spec.end_ns.saturating_sub(s) > attempt_ns {
            out.push(violation(
                Check::Liveness,
                format!("client {client} op {op} on `{resource}` never decided (started at {s})"),
            ));
        }
    }
    for &heal in &spec.heals_ns {
        let deadline = heal.saturating_add(progress_ns);
        if deadline > spec.end_ns || spec.faults_ns.iter().any(|&f| f > heal && f <= deadline) {
            continue;
        }
        let mut tried: BTreeMap<&str, bool> = BTreeMap::new();
        for e in &h.events {
            if e.t_ns < heal || e.t_ns > deadline {
                continue;
            }
            match e.kind {
                EventKind::Start => {
                    tried.entry(&e.resource).or_insert(false);
                }
                EventKind::Acquired { .. } => {
                    tried.insert(&e.resource, true);
                }
                _ => {}
            }
        }
        for (resource, acquired) in tried {
            if !acquired {
                out.push(violation(
                    Check::Liveness,
                    format!(
                        "`{resource}`: nobody acquired it within {:?} of the heal at {heal}",
                        spec.progress_within
                    ),
                ));
            }
        }
    }
    for key in &spec.leftover_keys {
        out.push(violation(
            Check::Liveness,
            format!("`{key}` was left on a reachable node after every client released"),
        ));
    }
    out
}

/// Every violation of a run, and a count per check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Report {
    /// All violations, C1 first.
    pub violations: Vec<Violation>,
}

impl Report {
    /// Runs C1-C4 on `h`.
    pub fn run(h: &History, final_counters: &HashMap<String, u64>, live: &LivenessSpec) -> Self {
        let mut violations = claims(h);
        violations.extend(uses(h, final_counters));
        violations.extend(fencing(h));
        violations.extend(liveness(h, live));
        Self { violations }
    }

    /// How many violations `check` found.
    pub fn count(&self, check: Check) -> usize {
        self.violations.iter().filter(|v| v.check == check).count()
    }

    /// The checks that found something, in order, without repeats.
    pub fn flagged(&self) -> Vec<Check> {
        let mut c: Vec<Check> = self.violations.iter().map(|v| v.check).collect();
        c.sort();
        c.dedup();
        c
    }
}

#[cfg(test)]
mod tests;
