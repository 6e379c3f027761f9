//! Clients in separate OS processes: `src/bin/safety_client.rs` in its loop mode, one to
//! two per episode, on the episode's contended resources through the same fault proxies
//! as the in-process clients. They are stopped (SIGTERM) once the faults are healed and
//! release what they hold; their histories are merged into the run's, which C1 and C3
//! then judge, and a ghost rule holds their keys to node timeout + slack after the stop.
//!
//! Also C1's reading of the explorer's history ([`claims_input`]), which the processes
//! made necessary: the sampler cannot see a process's guard, so between a process and
//! the in-process clients only the history can tell two holders apart.

use std::collections::{BTreeSet, HashMap};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_redlock_harness::checker::holds;
use tokio_redlock_harness::history::{EventKind, History};

use super::oracle::HoldBar;
use super::schedule::{Workload, RESOURCES};

// Starting, stopping and reading the processes of an episode (`start`, `Running`,
// `Stopped`), and C1's reading of the explorer's history (`claims_input`), which names
// `super::rw_and_permits` from there.
mod claims;
mod lifecycle;
use super::rw_and_permits;
pub use claims::claims_input;
pub use lifecycle::start;

/// Client ids of processes start here (in-process clients are numbered from 0).
pub const FIRST_ID: u32 = 1_000;
/// Owner labels of process values start with this, so the ghost rule can tell them apart.
const LABEL: &str = "explore-p";

/// One client process, as drawn from the run's seed.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    pub client: u32,
    pub seed: u64,
    pub fencing: bool,
    pub node_timeout_ms: u64,
    pub retry_count: u32,
    pub retry_delay_ms: u64,
    pub think_ms: u64,
    pub hold_ms: u64,
    pub ttl_ms: u64,
}

impl Spec {
    pub fn label(&self) -> String {
        format!("{LABEL}{}", self.client)
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "process client {}: seed {} fencing({}) node_timeout({}ms) retry_count({}) retry_delay({}ms), think <= {}ms, ttl 100-{}ms, hold <= {}ms",
            self.client, self.seed, self.fencing, self.node_timeout_ms, self.retry_count,
            self.retry_delay_ms, self.think_ms, self.ttl_ms, self.hold_ms
        )
    }
}

/// Whether runs have client processes: yes unless `REDLOCK_EXPLORE_PROCS=0` (to tell
/// whether a finding needs them, or to spare the machine).
pub fn enabled() -> bool {
    std::env::var("REDLOCK_EXPLORE_PROCS").map_or(true, |v| v != "0")
}

/// The processes of each episode, drawn from the run's seed with a generator of their
/// own, so that a seed's in-process schedule is the same with or without them.
pub fn plan(seed: u64, workload: Workload, episodes: usize) -> Vec<Vec<Spec>> {
    // "procs" in ASCII: a different stream from the schedule's.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0070_726f_6373);
    let soak = workload == Workload::Soak;
    (0..episodes)
        .map(|e| {
            let n = rng.random_range(1..=2u32);
            (0..n)
                .map(|k| Spec {
                    client: FIRST_ID + e as u32 * 10 + k,
                    seed: rng.random(),
                    fencing: rng.random_bool(0.5),
                    // The tail's floor (TAIL_MIN_NODE_TIMEOUT_MS): the ghost rule judges
                    // every release of a process.
                    node_timeout_ms: [50, 100, 250][rng.random_range(0..3)],
                    retry_count: rng.random_range(0..=4),
                    retry_delay_ms: rng.random_range(0..=40),
                    // Soak: quick rounds like its in-process operations; else slower.
                    think_ms: if soak { 5 } else { 30 },
                    hold_ms: if soak { 20 } else { 150 },
                    ttl_ms: 2_000,
                })
                .collect()
        })
        .collect()
}

/// The contended resources of an episode: every group's, so a process contends with all.
pub fn resources(prefix: &str, workload: Workload) -> Vec<String> {
    let groups = workload
        .clients()
        .div_ceil(workload.contending().min(workload.clients()));
    (0..groups)
        .flat_map(|g| (0..RESOURCES).map(move |r| format!("{prefix}g{g}r{r}")))
        .collect()
}

