//! A model check of the fencing protocol of the fenced acquire (`FENCED_ACQUIRE` in
//! `scripts.rs`, driven by `Redlock::lock_checked`), against the property the crate
//! promises: **a successful acquisition that starts after another one succeeded gets a
//! strictly greater token** (real-time order), and no two successes share a token.
//!
//! N in-memory nodes, each with a counter and a lock key, run the per-node script
//! atomically. Several clients with their own (stale) counter caches run the client side
//! with the crate's own retry policy (`redlock/policy.rs`, the code `acquire` runs): the
//! first candidate is cache + 1, STALE replies raise it, a win needs a quorum of OK
//! replies, and the policy decides re-rounds and when an acquisition gives up.
//! A seeded scheduler interleaves everything at random: requests and replies are
//! delivered in any order, lost before or after they ran (so quorums are partial and
//! differ from attempt to attempt), stragglers of decided attempts still run, lock keys
//! expire, holders release. Thousands of runs find no violation, while the same search
//! catches the naive "max of per-node INCR" variant and the strict protocol on nodes
//! that forget their counter (the persistence assumption of `docs/safety.md`).
//!
//! With several resources, the clients lock a random one each time and the promise is
//! checked per resource: each resource with a counter of its own, all of them on one
//! shared counter (`shared_fencing_counter`), and clients that disagree about the rule
//! (one draws from per-resource counters, the others from the shared one), which the
//! search must catch.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::quorum::{Tally, Vote};
use crate::redlock::policy::{AttemptOutcome, Policy, State, Step};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Protocol {
    /// The crate's protocol: a conditional write of the candidate, atomic with the lock.
    Strict,
    /// The strict protocol, but nodes may restart empty (no `appendfsync always`).
    StrictForgetful,
    /// Each node INCRs its counter; the token is the max over the quorum's replies.
    IncrMax,
}

/// Which counter each resource's acquisitions bid against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Counters {
    /// Each resource its own counter (the default).
    PerResource,
    /// One counter for every resource (`shared_fencing_counter`).
    Shared,
    /// Client 0 uses per-resource counters, the others the shared one: a rule that
    /// not every client configured.
    Disagreeing,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reply {
    Ok(u64),
    Stale(u64),
    Locked,
    /// The request or its reply was lost: the client sees a timeout.
    Failed,
}

#[derive(Clone, Debug, Default)]
struct ModelNode {
    /// Counter 0 is the shared one; counter `1 + r` is resource `r`'s own.
    counters: Vec<u64>,
    /// Per resource, the attempt whose value the lock key holds.
    locks: Vec<Option<u64>>,
}

/// What one request asks of a node: which lock key, which counter.
#[derive(Clone, Copy, Debug)]
struct Target {
    resource: usize,
    counter: usize,
}

impl ModelNode {
    fn new(resources: usize) -> Self {
        Self {
            counters: vec![0; resources + 1],
            locks: vec![None; resources],
        }
    }

    /// One run of the per-node script, atomic like a Lua script on Redis.
    fn run(&mut self, protocol: Protocol, attempt: u64, on: Target, candidate: u64) -> Reply {
        let counter = &mut self.counters[on.counter];
        if protocol != Protocol::IncrMax && *counter >= candidate {
            return Reply::Stale(*counter);
        }
        let lock = &mut self.locks[on.resource];
        if lock.is_some_and(|holder| holder != attempt) {
            return Reply::Locked;
        }
        *lock = Some(attempt);
        if protocol == Protocol::IncrMax {
            *counter += 1;
        } else {
            *counter = candidate;
        }
        Reply::Ok(*counter)
    }
}

enum Message {
    Request {
        client: usize,
        attempt: u64,
        node: usize,
        on: Target,
        candidate: u64,
    },
    Reply {
        client: usize,
        attempt: u64,
        reply: Reply,
    },
}

struct Attempt {
    id: u64,
    on: Target,
    candidate: u64,
    start: u64,
    outstanding: usize,
    ok: Vec<u64>,
    stale: Option<u64>,
    tally: Tally,
}

