//! The protocol as a stateright [`Model`]: N nodes running the crate's scripts, clients
//! following the crate's rules, and a network that may deliver anything late or never.
//!
//! - **Time** is global and advances in whole ms (`Tick`) up to a horizon. Each node's
//!   clock is the global time plus a skew: at a tick, one node's clock may advance two
//!   ms instead of one, up to `max_skew` ahead in all: a node clock that runs fast,
//!   which makes its keys expire early. The crate's drift (`ttl × factor + 2 ms`) must
//!   cover it; clients measure time exactly.
//! - **The network** is the multiset of messages in flight. Any request or reply may be
//!   delivered at any later moment: after its sender gave up, after the round it belongs
//!   to was decided, after a release, after a newer request of the same owner. A message
//!   never delivered is a lost one, so loss needs no action of its own.
//! - **Replies** are read by their client at once or never. A reply read late is, to the
//!   client, a reply read at once by a client that decides later: its belief runs from
//!   the round's start either way, so it can only believe for less of the same window,
//!   and a client may give up at any moment anyway. Folding the reply into the delivery
//!   removes half the messages, and with them most of the interleavings.
//! - **Clients** follow [`client`](crate::client) and decide with the crate's
//!   `quorum.rs`.
//! - **A restart with its data** (AOF with `appendfsync always`) keeps the node's keys
//!   and only cuts connections, and **a paused node** runs nothing for a while, then
//!   everything: both are orders the network above already delivers in, so neither is a
//!   step of its own.
//! - **A restart without its data** (`Wipe`, at most [`Config::wipes`] per run) empties
//!   the node; with [`Config::quarantine`] its votes do not count for that long, as the
//!   crate's restart quarantine does (`Node::counted`), every client judging it alike.
//! - **A late-delivery bound** ([`Config::late_bound`]), when set, drops the requests
//!   older than it; it is what [`KEYS_EXPIRE`] is measured against.

use stateright::{Model, Property};

use crate::client::{Client, Hold, Phase};
use crate::keyspace::{Keyspace, Reply};
use crate::lua;
use crate::scripts::Scripts;

/// The lock key of the one resource every client wants.
pub const LOCK: &str = "lock";
/// The fencing counter beside it (fenced kind).
pub const FENCE: &str = "lock:fence";

/// The slot key of permit `slot` (permit kind).
pub fn slot_key(slot: u8) -> String {
    format!("sem:permit:{slot}")
}

/// The owner value of a client's attempt: fresh per attempt, as in the crate.
pub fn value(client: u8, attempt: u8) -> String {
    format!("c{client}a{attempt}")
}

/// Which primitive the clients use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `acquire`: the lock key alone (`ACQUIRE_ONE`, `EXTEND`, `RELEASE`).
    Exclusive,
    /// `lock_checked`: the lock key and its fencing counter (`FENCED_ACQUIRE`).
    Fenced,
    /// A semaphore of this many permits (`PERMIT_ACQUIRE` over its slot keys).
    Permits(u8),
    /// The reader-writer lock: the first `readers` clients take read locks, the last
    /// `exclusives` plain exclusive locks on the same key, the others write locks
    /// (`READ_*`, `WRITE_*`, `INTENT_CLEAR`; see [`rw`](crate::rw)).
    ReadWrite {
        /// How many of the clients (the first ones) are readers.
        readers: u8,
        /// How many of the clients (the last ones) take exclusive locks.
        exclusives: u8,
    },
}

