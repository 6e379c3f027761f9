//! A client as an abstract state machine following the crate's rules
//! (`src/redlock/attempt.rs`, `src/guard.rs`):
//!
//! - an attempt fans out to every node with a fresh value; its round is decided by the
//!   crate's `Tally` (won at a quorum of yes, lost once a quorum is out of reach), or per
//!   slot for permits; a win counts only if `ttl − elapsed − drift` leaves at least the
//!   minimum validity (1 ms), and then the client believes until `start + ttl − drift`;
//! - a lost, late or abandoned attempt is undone: a release to every node;
//! - an extension first lowers the belief to `start + ttl − drift` if that is earlier
//!   (a shorter ttl may land whatever the round says), and raises it to exactly that
//!   on a timely win; a round lost to another owner ends the belief;
//! - a release ends the belief before anything is sent;
//! - fenced: the candidate is the cached counter + 1; a lost round's STALE replies
//!   raise the cache (a LOCKED reply's counter is not read), a won round's token too;
//!   the token is the candidate (or, with `token_from_counters`, the highest
//!   counter of the yes replies: the `incr_max` rule).
//!
//! Giving up (a timeout, a dropped future) is possible at every step of a round.

use std::time::Duration;

use crate::keyspace::Reply;
use crate::model::{Config, Kind, Op, State};
use crate::quorum::{self, Outcome, Tally, Vote};
use crate::rw::Role;

/// The least validity a win must leave (the crate's default `min_validity`).
const MIN_VALIDITY: Duration = Duration::from_millis(1);

/// One client: its counters, its cache of the fencing counter, what it is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Client {
    /// Attempts made; the current (or last) one's value is `value(client, attempts)`.
    pub attempts: u8,
    /// Extensions started.
    pub extends: u8,
    /// Rounds started; round ids count from 1 (0 marks requests nobody waits on).
    pub rounds: u8,
    /// The highest fencing counter this client has heard of.
    pub cache: u64,
    /// What it is doing now.
    pub phase: Phase,
    /// With a late-delivery bound: per attempt, the last global ms at which a key may
    /// still hold the attempt's value (see [`KEYS_EXPIRE`](crate::model::KEYS_EXPIRE)).
    pub deadlines: Vec<u64>,
    /// With a late-delivery bound: the last global ms at which the client's place or
    /// intent may still be stored.
    pub wait_deadline: u64,
}

/// What a client is doing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Nothing: it holds nothing and waits for nothing.
    #[default]
    Idle,
    /// An acquisition attempt's round is out.
    Acquiring(Round),
    /// It holds (believes so until the hold's `valid_until`).
    Holding(Hold),
    /// It holds and an extension's round is out.
    Extending(Hold, Round),
}

/// One round of requests: an acquisition attempt or an extension.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Round {
    /// The client's round number (from 1).
    pub id: u8,
    /// When it started (global ms): validity counts from here.
    pub start: u64,
    /// The ttl (ms) it asks for.
    pub ttl: u64,
    /// The fencing candidate (fenced acquisitions; else 0).
    pub candidate: u64,
    /// The highest token won before this round started.
    pub floor: u64,
    /// Per node, what it answered so far.
    pub answers: Vec<Answer>,
}

/// One node's answer to a round, as the client reads it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Answer {
    /// Not heard (yet, or ever).
    Pending,
    /// Yes, with the fencing counter (fenced) or the slot (permits).
    Yes(u64),
    /// Refused: held by another owner.
    No,
    /// Refused: the candidate is stale; the node's counter is this.
    Stale(u64),
    /// An error reply, or a vote that does not count (restart quarantine).
    Failed,
}

/// What a client believes it holds.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hold {
    /// The attempt whose value it holds.
    pub attempt: u8,
    /// The end of the belief, µs on the global clock (exclusive).
    pub valid_until: u64,
    /// Its fencing token (fenced acquisitions).
    pub token: Option<u64>,
    /// The highest token won before the attempt started.
    pub floor: u64,
    /// Its permit slot (permits).
    pub slot: Option<u8>,
}

impl Hold {
    /// Whether the client still believes in the hold at global ms `now`.
    pub fn believed_at(&self, now: u64) -> bool {
        now * 1000 < self.valid_until
    }
}

impl Client {
    /// What it holds, also while extending.
    pub fn hold(&self) -> Option<&Hold> {
        match &self.phase {
            Phase::Holding(h) | Phase::Extending(h, _) => Some(h),
            _ => None,
        }
    }

    /// The round it waits on, if any.
    pub fn round_id(&self) -> Option<u8> {
        match &self.phase {
            Phase::Acquiring(r) | Phase::Extending(_, r) => Some(r.id),
            _ => None,
        }
    }
}

fn drift(cfg: &Config, ttl: u64) -> Duration {
    quorum::drift(Duration::from_millis(ttl), cfg.drift_factor)
}

/// `start + ttl − drift`, in µs.
fn promised(cfg: &Config, start: u64, ttl: u64) -> u64 {
    let left = Duration::from_millis(ttl).saturating_sub(drift(cfg, ttl));
    start * 1000 + left.as_micros() as u64
}