/// The run's history: the in-process clients' and the processes' merged. Panics if it
/// holds fewer acquisitions of processes than they `reported`: the merge would be lost.
pub fn merge(in_process: History, processes: Vec<History>, reported: u64) -> History {
    let merged = History::merge(std::iter::once(in_process).chain(processes));
    let found = acquisitions(&merged);
    assert!(
        found >= reported,
        "the merged history has {found} acquisitions of client processes, they reported {reported}"
    );
    merged
}

/// Acquisitions in `h` by process clients.
pub fn acquisitions(h: &History) -> u64 {
    h.events
        .iter()
        .filter(|e| e.client >= FIRST_ID && matches!(e.kind, EventKind::Acquired { .. }))
        .count() as u64
}

/// The processes' holds as timeline bars.
pub fn bars(h: &History) -> Vec<HoldBar> {
    holds(h)
        .into_iter()
        .filter(|hold| hold.client >= FIRST_ID)
        .map(|hold| HoldBar {
            client: hold.client,
            label: hold.resource,
            fenced: hold.token.is_some(),
            acquired_ns: hold.success_ns,
            end_ns: Some(hold.end_ns),
            marks: vec![hold.end_ns],
            end_how: "a client process's hold".into(),
        })
        .collect()
}

/// Whether a stored value was written by a client process.
fn is_process_value(value: &str) -> bool {
    value.starts_with(LABEL)
}