/// One model: the primitive, the bounds, the scripts, and the client's rules.
#[derive(Clone, Debug)]
pub struct Config {
    /// The primitive the clients use.
    pub kind: Kind,
    /// How many nodes.
    pub nodes: u8,
    /// How many clients.
    pub clients: u8,
    /// The last global time (ms) the model reaches.
    pub horizon: u64,
    /// The most ms one tick may jump (1: time passes ms by ms). A jump of several ms
    /// shortens the paths to a late event at the price of the moments in between.
    pub max_tick: u64,
    /// The ttl (ms) of each acquisition.
    pub acquire_ttl: u64,
    /// The ttls (ms) an extension may ask for.
    pub extend_ttls: Vec<u64>,
    /// Acquisition attempts per client.
    pub attempts: u8,
    /// Extensions per client.
    pub extends: u8,
    /// How many clients (the first ones) may extend at all.
    pub extenders: u8,
    /// Whether holders may release, and acquirers give up (the undo): off only in the
    /// tests that look for one counterexample, to get there sooner.
    pub releases: bool,
    /// How far (ms) a node's clock may run ahead of the global time.
    pub max_skew: u8,
    /// Start from this state instead of the empty one (a search that continues another).
    pub start: Option<State>,
    /// Explore every execution of at most this many steps (`None`: all of them).
    pub max_steps: Option<usize>,
    /// Stop once this property is violated (for the tests that expect it to be).
    pub stop_at: Option<&'static str>,
    /// Search depth first, with the nodes taken as interchangeable (symmetry reduction):
    /// finds a deep counterexample sooner, but neither shortest nor within `max_steps`.
    pub depth_first: bool,
    /// The drift factor (the crate's default: 1 %).
    pub drift_factor: f64,
    /// The script texts (the crate's, or a mutant in place of one).
    pub scripts: Scripts,
    /// The `incr_max` client rule: the token is the highest counter of the yes replies,
    /// not the candidate.
    pub token_from_counters: bool,
    /// The `semaphore_count` client rule: a permit is won on a quorum of grants of any
    /// slot, not of one slot.
    pub count_any_slot: bool,
    /// The `quorum_half` client rule: half the nodes (`n / 2`, no majority) count as a
    /// quorum when a round is decided.
    pub quorum_half: bool,
    /// How long (ms) a refused reader keeps its place and a refused writer its intent
    /// (reader-writer lock: the scripts' patience argument).
    pub patience: u64,
    /// How many times in a run a node may lose its data (a restart without it).
    pub wipes: u8,
    /// The restart quarantine: a node that lost its data does not vote for this many ms
    /// (the crate requires at least the largest ttl); `None`: it votes at once (unsafe).
    pub quarantine: Option<u64>,
    /// The writers of a reader-writer run are fenced: `WRITE_ACQUIRE` with the lock's
    /// fencing counter and a candidate, as `lock_checked` writers send it.
    pub fenced_writers: bool,
    /// Extensions of exclusive and write locks heal (`heal_on_extend`, the crate's
    /// default): `EXTEND_HEAL` to each node out of restart quarantine when sent, the
    /// plain `EXTEND` to the others. Off: `EXTEND` everywhere.
    pub heal: bool,
    /// The late-delivery bound (ms): a request runs at most this long after it was sent,
    /// or never. `None`: at any later time up to the horizon. With a bound the model
    /// also checks [`KEYS_EXPIRE`].
    pub late_bound: Option<u64>,
}

/// A request as it travels: which client sent it and for which of its rounds (`0`: a
/// release or undo, whose reply nobody waits for).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    /// An acquisition attempt's request.
    Acquire {
        /// The attempt (its value is `value(client, attempt)`).
        attempt: u8,
        /// The ttl (ms).
        ttl: u64,
        /// The fencing candidate (fenced; else 0).
        candidate: u64,
    },
    /// An extension of what `attempt` holds to `ttl` ms from now.
    Extend {
        /// The attempt whose value is extended.
        attempt: u8,
        /// The new ttl (ms).
        ttl: u64,
        /// Whether this node is sent the healing extension.
        heal: bool,
    },
    /// A holder's release.
    Release {
        /// The attempt whose value is released.
        attempt: u8,
    },
    /// The undo of a lost, late or abandoned attempt (for all but a writer the same
    /// script as the release).
    Undo {
        /// The attempt undone.
        attempt: u8,
    },
    /// A reader or writer that is done waiting withdraws its place or intent
    /// (`READ_WAIT_CLEAR`, `INTENT_CLEAR`).
    Withdraw,
}

/// A request in flight from `client` to `node`, for the client's round `round`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Msg {
    /// The node it goes to.
    pub node: u8,
    /// The client that sent it.
    pub client: u8,
    /// The client's round it belongs to (0: nobody waits on its reply).
    pub round: u8,
    /// When it was sent (global ms), kept only with a [`Config::late_bound`] (else 0,
    /// so that equal situations stay equal states).
    pub sent: u64,
    /// What it asks.
    pub op: Op,
}