fn new_round(cfg: &Config, state: &mut State, c: u8, ttl: u64) -> Round {
    let client = &mut state.clients[usize::from(c)];
    client.rounds += 1;
    Round {
        id: client.rounds,
        start: state.now,
        ttl,
        // Only a fenced acquisition has a candidate (0: none).
        candidate: if fenced(cfg, c) { client.cache + 1 } else { 0 },
        floor: state.top_token,
        answers: vec![Answer::Pending; cfg.nodes.into()],
    }
}

/// Client `c` starts an acquisition attempt: a fresh value to every node.
pub fn acquire(cfg: &Config, state: &mut State, c: u8) {
    let round = new_round(cfg, state, c, cfg.acquire_ttl);
    let client = &mut state.clients[usize::from(c)];
    client.attempts += 1;
    let op = Op::Acquire {
        attempt: client.attempts,
        ttl: round.ttl,
        candidate: round.candidate,
    };
    let id = round.id;
    client.phase = Phase::Acquiring(round);
    cfg.fan_out(state, c, id, &op);
}

/// Client `c` extends its hold to `ttl`: its belief first drops to what the new ttl would promise, if less.
pub fn extend(cfg: &Config, state: &mut State, c: u8, ttl: u64) {
    let round = new_round(cfg, state, c, ttl);
    let client = &mut state.clients[usize::from(c)];
    let Phase::Holding(mut hold) = std::mem::take(&mut client.phase) else {
        unreachable!("extend without a hold")
    };
    client.extends += 1;
    hold.valid_until = hold.valid_until.min(promised(cfg, round.start, ttl));
    let op = Op::Extend {
        heal: false,
        attempt: hold.attempt,
        ttl,
    };
    let id = round.id;
    client.phase = Phase::Extending(hold, round);
    cfg.fan_out(state, c, id, &op);
}

/// Client `c` releases: its belief ends, then the release goes to every node.
pub fn release(cfg: &Config, state: &mut State, c: u8) {
    let client = &mut state.clients[usize::from(c)];
    let Phase::Holding(hold) = std::mem::take(&mut client.phase) else {
        unreachable!("release without a hold")
    };
    cfg.fan_out(
        state,
        c,
        0,
        &Op::Release {
            attempt: hold.attempt,
        },
    );
}

/// Client `c` stops waiting for its round: an attempt is undone, an extension's hold kept as it stands.
pub fn give_up(cfg: &Config, state: &mut State, c: u8) {
    let client = &mut state.clients[usize::from(c)];
    let attempt = client.attempts;
    match std::mem::take(&mut client.phase) {
        // A cancelled acquisition undoes its attempt; a reader's place or a writer's
        // intent is left to lapse (the crate withdraws them only when its retry loop
        // ends, which a dropped future never reaches).
        Phase::Acquiring(_) => {
            cfg.fan_out(state, c, 0, &Op::Undo { attempt });
        }
        Phase::Extending(hold, _) => client.phase = Phase::Holding(hold),
        _ => unreachable!("give up outside a round"),
    }
}

/// A node's answer to client `c`'s current round arrives.
pub fn answer(cfg: &Config, state: &mut State, c: u8, node: u8, reply: &Reply) {
    let client = &mut state.clients[usize::from(c)];
    let extending = matches!(client.phase, Phase::Extending(..));
    let (Phase::Acquiring(r) | Phase::Extending(_, r)) = &mut client.phase else {
        unreachable!("a reply outside its round")
    };
    let answer = if extending {
        classify_extend(reply)
    } else {
        classify_acquire(cfg.kind, fenced(cfg, c), reply)
    };
    r.answers[usize::from(node)] = answer;
    let r = r.clone();
    let Some(won) = decide(cfg, &r, extending) else {
        return;
    };
    let elapsed = Duration::from_millis(state.now - r.start);
    let ttl = Duration::from_millis(r.ttl);
    let timely =
        quorum::validity(ttl, elapsed, drift(cfg, r.ttl)).is_some_and(|v| v >= MIN_VALIDITY);
    let client = &mut state.clients[usize::from(c)];
    match std::mem::take(&mut client.phase) {
        Phase::Extending(mut hold, _) => {
            if won && timely {
                hold.valid_until = promised(cfg, r.start, r.ttl);
            } else if !won && tally(cfg, &r).lost_to_owner() {
                hold.valid_until = hold.valid_until.min(state.now * 1000);
            }
            client.phase = Phase::Holding(hold);
        }
        Phase::Acquiring(_) if won && timely => {
            let token = fenced(cfg, c).then(|| token(cfg, &r));
            if let Some(t) = token {
                client.cache = client.cache.max(t);
                state.top_token = state.top_token.max(t);
            }
            let slot = matches!(cfg.kind, Kind::Permits(_)).then(|| best_slot(&r).0);
            let hold = Hold {
                attempt: client.attempts,
                valid_until: promised(cfg, r.start, r.ttl),
                token,
                floor: r.floor,
                slot,
            };
            let waited = client.attempts > 1;
            state.clients[usize::from(c)].phase = Phase::Holding(hold);
            // A writer withdraws its intent (a node that refused it keeps it); a reader
            // its place where one may be left: it was refused somewhere, or waited.
            let refused = r.answers.contains(&Answer::No);
            let withdraw = match (cfg.kind, crate::rw::role(cfg, c)) {
                (Kind::ReadWrite { .. }, Role::Reader) => refused || waited,
                (Kind::ReadWrite { .. }, Role::Writer) => true,
                _ => false,
            };
            if withdraw {
                cfg.fan_out(state, c, 0, &Op::Withdraw);
            }
        }
        Phase::Acquiring(_) => {
            // A lost round teaches the highest stale counter (`retry.rs`); the next
            // attempt bids one above it.
            for a in &r.answers {
                if let Answer::Stale(seen) = a {
                    client.cache = client.cache.max(*seen);
                }
            }
            let attempt = client.attempts;
            cfg.fan_out(state, c, 0, &Op::Undo { attempt });
            // The last attempt lost: the acquisition gives up and withdraws.
            let last = attempt >= cfg.attempts;
            let waits = crate::rw::role(cfg, c) != Role::Exclusive;
            if last && matches!(cfg.kind, Kind::ReadWrite { .. }) && waits {
                cfg.fan_out(state, c, 0, &Op::Withdraw);
            }
        }
        _ => unreachable!(),
    }
}

