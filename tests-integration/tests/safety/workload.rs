//! The safety suite's workload driver: many clients, a protected counter, a seeded fault
//! schedule, and the run's history handed to the harness checkers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock::{FenceGate, LockGuard, Redlock};
use tokio_redlock_harness::checker::{Check, LivenessSpec, Report};
use tokio_redlock_harness::history::{instant_ns, now_ns, EventKind, History, Recorder};
use tokio_redlock_harness::Cluster;

use crate::support;
// Shared with the library's own tests (tests/it/rw_and_permits.rs, phase_fair.rs).
pub use crate::support::{recorded, release};

/// Lock TTLs are drawn from this range: short, so a few seconds hold hundreds of
/// acquisitions and expiry is exercised, as the issue asks (200-1000 ms).
pub const TTL_MS: std::ops::RangeInclusive<u64> = 300..=1000;
/// The longest TTL, which bounds how long a crashed holder blocks others.
pub const MAX_TTL: Duration = Duration::from_millis(1000);
/// Each request to a node is cut off after this: tight, so a sick node costs little.
pub const NODE_TIMEOUT: Duration = Duration::from_millis(100);
/// Retries per acquisition and their pause (delay + jitter).
const RETRIES: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(20);
const RETRY_JITTER: Duration = Duration::from_millis(40);
/// Slack for a loaded 2-core CI machine on top of the protocol's own bounds.
const SLACK: Duration = Duration::from_millis(700);

/// Resources locked with fencing on (their counter is checked by C2) and one without.
pub const FENCED: [&str; 2] = ["safety:f0", "safety:f1"];
pub const UNFENCED: &str = "safety:u0";

/// The protected resource: counters outside the lock nodes, optionally fenced.
///
/// Enter and exit are recorded under the store's own mutex at the read and at the
/// write, so the history's critical sections are exactly the spans between them.
#[derive(Default)]
pub struct Store {
    values: Mutex<HashMap<String, u64>>,
    gate: FenceGate,
}

impl Store {
    /// Read, pause, write: the classic lost-update shape. A fenced holder is checked on
    /// both the read and the write. Returns whether the write was acknowledged.
    pub async fn increment(
        &self,
        rec: &Recorder,
        (client, op): (u32, u64),
        resource: &str,
        token: Option<u64>,
        pause: Duration,
    ) -> bool {
        let read = {
            let values = self.values.lock().unwrap();
            if let Some(t) = token {
                if self.gate.check(resource, t).is_err() {
                    return false;
                }
            }
            rec.record(client, op, resource, EventKind::Enter);
            values.get(resource).copied().unwrap_or(0)
        };
        tokio::time::sleep(pause).await;
        let mut values = self.values.lock().unwrap();
        let acked = token.is_none_or(|t| self.gate.check(resource, t).is_ok());
        if acked {
            values.insert(resource.to_owned(), read + 1);
        }
        rec.record(client, op, resource, EventKind::Exit { acked });
        acked
    }

    pub fn value(&self, resource: &str) -> u64 {
        self.values
            .lock()
            .unwrap()
            .get(resource)
            .copied()
            .unwrap_or(0)
    }
}

/// A manager for the workload: tight timings, own connections.
pub fn manager(cluster: &Cluster, fencing: bool) -> Redlock {
    Redlock::builder()
        .nodes(cluster.urls())
        .retry_count(RETRIES)
        .retry_delay(RETRY_DELAY)
        .retry_jitter(RETRY_JITTER)
        .node_timeout(NODE_TIMEOUT)
        .fencing(fencing)
        .build()
        .expect("valid config")
}

/// A manager for the step-by-step scenarios: a node timeout and retries generous
/// enough for a loaded machine, since there each acquisition's outcome is the point.
/// The node timeout of [`patient`]'s managers.
pub const PATIENT_NODE_TIMEOUT: Duration = Duration::from_millis(300);

pub fn patient(cluster: &Cluster, fencing: bool) -> Redlock {
    Redlock::builder()
        .nodes(cluster.urls())
        .retry_count(10)
        .retry_delay(RETRY_DELAY)
        .retry_jitter(RETRY_JITTER)
        .node_timeout(PATIENT_NODE_TIMEOUT)
        .fencing(fencing)
        .build()
        .expect("valid config")
}