/// One node: its clock's lead over the global clock, its keys, and its restart
/// quarantine.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Node {
    /// How far (ms) its clock runs ahead of the global one.
    pub skew: u8,
    /// Its keys.
    pub keys: Keyspace,
    /// The global ms until which its votes do not count (it lost its data; 0: none).
    pub quarantined_until: u64,
}

/// The whole system at one moment.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    /// Global time, ms.
    pub now: u64,
    /// The nodes.
    pub nodes: Vec<Node>,
    /// The clients.
    pub clients: Vec<Client>,
    /// The messages in flight, kept sorted so that equal multisets hash alike.
    pub net: Vec<Msg>,
    /// The highest fencing token of an acquisition won so far.
    pub top_token: u64,
    /// How many nodes lost their data so far.
    pub wipes: u8,
}

impl State {
    /// Puts `msg` in flight.
    pub fn send(&mut self, msg: Msg) {
        let at = self.net.binary_search(&msg).unwrap_or_else(|i| i);
        self.net.insert(at, msg);
    }

    /// A node's clock.
    pub fn node_now(&self, node: usize) -> u64 {
        self.now + u64::from(self.nodes[node].skew)
    }
}

/// One step of the system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// `ms` pass; on node `fast`, if any, one more (its clock runs ahead).
    Tick {
        /// How many ms pass.
        ms: u64,
        /// The node whose clock gains a ms, if any.
        fast: Option<u8>,
    },
    /// A client starts an acquisition attempt.
    Acquire(u8),
    /// A client extends its hold with this ttl.
    Extend(u8, u64),
    /// A client releases what it holds.
    Release(u8),
    /// A client stops waiting for its round: a timeout, or the caller's future dropped.
    GiveUp(u8),
    /// A node runs a request; with `heard`, its client reads the reply now, else never.
    Deliver {
        /// The request.
        msg: Msg,
        /// Whether its client reads the reply.
        heard: bool,
    },
    /// A node restarts without its data: every key is gone, and with a quarantine it
    /// does not vote for that long.
    Wipe(u8),
}

impl Config {
    /// The keys and arguments of a request, and the script that runs it.
    fn call(&self, client: u8, op: &Op) -> (&'static str, Vec<String>, Vec<String>) {
        let s = &self.scripts;
        let lock = || vec![LOCK.to_owned()];
        match (self.kind, op) {
            (Kind::ReadWrite { .. }, _) => crate::rw::call(self, client, op),
            (Kind::Exclusive, Op::Acquire { attempt, ttl, .. }) => (
                s.acquire,
                lock(),
                vec![value(client, *attempt), ttl.to_string()],
            ),
            (
                Kind::Fenced,
                Op::Acquire {
                    attempt,
                    ttl,
                    candidate,
                },
            ) => {
                let args = vec![
                    value(client, *attempt),
                    ttl.to_string(),
                    candidate.to_string(),
                ];
                (s.fenced, vec![LOCK.to_owned(), FENCE.to_owned()], args)
            }
            (Kind::Permits(n), Op::Acquire { attempt, ttl, .. }) => {
                let slots = (0..n).map(slot_key).collect();
                (
                    s.permit,
                    slots,
                    vec![value(client, *attempt), ttl.to_string()],
                )
            }
            (_, Op::Extend { attempt, ttl, heal }) => (
                if *heal { s.extend_heal } else { s.extend },
                lock(),
                vec![value(client, *attempt), ttl.to_string()],
            ),
            (_, Op::Withdraw) => unreachable!("only readers and writers wait"),
            (kind, Op::Release { attempt } | Op::Undo { attempt }) => {
                let keys = match kind {
                    Kind::Permits(n) => (0..n).map(slot_key).collect(),
                    _ => lock(),
                };
                (
                    s.release,
                    keys,
                    vec![value(client, *attempt), String::new()],
                )
            }
        }
    }

    /// Runs a request on its node, as the node's script would, and returns the reply.
    pub fn apply(&self, state: &mut State, node: u8, client: u8, op: &Op) -> Reply {
        let (script, keys, args) = self.call(client, op);
        let now = state.node_now(node.into());
        lua::eval(
            script,
            &mut state.nodes[usize::from(node)].keys,
            now,
            &keys,
            &args,
        )
    }

