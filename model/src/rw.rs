//! The reader-writer lock in the model: which of the crate's scripts each request of a
//! reader or a writer runs, with the keys and arguments the crate gives it
//! (`src/redlock/kinds/attempt.rs`, `src/round.rs`, `src/guard.rs`), and what backs a
//! reader's belief.
//!
//! - a reader acquires with `READ_ACQUIRE`, extends with `READ_EXTEND`, releases and
//!   undoes with `READ_RELEASE`, and withdraws its place with `READ_WAIT_CLEAR`;
//! - a writer acquires with `WRITE_ACQUIRE` (unfenced), extends with `EXTEND_HEAL`
//!   ([`Config::heal`], the crate's default) or `EXTEND`, releases with `WRITE_RELEASE`,
//!   undoes with `RELEASE` and withdraws its intent with `INTENT_CLEAR`.
//!
//! A run may also have clients that take plain exclusive locks on the same key
//! (`ACQUIRE_ONE`, `EXTEND`, `RELEASE`): the readers marker must keep them out too.
//! Wake-ups are off (an empty channel prefix), as with `wake_on_release(false)`.

use crate::client::Hold;
use crate::model::{value, Config, Kind, Op, State, FENCE, LOCK};

/// The reader set (the crate's `:readers` suffix).
pub const READERS: &str = "lock:readers";
/// The writer intent.
pub const WRITER: &str = "lock:writer";
/// The waiting readers.
pub const WAITING: &str = "lock:rwait";
/// The reader turn.
pub const TURN: &str = "lock:rturn";
/// The lock key's wait queue of exclusive waiters (always empty here).
pub const QUEUE: &str = "lock:waiters";

/// What a client of a reader-writer run takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read locks.
    Reader,
    /// Write locks.
    Writer,
    /// Plain exclusive locks (`ACQUIRE_ONE`, `EXTEND`, `RELEASE`) on the lock key.
    Exclusive,
}

/// What client `c` takes (a run of another kind: [`Role::Exclusive`]).
pub fn role(cfg: &Config, c: u8) -> Role {
    match cfg.kind {
        Kind::ReadWrite { readers, .. } if c < readers => Role::Reader,
        Kind::ReadWrite { exclusives, .. } if c + exclusives < cfg.clients => Role::Writer,
        _ => Role::Exclusive,
    }
}

/// Whether client `c` takes read locks.
pub fn is_reader(cfg: &Config, c: u8) -> bool {
    role(cfg, c) == Role::Reader
}

/// Client `c`'s wait id (a reader's place) or intent id (a writer's): the manager's
/// name, `|`, and one id per acquisition, as in the crate.
pub fn wait_id(c: u8) -> String {
    format!("m{c}|c{c}")
}

/// The value the lock key holds while readers hold the resource, as the crate's
/// scripts define it (`local MARKER = '...'`), read from their text.
pub fn marker(cfg: &Config) -> &'static str {
    let text = cfg.scripts.read_acquire;
    let start = text.find("local MARKER = '").map(|i| i + 16);
    let end = start.and_then(|s| text[s..].find('\'').map(|e| s + e));
    match (start, end) {
        (Some(s), Some(e)) => &text[s..e],
        _ => panic!("READ_ACQUIRE defines no readers marker"),
    }
}

fn owned(list: &[&str]) -> Vec<String> {
    list.iter().map(|k| (*k).to_owned()).collect()
}