/// Records the attempt and its outcome around an acquisition.
pub async fn acquire(
    rec: &Recorder,
    (client, op): (u32, u64),
    lock: &Redlock,
    resource: &str,
    ttl: Duration,
    retry: bool,
) -> Option<LockGuard> {
    let got = async {
        if retry {
            lock.acquire(resource, ttl).await
        } else {
            lock.try_acquire(resource, ttl).await
        }
    };
    recorded(rec, (client, op), resource, got).await
}

/// What a workload run is asked to do.
#[derive(Clone)]
pub struct Plan {
    pub clients: u32,
    pub run: Duration,
    pub seed: u64,
    /// Client 0 sometimes sleeps past its TTL between acquiring and its critical
    /// section, like a GC pause.
    pub pauser: bool,
    /// All clients are tasks of the same two managers (fenced and unfenced), so the
    /// unfenced lock passes between them in-process (local hand-over); each client is
    /// still a client of its own for the checkers.
    pub shared: bool,
}

/// What a run produced.
pub struct Run {
    pub history: History,
    pub store: Arc<Store>,
    pub end_ns: u64,
}

/// Runs `plan.clients` clients until `plan.run` has passed; each has its own managers,
/// or all share one pair (`plan.shared`).
pub async fn clients(cluster: &Cluster, plan: &Plan, rec: &Recorder) -> Run {
    let store = Arc::new(Store::default());
    let deadline = Instant::now() + plan.run;
    let mut tasks = Vec::new();
    let pair = (manager(cluster, true), manager(cluster, false));
    for client in 0..plan.clients {
        let (fenced, unfenced) = if plan.shared {
            pair.clone()
        } else {
            (manager(cluster, true), manager(cluster, false))
        };
        let rec = rec.clone();
        let store = Arc::clone(&store);
        let pauser = plan.pauser && client == 0;
        let mut rng = StdRng::seed_from_u64(plan.seed ^ (u64::from(client) << 32));
        tasks.push(tokio::spawn(async move {
            let mut op = 0u64;
            while Instant::now() < deadline {
                op += 1;
                let id = (client, op);
                let pick = rng.random_range(0..FENCED.len() + 1);
                let (resource, lock) = match FENCED.get(pick) {
                    Some(r) => (*r, &fenced),
                    None => (UNFENCED, &unfenced),
                };
                let ttl = Duration::from_millis(rng.random_range(TTL_MS));
                if let Some(mut guard) = acquire(&rec, id, lock, resource, ttl, true).await {
                    if pauser && rng.random_bool(0.2) {
                        // The simulated pause: the holder sleeps past its whole TTL.
                        tokio::time::sleep(ttl + Duration::from_millis(100)).await;
                    }
                    // A short critical section, attempted only with validity to spare,
                    // as a careful user would (the pauser does not check).
                    let pause = Duration::from_millis(rng.random_range(1..=8));
                    if pauser || guard.remaining_validity() > pause * 4 {
                        let token = guard.fencing_token();
                        store.increment(&rec, id, resource, token, pause).await;
                    }
                    if rng.random_bool(0.25) && guard.extend(ttl).await.is_ok() {
                        let valid_until_ns = instant_ns(guard.valid_until());
                        rec.record(client, op, resource, EventKind::Extended { valid_until_ns });
                    }
                    release(&rec, id, guard).await;
                }
                // Think time, so that attempts interleave rather than march in step.
                tokio::time::sleep(Duration::from_millis(rng.random_range(0..=5))).await;
            }
        }));
    }
    for t in tasks {
        // Bounded: an attempt is bounded by retries × node timeout, a hold by the TTL.
        tokio::time::timeout(plan.run + Duration::from_secs(20), t)
            .await
            .expect("a client hung")
            .expect("a client panicked");
    }
    Run {
        history: rec.history(),
        store,
        end_ns: now_ns(),
    }
}