    /// Sends `op` from `client` to every node.
    pub fn fan_out(&self, state: &mut State, client: u8, round: u8, op: &Op) {
        let sent = if self.late_bound.is_some() {
            state.now
        } else {
            0
        };
        if let Some(bound) = self.late_bound {
            crate::lifetime::sending(self, state, client, op, state.now + bound);
        }
        for node in 0..self.nodes {
            let mut op = op.clone();
            if let Op::Extend { heal, .. } = &mut op {
                let quarantined = state.now < state.nodes[usize::from(node)].quarantined_until;
                *heal = self.heal && !quarantined;
            }
            state.send(Msg {
                node,
                client,
                round,
                sent,
                op,
            });
        }
    }

    /// The key a hold's value sits under.
    pub fn hold_key(&self, hold: &Hold) -> String {
        match (self.kind, hold.slot) {
            (Kind::Permits(_), Some(slot)) => slot_key(slot),
            _ => LOCK.to_owned(),
        }
    }

    /// How many nodes store `hold`'s value under its key, at least until the last ms
    /// the client believes in it (on the global clock), or withhold their vote until
    /// after it: a node in restart quarantine through that ms may have lost the value,
    /// but votes for nobody else before the value would have expired anyway (the
    /// quarantine's argument, docs/safety.md section 2).
    pub fn backing(&self, state: &State, client: u8, hold: &Hold) -> usize {
        let key = self.hold_key(hold);
        let value = value(client, hold.attempt);
        let last_believed = hold.valid_until.div_ceil(1000).saturating_sub(1);
        let reader = crate::rw::is_reader(self, client);
        (0..state.nodes.len())
            .filter(|n| {
                let node = &state.nodes[*n];
                let last = last_believed + u64::from(node.skew);
                if node.quarantined_until > last_believed {
                    return true;
                }
                if reader {
                    return crate::rw::backs_reader(self, state, *n, client, hold, last);
                }
                match node.keys.string(&key, state.node_now(*n)) {
                    Some((v, expires)) if v == value => expires.is_none_or(|at| at >= last),
                    _ => false,
                }
            })
            .count()
    }
}

/// The clients that believe, at `state.now`, that they hold.
pub fn believers(state: &State) -> impl Iterator<Item = (u8, &Hold)> {
    state.clients.iter().enumerate().filter_map(|(c, client)| {
        let hold = client.hold()?;
        hold.believed_at(state.now).then_some((c as u8, hold))
    })
}