/// The ghost rule of the processes: they were stopped after the heal (once whatever was
/// sent under the faults had landed) and released what they held, so after their node
/// timeout plus slack no key of theirs may be left, except what failed attempts during
/// the faults left on a minority of the nodes (those live until their ttl). `at_stop` is
/// every node's keys just before the stop, `now` after it.
pub fn ghosts(
    at_stop: &BTreeSet<(usize, String, String)>,
    now: &BTreeSet<(usize, String, String)>,
    quorum: usize,
) -> Vec<((usize, String, String), String)> {
    let mut copies: HashMap<(&str, &str), usize> = HashMap::new();
    for (_, key, value) in at_stop {
        *copies.entry((key.as_str(), value.as_str())).or_default() += 1;
    }
    let mut found = Vec::new();
    for entry @ (node, key, value) in now {
        if key.ends_with(":fence") || !is_process_value(value) {
            continue;
        }
        let n = copies.get(&(key.as_str(), value.as_str())).copied();
        let what = match n {
            Some(n) if n >= quorum => format!(
                "node {node} still holds `{key}` = {value}, on {n} nodes when its process was stopped (its lock), after the process released it and node timeout + slack"
            ),
            None => format!(
                "node {node} holds `{key}` = {value}, made by a process after the faults healed and their requests landed, after the process stopped and node timeout + slack"
            ),
            Some(_) => continue,
        };
        found.push((entry.clone(), what));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_redlock_harness::checker::claims;

    fn h(text: &str) -> History {
        History::parse(text).unwrap()
    }

    #[test]
    fn a_seed_gives_the_same_processes() {
        assert_eq!(plan(7, Workload::Soak, 6), plan(7, Workload::Soak, 6));
        assert_ne!(plan(7, Workload::Api, 6), plan(8, Workload::Api, 6));
        for specs in plan(7, Workload::Api, 6) {
            assert!((1..=2).contains(&specs.len()));
        }
    }

    #[test]
    fn every_group_is_contended() {
        assert_eq!(
            resources("x1e0", Workload::Api),
            ["x1e0g0r0", "x1e0g0r1", "x1e0g0r2"]
        );
        let soak = resources("x", Workload::Soak);
        assert_eq!(soak.len(), 4 * RESOURCES as usize);
        assert!(soak.contains(&"xg3r2".to_owned()));
    }

    /// A process's hold, merged with an in-process hold of the same resource, reaches C1.
    #[test]
    fn a_merged_process_hold_is_judged_by_c1() {
        let here = h("10 1 5 xr0 start\n20 1 5 xr0 ok 100 -\n90 1 5 xr0 release\n");
        let process = h("30 1001 1 xr0 start\n40 1001 1 xr0 ok 200 7\n150 1001 1 xr0 release\n");
        let merged = History::merge([here.clone(), process]);
        let v = claims(&claims_input(&merged));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("client 1001"), "{}", v[0]);
        assert!(claims(&claims_input(&here)).is_empty());
    }

    #[test]
    fn shared_kinds_are_left_to_c5_and_c6() {
        // Two readers of `xg0rw0`, two permits of `xg0sem`: C1 has nothing to say; the
        // same overlap on an exclusive resource is a violation.
        let shared = "10 1 1 xg0rw0 start\n20 1 1 xg0rw0 ok 100 -\n\
                      30 2 1 xg0rw0 start\n40 2 1 xg0rw0 ok 100 -\n\
                      10 3 1 xg0sem start\n20 3 1 xg0sem ok 100 -\n\
                      30 4 1 xg0sem start\n40 4 1 xg0sem ok 100 -\n";
        assert!(claims(&claims_input(&h(shared))).is_empty());
        let exclusive = shared.replace("rw0", "r0").replace("sem", "r1");
        assert_eq!(claims(&claims_input(&h(&exclusive))).len(), 2);
    }

    #[test]
    fn a_shortened_claim_ends_where_the_holder_then_believes() {
        // Client 1 shortens its claim to 50 at 30 (under another op), client 2 takes the
        // lock at 60: no overlap. Lengthened to 80 instead, it overlaps.
        let shorter = "10 1 1 xr0 start\n20 1 1 xr0 ok 100 -\n30 1 2 xr0 extend 50\n\
                       55 2 1 xr0 start\n60 2 1 xr0 ok 200 -\n";
        assert!(claims(&claims_input(&h(shorter))).is_empty());
        let longer = shorter.replace("extend 50", "extend 80");
        assert_eq!(claims(&claims_input(&h(&longer))).len(), 1);
        // An extension after the claim lapsed (at 100) does not revive it.
        let late = "10 1 1 xr0 start\n20 1 1 xr0 ok 100 -\n150 1 2 xr0 extend 300\n\
                    155 2 1 xr0 start\n160 2 1 xr0 ok 200 -\n";
        assert!(claims(&claims_input(&h(late))).is_empty());
    }

    #[test]
    fn a_late_release_of_an_earlier_hold_does_not_end_the_next() {
        // Client 1's op 1 ended at 30; a lease's loss of it, recorded at 50, must not end
        // op 2's claim, which client 2's overlaps.
        let text = "10 1 1 xr0 start\n20 1 1 xr0 ok 100 -\n30 1 1 xr0 release\n\
                    40 1 2 xr0 start\n45 1 2 xr0 ok 300 -\n50 1 1 xr0 release\n\
                    60 2 1 xr0 start\n70 2 1 xr0 ok 400 -\n";
        let v = claims(&claims_input(&h(text)));
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("client 1 op 2"), "{}", v[0]);
    }

    #[test]
    fn many_claims_each_resource_and_empty_claims_are_left_out() {
        let many = h("10 1 1 xr0+xr1 start\n20 1 1 xr0+xr1 ok 100 -\n\
                      30 2 1 xr1 start\n40 2 1 xr1 ok 120 -\n\
                      50 3 1 xr2 start\n60 3 1 xr2 ok 55 -\n");
        let input = claims_input(&many);
        let resources: BTreeSet<&str> = input.events.iter().map(|e| e.resource.as_str()).collect();
        assert_eq!(resources, BTreeSet::from(["xr0", "xr1"]));
        let v = claims(&input);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].what.contains("`xr1`"), "{}", v[0]);
    }

    #[test]
    fn process_ghosts_are_its_locks_and_its_keys_made_after_the_heal() {
        let entry = |n: usize, k: &str, v: &str| (n, k.to_owned(), v.to_owned());
        let held = "explore-p1001:aa";
        let failed = "explore-p1001:bb";
        let at_stop = BTreeSet::from([
            entry(0, "k", held),
            entry(1, "k", held),
            entry(2, "k", held),
            entry(3, "k", failed),
            entry(4, "j", "someone-else"),
        ]);
        let now = BTreeSet::from([
            entry(2, "k", held),
            entry(3, "k", failed),
            entry(4, "j", "someone-else"),
            entry(0, "k2", "explore-p1002:cc"),
            entry(0, "k:fence", "explore-p1002:dd"),
        ]);
        let found: Vec<_> = ghosts(&at_stop, &now, 3)
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        assert_eq!(
            found,
            [entry(0, "k2", "explore-p1002:cc"), entry(2, "k", held)]
        );
    }
}