/// Lock keys still present on some node, polled briefly: after every client released,
/// only background undos of the last moments may still be running.
pub async fn leftover_keys(cluster: &Cluster) -> Vec<String> {
    // A release or undo on a node waits for the earlier request of its value there (at
    // most one node timeout), then takes its own: two node timeouts and a little, still
    // under the shortest TTL (300 ms), so a leaked key cannot just have expired meanwhile.
    let grace = NODE_TIMEOUT * 2 + Duration::from_millis(50);
    let deadline = Instant::now() + grace;
    let mut conns = support::direct(cluster).await;
    loop {
        let mut left = Vec::new();
        for key in FENCED.iter().chain([&UNFENCED]) {
            let vals = support::values(&mut conns, key).await;
            if vals.iter().any(Option::is_some) {
                left.push((*key).to_owned());
            }
        }
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The liveness bounds of the workload's timings.
///
/// `extra` widens the progress bound for faults whose effects outlast their heal.
pub fn liveness(
    heals_ns: Vec<u64>,
    end_ns: u64,
    leftover_keys: Vec<String>,
    extra: Duration,
) -> LivenessSpec {
    // A round waits at most one node timeout for votes and one for the undo; a fenced
    // acquisition may re-run a round up to 3 times at once (a stale counter) before it
    // counts as a failed attempt, so up to 4 rounds per attempt.
    let attempt = (NODE_TIMEOUT * 2 * 4 + RETRY_DELAY + RETRY_JITTER) * (RETRIES + 1);
    // Minority faults never excuse a lack of progress, so no faults are listed.
    let mut spec = LivenessSpec::new(
        MAX_TTL + RETRY_DELAY + RETRY_JITTER + SLACK + extra,
        attempt + SLACK,
        end_ns,
    );
    spec.heals_ns = heals_ns;
    spec.leftover_keys = leftover_keys;
    spec
}

/// The counters C2 checks: the fenced resources always, the unfenced one on request.
pub fn counters(store: &Store, with_unfenced: bool) -> HashMap<String, u64> {
    let mut out: HashMap<String, u64> = FENCED
        .iter()
        .map(|r| ((*r).to_owned(), store.value(r)))
        .collect();
    if with_unfenced {
        out.insert(UNFENCED.to_owned(), store.value(UNFENCED));
    }
    out
}

/// The seed of a scenario: `REDLOCK_SEED`, else random in a soak, else the fixed default.
pub fn seed(default: u64) -> u64 {
    if let Some(s) = std::env::var("REDLOCK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return s;
    }
    if soak().is_some() {
        return rand::rng().random();
    }
    default
}

/// The soak length per scenario, from `REDLOCK_SOAK_SECS`.
pub fn soak() -> Option<Duration> {
    std::env::var("REDLOCK_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
}

/// Prints one row of the summary table and checks the run against what was expected:
/// exactly the `expected` checks flag (none for a safe scenario).
pub fn verdict(
    name: &str,
    seed: u64,
    history: &History,
    faults: usize,
    report: &Report,
    expected: &[Check],
) {
    let counts: Vec<String> = [Check::Claim, Check::Use, Check::Fencing, Check::Liveness]
        .iter()
        .map(|c| report.count(*c).to_string())
        .collect();
    let expected_txt = if expected.is_empty() {
        "clean".to_owned()
    } else {
        expected
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "| {name:<28} | {seed:>20} | {:>6} | {faults:>6} | {:>11} | {expected_txt} |",
        history.acquisitions(),
        counts.join("/"),
    );
    let flagged = report.flagged();
    if flagged != expected {
        let shown: Vec<String> = report
            .violations
            .iter()
            .take(10)
            .map(ToString::to_string)
            .collect();
        let failures: Vec<String> = history
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Failed { .. }))
            .take(5)
            .map(ToString::to_string)
            .collect();
        // The test harness names each test's thread after the test's path.
        let current = std::thread::current();
        let test = current.name().unwrap_or(name);
        panic!(
            "scenario {name}: expected {expected_txt}, the checkers flagged {flagged:?}:\n  {}\n\
             first failed attempts:\n  {}\n\
             replay: REDLOCK_SEED={seed} cargo test --all-features --test safety {test} -- --exact --nocapture",
            shown.join("\n  "),
            failures.join("\n  ")
        );
    }
}

/// A random minority of `n` nodes (at least one).
pub fn minority(rng: &mut StdRng, n: usize) -> Vec<usize> {
    let k = rng.random_range(1..=(n - 1) / 2);
    let mut all: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = rng.random_range(i..n);
        all.swap(i, j);
    }
    all.truncate(k);
    all
}