/// The script, keys and arguments of `op` from client `c`.
pub fn call(cfg: &Config, c: u8, op: &Op) -> (&'static str, Vec<String>, Vec<String>) {
    let s = &cfg.scripts;
    let all = || owned(&[LOCK, READERS, WRITER, WAITING, TURN]);
    let reader = is_reader(cfg, c);
    let patience = cfg.patience.to_string();
    let v = |attempt: &u8, ttl: &u64| vec![value(c, *attempt), ttl.to_string()];
    if role(cfg, c) == Role::Exclusive {
        return match op {
            Op::Acquire { attempt, ttl, .. } => (s.acquire, owned(&[LOCK]), v(attempt, ttl)),
            Op::Extend { attempt, ttl, heal } => {
                let script = if *heal { s.extend_heal } else { s.extend };
                (script, owned(&[LOCK]), v(attempt, ttl))
            }
            Op::Release { attempt } | Op::Undo { attempt } => {
                let args = vec![value(c, *attempt), String::new()];
                (s.release, owned(&[LOCK]), args)
            }
            Op::Withdraw => unreachable!("an exclusive owner does not wait"),
        };
    }
    match op {
        Op::Acquire { attempt, ttl, .. } if reader => (
            s.read_acquire,
            all(),
            vec![value(c, *attempt), ttl.to_string(), wait_id(c), patience],
        ),
        Op::Acquire {
            attempt,
            ttl,
            candidate,
        } => {
            let mut keys = all();
            let mut args = vec![
                value(c, *attempt),
                ttl.to_string(),
                wait_id(c),
                String::new(),
                patience,
            ];
            if cfg.fenced_writers {
                keys.push(FENCE.to_owned());
                args.push(candidate.to_string());
            }
            (s.write_acquire, keys, args)
        }
        Op::Extend { attempt, ttl, .. } if reader => (
            s.read_extend,
            owned(&[READERS, LOCK]),
            vec![value(c, *attempt), ttl.to_string()],
        ),
        Op::Extend { attempt, ttl, heal } => (
            if *heal { s.extend_heal } else { s.extend },
            owned(&[LOCK]),
            vec![value(c, *attempt), ttl.to_string()],
        ),
        Op::Release { attempt } | Op::Undo { attempt } if reader => (
            s.read_release,
            owned(&[READERS, LOCK, WRITER, TURN, QUEUE]),
            vec![value(c, *attempt), String::new()],
        ),
        Op::Release { attempt } => (
            s.write_release,
            owned(&[LOCK, QUEUE, WAITING, TURN]),
            vec![value(c, *attempt), String::new()],
        ),
        Op::Undo { attempt } => (
            s.release,
            owned(&[LOCK]),
            vec![value(c, *attempt), String::new()],
        ),
        Op::Withdraw if reader => (s.read_wait_clear, owned(&[WAITING, TURN]), vec![wait_id(c)]),
        Op::Withdraw => (s.intent_clear, owned(&[WRITER]), vec![wait_id(c)]),
    }
}

/// The script's name of `op` from client `c`, for the story.
pub fn script_name(cfg: &Config, c: u8, op: &Op) -> &'static str {
    let reader = is_reader(cfg, c);
    if role(cfg, c) == Role::Exclusive {
        return match op {
            Op::Acquire { .. } => "ACQUIRE_ONE",
            Op::Extend { heal: true, .. } => "EXTEND_HEAL",
            Op::Extend { .. } => "EXTEND",
            _ => "RELEASE",
        };
    }
    match op {
        Op::Acquire { .. } if reader => "READ_ACQUIRE",
        Op::Acquire { .. } => "WRITE_ACQUIRE",
        Op::Extend { .. } if reader => "READ_EXTEND",
        Op::Extend { heal: true, .. } => "EXTEND_HEAL",
        Op::Extend { .. } => "EXTEND",
        Op::Release { .. } | Op::Undo { .. } if reader => "READ_RELEASE",
        Op::Release { .. } => "WRITE_RELEASE",
        Op::Undo { .. } => "RELEASE",
        Op::Withdraw if reader => "READ_WAIT_CLEAR",
        Op::Withdraw => "INTENT_CLEAR",
    }
}

/// Whether node `n` backs reader `c`'s `hold` until `last` (its last believed ms, on
/// the node's clock): its value is a reader there still at `last` (a reader whose
/// score is `s` is gone once the clock reaches `s`: the scripts prune scores up to
/// now), and the lock key holds the readers marker at least as long (what keeps out
/// writers and exclusive owners; a key lives through the ms of its expiry).
pub fn backs_reader(cfg: &Config, state: &State, n: usize, c: u8, hold: &Hold, last: u64) -> bool {
    let node = &state.nodes[n];
    let now = state.node_now(n);
    let member = node.keys.score(READERS, &value(c, hold.attempt), now);
    let marked = match node.keys.string(LOCK, now) {
        Some((v, expires)) => v == marker(cfg) && expires.is_none_or(|at| at >= last),
        None => false,
    };
    member.is_some_and(|at| at > last as i64) && marked
}

/// No writer (or exclusive owner) beside a reader, no two writers, among the clients
/// believing now.
pub fn compatible(cfg: &Config, believers: impl Iterator<Item = u8>) -> bool {
    let (mut readers, mut writers) = (0, 0);
    for c in believers {
        if is_reader(cfg, c) {
            readers += 1;
        } else {
            writers += 1;
        }
    }
    writers == 0 || (writers == 1 && readers == 0)
}