/// A real client process on a real cluster, as the driver runs one.
#[cfg(test)]
mod live {
    use std::time::Duration;

    use tokio_redlock_harness::checker::claims;
    use tokio_redlock_harness::history::{now_ns, EventKind, Recorder};

    use super::super::direct::Direct;
    use super::super::driver::snapshot;
    use super::*;

    /// Its acquisitions reach the merged history and C1's input, each is released, it
    /// leaves no key behind, and an in-process claim made up to overlap its holds is
    /// caught by C1 once per hold.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_process_history_reaches_c1_and_leaves_no_key() {
        let cluster = crate::support::cluster(3).await;
        let spec = Spec {
            client: FIRST_ID,
            seed: 1,
            fencing: true,
            node_timeout_ms: 100,
            retry_count: 2,
            retry_delay_ms: 10,
            think_ms: 2,
            hold_ms: 20,
            ttl_ms: 2_000,
        };
        let running = start(&[spec], &cluster.urls(), &["pr0".to_owned()]).await;
        // Made up after the start, which may first have to build the client binary.
        // The made-up claim: client 1 holds `pr0` for the next 10 s.
        let here = Recorder::new();
        here.record(1, 1, "pr0", EventKind::Start);
        let valid_until_ns = now_ns() + 10_000_000_000;
        let token = None;
        here.record(
            1,
            1,
            "pr0",
            EventKind::Acquired {
                valid_until_ns,
                token,
            },
        );
        // Let it do some rounds; it runs until stopped.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut direct: Vec<Direct> = cluster.direct_urls().into_iter().map(Direct::new).collect();
        let at_stop = snapshot(&mut direct).await;
        let stopped = running.stop().await;
        assert!(stopped.problems.is_empty(), "{:?}", stopped.problems);
        assert!(
            stopped.reported > 0,
            "the process acquired nothing in 500 ms"
        );
        let process = History::merge(stopped.histories);
        let merged = History::merge([here.history(), process.clone()]);
        assert_eq!(acquisitions(&merged), stopped.reported);
        let released = process
            .events
            .iter()
            .filter(|e| matches!(e.kind, EventKind::Released));
        assert_eq!(
            released.count() as u64,
            stopped.reported,
            "every hold released"
        );
        assert!(
            claims(&claims_input(&process)).is_empty(),
            "the process alone is clean"
        );
        let input = claims_input(&merged);
        let process_claims = input.events.iter().filter(|e| e.client >= FIRST_ID);
        assert_eq!(process_claims.count() as u64, 2 * stopped.reported);
        let v = claims(&input);
        assert_eq!(v.len() as u64, stopped.reported, "{v:?}");
        assert!(v
            .iter()
            .all(|v| v.what.contains(&format!("client {FIRST_ID} "))));
        // Nothing of it is left once its node timeout + slack has passed.
        tokio::time::sleep(Duration::from_millis(100 + 200)).await;
        let now = snapshot(&mut direct).await;
        assert!(ghosts(&at_stop, &now, 2).is_empty(), "{now:?}");
        assert!(
            now.iter().all(|(_, k, _)| k.ends_with(":fence")),
            "only the fencing counter stays: {now:?}"
        );
    }
}
