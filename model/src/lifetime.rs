//! The lifetime of keys ([`KEYS_EXPIRE`](crate::model::KEYS_EXPIRE)): what each request
//! sent lets a value live to, and the check that no key lives longer.

use crate::keyspace::Data;
use crate::model::{Config, Kind, Op, State, FENCE};
use crate::rw;

/// Client `c` sends `op`, which may land as late as `latest` (global ms): the values
/// and waits it may set live at most its ttl (or patience) past that.
pub fn sending(cfg: &Config, state: &mut State, c: u8, op: &Op, latest: u64) {
    let client = &mut state.clients[usize::from(c)];
    let (attempt, ttl) = match op {
        Op::Acquire { attempt, ttl, .. } | Op::Extend { attempt, ttl, .. } => (*attempt, *ttl),
        _ => return,
    };
    let at = usize::from(attempt) - 1;
    if client.deadlines.len() <= at {
        client.deadlines.resize(at + 1, 0);
    }
    client.deadlines[at] = client.deadlines[at].max(latest + ttl);
    if matches!(op, Op::Acquire { .. }) && matches!(cfg.kind, Kind::ReadWrite { .. }) {
        client.wait_deadline = client.wait_deadline.max(latest + cfg.patience);
    }
}

/// The last global ms at which `stored` (a value, the readers marker, a wait id) may
/// still be on a node; `None` for what has no ttl to keep (a fencing counter).
fn deadline(cfg: &Config, state: &State, stored: &str) -> Option<u64> {
    let of_value = |c: usize, a: usize| {
        state
            .clients
            .get(c)
            .and_then(|cl| cl.deadlines.get(a.checked_sub(1)?).copied())
    };
    if matches!(cfg.kind, Kind::ReadWrite { .. }) && stored == rw::marker(cfg) {
        let readers = (0..state.clients.len()).filter(|c| rw::is_reader(cfg, *c as u8));
        return readers
            .flat_map(|c| state.clients[c].deadlines.iter().copied())
            .max()
            .or(Some(0));
    }
    if let Some(c) = stored.strip_prefix('m').and_then(|r| r.split('|').next()) {
        let c: usize = c.parse().ok()?;
        return Some(state.clients.get(c).map_or(0, |cl| cl.wait_deadline));
    }
    let (c, a) = stored.strip_prefix('c')?.split_once('a')?;
    Some(of_value(c.parse().ok()?, a.parse().ok()?).unwrap_or(0))
}

/// Every key on every node is within its deadline now.
pub fn keys_expire(cfg: &Config, state: &State) -> bool {
    if cfg.late_bound.is_none() {
        return true;
    }
    let now = state.now;
    state.nodes.iter().enumerate().all(|(n, node)| {
        let node_now = state.node_now(n);
        node.keys.keys.iter().all(|(key, entry)| {
            if key == FENCE || entry.expires.is_some_and(|at| node_now > at) {
                return true;
            }
            match &entry.data {
                Data::Str(v) => deadline(cfg, state, v).is_none_or(|d| now <= d),
                // A sorted set lives while one of its members may.
                Data::Zset(z) => {
                    let last = z.keys().filter_map(|m| deadline(cfg, state, m)).max();
                    last.is_none_or(|d| now <= d)
                }
            }
        })
    })
}