fn classify_extend(reply: &Reply) -> Answer {
    match reply {
        Reply::Int(1) => Answer::Yes(0),
        Reply::Int(0) => Answer::No,
        _ => Answer::Failed,
    }
}

/// Whether client `c` takes fencing tokens: a fenced run, or a writer of a reader-writer
/// run with fenced writers (tokens from the lock's counter, as the crate's writers).
fn fenced(cfg: &Config, c: u8) -> bool {
    cfg.kind == Kind::Fenced || (cfg.fenced_writers && crate::rw::role(cfg, c) == Role::Writer)
}

fn classify_acquire(kind: Kind, fenced: bool, reply: &Reply) -> Answer {
    let kind = if fenced { Kind::Fenced } else { kind };
    match (kind, reply) {
        (Kind::Exclusive | Kind::ReadWrite { .. }, Reply::Int(1)) => Answer::Yes(0),
        (Kind::Exclusive | Kind::ReadWrite { .. }, Reply::Int(0)) => Answer::No,
        (Kind::Permits(_), Reply::Int(i)) if *i > 0 => Answer::Yes(*i as u64 - 1),
        (Kind::Permits(_), Reply::Int(0)) => Answer::No,
        (Kind::Fenced, Reply::Array(items)) => match items.as_slice() {
            [Reply::Int(2), Reply::Int(t), ..] => Answer::Yes(*t as u64),
            [Reply::Int(0), Reply::Int(counter), ..] => Answer::Stale(*counter as u64),
            // The counter of a LOCKED reply teaches nothing (the crate reads only the key).
            [Reply::Int(1), ..] => Answer::No,
            _ => Answer::Failed,
        },
        _ => Answer::Failed,
    }
}

fn tally(cfg: &Config, r: &Round) -> Tally {
    let mut t = Tally::new(r.answers.len());
    if cfg.quorum_half {
        // The mutant's rule, on the crate's own tally: half the nodes make a "quorum".
        t.quorum = r.answers.len() / 2;
    }
    for a in &r.answers {
        match a {
            Answer::Pending => {}
            Answer::Yes(_) => t.record(Vote::Yes),
            Answer::No | Answer::Stale(_) => t.record(Vote::No),
            Answer::Failed => t.record(Vote::Failed),
        }
    }
    t
}

/// The slot with the most grants, and their number.
fn best_slot(r: &Round) -> (u8, usize) {
    let mut counts = [0usize; 8];
    for a in &r.answers {
        if let Answer::Yes(slot) = a {
            counts[*slot as usize] += 1;
        }
    }
    let best = (0..8)
        .max_by_key(|s| (counts[*s], std::cmp::Reverse(*s)))
        .expect("8 slots");
    (best as u8, counts[best])
}

/// `Some(won)` once the round is decided, as the crate's vote collector decides it.
fn decide(cfg: &Config, r: &Round, extending: bool) -> Option<bool> {
    let t = tally(cfg, r);
    let per_slot = matches!(cfg.kind, Kind::Permits(_)) && !cfg.count_any_slot;
    if per_slot && !extending {
        // Won once one slot has a quorum; lost once none can get one.
        let (_, best) = best_slot(r);
        if best >= t.quorum {
            return Some(true);
        }
        return (best + t.pending() < t.quorum).then_some(false);
    }
    t.outcome().map(|o| o == Outcome::Won)
}

fn token(cfg: &Config, r: &Round) -> u64 {
    if cfg.token_from_counters {
        let counters = r.answers.iter().filter_map(|a| match a {
            Answer::Yes(c) => Some(*c),
            _ => None,
        });
        counters.max().unwrap_or(0)
    } else {
        r.candidate
    }
}