#[derive(Default)]
struct Client {
    /// Per counter, the highest value this client has seen (the manager's fence cache).
    cache: Vec<u64>,
    /// The resource of the acquisition under way.
    resource: usize,
    /// The policy state of the acquisition under way (its candidate evolves across its
    /// retries); `None` between acquisitions.
    state: Option<State>,
    attempt: Option<Attempt>,
    holding: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
struct Win {
    resource: usize,
    start: u64,
    end: u64,
    token: u64,
}

struct Sim {
    protocol: Protocol,
    counters: Counters,
    resources: usize,
    rng: StdRng,
    nodes: Vec<ModelNode>,
    clients: Vec<Client>,
    in_flight: Vec<Message>,
    wins: Vec<Win>,
    step: u64,
    next_attempt: u64,
    /// Chance that a request, or its reply, is lost.
    loss: f64,
}

impl Sim {
    fn new(protocol: Protocol, nodes: usize, clients: usize, seed: u64) -> Self {
        Self::with_resources(protocol, Counters::PerResource, 1, nodes, clients, seed)
    }

    fn with_resources(
        protocol: Protocol,
        counters: Counters,
        resources: usize,
        nodes: usize,
        clients: usize,
        seed: u64,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let loss = rng.random_range(0.0..0.4);
        Self {
            protocol,
            counters,
            resources,
            rng,
            nodes: vec![ModelNode::new(resources); nodes],
            clients: (0..clients)
                .map(|_| Client {
                    cache: vec![0; resources + 1],
                    ..Client::default()
                })
                .collect(),
            in_flight: Vec::new(),
            wins: Vec::new(),
            step: 0,
            next_attempt: 0,
            loss,
        }
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    fn run(&mut self, steps: u64) {
        for _ in 0..steps {
            self.step += 1;
            let roll: f64 = self.rng.random();
            if roll < 0.6 && !self.in_flight.is_empty() {
                let i = self.rng.random_range(0..self.in_flight.len());
                let msg = self.in_flight.swap_remove(i);
                self.deliver(msg);
            } else if roll < 0.66 {
                // A lock key runs out its ttl on one node.
                let n = self.rng.random_range(0..self.nodes.len());
                let r = self.pick_resource();
                self.nodes[n].locks[r] = None;
            } else if roll < 0.67 && self.protocol == Protocol::StrictForgetful {
                // A node restarts without its data.
                let n = self.rng.random_range(0..self.nodes.len());
                self.nodes[n] = ModelNode::new(self.resources);
            } else {
                let c = self.rng.random_range(0..self.clients.len());
                self.client_acts(c);
            }
        }
    }

    fn client_acts(&mut self, c: usize) {
        if self.clients[c].attempt.is_some() {
            return;
        }
        if let Some(id) = self.clients[c].holding {
            if self.rng.random_bool(0.5) {
                self.release(id);
                self.clients[c].holding = None;
            }
            return;
        }
        self.start_attempt(c);
    }

    /// A random resource; no draw with one, so single-resource runs are as before.
    fn pick_resource(&mut self) -> usize {
        if self.resources == 1 {
            0
        } else {
            self.rng.random_range(0..self.resources)
        }
    }

    /// The counter client `c` bids against for `resource`.
    fn counter_of(&self, c: usize, resource: usize) -> usize {
        match self.counters {
            Counters::PerResource => 1 + resource,
            Counters::Shared => 0,
            Counters::Disagreeing if c == 0 => 1 + resource,
            Counters::Disagreeing => 0,
        }
    }

    fn start_attempt(&mut self, c: usize) {
        if self.clients[c].state.is_none() {
            // A new acquisition: of which resource.
            self.clients[c].resource = self.pick_resource();
        }
        let resource = self.clients[c].resource;
        let on = Target {
            resource,
            counter: self.counter_of(c, resource),
        };
        let client = &mut self.clients[c];
        let cache = client.cache[on.counter];
        let state = client.state.get_or_insert_with(|| State::new(Some(cache)));
        state.begin();
        let candidate = state.candidate().unwrap_or(cache + 1);
        self.next_attempt += 1;
        let id = self.next_attempt;
        client.attempt = Some(Attempt {
            id,
            on,
            candidate,
            start: self.step,
            outstanding: self.nodes.len(),
            ok: Vec::new(),
            stale: None,
            tally: Tally::new(self.nodes.len()),
        });
        for node in 0..self.nodes.len() {
            let msg = if self.rng.random_bool(self.loss) {
                Message::Reply {
                    client: c,
                    attempt: id,
                    reply: Reply::Failed,
                }
            } else {
                Message::Request {
                    client: c,
                    attempt: id,
                    node,
                    on,
                    candidate,
                }
            };
            self.in_flight.push(msg);
        }
    }

    /// Compare-and-delete of the attempt's lock key on every node (release and undo).
    fn release(&mut self, attempt: u64) {
        for lock in self.nodes.iter_mut().flat_map(|n| n.locks.iter_mut()) {
            if *lock == Some(attempt) {
                *lock = None;
            }
        }
    }

    fn deliver(&mut self, msg: Message) {
        match msg {
            Message::Request {
                client,
                attempt,
                node,
                on,
                candidate,
            } => {
                let reply = self.nodes[node].run(self.protocol, attempt, on, candidate);
                let reply = if self.rng.random_bool(self.loss) {
                    Reply::Failed
                } else {
                    reply
                };
                self.in_flight.push(Message::Reply {
                    client,
                    attempt,
                    reply,
                });
            }
            Message::Reply {
                client,
                attempt,
                reply,
            } => self.on_reply(client, attempt, reply),
        }
    }

    fn on_reply(&mut self, c: usize, attempt: u64, reply: Reply) {
        let quorum = self.quorum();
        let protocol = self.protocol;
        let Some(a) = self.clients[c].attempt.as_mut() else {
            return;
        };
        if a.id != attempt {
            // A straggler of an attempt already decided: nobody listens.
            return;
        }
        a.outstanding -= 1;
        match reply {
            Reply::Ok(counter) => {
                a.ok.push(counter);
                a.tally.record(Vote::Yes);
            }
            Reply::Stale(counter) => {
                a.stale = Some(a.stale.map_or(counter, |s| s.max(counter)));
                a.tally.record(Vote::No);
            }
            Reply::Locked => a.tally.record(Vote::No),
            Reply::Failed => a.tally.record(Vote::Failed),
        }
        if a.ok.len() >= quorum {
            let token = match protocol {
                Protocol::IncrMax => a.ok.iter().copied().max().unwrap_or(0),
                Protocol::Strict | Protocol::StrictForgetful => a.candidate,
            };
            let (start, on) = (a.start, a.on);
            let client = &mut self.clients[c];
            client.cache[on.counter] = client.cache[on.counter].max(token);
            client.state = None;
            client.holding = Some(attempt);
            client.attempt = None;
            self.wins.push(Win {
                resource: on.resource,
                start,
                end: self.step,
                token,
            });
        } else if a.ok.len() + a.outstanding < quorum {
            let (stale, on) = (a.stale, a.on);
            let outcome = AttemptOutcome::Lost {
                tally: a.tally,
                stale,
                locked: 0,
                conflict: 0,
            };
            let client = &mut self.clients[c];
            client.attempt = None;
            if let Some(seen) = stale {
                client.cache[on.counter] = client.cache[on.counter].max(seen);
            }
            // The crate's policy decides: a re-round with the raised candidate, a retry
            // with the same one, or giving up (the next acquisition starts again from
            // the cache).
            let policy = Policy {
                retries: 3,
                deadline: None,
                delay: Duration::ZERO,
                jitter: Duration::ZERO,
                wake: false,
                single: false,
            };
            if let Some(state) = client.state.as_mut() {
                let step = policy.next(state, &outcome, Instant::now(), &mut self.rng);
                if matches!(step, Step::GiveUp(_) | Step::Won) {
                    client.state = None;
                }
            }
            self.release(attempt);
        }
    }

    /// The first pair (earlier, later) of acquisitions of one resource that breaks the
    /// promise, if any.
    fn violation(&self) -> Option<(Win, Win)> {
        for a in &self.wins {
            for b in self.wins.iter().filter(|b| b.resource == a.resource) {
                let ordered = a.end < b.start && b.token <= a.token;
                let shared = a.start != b.start && a.token == b.token;
                if ordered || shared {
                    return Some((*a, *b));
                }
            }
        }
        None
    }
}

/// Seeded runs per search: each is one random interleaving of a few dozen acquisitions
/// by 2-4 clients on 3 or 5 nodes, so a search covers tens of thousands of them.
const RUNS: u64 = 2_000;
/// Scheduler steps per run: long enough for counters to drift apart between nodes.
const STEPS: u64 = 300;

/// Runs `runs` seeded simulations; returns how many broke the promise, and how many
/// successful acquisitions they made in all.
fn search(protocol: Protocol, runs: u64) -> (u64, usize) {
    search_over(protocol, Counters::PerResource, 1, runs)
}

/// [`search`] with `resources` resources whose counters are `counters`.
fn search_over(
    protocol: Protocol,
    counters: Counters,
    resources: usize,
    runs: u64,
) -> (u64, usize) {
    let mut broken = 0;
    let mut wins = 0;
    for seed in 0..runs {
        let nodes = if seed % 2 == 0 { 3 } else { 5 };
        let clients = 2 + (seed % 3) as usize;
        let mut sim = if resources == 1 {
            Sim::new(protocol, nodes, clients, seed)
        } else {
            Sim::with_resources(protocol, counters, resources, nodes, clients, seed)
        };
        sim.run(STEPS);
        wins += sim.wins.len();
        if let Some((a, b)) = sim.violation() {
            if std::env::var_os("MODEL_DEBUG").is_some() {
                eprintln!("{protocol:?} seed {seed}: {a:?} then {b:?}");
            }
            broken += 1;
        }
    }
    (broken, wins)
}

#[test]
fn strict_protocol_never_breaks_the_order() {
    let (broken, wins) = search(Protocol::Strict, RUNS);
    assert_eq!(broken, 0);
    // The search must exercise the protocol, not just fail to acquire.
    assert!(
        wins > RUNS as usize * 4,
        "only {wins} successful acquisitions"
    );
}

/// Issue 21, item 4: resources on one shared counter keep the promise per resource, as
/// with counters of their own; clients that disagree about the rule break it.
#[test]
fn a_shared_counter_keeps_the_order_per_resource() {
    for counters in [Counters::PerResource, Counters::Shared] {
        let (broken, wins) = search_over(Protocol::Strict, counters, 3, RUNS);
        assert_eq!(broken, 0, "{counters:?}");
        assert!(wins > RUNS as usize * 4, "{counters:?}: only {wins} wins");
    }
    let (broken, _) = search_over(Protocol::Strict, Counters::Disagreeing, 3, RUNS);
    assert!(
        broken > 0,
        "the search missed clients that disagree about the counter"
    );
}

#[test]
fn incr_max_is_caught() {
    let (broken, _) = search(Protocol::IncrMax, RUNS);
    assert!(broken > 0, "the search missed the INCR-max flaw");
}

#[test]
fn strict_protocol_needs_nodes_to_keep_their_counters() {
    let (broken, _) = search(Protocol::StrictForgetful, RUNS);
    assert!(broken > 0, "the search missed a forgotten counter");
}

/// The one resource and its own counter, for the hand-driven runs below.
const ONLY: Target = Target {
    resource: 0,
    counter: 1,
};

/// One acquisition reaching exactly the nodes of `quorum`, from a client whose cache
/// is empty (the stalest possible): returns the token.
fn acquire_via(nodes: &mut [ModelNode], protocol: Protocol, quorum: &[usize], id: u64) -> u64 {
    let mut candidate = 1;
    loop {
        let replies: Vec<Reply> = quorum
            .iter()
            .map(|&n| nodes[n].run(protocol, id, ONLY, candidate))
            .collect();
        let oks: Vec<u64> = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Ok(c) => Some(*c),
                _ => None,
            })
            .collect();
        if oks.len() == quorum.len() {
            for &n in quorum {
                nodes[n].locks[0] = None;
            }
            return match protocol {
                Protocol::IncrMax => oks.into_iter().max().unwrap_or(0),
                Protocol::Strict | Protocol::StrictForgetful => candidate,
            };
        }
        let seen = replies
            .iter()
            .filter_map(|r| match r {
                Reply::Stale(c) => Some(*c),
                _ => None,
            })
            .max()
            .unwrap_or(candidate);
        candidate = seen + 1;
    }
}

/// The counterexample of the fencing issue, on nodes a, b, c: five acquisitions via
/// {a, b}, two via {a, c}, one via {b, c}.
fn counterexample(protocol: Protocol) -> Vec<u64> {
    let mut nodes = vec![ModelNode::new(1); 3];
    let quorums = [[0, 1]; 5].into_iter().chain([[0, 2]; 2]).chain([[1, 2]]);
    quorums
        .enumerate()
        .map(|(i, q)| acquire_via(&mut nodes, protocol, &q, i as u64))
        .collect()
}

#[test]
fn the_issue_counterexample() {
    let naive = counterexample(Protocol::IncrMax);
    assert_eq!(naive, [1, 2, 3, 4, 5, 6, 7, 6], "token 6 after 7");
    let strict = counterexample(Protocol::Strict);
    assert!(strict.windows(2).all(|w| w[0] < w[1]), "{strict:?}");
    assert_eq!(strict, [1, 2, 3, 4, 5, 6, 7, 8]);
}