impl Model for Config {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        if let Some(start) = &self.start {
            return vec![start.clone()];
        }
        vec![State {
            now: 0,
            nodes: vec![
                Node {
                    skew: 0,
                    keys: Keyspace::default(),
                    quarantined_until: 0,
                };
                self.nodes.into()
            ],
            clients: vec![Client::default(); self.clients.into()],
            net: Vec::new(),
            top_token: 0,
            wipes: 0,
        }]
    }

    fn actions(&self, state: &State, actions: &mut Vec<Action>) {
        for ms in 1..=self.max_tick.min(self.horizon.saturating_sub(state.now)) {
            actions.push(Action::Tick { ms, fast: None });
            for (n, node) in state.nodes.iter().enumerate() {
                if node.skew < self.max_skew {
                    actions.push(Action::Tick {
                        ms,
                        fast: Some(n as u8),
                    });
                }
            }
        }
        for (c, client) in state.clients.iter().enumerate() {
            let c = c as u8;
            match &client.phase {
                Phase::Idle if client.attempts < self.attempts => actions.push(Action::Acquire(c)),
                Phase::Idle => {}
                Phase::Holding(hold) => {
                    let may_extend = c < self.extenders && client.extends < self.extends;
                    if hold.believed_at(state.now) && may_extend {
                        for ttl in &self.extend_ttls {
                            actions.push(Action::Extend(c, *ttl));
                        }
                    }
                    if self.releases {
                        actions.push(Action::Release(c));
                    }
                }
                Phase::Acquiring(_) if !self.releases => {}
                Phase::Acquiring(_) | Phase::Extending(..) => actions.push(Action::GiveUp(c)),
            }
        }
        if state.wipes < self.wipes {
            for n in 0..self.nodes {
                actions.push(Action::Wipe(n));
            }
        }
        let mut last = None;
        for msg in &state.net {
            let too_late = self
                .late_bound
                .is_some_and(|bound| state.now > msg.sent + bound);
            if last != Some(msg) && !too_late {
                let waited = state.clients[usize::from(msg.client)].round_id() == Some(msg.round);
                if waited {
                    actions.push(Action::Deliver {
                        msg: msg.clone(),
                        heard: true,
                    });
                }
                actions.push(Action::Deliver {
                    msg: msg.clone(),
                    heard: false,
                });
            }
            last = Some(msg);
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut state = last.clone();
        match action {
            Action::Tick { ms, fast } => {
                state.now += ms;
                if let Some(n) = fast {
                    state.nodes[usize::from(n)].skew += 1;
                }
                for n in 0..state.nodes.len() {
                    let now = state.node_now(n);
                    state.nodes[n].keys.purge(now);
                }
            }
            Action::Acquire(c) => crate::client::acquire(self, &mut state, c),
            Action::Extend(c, ttl) => crate::client::extend(self, &mut state, c, ttl),
            Action::Release(c) => crate::client::release(self, &mut state, c),
            Action::GiveUp(c) => crate::client::give_up(self, &mut state, c),
            Action::Deliver { msg, heard } => {
                let at = state.net.binary_search(&msg).expect("in flight");
                state.net.remove(at);
                let reply = self.apply(&mut state, msg.node, msg.client, &msg.op);
                if heard {
                    // A node in restart quarantine does not vote, whatever it answered.
                    let quarantined =
                        state.now < state.nodes[usize::from(msg.node)].quarantined_until;
                    let reply = if quarantined {
                        Reply::Error("quarantined".into())
                    } else {
                        reply
                    };
                    crate::client::answer(self, &mut state, msg.client, msg.node, &reply);
                }
            }
            Action::Wipe(n) => {
                state.wipes += 1;
                let node = &mut state.nodes[usize::from(n)];
                node.keys = Keyspace::default();
                if let Some(period) = self.quarantine {
                    node.quarantined_until = state.now + period;
                }
            }
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(NO_TWO_HOLDERS, |m: &Config, s: &State| match m.kind {
                Kind::Permits(n) => believers(s).count() <= usize::from(n),
                Kind::ReadWrite { .. } => crate::rw::compatible(m, believers(s).map(|(c, _)| c)),
                _ => believers(s).count() <= 1,
            }),
            Property::always(BELIEF_IS_BACKED, |m: &Config, s: &State| {
                let quorum = crate::quorum::quorum(m.nodes.into());
                believers(s).all(|(c, hold)| m.backing(s, c, hold) >= quorum)
            }),
            Property::always(TOKENS_INCREASE, |_: &Config, s: &State| {
                s.clients
                    .iter()
                    .filter_map(Client::hold)
                    .all(|h| h.token.is_none_or(|t| t > h.floor))
            }),
            Property::always(KEYS_EXPIRE, |m: &Config, s: &State| {
                crate::lifetime::keys_expire(m, s)
            }),
            Property::sometimes(SOMEONE_HOLDS, |_: &Config, s: &State| {
                believers(s).next().is_some()
            }),
        ]
    }
}

/// No two clients believe at once in conflicting holds: two exclusive owners or two
/// writers, a writer and a reader, or more holders of permits than permits.
pub const NO_TWO_HOLDERS: &str = "no two clients believe in conflicting holds";
/// A client that believes it holds has its value on a quorum, with an expiry no earlier
/// than the last ms it believes in.
pub const BELIEF_IS_BACKED: &str = "every belief is backed by a quorum";
/// A fenced acquisition gets a token above that of every acquisition won before it started.
pub const TOKENS_INCREASE: &str = "fencing tokens strictly increase";
/// With a late-delivery bound `L` ([`Config::late_bound`]): no key outlives its last
/// holder's ttl plus `L`. Precisely, on every node at every global ms `t`: a key or a
/// reader entry holding the value of an attempt exists only if `t ≤ s + L + d` for one
/// of that attempt's acquire or extend requests, sent at `s` with ttl `d`; the readers
/// marker only if that holds for one of the readers; a writer's intent or a reader's
/// place only if `t ≤ s + L + patience` for one of its acquire requests. (A release
/// shortens none of these: a late copy of an acquire can land after it.) Fencing
/// counters have no ttl and are left out.
pub const KEYS_EXPIRE: &str = "no key outlives its last holder's ttl plus the late-delivery bound";
/// The model is not vacuous: some client gets to hold.
pub const SOMEONE_HOLDS: &str = "some client holds";
